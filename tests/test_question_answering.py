"""Extractive question answering end to end: SQuAD reading and article split, windows over
long contexts, span decoding, the official EM / F1, the QA head's graph for every family
against transformers in ONNX Runtime, and pgb-prune + pgb-export as a user runs them."""
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import (AutoTokenizer, BertConfig, BertForQuestionAnswering, DistilBertConfig,
                          DistilBertForQuestionAnswering, RobertaConfig, RobertaForQuestionAnswering)

from pgb_export import export_cli, prune_cli, trt_compat
from pgb_export.bert_graph import build
from pgb_export.grouped_linear import LinearOptions
from pruning import modeldir, repermute
from pruning.spans import best_span
from pruning.squad import QAExample, QATask, f1_score, load_squad, normalize_answer, squad_metrics, windows
from pruning.tasks import DataError
from tests.test_export_graph import CASES, plan_with
from tests.test_families import FAMILIES, batches
from tests.test_reliability import assert_refused, call, sentences

CLASSES = {"bert": (BertForQuestionAnswering, BertConfig), "roberta": (RobertaForQuestionAnswering, RobertaConfig),
           "distilbert": (DistilBertForQuestionAnswering, DistilBertConfig)}


def tiny_qa(name: str, vocab: int = 120, pad: int = 0, positions: int = 64):
    torch.manual_seed(0)
    model_class, config_class = CLASSES[name]
    if name == "distilbert":
        cfg = config_class(vocab_size=vocab, dim=48, n_layers=2, n_heads=4, hidden_dim=96,
                           max_position_embeddings=positions)
    else:
        cfg = config_class(vocab_size=vocab, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=96, max_position_embeddings=positions + (pad + 1) * (name == "roberta"),
                           pad_token_id=1 if name == "roberta" and vocab == 120 else pad,
                           **({"type_vocab_size": 1} if name == "roberta" else {}))
    model = model_class(cfg)
    with torch.no_grad():  # non-zero biases, so that a dropped bias would show
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


# -- metrics and decoding --------------------------------------------------------------------

def test_official_normalisation_and_scores():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert f1_score("Broncos", "Denver Broncos") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert f1_score("", "Denver") == 0.0 and f1_score("", "") == 1.0
    examples = [QAExample("a", "q", "c", ("Denver Broncos", "Broncos"), (0, 7)),
                QAExample("b", "q", "c", ("Santa Clara",), (0,)),
                QAExample("c", "q", "c", (), ())]  # unanswerable: only "" is right
    m = squad_metrics(examples, {"a": "the Broncos", "b": "Santa Clara, California", "c": ""})
    assert m["exact"] == pytest.approx(2 / 3)  # a (matches "Broncos" after normalising) and c
    precision, recall = 2 / 3, 1.0  # b: "santa clara california" against "santa clara"
    assert m["f1"] == pytest.approx((1.0 + 2 * precision * recall / (precision + recall) + 1.0) / 3)


def test_best_span_over_windows_and_no_answer():
    context = "alpha beta gamma delta"
    offsets = [None, (0, 5), (6, 10), (11, 16), (17, 22), None]
    low = np.full(6, -5.0)
    start, end = low.copy(), low.copy()
    start[2], end[3] = 4.0, 4.0  # "beta gamma" in the second window
    windows_ = [(low, low, offsets), (start, end, offsets)]
    assert best_span(context, windows_, allow_no_answer=False) == ("beta gamma", 8.0)
    # v2.0: no answer wins when the first token outscores the best span in every window (the
    # lowest no-answer score counts, as in the usual recipe)
    assert best_span(context, windows_, allow_no_answer=True)[0] == "beta gamma"
    high = [(w[0].copy(), w[1].copy(), offsets) for w in windows_]
    for s_, e_, _ in high:
        s_[0] = e_[0] = 4.5
    assert best_span(context, high, allow_no_answer=True) == ("", 9.0)
    assert best_span(context, high, allow_no_answer=False)[0] == "beta gamma"
    backwards_start, backwards_end = low.copy(), low.copy()
    backwards_start[4], backwards_end[1] = 9.0, 9.0  # end before start is never a span
    assert best_span(context, [(backwards_start, backwards_end, offsets)], False)[0] != "delta alpha"


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(modeldir.embedded_encoder())


