"""The fastest a plan's grouped export could run in ONNX Runtime on this CPU, from the dense
export's own profile.

Each node of the dense graph is timed by ONNX Runtime's profiler (kernel time per run, the
median over `--rounds` runs in each of 3 sessions). A pruned model's time is then bounded
from below by:
- each linear's MatMul time divided by its G (nothing for a dropped one);
- in a sub-layer the export slices (whole FFN neurons, pgb-prune's default `--ffn neurons`,
  or whole heads, `--ablation structured`: pgb_export.slicing), every node but its residual
  Add and LayerNorm, linears included, scaled by the share of neurons or heads it keeps. That
  shrinks even the nodes whose work does not (FFN2's bias), so it stays a bound;
- a dropped sub-layer's nodes removed, except its residual Add and LayerNorm (the export
  keeps those: the sub-layer becomes a constant added before its LayerNorm);
- every other node (embeddings, softmax, attention reshapes, bias and residual Adds,
  LayerNorm, GELU, the head) as the dense graph runs it;
- the time outside kernels (scheduling) as the dense graph's.
The profiler slows every node a little, so the ceiling is taken as a share of the profiled
dense time and applied to the dense graph timed without it (interleaved with the baselines,
median of blocks of runs, as scripts/bench_onnx_latency.py times).
Every copy a grouped graph adds (permutations, splits, concatenations) counts zero, and a
grouped MatMul exactly its share of the dense one's time, so no export of the plan beats
this ceiling with ONNX Runtime's kernels. The FLOPs ratio counts the MatMuls only; the
ceiling also counts what grouping cannot shrink.

For `int8` the dense graph is ours (`pgb-export --int8`: fused attention, dynamic INT8 per
linear), and the ceiling is also stated against ONNX Runtime's own `quantize_dynamic` of the
dense export (the baseline of issue 10), timed in the same interleaved runs.

    .venv/bin/python scripts/latency_ceiling.py --pruned DIR [DIR ...] --out bench/ceiling.json
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from torch import nn

from bench_onnx_latency import ORT_INT8, ort_quantized, time_interleaved
from pgb_export.bert_graph import build, dense_plan
from pgb_export.exporter import session
from pgb_export.grouped_linear import LinearOptions
from pgb_export.slicing import layer_slices
from pruning import bert, modeldir
from pruning.plan import Plan, PlanError

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = {"fp32": LinearOptions(), "int8": LinearOptions(int8=True, ort_attention=True)}
LINEAR_OPS = ("MatMul", "MatMulInteger")
WARMUP = 5  # runs left out of each profiled session: they fill the caches
PASSES = 3  # profiled sessions per graph
BLOCK = 5  # timed runs in a row per variant and round, the first untimed (bench_onnx_latency)


def linear_nodes(graph: onnx.ModelProto, layers: int) -> dict[str, tuple[int, str]]:
    """{node name: (layer, kind)} for the linears of a dense export: in each layer's scope the
    MatMuls with a weight initializer, in graph order, are W_Q, W_K, W_V, W_O, W_1, W_2."""
    weights = {i.name for i in graph.graph.initializer}
    found: dict[int, list[str]] = {i: [] for i in range(layers)}
    for n in graph.graph.node:
        scope = n.name.split("/", 1)[0]
        if n.op_type in LINEAR_OPS and scope.startswith("layer") and n.input[1] in weights:
            found[int(scope[5:])].append(n.name)
    if any(len(v) != len(bert.KINDS) for v in found.values()):
        raise SystemExit(f"expected {len(bert.KINDS)} linears per layer, found {[len(v) for v in found.values()]}")
    return {name: (layer, kind) for layer, names in found.items() for name, kind in zip(names, bert.KINDS)}


def profile(model_bytes: bytes, feeds: dict, rounds: int, workdir: Path) -> tuple[dict[str, float], float, onnx.ModelProto]:
    """({node: median kernel ms per run}, median ms per run outside kernels, the graph as ONNX
    Runtime optimised it: the nodes the profile names, in execution order). The runs come
    from PASSES sessions one after another, so that a slow spell of the machine during one
    of them moves no median; each session's first runs, which fill the caches, are left out."""
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    so.enable_profiling = True
    so.optimized_model_filepath = str(workdir / "optimized.onnx")
    per_node: dict[str, list[float]] = {}
    run_ms: list[float] = []
    for i in range(PASSES):
        so.profile_file_prefix = str(workdir / f"profile{i}")
        sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        for _ in range(WARMUP + rounds):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
        runs = sorted((e["ts"], e["dur"]) for e in events if e.get("name") == "model_run")[WARMUP:]
        run_ms += [dur / 1e3 for _, dur in runs]
        node_ms: dict[str, list[float]] = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= runs[0][0]:
                node_ms.setdefault(e["name"][: -len("_kernel_time")], []).append(e["dur"] / 1e3)
        for name, d in node_ms.items():  # a node may run more than once a run: its time per run
            per_node.setdefault(name, []).extend(np.reshape(d, (len(runs), -1)).sum(1))
    kernel = {name: float(np.median(d)) for name, d in per_node.items()}
    outside = float(np.median(np.asarray(run_ms) - np.sum(list(per_node.values()), axis=0)))
    return kernel, outside, onnx.load(workdir / "optimized.onnx")


