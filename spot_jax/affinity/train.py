"""Training the affinity head on (target key, source key, gain) examples.

Loss: the paper's smooth L1 with threshold beta on standardised gains,
  smooth_l1(u, v) = 0.5 (u - v)^2 / beta   if |u - v| <= beta,   |u - v| - 0.5 beta   otherwise.
optax.huber_loss(u, v, delta=beta) is beta * smooth_l1 (0.5 e^2 inside, beta (|e| - beta/2)
outside), so `smooth_l1` divides it by beta: equal at beta = 1, and for other beta the gradient
scale stays the paper's (the beta ablation would otherwise also change the step size).

Optimiser: AdamW (optax.adamw) with a linear warmup to a constant learning rate (the paper's
grid {1e-5, 2e-5, 3e-5} for the backbone; the light MLP trains from scratch with 1e-3).
Labels are standardised with the training pairs' mean and std; predictions are mapped back.

OUT_DIR: head.json (config, scale, label normaliser, split, best step and score; written when
training ends), best_params.npz (the trainable params at the best validation Spearman),
train_state/ (orbax, resume after a kill), metrics.jsonl and tensorboard/ (MetricsLogger).
Batches are a pure function of (seed, step), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Callable, Sequence

import flax.struct
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from scipy import stats

from spot_jax.affinity import model as model_lib
from spot_jax.affinity.data import Examples, KeyBank
from spot_jax.fileio import atomic_write_bytes

HEAD_JSON, BEST_PARAMS = "head.json", "best_params.npz"
FORMAT_NAME, FORMAT_VERSION = "spot-jax affinity head", 1


@gin.configurable
@dataclasses.dataclass(frozen=True)
class AffinityConfig:
  """One head training run (see gin_configs/affinity/)."""

  variant: str = "encoder"  # "encoder" | "light"
  model: str = "base"  # named T5Config of the backbone (encoder variant).
  checkpoint: str | None = None  # the frozen T5 checkpoint; None: random init (tests, benches).
  freeze_backbone: bool = False
  hidden_dim: int = 256
  learning_rate: float = 2e-5
  warmup_steps: int = 100
  weight_decay: float = 0.01
  train_steps: int = 2000
  batch_size: int = 16
  beta: float = 1.0
  num_pairs: int | None = 400  # M; None: every available training pair.
  val_fraction: float = 0.2
  split_seed: int = 0  # which targets are held out (fixed across training seeds).
  eval_period: int = 50
  patience: int = 10  # evaluations without improvement before stopping; 0: never.
  checkpoint_period: int = 100
  eval_batch_size: int = 256
  seed: int = 0  # pair sampling, init and data order.


def smooth_l1(predicted: jax.Array, label: jax.Array, beta: float = 1.0) -> jax.Array:
  """Elementwise smooth L1 with threshold beta (= optax.huber_loss(delta=beta) / beta)."""
  if beta <= 0:
    raise ValueError(f"smooth L1 needs beta > 0, got {beta}")
  return optax.huber_loss(predicted, label, delta=beta) / beta


def make_optimizer(cfg: AffinityConfig) -> optax.GradientTransformation:
  schedule: Any = cfg.learning_rate
  if cfg.warmup_steps > 0:
    schedule = optax.warmup_constant_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
  return optax.adamw(schedule, weight_decay=cfg.weight_decay)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Example indices [batch] of step `step` (1-based): epochs of seeded permutations."""
  positions = np.arange((step - 1) * batch_size, step * batch_size)
  epochs = positions // n
  out = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    order = np.random.default_rng([seed, int(epoch)]).permutation(n)
    mask = epochs == epoch
    out[mask] = order[positions[mask] % n]
  return out


@flax.struct.dataclass
class HeadState:
  step: jax.Array  # [] int32
  params: Any  # the trainable params.
  opt_state: Any
  best_score: jax.Array  # [] float32, the best validation Spearman (-inf before any).
  best_step: jax.Array  # [] int32
  evals_since_best: jax.Array  # [] int32


