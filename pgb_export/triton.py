"""A Triton Inference Server model repository for the exported model.

    triton/pgb_bert/        token ids in, the head's outputs out (model.onnx; labels.txt for
                            classifiers, so that the classification extension answers with names)
    triton/pgb_text/        classifiers: raw text in, label and scores out, an ensemble of
    triton/pgb_tokenize/      the export's tokenizer (python backend),
    triton/pgb_postprocess/   pgb_bert and a softmax + id2label step (python backend)
    triton/pgb_qa/          question answering: question + context in, answer and score out
                            (python backend: windows, pgb_bert through BLS, span decoding)

Every config.pbtxt is parsed into Triton's own ModelConfig protobuf (tritonclient) before it
is written.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pruning.families import family
from pruning.heads import QUESTION_ANSWERING, Head
from pruning.squad import MAX_QUESTION_TOKENS, QATask

FILES = {"onnxruntime": "model.onnx", "python": "model.onnx", "tensorrt": "model.plan"}
PYTHON_MODELS = Path(__file__).parent / "triton_python"
SPANS = Path(__file__).parents[1] / "pruning" / "spans.py"
WARMUP_TOKENS = 16


class TritonConfigError(ValueError):
    """The generated config.pbtxt does not parse as a Triton ModelConfig."""


def require_tritonclient() -> None:
    """Writing a repository validates every config with tritonclient's protobuf: say which
    extra to install before any work, instead of failing after it."""
    try:
        from google.protobuf import text_format  # noqa: F401
        from tritonclient.grpc import model_config_pb2  # noqa: F401
    except (ImportError, RuntimeError):  # tritonclient without its grpc extra raises RuntimeError
        raise TritonConfigError("--triton validates the Triton configs with tritonclient: "
                                "pip install 'tritonclient[grpc]'") from None


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton's TYPE_* name without the prefix: INT64, FP32, STRING
    dims: tuple[int, ...]
    optional: bool = False
    label_filename: str | None = None

    def text(self) -> str:
        extra = (" optional: true" if self.optional else "") + (
            f' label_filename: "{self.label_filename}"' if self.label_filename else "")
        return f'  {{ name: "{self.name}" data_type: TYPE_{self.dtype} dims: [ {", ".join(map(str, self.dims))} ]{extra} }}'


@dataclass(frozen=True)
class ModelConfig:
    """The parts of a config.pbtxt we write; `text()` renders it."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    max_batch: int
    backend: str | None = None  # None for an ensemble
    instance_kind: str = "KIND_AUTO"
    batching: bool = True  # dynamic batching
    queue_delay_us: int = 1000
    parameters: dict = field(default_factory=dict)
    warmup: bool = False  # one all-zero request of WARMUP_TOKENS tokens at load
    steps: tuple[tuple[str, dict, dict], ...] = ()  # ensemble: (model, input_map, output_map)
    notes: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [f"# {line}" for line in self.notes] + [f'name: "{self.name}"']
        lines.append(f'backend: "{self.backend}"' if self.backend else 'platform: "ensemble"')
        lines += [f"max_batch_size: {self.max_batch}",
                  "input [\n" + ",\n".join(t.text() for t in self.inputs) + "\n]",
                  "output [\n" + ",\n".join(t.text() for t in self.outputs) + "\n]"]
        if self.steps:
            steps = []
            for model, inputs, outputs in self.steps:
                maps = [f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
                maps += [f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
                steps.append(f'  {{ model_name: "{model}" model_version: -1 ' + " ".join(maps) + " }")
            lines.append("ensemble_scheduling {\n step [\n" + ",\n".join(steps) + "\n ]\n}")
            return "\n".join(lines) + "\n"
        if self.batching:
            lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {self.queue_delay_us} }}")
        lines.append(f"instance_group [ {{ count: 1 kind: {self.instance_kind} }} ]")
        for key, value in self.parameters.items():
            lines.append(f'parameters {{ key: "{key}" value: {{ string_value: {json.dumps(str(value))} }} }}')
        if self.warmup:
            inputs = " ".join(f'inputs {{ key: "{t.name}" value: {{ data_type: TYPE_{t.dtype} dims: [ {WARMUP_TOKENS} ] '
                              f"zero_data: true }} }}" for t in self.inputs)
            lines.append(f'model_warmup [ {{ name: "zeros" batch_size: 1 {inputs} }} ]')
        return "\n".join(lines) + "\n"


def parse_config(text: str):
    """Triton's ModelConfig message, or TritonConfigError."""
    require_tritonclient()
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2
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


