"""The SPoT pipeline as Python calls: each stage takes typed inputs and writes files.

  frozen_model          the frozen model's T5X checkpoint: cached, a stored model installed,
                        or pretrained here (`PretrainConfig`)
  train_runs            train a set of runs (RunSpecs) with the one run executor
  train_run             train one run in this process (the executor's in-process path)
  add_to_library        finished runs -> library entries (value: best step, key: key step)
  embed_target          tune a target prompt for KEY_STEP steps; its prompt is the task key
  target_query          the key, model and description of a target (a run or a key file)
  rank_sources          rank library sources for a key with any scorer (similarity metric or a
                        learned scorer of spot_jax.library.scorers)
  write_predictions     a ranking as the predictions table target,source,score
  task_similarity       the task x task similarity CSV (+ clustered heatmap)
  transfer              retrieve, plan and train a transfer strategy
  run_study             a study spec -> run dirs, library, results.csv
  plan_study            a study's runs (one phase of them), each a RunSpec
  sample_pool_pairs     the affinity paper's M ordered source -> source pairs of a pool
  held_out_heads        affinity heads trained on gains with some targets held out
  analyse               results.csv -> matrices, summary.json, figures
  evaluate_rankings     results.csv + predictions (or a baseline) -> ranking metrics

The `spot-jax` subcommands only parse their flags, call these and print; the demo
(`spot_jax.app.demo`) chains them. Nothing here takes an argparse Namespace.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from spot_jax import methods
from spot_jax.runs import execute as executor
from spot_jax.runs import in_process
from spot_jax.runs import spec as run_spec
from spot_jax.runs.spec import RunSpec
from spot_jax.runs.execution import Execution
from spot_jax.fileio import atomic_write_bytes
from spot_jax.train import run_dir
from spot_jax.train.pretrain import PretrainConfig

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- the frozen model


@dataclasses.dataclass(frozen=True)
class FrozenModel:
  """A frozen model's T5X checkpoint and where it came from: `cached` (written earlier under
  the config's output directory), `stored` (a stored model installed; `record`: its
  pretraining record) or `pretrained` (here, now)."""

  checkpoint: str
  origin: str
  record: str | None = None


def reusable_frozen_model(config: PretrainConfig, *, stored: str | None = None,
                          log: Log = print) -> FrozenModel | None:
  """The checkpoint `config` describes without pretraining: the one already written (its cache
  check, spot_jax.train.pretrain.pretrain), else the stored model at `stored` (an .npz) when
  its recorded pretraining settings equal `config`'s; None when neither exists."""
  from spot_jax.train import pretrain as pretrain_lib
  if os.path.exists(pretrain_lib.checkpoint_path(config)):
    return FrozenModel(pretrain_lib.pretrain(config, log=log), "cached")
  path = pretrain_lib.install_stored(config, stored) if stored else None
  if path is None:
    return None
  return FrozenModel(path, "stored", pretrain_lib.stored_record_path(stored))


def frozen_model(config: PretrainConfig, *, stored: str | None = None,
                 log: Log = print) -> FrozenModel:
  """The frozen model's checkpoint: `reusable_frozen_model`, else pretrained here (resumed
  after an interruption)."""
  from spot_jax.train import pretrain as pretrain_lib
  reused = reusable_frozen_model(config, stored=stored, log=log)
  return reused or FrozenModel(pretrain_lib.pretrain(config, log=log), "pretrained")


# ----------------------------------------------------------------------------- training


def train_runs(specs: Sequence[RunSpec], *, processes: int = 1, launcher: str | None = None,
               dry_run: bool = False, log_dir: str | None = None, log: Log = print,
               run_one: Callable[[RunSpec], Any] | None = None, pack: int = 1,
               job_dir: str | None = None) -> Execution:
  """Trains every unfinished run of `specs` (see `spot_jax.runs.execute.execute`)."""
  return executor.execute(specs, processes=processes, launcher=launcher, dry_run=dry_run,
                          log_dir=log_dir, log=log, run_one=run_one, pack=pack,
                          job_dir=job_dir)


def train_run(spec: RunSpec) -> run_dir.RunSummary:
  """Trains (or resumes) one run in this process, as `spot-jax train` does; its summary."""
  return in_process.train_spec(spec)