def sublayer_of(optimized: onnx.ModelProto) -> dict[str, tuple[int, str, bool]]:
    """{node: (layer, "attention" | "ffn", kept when the sub-layer is dropped)}. Scope comes
    from the name; fused nodes without one (BiasGelu, Gelu) belong to the layer running when
    they run. A layer's attention is its nodes up to its first LayerNorm."""
    feeds_norm = {i for n in optimized.graph.node if n.op_type == "LayerNormalization" for i in n.input}
    out, layer, normed, in_head = {}, None, set(), False
    for n in optimized.graph.node:
        scope = n.name.split("/", 1)[0] if "/" in n.name else None
        in_head |= scope is not None and not scope.startswith("layer") and layer is not None
        if scope is not None and scope.startswith("layer"):
            layer = int(scope[5:])
        elif scope is not None or layer is None or in_head:
            continue
        part = "ffn" if layer in normed else "attention"
        out[n.name] = (layer, part, n.op_type == "LayerNormalization" or n.output[0] in feeds_norm)
        if n.op_type == "LayerNormalization":
            normed.add(layer)
    return out


def sliced_shares(model: nn.Module, plan: Plan) -> dict[tuple[int, str], float]:
    """{(layer, "attention" | "ffn"): share of its heads or neurons the export keeps} for the
    sub-layers it slices, read from the pruned weights as the exporter reads them."""
    widths = {(r.layer, r.kind): r.shape[1] for r in bert.matrices(model)}  # (in, out)
    shares = {}
    for layer, s in enumerate(layer_slices(model, plan)):
        for part, keep, kind in (("attention", s.attention, "query"), ("ffn", s.ffn, "ffn1")):
            if keep is not None:
                shares[(layer, part)] = len(keep) / widths[(layer, kind)]
    return shares


