"""Metrics and postprocessors of the real tasks on hand-made predictions with known scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks import metrics, postprocessors


# ----------------------------------------------------------------------------- classification
def test_accuracy():
  assert metrics.accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == {"accuracy": 75.0}
  assert metrics.accuracy(["a, b", "c"], ["a, b", "d"]) == {"accuracy": 50.0}


def test_binary_f1_of_positive_class():
  # tp=2, fp=1, fn=1 -> P = R = 2/3 -> F1 = 2/3.
  result = metrics.f1([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
  assert result["f1"] == pytest.approx(200 / 3)
  # An invalid prediction (-1) is simply not positive: tp=1, fn=1 -> F1 = 2/3.
  assert metrics.f1([1, 1, 0], [1, -1, -1])["f1"] == pytest.approx(200 / 3)
  assert metrics.f1([0, 0], [0, 0])["f1"] == 0.0


def test_macro_f1_over_target_classes():
  # Per-class F1: class 0 = 1, class 1 = 2/3 (tp 1, fn 1), class 2 = 2/3 (tp 1, fp 1).
  result = metrics.macro_f1([0, 1, 1, 2], [0, 1, 2, 2])
  assert result["macro_f1"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3) / 3)
  # -1 predictions are wrong for their class and are no class of their own.
  assert metrics.macro_f1([0, 1], [-1, 1])["macro_f1"] == pytest.approx(50.0)


def test_matthews_correlation():
  assert metrics.mcc([0, 1, 0, 1], [0, 1, 0, 1])["mcc"] == pytest.approx(100.0)
  assert metrics.mcc([0, 1, 0, 1], [1, 0, 1, 0])["mcc"] == pytest.approx(-100.0)
  # tp=1 tn=1 fp=1 fn=1 -> 0.
  assert metrics.mcc([1, 1, 0, 0], [1, 0, 1, 0])["mcc"] == pytest.approx(0.0)


def test_pearson_and_spearman():
  targets = [1.0, 2.0, 3.0, 4.0]
  assert metrics.pearson(targets, [2.0, 4.0, 6.0, 8.0])["pearson"] == pytest.approx(100.0)
  assert metrics.pearson(targets, [4.0, 3.0, 2.0, 1.0])["pearson"] == pytest.approx(-100.0)
  # Monotonic but not linear: Spearman is perfect, Pearson is not.
  squares = [1.0, 4.0, 9.0, 100.0]
  assert metrics.spearman(targets, squares)["spearman"] == pytest.approx(100.0)
  assert metrics.pearson(targets, squares)["pearson"] < 95
  # Ranks (1, 2, 3) vs (1, 3, 2): rho = 1 - 6 * 2 / (3 * 8) = 0.5.
  assert metrics.spearman([1.0, 2.0, 3.0], [10.0, 30.0, 20.0])["spearman"] == pytest.approx(50.0)


def test_length_mismatch_raises():
  with pytest.raises(ValueError, match="targets"):
    metrics.accuracy([0, 1], [0])


# ----------------------------------------------------------------------------- MultiRC
def test_multirc_f1a_and_exact_match():
  targets = [{"group": "q1", "value": 1}, {"group": "q1", "value": 0},
             {"group": "q2", "value": 1}, {"group": "q2", "value": 1}]
  predictions = [{"group": "q1", "value": 1}, {"group": "q1", "value": 0},
                 {"group": "q2", "value": 1}, {"group": "q2", "value": -1}]
  result = metrics.multirc(targets, predictions)
  # Answer-level: tp=2, fn=1, fp=0 -> F1a = 0.8. Question-level: q1 right, q2 wrong -> 50.
  assert result["f1a"] == pytest.approx(80.0)
  assert result["exact_match"] == pytest.approx(50.0)
  assert metrics.multirc([1, 0], [1, 0]) == {"f1a": 100.0, "exact_match": 100.0}


# ----------------------------------------------------------------------------- SQuAD / ReCoRD
def test_answer_normalisation():
  assert metrics.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
  assert metrics.normalize_answer("an apple a day") == "apple day"


def test_squad_em_and_f1():
  targets = [["Paris", "the city of Paris"], ["Barack Obama"], ["blue"]]
  predictions = ["paris", "Obama", "red"]
  result = metrics.squad(targets, predictions)
  # EM: 1, 0, 0. F1: 1, 2/3 (P = 1, R = 1/2), 0.
  assert result["em"] == pytest.approx(100 / 3)
  assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
  assert metrics.squad(["a single answer"], ["A single answer."]) == {"em": 100.0, "f1": 100.0}


def test_record_counts_each_query_once():
  targets = [{"group": "p0-q0", "answers": ["Obama", "Barack Obama"]},
             {"group": "p0-q0", "answers": ["Obama", "Barack Obama"]},
             {"group": "p0-q1", "answers": ["Paris"]}]
  predictions = [{"group": "p0-q0", "value": "Barack Obama"},
                 {"group": "p0-q0", "value": "Barack Obama"},
                 {"group": "p0-q1", "value": "London"}]
  assert metrics.record(targets, predictions) == {"em": 50.0, "f1": 50.0}


# ----------------------------------------------------------------------------- generation
def test_rouge_and_bleu():
  perfect = metrics.rouge(["the cat sat on the mat"], ["The cat sat on the mat."])
  assert perfect == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
  # Unigrams: 2 of 3 each way -> 2/3; bigrams: "a b" only -> P = R = 1/2; LCS "a b" -> 2/3.
  partial = metrics.rouge(["a b c"], ["a b d"])
  assert partial["rouge1"] == pytest.approx(200 / 3)
  assert partial["rouge2"] == pytest.approx(50.0)
  assert partial["rougeL"] == pytest.approx(200 / 3)
  assert metrics.bleu(["the quick brown fox jumps"], ["the quick brown fox jumps"])["bleu"] == (
      pytest.approx(100.0))
  assert metrics.bleu(["the quick brown fox"], ["a slow red dog"])["bleu"] == 0.0
  # Same 4 words plus brevity: 4 of 5 reference words -> BP = exp(1 - 5/4).
  short = metrics.bleu(["the quick brown fox jumps"], ["the quick brown fox"])["bleu"]
  assert short == pytest.approx(100 * math.exp(1 - 5 / 4))


def test_metric_lookup_by_name():
  assert metrics.metric_fns(["accuracy", "mcc"]) == [metrics.accuracy, metrics.mcc]
  with pytest.raises(KeyError, match="Unknown metrics"):
    metrics.metric_fns(["nope"])


# ----------------------------------------------------------------------------- postprocessors
def test_class_id_maps_labels_and_unknown_text():
  names = ("entailment", "neutral", "contradiction")
  assert postprocessors.class_id("neutral", label_names=names) == 1
  assert postprocessors.class_id(b" contradiction ", example={}, is_target=True,
                                 label_names=names) == 2
  assert postprocessors.class_id("Entailment", label_names=names) == 0
  for junk in ("", "maybe", "entailment neutral", b"\xff\xfe"):
    assert postprocessors.class_id(junk, label_names=names) == postprocessors.INVALID


def test_to_float_tolerates_junk():
  assert postprocessors.to_float("3.8") == pytest.approx(3.8)
  assert postprocessors.to_float(b" 0.2 ") == pytest.approx(0.2)
  for junk in ("three", "", "nan", "inf"):
    assert postprocessors.to_float(junk) == -1.0


def test_qa_record_and_multirc_postprocessors():
  example = {"answers": np.array([b"Paris", b"the city"]), "group": b"3-7"}
  assert postprocessors.qa_answers("Paris", example=example, is_target=True) == ["Paris",
                                                                                 "the city"]
  assert postprocessors.qa_answers(" Rome ", example=example, is_target=False) == "Rome"
  assert postprocessors.record_answers("Paris", example=example, is_target=True) == {
      "group": "3-7", "answers": ["Paris", "the city"]}
  assert postprocessors.record_answers("Rome", example=example, is_target=False) == {
      "group": "3-7", "value": "Rome"}
  assert postprocessors.multirc_value("True", example=example, is_target=False) == {
      "group": "3-7", "value": 1}
  assert postprocessors.multirc_value("perhaps", example=example)["value"] == -1


def test_label_set_and_stripped():
  assert postprocessors.label_set("joy, Love,joy") == postprocessors.label_set("love, joy")
  assert postprocessors.label_set("") == ""
  assert postprocessors.stripped(b" a summary \n") == "a summary"


def test_postprocessed_predictions_score_end_to_end():
  """Model text -> class ids -> metric, with an unparseable prediction counted wrong."""
  names = ("not_equivalent", "equivalent")
  targets = [postprocessors.class_id(t, is_target=True, label_names=names)
             for t in ("equivalent", "equivalent", "not_equivalent", "not_equivalent")]
  predictions = [postprocessors.class_id(p, label_names=names)
                 for p in ("equivalent", "banana", "not_equivalent", "equivalent")]
  assert predictions == [1, -1, 0, 1]
  assert metrics.accuracy(targets, predictions)["accuracy"] == 50.0
  # tp=1, fp=1, fn=1 -> F1 = 0.5.
  assert metrics.f1(targets, predictions)["f1"] == pytest.approx(50.0)
