"""Activation ranges for explicit INT8 (the QDQ graph TensorRT builds INT8 engines from), and
the linears that stay in floating point, both fitted on calibration rows through forward hooks
on the PyTorch model.

Ranges, one per prunable linear's input (symmetric, per tensor: what TensorRT takes):
- `max`: the largest |input| the rows produced. It never saturates; one outlier token
  stretches the int8 step for every other one.
- `mse`: the range that minimises the rows' expected squared quantization error of that
  input (rounding inside the range, clipping beyond it), from a histogram of |input|.
On MiniLM neither is ahead on every model (BENCHMARKS.md, "QDQ calibration"), and with either
some dev rows' logits move by more than the int8 tolerance: most of that error comes from a
few FFN inputs of the first layers. So `float_fallback` leaves the linears whose quantized
input moves the logits most in floating point, one at a time, until the rows' logits are
within the budget.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from pruning import bert
from pruning.batching import first_rows, model_args, predict

METHODS = ("max", "mse")
BINS = 2048
LEVELS = 127  # symmetric int8: |q| <= 127
# A quarter of the linears at most stay in floating point: beyond that an INT8 engine has
# little INT8 left, and the export's check reports the error instead.
MAX_FALLBACK = 0.25
# Rows each linear's sensitivity is measured on: the ranking needs an average, not a tail, and
# this is one forward pass per linear.
SENSITIVITY_ROWS = 64


def _each_input(model: nn.Module, batches: Iterable[dict], record: Callable[[str, torch.Tensor], None]) -> None:
    """Calls record(matrix name, its input) for every prunable linear over `batches`."""
    def hook(name):
        return lambda module, inputs, output: record(name, inputs[0].detach().float())

    handles = [bert.linear(model, r).register_forward_hook(hook(r.name)) for r in bert.matrices(model)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                model(**model_args(model, batch))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def _mse_clip(hist: torch.Tensor, amax: float) -> float:
    """The bin edge c minimising the sum over |x| of its squared error with a step of c/127:
    step^2/12 inside [0, c], (|x| - c)^2 beyond it (x at its bin's centre)."""
    width = amax / len(hist)
    centres = (torch.arange(len(hist), dtype=torch.float64) + 0.5) * width
    clips = torch.arange(1, len(hist) + 1, dtype=torch.float64) * width
    inside = torch.cumsum(hist, 0)
    beyond = (hist[None, :] * (centres[None, :] - clips[:, None]).clamp(min=0) ** 2).sum(1)
    err = inside * (clips / LEVELS) ** 2 / 12 + beyond
    return float(clips[int(torch.argmin(err))])


def input_ranges(model: nn.Module, batches: Iterable[dict], method: str = "max") -> dict[str, float]:
    """{matrix name: clipping range of its input} over every token of `batches`, padding
    included (the engine computes padded positions too)."""
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r}: expected one of {', '.join(METHODS)}")
    batches = list(batches)
    amax: dict[str, float] = {}
    _each_input(model, batches, lambda n, x: amax.__setitem__(n, max(amax.get(n, 0.0), float(x.abs().max()))))
    if method == "max":
        return amax
    hists = {n: torch.zeros(BINS, dtype=torch.float64) for n in amax}

    def count(name, x):
        if amax[name] > 0:
            hists[name] += torch.histc(x.abs(), BINS, 0, amax[name]).double()

    _each_input(model, batches, count)
    return {n: _mse_clip(hists[n], a) if a > 0 else a for n, a in amax.items()}


def fake_quantized(x: torch.Tensor, amax: float) -> torch.Tensor:
    """x through symmetric int8 with range amax and back: what QuantizeLinear followed by
    DequantizeLinear computes (round half to even, as ONNX specifies)."""
    step = max(amax, 1e-12) / LEVELS
    return torch.clamp(torch.round(x / step), -LEVELS, LEVELS) * step


def _logits_error(model: nn.Module, batches: list[dict], reference: list[dict], ranges: Mapping[str, float],
                  quantized: Collection[str]) -> np.ndarray:
    """|outputs - reference| over every output value of `batches`, with the inputs of the
    `quantized` linears fake-quantized."""
    handles = [bert.linear(model, r).register_forward_pre_hook(
                   lambda module, args, name=r.name: (fake_quantized(args[0], ranges[name]), *args[1:]))
               for r in bert.matrices(model) if r.name in quantized]
    try:
        with torch.no_grad():
            outputs = predict(model, batches)
    finally:
        for h in handles:
            h.remove()
    return np.concatenate([np.abs(o[k] - ref[k]).ravel() for o, ref in zip(outputs, reference) for k in ref])


def float_fallback(model: nn.Module, batches: list[dict], ranges: Mapping[str, float], budget: float
                   ) -> tuple[list[str], dict]:
    """(linears to keep in floating point, what was measured). Each linear's sensitivity is
    the RMS change of the outputs, over the first SENSITIVITY_ROWS rows, when only its input
    is quantized; the most sensitive leave INT8 one at a time until the largest output change
    over `batches`, every input quantized but theirs, is within `budget` (or MAX_FALLBACK of
    them have left)."""
    names = [n for n, a in ranges.items() if a > 0]
    reference = predict(model, batches)
    error = _logits_error(model, batches, reference, ranges, names).max()
    report = {"budget": budget, "max_abs_diff_all_int8": float(error)}
    if error <= budget:
        return [], dict(report, max_abs_diff=float(error))
    few = first_rows(batches, SENSITIVITY_ROWS)
    rms = {n: float(np.sqrt((_logits_error(model, few, reference[:len(few)], ranges, [n]) ** 2).mean()))
           for n in names}
    order = sorted(names, key=rms.get, reverse=True)
    kept: list[str] = []
    while error > budget and len(kept) < int(MAX_FALLBACK * len(names)):
        kept.append(order[len(kept)])
        error = _logits_error(model, batches, reference, ranges, [n for n in names if n not in kept]).max()
    return kept, dict(report, max_abs_diff=float(error),
                      sensitivity={n: rms[n] for n in order[:max(len(kept), 5)]})
