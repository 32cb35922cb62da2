"""A run's settings: TrainConfig (gin builds it from the macros of spot_jax/macros.py at the
command line), their validation before anything is loaded or written, and which of them make a
run's identity (what a resumed or packed run must share)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import os
from typing import Any, Mapping, Sequence

import gin
import jax.numpy as jnp

from spot_jax import macros
from spot_jax import methods
from spot_jax.models import prompts
from spot_jax.evaluation.evaluator import check_eval_mode
from spot_jax.models.losses import DEFAULT_Z_LOSS
from spot_jax.models.t5 import REMAT_POLICIES
from spot_jax.train import partitioning
from spot_jax.train.optimizer import ADAMW_WARMUP_FRACTION, OPTIMIZERS


PROMPT_INITS = ("sampled_vocab", "class_labels", "file", "uniform")
TARGET_TRAIN_STEPS = 100_000  # SPoT §3.1 (source prompts: 2**18, runs/source_train.gin).


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


NON_IDENTITY_MODEL_FIELDS = ("dropout_rate", "dtype", "remat", "remat_policy", "scan_layers")
FROZEN_DTYPES = ("float32", "bfloat16")


def check_frozen_dtype(name: str) -> Any:
  if name not in FROZEN_DTYPES:
    raise ValueError(f"Unknown frozen_dtype {name!r}; choose one of {FROZEN_DTYPES} "
                     "(TrainConfig.frozen_dtype)")
  return jnp.dtype(name)


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
