"""TuPaTE's Table 3 (Zhou et al., EMNLP 2022, §4.5): does a method's in-task performance go with
the quality of its transferability predictions?

Each method (prefix, LoRA, bias...) is tuned under several configurations (the paper: 5 random
combinations of learning rate and seed). A configuration gives
  performance  the mean in-task score of its tuned runs (the baselines, source `none`, of its
               embedding study's results.csv: per task the mean over seeds, then the mean over
               the evaluated tasks), and
  rho, NDCG    its ranking's quality against the ground-truth transfer (`ranking.evaluate`,
               averaged over targets; optionally in-class, as the paper's CR analysis).
Per method, Table 3 gives delta rho and delta NDCG (the configuration with the highest
performance minus the one with the lowest) and the Pearson correlation of NDCG with
performance over the configurations.

Configurations CSV (`method,configuration,performance,predictions`): `performance` a results.csv
of the configuration's tuning, `predictions` its target,source,score predictions (relative
paths are read from the configurations file's directory).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from spot_jax.study import analysis, class_eval, ranking
from spot_jax.study.results import (BASELINE, Aggregate, Results, StudyTableError, aggregate,
                                    format_table, read_csv_rows, read_predictions,
                                    read_results, write_csv)

CONFIG_COLUMNS = ("method", "configuration", "performance", "predictions")
CONFIG_HEADER = ("method", "configuration", "performance", "rho", "ndcg")
TABLE_HEADER = ("method", "delta_rho", "delta_ndcg", "ndcg_performance_pearson",
                "configurations")


@dataclasses.dataclass(frozen=True)
class Configuration:
  method: str
  configuration: str
  performance: float  # mean in-task score, 0-100.
  rho: float
  ndcg: float  # percent, as the paper prints it.


@dataclasses.dataclass(frozen=True)
class MethodRow:
  method: str
  delta_rho: float
  delta_ndcg: float
  pearson: float  # NaN when undefined (fewer than 2 configurations, constant values).
  configurations: int


def in_task_performance(results: Results, tasks: Sequence[str]) -> float:
  """Mean over `tasks` of each task's mean baseline score over seeds."""
  table = aggregate(results)
  if BASELINE not in table.sources:
    raise StudyTableError(f"{results.path}: no `none` rows; the in-task performance is the "
                          "score of each task tuned alone (its baseline runs)")
  row = table.mean[table.sources.index(BASELINE)]
  scores = {t: row[j] for j, t in enumerate(table.targets) if np.isfinite(row[j])}
  missing = sorted(set(tasks) - set(scores))
  if missing:
    raise StudyTableError(f"{results.path}: no baseline score for tasks {missing}; every "
                          "configuration must tune every evaluated task")
  return float(np.mean([scores[t] for t in tasks]))


def scope(truth: Aggregate, members: Sequence[str] | None) -> Aggregate:
  """The ground truth, or its in-class part (targets and candidate sources in `members`)."""
  return truth if members is None else class_eval.subset(truth, members, members)


def evaluate_configuration(truth: Aggregate, method: str, configuration: str,
                           performance: Results, predicted: dict) -> Configuration:
  report = ranking.evaluate(truth, f"{method}/{configuration}", predicted,
                            where=f"{method}/{configuration} predictions")
  tasks = sorted((set(truth.sources) - {BASELINE}) | set(truth.targets))
  return Configuration(method, configuration, in_task_performance(performance, tasks),
                       float(report["average"]["rho"]), 100 * float(report["average"]["ndcg"]))


def method_rows(configurations: Sequence[Configuration]) -> list[MethodRow]:
  """Table 3: per method, highest-minus-lowest performance deltas and the NDCG-performance
  Pearson correlation."""
  rows = []
  for method in dict.fromkeys(c.method for c in configurations):
    group = [c for c in configurations if c.method == method]
    perf = np.array([c.performance for c in group])
    best, worst = group[int(np.argmax(perf))], group[int(np.argmin(perf))]
    r, _, _ = analysis.correlation(np.array([c.ndcg for c in group]), perf)
    rows.append(MethodRow(method, best.rho - worst.rho, best.ndcg - worst.ndcg, r, len(group)))
  return rows


def read_configurations(path: str) -> list[tuple[str, str, str, str]]:
  """(method, configuration, performance CSV, predictions CSV) rows of a configurations CSV."""
  _, rows = read_csv_rows(path, CONFIG_COLUMNS, "a configurations table")
  if not rows:
    raise StudyTableError(f"{path}: no configuration rows below the header")
  base = os.path.dirname(os.path.abspath(path))
  out, seen = [], set()
  for line, row in rows:
    key = (row["method"], row["configuration"])
    if key in seen:
      raise StudyTableError(f"{path}, line {line}: {key[0]}/{key[1]} is listed twice")
    seen.add(key)
    out.append((*key, *(os.path.join(base, row[c]) for c in ("performance", "predictions"))))
  return out


def table3(truth_path: str, configurations_path: str, task_class: str | None = None
           ) -> tuple[list[Configuration], list[MethodRow]]:
  """Every configuration's performance and prediction quality, and Table 3's rows;
  `task_class` (CR or QA) restricts to TuPaTE's in-class evaluation of that class."""
  members = None
  if task_class is not None:
    classes = class_eval.tupate_classes()
    if task_class not in classes:
      raise StudyTableError(f"unknown task class {task_class!r}; choose one of "
                            f"{sorted(classes)}")
    members = classes[task_class]
  truth = scope(aggregate(read_results(truth_path)), members)
  configurations = [
      evaluate_configuration(truth, method, name, read_results(perf),
                             ranking.predictions_by_target(read_predictions(pred)))
      for method, name, perf, pred in read_configurations(configurations_path)]
  return configurations, method_rows(configurations)


def configuration_table(configurations: Sequence[Configuration]) -> list[list[str]]:
  return [list(CONFIG_HEADER)] + [
      [c.method, c.configuration, f"{c.performance:.1f}", f"{c.rho:.2f}", f"{c.ndcg:.1f}"]
      for c in configurations]


def method_table(rows: Sequence[MethodRow]) -> list[list[str]]:
  return [list(TABLE_HEADER)] + [
      [r.method, f"{r.delta_rho:+.1f}", f"{r.delta_ndcg:+.1f}",
       "-" if np.isnan(r.pearson) else f"{r.pearson:.2f}", str(r.configurations)] for r in rows]


def write(configurations: Sequence[Configuration], rows: Sequence[MethodRow], out_dir: str
          ) -> tuple[str, str]:
  """table3.csv (per method) and table3_configurations.csv in `out_dir`."""
  os.makedirs(out_dir, exist_ok=True)
  table_path = os.path.join(out_dir, "table3.csv")
  config_path = os.path.join(out_dir, "table3_configurations.csv")
  write_csv(table_path, TABLE_HEADER, [[r.method, r.delta_rho, r.delta_ndcg, r.pearson,
                                        r.configurations] for r in rows])
  write_csv(config_path, CONFIG_HEADER, [[c.method, c.configuration, c.performance, c.rho,
                                          c.ndcg] for c in configurations])
  return table_path, config_path


def format_tables(configurations: Sequence[Configuration], rows: Sequence[MethodRow]) -> str:
  return "\n".join([*format_table(configuration_table(configurations)), "",
                    *format_table(method_table(rows))])
