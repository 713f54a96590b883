"""The Triton repository: config parsed by Triton's own protobuf, and served by a real
tritonserver on loopback, answering over HTTP and gRPC with the logits of local ONNX Runtime."""
import json
import subprocess
import sys

import numpy as np
import pytest

from pgb_export.triton import ModelConfig, Tensor, TritonConfigError, engine_notes, parse_config, write_repository
from pruning.heads import HEADS, QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION
from tests.conftest import ROOT, needs_shared

VENV = ROOT / ".venv-triton"


def test_config_parses_as_triton_model_config():
    ids = tuple(Tensor(n, "INT64", (-1,)) for n in ("input_ids", "attention_mask", "token_type_ids"))
    text = ModelConfig("m", ids, (Tensor("logits", "FP32", (3,)),), 16, "onnxruntime").text()
    cfg = parse_config(text)
    assert cfg.backend == "onnxruntime" and cfg.max_batch_size == 16
    assert [i.name for i in cfg.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(list(i.dims) == [-1] and i.data_type == 9 for i in cfg.input)  # TYPE_INT64
    assert list(cfg.output[0].dims) == [3] and cfg.output[0].data_type == 11  # TYPE_FP32
    assert cfg.HasField("dynamic_batching")
    with pytest.raises(TritonConfigError, match="does not parse"):
        parse_config(text.replace("max_batch_size", "max_batch_sizes"))


def test_engine_model_states_what_serving_it_needs(tmp_path):
    """The tensorrt_plan model's config carries the TensorRT version, GPU and profile of its
    build.json as comments, and still parses as Triton's ModelConfig."""
    from types import SimpleNamespace
    build = {"tensorrt": "10.13.3.9", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
             "max_batch": 32, "max_seq": 128, "plugin": True}
    written = write_repository(tmp_path, b"engine", SimpleNamespace(num_labels=2, model_type="bert", id2label={0: "no", 1: "yes"}),
                               SEQUENCE_CLASSIFICATION, 32, "tensorrt",
                               "pgb_bert_trt",
                               engine_notes(build))
    text = (tmp_path / "pgb_bert_trt" / "config.pbtxt").read_text()
    cfg = parse_config(text)
    assert cfg.backend == "tensorrt" and cfg.instance_group[0].kind == 1  # KIND_GPU
    assert (tmp_path / "pgb_bert_trt" / "1" / "model.plan").read_bytes() == b"engine"
    comments = [line for line in text.splitlines() if line.startswith("# ")]
    assert "exactly 10.13.3.9" in comments[1] and "compute capability 9.0" in comments[0]
    assert "sequence 1..128" in comments[2] and "AOT plugin" in comments[3] and "not verified" in comments[3]
    assert written["notes"] == [c[2:] for c in comments]
    build["plugin"] = False
    assert len(engine_notes(build)) == 3


@needs_shared
@pytest.mark.skipif(not VENV.is_dir(), reason=".venv-triton missing: run scripts/setup.sh")
def test_real_tritonserver_serves_the_export(pruned_sst2, tmp_path):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from transformers import AutoTokenizer

    from pgb_export.exporter import session
    from pgb_export.triton_server import TritonServer

    out = tmp_path / "deploy"
    r = subprocess.run([sys.executable, "-m", "pgb_export.export_cli", str(pruned_sst2), "--out", str(out),
                        "--triton", "--triton-backend", "python", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "report.json").read_text())["triton"][0]["backend"] == "python"
    repo = out / "triton"
    local = session((repo / "pgb_bert" / "1" / "model.onnx").read_bytes())
    tok = AutoTokenizer.from_pretrained(out / "onnx")
    enc = tok(["a charming and often affecting journey .", "bleak and desperate"], padding=True, return_tensors="np")
    feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    want = local.run(None, feeds)[0]

    with TritonServer(repo, VENV) as server:
        for module, url in ((httpclient, server.http_url), (grpcclient, server.grpc_url)):
            client = module.InferenceServerClient(url=url)
            assert client.is_model_ready("pgb_bert")
            inputs = []
            for name, value in feeds.items():
                t = module.InferInput(name, list(value.shape), "INT64")
                t.set_data_from_numpy(value)
                inputs.append(t)
            got = client.infer("pgb_bert", inputs).as_numpy("logits")
            # same file, same ONNX Runtime, same threads: identical up to the last bit or two
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        pid = server.process.pid
    assert server.process.poll() is not None, f"tritonserver {pid} still running"


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.name)
def test_repository_models_for_every_backend(tmp_path, head):
    """Every backend x family x head: the config parses, with the family's inputs and the
    head's outputs (logits per label; start and end logits per token)."""
    from types import SimpleNamespace

    for backend, name, file, family in (("onnxruntime", "a", "model.onnx", "bert"), ("python", "b", "model.onnx", "roberta"),
                                        ("tensorrt", "c", "model.plan", "distilbert")):
        info = write_repository(tmp_path, b"bytes", SimpleNamespace(num_labels=2, model_type=family, id2label={0: "no", 1: "yes"}), head, 16,
                                backend, name)
        assert info["backend"] == backend and (tmp_path / name / "1" / file).read_bytes() == b"bytes"
        parsed = parse_config((tmp_path / name / "config.pbtxt").read_text())
        assert parsed.instance_group[0].kind == {"onnxruntime": 0, "python": 2, "tensorrt": 1}[backend]  # AUTO, CPU, GPU
        # the family's inputs: RoBERTa and DistilBERT graphs take no token_type_ids
        assert [i.name for i in parsed.input] == ["input_ids", "attention_mask"] + ["token_type_ids"] * (family == "bert")
        assert [(o.name, list(o.dims)) for o in parsed.output] == (
            [("start_logits", [-1]), ("end_logits", [-1])] if head is QUESTION_ANSWERING else [("logits", [2])])
    assert (tmp_path / "b" / "1" / "model.py").is_file()


