"""`spot-jax demo`: the whole SPoT pipeline on the synthetic world, no downloads.

Through the pipeline API (`spot_jax.app.pipeline`), with every knob in gin_configs/demo.gin:

  1. pretrain the tiny frozen model on the synthetic corpus, write it as a T5X checkpoint
     (checkpointed and resumed; cached by everything that determines it); every prompt run
     loads it from disk like a released T5 1.1 checkpoint;
  2. tune source prompts and build the prompt library (values: best checkpoints, keys: the
     KEY_STEP prompt);
  3. on held-out targets: baselines, the source x target transfer matrix by brute force (the
     ground truth) and the untrained prompt;
     Then the affinity paper's training set (Feng et al. 2023, §3.2): each source's own
     no-transfer baseline and M ordered source -> source transfers sampled inside the pool;
  4. embed each target (its baseline's KEY_STEP prompt), rank the sources with every ranking
     method (similarity metrics; learned scorers by name; `affinity_head`: the light affinity
     head trained here on the M pool pairs only, one head per seed, so no pair touching a
     held-out target reaches it) and evaluate the rankings against the ground truth;
  5. BEST OF TOP-k (read off the brute-force matrix: the same runs), TOP-k WEIGHTED AVERAGE
     and TOP-k MULTI-TASK MIXTURE;
  6. report.md, report.html (figures inline) and results.json (`spot_jax.app.demo_report`).

Every stage is idempotent: a rerun skips finished runs (resuming interrupted ones) and
recomputes only the cheap analysis. Library output goes to OUTPUT_DIR/demo.log; stdout gets
the stage lines, one line per run and the summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import gin
import numpy as np

from spot_jax import macros
from spot_jax import runtime
from spot_jax.app import pipeline

DEMO_GIN = "demo.gin"
QUICK_GIN = "demo_quick.gin"
NUM_STAGES = 6
# The demo's frozen model, pretrained once and shipped (gin_configs/demo.gin's pretraining
# settings, recorded beside it in tiny_words_frozen.json; scripts/generate/make_demo_model.py).
STORED_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets",
                            "tiny_words_frozen.npz")
# The ranking method of the learned affinity head, trained on transfers sampled inside the
# source pool (pool_stage, affinity_stage); each head seed ranks as AFFINITY_HEAD/seed_<s>.
AFFINITY_HEAD = "affinity_head"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DemoConfig:
  """The demo's world, model and run lengths (gin_configs/demo.gin sets them)."""

  output_dir: str = "demo_output"
  model_gin: str = "models/tiny_byte.gin"
  model: str = "tiny_byte"
  pretrain_task: str = "synthetic_pretraining"
  pretrain_steps: int = 1500
  pretrain_seed: int = 0
  # Use the shipped pretrained model (STORED_MODEL, made by
  # scripts/generate/make_demo_model.py) when its recorded pretraining settings equal these;
  # False, or any other setting: pretrain here.
  stored_model: bool = True
  pretrain_feature_lengths: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"inputs": 96, "targets": 64})
  sources: tuple[str, ...] = ("synthetic_sentiment_a", "synthetic_topic_4way")
  targets: tuple[str, ...] = ("synthetic_sentiment_b", "synthetic_topic_2way")
  seeds: tuple[int, ...] = (0,)
  source_steps: int = 300
  target_steps: int = 100
  key_step: int = 25
  checkpoint_period: int = 25
  eval_num_examples: int = 200
  feature_lengths: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"inputs": 128, "targets": 16})
  batch_size: int = 32
  prompt_length: int = 20
  learning_rate: float | None = None  # None: the method's default (prompt: 0.3, SPoT).
  # How checkpoints are scored: 'rank_classification' (the best of the task's labels) scores
  # an untrained prompt near chance; 'greedy' (T5X's default) scores it 0 when it decodes no
  # label at all.
  eval_mode: str = "rank_classification"
  ranking_methods: tuple[str, ...] = ("cosine", "per_token_cosine", "euclidean", "manhattan")
  # AFFINITY_HEAD in ranking_methods: its spot_jax.affinity.train.AffinityConfig (demo.gin:
  # affinity/light.gin) and the head seeds (each ranks on its own; the report: mean ± std).
  affinity: Any = None
  affinity_seeds: tuple[int, ...] = (0, 1, 2)
  # The head's training set (Feng et al. 2023, §3.2): M ordered (source i -> source j, i != j)
  # pairs sampled inside the pool with this seed; every source also gets its no-transfer
  # baseline (target_steps), so each pair's gain is measured as the targets' are.
  pool_num_pairs: int = 0
  pool_pairs_seed: int = 0
  # Also measure the world-rule pairs (world_rule_pairs) the sample missed, for the report's
  # "world's transfer rule" table; never trained on.
  world_rule_probes: bool = True
  center_keys: bool = True
  top_k: int = 2
  strategies: tuple[str, ...] = ("best_of_top_k", "weighted_average", "mixture")
  strategy_method: str = "euclidean"  # ranks for the strategies; weights must be positive.
  mixture_source_steps: int | None = None  # the mixture's source run (default source_steps).
  tuning_margin: float = 5.0  # check (a): tuned >= untrained + margin (points).


