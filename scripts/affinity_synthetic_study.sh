#!/usr/bin/env bash
# The affinity head end to end on the synthetic world (docs/affinity.md), in one command:
#   scripts/affinity_synthetic_study.sh [OUT]        (default OUT=runs/affinity_synthetic)
# 1. writes the pretrained tiny_byte model (tests/golden/tiny_byte_frozen.npz) as a T5X
#    checkpoint and a copy of gin_configs/affinity/synthetic_study.yaml pointing at it;
# 2. `spot-jax study run` (42 runs; rerunning skips finished runs, resumes interrupted ones);
# 3. `spot-jax affinity train` per target with that target held out (light head, 3 seeds);
# 4. `spot-jax affinity evaluate` over the folds (Table 1/2 layout, OUT/table.csv).
# PYTHON overrides the interpreter (default .venv/bin/python); CPU only by default.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${1:-runs/affinity_synthetic}"
python="${PYTHON:-.venv/bin/python}"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" TF_CPP_MIN_LOG_LEVEL=3
spot() { "$python" -m spot_jax.cli.main "$@"; }

mkdir -p "$out"
checkpoint="$(cd "$out" && pwd)/frozen_model/checkpoint_1500"
[ -e "$checkpoint/checkpoint" ] || "$python" scripts/generate/make_frozen_tiny.py --checkpoint_out "$checkpoint"
sed "s#^initial_checkpoint: null#initial_checkpoint: $checkpoint#" \
  gin_configs/affinity/synthetic_study.yaml > "$out/spec.yaml"
grep -q "^initial_checkpoint: $checkpoint" "$out/spec.yaml"

spot study run "$out/spec.yaml" --out "$out/study"
# Leave-one-target-out cross-validation: one fold per target (three head seeds each), so every
# target is scored by heads that never trained on it (neither as target nor as source).
targets="$("$python" -c 'import sys; from spot_jax.study.spec import load_spec
print(" ".join(load_spec(sys.argv[1], check_tasks=False).targets))' "$out/spec.yaml")"
folds=()
for target in $targets; do
  spot affinity train "$out/study/results.csv" --study_dir "$out/study" \
    --out "$out/heads/$target" --val_targets "$target" --seeds 0 1 2 --gin_file=affinity/light.gin
  folds+=("$out/heads/$target")
done
spot affinity evaluate "$out/study/results.csv" --head "${folds[@]}" --study_dir "$out/study" \
  --out "$out/table.csv"
