"""Metrics of the real tasks, as seqio metric functions `fn(targets, predictions) -> dict`.

Each is the `t5` library's metric of the same name (`t5/evaluation/metrics.py`, QA helpers from
`t5/evaluation/qa_utils.py`), with T5's result keys and 0-100 scale, so numbers compare with
T5X runs and the SPoT tables. Classification metrics take class ids from `tasks.postprocessors`
(-1 marks text that is no label). ROUGE is `rouge-score` and BLEU `sacrebleu`, as in T5.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.stats
import sklearn.metrics

MetricFn = Callable[[Sequence[Any], Sequence[Any]], dict[str, float]]


def _check_lengths(targets: Sequence[Any], predictions: Sequence[Any]) -> None:
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")


# ------------------------------------------------------------------ classification
def accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  """Exact-match accuracy of labels (ids or strings). T5: `metrics.accuracy`."""
  _check_lengths(targets, predictions)
  return {"accuracy": 100 * float(sklearn.metrics.accuracy_score(list(targets),
                                                                 list(predictions)))}


def f1_score_with_invalid(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """Binary F1 of class 1 where a prediction other than 0/1 counts as the wrong class.

  An invalid prediction becomes `1 - target`: a false negative for a positive example and a
  false positive for a negative one. T5: `metrics.f1_score_with_invalid` (GLUE MRPC, QQP).
  """
  _check_lengths(targets, predictions)
  gold = np.asarray(targets, dtype=np.int64)
  pred = np.array(predictions, dtype=np.int64)
  invalid = (pred != 0) & (pred != 1)
  pred[invalid] = 1 - gold[invalid]
  return {"f1": 100 * float(sklearn.metrics.f1_score(gold, pred))}


def mean_3class_f1(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """Unweighted mean of per-class F1 over the fixed classes 0, 1, 2 (CB).

  T5: `metrics.mean_multiclass_f1(num_classes=3)` (sklearn `fbeta_score`, beta 1, macro over
  `range(3)`; an invalid prediction is a miss for its example's class).
  """
  _check_lengths(targets, predictions)
  score = sklearn.metrics.fbeta_score(list(targets), list(predictions), beta=1,
                                      labels=range(3), average="macro")
  return {"mean_3class_f1": 100 * float(score)}


def matthews_corrcoef(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """Matthews correlation (CoLA). T5: `sklearn_metrics_wrapper("matthews_corrcoef")`."""
  _check_lengths(targets, predictions)
  return {"matthews_corrcoef": 100 * float(sklearn.metrics.matthews_corrcoef(
      list(targets), list(predictions)))}


def pearson_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
  """Pearson correlation (STS-B, CxC). T5: `metrics.pearson_corrcoef`."""
  _check_lengths(targets, predictions)
  return {"pearson_corrcoef": 100 * float(scipy.stats.pearsonr(targets, predictions)[0])}


def spearman_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
  """Spearman rank correlation (STS-B, CxC). T5: `metrics.spearman_corrcoef`."""
  _check_lengths(targets, predictions)
  return {"spearman_corrcoef": 100 * float(scipy.stats.spearmanr(targets, predictions)[0])}


# ------------------------------------------------------------------ SQuAD-style answers
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_squad(text: str) -> str:
  """Lower case, punctuation removed, articles to spaces, whitespace collapsed.

  T5: `qa_utils.normalize_squad` (the official SQuAD v1.1 normalisation).
  """
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def _token_f1(target: str, prediction: str) -> float:
  """T5 `qa_utils._f1_score`: token-overlap F1; 0 when nothing overlaps (also both empty)."""
  pred_tokens, gold_tokens = prediction.split(), target.split()
  overlap = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
  if overlap == 0:
    return 0.0
  precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def squad(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
  """SQuAD EM / F1 of normalised answers, max over each example's reference answers.

  Targets are lists of answers. An example without reference answers (an unlabelled split)
  cannot be scored and raises. T5: `metrics.squad` -> `qa_utils.qa_metrics`.
  """
  _check_lengths(targets, predictions)
  if not targets:
    raise ValueError("SQuAD metrics need at least one example")
  ems, f1s = [], []
  for i, (answers, prediction) in enumerate(zip(targets, predictions)):
    answers = [answers] if isinstance(answers, str) else list(answers)
    if not answers:
      raise ValueError(f"Example {i} has no reference answers to score against (an unlabelled "
                       "split?); evaluate a split with answers")
    gold = [normalize_squad(str(a)) for a in answers]
    pred = normalize_squad(str(prediction))
    ems.append(max(float(g == pred) for g in gold))
    f1s.append(max(_token_f1(g, pred) for g in gold))
  return {"em": 100 * float(np.mean(ems)), "f1": 100 * float(np.mean(f1s))}


def _deduplicated(targets: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]]
                  ) -> tuple[list[Any], list[Any]]:
  """T5 `metrics.deduplicate_metric`: the first (target, prediction) value of each group."""
  seen, kept_targets, kept_predictions = set(), [], []
  for target, prediction in zip(targets, predictions):
    if target["group"] in seen:
      continue
    seen.add(target["group"])
    kept_targets.append(target["value"])
    kept_predictions.append(prediction["value"])
  return kept_targets, kept_predictions


def record(targets: Sequence[Mapping[str, Any]],
           predictions: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """ReCoRD EM / F1: SQuAD metrics on one example per query (the first of its answers).

  Targets `{"group", "value": answers}`, predictions `{"value": text}` (`postprocessors.
  record_answers`). T5: `metrics.deduplicate_metric(metrics.squad)`.
  """
  _check_lengths(targets, predictions)
  return squad(*_deduplicated(targets, predictions))


def multirc_f1_over_all_answers(targets: Sequence[Mapping[str, Any]],
                                predictions: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """MultiRC F1a: `f1_score_with_invalid` over every answer option.

  T5: `metrics.multirc_f1_over_all_answers`.
  """
  return f1_score_with_invalid([t["value"] for t in targets], [p["value"] for p in predictions])


def multirc_exact_match(targets: Sequence[Mapping[str, Any]],
                        predictions: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """MultiRC EM: per question, 100 if every answer option is right; mean over questions.

  T5: `metrics.mean_group_metric(metrics.all_match)` (groups by the target's "group").
  """
  _check_lengths(targets, predictions)
  grouped: dict[Any, tuple[list[Any], list[Any]]] = collections.defaultdict(lambda: ([], []))
  for target, prediction in zip(targets, predictions):
    grouped[target["group"]][0].append(target["value"])
    grouped[target["group"]][1].append(prediction["value"])
  scores = [100 * float(np.array_equal(t, p)) for t, p in grouped.values()]
  return {"exact_match": float(np.mean(scores))}


# ------------------------------------------------------------------ generation
ROUGE_KEYS = ("rouge1", "rouge2", "rougeLsum")


def rouge(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """ROUGE-1 / ROUGE-2 / ROUGE-Lsum F-measures with `rouge-score`'s bootstrap aggregate (mid).

  Sentences are split at " . " for ROUGE-Lsum. T5: `metrics.rouge` (as prompt-tuning's SPoT
  summarisation tasks score; the bootstrap resamples with NumPy's global RNG).
  """
  from rouge_score import rouge_scorer, scoring  # Imported on use: keeps `tasks` light.
  _check_lengths(targets, predictions)
  scorer = rouge_scorer.RougeScorer(rouge_types=ROUGE_KEYS)
  aggregator = scoring.BootstrapAggregator()
  for prediction, target in zip(predictions, targets):
    aggregator.add_scores(scorer.score(target=str(target).replace(" . ", " .\n"),
                                       prediction=str(prediction).replace(" . ", " .\n")))
  result = aggregator.aggregate()
  return {key: 100 * float(result[key].mid.fmeasure) for key in ROUGE_KEYS}


def bleu(targets: Sequence[Any], predictions: Sequence[str]) -> dict[str, float]:
  """Corpus BLEU with `sacrebleu` (13a-"intl" tokeniser, exp smoothing, case-sensitive).

  Targets are strings, or lists of references (one list per example, equally long).
  T5: `metrics.bleu`.
  """
  import sacrebleu  # Imported on use: keeps `tasks` light.
  _check_lengths(targets, predictions)
  if targets and isinstance(targets[0], (list, tuple)):
    references = [list(refs) for refs in zip(*targets)]
  else:
    references = [list(targets)]
  score = sacrebleu.corpus_bleu(list(predictions), references, smooth_method="exp",
                                smooth_value=0.0, force=False, lowercase=False, tokenize="intl",
                                use_effective_order=False)
  return {"bleu": float(score.score)}


METRIC_FNS: Mapping[str, MetricFn] = {
    "accuracy": accuracy,
    "f1_score_with_invalid": f1_score_with_invalid,
    "mean_3class_f1": mean_3class_f1,
    "matthews_corrcoef": matthews_corrcoef,
    "pearson_corrcoef": pearson_corrcoef,
    "spearman_corrcoef": spearman_corrcoef,
    "squad": squad,
    "record": record,
    "multirc_f1_over_all_answers": multirc_f1_over_all_answers,
    "multirc_exact_match": multirc_exact_match,
    "rouge": rouge,
    "bleu": bleu,
}


def metric_fns(names: Sequence[str]) -> list[MetricFn]:
  """Metric functions by name (see `METRIC_FNS`)."""
  unknown = [n for n in names if n not in METRIC_FNS]
  if unknown:
    raise KeyError(f"Unknown metrics {unknown}; known: {sorted(METRIC_FNS)}")
  return [METRIC_FNS[n] for n in names]


def squad_v2(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
  """SQuAD 2.0 EM / F1: as `squad`, but an unanswerable question (reference answers [""])
  scores 1 exactly when the prediction is empty too.

  The official SQuAD 2.0 `evaluate-v2.0.py` (`compute_exact`, `compute_f1`: when either
  side has no tokens, F1 is whether both have none); T5's `_f1_score` gives 0 there.
  """
  _check_lengths(targets, predictions)
  if not targets:
    raise ValueError("SQuAD metrics need at least one example")
  ems, f1s = [], []
  for answers, prediction in zip(targets, predictions):
    answers = [answers] if isinstance(answers, str) else (list(answers) or [""])
    gold = [normalize_squad(str(a)) for a in answers]
    pred = normalize_squad(str(prediction))
    ems.append(max(float(g == pred) for g in gold))
    f1s.append(max(float(g == pred) if not (g and pred) else _token_f1(g, pred) for g in gold))
  return {"em": 100 * float(np.mean(ems)), "f1": 100 * float(np.mean(f1s))}


# Sequence labelling (tasks.sequence_labelling): token accuracy and seqeval span F1.
from tasks import sequence_labelling as _sequence_labelling  # noqa: E402  pylint: disable=wrong-import-position
METRIC_FNS = {**METRIC_FNS, "squad_v2": squad_v2, **_sequence_labelling.METRIC_FNS}
