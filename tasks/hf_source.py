"""A read-only, offline seqio source over a Hugging Face `datasets` dataset.

Used only by the pool tasks whose data TFDS does not have; the `datasets` package is an
optional extra (`pip install spot-jax[hf]`) imported when a split is first read, never at
registration. A split is read from the first of:

1. `<data dir>/<task>/<split>.jsonl` (the JSONL override every file-backed task has; data dir
   = gin `get_task_data_dir.path` or `$SPOT_JAX_DATA_DIR`), with the task's schema;
2. `<hf dir>/<dataset id, "/" -> "__">/<config or "default">`, a `DatasetDict.save_to_disk`
   copy (hf dir = gin `get_hf_saved_dir.path` or `$SPOT_JAX_HF_DIR`), for machines without
   a Hugging Face cache;
3. `datasets.load_dataset(id, config, split=...)` from the local Hugging Face cache with
   `HF_DATASETS_OFFLINE=1` / `HF_HUB_OFFLINE=1` semantics: never a download.

When none has the data, `MissingDataError` names the dataset id, the config and the command
that fetches it on a connected machine. Sequence-of-ClassLabel columns (tags) are read as
their label names, scalar ClassLabels as ids; a task's `convert` function may reshape rows
(one raw row -> any number of examples).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional

import gin
import seqio
import tensorflow as tf

from tasks import sources

HF_DIR_ENV_VAR = "SPOT_JAX_HF_DIR"
# raw row, features -> examples with the schema's fields.
Convert = Callable[[Mapping[str, Any], Any], Iterable[Mapping[str, Any]]]


@gin.configurable
def get_hf_saved_dir(path: Optional[str] = None) -> Optional[str]:
  """Root of `save_to_disk` copies: `path`, else $SPOT_JAX_HF_DIR, else None."""
  return path or os.environ.get(HF_DIR_ENV_VAR) or None


def fetch_command(dataset_id: str, config: Optional[str]) -> str:
  """The shell command that puts a dataset into the Hugging Face cache."""
  args = repr(dataset_id) + (f", {config!r}" if config else "")
  return f"python -c \"import datasets; datasets.load_dataset({args})\""


def _import_datasets_offline():
  """`datasets`, with the Hub switched off (set before import when possible)."""
  if "datasets" not in sys.modules:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
  try:
    import datasets  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("This task reads a Hugging Face dataset: install the optional extra "
                      "with `pip install 'spot-jax[hf]'` (or `pip install datasets`).") from e
  datasets.config.HF_HUB_OFFLINE = True
  try:
    import huggingface_hub.constants as hub  # pylint: disable=import-outside-toplevel
    hub.HF_HUB_OFFLINE = True
  except ImportError:
    pass
  return datasets


def label_names(features: Any, path: Sequence[str]) -> Optional[list[str]]:
  """ClassLabel names at `path` of a `datasets.Features` (through lists / Sequences)."""
  feature = features
  for key in path:
    feature = _inner(feature)[key]
  feature = _inner(feature)
  return list(feature.names) if hasattr(feature, "names") else None


def _inner(feature: Any) -> Any:
  while True:
    if isinstance(feature, (list, tuple)) and len(feature) == 1:
      feature = feature[0]
    elif hasattr(feature, "feature") and not hasattr(feature, "names"):
      feature = feature.feature  # datasets.Sequence / List
    else:
      return feature


def _tag_columns(features: Any) -> dict[str, list[str]]:
  """Top-level sequence-of-ClassLabel columns -> label names."""
  out = {}
  for name, feature in features.items():
    inner = _inner(feature)
    if inner is not feature and hasattr(inner, "names"):
      out[name] = list(inner.names)
  return out


class HfDataSource(seqio.DataSource):
  """A Hugging Face dataset split map, read offline (see the module docstring)."""

  def __init__(self, task_name: str, dataset_id: str, config: Optional[str],
               splits: Mapping[str, str], schema: Mapping[str, str], *,
               convert: Optional[Convert] = None, sizes: Optional[Mapping[str, int]] = None,
               hint: str = ""):
    super().__init__(splits=tuple(splits))
    self._task_name = task_name
    self._dataset_id = dataset_id
    self._config = config
    self._split_map = dict(splits)
    self._schema = dict(schema)
    self._convert = convert
    self._sizes = dict(sizes or {})
    self._hint = hint
    identity = {s: s for s in splits}
    self._jsonl = sources.JsonlDataSource(task_name, schema, identity, hint=self.missing_text())

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  @property
  def dataset_id(self) -> str:
    return self._dataset_id

  @property
  def config(self) -> Optional[str]:
    return self._config

  def missing_text(self) -> str:
    return (f"Hugging Face dataset {self._dataset_id!r} (config {self._config!r}); fetch it "
            f"into the cache on a connected machine with `{fetch_command(self._dataset_id, self._config)}`"
            + (f"; {self._hint}" if self._hint else ""))

  def missing_message(self, split: str) -> str:
    return (f"Task {self._task_name!r}: split {split!r} ({self._split_map[split]!r} of "
            f"{self.missing_text()}) is not in the local Hugging Face cache (read offline), "
            f"not saved under ${HF_DIR_ENV_VAR}, and there is no JSONL override "
            f"({self._jsonl.path(split) or f'${sources.DATA_DIR_ENV_VAR}/{self._task_name}/{split}.jsonl'}).")

  def saved_path(self) -> Optional[str]:
    root = get_hf_saved_dir()
    if root is None:
      return None
    return os.path.join(root, self._dataset_id.replace("/", "__"), self._config or "default")

  def list_shards(self, split: str) -> Sequence[str]:
    return [f"hf:{self._dataset_id}/{self._config or 'default'}:{self._split_map[split]}"]

  def _jsonl_path(self, split: str) -> Optional[str]:
    path = self._jsonl.path(split)
    return path if path and tf.io.gfile.exists(path) else None

  def _load(self, split: str):
    """The `datasets.Dataset` of `split` (saved copy, else offline cache)."""
    datasets = _import_datasets_offline()
    source_split = self._split_map[split]
    saved = self.saved_path()
    if saved and os.path.isdir(saved):
      data = datasets.load_from_disk(saved)
      base = source_split.split("[")[0]
      if base == source_split:
        return data[base]
      # A slice such as "train[:90%]", resolved as `load_dataset` resolves it.
      [absolute] = datasets.ReadInstruction.from_spec(source_split).to_absolute(
          {base: data[base].num_rows})
      return data[base].select(range(absolute.from_, absolute.to))
    try:
      return datasets.load_dataset(self._dataset_id, self._config, split=source_split)
    except (ConnectionError, FileNotFoundError, OSError, ValueError) as e:
      raise sources.MissingDataError(self.missing_message(split)) from e

  def _rows(self, data) -> Iterable[dict[str, Any]]:
    tags = _tag_columns(data.features)
    for raw in data:
      row = dict(raw)
      for column, names in tags.items():
        row[column] = [names[i] for i in row[column]]
      examples = self._convert(row, data.features) if self._convert else [row]
      for ex in examples:
        yield {k: ex[k] for k in self._schema}

  def get_dataset(self, split: str = "train", shuffle: bool = True,
                  seed: Optional[int] = None, shard_info: Optional[seqio.ShardInfo] = None,
                  **kwargs: Any) -> tf.data.Dataset:
    sources._check_split(self._task_name, split, self._split_map)  # pylint: disable=protected-access
    if self._jsonl_path(split):
      return self._jsonl.get_dataset(split, shuffle=shuffle, seed=seed, shard_info=shard_info)
    data = self._load(split)
    return sources.records_dataset(lambda: self._rows(data), self._schema, shard_info)

  def num_input_examples(self, split: str) -> Optional[int]:
    """The JSONL override's line count, else the known size, else None."""
    if self._jsonl_path(split):
      return self._jsonl.num_input_examples(split)
    return self._sizes.get(split)
