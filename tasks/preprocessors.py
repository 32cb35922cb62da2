"""Text-to-text formatting of raw examples (TensorFlow, run inside tf.data).

Every formatter turns a raw example into `{"inputs": str, "targets": str, ...}` with
inputs `<benchmark> key1: value1 key2: value2 ...` (the benchmark word is left out when
`benchmark` is "", which is how the taskless variants are made). Labels become label names;
a label outside the label set (unlabelled test data) becomes `UNK`. Extra features kept for
postprocessing: "answers" (QA, ReCoRD) and "group" (MultiRC / ReCoRD question ids).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import seqio
import tensorflow as tf

UNK = "<unk>"
Fields = Sequence[tuple[str, str]]  # (key printed in the inputs, feature path "a/b")

# GoEmotions' 27 emotions plus neutral, in the TFDS feature order.
GOEMOTIONS_LABELS = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion",
    "curiosity", "desire", "disappointment", "disapproval", "disgust", "embarrassment",
    "excitement", "fear", "gratitude", "grief", "joy", "love", "nervousness", "optimism",
    "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral")
SGD_ACTS = (
    "AFFIRM", "AFFIRM_INTENT", "CONFIRM", "GOODBYE", "INFORM", "INFORM_COUNT", "INFORM_INTENT",
    "NEGATE", "NEGATE_INTENT", "NOTIFY_FAILURE", "NOTIFY_SUCCESS", "OFFER", "OFFER_INTENT",
    "REQUEST", "REQUEST_ALTS", "REQ_MORE", "SELECT", "THANK_YOU")


# ----------------------------------------------------------------------------- helpers
def feature(ex: Mapping[str, Any], path: str) -> Any:
  """`ex["a"]["b"]` for path "a/b"."""
  value = ex
  for key in path.split("/"):
    value = value[key]
  return value


def as_text(value: Any, separator: str = "; ") -> tf.Tensor:
  """A string scalar; lists are joined with `separator`."""
  value = tf.convert_to_tensor(value)
  if value.dtype != tf.string:
    value = tf.strings.as_string(value)
  if value.shape.rank:
    value = tf.strings.reduce_join(tf.reshape(value, [-1]), separator=separator)
  return value


def join_fields(benchmark: str, fields: Sequence[tuple[str, Any]]) -> tf.Tensor:
  """`<benchmark> key1: value1 key2: value2` (no benchmark word when it is "")."""
  parts: list[Any] = [benchmark] if benchmark else []
  for key, value in fields:
    parts += [f"{key}:", as_text(value)]
  return tf.strings.join(parts, separator=" ")


def label_name(label: tf.Tensor, names: Sequence[str]) -> tf.Tensor:
  """`names[label]`, or UNK when the label is out of range (e.g. -1 on test sets)."""
  label = tf.cast(label, tf.int64)
  valid = tf.logical_and(label >= 0, label < len(names))
  safe = tf.clip_by_value(label, 0, len(names) - 1)
  return tf.where(valid, tf.gather(tf.constant(list(names)), safe), UNK)


def round_score(score: tf.Tensor) -> tf.Tensor:
  """STS-B style target: the score rounded to the nearest 0.2, one decimal; UNK if missing."""
  score = tf.cast(score, tf.float32)
  rounded = tf.strings.as_string(tf.round(score * 5.0) / 5.0, precision=1)
  return tf.where(tf.math.is_finite(score), rounded, UNK)


def choices_text(choices: tf.Tensor) -> tf.Tensor:
  """`choice1: a choice2: b ...` for a 1-D string tensor."""
  numbers = tf.strings.as_string(tf.range(1, tf.size(choices) + 1))
  return tf.strings.reduce_join(tf.strings.join(["choice", numbers, ": ", choices]),
                                separator=" ")


def choice_label(label: tf.Tensor, num_choices: tf.Tensor) -> tf.Tensor:
  """`choice<label+1>`, or UNK when the label is no valid choice."""
  label = tf.cast(label, tf.int64)
  valid = tf.logical_and(label >= 0, label < tf.cast(num_choices, tf.int64))
  return tf.where(valid, tf.strings.join(["choice", tf.strings.as_string(label + 1)]), UNK)


def _clean_markup(text: tf.Tensor) -> tf.Tensor:
  text = tf.strings.regex_replace(text, r"<br\s*/?>", " ")
  return tf.strings.regex_replace(text, r"</?b>", "")


# ----------------------------------------------------------------------------- classification
def classify(ds: tf.data.Dataset, *, benchmark: str, fields: Fields, label_names: Sequence[str],
             label_key: str = "label", drop_unlabelled: bool = False) -> tf.data.Dataset:
  """Single- or multi-field classification with label-name targets."""
  if drop_unlabelled:
    ds = ds.filter(lambda ex: tf.cast(feature(ex, label_key), tf.int64) >= 0)

  @seqio.map_over_dataset
  def fmt(ex):
    return {"inputs": join_fields(benchmark, [(k, feature(ex, p)) for k, p in fields]),
            "targets": label_name(feature(ex, label_key), label_names)}

  return fmt(ds)


@seqio.map_over_dataset
def _multirc(ex, benchmark: str):
  fields = [(k, _clean_markup(ex[k])) for k in ("answer", "paragraph", "question")]
  group = tf.strings.join([tf.strings.as_string(ex["idx"]["paragraph"]),
                           tf.strings.as_string(ex["idx"]["question"])], separator="-")
  return {"inputs": join_fields(benchmark, fields),
          "targets": label_name(ex["label"], ("False", "True")), "group": group}


def multirc(ds: tf.data.Dataset, *, benchmark: str) -> tf.data.Dataset:
  """SuperGLUE MultiRC: `multirc answer: .. paragraph: .. question: ..` -> False/True."""
  return _multirc(ds, benchmark=benchmark)


def regress(ds: tf.data.Dataset, *, benchmark: str, fields: Fields,
            score_key: str = "label") -> tf.data.Dataset:
  """Similarity scores (STS-B, CxC): target is the score rounded to 0.2, e.g. "3.8"."""

  @seqio.map_over_dataset
  def fmt(ex):
    return {"inputs": join_fields(benchmark, [(k, feature(ex, p)) for k, p in fields]),
            "targets": round_score(feature(ex, score_key))}

  return fmt(ds)


def _mark_span(words: tf.Tensor, start: tf.Tensor, text: tf.Tensor, mark: str) -> tf.Tensor:
  """Surrounds the words of `text` starting at word `start` with `mark`."""
  n = tf.size(words, out_type=tf.int64)
  length = tf.maximum(tf.size(tf.strings.split(text), out_type=tf.int64), 1)
  first = tf.clip_by_value(tf.cast(start, tf.int64), 0, n - 1)
  last = tf.clip_by_value(first + length - 1, first, n - 1)
  words = tf.tensor_scatter_nd_update(
      words, [[first]], [tf.strings.join([mark, words[first]], separator=" ")])
  return tf.tensor_scatter_nd_update(
      words, [[last]], [tf.strings.join([words[last], mark], separator=" ")])


@seqio.map_over_dataset
def _wsc(ex, benchmark: str):
  words = tf.strings.split(ex["text"], sep=" ")
  words = tf.cond(tf.size(words) > 0, lambda: words, lambda: tf.constant([""]))
  words = _mark_span(words, ex["span1_index"], ex["span1_text"], "#")
  words = _mark_span(words, ex["span2_index"], ex["span2_text"], "*")
  text = tf.strings.reduce_join(words, separator=" ")
  return {"inputs": join_fields(benchmark, [("text", text)]),
          "targets": label_name(ex["label"], ("False", "True"))}


def wsc(ds: tf.data.Dataset, *, benchmark: str) -> tf.data.Dataset:
  """SuperGLUE WSC: the text with the candidate in `# .. #` and the pronoun in `* .. *`."""
  return _wsc(ds, benchmark=benchmark)


def goemotions(ds: tf.data.Dataset, *, benchmark: str) -> tf.data.Dataset:
  """GoEmotions: target lists the comment's emotions, `", "`-joined in a fixed order."""

  @seqio.map_over_dataset
  def fmt(ex):
    flags = tf.stack([tf.cast(ex[name], tf.bool) for name in GOEMOTIONS_LABELS])
    chosen = tf.boolean_mask(tf.constant(GOEMOTIONS_LABELS), flags)
    target = tf.strings.reduce_join(chosen, separator=", ")
    return {"inputs": join_fields(benchmark, [("text", ex["comment_text"])]),
            "targets": tf.where(tf.size(chosen) > 0, target, UNK)}

  return fmt(ds)


