"""The one run executor: a prompt-tuning run as a spec, one "finished" rule, one way to run it.

Transfers (`spot_jax.library.transfer`), studies (`spot_jax.study.runner`) and the demo all
describe a training run as a `RunSpec`: the gin files and macro bindings of one
`spot-jax train` invocation. `execute` trains a list of specs in order, skipping finished runs,
in this process (`train_spec`: gin parsed exactly as the CLI parses it, `config.gin` written),
in `processes` worker processes (`python -m spot_jax.runs.worker train ...`), or through a launch
script (`launch/*.sh`, SLURM with job dependencies); a dry run only prints the commands.
With `pack` > 1, compatible runs (`spot_jax.train.pack_policy.pack_key`) share one job that trains
them in one jitted step (`spot_jax.train.loop.train_packed`); a packed job is a JSON file of
its runs' specs, trained by `spot-jax train --packed_job FILE` (any launch script).

This module imports numpy-free standard library only at the top; gin, JAX and the trainer are
imported when a run is actually trained here.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

from spot_jax import macros
from spot_jax import fileio
from spot_jax.runs import launchers
from spot_jax.runs.spec import Job, Log, RunSpec, is_finished, read_finished, safe_name
from spot_jax.train import run_dir

# ----------------------------------------------------------------------------- one run


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


# ----------------------------------------------------------------------------- packed jobs

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


AUTO_PACK = 0  # `pack=AUTO_PACK`: the size `default_pack_size` picks for the runs' model.


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
      settings.append(_method_settings(cfg))
      if settings[-1] != settings[0]:
        raise ValueError(f"Runs {specs[0].name} and {spec.name} cannot be packed: method "
                         f"settings {settings[0]} vs {settings[-1]}")
      cfgs.append(dataclasses.replace(cfg, overwrite=True) if overwrite else cfg)
      texts.append(text)
    return train_in_process(list(zip(cfgs, texts)))
  finally:  # the job's bindings must not leak into later runs or TrainConfig()s of the process.
    gin.clear_config()


def _method_settings(cfg) -> str:
  """The run's method settings as gin binds them now, as canonical JSON."""
  import json

  from spot_jax.train.config import method_of
  return json.dumps(method_of(cfg).settings(), sort_keys=True, default=str)


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
                     "with `spot-jax study run --emit_jobs` or executor.write_packed_job") from None


def _planned_config(spec: RunSpec):
  """(TrainConfig, method settings) of `spec` before it runs, or None when its config does not
  parse (the run then reports the error when it trains). PROMPT_FILE is left unevaluated: a
  transfer's is its source's best prompt, known only once the source finished, and it never
  decides packing."""
  import gin
  bindings = spec.bindings() + ([f"{macros.PROMPT_FILE} = None"] if spec.gin_files else [])
  try:
    cfg = train_config(spec.gin_files, bindings)[0]
    return cfg, _method_settings(cfg)
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


def job_name(job: Job) -> str:
  return job[0].name if len(job) == 1 else safe_name("pack", job[0].name, f"{len(job)}_runs")


def worker_command(spec: RunSpec) -> list[str]:
  """The worker process command that trains one run (a packed job: `job_flags`)."""
  return [sys.executable, "-m", "spot_jax.runs.worker", "train", *spec.flags()]


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


def _blocker(job: Sequence[RunSpec], pending_dirs: set[str]) -> str | None:
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