def load_config(quick: bool = False, gin_files: tuple[str, ...] = (),
                gin_bindings: tuple[str, ...] = ()) -> DemoConfig:
  """DemoConfig from gin_configs/demo.gin (then demo_quick.gin with quick), then extra gin."""
  from spot_jax import gin_utils
  files = [DEMO_GIN, *([QUICK_GIN] if quick else []), *gin_files]
  gin_utils.parse_gin(files, list(gin_bindings))
  return DemoConfig()


# ----------------------------------------------------------------------------- console


class Console:
  """Demo output: stage lines, one line per run, the summary. Library output (absl,
  TensorFlow, seqio prints, warnings, trainer lines) goes to OUTPUT_DIR/demo.log."""

  def __init__(self, out=None):
    self.out = out or sys.stdout
    self.interactive = bool(getattr(self.out, "isatty", lambda: False)())

  def say(self, text: str = "") -> None:
    self.out.write(text + "\n")
    self.out.flush()


@contextlib.contextmanager
def quiet_libraries(log_path: str):
  """Routes Python logging (absl included), warnings, stdout prints and C-level stderr (XLA,
  TensorFlow) to `log_path` while it is active. The demo writes to the saved stdout; a
  terminal keeps Python-level stderr for the per-run progress bars."""
  os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  log_file = open(log_path, "a", buffering=1)
  handler = logging.StreamHandler(log_file)
  handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
  root = logging.getLogger()
  old_handlers, old_level = root.handlers[:], root.level
  root.handlers, root.level = [handler], logging.INFO
  try:
    from absl import logging as absl_logging
    absl_handler = absl_logging.get_absl_handler()
    absl_logging.get_absl_logger().removeHandler(absl_handler)
  except ImportError:
    absl_handler = None
  logging.captureWarnings(True)
  old_stderr_fd = os.dup(2)
  sys.stderr.flush()
  os.dup2(log_file.fileno(), 2)
  old_stderr = sys.stderr
  sys.stderr = os.fdopen(os.dup(old_stderr_fd), "w", buffering=1)
  try:
    with contextlib.redirect_stdout(log_file), warnings.catch_warnings():
      warnings.simplefilter("default")
      yield
  finally:
    sys.stderr.flush()
    sys.stderr.close()
    sys.stderr = old_stderr
    os.dup2(old_stderr_fd, 2)
    os.close(old_stderr_fd)
    logging.captureWarnings(False)
    root.handlers, root.level = old_handlers, old_level
    if absl_handler is not None:
      from absl import logging as absl_logging
      absl_logging.get_absl_logger().addHandler(absl_handler)
    log_file.close()


# ----------------------------------------------------------------------------- stages


def _task_name(task: str) -> str:
  from tasks import synthetic
  return synthetic.unprefixed_name(task)


def family(task: str) -> str:
  from tasks import synthetic
  return synthetic.synthetic_task_info(task).family


