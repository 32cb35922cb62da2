"""Evaluating one prompt file on a task (`spot-jax eval`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Mapping

import gin

from spot_jax import prompts
from spot_jax.evaluation.evaluator import PromptEvaluator
from spot_jax.train.loop import TrainConfig, eval_labels, build_frozen_model
from spot_jax.fileio import atomic_write_bytes


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  task: str
  prompt_file: str
  model: str = "base"
  initial_checkpoint: str | None = None
  feature_lengths: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"inputs": 512, "targets": 32})
  batch_size: int = 32
  prompt_length: int = prompts.DEFAULT_PROMPT_LENGTH
  split: str = "validation"
  num_examples: int | None = None
  eval_mode: str = "auto"
  seed: int = 0  # seeds the frozen model only when no checkpoint is given.
  output_file: str | None = None


def evaluate_prompt(cfg: EvalConfig) -> dict[str, dict[str, float]]:
  """{task: {metric: value}} of the prompt in `cfg.prompt_file`; also written to output_file."""
  as_train = TrainConfig(model_dir="", task=cfg.task, model=cfg.model,
                         initial_checkpoint=cfg.initial_checkpoint,
                         prompt_length=cfg.prompt_length, eval_mode=cfg.eval_mode,
                         seed=cfg.seed, dropout_rate=0.0)
  model, frozen_params, _, _ = build_frozen_model(as_train)
  prompt = prompts.from_file(cfg.prompt_file, cfg.prompt_length, model.config.emb_dim)
  evaluator = PromptEvaluator(model, frozen_params, cfg.task, cfg.feature_lengths,
                              cfg.batch_size, split=cfg.split, num_examples=cfg.num_examples,
                              task_labels=eval_labels(as_train))
  results = evaluator.evaluate(prompts.with_prompt({}, prompt))
  if cfg.output_file:
    atomic_write_bytes(cfg.output_file, json.dumps(results, indent=2).encode())
  return results
