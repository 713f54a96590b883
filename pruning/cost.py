"""Parameter and FLOP counts that every report shares.

MACs per sequence of length T: each kept weight of a prunable matrix costs T MACs (a
grouped matrix computes only its blocks); attention costs 2*T^2*d (scores and context)
and vanishes when W_V or W_O is dropped, because the sub-layer's output is then a
constant (softmax rows sum to one, so a constant value vector passes through unchanged).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .bert import MatrixRef


def kept_params(masks: Mapping[str, torch.Tensor]) -> int:
    return int(sum(int(m.sum()) for m in masks.values()))


def total_params(masks: Mapping[str, torch.Tensor]) -> int:
    return int(sum(m.numel() for m in masks.values()))


def macs(refs: Sequence[MatrixRef], masks: Mapping[str, torch.Tensor], hidden: int,
         seq_len: int = 128) -> int:
    """Linear + attention MACs of one sequence; pass all-True masks for the dense model."""
    alive = {(r.layer, r.kind): bool(masks[r.name].any()) for r in refs}
    layers = {r.layer for r in refs}
    attention = sum(2 * seq_len * seq_len * hidden for l in layers
                    if alive[(l, "value")] and alive[(l, "attn_out")])
    return seq_len * kept_params(masks) + attention


def flops_ratio(refs: Sequence[MatrixRef], masks: Mapping[str, torch.Tensor], hidden: int,
                seq_len: int = 128) -> float:
    """Pruned MACs / dense MACs."""
    dense = {n: torch.ones_like(m) for n, m in masks.items()}
    return macs(refs, masks, hidden, seq_len) / macs(refs, dense, hidden, seq_len)