def _articles(n_articles: int, per_article: int, words: int = 90) -> dict:
    """A SQuAD-format file: contexts of real sentences, answers real spans of them."""
    data = []
    for a in range(n_articles):
        paragraphs = []
        for p in range(per_article):
            context = " ".join(sentences(6, seed=a * 100 + p))[:words * 6]
            word = context.split()[len(context.split()) // 2]
            start = context.index(" " + word + " ") + 1
            paragraphs.append({"context": context, "qas": [
                {"id": f"{a}-{p}", "question": f"which word comes in the middle of part {p} ?",
                 "answers": [{"text": word, "answer_start": start}]}]})
        data.append({"title": f"article {a}", "paragraphs": paragraphs})
    return {"version": "1.1", "data": data}


def test_windows_hold_every_answer(tok):
    """Long contexts become overlapping windows; training targets point at the answer's
    tokens where the window holds it, at the first token elsewhere; every example's answer
    is whole in some window."""
    squad = _articles(1, 6, words=200)
    examples = load_squad_from(squad)
    train = windows(tok, examples, 48, 16, ("input_ids", "attention_mask", "token_type_ids"), train=True)
    evaluation = windows(tok, examples, 48, 16, ("input_ids", "attention_mask", "token_type_ids"), train=False)
    assert len(train) == len(evaluation) > len(examples)  # long contexts: several windows each
    assert all(len(f["input_ids"]) <= 48 for f in train)
    found = {}
    for t, e in zip(train, evaluation):
        ex, offsets = e["example"], e["offsets"]
        s, end = t["start_positions"], t["end_positions"]
        if s == 0:
            assert end == 0
            continue
        assert ex.context[offsets[s][0]:offsets[end][1]] == ex.answers[0]
        found[ex.id] = True
    assert set(found) == {ex.id for ex in examples}


def load_squad_from(data: dict) -> list[QAExample]:
    import tempfile
    from pathlib import Path

    from pruning.squad import read_squad_json, squad_split
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "f.json").write_text(json.dumps(data))
        return squad_split(read_squad_json(Path(d) / "f.json"), "f.json").examples


def test_dev_only_folder_is_split_by_article(tmp_path, capsys):
    (tmp_path / "SQuAD").mkdir()
    (tmp_path / "SQuAD" / "dev-v1.1.json").write_text(json.dumps(_articles(5, 3)))
    splits = load_squad(QATask("squad", False), tmp_path)
    train_ids = {e.id.split("-")[0] for e in splits["train"].examples}
    dev_ids = {e.id.split("-")[0] for e in splits["dev"].examples}
    assert train_ids == {"0", "2", "4"} and dev_ids == {"1", "3"}
    assert "splitting dev-v1.1.json by article" in capsys.readouterr().err
    (tmp_path / "SQuAD" / "dev-v1.1.json").write_text(json.dumps({"data": [{"paragraphs": [
        {"context": "short", "qas": [{"id": "x", "question": "q?", "answers": [{"text": "longer than it", "answer_start": 3}]}]}]}]}))
    with pytest.raises(DataError, match="cannot be read"):
        load_squad(QATask("squad", False), tmp_path)


# -- the graph -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["dense", "all grouped", "dropped ffn1"])
@pytest.mark.parametrize("name", FAMILIES)
def test_qa_export_matches_transformers(name, case):
    """start_logits and end_logits, per token, on padded batches (pairs for BERT), within
    1e-5 of transformers, and TensorRT's parser takes the graph."""
    model = tiny_qa(name)
    plan = plan_with(model, CASES[case])
    repermute.apply_plan(model, plan)
    graph = build(model, plan, LinearOptions())
    assert [o.name for o in graph.graph.output] == ["start_logits", "end_logits"]
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    for b in batches(name):
        with torch.no_grad():
            out = model(**b)
        got = sess.run(None, {k: v.numpy() for k, v in b.items()})
        for g, want in zip(got, (out.start_logits, out.end_logits)):
            assert g.shape == tuple(want.shape)
            assert float(np.abs(g - want.numpy()).max()) <= 1e-5
    assert trt_compat.check(graph).ok, trt_compat.check(graph).problems