def pretrain_config(cfg: DemoConfig):
  """The PretrainConfig of the demo's frozen model (output under OUTPUT_DIR/frozen_model)."""
  return pipeline.PretrainConfig(output_dir=os.path.join(cfg.output_dir, "frozen_model"),
                        task=cfg.pretrain_task, model=cfg.model,
                        train_steps=cfg.pretrain_steps, seed=cfg.pretrain_seed,
                        feature_lengths=dict(cfg.pretrain_feature_lengths),
                        log_period=max(cfg.pretrain_steps // 10, 1))


def pretrain_stage(cfg: DemoConfig, console: Console) -> str:
  """The frozen model's T5X checkpoint: the cached one, the shipped one (STORED_MODEL, when
  the settings match its record) or pretrained here."""
  pcfg = pretrain_config(cfg)
  stored = STORED_MODEL if cfg.stored_model else None
  reused = pipeline.reusable_frozen_model(pcfg, stored=stored, log=print)
  if reused is not None and reused.origin == "cached":
    console.say(f"      reusing {reused.checkpoint}")
    return reused.checkpoint
  if reused is not None:
    console.say(f"      the shipped model (pretrained with these settings: "
                f"{os.path.basename(reused.record)}) -> {reused.checkpoint}")
    return reused.checkpoint
  if stored:
    console.say("      these settings differ from the shipped model's: pretraining")
  start = time.perf_counter()

  def log(line: str) -> None:
    print(line)  # the demo log.
    if line.startswith(("pretrain step", "Resuming")):
      console.say(f"      {line}")
  path = pipeline.frozen_model(pcfg, log=log).checkpoint
  console.say(f"      wrote {path} ({time.perf_counter() - start:.0f} s)")
  return path


def study_spec(cfg: DemoConfig, checkpoint: str):
  return pipeline.study_spec(dict(
      name="demo", model=cfg.model_gin, initial_checkpoint=checkpoint,
      sources=list(cfg.sources), targets=list(cfg.targets), seeds=list(cfg.seeds),
      source_steps=cfg.source_steps, target_steps=cfg.target_steps, key_step=cfg.key_step,
      feature_lengths=dict(cfg.feature_lengths), batch_size=cfg.batch_size,
      prompt_length=cfg.prompt_length, checkpoint_period=cfg.checkpoint_period,
      eval_period=cfg.checkpoint_period, max_eval_examples=cfg.eval_num_examples,
      eval_metric="accuracy",
      # Targets start like sources (sampled vocabulary), so their KEY_STEP prompts (the task
      # keys) are comparable with the library's keys.
      source_prompt_init="sampled_vocab", baseline_prompt_init="sampled_vocab",
      gin_bindings={macros.gin_name("eval_mode"): cfg.eval_mode,
                    macros.gin_name("learning_rate"): cfg.learning_rate}))


def describe_run(spec) -> str:
  if spec.kind == "source":
    return f"source {_task_name(spec.source)}"
  if spec.kind == "baseline":
    return f"baseline {_task_name(spec.target)}"
  if spec.kind == "transfer":
    return f"transfer {_task_name(spec.source)} -> {_task_name(spec.target)}"
  return spec.name


class RunPrinter:
  """Trains one RunSpec in this process (the executor's in-process path) and prints one line:
  `[i/n] what: accuracy 62.5 (12 s)`."""

  def __init__(self, console: Console, total: int):
    self.console, self.total, self.index = console, total, 0

  def __call__(self, spec, describe: Callable[[Any], str] = describe_run):
    self.index += 1
    start = time.perf_counter()
    summary = pipeline.train_run(spec)
    score = ("-" if summary.best_score is None
             else f"{summary.eval_metric} {summary.best_score:.1f}")
    self.console.say(f"      [{self.index}/{self.total}] {describe(spec)}: {score} "
                     f"({time.perf_counter() - start:.0f} s)")
    return summary


def train_study(cfg: DemoConfig, spec, study_dir: str, phase: str, console: Console):
  jobs = pipeline.plan_study(spec, study_dir, phase)
  todo = sum(not pipeline.is_finished(j) for j in jobs)
  if todo < len(jobs):
    console.say(f"      {len(jobs) - todo} of {len(jobs)} runs already finished")
  report = pipeline.run_study(spec, study_dir, phase=phase, log=print,
                              run_one=RunPrinter(console, todo))
  for job, why in report.failed + report.blocked:
    console.say(f"      FAILED {describe_run(job)}: {why}")
  return report


def untrained_scores(cfg: DemoConfig, checkpoint: str, study_dir: str) -> dict[str, float]:
  """Validation accuracy of each target's untrained prompt (its baseline's step 0), cached."""
  from spot_jax.fileio import atomic_write_bytes
  path = os.path.join(cfg.output_dir, "untrained.json")
  cached = {}
  if os.path.exists(path):
    with open(path) as f:
      cached = json.load(f)
  scores = {}
  for target in cfg.targets:
    baseline = pipeline.study_run_dir(study_dir, "baseline", None, target, cfg.seeds[0])
    prompt = pipeline.prompt_path(baseline, 0)
    key = f"{target}@{checkpoint}@{cfg.eval_mode}@{cfg.eval_num_examples}"
    if key not in cached:
      cached[key] = pipeline.evaluate_prompt(
          prompt, task=target, model=cfg.model, checkpoint=checkpoint,
          batch_size=cfg.batch_size, prompt_length=cfg.prompt_length,
          num_examples=cfg.eval_num_examples, eval_mode=cfg.eval_mode)["accuracy"]
      atomic_write_bytes(path, json.dumps(cached, indent=2).encode())
    scores[target] = cached[key]
  return scores


def target_keys(cfg: DemoConfig, library, study_dir: str) -> dict[str, Any]:
  """{target: pipeline.Query}: each target's key is its baseline run's KEY_STEP prompt."""
  return {t: pipeline.target_query(
      library, run=pipeline.study_run_dir(study_dir, "baseline", None, t, cfg.seeds[0]))
      for t in cfg.targets}


# ------------------------------------------------------------- the affinity head's training set


def pool_spec(cfg: DemoConfig, checkpoint: str):
  """The study whose targets are the sources themselves: its source runs are the demo study's
  (same directory, same settings), its baselines the pool tasks' no-transfer runs, its
  transfers the N (N - 1) pool pairs (pool_stage runs only the sampled M)."""
  return dataclasses.replace(study_spec(cfg, checkpoint), name="demo_pool",
                             targets=tuple(cfg.sources))


def world_rule_pairs(sources: Sequence[str]) -> dict[tuple[str, str], str]:
  """{(source i, source j): kind} for the pool pairs the world's transfer rule is about
  (tasks.synthetic_world.RULE_COVERS, LOOKALIKES), in both directions: `harder -> easier`,
  `easier -> harder`, `lookalike`."""
  from tasks import synthetic_world
  by_name = {_task_name(s): s for s in sources}
  out = {}
  for pairs, kinds in ((synthetic_world.RULE_COVERS, ("harder -> easier", "easier -> harder")),
                       (synthetic_world.LOOKALIKES, ("lookalike", "lookalike"))):
    for a, b in pairs:
      if a in by_name and b in by_name:
        out[(by_name[a], by_name[b])] = kinds[0]
        out[(by_name[b], by_name[a])] = kinds[1]
  return out


def pool_stage(cfg: DemoConfig, checkpoint: str, study_dir: str, console: Console
               ) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
  """Trains each source's no-transfer baseline, the M sampled source -> source transfers and
  the world-rule probes (`world_rule_pairs` not sampled: measured for the report, never
  trained on) in runs/baseline/<source>/, runs/transfer/<source i>/<source j>/; finished runs
  are skipped. Returns ({sampled pair: gain}, {probe pair: gain}), gain = transfer minus
  baseline (means over seeds)."""
  # The paper's draw (Feng et al. 2023, §3.2), shared with pool-pair studies.
  sampled = set(pipeline.sample_pool_pairs(cfg.sources, cfg.pool_num_pairs,
                                           cfg.pool_pairs_seed))
  wanted = sampled | (set(world_rule_pairs(cfg.sources)) if cfg.world_rule_probes else set())
  jobs = [j for j in pipeline.plan_study(pool_spec(cfg, checkpoint), study_dir)
          if j.kind == "baseline" or (j.kind == "transfer" and (j.source, j.target) in wanted)]
  todo = sum(not pipeline.is_finished(j) for j in jobs)
  if todo < len(jobs):
    console.say(f"      {len(jobs) - todo} of {len(jobs)} runs already finished")
  execution = pipeline.train_runs(jobs, log_dir=os.path.join(study_dir, "logs"), log=print,
                                  run_one=RunPrinter(console, todo),
                                  job_dir=pipeline.study_jobs_dir(study_dir))
  for job, why in execution.failed + execution.blocked:
    raise RuntimeError(f"pool run {describe_run(job)} failed: {why}")
  scores: dict[tuple[str | None, str], list[float]] = {}
  for job in jobs:
    scores.setdefault((job.source, job.target), []).append(pipeline.finished_score(job))
  gains = {(s, t): float(np.mean(v)) - float(np.mean(scores[(None, t)]))
           for (s, t), v in scores.items() if s is not None}
  return ({p: g for p, g in gains.items() if p in sampled},
          {p: g for p, g in gains.items() if p not in sampled})


def world_rule_table(cfg: DemoConfig, sampled: Mapping[tuple[str, str], float],
                     probes: Mapping[tuple[str, str], float]) -> list[dict[str, Any]]:
  """The world-rule pairs' measured gains (report section "The world's transfer rule")."""
  gains = {**probes, **sampled}
  return [{"source": s, "target": t, "kind": kind, "gain": gains.get((s, t)),
           "reverse_gain": gains.get((t, s)), "trained_on": (s, t) in sampled}
          for (s, t), kind in world_rule_pairs(cfg.sources).items() if (s, t) in gains]


def affinity_stage(cfg: DemoConfig, study_dir: str, results_csv: str,
                   pool_gains: Mapping[tuple[str, str], float], out_dir: str,
                   console: Console) -> tuple[dict[str, Any], dict[str, Any]]:
  """The AFFINITY_HEAD scorers: `cfg.affinity_seeds` light heads trained on the pool pairs'
  gains only (spot_jax.affinity.folds.train_held_out_heads with the held-out targets as one
  fold: their pairs are never trained on, and with no validation nothing is selected on them),
  in OUT_DIR/<targets>/seed_<s>/, reused on a rerun. Keys: the KEY_STEP prompts of the
  study's source and baseline runs. Returns ({AFFINITY_HEAD/seed_<s>: a scorer per seed},
  what was trained, for the report)."""
  if cfg.affinity is None:
    raise ValueError(f"The ranking method {AFFINITY_HEAD!r} needs its head config: bind "
                     "DemoConfig.affinity = @AffinityConfig() (gin_configs/demo.gin includes "
                     "affinity/light.gin)")
  if not pool_gains:
    raise ValueError(f"The ranking method {AFFINITY_HEAD!r} trains on pool pairs: set "
                     "DemoConfig.pool_num_pairs >= 1")
  start = time.perf_counter()
  # The targets' gains only label the fold's (unused) validation pairs.
  gains = {**pipeline.study_gains(results_csv, study_dir), **pool_gains}
  cfg_all = dataclasses.replace(cfg.affinity, num_pairs=None)  # every one of the M pairs.
  heads = pipeline.held_out_heads(cfg_all, gains, study_dir, out_dir, cfg.affinity_seeds,
                                  held_out=cfg.targets)
  scorers = {f"{AFFINITY_HEAD}/seed_{h.record['config']['seed']}":
             pipeline.head_scorer(h, AFFINITY_HEAD) for h in heads}
  trained_on = sorted({tuple(p) for h in heads for p in h.record["train_pairs"]})
  info = {"variant": cfg.affinity.variant, "seeds": list(cfg.affinity_seeds),
          "train_steps": cfg.affinity.train_steps, "train_pairs": len(trained_on),
          "pairs": [list(p) for p in trained_on],
          "pool_pairs_seed": cfg.pool_pairs_seed, "held_out_targets": list(cfg.targets),
          "pool_gains": {f"{s}->{t}": g for (s, t), g in sorted(pool_gains.items())},
          "seconds": round(time.perf_counter() - start, 1)}
  console.say(f"      affinity head: {len(heads)} seeds on {len(trained_on)} pool pairs "
              f"(source -> source), none touching the {len(cfg.targets)} targets "
              f"({info['seconds']:.0f} s)")
  return scorers, info


def rank_stage(cfg: DemoConfig, library, queries: Mapping[str, Any], results_csv: str,
               out_dir: str, learned: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Ranks the sources of every target with every method (`learned`: {method: scorer object}
  for methods that are no scorer name; they rate the raw keys, never centred), writes
  predictions/<method>.csv and evaluates each ranking (and the expected random ranking)
  against the ground truth."""
  from spot_jax.fileio import atomic_write_bytes
  os.makedirs(out_dir, exist_ok=True)
  learned = learned or {}
  rankings = {}
  methods = [m for m in cfg.ranking_methods if m != AFFINITY_HEAD]
  methods += [m for m in learned if m.startswith(f"{AFFINITY_HEAD}/")]
  for method in methods:
    rows = ["target,source,score"]
    for target, query in queries.items():
      ranked = pipeline.rank_sources(library, query, scorer=learned.get(method, method),
                                     exclude_task=target, by_task=True,
                                     center_keys=cfg.center_keys and method not in learned)
      body = pipeline.predictions_csv(target, ranked).decode().splitlines()[1:]
      rows += body
    path = os.path.join(out_dir, f"{method.replace('/', '_')}.csv")
    atomic_write_bytes(path, ("\n".join(rows) + "\n").encode())
    rankings[method] = pipeline.evaluate_rankings(results_csv, predictions=path,
                                                  k_max=len(cfg.sources))
  rankings["random"] = pipeline.evaluate_rankings(results_csv, baseline="random",
                                                  k_max=len(cfg.sources))
  return rankings


def similarity_stage(cfg: DemoConfig, library, queries: Mapping[str, Any], path: str,
                     metric: str = "cosine") -> tuple[list[str], Any]:
  """Task x task similarity of the source keys (library) and target keys (baselines), CSV."""
  return pipeline.key_similarity(library, queries, metric, path, center_keys=cfg.center_keys)


def strategy_stage(cfg: DemoConfig, checkpoint: str, library, queries: Mapping[str, Any],
                   out_dir: str, console: Console) -> dict[str, dict[str, Any]]:
  """TOP-k WEIGHTED AVERAGE and TOP-k MULTI-TASK MIXTURE per target (trained here), ranked by
  `strategy_method`; BEST OF TOP-k is read off the transfer matrix by the report."""
  gin_files, bindings = pipeline.study_run_config(study_spec(cfg, checkpoint),
                                                  seed=cfg.seeds[0],
                                                  train_steps=cfg.target_steps)
  trained = [s for s in cfg.strategies if s != "best_of_top_k"]
  plans = []
  for target, query in queries.items():
    ranked = pipeline.rank_sources(library, query, scorer=cfg.strategy_method,
                                   exclude_task=target, center_keys=cfg.center_keys,
                                   by_task=True)
    for strategy in trained:
      plans.append((target, strategy, pipeline.plan_transfer(
          strategy, ranked, library, target=target, k=min(cfg.top_k, len(ranked)),
          out_dir=os.path.join(out_dir, _task_name(target), strategy),
          source_steps=cfg.mixture_source_steps or cfg.source_steps,
          metric=cfg.strategy_method,
          query=query.description, gin_files=gin_files, gin_bindings=bindings)))
  todo = sum(not pipeline.is_finished(r) for _, _, p in plans for r in p.runs)
  printer = RunPrinter(console, todo)
  results: dict[str, dict[str, Any]] = {}
  for target, strategy, plan in plans:
    def describe(run, target=target, strategy=strategy):
      role = "mixture source" if run.kind == "source" else strategy.replace("_", " ")
      return f"{role} -> {_task_name(target)}"
    result = pipeline.run_transfer(plan, log=print,
                                   run_one=lambda run, d=describe: printer(run, d))
    for run in result.runs:  # the console names every run without a result.
      if run["status"] in ("failed", "blocked"):
        console.say(f"      FAILED {strategy.replace('_', ' ')} -> {_task_name(target)} "
                    f"({run['name']}): {run['status']}, no result (see demo.log)")
    results.setdefault(target, {})[strategy] = {
        "retrieved": [r["task"] for r in plan.retrieved], "alphas": plan.alphas,
        "best": result.best, "runs": [{k: r[k] for k in ("name", "status", "best_score")}
                                      for r in result.runs]}
  return results


# ----------------------------------------------------------------------------- the demo


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict[str, Any]:
  """Runs (or resumes) every stage; returns results.json's content."""
  console = console or Console()
  from spot_jax.app import demo_report
  out = os.path.abspath(cfg.output_dir)
  cfg = dataclasses.replace(cfg, output_dir=out)
  start = time.perf_counter()
  timings: dict[str, float] = {}

  def stage(number: int, text: str) -> None:
    timings_key = f"stage_{number}"
    timings[timings_key] = time.perf_counter()
    console.say(f"[{number}/{NUM_STAGES}] {text}")

  with quiet_libraries(os.path.join(out, "demo.log")):
    # Every run has the same shapes: each run after the first (and every rerun) loads its
    # executables from the cache instead of compiling them.
    runtime.enable_compilation_cache(os.path.join(out, "xla_cache"))
    from tasks.lookup import register_all_tasks
    register_all_tasks()
    stage(1, f"The tiny frozen model, pretrained on the synthetic world "
             f"({cfg.pretrain_steps} steps)")
    checkpoint = pretrain_stage(cfg, console)
    spec = study_spec(cfg, checkpoint)
    study_dir = os.path.join(out, "study")
    stage(2, f"Tuning {len(cfg.sources)} source prompts ({cfg.source_steps} steps) -> "
             "prompt library")
    train_study(cfg, spec, study_dir, "sources", console)
    stage(3, f"{len(cfg.targets)} held-out targets: baselines and the {len(cfg.sources)} x "
             f"{len(cfg.targets)} transfer matrix ({cfg.target_steps} steps each)")
    train_study(cfg, spec, study_dir, "baselines", console)
    train_study(cfg, spec, study_dir, "transfers", console)
    pool_gains, probe_gains = {}, {}
    if cfg.pool_num_pairs:
      console.say(f"      the head's training set: {len(cfg.sources)} source baselines and "
                  f"{cfg.pool_num_pairs} source -> source transfers sampled in the pool "
                  "(plus the world-rule pairs, measured for the report)")
      pool_gains, probe_gains = pool_stage(cfg, checkpoint, study_dir, console)
    untrained = untrained_scores(cfg, checkpoint, study_dir)
    stage(4, f"Embedding the targets and ranking the sources ({len(cfg.ranking_methods)} "
             "methods)")
    library = pipeline.study_library(spec, study_dir)
    queries = target_keys(cfg, library, study_dir)
    results_csv = pipeline.study_results_csv(study_dir)
    learned, affinity = {}, None
    if AFFINITY_HEAD in cfg.ranking_methods:
      learned, affinity = affinity_stage(cfg, study_dir, results_csv, pool_gains,
                                         os.path.join(out, "affinity"), console)
    rankings = rank_stage(cfg, library, queries, results_csv, os.path.join(out, "predictions"),
                          learned)
    similarity_csv = os.path.join(out, "task_similarity.csv")
    similarity_stage(cfg, library, queries, similarity_csv)
    stage(5, f"Transfer strategies with the top-{cfg.top_k} sources "
             f"({', '.join(cfg.strategies)})")
    strategies = strategy_stage(cfg, checkpoint, library, queries,
                                os.path.join(out, "strategies"), console)
    stage(6, "Analysis and report")
    analysis_dir = os.path.join(out, "analysis")
    summary = pipeline.analyse(results_csv, analysis_dir, similarity_csv_path=similarity_csv)
    data = demo_report.collect(cfg, checkpoint=checkpoint, study_dir=study_dir,
                               untrained=untrained, rankings=rankings, strategies=strategies,
                               analysis=summary, analysis_dir=analysis_dir, affinity=affinity,
                               world_rule=world_rule_table(cfg, pool_gains, probe_gains),
                               families={t: family(t) for t in (*cfg.sources, *cfg.targets)})
    data["seconds"] = round(time.perf_counter() - start, 1)
    paths = demo_report.write(data, out)
  for line in demo_report.headline(data, paths):
    console.say(line)
  return data
