"""ONNX Runtime CPU latency: PGB grouped exports vs our dense export vs what a user would run
instead: the dense model optimised by ONNX Runtime's own BERT optimizer (fused attention),
and the dense model quantized to INT8 by ONNX Runtime's `quantize_dynamic` (per-channel
QInt8, one command). PGB plans at each target under each budget allocation (measured, the
pgb-prune default, floor and paper), fp32 and INT8 (ours, as `--int8` writes it: with ORT's
fused attention); for the default allocation also quantize_dynamic over our PGB graph, an
analysis row with every permutation removed (same shapes, wrong numbers: what the remaining
permutations cost), our INT8 with the standard attention (what the fused one buys) and our
INT8 with every grouped linear grouped (what `--grouping auto` buys). `--pruned DIR` adds a
model pgb-prune wrote (its own plan, e.g. from its default 2,000 importance samples, or a
structured ablation), fp32 and INT8 as pgb-export writes them.
Each row carries its graph census.

Variants are timed interleaved (each round runs every variant in turn, repeated) and
summarised by the median and the minimum, so that the ratios compare moments of the same
machine load. Each turn is a block of runs whose first is untimed (`--block`, default 5), so
every variant is timed with its own weights in the caches, as a server running one model
has them; `--block 1` times single runs with the previous variant's weights in the caches,
which favours no one but measures no deployment either.

    .venv/bin/python scripts/bench_onnx_latency.py --out bench/latency.json
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
import torch

from pruning import modeldir
from pruning.batching import encode, make_batches
from pgb_export.bert_graph import build, dense_plan
from pgb_export.census import census
from pgb_export import lowering
from pgb_export.exporter import graph_masks, load_plan, session
from pgb_export.grouped_linear import PERMUTATION_INDEX, LinearOptions
from pruning.tasks import fixture_task, glue_dir, load_split
from pruning import bert, cost, importance, layer_drop, repermute
from pruning.neurons import FFN_FORMS
from pruning.pipeline import ALLOCATIONS, PruneOptions, build_plan, held_rows
from pruning.budget import Ties
from pruning.plan import uniform_plan

ROOT = Path(__file__).resolve().parents[1]
INT8 = LinearOptions(int8=True, ort_attention=True)


def ours_int8(model, plan, opts: LinearOptions = INT8) -> bytes:
    """The INT8 graph as pgb-export --int8 writes it (fused attention, grouped linears written
    dense where that is cheaper)."""
    return build(model, lowering.densified(plan, lowering.dense_cheaper(plan)), opts).SerializeToString()


def ort_optimized_dense(model, workdir: Path) -> bytes:
    """torch.onnx (TorchScript exporter, eager attention, so ORT's fusions match) +
    onnxruntime.transformers.optimizer."""
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModelForSequenceClassification

    workdir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(workdir / "hf")
    eager = AutoModelForSequenceClassification.from_pretrained(workdir / "hf", dtype=torch.float32,
                                                               attn_implementation="eager").eval()
    eager.config.return_dict = False
    ids = torch.randint(1000, 2000, (2, 16))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(eager, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(workdir / "t.onnx"),
                      input_names=names, output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={**{n: {0: "b", 1: "s"} for n in names}, "logits": {0: "b"}})
    cfg = model.config
    opt = optimize_model(str(workdir / "t.onnx"), model_type="bert", num_heads=cfg.num_attention_heads,
                         hidden_size=cfg.hidden_size)
    opt.save_model_to_file(str(workdir / "opt.onnx"))
    return (workdir / "opt.onnx").read_bytes()


def pgb_pruned(path: Path, scores: dict, target: float, allocation: str, samples: list, held: list,
               ties: Ties = Ties(), ffn: str = PruneOptions.ffn) -> tuple:
    """(model, plan, masks): the fixture pruned to `target` as pgb-prune plans it (masked, not
    compensated: speed depends on the structure only)."""
    model, _ = modeldir.load(path)
    plan, masks, _, _ = build_plan(model, bert.matrices(model), scores, target, allocation=allocation,
                                   samples=samples, held=held, ties=ties, ffn=ffn)
    repermute.apply_masks(model, masks)
    return model, plan, masks


def plan_facts(refs, plan, masks) -> dict:
    """What a PGB row's plan keeps: the weight ratio it lands on and the sub-layers it drops
    whole (two plans at one weight ratio differ in FLOPs by the attention they keep)."""
    empty = {m.name for m in plan.matrices if m.groups == 0}
    return {"weight_ratio": 1 - cost.kept_params(masks) / cost.total_params(masks),
            "dropped": [s.name() for s in layer_drop.sublayers(refs) if s.matrices <= empty]}


def without_permutations(graph: onnx.ModelProto) -> bytes:
    """The graph with every permutation removed (its consumers read the unpermuted tensor):
    same shapes, wrong numbers; what the permutations left cost is the difference."""
    nodes = list(graph.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    rename, dead = {}, set()
    for n in nodes:
        if n.op_type != "Gather" or PERMUTATION_INDEX not in n.input[1]:
            continue
        if n.attribute[0].i == 2:  # gather form: x[..., index]
            rename[n.output[0]], dead = n.input[0], dead | {n.name}
            continue
        back = consumers[n.output[0]][0]  # transpose form: Transpose -> Gather -> Transpose back
        rename[back.output[0]] = producer[n.input[0]].input[0]
        dead |= {n.name, back.name}
    keep = [n for n in nodes if n.name not in dead]
    for n in keep:
        n.input[:] = [rename.get(i, i) for i in n.input]
    used = {i for n in keep for i in n.input} | {o.name for o in graph.graph.output}
    keep = [n for n in keep if n.op_type != "Transpose" or n.output[0] in used]  # unused features-first copies
    del graph.graph.node[:]
    graph.graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    inits = [i for i in graph.graph.initializer if i.name in used]
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(inits)
    return graph.SerializeToString()


def ort_quantized(model_bytes: bytes, workdir: Path, name: str) -> bytes:
    """ONNX Runtime's own dynamic quantization, per-channel QInt8 weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    workdir.mkdir(parents=True, exist_ok=True)
    src, dst = workdir / f"{name}.onnx", workdir / f"{name}.int8.onnx"
    src.write_bytes(model_bytes)
    quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8)
    return dst.read_bytes()


