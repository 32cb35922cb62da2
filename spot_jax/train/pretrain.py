"""Pretraining a small frozen model from scratch (the embedded default's stand-in for T5 1.1).

Released T5 1.1 checkpoints cannot be downloaded here, so the embedded default pretrains the
`tiny_byte` model on the synthetic corpus (prefix LM) and writes it as a T5X checkpoint; prompt
tuning then loads it exactly as it would load `t5_1_1_lm100k_base/checkpoint_1100000`.
All parameters train here (AdamW with warmup and cosine decay), unlike prompt tuning.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import optax

from spot_jax.checkpoints import t5x
from spot_jax.models.config import get_config
from spot_jax.models.losses import summed_loss
from spot_jax.models.t5 import T5
from spot_jax.train.data import train_batches


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  output_dir: str  # the checkpoint is written to output_dir/checkpoint_{train_steps}.
  task: str = "synthetic_corpus"
  model: str = "tiny_byte"
  feature_lengths: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"inputs": 96, "targets": 64})
  batch_size: int = 32
  train_steps: int = 1000
  learning_rate: float = 3e-3
  warmup_steps: int = 100
  dropout_rate: float = 0.0
  seed: int = 0
  log_period: int = 100


def pretrain(cfg: PretrainConfig, log=print) -> str:
  """Trains all parameters; returns the path of the T5X checkpoint written."""
  path = os.path.join(cfg.output_dir, f"checkpoint_{cfg.train_steps}")
  if os.path.exists(os.path.join(path, t5x.CHECKPOINT_FILE)):
    log(f"Reusing pretrained model {path}")
    return path
  model = T5(get_config(cfg.model, dropout_rate=cfg.dropout_rate))
  tokens = jnp.ones((1, 4), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(cfg.seed), tokens, tokens)["params"]
  schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, cfg.warmup_steps,
                                                cfg.train_steps, cfg.learning_rate * 0.1)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01))
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, batch, key):
    def loss_fn(params):
      logits = model.apply({"params": params}, batch["encoder_input_tokens"],
                           batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                           enable_dropout=cfg.dropout_rate > 0, rngs={"dropout": key})
      loss, metrics = summed_loss(logits, batch["decoder_target_tokens"])
      return loss / metrics["num_tokens"], metrics
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, metrics["token_accuracy"]

  batches = train_batches(cfg.task, cfg.feature_lengths, cfg.batch_size, seed=cfg.seed)
  key = jax.random.PRNGKey(cfg.seed + 1)
  for i in range(1, cfg.train_steps + 1):
    params, opt_state, loss, accuracy = step(params, opt_state, next(batches),
                                             jax.random.fold_in(key, i))
    if i % cfg.log_period == 0 or i == cfg.train_steps:
      log(f"pretrain step {i}/{cfg.train_steps}: loss/token {float(loss):.3f}, "
          f"token accuracy {100 * float(accuracy):.1f}%")
  t5x.write_checkpoint(path, jax.device_get(params), step=cfg.train_steps)
  return path
