"""Transfer matrices, gains, oracle sources, benchmark averages and the SPoT figures.

For a target t with baseline mean b (the `none` rows) and a source s with mean score m:
  absolute gain             m - b
  relative error reduction  (m - b) / (100 - b) * 100   (NaN when b == 100, noted in summary)
The oracle source of t is the source with the highest mean score, among the sources other than
t itself (a source equal to its target stays in the matrices but is not a transfer). A positive
transfer is a pair whose relative error reduction exceeds the threshold (SPoT Table 7: 10%).
Benchmark averages (SPoT Tables 1 and 4) are GLUE's and SuperGLUE's: the mean over the
benchmark's tasks of each task's score (a score being the mean of the task's metrics).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Sequence

import numpy as np
from scipy import stats

from spot_jax.library.similarity import RUN_SEPARATOR
from spot_jax.study import plots
from spot_jax.study.results import (BASELINE, Aggregate, Results, StudyTableError, aggregate,
                                    format_table, read_results, read_similarity_matrix,
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
  """Per-target baseline and oracle, mean oracle gain, and the positive transfers: the pairs
  whose relative error reduction exceeds `threshold` percent (SPoT Table 7 uses 10)."""
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
  rer = analysis.relative_error_reduction
  positive = [
      {"source": analysis.sources[i], "target": analysis.targets[j],
       "gain": float(analysis.gain[i, j]), "relative_error_reduction": float(rer[i, j])}
      for j in range(len(analysis.targets)) for i in analysis.candidates(j)
      if np.isfinite(rer[i, j]) and rer[i, j] > threshold]
  positive.sort(key=lambda p: (-p["relative_error_reduction"], p["source"], p["target"]))
  num_pairs = sum(analysis.candidates(j).size for j in range(len(analysis.targets)))
  return {"targets": targets,
          "mean_oracle_gain": _number(np.mean(oracle_gains)) if oracle_gains else None,
          "threshold": threshold, "positive_transfers": positive,
          "num_positive_transfers": len(positive), "num_transfer_pairs": int(num_pairs),
          "num_targets": len(analysis.targets), "num_sources": len(analysis.sources),
          "notes": notes}


def benchmark_averages(results: Results) -> tuple[dict[str, Any], list[str]]:
  """GLUE and SuperGLUE averages per source (SPoT Tables 1 and 4), and notes.

  A benchmark's average is the mean over its tasks among the targets of the source's mean task
  score (a task score = the mean of its metrics, as results.csv holds it); `std` is the sample
  std over the seeds that ran every one of those tasks of the per-seed averages (Table 1
  reports mean and std over 3 seeds; 0 with one seed). `complete` says whether every task of
  the benchmark (`tasks.registry.GLUE`: 8 tasks, WNLI excluded as in SPoT; `SUPERGLUE`: 8)
  was a target; otherwise the average covers only the listed tasks.
  """
  from tasks import registry
  table = aggregate(results)
  out, notes = {}, []
  for name, members in (("glue", registry.GLUE), ("superglue", registry.SUPERGLUE)):
    tasks = [t for t in table.targets if registry.base_name(t) in members]
    if not tasks:
      continue
    missing = sorted(set(members) - {registry.base_name(t) for t in tasks})
    if missing:
      notes.append(f"{name}: average over {len(tasks)} of {len(members)} tasks "
                   f"(no results for {missing})")
    columns = [table.targets.index(t) for t in tasks]
    scores = {}
    for i, source in enumerate(table.sources):
      means = table.mean[i, columns]
      if not np.isfinite(means).all():
        continue
      per_seed = {}
      for s, t, seed, v in zip(results.source, results.target, results.seed, results.score):
        if s == source and t in tasks:
          per_seed.setdefault(seed, {})[t] = float(v)
      averages = [np.mean(list(v.values())) for v in per_seed.values() if len(v) == len(tasks)]
      scores[source] = {"mean": float(np.mean(means)),
                        "std": float(np.std(averages, ddof=1)) if len(averages) >= 2 else 0.0,
                        "seeds": len(averages)}
    out[name] = {"tasks": tasks, "complete": not missing, "missing_tasks": missing,
                 "scores": scores}
  return out, notes


CORRELATIONS = {"pearson": stats.pearsonr, "spearman": stats.spearmanr}


def correlation(x: np.ndarray, y: np.ndarray, method: str = "pearson"
            ) -> tuple[float, float, str | None]:
  """(r, p, note): scipy's Pearson r (method "spearman": Spearman rho) and two-sided p, NaN
  with a note when undefined."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.size < 2:
    return math.nan, math.nan, f"{x.size} point(s), correlation undefined"
  if np.ptp(x) == 0 or np.ptp(y) == 0:
    return math.nan, math.nan, "constant input, correlation undefined"
  result = CORRELATIONS[method](x, y)
  return float(result.statistic), float(result.pvalue), None