def is_finished(spec: RunSpec) -> bool:
  """The one "run is finished" rule (spot_jax.runs.spec.read_finished)."""
  return run_spec.is_finished(spec)


def finished_score(spec: RunSpec) -> float:
  """The best validation score of a finished run."""
  summary = run_spec.read_finished(spec.model_dir, spec.train_steps)
  if summary is None:
    raise ValueError(f"{spec.model_dir} is not a finished run; train it first")
  return float(summary.best_score)


def run_summary(model_dir: str) -> run_dir.RunSummary:
  """A run directory's run.json."""
  return run_dir.read_summary(model_dir)


def prompt_path(model_dir: str, step: int) -> str:
  """The prompt file a run wrote at `step` (step 0: its initial prompt)."""
  return run_dir.prompt_path(model_dir, step)


def evaluate_prompt(prompt_file: str, *, task: str, model: str, checkpoint: str,
                    batch_size: int, prompt_length: int, num_examples: int | None,
                    eval_mode: str) -> dict[str, float]:
  """The metrics of a prompt file on the task's validation split (spot_jax.train.evaluate)."""
  from spot_jax.train.evaluate import EvalConfig
  from spot_jax.train.evaluate import evaluate_prompt as evaluate
  results = evaluate(EvalConfig(
      task=task, prompt_file=prompt_file, model=model, initial_checkpoint=checkpoint,
      batch_size=batch_size, prompt_length=prompt_length, num_examples=num_examples,
      eval_mode=eval_mode))
  return results[task]


def add_to_library(library_path: str, model_dirs: Sequence[str], *,
                   entry_ids: Sequence[str] | None = None, key_step: int | None = None,
                   create: bool = True) -> list[str]:
  """Adds finished runs to the library (entries that exist are kept); returns the new ids."""
  from spot_jax.library.store import PromptLibrary
  library = PromptLibrary(library_path, create=create)
  existing, added = set(library.ids()), []
  for i, model_dir in enumerate(model_dirs):
    entry_id = None if entry_ids is None else entry_ids[i]
    if entry_id is not None and entry_id in existing:
      continue
    if run_spec.read_finished(model_dir) is None:
      raise ValueError(f"{model_dir} is not a finished run; train it first")
    added.append(library.add_run_dir(model_dir, key_step=key_step, entry_id=entry_id).id)
  return added


# ----------------------------------------------------------------------------- keys


def embed_target(gin_files: Sequence[str], gin_bindings: Sequence[str], out: str | None = None,
                 key_step: int | None = None, embedding: str | None = None) -> tuple[str, str]:
  """Tunes the configured target run for exactly `key_step` steps (default its KEY_STEP) with
  the normal trainer, unless that checkpoint exists; writes its key to `out` when given: the
  prompt (prompt-like methods), else the method's task embedding [D] of kind `embedding`.

  Returns (the key's path, the task). MODEL_DIR can later be trained further.
  """
  from spot_jax.library.formats import npy_bytes
  from spot_jax.library.identity import ModelIdentity
  from spot_jax.library.run_keys import run_key
  cfg, gin_text = in_process.train_config(gin_files, gin_bindings)
  key_step = cfg.key_step if key_step is None else key_step
  if key_step <= 0:
    raise ValueError(f"key_step must be positive, got {key_step}")
  prompt_like = methods.method_class(cfg.method).prompt_like
  if not prompt_like and not out:
    raise ValueError(f"Method {cfg.method!r} has no prompt file to point at: give the key file "
                     "to write (--out)")
  done = (run_dir.prompt_steps if prompt_like else run_dir.checkpoint_steps)(cfg.model_dir)
  if key_step not in done:
    if done and done[-1] > key_step:
      raise ValueError(f"{cfg.model_dir} is past step {key_step} ({done[-1]}) without a "
                       f"checkpoint at {key_step}; use another MODEL_DIR or a key step in {done}")
    cfg = dataclasses.replace(cfg, train_steps=key_step, key_step=key_step, eval_period=0)
    in_process.train_in_process([(cfg, gin_text)])
  path = run_dir.prompt_path(cfg.model_dir, key_step)
  if prompt_like and out:
    with open(path, "rb") as f:
      atomic_write_bytes(out, f.read())
  elif out:
    model = ModelIdentity.from_run_summary(run_dir.read_summary(cfg.model_dir),
                                           embedding=embedding)
    atomic_write_bytes(out, npy_bytes(run_key(cfg.model_dir, key_step, model)[0]))
  return (out or path), cfg.task


