"""The README's promise about bad input, as a careful user tests it: every bad input is one
line on stderr and exit 2; inputs stay byte-identical; nothing is written; --out can never
destroy an input. Most cases call the CLIs' main() in-process (seconds, not minutes); the
data-loss cases also run as real processes."""
import contextlib
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from pgb_export import export_cli, prune_cli
from pruning import modeldir

WORDS = ("the film is a charming and often affecting journey slow bleak funny moving dull "
         "brilliant story actors music script ending").split()


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny BERT classifier with the embedded MiniLM tokenizer, SST-2-shaped data of our
    own, and that model pruned at 0.5 by pgb-prune (fixed G): everything the CLIs read, made here."""
    root = tmp_path_factory.mktemp("world")
    tok = AutoTokenizer.from_pretrained(modeldir.embedded_encoder())
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=len(tok), hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=96, max_position_embeddings=64, num_labels=2)).eval()
    dense = root / "dense"
    model.save_pretrained(dense)
    tok.save_pretrained(dense)
    glue = root / "glue"
    (glue / "SST-2").mkdir(parents=True)
    for split, n in (("train", 48), ("dev", 24)):
        rows = "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences(n, n)))
        (glue / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    (glue / "STS-B").mkdir()
    pairs = "".join(f"{a}\t{b}\t{i % 5}.0\n" for i, (a, b) in enumerate(zip(sentences(8, 1), sentences(8, 2))))
    (glue / "STS-B" / "dev.tsv").write_text("sentence1\tsentence2\tscore\n" + pairs)
    pruned = root / "pruned"
    code, err = call(prune_cli, str(dense), "--task", "sst2", "--target", "0.5", "--out", str(pruned),
                     "--glue-dir", str(glue), "--samples", "16", "--finetune-epochs", "0", "--max-len", "32",
                     "--ablation", "fixed-g")  # every matrix grouped (G=2): the shape the fuzz edits
    assert code == 0, err
    return {"root": root, "dense": dense, "pruned": pruned, "glue": glue}


def call(cli, *argv) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main([*argv, "--quiet"])
        except SystemExit as e:  # argparse
            code = e.code
    return code, err.getvalue()


def snapshot(*dirs: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in dirs for p in sorted(Path(d).rglob("*")) if p.is_file()}


def assert_refused(code: int, err: str, prog: str, needle: str = ""):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error:") and needle in lines[0] and "Traceback" not in err, err


def copy(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


# ---- data loss: --out overlapping an input ---------------------------------------------

def run_cli(module: str, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", f"pgb_export.{module}", *args, "--quiet"],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("where", ["same", "above", "inside"])
def test_export_never_writes_over_its_input(world, tmp_path, where):
    model = copy(world["pruned"], tmp_path / "a" / "b" / "model")
    out = {"same": model, "above": tmp_path / "a", "inside": model / "deploy"}[where]
    before = snapshot(tmp_path)
    r = run_cli("export_cli", str(model), "--out", str(out), "--force")
    needle = {"same": "is the input", "above": "contains the input", "inside": "lies inside the input"}[where]
    assert_refused(r.returncode, r.stderr, "pgb-export", needle)
    assert snapshot(tmp_path) == before and not (model / "deploy").exists()


def test_prune_never_writes_over_its_input(world, tmp_path):
    model = copy(world["dense"], tmp_path / "model")
    before = snapshot(tmp_path)
    r = run_cli("prune_cli", str(model), "--task", "sst2", "--target", "0.5", "--out", str(model), "--force",
                "--glue-dir", str(world["glue"]))
    assert_refused(r.returncode, r.stderr, "pgb-prune", "is the input")
    # through a symlink to the input, and into the data directory
    (tmp_path / "link").symlink_to(model)
    code, err = call(prune_cli, str(model), "--task", "sst2", "--target", "0.5", "--out", str(tmp_path / "link"),
                     "--force", "--glue-dir", str(world["glue"]))
    assert_refused(code, err, "pgb-prune", "is the input")
    code, err = call(prune_cli, str(model), "--task", "sst2", "--target", "0.5",
                     "--out", str(world["glue"] / "out"), "--glue-dir", str(world["glue"]))
    assert_refused(code, err, "pgb-prune", "lies inside the input")
    assert snapshot(tmp_path) == before


def test_out_that_is_here_a_loop_or_not_ours(world, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    r = run_cli("export_cli", str(world["pruned"]), "--out", ".", "--force", cwd=work)
    assert_refused(r.returncode, r.stderr, "pgb-export", "current directory")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    code, err = call(export_cli, str(world["pruned"]), "--out", str(tmp_path / "loop" / "x"))
    assert_refused(code, err, "pgb-export", "cannot use --out")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    code, err = call(export_cli, str(world["pruned"]), "--out", str(mine), "--force")
    assert_refused(code, err, "pgb-export", "not an earlier output")
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_force_replaces_an_earlier_output_and_sweeps_stale_temporaries(world, tmp_path):
    out = tmp_path / "deploy"
    assert call(export_cli, str(world["dense"]), "--out", str(out))[0] == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [tmp_path / f".deploy.pgb-tmp.{dead.stdout.strip()}.abc123", tmp_path / ".deploy.old.k2j4h5g6"]
    live = tmp_path / f".deploy.pgb-tmp.{os.getppid()}.zzz999"  # our parent: alive, never swept
    young_legacy = tmp_path / ".deploy.q1w2e3r4"
    for d in stale + [live, young_legacy]:
        d.mkdir()
        (d / "model.onnx").write_bytes(b"half")
    hour_ago = time.time() - 2 * 3600
    os.utime(stale[1], (hour_ago, hour_ago))
    code, err = call(export_cli, str(world["pruned"]), "--out", str(out), "--force")
    assert code == 0, err
    assert json.loads((out / "report.json").read_text())["method"] != "dense"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["deploy", live.name, young_legacy.name])
    assert err.count("left by an interrupted run") == 2


# ---- broken models are refused, not shipped ----------------------------------------------

def edit_weights(d: Path, edit) -> None:
    sd = load_file(d / "model.safetensors")
    edit(sd)
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})


QUERY = "bert.encoder.layer.0.attention.self.query.weight"
BROKEN = {
    "no tokenizer": (lambda d: [(d / f).unlink() for f in ("tokenizer.json", "vocab.txt") if (d / f).exists()],
                     "has no tokenizer"),
    "missing tensor": (lambda d: edit_weights(d, lambda sd: sd.pop(QUERY)), f"lacks weights for its architecture: {QUERY}"),
    "extra tensor": (lambda d: edit_weights(d, lambda sd: sd.update(extra=torch.zeros(2))), "has unexpected weights"),
    "wrong shape": (lambda d: edit_weights(d, lambda sd: sd.update({QUERY: sd[QUERY][:, :24].contiguous()})),
                    "cannot load the model"),
    "zero bytes": (lambda d: (d / "model.safetensors").write_bytes(b""), "cannot load the model"),
    "truncated": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
                  "cannot load the model"),
    "binary config": (lambda d: (d / "config.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff"), "not UTF-8"),
    "list config": (lambda d: (d / "config.json").write_text("[1, 2]"), "not an object"),
    "masked lm head": (lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "architectures": ["BertForMaskedLM"]})),
        "holds a BertForMaskedLM; supported heads are *ForSequenceClassification, *ForQuestionAnswering"),
    "unsupported family": (lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "model_type": "electra"})),
        "has model_type 'electra'; supported: bert, roberta, xlm-roberta, camembert, distilbert"),
    "relative positions": (lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "position_embedding_type": "relative_key"})),
        "has position_embedding_type 'relative_key'; only absolute position embeddings are supported"),
    "qa config on classifier weights": (lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "architectures": ["BertForQuestionAnswering"]})),
        "lacks weights for its architecture: qa_outputs"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_model_is_refused_by_both_commands(world, tmp_path, case):
    edit, needle = BROKEN[case]
    model = copy(world["dense"], tmp_path / "model")
    edit(model)
    before = snapshot(tmp_path)
    code, err = call(export_cli, str(model), "--out", str(tmp_path / "deploy"))
    assert_refused(code, err, "pgb-export", needle)
    code, err = call(prune_cli, str(model), "--task", "sst2", "--target", "0.5", "--out", str(tmp_path / "pruned"),
                     "--glue-dir", str(world["glue"]))
    assert_refused(code, err, "pgb-prune", needle)
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_activation_the_export_cannot_write_is_said_before_pruning(world, tmp_path):
    model = copy(world["dense"], tmp_path / "model")
    (model / "config.json").write_text(json.dumps({**json.loads((model / "config.json").read_text()),
                                                   "hidden_act": "mish"}))
    code, err = call(prune_cli, str(model), "--task", "sst2", "--target", "0.5", "--out", str(tmp_path / "pruned"),
                     "--glue-dir", str(world["glue"]), "--samples", "8", "--finetune-epochs", "0", "--max-len", "32")
    assert code == 0, err
    assert err.splitlines()[0] == ("pgb-prune: warning: unsupported activation 'mish'; supported: gelu, gelu_python, "
                                   "gelu_new, gelu_fast, gelu_accurate, gelu_pytorch_tanh, gelu_python_tanh, relu, "
                                   "silu, swish, quick_gelu: pgb-export will not write the pruned model as ONNX "
                                   "(it runs in PyTorch)")
    code, err = call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "deploy"))
    assert_refused(code, err, "pgb-export", "unsupported activation 'mish'")
    code, err = call(prune_cli, str(world["dense"]), "--task", "sst2", "--target", "0.5", "--out",
                     str(tmp_path / "p2"), "--glue-dir", str(world["glue"]), "--samples", "8", "--finetune-epochs", "0",
                     "--max-len", "32")
    assert code == 0 and "activation" not in err, err


def test_a_structured_model_reports_the_ratio_it_was_pruned_to(world, tmp_path):
    """Its plan's dense blocks hold the zeroed heads and neurons; the export reports what it computes."""
    code, err = call(prune_cli, str(world["dense"]), "--task", "sst2", "--target", "0.6", "--out",
                     str(tmp_path / "pruned"), "--glue-dir", str(world["glue"]), "--samples", "8",
                     "--finetune-epochs", "0", "--max-len", "32", "--ablation", "structured")
    assert code == 0, err
    pruned = json.loads((tmp_path / "pruned" / "report.json").read_text())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert export_cli.main([str(tmp_path / "pruned"), "--out", str(tmp_path / "deploy"), "--quiet"]) == 0
    params = json.loads((tmp_path / "deploy" / "report.json").read_text())["params"]
    assert params["live"] == pruned["params_live"] < params["plan_blocks"]
    assert params["ratio"] == pytest.approx(pruned["achieved_ratio"], abs=1e-12) and params["ratio"] > 0.5
    assert f"kept {pruned['params_live']:,}/{pruned['params_total']:,} prunable weights (ratio " in out.getvalue()