def split_run_label(label: str) -> tuple[str, str | None]:
  """`glue_mnli@1` -> ("glue_mnli", "1"): one run (task, seed) of a per-run similarity matrix;
  a plain task name -> (task, None)."""
  task, separator, seed = label.rpartition(RUN_SEPARATOR)
  return (task, seed) if separator and task and seed else (label, None)


def similarity_vs_transfer(analysis: TransferAnalysis, results: Results, labels: Sequence[str],
                           similarity: np.ndarray
                           ) -> tuple[list[tuple[str, str, str, float, float, float]],
                                      dict[str, dict[str, Any]], list[str]]:
  """Rows (target, source, seed, similarity, relative error reduction, gain), Pearson r/p of
  similarity vs relative error reduction per target, and notes (SPoT Figures 5 and 8).

  similarity [N, N] over `labels`. With task labels there is one point per source task: its
  mean score over seeds, x = similarity[source, target]. With run labels (`<task>@<seed>`, as
  `spot-jax library similarity --per_run` writes them) there is one point per source prompt,
  as in SPoT: the transfer run of that seed, x = its similarity to the target's runs, averaged
  over them. y is always the relative error reduction over the baseline mean.
  """
  split = [split_run_label(label) for label in labels]
  per_run = any(seed is not None for _, seed in split)
  if per_run and not all(seed is not None for _, seed in split):
    raise StudyTableError("A similarity matrix labels either tasks or runs (<task>@<seed>), "
                          f"not both; got {list(labels)[:6]}")
  index = {label: i for i, label in enumerate(labels)}
  runs_of: dict[str, list[int]] = {}
  for i, (task, _) in enumerate(split):
    runs_of.setdefault(task, []).append(i)
  rows, correlations, notes = [], {}, []
  for j, target in enumerate(analysis.targets):
    if target not in runs_of:
      notes.append(f"{target}: not in the similarity matrix, no similarity plot")
      continue
    baseline = analysis.baseline_mean[j]
    missing, points = [], []
    for i in analysis.candidates(j):
      source = analysis.sources[i]
      if not per_run:
        if source in index:
          points.append((source, "", similarity[index[source], index[target]],
                         analysis.mean[i, j]))
        else:
          missing.append(source)
        continue
      for s, t, seed, score in zip(results.source, results.target, results.seed, results.score):
        if s == source and t == target:
          if f"{source}{RUN_SEPARATOR}{seed}" in index:
            row = index[f"{source}{RUN_SEPARATOR}{seed}"]
            points.append((source, seed, float(np.mean(similarity[row, runs_of[target]])),
                           float(score)))
          else:
            missing.append(f"{source}{RUN_SEPARATOR}{seed}")
    if missing:
      notes.append(f"{target}: sources {missing} not in the similarity matrix, left out")
    if not np.isfinite(relative_error_reduction(0.0, baseline)):
      notes.append(f"{target}: baseline is 100, no relative error reduction to plot")
      continue
    target_rows = [(target, source, seed, float(x), float(relative_error_reduction(m, baseline)),
                    float(m - baseline)) for source, seed, x, m in points]
    rows += target_rows
    r, p, note = correlation(np.array([row[3] for row in target_rows]),
                         np.array([row[4] for row in target_rows]))
    if note:
      notes.append(f"{target}: {note}")
    correlations[target] = {"pearson_r": _number(r), "p_value": _number(p),
                            "num_points": len(target_rows)}
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
      "relative error reduction (%)" if use_rer else f"gain ({metric})",
      limit=plots.RELATIVE_ERROR_REDUCTION_LIMIT if use_rer else None)
  benchmarks, notes = benchmark_averages(results)
  if benchmarks:
    summary["benchmarks"] = benchmarks
    summary["notes"] += notes
    write_csv(os.path.join(out_dir, "benchmarks.csv"),
              ["source", "benchmark", "mean", "std", "seeds", "num_tasks"],
              [(source, name, v["mean"], v["std"], v["seeds"], len(b["tasks"]))
               for name, b in benchmarks.items() for source, v in b["scores"].items()])
  if similarity is not None:
    summary["similarity"] = write_similarity_figures(analysis, results, *similarity, out_dir)
    summary["similarity"]["matrix"] = os.path.abspath(similarity_path)
    summary["notes"] += summary["similarity"].pop("notes")
  write_json(os.path.join(out_dir, "summary.json"), summary)
  return summary


