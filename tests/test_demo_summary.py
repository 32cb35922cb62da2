"""The demo's closing summary never shows a number computed from a missing run silently."""

from __future__ import annotations

from spot_jax.app import demo_report


def test_summary_names_missing_strategy_results_and_says_what_each_mean_covers():
  strategies = {
      "synthetic_sentiment_b": {"baseline": 90.0, "best_of_top_k": 96.0,
                                "weighted_average": 97.0, "oracle": 98.0},
      "synthetic_topic_2way": {"baseline": 92.0, "best_of_top_k": 98.0,
                               "weighted_average": None, "oracle": 99.0}}
  data = {"config": {"strategies": ["best_of_top_k", "weighted_average"], "top_k": 2},
          "targets": {t: {"baseline_mean": 90.0, "untrained": 50.0} for t in strategies},
          "checks": {"a": {"passed": [], "holds": False}, "b": {"passed": [], "holds": False},
                     "c": {"method": "cosine", "regret_at_1": 1.0, "random_regret_at_1": 2.0,
                           "holds": True}},
          "strategies": strategies, "seconds": 1}
  lines = demo_report.headline(data, {demo_report.REPORT_HTML: "report.html"})
  mean_line, = [line for line in lines if line.startswith("Mean target accuracy")]
  assert "best of top k 97.0," in mean_line  # both targets: no note.
  assert "weighted average 97.0 (of 1/2)" in mean_line
  missing, = [line for line in lines if line.startswith("MISSING")]
  assert missing.endswith(f"weighted average -> {demo_report._short('synthetic_topic_2way')}")
