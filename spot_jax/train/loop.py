"""A training run of any method: frozen model + task -> MODEL_DIR with trainables, metrics, summary.

`train(TrainConfig(...))` is plain Python; gin only builds the TrainConfig at the command line.
A run resumes from the last complete train-state checkpoint in MODEL_DIR, and because the data
order is a function of (task, seed, step) and dropout keys are fold_in(rng, step), a resumed run
ends with the same trainables as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import numbers
import os
from typing import Any, Mapping, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from spot_jax import macros
from spot_jax.fileio import atomic_write_bytes
from spot_jax import methods, runtime
from spot_jax.models import prompts
from spot_jax.checkpoints.load import (LoadedModel, fingerprint, is_hf_checkpoint, load_model,
                                       step_offset)
from spot_jax.evaluation.evaluator import PromptEvaluator, check_eval_mode, encode_labels
from spot_jax.evaluation.scores import record_evaluation
from spot_jax.models.config import get_config
from spot_jax.models.init import init_frozen, random_fingerprint
from spot_jax.models.layout import to_layout
from spot_jax.models.losses import DEFAULT_Z_LOSS
from spot_jax.models.t5 import REMAT_POLICIES, T5
from tasks.lookup import get_task_or_mixture, subtasks_with_metrics, task_labels
from spot_jax.train import checkpointer as checkpointer_lib, full_checkpoints, partitioning, run_dir
from spot_jax.train import packed as packed_lib
from spot_jax.data.batches import TrainBatches
from spot_jax.train.metrics_log import MetricsLogger
from spot_jax.train.optimizer import (ADAMW_WARMUP_FRACTION, OPTIMIZERS, SPOT_WEIGHT_DECAY,
                                     adamw_warmup, finetune_adafactor, prompt_adafactor)
from spot_jax.train.step import TrainState, init_train_state, make_train_step

PROMPT_INITS = ("sampled_vocab", "class_labels", "file", "uniform")
TARGET_TRAIN_STEPS = 100_000  # SPoT §3.1 (source prompts: 2**18, runs/source_train.gin).


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the run stopped before writing another checkpoint."""


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C (SIGINT) during training; the last checkpoint is intact and a rerun resumes."""

  def __init__(self, step: int, checkpoint_step: int):
    super().__init__(f"interrupted at step {step} (last checkpoint: step {checkpoint_step}); "
                     "run the same command to resume")
    self.step, self.checkpoint_step = step, checkpoint_step


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
  remat_policy: str = "full"  # with remat: full | minimal | dots (models.config.T5Config).
  # Each stack as one nn.scan (T5X's scan_layers): 2.5x faster compiles, but on an H200 a 1.5x
  # slower steady step for base (82.7 vs 54.7 ms, benchmarks/RESULTS.md `gpu_suite`), so off by
  # default: with the persistent compilation cache a study pays the unrolled compile once per
  # shape, and steady steps dominate any run of more than ~2K steps. True: scanned (methods
  # with per-layer parameters are refused, MethodHooks.per_layer); None: scanned on
  # GPU/TPU where the method allows it (quick experiments, restarts without a cache).
  scan_layers: bool | None = False
  frozen_dtype: str = "float32"  # bfloat16: frozen weights stored in bf16 (XXL on one GPU).
  method: str = "prompt"
  optimizer: str | None = None  # adafactor | adamw; None: the method's default.
  learning_rate: float | None = None  # None: the method's default.
  weight_decay: float | None = None  # None: Adafactor 1e-5 (SPoT), AdamW 0.
  warmup_fraction: float = ADAMW_WARMUP_FRACTION  # AdamW only.
  init_from: str | None = None
  # replicated | follow: trainables split like the frozen kernel they attach to (partitioning).
  trainable_sharding: str = "replicated"
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
  eval_mode: str = "beam_search"  # T5X's; or greedy, rank_classification (evaluator.EVAL_MODES).
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
NON_IDENTITY_MODEL_FIELDS = ("dropout_rate", "dtype", "remat", "remat_policy", "scan_layers")
FROZEN_DTYPES = ("float32", "bfloat16")


def check_frozen_dtype(name: str) -> Any:
  if name not in FROZEN_DTYPES:
    raise ValueError(f"Unknown frozen_dtype {name!r}; choose one of {FROZEN_DTYPES} "
                     "(TrainConfig.frozen_dtype)")
  return jnp.dtype(name)


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


def _check_task(cfg: TrainConfig, model: T5) -> None:
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
PACK_FREE_FIELDS = frozenset({
    "model_dir", "task", "seed", "prompt_init", "prompt_file", "class_labels", "init_from",
    "max_train_examples", "max_eval_examples", "eval_batch_size", "eval_metric", "eval_mode",
    "key_step", "keep_train_states", "overwrite"})


def pack_key(cfg: TrainConfig) -> tuple[tuple[str, Any], ...]:
  """What runs packed together must share: every field but `PACK_FREE_FIELDS`, plus the seed
  when the frozen model is randomly initialised (the seed then picks the frozen model)."""
  key = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
         if f.name not in PACK_FREE_FIELDS}
  if not cfg.initial_checkpoint:
    key["seed"] = cfg.seed
  return tuple(sorted((k, repr(v)) for k, v in key.items()))


def default_pack_size(cfg: TrainConfig) -> int:
  """`spot_jax.train.packed.default_pack_size` for runs like `cfg` on this host: the default
  device's memory limit (host memory on CPU) and the named model's weights."""
  config = get_config(cfg.model)
  memory = 0
  try:
    memory = int((jax.devices()[0].memory_stats() or {}).get("bytes_limit", 0))
  except Exception:  # noqa: BLE001 (CPU backends report no memory stats)
    pass
  if not memory:
    try:
      memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
      memory = 2**33
  d, f, v = config.emb_dim, config.mlp_dim, config.vocab_size
  inner = config.num_heads * config.head_dim
  layers = config.num_encoder_layers + config.num_decoder_layers
  frozen = 4 * (2 * v * d + layers * (4 * d * inner + 3 * d * f) + config.num_decoder_layers
                * 4 * d * inner)
  return packed_lib.default_pack_size(
      config, cfg.batch_size, cfg.feature_lengths["inputs"], cfg.feature_lengths["targets"],
      cfg.prompt_length, memory_bytes=memory, frozen_bytes=frozen,
      backend=jax.default_backend())


def check_packable(cfgs: Sequence[TrainConfig]) -> None:
  """Refuses runs that cannot share one step, naming the first setting that differs."""
  if not cfgs:
    raise ValueError("Nothing to pack: no runs")
  first = dict(pack_key(cfgs[0]))
  dirs = [os.path.abspath(os.path.expanduser(c.model_dir)) for c in cfgs]
  if len(set(dirs)) != len(dirs):
    shared = sorted(d for d in dirs if dirs.count(d) > 1)[0]
    raise ValueError(f"Packed runs share a MODEL_DIR: {shared}; give each run its own")
  for cfg in cfgs[1:]:
    for name, value in pack_key(cfg):
      if first.get(name) != value:
        raise ValueError(f"Runs {cfgs[0].model_dir} and {cfg.model_dir} cannot be packed: "
                         f"{name} is {first.get(name)} vs {value}; pack only runs with the "
                         "same model, lengths, batch, steps and optimizer settings")


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
    _check_task(cfg, model)
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


def build_summary(cfg: TrainConfig, method: methods.Method, identity: dict[str, Any],
                  offset: tuple[int, str], optimizer_settings: dict[str, Any]
                  ) -> run_dir.RunSummary:
  """A fresh run's run.json content (nothing trained yet)."""
  summary = run_dir.RunSummary(
      task=cfg.task, model=identity,
      prompt_length=cfg.prompt_length if method.prompt_like else 0, seed=cfg.seed,
      batch_size=cfg.batch_size, feature_lengths=dict(cfg.feature_lengths),
      train_steps=cfg.train_steps, key_step=cfg.key_step, eval_metric=cfg.eval_metric,
      prompt_init=cfg.prompt_init if method.prompt_like else "",
      max_train_examples=cfg.max_train_examples, max_eval_examples=cfg.max_eval_examples,
      eval_mode=check_eval_mode(cfg.eval_mode), settings=result_settings(cfg),
      method=method.name, method_settings=method.settings(), optimizer=optimizer_settings)
  summary.step_offset, summary.step_offset_source = offset
  return summary


