"""Baselines of PGB.md section 9, each built from the same scores as PGB.

- unstructured: per matrix, the top-k weights by saliency, k = what the PGB plan keeps there;
- fixed_g: one G for every matrix with permutations, no adaptive G, no layer drop;
- no-permutation: `budget.plan_pgb(..., permute=False)`;
- structured: whole heads and FFN neurons, per layer as many parameters as PGB keeps there.
Grouped baselines return a Plan; the others return masks, since their zeros are not blocks.
(Vanilla vs re-finetuned is not a different plan, only whether finetune runs.)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from . import neurons
from .bert import MHA_KINDS, MatrixRef
from .budget import TOLERANCE, Ties, grouped_plan, plan_pgb
from .grouping import common_divisors
from .plan import MatrixPlan, Plan

Masks = dict[str, torch.Tensor]
ABLATIONS = ("none", "unstructured", "fixed-g", "no-permutation", "structured")


def unstructured(refs: Sequence[MatrixRef], scores: Mapping[str, torch.Tensor],
                 kept: Mapping[str, int]) -> Masks:
    masks = {}
    for r in refs:
        s = scores[r.name].flatten()
        m = torch.zeros_like(s, dtype=torch.bool)
        m[torch.topk(s, kept[r.name]).indices] = True
        masks[r.name] = m.view(r.shape)
    return masks


def fixed_g(refs: Sequence[MatrixRef], scores: Mapping[str, torch.Tensor], target: float,
            nperm: int = 6) -> Plan:
    """The smallest G, common to every matrix, whose ratio 1 - 1/G meets the target."""
    shared = set.intersection(*(set(common_divisors(*r.shape)) for r in refs))
    ok = [g for g in sorted(shared) if 1 - 1 / g >= target - TOLERANCE]
    if not ok:
        raise ValueError(f"no G shared by every matrix reaches target {target}")
    g = ok[0]
    return grouped_plan(refs, scores, {r.name: g for r in refs}, nperm,
                        meta={"method": "fixed-g", "target": target, "fixed_g": g, "nperm": nperm})


def structured(refs: Sequence[MatrixRef], scores: Mapping[str, torch.Tensor],
               kept: Mapping[str, int], heads: int) -> Masks:
    """Heads ranked by the saliency of their Q/K/V columns and O rows, FFN neurons as
    `neurons.ffn_masks` ranks them; each layer keeps as many parameters as `kept` gives it."""
    by = {(r.layer, r.kind): r for r in refs}
    masks = {r.name: torch.zeros(r.shape, dtype=torch.bool) for r in refs if r.kind in MHA_KINDS}
    for layer in sorted({r.layer for r in refs}):
        q, k, v, o = (by[(layer, kind)] for kind in MHA_KINDS)
        d = q.shape[0]
        dh = d // heads
        head_score = sum(scores[x.name].view(d, heads, dh).sum((0, 2)) for x in (q, k, v))
        head_score = head_score + scores[o.name].view(heads, dh, -1).sum((1, 2))
        n_heads = round(sum(kept[x.name] for x in (q, k, v, o)) / (4 * d * dh))
        for h in torch.topk(head_score, n_heads).indices.tolist():
            for x in (q, k, v):
                masks[x.name][:, h * dh:(h + 1) * dh] = True
            masks[o.name][h * dh:(h + 1) * dh, :] = True
    masks.update(neurons.ffn_masks(refs, scores, kept))
    return masks


def plan_from_masks(refs: Sequence[MatrixRef], masks: Masks, meta: dict) -> Plan:
    """A mask baseline's pgb.json: its zeros are not blocks, so each matrix is dense (G=1)
    or dropped (G=0), and the masked dense weights carry the rest."""
    return Plan([MatrixPlan(r.name, r.layer, r.kind, r.shape, int(bool(masks[r.name].any())),
                            list(range(r.shape[0])), list(range(r.shape[1]))) for r in refs], meta)


def build(ablation: str, refs: Sequence[MatrixRef], scores: Mapping[str, torch.Tensor],
          target: float, heads: int, gmax: int = 6, nperm: int = 6,
          tau: float | str = "auto", progress: bool = False, allocation: str = "paper",
          drop: frozenset[str] = frozenset(), ties: Ties = Ties(), ffn: str = "groups") -> tuple[Plan, Masks, Plan]:
    """(plan written to pgb.json, masks to prune with, the PGB plan it was sized from); the
    matrices in `drop` are dropped in the PGB plan (and so sized out of the baselines).
    `ffn` (neurons.FFN_FORMS) is how PGB and grouping without permutation keep an FFN; the
    other baselines are as PGB.md section 9 defines them."""
    pgb = plan_pgb(refs, scores, target, gmax, nperm, tau, permute=ablation != "no-permutation",
                   progress=progress, allocation=allocation, drop=drop, ties=ties)
    if ablation in ("unstructured", "structured"):
        kept = {mp.name: mp.kept for mp in pgb.matrices}
        masks = (unstructured(refs, scores, kept) if ablation == "unstructured"
                 else structured(refs, scores, kept, heads))
        return plan_from_masks(refs, masks, {"method": ablation, "target": target}), masks, pgb
    if ablation == "fixed-g":
        plan = fixed_g(refs, scores, target, nperm)
        return plan, plan.masks(), pgb
    if ffn == "neurons":
        return (*neurons.keep_neurons(pgb, refs, scores), pgb)
    return pgb, pgb.masks(), pgb