# -- as a user runs it -------------------------------------------------------------------------

@pytest.mark.parametrize("name", FAMILIES)
def test_prune_and_export_qa_as_a_user_runs_them(name, tok, tmp_path):
    """pgb-prune then pgb-export on a QA model of each family: BERT through --task squad on a
    SQuAD folder with only its dev file (split by article), the others through the user's own
    SQuAD-format JSON. The export's F1 equals PyTorch's, both outputs match within 1e-4,
    and the Triton config declares both outputs."""
    model = tiny_qa(name, vocab=len(tok), pad=tok.pad_token_id, positions=96)
    model.save_pretrained(tmp_path / "dense")
    tok.save_pretrained(tmp_path / "dense")
    common = ["--max-len", "64"]
    if name == "bert":
        (tmp_path / "data" / "SQuAD").mkdir(parents=True)
        (tmp_path / "data" / "SQuAD" / "dev-v1.1.json").write_text(json.dumps(_articles(4, 5)))
        data = ["--task", "squad", "--glue-dir", str(tmp_path / "data")]
        train = data
    else:
        (tmp_path / "train.json").write_text(json.dumps(_articles(2, 6)))
        (tmp_path / "dev.json").write_text(json.dumps(_articles(2, 5)))
        train = ["--train-file", str(tmp_path / "train.json"), "--dev-file", str(tmp_path / "dev.json")]
        data = ["--dev-file", str(tmp_path / "dev.json")]
    code, err = call(prune_cli, str(tmp_path / "dense"), *train, "--target", "0.5", "--out", str(tmp_path / "pruned"),
                     "--samples", "8", "--finetune-epochs", "1", *common,
                     *{"bert": ["--distill", "0"], "distilbert": ["--distill", "0.7"]}.get(name, []))
    assert code == 0, err
    report = json.loads((tmp_path / "pruned" / "report.json").read_text())
    assert report["head"] == "question-answering" and set(report["metrics"]["final"]) == {"exact", "f1"}
    assert ("teacher" in report["seconds"]) == (name != "bert")  # distillation is on unless --distill 0
    code, err = call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "deploy"), *data, *common,
                     "--triton")
    assert code == 0, err
    report = json.loads((tmp_path / "deploy" / "report.json").read_text())
    assert report["outputs"] == ["start_logits", "end_logits"]
    assert report["parity"]["ok"] and report["parity"]["max_abs_diff"] <= 1e-4
    assert {c["output"] for c in report["parity"]["checks"]} == {"start_logits", "end_logits"}
    assert report["accuracy"]["metric"] == "f1" and report["accuracy"]["difference_points"] <= 0.1
    config = (tmp_path / "deploy" / "triton" / "pgb_bert" / "config.pbtxt").read_text()
    assert '"start_logits"' in config and '"end_logits"' in config
    card = (tmp_path / "deploy" / "README.md").read_text()
    assert "pipeline_tag: question-answering" in card


def test_qa_mismatches_are_refused_in_one_line(tok, tmp_path):
    model = tiny_qa("bert", vocab=len(tok), pad=tok.pad_token_id)
    model.save_pretrained(tmp_path / "qa")
    tok.save_pretrained(tmp_path / "qa")
    (tmp_path / "glue" / "SST-2").mkdir(parents=True)
    (tmp_path / "glue" / "SST-2" / "dev.tsv").write_text("sentence\tlabel\na fine film\t1\n")
    assert_refused(*call(export_cli, str(tmp_path / "qa"), "--out", str(tmp_path / "o"), "--task", "sst2",
                        "--glue-dir", str(tmp_path / "glue")), "pgb-export", "needs a *ForSequenceClassification")
    (tmp_path / "dev.json").write_text(json.dumps({"version": "1.1", "data": [{"paragraphs": "not a list"}]}))
    assert_refused(*call(export_cli, str(tmp_path / "qa"), "--out", str(tmp_path / "o"), "--dev-file",
                        str(tmp_path / "dev.json")), "pgb-export", "holds no questions")


