"""GPU timings of the grouped linear, per layer and end to end through PyTorch (fp16,
sequence 128, batch 1 and 32; an H100 for BENCHMARKS.md).

Forms, each timed with CUDA events and replayed from a CUDA graph where capture works:
  dense    the unpruned nn.Linear (cuBLAS)
  split    G matmuls on gathered input slices, concatenated (the ONNX export's default form)
  batched  one bmm on [G, tokens, M/G] (pruning.grouped.GroupedLinear)
  kernel   the plugins/ Triton-lang kernel: all G blocks in one launch, gather and scatter fused
Per layer: BERT-base (768x768, 768x3072, 3072x768) and MiniLM (384x384, 384x1536, 1536x384)
shapes, G in 2, 3, 4, 6; speed-up over dense beside the ideal G (goal: kernel >= 0.8 of it).
End to end: BERT-base and MiniLM-L6 configurations with the same G everywhere, and with
--model DIR the plan of a pgb-prune output (only its config.json and pgb.json are read: speed
depends on the plan, not on the weights' values). Every form is checked against dense first.

    .venv/bin/python scripts/bench_gpu.py --out bench/gpu.json [--model runs/demo]
    .venv/bin/python scripts/bench_gpu.py --smoke   # CPU, tiny shapes, Triton interpreter:
                                                    # every code path runs, timings mean nothing
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgb_export.cli_common import table  # noqa: E402
from pruning import bert, cost, repermute  # noqa: E402
from pruning.grouped import GroupedLinear, replace_linears  # noqa: E402
from pruning.plan import Plan, uniform_plan  # noqa: E402

LAYER_SHAPES = {"bert-base": [(768, 768), (768, 3072), (3072, 768)], "minilm": [(384, 384), (384, 1536), (1536, 384)]}
SMOKE_SHAPES = {"tiny": [(48, 96), (96, 48)]}
GROUPS = (2, 3, 4, 6)


class SplitLinear(GroupedLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 0:
            return super().forward(x)
        xg = x[..., self.row_perm].split(self.in_features // self.groups, dim=-1)
        y = torch.cat([xi @ bi for xi, bi in zip(xg, self.blocks)], -1)[..., self.col_inv]
        return y + self.bias


class KernelLinear(GroupedLinear):
    def __init__(self, dense: nn.Linear, mp) -> None:
        super().__init__(dense, mp)
        self.register_buffer("col_perm", torch.tensor(mp.col_perm, dtype=torch.int32))
        self.register_buffer("rows32", self.row_perm.to(torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 0:
            return super().forward(x)
        # imported here: --smoke must set TRITON_INTERPRET before Triton's first import
        from plugins.grouped_gemm import grouped_linear
        return grouped_linear(x, self.blocks, self.rows32, self.col_perm, self.bias)


FORMS = {"split": SplitLinear, "batched": GroupedLinear, "kernel": KernelLinear}


def timed(fn, cuda: bool, repeats: int) -> float:
    """Median milliseconds of fn(): on CUDA replayed from a CUDA graph (plain launches if
    capture fails) and timed with events; on the CPU (--smoke) with perf_counter."""
    fn()
    if not cuda:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)
    torch.cuda.synchronize()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        run = graph.replay
    except RuntimeError:
        run = fn
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def layer_rows(shapes: dict, batches, seq: int, dev: str, dt: torch.dtype, repeats: int) -> list[dict]:
    rows = []
    for family, pairs in shapes.items():
        for m, n in pairs:
            for batch in batches:
                x = torch.randn(batch, seq, m, device=dev, dtype=dt)
                dense = nn.Linear(m, n).to(dev, dt)
                with torch.no_grad():
                    dense_ms = timed(lambda: dense(x), dev == "cuda", repeats)
                for g in GROUPS:
                    if m % g or n % g:
                        continue
                    mp = uniform_plan([bert.MatrixRef("w", 0, "ffn1", (m, n))], g, seed=g).matrices[0]
                    masked = copy.deepcopy(dense).float().cpu()
                    with torch.no_grad():
                        masked.weight.mul_(mp.mask().T)
                    row = {"family": family, "shape": [m, n], "batch": batch, "G": g, "dense_ms": dense_ms}
                    with torch.no_grad():
                        want = copy.deepcopy(masked).to(dev, dt)(x)
                        for form, cls in FORMS.items():
                            mod = cls(masked, mp).to(dev, dt)
                            torch.testing.assert_close(mod(x), want, atol=5e-2, rtol=1e-2)
                            ms = timed(lambda: mod(x), dev == "cuda", repeats)
                            row[f"{form}_ms"], row[f"{form}_speedup"] = ms, dense_ms / ms
                    row["kernel_vs_ideal"] = row["kernel_speedup"] / g
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def end_to_end_rows(name: str, model: nn.Module, plan: Plan, batches, seq: int, dev: str, dt: torch.dtype,
                    repeats: int) -> list[dict]:
    """The pruned model (masked weights, every linear dense) against the same model with its
    grouped matrices swapped for each form."""
    repermute.apply_plan(model, plan)
    refs = bert.matrices(model)
    ideal = 1 / cost.flops_ratio(refs, plan.masks(), model.config.num_attention_heads, seq)
    variants = {form: replace_linears(copy.deepcopy(model), plan, cls).to(dev, dt).eval()
                for form, cls in FORMS.items()}
    variants = {"dense": model.to(dev, dt).eval(), **variants}
    rows = []
    for batch in batches:
        ids = torch.randint(1000, 2000, (batch, seq), device=dev)
        row = {"model": name, "batch": batch, "seq": seq, "ideal_speedup": ideal}
        with torch.no_grad():
            want = variants["dense"](input_ids=ids).logits
            for form, m in variants.items():
                torch.testing.assert_close(m(input_ids=ids).logits, want, atol=5e-2, rtol=1e-2)
                row[f"{form}_ms"] = timed(lambda: m(input_ids=ids), dev == "cuda", repeats)
        for form in FORMS:
            row[f"{form}_speedup"] = row["dense_ms"] / row[f"{form}_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def models(args, smoke: bool) -> list[tuple[str, nn.Module, Plan]]:
    from transformers import BertConfig, BertForSequenceClassification

    configs = ({"tiny": BertConfig(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=384)}
               if smoke else
               {"bert-base": BertConfig(),
                "minilm-l6": BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                        intermediate_size=1536)})
    out = []
    for name, cfg in configs.items():
        for g in ((2,) if smoke else (2, 4)):
            torch.manual_seed(0)
            model = BertForSequenceClassification(cfg)
            out.append((f"{name} G={g} everywhere", model, uniform_plan(bert.matrices(model), g)))
    if args.model:
        cfg = BertConfig.from_pretrained(args.model)
        torch.manual_seed(0)
        model = BertForSequenceClassification(cfg)
        out.append((f"{Path(args.model).name} (pgb.json)", model, Plan.load(Path(args.model) / "pgb.json")))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/gpu.json", help="JSON results (default bench/gpu.json)")
    p.add_argument("--model", help="a pgb-prune output directory: also time its plan end to end")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per variant (median; default 50)")
    p.add_argument("--smoke", action="store_true", help="CPU run of every code path on tiny shapes")
    args = p.parse_args()
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        dev, dt, batches, seq, shapes, repeats = "cpu", torch.float32, (1, 2), 16, SMOKE_SHAPES, 1
    else:
        if not torch.cuda.is_available():
            sys.exit("bench_gpu: needs a CUDA GPU (or --smoke for a CPU check of the script)")
        dev, dt, batches, seq, shapes, repeats = "cuda", torch.float16, (1, 32), 128, LAYER_SHAPES, args.repeats

    layers = layer_rows(shapes, batches, seq, dev, dt, repeats)
    e2e = [r for name, model, plan in models(args, args.smoke)
           for r in end_to_end_rows(name, model, plan, batches, seq, dev, dt, repeats)]
    device = torch.cuda.get_device_name() if dev == "cuda" else "cpu (smoke: Triton interpreter)"
    out = {"device": device, "torch": torch.__version__, "dtype": str(dt), "date": time.strftime("%Y-%m-%d"),
           "layers": layers, "end_to_end": e2e}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))

    x = lambda v: f"{v:.2f}x"  # noqa: E731
    print("\nper layer, speed-up over dense (ideal = G)")
    print(table(["family", "M x N", "batch", "G", "dense ms", "split", "batched", "kernel", "kernel/ideal"],
                [[r["family"], "x".join(map(str, r["shape"])), r["batch"], r["G"], f"{r['dense_ms']:.3f}",
                  x(r["split_speedup"]), x(r["batched_speedup"]), x(r["kernel_speedup"]),
                  f"{r['kernel_vs_ideal']:.2f}"] for r in layers]))
    print("\nend to end, speed-up over the dense model")
    print(table(["model", "batch", "dense ms", "split", "batched", "kernel", "ideal"],
                [[r["model"], r["batch"], f"{r['dense_ms']:.2f}", x(r["split_speedup"]), x(r["batched_speedup"]),
                  x(r["kernel_speedup"]), x(r["ideal_speedup"])] for r in e2e]))
    share = sum(r["kernel_vs_ideal"] >= 0.8 for r in layers)
    print(f"\nkernel at >= 0.8 of the ideal speed-up in {share}/{len(layers)} layer cases; wrote {args.out} on {device}")


if __name__ == "__main__":
    main()