def execute(specs: Sequence[RunSpec], *, processes: int = 1, launcher: str | None = None,
            dry_run: bool = False, log_dir: str | None = None, log: Log = print,
            on_done: Callable[[RunSpec, run_dir.RunSummary], None] | None = None,
            run_one: Callable[[RunSpec], Any] | None = None, pack: int = 1,
            job_dir: str | None = None) -> Execution:
  """Trains every unfinished spec, dependencies first, skipping finished ones.

  launcher None: in this process (processes == 1, `run_one` or `train_spec`) or in `processes`
  worker processes (output in log_dir/<job>.log). A launcher name: each job is the launch
  script's command, run here in order (SLURM: submitted with sbatch, a job waiting on another
  gets --dependency=afterok). dry_run: prints the commands. A failed job is reported with its
  run directories and blocks only the runs that depend on it. pack: up to this many compatible
  runs per job (`pack_jobs`; AUTO_PACK picks the size), packed job files under job_dir.
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
  jobs = pack_jobs(todo, pack)
  if dry_run or launcher is not None:
    _launch(jobs, result, launcher, dry_run, log, job_dir)
  elif processes == 1:
    _run_sequential(jobs, result, log, on_done, run_one or train_spec)
  else:
    _run_workers(jobs, result, processes, log_dir, log, on_done, job_dir or log_dir)
  return result


def _finish(spec: RunSpec, result: Execution, on_done) -> None:
  summary = read_finished(spec.model_dir, spec.train_steps)
  if summary is None:
    result.failed.append((spec, f"run.json in {spec.model_dir} does not say finished"))
    return
  result.ran.append(spec)
  if on_done is not None:
    on_done(spec, summary)


def _describe(job: Job) -> str:
  if len(job) == 1:
    return f"{job[0].name}: {job[0].model_dir}"
  return f"packed job of {len(job)} runs: " + ", ".join(s.name for s in job)


def _run_sequential(jobs: list[Job], result: Execution, log: Log, on_done,
                    run_one: Callable[[RunSpec], Any]) -> None:
  """Each job in order (a job waiting on a later job's run comes after it)."""
  pending = list(jobs)
  done = 0
  while pending:
    pending_dirs = {s.model_dir for job in pending for s in job}
    ready = [job for job in pending if _blocker(job, pending_dirs) != "wait"]
    if not ready:  # every job waits on a run that is itself waiting: a dependency cycle.
      result.blocked += [(s, "its dependency never started") for job in pending for s in job]
      return
    job = ready[0]
    pending.remove(job)
    why = _blocker(job, pending_dirs)
    if why:
      result.blocked += [(spec, why) for spec in job]
      continue
    done += 1
    log(f"[{done}/{len(jobs)}] {_describe(job)}")
    try:
      if len(job) == 1:
        run_one(job[0])
      else:
        train_specs_packed(job)
    except KeyboardInterrupt:
      raise
    except Exception as e:  # one failed job must not stop the others (a full disk does).
      full = fileio.disk_full_path(e, job[0].model_dir)
      if full is not None:
        _stop_on_full_disk(job, pending, full, result, log)
        return
      dirs = ", ".join(s.model_dir for s in job)
      result.failed += [(spec, f"{type(e).__name__}: {e} (run dir {dirs})") for spec in job]
      continue
    for spec in job:
      _finish(spec, result, on_done)


def _stop_on_full_disk(job: Job, pending: list[Job], path: str, result: Execution,
                       log: Log) -> None:
  """The job failed on a full disk (its failure names the device) and no further job starts:
  each would fail the same way. The pending ones are blocked."""
  log("the disk is full: no further run starts")
  result.failed += [(spec, fileio.disk_full_message(path)) for spec in job]
  result.blocked += [(spec, "not started: the disk is full") for waiting in pending
                     for spec in waiting]
  pending.clear()


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


def _run_workers(jobs: list[Job], result: Execution, processes: int, log_dir: str | None,
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
        why = _blocker(job, pending_dirs)
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
        command = (worker_command(job[0]) if len(job) == 1 else
                   [sys.executable, "-m", "spot_jax.runs.worker", "train",
                    *job_flags(job, job_dir)])
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
            _finish(spec, result, on_done)
        elif process.returncode == fileio.DISK_FULL_EXIT and not disk_full:
          disk_full = True  # running workers end on their own; no new one starts.
          _stop_on_full_disk(job, pending, job[0].model_dir, result, log)
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
    command = launch_command(job, launcher, sbatch_options=options, job_dir=job_dir)
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
        _finish(spec, result, None)


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
           for job in pack_jobs(list(specs), pack)]
  atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode())
  return path
