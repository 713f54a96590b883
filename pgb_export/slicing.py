"""Heads and FFN neurons that add nothing, left out of the graph.

A head whose W_O rows are all zero adds nothing to the attention's output, whatever its
queries, keys and values; an FFN neuron whose W_2 row is zero adds nothing to the FFN's. So
the graph can leave such a head out of W_Q, W_K, W_V and W_O, and such a neuron out of W_1
and W_2, exactly. Structured pruning (`pgb-prune --ablation structured`) zeroes whole heads
and neurons, and pgb-prune's default `--ffn neurons` zeroes whole FFN neurons; sliced, they
run as smaller dense MatMuls. Only sub-layers whose linears are all dense (a dropped W_Q or
W_K is a bias, sliced with its head) are sliced: a grouped linear keeps its blocks, and a
dense matrix of a PGB plan keeps every row, so those graphs do not change.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pruning import bert
from pruning.plan import MatrixPlan, Plan

# the axis of each kind's (in, out) weight that holds heads or neurons
SLICED_AXIS = {"query": 1, "key": 1, "value": 1, "attn_out": 0, "ffn1": 1, "ffn2": 0}


@dataclass(frozen=True)
class Slices:
    """One layer's kept attention features (whole heads) and FFN neurons, as indices into
    the full width; None keeps all."""

    attention: np.ndarray | None
    ffn: np.ndarray | None

    def keep(self, kind: str) -> np.ndarray | None:
        return self.attention if kind in bert.MHA_KINDS else self.ffn


def _kept(w_in_out: np.ndarray, parts: int) -> np.ndarray | None:
    """Feature indices of the row groups (`parts` equal groups of W's input rows) that hold a
    non-zero weight; None when every group does."""
    rows = w_in_out.shape[0]
    live = np.abs(w_in_out.reshape(parts, -1)).max(axis=1) > 0
    if live.all():
        return None
    return np.flatnonzero(np.repeat(live, rows // parts))


def layer_slices(model: nn.Module, plan: Plan) -> list[Slices]:
    """What each encoder layer keeps, read from the pruned weights (W_O's rows by head, W_2's
    by neuron)."""
    sd = model.state_dict()
    heads = bert.num_heads(model)
    by_layer = plan.by_layer()
    out = []
    for layer in sorted(by_layer):
        mps = by_layer[layer]
        q, k, v, o = (mps[kd] for kd in bert.MHA_KINDS)
        f1, f2 = (mps[kd] for kd in bert.FFN_KINDS)
        wo, w2 = (sd[f"{mp.name}.weight"].detach().numpy().T for mp in (o, f2))  # (in, out)
        attention = v.groups == 1 and o.groups == 1 and q.groups <= 1 and k.groups <= 1
        ffn = f1.groups == 1 and f2.groups == 1
        out.append(Slices(_kept(wo, heads) if attention else None, _kept(w2, w2.shape[0]) if ffn else None))
    return out


def sliced(mp: MatrixPlan, w: np.ndarray, b: np.ndarray, keep: np.ndarray | None
           ) -> tuple[MatrixPlan, np.ndarray, np.ndarray]:
    """(plan entry, W (in, out), bias) of a linear with only `keep` on its sliced axis."""
    if keep is None:
        return mp, w, b
    if SLICED_AXIS[mp.kind] == 1:
        w, b = w[:, keep], b[keep]
    else:
        w = w[keep]
    return mp.in_order(mp.groups, w.shape), w, b


def sliced_masks(slices: list[Slices], plan: Plan, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`masks` with the rows or columns of the heads and neurons left out emptied: what the
    graph computes, so its stored weights and MACs (pruning.cost) count from these."""
    out = dict(masks)
    for mp in plan.matrices:
        keep = slices[mp.layer].keep(mp.kind)
        if keep is None:
            continue
        index = [slice(None), slice(None)]
        index[SLICED_AXIS[mp.kind]] = torch.as_tensor(keep, dtype=torch.long)
        m = torch.zeros_like(masks[mp.name])
        m[tuple(index)] = masks[mp.name][tuple(index)]
        out[mp.name] = m
    return out
