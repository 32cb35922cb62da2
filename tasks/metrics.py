"""Metrics of the real tasks, as seqio metric functions `fn(targets, predictions) -> dict`.

Scores are percentages (0-100), as in T5 and the SPoT paper. Classification metrics take
class ids from `tasks.postprocessors` (-1 marks text that is no label: always wrong).
Implementations are scikit-learn / scipy, except the SQuAD answer normalisation and the
simple ROUGE / BLEU below (whitespace-and-punctuation tokenisation: close to, but not
identical with, rouge_score / sacreBLEU).
"""

from __future__ import annotations

import collections
import math
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


def accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  """Exact-match accuracy of labels (ids or strings)."""
  _check_lengths(targets, predictions)
  return {"accuracy": 100 * sklearn.metrics.accuracy_score(list(targets), list(predictions))}


def f1(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """Binary F1 of the positive class (id 1), as in GLUE MRPC / QQP."""
  _check_lengths(targets, predictions)
  score = sklearn.metrics.f1_score(list(targets), list(predictions), labels=[1],
                                   average="macro", zero_division=0)
  return {"f1": 100 * float(score)}


def macro_f1(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """Mean over the target classes of per-class F1 (CB's "F1")."""
  _check_lengths(targets, predictions)
  labels = sorted({int(t) for t in targets if int(t) >= 0})
  score = sklearn.metrics.f1_score(list(targets), list(predictions), labels=labels,
                                   average="macro", zero_division=0)
  return {"macro_f1": 100 * float(score)}


def mcc(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """Matthews correlation coefficient (CoLA)."""
  _check_lengths(targets, predictions)
  return {"mcc": 100 * float(sklearn.metrics.matthews_corrcoef(list(targets), list(predictions)))}


def pearson(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
  """Pearson correlation (STS-B, CxC)."""
  _check_lengths(targets, predictions)
  return {"pearson": 100 * float(scipy.stats.pearsonr(targets, predictions)[0])}


def spearman(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
  """Spearman rank correlation (STS-B, CxC)."""
  _check_lengths(targets, predictions)
  return {"spearman": 100 * float(scipy.stats.spearmanr(targets, predictions)[0])}


# ------------------------------------------------------------------ SQuAD-style answers
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def answer_exact_match(prediction: str, answer: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(answer))


def answer_f1(prediction: str, answer: str) -> float:
  """Token-overlap F1 of two normalised answers."""
  pred_tokens = normalize_answer(prediction).split()
  gold_tokens = normalize_answer(answer).split()
  if not pred_tokens or not gold_tokens:
    return float(pred_tokens == gold_tokens)
  common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
  overlap = sum(common.values())
  if overlap == 0:
    return 0.0
  precision = overlap / len(pred_tokens)
  recall = overlap / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def _as_answers(target: Any) -> list[str]:
  if isinstance(target, Mapping):
    target = target["answers"]
  if isinstance(target, str):
    return [target]
  return [str(a) for a in target]


def _best(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
  if not answers:
    return 0.0, 0.0
  return (max(answer_exact_match(prediction, a) for a in answers),
          max(answer_f1(prediction, a) for a in answers))


def squad(targets: Sequence[Any], predictions: Sequence[str]) -> dict[str, float]:
  """SQuAD EM / F1: each target is an answer or a list of answers; max over answers."""
  _check_lengths(targets, predictions)
  scores = [_best(str(p), _as_answers(t)) for t, p in zip(targets, predictions)]
  if not scores:
    return {"em": 0.0, "f1": 0.0}
  return {"em": 100 * float(np.mean([s[0] for s in scores])),
          "f1": 100 * float(np.mean([s[1] for s in scores]))}


def _value(x: Any) -> Any:
  return x["value"] if isinstance(x, Mapping) else x


def record(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  """ReCoRD EM / F1: max over a query's answers, one score per query.

  Targets are `{"group": query id, "answers": [...]}` (a query flattened into one example
  per answer counts once, with its first prediction) or plain answer lists.
  """
  _check_lengths(targets, predictions)
  seen: dict[Any, tuple[list[str], str]] = {}
  for i, (t, p) in enumerate(zip(targets, predictions)):
    group = t.get("group", i) if isinstance(t, Mapping) else i
    if group not in seen:
      seen[group] = (_as_answers(t), str(_value(p)))
  result = squad([a for a, _ in seen.values()], [p for _, p in seen.values()])
  return result


def multirc(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  """MultiRC F1a (binary F1 over all answer options) and EM (all options of a question).

  Targets / predictions are `{"group": question id, "value": 0|1}` or bare ids (then each
  example is its own question).
  """
  _check_lengths(targets, predictions)
  gold = [int(_value(t)) for t in targets]
  pred = [int(_value(p)) for p in predictions]
  f1a = sklearn.metrics.f1_score(gold, pred, labels=[1], average="macro", zero_division=0)
  by_question: dict[Any, bool] = {}
  for i, (t, g, p) in enumerate(zip(targets, gold, pred)):
    group = t.get("group", i) if isinstance(t, Mapping) else i
    by_question[group] = by_question.get(group, True) and g == p
  em = float(np.mean(list(by_question.values()))) if by_question else 0.0
  return {"f1a": 100 * float(f1a), "exact_match": 100 * em}


# ------------------------------------------------------------------ generation
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def _rouge_tokens(text: str) -> list[str]:
  return re.findall(r"[a-z0-9]+", text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> collections.Counter:
  return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _f_measure(overlap: float, pred_total: int, gold_total: int) -> float:
  if overlap == 0 or pred_total == 0 or gold_total == 0:
    return 0.0
  precision, recall = overlap / pred_total, overlap / gold_total
  return 2 * precision * recall / (precision + recall)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
  previous = [0] * (len(b) + 1)
  for x in a:
    current = [0]
    for j, y in enumerate(b):
      current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
    previous = current
  return previous[-1]


def rouge(targets: Sequence[Any], predictions: Sequence[str]) -> dict[str, float]:
  """Mean ROUGE-1 / ROUGE-2 / ROUGE-L F-measures (lower-cased alphanumeric tokens)."""
  _check_lengths(targets, predictions)
  totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
  for t, p in zip(targets, predictions):
    gold, pred = _rouge_tokens(_as_answers(t)[0] if _as_answers(t) else ""), _rouge_tokens(str(p))
    for n in (1, 2):
      g, q = _ngrams(gold, n), _ngrams(pred, n)
      totals[f"rouge{n}"] += _f_measure(sum((g & q).values()), sum(q.values()), sum(g.values()))
    totals["rougeL"] += _f_measure(_lcs(gold, pred), len(pred), len(gold))
  count = max(len(targets), 1)
  return {k: 100 * v / count for k, v in totals.items()}


def bleu(targets: Sequence[Any], predictions: Sequence[str],
         max_order: int = 4) -> dict[str, float]:
  """Corpus BLEU-4 (uniform weights, brevity penalty, first reference), no smoothing."""
  _check_lengths(targets, predictions)
  matches, possible = [0] * max_order, [0] * max_order
  pred_len = gold_len = 0
  for t, p in zip(targets, predictions):
    answers = _as_answers(t)
    gold, pred = _TOKEN.findall(answers[0] if answers else ""), _TOKEN.findall(str(p))
    pred_len, gold_len = pred_len + len(pred), gold_len + len(gold)
    for n in range(1, max_order + 1):
      g, q = _ngrams(gold, n), _ngrams(pred, n)
      matches[n - 1] += sum((g & q).values())
      possible[n - 1] += max(len(pred) - n + 1, 0)
  if pred_len == 0 or min(matches) == 0:
    return {"bleu": 0.0}
  log_precision = sum(math.log(m / c) for m, c in zip(matches, possible)) / max_order
  brevity = 1.0 if pred_len > gold_len else math.exp(1 - gold_len / pred_len)
  return {"bleu": 100 * brevity * math.exp(log_precision)}


METRIC_FNS: Mapping[str, MetricFn] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
    "squad": squad,
    "record": record,
    "multirc": multirc,
    "rouge": rouge,
    "bleu": bleu,
}


def metric_fns(names: Sequence[str]) -> list[MetricFn]:
  """Metric functions by name (see `METRIC_FNS`)."""
  unknown = [n for n in names if n not in METRIC_FNS]
  if unknown:
    raise KeyError(f"Unknown metrics {unknown}; known: {sorted(METRIC_FNS)}")
  return [METRIC_FNS[n] for n in names]
