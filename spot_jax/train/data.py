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
                  shard_info: seqio.ShardInfo | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Endless batches of model features for this host, starting at batch number `start_step`.

  The order depends only on (task, seed, shard): a resumed run sees exactly the batches an
  uninterrupted one would. `batch_size` is this host's share of the global batch.
  """
  get_task_or_mixture(task_name)  # clear error for unknown names before tf.data starts.
  dataset = seqio.get_dataset(task_name, task_feature_lengths=dict(feature_lengths),
                              feature_converter=feature_converter(), dataset_split="train",
                              shuffle=True, num_epochs=None, shard_info=shard_info, seed=seed,
                              verbose=False)
  dataset = dataset.map(lambda ex: {k: ex[k] for k in MODEL_FEATURES})
  dataset = dataset.batch(batch_size, drop_remainder=True).skip(start_step)
  return dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def pad_batch(batch: Mapping[str, np.ndarray], batch_size: int) -> tuple[dict[str, np.ndarray], int]:
  """Pads a final partial batch with zero rows to `batch_size` (static shapes); returns real size."""
  size = len(next(iter(batch.values())))
  padded = {k: np.concatenate([v, np.zeros((batch_size - size,) + v.shape[1:], v.dtype)])
            if size < batch_size else np.asarray(v) for k, v in batch.items()}
  return padded, size
