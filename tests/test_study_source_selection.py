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


def test_a_random_selection_draws_the_same_sources_for_every_target_and_spec():
  """§4.6.4: N sources drawn once; a target in the draw is never its own source; the same pool
  and seed draw the same sources (the prompt and model specs compare the same pairs)."""
  spec = selecting_spec(None, select_sources={"random": 2, "seed": 3})
  selected = spec.selected_sources()
  drawn = set(selected["synthetic_sentiment_b"])
  assert len(drawn) == 2 and drawn <= set(POOL)
  assert set(selected["synthetic_paraphrase_a"]) == drawn - {"synthetic_paraphrase_a"}
  again = selecting_spec(None, select_sources={"random": 2, "seed": 3}, method="lora")
  assert again.selected_sources() == selected
  draws = {selecting_spec(None, select_sources={"random": 2, "seed": s}).selected_sources()[
      "synthetic_sentiment_b"] for s in range(8)}
  assert len(draws) > 1  # the seed matters.
  with pytest.raises(SpecError, match="random 4 > the 3 sources"):
    selecting_spec(None, select_sources={"random": 4})
  with pytest.raises(SpecError, match="has no select_sources.top_k"):
    with_predictions(spec, __file__)


def test_agreement_specs_draw_20_shared_sources_for_rte_and_mrpc(tmp_path):
  folder = PROJECT_ROOT / "gin_configs" / "study" / "affinity_finetune_agreement"
  prompt, model = (load_spec(str(folder / f"{name}.yaml")) for name in ("prompt", "model"))
  assert (prompt.method, model.method) == ("prompt_encoder", "model")
  assert prompt.selected_sources() == model.selected_sources()
  for spec in (prompt, model):
    assert spec.targets == ("glue_rte", "glue_mrpc") and len(spec.sources) == 43
    selected = spec.selected_sources()
    assert all(len(selected[t]) == 20 for t in spec.targets)
    kinds = [j.kind for j in runner.plan(spec, str(tmp_path / spec.name))]
    assert [kinds.count(k) for k in runner.KINDS] == [60, 6, 120]


def write_results(path, gains: dict[str, dict[str, float]], baseline: float = 50.0) -> str:
  """A results.csv with one seed: {target: {source: gain}} over a baseline score."""
  with open(path, "w") as f:
    f.write("source,target,seed,score\n")
    for target, by_source in gains.items():
      f.write(f"none,{target},0,{baseline}\n")
      f.writelines(f"{s},{target},0,{baseline + g}\n" for s, g in by_source.items())
  return str(path)


def test_agreement_is_the_spearman_of_the_gains_over_shared_sources(tmp_path):
  from spot_jax.study import gain_agreement, results
  first = write_results(tmp_path / "pt.csv", {
      "rte": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "only_pt": 9.0},
      "mrpc": {"a": 1.0, "b": 2.0, "c": 3.0}})
  second = write_results(tmp_path / "ft.csv", {
      "rte": {"a": 10.0, "b": 30.0, "c": 20.0, "d": 40.0},  # one swap: rho = 0.8.
      "mrpc": {"a": 5.0, "b": 5.0, "c": 5.0},              # constant: undefined.
      "qqp": {"a": 1.0}})
  rows = {row["target"]: row for row in gain_agreement.gain_agreement(
      results.read_results(first), results.read_results(second))}
  assert set(rows) == {"rte", "mrpc"}
  assert rows["rte"]["num_sources"] == 4 and rows["rte"]["spearman"] == pytest.approx(0.8)
  assert np.isnan(rows["mrpc"]["spearman"]) and "constant" in rows["mrpc"]["note"]
  with pytest.raises(results.StudyTableError, match="share no target"):
    gain_agreement.gain_agreement(results.read_results(first), results.read_results(
        write_results(tmp_path / "other.csv", {"qqp": {"a": 1.0}})))


def test_study_agreement_command_prints_and_writes_the_table(tmp_path):
  first = write_results(tmp_path / "pt.csv", {"rte": {"a": 1.0, "b": 2.0, "c": 3.0}})
  second = write_results(tmp_path / "ft.csv", {"rte": {"a": 3.0, "b": 2.0, "c": 1.0}})
  out = tmp_path / "agreement.csv"
  program = os.path.join(os.path.dirname(sys.executable), "spot-jax")
  done = subprocess.run([program, "study", "agreement", first, second, "--out", str(out)],
                        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
  assert done.returncode == 0, done.stderr
  assert "rte | 3 | -1.000" in done.stdout, done.stdout
  with open(out) as f:
    (row,) = list(csv.DictReader(f))
  assert row["target"] == "rte" and float(row["spearman"]) == pytest.approx(-1.0)
