"""Evaluating scorers against brute force (Feng et al. 2023, Tables 1-2) and the head's
ablations (beta, M, leave-family-out).

Every scorer ranks the sources of each evaluated target (by default the head's held-out targets)
and `spot_jax.study.ranking` scores the ranking: Spearman, Pearson, Regret@1, Regret@3 (averaged
over targets), plus the mean gain of the top-1 source and of the best of the top-3 sources
(score points over the target's baseline). `random` is the exact expectation over uniformly
random rankings.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from spot_jax.affinity import data as data_lib
from spot_jax.library import scorers as scorers_lib
from spot_jax.study import ranking, results

COLUMNS = ("spearman", "pearson", "regret_at_1", "regret_at_3", "top1_gain", "top3_best_gain")
# Feng et al. 2023 Figure 3: the best of the top-1 / top-3 sources of the head against the two
# cosine baselines (D_cos = `cosine`, D^_cos = `per_token_cosine`) and the oracle.
FIGURE3_COLUMNS = ("top1_gain", "top3_best_gain")
FIGURE3_BASELINES = ("cosine", "per_token_cosine", "brute_force")
NO_TRANSFER = "no_transfer"
PER_TARGET = "per_target"  # a row's {target: {column: value}} (not a CSV column).
NDCG = "ndcg"  # the extra column `affinity evaluate --ndcg_relevance` adds (ranking.evaluate's).


@dataclasses.dataclass(frozen=True)
class Inputs:
  """A study's aggregated results, its gains and every task's keys [K, L, E]."""

  table: results.Aggregate
  gains: dict[data_lib.Pair, float]
  task_keys: dict[str, np.ndarray]

  @property
  def sources(self) -> list[str]:
    return sorted({s for s, _ in self.gains})


def load_inputs(results_path: str, *, library: str | None = None, study_dir: str | None = None,
                model: str | None = None) -> Inputs:
  """Results CSV + keys from a prompt library (`library`, one frozen `model`) or a study
  directory's source and baseline runs (`study_dir`)."""
  table = results.aggregate(results.read_results(results_path))
  gains = data_lib.gains_from_means(ranking.true_transfer(table))
  if (library is None) == (study_dir is None):
    raise ValueError("Give the keys' origin: a prompt library (--library) or the study "
                     "directory (--study_dir), one of them")
  if library is not None:
    from spot_jax.library.store import PromptLibrary
    lib = PromptLibrary(library)
    keys = data_lib.keys_from_library(lib, lib.resolve_model(model) if model else None)
  else:
    keys = data_lib.keys_from_study(study_dir)
  missing = sorted({task for pair in gains for task in pair} - set(keys))
  if missing:  # up front, before any head trains or scores.
    where = (f"the library {library}" + (f" (model {model})" if model else "")
             if library is not None else f"the study {study_dir}")
    fix = ("add their runs or prompts to the library (`spot-jax library add`)"
           if library is not None else "finish their source and baseline runs")
    raise data_lib.AffinityDataError(
        f"{results_path} has tasks with no keys in {where}: {', '.join(missing)}; {fix}, or "
        "drop their rows from the results")
  return Inputs(table, gains, keys)


def restrict(table: results.Aggregate, targets: Sequence[str]) -> results.Aggregate:
  """The aggregate of the given targets only."""
  unknown = sorted(set(targets) - set(table.targets))
  if unknown:
    raise ranking.RankingError(f"Targets {unknown} are not in the results")
  cols = [table.targets.index(t) for t in sorted(targets)]
  return results.Aggregate(table.sources, sorted(targets), table.mean[:, cols],
                           table.std[:, cols], table.count[:, cols])