@dataclasses.dataclass(frozen=True)
class Query:
  """A target's key (a prompt [L, embed], or a non-prompt method's embedding [1, D]), the
  library identity it belongs to (frozen model, method, embedding kind), a description for
  records, and the target task when known."""

  key: np.ndarray
  model: Any  # spot_jax.library.store.ModelIdentity
  description: dict[str, Any]
  task: str | None


def target_query(library, *, key_path: str | None = None, run: str | None = None,
                 model: str | None = None, method: str | None = None,
                 embedding: str | None = None) -> Query:
  """The query of a key file (`key_path`, needs `model`: fingerprint, prefix or name, and, where
  the library holds several methods, `method`/`embedding`) or of a target run of any method
  (its KEY_STEP task embedding, of kind `embedding` for non-prompt methods; `model`, when
  given, must match the run's)."""
  from spot_jax.library.formats import as_key, load_npy
  from spot_jax.library.identity import ModelIdentity
  from spot_jax.library.run_keys import run_key
  from spot_jax.library.store import LibraryError
  if (key_path is None) == (run is None):
    raise ValueError("give exactly one of a key file or a target run")
  if key_path:
    if not model:
      raise LibraryError(f"--key needs --model (one of {[str(m) for m in library.models()]})")
    identity = library.resolve_model(model, method=method, embedding=embedding)
    key = as_key(load_npy(key_path), f"key {key_path}", identity)
    return Query(key, identity, {"key": os.path.abspath(key_path)}, None)
  summary = run_dir.read_summary(run)
  run_model = ModelIdentity.from_run_summary(summary, embedding=embedding)
  steps = (run_dir.prompt_steps(run) if run_model.is_prompt
           else run_dir.checkpoint_steps(run))
  if summary.key_step not in steps:
    raise LibraryError(f"Run {run} has no checkpoint at its key_step {summary.key_step}; "
                       f"available steps: {steps}. Train it further or use `spot-jax embed`")
  key = run_key(run, summary.key_step, run_model)
  if not run_model.is_prompt:
    run_model = dataclasses.replace(run_model, key_dim=int(key.shape[1]))
  if model:
    identity = library.resolve_model(model, method=run_model.method,
                                     embedding=run_model.embedding)
    if identity != run_model:
      raise LibraryError(f"--model {identity} differs from the model of run {run} "
                         f"({run_model})")
  return Query(key, run_model, {"run": os.path.abspath(run), "key_step": summary.key_step},
               summary.task)


# ----------------------------------------------------------------------------- ranking


def scorer_names() -> list[str]:
  """Every ranking method `rank_sources` accepts (spot_jax.library.scorers): the similarity
  metrics, max_pairwise, data_size, random[:SEED], affinity:PATH, textemb:..., fisher:..."""
  from spot_jax.library import scorers
  return scorers.scorer_names()


def rank_sources(library, query: Query | Sequence[Query], *, scorer: Any = "cosine",
                 k: int | None = None, exclude_task: str | None = None,
                 center_keys: bool = False, by_task: bool = False,
                 target: str | None = None) -> list:
  """Library entries (tasks with by_task) best first for the query, by `scorer`: a similarity
  metric (spot_jax.library.similarity.METRICS, exact top-k) or any scorer spec of
  spot_jax.library.scorers (`affinity:PATH`, `max_pairwise`, `data_size`, `random:SEED`...),
  or a scorer object (e.g. spot_jax.affinity.predict.HeldOutScorer).
  `target` (default: the query run's task) names the target for scorers that need it.

  `ensemble:METRIC` takes one query per method (each searching only its own method's entries)
  and ranks source tasks by the mean over methods of their METRIC task scores (TuPaTE Table 3;
  tasks every method holds; each represented by its best entry of the first query's method).
  """
  from spot_jax.library import scorers, similarity
  from spot_jax.library.retrieval import Ranked, retrieve, top_k
  queries = [query] if isinstance(query, Query) else list(query)
  if isinstance(scorer, str) and scorer.partition(":")[0] == scorers.ENSEMBLE:
    ensemble = scorers.get_scorer(scorer)
    if len({q.model for q in queries}) != len(queries):
      raise ValueError("An ensemble takes one query per method (or embedding kind); two "
                       "queries share one")
    per_method, best = {}, {}
    for q in queries:
      ranked = retrieve(library, q.key, model=q.model, metric=ensemble.metric,
                        exclude_task=exclude_task, center_keys=center_keys, by_task=True)
      per_method[str(q.model)] = {r.entry.task: r.score for r in ranked}
      for r in ranked:
        best.setdefault(r.entry.task, r.entry)
    means = scorers.mean_over_methods(per_method)
    tasks = sorted(means)
    order = top_k(np.asarray([means[t] for t in tasks]), k)
    return [Ranked(best[tasks[i]], means[tasks[i]], rank) for rank, i in enumerate(order, 1)]
  if len(queries) != 1:
    raise ValueError(f"{len(queries)} queries (one per method) need an ensemble scorer, e.g. "
                     "ensemble:cosine")
  query = queries[0]
  options = dict(model=query.model, k=k, exclude_task=exclude_task, center_keys=center_keys,
                 by_task=by_task)
  if isinstance(scorer, str) and scorer in similarity.METRICS:
    return retrieve(library, query.key, metric=scorer, **options)
  if isinstance(scorer, str):
    from spot_jax.study.ranking import registry_train_size
    scorer = scorers.get_scorer(scorer, size_of=registry_train_size)
  return retrieve(library, query.key, scorer=scorer, target=target or query.task, **options)


