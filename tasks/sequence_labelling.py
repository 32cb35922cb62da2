"""Sequence labelling (NER, chunking, POS, semantic tagging, error detection) as text-to-text.

Format (one definition, used by every tagging task of `tasks.affinity_pool`)
----------------------------------------------------------------------------
    inputs:  `<benchmark> sentence: w1 w2 ... wn`   (the words, space-joined)
    targets: `t1 t2 ... tn`                          (one tag per word, space-joined)

e.g. `conll2003_ner sentence: John Smith lives in Paris .` -> `B-PER I-PER O O B-LOC O`.
Only tags are generated, so a word that looks like a tag ("O", "B-PER") cannot be confused
with one. Tags never contain spaces. Characters that the T5 SentencePiece vocabulary cannot
produce (it decodes them as " ⁇ ") are written as `%XX` (upper-case hex of the byte), and `%`
itself as `%25`, so PTB's "``" tag is generated as `%60%60` and read back as "``".

Parsing (`parse_tags`) splits the generated text on whitespace and unescapes each piece. A
generation is malformed when its number of tags differs from the number of words or when an
escape is broken; `tags_postprocessor` then returns `INVALID_TAG` for every word, which both
metrics count as wrong (never an exception).

Metrics (percentages, as all task metrics): `token_accuracy` (the affinity paper's ACC for
tagging tasks) and `span_f1` (micro F1 over typed spans with seqeval's default, CoNLL-2000
`conlleval`-compatible chunking rules, `seqeval.metrics.f1_score`).

This module needs only numpy/seqeval; TensorFlow is imported by the preprocessor when called.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

INVALID_TAG = "<invalid>"
# Characters T5's SentencePiece vocabulary decodes as " ⁇ " (checked on the real vocab), and
# the escape character itself (escaped first).
ESCAPED_CHARS = "%<\\^`{}~"
_ESCAPE = {c: f"%{ord(c):02X}" for c in ESCAPED_CHARS}
_ESCAPE_RE = re.compile(r"%([0-9A-F]{2})")


def encode_tag(tag: str) -> str:
  """A tag as generated text: every character of `ESCAPED_CHARS` as `%XX`."""
  return "".join(_ESCAPE.get(c, c) for c in tag)


def decode_tag(text: str) -> Optional[str]:
  """Inverse of `encode_tag`; None when `text` holds a `%` that starts no valid escape."""
  out = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
  if "%" in _ESCAPE_RE.sub("", text):
    return None
  return out


def format_tags(tags: Sequence[str]) -> str:
  """The target text of a tag sequence."""
  for tag in tags:
    if not tag or any(ch.isspace() for ch in tag):
      raise ValueError(f"Tag {tag!r} is empty or contains whitespace; tags must be one token")
  return " ".join(encode_tag(t) for t in tags)


def parse_tags(text: Any, num_words: Optional[int] = None) -> Optional[tuple[str, ...]]:
  """Tags read back from generated text; None when malformed (wrong count, broken escape)."""
  if isinstance(text, bytes):
    text = text.decode("utf-8", errors="replace")
  tags = tuple(decode_tag(piece) for piece in str(text).split())
  if any(t is None for t in tags):
    return None
  if num_words is not None and len(tags) != num_words:
    return None
  return tags  # type: ignore[return-value]


def tags_postprocessor(text: Any, example: Optional[Mapping[str, Any]] = None,
                       is_target: bool = False) -> tuple[str, ...]:
  """seqio postprocess_fn: per-word tags; a malformed prediction is `INVALID_TAG` per word.

  The word count is the example's "num_words" feature (kept by `tagging`); without it any
  well-formed tag sequence is accepted.
  """
  num_words = None
  if example is not None and "num_words" in example:
    num_words = int(example["num_words"])
  tags = parse_tags(text, num_words)
  if tags is not None:
    return tags
  if is_target:
    raise ValueError(f"Malformed tagging target {text!r} (expected {num_words} tags); the "
                     "task's preprocessor and postprocessor disagree")
  return (INVALID_TAG,) * (num_words or 0)


# ----------------------------------------------------------------------------- metrics
def _check(targets: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> None:
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")


def _aligned(target: Sequence[str], prediction: Sequence[str]) -> list[str]:
  """The prediction padded / cut to the target's length with `INVALID_TAG`."""
  prediction = list(prediction)[:len(target)]
  return prediction + [INVALID_TAG] * (len(target) - len(prediction))


def token_accuracy(targets: Sequence[Sequence[str]],
                   predictions: Sequence[Sequence[str]]) -> dict[str, float]:
  """Correct tags / gold tags over all sentences (0 when there are no words)."""
  _check(targets, predictions)
  total = correct = 0
  for gold, pred in zip(targets, predictions):
    pred = _aligned(gold, pred)
    total += len(gold)
    correct += sum(g == p and p != INVALID_TAG for g, p in zip(gold, pred))
  return {"token_accuracy": 100.0 * correct / total if total else 0.0}


def span_f1(targets: Sequence[Sequence[str]],
            predictions: Sequence[Sequence[str]]) -> dict[str, float]:
  """Micro span F1 (seqeval default mode = conlleval rules); invalid tags predict no span."""
  from seqeval.metrics import f1_score  # pylint: disable=import-outside-toplevel
  _check(targets, predictions)
  gold = [list(g) for g in targets]
  pred = [["O" if p == INVALID_TAG else p for p in _aligned(g, p)]
          for g, p in zip(targets, predictions)]
  return {"span_f1": 100.0 * float(f1_score(gold, pred, zero_division=0))}


METRIC_FNS = {"token_accuracy": token_accuracy, "span_f1": span_f1}


# ----------------------------------------------------------------------------- preprocessor
def escape_tags_tf(tags):
  """`encode_tag` on a string tensor (any shape)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  for ch in ESCAPED_CHARS:  # "%" first, so later escapes are not escaped again.
    tags = tf.strings.regex_replace(tags, re.escape(ch), _ESCAPE[ch].replace("\\", "\\\\"))
  return tags


def tagging(ds, *, benchmark: str, tokens_key: str = "tokens", tags_key: str = "tags",
            tag_names: Optional[Sequence[str]] = None):
  """Words + tags -> `<benchmark> sentence: w1 .. wn` / `t1 .. tn`, keeping "num_words".

  Words and tags are paired one to one (extra words or tags of corrupt data are dropped).

  Tags are strings, or class ids when `tag_names` is given (TFDS ClassLabel sequences).
  """
  import seqio  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tasks import preprocessors  # pylint: disable=import-outside-toplevel

  @seqio.map_over_dataset
  def fmt(ex):
    words = tf.reshape(preprocessors.feature(ex, tokens_key), [-1])
    tags = tf.reshape(preprocessors.feature(ex, tags_key), [-1])
    if tag_names is not None:
      tags = tf.gather(tf.constant(list(tag_names)), tf.cast(tags, tf.int64))
    # Words and tags pair up one to one; a longer list (corrupt data) is cut to the shorter.
    n = tf.minimum(tf.size(words), tf.size(tags))
    words, tags = words[:n], tags[:n]
    sentence = tf.strings.reduce_join(words, separator=" ")
    return {"inputs": preprocessors.join_fields(benchmark, [("sentence", sentence)]),
            "targets": tf.strings.reduce_join(escape_tags_tf(tags), separator=" "),
            "num_words": tf.size(words)}

  return fmt(ds)
