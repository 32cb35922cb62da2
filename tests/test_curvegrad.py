"""CurveGrad (TuPaTE §4.2's baseline): curve gradients of hand-made loss curves, and the
`curvegrad:STUDY_DIR` scorer ranking sources by the cosine of their curve gradients."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spot_jax.library import curvegrad, scorers
from spot_jax.library.similarity import LibraryError

TOTAL = 400


def write_run(model_dir, rate: float, scale: float = 3.0, log_period: int = 4) -> None:
  """A run whose per-token loss is scale * exp(-rate * fraction of training) (+ 0.5)."""
  model_dir.mkdir(parents=True)
  with open(model_dir / "metrics.jsonl", "w") as f:
    for step in range(log_period, TOTAL + 1, log_period):
      loss = 0.5 + scale * np.exp(-rate * step / TOTAL)
      f.write(json.dumps({"step": step, "split": "train", "loss": loss * 100,
                          "loss_per_token": loss}) + "\n")
      if step % 100 == 0:
        f.write(json.dumps({"step": step, "split": "validation", "t/accuracy": 50.0}) + "\n")
  (model_dir / "run.json").write_text(json.dumps({"train_steps": TOTAL}))


def test_curve_gradients_are_the_slopes_at_the_fractions(tmp_path):
  write_run(tmp_path / "run", rate=2.0)
  steps, losses, total = curvegrad.read_loss_curve(str(tmp_path / "run"))
  assert total == TOTAL and len(steps) == TOTAL // 4
  got = curvegrad.curve_gradients(steps, losses, total)
  fractions = np.asarray(curvegrad.FRACTIONS)
  want = -3.0 * 2.0 * np.exp(-2.0 * fractions)  # d/df of 3 exp(-2 f).
  np.testing.assert_allclose(got, want, rtol=2e-3)
  # A straight line has the same slope everywhere; a flat curve none.
  line = curvegrad.curve_gradients(np.arange(1, 11), 5.0 - 0.5 * np.arange(1, 11), 10)
  np.testing.assert_allclose(line, -5.0 * np.ones(5))
  np.testing.assert_allclose(curvegrad.curve_gradients([1, 2, 3], [1, 1, 1], 3), 0)


def test_a_resumed_log_keeps_the_last_value_of_a_step(tmp_path):
  write_run(tmp_path / "run", rate=1.0)
  with open(tmp_path / "run" / "metrics.jsonl", "a") as f:  # step 8 redone after a resume.
    f.write(json.dumps({"step": 8, "split": "train", "loss_per_token": 9.0}) + "\n")
  steps, losses, _ = curvegrad.read_loss_curve(str(tmp_path / "run"))
  assert losses[list(steps).index(8)] == 9.0 and len(steps) == TOTAL // 4


def test_curvegrad_scorer_ranks_the_source_with_the_closest_curve_first(tmp_path):
  study = tmp_path / "study"
  for seed, jitter in ((0, 0.0), (1, 0.05)):
    write_run(study / "runs" / "baseline" / "target" / f"seed_{seed}", rate=2.2 + jitter)
    write_run(study / "runs" / "source" / "close" / f"seed_{seed}", rate=2.0 + jitter)
    write_run(study / "runs" / "source" / "far" / f"seed_{seed}", rate=8.0 + jitter)
  scorer = scorers.get_scorer(f"curvegrad:{study}")
  assert scorer.name == f"curvegrad:{study}"
  keys = np.zeros((2, 1, 4), np.float32)  # CurveGrad ignores the keys.
  scores = scorer.score(np.zeros((1, 4)), keys, target="target", pool_tasks=["far", "close"])
  assert scores[1] > scores[0] and scores[1] > 0.99
  predicted = scorers.predictions(scorer, {t: np.zeros((1, 1, 4)) for t in
                                           ("target", "close", "far")}, ["target"],
                                  ["close", "far"])
  assert max(predicted["target"], key=predicted["target"].get) == "close"
  with pytest.raises(LibraryError, match="No run of 'missing'"):
    scorer.score(np.zeros((1, 4)), keys[:1], target="missing", pool_tasks=["close"])
  with pytest.raises(LibraryError, match="needs the target task's name"):
    scorer.score(np.zeros((1, 4)), keys, pool_tasks=None)
  with pytest.raises(LibraryError, match="not a study directory"):
    scorers.get_scorer(f"curvegrad:{tmp_path}")
  assert "curvegrad:PATH" in scorers.scorer_names()
