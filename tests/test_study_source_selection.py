"""Studies that train only each target's top-k predicted sources (`select_sources`): the affinity
paper's Table 3 (Feng et al. 2023 §4.6.4), planned from a predictions table, refused without one."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import PROJECT_ROOT
from spot_jax.study import runner
from spot_jax.study.spec import SpecError, StudySpec, load_spec, with_predictions
from test_study_run import SMALL

TABLE3 = PROJECT_ROOT / "gin_configs" / "study" / "affinity_table3.yaml"
POOL = ["synthetic_sentiment_a", "synthetic_paraphrase_a", "synthetic_nli_facts"]
TARGETS = ["synthetic_sentiment_b", "synthetic_paraphrase_a"]


def write_predictions(path, scores: dict[tuple[str, str], float]) -> str:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["target", "source", "score"])
    writer.writerows([t, s, v] for (t, s), v in scores.items())
  return str(path)


def selecting_spec(predictions: str | None, top_k: int = 1, **overrides) -> StudySpec:
  data = dict(name="select", sources=POOL, targets=TARGETS, seeds=[0, 1], **SMALL,
              select_sources={"top_k": top_k, "predictions": predictions})
  data.update(overrides)
  return StudySpec.from_dict(data)


def by_kind(jobs) -> dict[str, set]:
  return {kind: {(j.source, j.target, j.seed) for j in jobs if j.kind == kind}
          for kind in runner.KINDS}


def test_each_target_transfers_only_from_its_top_k_predicted_sources(tmp_path):
  """Top-1: sentiment_b's best is nli_facts; paraphrase_a's own task is never its source, so its
  best other source (sentiment_a) wins. Only the selected sources train."""
  path = write_predictions(tmp_path / "pred.csv", {
      ("synthetic_sentiment_b", "synthetic_sentiment_a"): 0.2,
      ("synthetic_sentiment_b", "synthetic_paraphrase_a"): 0.1,
      ("synthetic_sentiment_b", "synthetic_nli_facts"): 0.9,
      ("synthetic_paraphrase_a", "synthetic_sentiment_a"): 0.5,
      ("synthetic_paraphrase_a", "synthetic_paraphrase_a"): 9.0,
      ("synthetic_paraphrase_a", "synthetic_nli_facts"): -1.0})
  spec = selecting_spec(path)
  assert spec.selected_sources() == {"synthetic_sentiment_b": ("synthetic_nli_facts",),
                                     "synthetic_paraphrase_a": ("synthetic_sentiment_a",)}
  jobs = by_kind(runner.plan(spec, str(tmp_path / "study")))
  assert jobs["source"] == {(s, None, seed) for s in ("synthetic_sentiment_a",
                                                      "synthetic_nli_facts") for seed in (0, 1)}
  assert jobs["baseline"] == {(None, t, seed) for t in TARGETS for seed in (0, 1)}
  assert jobs["transfer"] == {
      (s, t, seed) for s, t in (("synthetic_nli_facts", "synthetic_sentiment_b"),
                                ("synthetic_sentiment_a", "synthetic_paraphrase_a"))
      for seed in (0, 1)}
  two = selecting_spec(path, top_k=2).selected_sources()
  assert two["synthetic_sentiment_b"] == ("synthetic_nli_facts", "synthetic_sentiment_a")


def test_ties_go_to_the_source_listed_first(tmp_path):
  path = write_predictions(tmp_path / "pred.csv", {
      (t, s): 1.0 for t in TARGETS for s in POOL})
  assert selecting_spec(path).selected_sources() == {
      "synthetic_sentiment_b": ("synthetic_sentiment_a",),
      "synthetic_paraphrase_a": ("synthetic_sentiment_a",)}


def test_planning_without_predictions_is_refused_with_the_fix():
  with pytest.raises(SpecError, match=r"--predictions PRED\.csv"):
    runner.plan(selecting_spec(None), "/study")


def test_predictions_that_rank_too_few_sources_are_refused(tmp_path):
  scores = {("synthetic_paraphrase_a", s): 1.0 for s in POOL}
  scores[("synthetic_sentiment_b", "synthetic_sentiment_a")] = 1.0
  with pytest.raises(SpecError, match="ranks 1 of the study's sources for target "
                                      "'synthetic_sentiment_b', fewer than select_sources.top_k 2"):
    selecting_spec(write_predictions(tmp_path / "some.csv", scores), top_k=2).selected_sources()
  with pytest.raises(SpecError, match="no prediction rows"):
    selecting_spec(write_predictions(tmp_path / "none.csv", {})).selected_sources()


def test_select_sources_is_validated():
  with pytest.raises(SpecError, match="top_k 4 > the 3 sources"):
    selecting_spec(None, top_k=4)
  with pytest.raises(SpecError, match=r"must be \{top_k: K"):
    selecting_spec(None, select_sources={"best": 1})
  with pytest.raises(SpecError, match="do not combine"):
    selecting_spec(None, pool_pairs={"num_pairs": 2})
  plain = StudySpec.from_dict(dict(name="plain", sources=POOL, targets=TARGETS, seeds=[0],
                                   **SMALL))
  with pytest.raises(SpecError, match="has no select_sources"):
    with_predictions(plain, __file__)
  with pytest.raises(SpecError, match="no such file"):
    with_predictions(selecting_spec(None), "/no/such/predictions.csv")


def test_a_selecting_study_records_its_selection(tmp_path):
  path = write_predictions(tmp_path / "pred.csv", {
      (t, s): float(i) for t in TARGETS for i, s in enumerate(POOL)})
  report = runner.run_study(selecting_spec(path), str(tmp_path / "study"), collect_only=True,
                            log=lambda line: None)
  assert report.results_rows == 0
  with open(tmp_path / "study" / "selected_sources.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["target"], r["rank"], r["source"]) for r in rows] == [
      ("synthetic_sentiment_b", "1", "synthetic_nli_facts"),
      ("synthetic_paraphrase_a", "1", "synthetic_nli_facts")]
  assert rows[0]["predictions"] == os.path.abspath(path)


def test_table3_spec_fine_tunes_each_targets_top_source(tmp_path):
  """Feng et al. 2023 Table 3: 6 targets, each fine-tuned alone (No Transfer) and after full
  fine-tuning on its top-1 predicted source of the 44-task pool."""
  spec = load_spec(str(TABLE3))
  assert spec.method == "model" and len(spec.sources) == 44 and len(spec.targets) == 6
  assert spec.select_sources == {"top_k": 1, "predictions": None}
  rng = np.random.default_rng(0)
  scores = {(t, s): float(rng.normal()) for t in spec.targets for s in spec.sources}
  spec = with_predictions(spec, write_predictions(tmp_path / "pred.csv", scores))
  jobs = runner.plan(spec, str(tmp_path / "t3"))
  best = {t: max((s for s in spec.sources if s != t), key=lambda s: scores[(t, s)])
          for t in spec.targets}
  assert {(j.target, j.source) for j in jobs if j.kind == "transfer"} == set(best.items())
  assert {j.source for j in jobs if j.kind == "source"} == set(best.values())
  assert sum(j.kind == "baseline" for j in jobs) == 6 * 3
  assert sum(j.kind == "transfer" for j in jobs) == 6 * 3
  transfer = next(j for j in jobs if j.kind == "transfer")
  assert transfer.gin_files[-2:] == ("methods/model.gin", runner.TRANSFER_INIT_FROM_GIN)
  lines = runner.describe_plan(spec, jobs)
  assert any("top 1 predicted sources of each of 6 targets" in line for line in lines), lines


def test_study_run_refuses_table3_without_predictions_and_plans_it_with_them(tmp_path,
                                                                          t5_vocab_path):
  """The CLI's real path, in fresh processes: one clear error without --predictions; a dry run
  with them (the real tasks' label checks read the T5 vocabulary fixture)."""
  program = os.path.join(os.path.dirname(sys.executable), "spot-jax")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             SPOT_JAX_VOCAB=str(t5_vocab_path))
  refused = subprocess.run([program, "study", "run", str(TABLE3), "--out", str(tmp_path / "a"),
                            "--dry_run"], capture_output=True, text=True, env=env, timeout=300,
                           cwd=PROJECT_ROOT)
  assert refused.returncode != 0 and "--predictions PRED.csv" in refused.stderr, refused.stderr
  assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
  assert not (tmp_path / "a").exists()
  spec = load_spec(str(TABLE3))
  path = write_predictions(tmp_path / "pred.csv", {
      (t, s): float(i) for t in spec.targets for i, s in enumerate(spec.sources)})
  planned = subprocess.run([program, "study", "run", str(TABLE3), "--out", str(tmp_path / "b"),
                            "--predictions", path, "--dry_run"], capture_output=True, text=True,
                           env=env, timeout=300, cwd=PROJECT_ROOT)
  assert planned.returncode == 0, planned.stderr
  assert "total: 39 runs" in planned.stdout, planned.stdout  # 1 source + 6 + 6, x 3 seeds.
