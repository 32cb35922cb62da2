"""The learned-affinity experiments behind `spot-jax affinity`: inputs with their key check,
family and size lookups, target splits, cross-validated / pool / split head training, the
comparison of trained heads with the other scorers, and the ablations. The CLI parses the
arguments, calls these and prints what they return.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

from spot_jax.affinity import data as data_lib
from spot_jax.affinity import folds as folds_lib
from spot_jax.affinity import train as train_lib
from spot_jax.study import affinity_eval, affinity_intervals, results

LEAVE_ONE_OUT = 0  # fold count meaning one fold per target (an explicit K must be >= 2).


def load_inputs(results_path: str, *, library: str | None, study_dir: str | None,
                model: str | None, cfg=None) -> affinity_eval.Inputs:
  """The results and keys; with a head config `cfg`, checks up front that the keys fit it."""
  inputs = affinity_eval.load_inputs(results_path, library=library, study_dir=study_dir,
                                     model=model)
  if cfg is not None and cfg.variant == "encoder" and inputs.task_keys:
    from spot_jax.affinity import model as model_lib
    from spot_jax.models.config import get_config
    head = model_lib.make_head(cfg.variant, cfg.hidden_dim, get_config(cfg.model))
    model_lib.check_key_dim(head, next(iter(inputs.task_keys.values())).shape[-1])
  return inputs


def family_lookup(families_path: str | None, spec=None) -> Callable[[str], str]:
  """task -> family: from a CSV task,family when given, else the spec's or the defaults."""
  if not families_path:
    return spec.family_of if spec is not None and spec.families else data_lib.task_family
  _, rows = results.read_csv_rows(families_path, ("task", "family"), "a families table")
  table = {row["task"]: row["family"] for _, row in rows}
  def family_of(task: str) -> str:
    if task not in table:
      raise ValueError(f"{families_path}: no family for task {task!r}; add a row {task},FAMILY")
    return table[task]
  return family_of


def size_lookup(sizes_path: str | None) -> Callable[[str], float]:
  """task -> training size: from a CSV when given, else the task registry's."""
  from spot_jax.study import ranking
  if sizes_path is None:
    return ranking.registry_train_size
  sizes = results.read_sizes(sizes_path)
  def size_of(task: str) -> float:
    if task not in sizes:
      raise ValueError(f"{sizes_path}: no size for source {task!r}; add a row {task},SIZE")
    return sizes[task]
  return size_of


def family_split(inputs, families: str | Sequence[str],
                 family_of: Callable[[str], str]) -> tuple[list[str], list[str]]:
  """(held-out targets of `families`, tasks of `families` to exclude from training)."""
  families = [families] if isinstance(families, str) else families
  targets = sorted({t for _, t in inputs.gains})
  held = sorted({t for f in families for t in data_lib.family_targets(targets, f, family_of)})
  tasks = sorted(inputs.task_keys)
  return held, [t for t in tasks if family_of(t) in families]


def cross_validate(cfg, inputs, out: str, seeds: Sequence[int],
                   fold_count: int) -> list[dict]:
  """Trains one set of heads per fold of targets (`LEAVE_ONE_OUT`: one fold per target) under
  `out`; returns the folds as written (held_out, dir, train_pairs)."""
  targets = sorted({t for _, t in inputs.gains})
  folds = (None if fold_count == LEAVE_ONE_OUT
           else data_lib.target_folds(targets, fold_count, cfg.split_seed))
  folds_lib.train_held_out_heads(cfg, inputs.gains, inputs.task_keys, out, seeds, folds,
                                 log=True)
  return folds_lib.read_folds(out)["folds"]


def train_pool(cfg, inputs, spec_path: str, out: str, seeds: Sequence[int],
               leave_family_out: Sequence[str] = (), families_path: str | None = None):
  """Heads on the spec's pool pairs, its targets held out as novel; returns (config used,
  summary, pool tasks excluded)."""
  from spot_jax.study.spec import load_spec
  spec = load_spec(spec_path, check_tasks=False)
  cfg = spec.affinity_config(cfg)
  novel, exclude = list(spec.targets), []
  if leave_family_out:
    novel, exclude = data_lib.leave_families_out(spec.sources, spec.targets, leave_family_out,
                                                 family_lookup(families_path, spec))
  summary = train_lib.train_pool_heads(cfg, inputs.gains, inputs.task_keys, out, seeds, novel,
                                       exclude=exclude)
  return cfg, summary, exclude


def train_split(cfg, inputs, out: str, seeds: Sequence[int],
                val_targets: Sequence[str] | None = None,
                leave_family_out: Sequence[str] = (), families_path: str | None = None) -> dict:
  """Heads validated on `val_targets` (or the held-out targets of `leave_family_out`, whose
  tasks are then excluded); returns the training summary."""
  exclude: Sequence[str] = ()
  if leave_family_out:
    val_targets, exclude = family_split(inputs, leave_family_out, family_lookup(families_path))
  return train_lib.train_seeds(cfg, inputs.gains, inputs.task_keys, out, seeds,
                               val_targets=val_targets, exclude=exclude)


@dataclasses.dataclass
class HeadEvaluation:
  """Trained heads against the other scorers on `targets` (`rows` in `columns`), with the
  paper's Table 1 (`table1_header`, `table1`) and Figure 3 rows and notes for the reader."""
  targets: list[str]
  fold_count: int | None  # folds when cross-validated, else None.
  rows: list[dict]
  columns: tuple
  table1_header: list[str]
  table1: list
  figure3: list[dict]
  notes: list[str]
  head: str  # the head's row: the mean over seeds when there are several, else its only row.
  intervals: list[dict] = dataclasses.field(default_factory=list)  # `bootstrap` > 0 only:
  paired: list[dict] = dataclasses.field(default_factory=list)  # spot_jax.study.affinity_intervals.
  resamples: int = 0


