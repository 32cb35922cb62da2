"""The demo's `affinity_head` ranking method: heads trained leave-one-target-out
(spot_jax.affinity.folds.train_held_out_heads) never see a pair of the target they score, and
a rerun reuses them. A synthetic study made with numpy: no prompt training."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from spot_jax.affinity import data, train
from spot_jax.affinity import folds as folds_lib
from spot_jax.affinity.predict import AffinityHead, head_dirs, held_out_folds

CFG = train.AffinityConfig(
    variant="light", hidden_dim=16, learning_rate=3e-3, warmup_steps=5, weight_decay=1e-4,
    train_steps=30, batch_size=8, eval_period=10, patience=2, checkpoint_period=30)
SOURCES = ("src_a", "src_b", "src_c")
TARGETS = ("tgt_x", "tgt_y", "tgt_z")
SEEDS = (0, 1)


def synthetic_study(seed: int = 0):
  """({(source, target): gain}, {task: keys [2, 4, 8]}): three sources, three targets."""
  rng = np.random.default_rng(seed)
  keys = {t: rng.normal(size=(2, 4, 8)).astype(np.float32) for t in SOURCES + TARGETS}
  gains = {(s, t): float(rng.normal(scale=5)) for s in SOURCES for t in TARGETS}
  return gains, keys


def records(fold_dir: str) -> list[dict]:
  out = []
  for head in head_dirs(fold_dir):
    with open(os.path.join(head, train.HEAD_JSON)) as f:
      out.append(json.load(f))
  return out


def params(fold_dir: str) -> list[dict[str, np.ndarray]]:
  out = []
  for head in head_dirs(fold_dir):
    with np.load(os.path.join(head, train.BEST_PARAMS)) as loaded:
      out.append({k: loaded[k] for k in loaded.files})
  return out


def mtimes(root: str) -> dict[str, int]:
  return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
          for d, _, files in os.walk(root) for f in files if f == train.BEST_PARAMS}


def test_each_targets_heads_train_only_on_the_other_targets_pairs(tmp_path):
  gains, keys = synthetic_study()
  folds = folds_lib.train_held_out_heads(CFG, gains, keys, str(tmp_path), SEEDS)
  assert sorted(map(tuple, folds.values())) == [(t,) for t in TARGETS]
  for fold_dir, held in folds.items():
    assert os.path.basename(fold_dir) == held[0]
    heads = records(fold_dir)
    assert len(heads) == len(SEEDS)
    for record in heads:
      assert record["val_targets"] == held
      pairs = {tuple(p) for p in record["train_pairs"]}
      assert pairs == {(s, t) for s in SOURCES for t in TARGETS if t != held[0]}
      # No validation on the held-out target: no early stop, no best step, the last params.
      assert record["steps_done"] == CFG.train_steps and not record["stopped_early"]
      assert record["best_val_spearman"] is None and record["config"]["eval_period"] == 0
      assert record["data_fingerprint"] == train.training_fingerprint(
          sorted(pairs), gains, keys)
  scorer = held_out_folds([[AffinityHead.load(d) for d in head_dirs(f)] for f in folds],
                          "affinity_head")
  for target in TARGETS:
    for head in scorer.by_target[target].heads:
      assert target not in {t for _, t in head.record["train_pairs"]}
    scores = scorer.score(keys[target][0], np.concatenate([keys[s] for s in SOURCES]),
                          target=target)
    assert scores.shape == (2 * len(SOURCES),) and np.isfinite(scores).all()


def test_held_out_gains_never_change_the_heads_and_a_rerun_reuses_them(tmp_path):
  gains, keys = synthetic_study()
  first = folds_lib.train_held_out_heads(CFG, gains, keys, str(tmp_path / "a"), SEEDS)
  before = mtimes(str(tmp_path / "a"))
  assert folds_lib.train_held_out_heads(CFG, gains, keys, str(tmp_path / "a"), SEEDS) == first
  assert mtimes(str(tmp_path / "a")) == before  # nothing trained again.

  # Other gains for tgt_x: its own heads are the same (trained afresh elsewhere, bit for bit);
  # the folds that train on tgt_x's pairs see other data and train again.
  changed = {p: (g + 7.0 if p[1] == "tgt_x" else g) for p, g in gains.items()}
  fresh = folds_lib.train_held_out_heads(CFG, changed, keys, str(tmp_path / "b"), SEEDS)
  for fold_a, fold_b in zip(sorted(first), sorted(fresh)):
    same = [all(np.array_equal(p[k], q[k]) for k in p)
            for p, q in zip(params(fold_a), params(fold_b))]
    assert all(same) == (os.path.basename(fold_a) == "tgt_x"), fold_a
  folds_lib.train_held_out_heads(CFG, changed, keys, str(tmp_path / "a"), SEEDS)
  after = mtimes(str(tmp_path / "a"))
  for path, mtime in before.items():
    assert (after[path] == mtime) == (f"{os.sep}tgt_x{os.sep}" in path), path


def test_folds_must_hold_each_target_once(tmp_path):
  gains, keys = synthetic_study()
  with pytest.raises(data.AffinityDataError, match="at most once"):
    folds_lib.train_held_out_heads(CFG, gains, keys, str(tmp_path), SEEDS,
                               folds=[["tgt_x"], ["tgt_x", "tgt_y"]])
  folds = folds_lib.train_held_out_heads(dataclasses.replace(CFG, train_steps=5), gains, keys,
                                     str(tmp_path), [0], folds=[["tgt_x", "tgt_y"]])
  (record,) = records(next(iter(folds)))
  assert {t for _, t in record["train_pairs"]} == {"tgt_z"}


# ------------------------------------------------- the demo's pool pairs and its claim (d)


def test_demo_world_rule_pairs_name_both_directions_inside_the_pool():
  from spot_jax.app.demo import world_rule_pairs
  pool = ["synthetic_words_sentiment_a", "synthetic_words_sentiment_3way",
          "synthetic_words_irony_a", "synthetic_words_topic_4way"]
  pairs = world_rule_pairs(pool)
  assert pairs == {
      ("synthetic_words_sentiment_3way", "synthetic_words_sentiment_a"): "harder -> easier",
      ("synthetic_words_sentiment_a", "synthetic_words_sentiment_3way"): "easier -> harder",
      ("synthetic_words_irony_a", "synthetic_words_sentiment_a"): "lookalike",
      ("synthetic_words_sentiment_a", "synthetic_words_irony_a"): "lookalike"}


def _ranking(spearman, regret, gains):
  return {"average": {"spearman": spearman, "regret_at_1": regret}, "gain_of_top_k": gains}


def test_claim_d_is_computed_from_the_head_seeds_mean_against_cosine():
  from spot_jax.app.demo_report import compare_scorers, head_beats_cosine
  rankings = {"cosine": _ranking(0.1, 5.0, [1.0, 2.0, 3.0]),
              "affinity_head/seed_0": _ranking(0.5, 2.0, [2.0, 3.0, 4.0]),
              "affinity_head/seed_1": _ranking(0.3, 6.0, [0.0, 1.0, 2.0]),
              "affinity_head/seed_2": _ranking(0.4, 1.0, [1.0, 2.0, 3.0]),
              "random": _ranking(0.0, 7.0, [0.5, 1.0, 1.5])}
  scorers = compare_scorers(rankings)
  head = scorers["affinity_head"]
  assert head["seeds"] == 3 and head["spearman"]["mean"] == pytest.approx(0.4)
  assert head["spearman"]["std"] == pytest.approx(0.1)
  assert head["regret_at_1"]["mean"] == pytest.approx(3.0)
  assert head["gain_at_3"]["values"] == [4.0, 2.0, 3.0]
  assert scorers["cosine"]["spearman"]["std"] == 0.0
  assert head_beats_cosine(scorers)["holds"]
  # A head that ranks better but loses more at the top does not hold (d).
  rankings["affinity_head/seed_1"] = _ranking(0.3, 12.1, [0.0, 1.0, 2.0])
  d = head_beats_cosine(compare_scorers(rankings))
  assert d["evaluated"] and not d["holds"]
  assert not head_beats_cosine({"affinity_head": head})["evaluated"]
