"""Study analysis: results validation, aggregates, gains, oracle, summary, CSV layouts, plots."""

from __future__ import annotations

import csv
import json
import math
import struct

import numpy as np
import pytest
from scipy import stats

from spot_jax.study import analysis, results
from spot_jax.study.results import StudyTableError

# 3 sources x 2 targets x 2 seeds. Per (source, target) the two seed scores, their mean and
# their sample std (ddof=1: |a - b| / sqrt(2)):
#   none->tA 60, 62 -> 61,   1.41421     none->tB 80, 80 -> 80,   0
#   s1->tA   70, 74 -> 72,   2.82843     s1->tB   78, 79 -> 78.5, 0.70711
#   s2->tA   58, 60 -> 59,   1.41421     s2->tB   90, 88 -> 89,   1.41421
#   s3->tA   65, 65 -> 65,   0           s3->tB   85, 86 -> 85.5, 0.70711
SCORES = {("none", "tA"): (60, 62), ("none", "tB"): (80, 80), ("s1", "tA"): (70, 74),
          ("s1", "tB"): (78, 79), ("s2", "tA"): (58, 60), ("s2", "tB"): (90, 88),
          ("s3", "tA"): (65, 65), ("s3", "tB"): (85, 86)}
# Gains (mean - baseline): tA: s1 72-61 = 11, s2 59-61 = -2, s3 65-61 = 4
#                          tB: s1 78.5-80 = -1.5, s2 89-80 = 9, s3 85.5-80 = 5.5
GAIN = np.array([[11.0, -1.5], [-2.0, 9.0], [4.0, 5.5]])
# Relative error reduction: gain / (100 - baseline) * 100, room 39 on tA and 20 on tB.
RER = np.array([[1100 / 39, -7.5], [-200 / 39, 45.0], [400 / 39, 27.5]])


def result_rows(scores=SCORES):
  return [{"source": s, "target": t, "seed": seed, "score": v, "metric": "accuracy"}
          for (s, t), values in scores.items() for seed, v in enumerate(values)]


@pytest.fixture
def results_csv(tmp_path):
  path = tmp_path / "results.csv"
  results.write_results(str(path), result_rows())
  return path


def similarity_csv(path):
  # Similarity of each source to tA: s1 0.9, s2 0.2, s3 0.6; to tB: s1 0.1, s2 0.8, s3 0.5.
  # Rows deliberately not in header order.
  path.write_text("task,s1,s2,s3,tA,tB\n"
                  "tB,0.1,0.8,0.5,0.3,1\n"
                  "s1,1,0.2,0.5,0.9,0.1\n"
                  "s2,0.2,1,0.3,0.2,0.8\n"
                  "s3,0.5,0.3,1,0.6,0.5\n"
                  "tA,0.9,0.2,0.6,1,0.3\n")
  return path


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


def png_size(path):
  """(width, height) from a PNG's IHDR chunk, after checking the signature."""
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
  return struct.unpack(">II", data[16:24])


def test_results_round_trip_keeps_extra_columns(results_csv):
  table = results.read_results(str(results_csv))
  assert read_csv(results_csv)[0] == ["source", "target", "seed", "score", "metric"]
  assert table.metric == "accuracy" and len(table.score) == 16
  assert table.sources == ["none", "s1", "s2", "s3"] and table.targets == ["tA", "tB"]
  assert (table.source[2], table.target[2], table.seed[2], table.score[2]) == ("none", "tB",
                                                                                "0", 80.0)


def test_aggregate_means_and_sample_stds(results_csv):
  table = results.aggregate(results.read_results(str(results_csv)))
  np.testing.assert_allclose(table.mean, [[61, 80], [72, 78.5], [59, 89], [65, 85.5]])
  r2 = math.sqrt(2)
  np.testing.assert_allclose(table.std, [[r2, 0], [2 * r2, r2 / 2], [r2, r2], [0, r2 / 2]])
  assert table.count.tolist() == [[2, 2]] * 4


def test_single_seed_std_is_zero_and_missing_pair_is_nan(tmp_path):
  path = tmp_path / "r.csv"
  path.write_text("source,target,seed,score\nnone,t,0,50\nnone,u,0,40\na,t,0,70\n")
  table = results.aggregate(results.read_results(str(path)))
  assert table.std.tolist()[0] == [0.0, 0.0]
  assert table.mean[1, 0] == 70 and math.isnan(table.mean[1, 1]) and table.count[1, 1] == 0


