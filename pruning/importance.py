"""Step 1: second-order importance, diagonal empirical Fisher (PGB.md section 1).

    s_ij = 1/2 * w_ij^2 * F_ij,   F_ij = mean_n (d loss_n / d w_ij)^2

Per-sample gradients are exact, not micro-batch approximations: for a linear layer the
gradient of sample n is X_n^T dY_n (summed over its tokens), which forward and tensor hooks
give us for a whole batch in one backward pass. Padding tokens carry zero gradient because
they are masked out of every attention, so dynamic padding does not bias F.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from tqdm import tqdm

from . import bert
from .batching import model_args, on_device
from .heads import Loss, head_named

Scores = dict[str, torch.Tensor]  # matrix name -> saliency, (M, N) = (in, out)


class FisherAccumulator:
    """Sum over samples of squared per-sample gradients of one nn.Linear's weight.

    Registered and removed around the scoring loop, the way SparseGPT keeps its
    per-layer statistics: add_batch() on every backward, then fisher(), then remove().
    """

    def __init__(self, lin: nn.Linear):
        self.sq = torch.zeros_like(lin.weight, dtype=torch.float32)  # (out, in) like torch
        self.samples = 0
        self._x: torch.Tensor | None = None
        self._hook = lin.register_forward_hook(self._forward)

    def _forward(self, module, inputs, output):
        self._x = inputs[0].detach().float()
        output.register_hook(self._backward)

    def _backward(self, dy: torch.Tensor) -> None:
        # (B, out, T) @ (B, T, in) -> per-sample gradients (B, out, in)
        per_sample = torch.bmm(dy.float().transpose(1, 2), self._x)
        self.sq += per_sample.square().sum(0)
        self.samples += per_sample.shape[0]
        self._x = None

    def fisher(self) -> torch.Tensor:
        return self.sq / max(self.samples, 1)

    def remove(self) -> None:
        self._hook.remove()


def score(model: nn.Module, batches: Iterable[dict], loss_fn: Loss | None = None,
          progress: bool = True) -> Scores:
    """Saliency of every prunable weight, from per-sample gradients on `batches`.

    Each batch holds the model's inputs and its head's targets; the loss is the head's own
    (pruning.heads) unless `loss_fn` is given. The model is put in eval mode so that dropout
    does not add noise to the gradients.
    """
    loss_fn = loss_fn or head_named(model).loss
    refs = bert.matrices(model)
    accs = {r.name: FisherAccumulator(bert.linear(model, r)) for r in refs}
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(batches, desc="importance", disable=not progress, unit="batch"):
            model.zero_grad(set_to_none=True)
            batch = on_device(model, batch)
            losses = loss_fn(model(**model_args(model, batch)), batch)
            losses.sum().backward()  # sum, not mean: each sample's own gradient
        model.zero_grad(set_to_none=True)
        return {r.name: (0.5 * bert.linear(model, r).weight.detach().float().square()
                         * accs[r.name].fisher()).T.cpu().contiguous() for r in refs}
    finally:
        for acc in accs.values():
            acc.remove()
        model.train(was_training)
