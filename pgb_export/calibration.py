"""Activation ranges for explicit INT8 (the QDQ graph TensorRT builds INT8 engines from):
the largest |input| each prunable linear sees on calibration rows, read by forward hooks
on the PyTorch model.

Max calibration (no percentile clipping): it never saturates an activation the rows
produced, and the dev metric, checked against the fp32 model, says whether the ranges are
good enough (BENCHMARKS.md gives the measured gap).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pruning import bert
from pruning.batching import model_args


@torch.no_grad()
def input_ranges(model: nn.Module, batches: Iterable[dict]) -> dict[str, float]:
    """{matrix name: max |input|} over every token of `batches`, padding included (the
    engine computes padded positions too)."""
    amax: dict[str, float] = {}

    def hook(name):
        def record(module, inputs, output):
            amax[name] = max(amax.get(name, 0.0), float(inputs[0].abs().max()))
        return record

    handles = [bert.linear(model, r).register_forward_hook(hook(r.name)) for r in bert.matrices(model)]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model(**model_args(model, batch))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return amax