def predictions_csv(target: str, ranked) -> bytes:
  """`target,source,score`, one row per source task (its first = best row in `ranked`); the
  target's own task is no source of itself and is left out."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(("target", "source", "score"))
  seen = {target}
  for r in ranked:
    if r.entry.task not in seen:
      seen.add(r.entry.task)
      writer.writerow((target, r.entry.task, repr(r.score)))
  return buffer.getvalue().encode()


def write_predictions(path: str, target: str, ranked) -> int:
  """Writes the predictions table of one target; returns its number of source tasks."""
  atomic_write_bytes(path, predictions_csv(target, ranked))
  return len({r.entry.task for r in ranked} - {target})


def similarity_csv(tasks: Sequence[str], matrix) -> str:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["task"] + list(tasks))
  for task, row in zip(tasks, matrix):
    writer.writerow([task] + [repr(float(v)) for v in row])
  return buffer.getvalue()


def task_similarity(library, metric: str, out: str, *, center_keys: bool = False,
                    model=None, plot: str | None = None, per_run: bool = False
                    ) -> tuple[list[str], np.ndarray]:
  """Writes the task x task similarity of the library's keys (entry x entry, labelled
  <task>@<seed>, with per_run) to `out` (CSV) and, with `plot`, a clustered heatmap PNG;
  returns (labels, matrix [T, T])."""
  from spot_jax.library import similarity
  compute = similarity.run_similarity if per_run else similarity.task_similarity
  tasks, matrix = compute(library, metric, center_keys=center_keys, model=model)
  atomic_write_bytes(os.path.abspath(out), similarity_csv(tasks, matrix).encode())
  if plot:
    from spot_jax.library.plots import similarity_heatmap
    os.makedirs(os.path.dirname(os.path.abspath(plot)), exist_ok=True)
    title = f"Task similarity ({metric}{', centred' if center_keys else ''})"
    similarity_heatmap(tasks, matrix, plot, title)
  return tasks, matrix


def key_similarity(library, queries: Mapping[str, Query], metric: str, out: str, *,
                   center_keys: bool = False) -> tuple[list[str], np.ndarray]:
  """Writes the task x task similarity of the library's keys and the queries' keys ({task:
  query}, e.g. held-out targets) to `out` (CSV): keys mean-pooled over the prompt [L, embed]
  -> [embed], centred with `center_keys`, averaged per task; returns (tasks, matrix [T, T])."""
  from spot_jax.library import similarity
  entries, keys = library.pooled_keys("mean")
  tasks = [e.task for e in entries] + list(queries)
  stacked = np.concatenate([np.asarray(keys, np.float64), np.stack(
      [similarity.pool(np.asarray(q.key, np.float64), "mean") for q in queries.values()])])
  if center_keys:
    stacked = similarity.center(stacked)
  tasks, matrix = similarity.group_average(similarity.pairwise(metric, stacked), tasks)
  atomic_write_bytes(os.path.abspath(out), similarity_csv(tasks, matrix).encode())
  return tasks, matrix


# ----------------------------------------------------------------------------- transfer


def plan_transfer(strategy: str, ranked, library, *, target: str, out_dir: str, k: int,
                  **options):
  """The runs of a transfer strategy from the top `k` of `ranked` (best first) to `target`
  (spot_jax.library.transfer.plan_transfer; options: source_steps, metric, query, gin_files,
  gin_bindings, base_config, prompt_length, method)."""
  from spot_jax.library import transfer as transfer_lib
  return transfer_lib.plan_transfer(strategy, ranked, library, target=target, out_dir=out_dir,
                                    k=k, **options)


def run_transfer(plan, *, launcher: str | None = None, dry_run: bool = False, log: Log = print,
                 run_one: Callable[[RunSpec], Any] | None = None, pack: int = 1):
  """Writes a planned transfer's initial prompts and transfer.json, then trains its runs
  (finished ones skipped; `run_one` trains one run in this process); its TransferResult."""
  from spot_jax.library import transfer as transfer_lib
  return transfer_lib.run_transfer(plan, launcher=launcher, dry_run=dry_run, echo=log,
                                   run_one=run_one, pack=pack)


def transfer(strategy: str, library, query: Query | Sequence[Query], *, target: str,
             out_dir: str, k: int, gin_files: Sequence[str] = (),
             gin_bindings: Sequence[str] = (), base_config: Mapping[str, Any] | None = None,
             scorer: str = "cosine", center_keys: bool = False,
             source_steps: int | None = None, prompt_length: int | None = None,
             method: str | None = None, launcher: str | None = None, dry_run: bool = False,
             log: Log = print, pack: int = 1):
  """Ranks the library for the query (the target's own task excluded; several queries, one
  per method, with an `ensemble:` scorer), then plans and trains the strategy's runs of the
  retrieved entries' method (spot_jax.library.transfer; `method`: the runs' configured method,
  checked; `pack`: runs per packed job, spot_jax.runs.packing.pack_jobs); returns (ranked,
  TransferResult)."""
  ranked = rank_sources(library, query, scorer=scorer, k=k, exclude_task=target,
                        center_keys=center_keys, target=target)
  description = (query.description if isinstance(query, Query)
                 else {"ensemble": [q.description for q in query]})
  plan = plan_transfer(
      strategy, ranked, library, target=target, out_dir=out_dir, k=k, base_config=base_config,
      source_steps=source_steps, metric=scorer, query=description, gin_files=gin_files,
      gin_bindings=gin_bindings, prompt_length=prompt_length, method=method)
  return ranked, run_transfer(plan, launcher=launcher, dry_run=dry_run, log=log, pack=pack)


# ----------------------------------------------------------------------------- studies


def run_study(spec, study_dir: str, **options):
  """A study spec (a StudySpec or a YAML path) -> its runs, library and results.csv
  (spot_jax.study.runner.run_study; options: processes, dry_run, phase, collect_only, log,
  run_one, pack)."""
  from spot_jax.study import runner
  from spot_jax.study.spec import load_spec
  if isinstance(spec, str):
    spec = load_spec(spec)
  return runner.run_study(spec, study_dir, **options)


def plan_study(spec, study_dir: str, phase: str | None = None) -> list[RunSpec]:
  """Every run of a study (sources, baselines, transfers; spot_jax.study.runner.plan), or those
  of one `phase` (sources | baselines | transfers | ...: runner.PHASES)."""
  from spot_jax.study import runner
  jobs = runner.plan(spec, study_dir)
  return jobs if phase is None else runner.select_phase(jobs, phase)


def study_spec(fields: Mapping[str, Any]):
  """A StudySpec from the keys of a study YAML (validated as `spot-jax study run` does)."""
  from spot_jax.study.spec import StudySpec
  return StudySpec.from_dict(dict(fields))


def study_run_dir(study_dir: str, kind: str, source: str | None, target: str | None,
                  seed: int) -> str:
  """The directory of a study's run: runs/<kind>/<source>/<target>/seed_<seed>."""
  from spot_jax.study import runner
  return runner.run_dir_of(study_dir, kind, source, target, seed)


