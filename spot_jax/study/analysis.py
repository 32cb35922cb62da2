"""Transfer matrices, gains, oracle sources and the SPoT figures of a results table.

For a target t with baseline mean b (the `none` rows) and a source s with mean score m:
  absolute gain             m - b
  relative error reduction  (m - b) / (100 - b) * 100   (NaN when b == 100, noted in summary)
The oracle source of t is the source with the highest mean score, among the sources other than
t itself (a source equal to its target stays in the matrices but is not a transfer).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Sequence

import numpy as np
from scipy import stats

from spot_jax.study import plots
from spot_jax.study.results import (BASELINE, Aggregate, Results, aggregate, format_table,
                                    read_results, read_similarity_matrix,
                                    relative_error_reduction, write_csv, write_json,
                                    write_matrix)


@dataclasses.dataclass(frozen=True)
class TransferAnalysis:
  """The aggregated study; the [sources, targets] arrays exclude the `none` baseline."""

  table: Aggregate  # Every source, `none` first.
  sources: list[str]
  targets: list[str]
  mean: np.ndarray  # [sources, targets]
  std: np.ndarray  # [sources, targets]
  baseline_mean: np.ndarray  # [targets]
  baseline_std: np.ndarray  # [targets]
  gain: np.ndarray  # [sources, targets]
  relative_error_reduction: np.ndarray  # [sources, targets], percent.

  def candidates(self, j: int) -> np.ndarray:
    """Indices of the sources run on target j, other than the target itself."""
    return np.array([i for i, s in enumerate(self.sources)
                     if s != self.targets[j] and np.isfinite(self.mean[i, j])], int)


def analyze(results: Results) -> TransferAnalysis:
  table = aggregate(results)
  keep = [i for i, s in enumerate(table.sources) if s != BASELINE]
  base = table.sources.index(BASELINE)
  mean, std = table.mean[keep], table.std[keep]
  baseline_mean, baseline_std = table.mean[base], table.std[base]
  return TransferAnalysis(
      table=table, sources=[table.sources[i] for i in keep], targets=table.targets,
      mean=mean, std=std, baseline_mean=baseline_mean, baseline_std=baseline_std,
      gain=mean - baseline_mean[None, :],
      relative_error_reduction=relative_error_reduction(mean, baseline_mean[None, :]))


def _number(value: Any) -> float | None:
  """A JSON-safe float: NaN becomes null."""
  return None if value is None or not math.isfinite(float(value)) else float(value)


def summarize(analysis: TransferAnalysis, threshold: float = 0.0) -> dict[str, Any]:
  """Per-target baseline and oracle, mean oracle gain, and the positive transfers."""
  targets, notes, oracle_gains = {}, [], []
  for j, target in enumerate(analysis.targets):
    entry: dict[str, Any] = {
        "baseline_mean": _number(analysis.baseline_mean[j]),
        "baseline_std": _number(analysis.baseline_std[j]),
        "baseline_seeds": int(analysis.table.count[analysis.table.sources.index(BASELINE), j]),
        "num_sources": 0, "oracle_source": None, "oracle_score": None, "oracle_gain": None,
        "oracle_relative_error_reduction": None}
    if analysis.baseline_mean[j] >= 100.0:
      notes.append(f"{target}: baseline is 100, relative error reduction undefined (NaN)")
    candidates = analysis.candidates(j)
    if candidates.size:
      best = int(candidates[np.argmax(analysis.mean[candidates, j])])
      entry.update(num_sources=int(candidates.size), oracle_source=analysis.sources[best],
                   oracle_score=_number(analysis.mean[best, j]),
                   oracle_gain=_number(analysis.gain[best, j]),
                   oracle_relative_error_reduction=_number(
                       analysis.relative_error_reduction[best, j]))
      oracle_gains.append(analysis.gain[best, j])
    else:
      notes.append(f"{target}: no source other than the baseline, no oracle")
    targets[target] = entry
  positive = [
      {"source": analysis.sources[i], "target": analysis.targets[j],
       "gain": float(analysis.gain[i, j]),
       "relative_error_reduction": _number(analysis.relative_error_reduction[i, j])}
      for j in range(len(analysis.targets)) for i in analysis.candidates(j)
      if analysis.gain[i, j] > threshold]
  positive.sort(key=lambda p: (-p["gain"], p["source"], p["target"]))
  num_pairs = sum(analysis.candidates(j).size for j in range(len(analysis.targets)))
  return {"targets": targets,
          "mean_oracle_gain": _number(np.mean(oracle_gains)) if oracle_gains else None,
          "threshold": threshold, "positive_transfers": positive,
          "num_positive_transfers": len(positive), "num_transfer_pairs": int(num_pairs),
          "num_targets": len(analysis.targets), "num_sources": len(analysis.sources),
          "notes": notes}


def pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float, str | None]:
  """(r, p, note): scipy's Pearson r and two-sided p, NaN with a note when undefined."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.size < 2:
    return math.nan, math.nan, f"{x.size} point(s), correlation undefined"
  if np.ptp(x) == 0 or np.ptp(y) == 0:
    return math.nan, math.nan, "constant input, correlation undefined"
  result = stats.pearsonr(x, y)
  return float(result.statistic), float(result.pvalue), None


