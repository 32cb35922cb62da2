"""A training run of any method: frozen model + task -> MODEL_DIR with trainables, metrics, summary.

`train(TrainConfig(...))` is plain Python; gin only builds the TrainConfig at the command line.
A run resumes from the last complete train-state checkpoint in MODEL_DIR, and because the data
order is a function of (task, seed, step) and dropout keys are fold_in(rng, step), a resumed run
ends with the same trainables as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from spot_jax.fileio import atomic_write_bytes
from spot_jax import methods, prompts
from spot_jax.checkpoints.load import LoadedModel, fingerprint, load_model, step_offset
from spot_jax.evaluation.evaluator import PromptEvaluator
from spot_jax.models.config import get_config
from spot_jax.models.losses import DEFAULT_Z_LOSS
from spot_jax.models.t5 import T5
from spot_jax.tasks_util import get_task_or_mixture, subtasks_with_metrics, task_labels
from spot_jax.train import checkpointer as checkpointer_lib, partitioning, run_dir
from spot_jax.train.data import train_batches
from spot_jax.train.metrics_log import MetricsLogger
from spot_jax.train.optimizer import (ADAMW_WARMUP_FRACTION, OPTIMIZERS, SPOT_WEIGHT_DECAY,
                                     adamw_warmup, prompt_adafactor)
from spot_jax.train.step import TrainState, init_train_state, make_train_step

PROMPT_INITS = ("sampled_vocab", "class_labels", "file", "uniform")
TARGET_TRAIN_STEPS = 100_000  # SPoT §3.1 (source prompts: 2**18, runs/source_train.gin).


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the run stopped before writing another checkpoint."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """One training run. Defaults are SPoT's (prompt, Adafactor lr 0.3, batch 32, dropout 0.1...).

  `method` names a `spot_jax.methods` method (its settings are gin-bound, e.g. `Lora.rank`);
  `optimizer` and `learning_rate` default to the method's (docs/methods.md). `init_from`: a
  numpy checkpoint directory of a run of the same method whose trainables this run starts from
  (transfer for every method; the prompt method also takes PROMPT_FILE).
  """

  model_dir: str
  task: str
  feature_lengths: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"inputs": 512, "targets": 32})
  train_steps: int = TARGET_TRAIN_STEPS
  batch_size: int = 32
  model: str = "base"  # named config; validated against the checkpoint.
  initial_checkpoint: str | None = None  # None: a randomly initialised frozen model (tests).
  prompt_length: int = prompts.DEFAULT_PROMPT_LENGTH
  prompt_init: str = "sampled_vocab"
  prompt_file: str | None = None
  class_labels: Sequence[str] | None = None  # default: the task's labels.
  dropout_rate: float = 0.1
  dtype: str = "float32"
  remat: bool = False
  method: str = "prompt"
  optimizer: str | None = None  # adafactor | adamw; None: the method's default.
  learning_rate: float | None = None  # None: the method's default.
  weight_decay: float | None = None  # None: Adafactor 1e-5 (SPoT), AdamW 0.
  warmup_fraction: float = ADAMW_WARMUP_FRACTION  # AdamW only.
  init_from: str | None = None
  decay_rate: float = 0.8
  clipping_threshold: float | None = 1.0
  step_offset: int | None = None  # None: the checkpoint's step, else the named config's (T5X).
  z_loss: float = DEFAULT_Z_LOSS
  checkpoint_period: int = 500
  eval_period: int = 500  # 0: no evaluation.
  eval_metric: str | None = None  # best checkpoint by this metric; default the first one.
  max_train_examples: int | None = None  # the first N of the train split (None: all of it).
  max_eval_examples: int | None = None  # the first N of each evaluated split.
  eval_batch_size: int | None = None
  eval_mode: str = "auto"  # "auto": rank classification when labels are known, else greedy.
  key_step: int = 10_000  # the task-embedding step (SPoT §3.2).
  keep_train_states: int = 3
  log_period: int = 100
  seed: int = 0
  mesh_data: int = -1
  mesh_model: int = 1
  overwrite: bool = False


def method_of(cfg: TrainConfig) -> methods.Method:
  """The run's method with its gin-bound settings (prompt-like ones take PROMPT_LENGTH)."""
  return methods.create(cfg.method, cfg.prompt_length)