def study_jobs_dir(study_dir: str) -> str:
  """Where a study's job files go (spot_jax.runs.execute writes one per run)."""
  from spot_jax.study import runner
  return runner.jobs_dir(study_dir)


def study_library(spec, study_dir: str):
  """The prompt library a study writes its finished source runs to."""
  from spot_jax.library.store import PromptLibrary
  from spot_jax.study import runner
  return PromptLibrary(runner.library_path(spec, study_dir))


def study_results_csv(study_dir: str) -> str:
  """The study's results.csv (one row per finished run)."""
  from spot_jax.study import runner
  return os.path.join(study_dir, runner.RESULTS_CSV)


def study_table(study_dir: str):
  """The study's results, aggregated over seeds (spot_jax.study.analysis.analyze)."""
  from spot_jax.study.analysis import analyze
  from spot_jax.study.results import read_results
  return analyze(read_results(study_results_csv(study_dir)))


def study_run_config(spec, *, seed: int, train_steps: int) -> tuple[list[str], list[str]]:
  """The gin files and "MACRO = value" bindings of a run trained as the study's runs are
  (model, trainer, the spec's shared settings, seed, key step), for `train_steps`: the base of
  runs the study does not plan itself, e.g. a transfer strategy's (runner.train_config)."""
  from spot_jax.study import runner
  files, bindings = runner.train_config(spec, seed=seed, train_steps=train_steps)
  return list(files), [f"{k} = {v}" for k, v in bindings.items()]


