"""Plots of task similarity (matplotlib, Agg canvas: no display, no global backend state)."""

from __future__ import annotations

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial import distance

ANNOTATE_MAX_TASKS = 16  # write the values into the cells up to this many tasks.


def cluster_order(matrix: np.ndarray) -> np.ndarray:
  """Leaf order of an average-linkage clustering on the distance 1 - similarity [T, T]."""
  matrix = np.asarray(matrix, np.float64)
  if len(matrix) < 3:
    return np.arange(len(matrix))
  dist = np.clip(1.0 - (matrix + matrix.T) / 2.0, 0.0, None)
  np.fill_diagonal(dist, 0.0)
  return hierarchy.leaves_list(hierarchy.linkage(distance.squareform(dist, checks=False),
                                                 method="average"))


def similarity_heatmap(tasks: list[str], matrix: np.ndarray, path: str, title: str) -> list[str]:
  """Saves a clustered heatmap of a task-by-task similarity matrix to `path` (PNG).

  Rows and columns are reordered by `cluster_order`; returns the tasks in plotted order.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  matrix = np.asarray(matrix, np.float64)
  order = cluster_order(matrix)
  ordered_tasks = [tasks[i] for i in order]
  ordered = matrix[np.ix_(order, order)]
  size = max(4.0, 0.45 * len(tasks) + 2.5)
  figure = Figure(figsize=(size + 1.2, size))
  FigureCanvasAgg(figure)
  axes = figure.add_subplot(1, 1, 1)
  image = axes.imshow(ordered, cmap="viridis", interpolation="nearest")
  axes.set_xticks(range(len(tasks)), ordered_tasks, rotation=60, ha="right", fontsize=8)
  axes.set_yticks(range(len(tasks)), ordered_tasks, fontsize=8)
  axes.set_title(title, fontsize=10)
  figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="similarity")
  if len(tasks) <= ANNOTATE_MAX_TASKS:
    middle = (np.nanmin(ordered) + np.nanmax(ordered)) / 2.0
    for i in range(len(tasks)):
      for j in range(len(tasks)):
        axes.text(j, i, f"{ordered[i, j]:.2f}", ha="center", va="center", fontsize=7,
                  color="black" if ordered[i, j] > middle else "white")
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  return ordered_tasks
