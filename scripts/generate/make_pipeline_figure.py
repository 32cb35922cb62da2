"""Draws docs/pipeline.png, the README's picture of the SPoT pipeline (matplotlib only).

  python scripts/generate/make_pipeline_figure.py
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).resolve().parents[2] / "docs" / "pipeline.png"

# (x, y, title, detail, colour) of each stage box, in axis units (0-16 x 0-7).
BOXES = {
    "model": (0.3, 4.6, "frozen T5 1.1", "T5X checkpoint\n(or the demo's tiny model)", "#dbe9f6"),
    "sources": (4.1, 4.6, "source prompts", "prompt tuning on\nsource tasks", "#e3f1de"),
    "library": (7.9, 4.6, "prompt library", "values: best prompts\nkeys: early prompts", "#fdf0d5"),
    "target": (0.3, 1.0, "new target task", "tune KEY_STEP steps:\nthe task embedding", "#dbe9f6"),
    "retrieve": (4.1, 1.0, "retrieval", "rank sources: similarity\nmetrics, affinity head", "#fde2e1"),
    "transfer": (7.9, 1.0, "transfer", "best of top-k, weighted\naverage, task mixture", "#e3f1de"),
    "study": (11.7, 4.6, "transferability study", "source x target x seed\n-> results.csv", "#ece3f5"),
    "report": (11.7, 1.0, "analysis & report", "transfer matrix, rankings,\nheatmaps, report.html", "#ece3f5"),
}
ARROWS = [("model", "sources"), ("sources", "library"), ("model", "target"),
          ("target", "retrieve"), ("library", "retrieve"), ("retrieve", "transfer"),
          ("library", "study"), ("study", "report"), ("transfer", "report")]
W, H = 3.4, 1.7


def centre(name: str) -> tuple[float, float]:
  x, y = BOXES[name][:2]
  return x + W / 2, y + H / 2


def main() -> None:
  figure = Figure(figsize=(12, 5.4))
  FigureCanvasAgg(figure)
  ax = figure.add_axes((0, 0, 1, 1))
  ax.set_xlim(0, 15.4)
  ax.set_ylim(0, 7.2)
  ax.axis("off")
  for name, (x, y, title, detail, colour) in BOXES.items():
    ax.add_patch(FancyBboxPatch((x, y), W, H, boxstyle="round,pad=0.05,rounding_size=0.2",
                                facecolor=colour, edgecolor="0.35", linewidth=1.2))
    ax.text(x + W / 2, y + H - 0.45, title, ha="center", va="center", fontsize=12.5,
            weight="bold")
    ax.text(x + W / 2, y + 0.6, detail, ha="center", va="center", fontsize=10, color="0.2")
  for a, b in ARROWS:
    (xa, ya), (xb, yb) = centre(a), centre(b)
    if abs(ya - yb) < 1e-6:  # horizontal: edge to edge.
      start, end = (xa + W / 2, ya), (xb - W / 2, yb)
    elif abs(xa - xb) < 1e-6:  # vertical.
      start, end = (xa, ya - H / 2 if ya > yb else ya + H / 2), (xb, yb + H / 2 if ya > yb
                                                                else yb - H / 2)
    else:  # diagonal, from the bottom of a to the top of b.
      start, end = (xa, ya - H / 2), (xb - 0.6, yb + H / 2)
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16,
                                 linewidth=1.4, color="0.3"))
  ax.text(7.7, 6.85, "spot-jax: soft prompt transfer on frozen T5 1.1 (JAX/Flax, T5X checkpoints)",
          ha="center", va="center", fontsize=14, weight="bold")
  ax.text(7.7, 0.35, "every stage: a Python call in spot_jax.app.pipeline and a `spot-jax` "
          "subcommand, handing the next stage files (run dirs, library, CSV tables)",
          ha="center", va="center", fontsize=10, color="0.3")
  OUT.parent.mkdir(exist_ok=True)
  figure.savefig(OUT, dpi=110)
  print(f"wrote {OUT}")


if __name__ == "__main__":
  main()
