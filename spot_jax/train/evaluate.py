"""Evaluating one prompt file on a task (`spot-jax eval`), or a checkpoint alone
(PROMPT_FILE=None: e.g. a full fine-tuning run's T5X checkpoint as INITIAL_CHECKPOINT_PATH)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import gin

from spot_jax import methods, prompts
from spot_jax.evaluation import submission
from spot_jax.evaluation.evaluator import GREEDY, PromptEvaluator
from spot_jax.fileio import atomic_write_bytes
from spot_jax.tasks_util import task_labels
from spot_jax.train.loop import TrainConfig, build_frozen_model


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
  eval_mode: str = GREEDY  # or "rank_classification".
  seed: int = 0  # seeds the frozen model only when no checkpoint is given.
  output_file: str | None = None


def _evaluators(cfg: EvalConfig, *splits: str) -> tuple[list[PromptEvaluator], Any]:
  """One evaluator per split over one frozen model, and the prompt as trainables."""
  as_train = TrainConfig(model_dir="", task=cfg.task, model=cfg.model,
                         initial_checkpoint=cfg.initial_checkpoint,
                         prompt_length=cfg.prompt_length, eval_mode=cfg.eval_mode,
                         seed=cfg.seed, dropout_rate=0.0)
  if cfg.prompt_file is None:  # the checkpoint alone (a full fine-tuning run's checkpoint).
    model, frozen_params, _, _ = build_frozen_model(as_train, methods.create("model"))
    trainables = {}
  else:
    model, frozen_params, _, _ = build_frozen_model(as_train)
    prompt = prompts.from_file(cfg.prompt_file, cfg.prompt_length, model.config.emb_dim)
    trainables = prompts.with_prompt({}, prompt)
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


def write_test_predictions(cfg: EvalConfig, path: str, split: str = "test"
                           ) -> dict[str, tuple[str, int]]:
  """Predicts `split` (unlabelled: no metrics) and writes GLUE/SuperGLUE submission files
  (`evaluation.submission`); returns {task: (file, invalid predictions)}. Greedy decoding
  runs as far as on the labelled split `cfg.split` (its longest target): the unlabelled
  split's targets are placeholders, too short for a label or a ReCoRD answer."""
  (evaluator, labelled), trainables = _evaluators(cfg, split, cfg.split)
  for task in evaluator.tasks:  # refuse unsupported tasks before predicting.
    submission.format_predictions(task, [], task_labels(task))
  predictions = evaluator.predict(trainables, decode_lengths=labelled.target_lengths())
  return submission.write_predictions(path, predictions,
                                      {task: task_labels(task) for task in predictions})