def test_separate_tokenizer_and_label_count(world, tmp_path):
    model = copy(world["dense"], tmp_path / "model")
    BROKEN["no tokenizer"][0](model)
    code, err = call(export_cli, str(model), "--out", str(tmp_path / "deploy"), "--tokenizer", str(world["dense"]))
    assert code == 0, err
    code, err = call(export_cli, str(world["dense"]), "--out", str(tmp_path / "d2"), "--task", "stsb",
                     "--glue-dir", str(world["glue"]))
    assert_refused(code, err, "pgb-export", "the model has 2 labels, stsb needs 1")


def test_multi_label_classifier_is_refused_where_a_task_is_computed(world, tmp_path):
    """Its loss and metric are not softmax cross-entropy and accuracy: pruning it or scoring it
    on a dev set is refused; exporting it with its outputs checked is not."""
    model = copy(world["dense"], tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "problem_type": "multi_label_classification"}))
    before = snapshot(tmp_path)
    code, err = call(prune_cli, str(model), "--task", "sst2", "--target", "0.5", "--out", str(tmp_path / "pruned"),
                     "--glue-dir", str(world["glue"]))
    assert_refused(code, err, "pgb-prune", "is a multi-label classifier")
    code, err = call(export_cli, str(model), "--out", str(tmp_path / "deploy"), "--task", "sst2",
                     "--glue-dir", str(world["glue"]))
    assert_refused(code, err, "pgb-export", "is a multi-label classifier")
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    code, err = call(export_cli, str(model), "--out", str(tmp_path / "deploy"))
    assert code == 0, err


