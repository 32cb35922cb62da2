"""Checks of a run against its task and machine before MODEL_DIR is touched: the task reports
EVAL_METRIC, labels fit the targets length, memory suffices, and how much truncation costs."""

from __future__ import annotations

import logging
import os
from typing import Any

from spot_jax import macros
from spot_jax.models import prompts
from spot_jax.evaluation.evaluator import encode_labels
from spot_jax.models.t5 import T5
from tasks.lookup import get_task_or_mixture, subtasks_with_metrics, task_labels
from spot_jax.train import partitioning
from spot_jax.train.config import TrainConfig, validate_config


def check_task(cfg: TrainConfig, model: T5) -> None:
  """The task against the model and the settings: vocabulary, metrics, label lengths, memory."""
  provider = get_task_or_mixture(cfg.task)
  vocabulary = provider.output_features["targets"].vocabulary
  if vocabulary.vocab_size > model.config.vocab_size:
    raise ValueError(f"Task {cfg.task!r} has a vocabulary of {vocabulary.vocab_size} ids but "
                     f"the model {cfg.model!r} only {model.config.vocab_size}")
  check_task_settings(cfg)
  if cfg.prompt_init == "file":  # a bad prompt file fails before MODEL_DIR is touched.
    prompts.from_file(cfg.prompt_file, cfg.prompt_length, model.config.emb_dim)
  _check_memory(cfg, model)
  _warn_truncation(cfg)


def preflight(cfg: TrainConfig) -> TrainConfig:
  """Every check that needs no frozen model: `validate_config`, then the task's settings
  (`check_task_settings`). For planners (studies, transfers) before any run starts."""
  cfg = validate_config(cfg)
  check_task_settings(cfg)
  return cfg


def check_task_settings(cfg: TrainConfig) -> None:
  """The task exists, reports EVAL_METRIC, and its labels fit the targets length."""
  provider = get_task_or_mixture(cfg.task)
  vocabulary = provider.output_features["targets"].vocabulary
  if cfg.eval_period:
    evaluated = subtasks_with_metrics(cfg.task)
    if not evaluated:
      raise ValueError(f"Task {cfg.task!r} defines no metrics; set "
                       f"{macros.flag('eval_period', '0')}")
    if cfg.eval_metric is not None:
      reported = set()
      for task in evaluated:
        reported |= reported_metrics(task) or {cfg.eval_metric}
      if cfg.eval_metric not in reported:
        raise ValueError(f"EVAL_METRIC {cfg.eval_metric!r} is not reported by {cfg.task!r}; "
                         f"it reports {sorted(reported)}")
  for task in subtasks_with_metrics(cfg.task):  # labels cut short can never be right.
    try:
      encode_labels(task_labels(task.name) or (), vocabulary, cfg.feature_lengths["targets"])
    except ValueError as e:
      if cfg.eval_period:
        raise
      logging.warning("%s: training targets are cut short", e)


def reported_metrics(task: Any) -> set[str] | None:
  """The metric names a seqio task's metric functions report, found by calling each on a
  two-example probe (ids, then strings); None when a function accepts neither."""
  names: set[str] = set()
  for fn in list(task.metric_fns) + list(task.score_metric_fns) + list(task.predict_metric_fns):
    for probe in ([0, 1], ["a", "b"]):
      try:
        names |= set(fn(probe, probe))
        break
      except Exception:  # a probe of the wrong type: try the next one.
        continue
    else:
      return None
  return names


def _check_memory(cfg: TrainConfig, model: T5) -> None:
  """Refuses a batch whose encoder attention scores alone ([batch, heads, L, L] float32, per
  layer, kept for the backward pass) exceed this host's memory: an out-of-memory crash later."""
  length = cfg.feature_lengths["inputs"] + cfg.prompt_length
  batch = partitioning.host_batch_size(cfg.batch_size)
  per_layer = batch * model.config.num_heads * length * length * 4
  need = per_layer * model.config.num_encoder_layers
  try:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError):
    return
  if need > total:
    raise ValueError(f"inputs length {cfg.feature_lengths['inputs']} with batch size "
                     f"{cfg.batch_size} needs over {need / 2**30:.0f} GiB for attention "
                     f"alone (this host has {total / 2**30:.0f} GiB); lower "
                     "TASK_FEATURE_LENGTHS['inputs'] or BATCH_SIZE")


def _warn_truncation(cfg: TrainConfig, sample: int = 64) -> None:
  """Warns when most of a sample of training inputs is longer than the inputs length, and
  when the targets length cuts any sampled target of a generation task (one without a label
  set: classification labels that do not fit are refused by `check_task_settings`)."""
  try:
    tasks = subtasks_with_metrics(cfg.task) or [get_task_or_mixture(cfg.task)]
  except Exception:  # the warning is best effort; the pipeline itself reports real errors.
    return
  for position, task in enumerate(tasks):
    try:
      generation = hasattr(task, "get_dataset") and not task_labels(task.name)
      if position and not generation:  # inputs: the first task; targets: each generation task.
        continue
      dataset = task.get_dataset(sequence_length=None, split="train", shuffle=False)
      examples = list(dataset.take(sample).as_numpy_iterator())
    except Exception:
      continue
    lengths = [len(ex["inputs"]) for ex in examples]
    limit = cfg.feature_lengths["inputs"]
    cut = sum(max(n - limit, 0) for n in lengths) / max(sum(lengths), 1)
    if position == 0 and cut > 0.25:
      logging.warning("TASK_FEATURE_LENGTHS['inputs']=%d truncates %.0f%% of the input tokens "
                      "of %s (first %d examples); raise it if the task needs them", limit,
                      100 * cut, task.name, len(lengths))
    limit = cfg.feature_lengths["targets"]
    cut_targets = [len(ex["targets"]) + 1 for ex in examples  # + 1: the EOS seqio appends.
                   if len(ex["targets"]) + 1 > limit]
    if generation and cut_targets:
      logging.warning("TASK_FEATURE_LENGTHS['targets']=%d cuts %d of the first %d training "
                      "targets of %s (up to %d tokens with EOS): the model learns cut outputs "
                      "and never their end; raise it", limit, len(cut_targets), len(examples),
                      task.name, max(cut_targets))
