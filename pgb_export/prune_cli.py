"""pgb-prune: fine-tuned BERT classifier + task data -> PGB-pruned model directory."""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

from pruning import ablations, bert, compensation, cost, finetune, grouping, importance, repermute
from pruning.jsonfile import write_atomic

from . import __version__, modeldir
from .model_card import card
from .batching import encode, evaluate, make_batches
from .bert_io import model_inputs
from .cli_common import Parser, UsageError, add_data_flags, data_files, number, run, table
from .userdata import load_file, user_task
from .tasks import Split, Task, get_task, glue_dir, load_split

EMBEDDED_ROWS = 8000  # slice of the task's training set the embedded encoder is tuned on
EMBEDDED_LR = 5e-5

EPILOG = """\
examples:
  pgb-prune ../shared/models/minilm-sst2 --task sst2 --target 0.5 --out runs/sst2-50
  pgb-prune --task sst2 --target 0.5 --out runs/demo          # embedded MiniLM, tuned first
  pgb-prune MODEL --task mrpc --target 0.6 --out runs/mrpc-unstr --ablation unstructured

OUT_DIR is a Hugging Face model directory (weights with their zeros, so plain
from_pretrained computes the pruned model), plus pgb.json (G and permutations per matrix)
and report.json (ratios, FLOPs, dev metrics dense/vanilla/final, seconds per stage).
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="pgb-prune", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prune a fine-tuned BERT classifier with PGB: second-order importance, "
                    "adaptive groups, permutation, budget with layer drop, weight "
                    "compensation and re-finetuning.")
    p.add_argument("model_dir", nargs="?", metavar="MODEL_DIR",
                   help="fine-tuned BERT, RoBERTa or DistilBERT classifier (directory or Hub model id); "
                        "omit it to fine-tune the embedded "
                        f"MiniLM-L6 on {EMBEDDED_ROWS} rows of the task first (cached)")
    p.add_argument("--task", help="GLUE task: sst2 mrpc rte cola stsb qnli qqp mnli wnli "
                                  "(or your own data: --train-file and --dev-file)")
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
    p.add_argument("--no-compensation", action="store_true", help="skip weight compensation")
    p.add_argument("--finetune-epochs", type=number(float, 0, 1000), default=3.0, help="re-finetuning epochs, 0 to skip (default 3)")
    p.add_argument("--finetune-samples", type=number(int, 1), default=None,
                   help="training rows per re-finetuning epoch (default: the whole training set)")
    p.add_argument("--lr", type=number(float, 0, 1, True), default=3e-5, help="re-finetuning learning rate (default 3e-5)")
    p.add_argument("--batch-size", type=number(int, 1, 4096), default=32, help="batch size (default 32)")
    p.add_argument("--max-len", type=number(int, 8, 8192), default=128, help="max tokens per example (default 128)")
    p.add_argument("--ablation", default="none", choices=ablations.ABLATIONS,
                   help="run a baseline of PGB.md section 9 instead of PGB")
    p.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=0)
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_data_flags(p, train=True)
    return p


def _check_flags(args) -> None:
    """What argparse's types cannot see; before minutes of work, not after."""
    if args.tau != "auto":
        try:
            tau = float(args.tau)
        except ValueError:
            tau = -1.0
        if not (tau >= 0 and tau != float("inf")):  # also false for nan
            raise UsageError(f"--tau must be 'auto' or a finite non-negative number, got {args.tau!r:.40}")
    files = data_files(args)
    if not args.task and not files:
        raise UsageError("give a GLUE --task, or your own data with --train-file and --dev-file")
    if files and not args.model_dir:
        raise UsageError("your own data needs your own MODEL_DIR (the embedded default is tuned on a GLUE --task)")
    modeldir.check_output(args.out, _inputs(args), args.force)


def _inputs(args) -> list:
    """Every directory the run reads: --out must not overlap any of them."""
    if not args.task:
        return [args.model_dir, args.tokenizer, args.train_file, args.dev_file]
    task = get_task(args.task)
    model = args.model_dir or embedded_cache(task, args)
    return [model, args.tokenizer, glue_dir(args.glue_dir), modeldir.embedded_encoder() if not args.model_dir else None]


def embedded_cache(task: Task, args) -> Path:
    return modeldir.cache_dir() / f"minilm-{task.name}-{EMBEDDED_ROWS}rows-len{args.max_len}-seed{args.seed}"


