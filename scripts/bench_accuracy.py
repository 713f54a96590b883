"""Accuracy of PGB vs dense and vs the ablations on the fine-tuned fixtures.

Scores are computed once per fixture, then every (target, ablation) run starts from the
dense weights and goes through the same pipeline.build_plan + recover path as pgb-prune.
Results are appended to a JSON lines file as they come, so an interrupted sweep keeps
what it finished.

    .venv/bin/python scripts/bench_accuracy.py --fixtures minilm-sst2 --out bench/acc.jsonl
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch

from pruning import modeldir
from pruning.batching import encode, evaluate, make_batches
from pruning.pipeline import ALLOCATIONS, PruneOptions, build_plan, held_rows, pick_device, recover, recovery_lr
from pruning.tasks import fixture_task, glue_dir, load_split
from pruning import bert, cost, finetune, importance
from pruning.budget import Ties
from pruning.compensation import MODES
from pruning.distillation import distillation
from pruning.neurons import FFN_FORMS

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(ROOT.parent / "shared" / "models"))
    p.add_argument("--fixtures", nargs="+", default=["minilm-sst2", "minilm-mrpc", "minilm-stsb", "minilm-cola"],
                   help="names under --models, or model directories (scripts/make_fixture.py writes them)")
    p.add_argument("--targets", nargs="*", type=float, default=[0.4, 0.5, 0.6, 0.88])
    p.add_argument("--ablation-target", type=float, default=0.6)
    p.add_argument("--ablations", nargs="*", default=["unstructured", "fixed-g", "no-permutation", "structured"])
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--finetune-epochs", type=float, default=1.0)
    p.add_argument("--finetune-samples", type=int, default=2000)
    p.add_argument("--lrs", nargs="+", type=float, default=[None],
                   help="re-finetuning learning rates, one run each (default: pgb-prune's, by steps and target)")
    p.add_argument("--allocations", nargs="+", choices=ALLOCATIONS, default=["measured"],
                   help="PGB budget allocations: one run each (ablations use the first)")
    p.add_argument("--tie-qkv", action="store_true", help="pgb-prune's --tie-qkv for every run")
    p.add_argument("--tie-ffn", action="store_true", help="pgb-prune's --tie-ffn for every run")
    p.add_argument("--ffn", choices=FFN_FORMS, default=PruneOptions.ffn,
                   help=f"pgb-prune's --ffn for every run (default {PruneOptions.ffn}, its default)")
    p.add_argument("--batch-size", type=int, default=32, help="re-finetuning batch size (default 32, pgb-prune's)")
    p.add_argument("--compensation", choices=MODES, default=PruneOptions.compensation,
                   help=f"pgb-prune's --compensation (default {PruneOptions.compensation}, its default)")
    p.add_argument("--distill", type=float, default=PruneOptions.distill,
                   help=f"weight of the dense teacher's soft loss (0: off; default {PruneOptions.distill}, pgb-prune's)")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--distill-hidden", type=float, default=PruneOptions.distill_hidden,
                   help="pgb-prune's --distill-hidden for every run")
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="pgb-prune's --seed: which rows are sampled, and the "
                   "re-finetuning's order and dropout (default 0)")
    p.add_argument("--glue-dir", help="GLUE TSV root (default: pgb-prune's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto, pgb-prune's)")
    p.add_argument("--out", default="bench/accuracy.jsonl")
    args = p.parse_args()
    if args.tie_ffn and args.ffn != "groups":
        p.error("--tie-ffn ties a grouped FFN: add --ffn groups")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)

    for fixture in args.fixtures:
        path = Path(fixture) if Path(fixture).is_dir() else Path(args.models) / fixture
        task = fixture_task(path)
        data = glue_dir(args.glue_dir)
        train, dev = load_split(task, "train", data).examples, load_split(task, "dev", data).examples
        model, tok = modeldir.load(path)
        model.to(device)
        rng = random.Random(args.seed)
        sample_rows = rng.sample(train, min(args.samples, len(train)))
        samples = make_batches(encode(tok, sample_rows, args.max_len), 32)
        train_enc = encode(tok, rng.sample(train, min(args.finetune_samples, len(train))), args.max_len)
        held = make_batches(encode(tok, held_rows(train, sample_rows, args.seed), args.max_len), 32)
        dev_batches = make_batches(encode(tok, dev, args.max_len), 64)
        dense = evaluate(model, task, dev_batches)
        t = time.perf_counter()
        scores = importance.score(model, samples, progress=False)
        score_s = time.perf_counter() - t
        refs = bert.matrices(model)
        runs = [(t, "none", a, lr) for t in args.targets for a in args.allocations for lr in args.lrs]
        runs += [(args.ablation_target, a, args.allocations[0], lr) for a in args.ablations for lr in args.lrs]
        distill = distillation(args.distill, args.temperature, args.distill_hidden)
        steps = finetune.recovery_steps(len(train_enc), args.batch_size, args.finetune_epochs)
        for target, ablation, allocation, lr in runs:
            lr = lr if lr is not None else recovery_lr(steps, target)
            model, _ = modeldir.load(path)
            model.to(device)
            t = time.perf_counter()
            plan, masks, pgb, _ = build_plan(model, refs, scores, target, ablation=ablation, allocation=allocation,
                                             samples=samples, held=held, ties=Ties(qkv=args.tie_qkv, ffn=args.tie_ffn), ffn=args.ffn,
                                             compensation_mode=args.compensation)
            metrics, _ = recover(model, task, masks, samples, dev_batches, train_enc,
                                 compensation_mode=args.compensation,
                                 epochs=args.finetune_epochs, lr=lr, batch_size=args.batch_size, seed=args.seed,
                                 progress=False, distill=distill)
            row = {"fixture": path.name, "task": task.name, "metric": task.main_metric,
                   "target": target, "ablation": ablation, "allocation": allocation, "tie_qkv": args.tie_qkv, "tie_ffn": args.tie_ffn, "ffn": args.ffn,
                   "compensation": args.compensation, "lr": lr, "steps": steps, "batch_size": args.batch_size,
                   "distill": args.distill, "temperature": args.temperature if args.distill else None,
                   "distill_hidden": args.distill_hidden,
                   "achieved": 1 - cost.kept_params(masks) / cost.total_params(masks),
                   "flops_ratio": cost.flops_ratio(refs, masks, model.config.num_attention_heads, 128),
                   "dense": dense[task.main_metric], "vanilla": metrics["vanilla"][task.main_metric],
                   "final": metrics["final"][task.main_metric], "final_all": metrics["final"],
                   "ffn_layers_dropped": pgb.meta.get("ffn_layers_dropped"),
                   "measured": pgb.meta.get("measured"),
                   "groups": [mp.groups for mp in pgb.matrices],
                   "seed": args.seed, "samples": args.samples, "finetune_epochs": args.finetune_epochs,
                   "finetune_samples": args.finetune_samples, "score_seconds": round(score_s, 1),
                   "run_seconds": round(time.perf_counter() - t, 1),
                   "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
                   "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                   "date": time.strftime("%Y-%m-%d")}
            print(json.dumps(row), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
