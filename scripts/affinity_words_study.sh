#!/usr/bin/env bash
# The affinity head against every rival scorer on the demo's world, with intervals
# (docs/affinity.md, "A study that tells scorers apart"), in one command:
#   scripts/affinity_words_study.sh [OUT]        (default OUT=runs/affinity_words)
# 1. the demo's frozen model (tiny_words, pretrained as gin_configs/demo.gin says; the demo's
#    own pretraining stage, so a cached or shipped model is reused) as a T5X checkpoint, and a
#    copy of gin_configs/affinity/words_study.yaml pointing at it;
# 2. `spot-jax study run`: the 11 x 10 brute-force matrix, 3 seeds (396 runs; rerunning skips finished
#    runs, resumes interrupted ones);
# 3. `spot-jax affinity train --cross_validate`: leave one target out, 11 folds of 5 light heads
#    each, every fold trained on the 90 pool pairs that touch neither its target nor, as a
#    source, the target itself (Feng et al. 2023 §3.2);
# 4. `spot-jax affinity evaluate` over the folds with every rival (six similarities,
#    max-pairwise, TextEmb, prompt-Fisher, data size, random) and 95% bootstrap intervals over
#    the targets, plus the head's paired difference against each rival: OUT/table*.csv.
# PYTHON overrides the interpreter (default .venv/bin/python); CPU only by default.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${1:-runs/affinity_words}"
python="${PYTHON:-.venv/bin/python}"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" TF_CPP_MIN_LOG_LEVEL=3
spot() { "$python" -m spot_jax.cli.main "$@"; }

mkdir -p "$out"
out="$(cd "$out" && pwd)"
checkpoint="$("$python" - "$out" <<'PY'
import dataclasses, sys
from spot_jax.app import demo
cfg = dataclasses.replace(demo.load_config(), output_dir=sys.argv[1])
print(demo.pretrain_stage(cfg, demo.Console(sys.stderr)))
PY
)"
checkpoint="$(echo "$checkpoint" | tail -n 1)"
sed "s#^initial_checkpoint: null#initial_checkpoint: $checkpoint#" \
  gin_configs/affinity/words_study.yaml > "$out/spec.yaml"
grep -q "^initial_checkpoint: $checkpoint" "$out/spec.yaml"

spot study run "$out/spec.yaml" --out "$out/study" --pack 1
spot affinity train "$out/study/results.csv" --study_dir "$out/study" --out "$out/heads" \
  --cross_validate --seeds 0 1 2 3 4 --gin_file=affinity/light.gin
spot affinity evaluate "$out/study/results.csv" --head "$out/heads" --study_dir "$out/study" \
  --scorers "textemb:$checkpoint" "fisher:$checkpoint" --bootstrap 10000 \
  --ndcg_relevance gain --out "$out/table.csv"
