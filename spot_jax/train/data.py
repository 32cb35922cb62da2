"""seqio input pipelines: deterministic training batches addressed by step, per-host shards."""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np
import seqio
import tensorflow as tf

from spot_jax.tasks_util import get_task_or_mixture

MODEL_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")


def feature_converter() -> seqio.FeatureConverter:
  return seqio.EncDecFeatureConverter(pack=False)


def train_batches(task_name: str, feature_lengths: Mapping[str, int], batch_size: int, *,
                  seed: int, start_step: int = 0,
                  shard_info: seqio.ShardInfo | None = None,
                  max_examples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Endless batches of model features for this host, starting at batch number `start_step`.

  The order depends only on (task, seed, shard, max_examples): a resumed run sees exactly the
  batches an uninterrupted one would. `batch_size` is this host's share of the global batch.
  `max_examples`: train on the first N examples of the train split (`limited_dataset`).
  """
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
  dataset = dataset.batch(batch_size, drop_remainder=True).skip(start_step)
  return dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


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
                     "MAX_TRAIN_EXAMPLES = None")
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
