"""How well a transferability prediction ranks the source tasks of each target.

Definitions (pinned in docs/studies.md). For one target with baseline b and n candidate sources
with true transfer v (mean score over seeds), a method's predicted scores rank the candidates
(descending, ties broken by source name). With M_k the best true score among the top k and
O = max v:
  spearman, pearson   scipy.stats correlations of predicted scores with v (NaN when constant)
  regret_at_k         (O - M_k) / O * 100                              (Feng et al. 2023)
  ndcg                DCG / ideal DCG with DCG = sum_i rel(pi_i) / log2(i + 1) over all n
                      candidates in predicted order (sklearn ndcg_score), linear gain. The
                      relevance rel is one of NDCG_RELEVANCE:
                        rank   the rank of v from the bottom (worst 0, best n - 1, ties
                               averaged): the default, scale-free
                        score  the raw post-transfer score max(v, 0) (0-100; NDCG needs
                               rel >= 0, so negative MCC scores count as 0)
                        gain   the normalised gain max(v - b, 0) / (O - b) in [0, 1] (NaN when
                               O <= b: no positive transfer)
                      The exponential-gain form 2^rel - 1 is not used: on a 0-100 scale it
                      reaches 2^100 and one candidate outweighs all others.
  rho                 1-based position of the best true source in the predicted ranking
                      (TaskEmb, Vu et al. 2020)
  best_of_top_k       M_k, k = 1..K (k > n counts as n); mean_of_top_k the mean of the top k
  oracle_gain_share   (M_k - b) / (O - b), NaN when O <= b (no positive transfer to retain)
  search_space_removed  1 - min(k, n) / n
  gain_of_top_k       M_k - b; its mean over targets is SPoT Table 3's "Abs." change (MEAN(Δ))
  relative_error_reduction_of_top_k  (M_k - b) / (100 - b) * 100; its mean over targets is
                      Table 3's "Rel." change ("a 12.1% average relative error reduction")
  oracle_gain, oracle_relative_error_reduction  the same for O (Table 3's ORACLE row)
`expected_random_metrics` gives the exact expectation of every metric over uniformly random
rankings.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import special, stats
from sklearn.metrics import ndcg_score

from spot_jax.study.results import (BASELINE, Aggregate, Predictions, format_table,
                                    relative_error_reduction)

REGRET_KS = (1, 3)
GAIN_SHARE_TARGET = 0.9
SCALAR_METRICS = ("spearman", "pearson", "regret_at_1", "regret_at_3", "ndcg", "rho")
NDCG_RELEVANCE = ("rank", "score", "gain")
ORACLE_METRICS = ("oracle_gain", "oracle_relative_error_reduction")
CURVE_METRICS = ("best_of_top_k", "mean_of_top_k", "oracle_gain_share", "search_space_removed",
                 "gain_of_top_k", "relative_error_reduction_of_top_k")


class RankingError(ValueError):
  """Predictions that do not cover the sources of the results table."""


@dataclasses.dataclass(frozen=True)
class TargetCandidates:
  """The candidate sources of one target and their true transfer."""

  target: str
  sources: list[str]  # Sorted by name.
  true: np.ndarray  # [n] mean score over seeds.
  baseline: float


def true_transfer(table: Aggregate) -> dict[str, dict[str, float]]:
  """{target: {source: mean score}} over every source run on the target, `none` included."""
  return {t: {s: float(table.mean[i, j]) for i, s in enumerate(table.sources)
              if np.isfinite(table.mean[i, j])} for j, t in enumerate(table.targets)}


def required_sources(target: str, truth: Mapping[str, float]) -> list[str]:
  """The sources every method must rank: all run on the target except `none` and the target."""
  return sorted(s for s in truth if s not in (BASELINE, target))


def candidates(table: Aggregate, predicted: Mapping[str, Mapping[str, float]], where: str
               ) -> tuple[list[tuple[TargetCandidates, np.ndarray]], list[str]]:
  """Per target: (candidates, predicted scores [n]) and notes.

  The candidates are the required sources plus `none` or the target itself when both tables
  hold them. A missing target or required source is an error naming `where` (the predictions).
  """
  pairs, notes = [], []
  for target, truth in true_transfer(table).items():
    if target not in predicted:
      raise RankingError(f"{where}: no predictions for target {target!r}; predict a score "
                         "for every source of every target in the results")
    scores = predicted[target]
    required = required_sources(target, truth)
    missing = [s for s in required if s not in scores]
    if missing:
      raise RankingError(f"{where}: target {target!r} lacks predictions for sources {missing}; "
                         "add a row target,source,score for each")
    names = sorted(set(required) | {s for s in (BASELINE, target) if s in truth and s in scores})
    ignored = sorted(set(scores) - set(names))
    if ignored:
      notes.append(f"{target}: predictions for {ignored} ignored (no results)")
    pairs.append((TargetCandidates(target, names, np.array([truth[s] for s in names]),
                                   truth[BASELINE]),
                  np.array([scores[s] for s in names], np.float64)))
  notes += [f"{t}: predictions ignored (target not in the results)"
            for t in sorted(set(predicted) - set(table.targets))]
  return pairs, notes


def predictions_by_target(predictions: Predictions) -> dict[str, dict[str, float]]:
  return {t: predictions.for_target(t) for t in sorted(set(predictions.target))}


# ----------------------------------------------------------------------------- metrics


def relevance(true: np.ndarray, kind: str = "rank", baseline: float | None = None
              ) -> np.ndarray:
  """NDCG relevance [n] of the true transfer [n] (see the module docstring for `kind`)."""
  true = np.asarray(true, np.float64)
  if kind == "rank":
    return stats.rankdata(true, method="average") - 1.0
  if kind == "score":
    return np.maximum(true, 0.0)
  if kind == "gain":
    if baseline is None:
      raise RankingError("NDCG relevance 'gain' needs the target's baseline score")
    oracle = float(true.max(initial=-np.inf))
    if not oracle > baseline:
      return np.full(true.shape, np.nan)
    return np.maximum(true - baseline, 0.0) / (oracle - baseline)
  raise RankingError(f"Unknown NDCG relevance {kind!r}; choose one of {NDCG_RELEVANCE}")


def _correlation(fn: Callable, x: np.ndarray, y: np.ndarray) -> float:
  if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return math.nan
  return float(fn(x, y).statistic)


def curve(best_of_top: np.ndarray, mean_of_top: np.ndarray, true: np.ndarray, baseline: float,
          k_max: int) -> dict[str, list[float]]:
  """The top-k curves for k = 1..k_max from the per-depth best [n] and mean [n]."""
  n = true.size
  depth = np.minimum(np.arange(1, k_max + 1), n)
  best, oracle = best_of_top[depth - 1], float(true.max())
  share = (best - baseline) / (oracle - baseline) if oracle > baseline else np.full(k_max, np.nan)
  return {"k": list(range(1, k_max + 1)), "best_of_top_k": best.tolist(),
          "mean_of_top_k": mean_of_top[depth - 1].tolist(), "oracle_gain_share": share.tolist(),
          "search_space_removed": (1.0 - depth / n).tolist(),
          "gain_of_top_k": (best - baseline).tolist(),
          "relative_error_reduction_of_top_k": relative_error_reduction(best, baseline).tolist()}


def regret(oracle: float, best: float) -> float:
  return (oracle - best) / oracle * 100.0 if oracle > 0 else math.nan


def ranking_metrics(true: np.ndarray, predicted: np.ndarray, baseline: float,
                    k_max: int, ndcg_relevance: str = "rank") -> dict[str, Any]:
  """Every metric of one target; true, predicted [n] in the same (name-sorted) order."""
  true, predicted = np.asarray(true, np.float64), np.asarray(predicted, np.float64)
  n = true.size
  order = np.argsort(-predicted, kind="stable")
  ranked = true[order]
  best_of_top = np.maximum.accumulate(ranked)
  oracle = float(true.max())
  rel = relevance(true, ndcg_relevance, baseline)
  if n >= 2 and np.all(np.isfinite(rel)) and rel.max() > 0:
    # Scores n - position make the ranking strict, so sklearn sees the same tie-break.
    ndcg = float(ndcg_score(rel[None], (n - np.argsort(order))[None].astype(float),
                            ignore_ties=True))
  else:
    ndcg = math.nan
  return {
      "num_candidates": n,
      "spearman": _correlation(stats.spearmanr, predicted, true),
      "pearson": _correlation(stats.pearsonr, predicted, true),
      **{f"regret_at_{k}": regret(oracle, float(best_of_top[min(k, n) - 1])) for k in REGRET_KS},
      "ndcg": ndcg,
      "rho": float(np.flatnonzero(ranked == oracle)[0] + 1),
      "curve": curve(best_of_top, np.cumsum(ranked) / np.arange(1, n + 1), true, baseline,
                     k_max)}


def expected_best_of_top(true: np.ndarray) -> np.ndarray:
  """E[max of k uniformly drawn candidates] for k = 1..n: [n].

  With v sorted ascending, the i-th smallest (1-based) is the maximum of a k-subset with
  probability C(i-1, k-1) / C(n, k).
  """
  v = np.sort(np.asarray(true, np.float64))
  n = v.size
  i = np.arange(1, n + 1)
  return np.array([np.sum(v * special.comb(i - 1, k - 1) / special.comb(n, k))
                   for k in range(1, n + 1)])


def expected_random_metrics(true: np.ndarray, baseline: float, k_max: int,
                            ndcg_relevance: str = "rank") -> dict[str, Any]:
  """The expectation of every metric of `ranking_metrics` over uniformly random rankings.

  Correlations average to 0 (NaN when the truth is constant). Regret, the gain share and NDCG
  are linear in the ranking, so their expectations follow from E[M_k] and from the mean
  relevance at each position; the first of m tied best sources sits at (n + 1) / (m + 1).
  """
  true = np.asarray(true, np.float64)
  n = true.size
  oracle = float(true.max())
  best_of_top = expected_best_of_top(true)
  rel = relevance(true, ndcg_relevance, baseline)
  discount = 1.0 / np.log2(np.arange(2, n + 2))
  ideal = float(np.sum(np.sort(rel)[::-1] * discount))
  constant = n < 2 or np.ptp(true) == 0
  return {
      "num_candidates": n,
      "spearman": math.nan if constant else 0.0,
      "pearson": math.nan if constant else 0.0,
      **{f"regret_at_{k}": regret(oracle, float(best_of_top[min(k, n) - 1])) for k in REGRET_KS},
      "ndcg": (float(rel.mean() * discount.sum() / ideal) if n >= 2 and ideal > 0
               else math.nan),
      "rho": (n + 1) / (int(np.sum(true == oracle)) + 1),
      "curve": curve(best_of_top, np.full(n, true.mean()), true, baseline, k_max)}


# ----------------------------------------------------------------------------- evaluation


def _nanmean(values: Sequence[float]) -> float:
  values = np.asarray(values, np.float64)
  return float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else math.nan


def average(per_target: Mapping[str, Mapping[str, Any]], k_max: int) -> dict[str, Any]:
  """Means over targets (NaN entries skipped) and the smallest k keeping 90% of the gain."""
  rows = list(per_target.values())
  out: dict[str, Any] = {m: _nanmean([r[m] for r in rows])
                         for m in SCALAR_METRICS + ORACLE_METRICS}
  out["curve"] = {"k": list(range(1, k_max + 1))}
  for name in CURVE_METRICS:
    out["curve"][name] = [_nanmean([r["curve"][name][k] for r in rows]) for k in range(k_max)]
  shares = np.asarray(out["curve"]["oracle_gain_share"])
  hits = np.flatnonzero(np.isfinite(shares) & (shares >= GAIN_SHARE_TARGET - 1e-12))
  out["k_for_90_percent_gain"] = int(hits[0] + 1) if hits.size else None
  out["search_space_removed_at_k90"] = (
      out["curve"]["search_space_removed"][hits[0]] if hits.size else None)
  return out


def evaluate(table: Aggregate, method: str, predicted: Mapping[str, Mapping[str, float]] | None,
             k_max: int | None = None, where: str = "predictions",
             ndcg_relevance: str = "rank") -> dict[str, Any]:
  """Metrics per target and averaged; `predicted` None means the expected random ranking."""
  if ndcg_relevance not in NDCG_RELEVANCE:
    raise RankingError(f"Unknown NDCG relevance {ndcg_relevance!r}; choose one of "
                       f"{NDCG_RELEVANCE}")
  if predicted is None:
    truth = true_transfer(table)
    uniform = {t: {s: 0.0 for s in required_sources(t, v)} for t, v in truth.items()}
    pairs, notes = candidates(table, uniform, where)
  else:
    pairs, notes = candidates(table, predicted, where)
  empty = [c.target for c, _ in pairs if not c.sources]
  if empty:
    raise RankingError(f"targets {empty} have no source besides the baseline; nothing to rank")
  k_max = max(len(c.sources) for c, _ in pairs) if k_max is None else k_max
  if k_max < 1:
    raise RankingError(f"--k_max must be >= 1, got {k_max}")
  per_target = {}
  for cands, scores in pairs:
    metrics = (expected_random_metrics(cands.true, cands.baseline, k_max, ndcg_relevance)
               if predicted is None
               else ranking_metrics(cands.true, scores, cands.baseline, k_max, ndcg_relevance))
    order = np.argsort(-scores, kind="stable")
    oracle = int(np.argmax(cands.true))
    per_target[cands.target] = {
        "baseline": cands.baseline, "oracle_source": cands.sources[oracle],
        "oracle_score": float(cands.true[oracle]),
        "oracle_gain": float(cands.true[oracle] - cands.baseline),
        "oracle_relative_error_reduction": float(
            relative_error_reduction(cands.true[oracle], cands.baseline)), **metrics,
        "predicted_ranking": None if predicted is None else [cands.sources[i] for i in order]}
    if predicted is not None and (np.ptp(scores) == 0 or np.ptp(cands.true) == 0):
      notes.append(f"{cands.target}: constant predicted or true scores, correlations NaN")
    if cands.true.max() <= cands.baseline:
      notes.append(f"{cands.target}: no source beats the baseline, oracle gain share NaN")
  return {"method": method, "k_max": k_max, "ndcg_relevance": ndcg_relevance,
          "targets": per_target,
          "average": average(per_target, k_max), "notes": notes}


def data_size_predictions(table: Aggregate, size_of: Callable[[str], float]
                          ) -> dict[str, dict[str, float]]:
  """The data_size baseline: each required source scored by its training-set size."""
  return {t: {s: float(size_of(s)) for s in required_sources(t, truth)}
          for t, truth in true_transfer(table).items()}


def registry_train_size(task: str) -> float:
  """Training-set size of a registered real or synthetic task."""
  from tasks import registry
  try:
    size = registry.train_size(task)
  except KeyError:
    from tasks import synthetic
    try:
      size = synthetic.synthetic_task_info(task).sizes["train"]
    except KeyError:
      raise RankingError(f"No known training-set size for source {task!r}; pass "
                         "--sizes FILE.csv with columns task,size") from None
  if size is None:
    raise RankingError(f"The registry has no training-set size for {task!r}; pass --sizes "
                       "FILE.csv with columns task,size")
  return float(size)


def format_report(report: Mapping[str, Any]) -> str:
  """The table printed by `study evaluate`."""
  def cell(value: Any, fmt: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, fmt)
  header = ("target", "n", "spearman", "pearson", "regret@1", "regret@3", "ndcg", "rho")
  rows = [header]
  for target, m in report["targets"].items():
    rows.append((target, str(m["num_candidates"]), *(cell(m[k]) for k in SCALAR_METRICS)))
  avg = report["average"]
  rows.append(("average", "", *(cell(avg[k]) for k in SCALAR_METRICS)))
  lines = [f"method: {report['method']}"] + format_table(rows)
  curve_rows = [("k", "best of top-k", "mean of top-k", "oracle gain share", "space removed",
                 "mean gain (Abs.)", "Rel. (%)")]
  for i, k in enumerate(avg["curve"]["k"]):
    curve_rows.append((str(k), *(cell(avg["curve"][name][i], ".3f") for name in CURVE_METRICS)))
  curve_rows.append(("oracle", "", "", "", "", cell(avg["oracle_gain"]),
                     cell(avg["oracle_relative_error_reduction"])))
  lines += [""] + format_table(curve_rows)
  if avg["k_for_90_percent_gain"] is None:
    lines.append("no k retains 90% of the oracle gain on average")
  else:
    lines.append(f"top-{avg['k_for_90_percent_gain']} retains >= 90% of the oracle gain on "
                 f"average and removes {avg['search_space_removed_at_k90']:.0%} of the search "
                 "space")
  lines += [f"note: {n}" for n in report["notes"]]
  return "\n".join(lines)