@pytest.mark.parametrize("flags, needle", [
    (["--max-batch", "0"], "--max-batch: must be in [1, 65536]"),
    (["--max-batch", "-4", "--triton"], "--max-batch: must be in [1, 65536]"),
    (["--max-len", "nan"], "--max-len: expected an integer"),
    (["--opset", "12"], "--opset: must be in [17,"),
    (["--trt", "--opt-seq", "256"], "--opt-seq 256 is longer than --max-seq 128"),
    (["--opt-seq", "32"], "--opt-seq only applies with --trt"),
    (["--trt", "--task", "sst2", "--max-len", "256"], "--max-len 256 is longer than the engine's --max-seq 128"),
    (["--precision", "fp32"], "--precision only applies with --trt: add --trt or drop it"),
    (["--max-seq", "64"], "--max-seq only applies with --trt"),
    (["--timing-cache", "c.cache"], "--timing-cache only applies with --trt"),
    (["--triton-backend", "python"], "--triton-backend only applies with --triton"),
])
def test_export_flags_are_checked(world, tmp_path, flags, needle):
    code, err = call(export_cli, str(world["pruned"]), "--out", str(tmp_path / "d"), *flags)
    assert_refused(code, err, "pgb-export", needle)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_hub_model_id_is_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "pgb_export.export_cli", "pgb-test/no-such-model", "--out",
                        str(tmp_path / "d")], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert_refused(r.returncode, r.stderr, "pgb-export", "pgb-test/no-such-model is not a directory here, and the "
                                                         "Hub model of that name could not be fetched")
    assert list(tmp_path.iterdir()) == []