def test_gain_relative_error_reduction_and_oracle(results_csv):
  result = analysis.analyze(results.read_results(str(results_csv)))
  assert result.sources == ["s1", "s2", "s3"]
  np.testing.assert_allclose(result.gain, GAIN)
  np.testing.assert_allclose(result.relative_error_reduction, RER)
  summary = analysis.summarize(result, threshold=10.0)
  assert summary["targets"]["tA"] == {
      "baseline_mean": 61.0, "baseline_std": pytest.approx(math.sqrt(2)), "baseline_seeds": 2,
      "num_sources": 3, "oracle_source": "s1", "oracle_score": 72.0, "oracle_gain": 11.0,
      "oracle_relative_error_reduction": pytest.approx(1100 / 39)}
  assert summary["targets"]["tB"]["oracle_source"] == "s2"
  assert summary["mean_oracle_gain"] == pytest.approx(10.0)  # (11 + 9) / 2
  # SPoT Table 7: relative error reduction > 10%, largest first: s2->tB 45, s1->tA 28.2,
  # s3->tB 27.5, s3->tA 10.3 (a gain threshold would rank s1->tA first and drop s3->tA).
  assert [(p["source"], p["target"], p["gain"]) for p in summary["positive_transfers"]] == [
      ("s2", "tB", 9.0), ("s1", "tA", 11.0), ("s3", "tB", 5.5), ("s3", "tA", 4.0)]
  assert summary["positive_transfers"][0]["relative_error_reduction"] == 45.0
  assert summary["num_positive_transfers"] == 4 and summary["num_transfer_pairs"] == 6
  strict = analysis.summarize(result, threshold=28.0)  # 28.2 > 28 > 27.5
  assert [(p["source"], p["target"]) for p in strict["positive_transfers"]] == [
      ("s2", "tB"), ("s1", "tA")]


def test_relative_error_reduction_is_nan_at_a_perfect_baseline():
  values = analysis.relative_error_reduction(np.array([100.0, 90.0]), np.array([100.0, 80.0]))
  assert math.isnan(values[0]) and values[1] == pytest.approx(50.0)  # 10 / 20 * 100


def test_self_transfer_stays_in_the_matrix_but_is_not_an_oracle(tmp_path):
  path = tmp_path / "r.csv"
  path.write_text("source,target,seed,score\nnone,t,0,100\nt,t,0,100\na,t,0,99\n")
  result = analysis.analyze(results.read_results(str(path)))
  summary = analysis.summarize(result)
  assert result.sources == ["a", "t"]
  assert summary["targets"]["t"]["oracle_source"] == "a"  # Not t itself, although higher.
  assert summary["targets"]["t"]["oracle_relative_error_reduction"] is None
  assert summary["notes"] == ["t: baseline is 100, relative error reduction undefined (NaN)"]


def test_run_analysis_files(results_csv, tmp_path):
  out = tmp_path / "analysis"
  summary = analysis.run_analysis(str(results_csv), str(out), str(similarity_csv(
      tmp_path / "sim.csv")))
  assert read_csv(out / "transfer_matrix.csv") == [
      ["source", "tA", "tB"], ["none", "61.0", "80.0"], ["s1", "72.0", "78.5"],
      ["s2", "59.0", "89.0"], ["s3", "65.0", "85.5"]]
  std = read_csv(out / "transfer_matrix_std.csv")
  assert [r[0] for r in std] == ["source", "none", "s1", "s2", "s3"] and std[4][1] == "0.0"
  gain = read_csv(out / "absolute_gain.csv")
  assert gain == [["source", "tA", "tB"], ["s1", "11.0", "-1.5"], ["s2", "-2.0", "9.0"],
                  ["s3", "4.0", "5.5"]]
  rer = read_csv(out / "relative_error_reduction.csv")
  np.testing.assert_allclose(np.array([r[1:] for r in rer[1:]], float), RER)
  on_disk = json.loads((out / "summary.json").read_text())
  assert on_disk["metric"] == "accuracy" and on_disk["mean_oracle_gain"] == 10.0
  assert on_disk["targets"]["tB"]["oracle_gain"] == 9.0
  assert [p["gain"] for p in on_disk["positive_transfers"]] == [9.0, 11.0, 5.5, 4.0]
  # Similarity vs relative error reduction, one point per source task, in source order.
  rows = read_csv(out / "similarity_vs_transfer.csv")
  assert rows[0] == ["target", "source", "seed", "similarity", "relative_error_reduction",
                     "gain"]
  assert [r[:4] + [r[5]] for r in rows[1:4]] == [
      ["tA", "s1", "", "0.9", "11.0"], ["tA", "s2", "", "0.2", "-2.0"],
      ["tA", "s3", "", "0.6", "4.0"]]
  np.testing.assert_allclose([float(r[4]) for r in rows[1:]], RER.T.reshape(-1))
  for target, x, y in (("tA", [0.9, 0.2, 0.6], RER[:, 0]), ("tB", [0.1, 0.8, 0.5], RER[:, 1])):
    expected = stats.pearsonr(x, y)
    got = on_disk["similarity"]["correlations"][target]
    assert got["pearson_r"] == pytest.approx(expected.statistic)
    assert got["p_value"] == pytest.approx(expected.pvalue)
  assert summary["similarity"]["correlations"] == on_disk["similarity"]["correlations"]
  for name in ("transfer_heatmap.png", "task_similarity_heatmap.png",
               "similarity_vs_transfer/tA.png", "similarity_vs_transfer/tB.png"):
    width, height = png_size(out / name)
    assert 200 <= width <= 3000 and 200 <= height <= 3000, (name, width, height)