def build_frozen_model(cfg: TrainConfig, method: methods.Method | None = None
                       ) -> tuple[T5, dict[str, Any], dict[str, Any], LoadedModel | None]:
  """(model with the method's hooks, frozen params, identity for run.json, the loaded
  checkpoint or None)."""
  method = method or method_of(cfg)
  overrides = dict(dropout_rate=cfg.dropout_rate, dtype=cfg.dtype, remat=cfg.remat)
  if cfg.initial_checkpoint:
    loaded = load_model(cfg.initial_checkpoint, config=get_config(cfg.model))
    config, params = loaded.config.replace(**overrides), loaded.params
    identity = {"name": cfg.model, "checkpoint": cfg.initial_checkpoint,
                "fingerprint": loaded.fingerprint}
  else:
    config = get_config(cfg.model, **overrides)
    tokens = jnp.ones((1, 4), jnp.int32)
    params = jax.jit(T5(config).init)(jax.random.PRNGKey(cfg.seed), tokens, tokens)["params"]
    params = jax.device_get(params)
    identity = {"name": cfg.model, "checkpoint": None, "fingerprint": fingerprint(params)}
    loaded = None
  identity["config"] = {k: v for k, v in config.to_dict().items()
                        if k not in ("dropout_rate", "dtype", "remat")}
  return T5(config, hooks=method.hooks()), params, identity, loaded


def make_optimizer(cfg: TrainConfig, method: methods.Method, offset: int
                   ) -> tuple[Any, dict[str, Any]]:
  """(optax optimizer, its settings for run.json) from the config and the method's defaults."""
  name = cfg.optimizer or method.default_optimizer
  lr = method.default_learning_rate if cfg.learning_rate is None else cfg.learning_rate
  if name == "adafactor":
    decay = SPOT_WEIGHT_DECAY if cfg.weight_decay is None else cfg.weight_decay
    settings = dict(name=name, learning_rate=lr, weight_decay=decay, decay_rate=cfg.decay_rate,
                    clipping_threshold=cfg.clipping_threshold, step_offset=offset)
    return prompt_adafactor(lr, cfg.decay_rate, cfg.clipping_threshold, decay,
                            step_offset=offset), settings
  if name == "adamw":
    decay = 0.0 if cfg.weight_decay is None else cfg.weight_decay
    settings = dict(name=name, learning_rate=lr, weight_decay=decay,
                    warmup_fraction=cfg.warmup_fraction, total_steps=cfg.train_steps)
    return adamw_warmup(lr, cfg.train_steps, cfg.warmup_fraction, decay), settings
  raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def initial_trainables(cfg: TrainConfig, method: methods.Method, model: T5,
                       frozen_params: Mapping[str, Any]) -> methods.Trainables:
  """The trainables a fresh run starts from: `init_from`, else the method's init."""
  prompt = None
  if method.prompt_like:
    prompt = initial_prompt(cfg, frozen_params, model.config.emb_dim)
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)
  fresh = method.init(key, model, frozen_params, prompt)
  if not cfg.init_from:
    return fresh
  names = sorted(methods.flatten(fresh))
  loaded = run_dir.load_trainables(cfg.init_from, names)
  return methods.check_trainables(methods.unflatten(loaded), fresh, cfg.init_from)


def initial_prompt(cfg: TrainConfig, params: Mapping[str, Any], emb_dim: int) -> jax.Array:
  """The prompt [L, embed] a fresh run starts from."""
  key = jax.random.PRNGKey(cfg.seed)
  embedding = params["token_embedder"]["embedding"]
  if cfg.prompt_init == "sampled_vocab":
    return prompts.from_sampled_vocab(key, embedding, cfg.prompt_length)
  if cfg.prompt_init == "class_labels":
    labels = cfg.class_labels or task_labels(cfg.task)
    if not labels:
      raise ValueError(f"prompt_init='class_labels' needs labels: task {cfg.task!r} declares "
                       "none; set TrainConfig.class_labels")
    vocabulary = get_task_or_mixture(cfg.task).output_features["targets"].vocabulary
    label_ids = [list(vocabulary.encode(label)) for label in labels]
    return prompts.from_class_labels(key, embedding, cfg.prompt_length, label_ids)
  if cfg.prompt_init == "file":
    if not cfg.prompt_file:
      raise ValueError("prompt_init='file' needs PROMPT_FILE (TrainConfig.prompt_file)")
    return prompts.from_file(cfg.prompt_file, cfg.prompt_length, emb_dim)
  if cfg.prompt_init == "uniform":
    return prompts.uniform(key, cfg.prompt_length, emb_dim)
  raise ValueError(f"Unknown prompt_init {cfg.prompt_init!r}; choose one of {PROMPT_INITS}")


