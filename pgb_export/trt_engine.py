"""TensorRT engines from the exported ONNX graph, and inference with them for parity.

Building and running are polygraphy's (NVIDIA's own, and what its AOT plugin sample uses):
it parses the graph, applies the builder config, merges and guards the timing cache, checks
the engine it deserialises and the input shapes it is fed. What is ours is what is specific
to this project: the profile, loading our plugin, and which shapes parity may feed.

Strongly typed networks: the precision is the ONNX graph's own (fp16 export for fp16
engines), so TensorRT never picks a lower precision on its own; fp32 engines also clear
TF32, to be as tight as ONNX Runtime. TensorRT 10.0 or newer; 10.9 or newer with the
pgb::GroupedLinear plugin (plugins/trt_plugin.py). Never run where this project is
developed (no TensorRT, no GPU): see BENCHMARKS.md for what has been verified.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


MIN_TENSORRT = (10, 0)
MIN_TENSORRT_PLUGIN = (10, 9)  # tensorrt.plugin's aot_impl, KernelLaunchParams, SymIntExprs


class TensorRTUnavailable(RuntimeError):
    """TensorRT or polygraphy does not import, is too old, or no CUDA GPU is visible."""


class EngineBuildError(RuntimeError):
    """TensorRT refused the graph, failed to build, or failed to run the engine."""


@dataclass(frozen=True)
class EngineSpec:
    precision: str  # "fp16" | "fp32" | "int8" (from the QDQ graph: int8 exactly where its Q/DQ nodes say)
    max_batch: int
    max_seq: int
    opt_batch: int
    opt_seq: int

    def parity_shapes(self, batch_sizes=(1, 4, 16), lengths=(16, 64, 128)) -> tuple[list[int], list[int]]:
        """The parity check's batch sizes and lengths that lie inside this profile (TensorRT
        refuses any other shape), the profile's maximum standing in when none does."""
        return ([b for b in batch_sizes if b <= self.max_batch] or [self.max_batch],
                [n for n in lengths if n <= self.max_seq] or [self.max_seq])


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def require_tensorrt(plugin: bool = False):
    """The tensorrt module, or TensorRTUnavailable with the reason in one line."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("--trt needs TensorRT (`pip install -e '.[trt]'`) and an NVIDIA GPU: "
                                  "tensorrt does not import here") from None
    need = MIN_TENSORRT_PLUGIN if plugin else MIN_TENSORRT
    if _version(trt.__version__) < need:
        raise TensorRTUnavailable(f"--trt{' --plugin' if plugin else ''} needs TensorRT "
                                  f"{'.'.join(map(str, need))} or newer; this is {trt.__version__}")
    try:
        import polygraphy  # noqa: F401
    except ImportError:
        raise TensorRTUnavailable("--trt builds engines through polygraphy: `pip install -e '.[trt]'`") from None
    import torch
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("--trt needs a CUDA GPU; torch sees none")
    return trt


def default_timing_cache(cache_dir: Path) -> Path:
    """One cache per GPU model and TensorRT version: a cache from another GPU would be
    refused, and the build would time every tactic again."""
    import tensorrt as trt
    import torch
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(0)).strip("-")
    return cache_dir / f"trt-{trt.__version__}-{gpu}.cache"


def _load_plugin(plugin: bool) -> None:
    if plugin:
        import plugins.trt_plugin  # noqa: F401  registers pgb::GroupedLinear


def build(onnx_bytes: bytes, spec: EngineSpec, timing_cache: Path, plugin: bool = False) -> tuple[bytes, dict]:
    trt = require_tensorrt(plugin)
    import torch
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxBytes, Profile
    from polygraphy.exception import PolygraphyException

    _load_plugin(plugin)
    import onnx
    profile = Profile()
    for name in (i.name for i in onnx.load_from_string(onnx_bytes).graph.input):
        profile.add(name, min=(1, 1), opt=(spec.opt_batch, spec.opt_seq), max=(spec.max_batch, spec.max_seq))
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    config = CreateConfig(tf32=False, profiles=[profile],
                          load_timing_cache=str(timing_cache) if timing_cache.is_file() else None)
    network = NetworkFromOnnxBytes(onnx_bytes, strongly_typed=True)
    try:
        engine = EngineBytesFromNetwork(network, config=config, save_timing_cache=str(timing_cache))()
    except PolygraphyException as e:
        raise EngineBuildError(f"TensorRT could not build the engine: {str(e).strip().splitlines()[0]}") from None
    props = torch.cuda.get_device_properties(0)
    info = {"tensorrt": trt.__version__, "gpu": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "plugin": plugin, "timing_cache": str(timing_cache), **asdict(spec),
            "profile": {"min": [1, 1], "opt": [spec.opt_batch, spec.opt_seq], "max": [spec.max_batch, spec.max_seq]}}
    return bytes(memoryview(engine)), info


@contextlib.contextmanager
def open_engine(plan: bytes, plugin: bool = False) -> Iterator[Callable[[dict[str, np.ndarray]], np.ndarray]]:
    """A function feeds -> {output name: array} over the deserialised engine, for as long as
    the block runs."""
    require_tensorrt(plugin)
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.exception import PolygraphyException

    _load_plugin(plugin)
    try:
        with TrtRunner(EngineFromBytes(plan)) as runner:
            yield lambda feeds: {k: np.array(v) for k, v in runner.infer(feeds).items()}
    except PolygraphyException as e:
        raise EngineBuildError(f"TensorRT could not run the engine: {str(e).strip().splitlines()[0]}") from None
