"""Confidence intervals for `affinity evaluate`: over targets, and paired against a rival.

A table of scorers averaged over a handful of targets says little without its uncertainty:
with 11 targets the standard error of a mean Spearman is ~0.1-0.2. Two summaries, both over
the evaluated targets (the unit that is sampled: a new target is a new draw):

  * `intervals`: each scorer's mean over targets with a percentile bootstrap interval
    (`scipy.stats.bootstrap`, resampling targets);
  * `paired`: the per-target difference of one scorer (the head) against each rival, its mean
    with a bootstrap interval, and how many targets it wins, ties and loses. Pairing removes
    the variation between targets that both scorers share (an easy target is easy for both),
    so it is the comparison that can tell two close scorers apart.

Rows are `affinity_eval.compare` rows (their `per_target` values); the head over several seeds
is the `seed_rows` row, whose per-target values are means over the seeds.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from spot_jax.study import results
from spot_jax.study.affinity_eval import PER_TARGET

# Columns with intervals; for regret lower is better, for the others higher.
INTERVAL_COLUMNS = ("spearman", "regret_at_1", "top1_gain", "top3_best_gain")
LOWER_IS_BETTER = frozenset({"regret_at_1", "regret_at_3"})


def bootstrap_interval(values: Sequence[float], *, resamples: int = 10_000,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
  """(mean, low, high) of the mean of `values` [T] (NaNs dropped) with a percentile bootstrap
  interval over its entries; NaNs where fewer than 2 finite values remain."""
  x = np.asarray(values, np.float64)
  x = x[np.isfinite(x)]
  if x.size < 2:
    return (float(x.mean()) if x.size else math.nan), math.nan, math.nan
  if np.ptp(x) == 0:  # every target the same: the interval is the point.
    return float(x[0]), float(x[0]), float(x[0])
  result = stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=level,
                           method="percentile", rng=np.random.default_rng(seed))
  low, high = result.confidence_interval
  return float(x.mean()), float(low), float(high)


def _per_target(row: Mapping[str, Any], column: str) -> dict[str, float]:
  if PER_TARGET not in row:
    raise ValueError(f"Row {row.get('method')!r} has no per-target values (the expected "
                     "random ranking and ablation rows have none)")
  return {t: v[column] for t, v in row[PER_TARGET].items()}


def intervals(rows: Sequence[Mapping[str, Any]], *, columns: Sequence[str] = INTERVAL_COLUMNS,
              resamples: int = 10_000, level: float = 0.95, seed: int = 0
              ) -> list[dict[str, Any]]:
  """One row per scorer with per-target values: {method, n_targets, <column>, <column>_low,
  <column>_high} (mean over targets and its bootstrap interval)."""
  out = []
  for row in rows:
    if PER_TARGET not in row:
      continue
    entry: dict[str, Any] = {"method": row["method"], "n_targets": len(row[PER_TARGET])}
    for column in columns:
      mean, low, high = bootstrap_interval(list(_per_target(row, column).values()),
                                           resamples=resamples, level=level, seed=seed)
      entry.update({column: mean, f"{column}_low": low, f"{column}_high": high})
    out.append(entry)
  return out


def paired(rows: Sequence[Mapping[str, Any]], method: str, rivals: Sequence[str] | None = None,
           *, columns: Sequence[str] = INTERVAL_COLUMNS, resamples: int = 10_000,
           level: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
  """`method` minus each rival (default: every other row with per-target values), per column:
  {rival, column, n_targets, mean_difference, low, high, wins, ties, losses}. A win is a
  target where `method` is better (higher; lower for regret); targets where either value is
  NaN (a constant ranking's correlation) are left out."""
  by_name = {r["method"]: r for r in rows if PER_TARGET in r}
  if method not in by_name:
    raise ValueError(f"No per-target values for {method!r}; rows: {sorted(by_name)}")
  rivals = [m for m in by_name if m != method] if rivals is None else list(rivals)
  unknown = sorted(set(rivals) - set(by_name))
  if unknown:
    raise ValueError(f"No per-target values for {unknown}; rows: {sorted(by_name)}")
  out = []
  for rival in rivals:
    for column in columns:
      mine, theirs = _per_target(by_name[method], column), _per_target(by_name[rival], column)
      targets = sorted(t for t in set(mine) & set(theirs)
                       if math.isfinite(mine[t]) and math.isfinite(theirs[t]))
      diff = np.array([mine[t] - theirs[t] for t in targets], np.float64)
      better = -diff if column in LOWER_IS_BETTER else diff
      mean, low, high = bootstrap_interval(diff, resamples=resamples, level=level, seed=seed)
      out.append({"method": method, "rival": rival, "column": column, "n_targets": len(targets),
                  "mean_difference": mean, "low": low, "high": high,
                  "wins": int((better > 0).sum()), "ties": int((better == 0).sum()),
                  "losses": int((better < 0).sum())})
  return out


def format_intervals(rows: Sequence[Mapping[str, Any]],
                     columns: Sequence[str] = INTERVAL_COLUMNS) -> list[list[str]]:
  """Table cells: `mean [low, high]` per column."""
  def cell(row, column):
    mean, low, high = row[column], row[f"{column}_low"], row[f"{column}_high"]
    if math.isnan(low):
      return "-" if math.isnan(mean) else f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"
  return [["method", "targets", *columns]] + [
      [str(r["method"]), str(r["n_targets"]), *(cell(r, c) for c in columns)] for r in rows]


def format_paired(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
  """Table cells: rival, column, mean difference [interval], wins/ties/losses."""
  def interval(r):
    if math.isnan(r["low"]):
      return "-" if math.isnan(r["mean_difference"]) else f"{r['mean_difference']:+.3f}"
    return f"{r['mean_difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"
  return [["rival", "column", "targets", "difference [interval]", "wins/ties/losses"]] + [
      [r["rival"], r["column"], str(r["n_targets"]), interval(r),
       f"{r['wins']}/{r['ties']}/{r['losses']}"] for r in rows]


def format_table(cells: Sequence[Sequence[str]]) -> str:
  """Aligned text of `format_intervals` / `format_paired` cells."""
  return "\n".join(results.format_table(cells))
