"""scripts/bench_gpu.py, which produces the H100 figures, run through every code path on the
CPU (--smoke: tiny shapes, the Triton interpreter), so a lent GPU's minutes go to timing,
not to debugging the script. The script itself checks each form against dense before timing."""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytest.importorskip("triton", reason="Triton-lang is not installed (pip install -e '.[kernels]')")


def test_smoke_run_checks_and_times_every_form(tmp_path, pruned_sst2):
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, "scripts/bench_gpu.py", "--smoke", "--model", str(pruned_sst2), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    forms = ("split", "batched", "kernel")
    assert len(res["layers"]) == 16 and {row["G"] for row in res["layers"]} == {2, 3, 4, 6}
    assert all(row[f"{f}_ms"] > 0 and row["kernel_vs_ideal"] == row["kernel_speedup"] / row["G"]
               for row in res["layers"] for f in forms)
    models = {row["model"] for row in res["end_to_end"]}
    assert models == {"tiny G=2 everywhere", f"{pruned_sst2.name} (pgb.json)"}
    assert all(row["ideal_speedup"] > 1 and row["dense_ms"] > 0 for row in res["end_to_end"])
    assert "end to end, speed-up over the dense model" in r.stdout
