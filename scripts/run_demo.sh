#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the embedded default end to end on CPU (no downloads).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/ensure_env.sh"
cd "$root"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" TF_CPP_MIN_LOG_LEVEL=3
exec .venv/bin/spot-jax demo "$@"
