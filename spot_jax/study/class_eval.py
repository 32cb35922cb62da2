"""TuPaTE's in-class and all-class evaluation (Zhou et al. 2022, §4.1, Tables 2 and 4).

The pool is split into task classes (classification/regression `CR` and question answering
`QA`, `tasks.registry.TUPATE_CR` / `TUPATE_QA`). For the targets of one class:
  in-class    the candidate sources are the other tasks of the same class (CR -> CR, QA -> QA);
  all-class   every other task of the pool (21 sources for the 22-task pool).
Each method's ranking is scored with the paper's two metrics, averaged over the class's
targets: the average rank rho of the best source (lower is better) and NDCG (higher is better),
both as `spot_jax.study.ranking` defines them. `table` lays the numbers out as Table 2 (one row
per method, per class the in-class and all-class rho and NDCG); Table 4's early-versus-best
comparison is the same table with a row per (method, checkpoint) label.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from spot_jax.study import ranking
from spot_jax.study.results import BASELINE, Aggregate

SCOPES = ("in-class", "all-class")



def subset(table: Aggregate, targets: Sequence[str], sources: Sequence[str]) -> Aggregate:
  """`table` restricted to `targets` and to the candidate `sources` (and `none`)."""
  keep_s = [i for i, s in enumerate(table.sources) if s == BASELINE or s in set(sources)]
  keep_t = [j for j, t in enumerate(table.targets) if t in set(targets)]
  if not keep_t:
    raise ranking.RankingError(f"None of the targets {list(targets)} is in the results")
  pick = np.ix_(keep_s, keep_t)
  return Aggregate(sources=[table.sources[i] for i in keep_s],
                   targets=[table.targets[j] for j in keep_t], mean=table.mean[pick],
                   std=table.std[pick], count=table.count[pick])


@dataclasses.dataclass(frozen=True)
class ClassScore:
  method: str
  task_class: str
  scope: str
  rho: float
  ndcg: float
  num_targets: int


def evaluate_classes(table: Aggregate,
                     predictions: Mapping[str, Mapping[str, Mapping[str, float]] | None],
                     classes: Mapping[str, Sequence[str]]) -> list[ClassScore]:
  """For every method (its {target: {source: score}}, or None for the expected random
  ranking), class and scope: the averages of rho and NDCG over the class's targets (classes
  with no target in the results are left out)."""
  pool = [task for members in classes.values() for task in members]
  present = {name: members for name, members in classes.items()
             if set(members) & set(table.targets)}
  if not present:
    raise ranking.RankingError(f"None of the targets of the classes {sorted(classes)} is in "
                               "the results")
  out = []
  for method, predicted in predictions.items():
    for name, members in present.items():  # a class without targets in the results is skipped.
      for scope, candidates in (("in-class", members), ("all-class", pool)):
        part = subset(table, members, candidates)
        restricted = None if predicted is None else {
            t: {s: v for s, v in predicted.get(t, {}).items() if s in set(candidates)}
            for t in part.targets}
        report = ranking.evaluate(part, method, restricted, where=f"{method} predictions")
        out.append(ClassScore(method, name, scope, float(report["average"]["rho"]),
                              float(report["average"]["ndcg"]), len(report["targets"])))
  return out


def table(scores: Sequence[ClassScore], classes: Sequence[str]) -> list[list[str]]:
  """Rows of Table 2's layout: method, then per class in-class rho, NDCG, all-class rho, NDCG
  (NDCG in percent, as the paper prints it)."""
  header = ["method"] + [f"{c} {scope} {metric}" for c in classes for scope in SCOPES
                         for metric in ("rho", "NDCG")]
  by = {(s.method, s.task_class, s.scope): s for s in scores}
  rows = [header]
  for method in dict.fromkeys(s.method for s in scores):
    row = [method]
    for c in classes:
      for scope in SCOPES:
        cell = by.get((method, c, scope))
        row += ["-", "-"] if cell is None else [f"{cell.rho:.1f}", f"{100 * cell.ndcg:.1f}"]
    rows.append(row)
  return rows


def markdown(rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
  lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
  return "\n".join(lines) + "\n"


def tupate_classes() -> dict[str, tuple[str, ...]]:
  """TuPaTE's two classes of the 22-task pool (Appendix A)."""
  from tasks import registry
  return {"CR": registry.TUPATE_CR, "QA": registry.TUPATE_QA}


def as_json(scores: Sequence[ClassScore]) -> list[dict[str, Any]]:
  return [dataclasses.asdict(s) for s in scores]
