"""Step 6: weight compensation (paper eq. 4, PGB.md section 6).

Per matrix, minimise ||X W* - X W||^2 over the entries the mask keeps, X being that
matrix's input activations on the sample data, collected from the already-pruned model in
forward order (layer by layer; inside a layer Q/K/V, then O, then FFN1, then FFN2), so each
matrix is fitted to the inputs it will really see. The target is X W with the same X and
the matrix's own dense W, as the spec writes it.

With H = X^T X the problem splits over output columns; columns that share a support (all
columns of one block, for a grouped matrix) share one ridge solve:
    g = (H[r, r] + lambda I)^-1 H[r, :] W[:, c],   lambda = damp * mean(diag H[r, r])
The damping is SparseGPT's: relative to the mean curvature, so it is scale free.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from tqdm import tqdm

from . import bert
from .batching import model_args, on_device

STAGES = (("query", "key", "value"), ("attn_out",), ("ffn1",), ("ffn2",))


class _Stop(Exception):
    pass


def masked_ridge(h: torch.Tensor, w: torch.Tensor, mask: torch.Tensor,
                 damp: float = 0.01) -> torch.Tensor:
    """argmin over W' with W' = 0 outside `mask` of ||X W' - X W||^2 (+ damping), given H."""
    h, w = h.double(), w.double()
    out = torch.zeros_like(w)
    hw = h @ w
    supports, inverse = torch.unique(mask.T, dim=0, return_inverse=True)
    for k, support in enumerate(supports):
        rows = support.nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        cols = (inverse == k).nonzero().squeeze(1)
        hr = h[rows][:, rows]
        lam = damp * float(hr.diagonal().mean())
        if lam <= 0:  # these inputs never fire on the samples: nothing to fit, keep W
            out[rows[:, None], cols] = w[rows[:, None], cols]
            continue
        hr = hr + lam * torch.eye(len(rows), dtype=hr.dtype)
        out[rows[:, None], cols] = torch.cholesky_solve(hw[rows][:, cols], torch.linalg.cholesky(hr))
    return out.float()


def reconstruction_error(h: torch.Tensor, w: torch.Tensor, w_new: torch.Tensor) -> float:
    """||X (W' - W)||^2 / ||X W||^2 from H = X^T X."""
    h, d, w = h.double(), (w_new - w).double(), w.double()
    den = float(torch.einsum("ij,ik,kj->", w, h, w))
    return float(torch.einsum("ij,ik,kj->", d, h, d)) / den if den > 0 else 0.0


class _Gram:
    """Accumulates H = X^T X of one linear's input over the non-padding tokens."""

    def __init__(self, lin: nn.Linear):
        self.h = torch.zeros(lin.in_features, lin.in_features, dtype=torch.float64, device=lin.weight.device)
        self.tokens: torch.Tensor | None = None  # (B, T) bool, set per batch
        self._hook = lin.register_forward_hook(self._forward)

    def _forward(self, module, inputs, output):
        x = inputs[0].detach()[self.tokens].double()  # (tokens, in)
        self.h += x.T @ x

    def remove(self) -> None:
        self._hook.remove()


def _layer_inputs(model: nn.Module, batches: Iterable[dict]) -> list[tuple]:
    """(hidden states, args, kwargs, token mask) entering encoder layer 0, per batch."""
    cache = []

    def grab(module, args, kwargs):
        cache.append([args[0].detach(), args[1:], kwargs])
        raise _Stop

    hook = bert.encoder_layers(model)[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for batch in batches:
            inputs = model_args(model, on_device(model, batch))
            try:
                model(**inputs)
            except _Stop:
                cache[-1].append(inputs["attention_mask"].bool())
    finally:
        hook.remove()
    return cache


def _run(layer: nn.Module, cache: list) -> list[torch.Tensor]:
    outs = []
    for hidden, args, kwargs, _ in cache:
        out = layer(hidden, *args, **kwargs)
        outs.append(out[0] if isinstance(out, tuple) else out)
    return outs


@torch.no_grad()
def compensate(model: nn.Module, masks: Mapping[str, torch.Tensor], batches: Iterable[dict],
               damp: float = 0.01, progress: bool = True) -> dict[str, dict[str, float]]:
    """Prune a dense `model` to `masks` with compensated weights, in place.

    Returns, per compensated matrix, the relative reconstruction error of plain masking
    ("before") and of the compensated weights ("after"). Dense and dropped matrices have
    nothing to solve and are only masked.
    """
    was_training = model.training
    model.eval()
    cache = _layer_inputs(model, batches)
    refs = bert.matrices(model)
    report = {}
    layers = bert.encoder_layers(model)
    try:
        for i in tqdm(range(len(layers)), desc="compensation", disable=not progress, unit="layer"):
            for stage in STAGES:
                stage_refs = [r for r in refs if r.layer == i and r.kind in stage]
                solve = [r for r in stage_refs if 0 < int(masks[r.name].sum()) < masks[r.name].numel()]
                grams = {r.name: _Gram(bert.linear(model, r)) for r in solve}
                try:
                    if grams:
                        for hidden, args, kwargs, tokens in cache:
                            for g in grams.values():
                                g.tokens = tokens
                            layers[i](hidden, *args, **kwargs)
                finally:
                    for g in grams.values():
                        g.remove()
                for r in stage_refs:
                    lin = bert.linear(model, r)
                    # the solves run on the CPU: float64 Cholesky per support, small and exact
                    w, mask = bert.weight(model, r).cpu(), masks[r.name]
                    if r.name in grams:
                        h = grams[r.name].h.cpu()
                        new = masked_ridge(h, w, mask, damp)
                        report[r.name] = {"before": reconstruction_error(h, w, w * mask),
                                          "after": reconstruction_error(h, w, new)}
                    else:
                        new = w * mask
                    lin.weight.copy_(new.T.to(lin.weight))
            outs = _run(layers[i], cache)
            for entry, out in zip(cache, outs):
                entry[0] = out
    finally:
        model.train(was_training)
    return report