def test_pearson_undefined_cases_are_nan_with_notes():
  r, p, note = analysis.correlation(np.array([0.5, 0.5, 0.5]), np.array([1.0, 2.0, 3.0]))
  assert math.isnan(r) and math.isnan(p) and note == "constant input, correlation undefined"
  r, _, note = analysis.correlation(np.array([0.5]), np.array([1.0]))
  assert math.isnan(r) and "1 point" in note


def test_similarity_matrix_is_reordered_and_validated(tmp_path):
  tasks, matrix = results.read_similarity_matrix(str(similarity_csv(tmp_path / "s.csv")))
  assert tasks == ["s1", "s2", "s3", "tA", "tB"]
  assert matrix[0].tolist() == [1, 0.2, 0.5, 0.9, 0.1] and matrix[4, 1] == 0.8
  bad = tmp_path / "bad.csv"
  bad.write_text("task,a,b\na,1,0.5\n")
  with pytest.raises(StudyTableError, match=r"no rows for \['b'\].*square"):
    results.read_similarity_matrix(str(bad))


@pytest.mark.parametrize("text, message", [
    ("source,target,score\nnone,t,1\n", r"missing \['seed'\].*Fix the header"),
    ("source,target,seed,score\nnone,t,0,50\na,u,0,60\n",
     r"line 3: target 'u' has no baseline; add rows with source=none"),
    ("source,target,seed,score\nnone,t,0,50\nnone,t,0,51\n",
     r"line 3: duplicate row for source=none target=t seed=0 \(first at line 2\)"),
    ("source,target,seed,score\nnone,t,0,fifty\n", r"line 2: score 'fifty' is not a number"),
    ("source,target,seed,score\nnone,t,0,nan\n", r"line 2: score 'nan' is not finite"),
    ("source,target,seed,score\nnone,t,0,0.5\nnone,t,1,120\n",
     r"line 3: score 120.0 is outside \[-100, 100\]"),
    ("source,target,seed,score\n", r"no result rows"),
])
def test_invalid_results_name_file_line_and_fix(tmp_path, text, message):
  path = tmp_path / "bad.csv"
  path.write_text(text)
  with pytest.raises(StudyTableError, match=message) as error:
    results.read_results(str(path))
  assert str(path) in str(error.value) and isinstance(error.value, ValueError)


def test_bad_results_leave_an_existing_analysis_untouched(results_csv, tmp_path):
  out = tmp_path / "analysis"
  analysis.run_analysis(str(results_csv), str(out))
  before = {p.name: p.read_bytes() for p in out.iterdir()}
  bad = tmp_path / "bad.csv"
  bad.write_text("source,target,seed,score\nnone,tA,0,61\nnone,tA,0,61\n")
  with pytest.raises(StudyTableError):
    analysis.run_analysis(str(bad), str(out))
  assert {p.name: p.read_bytes() for p in out.iterdir()} == before



def per_run_similarity_csv(path):
  """Runs <task>@<seed>: s1 and s2 (seeds 0, 1) and the target tA (seeds 0, 1); tB and s3 are
  absent. Similarity to tA's two runs: s1@0 0.8, 0.6; s1@1 0.5, 0.3; s2@0 0.2, 0.0; s2@1 0.3,
  0.1; every other pair 0.5, 1 on the diagonal."""
  labels = ["s1@0", "s1@1", "s2@0", "s2@1", "tA@0", "tA@1"]
  matrix = np.full((6, 6), 0.5)
  np.fill_diagonal(matrix, 1.0)
  for row, values in zip(range(4), ((0.8, 0.6), (0.5, 0.3), (0.2, 0.0), (0.3, 0.1))):
    matrix[row, 4:] = matrix[4:, row] = values
  lines = ["task," + ",".join(labels)]
  lines += [label + "," + ",".join(repr(float(v)) for v in row)
            for label, row in zip(labels, matrix)]
  path.write_text("\n".join(lines) + "\n")
  return path


