#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md in one command, on a machine with one GPU and JAX,
# PyTorch, transformers and peft installed (benchmarks/gpu_suite.py says what it measures).
#   bash benchmarks/gpu_suite.sh --out DIR [--parts first|second] [--budget_seconds 450]
# Each part prints one line and appends one JSON line to DIR/gpu_suite.jsonl as it finishes;
# `python -m benchmarks.gpu_suite --from_json DIR/gpu_suite.jsonl` writes RESULTS.md from it.
# Wheels of missing pure-Python packages (gin-config) may be put in .whl/; they are installed
# into /tmp/site first. XLA's and PyTorch's start-up noise is silenced.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
exec python3 -m benchmarks.gpu_suite "$@"
