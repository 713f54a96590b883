"""Everything in this project that needs an NVIDIA GPU, in one run, into one JSON file.

Steps, each recorded as passed, failed or skipped (with the reason):
  kernel_tests   tests/test_kernel.py and tests/test_plugin_aot.py on CUDA
  device_tests   tests/test_device.py: pgb-prune's steps on CUDA against the CPU
  bench_gpu      scripts/bench_gpu.py: dense cuBLAS vs split, batched and the fused kernel,
                 per layer and end to end, CUDA graphs
  engine_tests   tests/test_trt_engine.py, where `tensorrt` imports
  bench_engines  scripts/bench_engines.py: TensorRT fp16 engine latency (where `tensorrt`
                 imports) and ONNX Runtime's CUDA provider (where onnxruntime-gpu offers it),
                 dense against PGB 0.5 and 0.88, batch 1/32, sequence 128, parity first

    bash scripts/gpu_check.sh [OUT.json]      # default bench/gpu_check.json
Exit code 1 when a step that could run failed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cuda() -> str | None:
    """The GPU's name, or None."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def tensorrt_reason() -> str | None:
    sys.path.insert(0, str(ROOT))
    from pgb_export.trt_engine import TensorRTUnavailable, require_tensorrt
    try:
        require_tensorrt(plugin=True)
        return None
    except TensorRTUnavailable as e:
        return str(e)


def run(cmd: list[str], tmp: Path) -> tuple[int, str]:
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    (tmp / "log.txt").open("a").write(f"$ {' '.join(cmd)}\n{r.stdout}\n{r.stderr}\n")
    return r.returncode, (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or [""])[-1]


def pytest_step(files: list[str], tmp: Path) -> dict:
    if importlib.util.find_spec("pytest") is None:
        return {"status": "failed", "reason": "pytest is not installed"}
    junit = tmp / f"{Path(files[0]).stem}.xml"
    code, last = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *files], tmp)
    if not junit.is_file():
        return {"status": "failed", "reason": last}
    suite = ET.parse(junit).getroot().find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return {"status": "passed" if code == 0 else "failed", **counts, **({"reason": last} if code else {})}


def script_step(script: str, tmp: Path) -> dict:
    out = tmp / f"{Path(script).stem}.json"
    code, last = run([sys.executable, script, "--out", str(out)], tmp)
    result = json.loads(out.read_text()) if out.is_file() else None
    return {"status": "passed" if code == 0 else "failed", **({"reason": last} if code else {}), "result": result}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/gpu_check.json")
    args = p.parse_args()
    gpu = cuda()
    no_gpu = "no CUDA GPU visible to torch"
    trt_missing = tensorrt_reason() if gpu else no_gpu
    steps = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plan = {
            "kernel_tests": (no_gpu if not gpu else None, lambda: pytest_step(["tests/test_kernel.py",
                                                                               "tests/test_plugin_aot.py"], tmp)),
            "device_tests": (no_gpu if not gpu else None, lambda: pytest_step(["tests/test_device.py"], tmp)),
            "bench_gpu": (no_gpu if not gpu else None, lambda: script_step("scripts/bench_gpu.py", tmp)),
            "engine_tests": (trt_missing, lambda: pytest_step(["tests/test_trt_engine.py"], tmp)),
            "bench_engines": (no_gpu if not gpu else None, lambda: script_step("scripts/bench_engines.py", tmp)),
        }
        for name, (skip, step) in plan.items():
            t = time.perf_counter()
            steps[name] = {"status": "skipped", "reason": skip} if skip else step()
            steps[name]["seconds"] = round(time.perf_counter() - t, 1)
            print(f"{name}: {steps[name]['status']}" + (f" ({steps[name]['reason']})" if steps[name].get("reason") else ""),
                  flush=True)
        log = (tmp / "log.txt").read_text() if (tmp / "log.txt").is_file() else ""
    report = {"gpu": gpu, "date": time.strftime("%Y-%m-%d %H:%M"), "python": sys.version.split()[0],
              "host": os.uname().nodename, "steps": steps, "log_tail": log[-20000:]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 1 if any(s["status"] == "failed" for s in steps.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
