"""The one run executor: a prompt-tuning run as a spec, one "finished" rule, one way to run it.

Transfers (`spot_jax.library.transfer`), studies (`spot_jax.study.runner`) and the demo all
describe a training run as a `RunSpec`: the gin files and macro bindings of one
`spot-jax train` invocation. `execute` trains a list of specs in order, skipping finished runs,
in this process (`train_spec`: gin parsed exactly as the CLI parses it, `config.gin` written),
in `processes` worker processes (`python -m spot_jax.cli.main train ...`), or through a launch
script (`launch/*.sh`, SLURM with job dependencies); a dry run only prints the commands.

This module imports numpy-free standard library only at the top; gin, JAX and the trainer are
imported when a run is actually trained here.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from spot_jax import launchers
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
    steps = self.gin_bindings.get("TrainConfig.train_steps", self.gin_bindings.get("TRAIN_STEPS"))
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


# ----------------------------------------------------------------------------- one run


def train_config(gin_files: Sequence[str], gin_bindings: Sequence[str]):
  """(TrainConfig, operative gin text) from gin files and `MACRO = value` bindings, parsed as
  `spot-jax train` parses its flags (every task registered first)."""
  import gin

  from spot_jax import gin_utils
  from spot_jax.tasks_util import register_all_tasks
  from spot_jax.train.loop import TrainConfig
  register_all_tasks()
  gin_utils.parse_gin(gin_files, gin_bindings)
  try:
    cfg = TrainConfig()
  except TypeError as e:
    raise ValueError(f"Incomplete train config ({e}); include a models/*.gin file and "
                     "runs/prompt_train.gin, and set MODEL_DIR and MIXTURE_OR_TASK_NAME") from None
  return cfg, gin.config_str()


def train_spec(spec: RunSpec, *, overwrite: bool = False) -> run_dir.RunSummary:
  """Trains (or resumes) `spec` in this process, exactly as `spot-jax train FLAGS` does: same
  gin parsing, same trainer, config.gin written to the run directory."""
  from spot_jax.train.loop import train
  cfg, gin_text = train_config(spec.gin_files, spec.bindings())
  if overwrite:
    cfg = dataclasses.replace(cfg, overwrite=True)
  return train(cfg, gin_config=gin_text)


def worker_command(spec: RunSpec) -> list[str]:
  return [sys.executable, "-m", "spot_jax.cli.main", "train", *spec.flags()]


def launch_command(spec: RunSpec, launcher: str | None, *, absolute: bool = True,
                   sbatch_options: Sequence[str] = ()) -> list[str]:
  """The command line that trains `spec`: `spot-jax train ...` (launcher None) or a launch
  script (`sbatch [options] launch/slurm_gpu.sbatch ...` for SLURM)."""
  if launcher is None:
    return ["spot-jax", "train", *spec.flags()]
  prefix = launchers.launch_prefix(launcher, absolute=absolute,
                                   sbatch_options=tuple(sbatch_options))
  return [*prefix, *spec.flags()]


# ----------------------------------------------------------------------------- many runs


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


def _blocker(spec: RunSpec, pending_dirs: set[str]) -> str | None:
  """Why `spec` cannot start now: 'wait' while a dependency is still queued, else a reason."""
  for dep in spec.depends_on:
    if read_finished(dep) is not None:
      continue
    if dep in pending_dirs:
      return "wait"
    return (f"the run it starts from, {dep}, is not finished (failed, or not part of this "
            "call: train it first)")
  return None


def execute(specs: Sequence[RunSpec], *, processes: int = 1, launcher: str | None = None,
            dry_run: bool = False, log_dir: str | None = None, log: Log = print,
            on_done: Callable[[RunSpec, run_dir.RunSummary], None] | None = None,
            run_one: Callable[[RunSpec], Any] | None = None) -> Execution:
  """Trains every unfinished spec, dependencies first, skipping finished ones.

  launcher None: in this process (processes == 1, `run_one` or `train_spec`) or in `processes`
  worker processes (output in log_dir/<name>.log). A launcher name: each run is the launch
  script's command, run here in order (SLURM: submitted with sbatch, a run waiting on another
  gets --dependency=afterok). dry_run: prints the commands. A failed run is reported with its
  run directory and blocks only the runs that depend on it.
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
  if dry_run or launcher is not None:
    _launch(todo, result, launcher, dry_run, log)
  elif processes == 1:
    _run_sequential(todo, result, log, on_done, run_one or train_spec)
  else:
    _run_workers(todo, result, processes, log_dir, log, on_done)
  return result


