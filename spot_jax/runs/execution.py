"""What the executor did with each run (`Execution`), and the bookkeeping both of its schedulers
share: a job's dependencies (`blocker`), a finished run (`finish`), a full disk
(`stop_on_full_disk`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from spot_jax import fileio
from spot_jax.runs.spec import Job, Log, RunSpec, read_finished


@dataclasses.dataclass
class Execution:
  """What `execute` did with each spec; `ok` when nothing failed or was blocked."""

  specs: list[RunSpec]
  skipped: list[RunSpec] = dataclasses.field(default_factory=list)  # finished before.
  ran: list[RunSpec] = dataclasses.field(default_factory=list)
  failed: list[tuple[RunSpec, str]] = dataclasses.field(default_factory=list)  # (spec, why)
  blocked: list[tuple[RunSpec, str]] = dataclasses.field(default_factory=list)
  commands: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # name -> argv.
  submitted: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> SLURM job id.

  @property
  def ok(self) -> bool:
    return not self.failed and not self.blocked

  def status(self, spec: RunSpec) -> str:
    """finished | skipped | failed | blocked | submitted | dry_run | pending."""
    if spec in self.skipped:
      return "skipped"
    if spec in self.ran:
      return "finished"
    if any(s == spec for s, _ in self.failed):
      return "failed"
    if any(s == spec for s, _ in self.blocked):
      return "blocked"
    if spec.name in self.submitted:
      return "submitted"
    return "dry_run" if spec.name in self.commands else "pending"

def blocker(job: Sequence[RunSpec], pending_dirs: set[str]) -> str | None:
  """Why the job cannot start now: 'wait' while a dependency is still queued, else a reason."""
  for spec in job:
    for dep in spec.depends_on:
      if read_finished(dep) is not None:
        continue
      if dep in pending_dirs:
        return "wait"
      return (f"the run it starts from, {dep}, is not finished (failed, or not part of this "
              "call: train it first)")
  return None

def finish(spec: RunSpec, result: Execution, on_done) -> None:
  summary = read_finished(spec.model_dir, spec.train_steps)
  if summary is None:
    result.failed.append((spec, f"run.json in {spec.model_dir} does not say finished"))
    return
  result.ran.append(spec)
  if on_done is not None:
    on_done(spec, summary)

def describe(job: Job) -> str:
  if len(job) == 1:
    return f"{job[0].name}: {job[0].model_dir}"
  return f"packed job of {len(job)} runs: " + ", ".join(s.name for s in job)

def stop_on_full_disk(job: Job, pending: list[Job], path: str, result: Execution,
                       log: Log) -> None:
  """The job failed on a full disk (its failure names the device) and no further job starts:
  each would fail the same way. The pending ones are blocked."""
  log("the disk is full: no further run starts")
  result.failed += [(spec, fileio.disk_full_message(path)) for spec in job]
  result.blocked += [(spec, "not started: the disk is full") for waiting in pending
                     for spec in waiting]
  pending.clear()
