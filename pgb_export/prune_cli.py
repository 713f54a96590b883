"""pgb-prune: fine-tuned classifier or QA model + task data -> PGB-pruned model directory. Parses flags
into pruning.pipeline.PruneOptions, calls pruning.pipeline.prune, prints the summary."""
from __future__ import annotations

import argparse
import sys

from pruning import ablations, bert, modeldir
from pruning.compensation import MODES as COMPENSATION_MODES
from pruning.families import family
from pruning.neurons import FFN_FORMS
from pruning.pipeline import (ALLOCATIONS, EMBEDDED_ROWS, LR_RULE,
                              DeviceUnavailable, PruneOptions, prune)

from . import __version__
from .bert_graph import unsupported_activation
from .cli_common import Parser, UsageError, add_data_flags, data_files, number, progress, run, table

EPILOG = """\
examples:
  pgb-prune ../shared/models/minilm-sst2 --task sst2 --target 0.5 --out runs/sst2-50
  pgb-prune --task sst2 --target 0.5 --out runs/demo          # embedded MiniLM, tuned first
  pgb-prune MODEL --task mrpc --target 0.6 --out runs/mrpc-unstr --ablation unstructured
  pgb-prune --task squad --target 0.5 --out runs/squad-50 --max-len 256   # question answering
  pgb-prune my-roberta --train-file train.csv --dev-file dev.csv --text-column review \
            --label-column sentiment --target 0.5 --out runs/mine   # your model, your data

OUT_DIR is a Hugging Face model directory (weights with their zeros, so plain
from_pretrained computes the pruned model), plus pgb.json (G and permutations per matrix)
and report.json (ratios, FLOPs, dev metrics dense/vanilla/final, seconds per stage).
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="pgb-prune", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prune a fine-tuned BERT-family classifier or question-answering model with PGB: second-order importance, "
                    "adaptive groups, permutation, budget with layer drop, weight "
                    "compensation and re-finetuning.")
    p.add_argument("model_dir", nargs="?", metavar="MODEL_DIR",
                   help="fine-tuned BERT, RoBERTa or DistilBERT classifier or QA model (directory or Hub model id); "
                        "omit it to fine-tune the embedded "
                        f"MiniLM-L6 on {EMBEDDED_ROWS} rows of the task first (cached)")
    p.add_argument("--task", help="GLUE task: sst2 mrpc rte cola stsb qnli qqp mnli wnli; SQuAD: squad "
                                  "squad_v2 (or your own data: --train-file and --dev-file)")
    p.add_argument("--target", required=True, type=number(float, 0, 1, True, True), metavar="RATIO",
                   help="fraction of prunable weights to remove, in (0, 1); 0.5 = half")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output model directory")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="tokenizer directory, when MODEL_DIR has none (default: MODEL_DIR's own)")
    p.add_argument("--glue-dir", help="GLUE TSV root (default: $PGB_GLUE_DIR, ../shared/data/glue, else the Hub)")
    p.add_argument("--samples", type=number(int, 1), default=2000, help="training samples for importance and compensation (default 2000)")
    p.add_argument("--gmax", type=number(int, 1, 64), default=6, help="largest number of groups per matrix (default 6)")
    p.add_argument("--nperm", type=number(int, 0, 1000), default=6, help="alternating sorts per group in the permutation search (default 6)")
    p.add_argument("--tau", default="auto",
                   help="importance threshold: 'auto' (quantile that keeps the target's budget) or a number")
    p.add_argument("--compensation", default="dense", choices=COMPENSATION_MODES,
                   help="weight compensation after pruning, a least-squares refit on the importance samples: "
                        "dense (every live matrix refitted towards what the dense model computes there, so it "
                        "also absorbs the error of the layers before it; on MiniLM SST-2 with the CPU recipe 0.6 to "
                        "2.3 points ahead at 0.5-0.88, on MRPC at 0.5 1.7 behind; BENCHMARKS.md), pruned (the paper's eq. 4: each pruned matrix keeps "
                        "its own output on its pruned input) or off (default dense)")
    p.add_argument("--no-compensation", dest="compensation", action="store_const", const="off",
                   help="the same as --compensation off")
    p.add_argument("--finetune-epochs", type=number(float, 0, 1000), default=3.0, help="re-finetuning epochs, 0 to skip (default 3)")
    p.add_argument("--finetune-samples", type=number(int, 1), default=None,
                   help="training rows per re-finetuning epoch (default: the whole training set)")
    p.add_argument("--lr", type=number(float, 0, 1, True), default=None,
                   help=f"re-finetuning learning rate (default: {LR_RULE}; the CPU recipe is 63 steps, the paper's "
                        "3 epochs over MRPC 345)")
    p.add_argument("--distill", type=number(float, 0, 1), default=PruneOptions.distill, metavar="ALPHA",
                   help="distil from the dense model while re-finetuning: weight of its soft loss (KL at "
                        "--temperature; MSE for regression), 1 - ALPHA on the task loss; 0 = off (default "
                        f"{PruneOptions.distill}: at equal steps +0.3 to +0.7 points on MiniLM SST-2 with the CPU "
                        "recipe, +2.0 at 0.88 after 750 steps, within half a point either way on MRPC and STS-B)")
    p.add_argument("--temperature", type=number(float, 0, 100, True), default=2.0,
                   help="distillation temperature (default 2)")
    p.add_argument("--distill-hidden", type=number(float, 0, 100), default=PruneOptions.distill_hidden,
                   metavar="BETA",
                   help="also draw every layer's output towards the dense model's: BETA x their squared error "
                        "relative to the dense model's, added to the loss. The dense model then runs beside the "
                        "pruned one on every step (a 750-step run took 31%% longer). At equal steps on MiniLM "
                        "SST-2 with BETA 1: level at 0.5 and 0.6, +0.4 on average at 0.88 over three seeds; worth "
                        "it at extreme ratios (default 0: off)")
    p.add_argument("--batch-size", type=number(int, 1, 4096), default=32, help="batch size (default 32)")
    p.add_argument("--max-len", type=number(int, 8, 8192), help="max tokens per example (default 128; question "
                   "answering 384, longer contexts as overlapping windows)")
    p.add_argument("--allocation", default="measured", choices=ALLOCATIONS,
                   help="how the budget is shared: floor (no matrix dropped while every one can keep G_max's "
                        "share; the rest in the paper's order), paper (Algorithm 1: attention first, then whole "
                        "FFN layers by importance, the rest dropped) or measured (floor, after dropping the whole "
                        "attention or FFN sub-layers whose removal costs least, as many as give the lowest "
                        "calibration loss on held-out training rows; about a minute more on a CPU) (default measured)")
    p.add_argument("--tie-qkv", action="store_true",
                   help="give the grouped W_Q, W_K, W_V of a layer one G and one input permutation, so the "
                        "export permutes their common input once instead of up to three times. Off by default: "
                        "on MiniLM at 0.88 it was 3-5%% faster at batch 32 on ONNX Runtime CPU for 0.9 points of "
                        "SST-2, at 0.5 neither faster nor less accurate (BENCHMARKS.md, \"Tied Q/K/V\")")
    p.add_argument("--tie-ffn", action="store_true",
                   help="give a layer's grouped W_1 and W_2 one G and one neuron partition, so FFN1's block i "
                        "feeds FFN2's block i and the export copies nothing between them. Off by default "
                        "(BENCHMARKS.md, \"Tied FFN\")")
    p.add_argument("--ffn", default="neurons", choices=FFN_FORMS,
                   help="how a kept FFN keeps its share of the budget: neurons (whole FFN neurons, a W_1 column "
                        "and its W_2 row, by saliency; the export leaves the others out, so the FFN runs as two "
                        "smaller dense MatMuls) or groups (the paper's G block-diagonal groups). Default neurons: "
                        "on MiniLM SST-2 with the CPU recipe 0.6, 1.6 and 3.2 points ahead at 0.5, 0.6 and 0.88, and faster "
                        "(BENCHMARKS.md, \"FFN neurons\")")
    p.add_argument("--ablation", default="none", choices=ablations.ABLATIONS,
                   help="run a baseline of PGB.md section 9 instead of PGB")
    p.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=0)
    p.add_argument("--device", default="auto",
                   help="where scoring, compensation and re-finetuning run: auto (a CUDA GPU when torch sees "
                        "one, else the CPU), cpu, cuda or cuda:N; the saved model is the same either way, up to "
                        "floating-point order (default auto)")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (they are shown only when stderr is a terminal)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_data_flags(p, train=True)
    return p


def _check_flags(args) -> None:
    """What argparse's types cannot see (prune() itself refuses an unsafe --out before any work)."""
    if args.tau != "auto":
        try:
            tau = float(args.tau)
        except ValueError:
            tau = -1.0
        if not (tau >= 0 and tau != float("inf")):  # also false for nan
            raise UsageError(f"--tau must be 'auto' or a finite non-negative number, got {args.tau!r:.40}")
    if args.tie_ffn and args.ffn != "groups":
        raise UsageError("--tie-ffn ties the groups of a grouped FFN; add --ffn groups (an FFN kept as neurons "
                         "needs no tie: its W_1 columns and W_2 rows are the same neurons already)")
    files = data_files(args)
    if not args.task and not files:
        raise UsageError("give a --task (GLUE, or squad / squad_v2), or your own data with --train-file and --dev-file")
    if files and not args.model_dir:
        raise UsageError("your own data needs your own MODEL_DIR (the embedded default is tuned on a GLUE --task)")


