"""Test-split predictions in the GLUE and SuperGLUE leaderboard submission formats.

GLUE (gluebenchmark.com submission): one TSV per task with the header `index\tprediction`;
the prediction is the label name for the NLI tasks (MNLI, QNLI, RTE, AX: `entailment`,
`not_entailment`, `neutral`, `contradiction`), the class index for CoLA, SST-2, MRPC, QQP and
WNLI, the score for STS-B. SuperGLUE (super.gluebenchmark.com): one JSON line per example,
`{"idx": i, "label": ...}`: `true`/`false` for BoolQ and WiC, `True`/`False` for WSC, the label
name for CB, RTE and the diagnostics, the choice index for COPA. MultiRC: one line per
paragraph, `{"idx": p, "passage": {"questions": [{"idx": q, "answers": [{"idx": a, "label":
0|1}, ...]}, ...]}}`; ReCoRD: one line per query, `{"idx": query, "label": "answer text"}`.

References: the `t5` library's `t5/scripts/prepare_glue_submission.py` (`main`: MultiRC
rows grouped by the `idx/paragraph`, `idx/question`, `idx/answer` features its preprocessor
keeps; ReCoRD indexed by `idx/query`, the prediction text as the label) and jiant's
`MultiRCTask.super_glue_format_preds` / `ReCordEvaluationScheme.get_preds_from_accumulator`
(`jiant/tasks/lib/multirc.py`, `jiant/tasks/evaluate/core.py`), which write the same shapes.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from spot_jax.fileio import atomic_write_bytes

GLUE_NAMED_LABELS = ("glue_mnli", "glue_qnli", "glue_rte", "glue_ax")
SUPERGLUE_LOWER_BOOL = ("super_glue_boolq", "super_glue_wic")
SUPERGLUE_INDEX = ("super_glue_copa",)
MULTIRC, RECORD = "super_glue_multirc", "super_glue_record"
MULTIRC_IDS = ("idx/paragraph", "idx/question", "idx/answer")
RECORD_IDS = ("idx/passage", "idx/query")


def _index(example: Mapping[str, Any], position: int) -> int:
  idx = example.get("idx")
  return int(idx) if idx is not None and getattr(idx, "ndim", 0) == 0 else position


def _label(prediction: Any, labels: Sequence[str] | None) -> tuple[Any, bool]:
  """(class index, valid): an invalid prediction (-1) becomes class 0 so the file stays
  submittable; T5's metrics already count it wrong."""
  index = int(prediction)
  valid = labels is not None and 0 <= index < len(labels)
  return (index if valid else 0), valid


def _ids(task: str, example: Mapping[str, Any], keys: Sequence[str]) -> tuple[int, ...]:
  missing = [key for key in keys if key not in example]
  if missing:
    raise ValueError(f"--predictions_out: {task} examples lack {', '.join(missing)}; its "
                     "submission file is grouped by the ids tasks/preprocessors.py keeps "
                     f"({', '.join(keys)}): evaluate the registered {task} task")
  return tuple(int(example[key]) for key in keys)


def _value(prediction: Any) -> Any:
  """The postprocessed prediction: MultiRC and ReCoRD's postprocessors wrap it in
  `{"value": ...}` (T5's `postprocessors.multirc` / `postprocessors.record`)."""
  return prediction["value"] if isinstance(prediction, Mapping) else prediction


def multirc_lines(task: str, predictions: Sequence[tuple[Mapping[str, Any], Any]]
                  ) -> tuple[list[dict[str, Any]], int]:
  """(one dict per paragraph, invalid predictions) from one prediction per answer option.

  Paragraphs, their questions and each question's answers keep the split's order (first
  appearance), as T5's `prepare_glue_submission.py` does; a prediction that is neither
  "False" nor "True" (-1) is written as 0 and counted (T5's script writes the -1 itself; 0
  keeps every label in {0, 1}, as for the other tasks here)."""
  paragraphs: dict[int, dict[int, dict[int, int]]] = {}
  invalid = 0
  for example, prediction in predictions:
    paragraph, question, answer = _ids(task, example, MULTIRC_IDS)
    answers = paragraphs.setdefault(paragraph, {}).setdefault(question, {})
    if answer in answers:
      raise ValueError(f"--predictions_out: {task} has two predictions for paragraph "
                       f"{paragraph}, question {question}, answer {answer}; evaluate each "
                       "answer option once")
    label, valid = _label(_value(prediction), ("False", "True"))
    invalid += not valid
    answers[answer] = label
  lines = [{"idx": paragraph, "passage": {"questions": [
      {"idx": question, "answers": [{"idx": a, "label": label} for a, label in answers.items()]}
      for question, answers in questions.items()]}}
      for paragraph, questions in paragraphs.items()]
  return lines, invalid


