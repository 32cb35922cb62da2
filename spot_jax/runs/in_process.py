"""The one door into training: runs trained in this process, exactly as `spot-jax train` does.

`train_in_process` is the only caller of the trainer (`spot_jax.train.loop.train` /
`train_packed`). Everything that trains a run comes through here: `spot-jax train` and the
worker processes (`train_from_flags`), the executor's in-process path (`train_spec`,
`train_specs_packed`), studies, transfers, `embed_target` and the demo. gin, JAX and the trainer
are imported when a run is trained, not at import.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from spot_jax.runs.spec import RunSpec, read_packed_job
from spot_jax.train import run_dir


def train_config(gin_files: Sequence[str], gin_bindings: Sequence[str]):
  """(TrainConfig, operative gin text) from gin files and `MACRO = value` bindings, parsed as
  `spot-jax train` parses its flags (every task registered first)."""
  import gin

  from spot_jax import gin_utils
  from tasks.lookup import register_all_tasks
  from spot_jax.train.config import TrainConfig
  register_all_tasks()
  gin_utils.parse_gin(gin_files, gin_bindings)
  try:
    cfg = TrainConfig()
  except TypeError as e:
    raise ValueError(f"Incomplete train config ({e}); include a models/*.gin file and "
                     "runs/prompt_train.gin, and set MODEL_DIR and MIXTURE_OR_TASK_NAME") from None
  return cfg, gin.config_str()

def configured_settings(gin_files: Sequence[str], gin_bindings: Sequence[str],
                        fields: Sequence[str]) -> dict[str, Any]:
  """{field: value} of TrainConfig settings as the gin config binds them (macros resolved,
  unbound fields at their defaults), without making a run: no MODEL_DIR or task needed, e.g.
  to read a transfer's shared settings before its runs are planned."""
  import gin

  from spot_jax import gin_utils
  from spot_jax.train.config import TrainConfig
  from tasks.lookup import register_all_tasks
  register_all_tasks()
  defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
  unknown = sorted(set(fields) - set(defaults))
  if unknown:
    raise ValueError(f"TrainConfig has no settings {unknown}")
  gin_utils.parse_gin(gin_files, gin_bindings)
  out = {}
  try:
    for field in fields:
      try:
        value = gin.query_parameter(f"TrainConfig.{field}")
      except ValueError:  # not bound by any gin file or flag.
        value = defaults[field]
      if isinstance(value, gin.config.ConfigurableReference):  # a %MACRO: its value.
        value = value.scoped_configurable_fn()
      out[field] = value
  finally:
    gin.clear_config()
  return out

def method_settings(cfg) -> str:
  """The run's method settings as gin binds them now, as canonical JSON."""
  import json

  from spot_jax.train.config import method_of
  return json.dumps(method_of(cfg).settings(), sort_keys=True, default=str)

def train_in_process(configs: Sequence[tuple[Any, str]]) -> list[run_dir.RunSummary]:
  """The one door into training: (TrainConfig, its operative gin text) pairs trained (or
  resumed) in this process, one run or several packed into one job
  (`spot_jax.train.loop.train` / `train_packed`). `spot-jax train`, worker processes, studies,
  transfers, `embed_target` and the demo all train through here."""
  from spot_jax.train import loop
  if not configs:
    return []
  if len(configs) == 1:
    cfg, text = configs[0]
    return [loop.train(cfg, gin_config=text)]
  return loop.train_packed([cfg for cfg, _ in configs], [text for _, text in configs])

def train_spec(spec: RunSpec, *, overwrite: bool = False) -> run_dir.RunSummary:
  """Trains (or resumes) `spec` in this process, exactly as `spot-jax train FLAGS` does: same
  gin parsing, same trainer, config.gin written to the run directory."""
  import gin
  try:
    cfg, gin_text = train_config(spec.gin_files, spec.bindings())
    if overwrite:
      cfg = dataclasses.replace(cfg, overwrite=True)
    return train_in_process([(cfg, gin_text)])[0]
  finally:  # the run's bindings must not leak into later runs or TrainConfig()s of the process.
    gin.clear_config()

def train_specs_packed(specs: Sequence[RunSpec], *, overwrite: bool = False
                       ) -> list[run_dir.RunSummary]:
  """Trains (or resumes) `specs` as one packed job in this process: each spec's gin parsed as
  `spot-jax train` parses it (its config.gin written), then `train_in_process`.
  The method's gin-bound settings must agree (the job builds one method)."""
  import gin
  cfgs, texts, settings = [], [], []
  try:
    for spec in specs:
      cfg, text = train_config(spec.gin_files, spec.bindings())
      settings.append(method_settings(cfg))
      if settings[-1] != settings[0]:
        raise ValueError(f"Runs {specs[0].name} and {spec.name} cannot be packed: method "
                         f"settings {settings[0]} vs {settings[-1]}")
      cfgs.append(dataclasses.replace(cfg, overwrite=True) if overwrite else cfg)
      texts.append(text)
    return train_in_process(list(zip(cfgs, texts)))
  finally:  # the job's bindings must not leak into later runs or TrainConfig()s of the process.
    gin.clear_config()

def train_from_flags(gin_files: Sequence[str], gin_bindings: Sequence[str], *,
                     packed_job: str | None = None, overwrite: bool = False) -> int:
  """`spot-jax train` and a worker process (`python -m spot_jax.runs.worker train`): trains
  one run from gin flags, or the runs of a packed job file, and prints one line per run."""
  if packed_job:
    if gin_files or gin_bindings:
      raise ValueError("--packed_job trains the runs its file describes; drop the gin flags")
    specs = read_packed_job(packed_job)
    for spec, summary in zip(specs, train_specs_packed(specs, overwrite=overwrite)):
      print(f"Finished {summary.task} in {spec.model_dir}: {summary.steps_done} steps, best "
            f"step {summary.best_step} ({summary.eval_metric} {summary.best_score}).")
    return 0
  cfg, gin_text = train_config(gin_files, gin_bindings)
  if overwrite:
    cfg = dataclasses.replace(cfg, overwrite=True)
  (summary,) = train_in_process([(cfg, gin_text)])
  print(f"Finished {summary.task} in {cfg.model_dir}: {summary.steps_done} steps, best step "
        f"{summary.best_step} ({summary.eval_metric} {summary.best_score}).")
  return 0