def summarize(report: Mapping[str, Any]) -> dict[str, float]:
  """The Table 1/2 columns of one `ranking.evaluate` report."""
  avg = report["average"]
  per = report["targets"].values()
  def gain(k: int) -> float:  # ranking's gain_of_top_k: M_k - b.
    values = [m["curve"]["gain_of_top_k"][min(k, len(m["curve"]["k"])) - 1] for m in per]
    return float(np.mean(values)) if values else math.nan
  return {"spearman": avg["spearman"], "pearson": avg["pearson"],
          "regret_at_1": avg["regret_at_1"], "regret_at_3": avg["regret_at_3"],
          "top1_gain": gain(1), "top3_best_gain": gain(3), NDCG: avg["ndcg"],
          # Each target's values of the averaged columns (confidence intervals over targets:
          # spot_jax.study.affinity_intervals).
          PER_TARGET: per_target_values(report),
          # Table 1: each target's score after transfer from the top-1 source, and baseline.
          "top1_scores": {t: m["curve"]["best_of_top_k"][0] for t, m in report["targets"].items()},
          "baselines": {t: m["baseline"] for t, m in report["targets"].items()}}


def per_target_values(report: Mapping[str, Any]) -> dict[str, dict[str, float]]:
  """{target: {column: value}} of one `ranking.evaluate` report, for PER_TARGET_COLUMNS (the
  top-k gains as `summarize` computes them: M_k - b of the target's curve)."""
  out = {}
  for target, m in report["targets"].items():
    k = m["curve"]["gain_of_top_k"]
    out[target] = {"spearman": float(m["spearman"]), "pearson": float(m["pearson"]),
                   "regret_at_1": float(m["regret_at_1"]),
                   "regret_at_3": float(m["regret_at_3"]),
                   "top1_gain": float(k[0]), "top3_best_gain": float(k[min(3, len(k)) - 1])}
  return out


def score_table(inputs: Inputs, scorer: Any, targets: Sequence[str]) -> dict[str, dict[str, float]]:
  """{target: {source: score}} of one scorer for the targets, over every source."""
  return scorers_lib.predictions(scorer, inputs.task_keys, targets, inputs.sources)


def compare(inputs: Inputs, named: Mapping[str, Any], targets: Sequence[str],
            ndcg_relevance: str = "rank") -> list[dict[str, Any]]:
  """One row per scorer (`named`: label -> scorer, or None for the expected random ranking)
  plus `brute_force` (the true ranking: the upper bound)."""
  table = restrict(inputs.table, targets)
  truth = ranking.true_transfer(table)
  rows = []
  for label, scorer in named.items():
    predicted = None if scorer is None else score_table(inputs, scorer, targets)
    report = ranking.evaluate(table, label, predicted, None, label, ndcg_relevance)
    rows.append({"method": label, **summarize(report)})
  oracle = {t: {s: v for s, v in by_source.items() if s not in (results.BASELINE, t)}
            for t, by_source in truth.items()}
  rows.append({"method": "brute_force", **summarize(
      ranking.evaluate(table, "brute_force", oracle, None, "brute_force", ndcg_relevance))})
  return rows


def seed_rows(rows_per_seed: Sequence[Sequence[dict[str, Any]]], label: str) -> dict[str, Any]:
  """Mean and std (ddof=1) over seeds of the row named `label` of each seed's comparison."""
  picked = [next(r for r in rows if r["method"] == label) for rows in rows_per_seed]
  out: dict[str, Any] = {"method": f"{label} (mean over {len(picked)} seeds)"}
  for column in (*COLUMNS, NDCG):
    values = np.array([r[column] for r in picked], np.float64)
    finite = values[np.isfinite(values)]
    out[column] = float(finite.mean()) if finite.size else math.nan
    out[f"{column}_std"] = float(finite.std(ddof=1)) if finite.size >= 2 else 0.0
  if all(PER_TARGET in r for r in picked):  # each target's value averaged over the seeds.
    targets = sorted(set.intersection(*(set(r[PER_TARGET]) for r in picked)))
    out[PER_TARGET] = {t: {c: float(np.nanmean([r[PER_TARGET][t][c] for r in picked]))
                           for c in picked[0][PER_TARGET][t]} for t in targets}
  return out


