"""seqio input pipelines: deterministic training batches addressed by step, per-host shards.

Resuming at step N restores the tf.data iterator state saved with the train state (as T5X
checkpoints its dataset iterator: `t5x.checkpoints.Checkpointer` with `save_dataset`), under
MODEL_DIR/data_state/{step}/host_{i}; a run without one (older runs) replays with `.skip(N)`.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from spot_jax import macros
from typing import Iterator, Mapping

import numpy as np
import seqio
import tensorflow as tf

from tasks.lookup import get_task_or_mixture

MODEL_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
DATA_STATE_DIR = "data_state"


def feature_converter() -> seqio.FeatureConverter:
  return seqio.EncDecFeatureConverter(pack=False)


def _dataset(task_name: str, feature_lengths: Mapping[str, int], batch_size: int, seed: int,
             shard_info: seqio.ShardInfo | None, max_examples: int | None) -> tf.data.Dataset:
  """Endless shuffled batches [batch, length] of model features of this host's shard."""
  provider = get_task_or_mixture(task_name)  # clear error for unknown names before tf.data.
  if max_examples is None:
    dataset = seqio.get_dataset(task_name, task_feature_lengths=dict(feature_lengths),
                                feature_converter=feature_converter(), dataset_split="train",
                                shuffle=True, num_epochs=None, shard_info=shard_info, seed=seed,
                                verbose=False)
  else:
    dataset = limited_dataset(provider, feature_lengths, max_examples, seed=seed,
                              shard_info=shard_info)
    dataset = feature_converter()(dataset, task_feature_lengths=dict(feature_lengths))
  dataset = dataset.map(lambda ex: {k: ex[k] for k in MODEL_FEATURES})
  return dataset.batch(batch_size, drop_remainder=True)


def train_batches(task_name: str, feature_lengths: Mapping[str, int], batch_size: int, *,
                  seed: int, start_step: int = 0,
                  shard_info: seqio.ShardInfo | None = None,
                  max_examples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Endless batches of model features for this host, starting at batch number `start_step`
  (by replaying the pipeline; `TrainBatches` resumes from a saved iterator instead).

  The order depends only on (task, seed, shard, max_examples): a resumed run sees exactly the
  batches an uninterrupted one would. `batch_size` is this host's share of the global batch.
  `max_examples`: train on the first N examples of the train split (`limited_dataset`).
  """
  dataset = _dataset(task_name, feature_lengths, batch_size, seed, shard_info, max_examples)
  return dataset.skip(start_step).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


class TrainBatches:
  """`train_batches` whose position is saved with each checkpoint and restored on resume.

  `save(model_dir, step)` writes the iterator state (position and shuffle buffer) of this host
  to MODEL_DIR/data_state/{step}/host_{index}; `TrainBatches(..., model_dir=, start_step=N)`
  restores step N's state when present (no replay: a resume at step 250000 starts in
  seconds), else replays N batches.
  """

  def __init__(self, task_name: str, feature_lengths: Mapping[str, int], batch_size: int, *,
               seed: int, start_step: int = 0, shard_info: seqio.ShardInfo | None = None,
               max_examples: int | None = None, model_dir: str | None = None):
    dataset = _dataset(task_name, feature_lengths, batch_size, seed, shard_info, max_examples)
    self.host = shard_info.index if shard_info else 0
    saved = self._path(model_dir, start_step) if model_dir and start_step else None
    self.restored = bool(saved and tf.io.gfile.exists(saved + ".index"))
    if start_step and not self.restored:
      dataset = dataset.skip(start_step)
    self.iterator = iter(dataset.prefetch(tf.data.AUTOTUNE))
    if self.restored:
      tf.train.Checkpoint(iterator=self.iterator).read(saved).assert_consumed()

  def _path(self, model_dir: str, step: int) -> str:
    return os.path.join(model_dir, DATA_STATE_DIR, str(step), f"host_{self.host}", "iterator")

  def __iter__(self) -> TrainBatches:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in next(self.iterator).items()}

  def save(self, model_dir: str, step: int, keep: int | None = None) -> None:
    """Writes the state after `step` batches (atomically: a temp dir renamed into place), then
    deletes all but the newest `keep` saved steps."""
    final = os.path.dirname(self._path(model_dir, step))
    root = os.path.join(model_dir, DATA_STATE_DIR)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(final), prefix=".tmp-")
    try:
      tf.train.Checkpoint(iterator=self.iterator).write(os.path.join(tmp, "iterator"))
      shutil.rmtree(final, ignore_errors=True)
      os.rename(tmp, final)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    if keep:
      steps = sorted(int(d) for d in os.listdir(root) if d.isdigit())
      for old in steps[:-keep]:
        shutil.rmtree(os.path.join(root, str(old)), ignore_errors=True)


def limited_dataset(task: seqio.Task | seqio.Mixture, feature_lengths: Mapping[str, int],
                    max_examples: int, *, seed: int, split: str = "train",
                    shard_info: seqio.ShardInfo | None = None) -> tf.data.Dataset:
  """The first `max_examples` preprocessed examples of `split`, shuffled and repeated endlessly.

  The subset is fixed before any shuffling: the source read in its stored order
  (`shuffle=False`), preprocessed, then `take(max_examples)`, the same set for every seed and
  every run, as the affinity paper's 50K/10K caps and low-resource runs use. Hosts then take
  their shard of that subset; each epoch is a seeded full shuffle of it.
  """
  if max_examples <= 0:
    raise ValueError(f"max_train_examples must be positive, got {max_examples}")
  if isinstance(task, seqio.Mixture):
    raise ValueError(f"max_train_examples applies to one task, but {task.name!r} is a mixture "
                     "(its rates come from the full datasets); cap a single task, or leave "
                     f"{macros.gin_name('max_train_examples')} = None")
  dataset = task.get_dataset(dict(feature_lengths), split=split, shuffle=False, num_epochs=1)
  dataset = dataset.take(max_examples)
  if shard_info is not None and shard_info.num_shards > 1:
    dataset = dataset.shard(shard_info.num_shards, shard_info.index)
  return dataset.cache().shuffle(max_examples, seed=seed, reshuffle_each_iteration=True).repeat()


def pad_batch(batch: Mapping[str, np.ndarray], batch_size: int) -> tuple[dict[str, np.ndarray], int]:
  """Pads a final partial batch with zero rows to `batch_size` (static shapes); returns real size."""
  size = len(next(iter(batch.values())))
  padded = {k: np.concatenate([v, np.zeros((batch_size - size,) + v.shape[1:], v.dtype)])
            if size < batch_size else np.asarray(v) for k, v in batch.items()}
  return padded, size
