"""pgb-export: pruned (or dense) model directory -> ONNX, parity report, TensorRT engine,
Triton repository. Parses flags into pgb_export.exporter.ExportOptions, calls
pgb_export.exporter.export, prints the summary."""
from __future__ import annotations

import argparse
import sys

import onnx

from pruning import modeldir

from . import __version__, calibration, trt_engine
from .bert_graph import ExportError
from .cli_common import Parser, add_data_flags, data_files, number, progress, run, table
from .exporter import ATTENTION_FORMS, GROUPINGS, ExportOptions, OptionsError, export
from .grouped_linear import GROUPED_FORMS, PERMUTE_FORMS
from .parity import ParityError

EPILOG = """\
examples:
  pgb-export runs/sst2-50 --out deploy/sst2-50 --task sst2          # parity incl. dev accuracy
  pgb-export ../shared/models/minilm-sst2 --out deploy/dense          # dense baseline export
  pgb-export runs/sst2-50 --out deploy/sst2-50 --triton --force       # + Triton model repository
  pgb-export runs/squad-50 --out deploy/squad-50 --task squad --max-len 256   # QA: EM / F1 parity
  pgb-export runs/mine --out deploy/mine --dev-file dev.csv --text-column review --label-column sentiment

DEPLOY_DIR gets onnx/ (model.onnx, config.json, tokenizer), report.json (parity of every
output, graph census, FLOPs, sizes) and with --triton a Triton model repository in triton/.
A failed parity check exits 1 and writes nothing.
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="pgb-export", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a PGB-pruned (pgb.json present) or dense BERT-family classifier or QA model to ONNX with "
                    "grouped MatMuls and absorbed permutations, prove it equal to PyTorch, and "
                    "optionally write a Triton Inference Server model repository.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="pgb-prune output, or a fine-tuned BERT, RoBERTa or "
                                                       "DistilBERT classifier or QA model: a directory or a Hub model id")
    p.add_argument("--out", required=True, metavar="DEPLOY_DIR", help="deployment directory to write")
    p.add_argument("--task", help="GLUE task or squad / squad_v2: also compare the task metric on the full "
                                  "dev set (or your own: --dev-file)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="tokenizer directory, when MODEL_DIR has none (default: MODEL_DIR's own)")
    p.add_argument("--glue-dir", help="GLUE TSV root (default: $PGB_GLUE_DIR, ../shared/data/glue, else the Hub)")
    p.add_argument("--triton", action="store_true", help="write a Triton model repository (onnxruntime backend)")
    p.add_argument("--triton-backend", choices=("onnxruntime", "python"), default=None,
                   help="Triton backend: onnxruntime (stock, default) or python (runs ONNX Runtime inside "
                        "the python backend, for servers that have only that one)")
    p.add_argument("--trt", action="store_true",
                   help="build a TensorRT engine (DEPLOY_DIR/trt/model.plan) and check its parity; needs TensorRT and a GPU")
    p.add_argument("--precision", choices=("fp16", "fp32", "int8"), default=None,
                   help="TensorRT engine precision (default fp16); int8 builds it from the calibrated QDQ graph")
    p.add_argument("--max-seq", type=number(int, 8, 8192), default=None,
                   help="TensorRT profile: longest sequence (default 128)")
    p.add_argument("--opt-seq", type=number(int, 1, 8192), default=None,
                   help="TensorRT profile: sequence length to tune for (default: the 95th percentile of the "
                        "task's dev lengths with --task, else 64)")
    p.add_argument("--timing-cache", default=None,
                   help="TensorRT timing cache file, reused and extended across builds (default: one per "
                        "GPU model and TensorRT version in ~/.cache/pgb-export)")
    p.add_argument("--plugin", action="store_true",
                   help="also write onnx/model.plugin.onnx, grouped linears as pgb::GroupedLinear nodes "
                        "(plugins/ kernel), and prove each distinct kernel compiles for sm_90a with the "
                        "parameter list TensorRT launches it with; with --trt the engine is built from it")
    p.add_argument("--fp16", action="store_true",
                   help="fp16 weights and activations (outputs stay fp32); parity tolerance 1e-2, metric 0.3 point")
    p.add_argument("--int8", action="store_true",
                   help="dynamic INT8 for ONNX Runtime on CPU: activations quantized once each at run time, "
                        "weights symmetric per-channel int8 (kept blocks only); outputs within 1.0, dev "
                        "metric within 1 point of PyTorch fp32. Also writes onnx/model.qdq.onnx, the explicit "
                        "INT8 (QuantizeLinear/DequantizeLinear) graph TensorRT builds INT8 engines from, "
                        "calibrated on the dev set's first 256 rows and checked the same way through ONNX Runtime")
    p.add_argument("--attention", choices=ATTENTION_FORMS,
                   help="with --int8: fused (default) runs each attention as ONNX Runtime's "
                        "com.microsoft.MultiHeadAttention, the same logits; on MiniLM it was 3-8%% faster at batch "
                        "32, and at batch 1 29%% faster dense but 10%% slower at PGB 0.5 (BENCHMARKS.md); "
                        "standard keeps the standard ONNX ops")
    p.add_argument("--grouping", choices=GROUPINGS,
                   help="with --int8: auto (default) writes a grouped linear as a dense MatMul, its zeros stored "
                        "and its outputs the same, where the permutations and copies around it cost more than "
                        "its grouping saves in ONNX Runtime's INT8 kernels (on MiniLM: every attention "
                        "projection and FFN1; report.json graph.written_dense names them); all keeps every "
                        "grouped linear grouped")
    p.add_argument("--calibration", choices=calibration.METHODS,
                   help="how the QDQ graph's activation ranges are fitted (with --int8, or --trt --precision int8), "
                        "on the dev rows after the ones the output check uses: max (default), the largest |input| "
                        "seen, or mse, the range with the least squared rounding and clipping error; "
                        "either way the linears whose quantized input moves the outputs most stay in "
                        "floating point until those rows' outputs are within 0.8 of the int8 "
                        "tolerance (report.json qdq.calibration)")
    p.add_argument("--opset", type=number(int, 17, onnx.defs.onnx_opset_version()), default=17, help="ONNX opset, 17 or newer (default 17)")
    p.add_argument("--grouped-form", choices=GROUPED_FORMS, default="split",
                   help="split: G MatMuls on input slices, concatenated (default); batched: one MatMul on [G, M/G, N/G]")
    p.add_argument("--permute-form", choices=PERMUTE_FORMS, default="transpose",
                   help="how remaining activation permutations are emitted (default: transpose + row Gather)")
    p.add_argument("--max-len", type=number(int, 8, 8192),
                   help="max tokens per dev example (default 128; question answering 384, as windows)")
    p.add_argument("--max-batch", type=number(int, 1, 65536), default=32, help="Triton max_batch_size (default 32)")
    p.add_argument("--force", action="store_true", help="replace DEPLOY_DIR if it exists")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (they are shown only when stderr is a terminal)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_data_flags(p, train=False)
    return p


def options(args) -> ExportOptions:
    return ExportOptions(
        model_dir=args.model_dir, out=args.out, task=args.task, data_files=data_files(args), tokenizer=args.tokenizer,
        glue_dir=args.glue_dir, triton=args.triton, triton_backend=args.triton_backend, trt=args.trt,
        precision=args.precision, max_seq=args.max_seq, opt_seq=args.opt_seq, timing_cache=args.timing_cache,
        plugin=args.plugin, fp16=args.fp16, int8=args.int8, attention=args.attention, grouping=args.grouping, calibration=args.calibration, opset=args.opset, grouped_form=args.grouped_form,
        permute_form=args.permute_form, max_len=args.max_len, max_batch=args.max_batch, force=args.force,
        progress=progress(args.quiet), source=args.source)


def summary(report: dict) -> str:
    layers, dense = report["graph"]["census"]["layers"], report["graph"]["written_dense"]
    rows = [[s, c["MatMul"], c["Permutation"], c["Exchange"], c["Gather"], c["Transpose"], f"{c['weight_params']:,}"]
            for s, c in layers.items()]
    lines = [table(["scope", "MatMul", "permutations", "exchanges", "Gather", "Transpose", "weights"], rows), "",
             f"kept {report['params']['live']:,}/{report['params']['total']:,} prunable weights "
             f"(ratio {report['params']['ratio']:.4f})  "
             f"FLOPs ratio {report['flops_ratio']:.3f}  model.onnx {report['onnx_bytes'] / 1e6:.1f} MB",
             *([f"{len(dense)} grouped linears written dense, cheaper so in ONNX Runtime INT8 "
                f"({report['params']['stored']:,} weights stored): {', '.join(dense)}"] if dense else []),
             f"parity: max |{' / '.join(report['outputs'])} diff| {report['parity']['max_abs_diff']:.2e} "
             f"(tolerance {report['parity']['atol']:g}) over {len(report['parity']['checks'])} output x batch x "
             f"length checks"]
    c = report["tensorrt_compat"]
    if "skipped" in c:
        lines.append(f"TensorRT ONNX parser check: skipped ({c['skipped']})")
    else:
        lines.append(f"TensorRT {c['tensorrt_version']} ONNX parser check: "
                     + ("ok" if c["ok"] else f"{len(c['problems'])} problems, first: {c['problems'][0]}"))
    kernels = report.get("plugin_graph", {}).get("kernels", {})
    if kernels.get("checked"):
        ok = [k for k in kernels["kernels"] if "error" not in k]
        lines.append(f"plugin kernels: {len(ok)}/{len(kernels['kernels'])} compile for sm_90a with TensorRT's "
                     f"parameter list (PTX {ok[0]['ptx_version'] if ok else '-'}, "
                     f"max {max((k['registers'] for k in ok), default=0)} registers, "
                     f"{sum(k['spill_bytes'] for k in ok)} spill bytes)")
    elif kernels:
        lines.append(f"plugin kernels not compiled: {kernels['reason']}")
    if "accuracy" in report:
        a = report["accuracy"]
        lines.append(f"{a['task']} dev {a['metric']}: pytorch {a['pytorch'][a['metric']]:.4f}  "
                     f"onnx {a['onnx'][a['metric']]:.4f}  ({a['rows']} rows)")
    if "qdq" in report:
        q, qa = report["qdq"], report["qdq"].get("accuracy")
        lines.append(f"QDQ graph for TensorRT INT8 ({q['file']}, calibrated on {q['calibration']['rows']} rows): "
                     f"max |diff| {q['parity']['max_abs_diff']:.2e}"
                     + (f", {qa['metric']} {qa['onnx_qdq'][qa['metric']]:.4f}" if qa else "")
                     + f"; parser check {'ok' if q['tensorrt_compat']['ok'] else 'failed'}; run by ONNX Runtime, "
                       "not built by TensorRT here")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def go() -> int:
        args.source = args.model_dir  # as given: a Hub id stays the model card's base model
        if args.model_dir:
            args.model_dir = modeldir.resolve(args.model_dir)
        try:
            report = export(options(args))
        except ParityError as e:
            print(f"pgb-export: parity check failed: {e}", file=sys.stderr)
            return 1
        print(summary(report))
        for w in report["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        print(f"wrote {args.out}")
        return 0

    from plugins.aot import AotError

    from .triton import TritonConfigError
    return run("pgb-export", go, extra_errors=(ExportError, OptionsError, TritonConfigError, trt_engine.TensorRTUnavailable,
                                               trt_engine.EngineBuildError, AotError))


if __name__ == "__main__":
    sys.exit(main())
