"""Wall time of the pruning core on this machine.

1. minilm-sst2 with 2000 samples: importance (exact per-sample Fisher) + planning
   (Algorithm 1 + 2) + compensation. Target: under 5 minutes on 2 cores.
2. Planning alone (permutation search for every matrix) of a BERT-base-shaped model
   (random weights, BertConfig defaults). Target: under 60 seconds.

    .venv/bin/python scripts/bench_prune_speed.py
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
from pruning.batching import encode, make_batches
from pruning.tasks import fixture_task, glue_dir, load_split
from pruning import bert, budget, compensation, importance
from pruning.pipeline import PruneOptions

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixture", default=str(ROOT.parent / "shared" / "models" / "minilm-sst2"))
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--compensation", choices=[m for m in compensation.MODES if m != "off"],
                   default=PruneOptions.compensation,
                   help=f"pgb-prune's --compensation (default {PruneOptions.compensation}, its default)")
    p.add_argument("--out", default="bench/prune_speed.json")
    args = p.parse_args()
    res = {"machine": f"{platform.node()} {platform.machine()}, torch threads {torch.get_num_threads()}",
           "date": time.strftime("%Y-%m-%d"), "samples": args.samples,
           "compensation": args.compensation}

    fixture = Path(args.fixture)
    model, tok = modeldir.load(fixture)
    task = fixture_task(fixture)
    rows = random.Random(0).sample(load_split(task, "train", glue_dir(None)).examples, args.samples)
    batches = make_batches(encode(tok, rows, 128), 32)
    t0 = time.perf_counter()
    scores = importance.score(model, batches, progress=False)
    t1 = time.perf_counter()
    plan = budget.plan_pgb(bert.matrices(model), scores, args.target)
    t2 = time.perf_counter()
    report = compensation.compensate(model, plan.masks(), batches, progress=False, mode=args.compensation)
    t3 = time.perf_counter()
    res["minilm"] = {"importance_s": t1 - t0, "planning_s": t2 - t1, "compensation_s": t3 - t2,
                     "total_s": t3 - t0, "achieved_ratio": plan.ratio,
                     "mean_reconstruction_before": sum(v["before"] for v in report.values()) / max(1, len(report)),
                     "mean_reconstruction_after": sum(v["after"] for v in report.values()) / max(1, len(report))}
    print(json.dumps(res["minilm"], indent=1), flush=True)

    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
    refs = bert.matrices(base)
    # Random weights have no task gradient; w^2 times a random positive Fisher stands in.
    g = torch.Generator().manual_seed(0)
    fake = {r.name: bert.weight(base, r).square() * torch.rand(r.shape, generator=g) for r in refs}
    t = time.perf_counter()
    plan = budget.plan_pgb(refs, fake, args.target)
    res["bert_base_planning"] = {"seconds": time.perf_counter() - t, "matrices": len(refs),
                                 "achieved_ratio": plan.ratio,
                                 "groups": sorted({mp.groups for mp in plan.matrices})}
    print(json.dumps(res["bert_base_planning"], indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
