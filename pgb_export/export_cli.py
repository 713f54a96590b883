"""pgb-export: pruned (or dense) model directory -> ONNX, parity report, Triton repository."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from pruning import bert, cost, modeldir, repermute
from pruning.batching import encode, make_batches, predict
from pruning.families import family
from pruning.jsonfile import write_atomic
from pruning.model_card import card
from pruning.plan import Plan, PlanError
from pruning.tasks import get_task, glue_dir, load_split, metrics, note_skipped
from pruning.userdata import load_file, user_task

from . import __version__, trt_compat, trt_engine
from .bert_graph import ExportError, build, dense_plan
from .bert_io import BERT_IO
from .census import census, check_against_plan
from .cli_common import Parser, UsageError, add_data_flags, data_files, number, run, table
from .grouped_linear import GROUPED_FORMS, PERMUTE_FORMS, PLUGIN_OP, LinearOptions
from .parity import FunctionSession, ParityError, check_outputs

# Real sentences for the output check when no --task is given (SST-2 style, pairs for
# two-segment models are made from consecutive ones).
DEFAULT_TEXTS = [
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "allows us to hope that nolan is poised to embark a major career as a commercial yet inventive filmmaker .",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's austere locales .",
    "it 's slow -- very , very slow .",
    "although laced with humor and a few fanciful touches , the film is a refreshingly serious look at young women .",
]

EPILOG = """\
examples:
  pgb-export runs/sst2-50 --out deploy/sst2-50 --task sst2          # parity incl. dev accuracy
  pgb-export ../shared/models/minilm-sst2 --out deploy/dense          # dense baseline export
  pgb-export runs/sst2-50 --out deploy/sst2-50 --triton --force       # + Triton model repository
  pgb-export runs/mine --out deploy/mine --dev-file dev.csv --text-column review --label-column sentiment

