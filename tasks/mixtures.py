"""SPoT's source-mixture families (Table 1, plus "all") as seqio Mixtures.

`spot_mix_<family>` mixes the family's tasks, `spot_mix_<family>_taskless` their taskless
twins; families and members are in `tasks.registry.mixture_families()`. Mixing is
examples-proportional with each task's rate capped at K = 2**19 examples, like
`seqio.mixing_rate_num_examples(maximum=2**19)` on cached tasks, which counts the examples
after preprocessing (ReCoRD: one per answer). Those counts come from the registry first
(`registry.train_size`), so rates are known offline and do not depend on which data happens to
be prepared; tasks of unknown size fall back to seqio's count (TFDS metadata, or the JSONL line
count).
"""

from __future__ import annotations

import functools

import seqio

from tasks import glue, registry, sources, spot_suite  # pylint: disable=unused-import


def capped_rate(task: seqio.Task, maximum: int = registry.MIXING_CAP) -> float:
  """min(number of training examples, maximum), known sizes first."""
  size = registry.train_size(task.name)
  if size is not None:
    return float(min(size, maximum))
  if not task.cache_dir and task.num_input_examples("train") is None:
    raise sources.MissingDataError(
        f"Task {task.name!r} has no known size and its training data is not available to "
        f"count, so its mixing rate is unknown. {registry.get_info(task.name).download}.")
  return seqio.mixing_rate_num_examples(task, maximum=maximum)


def register_mixtures() -> list[str]:
  """Registers every family's mixture (both variants) unless present; returns new names."""
  added = []
  rate = functools.partial(capped_rate, maximum=registry.MIXING_CAP)
  for family, members in registry.mixture_families().items():
    for taskless in (False, True):
      name = registry.mixture_name(family, taskless=taskless)
      if name in seqio.MixtureRegistry.names():
        continue
      tasks = [registry.taskless_name(t) if taskless else t for t in members]
      seqio.MixtureRegistry.add(name, tasks, default_rate=rate)
      added.append(name)
  return added


register_mixtures()
