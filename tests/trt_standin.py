"""The smallest stand-in for TensorRT's native core (the `tensorrt_bindings.tensorrt`
extension, which needs libnvinfer) under which NVIDIA's own pure-Python `tensorrt.plugin`
package, from a real bindings wheel, imports and runs.

It is not TensorRT: it builds no network and runs no kernel. It gives the plugin package the
enums, plain records and the plugin registry it uses, and symbolic shape expressions that can
be evaluated, so that a test can walk a plugin through the calls TensorRT's builder makes
(create, output types, output shapes, format combinations, tactics, AOT launch parameters,
kernel) and check what our definitions answer. `install(bindings_dir)` makes `import
tensorrt` give this module with the wheel's `plugin` package beneath it.
"""
from __future__ import annotations

import enum
import operator
import sys
import types
from pathlib import Path

import numpy as np

_MODULE = sys.modules[__name__]


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9
    FP4 = 10


float32, float16, int8, int32, uint8, fp8, bfloat16, int64, int4 = (
    DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32, DataType.UINT8, DataType.FP8, DataType.BF16,
    DataType.INT64, DataType.INT4)

_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
       DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}


def nptype(dtype: DataType):
    return _NP[dtype]


TensorFormat = enum.IntEnum("TensorFormat", "LINEAR CHW2 HWC8 CHW4 CHW16 CHW32 DHWC8 CDHW32 HWC DLA_LINEAR "
                                            "DLA_HWC4 HWC16 DHWC", start=0)
PluginFieldType = enum.IntEnum("PluginFieldType", "FLOAT16 FLOAT32 FLOAT64 INT8 INT16 INT32 CHAR DIMS UNKNOWN "
                                                  "BF16 INT64 FP8 INT4 FP4", start=0)
PluginArgType = enum.IntEnum("PluginArgType", "INT", start=0)
PluginArgDataType = enum.IntEnum("PluginArgDataType", "INT8 INT16 INT32", start=0)
QuickPluginCreationRequest = enum.IntEnum("QuickPluginCreationRequest",
                                          "UNKNOWN PREFER_JIT PREFER_AOT STRICT_JIT STRICT_AOT", start=0)
TensorRTPhase = enum.IntEnum("TensorRTPhase", "BUILD RUNTIME", start=0)
DimensionOperation = enum.IntEnum("DimensionOperation", "SUM PROD MAX MIN SUB EQUAL LESS FLOOR_DIV CEIL_DIV",
                                  start=0)