def sentiment140(ds: tf.data.Dataset, *, benchmark: str) -> tf.data.Dataset:
  """Sentiment140: polarity 0 / 2 / 4 -> negative / neutral / positive."""

  @seqio.map_over_dataset
  def fmt(ex):
    polarity = tf.cast(ex["polarity"], tf.int64)
    label = tf.where(polarity % 2 == 0, polarity // 2, -1)
    return {"inputs": join_fields(benchmark, [("text", ex["text"])]),
            "targets": label_name(label, ("negative", "neutral", "positive"))}

  return fmt(ds)


# ----------------------------------------------------------------------------- multiple choice
def multiple_choice(ds: tf.data.Dataset, *, benchmark: str, fields: Fields,
                    choice_keys: Sequence[str] = (), choices_key: Optional[str] = None,
                    label_key: str = "label", label_offset: int = 0) -> tf.data.Dataset:
  """`<benchmark> <fields> choice1: .. choiceN: ..` -> `choice<k>` (k is 1-based).

  Choices come from several scalar features (`choice_keys`) or one list (`choices_key`);
  `label_offset` is subtracted from the label (1 for 1-based labels).
  """

  @seqio.map_over_dataset
  def fmt(ex):
    if choices_key:
      choices = tf.reshape(feature(ex, choices_key), [-1])
    else:
      choices = tf.stack([feature(ex, k) for k in choice_keys])
    inputs = join_fields(benchmark, [(k, feature(ex, p)) for k, p in fields])
    label = tf.cast(feature(ex, label_key), tf.int64) - label_offset
    return {"inputs": tf.strings.join([inputs, choices_text(choices)], separator=" "),
            "targets": choice_label(label, tf.size(choices))}

  return fmt(ds)


def race(ds: tf.data.Dataset, *, benchmark: str) -> tf.data.Dataset:
  """RACE: one example per question, `race article: .. question: .. choice1: ..`."""
  letters = tf.constant(list("ABCDEFGH"))

  def per_question(ex):
    options = ex["options"]
    if isinstance(options, tf.RaggedTensor):
      num_rows = options.nrows(out_type=tf.int32)
    else:
      num_rows = tf.shape(options, out_type=tf.int32)[0]
    n = tf.minimum(tf.minimum(tf.size(ex["questions"]), tf.size(ex["answers"])), num_rows)
    return tf.data.Dataset.from_tensor_slices({
        "article": tf.repeat(tf.expand_dims(ex["article"], 0), n),
        "question": ex["questions"][:n], "answer": ex["answers"][:n], "options": options[:n]})

  @seqio.map_over_dataset
  def fmt(ex):
    choices = tf.reshape(ex["options"], [-1])
    matches = tf.equal(letters, tf.strings.strip(ex["answer"]))
    label = tf.where(tf.reduce_any(matches), tf.argmax(tf.cast(matches, tf.int64)), -1)
    inputs = join_fields(benchmark, [("article", ex["article"]), ("question", ex["question"])])
    return {"inputs": tf.strings.join([inputs, choices_text(choices)], separator=" "),
            "targets": choice_label(label, tf.size(choices))}

  return fmt(ds.flat_map(per_question))


# ----------------------------------------------------------------------------- reading
def _answers(ex: Mapping[str, Any], answer_keys: Sequence[str]) -> tf.Tensor:
  parts = [tf.reshape(tf.cast(feature(ex, k), tf.string), [-1]) for k in answer_keys]
  return tf.concat(parts, axis=0)


def qa(ds: tf.data.Dataset, *, benchmark: str, answer_keys: Sequence[str],
       question_key: str = "question", context_key: str = "context") -> tf.data.Dataset:
  """Extractive / abstractive QA: `<benchmark> question: .. context: ..` -> first answer.

  All reference answers are kept in "answers" for SQuAD-style scoring.
  """

  @seqio.map_over_dataset
  def fmt(ex):
    answers = _answers(ex, answer_keys)
    target = tf.cond(tf.size(answers) > 0, lambda: answers[0], lambda: tf.constant(UNK))
    inputs = join_fields(benchmark, [("question", feature(ex, question_key)),
                                     ("context", feature(ex, context_key))])
    return {"inputs": inputs, "targets": target, "answers": answers}

  return fmt(ds)


def _record_passage(passage: tf.Tensor) -> tf.Tensor:
  passage = tf.strings.regex_replace(passage, r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ")
  return tf.strings.regex_replace(passage, r"\n@highlight\n", ". ")


def record(ds: tf.data.Dataset, *, benchmark: str) -> tf.data.Dataset:
  """ReCoRD: `record query: .. entities: a, b passage: ..`, one example per answer."""

  def per_answer(ex):
    entities = tf.strings.reduce_join(tf.unique(ex["entities"]).y, separator=", ")
    inputs = join_fields(benchmark, [("query", ex["query"]), ("entities", entities),
                                     ("passage", _record_passage(ex["passage"]))])
    answers = ex["answers"]
    targets = tf.cond(tf.size(answers) > 0, lambda: answers, lambda: tf.constant([UNK]))
    n = tf.size(targets)
    group = tf.strings.join([tf.strings.as_string(ex["idx"]["passage"]),
                             tf.strings.as_string(ex["idx"]["query"])], separator="-")
    return tf.data.Dataset.from_tensor_slices({
        "inputs": tf.repeat(tf.expand_dims(inputs, 0), n), "targets": targets,
        "answers": tf.repeat(tf.expand_dims(answers, 0), n, axis=0),
        "group": tf.repeat(tf.expand_dims(group, 0), n)})

  return ds.flat_map(per_answer)


# ----------------------------------------------------------------------------- generation
def generate(ds: tf.data.Dataset, *, benchmark: str, fields: Fields, target_key: str,
             separator: str = "; ") -> tf.data.Dataset:
  """Summarisation / translation / data-to-text: `<benchmark> key: ..` -> reference text.

  List-valued fields (concepts, triples) are joined with `separator`.
  """

  @seqio.map_over_dataset
  def fmt(ex):
    inputs = join_fields(benchmark, [(k, as_text(feature(ex, p), separator)) for k, p in fields])
    return {"inputs": inputs, "targets": as_text(feature(ex, target_key), " ")}

  return fmt(ds)


def schema_guided_dialog(ds: tf.data.Dataset, *, benchmark: str) -> tf.data.Dataset:
  """GEM SGD: `<benchmark> service: .. acts: ACT slot=v1|v2; .. context: <last turn>`."""

  @seqio.map_over_dataset
  def fmt(ex):
    acts = ex["dialog_acts"]
    act_names = tf.gather(tf.constant(SGD_ACTS),
                          tf.clip_by_value(tf.cast(acts["act"], tf.int64), 0, len(SGD_ACTS) - 1))
    values = tf.strings.reduce_join(acts["values"], axis=-1, separator="|")
    n = tf.minimum(tf.minimum(tf.size(act_names), tf.size(acts["slot"])), tf.size(values))
    rendered = tf.strings.join([act_names[:n], " ", acts["slot"][:n], "=", values[:n]])
    context = ex["context"]
    last_turn = tf.strings.reduce_join(context[tf.maximum(tf.size(context) - 1, 0):])
    inputs = join_fields(benchmark, [("service", ex["service"]),
                                     ("acts", tf.strings.reduce_join(rendered, separator="; ")),
                                     ("context", last_turn)])
    return {"inputs": inputs, "targets": ex["target"]}

  return fmt(ds)


# ----------------------------------------------------------------------------- language modelling
@seqio.map_over_dataset
def c4_text(ex):
  """C4: the document text as "targets" (split into a prefix and suffix after tokenising)."""
  return {"targets": ex["text"]}


DEFAULT_PREFIX_LM_LENGTH = 512


@seqio.map_over_dataset(num_seeds=2)
def _prefix_lm_split(ex, seeds, inputs_max: int, targets_max: int):
  ids = ex["targets"]
  n = tf.size(ids)
  span = tf.minimum(n, inputs_max + targets_max)
  start = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=n - span + 1, dtype=tf.int32)
  chunk = ids[start:start + span]
  split = tf.random.stateless_uniform([], seeds[1], minval=1, maxval=span, dtype=tf.int32)
  return {"inputs": chunk[tf.maximum(0, split - inputs_max):split],
          "targets": chunk[split:split + targets_max]}


def prefix_lm(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]] = None,
              output_features: Optional[Mapping[str, seqio.Feature]] = None) -> tf.data.Dataset:
  """T5-style prefix LM on tokenised text: a random window cut at a uniformly random point.

  Inputs are the (at most inputs-length) tokens before the cut, targets the (at most
  targets-length) tokens after it, EOS included in the lengths; both are non-empty.
  """
  del output_features
  lengths = dict(sequence_length or {})
  inputs_max = (lengths.get("inputs") or DEFAULT_PREFIX_LM_LENGTH) - 1
  targets_max = (lengths.get("targets") or DEFAULT_PREFIX_LM_LENGTH) - 1
  ds = ds.filter(lambda ex: tf.size(ex["targets"]) >= 2)
  return _prefix_lm_split(ds, inputs_max=max(inputs_max, 1), targets_max=max(targets_max, 1))
