"""README.md of a deployment directory: how to serve triton/ and one request with the answer
the export computed for it locally (ONNX Runtime, same tokenizer, truncation and decoding)."""
from __future__ import annotations

import json

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:<yy.mm>-py3"


def request_body(example: dict) -> str:
    """The KServe v2 JSON body of one raw-text request."""
    inputs = [{"name": k, "shape": [1, 1], "datatype": "BYTES", "data": [v]} for k, v in example["inputs"].items()]
    return json.dumps({"inputs": inputs}, ensure_ascii=False)


def _shell_quoted(text: str) -> str:
    """text inside single quotes: each ' closes, escapes and reopens."""
    return text.replace("'", "'\\''")


def readme(report: dict, example: dict | None) -> str:
    """example: {"model", "inputs", "expected"} from the export, or None without --triton."""
    lines = ["# Deployment", "", f"Exported from `{report['source']}` by pgb-export. `report.json` holds every "
             "check (parity of every output, the dev metric, the graph census).", "",
             "- `onnx/`: model.onnx with config.json and the tokenizer (ONNX Runtime, optimum).",
             f"- outputs: {', '.join(report['outputs'])}.",
             *(f"- warning: {w}." for w in report["warnings"])]
    if not example:
        return "\n".join(lines + [""])
    models = ", ".join(f"`{t['model']}` ({t['backend']})" for t in report["triton"])
    lines += [f"- `triton/`: a Triton Inference Server model repository: {models}.", "",
              "## Serve", "",
              "The text models run in Triton's python backend and need `tokenizers` (and, for a python-backend "
              "`pgb_bert`, `onnxruntime`) in the server's Python:", "",
              f"    docker run --rm -p8000:8000 -p8001:8001 -v $PWD/triton:/models {TRITON_IMAGE} \\",
              "        bash -c 'pip install tokenizers onnxruntime && tritonserver --model-repository=/models'", "",
              "Not verified here (no docker on the machines this was built on); the same repository is served by the "
              "`tritonserver` of the nvidia-pytriton wheel in pgb-export's tests.", "",
              "## Ask", "",
              f"    curl -s localhost:8000/v2/models/{example['model']}/infer -d '{_shell_quoted(request_body(example))}'",
              "",
              "answers (computed by this export with ONNX Runtime):", ""]
    lines += [f"- `{k}`: {json.dumps(v, ensure_ascii=False)}" for k, v in example["expected"].items()]
    lines += ["", "`pgb_bert` takes token ids (`input_ids`, `attention_mask`"
              + (", `token_type_ids`" if "token_type_ids" in report.get("inputs", []) else "") +
              ") for clients that tokenize themselves.", ""]
    return "\n".join(lines)