def similarity_vs_transfer(analysis: TransferAnalysis, tasks: Sequence[str],
                           similarity: np.ndarray) -> tuple[list[tuple[str, str, float, float]],
                                                            dict[str, dict[str, Any]], list[str]]:
  """Rows (target, source, similarity, gain), Pearson r/p per target, and notes.

  similarity [T, T] over `tasks`; pairs whose source or target is not in `tasks` are skipped.
  """
  index = {t: i for i, t in enumerate(tasks)}
  rows, correlations, notes = [], {}, []
  for j, target in enumerate(analysis.targets):
    if target not in index:
      notes.append(f"{target}: not in the similarity matrix, no similarity plot")
      continue
    candidates = [i for i in analysis.candidates(j) if analysis.sources[i] in index]
    missing = [analysis.sources[i] for i in analysis.candidates(j)
               if analysis.sources[i] not in index]
    if missing:
      notes.append(f"{target}: sources {missing} not in the similarity matrix, left out")
    x = np.array([similarity[index[analysis.sources[i]], index[target]] for i in candidates])
    y = np.array([analysis.gain[i, j] for i in candidates])
    rows += [(target, analysis.sources[i], float(xi), float(yi))
             for i, xi, yi in zip(candidates, x, y)]
    r, p, note = pearson(x, y)
    if note:
      notes.append(f"{target}: {note}")
    correlations[target] = {"pearson_r": _number(r), "p_value": _number(p),
                            "num_sources": len(candidates)}
  return rows, correlations, notes


def run_analysis(results_path: str, out_dir: str, similarity_path: str | None = None,
                 threshold: float = 0.0, metric_name: str | None = None) -> dict[str, Any]:
  """Writes the matrices, summary.json and plots of `study analyze` to out_dir; the summary."""
  results = read_results(results_path)
  similarity = read_similarity_matrix(similarity_path) if similarity_path else None
  analysis = analyze(results)
  metric = metric_name or results.metric or "score"
  summary = {"results": os.path.abspath(results_path), "metric": metric, **summarize(
      analysis, threshold)}
  os.makedirs(out_dir, exist_ok=True)
  table = analysis.table
  write_matrix(os.path.join(out_dir, "transfer_matrix.csv"), table.sources, table.targets,
               table.mean)
  write_matrix(os.path.join(out_dir, "transfer_matrix_std.csv"), table.sources, table.targets,
               table.std)
  write_matrix(os.path.join(out_dir, "relative_error_reduction.csv"), analysis.sources,
               analysis.targets, analysis.relative_error_reduction)
  write_matrix(os.path.join(out_dir, "absolute_gain.csv"), analysis.sources, analysis.targets,
               analysis.gain)
  use_rer = bool(np.isfinite(analysis.relative_error_reduction).any())
  plots.transfer_heatmap(
      analysis.sources, analysis.targets,
      analysis.relative_error_reduction if use_rer else analysis.gain,
      os.path.join(out_dir, "transfer_heatmap.png"),
      f"Transfer over the no-transfer baseline ({metric})",
      "relative error reduction (%)" if use_rer else f"gain ({metric})")
  if similarity is not None:
    from spot_jax.library import plots as library_plots  # The library's clustered heatmap.
    tasks, matrix = similarity
    library_plots.similarity_heatmap(
        tasks, matrix, os.path.join(out_dir, "task_similarity_heatmap.png"), "Task similarity")
    rows, correlations, notes = similarity_vs_transfer(analysis, tasks, matrix)
    write_csv(os.path.join(out_dir, "similarity_vs_transfer.csv"),
              ["target", "source", "similarity", "gain"], rows)
    for target, corr in correlations.items():
      points = [(s, x, y) for t, s, x, y in rows if t == target]
      if not points:
        continue
      labels, x, y = zip(*points)
      r, p = corr["pearson_r"], corr["p_value"]
      title = (f"{target}: Pearson r = {r:.3f}, p = {p:.3g}" if r is not None
               else f"{target}: Pearson r undefined")
      plots.similarity_scatter(labels, np.array(x), np.array(y),
                               os.path.join(out_dir, "similarity_vs_transfer", f"{target}.png"),
                               title, "similarity of the source to the target",
                               f"gain over the baseline ({metric})")
    summary["similarity"] = {"matrix": os.path.abspath(similarity_path),
                             "correlations": correlations}
    summary["notes"] += notes
  write_json(os.path.join(out_dir, "summary.json"), summary)
  return summary


def format_summary(summary: dict[str, Any]) -> str:
  """The human table printed by `study analyze`."""
  def number(value: float | None, sign: bool = False) -> str:
    return "-" if value is None else format(value, "+.2f" if sign else ".2f")
  rows = [("target", "baseline", "best source", "best score", "gain")]
  for target, t in summary["targets"].items():
    rows.append((target, number(t["baseline_mean"]), t["oracle_source"] or "-",
                 number(t["oracle_score"]), number(t["oracle_gain"], sign=True)))
  lines = format_table(rows)
  lines.append(f"mean oracle gain: {number(summary['mean_oracle_gain'], sign=True)} over "
               f"{summary['num_targets']} targets ({summary['metric']})")
  lines.append(f"positive transfers (gain > {summary['threshold']:g}): "
               f"{summary['num_positive_transfers']} of {summary['num_transfer_pairs']} pairs")
  lines += [f"note: {n}" for n in summary["notes"]]
  return "\n".join(lines)
