"""pgb-export as a user runs it: a real process, real files, one-line errors."""
import json
import shutil
import subprocess
import sys

import onnx
import pytest

from pruning.plan import Plan
from tests.conftest import MODELS, needs_shared


def export(*args):
    return subprocess.run([sys.executable, "-m", "pgb_export.export_cli", *args, "--quiet"],
                          capture_output=True, text=True, timeout=900)


def assert_clean_error(result, needle, code=2):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgb-export:") and needle in lines[0], result.stderr


@needs_shared
def test_pruned_export_with_dev_accuracy(pruned_sst2, tmp_path):
    out = tmp_path / "deploy"
    r = export(str(pruned_sst2), "--out", str(out), "--task", "sst2", "--plugin")
    assert r.returncode == 0, r.stderr
    assert "parity: max |logits diff|" in r.stdout and "ONNX parser check: ok" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["tensorrt_compat"]["ok"]
    plugin = report["plugin_graph"]
    assert plugin["parity"]["ok"] and plugin["tensorrt_compat"]["ok"]
    assert plugin["census"]["total"]["GroupedLinear"] > 0 and (out / "onnx" / "model.plugin.onnx").is_file()
    graph = onnx.load(out / "onnx" / "model.plugin.onnx")
    inits = {t.name: tuple(t.dims) for t in graph.graph.initializer}
    shapes = {inits[n.input[1]] for n in graph.graph.node if n.op_type == "GroupedLinear"}
    kernels = plugin["kernels"]["kernels"]
    assert {(k["groups"], k["m"] // k["groups"], k["n"] // k["groups"]) for k in kernels} == shapes
    assert all("error" not in k and k["param_bytes"] == [8, 8, 8, 8, 8, 4, 8] for k in kernels), kernels
    assert f"plugin kernels: {len(kernels)}/{len(kernels)} compile for sm_90a" in r.stdout
    assert report["parity"]["ok"] and report["parity"]["max_abs_diff"] <= 1e-4
    assert len(report["parity"]["checks"]) == 9  # 3 batch sizes x 3 lengths
    acc = report["accuracy"]
    assert acc["rows"] == 872 and acc["difference_points"] <= 0.1 and acc["ok"]
    plan = Plan.load(pruned_sst2 / "pgb.json")
    assert report["params"]["plan_blocks"] == plan.kept
    assert report["graph"]["census"]["encoder_weight_params"] == report["params"]["live"] <= plan.kept
    assert report["params"]["ratio"] == 1 - report["params"]["live"] / plan.total
    assert {"config.json", "model.onnx", "tokenizer.json"} <= {p.name for p in (out / "onnx").iterdir()}
    # the tokenizer complete: a WordPiece tokenizer rebuilt from vocab.txt alone gives the same ids
    from tokenizers import BertWordPieceTokenizer
    from transformers import AutoTokenizer
    assert json.loads((out / "onnx" / "special_tokens_map.json").read_text())["cls_token"] == "[CLS]"
    rebuilt = BertWordPieceTokenizer(str(out / "onnx" / "vocab.txt"), lowercase=True)
    sentence = "it 's a charming and often affecting journey ."
    assert rebuilt.encode(sentence).ids == AutoTokenizer.from_pretrained(out / "onnx")(sentence)["input_ids"]
    config = json.loads((out / "onnx" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}  # the task's names, not LABEL_i
    card = (out / "README.md").read_text()
    assert card.startswith("---\npipeline_tag: text-classification\n") and "| onnx |" in card


@needs_shared
def test_dense_export_is_the_baseline(tmp_path):
    out = tmp_path / "dense"
    r = export(str(MODELS / "minilm-sst2"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "dense" and report["flops_ratio"] == 1.0
    census = report["graph"]["census"]
    assert census["encoder_weight_params"] == 6 * 1_769_472
    assert census["total"]["Gather"] == 5  # embeddings (4) and the [CLS] pick: no permutations


def corrupt(src, tmp_path, edit):
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    data = json.loads((bad / "pgb.json").read_text())
    edit(data)
    (bad / "pgb.json").write_text(json.dumps(data))
    return bad


def first_grouped(data):
    return next(m for m in data["matrices"] if m["groups"] > 1)


@needs_shared
@pytest.mark.parametrize("edit, needle", [
    (lambda d: first_grouped(d).update(row_perm=[0] * len(first_grouped(d)["row_perm"])), "not a permutation"),
    (lambda d: first_grouped(d).update(groups=5), "does not divide"),
    (lambda d: first_grouped(d).update(col_perm=list(reversed(first_grouped(d)["col_perm"]))), "non-zero outside"),
    (lambda d: d.update(matrices=d["matrices"][:-1]), "do not match"),
    (lambda d: d.pop("matrices"), "malformed"),
])
def test_corrupt_pgb_json(pruned_sst2, tmp_path, edit, needle):
    bad = corrupt(pruned_sst2, tmp_path, edit)
    out = tmp_path / "out"
    assert_clean_error(export(str(bad), "--out", str(out)), needle)
    assert not out.exists()


@needs_shared
def test_existing_unwritable_and_unsupported(pruned_sst2, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep").write_text("x")
    assert_clean_error(export(str(pruned_sst2), "--out", str(out)), "--force")
    assert (out / "keep").read_text() == "x"
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_clean_error(export(str(pruned_sst2), "--out", str(blocker / "deploy")), "cannot write")
    assert_clean_error(export(str(pruned_sst2), "--out", str(tmp_path / "t"), "--trt"), "TensorRT")
    assert_clean_error(export(str(tmp_path / "nothing"), "--out", str(tmp_path / "n")), "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "file"]