def evaluate_heads(inputs, head_dirs: Sequence[str], targets: Sequence[str] | None = None,
                   ndcg_relevance: str | None = None, sizes_path: str | None = None,
                   extra_scorers: Sequence[str] = (), bootstrap: int = 0,
                   paired_with: Sequence[str] | None = None) -> HeadEvaluation:
  """Scores the heads in `head_dirs` (a cross-validated directory scores each target by the
  fold that held it out) next to the similarity, max_pairwise, data_size, `extra_scorers` (by
  name, e.g. textemb:CHECKPOINT) and random scorers. `bootstrap` > 0 adds 95% intervals over
  the targets and the head's paired per-target differences against `paired_with` (default
  every other scorer), with that many resamples."""
  from spot_jax.affinity.predict import HeadScorer, held_out_folds, load_folds, selected_on
  from spot_jax.library import scorers
  relevance = ndcg_relevance or "rank"
  columns = (*affinity_eval.COLUMNS, *([affinity_eval.NDCG] if ndcg_relevance else []))
  notes = []
  folds, cross_validated = load_folds(head_dirs)
  heads = folds[0]
  if cross_validated:
    scorer = held_out_folds(folds, "affinity")
    targets = targets or sorted(scorer.by_target)
    per_seed_scorers = ([held_out_folds([f[i:i + 1] for f in folds], "affinity")
                         for i in range(len(heads))]
                        if len({len(f) for f in folds}) == 1 else [])
  else:
    scorer = HeadScorer(heads, "affinity")
    targets = targets or heads[0].record.get("val_targets")
    if any(h.record.get("val_targets") != heads[0].record.get("val_targets") for h in heads):
      notes.append("the heads were validated on different targets")
    per_seed_scorers = [HeadScorer([h], "affinity") for h in heads]
  if not targets:
    raise ValueError(f"{head_dirs[0]} records no held-out targets; pass --targets")
  named: dict = {}
  if len(per_seed_scorers) > 1:
    per_seed = [affinity_eval.compare(inputs, {"affinity": s}, targets, relevance)
                for s in per_seed_scorers]
    seed_row = affinity_eval.seed_rows(per_seed, "affinity")
  named["affinity (ensemble)" if len(heads) > 1 else "affinity"] = scorer
  for name in (*scorers.SIMILARITY_SCORERS, "max_pairwise"):
    named[name] = scorers.get_scorer(name)
  size_of = size_lookup(sizes_path)
  try:
    for source in inputs.sources:
      size_of(source)
    named["data_size"] = scorers.get_scorer("data_size", size_of=size_of)
  except ValueError as e:  # sizes unknown for a source: the table goes on without data_size.
    notes.append(f"data_size left out ({e})")
  for spec in extra_scorers:
    label = scorers.short_name(spec)
    if label in named:
      raise ValueError(f"Scorer {spec}: a scorer named {label!r} is already in the table")
    named[label] = scorers.get_scorer(spec)
  named["random (expected)"] = None
  rows = affinity_eval.compare(inputs, named, targets, relevance)
  if len(per_seed_scorers) > 1:
    rows.insert(1, seed_row)
  head = rows[1 if len(per_seed_scorers) > 1 else 0]["method"]
  intervals, paired = [], []
  if bootstrap:
    intervals = affinity_intervals.intervals(rows, resamples=bootstrap)
    paired = affinity_intervals.paired(rows, head, paired_with, resamples=bootstrap)
  selected = selected_on([h for fold in folds for h in fold], targets)
  if selected:
    notes.append(f"the heads were selected (early stopping, best step) on the validation "
                 f"Spearman of {', '.join(selected)}, the targets evaluated here, so the "
                 "affinity rows are optimistic; for a clean estimate train with `spot-jax "
                 "affinity train --cross_validate` and evaluate that directory")
  header, table1 = affinity_eval.table1_rows(rows)
  return HeadEvaluation(targets=list(targets), fold_count=len(folds) if cross_validated else None,
                        rows=rows, columns=columns, table1_header=header, table1=table1,
                        figure3=affinity_eval.figure3_rows(rows), notes=notes, head=head,
                        intervals=intervals, paired=paired, resamples=bootstrap)


def write_evaluation(out: str, evaluation: HeadEvaluation) -> list[str]:
  """Writes `out` (the comparison) and its _table1 / _figure3 CSVs next to it; returns the
  paths."""
  stem = os.path.splitext(out)[0]
  paths = [out, f"{stem}_table1.csv", f"{stem}_figure3.csv"]
  affinity_eval.write_rows(paths[0], evaluation.rows, evaluation.columns)
  results.write_csv(paths[1], evaluation.table1_header, evaluation.table1)
  affinity_eval.write_rows(paths[2], evaluation.figure3, affinity_eval.FIGURE3_COLUMNS)
  for name, table in (("intervals", evaluation.intervals), ("paired", evaluation.paired)):
    if table:  # --bootstrap: OUT_intervals.csv, OUT_paired.csv.
      paths.append(f"{stem}_{name}.csv")
      results.write_csv(paths[-1], list(table[0]), [list(r.values()) for r in table])
  return paths
