"""The study tables: transfer results, transfer predictions and task-similarity matrices.

Results CSV (header must contain `source,target,seed,score`; other columns are kept as text):

  source,target,seed,score,metric,step
  none,super_glue_rte,0,61.2,accuracy,1000      <- `none`: the target trained from scratch
  glue_mnli,super_glue_rte,0,80.1,accuracy,1000

Scores are on a 0-100 scale (correlation metrics such as MCC may be negative, down to -100).
Every target needs at least one `none` row (its baseline). The
aggregate over seeds per (source, target) is the mean and the sample standard deviation (ddof=1)
when there are two or more seeds, 0 with a single seed.

Predictions CSV: `target,source,score`, higher = predicted more transferable.
Similarity CSV (`spot-jax library similarity`): `task,<t1>,<t2>,...`, one row per task.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from spot_jax.fileio import atomic_write_bytes

BASELINE = "none"
RESULT_COLUMNS = ("source", "target", "seed", "score")
PREDICTION_COLUMNS = ("target", "source", "score")


class StudyTableError(ValueError):
  """A results, predictions, sizes or similarity CSV that cannot be used as it is."""


@dataclasses.dataclass(frozen=True)
class Results:
  """One row per run: `score[i]` of training `target[i]` from `source[i]` with `seed[i]`."""

  path: str
  source: tuple[str, ...]
  target: tuple[str, ...]
  seed: tuple[str, ...]
  score: np.ndarray  # [rows] float64, 0-100 (-100 for negative correlations).
  metric: str | None = None  # The `metric` column when it holds a single value.

  @property
  def targets(self) -> list[str]:
    return sorted(set(self.target))

  @property
  def sources(self) -> list[str]:
    """Every source, sorted, `none` first."""
    return sort_sources(set(self.source))


@dataclasses.dataclass(frozen=True)
class Aggregate:
  """Mean and std over seeds per (source, target); NaN where a pair was not run."""

  sources: list[str]  # `none` first when present, then sorted.
  targets: list[str]  # Sorted.
  mean: np.ndarray  # [sources, targets]
  std: np.ndarray  # [sources, targets]
  count: np.ndarray  # [sources, targets] int, the number of seeds.

  def cell(self, source: str, target: str) -> tuple[float, float]:
    i, j = self.sources.index(source), self.targets.index(target)
    return float(self.mean[i, j]), float(self.std[i, j])


@dataclasses.dataclass(frozen=True)
class Predictions:
  """One row per (target, source): the predicted transferability `score[i]`."""

  path: str
  target: tuple[str, ...]
  source: tuple[str, ...]
  score: np.ndarray  # [rows] float64.

  def for_target(self, target: str) -> dict[str, float]:
    return {s: float(v) for t, s, v in zip(self.target, self.source, self.score) if t == target}


def sort_sources(sources: Iterable[str]) -> list[str]:
  """Sorted source names with the `none` baseline first."""
  sources = set(sources)
  return ([BASELINE] if BASELINE in sources else []) + sorted(sources - {BASELINE})


# ----------------------------------------------------------------------------- reading


def read_csv_rows(path: str, required: Sequence[str], what: str
                  ) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
  """The header and (line number, row) of a CSV holding at least the `required` columns."""
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM (Excel) is skipped.
      reader = csv.DictReader(f)
      header = [name.strip() for name in (reader.fieldnames or [])]
      missing = [c for c in required if c not in header]
      if missing:
        raise StudyTableError(
            f"{path}: {what} needs the columns {','.join(required)}; missing {missing} "
            f"(header: {','.join(header) or 'empty file'}). Fix the header line.")
      reader.fieldnames = header
      rows = []
      for row in reader:
        if None in row or any(v is None for v in row.values()):
          raise StudyTableError(f"{path}, line {reader.line_num}: expected {len(header)} "
                                "comma-separated fields as in the header")
        if any(v.strip() for v in row.values()):
          rows.append((reader.line_num, {k: v.strip() for k, v in row.items()}))
  except UnicodeDecodeError as e:
    raise StudyTableError(f"{path} is not a text CSV file ({e})") from None
  return header, rows


def parse_score(path: str, line: int, text: str, low: float = -math.inf,
                high: float = math.inf, column: str = "score") -> float:
  """A finite float within [low, high] from a CSV cell, else an error naming file and line."""
  try:
    value = float(text)
  except ValueError:
    raise StudyTableError(f"{path}, line {line}: {column} {text!r} is not a number") from None
  if not math.isfinite(value):
    raise StudyTableError(f"{path}, line {line}: {column} {text!r} is not finite; "
                          "remove the row or rerun that experiment")
  if not low <= value <= high:
    raise StudyTableError(f"{path}, line {line}: {column} {value} is outside [{low:g}, "
                          f"{high:g}]; scores are on a 0-100 scale (multiply fractions by 100; "
                          "correlations such as MCC may go down to -100)")
  return value


def check_percent_scale(path: str, scores: Sequence[float]) -> None:
  """Refuses scores that look like fractions (all within [-1, 1], some strictly between):
  the table's scale is 0-100, and gains or error reductions computed on fractions are wrong."""
  values = np.asarray(scores, np.float64)
  if values.size and np.all(np.abs(values) <= 1) and np.any(np.abs(values) % 1 > 0):
    raise StudyTableError(
        f"{path}: every score lies within [-1, 1] (e.g. {values[np.abs(values) % 1 > 0][0]!r})"
        ": they look like fractions, but scores are on a 0-100 scale. Multiply the score "
        "column by 100")


