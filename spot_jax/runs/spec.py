"""One run as a spec, and the one "finished" rule.

A training run is a `RunSpec`: the gin files and macro bindings of one `spot-jax train`
invocation (transfers, studies and the demo all describe runs this way). `read_finished` /
`is_finished` are the one rule for "this run is done" (`spot_jax.runs.execute` skips such runs).
A `Job` is the runs one process trains together; a packed job's file holds its runs' specs.

Standard library and `spot_jax.train.run_dir` only: cheap to import.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from typing import Callable, Mapping, Sequence

from spot_jax import macros
from spot_jax.train import run_dir

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One prompt-tuning run: `spot-jax train` with these gin files and `MACRO = literal`
  bindings (values are gin text, e.g. '"/runs/x"' or '300'). `depends_on`: model dirs that
  must hold finished runs before this one starts. kind/source/target/seed describe the run's
  place in a study or transfer (free-form labels, not part of its configuration)."""

  name: str
  model_dir: str
  gin_files: tuple[str, ...]
  gin_bindings: Mapping[str, str]
  depends_on: tuple[str, ...] = ()
  kind: str = "run"
  source: str | None = None
  target: str | None = None
  seed: int = 0

  @property
  def train_steps(self) -> int | None:
    """The run's length: its TRAIN_STEPS macro, or a direct TrainConfig.train_steps binding
    (which wins, being applied after the macro)."""
    steps = self.gin_bindings.get("TrainConfig.train_steps",
                                  self.gin_bindings.get(macros.TRAIN_STEPS))
    return None if steps is None else int(steps)

  def bindings(self) -> list[str]:
    """The gin bindings as `MACRO = value` lines."""
    return [f"{name} = {value}" for name, value in self.gin_bindings.items()]

  def flags(self) -> list[str]:
    """The `spot-jax train` arguments."""
    return ([f"--gin_file={f}" for f in self.gin_files]
            + [f"--gin.{name}={value}" for name, value in self.gin_bindings.items()])

  def command(self, prefix: Sequence[str] = ("spot-jax", "train")) -> str:
    return shlex.join([*prefix, *self.flags()])


def safe_name(*parts: str) -> str:
  """A file-name-safe run name from its parts."""
  return re.sub(r"[^A-Za-z0-9_.-]", "_", ".".join(p for p in parts if p))


# ----------------------------------------------------------------------------- the finished rule


def read_finished(model_dir: str, train_steps: int | None = None) -> run_dir.RunSummary | None:
  """The run's summary when it is finished, else None.

  Finished means: run.json says so AND all of its own train_steps are done AND (when given)
  at least `train_steps` are done. A finished run whose TRAIN_STEPS was raised and that was
  killed while training further is therefore not finished (nor is a run asked for more steps
  than it has).
  """
  try:
    summary = run_dir.read_summary(model_dir)
  except run_dir.RunDirError:
    return None
  if not summary.finished or summary.steps_done < summary.train_steps:
    return None
  if train_steps is not None and summary.steps_done < train_steps:
    return None
  return summary


def is_finished(spec: RunSpec) -> bool:
  return read_finished(spec.model_dir, spec.train_steps) is not None


Job = tuple[RunSpec, ...]  # runs trained together: one run, or a packed job of several.


# ----------------------------------------------------------------------------- job files


def job_name(job: Job) -> str:
  return job[0].name if len(job) == 1 else safe_name("pack", job[0].name, f"{len(job)}_runs")


def write_packed_job(job: Job, path: str) -> str:
  """Writes a packed job file: {"runs": [{name, model_dir, gin_files, gin_bindings}, ...]}."""
  import json

  from spot_jax.fileio import atomic_write_bytes
  runs = [{"name": s.name, "model_dir": s.model_dir, "gin_files": list(s.gin_files),
           "gin_bindings": dict(s.gin_bindings)} for s in job]
  atomic_write_bytes(path, json.dumps({"runs": runs}, indent=2).encode())
  return path


def read_packed_job(path: str) -> list[RunSpec]:
  """The run specs of a packed job file (`write_packed_job`)."""
  import json
  try:
    with open(path) as f:
      runs = json.load(f)["runs"]
    return [RunSpec(r["name"], r["model_dir"], tuple(r["gin_files"]), dict(r["gin_bindings"]))
            for r in runs]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path} is not a packed job file ({type(e).__name__}: {e}); write one "
                     "with `spot-jax study run --emit_jobs` or spot_jax.runs.spec.write_packed_job"
                     ) from None
