"""The FFN activations the exporter writes, one entry per name a transformers config uses
(`hidden_act`, DistilBERT's `activation`).

Each entry is the ONNX pattern, made of standard operators only so that the graph TensorRT
reads can take it too, and the float64 function used where the activation of a constant is
folded into a bias (a dropped FFN1's bias, seen through the activation by a kept FFN2).
Names that denote one function share an entry: transformers' "gelu_new", "gelu_fast",
"gelu_accurate" and "gelu_pytorch_tanh" differ only in how they compute the tanh
approximation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .graph import Graph


@dataclass(frozen=True)
class Activation:
    emit: Callable[[Graph, str], str]  # graph, input tensor -> output tensor
    value: Callable[[np.ndarray], np.ndarray]


def _half_x_one_plus(g: Graph, h: str, t: str) -> str:
    """0.5 * h * (1 + t): both GELUs, t being erf(h / sqrt 2) or the tanh approximation of it."""
    h = g.op("Mul", [h, g.op("Add", [t, g.const(np.array(1.0), "one")], "Add")], "Mul")
    return g.op("Mul", [h, g.const(np.array(0.5), "half")], "Mul")


def _erf_gelu_op(g: Graph, h: str) -> str:
    # in the pattern ONNX Runtime fuses (with the bias Add before it: BiasGelu)
    t = g.op("Erf", [g.op("Div", [h, g.const(np.array(math.sqrt(2.0)), "sqrt2")], "Div")], "Erf")
    return _half_x_one_plus(g, h, t)


def _erf_gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


_TANH_SCALE, _TANH_CUBE = math.sqrt(2.0 / math.pi), 0.044715


def _tanh_gelu_op(g: Graph, h: str) -> str:
    cube = g.op("Mul", [g.op("Mul", [h, h], "Mul"), h], "Mul")
    inner = g.op("Add", [h, g.op("Mul", [cube, g.const(np.array(_TANH_CUBE), "gelu_cube")], "Mul")], "Add")
    t = g.op("Tanh", [g.op("Mul", [inner, g.const(np.array(_TANH_SCALE), "gelu_scale")], "Mul")], "Tanh")
    return _half_x_one_plus(g, h, t)


def _tanh_gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(_TANH_SCALE * (x + _TANH_CUBE * x ** 3)))


def _sigmoid_gate(slope: float) -> tuple[Callable[[Graph, str], str], Callable[[np.ndarray], np.ndarray]]:
    """x * sigmoid(slope * x): SiLU at 1, transformers' quick GELU at 1.702."""
    def emit(g: Graph, h: str) -> str:
        scaled = h if slope == 1.0 else g.op("Mul", [h, g.const(np.array(slope), "gate_slope")], "Mul")
        return g.op("Mul", [h, g.op("Sigmoid", [scaled], "Sigmoid")], "Mul")

    def value(x: np.ndarray) -> np.ndarray:
        return x / (1.0 + np.exp(-slope * x))
    return emit, value


ERF_GELU = Activation(_erf_gelu_op, _erf_gelu)
TANH_GELU = Activation(_tanh_gelu_op, _tanh_gelu)
RELU = Activation(lambda g, h: g.op("Relu", [h], "Relu"), lambda x: np.maximum(x, 0.0))
SILU = Activation(*_sigmoid_gate(1.0))
QUICK_GELU = Activation(*_sigmoid_gate(1.702))

ACTIVATIONS: dict[str, Activation] = {
    "gelu": ERF_GELU, "gelu_python": ERF_GELU,
    "gelu_new": TANH_GELU, "gelu_fast": TANH_GELU, "gelu_accurate": TANH_GELU,
    "gelu_pytorch_tanh": TANH_GELU, "gelu_python_tanh": TANH_GELU,
    "relu": RELU, "silu": SILU, "swish": SILU, "quick_gelu": QUICK_GELU,
}