def test_missing_tritonclient_is_one_line_and_writes_nothing(tmp_path):
    """Without tritonclient's grpc extra (its import raises RuntimeError), --triton says which
    extra to install, before any work, and writes nothing."""
    from tests.test_optimum import tiny
    from transformers import AutoTokenizer
    from pruning import modeldir
    tok = AutoTokenizer.from_pretrained(modeldir.embedded_encoder())
    tiny("bert", len(tok), tok.pad_token_id).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    code = ("import sys; sys.modules['grpc'] = None; from pgb_export import export_cli; "
            f"sys.exit(export_cli.main([{str(tmp_path / 'model')!r}, '--out', {str(tmp_path / 'deploy')!r}, '--triton']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "pip install 'tritonclient[grpc]'" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "deploy").exists() and not list(tmp_path.glob(".deploy*"))


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.name)
@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_text_models_for_every_family_and_head(tmp_path, family, head):
    """Raw-text models: every config parses as Triton's ModelConfig; classifiers get the
    pgb_text ensemble (text, optional text_pair -> label, scores) over the family's inputs,
    QA models pgb_qa (question, context -> answer, score); each model directory holds what
    its model.py loads."""
    from types import SimpleNamespace

    from pgb_export.triton import write_text_models
    from pruning import modeldir
    (tmp_path / "tok").write_bytes((modeldir.embedded_encoder() / "tokenizer.json").read_bytes())
    cfg = SimpleNamespace(num_labels=3, model_type=family, id2label={0: "a", 1: "b", 2: "c"})
    written = write_text_models(tmp_path / "repo", tmp_path / "tok", cfg, head, 16, 128, 0, "[PAD]")
    configs = {w["model"]: parse_config((tmp_path / "repo" / w["model"] / "config.pbtxt").read_text()) for w in written}
    inputs = ["input_ids", "attention_mask"] + ["token_type_ids"] * (family == "bert")
    if head is QUESTION_ANSWERING:
        assert list(configs) == ["pgb_qa"]
        qa = configs["pgb_qa"]
        assert [i.name for i in qa.input] == ["question", "context"] and [o.name for o in qa.output] == ["answer", "score"]
        assert json.loads(qa.parameters["model_inputs"].string_value) == inputs
        assert {p.name for p in (tmp_path / "repo" / "pgb_qa" / "1").iterdir()} == {
            "model.py", "textio.py", "spans.py", "tokenizer.json"}
    else:
        text = configs["pgb_text"]
        assert text.platform == "ensemble" and text.max_batch_size == 16
        assert [(i.name, i.optional) for i in text.input] == [("text", False), ("text_pair", True)]
        assert [(o.name, list(o.dims)) for o in text.output] == [("label", [1]), ("scores", [3])]
        steps = text.ensemble_scheduling.step
        assert [s.model_name for s in steps] == ["pgb_tokenize", "pgb_bert", "pgb_postprocess"]
        assert sorted(steps[1].input_map) == sorted(inputs) and [o.name for o in configs["pgb_tokenize"].output] == inputs
        assert json.loads(configs["pgb_postprocess"].parameters["labels"].string_value) == ["a", "b", "c"]
