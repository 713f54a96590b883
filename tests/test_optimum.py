"""Our onnx/ as a Hugging Face user loads it: optimum's ORTModelFor... class of the head and
the transformers pipeline, in .venv-optimum (transformers 4.57: optimum-onnx pins < 4.58),
for every family and head. Their outputs equal our own ONNX Runtime session's, their
tokenizer gives our ids, and the pipeline answers with the model's label names (or, for
question answering, with a span of the context)."""
import json
import subprocess

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, DistilBertConfig,
                          DistilBertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification)

from pgb_export import export_cli
from pruning import modeldir
from tests.conftest import ROOT
from tests.test_question_answering import tiny_qa
from tests.test_reliability import call

VENV = ROOT / ".venv-optimum"
SENTENCES = ["a charming and often affecting journey .", "unflinchingly bleak and desperate", "slow"]
NAMES = {0: "negative", 1: "positive"}


def tiny(name: str, vocab: int, pad: int):
    torch.manual_seed(0)
    labels = dict(num_labels=2, id2label=NAMES, label2id={v: k for k, v in NAMES.items()})
    if name == "bert":
        return BertForSequenceClassification(BertConfig(vocab_size=vocab, hidden_size=48, num_hidden_layers=2,
                                                        num_attention_heads=4, intermediate_size=96, **labels))
    if name == "roberta":
        return RobertaForSequenceClassification(RobertaConfig(
            vocab_size=vocab, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
            max_position_embeddings=130, pad_token_id=pad, type_vocab_size=1, **labels))
    return DistilBertForSequenceClassification(DistilBertConfig(vocab_size=vocab, dim=48, n_layers=2, n_heads=4,
                                                                hidden_dim=96, **labels))


@pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason=".venv-optimum missing: run scripts/setup.sh")
@pytest.mark.parametrize("head", ["text-classification", "question-answering"])
@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert"])
def test_optimum_and_pipeline_load_our_onnx(name, head, tmp_path):
    tok = AutoTokenizer.from_pretrained(modeldir.embedded_encoder())
    qa = head == "question-answering"
    model = tiny_qa(name, len(tok), tok.pad_token_id, 128) if qa else tiny(name, len(tok), tok.pad_token_id)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    code, err = call(export_cli, str(tmp_path / "model"), "--out", str(tmp_path / "deploy"))
    assert code == 0, err
    onnx_dir = tmp_path / "deploy" / "onnx"
    pairs = [(q, SENTENCES[(i + 1) % 3]) for i, q in enumerate(SENTENCES)]
    texts = [f"{q}|{c}" for q, c in pairs] if qa else SENTENCES
    r = subprocess.run([str(VENV / "bin" / "python"), str(ROOT / "scripts" / "optimum_check.py"), str(onnx_dir),
                        *texts], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    enc = (tok([q for q, _ in pairs], [c for _, c in pairs], padding=True, return_tensors="np") if qa
           else tok(SENTENCES, padding=True, return_tensors="np"))
    assert got["tokens"] == enc["input_ids"].tolist()
    sess = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    mine = sess.run(None, {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()})
    assert got["inputs"] == [i.name for i in sess.get_inputs()]
    assert list(got["outputs"]) == [o.name for o in sess.get_outputs()]
    for theirs, ours in zip(got["outputs"].values(), mine):
        np.testing.assert_allclose(np.array(theirs), ours, atol=1e-6)
    if qa:
        assert all(a and a in c for a, (_, c) in zip(got["answers"], pairs)), got["answers"]
    else:
        assert got["labels"] == [NAMES[int(i)] for i in mine[0].argmax(-1)]
