"""Will TensorRT's ONNX parser take this graph? Checked on the CPU, before any GPU.

- every node's operator is in the parser's support table (data/trt_onnx_ops.json: source
  and TensorRT version inside), with a supported element type on every input and output;
- the opset is in the parser's range, and the restrictions the table states hold for the
  operators we emit (constant Unsqueeze and CumSum axes, LayerNormalization's single output);
- ONNX shape inference succeeds with symbolic batch and sequence and gives every output as
  (batch, labels), or (batch, sequence) for per-token outputs;
- no int64 arithmetic: TensorRT computes int64 elementwise and MatMul slowly or not at all,
  so int64 may feed only shape and index operators (Shape, Gather indices, Range, Cast,
  Unsqueeze, Reshape, Concat).
Custom nodes of the pgb plugin domain are allowed when `plugin_domain` is given.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx.numpy_helper
from onnx import TensorProto

TABLE = json.loads((Path(__file__).parent / "data" / "trt_onnx_ops.json").read_text())
TYPE_NAMES = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
              TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.BOOL: "BOOL",
              TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8", TensorProto.DOUBLE: "DOUBLE"}
INT64_ARITHMETIC = {"Add", "Sub", "Mul", "Div", "MatMul", "Gemm", "Pow", "Mod"}
# Inputs that are parameters, not data: the table's types are the data's, and the parser
# needs these as initializers (its restriction column).
PARAMETER_INPUTS = {"CumSum": (1, "axis"), "Unsqueeze": (1, "axes"), "Squeeze": (1, "axes")}
ZERO_POINT_ZERO = {"QuantizeLinear", "DequantizeLinear"}  # the table's restriction for both



@dataclass
class CompatReport:
    tensorrt_version: str = TABLE["tensorrt_version"]
    source: str = TABLE["source"]
    problems: list[str] = field(default_factory=list)
    operators: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"ok": self.ok, "tensorrt_version": self.tensorrt_version, "source": self.source,
                "problems": self.problems, "operators": self.operators}


def check(model: onnx.ModelProto, plugin_domain: str | None = None) -> CompatReport:
    report = CompatReport()
    lo, hi = TABLE["opset_range"]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not lo <= opset <= hi:
        report.problems.append(f"opset {opset} is outside TensorRT {report.tensorrt_version}'s range {lo}-{hi}")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as e:
        report.problems.append(f"shape inference failed with symbolic batch and sequence: {str(e).splitlines()[0]}")
        return report
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    constants = {i.name: i for i in inferred.graph.initializer}

    for node in inferred.graph.node:
        report.operators[node.op_type] = report.operators.get(node.op_type, 0) + 1
        if node.domain not in ("", "ai.onnx"):
            if node.domain != plugin_domain:
                report.problems.append(f"{node.name}: custom operator {node.domain}::{node.op_type} has no plugin")
            continue
        spec = TABLE["operators"].get(node.op_type)
        if spec is None:
            report.problems.append(f"{node.name}: operator {node.op_type} is not supported by TensorRT's ONNX parser "
                                   f"(table: TensorRT {report.tensorrt_version})")
            continue
        param, param_name = PARAMETER_INPUTS.get(node.op_type, (None, None))
        data = [n for i, n in enumerate(node.input) if i != param] + list(node.output)
        if spec.get("checked") == "first input":  # Q/DQ: the other side is the quantized type by definition
            data = node.input[:1]
        if node.op_type in ZERO_POINT_ZERO and len(node.input) > 2:  # absent: the default 0
            zero_point = constants.get(node.input[2])
            if zero_point is None or onnx.numpy_helper.to_array(zero_point).any():
                report.problems.append(f"{node.name}: {node.op_type} zero point must be a constant 0")
        for name in [n for n in data if n]:
            kind = TYPE_NAMES.get(types.get(name), str(types.get(name)))
            if name in types and kind not in spec["types"]:
                report.problems.append(f"{node.name}: {node.op_type} on {kind} tensor {name!r} is not supported")
        if node.op_type in INT64_ARITHMETIC and any(types.get(n) == TensorProto.INT64 for n in node.input):
            report.problems.append(f"{node.name}: int64 arithmetic ({node.op_type}) on the hot path")
        if param is not None and len(node.input) > param and node.input[param] not in constants:
            report.problems.append(f"{node.name}: {node.op_type} {param_name} must be a constant")
        if node.op_type == "LayerNormalization" and len([o for o in node.output if o]) > 1:
            report.problems.append(f"{node.name}: LayerNormalization may only use its first output")

    for output in inferred.graph.output:  # (batch, labels) or, per token, (batch, sequence)
        dims = output.type.tensor_type.shape.dim
        if len(dims) != 2 or not dims[0].dim_param or not (dims[1].dim_value > 0 or dims[1].dim_param):
            report.problems.append(f"{output.name} does not come out as (symbolic batch, labels or sequence) "
                                   f"after shape inference")
    return report