def embedded_default(task: Task, train: list, args, progress: bool) -> Path:
    """The embedded MiniLM fine-tuned on a slice of the task, cached across runs."""
    target = embedded_cache(task, args)
    if (target / "config.json").is_file():
        return target
    print(f"fine-tuning the embedded MiniLM-L6 on {EMBEDDED_ROWS} {task.name} rows -> {target}",
          file=sys.stderr)
    model, tok = modeldir.load(modeldir.embedded_encoder(), num_labels=task.num_labels)
    if task.is_regression:
        model.config.problem_type = "regression"
    rows = random.Random(args.seed).sample(train, min(EMBEDDED_ROWS, len(train)))
    enc = encode(tok, rows, args.max_len)
    finetune.finetune(model, lambda e: make_batches(enc, args.batch_size, True, args.seed + e),
                      1, EMBEDDED_LR, seed=args.seed, progress=progress)
    model.config.finetuning_task = task.name
    with modeldir.atomic_dir(target, force=True) as tmp:
        model.save_pretrained(tmp)
        modeldir.save_tokenizer(tok, tmp)
        write_atomic(tmp / "report.json", {"model_dir": str(modeldir.embedded_encoder()), "task": task.name,
                                           "rows": len(rows), "epochs": 1, "lr": EMBEDDED_LR, "seed": args.seed})
    return target


def recover(model, task: Task, masks: dict, samples: list, dev_batches: list, train_enc: list, *,
            compensate: bool, epochs: float, lr: float, batch_size: int, seed: int,
            progress: bool, pad_id: int = 0, lap=lambda stage: None) -> tuple[dict, dict]:
    """Prune the dense `model` to `masks` (compensated or not), then re-finetune with the
    structure frozen; returns ({"vanilla": metrics, "final": metrics}, compensation report)."""
    comp = {}
    if compensate:
        comp = compensation.compensate(model, masks, samples, progress=progress)
    else:
        repermute.apply_masks(model, masks)
    lap("compensation")
    metrics = {"vanilla": evaluate(model, task, dev_batches, progress)}
    lap("vanilla_eval")
    metrics["final"] = metrics["vanilla"]
    if epochs > 0 and train_enc:
        finetune.finetune(model, lambda e: make_batches(train_enc, batch_size, True, seed + 1 + e, pad_id),
                          epochs, lr, masks, seed=seed, progress=progress)
        lap("finetune")
        metrics["final"] = evaluate(model, task, dev_batches, progress)
        lap("final_eval")
    return metrics, comp


