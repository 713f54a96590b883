"""Parity of an exported model against the PyTorch model it came from.

Checks run in a fixed order (output names, shapes, values) and every failure is collected,
optimum-style; the report names the output, the largest difference and the inputs it was
seen on, and the caller decides whether a failure is fatal.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from pruning.families import family, max_tokens
from pruning.heads import head_named

from .bert_io import BERT_IO


class ParityError(AssertionError):
    """The exported model does not compute the same function as the PyTorch one."""


@dataclass
class OutputCheck:
    output: str
    batch_size: int
    seq_len: int
    max_abs_diff: float
    where: tuple[int, ...]
    texts: list[str]


@dataclass
class ParityReport:
    atol: float
    checks: list[OutputCheck] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks), default=0.0)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict:
        return {"atol": self.atol, "max_abs_diff": self.max_abs_diff, "ok": self.ok,
                "failures": self.failures, "checks": [asdict(c) for c in self.checks]}


class FunctionSession:
    """Anything that maps feeds to {output name: array}, shaped like an ONNX Runtime session
    for check_outputs (TensorRT engines, the reference evaluator of plugin graphs)."""

    def __init__(self, fn, outputs: tuple[str, ...]):
        self.fn, self.outputs = fn, outputs

    def get_outputs(self):
        from types import SimpleNamespace
        return [SimpleNamespace(name=n) for n in self.outputs]

    def run(self, _names, inputs):
        got = self.fn(inputs)
        return [got[n] for n in self.outputs]


def feeds(encoded: dict, inputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The graph's inputs from a tokenizer's output (which may hold more, e.g. DistilBERT's
    tokenizer emits token_type_ids)."""
    return {k: np.asarray(encoded[k], dtype=BERT_IO.input_dtype) for k in inputs}


@torch.no_grad()
def torch_outputs(model: nn.Module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The head's outputs (pruning.heads), in the graph's order."""
    model.eval()
    out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    return [t.float().numpy() for t in head_named(model).outputs_of(out)]


def check_outputs(session, model: nn.Module, tokenizer, texts: list, atol: float = BERT_IO.atol_fp32,
                  batch_sizes=(1, 4, 16), lengths=(16, 64, 128)) -> ParityReport:
    """Compare every output of the head on real sentences, for every batch size x (padded)
    length. texts: strings or (a, b) pairs (question answering: (question, context))."""
    report = ParityReport(atol)
    # Lengths beyond the model's position table cannot be fed to it at all.
    lengths = sorted({min(length, max_tokens(model.config)) for length in lengths})
    names = [o.name for o in session.get_outputs()]
    expected = list(head_named(model).outputs)
    if names != expected:
        report.failures.append(f"outputs are {names}, expected {expected}")
        return report
    for bs in batch_sizes:
        for length in lengths:
            chunk = [texts[i % len(texts)] for i in range(bs)]
            a = [t[0] if isinstance(t, tuple) else t for t in chunk]
            b = [t[1] for t in chunk] if isinstance(chunk[0], tuple) else None
            enc = tokenizer(a, b, padding="max_length", truncation=True, max_length=length, return_tensors="np")
            inputs = feeds(enc, family(model).inputs)
            for name, got, want in zip(expected, session.run(None, inputs), torch_outputs(model, inputs)):
                if got.shape != want.shape:
                    report.failures.append(f"{name} shape {got.shape} != {want.shape} at batch {bs}, length {length}")
                    continue
                diff = np.abs(got.astype(np.float64) - want)
                where = tuple(int(i) for i in np.unravel_index(diff.argmax(), diff.shape))
                check = OutputCheck(name, bs, length, float(diff.max()), where, [str(chunk[where[0]])[:200]])
                report.checks.append(check)
                if not check.max_abs_diff <= atol:
                    report.failures.append(
                        f"{name} differ by {check.max_abs_diff:.3g} > {atol:g} at batch {bs}, length {length}, "
                        f"index {where}, on input {check.texts[0]!r}")
    return report