def _stderr_of_export(world, out: Path, terminal: bool) -> str:
    """pgb-export's stderr, without --quiet, into a pipe or into a pseudo-terminal."""
    import fcntl
    import pty
    import struct
    import termios
    import threading
    argv = [sys.executable, "-m", "pgb_export.export_cli", str(world["pruned"]), "--out", str(out),
            "--task", "sst2", "--glue-dir", str(world["glue"])]
    if not terminal:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stderr
    master, slave = pty.openpty()
    # a terminal of some width: tqdm draws nothing on a 0-column one, as a fresh pty is
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    chunks = []

    def drain():  # the child blocks on a full terminal buffer unless someone reads it
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child has closed its side
                return
            if not data:
                return
            chunks.append(data)
    reader = threading.Thread(target=drain)
    reader.start()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    assert proc.wait(timeout=300) == 0
    reader.join(timeout=30)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_progress_bars_only_on_a_terminal(world, tmp_path):
    """Into a log file or pipe the bars' redraws would be noise; on a terminal they show."""
    piped = _stderr_of_export(world, tmp_path / "piped", terminal=False)
    assert "\r" not in piped and "batch/s" not in piped, piped
    shown = _stderr_of_export(world, tmp_path / "tty", terminal=True)
    assert "batch/s" in shown, shown


