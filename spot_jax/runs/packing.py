"""Packing: compatible runs grouped into jobs that train in one jitted step.

With `pack` > 1, runs with equal `pack_key` (their config's `spot_jax.train.pack_policy.pack_key`,
method settings and resume step) share a job, trained by `spot_jax.train.loop.train_packed`;
a run never shares a job with a run it depends on. Job files: `spot_jax.runs.spec`.
"""

from __future__ import annotations

from typing import Any, Sequence

from spot_jax import macros
from spot_jax.runs import in_process
from spot_jax.runs.spec import Job, RunSpec
from spot_jax.train import run_dir

AUTO_PACK = 0  # `pack=AUTO_PACK`: the size `default_pack_size` picks for the runs' model.


def _planned_config(spec: RunSpec):
  """(TrainConfig, method settings) of `spec` before it runs, or None when its config does not
  parse (the run then reports the error when it trains). PROMPT_FILE is left unevaluated: a
  transfer's is its source's best prompt, known only once the source finished, and it never
  decides packing."""
  import gin
  bindings = spec.bindings() + ([f"{macros.PROMPT_FILE} = None"] if spec.gin_files else [])
  try:
    cfg = in_process.train_config(spec.gin_files, bindings)[0]
    return cfg, in_process.method_settings(cfg)
  except Exception:  # noqa: BLE001 (any config error is the run's own, reported when it runs)
    return None
  finally:
    gin.clear_config()

def pack_key(spec: RunSpec) -> tuple[Any, ...] | None:
  """What `spec` must share with the runs packed with it: `pack_policy.pack_key` of its config
  (spot_jax/train/pack_policy.py), its method settings and the train-state step it resumes
  from; None: it trains alone."""
  from spot_jax.train import pack_policy
  planned = _planned_config(spec)
  if planned is None:
    return None
  cfg, settings = planned
  return (pack_policy.pack_key(cfg), settings, run_dir.latest_train_state_step(spec.model_dir))

def default_pack_size(spec: RunSpec) -> int:
  """`spot_jax.train.pack_policy.default_pack_size` of the run of `spec` on this host."""
  from spot_jax.train import pack_policy
  planned = _planned_config(spec)
  return 1 if planned is None else pack_policy.default_pack_size(planned[0])

def pack_jobs(specs: Sequence[RunSpec], pack: int) -> list[Job]:
  """Groups `specs` into jobs of up to `pack` runs with equal `pack_key`, in order; a run never
  shares a job with a run it depends on. pack 1: one job per run; AUTO_PACK: per group, the
  `default_pack_size` of its first run."""
  if pack < 0:
    raise ValueError(f"pack must be >= 1 (or {AUTO_PACK} for automatic), got {pack}")
  if pack == 1 or len(specs) < 2:
    return [(spec,) for spec in specs]
  groups: list[tuple[Any, list[RunSpec], int]] = []
  for spec in specs:
    key = pack_key(spec)
    for group_key, members, size in groups:
      if (key is not None and group_key == key and len(members) < size
          and not any(m.model_dir in spec.depends_on or spec.model_dir in m.depends_on
                      for m in members)):
        members.append(spec)
        break
    else:
      size = 1 if key is None else (pack or default_pack_size(spec))
      groups.append((key, [spec], max(size, 1)))
  return [tuple(members) for _, members, _ in groups]
