"""PGB-LINEAR (paper Algorithm 3) as a PyTorch module, for inference.

    x W* + b = ((x[..., pr]) blockdiag(g_1..g_G))[..., argsort(pc)] + b

It stores only the G blocks, so its parameter count is the kept count of the plan, and it
computes the same function as the masked dense nn.Linear it replaces.
"""
from __future__ import annotations

import torch
from torch import nn

from . import bert
from .plan import MatrixPlan, Plan
from .repermute import to_blocks


class GroupedLinear(nn.Module):
    def __init__(self, dense: nn.Linear, mp: MatrixPlan):
        super().__init__()
        self.in_features, self.out_features = mp.shape
        self.groups = mp.groups
        w = dense.weight.detach().T  # (M, N)
        self.blocks = nn.Parameter(to_blocks(w, mp).clone() if mp.groups else w.new_zeros(0, 0, 0))
        self.bias = nn.Parameter(dense.bias.detach().clone()) if dense.bias is not None else None
        self.register_buffer("row_perm", torch.tensor(mp.row_perm))
        self.register_buffer("col_inv", torch.argsort(torch.tensor(mp.col_perm)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        if self.groups == 0:
            y = x.new_zeros(*lead, self.out_features)
        else:
            g, br, bc = self.blocks.shape
            xg = x[..., self.row_perm].reshape(-1, g, br).transpose(0, 1)  # (G, rows, M/G)
            yg = torch.bmm(xg, self.blocks)  # (G, rows, N/G)
            y = yg.transpose(0, 1).reshape(*lead, g * bc)[..., self.col_inv]
        return y + self.bias if self.bias is not None else y


def replace_linears(model: nn.Module, plan: Plan, module: type[GroupedLinear] = GroupedLinear) -> nn.Module:
    """Swap, in place, every matrix the plan groups or drops (G != 1) for `module(dense, mp)`;
    G = 1 matrices stay nn.Linear, which computes them the same way. Returns the model."""
    for ref in bert.matrices(model):
        mp = plan[ref.name]
        if mp.groups != 1:
            path, leaf = bert.family(model).path(ref.kind).rsplit(".", 1)
            parent = bert.encoder_layers(model)[ref.layer].get_submodule(path)
            setattr(parent, leaf, module(bert.linear(model, ref), mp))
    return model
