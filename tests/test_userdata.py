"""Users' own data, as a new user brings it: a RoBERTa sentiment classifier and a CSV of
`review,sentiment` rows with string labels, through both commands; every format read alike;
bad files and flag mixes refused in one line."""
import json

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

from pgb_export import export_cli, prune_cli
from pruning import modeldir
from pruning.tasks import DataError
from pruning.userdata import DataFiles, load_file, user_task
from tests.test_reliability import assert_refused, call, sentences

NAMES = {0: "negative", 1: "positive"}


def frame(n: int, seed: int) -> pd.DataFrame:
    return pd.DataFrame({"review": sentences(n, seed), "sentiment": [NAMES[i % 2] for i in range(n)],
                         "id": range(n)})


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory):
    tok = AutoTokenizer.from_pretrained(modeldir.embedded_encoder())
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=len(tok), hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        max_position_embeddings=66, pad_token_id=tok.pad_token_id, type_vocab_size=1, num_labels=2,
        id2label=NAMES, label2id={v: k for k, v in NAMES.items()}))
    out = tmp_path_factory.mktemp("roberta") / "sentiment"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_csv_with_its_own_columns_and_string_labels(roberta_dir, tmp_path):
    frame(40, 40).to_csv(tmp_path / "train.csv", index=False)
    frame(20, 20).to_csv(tmp_path / "dev.csv", index=False)
    cols = ["--text-column", "review", "--label-column", "sentiment"]
    code, err = call(prune_cli, str(roberta_dir), "--train-file", str(tmp_path / "train.csv"), "--dev-file",
                     str(tmp_path / "dev.csv"), *cols, "--target", "0.5", "--out", str(tmp_path / "pruned"),
                     "--samples", "16", "--finetune-epochs", "0", "--max-len", "32")
    assert code == 0, err
    report = json.loads((tmp_path / "pruned" / "report.json").read_text())
    assert report["task"] == "train.csv" and report["data"]["dev"]["used"] == 20
    code, err = call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "deploy"), "--dev-file",
                     str(tmp_path / "dev.csv"), *cols, "--max-len", "32")
    assert code == 0, err
    acc = json.loads((tmp_path / "deploy" / "report.json").read_text())["accuracy"]
    assert acc["rows"] == 20 and acc["difference_points"] <= 0.1
    assert abs(acc["pytorch"]["accuracy"] - report["metrics"]["final"]["accuracy"]) < 1e-9


@pytest.mark.parametrize("suffix", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_format_reads_the_same_examples(roberta_dir, tmp_path, suffix):
    df = frame(12, 3)
    path = tmp_path / f"dev.{suffix}"
    {"csv": lambda: df.to_csv(path, index=False), "tsv": lambda: df.to_csv(path, sep="\t", index=False),
     "json": lambda: df.to_json(path, orient="records"), "jsonl": lambda: df.to_json(path, orient="records", lines=True),
     "parquet": lambda: df.to_parquet(path)}[suffix]()
    from transformers import AutoConfig
    task = user_task(AutoConfig.from_pretrained(roberta_dir), "dev")
    split = load_file(str(path), DataFiles(None, str(path), "review", None, "sentiment"), task)
    assert [(e.text_a, e.text_b, e.label) for e in split.examples] == [
        (r.review, None, i % 2) for i, r in enumerate(df.itertuples())]
    assert list(tmp_path.iterdir()) == [path]  # the loader's cache went to a temporary directory


@pytest.mark.parametrize("content, flags, needle", [
    ("review,sentiment\ngood film,positive\ndull,meh\n", [], "row 2: label 'meh' is not one the model knows "
                                                           "(negative, positive)"),
    ("review,sentiment\ngood film,positive\n", ["--label-column", "stars"], "has no column 'stars' (--label-column); "
                                                                            "its columns are review, sentiment"),
    ("body,sentiment\ngood film,positive\n", ["--text-column", None], "which column is the text?"),
    ("", [], "is empty"),
    ("review,sentiment\n", [], "dev.csv has no data rows"),
    ("review,sentiment\ncafé,positive\n".encode("latin-1"), [], "dev.csv is not UTF-8 text (line 2, byte 0xe9): save it as UTF-8"),
    ("review,sentiment\n" + "x,\n" * 10 + "good,positive\n", [], "10 of 11 rows have no usable text or label"),
])
def test_bad_user_data_is_one_line(roberta_dir, tmp_path, content, flags, needle):
    (tmp_path / "dev.csv").write_bytes(content if isinstance(content, bytes) else content.encode())
    args = ["--text-column", "review", "--label-column", "sentiment"]
    if flags and flags[1] is None:
        args = ["--label-column", "sentiment"]
    elif flags:
        args = ["--text-column", "review", *flags]
    code, err = call(export_cli, str(roberta_dir), "--out", str(tmp_path / "deploy"), "--dev-file",
                     str(tmp_path / "dev.csv"), *args)
    assert_refused(code, err, "pgb-export", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.csv"]


@pytest.mark.parametrize("argv, needle", [
    (["--task", "sst2", "--dev-file", "d.csv"], "give one or the other"),
    (["--train-file", "t.csv"], "needs both --train-file and --dev-file"),
    ([], "give a --task (GLUE, or squad / squad_v2), or your own data"),
])
def test_data_flag_mixes_are_refused(roberta_dir, tmp_path, argv, needle):
    code, err = call(prune_cli, str(roberta_dir), "--target", "0.5", "--out", str(tmp_path / "o"), *argv)
    assert_refused(code, err, "pgb-prune", needle)


def test_index_labels_of_every_json_type(tmp_path):
    """Class indices as ints, whole floats, booleans or digit strings; 1.5 or 2 are refused."""
    from transformers import BertConfig
    task = user_task(BertConfig(num_labels=2), "d")
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": v}) + "\n"
                            for i, v in enumerate([1, 0.0, True, False, "1", "0"])))
    assert [e.label for e in load_file(str(path), DataFiles(None, str(path)), task).examples] == [1, 0, 1, 0, 1, 0]
    for bad in (1.5, 2):
        path.write_text(json.dumps({"text": "t", "label": bad}) + "\n")
        with pytest.raises(DataError, match="is not one the model knows"):
            load_file(str(path), DataFiles(None, str(path)), task)