DEPLOY_DIR gets onnx/ (model.onnx, config.json, tokenizer), report.json (parity, graph
census, FLOPs, sizes) and with --triton a Triton model repository in triton/. A failed
parity check exits 1 and writes nothing.
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="pgb-export", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a PGB-pruned (pgb.json present) or dense BERT classifier to ONNX with "
                    "grouped MatMuls and absorbed permutations, prove it equal to PyTorch, and "
                    "optionally write a Triton Inference Server model repository.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="pgb-prune output, or a fine-tuned BERT, RoBERTa or "
                                                       "DistilBERT classifier: a directory or a Hub model id")
    p.add_argument("--out", required=True, metavar="DEPLOY_DIR", help="deployment directory to write")
    p.add_argument("--task", help="GLUE task: also compare the task metric on the full dev set "
                                  "(or your own: --dev-file)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="tokenizer directory, when MODEL_DIR has none (default: MODEL_DIR's own)")
    p.add_argument("--glue-dir", help="GLUE TSV root (default: $PGB_GLUE_DIR, ../shared/data/glue, else the Hub)")
    p.add_argument("--triton", action="store_true", help="write a Triton model repository (onnxruntime backend)")
    p.add_argument("--triton-backend", choices=("onnxruntime", "python"), default=None,
                   help="Triton backend: onnxruntime (stock, default) or python (runs ONNX Runtime inside "
                        "the python backend, for servers that have only that one)")
    p.add_argument("--trt", action="store_true",
                   help="build a TensorRT engine (DEPLOY_DIR/trt/model.plan) and check its parity; needs TensorRT and a GPU")
    p.add_argument("--precision", choices=("fp16", "fp32"), default=None, help="TensorRT engine precision (default fp16)")
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
                   help="fp16 weights and activations (logits stay fp32); parity tolerance 1e-2, metric 0.3 point")
    p.add_argument("--opset", type=number(int, 17, onnx.defs.onnx_opset_version()), default=17, help="ONNX opset, 17 or newer (default 17)")
    p.add_argument("--grouped-form", choices=GROUPED_FORMS, default="split",
                   help="split: G MatMuls on input slices, concatenated (default); batched: one MatMul on [G, M/G, N/G]")
    p.add_argument("--permute-form", choices=PERMUTE_FORMS, default="transpose",
                   help="how remaining activation permutations are emitted (default: transpose + row Gather)")
    p.add_argument("--max-len", type=number(int, 8, 8192), default=128, help="max tokens per dev example (default 128)")
    p.add_argument("--max-batch", type=number(int, 1, 65536), default=32, help="Triton max_batch_size (default 32)")
    p.add_argument("--force", action="store_true", help="replace DEPLOY_DIR if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_data_flags(p, train=False)
    return p


# Flags that only mean something beside another one, and their defaults once that one is given.
DEPENDENT_FLAGS = {"trt": {"precision": "fp16", "max_seq": 128, "opt_seq": None, "timing_cache": None},
                   "triton": {"triton_backend": "onnxruntime"}}


def _check_flags(args) -> None:
    """What argparse's types cannot see, once, before anything is computed or written. A
    flag that would be silently ignored is refused; then the dependent defaults are set."""
    for owner, flags in DEPENDENT_FLAGS.items():
        for flag, default in flags.items():
            if getattr(args, flag) is not None and not getattr(args, owner):
                raise UsageError(f"--{flag.replace('_', '-')} only applies with --{owner}: add --{owner} or drop it")
            if getattr(args, flag) is None:
                setattr(args, flag, default)
    if args.opt_seq is not None and args.opt_seq > args.max_seq:
        raise UsageError(f"--opt-seq {args.opt_seq} is longer than --max-seq {args.max_seq}")
    data_files(args)  # --task and --dev-file together are refused here
    if args.trt and (args.task or args.dev_file) and args.max_len > args.max_seq:
        raise UsageError(f"--max-len {args.max_len} is longer than the engine's --max-seq {args.max_seq}: "
                         f"the dev set could not be fed to it")
    if args.trt:
        trt_engine.require_tensorrt(plugin=args.plugin)
    modeldir.check_output(args.out, _inputs(args), args.force)


def _inputs(args) -> list:
    """Every directory the run reads: --out must not overlap any of them."""
    return [args.model_dir, args.tokenizer, glue_dir(args.glue_dir) if args.task else None, args.dev_file]


def load_plan(model_dir: Path, model) -> Plan:
    """pgb.json checked against the weights beside it; a dense plan when there is none."""
    if not (model_dir / "pgb.json").exists():
        return dense_plan(model)
    plan = Plan.load(model_dir / "pgb.json")
    plan.check_matches(bert.matrices(model))
    bad = repermute.violations(model, plan)
    if bad:
        raise PlanError(f"weights are non-zero outside the pgb.json blocks in {bad[0]}"
                        + (f" and {len(bad) - 1} more" if len(bad) > 1 else ""))
    return plan


def session(model_bytes: bytes, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def export(args) -> dict:
    t0 = time.perf_counter()
    model_dir = modeldir.check_model_dir(args.model_dir)
    task = get_task(args.task) if args.task else None
    dev_split = load_split(task, "dev", glue_dir(args.glue_dir)) if task else None  # before the model: fail fast
    model, tok = modeldir.load(model_dir, tokenizer_dir=args.tokenizer)
    files = data_files(args)
    if files:  # the model says what the labels are; the file must use them
        task = user_task(model.config, Path(files.dev).name)
        dev_split = load_file(files.dev, files, task)
    note_skipped([dev_split])
    dev = dev_split.examples if dev_split else None
    if task:
        modeldir.check_labels(model.config, task.num_labels, task.name)
        modeldir.name_labels(model.config, task.label_names)
    plan = load_plan(model_dir, model)

    graph = _graph(model, plan, args, plugin=False, fp16=args.fp16)
    atol = BERT_IO.atol_fp16 if args.fp16 else BERT_IO.atol_fp32
    metric_tol = BERT_IO.metric_points_fp16 if args.fp16 else BERT_IO.metric_points_fp32
    onnx.checker.check_model(graph, full_check=True)
    compat = trt_compat.check(graph)
    counts = census(graph)
    refs = bert.matrices(model)
    masks = plan.masks()
    live_kept = cost.kept_params(cost.live(refs, masks))
    check_against_plan(counts, live_kept)
    data = graph.SerializeToString()
    sess = session(data)

    texts = ([(e.text_a, e.text_b) if e.text_b is not None else e.text_a for e in dev[:64]]
             if dev else DEFAULT_TEXTS)
    parity = check_outputs(sess, model, tok, texts, atol)
    report = {"model_dir": str(model_dir), "source": args.source, "method": plan.meta.get("method", "pgb"),
              "graph": {"opset": args.opset, "precision": "fp16" if args.fp16 else "fp32",
                        "grouped_form": args.grouped_form,
                        "permute_form": args.permute_form, "nodes": len(graph.graph.node),
                        "census": counts},
              "params": {"kept": plan.kept, "live": live_kept, "total": plan.total, "ratio": plan.ratio},
              "flops_ratio": cost.flops_ratio(refs, masks, model.config.hidden_size, 128),
              "onnx_bytes": len(data), "parity": parity.to_json(), "tensorrt_compat": compat.to_json()}
    dev_set = None
    if task:
        # batches no larger than the TensorRT profile allows, so both runtimes share them
        batches = make_batches(encode(tok, dev, modeldir.max_tokens(model.config, args.max_len), family(model).inputs),
                               args.max_batch, pad_id=tok.pad_token_id or 0)
        dev_set = DevSet(task, batches, np.concatenate([b["labels"].numpy() for b in batches]),
                         predict(model, batches, progress=not args.quiet), family(model).inputs)
        report["accuracy"] = dev_set.compare("onnx", lambda f: sess.run(None, f)[0], metric_tol, parity)
    extra_files = {}
    if args.plugin:
        plugin_graph = _graph(model, plan, args, plugin=True, fp16=args.fp16)
        report["plugin_graph"] = _check_plugin_graph(plugin_graph, model, tok, texts, atol, parity, live_kept)
        extra_files["onnx/model.plugin.onnx"] = plugin_graph.SerializeToString()
    if args.trt:
        engine, report["tensorrt"] = _build_and_check_engine(args, model, plan, tok, texts, dev_set, parity)
        extra_files["trt/model.plan"] = engine
        extra_files["trt/build.json"] = json.dumps(report["tensorrt"]["build"], indent=1).encode()
    if parity.failures:
        raise ParityError("; ".join(parity.failures))

    with modeldir.atomic_dir(args.out, force=args.force, inputs=_inputs(args)) as tmp:
        for rel, content in extra_files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(content)
        (tmp / "onnx").mkdir(exist_ok=True)
        (tmp / "onnx" / "model.onnx").write_bytes(data)
        model.config.save_pretrained(tmp / "onnx")
        modeldir.save_tokenizer(tok, tmp / "onnx")
        if args.triton:
            from .triton import engine_notes, write_repository
            report["triton"] = [write_repository(tmp / "triton", data, model.config, args.max_batch,
                                                 args.triton_backend)]
            if args.trt:
                report["triton"].append(write_repository(tmp / "triton", extra_files["trt/model.plan"], model.config,
                                                         args.max_batch, "tensorrt", "pgb_bert_trt",
                                                         engine_notes(report["tensorrt"]["build"])))
        report["seconds"] = round(time.perf_counter() - t0, 2)
        write_atomic(tmp / "report.json", report)
        (tmp / "README.md").write_text(_card(report))
    return report


class DevSet:
    """The task's dev set, batched, with PyTorch's predictions computed once; each exported
    runtime is compared against them."""

    def __init__(self, task, batches: list, labels: np.ndarray, torch_pred: np.ndarray, inputs: tuple[str, ...]):
        self.task, self.batches, self.labels, self.inputs = task, batches, labels, inputs
        self.torch_metrics = metrics(task, torch_pred, labels)

    def lengths(self) -> np.ndarray:
        return np.concatenate([b["attention_mask"].sum(1).numpy() for b in self.batches])

    def compare(self, runtime: str, run, tolerance: float, parity) -> dict:
        """Task metric of `run` (feeds -> logits) beside PyTorch's; a gap above `tolerance`
        points is added to the parity failures."""
        pred = np.concatenate([run({k: b[k].numpy() for k in self.inputs}) for b in self.batches])
        mine, metric = metrics(self.task, pred, self.labels), self.task.main_metric
        gap = abs(self.torch_metrics[metric] - mine[metric]) * 100
        if gap > tolerance:
            parity.failures.append(f"{runtime} {metric} differs by {gap:.3f} points on the {self.task.name} dev set "
                                   f"(pytorch {self.torch_metrics[metric]:.4f}, {runtime} {mine[metric]:.4f})")
        return {"task": self.task.name, "metric": metric, "examples": len(self.labels),
                "pytorch": self.torch_metrics, runtime: mine, "difference_points": gap,
                "tolerance_points": tolerance}


def _graph(model, plan: Plan, args, *, plugin: bool, fp16: bool) -> onnx.ModelProto:
    graph = build(model, plan, LinearOptions(args.grouped_form, args.permute_form, plugin=plugin),
                  np.float16 if fp16 else np.float32)
    graph.opset_import[0].version = args.opset
    return graph


def _check_plugin_graph(graph, model, tok, texts, atol, parity, live_kept: int) -> dict:
    """The plugin graph on the CPU: TensorRT-parser check with the pgb domain, and logits
    through onnx.reference with the custom node's numpy semantics (plugins.reference)."""
    from onnx.reference import ReferenceEvaluator

    from plugins.reference import GroupedLinear
    compat = trt_compat.check(graph, plugin_domain="pgb")
    counts = census(graph)
    check_against_plan(counts, live_kept)
    evaluator = ReferenceEvaluator(graph, new_ops=[GroupedLinear])
    ref = check_outputs(FunctionSession(lambda f: evaluator.run(None, f)[0]), model, tok, texts, atol,
                        batch_sizes=(1, 4), lengths=(16, 64))
    kernels = _prove_plugin_kernels(graph)
    parity.failures += ([f"plugin graph: {f}" for f in ref.failures] + [f"plugin graph: {p}" for p in compat.problems]
                        + [f"plugin kernel: {k['error']}" for k in kernels.get("kernels", []) if "error" in k])
    return {"census": counts, "parity": ref.to_json(), "tensorrt_compat": compat.to_json(), "kernels": kernels}


def _prove_plugin_kernels(graph: onnx.ModelProto) -> dict:
    """Each distinct kernel the plugin graph needs, compiled for the H100 (sm_90a) and
    assembled by ptxas (plugins.aot), as far as a machine without a GPU can take it."""
    if importlib.util.find_spec("triton") is None:
        return {"checked": False, "reason": "Triton-lang is not installed (pip install -e '.[kernels]')"}
    from plugins.aot import KernelSpec, prove_in_child

    inits = {t.name: t for t in graph.graph.initializer}
    dtypes = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16"}
    specs = set()
    for node in graph.graph.node:
        if node.op_type == PLUGIN_OP:
            blocks = inits[node.input[1]]
            g, br, bc = blocks.dims
            specs.add(KernelSpec(dtypes[blocks.data_type], g * br, g * bc, g))
    return {"checked": True, "kernels": prove_in_child(sorted(specs, key=str))}


def _build_and_check_engine(args, model, plan, tok, texts, dev_set: DevSet | None,
                            parity) -> tuple[bytes, dict]:
    fp16 = args.precision == "fp16"
    graph = _graph(model, plan, args, plugin=args.plugin, fp16=fp16)
    opt_seq = args.opt_seq or (int(np.percentile(dev_set.lengths(), 95)) if dev_set else 64)
    spec = trt_engine.EngineSpec(args.precision, args.max_batch, args.max_seq, max(1, args.max_batch // 2),
                                 min(opt_seq, args.max_seq))
    cache = Path(args.timing_cache) if args.timing_cache else trt_engine.default_timing_cache(modeldir.cache_dir())
    engine, info = trt_engine.build(graph.SerializeToString(), spec, cache, plugin=args.plugin)
    atol = BERT_IO.atol_fp16 if fp16 else BERT_IO.atol_fp32
    batch_sizes, lengths = spec.parity_shapes()
    with trt_engine.open_engine(engine, plugin=args.plugin) as run:
        check = check_outputs(FunctionSession(run), model, tok, texts, atol, batch_sizes, lengths)
        parity.failures += [f"TensorRT: {f}" for f in check.failures]
        out = {"build": info, "parity": check.to_json()}
        if dev_set:
            tol = BERT_IO.metric_points_fp16 if fp16 else BERT_IO.metric_points_fp32
            out["accuracy"] = dev_set.compare("tensorrt", run, tol, parity)
    return engine, out


def _card(report: dict) -> str:
    facts = {"method": report["method"], "precision": report["graph"]["precision"],
             "prunable weights kept (live)": f"{report['params']['live']:,} of {report['params']['total']:,}",
             "FLOPs ratio at 128 tokens": f"{report['flops_ratio']:.3f}",
             "parity, max abs logit difference": f"{report['parity']['max_abs_diff']:.2e} "
                                                 f"(tolerance {report['parity']['atol']:g})"}
    acc = report.get("accuracy")
    metrics = {runtime: acc[runtime] for runtime in ("pytorch", "onnx")} if acc else None
    usage = ("`onnx/` is a Hugging Face ONNX model directory (model.onnx, config.json, tokenizer): ONNX "
             "Runtime, or optimum's ORTModelForSequenceClassification, loads it. `triton/` (with "
             "--triton) is a Triton Inference Server model repository; `report.json` holds every check.")
    return card(f"{Path(report['source']).name}, exported for serving", report["source"],
                "text-classification", "onnx", facts, metrics, usage)


def summary(report: dict) -> str:
    layers = report["graph"]["census"]["layers"]
    rows = [[s, c["MatMul"], c["Gather"], c["Transpose"], f"{c['weight_params']:,}"] for s, c in layers.items()]
    lines = [table(["scope", "MatMul", "Gather", "Transpose", "weights"], rows), "",
             f"kept {report['params']['kept']:,}/{report['params']['total']:,} prunable weights "
             f"({report['params']['live']:,} live)  "
             f"FLOPs ratio {report['flops_ratio']:.3f}  model.onnx {report['onnx_bytes'] / 1e6:.1f} MB",
             f"parity: max |logit diff| {report['parity']['max_abs_diff']:.2e} (tolerance {report['parity']['atol']:g}) "
             f"over {len(report['parity']['checks'])} batch x length checks"]
    c = report["tensorrt_compat"]
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
                     f"onnx {a['onnx'][a['metric']]:.4f}  ({a['examples']} examples)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def go() -> int:
        args.source = args.model_dir  # as given: a Hub id stays the model card's base model
        if args.model_dir:
            args.model_dir = modeldir.resolve(args.model_dir)
        _check_flags(args)
        try:
            report = export(args)
        except ParityError as e:
            print(f"pgb-export: parity check failed: {e}", file=sys.stderr)
            return 1
        print(summary(report))
        print(f"wrote {args.out}")
        return 0

    from plugins.aot import AotError

    from .triton import TritonConfigError
    return run("pgb-export", go, extra_errors=(ExportError, TritonConfigError, trt_engine.TensorRTUnavailable,
                                               trt_engine.EngineBuildError, AotError))


if __name__ == "__main__":
    sys.exit(main())
