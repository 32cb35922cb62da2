"""Evaluating one prompt file on a task (`spot-jax eval`), or a checkpoint alone
(PROMPT_FILE=None: e.g. a full fine-tuning run's T5X checkpoint as INITIAL_CHECKPOINT_PATH)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import gin

from spot_jax import methods
from spot_jax.models import prompts
from spot_jax.evaluation import submission
from spot_jax.evaluation.evaluator import BEAM_SEARCH, PromptEvaluator
from spot_jax.fileio import atomic_write_bytes
from tasks.lookup import task_labels
from spot_jax.train.config import TrainConfig
from spot_jax.train.loop import build_frozen_model
from tasks import registry


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """One evaluation. Inputs and targets are never truncated (T5X's infer_eval)."""

  task: str
  prompt_file: str | None  # None: no prompt, the checkpoint alone.
  model: str = "base"
  initial_checkpoint: str | None = None
  batch_size: int = 32
  prompt_length: int = prompts.DEFAULT_PROMPT_LENGTH
  split: str = "validation"
  num_examples: int | None = None
  eval_mode: str = BEAM_SEARCH  # T5X's; or "greedy", "rank_classification".
  seed: int = 0  # seeds the frozen model only when no checkpoint is given.
  output_file: str | None = None


def _frozen_and_prompt(cfg: EvalConfig) -> tuple[Any, Any, Any]:
  """(model, frozen parameters, the prompt as trainables)."""
  as_train = TrainConfig(model_dir="", task=cfg.task, model=cfg.model,
                         initial_checkpoint=cfg.initial_checkpoint,
                         prompt_length=cfg.prompt_length, eval_mode=cfg.eval_mode,
                         seed=cfg.seed, dropout_rate=0.0)
  if cfg.prompt_file is None:  # the checkpoint alone (a full fine-tuning run's checkpoint).
    model, frozen_params, _, _ = build_frozen_model(as_train, methods.create("model"))
    return model, frozen_params, {}
  model, frozen_params, _, _ = build_frozen_model(as_train)
  prompt = prompts.from_file(cfg.prompt_file, cfg.prompt_length, model.config.emb_dim)
  return model, frozen_params, prompts.with_prompt({}, prompt)


def _evaluators(cfg: EvalConfig, *splits: str) -> tuple[list[PromptEvaluator], Any]:
  """One evaluator per split over one frozen model, and the prompt as trainables."""
  model, frozen_params, trainables = _frozen_and_prompt(cfg)
  evaluators = [PromptEvaluator(model, frozen_params, cfg.task, cfg.batch_size,
                                mode=cfg.eval_mode, split=split, num_examples=cfg.num_examples)
                for split in splits]
  return evaluators, trainables


def evaluate_prompt(cfg: EvalConfig) -> dict[str, dict[str, float]]:
  """{task: {metric: value}} of the prompt in `cfg.prompt_file`; also written to output_file."""
  (evaluator,), trainables = _evaluators(cfg, cfg.split)
  results = evaluator.evaluate(trainables)
  if cfg.output_file:
    atomic_write_bytes(cfg.output_file, json.dumps(results, indent=2).encode())
  return results


def write_test_predictions(cfg: EvalConfig, directory: str, split: str = "test"
                           ) -> tuple[dict[str, tuple[str, int]], list[str]]:
  """Predicts `split` (unlabelled: no metrics) and writes the GLUE/SuperGLUE leaderboard files
  (`evaluation.submission`) into `directory`, the diagnostic sets (AX with MNLI's prompt, AX-b
  and AX-g with RTE's) included; returns ({result key: (file, invalid predictions)}, the
  evaluated tasks in neither leaderboard, e.g. a mixture's DPR, which get no file). Decoding
  runs as far as on the labelled split `cfg.split` (its longest target): the unlabelled
  split's targets are placeholders, too short for a label or a ReCoRD answer."""
  model, frozen_params, trainables = _frozen_and_prompt(cfg)

  def evaluator(task: str, task_split: str) -> PromptEvaluator:
    return PromptEvaluator(model, frozen_params, task, cfg.batch_size, mode=cfg.eval_mode,
                           split=task_split, num_examples=cfg.num_examples)

  test, labelled = evaluator(cfg.task, split), evaluator(cfg.task, cfg.split)
  skipped = [key for key in test.tasks if submission.leaderboard_file(key) is None]
  keys = [key for key in test.tasks if key not in skipped]
  if not keys:
    raise ValueError(f"--predictions_out writes GLUE/SuperGLUE leaderboard files; "
                     f"{cfg.task!r} has no task in either leaderboard (evaluate it without "
                     "--predictions_out)")
  lengths = labelled.target_lengths()
  predictions = test.predict(trainables, decode_lengths=lengths, keys=keys)
  labels = {key: task_labels(test.tasks[key].task) for key in keys}
  first_key = {test.tasks[key].task: key for key in reversed(keys)}  # MNLI: its matched key.
  for task, key in first_key.items():
    for diagnostic in submission.DIAGNOSTICS.get(registry.base_name(task), ()):
      if task != registry.base_name(task):  # a taskless prompt predicts the taskless set.
        diagnostic = registry.taskless_name(diagnostic)
      predictions.update(evaluator(diagnostic, "test").predict(
          trainables, decode_lengths={diagnostic: lengths[key]}))
      labels[diagnostic] = task_labels(diagnostic)
  return submission.write_predictions(directory, predictions, labels), skipped
