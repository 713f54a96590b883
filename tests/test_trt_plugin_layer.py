"""Our TensorRT plugin definitions against TensorRT's own Python plugin layer: NVIDIA's
`tensorrt.plugin` package from the bindings wheels of the oldest and newest TensorRT we
claim, run over tests/trt_standin.py in place of the native core. This is not TensorRT: no
network is built and no kernel runs. It proves that the plugin module imports, that the
plugin is created as the ONNX parser creates it, and that its output types, symbolic output
shapes, format combinations, tactics and AOT launch parameters are what the kernel's ABI
needs. scripts/setup.sh installs the wheels into .venv/trt-bindings/<version>."""
import json
import os
import subprocess
import sys

import pytest

from plugins.aot import ABI
from plugins.grouped_gemm import TILES
from tests.conftest import ROOT

# Oldest: the first whose tensorrt.plugin has aot_impl, KernelLaunchParams and SymIntExprs.
VERSIONS = {"oldest": "10.9.0.34", "newest": "11.4.0.106"}
BINDINGS = ROOT / ".venv" / "trt-bindings"
CASES = [("fp16", 384, 1536, 4), ("fp32", 384, 384, 2)]  # MiniLM FFN1 at G=4, attention at G=2


def walk(version: str, dtype: str, m: int, n: int, g: int) -> dict:
    path = BINDINGS / version
    if not (path / "tensorrt_bindings" / "plugin").is_dir():
        pytest.skip(f"tensorrt-cu12-bindings {version} is not installed in {path} (scripts/setup.sh does it)")
    pytest.importorskip("triton", reason="the AOT kernel needs Triton-lang (pip install -e '.[kernels]')")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, not interpret
    r = subprocess.run([sys.executable, "-m", "tests.trt_plugin_walk", str(path), dtype, str(m), str(n), str(g)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("which", sorted(VERSIONS))
@pytest.mark.parametrize("dtype, m, n, g", CASES)
def test_plugin_definitions_pass_tensorrt_plugin_layer(which, dtype, m, n, g):
    version = VERSIONS[which]
    facts = walk(version, dtype, m, n, g)
    assert facts["tensorrt_plugin_version"] == version
    trt_type = {"fp16": "HALF", "fp32": "FLOAT"}[dtype]
    tokens = facts["env"]["batch"] * facts["env"]["seq"]
    assert facts["output_types"] == [trt_type]
    assert facts["output_shape"] == [facts["env"]["batch"], facts["env"]["seq"], n]  # symbolic batch x seq
    for t in ("FLOAT", "HALF"):
        assert [t, t, "INT32", "INT32", t, t] in facts["combinations"]
    assert facts["tactics"] == [1]
    launch = facts["launch"]
    assert (launch["grid_x"], launch["grid_y"], launch["grid_z"]) == (
        -(-tokens // TILES["BLOCK_T"]), g, -(-(n // g) // TILES["BLOCK_N"]))
    assert launch["block_x"] % 32 == 0 and launch["block_y"] == launch["block_z"] == 1
    assert 0 < launch["shared_mem"] <= 48 * 1024
    assert facts["extra_args"] == [{"dtype": "INT32", "value": tokens}]  # the kernel's `tokens` argument
    assert facts["kernel"] == "grouped_linear_kernel" and facts["ptx_params"] == list(ABI)
