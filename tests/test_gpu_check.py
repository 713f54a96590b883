"""scripts/gpu_check.sh, the one command a lent GPU runs first: on this CPU every step is
skipped with its reason and the JSON is still written; its pytest and script steps are run
here on steps that can run without a GPU, so its first GPU minutes go to measuring."""
import importlib.util
import json
import subprocess
import sys

from tests.conftest import ROOT


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_every_step_says_why(tmp_path):
    out = tmp_path / "check.json"
    r = subprocess.run(["bash", "scripts/gpu_check.sh", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert set(report["steps"]) == {"kernel_tests", "device_tests", "bench_gpu", "engine_tests", "bench_engines"}
    assert report["gpu"] is None
    assert all(s["status"] == "skipped" and "no CUDA GPU" in s["reason"] for s in report["steps"].values())


def test_pytest_and_script_steps_record_results(tmp_path):
    gc = load_gpu_check()
    tests = gc.pytest_step(["tests/test_trt_engine.py"], tmp_path)
    assert tests["status"] == "passed" and tests["tests"] == 5 and tests["skipped"] == 4 and tests["failures"] == 0
    bench = gc.script_step("scripts/bench_engines.py", tmp_path)
    assert bench["status"] == "passed" and bench["result"]["rows"] == []
    assert set(bench["result"]["skipped"]) == {"tensorrt fp16", "onnxruntime cuda fp16"}
    assert "$ " in (tmp_path / "log.txt").read_text()


def test_engine_benchmark_smoke_on_cpu(tmp_path):
    """bench_engines.py's build, parity and timing path, through ONNX Runtime's CPU provider."""
    out = tmp_path / "engines.json"
    r = subprocess.run([sys.executable, "scripts/bench_engines.py", "--smoke", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["plan"] for r in rows} == {"dense", "G=2", "G=8"} and all(r["ok"] and r["ms"] > 0 for r in rows)
    assert all(r["speedup"] == 1.0 for r in rows if r["plan"] == "dense")
    assert [r["flops_ratio"] for r in rows if r["plan"] == "G=8"][0] < [r["flops_ratio"] for r in rows if r["plan"] == "G=2"][0] < 1
