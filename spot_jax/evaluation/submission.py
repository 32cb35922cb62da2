"""Test-split predictions in the GLUE and SuperGLUE leaderboard submission formats.

GLUE (gluebenchmark.com submission): one TSV per task with the header `index\tprediction`;
the prediction is the label name for the NLI tasks (MNLI, QNLI, RTE, AX: `entailment`,
`not_entailment`, `neutral`, `contradiction`), the class index for CoLA, SST-2, MRPC, QQP and
WNLI, the score for STS-B. SuperGLUE (super.gluebenchmark.com): one JSON line per example,
`{"idx": i, "label": ...}`: `true`/`false` for BoolQ and WiC, `True`/`False` for WSC, the label
name for CB, RTE and the diagnostics, the choice index for COPA. MultiRC and ReCoRD nest
their answers per paragraph/query and are not written.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from spot_jax.fileio import atomic_write_bytes

GLUE_NAMED_LABELS = ("glue_mnli", "glue_qnli", "glue_rte", "glue_ax")
SUPERGLUE_LOWER_BOOL = ("super_glue_boolq", "super_glue_wic")
SUPERGLUE_INDEX = ("super_glue_copa",)
UNSUPPORTED = ("super_glue_multirc", "super_glue_record")


def _index(example: Mapping[str, Any], position: int) -> int:
  idx = example.get("idx")
  return int(idx) if idx is not None and getattr(idx, "ndim", 0) == 0 else position


def _label(prediction: Any, labels: Sequence[str] | None) -> tuple[Any, bool]:
  """(class index, valid): an invalid prediction (-1) becomes class 0 so the file stays
  submittable; T5's metrics already count it wrong."""
  index = int(prediction)
  valid = labels is not None and 0 <= index < len(labels)
  return (index if valid else 0), valid


def format_predictions(task: str, predictions: Sequence[tuple[Mapping[str, Any], Any]],
                       labels: Sequence[str] | None) -> tuple[str, bytes, int]:
  """(file name, file bytes, number of invalid predictions) for one task's
  [(example, postprocessed prediction)] in split order."""
  if task.startswith(UNSUPPORTED):
    raise ValueError(f"--predictions_out: {task} needs the nested MultiRC/ReCoRD submission "
                     "format, which is not written; leave it out of the evaluated tasks")
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
