"""The one run executor: every unfinished run of a list trained, dependencies first.

Transfers (`spot_jax.library.transfer`), studies (`spot_jax.study.runner`) and the demo all
describe a training run as a `RunSpec` (`spot_jax.runs.spec`, with the one "finished" rule).
`execute` trains a list of specs in order, skipping finished runs: in this process
(`spot_jax.runs.in_process.train_spec`, the one door into training), in `processes` worker
processes (`spot_jax.runs.workers`), or through a launch script (`spot_jax.runs.commands`:
`launch/*.sh`, SLURM with job dependencies); a dry run only prints the commands. With `pack` > 1,
compatible runs share one job (`spot_jax.runs.packing`) trained in one jitted step.

Standard library only at the top; gin, JAX and the trainer are imported when a run is trained.
"""

from __future__ import annotations

import shlex
import subprocess
from typing import Any, Callable, Sequence

from spot_jax import fileio
from spot_jax.runs import commands, in_process, packing, workers
from spot_jax.runs.execution import Execution, blocker, describe, finish, stop_on_full_disk
from spot_jax.runs.spec import Job, Log, RunSpec, is_finished, job_name
from spot_jax.train import run_dir


def execute(specs: Sequence[RunSpec], *, processes: int = 1, launcher: str | None = None,
            dry_run: bool = False, log_dir: str | None = None, log: Log = print,
            on_done: Callable[[RunSpec, run_dir.RunSummary], None] | None = None,
            run_one: Callable[[RunSpec], Any] | None = None, pack: int = 1,
            job_dir: str | None = None) -> Execution:
  """Trains every unfinished spec, dependencies first, skipping finished ones.

  launcher None: in this process (processes == 1, `run_one` or `in_process.train_spec`) or in
  `processes` worker processes (output in log_dir/<job>.log). A launcher name: each job is the
  launch script's command, run here in order (SLURM: submitted with sbatch, a job waiting on another
  gets --dependency=afterok). dry_run: prints the commands. A failed job is reported with its
  run directories and blocks only the runs that depend on it. pack: up to this many compatible
  runs per job (`packing.pack_jobs`; `packing.AUTO_PACK` picks the size), packed job files
  under job_dir.
  """
  if processes < 1:
    raise ValueError(f"processes must be >= 1, got {processes}")
  result = Execution(specs=list(specs))
  todo = []
  for spec in specs:
    if is_finished(spec):
      result.skipped.append(spec)
    else:
      todo.append(spec)
  jobs = packing.pack_jobs(todo, pack)
  if dry_run or launcher is not None:
    _launch(jobs, result, launcher, dry_run, log, job_dir)
  elif processes == 1:
    _run_sequential(jobs, result, log, on_done, run_one or in_process.train_spec)
  else:
    workers.run_workers(jobs, result, processes, log_dir, log, on_done, job_dir or log_dir)
  return result

def _run_sequential(jobs: list[Job], result: Execution, log: Log, on_done,
                    run_one: Callable[[RunSpec], Any]) -> None:
  """Each job in order (a job waiting on a later job's run comes after it)."""
  pending = list(jobs)
  done = 0
  while pending:
    pending_dirs = {s.model_dir for job in pending for s in job}
    ready = [job for job in pending if blocker(job, pending_dirs) != "wait"]
    if not ready:  # every job waits on a run that is itself waiting: a dependency cycle.
      result.blocked += [(s, "its dependency never started") for job in pending for s in job]
      return
    job = ready[0]
    pending.remove(job)
    why = blocker(job, pending_dirs)
    if why:
      result.blocked += [(spec, why) for spec in job]
      continue
    done += 1
    log(f"[{done}/{len(jobs)}] {describe(job)}")
    try:
      if len(job) == 1:
        run_one(job[0])
      else:
        in_process.train_specs_packed(job)
    except KeyboardInterrupt:
      raise
    except Exception as e:  # one failed job must not stop the others (a full disk does).
      full = fileio.disk_full_path(e, job[0].model_dir)
      if full is not None:
        stop_on_full_disk(job, pending, full, result, log)
        return
      dirs = ", ".join(s.model_dir for s in job)
      result.failed += [(spec, f"{type(e).__name__}: {e} (run dir {dirs})") for spec in job]
      continue
    for spec in job:
      finish(spec, result, on_done)

def _launch(jobs: list[Job], result: Execution, launcher: str | None, dry_run: bool,
            log: Log, job_dir: str | None) -> None:
  """Each job through its launch command (or printed with dry_run), in order."""
  job_of = {s.model_dir: job for job in jobs for s in job}
  for job in jobs:
    options: tuple[str, ...] = ()
    if launcher == "slurm_gpu":
      waits = {job_name(job_of[d]) for s in job for d in s.depends_on if d in job_of}
      ids = [result.submitted.get(n, f"<job id of {n}>") for n in sorted(waits)]
      options = ("--parsable",) + ((f"--dependency=afterok:{':'.join(ids)}",) if ids else ())
    command = commands.launch_command(job, launcher, sbatch_options=options, job_dir=job_dir)
    for spec in job:
      result.commands[spec.name] = command
    if dry_run:
      log(shlex.join(command))
      continue
    log(f"$ {shlex.join(command)}")
    completed = subprocess.run(command, capture_output=launcher == "slurm_gpu", text=True)
    if completed.returncode != 0:
      result.failed += [(spec, f"exit code {completed.returncode}: {shlex.join(command)}")
                        for spec in job]
      continue
    if launcher == "slurm_gpu":
      job_id = completed.stdout.strip().split(";")[0]
      for spec in job:
        result.submitted[spec.name] = job_id
      result.submitted[job_name(job)] = job_id
      log(f"submitted {job_name(job)}: job {job_id}")
    else:
      for spec in job:
        finish(spec, result, None)
