"""pgb-prune as a user runs it: a real process, real files, one-line errors."""
import json
import subprocess
import sys

import onnx
import pytest
import torch

from pgb_export import lowering
from pruning import repermute
from pruning.grouped import replace_linears
from pruning.plan import Plan
from tests.conftest import GLUE, MODELS, needs_shared

SST2 = str(MODELS / "minilm-sst2")


def prune(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pgb_export.prune_cli", *args, "--quiet"],
                          capture_output=True, text=True, cwd=cwd, timeout=900)


def assert_clean_error(result, needle):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgb-prune: error:") and needle in lines[0], result.stderr


@needs_shared
@pytest.mark.parametrize("args, needle", [
    (["/nonexistent/model", "--task", "sst2", "--target", "0.5"], "does not exist"),
    ([str(GLUE), "--task", "sst2", "--target", "0.5"], "has no config.json"),
    ([SST2, "--task", "nosuch", "--target", "0.5"], "unknown task"),
    ([SST2, "--task", "sst2", "--target", "1.0"], "--target: must be in (0, 1)"),
    ([SST2, "--task", "sst2", "--target", "0"], "--target: must be in (0, 1)"),
    ([SST2, "--task", "sst2", "--target", "nan"], "--target: must be finite"),
    ([SST2, "--task", "sst2", "--target", "0.5", "--finetune-epochs", "nan"], "--finetune-epochs: must be finite"),
    ([SST2, "--task", "sst2", "--target", "0.5", "--lr", "inf"], "--lr: must be finite"),
    ([SST2, "--task", "sst2", "--target", "0.5", "--batch-size", "0"], "--batch-size: must be in [1, 4096]"),
    ([SST2, "--task", "sst2", "--target", "0.5", "--samples", "2.5"], "--samples: expected an integer"),
    ([SST2, "--task", "sst2", "--target", "0.5", "--tau", "nan"], "--tau must be 'auto' or a finite"),
    ([SST2, "--task", "sst2", "--target", "0.5", "--tau", "-1"], "--tau must be 'auto' or a finite"),
    ([SST2, "--task", "sst2", "--target", "0.5", "--glue-dir", "/nonexistent"], "missing train data"),
    ([SST2, "--task", "stsb", "--target", "0.5"], "the model has 2 labels, stsb needs 1"),
    ([SST2, "--task", "sst2", "--target", "0.5", "--compensation", "exact"], "--compensation: invalid choice"),
])
def test_bad_input_one_line_nothing_written(tmp_path, args, needle):
    out = tmp_path / "out"
    assert_clean_error(prune(*args, "--out", str(out), "--samples", "8", "--finetune-epochs", "0"), needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has the GPU the test asks for")
def test_missing_gpu_is_one_line_and_nothing_written(tmp_path):
    assert_clean_error(prune(SST2, "--task", "sst2", "--target", "0.5", "--device", "cuda",
                             "--out", str(tmp_path / "out")), "asks for a CUDA GPU, and torch sees 0 here")
    assert list(tmp_path.iterdir()) == []


def test_no_compensation_is_compensation_off():
    from pgb_export.prune_cli import build_parser
    base = ["m", "--task", "sst2", "--target", "0.5", "--out", "o"]
    assert build_parser().parse_args([*base, "--no-compensation"]).compensation == "off"
    assert build_parser().parse_args(base).compensation == "dense"


def test_version():
    r = subprocess.run([sys.executable, "-m", "pgb_export.prune_cli", "--version"], capture_output=True, text=True)
    from pgb_export import __version__
    assert r.returncode == 0 and r.stdout.strip() == f"pgb-prune {__version__}"


def test_non_bert_model_is_rejected(tmp_path):
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert_clean_error(prune(str(tmp_path / "gpt"), "--task", "sst2", "--target", "0.5",
                             "--out", str(tmp_path / "out")), "has model_type 'gpt2'; supported: bert")
    assert not (tmp_path / "out").exists()


@needs_shared
def test_existing_out_dir_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_clean_error(prune(SST2, "--task", "sst2", "--target", "0.5", "--out", str(out)), "--force")
    assert (out / "keep.txt").read_text() == "mine"


@needs_shared
def test_end_to_end_minilm_sst2_at_half(tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "pruned"
    r = prune(SST2, "--task", "sst2", "--target", "0.5", "--out", str(out), "--samples", "96",
              "--finetune-epochs", "1", "--finetune-samples", "64")
    assert r.returncode == 0, r.stderr
    assert "FFN1" in r.stdout and "achieved" in r.stdout

    report = json.loads((out / "report.json").read_text())
    plan = Plan.load(out / "pgb.json")
    assert abs(report["achieved_ratio"] - 0.5) <= 0.01
    assert report["params_kept"] == sum(m["kept"] for m in report["matrices"]) and report["params_total"] == 6 * 1_769_472
    # grouped matrices keep their blocks; an FFN kept as neurons (the default) fewer than its G = 1
    assert all(m["kept"] == plan[m["name"]].kept for m in report["matrices"] if m["groups"] != 1)
    assert plan.meta["ffn"] == "neurons" and report["params_kept"] < plan.kept
    assert 0 < report["flops_ratio"] < 1
    assert set(report["metrics"]) == {"dense", "vanilla", "final"}
    assert abs(report["metrics"]["dense"]["accuracy"] - 0.8841743119266054) < 1e-6  # fixture.json
    assert report["metrics"]["vanilla"]["accuracy"] > 0.6
    assert {"importance", "planning", "compensation", "finetune"} <= set(report["seconds"])
    assert report["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # --device auto
    assert report["recovery"]["steps"] == 2 and report["recovery"]["lr"] == 3e-5  # short, but at 0.5: the paper's
    assert report["settings"]["lr"] is None and "default" in report["recovery"]["lr_from"]
    assert report["data"]["dev"] == {"source": str(GLUE / "SST-2" / "dev.tsv"), "rows": 872, "used": 872, "skipped": 0}
    card = (out / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and f"| {report['achieved_ratio']:.4f} |" in card
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    grouped = [m for m in report["matrices"] if m["groups"] > 1]
    assert grouped and all(m["captured"] <= m["captured_if"]["topk"] + 1e-9 for m in grouped)
    # --compensation dense (the default) refits every live matrix, the unpruned ones too
    assert report["settings"]["compensation"] == "dense"
    assert all(("reconstruction" in m) == (m["kept"] > 0) for m in report["matrices"])

    # plain from_pretrained computes the pruned model; it is block diagonal under pgb.json
    model = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    assert repermute.violations(model, plan) == []
    ids = torch.randint(1000, 5000, (2, 16))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        replace_linears(model, plan)
        torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-5)


@needs_shared
def test_measured_allocation_end_to_end(tmp_path):
    """--allocation measured as a user runs it: the trials and the sub-layers they dropped are
    in report.json, and the dropped ones are dropped in pgb.json."""
    out = tmp_path / "pruned"
    r = prune(SST2, "--task", "sst2", "--target", "0.5", "--out", str(out), "--samples", "64",
              "--finetune-epochs", "0", "--allocation", "measured", "--lr", "2e-5")
    assert r.returncode == 0, r.stderr
    assert "measured allocation: dropped" in r.stdout
    report = json.loads((out / "report.json").read_text())
    measured = report["plan"]["measured"]
    assert report["plan"]["allocation"] == "measured" and report["settings"]["allocation"] == "measured"
    assert [t["drops"] for t in measured["trials"]] == list(range(5)) and measured["calibration_rows"] == 512
    best = min(measured["trials"], key=lambda t: t["calibration_loss"])
    assert measured["chosen_drops"] == best["sublayers"]
    plan = Plan.load(out / "pgb.json")
    kinds = {"attention": ("query", "key", "value", "attn_out"), "ffn": ("ffn1", "ffn2")}
    for name in measured["chosen_drops"]:
        part, layer = name.split()
        assert all(mp.groups == 0 for mp in plan.matrices if mp.layer == int(layer) and mp.kind in kinds[part])
    assert abs(report["achieved_ratio"] - 0.5) <= 0.01
    assert report["recovery"] == {"steps": 0, "lr": 2e-5, "lr_from": "--lr"}


@needs_shared
def test_ties_end_to_end(tmp_path):
    """--tie-qkv --tie-ffn as a user runs them: pgb.json gives the grouped W_Q, W_K, W_V of a
    layer one G and one row permutation, and a grouped W_1, W_2 pair one G and one neuron
    partition; report.json says so, and the model exports equal to PyTorch with nothing
    exchanged between FFN1 and FFN2."""
    out = tmp_path / "pruned"
    r = prune(SST2, "--task", "sst2", "--target", "0.6", "--out", str(out), "--samples", "64",
              "--finetune-epochs", "0", "--allocation", "floor", "--tie-qkv", "--tie-ffn", "--ffn", "groups",
              "--compensation", "pruned")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["plan"]["tie_qkv"] is True and report["settings"]["tie_qkv"] is True
    assert report["plan"]["tie_ffn"] is True and report["settings"]["tie_ffn"] is True
    # the paper's eq. 4: only the pruned matrices are solved
    assert report["settings"]["compensation"] == "pruned"
    assert all(("reconstruction" in m) == (0 < m["kept"] < m["size"]) for m in report["matrices"])
    plan = Plan.load(out / "pgb.json")
    tied = 0
    for kinds in plan.by_layer().values():
        grouped = [kinds[k] for k in ("query", "key", "value") if kinds[k].groups >= 2]
        assert len({mp.groups for mp in grouped}) <= 1 and len({tuple(mp.row_perm) for mp in grouped}) <= 1
        tied += len(grouped) > 1
    assert tied, "no layer with two grouped Q/K/V: the test proves nothing"
    pairs = [(k["ffn1"], k["ffn2"]) for k in plan.by_layer().values() if k["ffn1"].groups >= 2 and k["ffn2"].groups >= 2]
    assert pairs, "no layer with a grouped FFN pair: the test proves nothing"
    assert all(lowering.hands_over_aligned(f1, f2) for f1, f2 in pairs)
    r = subprocess.run([sys.executable, "-m", "pgb_export.export_cli", str(out), "--out", str(tmp_path / "deploy"),
                        "--quiet"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    exported = json.loads((tmp_path / "deploy" / "report.json").read_text())
    assert exported["parity"]["ok"] and exported["parity"]["max_abs_diff"] <= 1e-4
    graph = onnx.load(tmp_path / "deploy" / "onnx" / "model.onnx")
    assert not [n for n in graph.graph.node if "Exchange" in n.name]