@dataclasses.dataclass(frozen=True)
class Backbone:
  """The encoder variant's frozen T5: config, params["encoder"] (None: random init) and the
  mean row norm of its embedding table (the input scale's target)."""

  config: Any = None
  encoder: Any = None
  target_norm: float = 1.0
  identity: dict = dataclasses.field(default_factory=dict)


def load_backbone(cfg: AffinityConfig) -> Backbone:
  """The light variant has none; a random-init backbone's embedding norm is sqrt(emb_dim), the
  expected row norm of T5's N(0, 1) embedding initialiser."""
  if cfg.variant == "light":
    return Backbone()
  from spot_jax.models.config import get_config
  config = get_config(cfg.model)
  if cfg.checkpoint is None:
    return Backbone(config, None, math.sqrt(config.emb_dim),
                    {"name": cfg.model, "checkpoint": None})
  from spot_jax.checkpoints.load import load_model
  loaded = load_model(cfg.checkpoint, config=config)
  return Backbone(loaded.config, loaded.params["encoder"],
                  model_lib.embedding_norm(loaded.params["token_embedder"]["embedding"]),
                  {"name": cfg.model, "checkpoint": os.path.abspath(cfg.checkpoint),
                   "fingerprint": loaded.fingerprint})


def split_params(params: dict[str, Any], freeze_backbone: bool
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
  """(trainable, frozen): the encoder subtree is frozen when asked."""
  if freeze_backbone and "encoder" in params:
    return {k: v for k, v in params.items() if k != "encoder"}, {"encoder": params["encoder"]}
  return params, {}


def initial_params(cfg: AffinityConfig, backbone: Backbone, lengths: tuple[int, int],
                   emb_dim: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
  """(head module, trainable params, frozen params)."""
  head = model_lib.make_head(cfg.variant, cfg.hidden_dim, backbone.config)
  params = model_lib.init_params(head, cfg.seed, *lengths, emb_dim, backbone.encoder)
  trainable, frozen = split_params(params, cfg.freeze_backbone)
  return head, trainable, frozen


@functools.lru_cache(maxsize=16)
def make_predict(head: Any) -> Callable:
  """jitted (trainable, frozen, target [b, Lt, E], source [b, Ls, E]) -> [b] (standardised);
  one per head module, so heads of the same shape share compiled code."""
  return jax.jit(lambda p, f, t, s: head.apply({"params": {**p, **f}}, t, s))


@functools.lru_cache(maxsize=16)
def make_score(head: Any) -> Callable:
  """jitted (trainable, frozen, target [Lt, E], sources [b, Ls, E], scale) -> [b]
  (standardised): one target against a batch of sources, broadcast inside the computation."""
  def score(p, f, target, sources, scale):
    targets = jnp.broadcast_to(target * scale, sources.shape[:1] + target.shape)
    return head.apply({"params": {**p, **f}}, targets, sources * scale)
  return jax.jit(score)


@functools.lru_cache(maxsize=16)
def _cached_step(head: Any, learning_rate: float, warmup_steps: int, weight_decay: float,
                 beta: float) -> Callable:
  cfg = AffinityConfig(learning_rate=learning_rate, warmup_steps=warmup_steps,
                       weight_decay=weight_decay)
  return make_step(head, make_optimizer(cfg), beta)


def make_step(head: Any, optimizer: optax.GradientTransformation, beta: float) -> Callable:
  """jitted step(state, frozen, target [b, Lt, E], source [b, Ls, E], labels [b])."""
  def loss_fn(params, frozen, t, s, y):
    return jnp.mean(smooth_l1(head.apply({"params": {**params, **frozen}}, t, s), y, beta))

  def step(state: HeadState, frozen, t, s, y):
    loss, grad = jax.value_and_grad(loss_fn)(state.params, jax.lax.stop_gradient(frozen), t, s, y)
    updates, opt_state = optimizer.update(grad, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), loss
  return jax.jit(step)


def predict_examples(predict: Callable, trainable: Any, frozen: Any, keys: np.ndarray,
                     t: np.ndarray, s: np.ndarray, scale: float, batch_size: int) -> np.ndarray:
  """Standardised predictions [n] for examples (t[i], s[i]) of a key bank; the last batch is
  padded to `batch_size` so one executable serves every call."""
  out = []
  for start in range(0, len(t), batch_size):
    rows_t, rows_s = t[start:start + batch_size], s[start:start + batch_size]
    pad = batch_size - len(rows_t)
    rows_t, rows_s = np.pad(rows_t, (0, pad)), np.pad(rows_s, (0, pad))
    pred = predict(trainable, frozen, keys[rows_t] * scale, keys[rows_s] * scale)
    out.append(np.asarray(pred)[:batch_size - pad])
  return np.concatenate(out) if out else np.zeros(0, np.float32)


def pair_means(examples: Examples, values: np.ndarray) -> np.ndarray:
  """[pairs]: the mean of `values` [n] over each pair's examples."""
  counts = np.bincount(examples.pair, minlength=len(examples.pairs))
  return np.bincount(examples.pair, weights=values, minlength=len(examples.pairs)) / counts


def mean_target_spearman(pairs: list[tuple[str, str]], predicted: np.ndarray,
                         gains: np.ndarray) -> float:
  """Spearman of predicted vs true gains over each target's sources, averaged over targets
  (targets with < 2 sources or constant values skipped; NaN when none is left)."""
  by_target: dict[str, list[int]] = {}
  for i, (_, target) in enumerate(pairs):
    by_target.setdefault(target, []).append(i)
  values = []
  for rows in by_target.values():
    p, g = predicted[rows], gains[rows]
    if len(rows) >= 2 and np.ptp(p) > 0 and np.ptp(g) > 0:
      values.append(stats.spearmanr(p, g).statistic)
  return float(np.mean(values)) if values else math.nan


def flatten(params: Any) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def unflatten(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
  return traverse_util.unflatten_dict(dict(arrays), sep="/")


def _save_params(path: str, params: Any) -> None:
  import io
  buffer = io.BytesIO()
  np.savez(buffer, **flatten(params))
  atomic_write_bytes(path, buffer.getvalue())


def train_head(cfg: AffinityConfig, bank: KeyBank, train: Examples, val: Examples, out_dir: str,
               *, backbone: Backbone | None = None, split_info: dict | None = None,
               on_step: Callable[[int], None] | None = None, log: bool = True) -> dict[str, Any]:
  """Trains (or resumes) one head in `out_dir`; returns the head.json record.

  `on_step(step)` is called after every step (tests use it to interrupt a run).
  """
  from spot_jax.train.checkpointer import TrainStateCheckpointer
  from spot_jax.train.metrics_log import MetricsLogger
  if not len(train):
    raise ValueError("No training examples")
  backbone = backbone if backbone is not None else load_backbone(cfg)
  os.makedirs(out_dir, exist_ok=True)
  lengths = (int(bank.keys.shape[1]), int(bank.keys.shape[1]))
  emb_dim = int(bank.keys.shape[2])
  head, trainable, frozen = initial_params(cfg, backbone, lengths, emb_dim)
  train_rows = np.unique(np.concatenate([train.t, train.s]))
  scale = model_lib.input_scale(bank.keys[train_rows], backbone.target_norm)
  label_mean, label_std = float(train.y.mean()), float(train.y.std())
  label_std = label_std if label_std > 0 else 1.0
  y_train = (train.y - label_mean) / label_std

  optimizer = make_optimizer(cfg)
  state = HeadState(step=jnp.zeros((), jnp.int32), params=trainable,
                    opt_state=optimizer.init(trainable), best_score=jnp.array(-jnp.inf),
                    best_step=jnp.zeros((), jnp.int32), evals_since_best=jnp.zeros((), jnp.int32))
  checkpointer = TrainStateCheckpointer(out_dir, max_to_keep=2)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
  start = int(state.step)
  step_fn = _cached_step(head, cfg.learning_rate, cfg.warmup_steps, cfg.weight_decay, cfg.beta)
  predict = make_predict(head)
  val_gains = pair_means(val, val.y)
  logger = MetricsLogger(out_dir, cfg.train_steps, start, cfg.batch_size, enabled=log)
  best_path = os.path.join(out_dir, BEST_PARAMS)

  def evaluate(step: int) -> float:
    nonlocal state
    pred = predict_examples(predict, state.params, frozen, bank.keys, val.t, val.s, scale,
                            cfg.eval_batch_size)
    score = mean_target_spearman(val.pairs, pair_means(val, pred * label_std + label_mean),
                                 val_gains)
    logger.log_eval(step, {"validation": {"spearman": score}})
    if np.isfinite(score) and score > float(state.best_score):
      _save_params(best_path, state.params)
      state = state.replace(best_score=jnp.asarray(score, jnp.float32),
                            best_step=jnp.asarray(step, jnp.int32),
                            evals_since_best=jnp.zeros((), jnp.int32))
    else:
      state = state.replace(evals_since_best=state.evals_since_best + 1)
    return score

  stopped_early = False
  try:
    pending = []
    for step in range(start + 1, cfg.train_steps + 1):
      rows = batch_indices(len(train), cfg.batch_size, cfg.seed, step)
      state, loss = step_fn(state, frozen, bank.keys[train.t[rows]] * scale,
                            bank.keys[train.s[rows]] * scale, y_train[rows])
      pending.append(loss)
      last = step == cfg.train_steps
      if cfg.eval_period and (step % cfg.eval_period == 0 or last):
        logger.log_train(step, {"loss": float(np.mean(jax.device_get(pending)))})
        pending = []
        evaluate(step)
        stopped_early = bool(cfg.patience and int(state.evals_since_best) >= cfg.patience)
      if step % cfg.checkpoint_period == 0 or last or stopped_early:
        checkpointer.save(state)
      if on_step is not None:
        on_step(step)
      if stopped_early:
        break
  finally:
    logger.close()
    checkpointer.close()
  if not os.path.exists(best_path):  # no finite validation score: keep the last params.
    _save_params(best_path, state.params)
  record = {
      "format": FORMAT_NAME, "version": FORMAT_VERSION, "config": dataclasses.asdict(cfg),
      "backbone": backbone.identity, "emb_dim": emb_dim, "prompt_length": lengths[0],
      "input_scale": scale, "label_mean": label_mean, "label_std": label_std,
      "steps_done": int(state.step), "stopped_early": stopped_early,
      "best_step": int(state.best_step), "best_val_spearman": float(state.best_score)
      if np.isfinite(float(state.best_score)) else None,
      "train_pairs": [list(p) for p in train.pairs], "val_pairs": [list(p) for p in val.pairs],
      **(split_info or {})}
  atomic_write_bytes(os.path.join(out_dir, HEAD_JSON),
                     (json.dumps(record, indent=2) + "\n").encode())
  return record


def train_seeds(cfg: AffinityConfig, gains: dict, task_keys: dict[str, np.ndarray], out_dir: str,
                seeds: Sequence[int], *, val_targets: Sequence[str] | None = None,
                exclude: Sequence[str] = (), log: bool = True) -> dict[str, Any]:
  """One head per seed in OUT_DIR/seed_<s>/ on the same split; writes OUT_DIR/summary.json
  with each seed's best validation Spearman and their mean and std (ddof=1 with >= 2 seeds).

  gains: {(source, target): gain}; task_keys: {task: keys [K, L, E]}. The held-out targets are
  `val_targets`, else a `cfg.val_fraction` share drawn with `cfg.split_seed`; `exclude` tasks
  (leave-family-out) never enter training pairs.
  """
  from spot_jax.affinity import data as data_lib
  if not seeds:
    raise ValueError("train_seeds needs at least one seed")
  targets = sorted({t for _, t in gains})
  held = list(val_targets) if val_targets is not None else data_lib.split_targets(
      targets, cfg.val_fraction, cfg.split_seed)
  bank = data_lib.KeyBank.build(task_keys)
  backbone = load_backbone(cfg)
  records = {}
  for seed in seeds:
    seed_cfg = dataclasses.replace(cfg, seed=int(seed))
    split = data_lib.make_split(gains, held, cfg.num_pairs, int(seed), exclude)
    info = {"val_targets": split.val_targets, "excluded": sorted(exclude),
            "available_pairs": split.available,
            "data_fingerprint": training_fingerprint(split.train, gains, task_keys)}
    records[int(seed)] = train_head(
        seed_cfg, bank, bank.examples(split.train, gains), bank.examples(split.val, gains),
        os.path.join(out_dir, f"seed_{seed}"), backbone=backbone, split_info=info, log=log)
  scores = np.array([r["best_val_spearman"] if r["best_val_spearman"] is not None else np.nan
                     for r in records.values()])
  summary = {"seeds": list(records), "val_targets": held, "excluded": sorted(exclude),
             "best_val_spearman": dict(zip(map(str, records), scores.tolist())),
             "mean_val_spearman": float(np.nanmean(scores)) if np.isfinite(scores).any()
             else None,
             "std_val_spearman": float(np.nanstd(scores, ddof=1))
             if np.isfinite(scores).sum() >= 2 else 0.0}
  summary["best_val_spearman"] = {k: (v if np.isfinite(v) else None)
                                  for k, v in summary["best_val_spearman"].items()}
  atomic_write_bytes(os.path.join(out_dir, "summary.json"),
                     (json.dumps(summary, indent=2) + "\n").encode())
  return summary


# ----------------------------------------------------------------------------- folds


def training_fingerprint(pairs: Sequence[tuple[str, str]], gains: dict,
                         task_keys: dict[str, np.ndarray]) -> str:
  """sha256 of the training pairs, their gains and their tasks' keys: a head whose record holds
  the same fingerprint (and config) was trained on exactly these data."""
  import hashlib
  digest = hashlib.sha256()
  for pair in sorted(pairs):
    digest.update(json.dumps([*pair, repr(float(gains[tuple(pair)]))]).encode())
  for task in sorted({t for pair in pairs for t in pair}):
    keys = np.ascontiguousarray(task_keys[task], np.float32)
    digest.update(task.encode() + str(keys.shape).encode() + keys.tobytes())
  return digest.hexdigest()


def held_out_config(cfg: AffinityConfig) -> AffinityConfig:
  """`cfg` without validation: no early stopping and no best step, the last step's params."""
  return dataclasses.replace(cfg, eval_period=0, patience=0)


def train_pool_heads(cfg: AffinityConfig, gains: dict, task_keys: dict[str, np.ndarray],
                     out_dir: str, seeds: Sequence[int], novel_targets: Sequence[str], *,
                     exclude: Sequence[str] = (), log: bool = True) -> dict[str, Any]:
  """The paper's protocol (Feng et al. 2023, §3.2-3.3, §4.6.2) on a pool-pair study: heads
  of `seeds` (OUT_DIR/seed_<s>/) trained on M = cfg.num_pairs pool-internal pairs sampled per
  seed (`data.pool_split`; none touching an `exclude` task or a task outside the pool),
  never on a novel target, and
  without validation (`held_out_config`: nothing is selected on the novel targets). The heads
  record the novel targets as their held-out targets, which `affinity evaluate` scores.
  Returns `train_seeds`'s summary plus each seed's training pairs and the pool pairs available."""
  from spot_jax.affinity import data as data_lib
  splits = {int(seed): data_lib.pool_split(gains, novel_targets, cfg.num_pairs, int(seed),
                                           exclude) for seed in seeds}  # checks, no leak.
  exclude = sorted(set(exclude) | set(data_lib.outside_pool(gains)) - set(novel_targets))
  summary = train_seeds(held_out_config(cfg), gains, task_keys, out_dir, seeds,
                        val_targets=sorted(novel_targets), exclude=exclude, log=log)
  return {**summary, "train_pairs": {s: split.train for s, split in splits.items()},
          "available_pairs": next(iter(splits.values())).available}
