"""The embedded default: the whole prompt-tuning path on the synthetic world, no downloads.

1. Pretrain the `tiny_byte` frozen model on the synthetic pretraining mixture and write it as a
   T5X checkpoint (reused when already there).
2. Prompt-tune it on a synthetic task, exactly as a real run tunes LM-adapted T5 1.1
   (Adafactor lr 0.3, dropout 0.1, checkpoints + evaluation, MODEL_DIR contract).
3. Report validation accuracy of the untrained and the trained prompt.
"""

from __future__ import annotations

import dataclasses
import os
import time

from spot_jax.tasks_util import register_all_tasks
from spot_jax.train import run_dir
from spot_jax.train.evaluate import EvalConfig, evaluate_prompt
from spot_jax.train.loop import TrainConfig, train
from spot_jax.train.pretrain import PretrainConfig, pretrain


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  output_dir: str = "demo_output"
  task: str = "synthetic_sentiment_b"
  pretrain_steps: int = 1500
  train_steps: int = 600
  prompt_length: int = 20
  eval_examples: int = 200
  seed: int = 0


def run_demo(cfg: DemoConfig, log=print) -> dict[str, float]:
  """Runs the demo; returns {"untrained": score, "trained": score} (validation accuracy)."""
  register_all_tasks()
  start = time.perf_counter()
  log(f"[1/3] Pretraining the tiny frozen model on the synthetic world ({cfg.pretrain_steps} steps)")
  checkpoint = pretrain(PretrainConfig(output_dir=os.path.join(cfg.output_dir, "frozen_model"),
                                       task="synthetic_pretraining",
                                       train_steps=cfg.pretrain_steps, seed=cfg.seed), log=log)
  model_dir = os.path.join(cfg.output_dir, "runs", cfg.task)
  lengths = {"inputs": 128, "targets": 16}
  log(f"[2/3] Prompt tuning {cfg.task} on the frozen model -> {model_dir}")
  summary = train(TrainConfig(
      model_dir=model_dir, task=cfg.task, feature_lengths=lengths, train_steps=cfg.train_steps,
      model="tiny_byte", initial_checkpoint=checkpoint, prompt_length=cfg.prompt_length,
      checkpoint_period=max(cfg.train_steps // 4, 1), eval_period=max(cfg.train_steps // 4, 1),
      eval_metric="accuracy", max_eval_examples=cfg.eval_examples, key_step=cfg.train_steps // 2,
      log_period=50, seed=cfg.seed))
  log("[3/3] Evaluating the untrained prompt (step 0) against the best trained one")
  untrained = evaluate_prompt(EvalConfig(
      task=cfg.task, prompt_file=run_dir.prompt_path(model_dir, 0), model="tiny_byte",
      initial_checkpoint=checkpoint, prompt_length=cfg.prompt_length,
      num_examples=cfg.eval_examples))[cfg.task]["accuracy"]
  scores = {"untrained": untrained, "trained": summary.best_score}
  log(f"{cfg.task}: validation accuracy {untrained:.1f}% with the untrained prompt, "
      f"{summary.best_score:.1f}% after prompt tuning (best step {summary.best_step}); "
      f"{time.perf_counter() - start:.0f} s in all. Outputs in {cfg.output_dir}/")
  return scores
