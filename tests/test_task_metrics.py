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


def test_binary_f1_counts_invalid_predictions_as_the_wrong_class():
  # tp=2, fp=1, fn=1 -> P = R = 2/3 -> F1 = 2/3.
  result = metrics.f1_score_with_invalid([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
  assert result["f1"] == pytest.approx(200 / 3)
  # -1 on a positive is a false negative, on a negative a false positive (T5): tp=1, fn=1,
  # fp=1 -> F1 = 1/2 (it would be 2/3 if invalid meant "not positive").
  assert metrics.f1_score_with_invalid([1, 1, 0], [1, -1, -1])["f1"] == pytest.approx(50.0)
  assert metrics.f1_score_with_invalid([0, 0], [0, 0])["f1"] == 0.0


def test_cb_f1_averages_the_three_fixed_classes():
  # Per-class F1: class 0 = 1, class 1 = 2/3 (tp 1, fn 1), class 2 = 2/3 (tp 1, fp 1).
  result = metrics.mean_3class_f1([0, 1, 1, 2], [0, 1, 2, 2])
  assert result["mean_3class_f1"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3) / 3)
  # Class 2 never occurs: it still counts (F1 0), unlike a mean over the target classes.
  assert metrics.mean_3class_f1([0, 1], [0, 1])["mean_3class_f1"] == pytest.approx(200 / 3)
  assert metrics.mean_3class_f1([0, 1], [-1, 1])["mean_3class_f1"] == pytest.approx(100 / 3)


def test_matthews_correlation():
  assert metrics.matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1])["matthews_corrcoef"] == (
      pytest.approx(100.0))
  assert metrics.matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0])["matthews_corrcoef"] == (
      pytest.approx(-100.0))
  # tp=1 tn=1 fp=1 fn=1 -> 0.
  assert metrics.matthews_corrcoef([1, 1, 0, 0], [1, 0, 1, 0])["matthews_corrcoef"] == (
      pytest.approx(0.0))


def test_pearson_and_spearman():
  targets = [1.0, 2.0, 3.0, 4.0]
  pearson, spearman = metrics.pearson_corrcoef, metrics.spearman_corrcoef
  assert pearson(targets, [2.0, 4.0, 6.0, 8.0])["pearson_corrcoef"] == pytest.approx(100.0)
  assert pearson(targets, [4.0, 3.0, 2.0, 1.0])["pearson_corrcoef"] == pytest.approx(-100.0)
  # Monotonic but not linear: Spearman is perfect, Pearson is not.
  squares = [1.0, 4.0, 9.0, 100.0]
  assert spearman(targets, squares)["spearman_corrcoef"] == pytest.approx(100.0)
  assert pearson(targets, squares)["pearson_corrcoef"] < 95
  # Ranks (1, 2, 3) vs (1, 3, 2): rho = 1 - 6 * 2 / (3 * 8) = 0.5.
  assert spearman([1.0, 2.0, 3.0], [10.0, 30.0, 20.0])["spearman_corrcoef"] == pytest.approx(50.0)


def test_length_mismatch_raises():
  with pytest.raises(ValueError, match="targets"):
    metrics.accuracy([0, 1], [0])


# ----------------------------------------------------------------------------- MultiRC
def test_multirc_f1a_and_exact_match():
  targets = [{"group": 1, "value": 1}, {"group": 1, "value": 0},
             {"group": 2, "value": 1}, {"group": 2, "value": 1}, {"group": 3, "value": 0}]
  predictions = [{"value": 1}, {"value": 0}, {"value": 1}, {"value": -1}, {"value": -1}]
  # Answer-level, invalid = wrong class: tp=2, fn=1, fp=1 -> F1a = 2/3.
  assert metrics.multirc_f1_over_all_answers(targets, predictions)["f1"] == pytest.approx(
      200 / 3)
  # Question-level: q1 right, q2 and q3 wrong -> 1/3.
  assert metrics.multirc_exact_match(targets, predictions)["exact_match"] == pytest.approx(
      100 / 3)


# ----------------------------------------------------------------------------- SQuAD / ReCoRD
def test_answer_normalisation():
  assert metrics.normalize_squad("The  Eiffel-Tower!") == "eiffeltower"
  assert metrics.normalize_squad("an apple a day") == "apple day"


def test_squad_em_and_f1():
  targets = [["Paris", "the city of Paris"], ["Barack Obama"], ["blue"]]
  predictions = ["paris", "Obama", "red"]
  result = metrics.squad(targets, predictions)
  # EM: 1, 0, 0. F1: 1, 2/3 (P = 1, R = 1/2), 0.
  assert result["em"] == pytest.approx(100 / 3)
  assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
  assert metrics.squad([["a single answer"]], ["A single answer."]) == {"em": 100.0, "f1": 100.0}


def test_squad_empty_answers_as_t5():
  # Answers that normalise to nothing: EM 1 (equal strings) but F1 0 (no common token).
  assert metrics.squad([["the"]], ["a"]) == {"em": 100.0, "f1": 0.0}
  with pytest.raises(ValueError, match="no reference answers"):
    metrics.squad([[]], ["x"])


