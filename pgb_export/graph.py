"""A minimal ONNX graph builder: unique names, initializers, nodes tagged by layer."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Graph:
    def __init__(self, float_dtype=np.float32):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.float_dtype = float_dtype
        self._names: dict[str, int] = {}
        self.scope = "embeddings"
        self._made: dict[tuple, object] = {}  # once(): (what, input, how) -> the outputs made for it

    def name(self, base: str) -> str:
        base = f"{self.scope}/{base}"
        n = self._names.get(base, 0)
        self._names[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def once(self, key: tuple, make):
        """make()'s outputs, made the first time `key` is asked for and shared by every later
        reader (a quantized activation, its features-first copy, a permutation of it)."""
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def const(self, value, base: str, dtype=None) -> str:
        arr = np.asarray(value, dtype=dtype or (self.float_dtype if np.asarray(value).dtype.kind == "f" else None))
        name = self.name(base)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], base: str | None = None, **attrs) -> str:
        out = self.name(base or op_type)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def op_multi(self, op_type: str, inputs: list[str], outputs: int, base: str | None = None,
                 **attrs) -> list[str]:
        name = self.name(base or op_type)
        outs = [f"{name}:{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs

    def model(self, inputs: list, outputs: list, producer: str) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, "pgb_bert", inputs, outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET)]
        opsets += [helper.make_opsetid(domain, 1) for domain in sorted({n.domain for n in self.nodes} - {""})]
        m = helper.make_model(g, opset_imports=opsets, producer_name=producer)
        m.ir_version = 8  # readable by every ONNX Runtime and TensorRT release of the last years
        return m


def tensor_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


FLOAT = TensorProto.FLOAT
