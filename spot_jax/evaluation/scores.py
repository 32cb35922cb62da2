"""Checkpoint scores and best steps, as the `t5` library defines them.

A task's score is the mean of its metrics (SPoT footnote 5: MRPC the mean of F1 and accuracy,
STS-B of Pearson and Spearman). Evaluations of one task on several splits form one group whose
score is the mean of theirs: MNLI is evaluated on its matched and mismatched validation sets
(result keys `<task>_matched`, `<task>_mismatched`) and scored as their mean, as t5's
`t5/evaluation/eval_utils.py` puts `MNLIm` and `MNLImm` in the group "MNLI" that
`compute_avg_glue` averages. A mixture's score is the mean of its groups' scores.

Best steps follow `eval_utils.metric_group_max`: a NaN score (a constant prediction gives a NaN
Pearson; one NaN task makes a mixture's mean NaN) is the worst score (t5 fills NaN with -1e9
before `idxmax`), so it is the best step only while no evaluation has a number; each task
(group) of a mixture keeps its own best step besides the mixture's.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import numpy as np

MEAN_OF_METRICS = "mean"  # the eval_metric name of the default checkpoint score.
SPLIT_GROUP_SUFFIXES = ("_matched", "_mismatched")  # results of one task on two splits.

Results = Mapping[str, Mapping[str, float]]  # {result key: {metric: value}}


def score_group(key: str) -> str:
  """The task (group) a result key scores for: `glue_mnli_mismatched` -> `glue_mnli`."""
  for suffix in SPLIT_GROUP_SUFFIXES:
    if key.endswith(suffix):
      return key[:-len(suffix)]
  return key


def group_scores(results: Results, metric: str | None = None) -> dict[str, float]:
  """{task (group): score} from one evaluation: the mean of each result's metrics (or its
  `metric` only, skipping results without it), averaged over a group's splits. NaN stays NaN."""
  members: dict[str, list[float]] = {}
  for key, metrics in results.items():
    if metric is None:
      if not metrics:
        continue
      value = float(np.mean(list(metrics.values())))
    elif metric in metrics:
      value = float(metrics[metric])
    else:
      continue
    members.setdefault(score_group(key), []).append(value)
  return {group: float(np.mean(values)) for group, values in members.items()}


def select_score(results: Results, metric: str | None) -> tuple[str, float]:
  """The checkpoint score and its name, from {result key: {metric: value}}.

  Default (metric None): the mean of the tasks' (groups') scores, named `MEAN_OF_METRICS`.
  With `metric` (EVAL_METRIC): that metric, averaged over each group's splits, then over the
  tasks that report it.
  """
  if not results or not any(results.values()):
    raise ValueError("No metrics to score: the evaluation returned none")
  scores = group_scores(results, metric)
  if not scores:
    available = sorted({k for m in results.values() for k in m})
    raise ValueError(f"EVAL_METRIC {metric!r} is not reported; available: {available} "
                     f"(or None for the mean of the metrics)")
  return (metric or MEAN_OF_METRICS), float(np.mean(list(scores.values())))


def _worst_if_nan(score: float | None) -> float:
  """t5's `fillna(-1e9)`: NaN ranks below every real score."""
  return -math.inf if score is None or math.isnan(score) else score


def is_better(score: float, best_step: int | None, best_score: float | None) -> bool:
  """Whether `score` replaces the best so far: the first evaluation always does (even NaN,
  as `idxmax` over all-NaN columns returns the first step), later ones when strictly higher,
  NaN counting as the worst score."""
  return best_step is None or _worst_if_nan(score) > _worst_if_nan(best_score)


def task_best_steps(previous: Mapping[str, Mapping[str, Any]], step: int, results: Results,
                    metric: str | None = None) -> dict[str, dict[str, Any]]:
  """{task (group): {"step", "score"}} updated with one evaluation: each task of a mixture
  (and MNLI as the mean of its splits) keeps its own best step, as `metric_group_max`."""
  updated = {group: dict(best) for group, best in previous.items()}
  for group, score in group_scores(results, metric).items():
    best = updated.get(group)
    if is_better(score, None if best is None else best["step"],
                 None if best is None else best["score"]):
      updated[group] = {"step": step, "score": score}
  return updated


def record_evaluation(summary: Any, step: int, results: Results, metric: str | None,
                      where: str = "") -> None:
  """Updates a run summary (`eval_metric`, `best_step`, `best_score`, `task_best_steps`) with
  the evaluation of `step`; logs every NaN score (it never becomes the best over a number)."""
  name, score = select_score(results, metric)
  summary.eval_metric = name
  nan_groups = sorted(g for g, s in group_scores(results, metric).items() if math.isnan(s))
  if nan_groups:
    logging.warning("%sstep %d: the %s score of %s is NaN (e.g. a constant prediction's "
                    "correlation); it counts as the worst score when choosing the best step",
                    f"{where}: " if where else "", step, name, ", ".join(nan_groups))
  if is_better(score, summary.best_step, summary.best_score):
    summary.best_step, summary.best_score = step, score
  summary.task_best_steps = task_best_steps(summary.task_best_steps, step, results, metric)
