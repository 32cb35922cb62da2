"""Postprocessors: model text (or target text) -> what `tasks.metrics` scores.

seqio calls them as `fn(text, example=example, is_target=bool)`; `example` holds the
preprocessed features as numpy values (strings as bytes). Text that is no label maps to
`INVALID` (-1), which every classification metric counts as wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

INVALID = -1


def _text(value: Any) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  return str(value)


def _texts(value: Any) -> list[str]:
  if isinstance(value, (bytes, str)):
    return [_text(value)]
  return [_text(v) for v in value]


def class_id(text: Any, example: Optional[Mapping[str, Any]] = None, is_target: bool = False,
             *, label_names: Sequence[str]) -> int:
  """Index of `text` in `label_names` (exact, then case-insensitive), else -1."""
  del example, is_target
  text = _text(text).strip()
  if text in label_names:
    return list(label_names).index(text)
  lowered = [name.lower() for name in label_names]
  return lowered.index(text.lower()) if text.lower() in lowered else INVALID


def to_float(text: Any, example: Optional[Mapping[str, Any]] = None, is_target: bool = False,
             *, default: float = -1.0) -> float:
  """`float(text)`, or `default` when the text is no finite number."""
  del example, is_target
  try:
    value = float(_text(text).strip())
  except ValueError:
    return default
  return value if math.isfinite(value) else default


def _group(example: Optional[Mapping[str, Any]]) -> Any:
  if example is None or "group" not in example:
    return None
  return _text(example["group"])


def qa_answers(text: Any, example: Optional[Mapping[str, Any]] = None,
               is_target: bool = False) -> Any:
  """Targets: every reference answer of the example; predictions: the stripped text."""
  if is_target and example is not None and "answers" in example:
    answers = _texts(example["answers"])
    return answers or [_text(text)]
  return _text(text).strip()


def record_answers(text: Any, example: Optional[Mapping[str, Any]] = None,
                   is_target: bool = False) -> Any:
  """ReCoRD: `{"group", "answers"}` for targets, `{"group", "value"}` for predictions."""
  group = _group(example)
  if is_target:
    return {"group": group, "answers": qa_answers(text, example, is_target=True)}
  return {"group": group, "value": _text(text).strip()}


def multirc_value(text: Any, example: Optional[Mapping[str, Any]] = None,
                  is_target: bool = False, *,
                  label_names: Sequence[str] = ("False", "True")) -> dict[str, Any]:
  """MultiRC: `{"group": question id, "value": class id}`."""
  return {"group": _group(example),
          "value": class_id(text, example, is_target, label_names=label_names)}


def label_set(text: Any, example: Optional[Mapping[str, Any]] = None,
              is_target: bool = False) -> str:
  """Multi-label text ("joy, love") in a canonical order, so sets compare as strings."""
  del example, is_target
  labels = sorted({part.strip().lower() for part in _text(text).split(",") if part.strip()})
  return ", ".join(labels)


def stripped(text: Any, example: Optional[Mapping[str, Any]] = None,
             is_target: bool = False) -> str:
  """Generation tasks: the text without surrounding whitespace."""
  del example, is_target
  return _text(text).strip()