def table1_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
  """Feng et al. 2023 Table 1: (header, rows) with, per method, each target's score after
  transfer from the method's top-1 source and MEAN(Δ), the mean gain over the baselines; a
  first `no_transfer` row holds the baselines. Rows without per-target scores (means over
  seeds) are left out; `random (expected)` is the expectation of one uniform draw."""
  scored = [r for r in rows if "top1_scores" in r]
  if not scored:
    return [], []
  targets = sorted(scored[0]["top1_scores"])
  header = ["method", *targets, "mean_delta"]
  out = [[NO_TRANSFER, *(scored[0]["baselines"][t] for t in targets), math.nan]]
  out += [[r["method"], *(r["top1_scores"][t] for t in targets), r["top1_gain"]] for r in scored]
  return header, out


def figure3_rows(rows: Sequence[Mapping[str, Any]], head: str = "affinity"
                 ) -> list[dict[str, Any]]:
  """Feng et al. 2023 Figure 3: the mean gain of the best of the top-1 and top-3 sources for
  the head rows (names starting with `head`), D_cos, D^_cos and the oracle (brute force)."""
  return [{"method": r["method"], **{c: r[c] for c in FIGURE3_COLUMNS},
           **{f"{c}_std": r[f"{c}_std"] for c in FIGURE3_COLUMNS if f"{c}_std" in r}}
          for r in rows if str(r["method"]).startswith(head) or r["method"] in FIGURE3_BASELINES]


def format_grid(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """Rows of a method name and numbers as aligned text (NaN as -)."""
  def cell(value: Any) -> str:
    if isinstance(value, float):
      return "-" if math.isnan(value) else f"{value:.2f}"
    return str(value)
  return "\n".join(results.format_table([list(header)] + [[cell(v) for v in r] for r in rows]))


def format_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
  """The comparison as aligned text; `x ± s` where a std over seeds is known."""
  def cell(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
      return "-"
    std = row.get(f"{column}_std")
    return f"{value:.3f}" + (f" ± {std:.3f}" if std is not None else "")
  table = [("method", *columns)] + [(str(r["method"]), *(cell(r, c) for c in columns))
                                    for r in rows]
  return "\n".join(results.format_table(table))


def write_rows(path: str, rows: Sequence[Mapping[str, Any]],
               columns: Sequence[str] = COLUMNS) -> None:
  header = ["method", *columns, *(f"{c}_std" for c in columns)]
  results.write_csv(path, header, [[r.get(c, "") for c in header] for r in rows])


# ----------------------------------------------------------------------------- ablations


def ablation_curve(inputs: Inputs, train: Callable[[dict[str, Any], str], str],
                   settings: Sequence[dict[str, Any]], out_dir: str, targets_of: Callable[[str],
                   Sequence[str]], seeds: Sequence[int], parameter: str) -> list[dict[str, Any]]:
  """For each setting (config overrides): train heads per seed with `train(overrides,
  head_dir)` (returns the directory of the seeds' heads) and evaluate each seed's head on
  `targets_of(head_dir)`; one row per setting with mean and std over seeds."""
  from spot_jax.affinity.predict import AffinityHead, HeadScorer, head_dirs
  rows = []
  for overrides in settings:
    value = overrides[parameter]
    head_dir = os.path.join(out_dir, f"{parameter}_{value}")
    path = train(overrides, head_dir)
    targets = targets_of(path)
    per_seed = []
    for directory in head_dirs(path):
      scorer = HeadScorer([AffinityHead.load(directory)], "affinity")
      per_seed.append(compare(inputs, {"affinity": scorer}, targets))
    row = seed_rows(per_seed, "affinity")
    row.update({"parameter": parameter, "value": value, "method": "affinity"})
    rows.append(row)
  return rows


def plot_curve(path: str, rows: Sequence[Mapping[str, Any]], parameter: str) -> None:
  """Spearman, top-1 and best-of-top-3 gain against the ablated parameter (mean ± std)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  x = [r["value"] for r in rows]
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  for ax, columns in zip(axes, (("spearman",), ("top1_gain", "top3_best_gain"))):
    for column in columns:
      ax.errorbar(x, [r[column] for r in rows], yerr=[r[f"{column}_std"] for r in rows],
                  marker="o", capsize=3, label=column)
    ax.set_xlabel(parameter)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