def read_results(path: str) -> Results:
  """Reads and validates a results CSV (see the module docstring)."""
  header, rows = read_csv_rows(path, RESULT_COLUMNS, "a results table")
  if not rows:
    raise StudyTableError(f"{path}: no result rows below the header")
  seen: dict[tuple[str, str, str], int] = {}
  sources, targets, seeds, scores = [], [], [], []
  for line, row in rows:
    key = (row["source"], row["target"], row["seed"])
    for name, value in zip(("source", "target", "seed"), key):
      if not value:
        raise StudyTableError(f"{path}, line {line}: empty {name}")
    if key in seen:
      raise StudyTableError(f"{path}, line {line}: duplicate row for source={key[0]} "
                            f"target={key[1]} seed={key[2]} (first at line {seen[key]}); "
                            "keep one row per (source, target, seed)")
    seen[key] = line
    scores.append(parse_score(path, line, row["score"], -100.0, 100.0))
    sources.append(key[0])
    targets.append(key[1])
    seeds.append(key[2])
  check_percent_scale(path, scores)
  with_baseline = {t for s, t in zip(sources, targets) if s == BASELINE}
  for line, row in rows:
    if row["target"] not in with_baseline:
      raise StudyTableError(
          f"{path}, line {line}: target {row['target']!r} has no baseline; add rows with "
          f"source={BASELINE} (the target trained from scratch) for it")
  metrics = {row.get("metric", "") for _, row in rows} - {""}
  return Results(path=path, source=tuple(sources), target=tuple(targets), seed=tuple(seeds),
                 score=np.asarray(scores, np.float64),
                 metric=metrics.pop() if len(metrics) == 1 else None)


def read_predictions(path: str) -> Predictions:
  """Reads a `target,source,score` CSV; scores must be finite, pairs unique."""
  _, rows = read_csv_rows(path, PREDICTION_COLUMNS, "a predictions table")
  if not rows:
    raise StudyTableError(f"{path}: no prediction rows below the header")
  seen: dict[tuple[str, str], int] = {}
  for line, row in rows:
    key = (row["target"], row["source"])
    if not all(key):
      raise StudyTableError(f"{path}, line {line}: empty target or source")
    if key in seen:
      raise StudyTableError(f"{path}, line {line}: duplicate prediction for target={key[0]} "
                            f"source={key[1]} (first at line {seen[key]})")
    seen[key] = line
  scores = [parse_score(path, line, row["score"]) for line, row in rows]
  return Predictions(path=path, target=tuple(r["target"] for _, r in rows),
                     source=tuple(r["source"] for _, r in rows),
                     score=np.asarray(scores, np.float64))


def read_sizes(path: str) -> dict[str, float]:
  """A `task,size` CSV (training-set sizes for the data_size baseline)."""
  _, rows = read_csv_rows(path, ("task", "size"), "a sizes table")
  sizes: dict[str, float] = {}
  for line, row in rows:
    if row["task"] in sizes:
      raise StudyTableError(f"{path}, line {line}: duplicate task {row['task']!r}")
    sizes[row["task"]] = parse_score(path, line, row["size"], 0.0, column="size")
  return sizes


