"""Raw text in, labels out: the export's Triton repository served by a real tritonserver (the
nvidia-pytriton wheel's, python backend standing in for onnxruntime) on loopback. Answers
must equal local ONNX Runtime's; bad requests get errors and the server keeps answering; a
bounded load run has no failure; the deploy README's curl request gets the README's answer."""
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from pgb_export.triton_server import TritonServer
from scripts.bench_triton_load import SENTENCES, expected_labels, run_load
from tests.conftest import ROOT, needs_shared

VENV = ROOT / ".venv-triton"
pytestmark = pytest.mark.skipif(not VENV.is_dir(), reason=".venv-triton missing: run scripts/setup.sh")


def export(model_dir, out, *flags):
    r = subprocess.run([sys.executable, "-m", "pgb_export.export_cli", str(model_dir), "--out", str(out), "--triton",
                        "--triton-backend", "python", "--quiet", *flags], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def post(server, model: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://{server.http_url}/v2/models/{model}/infer", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def text_request(*texts, name="text", datatype="BYTES") -> bytes:
    return json.dumps({"inputs": [{"name": name, "shape": [len(texts), 1], "datatype": datatype,
                                   "data": list(texts)}]}).encode()


def readme_request(deploy) -> tuple[str, bytes, dict]:
    """(model, body, expected answers) as the deploy README states them."""
    text = (deploy / "README.md").read_text()
    model, body = re.search(r"curl -s localhost:8000/v2/models/(\w+)/infer -d '(.*)'\n", text).groups()
    expected = dict(re.findall(r"^- `(\w+)`: (.*)$", text.split("answers (computed")[1], re.M))
    return model, body.replace("'\\''", "'").encode(), {k: json.loads(v) for k, v in expected.items()}


@pytest.fixture(scope="module")
def served(pruned_sst2, tmp_path_factory):
    deploy = export(pruned_sst2, tmp_path_factory.mktemp("serve") / "deploy", "--task", "sst2")
    with TritonServer(deploy / "triton", VENV) as server:
        yield deploy, server


@needs_shared
def test_text_ensemble_labels_equal_onnx_runtime(served):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    deploy, server = served
    want = expected_labels(deploy, SENTENCES)
    assert set(want) <= {"negative", "positive"}
    for module, url in ((httpclient, server.http_url), (grpcclient, server.grpc_url)):
        client = module.InferenceServerClient(url=url)
        assert client.is_model_ready("pgb_text")
        inp = module.InferInput("text", [len(SENTENCES), 1], "BYTES")
        inp.set_data_from_numpy(np.array([[s.encode()] for s in SENTENCES], dtype=np.object_))
        result = client.infer("pgb_text", [inp])
        assert [v[0].decode() for v in result.as_numpy("label")] == want  # empty and 600-word texts included
        scores = result.as_numpy("scores")
        assert scores.shape == (len(SENTENCES), 2) and np.allclose(scores.sum(1), 1, atol=1e-5)


@needs_shared
def test_readme_curl_request_gets_the_readme_answer(served):
    deploy, server = served
    model, body, expected = readme_request(deploy)
    assert model == "pgb_text" and json.loads(body)["inputs"][0]["name"] == "text"
    status, answer = post(server, model, body)
    assert status == 200, answer
    got = {o["name"]: o["data"] for o in answer["outputs"]}
    assert got["label"] == [expected["label"]]


@needs_shared
def test_bad_requests_get_errors_and_the_server_keeps_answering(served):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException
    deploy, server = served
    good = text_request("a charming film")
    bad = {"wrong dtype": text_request(1, 2, datatype="INT64"),
           "wrong input name": text_request("a charming film", name="txt"),
           "missing input": json.dumps({"inputs": []}).encode(),
           "batch above max_batch_size": text_request(*["film"] * 33),
           "not JSON": b"{inputs",
           "wrong shape": json.dumps({"inputs": [{"name": "text", "shape": [1, 2], "datatype": "BYTES",
                                                  "data": ["a", "b"]}]}).encode()}
    for what, body in bad.items():
        status, answer = post(server, "pgb_text", body)
        # INVALID_ARGUMENT is HTTP 400; Triton answers a body it cannot parse with 500
        assert status == (500 if what == "not JSON" else 400) and answer.get("error"), (what, status, answer)
        status, answer = post(server, "pgb_text", good)
        assert status == 200, (what, answer)
    # invalid UTF-8 can only be sent as raw bytes: over gRPC
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    inp = grpcclient.InferInput("text", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b"caf\xe9 \xff"]], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="not valid UTF-8"):
        client.infer("pgb_text", [inp])
    ok = grpcclient.InferInput("text", [1, 1], "BYTES")
    ok.set_data_from_numpy(np.array([[b"a charming film"]], dtype=np.object_))
    assert client.infer("pgb_text", [ok]).as_numpy("label")[0][0] in (b"negative", b"positive")


