"""CurveGrad (Bingel and Søgaard 2017, adapted by Vu et al. 2020; a baseline of TuPaTE, Zhou et
al. 2022, §4.2): a task is represented by the gradients of its tuning loss curve, and a source
scores the cosine of its curve-gradient vector with the target's. It reads the tasks' training
curves (`metrics.jsonl`), not the keys.

  curve_gradients   the slope of a loss curve, d loss / d (fraction of training), at
                    `FRACTIONS` of training (Bingel and Søgaard's learning-curve features:
                    10, 20, 30, 50 and 70 % of training), by finite differences on the logged
                    curve (`np.gradient`, interpolated between logged steps)
  task_embedding    the mean over a task's runs (seeds) of their curve gradients
  CurveGradScorer   `curvegrad:STUDY_DIR`: each task's runs trained from scratch in a study
                    (its source runs, else its baseline runs), cosine of the embeddings

*(choices)* the curve is the per-token training loss (`loss_per_token`: comparable across
batch sizes and lengths); the x axis is the fraction of the run's TRAIN_STEPS so runs of
different lengths compare; BERT fine-tuning curves in the papers, the method's own tuning
curves here (any method: prompt tuning, full fine-tuning...).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Sequence

import numpy as np

from spot_jax.library.similarity import LibraryError

FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7)
METRICS_FILE = "metrics.jsonl"
RUN_SUMMARY = "run.json"


def read_loss_curve(model_dir: str, metric: str = "loss_per_token"
                    ) -> tuple[np.ndarray, np.ndarray, int]:
  """(steps [n], losses [n], the run's train steps) from a run's training log; a step logged
  twice (a resumed run redoes an interval) keeps its last value."""
  path = os.path.join(model_dir, METRICS_FILE)
  curve: dict[int, float] = {}
  try:
    with open(path) as f:
      for line in f:
        record = json.loads(line)
        if record.get("split") == "train" and metric in record:
          curve[int(record["step"])] = float(record[metric])
  except FileNotFoundError:
    raise LibraryError(f"{path} not found: CurveGrad needs the run's training log") from None
  try:
    with open(os.path.join(model_dir, RUN_SUMMARY)) as f:
      total = int(json.load(f)["train_steps"])
  except (FileNotFoundError, KeyError, ValueError):
    total = max(curve, default=0)
  if len(curve) < 2:
    raise LibraryError(f"{path} logs {len(curve)} training losses; CurveGrad needs a curve "
                       "(train with a LOG_PERIOD well below TRAIN_STEPS)")
  steps = np.asarray(sorted(curve), np.float64)
  return steps, np.asarray([curve[int(s)] for s in steps], np.float64), total


def curve_gradients(steps: np.ndarray, losses: np.ndarray, total_steps: int,
                    fractions: Sequence[float] = FRACTIONS) -> np.ndarray:
  """d loss / d (fraction of training) at each of `fractions` [F]."""
  steps, losses = np.asarray(steps, np.float64), np.asarray(losses, np.float64)
  if steps.ndim != 1 or steps.shape != losses.shape or len(steps) < 2:
    raise LibraryError(f"A loss curve needs >= 2 (step, loss) points; got {steps.shape} steps "
                       f"and {losses.shape} losses")
  x = steps / float(total_steps)
  slopes = np.gradient(losses, x)
  return np.interp(np.asarray(fractions, np.float64), x, slopes)


def task_embedding(model_dirs: Sequence[str], fractions: Sequence[float] = FRACTIONS
                   ) -> np.ndarray:
  """The mean over runs of their curve gradients [F]."""
  if not model_dirs:
    raise LibraryError("CurveGrad needs at least one run of the task")
  return np.mean([curve_gradients(*read_loss_curve(d), fractions) for d in model_dirs], axis=0)


def cosine(query: np.ndarray, rows: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(query)
  return rows @ query / np.where(norms > 0, norms, 1.0)


@dataclasses.dataclass
class CurveGradScorer:
  """cos(CurveGrad(target), CurveGrad(task of each pool entry)) over a study's runs."""

  study_dir: str
  cache: dict = dataclasses.field(default_factory=dict)

  @property
  def name(self) -> str:
    return f"curvegrad:{self.study_dir}"

  def runs(self, task: str) -> list[str]:
    """The task's runs from scratch: its source runs, else its baseline runs."""
    for kind in ("source", "baseline"):
      found = sorted(glob.glob(os.path.join(self.study_dir, "runs", kind, task, "seed_*")))
      if found:
        return found
    raise LibraryError(f"No run of {task!r} in {self.study_dir}/runs/source or runs/baseline: "
                       "CurveGrad reads each task's tuning curve from a study's runs")

  def embed(self, task: str) -> np.ndarray:
    if task not in self.cache:
      self.cache[task] = task_embedding(self.runs(task))
    return self.cache[task]

  def score(self, target_key, pool_keys, *, target=None, pool_tasks=None) -> np.ndarray:
    if target is None or pool_tasks is None or len(pool_tasks) != len(pool_keys):
      raise LibraryError("The curvegrad scorer reads tasks' training curves: it needs the "
                         "target task's name and the task of every pool entry (CLI: --target)")
    query = self.embed(target)
    rows = (np.stack([self.embed(t) for t in pool_tasks]) if len(pool_tasks)
            else np.zeros((0, query.size)))
    return cosine(query, rows)


def load_scorer(study_dir: str) -> CurveGradScorer:
  """The `curvegrad:STUDY_DIR` scorer."""
  if not os.path.isdir(os.path.join(study_dir, "runs")):
    raise LibraryError(f"curvegrad:{study_dir}: not a study directory (no runs/ inside); name "
                       "the STUDY_DIR whose source and baseline runs trained the tasks")
  return CurveGradScorer(study_dir)