def select_score(results: Mapping[str, Mapping[str, float]], metric: str | None
                 ) -> tuple[str, float]:
  """The checkpoint score: `metric` averaged over the evaluated tasks that report it."""
  if metric is None:
    first_task = sorted(results)[0]
    metric = sorted(results[first_task])[0]
  values = [m[metric] for m in results.values() if metric in m]
  if not values:
    available = sorted({k for m in results.values() for k in m})
    raise ValueError(f"eval_metric {metric!r} is not reported; available: {available}")
  return metric, float(np.mean(values))


def _check_task(cfg: TrainConfig, model: T5) -> None:
  provider = get_task_or_mixture(cfg.task)
  vocab_size = provider.output_features["targets"].vocabulary.vocab_size
  if vocab_size > model.config.vocab_size:
    raise ValueError(f"Task {cfg.task!r} has a vocabulary of {vocab_size} ids but the model "
                     f"{cfg.model!r} only {model.config.vocab_size}")
  if cfg.checkpoint_period <= 0 or cfg.train_steps <= 0:
    raise ValueError("train_steps and checkpoint_period must be positive")


def train(cfg: TrainConfig, gin_config: str = "") -> run_dir.RunSummary:
  """Runs (or resumes) a run; returns the run summary also written to run.json."""
  partitioning.maybe_initialize_distributed()
  is_chief = jax.process_index() == 0
  method = method_of(cfg)
  model, frozen_params, identity, loaded = build_frozen_model(cfg, method)
  _check_task(cfg, model)
  offset = (step_offset(loaded, cfg.model) if cfg.step_offset is None
            else (cfg.step_offset, "STEP_OFFSET"))
  optimizer, optimizer_settings = make_optimizer(cfg, method, offset[0])
  summary = run_dir.RunSummary(
      task=cfg.task, model=identity,
      prompt_length=cfg.prompt_length if method.prompt_like else 0, seed=cfg.seed,
      batch_size=cfg.batch_size, feature_lengths=dict(cfg.feature_lengths),
      train_steps=cfg.train_steps, key_step=cfg.key_step, eval_metric=cfg.eval_metric,
      prompt_init=cfg.prompt_init if method.prompt_like else "",
      max_train_examples=cfg.max_train_examples, max_eval_examples=cfg.max_eval_examples,
      method=method.name, method_settings=method.settings(), optimizer=optimizer_settings)
  summary.step_offset, summary.step_offset_source = offset
  run_dir.check_compatible(cfg.model_dir, summary, cfg.overwrite)
  os.makedirs(cfg.model_dir, exist_ok=True)
  if is_chief and gin_config:
    atomic_write_bytes(os.path.join(cfg.model_dir, run_dir.CONFIG_GIN), gin_config.encode())

  state = init_train_state(initial_trainables(cfg, method, model, frozen_params),
                           optimizer, cfg.seed)
  checkpointer = checkpointer_lib.TrainStateCheckpointer(cfg.model_dir, cfg.keep_train_states)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    summary = run_dir.read_summary(cfg.model_dir)
    summary.train_steps = cfg.train_steps
    summary.step_offset, summary.step_offset_source = offset
  elif is_chief:
    run_dir.save_trainables(cfg.model_dir, 0, method.saved_arrays(jax.device_get(state.params)))
  start_step = int(state.step)

  mesh = partitioning.make_mesh(cfg.mesh_data, cfg.mesh_model)
  frozen = partitioning.shard_params(frozen_params, mesh)
  # Placed as the step returns it, so the second step reuses the first one's executable.
  state = partitioning.replicate(state, mesh)
  step_fn = partitioning.jit_train_step(make_train_step(model, optimizer, cfg.z_loss), mesh,
                                        state, partitioning.param_shardings(frozen_params, mesh))
  batches = train_batches(cfg.task, cfg.feature_lengths,
                          partitioning.host_batch_size(cfg.batch_size), seed=cfg.seed,
                          start_step=start_step, shard_info=partitioning.host_shard_info(),
                          max_examples=cfg.max_train_examples)
  evaluator = None
  if cfg.eval_period:
    labels = eval_labels(cfg)
    evaluator = PromptEvaluator(model, frozen, cfg.task, cfg.feature_lengths,
                                cfg.eval_batch_size or cfg.batch_size,
                                num_examples=cfg.max_eval_examples, task_labels=labels,
                                place=lambda x: partitioning.replicate(x, mesh))
  logger = MetricsLogger(cfg.model_dir, cfg.train_steps, start_step, cfg.batch_size,
                         enabled=is_chief)
  pending: list[dict[str, jax.Array]] = []
  try:
    for step in range(start_step + 1, cfg.train_steps + 1):
      batch = partitioning.make_global_batch(next(batches), mesh)
      state, metrics = step_fn(state, frozen, batch)
      pending.append(metrics)
      at_checkpoint = step % cfg.checkpoint_period == 0 or step == cfg.train_steps
      if step % cfg.log_period == 0 or at_checkpoint:
        logger.log_train(step, _mean_metrics(pending, step))
        pending = []
      if at_checkpoint:
        _checkpoint(cfg, method, state, step, checkpointer, evaluator, summary, logger,
                    is_chief)
  finally:
    logger.close()
    checkpointer.close()
  summary.finished = True
  if summary.best_step is None:
    summary.best_step = summary.steps_done
  if is_chief:
    run_dir.write_summary(cfg.model_dir, summary)
  return summary