@needs_shared
def test_label_file_answers_the_classification_extension(served):
    import tritonclient.http as httpclient
    from transformers import AutoTokenizer
    deploy, server = served
    assert (deploy / "triton" / "pgb_bert" / "labels.txt").read_text() == "negative\npositive\n"
    config = (deploy / "triton" / "pgb_bert" / "config.pbtxt").read_text()
    assert 'label_filename: "labels.txt"' in config and "model_warmup" in config
    tok = AutoTokenizer.from_pretrained(deploy / "onnx")
    enc = tok(["a charming film"], return_tensors="np")
    client = httpclient.InferenceServerClient(url=server.http_url)
    inputs = []
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        t = httpclient.InferInput(name, list(enc[name].shape), "INT64")
        t.set_data_from_numpy(enc[name].astype(np.int64))
        inputs.append(t)
    top = client.infer("pgb_bert", inputs, outputs=[httpclient.InferRequestedOutput("logits", class_count=1)])
    score, index, label = top.as_numpy("logits")[0][0].decode().split(":")
    assert label == expected_labels(deploy, ["a charming film"])[0] and index == str(["negative", "positive"].index(label))
    # one copy of the model on disk: the repository's model.onnx and tokenizer.json are links
    # to onnx/'s, and the text models hold no model of their own
    assert len(list((deploy / "triton").rglob("model.onnx"))) == 1
    assert (deploy / "triton" / "pgb_bert" / "1" / "model.onnx").samefile(deploy / "onnx" / "model.onnx")
    assert (deploy / "triton" / "pgb_tokenize" / "1" / "tokenizer.json").samefile(deploy / "onnx" / "tokenizer.json")


@needs_shared
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bounded_load_has_no_failure(served, protocol):
    deploy, server = served
    row = run_load(server, protocol, 4, 48, SENTENCES, expected_labels(deploy, SENTENCES))
    assert row["requests"] == 48 and row["errors"] == 0, row["first_error"]


def test_qa_model_answers_like_the_export(tmp_path):
    """pgb_qa: question + context in, the span the export decodes locally out (the deploy
    README's request and answer), also over gRPC."""
    from types import SimpleNamespace

    import tritonclient.grpc as grpcclient

    from pgb_export.exporter import runner, serving_example, session
    from pruning import modeldir
    from pruning.heads import QUESTION_ANSWERING
    from pruning.squad import QAExample, windows
    from tests.test_reliability import sentences
    torch.manual_seed(0)
    model, tok = modeldir.load(modeldir.embedded_encoder(), num_labels=2, new_head=QUESTION_ANSWERING)
    model.save_pretrained(tmp_path / "qa")
    modeldir.save_tokenizer(tok, tmp_path / "qa")
    deploy = export(tmp_path / "qa", tmp_path / "deploy", "--max-len", "64")
    model_name, body, expected = readme_request(deploy)
    assert model_name == "pgb_qa"
    with TritonServer(deploy / "triton", VENV) as server:
        status, answer = post(server, "pgb_qa", body)
        assert status == 200, answer
        got = {o["name"]: o["data"][0] for o in answer["outputs"]}
        assert got["answer"] == expected["answer"] and got["score"] == pytest.approx(expected["score"], abs=1e-3)
        # a context of many windows (64 tokens each), over gRPC, against the export's own decoding
        long = QAExample("1", "who went to the market ?", " ".join(sentences(40, 7)) + " the old baker went to the "
                         "market on sunday . " + " ".join(sentences(40, 8)), (), ())
        local = serving_example(model, tok, runner(session((deploy / "onnx" / "model.onnx").read_bytes())),
                                SimpleNamespace(examples=[long]), 64, "pgb_qa")
        assert len(windows(tok, [long], 64, 128, ("input_ids",), train=False)) > 3
        client = grpcclient.InferenceServerClient(url=server.grpc_url)
        inputs = []
        for name, value in local["inputs"].items():
            t = grpcclient.InferInput(name, [1, 1], "BYTES")
            t.set_data_from_numpy(np.array([[value.encode()]], dtype=np.object_))
            inputs.append(t)
        result = client.infer("pgb_qa", inputs)
        assert result.as_numpy("answer")[0][0].decode() == local["expected"]["answer"]
        assert float(result.as_numpy("score")[0][0]) == pytest.approx(local["expected"]["score"], abs=1e-3)
        status, answer = post(server, "pgb_qa", text_request("only a question", name="question"))
        assert status == 400, answer  # no context
