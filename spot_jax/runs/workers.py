"""Worker processes: up to N `python -m spot_jax.runs.worker train` processes at once, started
as dependencies allow, each dying with this process (no orphans left training).
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, Callable, Sequence

from spot_jax import fileio
from spot_jax.runs import commands
from spot_jax.runs.execution import Execution, blocker, finish, stop_on_full_disk
from spot_jax.runs.spec import Job, Log, RunSpec, job_name


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> Callable[[], None]:
  """A Popen preexec_fn: the worker gets SIGTERM when this process dies (Linux
  PR_SET_PDEATHSIG, kept across exec), and exits at once if it already has."""
  def preexec() -> None:
    import ctypes
    import signal
    try:
      libc = ctypes.CDLL(None, use_errno=True)
      libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's `finally` still stops workers.
      pass
    if os.getppid() != parent:
      os._exit(1)
  return preexec


def start_worker(command: Sequence[str], log_file: Any) -> subprocess.Popen:
  """A worker process that dies with this process (see `_die_with_parent`)."""
  return subprocess.Popen(list(command), stdout=log_file, stderr=subprocess.STDOUT,
                          preexec_fn=_die_with_parent(os.getpid()))

def log_path(log_dir: str, spec: RunSpec | Job) -> str:
  name = job_name(spec) if isinstance(spec, tuple) else spec.name
  return os.path.join(os.path.abspath(log_dir), f"{name}.log")

def run_workers(jobs: list[Job], result: Execution, processes: int, log_dir: str | None,
                 log: Log, on_done, job_dir: str | None) -> None:
  """Up to `processes` `python -m spot_jax.runs.worker train` workers, respecting dependencies."""
  if log_dir is None:
    raise ValueError("worker processes need a log_dir for their output")
  pending = list(jobs)
  running: dict[subprocess.Popen, tuple[Job, Any]] = {}
  disk_full = False
  try:
    while pending or running:
      pending_dirs = ({s.model_dir for job in pending for s in job}
                      | {s.model_dir for job, _ in running.values() for s in job})
      for job in list(pending):
        if len(running) >= processes:
          break
        why = blocker(job, pending_dirs)
        if why == "wait":
          continue
        pending.remove(job)
        if why:
          result.blocked += [(spec, why) for spec in job]
          continue
        path = log_path(log_dir, job)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        log_file = open(path, "ab")
        log(f"start {job_name(job)} (log {path})")
        command = commands.worker_command(job[0] if len(job) == 1 else job, job_dir)
        running[start_worker(command, log_file)] = (job, log_file)
      if not running:  # everything left waits on a run that can never start.
        result.blocked += [(s, "its dependency never started") for job in pending for s in job]
        return
      time.sleep(0.2)
      for process in [p for p in running if p.poll() is not None]:
        job, log_file = running.pop(process)
        log_file.close()
        if process.returncode == 0:
          for spec in job:
            finish(spec, result, on_done)
        elif process.returncode == fileio.DISK_FULL_EXIT and not disk_full:
          disk_full = True  # running workers end on their own; no new one starts.
          stop_on_full_disk(job, pending, job[0].model_dir, result, log)
        else:
          dirs = ", ".join(s.model_dir for s in job)
          result.failed += [(spec, f"exit code {process.returncode}; run dir {dirs}, log "
                                   f"{log_path(log_dir, job)}") for spec in job]
  finally:  # an exception or Ctrl-C here stops the workers too (no orphans left training).
    for process in running:
      if process.poll() is None:
        process.terminate()
    for process, (_, log_file) in running.items():
      try:
        process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        process.kill()
      log_file.close()