def finished_summary(cfg: TrainConfig, summary: run_dir.RunSummary
                     ) -> run_dir.RunSummary | None:
  """MODEL_DIR's summary when it holds this very run, finished with >= TRAIN_STEPS steps."""
  try:
    existing = run_dir.read_summary(cfg.model_dir)
  except run_dir.RunDirError:
    return None
  if (existing.finished and existing.steps_done >= cfg.train_steps
      and not run_dir.identity_diffs(existing, summary)):
    return existing
  return None


# TrainConfig fields that do not change the trained prompts or their scores (the rest, and any
# field added later, are part of a run's identity: `run_dir.RunSummary.settings`).
NON_IDENTITY_FIELDS = frozenset({
    "model_dir", "task", "feature_lengths", "train_steps", "batch_size", "model",
    "initial_checkpoint", "prompt_length", "seed", "key_step", "max_train_examples",
    "max_eval_examples", "remat", "remat_policy", "scan_layers", "frozen_dtype",
    "eval_batch_size",
    "keep_train_states", "log_period", "mesh_data", "mesh_model", "trainable_sharding",
    "overwrite"})


def result_settings(cfg: TrainConfig) -> dict[str, Any]:
  """The settings that change the result, beyond the RunSummary's own fields, as JSON values.

  The prompt file enters by its content digest (and only with prompt_init 'file'), class
  labels only with prompt_init 'class_labels'.
  """
  settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
              if f.name not in NON_IDENTITY_FIELDS}
  settings["prompt_file"] = _file_digest(cfg.prompt_file) if cfg.prompt_init == "file" else None
  settings["init_from"] = _dir_digest(cfg.init_from)
  settings["class_labels"] = (list(cfg.class_labels) if cfg.prompt_init == "class_labels"
                              and cfg.class_labels else None)
  return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}


