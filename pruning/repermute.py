"""Step 5: re-permutation (PGB.md section 5).

The pruned model keeps dense weights W* with zeros outside the blocks, each weight at its
original position. `to_blocks` and `from_blocks` move between W* and the G dense blocks
of W[pr][:, pc]; they are exact inverses on block-diagonal weights.
"""
from __future__ import annotations

import torch
from torch import nn

from . import bert
from .plan import MatrixPlan, Plan


def to_blocks(w: torch.Tensor, mp: MatrixPlan) -> torch.Tensor:
    """(M, N) weight -> (G, M/G, N/G) diagonal blocks of W[pr][:, pc]."""
    br, bc = mp.block
    permuted = w[torch.tensor(mp.row_perm)][:, torch.tensor(mp.col_perm)]
    return torch.stack([permuted[i * br:(i + 1) * br, i * bc:(i + 1) * bc] for i in range(mp.groups)])


def from_blocks(blocks: torch.Tensor, mp: MatrixPlan) -> torch.Tensor:
    """(G, M/G, N/G) blocks -> (M, N) W*, zeros outside the blocks, original positions."""
    permuted = torch.block_diag(*blocks)
    inv_r = torch.argsort(torch.tensor(mp.row_perm))
    inv_c = torch.argsort(torch.tensor(mp.col_perm))
    return permuted[inv_r][:, inv_c]


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero every weight outside its mask, in place. Biases are never touched."""
    with torch.no_grad():
        for ref in bert.matrices(model):
            w = bert.linear(model, ref).weight
            w.mul_(masks[ref.name].T.to(w))


def apply_plan(model: nn.Module, plan: Plan) -> dict[str, torch.Tensor]:
    """Prune `model` to `plan` (W* = W on the blocks, 0 elsewhere); returns the masks."""
    masks = plan.masks()
    apply_masks(model, masks)
    return masks


def violations(model: nn.Module, plan: Plan) -> list[str]:
    """Names of matrices with a non-zero weight outside their plan's blocks."""
    bad = []
    for ref in bert.matrices(model):
        mp = plan[ref.name]
        if mp.shape != ref.shape:
            bad.append(f"{ref.name} (shape {ref.shape} != plan {mp.shape})")
        elif bool((bert.weight(model, ref)[~mp.mask()] != 0).any()):
            bad.append(ref.name)
    return bad
