#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice: the same `spot-jax train` on every worker at once; JAX
# finds the other hosts itself (SPOT_JAX_DISTRIBUTED=auto -> jax.distributed.initialize()).
#
#   TPU_NAME=my-pod ZONE=us-central2-b launch/tpu_pod.sh [--dry_run] --gin_file=FILE \
#     [--gin.MACRO=value ...]
#
# All arguments go to `spot-jax train` unchanged (quoted for the remote shell). DRY_RUN=1 (or
# --dry_run first) prints the gcloud command instead of running it. Environment:
#   TPU_NAME, ZONE (required); PROJECT (optional gcloud project)
#   REMOTE_DIR    directory on the workers to cd into first (relative to the remote home)
#   SPOT_JAX_BIN  command on the workers (default spot-jax), e.g. .venv/bin/spot-jax
#   GCLOUD        gcloud binary (default gcloud)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ ${1:-} == --dry_run ]]; then dry_run=1; shift; fi
: "${TPU_NAME:?set TPU_NAME to the TPU VM (pod slice) name}"
: "${ZONE:?set ZONE to the TPU zone, e.g. us-central2-b}"

remote="$(join_quoted env SPOT_JAX_DISTRIBUTED=auto "${SPOT_JAX_BIN:-spot-jax}" train "$@")"
if [[ -n ${REMOTE_DIR:-} ]]; then
  remote="cd $(quote "$REMOTE_DIR") && $remote"
fi
gcloud_args=(compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE")
[[ -n ${PROJECT:-} ]] && gcloud_args+=(--project "$PROJECT")
run "${GCLOUD:-gcloud}" "${gcloud_args[@]}" --worker=all --command "$remote"
