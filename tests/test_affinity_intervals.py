"""Confidence intervals over targets and the paired head-against-rival comparison
(`spot_jax.study.affinity_intervals`, `spot-jax affinity evaluate --bootstrap`)."""

import csv
import math

import pytest

from spot_jax.study import affinity_intervals
from spot_jax.study.affinity_eval import PER_TARGET


def _row(method, **columns):
  """A compare() row with per-target values {column: [value per target t0, t1, ...]}."""
  n = len(next(iter(columns.values())))
  return {"method": method,
          PER_TARGET: {f"t{i}": {c: v[i] for c, v in columns.items()} for i in range(n)}}


def test_bootstrap_interval_brackets_the_mean_is_seeded_and_drops_nans():
  mean, low, high = affinity_intervals.bootstrap_interval([1, 2, 3, 4, 5, math.nan],
                                                          resamples=2000)
  assert mean == 3.0 and 1.0 <= low < 3.0 < high <= 5.0
  assert affinity_intervals.bootstrap_interval([1, 2, 3, 4, 5], resamples=2000) == \
      (mean, low, high)  # the same seed, the same interval.
  wide = affinity_intervals.bootstrap_interval([-10, 0, 10, 20, 30], resamples=2000)
  assert wide[2] - wide[1] > 5 * (high - low)
  assert affinity_intervals.bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
  single = affinity_intervals.bootstrap_interval([4.0, math.nan])
  assert single[0] == 4.0 and math.isnan(single[1]) and math.isnan(single[2])


def test_paired_counts_wins_ties_losses_with_regret_lower_is_better():
  rows = [_row("head", spearman=[0.5, 0.6, 0.7], regret_at_1=[1.0, 2.0, 0.0]),
          _row("cosine", spearman=[0.1, 0.6, 0.9], regret_at_1=[3.0, 2.0, 4.0]),
          {"method": "random (expected)"}]  # no per-target values: not a rival.
  out = affinity_intervals.paired(rows, "head", columns=("spearman", "regret_at_1"),
                                  resamples=500)
  by_column = {r["column"]: r for r in out}
  assert [r["rival"] for r in out] == ["cosine", "cosine"]
  spearman = by_column["spearman"]
  assert (spearman["wins"], spearman["ties"], spearman["losses"]) == (1, 1, 1)
  assert spearman["mean_difference"] == pytest.approx((0.4 + 0.0 - 0.2) / 3)
  regret = by_column["regret_at_1"]  # the head's regret is lower on two targets: two wins.
  assert (regret["wins"], regret["ties"], regret["losses"]) == (2, 1, 0)
  assert regret["mean_difference"] == pytest.approx(-2.0) and regret["high"] <= 0.0
  with pytest.raises(ValueError, match="No per-target values for 'affinity'"):
    affinity_intervals.paired(rows, "affinity")
  with pytest.raises(ValueError, match=r"No per-target values for \['euclidean'\]"):
    affinity_intervals.paired(rows, "head", ["euclidean"])


def test_paired_leaves_out_targets_where_a_correlation_is_undefined():
  rows = [_row("head", spearman=[0.5, math.nan, 0.7]), _row("cosine", spearman=[0.1, 0.2, 0.3])]
  (out,) = affinity_intervals.paired(rows, "head", columns=("spearman",), resamples=500)
  assert out["n_targets"] == 2 and out["mean_difference"] == pytest.approx(0.4)


def test_evaluate_bootstrap_writes_intervals_and_the_heads_paired_differences(tmp_path, capsys):
  """Cross-validated heads (2 seeds) on a planted pool: `--bootstrap` prints and writes each
  scorer's interval over targets and the seed-averaged head minus cosine; `--scorers` adds a
  rival by name."""
  from test_affinity import library_and_results

  from spot_jax.cli.main import main
  library = library_and_results(tmp_path, "cosine", 4)
  results_csv, heads = str(tmp_path / "results.csv"), str(tmp_path / "folds")
  assert main(["affinity", "train", results_csv, "--library", library, "--out", heads,
               "--cross_validate", "--gin.AffinityConfig.train_steps=5", "--seeds", "0", "1"]) == 0
  capsys.readouterr()
  table = str(tmp_path / "table.csv")
  assert main(["affinity", "evaluate", results_csv, "--head", heads, "--library", library,
               "--scorers", "random:3", "--bootstrap", "300", "--paired_with", "cosine",
               "random:3", "--out", table]) == 0
  printed = capsys.readouterr().out
  assert "random:3" in printed.split("Table 1")[0]
  assert "95% bootstrap intervals (300 resamples of the targets)" in printed
  assert "affinity (mean over 2 seeds) minus each rival" in printed
  with open(str(tmp_path / "table_intervals.csv")) as f:
    intervals = {r["method"]: r for r in csv.DictReader(f)}
  assert {"affinity (mean over 2 seeds)", "cosine", "random:3", "brute_force"} <= set(intervals)
  oracle = intervals["brute_force"]
  assert float(oracle["spearman"]) == 1.0 and float(oracle["regret_at_1"]) == 0.0
  cosine = intervals["cosine"]  # the planted gains are cosines: near-perfect, within [low, high].
  assert float(cosine["spearman_low"]) <= float(cosine["spearman"]) <= \
      float(cosine["spearman_high"])
  with open(str(tmp_path / "table_table1.csv")) as f:  # Table 1 keeps its own header.
    assert f.readline().startswith("method,task_")
  with open(str(tmp_path / "table_paired.csv")) as f:
    paired = list(csv.DictReader(f))
  assert [(r["rival"], r["column"]) for r in paired] == [
      (rival, column) for rival in ("cosine", "random:3")
      for column in affinity_intervals.INTERVAL_COLUMNS]
  assert all(int(r["wins"]) + int(r["ties"]) + int(r["losses"]) == int(r["n_targets"]) <= 4
             for r in paired)
  # The same command in a fresh process (the installed entry point), on the heads trained above.
  from conftest import spot_jax_cli
  fresh = spot_jax_cli("affinity", "evaluate", results_csv, "--head", heads, "--library",
                       library, "--bootstrap", "200", "--paired_with", "cosine",
                       "--out", tmp_path / "fresh.csv")
  assert fresh.returncode == 0, fresh.stderr
  assert "affinity (mean over 2 seeds) minus each rival" in fresh.stdout
  with open(str(tmp_path / "fresh_paired.csv")) as f:
    assert {r["rival"] for r in csv.DictReader(f)} == {"cosine"}


def test_model_scorers_are_labelled_without_their_path():
  from spot_jax.library.scorers import short_name
  assert short_name("textemb:/runs/x/checkpoint_1500") == "textemb"
  assert short_name("fisher:/runs/x/checkpoint_1500") == "fisher"
  assert short_name("random:3") == "random:3" and short_name("cosine") == "cosine"
