"""Command lines that train a run or a job: a worker process, `spot-jax train`, a launch script.

`launch_command` is what a dry run prints and a launcher runs; `emit_commands` writes them to a
file (one job per line) for a cluster's own scheduler; `worker_command` starts a worker process
(`python -m spot_jax.runs.worker train`), never the CLI.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Callable, Sequence

from spot_jax.runs import launchers, packing
from spot_jax.runs.spec import Job, RunSpec, job_name, write_packed_job


def worker_command(spec: RunSpec | Job, job_dir: str | None = None) -> list[str]:
  """The worker process command that trains one run or packed job (`job_flags`)."""
  return [sys.executable, "-m", "spot_jax.runs.worker", "train",
          *job_flags(spec if isinstance(spec, tuple) else (spec,), job_dir)]

def job_flags(job: Job, job_dir: str | None) -> list[str]:
  """The `spot-jax train` arguments of a job: the run's gin flags, or `--packed_job FILE` (the
  file written under job_dir)."""
  if len(job) == 1:
    return job[0].flags()
  if job_dir is None:
    raise ValueError("packed jobs outside this process need a job_dir for their job files")
  path = os.path.join(os.path.abspath(job_dir), f"{job_name(job)}.json")
  return ["--packed_job", write_packed_job(job, path)]

def launch_command(spec: RunSpec | Job, launcher: str | None, *, absolute: bool = True,
                   sbatch_options: Sequence[str] = (), job_dir: str | None = None) -> list[str]:
  """The command line that trains `spec` (or a job of specs): `spot-jax train ...` (launcher
  None) or a launch script (`sbatch [options] launch/slurm_gpu.sbatch ...` for SLURM)."""
  flags = job_flags(spec if isinstance(spec, tuple) else (spec,), job_dir)
  if launcher is None:
    return ["spot-jax", "train", *flags]
  prefix = launchers.launch_prefix(launcher, absolute=absolute,
                                   sbatch_options=tuple(sbatch_options))
  return [*prefix, *flags]

def emit_commands(specs: Sequence[RunSpec], launcher: str, path: str,
                  sbatch_options: Callable[[str], Sequence[str]] = lambda name: (),
                  pack: int = 1, job_dir: str | None = None) -> str:
  """Writes the launch commands of `specs`, one job per line (run from the checkout root);
  pack > 1: compatible runs as packed jobs (`pack_jobs`, their job files under job_dir).
  sbatch_options(job name): extra sbatch flags of a job."""
  from spot_jax.fileio import atomic_write_bytes
  lines = [shlex.join(launch_command(job, launcher, absolute=False,
                                     sbatch_options=sbatch_options(job_name(job)),
                                     job_dir=job_dir))
           for job in packing.pack_jobs(list(specs), pack)]
  atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode())
  return path