def test_per_run_similarity_one_point_per_source_prompt(results_csv, tmp_path):
  """SPoT Figures 5/8: x = the source prompt's similarity to the target's runs (averaged),
  y = the relative error reduction of the transfer from that prompt (baseline tA = 61)."""
  out = tmp_path / "analysis"
  summary = analysis.run_analysis(str(results_csv), str(out),
                                  str(per_run_similarity_csv(tmp_path / "runs.csv")))
  rows = read_csv(out / "similarity_vs_transfer.csv")[1:]
  assert [r[:3] for r in rows] == [["tA", "s1", "0"], ["tA", "s1", "1"], ["tA", "s2", "0"],
                                   ["tA", "s2", "1"]]
  x, y = [0.7, 0.4, 0.1, 0.2], [900 / 39, 1300 / 39, -300 / 39, -100 / 39]  # 70 74 58 60
  np.testing.assert_allclose([float(r[3]) for r in rows], x)
  np.testing.assert_allclose([float(r[4]) for r in rows], y)
  expected = stats.pearsonr(x, y)
  corr = summary["similarity"]["correlations"]["tA"]
  assert corr["pearson_r"] == pytest.approx(expected.statistic) and corr["num_points"] == 4
  assert "tB: not in the similarity matrix, no similarity plot" in summary["notes"]
  assert "tA: sources ['s3@0', 's3@1'] not in the similarity matrix, left out" in (
      summary["notes"])
  # Figure 7 (per run) and the task-level heatmap averaged over run pairs.
  for name in ("run_similarity_heatmap.png", "task_similarity_heatmap.png",
               "similarity_vs_transfer/tA.png"):
    assert png_size(out / name)[0] >= 200, name


def test_similarity_labels_must_be_all_tasks_or_all_runs(results_csv, tmp_path):
  path = tmp_path / "mixed.csv"
  path.write_text("task,s1@0,tA\ns1@0,1,0.5\ntA,0.5,1\n")
  with pytest.raises(StudyTableError, match="either tasks or runs"):
    analysis.run_analysis(str(results_csv), str(tmp_path / "out"), str(path))


def test_glue_and_superglue_averages(tmp_path, capsys):
  """SPoT Tables 1 and 4: per source, the mean over the benchmark's tasks of the task scores,
  and the std over seeds of the per-seed benchmark averages."""
  scores = {("none", "glue_cola"): (50, 52), ("none", "glue_rte"): (60, 64),
            ("none", "super_glue_cb"): (80, 84), ("glue_mnli", "glue_cola"): (54, 56),
            ("glue_mnli", "glue_rte"): (70, 72), ("glue_mnli", "super_glue_cb"): (90, 92)}
  path = tmp_path / "results.csv"
  results.write_results(str(path), result_rows(scores))
  benchmarks, notes = analysis.benchmark_averages(results.read_results(str(path)))
  glue, superglue = benchmarks["glue"], benchmarks["superglue"]
  assert glue["tasks"] == ["glue_cola", "glue_rte"] and not glue["complete"]
  assert "glue_mnli" in glue["missing_tasks"] and len(superglue["missing_tasks"]) == 7
  # none: cola 51, rte 62 -> 56.5; per seed (50 + 60) / 2 = 55, (52 + 64) / 2 = 58.
  assert glue["scores"]["none"] == {"mean": 56.5, "std": pytest.approx(3 / math.sqrt(2)),
                                    "seeds": 2}
  assert glue["scores"]["glue_mnli"]["mean"] == 63.0  # (55 + 71) / 2
  assert superglue["scores"]["glue_mnli"] == {"mean": 91.0, "std": pytest.approx(math.sqrt(2)),
                                              "seeds": 2}
  assert notes[0].startswith("glue: average over 2 of 8 tasks")
  from spot_jax.cli.main import main
  assert main(["study", "analyze", str(path), "--out", str(tmp_path / "a")]) == 0
  printed = capsys.readouterr().out
  assert "glue (2 tasks)" in printed and "56.50 +- 2.12" in printed
  assert read_csv(tmp_path / "a" / "benchmarks.csv")[1][:3] == ["none", "glue", "56.5"]


def test_relative_error_reduction_colours_stop_at_minus_100():
  from spot_jax.study import plots
  # One target near 100% that a source pulls down reads -900%: without the limit it would set
  # the scale and a 50% reduction would be drawn almost white.
  values = np.array([[50.0, -900.0], [np.nan, 10.0]])
  assert plots.colour_limit(values, plots.RELATIVE_ERROR_REDUCTION_LIMIT) == 100.0
  assert plots.colour_limit(values) == 900.0  # absolute gains: the largest |value|
  assert plots.colour_limit(np.array([[3.0, -2.0]]), 100.0) == 3.0
  assert plots.colour_limit(np.array([[np.nan, 0.0]])) == 1.0
