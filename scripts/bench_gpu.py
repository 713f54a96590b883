"""GPU timings for the grouped linear (run on an NVIDIA GPU; H100 for BENCHMARKS.md).

Per layer shape (BERT-base 768x768, 768x3072, 3072x768 and MiniLM 384x384, 384x1536,
1536x384), fp16, tokens = batch x 128 for batch 1 and 32, G in 2, 3, 4, 6:
dense cuBLAS (the unpruned linear), split-and-concat (G matmuls on gathered slices),
batched matmul ([G, M/G, N/G]) and the plugins/ kernel, each timed with CUDA events,
under CUDA graphs where capture works, as speed-up over dense next to the ideal G.

    .venv/bin/python scripts/bench_gpu.py --out bench/gpu.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from plugins.grouped_gemm import grouped_linear
from pruning.plan import MatrixPlan
from pruning.repermute import to_blocks

SHAPES = {"bert-base": [(768, 768), (768, 3072), (3072, 768)], "minilm": [(384, 384), (384, 1536), (1536, 384)]}


def timed(fn, repeats: int = 50) -> float:
    """Median milliseconds of fn() replayed from a CUDA graph (plain launches if capture fails)."""
    fn()
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
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/gpu.json")
    args = p.parse_args()
    assert torch.cuda.is_available(), "this benchmark needs a CUDA GPU"
    dev, dt = "cuda", torch.float16
    rows = []
    for family, shapes in SHAPES.items():
        for m, n in shapes:
            for batch in (1, 32):
                x = torch.randn(batch * 128, m, device=dev, dtype=dt)
                w = torch.randn(m, n, device=dev, dtype=dt)
                b = torch.randn(n, device=dev, dtype=dt)
                dense = timed(lambda: torch.addmm(b, x, w))
                for g in (2, 3, 4, 6):
                    if m % g or n % g:
                        continue
                    gen = torch.Generator().manual_seed(g)
                    mp = MatrixPlan("w", 0, "ffn1", (m, n), g, torch.randperm(m, generator=gen).tolist(),
                                    torch.randperm(n, generator=gen).tolist())
                    blocks = to_blocks(w.float().cpu() * mp.mask(), mp).to(dev, dt)
                    pr, pc = torch.tensor(mp.row_perm, device=dev), torch.tensor(mp.col_perm, device=dev)
                    inv = torch.argsort(pc)

                    def split():
                        xg = x[:, pr].split(m // g, dim=1)
                        return torch.cat([xi @ bi for xi, bi in zip(xg, blocks)], 1)[:, inv] + b

                    def batched():
                        xg = x[:, pr].view(-1, g, m // g).transpose(0, 1)
                        return torch.bmm(xg, blocks).transpose(0, 1).reshape(-1, n)[:, inv] + b

                    kernel = lambda: grouped_linear(x, blocks, pr, pc, b)  # noqa: E731
                    torch.testing.assert_close(kernel(), split(), atol=5e-2, rtol=1e-2)
                    row = {"family": family, "shape": [m, n], "batch": batch, "G": g, "dense_ms": dense}
                    for name, fn in (("split", split), ("batched", batched), ("kernel", kernel)):
                        ms = timed(fn)
                        row[f"{name}_ms"], row[f"{name}_speedup"] = ms, dense / ms
                    row["kernel_vs_ideal"] = row["kernel_speedup"] / g
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