def analyse(results_csv: str, out_dir: str, *, similarity_csv_path: str | None = None,
            threshold: float = 0.0, metric_name: str | None = None) -> dict[str, Any]:
  """results.csv -> transfer matrices, relative error reduction, summary.json and figures."""
  from spot_jax.study import analysis
  return analysis.run_analysis(results_csv, out_dir, similarity_csv_path, threshold,
                               metric_name)


def study_predictions(table, scorer: str, study_dirs: Sequence[str],
                      embedding: str | None = None) -> dict[str, dict[str, float]]:
  """{target: {source: score}} of `scorer` for a study's targets and sources, from the task
  embeddings of the studies' source and baseline runs at their key step (any method:
  spot_jax.affinity.data.keys_from_study). `ensemble:METRIC` takes one study directory per
  method (the same tasks trained with each) and averages METRIC over them."""
  from spot_jax.affinity import data
  from spot_jax.library import scorers
  from spot_jax.study import ranking, results
  if not study_dirs:
    raise ValueError("a scorer ranks with the studies' keys: give their study directories")
  keys = {os.path.abspath(d): data.keys_from_study(d, embedding) for d in study_dirs}
  ranker = scorers.get_scorer(scorer, size_of=ranking.registry_train_size)
  sources = [s for s in table.sources if s != results.BASELINE]
  if isinstance(ranker, scorers.EnsembleScorer):
    return ranker.predictions(keys, table.targets, sources)
  if len(keys) > 1:
    raise ValueError(f"{len(keys)} study directories (one per method) need an ensemble "
                     "scorer, e.g. ensemble:cosine")
  return scorers.predictions(ranker, next(iter(keys.values())), table.targets, sources)


