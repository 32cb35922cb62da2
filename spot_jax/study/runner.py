"""Running a transferability study (SPoT §3.1): the plan, its execution, and the results table.

  STUDY_DIR/
    runs/source/<source>/seed_<s>/            a source prompt per seed (added to the library)
    runs/baseline/<target>/seed_<s>/          the target trained from scratch (source `none`)
    runs/transfer/<source>/<target>/seed_<s>/ the target initialised from the source run of
                                              the same seed (its best checkpoint)
    logs/<job>.log                            worker-process output
    jobs/pack_<first run>_<n>_runs.json       packed jobs (--pack): the runs trained together
    library/                                  the prompt library of the source runs (default)
    results.csv                               source,target,seed,score,metric,step

Every job is one `spot-jax train` invocation, fully described by gin flags (a
`spot_jax.runs.spec.RunSpec`), so running it in this process, in a worker process or on a cluster
node is the same run; the run executor (`spot_jax.runs.execute.execute`) trains them. A transfer
reads its source's best checkpoint when it starts: `study/transfer.gin` binds PROMPT_FILE to
`best_prompt_file(SOURCE_MODEL_DIR)` (method `prompt`), `study/transfer_init_from.gin` binds
TrainConfig.init_from to `best_checkpoint_dir(SOURCE_MODEL_DIR)` (every other method: all of its
trainables), evaluated by gin in the training process. Every run trains the spec's `method`
(its gin_configs/methods/<method>.gin after runs/prompt_train.gin). Targets that are also
sources get no self-transfer (the baseline already trains them from scratch).

Everything is idempotent: a finished run (run.json `finished` with all steps done) is skipped,
an interrupted one resumes from its last checkpoint, library entries have deterministic ids and
are added once, and results.csv is rebuilt from the run directories, whichever machine ran them.
Scores are the runs' best validation scores, on a 0-100 scale as every metric of
`tasks/metrics.py` and `tasks/synthetic.py` reports it (no rescaling).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Mapping, Sequence

import gin

from spot_jax import macros
from spot_jax import fileio
from spot_jax.runs import commands
from spot_jax.runs import execute as executor
from spot_jax.runs import workers
from spot_jax.runs.execution import Execution
from spot_jax.runs import spec as run_spec
from spot_jax.runs import launchers
from spot_jax.runs.spec import RunSpec, is_finished, read_finished  # noqa: F401  (re-exported)
from spot_jax.gin_utils import gin_literal
from spot_jax.study.spec import StudySpec
from spot_jax.train import run_dir

KINDS = ("source", "baseline", "transfer")
PHASES = {"sources": ("source",), "baselines": ("baseline",), "transfers": ("transfer",),
          "all": KINDS}
TRAIN_GIN = "runs/prompt_train.gin"
TRANSFER_GIN = "study/transfer.gin"
TRANSFER_INIT_FROM_GIN = "study/transfer_init_from.gin"
METHOD_GIN = "methods/{}.gin"
RESULTS_CSV = "results.csv"
BASELINE = "none"
LAUNCHERS = tuple(sorted(launchers.LAUNCH_SCRIPTS))
PHASE_FILES = ("phase_1_sources_baselines.txt", "phase_2_transfers.txt")


class StudyError(ValueError):
  """A study that cannot run as asked (unknown phase or launcher, unfinished sources...)."""


Job = RunSpec  # One run of the study (kind source | baseline | transfer).


@dataclasses.dataclass
class StudyReport(Execution):
  """What `run_study` did (the executor's record of its jobs, plus what was collected); `ok`
  when nothing failed or was blocked."""

  library_added: list[str] = dataclasses.field(default_factory=list)
  results_path: str | None = None
  results_rows: int = 0
  missing_results: int = 0
  kept_results: int = 0  # rows of an earlier results.csv whose runs give no result now.

  @property
  def jobs(self) -> list[Job]:
    return self.specs


# ----------------------------------------------------------------------------- planning


def run_dir_of(study_dir: str, kind: str, source: str | None, target: str | None,
               seed: int) -> str:
  names = {"source": [source], "baseline": [target], "transfer": [source, target]}[kind]
  return os.path.join(os.path.abspath(study_dir), "runs", kind, *names, f"seed_{seed}")


def train_config(spec: StudySpec, *, seed: int, train_steps: int
                 ) -> tuple[tuple[str, ...], dict[str, str]]:
  """The gin files (model, trainer, method) and {macro: gin value} bindings (train steps, seed,
  key step, the spec's shared settings) every run of the study has; a run adds its own
  (MODEL_DIR, TASK, ...). Also the base of runs the study does not plan, e.g. a transfer
  strategy's."""
  method_files = () if spec.method == "prompt" else (METHOD_GIN.format(spec.method),)
  bindings = {macros.TRAIN_STEPS: str(train_steps), macros.gin_name("seed"): str(seed),
              macros.gin_name("key_step"): str(spec.key_step),
              **{k: gin_literal(v) for k, v in spec.run_bindings().items()}}
  return (*spec.model, TRAIN_GIN, *method_files), bindings


def plan(spec: StudySpec, study_dir: str) -> list[Job]:
  """Every run of the study, sources first, then baselines, then transfers.

  A pool-pair study (`spec.pool_pairs`) also trains every source task's baseline and the
  sampled transfers source i -> source j (`StudySpec.pool_transfers`), before the transfers
  to the targets (every source -> each target, the targets' brute force). A study that selects
  sources (`spec.select_sources`) trains only each target's top-k predicted sources and their
  transfers (`StudySpec.selected_sources`)."""
  transfer_gin = TRANSFER_GIN if spec.method == "prompt" else TRANSFER_INIT_FROM_GIN

  def job(kind: str, source: str | None, target: str | None, seed: int) -> Job:
    model_dir = run_dir_of(study_dir, kind, source, target, seed)
    steps = spec.source_steps if kind == "source" else spec.target_steps
    train_files, shared = train_config(spec, seed=seed, train_steps=steps)
    bindings = {macros.MODEL_DIR: gin_literal(model_dir),
                macros.TASK: gin_literal(source if kind == "source" else target), **shared}
    files, depends = train_files, ()
    task = source if kind == "source" else target
    prompt_init = spec.prompt_init(kind, task)
    if isinstance(spec.max_train_examples, Mapping):  # per-run caps (StudySpec.train_cap).
      bindings[macros.gin_name("max_train_examples")] = gin_literal(spec.train_cap(kind, task))
    if prompt_init is not None:
      bindings[macros.PROMPT_INIT] = gin_literal(prompt_init)
    if kind == "transfer":
      source_dir = run_dir_of(study_dir, "source", source, None, seed)
      bindings[macros.SOURCE_MODEL_DIR] = gin_literal(source_dir)
      files, depends = (*train_files, transfer_gin), (source_dir,)
    name = run_spec.safe_name(kind, source or "", target or "", f"seed_{seed}")
    return RunSpec(name, model_dir, files, bindings, depends, kind=kind, source=source,
                   target=target, seed=seed)

  selected = spec.selected_sources()  # None: every source -> every target.
  transfers = [(s, t) for s in spec.sources for t in spec.targets
               if s != t and (selected is None or s in selected[t])]
  sources = [s for s in spec.sources if selected is None or any(s == a for a, _ in transfers)]
  jobs = [job("source", s, None, seed) for s in sources for seed in spec.seeds]
  pool = spec.pool_transfers()
  baselined = list(dict.fromkeys([*(spec.sources if pool else ()), *spec.targets]))
  jobs += [job("baseline", None, t, seed) for t in baselined for seed in spec.seeds]
  transfers = pool + [pair for pair in transfers if pair not in set(pool)]
  jobs += [job("transfer", s, t, seed) for s, t in transfers for seed in spec.seeds]
  return jobs


def select_phase(jobs: Sequence[Job], phase: str) -> list[Job]:
  if phase not in PHASES:
    raise StudyError(f"Unknown phase {phase!r}; choose one of {sorted(PHASES)}")
  return [j for j in jobs if j.kind in PHASES[phase]]


def describe_plan(spec: StudySpec, jobs: Sequence[Job], first: int = 3) -> list[str]:
  """Counts per kind, total runs and train steps, and the first commands."""
  count = {k: sum(j.kind == k for j in jobs) for k in KINDS}
  n_s, n_t, n_seeds = len(spec.sources), len(spec.targets), len(spec.seeds)
  pool = set(spec.pool_transfers())
  pool_runs = sum(j.kind == "transfer" and (j.source, j.target) in pool for j in jobs)
  pool_baselines = sum(j.kind == "baseline" and j.target not in spec.targets for j in jobs)
  count["transfer"] -= pool_runs
  count["baseline"] -= pool_baselines
  self_pairs = len(set(spec.sources) & set(spec.targets))
  done = sum(is_finished(j) for j in jobs)
  steps = sum(j.train_steps for j in jobs)
  lines = [f"Study {spec.name!r}:"]
  trained_sources = len({j.source for j in jobs if j.kind == "source"})
  if count["source"]:
    of = f" (selected of {n_s})" if spec.select_sources else ""
    lines.append(f"  {trained_sources} sources{of} x {n_seeds} seeds = {count['source']} "
                 f"source runs ({spec.source_steps} steps each)")
  if pool_baselines:
    lines.append(f"  {n_s - len(set(spec.sources) & set(spec.targets))} pool tasks x "
                 f"{n_seeds} seeds = {pool_baselines} pool baseline runs "
                 f"({spec.target_steps} steps each)")
  if count["baseline"]:
    lines.append(f"  {n_t} targets x {n_seeds} seeds = {count['baseline']} baseline runs "
                 f"({spec.target_steps} steps each)")
  if pool_runs:
    lines.append(f"  {len(pool)} pool pairs (source i -> source j, sampled with seed "
                 f"{spec.pool_pairs['seed']}) x {n_seeds} seeds = {pool_runs} pool transfer "
                 f"runs ({spec.target_steps} steps each)")
  if count["transfer"] and spec.select_sources and "random" in spec.select_sources:
    lines.append(f"  {spec.select_sources['random']} random sources (seed "
                 f"{spec.select_sources['seed']}) x {n_t} targets x {n_seeds} seeds = "
                 f"{count['transfer']} transfer runs ({spec.target_steps} steps each)")
  elif count["transfer"] and spec.select_sources:
    lines.append(f"  the top {spec.select_sources['top_k']} predicted sources of each of {n_t} "
                 f"targets ({spec.select_sources['predictions']}) x {n_seeds} seeds = "
                 f"{count['transfer']} transfer runs ({spec.target_steps} steps each)")
  elif count["transfer"]:
    skip = f" - {self_pairs} self-transfers" if self_pairs else ""
    lines.append(f"  {n_s} sources x {n_t} targets{skip} x {n_seeds} seeds = "
                 f"{count['transfer']} transfer runs ({spec.target_steps} steps each)")
  lines.append(f"  total: {len(jobs)} runs, {steps} train steps; {done} already finished")
  if jobs:
    lines.append(f"First {min(first, len(jobs))} commands:")
    lines += [f"  {j.command()}" for j in jobs[:first]]
  return lines


# ----------------------------------------------------------------------------- run state


def _finished_source(model_dir: str) -> run_dir.RunSummary:
  summary = run_dir.read_summary(model_dir)
  if not summary.finished or summary.best_step is None:
    raise StudyError(f"Source run {model_dir} is not finished ({summary.steps_done}/"
                     f"{summary.train_steps} steps); run the study's sources first "
                     "(phase 1, or --phase sources)")
  return summary


@gin.configurable
def best_checkpoint_dir(model_dir: str = gin.REQUIRED) -> str:
  """The best numpy checkpoint directory of a finished run, every trainable of it (a
  transfer's TrainConfig.init_from, study/transfer_init_from.gin)."""
  summary = _finished_source(model_dir)
  if summary.best_step not in run_dir.checkpoint_steps(model_dir):
    raise StudyError(f"Source run {model_dir}: best step {summary.best_step} has no numpy "
                     f"checkpoint ({run_dir.checkpoint_dir(model_dir, summary.best_step)} "
                     "missing); rerun that source")
  return run_dir.checkpoint_dir(model_dir, summary.best_step)


@gin.configurable
def best_prompt_file(model_dir: str = gin.REQUIRED) -> str:
  """The best-checkpoint prompt of a finished run (a transfer's PROMPT_FILE, study/transfer.gin)."""
  summary = _finished_source(model_dir)
  path = run_dir.prompt_path(model_dir, summary.best_step)
  if not os.path.exists(path):
    raise StudyError(f"Source run {model_dir}: best step {summary.best_step} has no prompt "
                     f"({path} missing); rerun that source")
  return path


# ----------------------------------------------------------------------------- collecting


def library_path(spec: StudySpec, study_dir: str) -> str:
  return spec.library_path or os.path.join(os.path.abspath(study_dir), "library")


def library_entry_id(spec: StudySpec, job: Job) -> str:
  """Deterministic, so a source run enters the library once wherever the study dir lives
  (non-prompt methods name theirs: studies of several methods may share a library)."""
  method = "" if spec.method == "prompt" else f"{spec.method}-"
  return re.sub(r"[^A-Za-z0-9_.-]", "_",
                f"{spec.name}-{method}{job.source}-s{job.seed}").lstrip(".")


def add_to_library(spec: StudySpec, study_dir: str, job: Job) -> str | None:
  """Adds a finished source run to the library unless its entry exists; returns a new id.
  Full fine-tuning runs (`method: model`) have no library entry: their checkpoint is a whole
  model, which their transfers start from (init_from), not a key to retrieve by."""
  from spot_jax import methods
  if methods.method_class(spec.method).full:
    return None
  from spot_jax.library.store import PromptLibrary
  library = PromptLibrary(library_path(spec, study_dir), create=True)
  entry_id = library_entry_id(spec, job)
  if entry_id in library.ids():
    return None
  library.add_run_dir(job.model_dir, entry_id=entry_id, embedding=spec.embedding)
  return entry_id


def result_rows(jobs: Sequence[Job]) -> tuple[list[dict[str, Any]], list[Job]]:
  """(rows of the finished baseline/transfer runs, runs without a result yet)."""
  rows, missing = [], []
  for job in jobs:
    if job.kind == "source":
      continue
    try:
      summary = read_finished(job.model_dir, job.train_steps)
    except Exception:  # pylint: disable=broad-except  # a broken run dir: no result yet.
      summary = None
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
  report = report or StudyReport(specs=jobs)
  for job in jobs:
    if job.kind == "source" and is_finished(job):
      added = add_to_library(spec, study_dir, job)
      if added:
        report.library_added.append(added)
  rows, missing = result_rows(jobs)
  report.results_path = os.path.join(os.path.abspath(study_dir), RESULTS_CSV)
  kept = kept_rows(report.results_path, missing)
  write_results(report.results_path, rows + kept)
  report.results_rows, report.missing_results = len(rows) + len(kept), len(missing) - len(kept)
  report.kept_results = len(kept)
  return report


def kept_rows(path: str, missing: Sequence[Job]) -> list[dict[str, Any]]:
  """The rows of an earlier results.csv for runs that give no result now (a run directory
  removed, refused or broken after it finished): results.csv keeps every finished run's row
  whatever happens to its directory later."""
  from spot_jax.study import results
  if not missing or not os.path.exists(path):
    return []
  wanted = {(job.source or BASELINE, job.target, int(job.seed)) for job in missing}
  try:
    _, earlier = results.read_csv_rows(path, results.RESULT_COLUMNS, "a results table")
  except (ValueError, OSError):  # unreadable: rebuilt from the run directories alone.
    return []
  kept = []
  for _, row in earlier:
    try:
      key = (row["source"], row["target"], int(row["seed"]))
    except (TypeError, ValueError):
      continue
    if key in wanted:
      wanted.discard(key)  # one row per run.
      kept.append({k: v for k, v in row.items() if k})
  return kept


# ----------------------------------------------------------------------------- executing


def log_path(study_dir: str, job: Job) -> str:
  return workers.log_path(os.path.join(os.path.abspath(study_dir), "logs"), job)


def validate_jobs(jobs: Sequence[Job]) -> None:
  """Checks every job's gin files and bindings and, for sources and baselines, its settings
  (`spot_jax.train.preflight.preflight`: EVAL_METRIC, feature lengths, initial checkpoint...) once
  per task, before any job starts. A transfer's config is only parsed: its PROMPT_FILE is the
  source's best prompt, known once the source finished. Raises StudyError naming the job."""
  from spot_jax import gin_utils
  from tasks.lookup import register_all_tasks
  from spot_jax.train.config import TrainConfig
  from spot_jax.train.preflight import preflight
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


def write_selection(spec: StudySpec, study_dir: str) -> str:
  """STUDY_DIR/selected_sources.csv: `target,rank,source,predictions` (rank 1 = best; a
  random draw: pool order, predictions `random:N:seed`) of a study that selects its sources
  (`StudySpec.selected_sources`); returns the path."""
  selected = spec.selected_sources() or {}
  choice = spec.select_sources
  predictions = (f"random:{choice['random']}:{choice['seed']}" if "random" in choice
                 else os.path.abspath(os.path.expanduser(choice["predictions"])))
  lines = ["target,rank,source,predictions"] + [
      f"{target},{rank},{source},{predictions}"
      for target, sources in selected.items() for rank, source in enumerate(sources, 1)]
  path = os.path.join(os.path.abspath(study_dir), "selected_sources.csv")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fileio.atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
  return path


def jobs_dir(study_dir: str) -> str:
  return os.path.join(os.path.abspath(study_dir), "jobs")


def run_study(spec: StudySpec, study_dir: str, *, processes: int = 1, dry_run: bool = False,
              phase: str = "all", collect_only: bool = False,
              log: Callable[[str], None] = print,
              run_one: Callable[[Job], Any] | None = None, pack: int = 1) -> StudyReport:
  """Trains every unfinished job of `phase` with the run executor (in this process, or in
  `processes` workers), then collects library entries and results.

  A transfer starts only after its source finished; a failed job is reported with its run dir
  (and log) and blocks only its dependants. run_one: how one job trains in this process
  (default `spot_jax.runs.in_process.train_spec`; the demo passes its quiet runner). pack: up
  to this many compatible runs train together in one job (`spot_jax.runs.packing.pack_jobs`;
  spot_jax.runs.packing.AUTO_PACK: the size the model and memory allow). A study that selects
  its sources records the selection in STUDY_DIR/selected_sources.csv.
  """
  if processes < 1:
    raise StudyError(f"processes must be >= 1, got {processes}")
  all_jobs = plan(spec, study_dir)
  jobs = select_phase(all_jobs, phase)
  if not collect_only:
    validate_jobs(jobs)
  report = StudyReport(specs=jobs)
  if dry_run:
    for line in describe_plan(spec, jobs):
      log(line)
    return report
  if spec.select_sources:
    log(f"selected sources: {write_selection(spec, study_dir)}")
  if not collect_only:
    todo = sum(not is_finished(j) for j in jobs)
    log(f"Study {spec.name!r} ({phase}): {todo} runs to train, {len(jobs) - todo} already "
        "finished")

    def on_done(job: Job, summary) -> None:
      log(f"finished {job.name}")
      if job.kind == "source":
        added = add_to_library(spec, study_dir, job)
        if added:
          report.library_added.append(added)

    execution = executor.execute(jobs, processes=processes,
                                 log_dir=os.path.join(os.path.abspath(study_dir), "logs"),
                                 log=log, on_done=on_done, run_one=run_one, pack=pack,
                                 job_dir=jobs_dir(study_dir))
    report.skipped, report.ran = execution.skipped, execution.ran
    report.failed = execution.failed
    failed = {spec.model_dir: spec.name for spec, _ in execution.failed}
    report.blocked = [(job, _blocked_reason(job, why, failed, phase))
                      for job, why in execution.blocked]
  try:
    collect(spec, study_dir, all_jobs, report)
    kept = (f"; {report.kept_results} kept from the earlier results.csv"
            if report.kept_results else "")
    log(f"results: {report.results_rows} rows in {report.results_path} "
        f"({report.missing_results} baseline/transfer runs not finished{kept})")
  except OSError as e:  # a full disk: the earlier results.csv stays as it was (atomic writes).
    full = fileio.disk_full_path(e, study_dir)
    if full is None:
      raise
    log(f"results.csv not updated: {fileio.disk_full_message(full)}")
  if report.library_added:
    log(f"library {library_path(spec, study_dir)}: added {', '.join(report.library_added)}")
  for job, why in report.failed:
    log(f"FAILED {job.name}: {why}")
  for job, why in report.blocked:
    log(f"BLOCKED {job.name}: {why}")
  return report


def _blocked_reason(job: Job, why: str, failed: dict[str, str], phase: str) -> str:
  """Why a job did not start, naming the failed run it depends on when there is one."""
  broken = [failed[d] for d in job.depends_on if d in failed]
  if broken:
    return f"not started: the run it starts from, {', '.join(broken)}, FAILED above"
  if job.kind == "transfer" and phase == "transfers" and not why.startswith("not started"):
    return f"{why}; run --phase sources first"
  return why


# ----------------------------------------------------------------------------- cluster jobs


def emit_jobs(spec: StudySpec, study_dir: str, launcher: str, out_dir: str, pack: int = 1
              ) -> list[str]:
  """Writes the unfinished jobs as two phase files of launcher commands, one per line (pack:
  compatible runs as packed jobs, `spot-jax train --packed_job STUDY_DIR/jobs/...json`).

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

  def sbatch_options(name: str) -> tuple[str, ...]:  # a job name and a log file per job.
    log = os.path.join(os.path.abspath(study_dir), "logs", f"{name}-%j.log")
    return (f"--job-name={name}", f"--output={log}")

  return [commands.emit_commands(phase_jobs, launcher, os.path.join(out_dir, name),
                                 sbatch_options, pack=pack, job_dir=jobs_dir(study_dir))
          for name, phase_jobs in zip(PHASE_FILES, phases)]
