"""Transfer from retrieved library entries (SPoT §3.3, targeted SPoT), for every method.

Three strategies turn the top-k retrieved entries into target runs of the normal trainer:

  best_of_top_k     k target runs, each initialised from one retrieved value; keep the best
                    by validation score.
  weighted_average  one target run initialised from sum_r alpha_r value_r with
                    alpha_r = sim_r / sum_r sim_r (SPoT's top-k weighted average; for
                    non-prompt methods every trainable leaf is averaged so).
  mixture           a source run of the same method on the retrieval mixture (the top-k tasks
                    + the target, examples-proportional), then a target run initialised from
                    its final checkpoint.

The target runs train the entries' method (the gin config must select it, e.g.
--gin_file=methods/lora.gin). `prompt` and `prompt_encoder` entries start their runs from a
prompt file (PROMPT_INIT 'file', PROMPT_FILE); every other method's runs start from a numpy
checkpoint directory of its trainables (TrainConfig.init_from).

`plan_transfer` only decides (runs as `spot_jax.runs.spec.RunSpec`s, initial prompts, files);
`run_transfer` writes the initial prompts and OUT_DIR/transfer.json, then trains the runs with
the one run executor (`spot_jax.runs.execute.execute`: in-process exactly as `spot-jax train`, or
through a launch script), skipping finished runs, so an interrupted transfer resumes. Layout:

  OUT_DIR/transfer.json         strategy, query, metric, retrieved entries and similarities,
                                alphas, runs with their status and scores, the best run
  OUT_DIR/init/<id>.npy         initial prompts [L, embed] (weighted_average.npy)
  OUT_DIR/init/<id>/<dotted.path>  initial trainables of other methods (weighted_average/)
  OUT_DIR/runs/<name>/          each run's MODEL_DIR
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from spot_jax import macros, methods
from spot_jax.runs import commands
from spot_jax.runs import execute as executor
from spot_jax.runs import spec as run_spec
from spot_jax.runs.spec import RunSpec
from spot_jax.fileio import atomic_write_bytes
from spot_jax.gin_utils import gin_literal
from spot_jax.library.retrieval import Ranked
from spot_jax.library.formats import npy_bytes
from spot_jax.library.store import LibraryError, PromptLibrary
from spot_jax.train import run_dir

STRATEGIES = ("best_of_top_k", "weighted_average", "mixture")
TRANSFER_JSON = "transfer.json"
FROM_FILE_GIN = "prompts/from_file.gin"
TRAIN_GIN = "runs/prompt_train.gin"
# TrainConfig field -> the gin macro of runs/prompt_train.gin that sets it.
GIN_MACROS = {**{f: macros.gin_name(f) for f in ("model_dir", "task", "train_steps",
                                                  "prompt_init", "prompt_file")},
              "init_from": "TrainConfig.init_from"}
# Set per run by the plan, never by base_config.
PER_RUN_FIELDS = ("model_dir", "task", "prompt_init", "prompt_file", "init_from")


class TransferError(LibraryError):
  """A transfer that cannot be planned or run as asked."""


# ----------------------------------------------------------------------------- weighted average


def weighted_average_prompt(prompts: np.ndarray, similarities: np.ndarray) -> np.ndarray:
  """sum_r alpha_r prompts[r] with alpha_r = sim_r / sum_r sim_r: [k, L, E], [k] -> [L, E]."""
  prompts = np.asarray(prompts, np.float64)
  sims = np.asarray(similarities, np.float64)
  if prompts.ndim != 3 or sims.shape != (prompts.shape[0],) or not len(sims):
    raise TransferError(f"weighted_average_prompt needs prompts [k, L, E] and similarities [k]; "
                        f"got {prompts.shape} and {sims.shape}")
  if not np.all(np.isfinite(sims)) or np.any(sims < 0) or sims.sum() <= 0:
    raise TransferError(f"Scores {sims.tolist()} cannot weight an average: they must be "
                        "non-negative with a positive sum. Cosine similarities (more so with "
                        "centred keys) and predicted gains (affinity:PATH) can be negative: use "
                        "a distance-based metric (euclidean, manhattan: 1/(1+d) > 0), turn "
                        "centring off, or use best_of_top_k")
  return np.einsum("k,kle->le", sims / sims.sum(), prompts).astype(np.float32)


def weighted_average_tree(trees: Sequence[Mapping[str, np.ndarray]], similarities: np.ndarray
                          ) -> dict[str, np.ndarray]:
  """`weighted_average_prompt` of every leaf: k trees {dotted path: array} of one method and
  settings, [k] similarities -> one tree."""
  names = sorted(trees[0]) if len(trees) else []
  for tree in trees:
    if sorted(tree) != names or any(np.shape(tree[n]) != np.shape(trees[0][n]) for n in names):
      raise TransferError("The retrieved entries hold trainables of different names or shapes "
                          "(other method settings); they cannot be averaged: use best_of_top_k")
  return {n: weighted_average_prompt(np.stack([np.asarray(t[n]).reshape(1, -1) for t in trees]),
                                     similarities).reshape(np.shape(trees[0][n]))
          for n in names}


def alphas(similarities: Sequence[float]) -> list[float]:
  sims = np.asarray(similarities, np.float64)
  return (sims / sims.sum()).tolist()


# ----------------------------------------------------------------------------- plans


@dataclasses.dataclass
class TransferPlan:
  """What a transfer will do: its runs in order (`RunSpec`s: gin files and bindings, kind
  "target" or "source") and the initial prompts it writes first."""

  strategy: str
  target: str
  out_dir: str
  k: int
  metric: str
  query: dict[str, Any]
  retrieved: list[dict[str, Any]]
  runs: list[RunSpec]
  files: dict[str, np.ndarray]  # path -> prompt [L, E] or trainable written before the runs.
  entries: dict[str, list[str]]  # run name -> library ids it starts from.
  prompt_files: dict[str, str]  # run name -> its PROMPT_FILE (runs initialised from a file).
  alphas: list[float] | None = None
  mixture: str | None = None
  method: str = "prompt"  # the entries' (and every run's) method.
  init_dirs: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> init_from.

  @property
  def runs_by_name(self) -> dict[str, RunSpec]:
    return {run.name: run for run in self.runs}


def _values(library: PromptLibrary, ranked: Sequence[Ranked], prompt_length: int | None
            ) -> np.ndarray:
  values = np.stack([library.value(r.entry.id) for r in ranked])  # [k, L, E]
  if prompt_length is not None and values.shape[1] != prompt_length:
    raise TransferError(f"Retrieved prompts have length {values.shape[1]} but the target runs "
                        f"use prompt_length {prompt_length}; set PROMPT_LENGTH to "
                        f"{values.shape[1]}")
  return values


def plan_transfer(strategy: str, ranked: Sequence[Ranked], library: PromptLibrary, *,
                  target: str, out_dir: str, k: int,
                  base_config: Mapping[str, Any] | None = None, source_steps: int | None = None,
                  metric: str = "", query: Mapping[str, Any] | None = None,
                  gin_files: Sequence[str] = (), gin_bindings: Sequence[str] = (),
                  prompt_length: int | None = None, method: str | None = None) -> TransferPlan:
  """Plans a transfer from the top `k` of `ranked` (best first) to the task `target`.

  Every run is `spot-jax train` with `gin_files`, then `gin_bindings` ("MACRO = value"), then
  base_config (TrainConfig fields such as model, feature_lengths, train_steps, as
  `TrainConfig.<field> = value` bindings), then its own settings: the macros MODEL_DIR,
  MIXTURE_OR_TASK_NAME, PROMPT_INIT, PROMPT_FILE, TRAIN_STEPS of runs/prompt_train.gin, or,
  without gin files, the same TrainConfig fields directly. prompt_length
  (default base_config's) is checked against the retrieved prompts. source_steps: the length of
  the mixture strategy's source run (default: base_config's train_steps). method (default
  base_config's): the method the runs train, checked against the entries'.
  """
  if strategy not in STRATEGIES:
    raise TransferError(f"Unknown transfer strategy {strategy!r}; choose one of {STRATEGIES}")
  if k <= 0:
    raise TransferError(f"k must be positive, got {k}")
  top = list(ranked)[:k]
  if not top:
    raise TransferError("Nothing retrieved: the library holds no entries to transfer from")
  out_dir = os.path.abspath(out_dir)
  base = {key: v for key, v in (base_config or {}).items() if key not in PER_RUN_FIELDS}
  prompt_length = base.get("prompt_length") if prompt_length is None else prompt_length
  files = tuple(gin_files)
  shared = [*gin_bindings, *(f"TrainConfig.{key} = {gin_literal(v)}" for key, v in base.items())]
  retrieved = [{"rank": r.rank, "id": r.entry.id, "task": r.entry.task, "seed": r.entry.seed,
                "similarity": r.score} for r in top]
  identity = top[0].entry.model
  if any(r.entry.model != identity for r in top):
    raise TransferError("The retrieved entries belong to several frozen models or methods; "
                        "a transfer starts from one")
  method = base.get("method") if method is None else method
  # A prompt (a prompt encoder's output too) seeds any prompt-like method through PROMPT_FILE;
  # other methods' trainables fit only their own method.
  fits = methods.prompt_like_methods() if identity.is_prompt else (identity.method,)
  if method is not None and method not in fits:
    raise TransferError(f"The retrieved entries are {identity.method} runs but the target runs "
                        f"train {method!r}; select the entries' method in the runs' config "
                        f"(--gin_file=methods/{identity.method}.gin after runs/prompt_train.gin)")
  plan = TransferPlan(strategy, target, out_dir, k, metric, dict(query or {}), retrieved, [],
                      {}, {}, {}, method=identity.method)
  runs_dir, init_dir = os.path.join(out_dir, "runs"), os.path.join(out_dir, "init")

  def add_run(name: str, kind: str, overrides: dict[str, Any], entries: list[str],
              after: str | None = None) -> None:
    model_dir = os.path.join(runs_dir, name)
    macros = {"model_dir": model_dir, **overrides}
    from_file = files and macros.get("prompt_init") == "file"
    run_files = files + ((FROM_FILE_GIN,) if from_file else ())
    # Shared bindings first (their order kept), then the run's own settings.
    bindings = {}
    for binding in shared:
      macro, _, value = binding.partition("=")
      bindings[macro.strip()] = value.strip()
    for key, value in macros.items():  # the run's own setting wins over a shared one.
      bindings.pop(GIN_MACROS[key], None)
      bindings.pop(f"TrainConfig.{key}", None)
    for key, value in macros.items():
      bindings[GIN_MACROS[key] if files else f"TrainConfig.{key}"] = gin_literal(value)
    depends = (plan.runs_by_name[after].model_dir,) if after else ()
    plan.runs.append(RunSpec(name, model_dir, run_files, bindings, depends, kind=kind,
                             target=overrides["task"] if kind == "target" else None))
    plan.entries[name] = entries
    if "prompt_file" in overrides:
      plan.prompt_files[name] = overrides["prompt_file"]
    if "init_from" in overrides:
      plan.init_dirs[name] = overrides["init_from"]

  def target_run(name: str, start: str, entries: list[str], after: str | None = None) -> None:
    """A target run starting from `start`: a prompt file, or a trainables directory."""
    init = ({"prompt_init": "file", "prompt_file": start} if identity.is_prompt
            else {"init_from": start})
    add_run(name, "target", {"task": target, **init}, entries, after)

  if not identity.is_prompt:
    _plan_trees(plan, strategy, top, library, init_dir, target_run, add_run, base,
                source_steps)
    return plan
  if strategy == "best_of_top_k":
    for r, value in zip(top, _values(library, top, prompt_length)):
      path = os.path.join(init_dir, f"{r.entry.id}.npy")
      plan.files[path] = value
      target_run(r.entry.id, path, [r.entry.id])
  elif strategy == "weighted_average":
    values = _values(library, top, prompt_length)
    path = os.path.join(init_dir, "weighted_average.npy")
    plan.files[path] = weighted_average_prompt(values, [r.score for r in top])
    plan.alphas = alphas([r.score for r in top])
    target_run("weighted_average", path, [r.entry.id for r in top])
  else:
    from tasks.lookup import register_transfer_mixture
    plan.mixture = register_transfer_mixture([r.entry.task for r in top] + [target]).name
    steps = int(source_steps or base.get("train_steps") or 0)
    if steps <= 0:
      raise TransferError("The mixture strategy needs source_steps (--source_steps)")
    add_run("mixture_source", "source", {  # SPoT's source initialisation.
        "task": plan.mixture, "train_steps": steps, "prompt_init": "sampled_vocab"},
        [r.entry.id for r in top])
    source_dir = plan.runs_by_name["mixture_source"].model_dir
    target_run("mixture_target", run_dir.prompt_path(source_dir, steps), [],
               after="mixture_source")
  return plan


def _plan_trees(plan: TransferPlan, strategy: str, top: Sequence[Ranked], library: PromptLibrary,
                init_dir: str, target_run: Callable, add_run: Callable,
                base: Mapping[str, Any], source_steps: int | None) -> None:
  """The strategies for non-prompt entries: target runs with TrainConfig.init_from."""
  def write_tree(directory: str, tree: Mapping[str, np.ndarray]) -> str:
    for name, array in tree.items():
      plan.files[os.path.join(directory, name)] = array
    return directory

  if strategy == "best_of_top_k":
    for r in top:
      start = write_tree(os.path.join(init_dir, r.entry.id), library.value(r.entry.id))
      target_run(r.entry.id, start, [r.entry.id])
  elif strategy == "weighted_average":
    tree = weighted_average_tree([library.value(r.entry.id) for r in top],
                                 [r.score for r in top])
    plan.alphas = alphas([r.score for r in top])
    start = write_tree(os.path.join(init_dir, "weighted_average"), tree)
    target_run("weighted_average", start, [r.entry.id for r in top])
  else:
    from tasks.lookup import register_transfer_mixture
    plan.mixture = register_transfer_mixture([r.entry.task for r in top] + [plan.target]).name
    steps = int(source_steps or base.get("train_steps") or 0)
    if steps <= 0:
      raise TransferError("The mixture strategy needs source_steps (--source_steps)")
    add_run("mixture_source", "source", {"task": plan.mixture, "train_steps": steps},
            [r.entry.id for r in top])
    source_dir = plan.runs_by_name["mixture_source"].model_dir
    target_run("mixture_target", run_dir.checkpoint_dir(source_dir, steps), [],
               after="mixture_source")


# ----------------------------------------------------------------------------- running


@dataclasses.dataclass
class TransferResult:
  """Runs with their status ("finished", "skipped": finished before, "dry_run", "submitted",
  "failed", "blocked") and scores; `best` is the target run with the highest validation
  best_score."""

  plan: TransferPlan
  runs: list[dict[str, Any]]
  best: dict[str, Any] | None
  commands: list[list[str]]


def train_args(plan: TransferPlan, run: RunSpec) -> list[str]:
  """`spot-jax train` arguments of a run."""
  del plan
  return run.flags()


def _write_files(plan: TransferPlan) -> None:
  """Writes the initial prompts; refuses to replace different ones of an earlier transfer."""
  for path, array in plan.files.items():
    data = npy_bytes(np.asarray(array, np.float32))
    if os.path.exists(path):
      with open(path, "rb") as f:
        if f.read() == data:
          continue
      raise TransferError(f"{path} holds a different initial prompt (an earlier transfer with "
                          "other retrieved entries): use another --out_dir")
    atomic_write_bytes(path, data)


def _check_resumable(plan: TransferPlan) -> None:
  path = os.path.join(plan.out_dir, TRANSFER_JSON)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise TransferError(f"{path} is unreadable ({e}); use another --out_dir") from None
  new = _record(plan, [], None)
  diffs = [k for k in ("strategy", "target", "mixture") if old.get(k) != new[k]]
  if [r.get("id") for r in old.get("retrieved", [])] != [r["id"] for r in plan.retrieved]:
    diffs.append("retrieved entries")
  if diffs:
    raise TransferError(f"{plan.out_dir} holds another transfer (different {', '.join(diffs)}); "
                        "use another --out_dir")


def _record(plan: TransferPlan, runs: list[dict[str, Any]], best: dict[str, Any] | None
            ) -> dict[str, Any]:
  return {"strategy": plan.strategy, "target": plan.target, "method": plan.method, "k": plan.k,
          "metric": plan.metric,
          "query": plan.query, "retrieved": plan.retrieved, "alphas": plan.alphas,
          "mixture": plan.mixture, "runs": runs, "best": best}


def _write_record(plan: TransferPlan, runs: list[dict[str, Any]],
                  best: dict[str, Any] | None) -> None:
  data = json.dumps(_record(plan, runs, best), indent=2, sort_keys=True, default=float)
  atomic_write_bytes(os.path.join(plan.out_dir, TRANSFER_JSON), data.encode())


def _run_status(plan: TransferPlan, run: RunSpec, status: str, command: list[str]
                ) -> dict[str, Any]:
  row = {"name": run.name, "role": run.kind, "model_dir": run.model_dir,
         "task": run.target or plan.mixture, "prompt_file": plan.prompt_files.get(run.name),
         "init_from": plan.init_dirs.get(run.name), "entries": plan.entries[run.name],
         "status": status, "command": shlex.join(command),
         "best_step": None, "best_score": None, "eval_metric": None}
  summary = run_spec.read_finished(run.model_dir, run.train_steps)
  if status in ("finished", "skipped") and summary is not None:
    row.update(best_step=summary.best_step, best_score=summary.best_score,
               eval_metric=summary.eval_metric)
  return row


def run_transfer(plan: TransferPlan, *, launcher: str | None = None, dry_run: bool = False,
                 echo: Callable[[str], None] = print,
                 run_one: Callable[[RunSpec], Any] | None = None, pack: int = 1
                 ) -> TransferResult:
  """Writes the initial prompts and transfer.json, then trains the plan's runs in order with
  the run executor (`spot_jax.runs.execute.execute`).

  launcher None trains in-process; otherwise each run is the launch script's command (slurm:
  submitted with sbatch; the mixture target waits for its source job). Finished runs are skipped.
  dry_run echoes the commands instead of training (the prompts and transfer.json are still
  written, so the printed commands can be run as they are). run_one: how a run trains in this
  process (default `spot_jax.runs.in_process.train_spec`). pack: best_of_top_k's k target runs train
  together in jobs of up to `pack` runs (`spot_jax.runs.packing.pack_jobs`; job files in
  OUT_DIR/jobs).
  """
  _check_resumable(plan)
  _write_files(plan)
  _write_record(plan, [], None)
  for run in plan.runs:
    if run_spec.is_finished(run):
      echo(f"skip {run.name}: {run.model_dir} is finished")
  try:
    execution = executor.execute(plan.runs, launcher=launcher, dry_run=dry_run, log=echo,
                                 run_one=run_one, pack=pack,
                                 job_dir=os.path.join(plan.out_dir, "jobs"))
  except ValueError as e:
    raise TransferError(str(e)) from None
  rows, command_lines = [], []
  for run in plan.runs:
    command = execution.commands.get(run.name) or commands.launch_command(run, launcher)
    command_lines.append(command)
    rows.append(_run_status(plan, run, execution.status(run), command))
  for run, why in execution.failed + execution.blocked:
    echo(f"{execution.status(run).upper()} {run.name}: {why}")
  best = best_run(rows)
  _write_record(plan, rows, best)
  return TransferResult(plan, rows, best, command_lines)


def best_run(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
  """The target run with the highest best_score (the first on ties); None when none scored."""
  scored = [r for r in rows if r["role"] == "target" and r["best_score"] is not None]
  if not scored:
    return None
  best = max(scored, key=lambda r: r["best_score"])
  return {"name": best["name"], "model_dir": best["model_dir"], "best_step": best["best_step"],
          "best_score": best["best_score"], "eval_metric": best["eval_metric"]}