def evaluate_rankings(results_csv: str, *, predictions: str | None = None,
                      baseline: str | None = None, scorer: str | None = None,
                      study_dirs: Sequence[str] = (), embedding: str | None = None,
                      sizes: str | None = None, k_max: int | None = None,
                      out: str | None = None, ndcg_relevance: str = "rank",
                      classes: str | None = None) -> dict[str, Any]:
  """Ranking metrics of a predictions table, of a scorer over the study's task embeddings
  (`scorer`, keys from `study_dirs`, default the results' directory; `study_predictions`), or
  of a baseline ranking (`random`: the exact expectation, `data_size`: by training-set size,
  from `sizes` or the task registry); `ndcg_relevance` as spot_jax.study.ranking.NDCG_RELEVANCE.
  `classes='tupate'` adds TuPaTE's in-class / all-class rho and NDCG (`report['classes']`,
  `report['class_table']` in its Table 2 layout; `spot_jax.study.class_eval`)."""
  from spot_jax.study import ranking, results
  if sum(x is not None for x in (predictions, baseline, scorer)) != 1:
    raise ValueError("give exactly one of predictions, a scorer or a baseline")
  if sizes and baseline != "data_size":
    raise ValueError("--sizes only applies to --baseline data_size")
  table = results.aggregate(results.read_results(results_csv))
  if scorer:
    dirs = list(study_dirs) or [os.path.dirname(os.path.abspath(results_csv))]
    for directory in dirs:
      if not os.path.isdir(os.path.join(directory, "runs")):
        raise ValueError(
            f"{directory} is not a study directory (no runs/ in it): --scorer ranks with the "
            "keys of the study's own runs. For results without their study, score with the "
            f"keys of a prompt library: `spot-jax affinity predict --scorer {scorer} --library "
            f"LIB --results {results_csv} --out predictions.csv`, then `spot-jax study "
            f"evaluate {results_csv} --predictions predictions.csv`")
    predicted = study_predictions(table, scorer, dirs, embedding)
    method, where = scorer, ", ".join(dirs)
  elif predictions:
    predicted = ranking.predictions_by_target(results.read_predictions(predictions))
    method, where = f"predictions {predictions}", predictions
  elif baseline == "data_size":
    known = results.read_sizes(sizes) if sizes else None

    def size_of(task: str) -> float:
      if known is None:
        return ranking.registry_train_size(task)
      if task not in known:
        raise ValueError(f"{sizes}: no size for source {task!r}; add a row {task},SIZE")
      return known[task]
    predicted, method, where = ranking.data_size_predictions(table, size_of), "data_size", \
        sizes or "data_size"
  elif baseline == "random":
    predicted, method, where = None, "random (expected value)", "random"
  else:
    raise ValueError(f"Unknown baseline {baseline!r}; choose random or data_size")
  report = ranking.evaluate(table, method, predicted, k_max, where, ndcg_relevance)
  report["results"] = os.path.abspath(results_csv)
  if classes is not None:
    from spot_jax.study import class_eval
    if classes != "tupate":
      raise ValueError(f"Unknown task classes {classes!r}; choose tupate (CR and QA)")
    groups = class_eval.tupate_classes()
    scores = class_eval.evaluate_classes(table, {method: predicted}, groups)
    report["classes"] = class_eval.as_json(scores)
    report["class_table"] = class_eval.markdown(class_eval.table(scores, list(groups)))
  if out:
    results.write_json(out, report)
  return report


# ----------------------------------------------------------------------------- affinity heads


def sample_pool_pairs(sources: Sequence[str], num_pairs: int, seed: int) -> list[tuple[str, str]]:
  """M ordered (source i -> source j, i != j) pairs drawn inside the pool (Feng et al. 2023,
  §3.2; spot_jax.affinity.pairs), the draw pool-pair studies share."""
  from spot_jax.affinity.pairs import sample_pool_pairs as sample
  return sample(sources, num_pairs, seed)


def study_gains(results_csv: str, study_dir: str) -> dict[tuple[str, str], float]:
  """{(source, target): transfer gain over the target's baseline}, means over seeds."""
  from spot_jax.study import affinity_eval
  return dict(affinity_eval.load_inputs(results_csv, study_dir=study_dir).gains)


def held_out_heads(config, gains: Mapping[tuple[str, str], float], study_dir: str,
                   out_dir: str, seeds: Sequence[int], held_out: Sequence[str]) -> list:
  """One affinity head (spot_jax.affinity.train.AffinityConfig `config`) per seed, trained on
  `gains` with the keys of the study's source and baseline runs, never on a pair touching a
  `held_out` target (one fold: spot_jax.affinity.folds.train_held_out_heads), in
  OUT_DIR/<held-out targets>/seed_<s>/ and reused on a rerun; the loaded heads."""
  from spot_jax.affinity import folds, predict
  from spot_jax.affinity.data import keys_from_study
  (fold_dir,) = folds.train_held_out_heads(config, dict(gains), keys_from_study(study_dir),
                                           out_dir, seeds, folds=[list(held_out)])
  return [predict.AffinityHead.load(d) for d in predict.head_dirs(fold_dir)]


def head_scorer(head, name: str):
  """A scorer of `rank_sources` that ranks the head's held-out targets with it."""
  from spot_jax.affinity import predict
  return predict.held_out_folds([[head]], name)


# ----------------------------------------------------------------------------- files


def write_json(path: str, data: Any) -> None:
  """Writes data as indented JSON (NaN as null) atomically."""
  from spot_jax.study.results import write_json as write
  write(path, data)


def save_figure(figure, path: str) -> None:
  """Saves a matplotlib Figure as PNG atomically."""
  from spot_jax.study.plots import save_figure as save
  save(figure, path)
