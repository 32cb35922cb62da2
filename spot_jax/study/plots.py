"""Study figures (matplotlib, Agg canvas, no global pyplot state), written atomically as PNG.

transfer_heatmap       SPoT Figure 3: sources x targets, diverging colours centred at 0
similarity_scatter     SPoT Figures 5/8: one labelled point per source task
The clustered task-similarity heatmap is spot_jax.library.plots.similarity_heatmap.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from spot_jax.fileio import atomic_write_bytes

MAX_ANNOTATED_CELLS = 900


def save_figure(figure: Figure, path: str) -> None:
  buffer = io.BytesIO()
  FigureCanvasAgg(figure)
  figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
  atomic_write_bytes(path, buffer.getvalue())


def _diverging_cmap():
  from matplotlib import colormaps
  return colormaps["RdBu"].with_extremes(bad="0.85")


def _annotate(ax, values: np.ndarray, norm: Normalize, fmt: str) -> None:
  if values.size > MAX_ANNOTATED_CELLS:
    return
  for (i, j), value in np.ndenumerate(values):
    if np.isfinite(value):
      dark = abs(norm(value) - 0.5) > 0.3
      ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=7,
              color="white" if dark else "black")


# Relative error reduction is at most 100% (no error left) and unbounded below (a target near
# 100% whose transfer drops a few points reads -900%): its colours stop at -100% (the error
# doubled), so one such cell cannot wash out the rest; the cells keep their true values.
RELATIVE_ERROR_REDUCTION_LIMIT = 100.0


def colour_limit(values: np.ndarray, limit: float | None = None) -> float:
  """The symmetric colour limit of a heatmap: the largest |value|, at most `limit` (1.0 when
  nothing is finite and non-zero)."""
  finite = np.abs(values[np.isfinite(values)])
  largest = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
  return min(largest, limit) if limit else largest


def transfer_heatmap(sources: Sequence[str], targets: Sequence[str], values: np.ndarray,
                     path: str, title: str, label: str, limit: float | None = None) -> None:
  """values [sources, targets] (NaN = not run, grey); colour limits symmetric around 0, at
  most `limit` (beyond it cells take the end colour and the colour bar shows an arrow)."""
  values = np.asarray(values, np.float64)
  bound = colour_limit(values, limit)
  norm = Normalize(-bound, bound)
  figure = Figure(figsize=(2.5 + 0.7 * len(targets), 1.5 + 0.4 * len(sources)))
  ax = figure.add_subplot()
  image = ax.imshow(values, cmap=_diverging_cmap(), norm=norm, aspect="auto")
  ax.set_xticks(range(len(targets)), targets, rotation=45, ha="right", fontsize=8)
  ax.set_yticks(range(len(sources)), sources, fontsize=8)
  ax.set_xlabel("target task")
  ax.set_ylabel("source task")
  ax.set_title(title)
  _annotate(ax, values, norm, ".1f")
  finite = values[np.isfinite(values)]
  below, above = bool((finite < -bound).any()), bool((finite > bound).any())
  extend = ("neither", "min", "max", "both")[below + 2 * above]
  figure.colorbar(image, ax=ax, label=label, extend=extend)
  save_figure(figure, path)


def similarity_scatter(labels: Sequence[str], x: np.ndarray, y: np.ndarray, path: str,
                       title: str, xlabel: str, ylabel: str) -> None:
  """One labelled point per source: x = similarity to the target, y = transfer."""
  figure = Figure(figsize=(6.0, 4.5))
  ax = figure.add_subplot()
  ax.scatter(x, y, color="tab:blue", zorder=3)
  for label, xi, yi in zip(labels, x, y):
    ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
  ax.axhline(0.0, color="0.6", linewidth=0.8, zorder=1)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  save_figure(figure, path)