def write_similarity_figures(analysis: TransferAnalysis, results: Results, labels: list[str],
                             matrix: np.ndarray, out_dir: str) -> dict[str, Any]:
  """Similarity heatmaps (SPoT Figure 4; per run, Figure 7), `similarity_vs_transfer.csv` and
  similarity vs relative error reduction per target (Figures 5 and 8).

  Returns {"correlations": per target, "notes": [...]}.
  """
  from spot_jax.library import plots as library_plots  # The library's clustered heatmap.
  from spot_jax.library.similarity import group_average
  rows, correlations, notes = similarity_vs_transfer(analysis, results, labels, matrix)
  runs = [split_run_label(label) for label in labels]
  task_labels, task_matrix = labels, matrix
  if any(seed is not None for _, seed in runs):
    library_plots.similarity_heatmap(labels, matrix,
                                     os.path.join(out_dir, "run_similarity_heatmap.png"),
                                     "Task embedding similarity per run (<task>@<seed>)")
    task_labels, task_matrix = group_average(matrix, [task for task, _ in runs])
  library_plots.similarity_heatmap(task_labels, task_matrix,
                                   os.path.join(out_dir, "task_similarity_heatmap.png"),
                                   "Task similarity")
  write_csv(os.path.join(out_dir, "similarity_vs_transfer.csv"),
            ["target", "source", "seed", "similarity", "relative_error_reduction", "gain"], rows)
  for target, corr in correlations.items():
    points = [(source, x, y) for t, source, _, x, y, _ in rows if t == target]
    if not points:
      continue
    names, x, y = zip(*points)
    r, p = corr["pearson_r"], corr["p_value"]
    title = (f"{target}: Pearson r = {r:.3f}, p = {p:.3g}" if r is not None
             else f"{target}: Pearson r undefined")
    plots.similarity_scatter(names, np.array(x), np.array(y),
                             os.path.join(out_dir, "similarity_vs_transfer", f"{target}.png"),
                             title, "similarity of the source to the target",
                             "relative error reduction (%)")
  return {"correlations": correlations, "notes": notes}


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
  lines.append(f"positive transfers (relative error reduction > {summary['threshold']:g}%): "
               f"{summary['num_positive_transfers']} of {summary['num_transfer_pairs']} pairs")
  benchmarks = summary.get("benchmarks", {})
  if benchmarks:
    names = list(benchmarks)
    sources = list(dict.fromkeys(s for b in benchmarks.values() for s in b["scores"]))
    rows = [("source", *(f"{n} ({len(benchmarks[n]['tasks'])} tasks)" for n in names))]
    for source in sources:
      cells = []
      for n in names:
        v = benchmarks[n]["scores"].get(source)
        cells.append("-" if v is None else f"{v['mean']:.2f} +- {v['std']:.2f}")
      rows.append((source, *cells))
    lines += [""] + format_table(rows)
  lines += [f"note: {n}" for n in summary["notes"]]
  return "\n".join(lines)
