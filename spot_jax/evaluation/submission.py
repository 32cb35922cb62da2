"""Test-split predictions as the GLUE and SuperGLUE leaderboards take them.

One file per leaderboard task, named as the leaderboards (and t5's
`t5/scripts/prepare_glue_submission.py`, `FILE_NAME_MAP`) name them, all in one directory:
GLUE `AX.tsv CoLA.tsv MNLI-m.tsv MNLI-mm.tsv MRPC.tsv QNLI.tsv QQP.tsv RTE.tsv SST-2.tsv
STS-B.tsv` (WNLI is not a registered task here, so no `WNLI.tsv`), SuperGLUE `AX-b.jsonl
AX-g.jsonl BoolQ.jsonl CB.jsonl COPA.jsonl MultiRC.jsonl ReCoRD.jsonl RTE.jsonl WiC.jsonl
WSC.jsonl`. The diagnostic sets are predicted with the prompt of the task t5 casts them as
(`t5/data/glue_utils.py` `get_glue_text_preprocessor`: AX as MNLI, AX-b and AX-g as RTE):
`DIAGNOSTICS`. Tasks in neither leaderboard (e.g. DPR, which T5's SuperGLUE mixture trains on)
get no file, as in t5's script.

Formats (`prepare_glue_submission.main`): GLUE is a TSV with the header `index\tprediction`;
the prediction is the label name for MNLI, QNLI, RTE and AX (t5's `USES_TEXT`), the class
index for CoLA, SST-2, MRPC and QQP, the score for STS-B. SuperGLUE is one JSON line per
example, `{"idx": i, "label": ...}`: `true`/`false` for BoolQ and WiC, `True`/`False` for WSC,
the label name for CB, RTE, AX-b and AX-g, the choice index for COPA. MultiRC: one line per
paragraph, `{"idx": p, "passage": {"questions": [{"idx": q, "answers": [{"idx": a, "label":
0|1}, ...]}, ...]}}` (rows grouped by the `idx/paragraph`, `idx/question`, `idx/answer`
features our preprocessor keeps); ReCoRD: one line per query, `{"idx": query, "label": "answer
text"}` (indexed by `idx/query`, the prediction text as the label). jiant's
`MultiRCTask.super_glue_format_preds` / `ReCordEvaluationScheme.get_preds_from_accumulator`
(`jiant/tasks/lib/multirc.py`, `jiant/tasks/evaluate/core.py`) write the same shapes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

from spot_jax.fileio import atomic_write_bytes

GLUE, SUPERGLUE = "GLUE", "SuperGLUE"
# How a prediction is written: the label name, the class index, the score, a boolean word.
TEXT, INDEX, SCORE, LOWER_BOOL, BOOL, MULTIRC_ROWS, RECORD_ROWS = (
    "text", "index", "score", "lower_bool", "bool", "multirc", "record")
BOOL_WORDS = ("False", "True")  # t5's script: ("false", "true")[p] or ("False", "True")[p].


@dataclasses.dataclass(frozen=True)
class LeaderboardFile:
  """One file of a leaderboard submission."""

  stem: str  # the leaderboard's task name (`prepare_glue_submission.FILE_NAME_MAP`).
  benchmark: str  # GLUE (.tsv) or SuperGLUE (.jsonl).
  style: str  # how a prediction is written (TEXT, INDEX, ...).

  @property
  def name(self) -> str:
    return f"{self.stem}.{'tsv' if self.benchmark == GLUE else 'jsonl'}"


# Result keys (task names; MNLI's `evaluator.split_evaluations` keys) -> leaderboard files.
LEADERBOARD_FILES: Mapping[str, LeaderboardFile] = {
    "glue_ax": LeaderboardFile("AX", GLUE, TEXT),
    "glue_cola": LeaderboardFile("CoLA", GLUE, INDEX),
    "glue_mnli": LeaderboardFile("MNLI-m", GLUE, TEXT),  # `test` is test_matched.
    "glue_mnli_matched": LeaderboardFile("MNLI-m", GLUE, TEXT),
    "glue_mnli_mismatched": LeaderboardFile("MNLI-mm", GLUE, TEXT),
    "glue_mrpc": LeaderboardFile("MRPC", GLUE, INDEX),
    "glue_qnli": LeaderboardFile("QNLI", GLUE, TEXT),
    "glue_qqp": LeaderboardFile("QQP", GLUE, INDEX),
    "glue_rte": LeaderboardFile("RTE", GLUE, TEXT),
    "glue_sst2": LeaderboardFile("SST-2", GLUE, INDEX),
    "glue_stsb": LeaderboardFile("STS-B", GLUE, SCORE),
    "super_glue_axb": LeaderboardFile("AX-b", SUPERGLUE, TEXT),
    "super_glue_axg": LeaderboardFile("AX-g", SUPERGLUE, TEXT),
    "super_glue_boolq": LeaderboardFile("BoolQ", SUPERGLUE, LOWER_BOOL),
    "super_glue_cb": LeaderboardFile("CB", SUPERGLUE, TEXT),
    "super_glue_copa": LeaderboardFile("COPA", SUPERGLUE, INDEX),
    "super_glue_multirc": LeaderboardFile("MultiRC", SUPERGLUE, MULTIRC_ROWS),
    "super_glue_record": LeaderboardFile("ReCoRD", SUPERGLUE, RECORD_ROWS),
    "super_glue_rte": LeaderboardFile("RTE", SUPERGLUE, TEXT),
    "super_glue_wic": LeaderboardFile("WiC", SUPERGLUE, LOWER_BOOL),
    "super_glue_wsc": LeaderboardFile("WSC", SUPERGLUE, BOOL),
}
# The diagnostic sets predicted with a task's prompt (t5: AX cast as MNLI, AX-b/AX-g as RTE).
DIAGNOSTICS: Mapping[str, tuple[str, ...]] = {
    "glue_mnli": ("glue_ax",), "super_glue_rte": ("super_glue_axb", "super_glue_axg")}
MULTIRC_IDS = ("idx/paragraph", "idx/question", "idx/answer")
RECORD_IDS = ("idx/passage", "idx/query")


def leaderboard_file(key: str) -> LeaderboardFile | None:
  """The leaderboard file of a result key (the taskless variant shares it), None for a task in
  neither leaderboard."""
  return LEADERBOARD_FILES.get(key.replace("_taskless", ""))


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
  """(file name, file bytes, number of invalid predictions) for one task's (result key's)
  [(example, postprocessed prediction)] in split order."""
  spec = leaderboard_file(task)
  if spec is None:
    raise ValueError(f"--predictions_out writes GLUE/SuperGLUE leaderboard files; {task!r} is "
                     "in neither leaderboard (evaluate it without --predictions_out)")
  if spec.style == MULTIRC_ROWS:
    records, invalid = multirc_lines(task, predictions)
    return spec.name, "".join(json.dumps(r) + "\n" for r in records).encode(), invalid
  if spec.style == RECORD_ROWS:
    records = record_lines(task, predictions)
    return spec.name, "".join(json.dumps(r) + "\n" for r in records).encode(), 0
  if spec.style in (BOOL, LOWER_BOOL):
    labels = BOOL_WORDS
  elif spec.style == TEXT and not labels:
    raise ValueError(f"--predictions_out: {task} declares no label names to write")
  invalid = 0
  values: list[Any] = []
  for _, prediction in predictions:
    if spec.style == SCORE:
      values.append(f"{float(prediction):.3f}")
      continue
    index, valid = _label(prediction, labels)
    invalid += not valid
    if spec.style == INDEX:
      values.append(index)
    elif spec.style == LOWER_BOOL:
      values.append(labels[index].lower())
    else:
      values.append(labels[index])
  indices = [_index(example, position) for position, (example, _) in enumerate(predictions)]
  if spec.benchmark == GLUE:
    rows = ["index\tprediction"] + [f"{i}\t{v}" for i, v in zip(indices, values)]
    return spec.name, ("\n".join(rows) + "\n").encode(), invalid
  lines = [json.dumps({"idx": i, "label": v}) for i, v in zip(indices, values)]
  return spec.name, "".join(line + "\n" for line in lines).encode(), invalid


def write_predictions(directory: str,
                      per_task: Mapping[str, Sequence[tuple[Mapping[str, Any], Any]]],
                      labels: Mapping[str, Sequence[str] | None]) -> dict[str, tuple[str, int]]:
  """Writes each task's leaderboard file into `directory`; returns {task: (written file,
  invalid predictions)}. Nothing is written unless every task can be formatted, or when two
  tasks would write one file."""
  formatted = {task: format_predictions(task, rows, labels.get(task))
               for task, rows in per_task.items()}
  owners: dict[str, str] = {}
  for task, (name, _, _) in formatted.items():
    if owners.setdefault(name, task) != task:
      raise ValueError(f"--predictions_out: {owners[name]} and {task} both make {name}; "
                       "predict them into different directories")
  os.makedirs(directory, exist_ok=True)
  written = {}
  for task, (name, data, invalid) in formatted.items():
    target = os.path.join(directory, name)
    atomic_write_bytes(target, data)
    written[task] = (target, invalid)
  return written
