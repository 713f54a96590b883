"""pgb::GroupedLinear as a TensorRT Quick Deployable Plugin with an ahead-of-time
implementation: the Triton-lang kernel is compiled to PTX when the engine is built and
embedded in it, so serving needs no Python.

Needs TensorRT 10.9 or newer: `aot_impl`, `KernelLaunchParams` and `SymIntExprs` first appear
in the `tensorrt.plugin` package of 10.9. Importing this module registers the plugin.

The decorators read these signatures with `inspect` and never evaluate strings, so this
module must not use `from __future__ import annotations`, and every annotation, the return
annotations included, must be a real type. tests/test_trt_plugin_layer.py checks the
definitions against the `tensorrt.plugin` package of the oldest and newest supported
bindings (over a stand-in for TensorRT's native core: that is not TensorRT).
"""
import functools
import operator
from typing import List, Tuple, Union

import numpy as np
import numpy.typing as npt
import tensorrt as trt
import tensorrt.plugin as trtp

from .aot import KernelSpec, compile_kernel
from .grouped_gemm import TILES

_DTYPES = {trt.float16: "fp16", trt.float32: "fp32"}
# One tactic: the kernel has a single tile configuration. TensorRT only calls set_tactic,
# which the launch step reads, for plugins that declare their tactics through autotune.
TACTIC = 1


def target_capability() -> int:
    """Compute capability (major * 10 + minor) of the GPU the engine is being built on."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    return 10 * major + minor


def _groups(groups: npt.NDArray[np.int32]) -> int:
    # Below TensorRT 11.2 the ONNX parser passes an INT attribute as a length-1 INT32 array.
    return int(np.asarray(groups).reshape(-1)[0])


def _lead(x: trtp.TensorDesc) -> list:
    """x's dimensions but the last (batch, sequence), symbolic."""
    return [x.shape_expr[i] for i in range(len(x.shape_expr) - 1)]


@trtp.register("pgb::GroupedLinear")
def grouped_linear_desc(x: trtp.TensorDesc, blocks: trtp.TensorDesc, rows: trtp.TensorDesc,
                        cols: trtp.TensorDesc, bias: trtp.TensorDesc,
                        groups: npt.NDArray[np.int32]) -> Tuple[trtp.TensorDesc]:
    """y has x's shape with the last dimension N = len(bias), and x's type."""
    return (trtp.from_shape_expr(trtp.ShapeExprs.from_tuple(tuple(_lead(x) + [bias.shape_expr[0]])),
                                 dtype=x.dtype),)


@trtp.autotune("pgb::GroupedLinear")
def grouped_linear_autotune(x: trtp.TensorDesc, blocks: trtp.TensorDesc, rows: trtp.TensorDesc,
                            cols: trtp.TensorDesc, bias: trtp.TensorDesc,
                            outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
    """fp16 or fp32 activations, weights and bias in the same type, int32 index maps."""
    combination = trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, INT32, INT32, FP32|FP16, FP32|FP16", "LINEAR")
    combination.tactics([TACTIC])
    return [combination]


@trtp.aot_impl("pgb::GroupedLinear")
def grouped_linear_aot(x: trtp.TensorDesc, blocks: trtp.TensorDesc, rows: trtp.TensorDesc,
                       cols: trtp.TensorDesc, bias: trtp.TensorDesc, groups: npt.NDArray[np.int32],
                       outputs: Tuple[trtp.TensorDesc], tactic: int
                       ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
    g = _groups(groups)
    m = x.shape_expr[len(x.shape_expr) - 1].constant_value()
    n = bias.shape_expr[0].constant_value()
    kernel = compile_kernel(KernelSpec(_DTYPES[x.dtype], m, n, g, target_capability()))
    tokens = functools.reduce(operator.mul, _lead(x))
    launch = trtp.KernelLaunchParams()
    launch.grid_x = trtp.cdiv(tokens, TILES["BLOCK_T"])
    launch.grid_y = g
    launch.grid_z = -(-(n // g) // TILES["BLOCK_N"])
    launch.block_x = kernel.threads
    launch.shared_mem = kernel.shared
    extra = trtp.SymIntExprs(1)
    extra[0] = trtp.SymInt32(tokens)
    return kernel.name, kernel.ptx, launch, extra
