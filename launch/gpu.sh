#!/usr/bin/env bash
# Trains on all GPUs of this host (one process; the ('data', 'model') mesh spans the GPUs).
#
#   launch/gpu.sh [--dry_run] --gin_file=FILE [--gin.MACRO=value ...]
#
# All arguments go to `spot-jax train` unchanged. DRY_RUN=1 (or --dry_run first) prints the
# command, shell-quoted, instead of running it. Environment knobs (defaults):
#   SPOT_JAX_BIN=spot-jax                 the command to run
#   XLA_PYTHON_CLIENT_MEM_FRACTION=0.9    share of each GPU's memory JAX preallocates
#   XLA_FLAGS                             extra flags, appended after this script's
# CUDA_VISIBLE_DEVICES, if set, still selects the GPUs.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ ${1:-} == --dry_run ]]; then dry_run=1; shift; fi

xla_flags="--xla_gpu_enable_latency_hiding_scheduler=true${XLA_FLAGS:+ $XLA_FLAGS}"
run env \
  "XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}" \
  "XLA_FLAGS=$xla_flags" \
  TF_FORCE_GPU_ALLOW_GROWTH=true \
  TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}" \
  "${SPOT_JAX_BIN:-spot-jax}" train "$@"
