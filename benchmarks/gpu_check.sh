#!/usr/bin/env bash
# The GPU check in one command (benchmarks/gpu_check.py says what it measures). Run from anywhere on a CUDA
# machine with torch and transformers; wheels carried in .whl/ (if any) are installed first, without index.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_check "$@"
