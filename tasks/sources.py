"""seqio data sources for the real tasks: read-only TFDS (single or concatenated) and JSONL.

Nothing here touches data at construction time: registration stays cheap and offline.
Missing data is reported when a split is first read, as a `MissingDataError` that says what
to download and where to put it.

File-backed tasks read `<data dir>/<task name>/<split>.jsonl` (one JSON object per line),
where the data dir is the gin binding `get_task_data_dir.path`, else `$SPOT_JAX_DATA_DIR`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import gin
import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

DATA_DIR_ENV_VAR = "SPOT_JAX_DATA_DIR"

_FIELD_TYPES = {"string": tf.string, "int": tf.int64, "float": tf.float32,
                "string_list": tf.string}
_FIELD_SHAPES = {"string_list": [None]}  # Other kinds are scalars.
_DEFAULTS = {"int": -1, "float": float("nan")}
# What TFDS raises when a dataset has not been prepared in the data dir.
_MISSING_TFDS_ERRORS = (AssertionError, FileNotFoundError, KeyError, tf.errors.NotFoundError,
                        tfds.core.registered.DatasetNotFoundError)


class MissingDataError(FileNotFoundError):
  """A task's data is not where it is read from; the message says how to get it."""


@gin.configurable
def get_task_data_dir(path: Optional[str] = None) -> Optional[str]:
  """Root of file-backed task data: `path`, else $SPOT_JAX_DATA_DIR, else None."""
  return path or os.environ.get(DATA_DIR_ENV_VAR) or None


def _check_split(name: str, split: str, splits: Mapping[str, str]) -> None:
  if split not in splits:
    raise ValueError(f"Task {name!r} has no split {split!r}; splits: {', '.join(splits)}")


class GuardedTfdsDataSource(seqio.TfdsDataSource):
  """A read-only `seqio.TfdsDataSource` with known sizes and a helpful missing-data error."""

  def __init__(self, tfds_name: str, splits: Mapping[str, str], *, task_name: str = "",
               sizes: Optional[Mapping[str, int]] = None, hint: str = "",
               tfds_data_dir: Optional[str] = None):
    super().__init__(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir, splits=dict(splits),
                     read_only=True)
    self._task_name = task_name or tfds_name
    self._split_map = dict(splits)
    self._sizes = dict(sizes or {})
    self._hint = hint

  def missing_message(self, split: str) -> str:
    name = self.tfds_dataset.name
    return (f"Task {self._task_name!r}: TFDS dataset {name!r} (split "
            f"{self._split_map.get(split, split)!r}) is not prepared in the TFDS data dir "
            f"({self._data_dir_text()}). To fix: "
            f"{self._hint or f'tfds build {name}'}.")

  def _data_dir_text(self) -> str:
    return (self.tfds_dataset.data_dir or os.environ.get("TFDS_DATA_DIR")
            or "~/tensorflow_datasets")

  def get_dataset(self, split: str = "train", shuffle: bool = True,
                  seed: Optional[int] = None, shard_info: Optional[seqio.ShardInfo] = None,
                  **kwargs: Any) -> tf.data.Dataset:
    _check_split(self._task_name, split, self._split_map)
    try:
      return super().get_dataset(split=split, shuffle=shuffle, seed=seed, shard_info=shard_info)
    except _MISSING_TFDS_ERRORS as e:
      raise MissingDataError(self.missing_message(split)) from e

  def list_shards(self, split: str) -> Sequence[str]:
    try:
      return super().list_shards(split)
    except _MISSING_TFDS_ERRORS as e:
      raise MissingDataError(self.missing_message(split)) from e

  def num_input_examples(self, split: str) -> Optional[int]:
    """Counted by TFDS when the data is prepared, else the known size (or None)."""
    try:
      size = super().num_input_examples(split)
    except (_MISSING_TFDS_ERRORS + (ValueError,)):
      size = None
    if size and np.isfinite(size):
      return int(size)
    return self._sizes.get(split)


class ConcatTfdsDataSource(seqio.DataSource):
  """Several TFDS datasets with identical features read as one (e.g. ANLI r1-r3, RACE).

  Each example gets an int32 feature "part": the index of the dataset it came from (ANLI's
  round).
  """

  def __init__(self, parts: Sequence[GuardedTfdsDataSource], splits: Mapping[str, str], *,
               sizes: Optional[Mapping[str, int]] = None):
    super().__init__(splits=tuple(splits))
    self._parts = tuple(parts)
    self._sizes = dict(sizes or {})

  @property
  def parts(self) -> tuple[GuardedTfdsDataSource, ...]:
    return self._parts

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    return [str(p.tfds_dataset.name) for p in self._parts]

  def get_dataset(self, split: str = "train", shuffle: bool = True,
                  seed: Optional[int] = None, shard_info: Optional[seqio.ShardInfo] = None,
                  **kwargs: Any) -> tf.data.Dataset:
    datasets = [p.get_dataset(split=split, shuffle=shuffle, seed=seed).map(
        lambda ex, i=i: {**ex, "part": tf.constant(i, tf.int32)})
                for i, p in enumerate(self._parts)]
    if shuffle:
      sizes = [p.num_input_examples(split) or 1 for p in self._parts]
      weights = [s / sum(sizes) for s in sizes]
      ds = tf.data.Dataset.sample_from_datasets(datasets, weights=weights, seed=seed)
    else:
      ds = datasets[0]
      for other in datasets[1:]:
        ds = ds.concatenate(other)
    if shard_info:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds

  def num_input_examples(self, split: str) -> Optional[int]:
    sizes = [p.num_input_examples(split) for p in self._parts]
    if all(sizes):
      return int(sum(sizes))
    return self._sizes.get(split)


