"""Turns a `TaskInfo` plus a text format into registered seqio Tasks (prompted + taskless).

Registration is idempotent (existing names are skipped) and cheap: no data is touched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import seqio

from tasks import features, metrics, registry, sources

# benchmark word ("" for the taskless variant) -> preprocessors applied to raw examples.
FormatFn = Callable[[str], Sequence[Callable[..., Any]]]


@dataclasses.dataclass(frozen=True)
class TaskFormat:
  """How a task's raw examples become text, and how its outputs are scored.

  Attributes:
    text: benchmark word -> text preprocessors (raw example -> inputs/targets strings).
    postprocess: seqio postprocess_fn for targets and predictions.
    tokenized: preprocessors run after tokenising and caching (e.g. random prefix-LM splits).
    split_filters: split -> predicate on raw examples; only accepted examples of that split
      are read (WSC trains on correct referents only, as T5 does).
    hf_convert: for Hugging Face sources, raw row -> examples (`tasks.hf_source.Convert`).
  """

  text: FormatFn
  postprocess: Optional[Callable[..., Any]] = None
  tokenized: Sequence[Callable[..., Any]] = ()
  split_filters: Mapping[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
  hf_convert: Optional[Callable[..., Any]] = None


def make_source(info: registry.TaskInfo, hf_convert: Optional[Callable[..., Any]] = None
                ) -> seqio.DataSource:
  """The (lazy) data source of a task: read-only TFDS, concatenated TFDS, Hugging Face
  (offline, `tasks.hf_source`) or JSONL."""
  if info.hf_id:
    from tasks import hf_source  # pylint: disable=import-outside-toplevel
    return hf_source.HfDataSource(info.name, info.hf_id, info.hf_config, info.splits,
                                  info.schema, convert=hf_convert, sizes=info.sizes,
                                  hint=info.download)
  if info.is_file_backed:
    return sources.JsonlDataSource(info.name, info.schema, info.splits, sizes=info.sizes,
                                   hint=info.download)
  parts = [sources.GuardedTfdsDataSource(name, info.splits, task_name=info.name,
                                         sizes=info.sizes if len(info.tfds_names) == 1 else None,
                                         hint=info.download)
           for name in info.tfds_names]
  if len(parts) == 1:
    return parts[0]
  return sources.ConcatTfdsDataSource(parts, info.splits, sizes=info.sizes)


def _is_registered(name: str) -> bool:
  return name in seqio.TaskRegistry.names()


def register_task(info: registry.TaskInfo, fmt: TaskFormat) -> list[str]:
  """Registers `info.name` and its taskless twin unless present; returns the new names."""
  added = []
  for name, benchmark in ((info.name, info.benchmark), (info.taskless_name, "")):
    if _is_registered(name):
      continue
    source = make_source(info, fmt.hf_convert)
    if fmt.split_filters:
      source = sources.SplitFilteredDataSource(source, fmt.split_filters)
    seqio.TaskRegistry.add(
        name,
        source=source,
        preprocessors=[
            *fmt.text(benchmark),
            seqio.preprocessors.tokenize,
            seqio.CacheDatasetPlaceholder(),
            *fmt.tokenized,
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=features.t5_output_features(),
        postprocess_fn=fmt.postprocess,
        metric_fns=metrics.metric_fns(info.metrics),
    )
    added.append(name)
  return added


def register_module_tasks(module: str, formats: dict[str, TaskFormat]) -> list[str]:
  """Registers every registry task of `module` ("glue"/"spot_suite") with its format."""
  infos = registry.all_infos(module)
  missing = sorted({i.name for i in infos} - set(formats))
  if missing:
    raise KeyError(f"No text format for tasks {missing}")
  added = []
  for info in infos:
    added += register_task(info, formats[info.name])
  return added
