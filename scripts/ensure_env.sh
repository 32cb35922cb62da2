#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv and installs spot-jax with its test extra.
# Re-running is cheap: pip only checks what is already installed.
#
# The CPU fast path wants jemalloc (spot_jax/runtime.py, benchmarks/RESULTS.md "levers"): where
# it is missing and this runs as root on a Debian/Ubuntu machine, `apt-get install libjemalloc2`
# is tried once (set SPOT_JAX_NO_APT=1 to skip it). Without it, spot-jax uses glibc settings that
# keep freed memory instead, so everything works either way.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=.venv/.spot_jax_installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet -e ".[test]"
  touch "$stamp"
fi
if [ -z "${SPOT_JAX_NO_APT:-}" ] && [ ! -f .venv/.jemalloc_tried ] \
    && ! ldconfig -p 2>/dev/null | grep -q 'libjemalloc\.so\.2' \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure_env: installing libjemalloc2 (the fast CPU allocator) with apt-get" >&2
  if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2; } \
      >/dev/null 2>&1; then
    echo "ensure_env: libjemalloc2 installed" >&2
  else
    echo "ensure_env: could not install libjemalloc2; spot-jax falls back to glibc settings" >&2
  fi
  touch .venv/.jemalloc_tried
fi
