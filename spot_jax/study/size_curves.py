"""SPoT's per-model curves (Vu et al., ACL 2022, Figure 1 and Appendix A Table 4): the benchmark
average against model size, one line per approach, from one study per (size, tuning).

A model-tuning study (gin_configs/study/spot_sizes/model_<size>.yaml) gives MODELTUNING (its
baselines, source `none`) and MULTI-TASKMODELTUNING (its transfers); a prompt-tuning study
(prompt_<size>.yaml) gives PROMPTTUNING (baselines) and SPOT (transfers). Each point is
`analysis.benchmark_averages`' average (SuperGLUE by default, as Figure 1) and its std over
seeds. A study with several transfer sources gives one line per source, labelled with it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from matplotlib.figure import Figure

from spot_jax.study import analysis, plots
from spot_jax.study.results import BASELINE, Results, StudyTableError, format_table, write_csv

# SPoT §2.1: T5 1.1 small, base, large, XL and XXL have 60M, 220M, 770M, 3B and 11B parameters.
PARAMETERS = {"small": 60e6, "base": 220e6, "large": 770e6, "xl": 3e9, "xxl": 11e9}
# (tuning, baseline?) -> the approach's name in SPoT Figure 1.
APPROACHES = {("model", True): "ModelTuning", ("model", False): "Multi-task ModelTuning",
              ("prompt", True): "PromptTuning", ("prompt", False): "SPoT"}
TUNINGS = ("model", "prompt")
BENCHMARKS = ("superglue", "glue")
CSV_NAME, PNG_NAME = "size_curves.csv", "size_curves.png"
HEADER = ("approach", "size", "parameters", "score", "std", "seeds", "tasks", "complete")


@dataclasses.dataclass(frozen=True)
class Point:
  approach: str
  size: str
  score: float
  std: float
  seeds: int
  tasks: int
  complete: bool  # every task of the benchmark was a target.

  @property
  def parameters(self) -> float:
    return PARAMETERS[self.size]


def study_points(results: Results, size: str, tuning: str, benchmark: str = "superglue"
                 ) -> list[Point]:
  """The points of one study: its baselines and each transfer source at `size`."""
  if size not in PARAMETERS:
    raise StudyTableError(f"{results.path}: unknown model size {size!r}; choose one of "
                          f"{list(PARAMETERS)}")
  if tuning not in TUNINGS:
    raise StudyTableError(f"{results.path}: tuning {tuning!r} is not one of {TUNINGS}")
  averages, _ = analysis.benchmark_averages(results)
  if benchmark not in averages:
    raise StudyTableError(f"{results.path}: no {benchmark} task among the targets "
                          f"{results.targets}; pass the study's benchmark")
  found = averages[benchmark]
  transfers = [s for s in found["scores"] if s != BASELINE]
  points = []
  for source, score in found["scores"].items():
    name = APPROACHES[(tuning, source == BASELINE)]
    if source != BASELINE and len(transfers) > 1:
      name = f"{name} ({source})"
    points.append(Point(name, size, score["mean"], score["std"], score["seeds"],
                        len(found["tasks"]), found["complete"]))
  return points


def size_curves(studies: Sequence[tuple[str, str, Results]], benchmark: str = "superglue"
                ) -> list[Point]:
  """Every point of the (size, tuning, results) studies, by approach then size."""
  if not studies:
    raise StudyTableError("no study given; pass at least one results.csv per size")
  points = [p for size, tuning, results in studies
            for p in study_points(results, size, tuning, benchmark)]
  seen: dict[tuple[str, str], int] = {}
  for p in points:
    seen[(p.approach, p.size)] = seen.get((p.approach, p.size), 0) + 1
  repeated = sorted(k for k, n in seen.items() if n > 1)
  if repeated:
    raise StudyTableError(f"{repeated[0][0]} at {repeated[0][1]} comes from two studies; give "
                          "one study per size and tuning")
  order = list(PARAMETERS)
  return sorted(points, key=lambda p: (p.approach, order.index(p.size)))


def rows(points: Sequence[Point]) -> list[list[str]]:
  body = [[p.approach, p.size, f"{p.parameters:.0e}", f"{p.score:.1f}", f"{p.std:.1f}",
           str(p.seeds), str(p.tasks), "yes" if p.complete else "no"] for p in points]
  return [list(HEADER)] + body


def plot(points: Sequence[Point], path: str, benchmark: str = "superglue") -> None:
  """Figure 1's layout: score against parameters (log scale), a line with std bars per
  approach."""
  figure = Figure(figsize=(6.5, 4.5))
  ax = figure.add_subplot()
  for approach in dict.fromkeys(p.approach for p in points):
    line = [p for p in points if p.approach == approach]
    ax.errorbar([p.parameters for p in line], [p.score for p in line],
                yerr=[p.std for p in line], marker="o", capsize=3, label=approach)
  ax.set_xscale("log")
  sizes = sorted({p.size for p in points}, key=list(PARAMETERS).index)
  ax.set_xticks([PARAMETERS[s] for s in sizes], labels=sizes)
  ax.minorticks_off()
  ax.set_xlabel("model size (parameters)")
  ax.set_ylabel(f"{'SuperGLUE' if benchmark == 'superglue' else 'GLUE'} score")
  ax.grid(alpha=0.3)
  ax.legend()
  plots.save_figure(figure, path)


def write(points: Sequence[Point], out_dir: str, benchmark: str = "superglue"
          ) -> tuple[str, str]:
  """size_curves.csv and size_curves.png in `out_dir`."""
  os.makedirs(out_dir, exist_ok=True)
  csv_path, png_path = os.path.join(out_dir, CSV_NAME), os.path.join(out_dir, PNG_NAME)
  write_csv(csv_path, HEADER, [[p.approach, p.size, p.parameters, p.score, p.std, p.seeds,
                                p.tasks, int(p.complete)] for p in points])
  plot(points, png_path, benchmark)
  return csv_path, png_path


def format_points(points: Sequence[Point]) -> str:
  return "\n".join(format_table(rows(points)))