def eval_labels(cfg: TrainConfig) -> dict[str, Sequence[str]]:
  """Label sets for rank classification per evaluated task ({} = greedy decoding)."""
  if cfg.eval_mode == "greedy":
    return {}
  if cfg.eval_mode not in ("auto", "rank"):
    raise ValueError(f"Unknown eval_mode {cfg.eval_mode!r}; choose auto, rank or greedy")
  return {t.name: labels for t in subtasks_with_metrics(cfg.task)
          if (labels := task_labels(t.name))}


def _mean_metrics(pending: list[dict[str, jax.Array]], step: int) -> dict[str, float]:
  """Fetches the metrics of the steps since the last log; stops on a non-finite loss."""
  fetched = jax.device_get(pending)
  losses = np.array([m["loss"] for m in fetched])
  if not np.all(np.isfinite(losses)):
    raise NonFiniteLossError(
        f"Non-finite loss at step {step - len(losses) + int(np.argmin(np.isfinite(losses)))}; "
        "stopped without writing a checkpoint, the last good one is intact. Lower the "
        "learning rate or check the inputs.")
  mean = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
  mean["loss_per_token"] = float(losses.sum() / max(sum(m["num_tokens"] for m in fetched), 1))
  return mean


def _checkpoint(cfg: TrainConfig, method: methods.Method, state: TrainState, step: int,
                checkpointer: checkpointer_lib.TrainStateCheckpointer,
                evaluator: PromptEvaluator | None,
                summary: run_dir.RunSummary, logger: MetricsLogger, is_chief: bool) -> None:
  """Writes the numpy trainables, evaluates, then records the summary and the train state."""
  trainables = jax.device_get(state.params)
  if is_chief:
    run_dir.save_trainables(cfg.model_dir, step, method.saved_arrays(trainables))
  results = {}
  if evaluator is not None and (step % cfg.eval_period == 0 or step == cfg.train_steps):
    results = evaluator.evaluate(trainables, step)
    logger.log_eval(step, results)
    metric, score = select_score(results, cfg.eval_metric)
    summary.eval_metric = metric
    if summary.best_score is None or score > summary.best_score:
      summary.best_step, summary.best_score = step, score
  summary.checkpoints[str(step)] = results
  summary.steps_done = step
  if is_chief:  # before the state: a kill in between redoes this interval identically.
    run_dir.write_summary(cfg.model_dir, summary)
  checkpointer.save(state)
