"""TensorRT engines from the exported ONNX graph, and inference with them for parity.

Strongly typed networks: the precision is the ONNX graph's own (fp16 export for fp16
engines), so TensorRT never picks a lower precision on its own; fp32 engines also clear
TF32, to be as tight as ONNX Runtime. Written against the TensorRT 10 Python API; it could
not be run where this project is developed (no TensorRT, no GPU), see the closing notes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .bert_io import BERT_IO


class TensorRTUnavailable(RuntimeError):
    """TensorRT does not import, or no CUDA GPU is visible."""


class EngineBuildError(RuntimeError):
    """TensorRT refused the graph or failed to build."""


@dataclass(frozen=True)
class EngineSpec:
    precision: str  # "fp16" | "fp32"
    max_batch: int
    max_seq: int
    opt_batch: int
    opt_seq: int


def require_tensorrt():
    """The tensorrt module, or TensorRTUnavailable with the reason in one line."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("--trt needs TensorRT (`pip install tensorrt`) and an NVIDIA GPU: "
                                  "tensorrt does not import here") from None
    import torch
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("--trt needs a CUDA GPU; torch sees none")
    return trt


def build(onnx_bytes: bytes, spec: EngineSpec, timing_cache: Path, plugin: bool = False) -> tuple[bytes, dict]:
    trt = require_tensorrt()
    import torch
    if plugin:
        import plugins.trt_plugin  # noqa: F401  registers pgb::GroupedLinear
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT's ONNX parser refused the graph: {errors}")
    config = builder.create_builder_config()
    if spec.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for name in BERT_IO.inputs:
        profile.set_shape(name, (1, 1), (spec.opt_batch, spec.opt_seq), (spec.max_batch, spec.max_seq))
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError("TensorRT failed to build the engine (see its log above)")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    props = torch.cuda.get_device_properties(0)
    info = {"tensorrt": trt.__version__, "gpu": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "plugin": plugin, "timing_cache": str(timing_cache), **asdict(spec),
            "profile": {"min": [1, 1], "opt": [spec.opt_batch, spec.opt_seq], "max": [spec.max_batch, spec.max_seq]}}
    return bytes(memoryview(plan)), info


class EngineRunner:
    """Runs a serialized engine on CUDA tensors; used by the parity check."""

    def __init__(self, plan: bytes, plugin: bool = False):
        trt = require_tensorrt()
        if plugin:
            import plugins.trt_plugin  # noqa: F401
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch
        keep = {}
        for name, value in feeds.items():
            keep[name] = torch.from_numpy(np.ascontiguousarray(value)).cuda()
            self.context.set_input_shape(name, tuple(value.shape))
            self.context.set_tensor_address(name, keep[name].data_ptr())
        out = torch.empty(tuple(self.context.get_tensor_shape(BERT_IO.output)), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(BERT_IO.output, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineBuildError("TensorRT execution failed")
        stream.synchronize()
        return out.cpu().numpy()
