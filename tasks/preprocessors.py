"""Text-to-text formatting of raw examples (TensorFlow, run inside tf.data).

Every formatter turns a raw example into `{"inputs": str, "targets": str, ...}` with
inputs `<benchmark> key1: value1 key2: value2 ...` (the benchmark word is left out when
`benchmark` is "", which is how the taskless variants are made). Labels become label names;
a label outside the label set (unlabelled test data) becomes `UNK`. Extra features kept for
postprocessing, named as T5 names them: "answers" (QA, ReCoRD), "idx/paragraph",
"idx/question", "idx/answer" (MultiRC), "idx/passage", "idx/query" (ReCoRD), "label" (WSC).

GLUE / SuperGLUE formats follow the `t5` library (`t5/data/preprocessors.py`, chosen per task
by `t5/data/glue_utils.py:get_glue_text_preprocessor`); the SPoT suite formats follow
google-research/prompt-tuning (`prompt_tuning/spot/data/*.py`,
`prompt_tuning/data/preprocessors.py`). Each function names the one it matches.
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


def join_fields(benchmark: Any, fields: Sequence[tuple[str, Any]], *,
                collapse_whitespace: bool = False) -> tf.Tensor:
  """`<benchmark> key1: value1 key2: value2` (no benchmark word when it is "").

  Joined with single spaces as T5's `glue` does; `collapse_whitespace` then collapses runs of
  whitespace as T5's `_string_join` does (prompt-tuning's SPoT formats use it).
  """
  parts: list[Any] = [benchmark] if _has_benchmark(benchmark) else []
  for key, value in fields:
    parts += [f"{key}:", as_text(value)]
  return string_join(parts) if collapse_whitespace else tf.strings.join(parts, separator=" ")


def _has_benchmark(benchmark: Any) -> bool:
  return not isinstance(benchmark, str) or bool(benchmark)


def string_join(parts: Sequence[Any]) -> tf.Tensor:
  """Space-joined, runs of whitespace collapsed to one space. T5: `preprocessors._string_join`."""
  return tf.strings.regex_replace(tf.strings.join(parts, separator=" "), r"\s+", " ")


def pad_punctuation(text: tf.Tensor) -> tf.Tensor:
  """Spaces around every punctuation character, whitespace runs collapsed.

  T5: `preprocessors._pad_punctuation` (prompt-tuning's MRQA format uses it).
  """
  text = tf.strings.regex_replace(text, r"([[:punct:]])", r" \1 ")
  return tf.strings.regex_replace(text, r"\s+", " ")


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


# ----------------------------------------------------------------------------- classification
def classify(ds: tf.data.Dataset, *, benchmark: str, fields: Fields, label_names: Sequence[str],
             label_key: str = "label", collapse_whitespace: bool = False) -> tf.data.Dataset:
  """Single- or multi-field classification with label-name targets.

  T5: `preprocessors.glue` (GLUE / SuperGLUE); with `collapse_whitespace`, prompt-tuning's
  `spot/data/preprocessors.py:preprocess_text_classification` (NLI family).
  """

  @seqio.map_over_dataset
  def fmt(ex):
    return {"inputs": join_fields(benchmark, [(k, feature(ex, p)) for k, p in fields],
                                  collapse_whitespace=collapse_whitespace),
            "targets": label_name(feature(ex, label_key), label_names)}

  return fmt(ds)


ANLI_ROUNDS = ("anli_r1", "anli_r2", "anli_r3")


def anli(ds: tf.data.Dataset, *, benchmark: str) -> tf.data.Dataset:
  """ANLI, rounds 1-3 read as one task: `anli_r<k> hypothesis: .. context: ..` -> NLI label.

  The task word names the example's round (the concatenated source's "part" feature), as
  prompt-tuning registers one task per round (`spot/data/nli.py`, `anli_r1`..`anli_r3`);
  no task word when `benchmark` is "".
  """

  @seqio.map_over_dataset
  def fmt(ex):
    word = tf.gather(tf.constant(ANLI_ROUNDS), ex["part"]) if benchmark else ""
    fields = [("hypothesis", ex["hypothesis"]), ("context", ex["context"])]
    return {"inputs": join_fields(word, fields, collapse_whitespace=True),
            "targets": label_name(ex["label"], ("entailment", "neutral", "contradiction"))}

  return fmt(ds)


@seqio.map_over_dataset
def _multirc(ex, benchmark: str):
  fields = [(k, ex[k]) for k in ("question", "answer", "paragraph")]
  joined = tf.strings.regex_replace(join_fields(benchmark, fields), "<br>", " ")
  return {"inputs": tf.strings.regex_replace(joined, "<(/)?b>", ""),
          "targets": label_name(ex["label"], ("False", "True")),
          "idx/paragraph": ex["idx"]["paragraph"], "idx/question": ex["idx"]["question"],
          "idx/answer": ex["idx"]["answer"]}


def multirc(ds: tf.data.Dataset, *, benchmark: str) -> tf.data.Dataset:
  """SuperGLUE MultiRC: `multirc question: .. answer: .. paragraph: ..` -> False/True.

  T5: `preprocessors.glue` with `feature_names=("question", "answer", "paragraph")`
  (`glue_utils.get_glue_text_preprocessor`): `<br>` -> " " and `<b>`/`</b>` removed from the
  joined text; the example ids kept as "idx/paragraph", "idx/question", "idx/answer".
  """
  return _multirc(ds, benchmark=benchmark)


def regress(ds: tf.data.Dataset, *, benchmark: str, fields: Fields,
            score_key: str = "label") -> tf.data.Dataset:
  """Similarity scores (STS-B, CxC): target is the score rounded to 0.2, e.g. "3.8"."""

  @seqio.map_over_dataset
  def fmt(ex):
    return {"inputs": join_fields(benchmark, [(k, feature(ex, p)) for k, p in fields]),
            "targets": round_score(feature(ex, score_key))}

  return fmt(ds)


# The two SuperGLUE WSC texts whose pronoun T5 blanks by hand (`preprocessors._wsc_inputs`).
_WSC_SPECIAL_CASES = (
    ("The boy continued to whip the pony , and eventually the pony threw him over. John laughed "
     "out quite loud. \"Good for him,\" he said. ",
     "The boy continued to whip the pony , and eventually the pony threw him over. John laughed "
     "out quite loud. \"Good for X ,\" he said."),
    ("When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the magic "
     "pebble in an iron safe . Some day they might want to use it , but really for now, what "
     "more could they wish for?",
     "When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the magic "
     "pebble in an iron safe . Some day they might want to use X , but really for now, what "
     "more could they wish for?"),
)


def _wsc_blanked(ex) -> tf.Tensor:
  """The WSC text with the pronoun (word `span2_index`) replaced by "X".

  T5: `preprocessors._wsc_inputs` (same checks that the index is inside the text and names the
  pronoun, same two hand-fixed texts).
  """
  words = tf.strings.split([ex["text"]], sep=" ").values
  index = ex["span2_index"]

  def blank():
    checks = [tf.debugging.assert_greater(index, 0), tf.debugging.assert_less(index, tf.size(
        words, out_type=index.dtype)), tf.debugging.assert_equal(words[index], ex["span2_text"])]
    with tf.control_dependencies(checks):
      return tf.strings.join([tf.strings.reduce_join(words[:index], separator=" "), "X",
                              tf.strings.reduce_join(words[index + 1:], separator=" ")],
                             separator=" ")

  branches = [(tf.equal(ex["text"], text), lambda fixed=fixed: tf.constant(fixed))
              for text, fixed in _WSC_SPECIAL_CASES]
  return tf.case(branches, default=blank, exclusive=True)


def wsc_simple(ds: tf.data.Dataset, *, benchmark: str,
               correct_referent_only: bool = False) -> tf.data.Dataset:
  """SuperGLUE WSC as T5 trains it: `wsc: .. *pronoun* ..` -> the candidate referent's text.

  The target is `span1_text` whether or not it is the right referent; "label" is kept for
  `postprocessors.wsc_simple`. `correct_referent_only` keeps only examples whose candidate is
  right (T5 trains on those). T5: `preprocessors.wsc_simple` (`label="wsc:"`).
  """
  if correct_referent_only:
    ds = ds.filter(lambda ex: tf.cast(ex["label"], tf.bool))

  def fmt(ex):
    marked = tf.strings.regex_replace(_wsc_blanked(ex), r" X ",
                                      tf.strings.join([" *", ex["span2_text"], "* "]))
    inputs = tf.strings.join([benchmark, marked], separator=" ") if benchmark else marked
    return {"inputs": inputs, "targets": tf.reshape(ex["span1_text"], []),
            "label": ex["label"], "idx": ex["idx"]}

  return ds.map(fmt, num_parallel_calls=tf.data.AUTOTUNE)


def dpr_simple(ds: tf.data.Dataset, *, benchmark: str) -> tf.data.Dataset:
  """Definite Pronoun Resolution as T5 mixes it into SuperGLUE: `wsc: .. *he* ..` -> referent.

  The first occurrence of the pronoun (followed by a space, "." or ",") is marked.
  T5: `preprocessors.definite_pronoun_resolution_simple` (`label="wsc:"`).
  """

  @seqio.map_over_dataset
  def fmt(ex):
    pattern = tf.strings.join([r" (", ex["pronoun"], r")( |\.|,)"])
    marked = tf.strings.regex_replace(ex["sentence"], pattern, r" *\1*\2", replace_global=False)
    inputs = tf.strings.join([benchmark, marked], separator=" ") if benchmark else marked
    return {"inputs": inputs, "targets": ex["candidates"][ex["label"]]}

  return fmt(ds)


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


def padded_qa(ds: tf.data.Dataset, *, benchmark: str, answer_key: str) -> tf.data.Dataset:
  """SQuAD-style QA with punctuation padded: `<benchmark> question: .. context: ..` -> answer.

  Question, context and answers get spaces around punctuation; the target is the first answer,
  "answers" keeps all of them. prompt-tuning: `data/preprocessors.py:mrqa` (with
  `task_name`, the MRQA sets); without a benchmark word, T5's `preprocessors.squad`.
  """

  @seqio.map_over_dataset
  def fmt(ex):
    answers = pad_punctuation(feature(ex, answer_key))
    parts = [benchmark] if benchmark else []
    parts += ["question:", pad_punctuation(ex["question"]), "context:",
              pad_punctuation(ex["context"])]
    return {"inputs": string_join(parts), "targets": answers[0], "answers": answers}

  return fmt(ds)


def _record_passage(passage: tf.Tensor) -> tf.Tensor:
  passage = tf.strings.regex_replace(passage, r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ")
  return tf.strings.regex_replace(passage, r"\n@highlight\n", ". ")


def record(ds: tf.data.Dataset, *, benchmark: str) -> tf.data.Dataset:
  """ReCoRD: `record query: .. entities: a, b passage: ..`, one example per answer.

  Entities are joined as given; "@highlight" lines become sentences; an example without
  answers yields one `<unk>` example. Ids kept as "idx/passage", "idx/query", all answers as
  "answers". T5: `preprocessors.record`.
  """

  def per_answer(ex):
    inputs = join_fields(benchmark, [
        ("query", ex["query"]), ("entities", tf.strings.reduce_join(ex["entities"],
                                                                    separator=", ")),
        ("passage", _record_passage(ex["passage"]))])
    answers = ex["answers"]
    targets = tf.cond(tf.size(answers) > 0, lambda: answers, lambda: tf.constant([UNK]))
    n = tf.size(targets)

    def repeat(value):
      return tf.repeat(tf.expand_dims(value, 0), n, axis=0)

    return tf.data.Dataset.from_tensor_slices({
        "inputs": repeat(inputs), "targets": targets, "answers": repeat(answers),
        "idx/passage": repeat(ex["idx"]["passage"]), "idx/query": repeat(ex["idx"]["query"])})

  return ds.flat_map(per_answer)


# ----------------------------------------------------------------------------- generation
def summarize(ds: tf.data.Dataset, *, benchmark: str, source_key: str,
              target_key: str) -> tf.data.Dataset:
  """Summarisation: `<benchmark> summarize: <document>` -> the reference summary.

  prompt-tuning: `data/preprocessors.py:preprocess_text_generation` with
  `prefix="summarize:"` and `task_name` the dataset (`spot/data/summarization.py`); without a
  benchmark word, T5's `preprocessors.summarize`. Keys may be nested paths ("a/b").
  """

  @seqio.map_over_dataset
  def fmt(ex):
    parts = ([benchmark] if benchmark else []) + ["summarize:", feature(ex, source_key)]
    return {"inputs": tf.strings.join(parts, separator=" "), "targets": feature(ex, target_key)}

  return fmt(ds)


# English names of the WMT languages, as `babel.Locale(code).english_name` gives them.
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "ro": "Romanian"}


def translate(ds: tf.data.Dataset, *, benchmark: str, source_language: str,
              target_language: str) -> tf.data.Dataset:
  """WMT: `<benchmark> translate English to German: <en text>` -> the German text.

  T5: `preprocessors.translate` (its `wmt14_ende_v003`, `wmt14_enfr_v003`, `wmt16_enro_v003`
  tasks read the same TFDS data); without a benchmark word, T5's inputs exactly.
  """
  instruction = (f"translate {LANGUAGE_NAMES[source_language]} to "
                 f"{LANGUAGE_NAMES[target_language]}: ")

  @seqio.map_over_dataset
  def fmt(ex):
    parts = ([benchmark + " "] if benchmark else []) + [instruction, ex[source_language]]
    return {"inputs": tf.strings.join(parts), "targets": ex[target_language]}

  return fmt(ds)


def generate(ds: tf.data.Dataset, *, benchmark: str, fields: Fields, target_key: str,
             separator: str = "; ") -> tf.data.Dataset:
  """Data-to-text: `<benchmark> key: ..` -> reference text.

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
