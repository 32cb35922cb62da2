"""Ranking evaluation: every metric by hand, the random and data_size baselines, the CLI."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from spot_jax.cli.main import main
from spot_jax.study import ranking, results

# Target t1: baseline 65, four sources with true transfer a 70, b 80, c 60, d 75 and predicted
# scores a 0.4, b 0.3, c 0.9, d 0.1 -> predicted ranking c (60), a (70), b (80), d (75).
TRUE_1 = np.array([70.0, 80.0, 60.0, 75.0])
PRED_1 = np.array([0.4, 0.3, 0.9, 0.1])
# Target t2: baseline 45, true a 50, b 40, c 45, d 55; predicted a 0.2, b 0.1, c 0.3, d 0.9
# -> ranking d (55), c (45), a (50), b (40): the best source first.
TRUE_2 = np.array([50.0, 40.0, 45.0, 55.0])
PRED_2 = np.array([0.2, 0.1, 0.3, 0.9])
SOURCES = ["a", "b", "c", "d"]


def write_tables(tmp_path):
  rows = [{"source": "none", "target": "t1", "seed": 0, "score": 65.0},
          {"source": "none", "target": "t2", "seed": 0, "score": 45.0}]
  predictions = ["target,source,score"]
  for target, true, pred in (("t1", TRUE_1, PRED_1), ("t2", TRUE_2, PRED_2)):
    for source, v, p in zip(SOURCES, true, pred):
      # Two seeds v - 1 and v + 1 average to v.
      rows += [{"source": source, "target": target, "seed": s, "score": v + d}
               for s, d in ((0, -1.0), (1, 1.0))]
      predictions.append(f"{target},{source},{p}")
  results.write_results(str(tmp_path / "results.csv"), rows)
  (tmp_path / "pred.csv").write_text("\n".join(predictions) + "\n")
  return tmp_path / "results.csv", tmp_path / "pred.csv"


def test_metrics_by_hand_on_four_sources():
  m = ranking.ranking_metrics(TRUE_1, PRED_1, baseline=65.0, k_max=4)
  # Spearman: predicted ranks a 3, b 2, c 4, d 1; true ranks a 2, b 4, c 1, d 3;
  # d = 1, -2, 3, -2; sum d^2 = 18; 1 - 6 * 18 / (4 * (16 - 1)) = -0.8.
  assert m["spearman"] == pytest.approx(-0.8)
  # Pearson: deviations p - 0.425 = (-.025, -.125, .475, -.325), v - 71.25 = (-1.25, 8.75,
  # -11.25, 3.75); covariance sum -7.625, squares .3475 and 218.75.
  assert m["pearson"] == pytest.approx(-7.625 / math.sqrt(0.3475 * 218.75))
  # O = 80; M_1 = 60 -> (80 - 60) / 80 * 100 = 25; M_3 = max(60, 70, 80) = 80 -> 0.
  assert m["regret_at_1"] == pytest.approx(25.0) and m["regret_at_3"] == 0.0
  # Relevance (rank from the bottom): c 0, a 1, d 2, b 3; in predicted order 0, 1, 3, 2.
  dcg = 0 / math.log2(2) + 1 / math.log2(3) + 3 / math.log2(4) + 2 / math.log2(5)
  ideal = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4) + 0 / math.log2(5)
  assert m["ndcg"] == pytest.approx(dcg / ideal)  # 2.99228 / 4.76186 = 0.62839
  assert m["rho"] == 3.0  # b is third.
  curve = m["curve"]
  assert curve["best_of_top_k"] == [60, 70, 80, 80]
  assert curve["mean_of_top_k"] == [60, 65, 70, 71.25]
  # (M_k - 65) / (80 - 65).
  assert curve["oracle_gain_share"] == pytest.approx([-1 / 3, 1 / 3, 1, 1])
  assert curve["search_space_removed"] == [0.75, 0.5, 0.25, 0.0]
  # SPoT Table 3's changes over the baseline 65: Abs. M_k - 65, Rel. (M_k - 65) / 35 * 100.
  assert curve["gain_of_top_k"] == [-5, 5, 15, 15]
  assert curve["relative_error_reduction_of_top_k"] == pytest.approx(
      [-100 / 7, 100 / 7, 300 / 7, 300 / 7])


def test_ties_in_predictions_break_by_candidate_order_and_k_beyond_n_saturates():
  m = ranking.ranking_metrics(np.array([10.0, 30.0, 20.0]), np.zeros(3), baseline=0.0, k_max=5)
  # All tied: ranking a (10), b (30), c (20); correlations undefined.
  assert m["curve"]["best_of_top_k"] == [10, 30, 30, 30, 30]
  assert m["curve"]["search_space_removed"] == pytest.approx([2 / 3, 1 / 3, 0, 0, 0])
  assert m["rho"] == 2.0 and math.isnan(m["spearman"]) and math.isnan(m["pearson"])
  assert m["regret_at_1"] == pytest.approx(200 / 3)  # (30 - 10) / 30 * 100


@pytest.mark.parametrize("true", [TRUE_1, np.array([70.0, 80.0, 80.0, 60.0])])
def test_random_expectations_equal_enumeration_over_all_rankings(true):
  expected = ranking.expected_random_metrics(true, baseline=65.0, k_max=4)
  runs = [ranking.ranking_metrics(true, np.array(perm, float), 65.0, 4)
          for perm in itertools.permutations(range(4))]
  for name in ranking.SCALAR_METRICS:
    assert expected[name] == pytest.approx(np.mean([r[name] for r in runs]), abs=1e-12), name
  for name in ranking.CURVE_METRICS:
    assert expected["curve"][name] == pytest.approx(
        np.mean([r["curve"][name] for r in runs], axis=0)), name


def test_random_expectations_by_hand():
  m = ranking.expected_random_metrics(TRUE_1, baseline=65.0, k_max=4)
  # Sorted 60, 70, 75, 80; P(i-th smallest is the max of k) = C(i-1, k-1) / C(4, k):
  # k=2: (0*60 + 1*70 + 2*75 + 3*80) / 6 = 76.667; k=3: (1*75 + 3*80) / 4 = 78.75.
  assert m["curve"]["best_of_top_k"] == pytest.approx([71.25, 460 / 6, 78.75, 80])
  assert m["rho"] == 2.5  # (4 + 1) / 2
  assert m["regret_at_1"] == pytest.approx((80 - 71.25) / 80 * 100)
  # Mean relevance 1.5 at every position; ideal DCG 4.76186.
  discount = [1, 1 / math.log2(3), 0.5, 1 / math.log2(5)]
  assert m["ndcg"] == pytest.approx(1.5 * sum(discount) / (3 + 2 / math.log2(3) + 0.5))
  tied = ranking.expected_random_metrics(np.array([70.0, 80.0, 80.0, 60.0]), 65.0, 4)
  assert tied["rho"] == pytest.approx(5 / 3)  # First of 2 tied best: (n + 1) / (m + 1).


def test_evaluate_averages_targets_and_finds_k_for_90_percent(tmp_path):
  results_csv, pred_csv = write_tables(tmp_path)
  table = results.aggregate(results.read_results(str(results_csv)))
  predicted = ranking.predictions_by_target(results.read_predictions(str(pred_csv)))
  report = ranking.evaluate(table, "test", predicted)
  t2 = report["targets"]["t2"]
  assert t2["predicted_ranking"] == ["d", "c", "a", "b"] and t2["rho"] == 1.0
  assert t2["regret_at_1"] == 0.0 and t2["oracle_source"] == "d"
  assert t2["spearman"] == pytest.approx(stats.spearmanr(PRED_2, TRUE_2).statistic)
  avg = report["average"]
  assert report["k_max"] == 4
  assert avg["rho"] == 2.0  # (3 + 1) / 2
  assert avg["regret_at_1"] == pytest.approx(12.5)  # (25 + 0) / 2
  # Gain share t1 (-1/3, 1/3, 1, 1), t2 (1, 1, 1, 1): averages 1/3, 2/3, 1, 1 -> k = 3,
  # which removes 1 - 3/4 of the candidates.
  assert avg["curve"]["oracle_gain_share"] == pytest.approx([1 / 3, 2 / 3, 1, 1])
  assert avg["k_for_90_percent_gain"] == 3 and avg["search_space_removed_at_k90"] == 0.25
  # MEAN(Δ) and Rel.: t1 (baseline 65) best of top-1 is 60, t2 (baseline 45) 55.
  assert avg["curve"]["gain_of_top_k"][0] == pytest.approx((-5 + 10) / 2)
  assert avg["curve"]["relative_error_reduction_of_top_k"][0] == pytest.approx(
      (-5 / 35 + 10 / 55) * 100 / 2)
  # ORACLE row: t1 80 (+15, 15/35), t2 55 (+10, 10/55).
  assert avg["oracle_gain"] == pytest.approx(12.5)
  assert avg["oracle_relative_error_reduction"] == pytest.approx((15 / 35 + 10 / 55) * 100 / 2)


def test_candidates_include_none_and_self_only_when_in_both_tables(tmp_path):
  path = tmp_path / "r.csv"
  path.write_text("source,target,seed,score\nnone,t,0,50\nt,t,0,70\na,t,0,60\nb,t,0,55\n")
  table = results.aggregate(results.read_results(str(path)))
  pairs, notes = ranking.candidates(table, {"t": {"a": 1, "b": 2, "none": 3, "zz": 0}}, "p.csv")
  assert pairs[0][0].sources == ["a", "b", "none"] and pairs[0][0].true.tolist() == [60, 55, 50]
  assert notes == ["t: predictions for ['zz'] ignored (no results)"]
  with pytest.raises(ranking.RankingError, match=r"p.csv: target 't' lacks predictions for "
                                                 r"sources \['b'\]"):
    ranking.candidates(table, {"t": {"a": 1}}, "p.csv")


def test_data_size_baseline_ranks_by_size(tmp_path):
  path = tmp_path / "r.csv"
  path.write_text("source,target,seed,score\nnone,super_glue_rte,0,50\n"
                  "glue_mnli,super_glue_rte,0,80\nglue_cola,super_glue_rte,0,55\n")
  table = results.aggregate(results.read_results(str(path)))
  predicted = ranking.data_size_predictions(table, ranking.registry_train_size)
  # MNLI has 392,702 training examples, CoLA 8,551.
  assert predicted == {"super_glue_rte": {"glue_cola": 8551.0, "glue_mnli": 392702.0}}
  report = ranking.evaluate(table, "data_size", predicted)
  assert report["targets"]["super_glue_rte"]["predicted_ranking"] == ["glue_mnli", "glue_cola"]
  with pytest.raises(ranking.RankingError, match="pass --sizes FILE.csv"):
    ranking.registry_train_size("not_a_task")


def test_cli_evaluate_predictions_prints_and_writes_json(tmp_path, capsys):
  results_csv, pred_csv = write_tables(tmp_path)
  out = tmp_path / "eval.json"
  assert main(["study", "evaluate", str(results_csv), "--predictions", str(pred_csv),
               "--out", str(out)]) == 0
  lines = capsys.readouterr().out.splitlines()
  rows = {line.split()[0]: line.split() for line in lines if line.startswith(("t1 ", "t2 ",
                                                                               "average"))}
  assert rows["t1"] == ["t1", "4", "-0.800", "-0.875", "25.000", "0.000", "0.628", "3.000"]
  assert rows["average"][-1] == "2.000"
  assert ("top-3 retains >= 90% of the oracle gain on average and removes 25% of the search "
          "space") in lines
  report = json.loads(out.read_text())
  assert report["targets"]["t1"]["predicted_ranking"] == ["c", "a", "b", "d"]
  assert report["average"]["k_for_90_percent_gain"] == 3


def test_cli_evaluate_baselines(tmp_path, capsys):
  results_csv, _ = write_tables(tmp_path)
  assert main(["study", "evaluate", str(results_csv), "--baseline", "random"]) == 0
  out = capsys.readouterr().out
  assert "method: random (expected value)" in out
  # Expected rank of the best of 4: 2.5 on both targets.
  assert out.splitlines()[4].split()[-1] == "2.500"
  sizes = tmp_path / "sizes.csv"
  sizes.write_text("task,size\na,10\nb,400\nc,30\nd,20\n")
  out_json = tmp_path / "size.json"
  assert main(["study", "evaluate", str(results_csv), "--baseline", "data_size", "--sizes",
               str(sizes), "--out", str(out_json)]) == 0
  report = json.loads(out_json.read_text())
  # Ranking by size b, c, d, a: on t1 the best (b) is first, on t2 the best (d) is third.
  assert report["targets"]["t1"]["predicted_ranking"] == ["b", "c", "d", "a"]
  assert report["average"]["rho"] == 2.0
  sizes.write_text("task,size\na,10\n")
  assert main(["study", "evaluate", str(results_csv), "--baseline", "data_size", "--sizes",
               str(sizes)]) == 2
  assert "no size for source 'b'" in capsys.readouterr().err


def test_cli_evaluate_rejects_incomplete_predictions(tmp_path, capsys):
  results_csv, pred_csv = write_tables(tmp_path)
  pred_csv.write_text("target,source,score\nt1,a,1\n")
  assert main(["study", "evaluate", str(results_csv), "--predictions", str(pred_csv)]) == 2
  err = capsys.readouterr().err
  assert err == (f"spot-jax study: error: {pred_csv}: target 't1' lacks predictions for sources "
                 "['b', 'c', 'd']; add a row target,source,score for each\n")
  pred_csv.write_text("target,source,score\nt1,a,1\nt1,b,2\nt1,c,3\nt1,d,4\n")
  assert main(["study", "evaluate", str(results_csv), "--predictions", str(pred_csv)]) == 2
  assert "no predictions for target 't2'" in capsys.readouterr().err
  pred_csv.write_text("target,source,score\nt1,a,1\nt1,a,2\n")
  assert main(["study", "evaluate", str(results_csv), "--predictions", str(pred_csv)]) == 2
  assert "line 3: duplicate prediction for target=t1 source=a" in capsys.readouterr().err


def test_cli_analyze_prints_summary(tmp_path, capsys):
  results_csv, _ = write_tables(tmp_path)
  assert main(["study", "analyze", str(results_csv), "--out", str(tmp_path / "a"),
               "--threshold", "10"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == ["target", "baseline", "best", "source", "best", "score", "gain"]
  assert lines[1].split() == ["t1", "65.00", "b", "80.00", "+15.00"]
  assert lines[2].split() == ["t2", "45.00", "d", "55.00", "+10.00"]
  assert lines[3] == "mean oracle gain: +12.50 over 2 targets (score)"
  # Relative error reduction > 10%: t1 (room 35) b 42.9, d 28.6, a 14.3; t2 (room 55) d 18.2,
  # not a 9.1 -> 4 of 8 pairs.
  assert lines[4] == "positive transfers (relative error reduction > 10%): 4 of 8 pairs"
  assert (tmp_path / "a" / "transfer_heatmap.png").exists()
  bad = tmp_path / "bad.csv"
  bad.write_text("source,target,seed\n")
  assert main(["study", "analyze", str(bad), "--out", str(tmp_path / "b")]) == 2
  assert "missing ['score']" in capsys.readouterr().err