_OPS = {DimensionOperation.SUM: operator.add, DimensionOperation.PROD: operator.mul,
        DimensionOperation.MAX: max, DimensionOperation.MIN: min, DimensionOperation.SUB: operator.sub,
        DimensionOperation.EQUAL: lambda a, b: int(a == b), DimensionOperation.LESS: lambda a, b: int(a < b),
        DimensionOperation.FLOOR_DIV: operator.floordiv, DimensionOperation.CEIL_DIV: lambda a, b: -(-a // b)}


class IDimensionExpr:
    """A constant, a named symbol (batch, sequence) or an operation on two expressions."""

    def __init__(self, value=None, symbol: str | None = None, op=None, args=()):
        self.value, self.symbol, self.op, self.args = value, symbol, op, args

    def is_constant(self) -> bool:
        return self.value is not None

    def get_constant_value(self) -> int:
        if self.value is None:
            raise ValueError("not a constant")
        return self.value

    def is_size_tensor(self) -> bool:
        return False

    def evaluate(self, env: dict[str, int]) -> int:
        if self.value is not None:
            return self.value
        if self.symbol is not None:
            return env[self.symbol]
        return _OPS[self.op](*(a.evaluate(env) for a in self.args))


class IExprBuilder:
    def constant(self, value: int) -> IDimensionExpr:
        return IDimensionExpr(int(value))

    def operation(self, op, a: IDimensionExpr, b: IDimensionExpr) -> IDimensionExpr:
        if a.is_constant() and b.is_constant():  # TensorRT folds constants too
            return IDimensionExpr(_OPS[op](a.value, b.value))
        return IDimensionExpr(op=op, args=(a, b))


class DimsExprs(list):
    def __init__(self, n_or_items=0):
        super().__init__([None] * n_or_items if isinstance(n_or_items, int) else n_or_items)


class Dims(tuple):
    MAX_DIMS = 8

    def __new__(cls, shape=0):
        return super().__new__(cls, (0,) * shape if isinstance(shape, int) else tuple(shape))


class PluginTensorDesc:
    def __init__(self, type=DataType.FLOAT, format=TensorFormat.LINEAR, dims=(), scale=1.0):
        self.type, self.format, self.dims, self.scale = type, format, Dims(dims), scale


class DynamicPluginTensorDesc:
    def __init__(self, desc: PluginTensorDesc, min=(), opt=(), max=()):
        self.desc, self.min, self.opt, self.max = desc, Dims(min), Dims(opt), Dims(max)


class PluginField:
    def __init__(self, name: str, data=None, type=PluginFieldType.UNKNOWN):
        self.name, self.type = name, type
        if isinstance(data, (bytes, bytearray)):
            data = np.frombuffer(bytes(data), dtype=np.int8)
        self.data = np.asarray(data) if data is not None else np.array([])
        self.size = self.data.size


class PluginFieldCollection(list):
    pass


class _Interface:
    def __init__(self, *args, **kwargs):
        pass


class ISymExpr(_Interface):
    pass


class ITensor(_Interface):
    pass


class IPluginV3(_Interface):
    pass


class IPluginV3QuickCore(_Interface):
    pass


class IPluginV3QuickBuild(_Interface):
    pass


class IPluginV3QuickRuntime(_Interface):
    pass


class IPluginV3QuickAOTBuild(_Interface):
    pass


class IPluginCreatorV3Quick(_Interface):
    pass


class LaunchParamsRecord:
    """What the builder hands get_launch_params to fill: each field becomes an ISymExpr."""

    grid_x = grid_y = grid_z = block_x = block_y = block_z = shared_mem = None


class SymExprSetter(list):
    """What the builder hands get_launch_params for the extra kernel arguments (passed
    between the inputs and the outputs)."""

    nbSymExprs = 0

    def __setitem__(self, i, value):
        while len(self) <= i:
            self.append(None)
        super().__setitem__(i, value)


class Logger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self, min_severity: int = 2):
        self.min_severity = min_severity

    def log(self, severity: int, message: str) -> None:
        if severity <= Logger.ERROR:
            print(message, file=sys.stderr)


class _Registry:
    def __init__(self):
        self.creators = {}

    def register_creator(self, creator, namespace: str) -> bool:
        key = (creator.name, creator.plugin_version, namespace)
        if key in self.creators:
            return False
        self.creators[key] = creator
        return True

    def get_creator(self, name: str, version: str, namespace: str = ""):
        return self.creators.get((name, version, namespace))


_REGISTRY = _Registry()


def get_plugin_registry() -> _Registry:
    return _REGISTRY


def install(bindings_dir: str | Path) -> types.ModuleType:
    """Make `import tensorrt` give this stand-in, with the bindings wheel's own pure-Python
    `plugin` package (unpacked in `bindings_dir`) beneath it."""
    package = Path(bindings_dir) / "tensorrt_bindings"
    if not (package / "plugin" / "__init__.py").is_file():
        raise FileNotFoundError(f"no tensorrt_bindings/plugin in {bindings_dir}")
    dist = next(Path(bindings_dir).glob("tensorrt*bindings-*.dist-info"))
    _MODULE.__version__ = dist.name.removesuffix(".dist-info").split("-")[1]
    _MODULE.__path__ = [str(package)]  # submodules (plugin) come from the wheel
    sys.modules["tensorrt"] = _MODULE
    return _MODULE
