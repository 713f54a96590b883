"""Parameter and FLOP counts that every report shares.

A dropped matrix can make its neighbours dead: with W_V or W_O dropped the attention
sub-layer outputs a constant (softmax rows sum to one, so a constant value vector passes
through unchanged) and W_Q, W_K, W_V, W_O no longer matter; with W_1 or W_2 dropped the
FFN outputs a constant. `live` masks leave those out; the exporter stores exactly the live
weights, and MACs count only them: T MACs per live weight for a sequence of length T, plus
2*T^2*d_head for each head that is still computed. A head whose W_O rows are all empty adds
nothing to the output; the exporter leaves it out of the graph (pgb_export.slicing), so it
costs no attention either.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .bert import MHA_KINDS, MatrixRef


def kept_params(masks: Mapping[str, torch.Tensor]) -> int:
    return int(sum(int(m.sum()) for m in masks.values()))


def total_params(masks: Mapping[str, torch.Tensor]) -> int:
    return int(sum(m.numel() for m in masks.values()))


def live(refs: Sequence[MatrixRef], masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The masks with every dead matrix emptied (see the module docstring)."""
    alive = {(r.layer, r.kind): bool(masks[r.name].any()) for r in refs}
    out = {}
    for r in refs:
        if r.kind in MHA_KINDS:
            dead = not (alive[(r.layer, "value")] and alive[(r.layer, "attn_out")])
        else:
            dead = not (alive[(r.layer, "ffn1")] and alive[(r.layer, "ffn2")])
        out[r.name] = torch.zeros_like(masks[r.name]) if dead else masks[r.name]
    return out


def macs(refs: Sequence[MatrixRef], masks: Mapping[str, torch.Tensor], heads: int,
         seq_len: int = 128) -> int:
    """Linear + attention MACs of one sequence; pass all-True masks for the dense model."""
    masks = live(refs, masks)
    attention = 0
    for r in refs:
        if r.kind == "attn_out":  # (in, out): rows are the heads' features, head by head
            rows = masks[r.name].any(dim=1).view(heads, -1)
            attention += 2 * seq_len * seq_len * rows.shape[1] * int(rows.any(dim=1).sum())
    return seq_len * kept_params(masks) + attention


def flops_ratio(refs: Sequence[MatrixRef], masks: Mapping[str, torch.Tensor], heads: int,
                seq_len: int = 128) -> float:
    """Pruned MACs / dense MACs."""
    dense = {n: torch.ones_like(m) for n, m in masks.items()}
    return macs(refs, masks, heads, seq_len) / macs(refs, dense, heads, seq_len)
