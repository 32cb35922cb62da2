"""Postprocessors: model text (or target text) -> what `tasks.metrics` scores.

seqio calls them as `fn(text, example=example, is_target=bool)`; `example` holds the
preprocessed features as numpy values (strings as bytes). Each follows the `t5` library's
`t5/data/postprocessors.py` function named in its docstring: text that is not exactly a label
maps to `INVALID` (-1), with no whitespace or case leniency, so `" positive"` is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

INVALID = -1

# Words `wsc_simple` ignores when it compares a predicted referent with the true one.
_WSC_DETERMINERS = frozenset((
    "a", "an", "few", "her", "his", "each", "every", "many", "much", "my", "our", "some", "that",
    "the", "their", "these", "this", "those", "which", "whose", "your"))


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
  """Index of `text` in `label_names` when it is exactly one of them, else -1.

  T5: `postprocessors.string_label_to_class_id` (exact membership, default -1).
  """
  del example, is_target
  text = _text(text)
  names = list(label_names)
  return names.index(text) if text in names else INVALID


def to_float(text: Any, example: Optional[Mapping[str, Any]] = None, is_target: bool = False,
             *, default: float = -1.0) -> float:
  """`float(text)`, or `default` when Python cannot parse it.

  T5: `postprocessors.string_to_float` (Python's `float`, so surrounding whitespace and "nan"
  parse as Python parses them).
  """
  del example, is_target
  try:
    return float(_text(text))
  except ValueError:
    return default


def qa_answers(text: Any, example: Optional[Mapping[str, Any]] = None,
               is_target: bool = False) -> Any:
  """Targets: every reference answer of the example; predictions: the text as decoded.

  T5: `postprocessors.qa` (the SQuAD metric normalises both sides).
  """
  if is_target:
    return _texts(example["answers"])
  return _text(text)


def record_answers(text: Any, example: Optional[Mapping[str, Any]] = None,
                   is_target: bool = False) -> dict[str, Any]:
  """ReCoRD: targets `{"value": all answers, "group": (passage id, query id)}`, predictions
  `{"value": text}`. T5: `postprocessors.record`."""
  if is_target:
    return {"value": _texts(example["answers"]),
            "group": (int(example["idx/passage"]), int(example["idx/query"]))}
  return {"value": _text(text)}


def multirc_value(text: Any, example: Optional[Mapping[str, Any]] = None,
                  is_target: bool = False) -> dict[str, Any]:
  """MultiRC: `{"value": class id}`, plus `"group"` (the question id) for targets.

  T5: `postprocessors.multirc` (groups by `idx/question`).
  """
  result: dict[str, Any] = {"value": class_id(text, label_names=("False", "True"))}
  if is_target:
    result["group"] = int(example["idx/question"])
  return result


def wsc_simple(text: Any, example: Optional[Mapping[str, Any]] = None,
               is_target: bool = False) -> int:
  """WSC / DPR in the `wsc_simple` form: 1 when the prediction names the example's referent.

  Targets are the example's label (is the referent the pronoun's?). A prediction matches when,
  lower-cased and without determiners, its word set contains or is contained in the
  referent's, and both or neither have an apostrophe; an empty prediction is -1.
  T5: `postprocessors.wsc_simple`.
  """
  if is_target:
    return int(example["label"])

  def clean(value: Any) -> str:
    words = _text(value).strip().lower().split(" ")
    return " ".join(w for w in words if w not in _WSC_DETERMINERS)

  prediction = clean(text)
  if not prediction:
    return INVALID
  referent = clean(example["targets_pretokenized"])
  if ("'" in prediction) != ("'" in referent):
    return 0
  predicted, true = set(prediction.split(" ")), set(referent.split(" "))
  return int(predicted <= true or true <= predicted)


def label_set(text: Any, example: Optional[Mapping[str, Any]] = None,
              is_target: bool = False) -> str:
  """Multi-label text ("joy, love") in a canonical order, so sets compare as strings."""
  del example, is_target
  labels = sorted({part.strip().lower() for part in _text(text).split(",") if part.strip()})
  return ", ".join(labels)

