"""The affinity paper's protocol (Feng et al., EMNLP 2023): pool pairs, per-run caps, the
paper's spec against its reference tables, `affinity train --spec` / `evaluate` / `ablate`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spot_jax.affinity import data, pairs
from spot_jax.study import runner
from spot_jax.study.spec import SpecError, StudySpec

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["synthetic_sentiment_a", "synthetic_nli_facts", "synthetic_reverse"]
TARGET = "synthetic_sentiment_b"
SMALL = dict(model="models/tiny_byte.gin", source_steps=10, target_steps=10, key_step=5)


def small_spec(**overrides) -> StudySpec:
  values = dict(name="tiny", sources=SOURCES, targets=[TARGET], seeds=[0, 1], **SMALL)
  values.update(overrides)
  return StudySpec.from_dict(values)


# ----------------------------------------------------------------------------- the sampler


def test_pool_pair_sampler_is_reproducible_ordered_distinct_and_draws_exactly_m():
  pool = [f"task_{i:02d}" for i in range(44)]
  first = pairs.sample_pool_pairs(pool, 400, seed=0)
  assert first == pairs.sample_pool_pairs(list(reversed(pool)), 400, seed=0)  # order-free.
  assert first != pairs.sample_pool_pairs(pool, 400, seed=1)
  assert len(first) == len(set(first)) == 400
  assert all(i != j and i in pool and j in pool for i, j in first)
  # Ordered pairs: both directions of a pair can be drawn, and all n (n - 1) can be.
  every = pairs.sample_pool_pairs(pool, 44 * 43, seed=3)
  assert len(set(every)) == 44 * 43 and ("task_00", "task_01") in every
  assert ("task_01", "task_00") in every


def test_pool_pair_sampler_rejects_more_pairs_than_the_pool_holds():
  with pytest.raises(pairs.PairSamplingError, match=r"num_pairs 7 > the 6 ordered pairs"):
    pairs.sample_pool_pairs(["a", "b", "c"], 7, seed=0)
  with pytest.raises(pairs.PairSamplingError, match="more than once"):
    pairs.sample_pool_pairs(["a", "a", "b"], 1, seed=0)
  with pytest.raises(SpecError, match=r"pool_pairs: num_pairs 7 > the 6 ordered pairs"):
    small_spec(pool_pairs={"num_pairs": 7})


def test_novel_targets_never_enter_the_training_pairs_of_a_pool_split():
  pool = [f"p{i}" for i in range(6)]
  novel = ["n0", "n1"]
  gains = {p: 1.0 for p in pairs.sample_pool_pairs(pool, 20, seed=0)}
  gains.update({(s, t): 2.0 for s in pool for t in novel})
  split = data.pool_split(gains, novel, num_pairs=12, seed=0)
  assert len(split.train) == 12 and split.val_targets == novel
  assert all(s in pool and t in pool for s, t in split.train)
  assert {t for _, t in split.val} == set(novel) and len(split.val) == 12
  with pytest.raises(data.AffinityDataError, match="n0.*is a source"):
    data.pool_split({**gains, ("n0", "p1"): 0.0}, novel, num_pairs=None, seed=0)


# ----------------------------------------------------------------------------- the study plan


def test_pool_pair_study_runs_pool_baselines_sampled_transfers_and_the_targets_brute_force():
  spec = small_spec(pool_pairs={"num_pairs": 4, "seed": 1})
  jobs = runner.plan(spec, "/study")
  sampled = pairs.sample_pool_pairs(SOURCES, 4, 1)
  kinds = {k: [j for j in jobs if j.kind == k] for k in runner.KINDS}
  assert len(kinds["source"]) == 3 * 2
  assert {j.target for j in kinds["baseline"]} == {*SOURCES, TARGET}
  assert len(kinds["baseline"]) == 4 * 2
  transfers = [(j.source, j.target) for j in kinds["transfer"]]
  assert sorted(set(transfers)) == sorted({*sampled, *((s, TARGET) for s in SOURCES)})
  assert len(transfers) == (4 + 3) * 2
  lines = runner.describe_plan(spec, jobs)
  assert "  4 pool pairs (source i -> source j, sampled with seed 1) x 2 seeds = 8 pool " \
         "transfer runs (10 steps each)" in lines
  assert "  3 pool tasks x 2 seeds = 6 pool baseline runs (10 steps each)" in lines
  assert "  total: 28 runs, 280 train steps; 0 already finished" in lines
  # Without pool_pairs the study is the plain sources x targets one.
  plain = runner.plan(small_spec(), "/study")
  assert [sum(j.kind == k for j in plain) for k in runner.KINDS] == [6, 2, 6]


def test_per_run_training_caps_follow_task_then_role():
  spec = small_spec(pool_pairs={"num_pairs": 2},
                    max_train_examples={"sources": 50, "targets": 20, "synthetic_reverse": 7})
  caps = {(j.kind, j.source, j.target): j.gin_bindings["MAX_TRAIN_EXAMPLES"]
          for j in runner.plan(spec, "/study")}
  assert caps[("source", "synthetic_sentiment_a", None)] == "50"
  assert caps[("source", "synthetic_reverse", None)] == "7"
  assert caps[("baseline", None, TARGET)] == "20"
  assert caps[("transfer", "synthetic_reverse", TARGET)] == "20"
  assert caps[("baseline", None, "synthetic_nli_facts")] == "50"  # a pool task: its source cap.
  assert "MAX_TRAIN_EXAMPLES" not in spec.run_bindings()
  only_targets = small_spec(max_train_examples={"targets": 20})
  caps = {j.kind: j.gin_bindings["MAX_TRAIN_EXAMPLES"] for j in runner.plan(only_targets, "/s")}
  assert caps == {"source": "None", "baseline": "20", "transfer": "20"}
  assert small_spec(max_train_examples=30).run_bindings()["MAX_TRAIN_EXAMPLES"] == 30
  with pytest.raises(SpecError, match="'target' is neither 'sources', 'targets' nor a source "
                                      "or target of the study; did you mean 'targets'"):
    small_spec(max_train_examples={"target": 20})
  with pytest.raises(SpecError, match=r"max_train_examples.targets must be a positive integer"):
    small_spec(max_train_examples={"targets": 0})
