"""pgb::GroupedLinear as a TensorRT Quick Deployable Plugin with an ahead-of-time
implementation: the Triton-lang kernel is compiled to PTX when the engine is built and
embedded in it, so serving needs no Python.

Written against the documented `tensorrt.plugin` API (TensorRT 10.7+: register, aot_impl,
KernelLaunchParams, SymIntExprs). TensorRT cannot be installed where this project is
developed, so this module has not been run; importing it registers the plugin. What can be
proven without TensorRT (parameter list, PTX ISA, ptxas for the target) is proven by
plugins.aot, in CI and by `pgb-export --plugin`.
"""
from __future__ import annotations

import functools
import operator

import tensorrt as trt
import tensorrt.plugin as trtp
import torch

from .aot import KernelSpec, compile_kernel
from .grouped_gemm import TILES

_DTYPES = {trt.float16: "fp16", trt.float32: "fp32"}


def _lead(x: trtp.TensorDesc) -> list:
    """x's dimensions but the last (batch, sequence), symbolic."""
    return [x.shape_expr[i] for i in range(len(x.shape_expr) - 1)]


@trtp.register("pgb::GroupedLinear")
def grouped_linear_desc(x: trtp.TensorDesc, blocks: trtp.TensorDesc, rows: trtp.TensorDesc,
                        cols: trtp.TensorDesc, bias: trtp.TensorDesc, groups: int) -> trtp.TensorDesc:
    """y has x's shape with the last dimension N = len(bias), and x's type."""
    return trtp.from_shape_expr(trtp.ShapeExprs.from_tuple(tuple(_lead(x) + [bias.shape_expr[0]])), dtype=x.dtype)


@trtp.aot_impl("pgb::GroupedLinear")
def grouped_linear_aot(x: trtp.TensorDesc, blocks: trtp.TensorDesc, rows: trtp.TensorDesc,
                       cols: trtp.TensorDesc, bias: trtp.TensorDesc, groups: int,
                       outputs: tuple[trtp.TensorDesc], tactic: int):
    m = x.shape_expr[len(x.shape_expr) - 1].constant_value()
    n = bias.shape_expr[0].constant_value()
    major, minor = torch.cuda.get_device_capability()  # the GPU the engine is built for
    kernel = compile_kernel(KernelSpec(_DTYPES[x.dtype], m, n, groups, 10 * major + minor))
    tokens = functools.reduce(operator.mul, _lead(x))
    launch = trtp.KernelLaunchParams()
    launch.grid_x = trtp.cdiv(tokens, TILES["BLOCK_T"])
    launch.grid_y = groups
    launch.grid_z = -(-(n // groups) // TILES["BLOCK_N"])
    launch.block_x = kernel.threads
    launch.shared_mem = kernel.shared
    extra = trtp.SymIntExprs(1)
    extra[0] = trtp.SymInt32(tokens)
    return kernel.name, kernel.ptx, launch, extra
