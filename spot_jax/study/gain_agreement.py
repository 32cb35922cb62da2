"""Whether two studies' transfer gains agree, target by target, over the sources both ran.

The affinity paper (Feng et al., EMNLP 2023, §4.6.4) checks that what prompt tuning says about a
source carries over to full fine-tuning: 20 random sources transferred to RTE (in the pool) and
MRPC (outside it) by both, and the Spearman correlation of the two gains per target (0.54 on
RTE, 0.13 on MRPC). `gain_agreement` computes that from the two studies' results tables
(gain = a source's mean score minus the target's baseline mean, as `spot-jax study analyze`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from spot_jax.study import analysis
from spot_jax.study.results import Results, StudyTableError, write_csv

COLUMNS = ("target", "num_sources", "spearman", "p_value", "pearson", "note")


def gain_agreement(first: Results, second: Results) -> list[dict[str, Any]]:
  """Per target both studies ran: the sources (other than the target) with a finite gain in
  both, and the Spearman rho (and Pearson r) between their gains in `first` and `second`.
  Raises StudyTableError when the studies share no target."""
  a, b = analysis.analyze(first), analysis.analyze(second)
  targets = [t for t in a.targets if t in b.targets]
  if not targets:
    raise StudyTableError(f"{first.path} and {second.path} share no target (targets "
                          f"{a.targets} and {b.targets}); compare studies of the same targets")
  rows = []
  for target in targets:
    ja, jb = a.targets.index(target), b.targets.index(target)
    shared = [s for s in a.sources if s != target and s in b.sources]
    pairs = [(a.gain[a.sources.index(s), ja], b.gain[b.sources.index(s), jb]) for s in shared]
    pairs = np.array([p for p in pairs if np.isfinite(p).all()], np.float64).reshape(-1, 2)
    rho, p_value, note = analysis.correlation(pairs[:, 0], pairs[:, 1], "spearman")
    r = analysis.correlation(pairs[:, 0], pairs[:, 1])[0]
    rows.append({"target": target, "num_sources": len(pairs), "spearman": rho,
                 "p_value": p_value, "pearson": r, "note": note or ""})
  return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
  def cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
  lines = [" | ".join(COLUMNS)] + [" | ".join(cell(row[c]) for c in COLUMNS) for row in rows]
  return "\n".join(lines)


def write(rows: Sequence[dict[str, Any]], path: str) -> str:
  write_csv(path, COLUMNS, [[row[c] for c in COLUMNS] for row in rows])
  return path
