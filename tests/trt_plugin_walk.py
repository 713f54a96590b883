"""Child process of tests/test_trt_plugin_layer.py: walks plugins/trt_plugin.py through the
calls TensorRT's builder makes of an ONNX-parsed plugin node, with NVIDIA's `tensorrt.plugin`
package of one bindings wheel over tests/trt_standin.py (not TensorRT), and prints what the
plugin answered as JSON.

    python -m tests.trt_plugin_walk BINDINGS_DIR DTYPE M N G
"""
import json
import sys

import numpy as np

from tests import trt_standin


def evaluate(expr, env):
    return expr.evaluate(env) if hasattr(expr, "evaluate") else int(expr)


def walk(dtype_name: str, m: int, n: int, groups: int) -> dict:
    import tensorrt as trt

    import plugins.trt_plugin as plugin_module
    plugin_module.target_capability = lambda: 90  # the H100 the engine would be built on; no GPU here

    dtype = {"fp16": trt.float16, "fp32": trt.float32}[dtype_name]
    creator = trt.get_plugin_registry().get_creator("GroupedLinear", "1", "pgb")
    # As the ONNX parser hands the node over below TensorRT 11.2: INT attribute as an INT32 array.
    fields = trt.PluginFieldCollection([trt.PluginField("groups", np.array([groups], np.int32),
                                                        trt.PluginFieldType.INT32)])
    plugin = creator.create_plugin("GroupedLinear", "pgb", fields, trt.TensorRTPhase.BUILD,
                                   trt.QuickPluginCreationRequest.UNKNOWN)
    in_types = [dtype, dtype, trt.int32, trt.int32, dtype]
    out_types = plugin.get_output_data_types(in_types, [3, 3, 1, 1, 1])

    builder = trt.IExprBuilder()
    batch, seq = trt.IDimensionExpr(symbol="batch"), trt.IDimensionExpr(symbol="seq")
    c = builder.constant
    br, bc = m // groups, n // groups
    in_exprs = [trt.DimsExprs([batch, seq, c(m)]), trt.DimsExprs([c(groups), c(br), c(bc)]),
                trt.DimsExprs([c(m)]), trt.DimsExprs([c(n)]), trt.DimsExprs([c(n)])]
    out_exprs = plugin.get_output_shapes(in_exprs, [], builder)
    env = {"batch": 3, "seq": 37}

    shapes = [(-1, -1, m), (groups, br, bc), (m,), (n,), (n,), (-1, -1, n)]
    io = [trt.DynamicPluginTensorDesc(trt.PluginTensorDesc(t, trt.TensorFormat.LINEAR, s))
          for t, s in zip(in_types + list(out_types), shapes)]
    offered = plugin.get_supported_format_combinations(io, 5)
    combos = [[d.type.name for d in offered[i:i + 6]] for i in range(0, len(offered), 6)]
    plugin.configure_plugin(io[:5], io[5:])
    tactics = plugin.get_valid_tactics()
    plugin.set_tactic(tactics[0])

    launch, extra = trt.LaunchParamsRecord(), trt.SymExprSetter()
    plugin.get_launch_params(in_exprs, io, 5, launch, extra, builder)
    name, ptx = plugin.get_kernel([d.desc for d in io[:5]], [d.desc for d in io[5:]])
    from plugins.aot import entry_params
    return {
        "tensorrt_plugin_version": trt.__version__,
        "output_types": [t.name for t in out_types],
        "output_shape": [evaluate(e, env) for e in out_exprs[0]],
        "env": env,
        "combinations": combos,
        "tactics": list(tactics),
        "launch": {k: evaluate(getattr(launch, k).expr, env) for k in
                   ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z", "shared_mem")},
        "extra_args": [{"dtype": a.dtype.name, "value": evaluate(a.expr, env)} for a in extra],
        "kernel": name.decode() if isinstance(name, bytes) else name,
        "ptx_params": entry_params(ptx.decode(), name.decode() if isinstance(name, bytes) else name),
    }


if __name__ == "__main__":
    bindings, dtype, m, n, g = sys.argv[1:]
    trt_standin.install(bindings)
    print(json.dumps(walk(dtype, int(m), int(n), int(g))))