def test_squad_v2_unanswerable_questions(tok, tmp_path):
    """squad_v2: unanswerable questions are read (v1.1 refuses them), train on the first
    token, and score 1 only when the prediction is empty."""
    data = _articles(2, 3)
    data["data"][1]["paragraphs"][0]["qas"].append({"id": "none", "question": "what is not there ?",
                                                    "answers": [], "is_impossible": True})
    (tmp_path / "SQuAD").mkdir()
    (tmp_path / "SQuAD" / "train-v2.0.json").write_text(json.dumps(data))
    (tmp_path / "SQuAD" / "dev-v2.0.json").write_text(json.dumps(data))
    splits = load_squad(QATask("squad_v2", True), tmp_path)
    impossible = [e for e in splits["train"].examples if not e.answers]
    assert [e.id for e in impossible] == ["none"]
    feats = windows(tok, impossible, 64, 16, ("input_ids",), train=True)
    assert all((f["start_positions"], f["end_positions"]) == (0, 0) for f in feats)
    assert squad_metrics(impossible, {"none": ""}) == {"exact": 1.0, "f1": 1.0}
    assert squad_metrics(impossible, {"none": "something"}) == {"exact": 0.0, "f1": 0.0}
    (tmp_path / "SQuAD" / "dev-v1.1.json").write_text(json.dumps(data))
    (tmp_path / "SQuAD" / "train-v1.1.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="question 5 has no answer"):  # 1 of 7 is above 5 %: refused
        load_squad(QATask("squad", False), tmp_path)


def test_users_qa_rows_of_any_shape_read_or_refused_in_one_line(tok, tmp_path):
    """Flat rows with answers as SQuAD's {text, answer_start}, or as a list of answers, or
    none (unanswerable) are read; answers of any other type, and files whose structure is not
    SQuAD's, are a DataError (one line at the CLI), never a TypeError."""
    from pruning.squad import load_qa_rows, read_squad_json
    ctx = "the old baker went to the market on sunday ."
    rows = [{"question": "who went ?", "context": ctx, "answers": {"text": ["the old baker"], "answer_start": [0]}},
            {"question": "where ?", "context": ctx, "answers": [{"text": "the market", "answer_start": 22}]},
            {"question": "why ?", "context": ctx, "answers": {"text": [], "answer_start": []}}]
    split = load_qa_rows(rows, "rows", "question", "context", "answers")
    assert [e.answers for e in split.examples] == [("the old baker",), ("the market",), ()]
    for bad in (5, "the market", {"text": "the market", "answer_start": 22}):
        with pytest.raises(DataError):
            load_qa_rows([{**rows[0], "answers": bad}], "rows", "question", "context", "answers")
    # an offset that does not point at its text would train the wrong span
    with pytest.raises(DataError, match="answer 'the market' whose answer_start 21 points at ' the marke'"):
        load_qa_rows([{**rows[1], "answers": [{"text": "the market", "answer_start": 21}]}], "rows", "question",
                     "context", "answers")
    (tmp_path / "odd.json").write_text(json.dumps({"data": [{"paragraphs": 7}, {"paragraphs": [{"context": ctx,
                                                                                              "qas": 3}]}]}))
    with pytest.raises(DataError, match="holds no questions"):
        read_squad_json(tmp_path / "odd.json")
    model = tiny_qa("bert", vocab=len(tok), pad=tok.pad_token_id)
    model.save_pretrained(tmp_path / "qa")
    tok.save_pretrained(tmp_path / "qa")
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps({**r, "answers": 5}) + "\n" for r in rows))
    assert_refused(*call(export_cli, str(tmp_path / "qa"), "--out", str(tmp_path / "o"), "--dev-file",
                         str(tmp_path / "dev.jsonl")), "pgb-export", "neither a list nor")
    assert not (tmp_path / "o").exists()