def record_lines(task: str, predictions: Sequence[tuple[Mapping[str, Any], Any]]
                 ) -> list[dict[str, Any]]:
  """One `{"idx": query, "label": text}` per query, in the split's order.

  T5's ReCoRD preprocessor makes one example per reference answer (one for an unanswered
  test query), all with the same inputs, and its metric keeps the first prediction of each
  (passage, query) group (`metrics.deduplicate_metric` over `postprocessors.record`'s
  group): the first example's decoded text is the query's answer here too, unchanged (the
  server normalises answers as the official ReCoRD script does)."""
  first: dict[tuple[int, int], str] = {}
  passage_of: dict[int, int] = {}
  for example, prediction in predictions:
    passage, query = _ids(task, example, RECORD_IDS)
    if passage_of.setdefault(query, passage) != passage:
      raise ValueError(f"--predictions_out: {task} query {query} appears under passages "
                       f"{passage_of[query]} and {passage}; ReCoRD submissions are indexed by "
                       "query, which must be unique")
    value = _value(prediction)
    first.setdefault((passage, query), value.decode() if isinstance(value, bytes) else str(value))
  return [{"idx": query, "label": text} for (_, query), text in first.items()]


def format_predictions(task: str, predictions: Sequence[tuple[Mapping[str, Any], Any]],
                       labels: Sequence[str] | None) -> tuple[str, bytes, int]:
  """(file name, file bytes, number of invalid predictions) for one task's
  [(example, postprocessed prediction)] in split order."""
  invalid = 0
  if task.startswith("glue_"):
    rows = ["index\tprediction"]
    for position, (example, prediction) in enumerate(predictions):
      if task.startswith("glue_stsb"):
        value = f"{float(prediction):.3f}"
      else:
        index, valid = _label(prediction, labels)
        invalid += not valid
        value = labels[index] if task.startswith(GLUE_NAMED_LABELS) else str(index)
      rows.append(f"{_index(example, position)}\t{value}")
    return f"{task}.tsv", ("\n".join(rows) + "\n").encode(), invalid
  if task.startswith((MULTIRC, RECORD)):
    if task.startswith(MULTIRC):
      records, invalid = multirc_lines(task, predictions)
    else:
      records = record_lines(task, predictions)
    data = "".join(json.dumps(record) + "\n" for record in records)
    return f"{task}.jsonl", data.encode(), invalid
  if task.startswith("super_glue_"):
    lines = []
    for position, (example, prediction) in enumerate(predictions):
      index, valid = _label(prediction, labels)
      invalid += not valid
      if task.startswith(SUPERGLUE_INDEX):
        label: Any = index
      elif task.startswith(SUPERGLUE_LOWER_BOOL):
        label = labels[index].lower()
      else:
        label = labels[index]
      lines.append(json.dumps({"idx": _index(example, position), "label": label}))
    return f"{task}.jsonl", ("\n".join(lines) + "\n").encode(), invalid
  raise ValueError(f"--predictions_out writes GLUE/SuperGLUE submissions; {task!r} is neither "
                   "(evaluate it without --predictions_out)")


def write_predictions(path: str, per_task: Mapping[str, Sequence[tuple[Mapping[str, Any], Any]]],
                      labels: Mapping[str, Sequence[str] | None]) -> dict[str, tuple[str, int]]:
  """Writes one task to the file `path`, several (a mixture) into the directory `path`;
  returns {task: (written file, invalid predictions)}. Nothing is written unless every task
  can be formatted."""
  formatted = {task: format_predictions(task, rows, labels.get(task))
               for task, rows in per_task.items()}
  written = {}
  for task, (name, data, invalid) in formatted.items():
    target = path if len(formatted) == 1 else os.path.join(path, name)
    if os.path.dirname(target):
      os.makedirs(os.path.dirname(target), exist_ok=True)
    atomic_write_bytes(target, data)
    written[task] = (target, invalid)
  return written
