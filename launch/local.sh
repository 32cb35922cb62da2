#!/usr/bin/env bash
# Trains on this machine with the checkout's virtualenv (.venv): CPU, or whatever JAX finds.
#
#   launch/local.sh [--dry_run] --gin_file=FILE [--gin.MACRO=value ...]
#
# All arguments go to `spot-jax train` unchanged. DRY_RUN=1 (or --dry_run first) prints the
# command, shell-quoted, instead of running it. VENV overrides the virtualenv directory.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ ${1:-} == --dry_run ]]; then dry_run=1; shift; fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
if [[ -x $venv/bin/spot-jax ]]; then
  run "$venv/bin/spot-jax" train "$@"
else  # not pip-installed: run the checkout's package.
  run env "PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}" "$venv/bin/python" -m spot_jax.cli.main \
    train "$@"
fi
