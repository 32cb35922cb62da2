"""SPoT Figure 1's per-model curves from several studies' results tables (fake ones here)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import spot_jax_cli
from spot_jax.study import results, size_curves
from tasks import registry

SUPERGLUE = registry.SUPERGLUE  # 8 tasks.


def write_study(path, baseline, transfer, sources=("spot_mix_glue",), seeds=(0, 1)):
  """A results.csv whose every task scores `baseline` (+ seed) from scratch and `transfer`
  (+ seed) from each source."""
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["source", "target", "seed", "score"])
    for seed in seeds:
      for task in SUPERGLUE:
        w.writerow(["none", task, seed, baseline + seed])
        for k, source in enumerate(sources):
          w.writerow([source, task, seed, transfer + seed + k])
  return str(path)


def test_points_name_each_approach_with_mean_and_seed_std(tmp_path):
  """Baselines are ModelTuning / PromptTuning, transfers Multi-task ModelTuning / SPoT; the
  score is the SuperGLUE average, its std the std over seeds of the per-seed averages."""
  model = results.read_results(write_study(tmp_path / "m.csv", 70.0, 74.0))
  prompt = results.read_results(write_study(tmp_path / "p.csv", 60.0, 72.0))
  points = size_curves.size_curves([("base", "model", model), ("small", "prompt", prompt),
                                    ("base", "prompt", prompt)])
  got = {(p.approach, p.size): (p.score, p.std, p.seeds, p.complete) for p in points}
  std = float(np.std([0.0, 1.0], ddof=1))
  assert got == {("ModelTuning", "base"): (70.5, std, 2, True),
                 ("Multi-task ModelTuning", "base"): (74.5, std, 2, True),
                 ("PromptTuning", "small"): (60.5, std, 2, True),
                 ("PromptTuning", "base"): (60.5, std, 2, True),
                 ("SPoT", "small"): (72.5, std, 2, True), ("SPoT", "base"): (72.5, std, 2, True)}
  assert [p.size for p in points if p.approach == "SPoT"] == ["small", "base"]  # size order.


def test_several_sources_give_one_line_each(tmp_path):
  table = results.read_results(write_study(tmp_path / "p.csv", 60.0, 70.0,
                                           sources=("glue_mnli", "spot_mix_glue")))
  names = {p.approach: p.score for p in size_curves.study_points(table, "xl", "prompt")}
  assert names == {"PromptTuning": 60.5, "SPoT (glue_mnli)": 70.5,
                   "SPoT (spot_mix_glue)": 71.5}


@pytest.mark.parametrize("size,tuning,message", [("huge", "prompt", "unknown model size"),
                                                 ("base", "adapters", "is not one of")])
def test_bad_size_or_tuning_is_refused(tmp_path, size, tuning, message):
  table = results.read_results(write_study(tmp_path / "p.csv", 60.0, 70.0))
  with pytest.raises(results.StudyTableError, match=message):
    size_curves.size_curves([(size, tuning, table)])


def test_the_same_approach_and_size_twice_is_refused(tmp_path):
  table = results.read_results(write_study(tmp_path / "p.csv", 60.0, 70.0))
  with pytest.raises(results.StudyTableError, match="comes from two studies"):
    size_curves.size_curves([("base", "prompt", table), ("base", "prompt", table)])


def test_cli_writes_csv_and_png(tmp_path):
  model = write_study(tmp_path / "model_base.csv", 70.0, 74.0)
  prompt_small = write_study(tmp_path / "prompt_small.csv", 55.0, 68.0)
  prompt_base = write_study(tmp_path / "prompt_base.csv", 60.0, 72.0)
  out = tmp_path / "fig1"
  done = spot_jax_cli("study", "sizes", "--model", f"base={model}", "--prompt",
                      f"small={prompt_small}", "--prompt", f"base={prompt_base}", "--out", out)
  assert done.returncode == 0, done.stderr
  assert "Multi-task ModelTuning" in done.stdout and f"wrote {out}" in done.stdout
  with open(out / size_curves.CSV_NAME) as f:
    rows = list(csv.DictReader(f))
  assert [(r["approach"], r["size"], float(r["score"])) for r in rows] == [
      ("ModelTuning", "base", 70.5), ("Multi-task ModelTuning", "base", 74.5),
      ("PromptTuning", "small", 55.5), ("PromptTuning", "base", 60.5),
      ("SPoT", "small", 68.5), ("SPoT", "base", 72.5)]
  assert float(rows[0]["parameters"]) == 220e6
  assert (out / size_curves.PNG_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  bad = spot_jax_cli("study", "sizes", "--prompt", "base", "--out", out)
  assert bad.returncode != 0 and "SIZE=results.csv" in bad.stderr
