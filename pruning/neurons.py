"""FFN sub-layers kept as whole neurons (`--ffn neurons`), beside PGB.md's grouped FFN.

An FFN neuron is a column of W_1 and the same row of W_2. Here each layer spends what the
PGB plan gives its W_1 and W_2 on the neurons with the largest saliency (W_1 column plus
W_2 row, the scores of step 1), kept whole; every other neuron is zero in both. Attention
stays grouped as the plan says. Why: on minilm-sst2 at the CPU budget, pgb-prune with its
FFN kept as neurons instead of G blocks ended 0.6, 1.6 and 3.2 points higher at 0.5, 0.6 and
0.88, and its exports ran faster (BENCHMARKS.md, "FFN neurons"). At G = 6 a block-diagonal FFN links each neuron to a sixth
of the hidden features; a kept neuron reads all of them. The export leaves the zero neurons
out (pgb_export.slicing), so such an FFN runs as two smaller dense MatMuls with no
permutation at all.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .bert import FFN_KINDS, MatrixRef
from .plan import Plan

FFN_FORMS = ("neurons", "groups")
Masks = dict[str, torch.Tensor]


def ffn_masks(refs: Sequence[MatrixRef], scores: Mapping[str, torch.Tensor],
              kept: Mapping[str, int]) -> Masks:
    """Masks of every W_1 and W_2: per layer the top neurons, as many as keep the weights
    `kept` gives that layer's W_1 and W_2 together (none when it gives none)."""
    by = {(r.layer, r.kind): r for r in refs}
    masks = {}
    for layer in sorted({r.layer for r in refs}):
        f1, f2 = (by[(layer, kind)] for kind in FFN_KINDS)
        d = f1.shape[0]
        neuron = scores[f1.name].sum(0) + scores[f2.name].sum(1)
        keep = torch.topk(neuron, round((kept[f1.name] + kept[f2.name]) / (2 * d))).indices
        masks[f1.name] = torch.zeros(f1.shape, dtype=torch.bool)
        masks[f2.name] = torch.zeros(f2.shape, dtype=torch.bool)
        masks[f1.name][:, keep] = True
        masks[f2.name][keep, :] = True
    return masks


def keep_neurons(plan: Plan, refs: Sequence[MatrixRef], scores: Mapping[str, torch.Tensor]) -> tuple[Plan, Masks]:
    """(plan, masks): `plan` with its FFN matrices dense (G = 1, identity orders: the masked
    weights carry the zero neurons) or dropped, and the masks that prune to it."""
    masks = plan.masks()
    ffn = ffn_masks(refs, scores, {mp.name: mp.kept for mp in plan.matrices})
    masks.update(ffn)
    matrices = [mp.in_order(int(bool(ffn[mp.name].any()))) if mp.name in ffn else mp for mp in plan.matrices]
    return Plan(matrices, {**plan.meta, "ffn": "neurons"}), masks
