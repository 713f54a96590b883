"""The pgb::GroupedLinear node's semantics in numpy, for onnx.reference.ReferenceEvaluator:
lets the plugin graph be checked on a CPU, where neither TensorRT nor the GPU kernel runs."""
from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun


def grouped_linear_ref(x, blocks, rows, cols, bias):
    groups, br, bc = blocks.shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    y = np.empty((x2.shape[0], groups * bc), dtype=x.dtype)
    for g in range(groups):
        y[:, cols[g * bc:(g + 1) * bc]] = x2[:, rows[g * br:(g + 1) * br]] @ blocks[g]
    return (y + bias).reshape(*lead, groups * bc).astype(x.dtype)


class GroupedLinear(OpRun):
    op_domain = "pgb"

    def _run(self, x, blocks, rows, cols, bias, groups=None, plugin_namespace=None, plugin_version=None):
        return (grouped_linear_ref(x, blocks, rows, cols, bias),)
