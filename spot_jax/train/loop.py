"""A training run of any method: frozen model + task -> MODEL_DIR with trainables, metrics, summary.

`train(TrainConfig(...))` is plain Python; gin only builds the TrainConfig at the command line.
A run resumes from the last complete train-state checkpoint in MODEL_DIR, and because the data
order is a function of (task, seed, step) and dropout keys are fold_in(rng, step), a resumed run
ends with the same trainables as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from spot_jax import macros
from spot_jax.fileio import atomic_write_bytes
from spot_jax import methods, runtime
from spot_jax.models import prompts
from spot_jax.checkpoints.load import LoadedModel, is_hf_checkpoint, load_model, step_offset
from spot_jax.evaluation.evaluator import PromptEvaluator
from spot_jax.evaluation.scores import record_evaluation
from spot_jax.models.config import get_config
from spot_jax.models.init import init_frozen, random_fingerprint
from spot_jax.models.layout import to_layout
from spot_jax.models.t5 import T5
from tasks.lookup import get_task_or_mixture, task_labels
from spot_jax.train import checkpointer as checkpointer_lib, full_checkpoints, partitioning, run_dir
from spot_jax.train import packed as packed_lib
from spot_jax.data.batches import TrainBatches
from spot_jax.train.metrics_log import MetricsLogger
from spot_jax.train.optimizer import (OPTIMIZERS, SPOT_WEIGHT_DECAY, adamw_warmup,
                                      finetune_adafactor, prompt_adafactor)
from spot_jax.train.step import TrainState, init_train_state, make_train_step
from spot_jax.train.config import (NON_IDENTITY_MODEL_FIELDS, PROMPT_INITS, TrainConfig,
                                   check_frozen_dtype, method_of, validate_config)
from spot_jax.train.pack_policy import check_packable
from spot_jax.train.preflight import check_task
from spot_jax.train.summary import build_summary, finished_summary


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the run stopped before writing another checkpoint."""


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C (SIGINT) during training; the last checkpoint is intact and a rerun resumes."""

  def __init__(self, step: int, checkpoint_step: int):
    super().__init__(f"interrupted at step {step} (last checkpoint: step {checkpoint_step}); "
                     "run the same command to resume")
    self.step, self.checkpoint_step = step, checkpoint_step


def build_frozen_model(cfg: TrainConfig, method: methods.Method | None = None
                       ) -> tuple[T5, dict[str, Any], dict[str, Any], LoadedModel | None]:
  """(model with the method's hooks, frozen params, identity for run.json, the loaded
  checkpoint or None).

  Random frozen weights are drawn leaf by leaf straight into their mesh placement
  (`spot_jax.models.init`: no whole-model init is compiled); FROZEN_DTYPE bfloat16 stores
  them (or the checkpoint's) in bf16.
  """
  method = method or method_of(cfg)
  scan = cfg.scan_layers
  if scan is None:
    scan = jax.default_backend() != "cpu" and not method.hooks().per_layer()
  overrides = dict(dropout_rate=cfg.dropout_rate, dtype=cfg.dtype, remat=cfg.remat,
                   remat_policy=cfg.remat_policy, scan_layers=scan)
  frozen_dtype = check_frozen_dtype(cfg.frozen_dtype)
  if cfg.initial_checkpoint:
    loaded = load_model(cfg.initial_checkpoint, config=get_config(cfg.model),
                        dtype=None if cfg.frozen_dtype == "float32" else frozen_dtype)
    config = loaded.config.replace(**overrides)
    params = to_layout(loaded.params, config)
    identity = {"name": cfg.model, "checkpoint": cfg.initial_checkpoint,
                "fingerprint": loaded.fingerprint}
  else:
    config = get_config(cfg.model, **overrides)
    mesh = partitioning.make_mesh(cfg.mesh_data, cfg.mesh_model)
    params = init_frozen(config, cfg.seed, frozen_dtype,
                         lambda shapes: partitioning.param_shardings(shapes, mesh))
    identity = {"name": cfg.model, "checkpoint": None,
                "fingerprint": random_fingerprint(config, cfg.seed, frozen_dtype)}
    loaded = None
  identity["config"] = {k: v for k, v in config.to_dict().items()
                        if k not in NON_IDENTITY_MODEL_FIELDS}
  identity["frozen_dtype"] = cfg.frozen_dtype  # in the fingerprint too (values and dtype).
  return T5(config, hooks=method.hooks()), params, identity, loaded


# T5Config fields that change how the model runs, not what it computes.


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
  if name == "adafactor_finetune":  # T5X finetune.gin: no weight decay, constant lr.
    decay = 0.0 if cfg.weight_decay is None else cfg.weight_decay
    settings = dict(name=name, learning_rate=lr, weight_decay=decay, decay_rate=cfg.decay_rate,
                    clipping_threshold=cfg.clipping_threshold, step_offset=offset)
    return finetune_adafactor(lr, cfg.decay_rate, cfg.clipping_threshold, offset,
                              decay), settings
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
  if method.full:  # a model run's checkpoint: a T5X checkpoint of every weight.
    return methods.check_trainables(full_checkpoints.load(cfg.init_from), fresh, cfg.init_from)
  loaded = run_dir.load_trainables(cfg.init_from, names)
  return methods.check_trainables(methods.unflatten(loaded), fresh, cfg.init_from)


def initial_prompt(cfg: TrainConfig, params: Mapping[str, Any], emb_dim: int) -> jax.Array:
  """The prompt [L, embed] a fresh run starts from."""
  key = jax.random.PRNGKey(cfg.seed)
  # Random frozen weights sit on the mesh, possibly split across hosts: every host takes the
  # whole table (the prompt is replicated).
  embedding = partitioning.to_host(params["token_embedder"]["embedding"])
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


def train(cfg: TrainConfig, gin_config: str = "") -> run_dir.RunSummary:
  """Runs (or resumes) a run of any method; returns the run summary also written to run.json.

  Everything checkable is validated before MODEL_DIR is touched; a finished run with nothing
  left to do returns its summary without writing anything (read-only directories work).
  """
  return _train_runs([cfg], [gin_config], packed=False)[0]


def train_packed(cfgs: Sequence[TrainConfig], gin_configs: Sequence[str] | None = None
                 ) -> list[run_dir.RunSummary]:
  """Trains (or resumes) compatible runs in one jitted step (`spot_jax.train.packed`): the
  frozen model is built once, the trainables are stacked on a leading run axis, and each run
  keeps its whole contract (its MODEL_DIR, data order, dropout keys, checkpoints, evaluation,
  best step, run.json, resume). Runs must agree on every setting but `PACK_FREE_FIELDS`
  (`check_packable`); returns their summaries in order. Finished runs are left as they are.
  """
  cfgs = list(cfgs)
  gin_configs = list(gin_configs) if gin_configs is not None else [""] * len(cfgs)
  if len(gin_configs) != len(cfgs):
    raise ValueError(f"{len(cfgs)} runs but {len(gin_configs)} gin configs")
  return _train_runs(cfgs, gin_configs, packed=True)


# TrainConfig fields that may differ between the runs of a packed job: what a run trains on
# and starts from, and how it is evaluated. Every other field shapes the one shared step.


def _train_runs(cfgs: list[TrainConfig], gin_configs: list[str], packed: bool
                ) -> list[run_dir.RunSummary]:
  """`train` for one run (packed False) or `train_packed` for several: validation, one frozen
  model, each run's summary, lock and config.gin, then the shared training loop."""
  partitioning.maybe_initialize_distributed()
  is_chief = jax.process_index() == 0
  backend = runtime.log_backend(print if is_chief else lambda _: None)
  cfgs = [validate_config(cfg) for cfg in cfgs]
  if packed:
    check_packable(cfgs)
  method = method_of(cfgs[0])  # gin-bound settings: the same for every run of a job.
  model, frozen_params, identity, loaded = build_frozen_model(cfgs[0], method)
  offset = (step_offset(loaded, cfgs[0].model) if cfgs[0].step_offset is None
            else (cfgs[0].step_offset, macros.setting("step_offset")))
  if method.full and cfgs[0].init_from and cfgs[0].step_offset is None:
    offset = full_checkpoints.stored_step(cfgs[0].init_from)  # T5X: the restored step.
  optimizer, optimizer_settings = make_optimizer(cfgs[0], method, offset[0])
  summaries, todo = [], []
  for cfg in cfgs:
    check_task(cfg, model)
    summary = build_summary(cfg, method, identity, offset, optimizer_settings)
    summary.runtime = backend
    done = finished_summary(cfg, summary)
    summaries.append(done or summary)
    if done is None:
      todo.append(len(summaries) - 1)
  if not todo:
    return summaries
  with contextlib.ExitStack() as stack:
    for i in todo:
      cfg = cfgs[i]
      if is_chief:
        stack.enter_context(run_dir.locked(cfg.model_dir))
      run_dir.check_compatible(cfg.model_dir, summaries[i], cfg.overwrite, gin_configs[i])
      if is_chief:
        if gin_configs[i]:
          atomic_write_bytes(os.path.join(cfg.model_dir, run_dir.CONFIG_GIN),
                             gin_configs[i].encode())
        # run.json is the run's identity: written before any state exists, so a run killed at
        # any later moment is recognised (and resumed) by the same command.
        run_dir.start_summary(cfg.model_dir, summaries[i])
    trained = _train([cfgs[i] for i in todo], method, model, frozen_params, optimizer, offset,
                     [summaries[i] for i in todo], is_chief, packed)
  for i, summary in zip(todo, trained):
    summaries[i] = summary
  return summaries


# TrainConfig fields that do not change the trained prompts or their scores (the rest, and any
# field added later, are part of a run's identity: `run_dir.RunSummary.settings`).


@dataclasses.dataclass
class _Run:
  """One run's side of a training loop: its settings, summary and MODEL_DIR writers."""

  cfg: TrainConfig
  summary: run_dir.RunSummary
  checkpointer: checkpointer_lib.TrainStateCheckpointer
  batches: TrainBatches | None = None
  evaluator: PromptEvaluator | None = None
  logger: MetricsLogger | None = None

  def close(self) -> None:
    if self.logger is not None:
      self.logger.close()
    self.checkpointer.close()


def _resume_step(runs: Sequence[_Run]) -> int | None:
  """The train-state step the runs resume from (None: all start fresh). Packed runs resume
  together from the newest step that every run still holds (a job killed between two runs'
  checkpoints resumes from the earlier step, which redoes the later run's interval
  identically)."""
  latest = [run.checkpointer.latest_step() for run in runs]
  if all(step is None for step in latest):
    return None
  kept = [set(run.checkpointer.all_steps()) for run in runs]
  common = set.intersection(*kept)
  if not common:
    where = ", ".join(f"{run.cfg.model_dir} at {step}" for run, step in zip(runs, latest))
    raise run_dir.RunDirError(f"Packed runs hold no common train-state step ({where}); train "
                              "them one by one (--pack 1) or with runs at the same step")
  return max(common)


def _open_run(run: _Run, method: methods.Method, state: TrainState, start_step: int | None,
              offset: tuple[int, str], is_chief: bool) -> TrainState:
  """The run's state at `start_step` (restored, with its summary) or fresh (its trainables
  saved as step 0)."""
  cfg = run.cfg
  if start_step is not None:
    state = run.checkpointer.restore(state, start_step)
    run.summary = run_dir.read_summary(cfg.model_dir)
    if cfg.train_steps > run.summary.steps_done:  # extended: not finished until the new last step.
      run.summary.finished = False
    run.summary.train_steps = cfg.train_steps
    run.summary.step_offset, run.summary.step_offset_source = offset
    run.summary.runtime = runtime.describe_backend()
  else:
    if method.full:
      state = _restore_moments(cfg, state)
    if is_chief and not method.full:  # a full run's step 0 is its INITIAL_CHECKPOINT_PATH.
      run_dir.save_trainables(cfg.model_dir, 0,
                              method.saved_arrays(jax.device_get(state.params)))
  return state


def _restore_moments(cfg: TrainConfig, state: TrainState) -> TrainState:
  """A fresh full fine-tuning run continues the Adafactor second moments stored with the
  weights it starts from (T5X restores them; SPoT Appendix C), when the T5X checkpoint has
  them."""
  source = cfg.init_from or cfg.initial_checkpoint
  if not source or is_hf_checkpoint(source):
    return state
  opt_state, found = full_checkpoints.restore_moments(state.opt_state, source)
  if found:
    logging.info("Adafactor second moments restored from %s", source)
  return state.replace(opt_state=opt_state)


def _train(cfgs: list[TrainConfig], method: methods.Method, model: T5, frozen_params: Any,
           optimizer: Any, offset: tuple[int, str], summaries: list[run_dir.RunSummary],
           is_chief: bool, packed: bool) -> list[run_dir.RunSummary]:
  """The training loop proper, under the MODEL_DIRs' locks; `offset`: (step offset, its
  source). One run (packed False) or several on a leading run axis (`spot_jax.train.packed`);
  the schedule and optimizer are the first run's, shared by all (`check_packable`)."""
  cfg = cfgs[0]
  runs: list[_Run] = []
  try:
    for run_cfg, summary in zip(cfgs, summaries):
      runs.append(_Run(run_cfg, summary, checkpointer_lib.TrainStateCheckpointer(
          run_cfg.model_dir, run_cfg.keep_train_states)))
    start = _resume_step(runs)
    states = [_open_run(run, method, init_train_state(
        initial_trainables(run.cfg, method, model, frozen_params), optimizer, run.cfg.seed),
                        start, offset, is_chief) for run in runs]
    start_step = start or 0
    frozen_params = method.frozen_part(frozen_params)  # {} when every weight is trained.

    mesh = partitioning.make_mesh(cfg.mesh_data, cfg.mesh_model)
    frozen = partitioning.shard_params(frozen_params, mesh)
    shardings = partitioning.state_shardings(states[0], partitioning.trainable_partition_specs(
        states[0].params, frozen_params, cfg.trainable_sharding, mesh), mesh)
    if packed:
      state = packed_lib.stack_trees(states)
      shardings = partitioning.with_run_axis(shardings)
    else:
      state = states[0]
    # Placed as the step returns it, so the second step reuses the first one's executable.
    state = partitioning.place(state, shardings)
    step_fn = _jitted_train_step(model, optimizer, summaries[0].optimizer, cfg.z_loss, mesh,
                                 state, frozen_params, shardings, packed)
    for run in runs:
      run.batches = TrainBatches(
          run.cfg.task, run.cfg.feature_lengths, partitioning.host_batch_size(cfg.batch_size),
          seed=run.cfg.seed, start_step=start_step, shard_info=partitioning.host_shard_info(),
          max_examples=run.cfg.max_train_examples, model_dir=run.cfg.model_dir)
      if cfg.eval_period:
        run.evaluator = PromptEvaluator(
            model, frozen, run.cfg.task, run.cfg.eval_batch_size or cfg.batch_size,
            mode=run.cfg.eval_mode, num_examples=run.cfg.max_eval_examples,
            place=lambda x: partitioning.replicate(x, mesh))
      run.logger = MetricsLogger(run.cfg.model_dir, cfg.train_steps, start_step,
                                 cfg.batch_size, enabled=is_chief)

    if packed:
      def next_batch() -> dict[str, jax.Array]:
        rows = packed_lib.stack_batches([next(run.batches) for run in runs])
        return partitioning.make_global_batch(rows, mesh, run_axis=True)

      def split(tree: Any) -> list[Any]:  # [runs, ...] leaves -> one tree per run.
        return packed_lib.unstack_tree(tree)
    else:
      def next_batch() -> dict[str, jax.Array]:
        return partitioning.make_global_batch(next(runs[0].batches), mesh)

      def split(tree: Any) -> list[Any]:
        return [tree]

    _loop(runs, method, state, step_fn, frozen, next_batch, split, start_step, is_chief)
  finally:
    for run in runs:
      run.close()
  for run in runs:
    run.summary.finished = True
    if run.summary.best_step is None:
      run.summary.best_step = run.summary.steps_done
    if is_chief:
      run_dir.write_summary(run.cfg.model_dir, run.summary)
  return [run.summary for run in runs]


def _loop(runs: list[_Run], method: methods.Method, state: Any, step_fn: Any, frozen: Any,
          next_batch: Any, split: Any, start_step: int, is_chief: bool) -> None:
  """Steps start_step+1 .. train_steps; logs and checkpoints each run on the shared schedule.
  `split(tree)`: the step's state or metrics -> one tree per run, in order."""
  cfg = runs[0].cfg
  pending: list[dict[str, jax.Array]] = []
  done = start_step
  try:
    for step in range(start_step + 1, cfg.train_steps + 1):
      state, metrics = step_fn(state, frozen, next_batch())
      pending.append(metrics)
      at_checkpoint = step % cfg.checkpoint_period == 0 or step == cfg.train_steps
      if step % cfg.log_period == 0 or at_checkpoint:
        per_run = zip(*[split(m) for m in jax.device_get(pending)])
        for run, run_metrics in zip(runs, per_run):
          run.logger.log_train(step, _mean_metrics(list(run_metrics), step, run.cfg.model_dir
                                                   if len(runs) > 1 else None))
        pending = []
      if at_checkpoint:
        for run, run_state in zip(runs, split(state)):
          _checkpoint(run.cfg, method, run_state, step, run.checkpointer, run.evaluator,
                      run.summary, run.logger, is_chief, run.batches)
      done = step
  except KeyboardInterrupt:
    raise TrainingInterrupted(done, min(run.summary.steps_done for run in runs)) from None


# Jitted steps of the runs trained in this process, by everything that defines the step: a
# later run (or packed job) with the same model, optimizer, loss, trainables and placement (a
# study's or the demo's runs) reuses the traced and compiled step instead of tracing and
# compiling it again.
_STEP_CACHE: dict[tuple, Any] = {}
_STEP_CACHE_SIZE = 4


def _jitted_train_step(model: T5, optimizer: Any, optimizer_settings: Mapping[str, Any],
                       z_loss: float, mesh: Any, state: Any, frozen_params: Any,
                       shardings: Any, packed: bool):
  """The jitted step of `make_train_step(model, optimizer, z_loss)` (vmapped over a leading
  run axis when `packed`), from the cache when a run with the same model, optimizer settings
  (`make_optimizer`'s), loss, mesh, train-state structure, shapes and shardings built it."""
  key = (model, tuple(sorted(optimizer_settings.items())), z_loss, mesh, packed,
         jax.tree.structure(state),
         tuple((np.shape(x), getattr(x, "dtype", type(x))) for x in jax.tree.leaves(state)),
         tuple(jax.tree.leaves(shardings)))
  if key not in _STEP_CACHE:
    if len(_STEP_CACHE) >= _STEP_CACHE_SIZE:
      _STEP_CACHE.pop(next(iter(_STEP_CACHE)))
    step = make_train_step(model, optimizer, z_loss)
    if packed:
      step = packed_lib.make_packed_train_step(step)
    _STEP_CACHE[key] = partitioning.jit_train_step(
        step, mesh, state, partitioning.param_shardings(frozen_params, mesh), shardings,
        run_axis=packed)
  return _STEP_CACHE[key]


def _mean_metrics(pending: list[dict[str, Any]], step: int, model_dir: str | None = None
                  ) -> dict[str, float]:
  """The mean metrics of the steps since the last log; stops on a non-finite loss (naming
  the run's MODEL_DIR when given: one of a packed job's runs)."""
  fetched = jax.device_get(pending)
  losses = np.array([m["loss"] for m in fetched])
  if not np.all(np.isfinite(losses)):
    where = f" of {model_dir}" if model_dir else ""
    raise NonFiniteLossError(
        f"Non-finite loss{where} at step "
        f"{step - len(losses) + 1 + int(np.argmin(np.isfinite(losses)))}; "
        "stopped without writing a checkpoint, the last good one is intact. Lower the "
        "learning rate or check the inputs.")
  mean = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
  mean["loss_per_token"] = float(losses.sum() / max(sum(m["num_tokens"] for m in fetched), 1))
  return mean


def _checkpoint(cfg: TrainConfig, method: methods.Method, state: TrainState, step: int,
                checkpointer: checkpointer_lib.TrainStateCheckpointer,
                evaluator: PromptEvaluator | None,
                summary: run_dir.RunSummary, logger: MetricsLogger, is_chief: bool,
                batches: TrainBatches | None = None) -> None:
  """Writes the numpy trainables, evaluates, then records the summary, the input pipeline's
  position and the train state."""
  trainables = partitioning.to_host(state.params)
  if is_chief and method.full:  # T5X stores the absolute step.
    full_checkpoints.save(cfg.model_dir, step, trainables, summary.step_offset + step,
                          partitioning.to_host(state.opt_state))
  elif is_chief:
    run_dir.save_trainables(cfg.model_dir, step, method.saved_arrays(trainables))
  results = {}
  if evaluator is not None and (step % cfg.eval_period == 0 or step == cfg.train_steps):
    results = evaluator.evaluate(trainables, step)
    logger.log_eval(step, results)
    record_evaluation(summary, step, results, cfg.eval_metric, cfg.model_dir)
  summary.checkpoints[str(step)] = results
  summary.steps_done = step
  if is_chief:  # before the state: a kill in between redoes this interval identically.
    run_dir.write_summary(cfg.model_dir, summary)
  if is_chief and method.full:  # whole-model checkpoints: the latest and the best stay.
    full_checkpoints.prune(cfg.model_dir, {step, summary.best_step})
  if batches is not None:
    batches.save(cfg.model_dir, step, keep=cfg.keep_train_states)
  checkpointer.save(state)