def ceiling(kernel: dict[str, float], linears: dict[str, tuple[int, str]], parts: dict, plan: Plan,
            shares: dict[tuple[int, str], float] | None = None) -> float:
    """Kernel ms of the plan's fastest possible export (see the module docstring); `shares`
    as sliced_shares gives them."""
    shares = shares or {}
    groups = {(mp.layer, mp.kind): mp.groups for mp in plan.matrices}
    dropped = set()
    for layer, kinds in plan.by_layer().items():  # as the exporter: W_V or W_O dropped, W_1 or W_2 dropped
        if 0 in (kinds["value"].groups, kinds["attn_out"].groups):
            dropped.add((layer, "attention"))
        if 0 in (kinds[k].groups for k in bert.FFN_KINDS):
            dropped.add((layer, "ffn"))
    total = 0.0
    for name, ms in kernel.items():
        sub = (parts[name][0], parts[name][1]) if name in parts else None
        if sub in dropped:
            total += ms if parts[name][2] else 0.0
        elif name in linears:
            layer, kind = linears[name]
            g, own = groups[(layer, kind)], (layer, "attention" if kind in bert.MHA_KINDS else "ffn")
            total += ms * shares.get(own, 1 / g) if g else 0.0
        elif sub in shares and not parts[name][2]:
            total += ms * shares[sub]
        else:
            total += ms
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pruned", nargs="+", required=True, help="pgb-prune output directories (their pgb.json)")
    p.add_argument("--dense", default=str(ROOT.parent / "shared" / "models" / "minilm-sst2"),
                   help="the dense model the plans prune (default the minilm-sst2 fixture)")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=100, help="runs per profiled session, and timing rounds, at batch 1 (fewer at larger batches)")
    p.add_argument("--out", default="bench/ceiling.json")
    args = p.parse_args()

    try:
        model, _ = modeldir.load(Path(args.dense))
    except modeldir.ModelError as e:
        raise SystemExit(f"latency_ceiling: {e}") from None
    refs = bert.matrices(model)
    plans, shares = {}, {}
    for d in args.pruned:
        try:
            plans[d] = Plan.load(Path(d) / "pgb.json")
            plans[d].check_matches(refs)
            if plans[d].meta.get("method") == "unstructured":  # its zeros are scattered: the export computes them
                raise SystemExit(f"{d}: an unstructured model; its export is the dense graph, so is its ceiling")
            shares[d] = sliced_shares(modeldir.load(Path(d))[0], plans[d])
        except (PlanError, modeldir.ModelError) as e:
            raise SystemExit(f"{d}: {e}") from None
    layers = len(bert.encoder_layers(model))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {prec: build(model, dense_plan(model), opts) for prec, opts in PRECISIONS.items()}
        baseline = ort_quantized(graphs["fp32"].SerializeToString(), Path(tmp), "dense")
        for batch in args.batches:
            rng = np.random.default_rng(0)
            feeds = {"input_ids": rng.integers(1000, 2000, (batch, args.seq)),
                     "attention_mask": np.ones((batch, args.seq), np.int64),
                     "token_type_ids": np.zeros((batch, args.seq), np.int64)}
            feeds = {k: v for k, v in feeds.items() if k in {i.name for i in graphs["fp32"].graph.input}}
            rounds = max(10, args.rounds // batch)
            sessions = {**{prec: session(g.SerializeToString(), spinning=False) for prec, g in graphs.items()},
                        ORT_INT8: session(baseline, spinning=False)}
            ms = {k: median for k, (median, _) in time_interleaved(sessions, feeds, rounds, BLOCK).items()}
            for prec, graph in graphs.items():
                work = Path(tmp) / f"{prec}-{batch}"
                work.mkdir()
                kernel, outside, optimized = profile(graph.SerializeToString(), feeds, rounds, work)
                linears, parts = linear_nodes(graph, layers), sublayer_of(optimized)
                profiled = sum(kernel.values()) + outside
                for d, plan in plans.items():
                    share = (ceiling(kernel, linears, parts, plan, shares[d]) + outside) / profiled
                    best = ms[prec] * share
                    row = {"pruned": d, "precision": prec, "batch": batch, "seq": args.seq, "rounds": rounds,
                           "dense_ms": round(ms[prec], 3), "ceiling_ms": round(best, 3),
                           "linear_share_of_dense": round(sum(kernel[n] for n in linears) / profiled, 3),
                           "ceiling_x_dense": round(1 / share, 3), "ceiling_x_dense_fp32": round(ms["fp32"] / best, 3)}
                    if prec == "int8":
                        row.update(ort_int8_ms=round(ms[ORT_INT8], 3), ceiling_x_ort_int8=round(ms[ORT_INT8] / best, 3))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "baseline": ORT_INT8, "ort": ort.__version__,
                               "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
                               "date": time.strftime("%Y-%m-%d")}, indent=1))
    print(f"\n{'model':28s} {'prec':5s} {'batch':>5s} {'dense ms':>9s} {'ceiling ms':>10s} {'x dense':>8s} "
          f"{'x fp32':>7s} {'x ORT int8':>10s}")
    for r in rows:
        print(f"{Path(r['pruned']).name[:28]:28s} {r['precision']:5s} {r['batch']:5d} {r['dense_ms']:9.2f} "
              f"{r['ceiling_ms']:10.2f} {r['ceiling_x_dense']:8.2f} {r['ceiling_x_dense_fp32']:7.2f} "
              f"{r.get('ceiling_x_ort_int8', float('nan')):10.2f}")


if __name__ == "__main__":
    main()
