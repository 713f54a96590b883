"""A Triton Inference Server model repository for the exported ONNX model.

    triton/<name>/config.pbtxt
    triton/<name>/1/model.onnx          (+ model.py for the python backend)

The config is validated by parsing it into Triton's own ModelConfig protobuf (tritonclient).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from pruning.families import family
from pruning.heads import Head

FILES = {"onnxruntime": "model.onnx", "python": "model.onnx", "tensorrt": "model.plan"}
MODEL_PY = Path(__file__).parent / "triton_python" / "model.py"


class TritonConfigError(ValueError):
    """The generated config.pbtxt does not parse as a Triton ModelConfig."""


def config_text(name: str, outputs: dict[str, list[int]], max_batch: int, backend: str = "onnxruntime",
                instance_kind: str = "KIND_AUTO", queue_delay_us: int = 1000, notes: tuple[str, ...] = (),
                inputs: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")) -> str:
    """config.pbtxt: batch dimension implicit (max_batch_size > 0), sequence dynamic (-1);
    outputs: name -> dims after the batch; `notes` become comment lines at the top."""
    inputs = ",\n".join(f'  {{ name: "{n}" data_type: TYPE_INT64 dims: [ -1 ] }}' for n in inputs)
    outputs = ",\n".join(f'  {{ name: "{n}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, d))} ] }}'
                          for n, d in outputs.items())
    return ("".join(f"# {line}\n" for line in notes)
            + f'name: "{name}"\nbackend: "{backend}"\nmax_batch_size: {max_batch}\n'
            f"input [\n{inputs}\n]\n"
            f"output [\n{outputs}\n]\n"
            f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n"
            f"instance_group [ {{ count: 1 kind: {instance_kind} }} ]\n")


def parse_config(text: str):
    """Triton's ModelConfig message, or TritonConfigError."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise TritonConfigError("validating the Triton config needs `pip install 'tritonclient[grpc]'`") from None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise TritonConfigError(f"config.pbtxt does not parse as a Triton ModelConfig: {e}") from None


def engine_notes(build: dict) -> tuple[str, ...]:
    """What Triton's tensorrt_plan backend needs to load a TensorRT engine of ours, from its
    build.json. The plugin claim is NVIDIA's documented AOT behaviour, not verified here."""
    notes = (f"TensorRT engine built with TensorRT {build['tensorrt']} on {build['gpu']} "
             f"(compute capability {build['compute_capability']}).",
             f"Serve it with a Triton release whose TensorRT is exactly {build['tensorrt']}, on a GPU of the "
             f"same compute capability: engines load only there.",
             f"Profile: batch 1..{build['max_batch']}, sequence 1..{build['max_seq']}; requests outside it fail.")
    if build.get("plugin"):
        notes += ("pgb::GroupedLinear runs as PTX embedded in the engine (TensorRT AOT plugin): no Python and "
                  "no plugin library are needed at serving time, per NVIDIA's docs (not verified by pgb-export).",)
    return notes


def write_repository(root: Path, model_bytes: bytes, model_config, head: Head, max_batch: int,
                     backend: str = "onnxruntime", name: str = "pgb_bert", notes: tuple[str, ...] = ()) -> dict:
    """Write one model of the repository under `root` (model.onnx, or model.plan for the
    tensorrt backend); returns what was written, for report.json."""
    kind = {"python": "KIND_CPU", "tensorrt": "KIND_GPU"}.get(backend, "KIND_AUTO")
    outputs = {n: head.output_dims(model_config.num_labels) for n in head.outputs}
    text = config_text(name, outputs, max_batch, backend, kind, notes=notes, inputs=family(model_config).inputs)
    parsed = parse_config(text)
    version = root / name / "1"
    version.mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(text)
    (version / FILES[backend]).write_bytes(model_bytes)
    if backend == "python":
        shutil.copy(MODEL_PY, version / "model.py")
    return {"model": name, "backend": parsed.backend, "max_batch_size": parsed.max_batch_size,
            "path": f"triton/{name}", **({"notes": list(notes)} if notes else {})}