def _file_digest(path: str | None) -> str | None:
  if not path or not os.path.isfile(path):
    return None
  with open(path, "rb") as f:
    return "sha256:" + hashlib.sha256(f.read()).hexdigest()[:16]


def _dir_digest(path: str | None) -> str | None:
  """The content digest of a numpy checkpoint directory's files (the `init_from` source)."""
  if not path or not os.path.isdir(path):
    return None
  digest = hashlib.sha256()
  for root, dirs, files in os.walk(path):  # a T5X checkpoint (model runs) has zarr folders.
    dirs.sort()
    for name in sorted(files):
      file = os.path.join(root, name)
      with open(file, "rb") as f:
        digest.update(os.path.relpath(file, path).encode() + b"\0" + f.read())
  return "sha256:" + digest.hexdigest()[:16]


def _check_type(name: str, value: Any, kind: type | tuple[type, ...], what: str,
                minimum: float | None = None) -> None:
  ok = isinstance(value, kind) and not isinstance(value, bool)
  if ok and isinstance(value, numbers.Real) and not math.isfinite(value):
    ok = False
  if ok and minimum is not None and value < minimum:
    ok = False
  if not ok:
    bound = "" if minimum is None else f" >= {minimum:g}"
    raise ValueError(f"{name}={value!r} is not {what}{bound}; set --gin.{macros.setting(name)} "
                     "to one")