def _export_warning(model_dir: str) -> str | None:
    """What pgb-export will refuse in this model, said before pruning rather than after it."""
    from transformers import AutoConfig
    from transformers.activations import ACT2FN
    modeldir.check_model_dir(model_dir)
    try:
        config = AutoConfig.from_pretrained(model_dir)
        runs = getattr(config, family(config).activation_attr) in ACT2FN
    except Exception:
        runs = False
    if not runs:
        return None  # the model does not load: prune() refuses it in its own words
    why = unsupported_activation(config)
    return why and f"{why}: pgb-export will not write the pruned model as ONNX (it runs in PyTorch)"


def options(args) -> PruneOptions:
    return PruneOptions(
        out=args.out, target=args.target, model_dir=args.model_dir, task=args.task, data_files=data_files(args),
        tokenizer=args.tokenizer, glue_dir=args.glue_dir, samples=args.samples, gmax=args.gmax, nperm=args.nperm,
        tau=args.tau, compensation=args.compensation, finetune_epochs=args.finetune_epochs,
        finetune_samples=args.finetune_samples, lr=args.lr, distill=args.distill, temperature=args.temperature,
        distill_hidden=args.distill_hidden,
        batch_size=args.batch_size, max_len=args.max_len,
        ablation=args.ablation, tie_qkv=args.tie_qkv, tie_ffn=args.tie_ffn, ffn=args.ffn, allocation=args.allocation, seed=args.seed, device=args.device, force=args.force, progress=progress(args.quiet), source=args.source)