def test_pgb_debug_is_a_boolean(world, tmp_path):
    env = {**os.environ, "PGB_DEBUG": "0"}
    r = subprocess.run([sys.executable, "-m", "pgb_export.export_cli", str(tmp_path / "none"), "--out",
                        str(tmp_path / "d")], capture_output=True, text=True, env=env, timeout=300)
    assert_refused(r.returncode, r.stderr, "pgb-export", "does not exist")
    env["PGB_DEBUG"] = "yes"
    r = subprocess.run([sys.executable, "-m", "pgb_export.export_cli", str(tmp_path / "none"), "--out",
                        str(tmp_path / "d")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1 and "Traceback" in r.stderr


# ---- fuzz: mutated pgb.json, config.json and data files ----------------------------------

NOT_AN_INT = st.one_of(st.text(max_size=5), st.floats(allow_nan=True), st.none(), st.booleans(),
                       st.lists(st.integers(0, 4), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


def _grouped(data):
    return next(m for m in data["matrices"] if m["groups"] > 1)


def _swap_ends(perm):
    perm = list(perm)
    perm[0], perm[-1] = perm[-1], perm[0]
    return perm


# Each mutation makes the plan invalid by construction (a valid-looking edit such as G=1 on
# block-diagonal weights is a valid plan, and is not here).
PLAN_EDITS = st.one_of(
    st.tuples(st.sampled_from(["groups", "layer"]), st.one_of(NOT_AN_INT, st.integers(max_value=-1))).map(
        lambda kv: lambda d: _grouped(d).update({kv[0]: kv[1]})),
    st.sampled_from(["row_perm", "col_perm", "shape", "name", "kind"]).flatmap(
        lambda key: NOT_AN_INT.map(lambda v: lambda d: _grouped(d).update({key: v}))),
    st.sampled_from(["row_perm", "col_perm"]).map(
        lambda key: lambda d: _grouped(d).update({key: _swap_ends(_grouped(d)[key])})),
    st.sampled_from(["row_perm", "col_perm"]).map(
        lambda key: lambda d: _grouped(d).update({key: [float(i) for i in _grouped(d)[key]]})),
    st.just(lambda d: d["matrices"].append(dict(d["matrices"][0]))),
    st.just(lambda d: d["matrices"].pop()),
    st.just(lambda d: _grouped(d).update(shape=[_grouped(d)["shape"][0], 2 * _grouped(d)["shape"][1]])),
    st.just(lambda d: _grouped(d).update(kind="ffn1" if _grouped(d)["kind"] != "ffn1" else "query")),
    st.just(lambda d: _grouped(d).update(layer=_grouped(d)["layer"] + 1)),
    st.sampled_from(["groups", "row_perm", "name", "shape"]).map(lambda key: lambda d: _grouped(d).pop(key)),
    st.just(lambda d: _grouped(d).update(surprise=1)),
    st.just(lambda d: d.update(format_version=2)),
)

CONFIG_SHAPES = ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size",
                 "max_position_embeddings", "type_vocab_size")
CONFIG_EDITS = st.one_of(
    st.tuples(st.sampled_from(CONFIG_SHAPES), st.integers(-3, 200)).map(
        lambda kv: lambda c: c.update({kv[0]: kv[1] if kv[1] != c[kv[0]] else kv[1] + 1})),
    st.tuples(st.sampled_from(CONFIG_SHAPES + ("num_attention_heads", "layer_norm_eps")),
              st.one_of(st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2))).map(
        lambda kv: lambda c: c.update({kv[0]: kv[1]})),
    st.just(lambda c: c.update(num_attention_heads=7)),
    st.one_of(st.text(max_size=8).filter(lambda t: t not in ("bert",)), st.integers(), st.none()).map(
        lambda v: lambda c: c.update(model_type=v)),
    st.one_of(st.text(alphabet="xyz", min_size=1, max_size=6), st.integers(), st.none()).map(
        lambda v: lambda c: c.update(hidden_act=v)),
)


def _splice(at: float, junk: bytes):
    return lambda raw: raw[:int(len(raw) * at)] + junk + raw[int(len(raw) * at):]


# Byte-level damage to a JSON text: cut it short, or splice in bytes that are not UTF-8.
BYTE_EDITS = st.one_of(
    st.floats(0.0, 0.99).map(lambda f: lambda raw: raw[:int(len(raw) * f)]),
    st.builds(_splice, st.floats(0, 1), st.sampled_from([b"\xff", b"\xc3\x28", b"\x80\x80"])),
)


DATA_EDITS = st.one_of(
    st.just(lambda raw: b""),
    st.just(lambda raw: raw.split(b"\n")[0] + b"\n"),
    st.just(lambda raw: raw.replace(b"sentence\t", b"text\t", 1)),
    st.sampled_from([b"positive", b"2", b"", b"N/A"]).map(
        lambda lab: lambda raw: b"\n".join([raw.split(b"\n")[0]] + [r.rsplit(b"\t", 1)[0] + b"\t" + lab
                                                                     for r in raw.split(b"\n")[1:] if r]) + b"\n"),
    st.just(lambda raw: b"\n".join(r.split(b"\t")[0] for r in raw.split(b"\n")) + b"\n"),
    st.builds(_splice, st.floats(0.05, 0.95), st.sampled_from([b"\xff", b"\xe9t\xe9"])),
)


def mutate_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def fuzz_case(world, tmp_path_factory, mutate, argv_for) -> None:
    """Copy the world, damage one file, run the command: exit 2, one line, inputs untouched,
    nothing written beside them."""
    base = tmp_path_factory.mktemp("case")
    model = copy(world["pruned"], base / "model")
    glue = copy(world["glue"], base / "glue")
    mutate(model, glue)
    before = snapshot(base)
    cli, prog, argv = argv_for(model, glue, base / "out")
    code, err = call(cli, *argv)
    assert_refused(code, err, prog)
    assert snapshot(base) == before and sorted(p.name for p in base.iterdir()) == ["glue", "model"]


def export_argv(model, glue, out):
    return export_cli, "pgb-export", [str(model), "--out", str(out), "--task", "sst2", "--glue-dir", str(glue)]


def prune_argv(model, glue, out):
    return prune_cli, "pgb-prune", [str(model), "--task", "sst2", "--target", "0.5", "--out", str(out),
                                    "--glue-dir", str(glue), "--samples", "8", "--finetune-epochs", "0"]


def damage_json(name: str, edit):
    """A mutation of model/<name>: ("json", edit of the parsed object) or ("bytes", edit of the text)."""
    kind, fn = edit

    def mutate(model, glue):
        path = model / name
        mutate_json(path, fn) if kind == "json" else path.write_bytes(fn(path.read_bytes()))
    return mutate


@FUZZ
@given(edit=st.one_of(PLAN_EDITS.map(lambda e: ("json", e)), BYTE_EDITS.map(lambda e: ("bytes", e))))
def test_fuzz_pgb_json(world, tmp_path_factory, edit):
    fuzz_case(world, tmp_path_factory, damage_json("pgb.json", edit), export_argv)


@FUZZ
@given(edit=st.one_of(CONFIG_EDITS.map(lambda e: ("json", e)), BYTE_EDITS.map(lambda e: ("bytes", e))),
       argv=st.sampled_from([export_argv, prune_argv]))
def test_fuzz_config_json(world, tmp_path_factory, edit, argv):
    fuzz_case(world, tmp_path_factory, damage_json("config.json", edit), argv)


@FUZZ
@given(edit=DATA_EDITS, split=st.sampled_from(["train", "dev"]), argv=st.sampled_from([export_argv, prune_argv]))
def test_fuzz_data_files(world, tmp_path_factory, edit, split, argv):
    if argv is export_argv:
        split = "dev"  # the only split pgb-export reads

    def mutate(model, glue):
        path = glue / "SST-2" / f"{split}.tsv"
        path.write_bytes(edit(path.read_bytes()))
    fuzz_case(world, tmp_path_factory, mutate, argv)


@pytest.mark.parametrize("argv", [export_argv, prune_argv])
def test_fuzz_base_case_succeeds(world, tmp_path, argv):
    """Without a mutation the fuzzed commands succeed, so each refusal above is the
    mutation's doing."""
    cli, _, args = argv(world["pruned"], world["glue"], tmp_path / "out")
    code, err = call(cli, *args)
    assert code == 0, err
    assert (tmp_path / "out" / "report.json").is_file()


def test_the_pipeline_is_a_library_function(world, tmp_path):
    """What pgb-prune calls, called directly with typed options: same files, same report."""
    from pruning.pipeline import PruneOptions, prune
    report = prune(PruneOptions(out=str(tmp_path / "p"), target=0.5, model_dir=str(world["dense"]), task="sst2",
                                glue_dir=str(world["glue"]), samples=8, finetune_epochs=0, max_len=32,
                                ablation="fixed-g", progress=False))
    assert {p.name for p in (tmp_path / "p").iterdir()} >= {"README.md", "config.json", "model.safetensors",
                                                              "pgb.json", "report.json", "vocab.txt"}
    assert json.loads((tmp_path / "p" / "report.json").read_text())["params_kept"] == report["params_kept"]
    assert report["settings"]["task"] == "sst2" and report["settings"]["data_files"] is None