def _finish(spec: RunSpec, result: Execution, on_done) -> None:
  summary = read_finished(spec.model_dir, spec.train_steps)
  if summary is None:
    result.failed.append((spec, f"run.json in {spec.model_dir} does not say finished"))
    return
  result.ran.append(spec)
  if on_done is not None:
    on_done(spec, summary)


def _run_sequential(todo: list[RunSpec], result: Execution, log: Log, on_done,
                    run_one: Callable[[RunSpec], Any]) -> None:
  pending_dirs = {s.model_dir for s in todo}
  for index, spec in enumerate(todo):
    pending_dirs.discard(spec.model_dir)
    why = _blocker(spec, set())
    if why:
      result.blocked.append((spec, why))
      continue
    log(f"[{index + 1}/{len(todo)}] {spec.name}: {spec.model_dir}")
    try:
      run_one(spec)
    except KeyboardInterrupt:
      raise
    except Exception as e:  # one failed run must not stop the others.
      result.failed.append((spec, f"{type(e).__name__}: {e} (run dir {spec.model_dir})"))
      continue
    _finish(spec, result, on_done)


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


def log_path(log_dir: str, spec: RunSpec) -> str:
  return os.path.join(os.path.abspath(log_dir), f"{spec.name}.log")


def _run_workers(todo: list[RunSpec], result: Execution, processes: int, log_dir: str | None,
                 log: Log, on_done) -> None:
  """Up to `processes` `python -m spot_jax.cli.main train` workers, respecting dependencies."""
  if log_dir is None:
    raise ValueError("worker processes need a log_dir for their output")
  pending = list(todo)
  running: dict[subprocess.Popen, tuple[RunSpec, Any]] = {}
  try:
    while pending or running:
      pending_dirs = {s.model_dir for s in pending} | {s.model_dir for s, _ in running.values()}
      for spec in list(pending):
        if len(running) >= processes:
          break
        why = _blocker(spec, pending_dirs)
        if why == "wait":
          continue
        pending.remove(spec)
        if why:
          result.blocked.append((spec, why))
          continue
        path = log_path(log_dir, spec)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        log_file = open(path, "ab")
        log(f"start {spec.name} (log {path})")
        running[start_worker(worker_command(spec), log_file)] = (spec, log_file)
      if not running:  # everything left waits on a run that can never start.
        result.blocked += [(spec, "its dependency never started") for spec in pending]
        return
      time.sleep(0.2)
      for process in [p for p in running if p.poll() is not None]:
        spec, log_file = running.pop(process)
        log_file.close()
        if process.returncode == 0:
          _finish(spec, result, on_done)
        else:
          result.failed.append((spec, f"exit code {process.returncode}; run dir "
                                      f"{spec.model_dir}, log {log_path(log_dir, spec)}"))
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


def _launch(todo: list[RunSpec], result: Execution, launcher: str | None, dry_run: bool,
            log: Log) -> None:
  """Each run through its launch command (or printed with dry_run), in order."""
  by_dir = {s.model_dir: s for s in todo}
  for spec in todo:
    options: tuple[str, ...] = ()
    if launcher == "slurm_gpu":
      waits = [by_dir[d].name for d in spec.depends_on if d in by_dir]
      jobs = [result.submitted.get(n, f"<job id of {n}>") for n in waits]
      options = ("--parsable",) + ((f"--dependency=afterok:{':'.join(jobs)}",) if jobs else ())
    command = launch_command(spec, launcher, sbatch_options=options)
    result.commands[spec.name] = command
    if dry_run:
      log(shlex.join(command))
      continue
    log(f"$ {shlex.join(command)}")
    completed = subprocess.run(command, capture_output=launcher == "slurm_gpu", text=True)
    if completed.returncode != 0:
      result.failed.append((spec, f"exit code {completed.returncode}: {shlex.join(command)}"))
      continue
    if launcher == "slurm_gpu":
      result.submitted[spec.name] = completed.stdout.strip().split(";")[0]
      log(f"submitted {spec.name}: job {result.submitted[spec.name]}")
    else:
      _finish(spec, result, None)


def emit_commands(specs: Sequence[RunSpec], launcher: str, path: str,
                  sbatch_options: Callable[[RunSpec], Sequence[str]] = lambda spec: ()
                  ) -> str:
  """Writes the launch commands of `specs`, one per line (run from the checkout root)."""
  from spot_jax.fileio import atomic_write_bytes
  lines = [shlex.join(launch_command(s, launcher, absolute=False,
                                     sbatch_options=sbatch_options(s))) for s in specs]
  atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode())
  return path
