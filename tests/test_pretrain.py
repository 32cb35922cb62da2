"""Pretraining the frozen model: a cache keyed by everything that determines it, checkpoints
and resume after an interruption."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from spot_jax.checkpoints import t5x
from tasks.lookup import register_all_tasks
from spot_jax.train.pretrain import PretrainConfig, cache_dir, checkpoint_path, pretrain

register_all_tasks()
TINY = dict(task="synthetic_pretraining", feature_lengths={"inputs": 16, "targets": 8},
            batch_size=4, train_steps=4, warmup_steps=1, log_period=1, checkpoint_period=2)


def test_cache_is_keyed_by_everything_that_determines_the_model(tmp_path):
  base = PretrainConfig(output_dir=str(tmp_path), **TINY)
  variants = [dataclasses.replace(base, **change) for change in (
      dict(train_steps=5), dict(seed=1), dict(task="synthetic_corpus"), dict(model="tiny"),
      dict(learning_rate=1e-3), dict(feature_lengths={"inputs": 32, "targets": 8}))]
  dirs = {cache_dir(c) for c in [base, *variants]}
  assert len(dirs) == len(variants) + 1
  # Logging and checkpoint cadence do not change the model: same cache.
  assert cache_dir(dataclasses.replace(base, log_period=3, checkpoint_period=1)) == \
      cache_dir(base)


def test_interrupted_pretraining_resumes_to_the_same_model(tmp_path):
  straight = pretrain(PretrainConfig(output_dir=str(tmp_path / "a"), **TINY), log=lambda l: None)
  cfg = PretrainConfig(output_dir=str(tmp_path / "b"), **TINY)

  def interrupt_at_3(line: str) -> None:
    if line.startswith("pretrain step 3/"):
      raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    pretrain(cfg, log=interrupt_at_3)
  assert not (tmp_path / "b").joinpath(checkpoint_path(cfg)).exists()
  lines = []
  resumed = pretrain(cfg, log=lines.append)
  assert lines[0] == "Resuming pretraining at step 2/4"
  assert [l.split(":")[0] for l in lines[1:]] == ["pretrain step 3/4", "pretrain step 4/4"]
  a, b = t5x.read_checkpoint(straight), t5x.read_checkpoint(resumed)
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
  assert pretrain(cfg, log=lines.append) == resumed and lines[-1].startswith("Reusing")


def _leaves(tree):
  import jax
  return jax.tree_util.tree_leaves(tree)


def test_warmup_longer_than_the_run_is_refused_before_anything_is_written(tmp_path):
  cfg = PretrainConfig(output_dir=str(tmp_path), **dict(TINY, warmup_steps=4))
  with pytest.raises(ValueError, match="warmup_steps < train_steps"):
    pretrain(cfg, log=lambda line: None)
  assert not os.listdir(tmp_path)
