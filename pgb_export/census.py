"""What the exported graph holds, per layer: MatMuls, Gathers, Transposes, the activation
permutations left (each a Gather on a permutation index, grouped_linear.permute_last) and the
exchanges between grouped linears (grouped_linear.exchange), and the weight parameters
actually stored behind the MatMuls."""
from __future__ import annotations

import numpy as np
import onnx

from .bert_graph import ExportError
from .grouped_linear import EXCHANGE_CONCAT, PERMUTATION_INDEX


COUNTED = ("MatMul", "GroupedLinear", "Gather", "Transpose", "Permutation", "Exchange")  # GroupedLinear: the plugin node
MATMULS = {"MatMul": "MatMul", "MatMulInteger": "MatMul", "GroupedLinear": "GroupedLinear"}  # int8 counts as MatMul


def census(model: onnx.ModelProto) -> dict:
    """{"layers": {scope: counts}, "total": counts}; scopes are the node-name prefixes
    (embeddings, layer0.., head)."""
    # weight matrices and blocks only: the constant query/key of a dropped W_Q/W_K also
    # feeds a MatMul but is a bias
    weights = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer
               if t.name.split("/")[-1].split("_")[0] in ("weight", "block", "blocks")}
    for node in model.graph.node:  # QDQ graphs: a MatMul reads its int8 weight through DequantizeLinear
        if node.op_type == "DequantizeLinear" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    layers: dict[str, dict[str, int]] = {}
    for node in model.graph.node:
        scope = node.name.split("/")[0]
        c = layers.setdefault(scope, dict.fromkeys(COUNTED + ("weight_params",), 0))
        kind = MATMULS.get(node.op_type, node.op_type)
        if kind in COUNTED:
            c[kind] += 1
        if node.op_type == "Gather" and PERMUTATION_INDEX in node.input[1]:
            c["Permutation"] += 1
        if node.op_type == "Concat" and EXCHANGE_CONCAT in node.name:
            c["Exchange"] += 1
        if node.op_type in MATMULS:
            c["weight_params"] += sum(weights.get(i, 0) for i in node.input)
    total = {k: sum(c[k] for c in layers.values()) for k in COUNTED + ("weight_params",)}
    encoder = sum(c["weight_params"] for s, c in layers.items() if s.startswith("layer"))
    return {"layers": layers, "total": total, "encoder_weight_params": encoder}


def check_against_plan(counts: dict, plan_kept: int) -> None:
    """The encoder's stored MatMul weights must be exactly the plan's kept parameters."""
    if counts["encoder_weight_params"] != plan_kept:
        raise ExportError(f"graph stores {counts['encoder_weight_params']} encoder MatMul weights, "
                             f"pgb.json keeps {plan_kept}")
