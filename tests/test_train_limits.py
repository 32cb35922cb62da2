"""Training-set limits: the first N examples of a split, fixed before shuffling, in run.json."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import seqio

from tasks.lookup import get_task_or_mixture, register_all_tasks
from spot_jax.train import run_dir
from spot_jax.data.batches import limited_dataset, train_batches

register_all_tasks()
TASK = "synthetic_sentiment_a"
LENGTHS = {"inputs": 48, "targets": 12}


def _inputs(dataset, count: int) -> list[bytes]:
  return [ex["inputs"].tobytes() for ex in dataset.take(count).as_numpy_iterator()]


def test_subset_is_the_first_n_examples_in_stored_order():
  task = get_task_or_mixture(TASK)
  first = _inputs(task.get_dataset(LENGTHS, split="train", shuffle=False, num_epochs=1), 20)
  epochs = _inputs(limited_dataset(task, LENGTHS, 20, seed=0), 60)
  assert len(set(first)) == 20
  for epoch in range(3):  # every epoch is a permutation of exactly those 20 examples.
    assert sorted(epochs[20 * epoch:20 * (epoch + 1)]) == sorted(first)
  assert epochs[:20] != first  # shuffled...
  assert epochs == _inputs(limited_dataset(task, LENGTHS, 20, seed=0), 60)  # ...reproducibly.
  other_seed = _inputs(limited_dataset(task, LENGTHS, 20, seed=1), 20)
  assert sorted(other_seed) == sorted(first) and other_seed != epochs[:20]


def test_hosts_split_the_same_subset():
  task = get_task_or_mixture(TASK)
  shards = [_inputs(limited_dataset(task, LENGTHS, 10, seed=0,
                                    shard_info=seqio.ShardInfo(index=i, num_shards=2)), 5)
            for i in range(2)]
  first = _inputs(task.get_dataset(LENGTHS, split="train", shuffle=False, num_epochs=1), 10)
  assert sorted(shards[0] + shards[1]) == sorted(first)


def test_train_batches_with_a_limit_resume_at_the_same_batch():
  batches = train_batches(TASK, LENGTHS, 4, seed=0, max_examples=12)
  run = [next(batches)["encoder_input_tokens"] for _ in range(6)]
  resumed = train_batches(TASK, LENGTHS, 4, seed=0, start_step=4, max_examples=12)
  np.testing.assert_array_equal(next(resumed)["encoder_input_tokens"], run[4])
  seen = {row.tobytes() for batch in run for row in batch}
  assert len(seen) == 12  # 6 batches of 4 = two epochs of the 12 examples.


def test_bad_limits_are_refused():
  with pytest.raises(ValueError, match="positive"):
    limited_dataset(get_task_or_mixture(TASK), LENGTHS, 0, seed=0)
  mixtures = seqio.MixtureRegistry.names()
  if mixtures:
    with pytest.raises(ValueError, match="mixture"):
      limited_dataset(seqio.get_mixture_or_task(sorted(mixtures)[0]), LENGTHS, 5, seed=0)


def test_limits_are_part_of_the_run_identity(tmp_path):
  summary = run_dir.RunSummary(task=TASK, model={"config": {}, "fingerprint": "x"},
                               prompt_length=4, seed=0, batch_size=8, feature_lengths=LENGTHS,
                               train_steps=10, key_step=5, max_train_examples=2000)
  run_dir.write_summary(str(tmp_path), summary)
  run_dir.check_compatible(str(tmp_path), summary, overwrite=False)
  for change in ({"max_train_examples": 5000}, {"max_train_examples": None},
                 {"max_eval_examples": 10000}):
    with pytest.raises(run_dir.RunDirError, match=next(iter(change))):
      run_dir.check_compatible(str(tmp_path), dataclasses.replace(summary, **change), False)