def _write(root: Path, config: ModelConfig, files: dict[str, bytes | Path]) -> dict:
    """config.pbtxt (parsed first) and the version directory's files: bytes are written, a
    Path inside the deploy directory is hard-linked (one copy on disk, and the repository
    still works when mounted alone), any other Path copied."""
    text = config.text()
    parsed = parse_config(text)
    version = root / config.name / "1"
    version.mkdir(parents=True)
    (root / config.name / "config.pbtxt").write_text(text)
    for rel, content in files.items():
        target = (root / config.name / rel) if rel == "labels.txt" else version / rel
        if isinstance(content, Path):
            try:
                if not content.is_relative_to(root.parent):
                    raise OSError("outside the deploy directory")
                os.link(content, target)
            except OSError:
                shutil.copy(content, target)
        else:
            target.write_bytes(content)
    return {"model": config.name, "backend": parsed.backend or parsed.platform, "max_batch_size": parsed.max_batch_size,
            "path": f"triton/{config.name}", **({"notes": list(config.notes)} if config.notes else {})}


def _class_names(model_config) -> list[str]:
    return [str(model_config.id2label[i]) for i in range(model_config.num_labels)] if model_config.num_labels > 1 else []


def write_repository(root: Path, model: bytes | Path, model_config, head: Head, max_batch: int,
                     backend: str = "onnxruntime", name: str = "pgb_bert", notes: tuple[str, ...] = (),
                     batching: bool = True) -> dict:
    """The token-ids model (model.onnx, or model.plan for the tensorrt backend); returns what
    was written, for report.json."""
    kind = {"python": "KIND_CPU", "tensorrt": "KIND_GPU"}.get(backend, "KIND_AUTO")
    names = _class_names(model_config) if head is not QUESTION_ANSWERING else []
    outputs = tuple(Tensor(n, "FP32", tuple(head.output_dims(model_config.num_labels)),
                           label_filename="labels.txt" if names else None) for n in head.outputs)
    inputs = tuple(Tensor(n, "INT64", (-1,)) for n in family(model_config).inputs)
    config = ModelConfig(name, inputs, outputs, max_batch, backend, kind, batching, warmup=True, notes=notes)
    files = {FILES[backend]: model}
    if backend == "python":
        files["model.py"] = PYTHON_MODELS / "model.py"
    if names:
        files["labels.txt"] = "".join(f"{n}\n" for n in names).encode()
    return _write(root, config, files)


def write_text_models(root: Path, tokenizer_json: Path, model_config, head: Head, max_batch: int, max_len: int,
                      pad_id: int, pad_token: str, allow_no_answer: bool = False, doc_stride: int = QATask.doc_stride,
                      max_question_tokens: int = MAX_QUESTION_TOKENS, batching: bool = True) -> list[dict]:
    """The raw-text models in front of pgb_bert: the pgb_text ensemble for classifiers, pgb_qa
    for question answering. max_len is the export's truncation (and profile)."""
    inputs = family(model_config).inputs
    common = {"tokenizer.json": tokenizer_json, "textio.py": PYTHON_MODELS / "textio.py"}
    params = {"max_len": max_len, "pad_id": pad_id, "pad_token": pad_token}
    strings = lambda *names, optional=(): tuple(Tensor(n, "STRING", (1,), n in optional) for n in names)
    if head is QUESTION_ANSWERING:
        qa = ModelConfig("pgb_qa", strings("question", "context"), (*strings("answer"), Tensor("score", "FP32", (1,))),
                         max_batch, "python", "KIND_CPU", batching,
                         parameters={**params, "doc_stride": doc_stride, "max_question_tokens": max_question_tokens,
                                     "allow_no_answer": str(allow_no_answer).lower(), "model_max_batch": max_batch,
                                     "model_inputs": json.dumps(list(inputs))})
        return [_write(root, qa, {**common, "model.py": PYTHON_MODELS / "answer.py", "spans.py": SPANS})]
    ids = tuple(Tensor(n, "INT64", (-1,)) for n in inputs)
    n_scores = model_config.num_labels
    tokenize = ModelConfig("pgb_tokenize", strings("text", "text_pair", optional=("text_pair",)), ids, max_batch,
                           "python", "KIND_CPU", batching, parameters=params)
    post = ModelConfig("pgb_postprocess", (Tensor("logits", "FP32", (n_scores,)),),
                       (*strings("label"), Tensor("scores", "FP32", (n_scores,))), max_batch, "python", "KIND_CPU",
                       batching, parameters={"labels": json.dumps(_class_names(model_config))})
    ensemble = ModelConfig(
        "pgb_text", strings("text", "text_pair", optional=("text_pair",)), post.outputs, max_batch,
        steps=(("pgb_tokenize", {"text": "text", "text_pair": "text_pair"}, {n: n for n in inputs}),
               ("pgb_bert", {n: n for n in inputs}, {"logits": "logits"}),
               ("pgb_postprocess", {"logits": "logits"}, {"label": "label", "scores": "scores"})))
    return [_write(root, tokenize, {**common, "model.py": PYTHON_MODELS / "tokenize.py"}),
            _write(root, post, {"model.py": PYTHON_MODELS / "postprocess.py"}),
            _write(root, ensemble, {})]