def test_unknown_format_and_placeholder_labels(tmp_path):
    from transformers import BertConfig
    (tmp_path / "d.xlsx").write_text("x")
    task = user_task(BertConfig(num_labels=2), "d")
    with pytest.raises(DataError, match="unknown data format '.xlsx'"):
        load_file(str(tmp_path / "d.xlsx"), DataFiles(None, "d"), task)
    (tmp_path / "d.csv").write_text("text,label\nfine,1\nbad,0\nugly,positive\n")
    with pytest.raises(DataError, match="names no classes: use class indices 0..1"):
        load_file(str(tmp_path / "d.csv"), DataFiles(None, "d"), task)


def test_a_regression_dev_set_needs_two_rows(tmp_path):
    from transformers import BertConfig

    from pruning.heads import SEQUENCE_CLASSIFICATION
    from pruning.userdata import load_user_data
    (tmp_path / "d.csv").write_text("text,label\nfine,4.5\n")
    (tmp_path / "t.csv").write_text("text,label\nfine,4.5\nbad,0.5\n")
    with pytest.raises(DataError, match="d.csv has 1 usable row: Pearson and Spearman correlations need at least 2"):
        load_user_data(DataFiles(str(tmp_path / "t.csv"), str(tmp_path / "d.csv")), BertConfig(num_labels=1),
                       SEQUENCE_CLASSIFICATION)
    task, splits = load_user_data(DataFiles(str(tmp_path / "d.csv"), str(tmp_path / "t.csv")),
                                  BertConfig(num_labels=1), SEQUENCE_CLASSIFICATION)
    assert task.is_regression and [e.label for e in splits["dev"].examples] == [4.5, 0.5]


SQUAD_ROWS = {"question": "Where is Paris?", "context": "Paris is in France.",
              "answers": {"text": ["France"], "answer_start": [12]}}


@pytest.mark.parametrize("name, content, columns", [
    ("dev.json", {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": SQUAD_ROWS["context"], "qas": [
        {"id": "1", "question": SQUAD_ROWS["question"], "answers": [{"text": "France", "answer_start": 12}]}]}]}]},
     "version, data"),
    ("dev.jsonl", SQUAD_ROWS, "question, context, answers"),
])
def test_question_answering_data_for_a_classifier(roberta_dir, tmp_path, name, content, columns):
    (tmp_path / name).write_text(json.dumps(content) + "\n")
    code, err = call(export_cli, str(roberta_dir), "--out", str(tmp_path / "deploy"), "--dev-file", str(tmp_path / name))
    assert_refused(code, err, "pgb-export", f"{name} holds question-answering data (columns {columns}), but the "
                                            f"model is a sequence classifier")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
