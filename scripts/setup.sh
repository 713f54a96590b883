#!/usr/bin/env bash
# Creates .venv with pinned dependencies. torch goes in first, so that no other package
# can pull a multi-GB CUDA build in its place (here: the local CPU wheel 2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test,kernels]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch, transformers, tritonclient.grpc, polygraphy, pruning, pgb_export"
# NVIDIA's TensorRT bindings wheels of the oldest and newest TensorRT the plugin supports, each
# in its own folder, never on sys.path: only their pure-Python tensorrt.plugin package is used,
# by tests/test_trt_plugin_layer.py (the native core needs libnvinfer, which no registry here has).
for v in 10.9.0.34 11.4.0.106; do
    [ -d ".venv/trt-bindings/$v/tensorrt_bindings/plugin" ] || .venv/bin/python -m pip install -q \
        --disable-pip-version-check --no-deps --target ".venv/trt-bindings/$v" "tensorrt-cu12-bindings==$v" 2>&1 | grep -v "is ignored" || true
done
# A second environment for the tritonserver binary of nvidia-pytriton (its python backend
# needs numpy<2); used by the Triton integration test (pgb_export.triton_server).
[ -x .venv-triton/bin/python ] || "$PY" -m venv .venv-triton
.venv-triton/bin/python -m pip install -q --disable-pip-version-check -r constraints-triton.txt 2>&1 | grep -v "is ignored" || true
.venv-triton/bin/python -c "import pytriton, onnxruntime, numpy, tokenizers"

# A third for optimum (tests/test_optimum.py loads our onnx/ with ORTModelForSequenceClassification
# and the transformers pipeline); optimum-onnx pins transformers < 4.58. torch first, as above.
[ -x .venv-optimum/bin/python ] || "$PY" -m venv .venv-optimum
.venv-optimum/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
.venv-optimum/bin/python -m pip install -q --disable-pip-version-check -r constraints-optimum.txt 2>&1 | grep -v "is ignored" || true
.venv-optimum/bin/python -c "import optimum.onnxruntime"
