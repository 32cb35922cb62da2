"""Looking up seqio tasks and mixtures by name, with errors that list the closest names."""

from __future__ import annotations

import difflib
import functools

import seqio

from tasks.transfer_mixtures import (  # noqa: F401  (the task-side home of retrieval mixtures)
    TRANSFER_MIXTURE_PREFIX, TransferMixtureError, mixture_members, mixture_name,
    register_transfer_mixture)
from tasks.registry import register_all_tasks  # noqa: F401  (one definition, in the registry)


def get_task_or_mixture(name: str) -> seqio.Task | seqio.Mixture:
  """The registered task or mixture `name`; a ValueError lists close names when unknown."""
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    pass
  # The registry registers lazily: a name not registered yet makes every task module register
  # once (an entry point need not remember to call `register_all_tasks` before a lookup).
  register_all_tasks()
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    if name.startswith(TRANSFER_MIXTURE_PREFIX):
      return register_transfer_mixture(mixture_members(name))
    names = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f" Closest registered names: {close}." if close else ""
    raise ValueError(f"Unknown task or mixture {name!r} ({len(names)} registered; "
                     f"`spot-jax tasks list` prints them).{hint}") from None


def subtasks_with_metrics(name: str, split: str | None = "validation") -> list[seqio.Task]:
  """The tasks evaluated for `name`: itself, or a mixture's sub-tasks that define metrics and
  have `split` (as seqio's `evaluation.get_valid_eval_tasks`: DPR, which has no validation
  split, is skipped when the SuperGLUE mixture is validated). `split=None`: any split."""
  provider = get_task_or_mixture(name)
  if not isinstance(provider, seqio.Mixture):
    tasks = [provider]
  else:
    tasks = [t for t in provider.tasks if split is None or split in t.splits]
  return [t for t in tasks if t.metric_fns or t.score_metric_fns or t.predict_metric_fns]


def task_labels(name: str) -> tuple[str, ...] | None:
  """The label strings of a classification task (for rank classification and class-label
  prompt initialisation), or None when the task has no fixed label set.

  Synthetic tasks declare them; real tasks carry them in their postprocessor
  (`functools.partial(postprocessors.class_id, label_names=...)`).
  """
  from tasks import synthetic
  try:
    return synthetic.task_labels(name)
  except (KeyError, ValueError):
    pass
  provider = get_task_or_mixture(name)
  postprocessor = getattr(provider, "postprocessor", None)
  if isinstance(postprocessor, functools.partial):
    labels = postprocessor.keywords.get("label_names")
    if labels:
      return tuple(labels)
  return None