def validate_config(cfg: TrainConfig) -> TrainConfig:
  """Checks types and ranges of every setting, before anything is loaded or written; returns
  the config with `~` expanded in its paths."""
  integer, number = numbers.Integral, numbers.Real
  for name, minimum in (("train_steps", 1), ("batch_size", 1), ("prompt_length", 1),
                        ("checkpoint_period", 1), ("eval_period", 0), ("key_step", 0),
                        ("seed", 0), ("log_period", 1), ("keep_train_states", 1)):
    _check_type(name, getattr(cfg, name), integer, "an integer", minimum)
  for name in ("decay_rate", "z_loss", "warmup_fraction"):
    _check_type(name, getattr(cfg, name), number, "a number", 0)
  for name in ("learning_rate", "weight_decay"):
    if getattr(cfg, name) is not None:  # None: the method's default (docs/methods.md).
      _check_type(name, getattr(cfg, name), number, "a number or None", 0)
  methods.method_class(cfg.method)  # an unknown METHOD names the valid ones.
  if cfg.trainable_sharding not in partitioning.TRAINABLE_SHARDINGS:
    raise ValueError(f"Unknown trainable_sharding {cfg.trainable_sharding!r}; choose one of "
                     f"{partitioning.TRAINABLE_SHARDINGS} (--gin.TrainConfig.trainable_sharding)")
  if cfg.optimizer is not None and cfg.optimizer not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {cfg.optimizer!r}; choose one of {OPTIMIZERS} "
                     f"(--gin.{macros.setting('optimizer')})")
  _check_type("dropout_rate", cfg.dropout_rate, number, "a number", 0)
  if cfg.dropout_rate >= 1:
    raise ValueError(f"dropout_rate={cfg.dropout_rate!r} must be below 1; set "
                     f"--gin.{macros.setting('dropout_rate')}")
  check_frozen_dtype(cfg.frozen_dtype)
  if cfg.remat_policy not in REMAT_POLICIES:
    raise ValueError(f"Unknown remat_policy {cfg.remat_policy!r}; choose one of "
                     f"{REMAT_POLICIES} (TrainConfig.remat_policy)")
  for name, minimum in (("max_train_examples", 1), ("max_eval_examples", 1),
                        ("eval_batch_size", 1), ("step_offset", 0)):
    if getattr(cfg, name) is not None:
      _check_type(name, getattr(cfg, name), integer, "an integer or None", minimum)
  if cfg.clipping_threshold is not None:
    _check_type("clipping_threshold", cfg.clipping_threshold, number, "a number or None", 0)
  for name in ("model_dir", "task", "model"):
    if not isinstance(getattr(cfg, name), str) or not getattr(cfg, name):
      raise ValueError(f"{name}={getattr(cfg, name)!r} must be a non-empty string; set "
                       f"--gin.{macros.setting(name)}")
  lengths = cfg.feature_lengths
  if (not isinstance(lengths, Mapping) or set(lengths) != {"inputs", "targets"}
      or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
                 for v in lengths.values())):
    raise ValueError(f"feature lengths {lengths!r} must be positive integers for 'inputs' and "
                     f"'targets'; set {macros.flag('feature_lengths')}\"{{'inputs': 512, "
                     "'targets': 32}\"")
  if cfg.prompt_init not in PROMPT_INITS:
    raise ValueError(f"Unknown prompt_init {cfg.prompt_init!r}; choose one of {PROMPT_INITS} "
                     f"(--gin.{macros.PROMPT_INIT})")
  check_eval_mode(cfg.eval_mode)
  model_dir = os.path.expanduser(cfg.model_dir)
  if os.path.exists(model_dir) and not os.path.isdir(model_dir):
    raise ValueError(f"MODEL_DIR {model_dir} exists and is not a directory; choose a directory")
  initial_checkpoint = cfg.initial_checkpoint and os.path.expanduser(cfg.initial_checkpoint)
  if initial_checkpoint and "://" not in initial_checkpoint and not os.path.exists(
      initial_checkpoint):
    raise FileNotFoundError(f"INITIAL_CHECKPOINT_PATH {initial_checkpoint} does not exist; "
                            f"point --gin.{macros.setting('initial_checkpoint')} at a T5X "
                            "checkpoint directory")
  prompt_file = cfg.prompt_file and os.path.expanduser(cfg.prompt_file)
  if cfg.prompt_init == "file":
    if not prompt_file:
      raise ValueError("prompt_init='file' needs PROMPT_FILE (TrainConfig.prompt_file)")
    if not os.path.isfile(prompt_file):
      raise FileNotFoundError(f"PROMPT_FILE {prompt_file} does not exist; point "
                              f"--gin.{macros.PROMPT_FILE} at a .npy prompt [L, embed]")
  return dataclasses.replace(cfg, model_dir=model_dir, initial_checkpoint=initial_checkpoint,
                             prompt_file=prompt_file)


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
