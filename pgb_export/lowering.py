"""Which grouped linears the dynamic INT8 graph writes as dense MatMuls.

A grouped linear does 1/G of its MACs, and pays for that with the copies the graph needs
around it (grouped_linear.linear): a permutation of its input when it reads the residual
stream or the attention context, a Concat of its blocks' outputs, and a permutation of that
back to the order its reader needs; between FFN1 and FFN2 an exchange instead. In ONNX
Runtime's INT8 kernels on the CPU a MAC is cheap and a copied feature is not, so there a
grouped W_Q of MiniLM (384 x 384, at most 147k MACs saved per token) loses to its two
permutations. Written dense, with the zeros outside its blocks stored, the same linear gives
the same int32 sums (the weight scales are per output column, each column's zeros add
nothing) and the graph runs faster (BENCHMARKS.md, "Grouped where it pays"). One thing moves:
a grouped FFN2 behind a dense FFN1 reads its input quantized as one tensor, not per block.

The cost model counts, per token, int8 MACs and copied features at the prices below, and
picks for each chain of linears (each attention projection alone; FFN1 -> FFN2) the cheapest
choice of grouped or dense for its grouped members. Both prices were fitted to whole-graph
timings of MiniLM (ONNX Runtime 1.32, 2 threads, AVX-512 VNNI); they are ratios, so a wider
model scales them by its widths. A tied Q/K/V (pgb-prune --tie-qkv) shares one input
permutation, which the model still charges to each of the three: it errs towards dense, which
at MiniLM's width it picks anyway. A tied FFN (pgb-prune --tie-ffn) hands FFN1's blocks to
FFN2's as they are, and that hand-over is free. The fp32 and QDQ graphs keep every grouped linear grouped:
TensorRT reads them, and in fp32 a MAC costs several times more.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable

import numpy as np

from pruning import bert
from pruning.plan import MatrixPlan, Plan

from .grouped_linear import same_sets

# int8 MACs per token that one feature costs: permuted (Transpose, Gather, Transpose back)
# or copied once (a Concat of block outputs); an exchange (Split, then Concat) copies twice.
PERMUTE = 360
COPY = 200


def _chains(plan: Plan) -> list[list[MatrixPlan]]:
    """Live linears in the runs whose orders the graph chains: each attention projection
    alone (it reads the residual stream or the context and feeds the attention or the
    residual), FFN1 -> FFN2 together (FFN2 reads FFN1's output in any order it asks for)."""
    chains = []
    for kinds in plan.by_layer().values():
        q, k, v, o = (kinds[kd] for kd in bert.MHA_KINDS)
        if v.groups and o.groups:  # else the sub-layer is a constant, its linears unwritten
            chains += [[mp] for mp in (q, k, v, o) if mp.groups]
        f1, f2 = (kinds[kd] for kd in bert.FFN_KINDS)
        if f1.groups and f2.groups:
            chains.append([f1, f2])
    return chains


def chain_cost(chain: list[MatrixPlan], grouped: list[bool]) -> float:
    """Per-token cost of a chain, its members grouped or dense as `grouped` says."""
    total = 0.0
    for i, (mp, is_grouped) in enumerate(zip(chain, grouped)):
        m, n = mp.shape
        if not is_grouped:  # a dense linear reads and writes any order for free
            total += m * n
            continue
        total += m * n / mp.groups
        if i == 0:  # reads an activation in the residual order
            total += PERMUTE * m
        if i == len(chain) - 1:  # its blocks concatenated, then put back in the residual order
            total += (COPY + PERMUTE) * n
        elif grouped[i + 1]:  # hands its blocks over to the next grouped linear
            total += 0 if hands_over_aligned(mp, chain[i + 1]) else 2 * COPY * n
        else:  # concatenated; the dense reader absorbs the order
            total += COPY * n
    return total


def hands_over_aligned(producer: MatrixPlan, consumer: MatrixPlan) -> bool:
    """Block i of `producer` makes exactly the features block i of `consumer` reads (a tied
    FFN), so the graph passes the blocks' outputs over without a copy."""
    cols = np.asarray(producer.col_perm).reshape(producer.groups, -1)
    return same_sets(list(cols), np.asarray(consumer.row_perm).reshape(consumer.groups, -1))


def dense_cheaper(plan: Plan) -> list[str]:
    """Names of the grouped linears (G >= 2) the cost model writes dense, in plan order."""
    dense = set()
    for chain in _chains(plan):
        free = [mp.groups > 1 for mp in chain]
        options = [c for c in itertools.product((False, True), repeat=len(chain))
                   if all(f or not c_i for f, c_i in zip(free, c))]
        # dense first: grouped only where it is strictly cheaper
        best = min(options, key=lambda c: (chain_cost(chain, list(c)), sum(c)))
        dense |= {mp.name for mp, f, c in zip(chain, free, best) if f and not c}
    return [mp.name for mp in plan.matrices if mp.name in dense]


def densified(plan: Plan, names: Iterable[str]) -> Plan:
    """The plan with `names` as dense matrices (G = 1, identity orders): the plan a graph
    writing them dense is built from. The pruned weights are unchanged, zeros included."""
    names = set(names)
    return dataclasses.replace(plan, matrices=[mp.in_order(1) if mp.name in names else mp for mp in plan.matrices])