def read_similarity_matrix(path: str) -> tuple[list[str], np.ndarray]:
  """(tasks, similarity [T, T]) from `task,<t1>,...`; rows may come in any order."""
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      lines = list(csv.reader(f))
  except UnicodeDecodeError as e:
    raise StudyTableError(f"{path} is not a text CSV file ({e})") from None
  lines = [[cell.strip() for cell in line] for line in lines if any(c.strip() for c in line)]
  if not lines or not lines[0] or lines[0][0] != "task" or len(lines[0]) < 2:
    raise StudyTableError(f"{path}: a similarity matrix starts with the header "
                          "task,<task1>,<task2>,... (as written by `spot-jax library similarity`)")
  tasks = lines[0][1:]
  if len(set(tasks)) != len(tasks):
    raise StudyTableError(f"{path}, line 1: a task appears twice in the header")
  rows: dict[str, np.ndarray] = {}
  for number, line in enumerate(lines[1:], start=2):
    if len(line) != len(tasks) + 1:
      raise StudyTableError(f"{path}, line {number}: expected {len(tasks) + 1} fields")
    if line[0] not in tasks or line[0] in rows:
      raise StudyTableError(f"{path}, line {number}: row task {line[0]!r} is not in the header "
                            "or appears twice")
    rows[line[0]] = np.asarray([parse_score(path, number, v, column=f"similarity to {t}")
                                for t, v in zip(tasks, line[1:])])
  if set(rows) != set(tasks):
    raise StudyTableError(f"{path}: no rows for {sorted(set(tasks) - set(rows))}; the matrix "
                          "must be square")
  return tasks, np.stack([rows[t] for t in tasks])


# ----------------------------------------------------------------------------- writing


def write_results(path: str, rows: Iterable[Mapping[str, Any]]) -> None:
  """Writes result dicts (source, target, seed, score, then any extra keys) atomically."""
  rows = list(rows)
  columns = list(RESULT_COLUMNS)
  for row in rows:
    missing = [c for c in RESULT_COLUMNS if c not in row]
    if missing:
      raise StudyTableError(f"write_results({path!r}): a row lacks {missing}: {dict(row)}")
    columns += [k for k in row if k not in columns]
  write_csv(path, columns, [[row.get(c, "") for c in columns] for row in rows])


def format_cell(value: Any) -> str:
  """CSV text of a cell: floats with repr precision, NaN as an empty cell."""
  if isinstance(value, (float, np.floating)):
    return "" if math.isnan(value) else repr(float(value))
  return str(value)


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  writer.writerows([format_cell(v) for v in row] for row in rows)
  atomic_write_bytes(path, buffer.getvalue().encode())


def jsonable(value: Any) -> Any:
  """value with NaN/inf floats as None and numpy scalars as Python numbers (for JSON)."""
  if isinstance(value, Mapping):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [jsonable(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def write_json(path: str, data: Any) -> None:
  """Writes data as indented JSON (NaN as null) atomically."""
  text = json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n"
  atomic_write_bytes(path, text.encode())


def format_table(rows: Sequence[Sequence[str]]) -> list[str]:
  """Left-aligned text columns, two spaces apart."""
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def write_matrix(path: str, sources: Sequence[str], targets: Sequence[str],
                 matrix: np.ndarray) -> None:
  """A [sources, targets] matrix as `source,<t1>,...` with one row per source."""
  write_csv(path, ["source", *targets],
            [[s, *matrix[i]] for i, s in enumerate(sources)])


# ----------------------------------------------------------------------------- aggregates


def relative_error_reduction(score: Any, baseline: Any) -> np.ndarray:
  """(score - baseline) / (100 - baseline) * 100, NaN where baseline == 100 (SPoT §3.1).

  The share of the baseline's remaining error (on the 0-100 scale) that a transfer removes,
  in percent: SPoT Figure 3, Tables 3 ("Rel.") and 7, Figures 5 and 8.
  """
  score, baseline = np.asarray(score, np.float64), np.asarray(baseline, np.float64)
  room = 100.0 - baseline
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(room > 0, (score - baseline) / np.where(room > 0, room, 1.0) * 100, np.nan)


def aggregate(results: Results) -> Aggregate:
  """Mean and std (ddof=1 with >= 2 seeds, else 0) over seeds per (source, target)."""
  sources, targets = results.sources, results.targets
  cells: dict[tuple[int, int], list[float]] = {}
  for s, t, v in zip(results.source, results.target, results.score):
    cells.setdefault((sources.index(s), targets.index(t)), []).append(float(v))
  shape = (len(sources), len(targets))
  mean, std, count = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, int)
  for (i, j), values in cells.items():
    mean[i, j] = np.mean(values)
    std[i, j] = np.std(values, ddof=1) if len(values) >= 2 else 0.0
    count[i, j] = len(values)
  return Aggregate(sources=sources, targets=targets, mean=mean, std=std, count=count)