class SplitFilteredDataSource(seqio.DataSource):
  """Another source whose listed splits keep only the examples a predicate accepts.

  For WSC, whose training split T5 restricts to correct referents
  (`t5/data/tasks.py:super_glue_wsc_v102_simple_train`, `wsc_simple(correct_referent_only=
  True)`) while its validation and test splits keep every candidate
  (`super_glue_wsc_v102_simple_eval`): one task name, both of T5's tasks. Sizes of filtered
  splits are unknown here (`num_input_examples` is None for them).
  """

  def __init__(self, source: seqio.DataSource, filters: Mapping[str, Any]):
    super().__init__(splits=tuple(source.splits))
    self._source = source
    self._filters = dict(filters)

  @property
  def source(self) -> seqio.DataSource:
    return self._source

  @property
  def filters(self) -> Mapping[str, Any]:
    """split -> predicate on raw examples."""
    return dict(self._filters)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return self._source.supports_arbitrary_sharding

  def list_shards(self, split: str) -> Sequence[str]:
    return self._source.list_shards(split)

  def get_dataset(self, split: str = "train", shuffle: bool = True,
                  seed: Optional[int] = None, shard_info: Optional[seqio.ShardInfo] = None,
                  **kwargs: Any) -> tf.data.Dataset:
    ds = self._source.get_dataset(split=split, shuffle=shuffle, seed=seed,
                                  shard_info=shard_info)
    return ds.filter(self._filters[split]) if split in self._filters else ds

  def num_input_examples(self, split: str) -> Optional[int]:
    return None if split in self._filters else self._source.num_input_examples(split)


def records_dataset(records, schema: Mapping[str, str],
                    shard_info: Optional[seqio.ShardInfo] = None) -> tf.data.Dataset:
  """A tf.data pipeline over `records()` (dicts with `schema`'s fields and kinds)."""
  signature = {k: tf.TensorSpec(_FIELD_SHAPES.get(v, ()), _FIELD_TYPES[v])
               for k, v in schema.items()}
  ds = tf.data.Dataset.from_generator(records, output_signature=signature)
  if shard_info:
    ds = ds.shard(shard_info.num_shards, shard_info.index)
  return ds


class JsonlDataSource(seqio.DataSource):
  """`<data dir>/<task>/<split>.jsonl` with a fixed schema, resolved when read.

  `schema` maps field -> "string" | "int" | "float" | "string_list" (a JSON list of
  strings, e.g. the words of a tagged sentence). String fields are required; a missing
  numeric field (e.g. the label of an unlabelled test set) reads as -1 / NaN.
  """

  def __init__(self, task_name: str, schema: Mapping[str, str], splits: Mapping[str, str], *,
               sizes: Optional[Mapping[str, int]] = None, hint: str = ""):
    unknown = sorted(set(schema.values()) - set(_FIELD_TYPES))
    if unknown:
      raise ValueError(f"Unknown JSONL field types {unknown}; use {sorted(_FIELD_TYPES)}")
    super().__init__(splits=tuple(splits))
    self._task_name = task_name
    self._schema = dict(schema)
    self._split_map = dict(splits)
    self._sizes = dict(sizes or {})
    self._hint = hint

  @property
  def schema(self) -> Mapping[str, str]:
    return self._schema

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def path(self, split: str) -> Optional[str]:
    """Where `split` is read from, or None while no data dir is configured."""
    root = get_task_data_dir()
    if root is None:
      return None
    return os.path.join(root, self._task_name, f"{self._split_map[split]}.jsonl")

  def missing_message(self, split: str) -> str:
    path = self.path(split)
    where = (path if path else f"${DATA_DIR_ENV_VAR}/{self._task_name}/"
             f"{self._split_map[split]}.jsonl (set ${DATA_DIR_ENV_VAR} or gin "
             "`get_task_data_dir.path`; it is unset)")
    fields = ", ".join(f"{k} ({v})" for k, v in self._schema.items())
    return (f"Task {self._task_name!r}: split {split!r} not found at {where}. Download "
            f"{self._hint}, convert it to JSONL with fields {fields}, and put it there.")

  def list_shards(self, split: str) -> Sequence[str]:
    path = self.path(split)
    return [path] if path else []

  def _checked_path(self, split: str) -> str:
    _check_split(self._task_name, split, self._split_map)
    path = self.path(split)
    if path is None or not tf.io.gfile.exists(path):
      raise MissingDataError(self.missing_message(split))
    return path

  def _records(self, path: str):
    with tf.io.gfile.GFile(path) as f:
      for line_no, line in enumerate(f, start=1):
        if not line.strip():
          continue
        row = json.loads(line)
        out = {}
        for field, kind in self._schema.items():
          if field in row and row[field] is not None:
            out[field] = row[field]
          elif kind in _DEFAULTS:
            out[field] = _DEFAULTS[kind]
          else:
            raise ValueError(f"{path}:{line_no}: missing string field {field!r}")
        yield out

  def get_dataset(self, split: str = "train", shuffle: bool = True,
                  seed: Optional[int] = None, shard_info: Optional[seqio.ShardInfo] = None,
                  **kwargs: Any) -> tf.data.Dataset:
    path = self._checked_path(split)
    return records_dataset(lambda: self._records(path), self._schema, shard_info)

  def num_input_examples(self, split: str) -> Optional[int]:
    """Known size, else the number of non-empty lines of the file, else None."""
    if split in self._sizes:
      return self._sizes[split]
    path = self.path(split) if split in self._split_map else None
    if not path or not tf.io.gfile.exists(path):
      return None
    with tf.io.gfile.GFile(path) as f:
      return sum(1 for line in f if line.strip())
