"""Pretraining a small frozen model from scratch (the embedded default's stand-in for T5 1.1).

Released T5 1.1 checkpoints cannot be downloaded here, so the embedded default pretrains the
`tiny_byte` model on the synthetic corpus (prefix LM) and writes it as a T5X checkpoint; prompt
tuning then loads it exactly as it would load `t5_1_1_lm100k_base/checkpoint_1100000`.
All parameters train here (AdamW with warmup and cosine decay), unlike prompt tuning.

The model lives in a directory named by everything that determines it (model, task, steps,
seed and the other settings: `cache_dir`), so a cached model is never reused for another
configuration. Pretraining saves its full state (parameters, optimizer, step) every
`checkpoint_period` steps with orbax and resumes from the last one after an interruption;
the data order is a function of (task, seed, step), so a resumed run ends with the same model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from spot_jax.checkpoints import t5x
from spot_jax.fileio import atomic_write_bytes
from spot_jax.models.config import get_config
from spot_jax.models.losses import summed_loss
from spot_jax.models.t5 import T5
from spot_jax.data.batches import train_batches


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
  checkpoint_period: int = 250

  def identity(self) -> dict[str, Any]:
    """Everything that determines the pretrained parameters."""
    fields = dataclasses.asdict(self)
    for name in ("output_dir", "log_period", "checkpoint_period"):
      fields.pop(name)
    fields["feature_lengths"] = dict(fields["feature_lengths"])
    return fields


def cache_dir(cfg: PretrainConfig) -> str:
  """output_dir/<model>-<task>-<steps>steps-seed<seed>-<hash of every other setting>."""
  identity = cfg.identity()
  digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
  name = f"{cfg.model}-{cfg.task}-{cfg.train_steps}steps-seed{cfg.seed}-{digest}"
  return os.path.join(cfg.output_dir, name)


def _record_bytes(cfg: PretrainConfig) -> bytes:
  """The JSON record of cfg's identity (cache_dir/pretrain.json, a stored model's .json)."""
  return json.dumps(cfg.identity(), indent=2, sort_keys=True).encode()


def _write_record(cfg: PretrainConfig) -> None:
  os.makedirs(cache_dir(cfg), exist_ok=True)
  atomic_write_bytes(os.path.join(cache_dir(cfg), "pretrain.json"), _record_bytes(cfg))


def checkpoint_path(cfg: PretrainConfig) -> str:
  """The T5X checkpoint `pretrain(cfg)` writes."""
  return os.path.join(cache_dir(cfg), f"checkpoint_{cfg.train_steps}")


def pretrain(cfg: PretrainConfig, log=print) -> str:
  """Trains all parameters (resuming from the last saved state); returns the path of the T5X
  checkpoint written."""
  import orbax.checkpoint as ocp

  if not 0 <= cfg.warmup_steps < cfg.train_steps:
    raise ValueError(f"Pretraining needs 0 <= warmup_steps < train_steps, got warmup_steps="
                     f"{cfg.warmup_steps} and train_steps={cfg.train_steps}; lower "
                     "PretrainConfig.warmup_steps or train longer.")
  path = checkpoint_path(cfg)
  if os.path.exists(os.path.join(path, t5x.CHECKPOINT_FILE)):
    log(f"Reusing pretrained model {path}")
    return path
  _write_record(cfg)
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

  manager = ocp.CheckpointManager(
      os.path.abspath(os.path.join(cache_dir(cfg), "train_state")),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                           enable_async_checkpointing=False))
  start = 0
  if manager.latest_step() is not None:
    start = int(manager.latest_step())
    state = manager.restore(start, args=ocp.args.StandardRestore(
        {"params": params, "opt_state": opt_state}))
    params, opt_state = state["params"], state["opt_state"]
    log(f"Resuming pretraining at step {start}/{cfg.train_steps}")
  batches = train_batches(cfg.task, cfg.feature_lengths, cfg.batch_size, seed=cfg.seed,
                          start_step=start)
  key = jax.random.PRNGKey(cfg.seed + 1)
  try:
    for i in range(start + 1, cfg.train_steps + 1):
      params, opt_state, loss, accuracy = step(params, opt_state, next(batches),
                                               jax.random.fold_in(key, i))
      if i % cfg.log_period == 0 or i == cfg.train_steps:
        log(f"pretrain step {i}/{cfg.train_steps}: loss/token {float(loss):.3f}, "
            f"token accuracy {100 * float(accuracy):.1f}%")
      if i % cfg.checkpoint_period == 0 and i < cfg.train_steps:
        manager.save(i, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
                     force=True)
        manager.wait_until_finished()
  finally:
    manager.close()
  t5x.write_checkpoint(path, jax.device_get(params), step=cfg.train_steps)
  return path


# ------------------------------------------------------------ a stored pretraining result
# A pretraining run's parameters can be shipped (the demo's model: spot_jax/app/assets/) as an
# .npz of float32 leaves ("encoder/layers_0/...") beside a JSON record of the PretrainConfig
# identity that made it. `install_stored` writes them where `pretrain(cfg)` would have written
# its checkpoint, but only for a cfg whose identity equals the record's, so a changed setting
# always pretrains again.


def save_stored(cfg: PretrainConfig, params: Mapping[str, Any], npz_path: str) -> str:
  """Writes params (the T5X tree) to npz_path and the record of cfg beside it (.json); returns
  the record's path."""
  import numpy as np
  from flax import traverse_util
  flat = traverse_util.flatten_dict(dict(params), sep="/")
  np.savez_compressed(npz_path, **{k: np.asarray(v, np.float32) for k, v in flat.items()})
  record = stored_record_path(npz_path)
  atomic_write_bytes(record, _record_bytes(cfg))
  return record


def stored_record_path(npz_path: str) -> str:
  return os.path.splitext(npz_path)[0] + ".json"


def stored_identity(npz_path: str) -> dict[str, Any] | None:
  """The PretrainConfig identity recorded beside a stored model, or None if either file is
  missing."""
  record = stored_record_path(npz_path)
  if not (os.path.exists(npz_path) and os.path.exists(record)):
    return None
  with open(record) as f:
    return json.load(f)


def install_stored(cfg: PretrainConfig, npz_path: str) -> str | None:
  """If the stored model at npz_path was made by cfg's identity, writes it as the T5X
  checkpoint `pretrain(cfg)` writes (checkpoint_path(cfg), with pretrain.json) and returns
  that path; otherwise None (the caller pretrains)."""
  import numpy as np
  from flax import traverse_util
  if stored_identity(npz_path) != json.loads(json.dumps(cfg.identity())):
    return None
  path = checkpoint_path(cfg)
  if not os.path.exists(os.path.join(path, t5x.CHECKPOINT_FILE)):
    _write_record(cfg)
    with np.load(npz_path) as stored:
      params = traverse_util.unflatten_dict({k: stored[k] for k in stored.files}, sep="/")
    t5x.write_checkpoint(path, params, step=cfg.train_steps)
  return path