ORT_INT8 = "dense INT8 (ORT quantize_dynamic)"  # what the INT8 goal is measured against
CENSUS = ("MatMul", "Permutation", "Exchange", "Gather", "Transpose")


def census_of(model_bytes: bytes) -> dict:
    total = census(onnx.load_from_string(model_bytes))["total"]
    return {k: total[k] for k in CENSUS}


def _plan_of(variant: str, plans: dict) -> dict:
    """The plan facts of the longest row prefix that names a PGB plan ("PGB 0.5 measured tied
    FFN" before "PGB 0.5 measured"), as {"plan": facts}, or {} for a dense row."""
    prefix = max((p for p in plans if variant.startswith(p + " ")), key=len, default=None)
    return {"plan": plans[prefix]} if prefix else {}


def time_interleaved(sessions: dict, feeds: dict, repeats: int, block: int) -> dict[str, tuple[float, float]]:
    """{variant: (median ms, min ms)}: each round runs every variant in turn, `block` runs in a
    row of which the first is untimed, so that each variant is timed with its weights in the
    caches as a server running that model has them (block 1: one timed run each, the caches
    holding the previous variant's weights). Interleaving makes the ratios compare moments of
    the same machine load; the minimum is the run least disturbed by the rest of the machine."""
    for s in sessions.values():
        s.run(None, feeds)
    samples = {k: [] for k in sessions}
    for _ in range(repeats):
        for name, s in sessions.items():
            if block > 1:
                s.run(None, feeds)
            for _ in range(max(1, block - 1)):
                t = time.perf_counter()
                s.run(None, feeds)
                samples[name].append(time.perf_counter() - t)
    return {k: (statistics.median(v) * 1e3, min(v) * 1e3) for k, v in samples.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixture", default=str(ROOT.parent / "shared" / "models" / "minilm-sst2"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--repeats", type=int, default=21, help="rounds of every variant (default 21)")
    p.add_argument("--block", type=int, default=5,
                   help="runs of a variant in a row per round, the first untimed (default 5: warm caches, as "
                        "a server running one model sees it); 1 times single runs in turn (cold caches)")
    p.add_argument("--samples", type=int, default=256, help="importance samples for the MiniLM plans")
    p.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.88])
    p.add_argument("--allocations", nargs="+", choices=ALLOCATIONS, default=["measured", "floor", "paper"],
                   help="budget allocations to time (the first is pgb-prune's default)")
    p.add_argument("--pruned", nargs="+", default=[], metavar="DIR",
                   help="pgb-prune output directories of the fixture to time beside the plans made here")
    p.add_argument("--tie-qkv", action="store_true",
                   help="also time the default allocation's plans under pgb-prune's --tie-qkv (fp32 and INT8)")
    p.add_argument("--tie-ffn", action="store_true",
                   help="also time the default allocation's plans under pgb-prune's --tie-ffn (fp32 and INT8)")
    p.add_argument("--ffn", choices=FFN_FORMS, default=PruneOptions.ffn,
                   help=f"pgb-prune's --ffn for the plans made here (default {PruneOptions.ffn}, its default)")
    p.add_argument("--skip-bert-base", action="store_true")
    p.add_argument("--forms", choices=("default", "all"), default="default",
                   help="PGB fp32 graph forms: split/transpose only (default) or all four")
    p.add_argument("--out", default="bench/latency.json")
    args = p.parse_args()
    if args.block < 1:
        p.error("--block must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="pgb-bench-"))

    suites = {}
    plans = {}  # PGB row prefix -> plan_facts, for every variant built from that plan
    fixture = Path(args.fixture)
    dense_model, tok = modeldir.load(fixture)
    refs = bert.matrices(dense_model)
    heads = dense_model.config.num_attention_heads
    dense_bytes = build(dense_model, dense_plan(dense_model)).SerializeToString()
    minilm = {"dense (ours)": (dense_bytes, 1.0),
              "dense (ORT-optimised)": (ort_optimized_dense(dense_model, work / "minilm"), 1.0),
              ORT_INT8: (ort_quantized(dense_bytes, work, "dense"), 1.0),
              "dense INT8 (ours)": (build(dense_model, dense_plan(dense_model), INT8).SerializeToString(), 1.0),
              "dense INT8 (ours), standard attention (analysis)": (
                  build(dense_model, dense_plan(dense_model), LinearOptions(int8=True)).SerializeToString(), 1.0)}
    task = fixture_task(fixture)
    train = load_split(task, "train", glue_dir(None)).examples
    rows = random.Random(0).sample(train, args.samples)
    samples = make_batches(encode(tok, rows), 32)
    held = make_batches(encode(tok, held_rows(train, rows, 0)), 32)
    scores = importance.score(dense_model, samples, progress=False)
    for target in args.targets:
        for allocation in args.allocations:
            model, plan, masks = pgb_pruned(fixture, scores, target, allocation, samples, held, ffn=args.ffn)
            ratio = cost.flops_ratio(refs, masks, heads, args.seq)
            name = f"PGB {target} {allocation}"
            plans[name] = plan_facts(refs, plan, masks)
            forms = [("split", "transpose")] if args.forms == "default" else [
                (f, p) for f in ("split", "batched") for p in ("transpose", "gather")]
            for form, perm in forms:
                suffix = "" if args.forms == "default" else f" {form}/{perm}"
                minilm[f"{name} fp32{suffix}"] = (build(model, plan, LinearOptions(form, perm)).SerializeToString(), ratio)
            minilm[f"{name} INT8 (ours)"] = (ours_int8(model, plan), ratio)
            if allocation == args.allocations[0]:
                fp32 = minilm[f"{name} fp32" + ("" if args.forms == "default" else " split/transpose")][0]
                minilm[f"{name} INT8 (ORT quantize_dynamic)"] = (ort_quantized(fp32, work, f"pgb{target}"), ratio)
                minilm[f"{name} fp32, permutations removed (analysis)"] = (
                    without_permutations(build(model, plan)), ratio)
                minilm[f"{name} INT8 (ours), standard attention (analysis)"] = (
                    ours_int8(model, plan, LinearOptions(int8=True)), ratio)
                minilm[f"{name} INT8 (ours), every linear grouped (analysis)"] = (
                    build(model, plan, INT8).SerializeToString(), ratio)
                for label, ties in (("Q/K/V", Ties(qkv=True)),) * args.tie_qkv + (("FFN", Ties(ffn=True)),) * args.tie_ffn:
                    model, plan, masks = pgb_pruned(fixture, scores, target, allocation, samples, held, ties=ties,
                                                    ffn="groups" if ties.ffn else args.ffn)
                    tied_ratio = cost.flops_ratio(refs, masks, heads, args.seq)
                    plans[f"{name} tied {label}"] = plan_facts(refs, plan, masks)
                    minilm[f"{name} tied {label} fp32"] = (build(model, plan).SerializeToString(), tied_ratio)
                    minilm[f"{name} tied {label} INT8 (ours)"] = (ours_int8(model, plan), tied_ratio)
    for path in args.pruned:
        model, _ = modeldir.load(Path(path))
        plan = load_plan(Path(path), model)
        ratio = cost.flops_ratio(refs, graph_masks(model, plan), heads, args.seq)
        minilm[f"{path} fp32"] = (build(model, plan).SerializeToString(), ratio)
        minilm[f"{path} INT8 (ours)"] = (ours_int8(model, plan), ratio)
    suites["MiniLM-L6 (minilm-sst2)"] = minilm

    if not args.skip_bert_base:
        from transformers import BertConfig, BertForSequenceClassification
        torch.manual_seed(0)
        base = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
        brefs = bert.matrices(base)
        bert_base = {"dense (ours)": (build(base, dense_plan(base)).SerializeToString(), 1.0),
                     "dense (ORT-optimised)": (ort_optimized_dense(base, work / "base"), 1.0)}
        for g in (2, 3, 4, 6):
            model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
            model.load_state_dict(base.state_dict())
            plan = uniform_plan(bert.matrices(model), g)
            repermute.apply_plan(model, plan)
            bert_base[f"G={g} everywhere split/transpose"] = (build(model, plan).SerializeToString(),
                                                             cost.flops_ratio(brefs, plan.masks(), base.config.num_attention_heads, args.seq))
        suites["BERT-base shapes (random weights)"] = bert_base

    rng = np.random.default_rng(0)
    results = {"machine": f"{platform.node()} {platform.machine()}, {args.threads} ORT threads", "block": args.block,
               "onnxruntime": ort.__version__, "date": time.strftime("%Y-%m-%d"), "seq": args.seq, "suites": {}}
    for suite, variants in suites.items():
        # Idle workers asleep: the idle variants' spinning workers took the cores from the one
        # being timed; at batch 1 every median was 1.5 to 2.7 times its min, 1.03 to 1.14 without
        # (BENCHMARKS.md, "Warm caches").
        sessions = {k: session(v[0], args.threads, spinning=False) for k, v in variants.items()}
        rows = {}
        for batch in args.batches:
            ids = rng.integers(1000, 20000, (batch, args.seq)).astype(np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            # batch 1 runs are milliseconds and jitter most on a shared machine: five times the rounds
            reps = args.repeats * 5 if batch == 1 else args.repeats if "MiniLM" in suite else max(3, args.repeats // 2)
            ms = time_interleaved(sessions, feeds, reps, args.block)
            for k, (median, fastest) in ms.items():
                row = rows.setdefault(k, {"flops_ratio": variants[k][1], "census": census_of(variants[k][0]),
                                          **_plan_of(k, plans)})
                row[f"b{batch}_ms"], row[f"b{batch}_min_ms"] = median, fastest
                row[f"b{batch}_speedup_vs_dense"] = ms["dense (ours)"][0] / median
                row[f"b{batch}_min_speedup_vs_dense"] = ms["dense (ours)"][1] / fastest
                if ORT_INT8 in ms:
                    row[f"b{batch}_speedup_vs_ort_int8"] = ms[ORT_INT8][0] / median
                    row[f"b{batch}_min_speedup_vs_ort_int8"] = ms[ORT_INT8][1] / fastest
        results["suites"][suite] = rows
        print(f"\n{suite}")
        for k, r in rows.items():
            c = r["census"]
            print(f"  {k:42s} flops {r['flops_ratio']:.3f}  " + "  ".join(
                f"b{b}: {r[f'b{b}_ms']:8.1f} ms ({r[f'b{b}_speedup_vs_dense']:.2f}x, min {r[f'b{b}_min_speedup_vs_dense']:.2f}x)"
                for b in args.batches)
                + "  " + " ".join(f"{k} {c[k]}" for k in CENSUS)
                + (f"  weights {r['plan']['weight_ratio']:.4f} drops {', '.join(r['plan']['dropped']) or '-'}"
                   if "plan" in r else ""), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
