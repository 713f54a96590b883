"""Ahead-of-time facts of the plugin kernel for BERT-base and MiniLM layer shapes, G in 2, 3,
4, 6, fp16 and fp32, as TensorRT will get them (plugins.aot): PTX ISA, parameter sizes,
registers, spills, shared memory, MMA instructions. Needs no GPU.

    .venv/bin/python scripts/plugin_kernels.py [--capability 90]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgb_export.cli_common import table  # noqa: E402
from plugins.aot import KernelSpec, prove_in_child  # noqa: E402

SHAPES = [(384, 384), (384, 1536), (1536, 384), (768, 768), (768, 3072), (3072, 768)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capability", type=int, default=90, help="compute capability x 10 (default 90, the H100)")
    args = p.parse_args()
    specs = [KernelSpec(dt, m, n, g, args.capability) for dt in ("fp16", "fp32") for m, n in SHAPES for g in (2, 3, 4, 6)]
    rows = []
    for r in prove_in_child(specs):
        if "error" in r:
            sys.exit(f"plugin_kernels: {r['dtype']} {r['m']}x{r['n']} G={r['groups']}: {r['error']}")
        rows.append([r["dtype"], f"{r['m']}x{r['n']}", r["groups"], r["arch"], r["ptx_version"],
                     ",".join(map(str, r["param_bytes"])), r["registers"], r["spill_bytes"], r["shared_bytes"],
                     r["threads"], " ".join(r["mma"]) or "none (FMA)"])
    print(table(["dtype", "M x N", "G", "arch", "PTX", "param bytes", "registers", "spills", "shared", "threads", "MMA"],
                rows))


if __name__ == "__main__":
    main()