def prune(args) -> dict:
    progress = not args.quiet
    seconds = {}
    clock = time.perf_counter()

    def lap(stage):
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(seconds.get(stage, 0.0) + now - clock, 2)
        clock = now

    files = data_files(args)
    if args.model_dir:
        modeldir.check_model_dir(args.model_dir)
    if files is None:
        task = get_task(args.task)
        data = glue_dir(args.glue_dir)
        splits = {"train": load_split(task, "train", data), "dev": load_split(task, "dev", data)}
        _note_skipped(splits.values())
    if args.model_dir:
        model_dir = Path(args.model_dir)
    else:
        lap("load")
        model_dir = embedded_default(task, splits["train"].examples, args, progress)
        lap("embedded_finetune")
    model, tok = modeldir.load(model_dir, tokenizer_dir=args.tokenizer)
    if files:  # the model says what the labels are; the files must use them
        task = user_task(model.config, Path(files.train).name)
        splits = {"train": load_file(files.train, files, task), "dev": load_file(files.dev, files, task)}
        _note_skipped(splits.values())
    modeldir.check_labels(model.config, task.num_labels, task.name)
    modeldir.name_labels(model.config, task.label_names)
    train, dev = splits["train"].examples, splits["dev"].examples
    max_len = modeldir.max_tokens(model.config, args.max_len)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    sample_rows = rng.sample(train, min(args.samples, len(train)))
    inputs, pad = model_inputs(model), tok.pad_token_id or 0
    samples = make_batches(encode(tok, sample_rows, max_len, inputs), args.batch_size, pad_id=pad)
    dev_batches = make_batches(encode(tok, dev, max_len, inputs), 64, pad_id=pad)
    lap("load")

    metrics = {"dense": evaluate(model, task, dev_batches, progress)}
    lap("dense_eval")
    scores = importance.score(model, samples, progress=progress)
    lap("importance")

    refs = bert.matrices(model)
    meta = {"target": args.target, "gmax": args.gmax, "nperm": args.nperm,
            "samples": len(sample_rows), "seed": args.seed, "fisher": "exact per-sample gradients"}
    tau = "auto" if args.tau == "auto" else float(args.tau)
    plan, masks, pgb = ablations.build(args.ablation, refs, scores, args.target,
                                       bert.num_heads(model), args.gmax, args.nperm, tau, progress)
    plan.meta.update(meta)
    lap("planning")

    train_rows = train if args.finetune_samples is None else rng.sample(train, min(args.finetune_samples, len(train)))
    train_enc = encode(tok, train_rows, max_len, inputs) if args.finetune_epochs > 0 else []
    recovered, comp = recover(model, task, masks, samples, dev_batches, train_enc,
                              compensate=not args.no_compensation, epochs=args.finetune_epochs,
                              lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                              progress=progress, pad_id=pad, lap=lap)
    metrics.update(recovered)

    bad = repermute.violations(model, plan)
    if bad:  # cannot happen unless a step above is broken; never write such a model
        raise RuntimeError(f"weights outside the plan's blocks are non-zero in {bad[:3]}")

    kept_total, total = cost.kept_params(masks), cost.total_params(masks)
    report = {
        "task": task.name, "main_metric": task.main_metric, "model_dir": str(model_dir),
        "source": args.source or str(model_dir),
        "method": plan.meta.get("method"), "target": args.target,
        "achieved_ratio": 1 - kept_total / total, "params_kept": kept_total, "params_total": total,
        "flops_ratio": cost.flops_ratio(refs, masks, model.config.hidden_size, 128),
        "metrics": metrics, "seconds": seconds, "data": _data_report(splits),
        "settings": {k: v for k, v in vars(args).items() if k not in ("quiet", "force")},
        "plan": {k: v for k, v in pgb.meta.items() if k in ("tau", "ffn_order", "ffn_layers_kept",
                                                             "ffn_layers_dropped", "notes")},
        "matrices": [{"name": mp.name, "layer": mp.layer, "kind": mp.kind, "groups": mp.groups,
                      "size": mp.shape[0] * mp.shape[1], "kept": int(masks[mp.name].sum()), "captured": mp.captured,
                      "captured_if": grouping.capture_baselines(scores[mp.name], mp.groups),
                      **({"reconstruction": comp[mp.name]} if mp.name in comp else {})}
                     for mp in plan.matrices],
    }
    with modeldir.atomic_dir(args.out, force=args.force, inputs=_inputs(args)) as tmp:
        model.save_pretrained(tmp)
        modeldir.save_tokenizer(tok, tmp)
        plan.save(tmp / "pgb.json")
        (tmp / "README.md").write_text(_card(report))
        lap("save")
        write_atomic(tmp / "report.json", report)
    return report


def _card(report: dict) -> str:
    facts = {"task": report["task"], "method": report["method"], "target ratio": report["target"],
             "achieved ratio (prunable weights removed)": f"{report['achieved_ratio']:.4f}",
             "prunable weights kept": f"{report['params_kept']:,} of {report['params_total']:,}",
             "FLOPs ratio at 128 tokens": f"{report['flops_ratio']:.3f}",
             "layers": ", ".join(f"{k} {v}" for k, v in report["plan"].items() if k in ("ffn_layers_kept",
                                                                                     "ffn_layers_dropped"))}
    usage = ("`AutoModelForSequenceClassification.from_pretrained(dir)` computes the pruned model (its "
             "zeros included); `pgb.json` holds G and the permutations of every matrix, `report.json` "
             "everything measured. `pgb-export dir --out deploy` turns it into a grouped ONNX graph.")
    return card(f"{Path(report['source']).name}, PGB-pruned to {report['achieved_ratio']:.0%}",
                report["source"], "text-classification", "transformers", facts,
                {k: v for k, v in report["metrics"].items()}, usage)


def _note_skipped(splits) -> None:
    for split in splits:
        if split.note():
            print(f"note: {split.note()}", file=sys.stderr)


def _data_report(splits: dict[str, Split]) -> dict:
    return {name: {"source": s.source, "rows": s.rows, "used": len(s.examples), "skipped": s.skipped}
            for name, s in splits.items()}


def summary(report: dict) -> str:
    by_layer = {}
    for m in report["matrices"]:
        cell = ("drop" if m["kept"] == 0 else str(m["groups"])) if report["method"] not in (
            "unstructured", "structured") else f"{m['kept'] / m['size']:.0%}"
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
    lines += [f"note: {n}" for n in report["plan"].get("notes", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def go() -> int:
        args.source = args.model_dir  # as given: a Hub id stays the model card's base model
        if args.model_dir:
            args.model_dir = modeldir.resolve(args.model_dir)
        _check_flags(args)
        report = prune(args)
        print(summary(report))
        print(f"wrote {args.out} (model, pgb.json, report.json)")
        return 0

    return run("pgb-prune", go)


if __name__ == "__main__":
    sys.exit(main())
