"""TuPaTE's in-class / all-class evaluation (rho, NDCG) in its Table 2 layout."""

from __future__ import annotations

import numpy as np
import pytest

from spot_jax.study import class_eval
from spot_jax.study.results import Aggregate

CLASSES = {"CR": ("a", "b", "c"), "QA": ("x", "y", "z")}
TASKS = ["a", "b", "c", "x", "y", "z"]


def table() -> Aggregate:
  """Targets a and x; true transfer (higher = better) with a's best source x (another class)
  and its best in-class source b; x's best source y (in-class)."""
  true = {"a": {"b": 60, "c": 50, "x": 70, "y": 40, "z": 30},
          "x": {"a": 20, "b": 25, "c": 30, "y": 80, "z": 60}}
  sources = ["none"] + TASKS
  mean = np.full((len(sources), 2), np.nan)
  for j, target in enumerate(("a", "x")):
    mean[0, j] = 45.0
    for source, value in true[target].items():
      mean[sources.index(source), j] = value
  return Aggregate(sources=sources, targets=["a", "x"], mean=mean, std=np.zeros_like(mean),
                   count=np.where(np.isfinite(mean), 3, 0))


def test_in_class_and_all_class_rho_and_ndcg():
  # The predictor prefers same-class sources: right in-class, misses a's best (x) overall.
  predicted = {"a": {"b": 0.9, "c": 0.8, "x": 0.5, "y": 0.2, "z": 0.1},
               "x": {"y": 0.9, "z": 0.8, "a": 0.1, "b": 0.2, "c": 0.3}}
  scores = class_eval.evaluate_classes(table(), {"ours": predicted, "random": None}, CLASSES)
  by = {(s.method, s.task_class, s.scope): s for s in scores}
  assert by["ours", "CR", "in-class"].rho == 1 and by["ours", "CR", "all-class"].rho == 3
  assert by["ours", "QA", "in-class"].rho == 1 and by["ours", "QA", "all-class"].rho == 1
  assert by["ours", "CR", "in-class"].ndcg == pytest.approx(1.0)  # b > c, right order.
  assert by["ours", "QA", "all-class"].ndcg == pytest.approx(1.0)  # y, z, c, b, a: exact.
  assert by["ours", "CR", "all-class"].ndcg < 1.0
  assert by["random", "CR", "in-class"].rho == pytest.approx(1.5)  # (n + 1) / 2, n = 2.
  assert by["random", "CR", "all-class"].rho == pytest.approx(3.0)  # n = 5.
  assert all(s.num_targets == 1 for s in scores)
  rows = class_eval.table(scores, list(CLASSES))
  assert rows[0] == ["method", "CR in-class rho", "CR in-class NDCG", "CR all-class rho",
                     "CR all-class NDCG", "QA in-class rho", "QA in-class NDCG",
                     "QA all-class rho", "QA all-class NDCG"]
  assert rows[1][:3] == ["ours", "1.0", "100.0"] and rows[1][3] == "3.0"
  assert [r[0] for r in rows[1:]] == ["ours", "random"]
  assert class_eval.markdown(rows).startswith("| method | CR in-class rho |")


def test_classes_without_targets_are_left_out_and_none_at_all_is_an_error():
  with pytest.raises(class_eval.ranking.RankingError, match="None of the targets"):
    class_eval.evaluate_classes(table(), {"ours": None}, {"NER": ("p", "q")})
  only_cr = class_eval.evaluate_classes(table(), {"ours": None}, {**CLASSES, "NER": ("p",)})
  assert {s.task_class for s in only_cr} == {"CR", "QA"}


def test_tupate_classes_are_the_registry_pool():
  classes = class_eval.tupate_classes()
  assert len(classes["CR"]) == len(classes["QA"]) == 11
  assert len(set(classes["CR"]) | set(classes["QA"])) == 22  # disjoint classes.


def test_study_evaluate_prints_the_class_table(tmp_path, capsys):
  """`spot-jax study evaluate --classes tupate` on TuPaTE task names (random baseline)."""
  from spot_jax.cli.main import main
  rows = ["source,target,seed,score"]
  truth = {"glue_rte": {"none": 50, "glue_mrpc": 60, "snli": 70, "squad": 40},
           "squad": {"none": 30, "drop": 50, "glue_rte": 20}}
  for target, scores in truth.items():
    rows += [f"{s},{target},0,{v}" for s, v in scores.items()]
  (tmp_path / "results.csv").write_text("\n".join(rows) + "\n")
  assert main(["study", "evaluate", str(tmp_path / "results.csv"), "--baseline", "random",
               "--classes", "tupate"]) == 0
  out = capsys.readouterr().out
  assert "| method | CR in-class rho | CR in-class NDCG | CR all-class rho |" in out
  # glue_rte: in-class candidates glue_mrpc, snli (expected rho 1.5); all-class adds squad (2.0).
  assert "| random (expected value) | 1.5 |" in out and "| 2.0 |" in out