def summary(report: dict) -> str:
    by_layer = {}
    for m in report["matrices"]:
        # a dense matrix with zeros (neurons, heads, unstructured) shows the share it keeps
        cell = ("drop" if m["kept"] == 0 else f"{m['kept'] / m['size']:.0%}"
                if m["groups"] == 1 and m["kept"] < m["size"] else str(m["groups"]))
        by_layer.setdefault(m["layer"], {})[m["kind"]] = cell
    head = ["layer", "Q", "K", "V", "O", "FFN1", "FFN2"]
    rows = [[l] + [by_layer[l][k] for k in bert.KINDS] for l in sorted(by_layer)]
    main = report["main_metric"]
    m = report["metrics"]
    lines = [table(head, rows), "",
             f"method {report['method']}  target {report['target']:.2f}  achieved {report['achieved_ratio']:.4f}  "
             f"params {report['params_kept']:,}/{report['params_total']:,}  FLOPs ratio {report['flops_ratio']:.3f}",
             f"{main}: dense {m['dense'][main]:.4f}  vanilla {m['vanilla'][main]:.4f}  final {m['final'][main]:.4f}",
             "seconds: " + "  ".join(f"{k} {v:.0f}" for k, v in report["seconds"].items())]
    measured = report["plan"].get("measured")
    if measured:
        losses = "  ".join(f"{t['drops']}: " + ("off target" if t["calibration_loss"] is None else
                                                f"{t['calibration_loss']:.4f}") for t in measured["trials"])
        lines.append(f"measured allocation: dropped {', '.join(measured['chosen_drops']) or 'no sub-layer'} "
                     f"(calibration loss by sub-layers dropped, {losses})")
    lines += [f"note: {n}" for n in report["plan"].get("notes", [])]
    lines += [f"WARNING: {w}" for w in report.get("warnings", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def go() -> int:
        args.source = args.model_dir  # as given: a Hub id stays the model card's base model
        if args.model_dir:
            args.model_dir = modeldir.resolve(args.model_dir)
        _check_flags(args)
        warning = args.model_dir and _export_warning(args.model_dir)
        if warning:
            print(f"pgb-prune: warning: {warning}", file=sys.stderr)
        report = prune(options(args))
        print(summary(report))
        print(f"wrote {args.out} (model, pgb.json, report.json)")
        return 0

    return run("pgb-prune", go, (DeviceUnavailable,))


if __name__ == "__main__":
    sys.exit(main())
