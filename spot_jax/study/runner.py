"""Running a transferability study (SPoT §3.1): the plan, its execution, and the results table.

  STUDY_DIR/
    runs/source/<source>/seed_<s>/            a source prompt per seed (added to the library)
    runs/baseline/<target>/seed_<s>/          the target trained from scratch (source `none`)
    runs/transfer/<source>/<target>/seed_<s>/ the target initialised from the source prompt of
                                              the same seed (its best checkpoint)
    logs/<job>.log                            worker-process output
    library/                                  the prompt library of the source runs (default)
    results.csv                               source,target,seed,score,metric,step

Every job is one `spot-jax train` invocation, fully described by gin flags (`Job.flags()`), so
running it in this process, in a worker process or on a cluster node is the same run. A transfer
reads its source's best prompt when it starts: `study/transfer.gin` binds PROMPT_FILE to
`best_prompt_file(SOURCE_MODEL_DIR)`, evaluated by gin in the training process. Targets that are
also sources get no self-transfer (the baseline already trains them from scratch).

Everything is idempotent: a finished run (run.json `finished` with all steps done) is skipped,
an interrupted one resumes from its last checkpoint, library entries have deterministic ids and
are added once, and results.csv is rebuilt from the run directories, whichever machine ran them.
Scores are the runs' best validation scores, on a 0-100 scale as every metric of
`tasks/metrics.py` and `tasks/synthetic.py` reports it (no rescaling).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import gin

from spot_jax.fileio import atomic_write_bytes
from spot_jax import launchers
from spot_jax.gin_utils import gin_literal
from spot_jax.study.spec import StudySpec
from spot_jax.train import run_dir

KINDS = ("source", "baseline", "transfer")
PHASES = {"sources": ("source",), "baselines": ("baseline",), "transfers": ("transfer",),
          "all": KINDS}
TRAIN_GIN = "runs/prompt_train.gin"
TRANSFER_GIN = "study/transfer.gin"
RESULTS_CSV = "results.csv"
BASELINE = "none"
LAUNCHERS = tuple(sorted(launchers.LAUNCH_SCRIPTS))
PHASE_FILES = ("phase_1_sources_baselines.txt", "phase_2_transfers.txt")


class StudyError(ValueError):
  """A study that cannot run as asked (unknown phase or launcher, unfinished sources...)."""


@dataclasses.dataclass(frozen=True)
class Job:
  """One prompt-tuning run of the study: a `spot-jax train` with these gin flags."""

  kind: str  # "source" | "baseline" | "transfer"
  source: str | None  # None for a baseline.
  target: str | None  # None for a source run.
  seed: int
  model_dir: str
  depends_on: tuple[str, ...]  # model dirs that must be finished first.
  gin_files: tuple[str, ...]
  gin_bindings: dict[str, str]  # macro -> gin literal text.

  @property
  def name(self) -> str:
    """A file-name-safe id: `transfer.<source>.<target>.seed_<s>`."""
    parts = [self.kind] + [p for p in (self.source, self.target) if p] + [f"seed_{self.seed}"]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", ".".join(parts))

  @property
  def train_steps(self) -> int:
    return int(self.gin_bindings["TRAIN_STEPS"])

  def flags(self) -> list[str]:
    """The `spot-jax train` arguments."""
    return ([f"--gin_file={f}" for f in self.gin_files]
            + [f"--gin.{name}={value}" for name, value in self.gin_bindings.items()])

  def command(self, prefix: Sequence[str] = ("spot-jax", "train")) -> str:
    return shlex.join([*prefix, *self.flags()])


@dataclasses.dataclass
class StudyReport:
  """What `run_study` did; `ok` when nothing failed or was blocked."""

  jobs: list[Job]
  skipped: list[Job] = dataclasses.field(default_factory=list)  # finished before.
  ran: list[Job] = dataclasses.field(default_factory=list)
  failed: list[tuple[Job, str]] = dataclasses.field(default_factory=list)  # (job, why)
  blocked: list[tuple[Job, str]] = dataclasses.field(default_factory=list)
  library_added: list[str] = dataclasses.field(default_factory=list)
  results_path: str | None = None
  results_rows: int = 0
  missing_results: int = 0

  @property
  def ok(self) -> bool:
    return not self.failed and not self.blocked


# ----------------------------------------------------------------------------- planning


def run_dir_of(study_dir: str, kind: str, source: str | None, target: str | None,
               seed: int) -> str:
  names = {"source": [source], "baseline": [target], "transfer": [source, target]}[kind]
  return os.path.join(os.path.abspath(study_dir), "runs", kind, *names, f"seed_{seed}")


def plan(spec: StudySpec, study_dir: str) -> list[Job]:
  """Every run of the study, sources first, then baselines, then transfers."""
  shared = {k: gin_literal(v) for k, v in spec.run_bindings().items()}
  train_files = (*spec.model, TRAIN_GIN)

  def job(kind: str, source: str | None, target: str | None, seed: int) -> Job:
    model_dir = run_dir_of(study_dir, kind, source, target, seed)
    steps = spec.source_steps if kind == "source" else spec.target_steps
    bindings = {"MODEL_DIR": gin_literal(model_dir),
                "MIXTURE_OR_TASK_NAME": gin_literal(source if kind == "source" else target),
                "TRAIN_STEPS": str(steps), "RANDOM_SEED": str(seed),
                "KEY_STEP": str(spec.key_step), **shared}
    files, depends = train_files, ()
    prompt_init = spec.prompt_init(kind, source if kind == "source" else target)
    if prompt_init is not None:
      bindings["PROMPT_INIT"] = gin_literal(prompt_init)
    if kind == "transfer":
      source_dir = run_dir_of(study_dir, "source", source, None, seed)
      bindings["SOURCE_MODEL_DIR"] = gin_literal(source_dir)
      files, depends = (*train_files, TRANSFER_GIN), (source_dir,)
    return Job(kind, source, target, seed, model_dir, depends, files, bindings)

  jobs = [job("source", s, None, seed) for s in spec.sources for seed in spec.seeds]
  jobs += [job("baseline", None, t, seed) for t in spec.targets for seed in spec.seeds]
  jobs += [job("transfer", s, t, seed) for s in spec.sources for t in spec.targets
           if s != t for seed in spec.seeds]
  return jobs


def select_phase(jobs: Sequence[Job], phase: str) -> list[Job]:
  if phase not in PHASES:
    raise StudyError(f"Unknown phase {phase!r}; choose one of {sorted(PHASES)}")
  return [j for j in jobs if j.kind in PHASES[phase]]


def describe_plan(spec: StudySpec, jobs: Sequence[Job], first: int = 3) -> list[str]:
  """Counts per kind, total runs and train steps, and the first commands."""
  count = {k: sum(j.kind == k for j in jobs) for k in KINDS}
  n_s, n_t, n_seeds = len(spec.sources), len(spec.targets), len(spec.seeds)
  self_pairs = len(set(spec.sources) & set(spec.targets))
  done = sum(is_finished(j) for j in jobs)
  steps = sum(j.train_steps for j in jobs)
  lines = [f"Study {spec.name!r}:"]
  if count["source"]:
    lines.append(f"  {n_s} sources x {n_seeds} seeds = {count['source']} source runs "
                 f"({spec.source_steps} steps each)")
  if count["baseline"]:
    lines.append(f"  {n_t} targets x {n_seeds} seeds = {count['baseline']} baseline runs "
                 f"({spec.target_steps} steps each)")
  if count["transfer"]:
    skip = f" - {self_pairs} self-transfers" if self_pairs else ""
    lines.append(f"  {n_s} sources x {n_t} targets{skip} x {n_seeds} seeds = "
                 f"{count['transfer']} transfer runs ({spec.target_steps} steps each)")
  lines.append(f"  total: {len(jobs)} runs, {steps} train steps; {done} already finished")
  if jobs:
    lines.append(f"First {min(first, len(jobs))} commands:")
    lines += [f"  {j.command()}" for j in jobs[:first]]
  return lines


# ----------------------------------------------------------------------------- run state


@gin.configurable
def best_prompt_file(model_dir: str = gin.REQUIRED) -> str:
  """The best-checkpoint prompt of a finished run (a transfer's PROMPT_FILE, study/transfer.gin)."""
  summary = run_dir.read_summary(model_dir)
  if not summary.finished or summary.best_step is None:
    raise StudyError(f"Source run {model_dir} is not finished ({summary.steps_done}/"
                     f"{summary.train_steps} steps); run the study's sources first "
                     "(phase 1, or --phase sources)")
  path = run_dir.prompt_path(model_dir, summary.best_step)
  if not os.path.exists(path):
    raise StudyError(f"Source run {model_dir}: best step {summary.best_step} has no prompt "
                     f"({path} missing); rerun that source")
  return path


def read_finished(model_dir: str, train_steps: int | None = None) -> run_dir.RunSummary | None:
  """The run's summary when it finished (all `train_steps` done), else None."""
  try:
    summary = run_dir.read_summary(model_dir)
  except run_dir.RunDirError:
    return None
  if not summary.finished or (train_steps is not None and summary.steps_done < train_steps):
    return None
  return summary


def is_finished(job: Job) -> bool:
  return read_finished(job.model_dir, job.train_steps) is not None


# ----------------------------------------------------------------------------- collecting


def library_path(spec: StudySpec, study_dir: str) -> str:
  return spec.library_path or os.path.join(os.path.abspath(study_dir), "library")


def library_entry_id(spec: StudySpec, job: Job) -> str:
  """Deterministic, so a source run enters the library once wherever the study dir lives."""
  return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{spec.name}-{job.source}-s{job.seed}").lstrip(".")


def add_to_library(spec: StudySpec, study_dir: str, job: Job) -> str | None:
  """Adds a finished source run to the library unless its entry exists; returns a new id."""
  from spot_jax.library.store import PromptLibrary
  library = PromptLibrary(library_path(spec, study_dir), create=True)
  entry_id = library_entry_id(spec, job)
  if entry_id in library.ids():
    return None
  library.add_run_dir(job.model_dir, entry_id=entry_id)
  return entry_id


def result_rows(jobs: Sequence[Job]) -> tuple[list[dict[str, Any]], list[Job]]:
  """(rows of the finished baseline/transfer runs, runs without a result yet)."""
  rows, missing = [], []
  for job in jobs:
    if job.kind == "source":
      continue
    summary = read_finished(job.model_dir, job.train_steps)
    if summary is None or summary.best_score is None:
      missing.append(job)
      continue
    rows.append({"source": job.source or BASELINE, "target": job.target, "seed": job.seed,
                 "score": float(summary.best_score), "metric": summary.eval_metric or "",
                 "step": summary.best_step})
  return rows, missing


def collect(spec: StudySpec, study_dir: str, jobs: Sequence[Job] | None = None,
            report: StudyReport | None = None) -> StudyReport:
  """Adds finished sources to the library and rebuilds STUDY_DIR/results.csv."""
  from spot_jax.study.results import write_results
  jobs = plan(spec, study_dir) if jobs is None else list(jobs)
  report = report or StudyReport(jobs=jobs)
  for job in jobs:
    if job.kind == "source" and is_finished(job):
      added = add_to_library(spec, study_dir, job)
      if added:
        report.library_added.append(added)
  rows, missing = result_rows(jobs)
  report.results_path = os.path.join(os.path.abspath(study_dir), RESULTS_CSV)
  write_results(report.results_path, rows)
  report.results_rows, report.missing_results = len(rows), len(missing)
  return report


# ----------------------------------------------------------------------------- executing


def train_in_process(job: Job) -> None:
  """Runs the job exactly as `spot-jax train FLAGS` does (same parsing, same code path)."""
  from spot_jax.cli import train_cmd
  from spot_jax.gin_utils import split_gin_args
  files, bindings, rest = split_gin_args(job.flags())
  assert not rest, rest
  train_cmd.run_train(argparse.Namespace(gin_files=files, gin_bindings=bindings,
                                         overwrite=False))


def worker_command(job: Job) -> list[str]:
  return [sys.executable, "-m", "spot_jax.cli.main", "train", *job.flags()]


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> Callable[[], None]:
  """A Popen preexec_fn: the worker gets SIGTERM when the study process dies (Linux
  PR_SET_PDEATHSIG, kept across exec), and exits at once if it already has."""
  def preexec() -> None:
    import ctypes
    import signal
    try:
      libc = ctypes.CDLL(None, use_errno=True)
      libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's finally still stops workers.
      pass
    if os.getppid() != parent:
      os._exit(1)
  return preexec


def start_worker(command: Sequence[str], log_file: Any) -> subprocess.Popen:
  """A worker process that dies with this process (see `_die_with_parent`)."""
  return subprocess.Popen(list(command), stdout=log_file, stderr=subprocess.STDOUT,
                          preexec_fn=_die_with_parent(os.getpid()))


def log_path(study_dir: str, job: Job) -> str:
  return os.path.join(os.path.abspath(study_dir), "logs", f"{job.name}.log")


def validate_jobs(jobs: Sequence[Job]) -> None:
  """Checks every job's gin files and bindings and, for sources and baselines, its settings
  (`spot_jax.train.loop.preflight`: EVAL_METRIC, feature lengths, initial checkpoint...) once
  per task, before any job starts. A transfer's config is only parsed: its PROMPT_FILE is the
  source's best prompt, known once the source finished. Raises StudyError naming the job."""
  from spot_jax import gin_utils
  from spot_jax.tasks_util import register_all_tasks
  from spot_jax.train.loop import TrainConfig, preflight
  register_all_tasks()
  seen: set[tuple[str, str | None]] = set()
  try:
    for job in jobs:
      task = job.source if job.kind == "source" else job.target
      if (job.kind, task) in seen:
        continue
      seen.add((job.kind, task))
      files, bindings, _ = gin_utils.split_gin_args(job.flags())
      try:
        gin_utils.parse_gin(files, bindings)
        if job.kind != "transfer":
          preflight(TrainConfig())
      except (ValueError, OSError, TypeError) as e:
        raise StudyError(f"{job.name}: {e}") from None
  finally:
    gin.clear_config()


def run_study(spec: StudySpec, study_dir: str, *, processes: int = 1, dry_run: bool = False,
              phase: str = "all", collect_only: bool = False,
              log: Callable[[str], None] = print) -> StudyReport:
  """Trains every unfinished job of `phase` (in this process, or in `processes` workers),

  then collects library entries and results. A transfer starts only after its source finished;
  a failed job is reported with its run dir (and log) and blocks only its dependants.
  """
  if processes < 1:
    raise StudyError(f"processes must be >= 1, got {processes}")
  all_jobs = plan(spec, study_dir)
  jobs = select_phase(all_jobs, phase)
  if not collect_only:
    validate_jobs(jobs)
  report = StudyReport(jobs=jobs)
  if dry_run:
    for line in describe_plan(spec, jobs):
      log(line)
    return report
  if not collect_only:
    report.skipped = [j for j in jobs if is_finished(j)]
    todo = [j for j in jobs if j not in report.skipped]
    log(f"Study {spec.name!r} ({phase}): {len(todo)} runs to train, "
        f"{len(report.skipped)} already finished")
    on_done = _source_hook(spec, study_dir, report, log)
    if processes == 1:
      _run_sequential(todo, report, log, on_done)
    else:
      _run_workers(todo, study_dir, processes, report, log, on_done)
  collect(spec, study_dir, all_jobs, report)
  log(f"results: {report.results_rows} rows in {report.results_path} "
      f"({report.missing_results} baseline/transfer runs not finished)")
  if report.library_added:
    log(f"library {library_path(spec, study_dir)}: added {', '.join(report.library_added)}")
  for job, why in report.failed:
    log(f"FAILED {job.name}: {why}")
  for job, why in report.blocked:
    log(f"BLOCKED {job.name}: {why}")
  return report


def _source_hook(spec: StudySpec, study_dir: str, report: StudyReport,
                 log: Callable[[str], None]) -> Callable[[Job], None]:
  def on_done(job: Job) -> None:
    report.ran.append(job)
    log(f"finished {job.name}")
    if job.kind == "source":
      added = add_to_library(spec, study_dir, job)
      if added:
        report.library_added.append(added)
  return on_done


def _blocker(job: Job, pending_dirs: set[str]) -> str | None:
  """Why the job cannot start now: 'wait' while a dependency is still queued, else a reason."""
  for dep in job.depends_on:
    if read_finished(dep) is not None:
      continue
    if dep in pending_dirs:
      return "wait"
    return (f"its source run {dep} is not finished (failed, or not part of this phase: run "
            "--phase sources first)")
  return None


def _run_sequential(todo: list[Job], report: StudyReport, log: Callable[[str], None],
                    on_done: Callable[[Job], None]) -> None:
  for index, job in enumerate(todo):
    why = _blocker(job, set())
    if why:
      report.blocked.append((job, why))
      continue
    log(f"[{index + 1}/{len(todo)}] {job.name}: {job.model_dir}")
    try:
      train_in_process(job)
    except Exception as e:  # one failed run must not stop the others.
      report.failed.append((job, f"{type(e).__name__}: {e} (run dir {job.model_dir})"))
      continue
    if is_finished(job):
      on_done(job)
    else:
      report.failed.append((job, f"run.json in {job.model_dir} does not say finished"))


def _run_workers(todo: list[Job], study_dir: str, processes: int, report: StudyReport,
                 log: Callable[[str], None], on_done: Callable[[Job], None]) -> None:
  """Up to `processes` `python -m spot_jax.cli.main train` workers, respecting dependencies."""
  running: dict[subprocess.Popen, tuple[Job, Any]] = {}
  try:
    _schedule_workers(list(todo), running, study_dir, processes, report, log, on_done)
  finally:  # an exception or Ctrl-C here stops the workers too (no orphans left training).
    for process, (_, log_file) in running.items():
      if process.poll() is None:
        process.terminate()
    for process, (_, log_file) in running.items():
      try:
        process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        process.kill()
      log_file.close()


def _schedule_workers(pending: list[Job], running: dict[subprocess.Popen, tuple[Job, Any]],
                      study_dir: str, processes: int, report: StudyReport,
                      log: Callable[[str], None], on_done: Callable[[Job], None]) -> None:
  while pending or running:
    pending_dirs = {j.model_dir for j in pending} | {j.model_dir for j, _ in running.values()}
    for job in list(pending):
      if len(running) >= processes:
        break
      why = _blocker(job, pending_dirs)
      if why == "wait":
        continue
      pending.remove(job)
      if why:
        report.blocked.append((job, why))
        continue
      path = log_path(study_dir, job)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      log_file = open(path, "ab")
      log(f"start {job.name} (log {path})")
      running[start_worker(worker_command(job), log_file)] = (job, log_file)
    if not running:  # everything left waits on a job that can never start.
      report.blocked += [(job, "its dependency never started") for job in pending]
      return
    time.sleep(0.2)
    for process in [p for p in running if p.poll() is not None]:
      job, log_file = running.pop(process)
      log_file.close()
      if process.returncode == 0 and is_finished(job):
        on_done(job)
      else:
        report.failed.append((job, f"exit code {process.returncode}; run dir {job.model_dir}, "
                                   f"log {log_path(study_dir, job)}"))


# ----------------------------------------------------------------------------- cluster jobs


def emit_jobs(spec: StudySpec, study_dir: str, launcher: str, out_dir: str) -> list[str]:
  """Writes the unfinished jobs as two phase files of launcher commands, one per line.

  Phase 1: sources and baselines; phase 2: transfers (start it after phase 1 finished, each
  transfer reads its source's best prompt when it starts). Run the lines from the checkout
  root. Returns the two paths.
  """
  if launcher not in LAUNCHERS:
    raise StudyError(f"Unknown launcher {launcher!r}; choose one of {sorted(LAUNCHERS)}")
  jobs = [j for j in plan(spec, study_dir) if not is_finished(j)]
  phases = ([j for j in jobs if j.kind != "transfer"], [j for j in jobs if j.kind == "transfer"])
  if launcher == "slurm_gpu":  # sbatch cannot create the directory of --output itself.
    os.makedirs(os.path.join(os.path.abspath(study_dir), "logs"), exist_ok=True)
  paths = []
  for name, phase_jobs in zip(PHASE_FILES, phases):
    lines = [shlex.join([*launcher_prefix(launcher, study_dir, job), *job.flags()])
             for job in phase_jobs]
    path = os.path.join(out_dir, name)
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode())
    paths.append(path)
  return paths


def launcher_prefix(launcher: str, study_dir: str, job: Job) -> list[str]:
  """The launcher words before the train flags; sbatch gets a job name and a log file."""
  log = os.path.join(os.path.abspath(study_dir), "logs", f"{job.name}-%j.log")
  return launchers.launch_prefix(launcher,
                                 sbatch_options=(f"--job-name={job.name}", f"--output={log}"))
