"""The one table of gin macros: T5X macro name <-> TrainConfig field <-> study-spec key.

The names are T5X's where T5X has the macro (t5x/configs/runs/finetune.gin and
pretrain.gin: MODEL_DIR, TRAIN_STEPS, MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS,
BATCH_SIZE, DROPOUT_RATE, INITIAL_CHECKPOINT_PATH, RANDOM_SEED, EVAL_PERIOD, ...) and
google-research/prompt-tuning's (prompt_tuning/configs/prompt_init/from_file.gin: PROMPT_FILE;
models: PROMPT_LENGTH). gin_configs/runs/prompt_train.gin binds each row's field to its macro
(`TrainConfig.<field> = %<MACRO>`); runs/prompt_eval.gin and study/transfer*.gin define the
rows without a TrainConfig field.

Every list of macro names in the code is derived from this table (`tests/test_macro_table.py`
fails on a macro name spelled as a string anywhere else in spot_jax/): code that binds or names
a macro asks `gin_name(field)` or uses the constants below.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Macro:
  """One gin macro. `field`: the TrainConfig field it sets (None: not a training setting);
  `spec_key`: the optional study-spec key that sets it for every run; `set_by_study`: how a
  study sets it when no spec key does (None: a study leaves it to the gin files)."""

  name: str
  field: str | None = None
  spec_key: str | None = None
  set_by_study: str | None = None


TABLE: tuple[Macro, ...] = (
    Macro("MODEL_DIR", "model_dir", set_by_study="the study layout"),
    Macro("MIXTURE_OR_TASK_NAME", "task", set_by_study="sources/targets"),
    Macro("TASK_FEATURE_LENGTHS", "feature_lengths", spec_key="feature_lengths"),
    Macro("TRAIN_STEPS", "train_steps", set_by_study="source_steps/target_steps"),
    Macro("BATCH_SIZE", "batch_size", spec_key="batch_size"),
    Macro("MODEL_NAME", "model"),
    Macro("INITIAL_CHECKPOINT_PATH", "initial_checkpoint", spec_key="initial_checkpoint"),
    Macro("PROMPT_LENGTH", "prompt_length", spec_key="prompt_length"),
    Macro("PROMPT_INIT", "prompt_init", set_by_study="source_prompt_init/baseline_prompt_init"),
    Macro("PROMPT_FILE", "prompt_file", set_by_study="the transfer's source run"),
    Macro("DROPOUT_RATE", "dropout_rate"),
    Macro("DTYPE", "dtype"),
    Macro("METHOD", "method", set_by_study="method"),
    Macro("OPTIMIZER", "optimizer"),
    Macro("LEARNING_RATE", "learning_rate"),
    Macro("STEP_OFFSET", "step_offset"),
    Macro("CHECKPOINT_PERIOD", "checkpoint_period", spec_key="checkpoint_period"),
    Macro("EVAL_PERIOD", "eval_period", spec_key="eval_period"),
    Macro("EVAL_METRIC", "eval_metric", spec_key="eval_metric"),
    Macro("MAX_TRAIN_EXAMPLES", "max_train_examples", spec_key="max_train_examples"),
    Macro("MAX_EVAL_EXAMPLES", "max_eval_examples", spec_key="max_eval_examples"),
    Macro("EVAL_MODE", "eval_mode"),
    Macro("KEY_STEP", "key_step", set_by_study="key_step"),
    Macro("RANDOM_SEED", "seed", set_by_study="seeds"),
    Macro("MESH_DATA", "mesh_data"),
    Macro("MESH_MODEL", "mesh_model"),
    # runs/prompt_eval.gin (EvalConfig).
    Macro("EVAL_SPLIT"),
    Macro("OUTPUT_FILE"),
    # study/transfer.gin and study/transfer_init_from.gin: the source run of a transfer.
    Macro("SOURCE_MODEL_DIR", set_by_study="the transfer's source run"),
)
# Former names still accepted on the command line: {old: current}.
RENAMED = {"EVAL_NUM_EXAMPLES": "MAX_EVAL_EXAMPLES"}

NAMES: tuple[str, ...] = tuple(m.name for m in TABLE)
BY_FIELD: dict[str, str] = {m.field: m.name for m in TABLE if m.field}
# Optional spec keys -> the macro each sets for every run of a study.
SPEC_KEYS: dict[str, str] = {m.spec_key: m.name for m in TABLE if m.spec_key}
# Macros a study sets itself -> the spec key (or what) that sets them.
SET_BY_STUDY: dict[str, str] = {m.name: m.spec_key or m.set_by_study for m in TABLE
                                if m.spec_key or m.set_by_study}

# The macros code binds by name.
MODEL_DIR = BY_FIELD["model_dir"]
TASK = BY_FIELD["task"]
TRAIN_STEPS = BY_FIELD["train_steps"]
PROMPT_FILE = BY_FIELD["prompt_file"]
PROMPT_INIT = BY_FIELD["prompt_init"]
SOURCE_MODEL_DIR = "SOURCE_MODEL_DIR"


def gin_name(field: str) -> str:
  """The macro that sets TrainConfig.<field> (KeyError naming the known fields if none)."""
  try:
    return BY_FIELD[field]
  except KeyError:
    raise KeyError(f"No gin macro sets TrainConfig.{field}; macros set "
                   f"{sorted(BY_FIELD)}") from None


def setting(field: str) -> str:
  """What sets TrainConfig.<field> from the command line: its macro, or `TrainConfig.<field>`
  for a field no macro sets (gin_configs/runs/prompt_train.gin binds only the macros)."""
  return BY_FIELD.get(field, f"TrainConfig.{field}")


def flag(field: str, value: str = "") -> str:
  """The command-line flag that sets TrainConfig.<field>: `--gin.<MACRO>=<value>`."""
  return f"--gin.{setting(field)}={value}"