def test_record_counts_each_query_once_with_its_first_prediction():
  targets = [{"group": (0, 0), "value": ["Obama", "Barack Obama"]},
             {"group": (0, 0), "value": ["Obama", "Barack Obama"]},
             {"group": (0, 1), "value": ["Paris"]}]
  predictions = [{"value": "Barack Obama"}, {"value": "nobody"}, {"value": "London"}]
  assert metrics.record(targets, predictions) == {"em": 50.0, "f1": 50.0}


# ----------------------------------------------------------------------------- generation
def test_rouge_and_bleu_use_the_reference_packages():
  perfect = metrics.rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
  assert perfect == {"rouge1": 100.0, "rouge2": 100.0, "rougeLsum": 100.0}
  # Unigrams: 2 of 3 each way -> 2/3; bigrams: "a b" only -> P = R = 1/2.
  partial = metrics.rouge(["a b c"], ["a b d"])
  assert partial["rouge1"] == pytest.approx(200 / 3)
  assert partial["rouge2"] == pytest.approx(50.0)
  assert metrics.bleu(["the quick brown fox jumps"], ["the quick brown fox jumps"])["bleu"] == (
      pytest.approx(100.0))
  assert metrics.bleu(["the quick brown fox"], ["a slow red dog"])["bleu"] == 0.0
  # Same 4 words plus brevity: 4 of 5 reference words -> BP = exp(1 - 5/4).
  short = metrics.bleu(["the quick brown fox jumps"], ["the quick brown fox"])["bleu"]
  assert short == pytest.approx(100 * math.exp(1 - 5 / 4))
  # Several references per example: each matches one of its own references exactly.
  targets = [["the cat sat on mats", "a cat sat on the mat"],
             ["one dog ran in parks", "a dog ran in the park"]]
  two_refs = metrics.bleu(targets, ["a cat sat on the mat", "one dog ran in parks"])
  assert two_refs["bleu"] == pytest.approx(100.0)


def test_metric_lookup_by_name():
  assert metrics.metric_fns(["accuracy", "matthews_corrcoef"]) == [metrics.accuracy,
                                                                   metrics.matthews_corrcoef]
  with pytest.raises(KeyError, match="Unknown metrics"):
    metrics.metric_fns(["nope"])


# ----------------------------------------------------------------------------- postprocessors
def test_class_id_is_exact_like_string_label_to_class_id():
  names = ("entailment", "neutral", "contradiction")
  assert postprocessors.class_id("neutral", label_names=names) == 1
  assert postprocessors.class_id(b"contradiction", example={}, is_target=True,
                                 label_names=names) == 2
  for junk in ("", "maybe", "entailment neutral", b"\xff\xfe", " neutral", "neutral ",
               "Entailment"):
    assert postprocessors.class_id(junk, label_names=names) == postprocessors.INVALID
  assert postprocessors.class_id(" positive", label_names=("negative", "positive")) == -1


def test_to_float_is_pythons_float():
  assert postprocessors.to_float("3.8") == pytest.approx(3.8)
  assert postprocessors.to_float(b" 0.2 ") == pytest.approx(0.2)
  for junk in ("three", ""):
    assert postprocessors.to_float(junk) == -1.0
  assert math.isnan(postprocessors.to_float("nan"))


def test_qa_record_and_multirc_postprocessors():
  example = {"answers": np.array([b"Paris", b"the city"]), "idx/passage": np.int32(3),
             "idx/query": np.int32(7), "idx/question": np.int32(5)}
  assert postprocessors.qa_answers("Paris", example=example, is_target=True) == ["Paris",
                                                                                 "the city"]
  assert postprocessors.qa_answers(" Rome ", example=example, is_target=False) == " Rome "
  assert postprocessors.record_answers("Paris", example=example, is_target=True) == {
      "group": (3, 7), "value": ["Paris", "the city"]}
  assert postprocessors.record_answers("Rome", example=example) == {"value": "Rome"}
  assert postprocessors.multirc_value("True", example=example, is_target=True) == {
      "group": 5, "value": 1}
  assert postprocessors.multirc_value("True ", example=example) == {"value": -1}


def test_label_set():
  assert postprocessors.label_set("joy, Love,joy") == postprocessors.label_set("love, joy")
  assert postprocessors.label_set("") == ""


def test_postprocessed_predictions_score_end_to_end():
  """Model text -> class ids -> metric, with an unparseable prediction counted wrong."""
  names = ("not_equivalent", "equivalent")
  targets = [postprocessors.class_id(t, is_target=True, label_names=names)
             for t in ("equivalent", "equivalent", "not_equivalent", "not_equivalent")]
  predictions = [postprocessors.class_id(p, label_names=names)
                 for p in ("equivalent", "banana", "not_equivalent", " equivalent")]
  assert predictions == [1, -1, 0, -1]
  assert metrics.accuracy(targets, predictions)["accuracy"] == 50.0
  # tp=1, fn=1 ("banana" on a positive), fp=1 (" equivalent" on a negative) -> F1 = 0.5.
  assert metrics.f1_score_with_invalid(targets, predictions)["f1"] == pytest.approx(50.0)
