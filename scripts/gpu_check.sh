#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, into one JSON file (scripts/gpu_check.py says what).
# Run it first whenever a GPU is at hand, and record the figures in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/gpu_check.py --out "${1:-bench/gpu_check.json}"
