"""The affinity paper's task pool (44 sources + 6 targets); importing registers the new tasks.

"Learning to predict task transferability via soft prompt" (EMNLP 2023). The groups
`affinity_pool` / `affinity_targets` and the caveats on the task list are in
`tasks.registry`; tasks registered before (GLUE, SuperGLUE, SQuAD, ...) keep their formats.
Each task also exists as `<name>_taskless`. Sources: TFDS (read-only), Hugging Face
`datasets` read offline (`tasks.hf_source`), or JSONL files (`<data dir>/<task>/<split>.jsonl`,
which also override the Hugging Face sources).

task                    source                                inputs -> targets  [metrics]
imdb                    tfds imdb_reviews (val = test)        imdb text: -> negative|positive
scitail                 hf allenai/scitail tsv_format         scitail premise: hypothesis:
                                                              -> entailment|neutral
sick                    hf RobZamp/sick                       sick sentence1: sentence2: -> NLI
trec                    tfds trec (val = test)                trec text: -> DESC|ENTY|ABBR|..
scicite                 tfds scicite                          scicite text: -> method|..
emotion                 hf dair-ai/emotion split              emotion text: -> sadness|joy|..
rotten_tomatoes         hf cornell-movie-review-data/..       rotten_tomatoes text: -> neg|pos
ag_news                 tfds ag_news_subset (val = test)      ag_news title: description:
amazon_polarity         hf fancyzhx/amazon_polarity           amazon_polarity title: content:
dbpedia_14              hf fancyzhx/dbpedia_14                dbpedia_14 title: content:
hate_speech18           hf odegiber/hate_speech18 (90/10)     hate_speech18 text:
hate_speech_offensive   hf tdavidson/hate_speech_offensive    hate_speech_offensive tweet:
atis                    hf tuetschek/atis (val = test)        atis text: -> the intent string
laptop14                file                                  laptop14 sentence: aspect:
                                                              -> positive|negative|neutral|conflict
emo                     hf SemEvalWorkshop/emo (val = test)   emo text: -> others|happy|sad|angry
app_reviews             hf sealuzh/app_reviews (90/10)        app_reviews review: -> 1..5 stars
squad_v2                tfds squad/v2.0                       squad_v2 question: context:
                                                              -> answer | unanswerable  [EM, F1]
duorc_s / duorc_p       hf ibm/duorc SelfRC / ParaphraseRC    duorc_s question: context: (plot)
swag                    hf allenai/swag regular               swag context: choice1: .. choice4:
quail                   hf textmachinelab/quail               quail context: question: choice1..4
wnut17_ner              hf leondz/wnut_17                     `<name> sentence: w1 .. wn`
conll2000_chunk         hf eriktks/conll2000 (val = test)     -> `t1 .. tn`
conll2003_pos/_ner      tfds conll2003 (validation = dev)     (tasks.sequence_labelling)
pmb_semtag, mit_movie_ner, fce_error_detection, conll2004_ner   file
conll2012_pos / ontonotes_ner  hf ontonotes/conll2012_ontonotesv5 english_v4 (one example
                        per sentence)

Unanswerable questions (SQuAD 2.0, DuoRC) have the target "unanswerable" and are scored as
the official SQuAD 2.0 script does: the reference is the empty answer, and a prediction of
"unanswerable" is the empty answer (EM = F1 = 1 when both are empty; metric `squad_v2`). "90/10": the dataset
has only a train split; validation is its last 10% (`train[90%:]`, our split).
Metrics: accuracy for labels, SQuAD EM/F1 for answers, token accuracy (+ seqeval span F1 for
NER and chunking) for tagging.

JSONL schemas (`<data dir>/<task>/<split>.jsonl`, splits train / validation [/ test]):
* tagging tasks: `{"tokens": [str, ...], "tags": [str, ...]}` (same lengths).
* laptop14: `{"sentence": str, "aspect": str, "polarity": str}`.
* Hugging Face tasks: the fields of `tasks.registry.get_info(name).schema` (the dataset's
  own column names, tagging columns renamed to tokens / tags).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import seqio
import tensorflow as tf

from tasks import builder, hf_source, postprocessors, preprocessors, sequence_labelling

UNANSWERABLE = "unanswerable"
_NLI3 = ("entailment", "neutral", "contradiction")
_POLARITY = ("negative", "positive")
DBPEDIA_LABELS = ("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
                  "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal",
                  "Plant", "Album", "Film", "WrittenWork")


# ----------------------------------------------------------------------------- formatters
def classify_string_label(ds: tf.data.Dataset, *, benchmark: str,
                          fields: Sequence[tuple[str, str]], label_key: str,
                          label_map: Mapping[str, str]) -> tf.data.Dataset:
  """Classification whose raw label is a string: `label_map[label]`, else UNK."""

  @seqio.map_over_dataset
  def fmt(ex):
    label = tf.strings.strip(preprocessors.feature(ex, label_key))
    target = tf.constant(preprocessors.UNK)
    for raw, name in label_map.items():
      target = tf.where(tf.equal(label, raw), name, target)
    return {"inputs": preprocessors.join_fields(
                benchmark, [(k, preprocessors.feature(ex, p)) for k, p in fields]),
            "targets": target}

  return fmt(ds)


def shift_label(ds: tf.data.Dataset, *, key: str, offset: int,
                out_key: str = "label") -> tf.data.Dataset:
  """`out_key` = `key` - `offset` (1-based ratings -> class ids)."""
  return ds.map(lambda ex: {**ex, out_key: tf.cast(ex[key], tf.int64) - offset},
                num_parallel_calls=tf.data.AUTOTUNE)


def answerable_or_not(ds: tf.data.Dataset) -> tf.data.Dataset:
  """After `preprocessors.qa`: the target of a question without answers is "unanswerable"."""

  @seqio.map_over_dataset
  def fmt(ex):
    return {**ex, "targets": tf.where(tf.size(ex["answers"]) > 0, ex["targets"], UNANSWERABLE)}

  return fmt(ds)


def qa_v2_answers(text: Any, example: Optional[Mapping[str, Any]] = None,
                  is_target: bool = False) -> Any:
  """SQuAD 2.0 scoring: no reference answers = [""]; "unanswerable" predicts ""."""
  if is_target:
    answers = [postprocessors._text(a) for a in (example or {}).get("answers", [])]  # pylint: disable=protected-access
    return answers or [""]
  prediction = postprocessors._text(text)  # pylint: disable=protected-access
  return "" if prediction == UNANSWERABLE else prediction


@functools.lru_cache(maxsize=None)
def tfds_tag_names(tfds_name: str, feature: str) -> tuple[str, ...]:
  """ClassLabel names of a TFDS sequence feature (from the builder's code; no data read)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return tuple(tfds.builder(tfds_name).info.features[feature].feature.names)


# ----------------------------------------------------------------------------- HF row converts
def rename_tags(tags_column: str):
  """HF tagging rows (tag names already resolved) -> `{"tokens", "tags"}`."""
  def convert(row, features):
    del features
    return [{"tokens": row["tokens"], "tags": row[tags_column]}]
  return convert


def ontonotes_sentences(tags_column: str):
  """CoNLL-2012 OntoNotes documents -> one `{"tokens", "tags"}` example per sentence."""
  def convert(row, features):
    names = hf_source.label_names(features, ("sentences", tags_column))
    for sentence in row["sentences"]:
      tags = sentence[tags_column]
      yield {"tokens": sentence["words"], "tags": [names[t] for t in tags] if names else tags}
  return convert


# ----------------------------------------------------------------------------- formats
def _fmt(fn, postprocess=None, *, before=(), after=(), hf_convert=None,
         **kwargs) -> builder.TaskFormat:
  return builder.TaskFormat(
      text=lambda benchmark: [*before, functools.partial(fn, benchmark=benchmark, **kwargs),
                              *after],
      postprocess=postprocess, hf_convert=hf_convert)


def _labels(names: Sequence[str]):
  return functools.partial(postprocessors.class_id, label_names=tuple(names))


def _classification(fields, names: Sequence[str], **kwargs) -> builder.TaskFormat:
  return _fmt(preprocessors.classify, _labels(names), fields=tuple(fields),
              label_names=tuple(names), **kwargs)


def _string_classification(fields, label_map: Mapping[str, str], label_key: str,
                           names: Sequence[str]) -> builder.TaskFormat:
  return _fmt(classify_string_label, _labels(names), fields=tuple(fields),
              label_key=label_key, label_map=dict(label_map))


def _qa_v2(answer_keys, **kwargs) -> builder.TaskFormat:
  return _fmt(preprocessors.qa, qa_v2_answers, after=(answerable_or_not,),
              answer_keys=tuple(answer_keys), **kwargs)


def _tagging(hf_convert=None, **kwargs) -> builder.TaskFormat:
  return _fmt(sequence_labelling.tagging, sequence_labelling.tags_postprocessor,
              hf_convert=hf_convert, **kwargs)


class _LazyNames(Sequence):
  """TFDS tag names looked up when the preprocessor first needs them."""

  def __init__(self, tfds_name: str, feature: str):
    self._key = (tfds_name, feature)

  def __getitem__(self, i):
    return tfds_tag_names(*self._key)[i]

  def __len__(self) -> int:
    return len(tfds_tag_names(*self._key))


def _conll2003(feature: str) -> builder.TaskFormat:
  return _tagging(tags_key=feature, tag_names=_LazyNames("conll2003:1.0.0", feature))


_TEXT = (("text", "text"),)
_EMO = ("others", "happy", "sad", "angry")
_STARS = ("1", "2", "3", "4", "5")

FORMATS: dict[str, builder.TaskFormat] = {
    "imdb": _classification(_TEXT, _POLARITY),
    "scitail": _string_classification((("premise", "premise"), ("hypothesis", "hypothesis")),
                                      {"entails": "entailment", "neutral": "neutral"}, "label",
                                      ("entailment", "neutral")),
    "sick": _classification((("sentence1", "sentence_A"), ("sentence2", "sentence_B")), _NLI3),
    "trec": _classification(_TEXT, ("DESC", "ENTY", "ABBR", "HUM", "NUM", "LOC"),
                            label_key="label-coarse"),
    "scicite": _classification((("text", "string"),), ("method", "background", "result")),
    "emotion": _classification(_TEXT, ("sadness", "joy", "love", "anger", "fear", "surprise")),
    "rotten_tomatoes": _classification(_TEXT, _POLARITY),
    "ag_news": _classification((("title", "title"), ("description", "description")),
                               ("World", "Sports", "Business", "Sci/Tech")),
    "amazon_polarity": _classification((("title", "title"), ("content", "content")),
                                       _POLARITY),
    "dbpedia_14": _classification((("title", "title"), ("content", "content")),
                                  DBPEDIA_LABELS),
    "hate_speech18": _classification(_TEXT, ("noHate", "hate", "idk/skip", "relation")),
    "hate_speech_offensive": _classification(
        (("tweet", "tweet"),), ("hate_speech", "offensive_language", "neither"),
        label_key="class"),
    "atis": _fmt(preprocessors.generate, None, fields=_TEXT, target_key="intent"),
    "laptop14": _string_classification(
        (("sentence", "sentence"), ("aspect", "aspect")),
        {p: p for p in ("positive", "negative", "neutral", "conflict")}, "polarity",
        ("positive", "negative", "neutral", "conflict")),
    "emo": _classification(_TEXT, _EMO),
    "app_reviews": _classification(
        (("review", "review"),), _STARS,
        before=(functools.partial(shift_label, key="star", offset=1),)),
    "squad_v2": _qa_v2(["answers/text"]),
    "duorc_s": _qa_v2(["answers"], context_key="plot"),
    "duorc_p": _qa_v2(["answers"], context_key="plot"),
    "swag": _fmt(preprocessors.multiple_choice, _labels([f"choice{i}" for i in range(1, 5)]),
                 fields=(("context", "startphrase"),),
                 choice_keys=("ending0", "ending1", "ending2", "ending3")),
    "quail": _fmt(preprocessors.multiple_choice, _labels([f"choice{i}" for i in range(1, 5)]),
                  fields=(("context", "context"), ("question", "question")),
                  choices_key="answers", label_key="correct_answer_id"),
    "wnut17_ner": _tagging(rename_tags("ner_tags")),
    "conll2000_chunk": _tagging(rename_tags("chunk_tags")),
    "conll2003_pos": _conll2003("pos"),
    "conll2003_ner": _conll2003("ner"),
    "pmb_semtag": _tagging(),
    "mit_movie_ner": _tagging(),
    "fce_error_detection": _tagging(),
    "conll2004_ner": _tagging(),
    "conll2012_pos": _tagging(ontonotes_sentences("pos_tags")),
    "ontonotes_ner": _tagging(ontonotes_sentences("named_entities")),
}

builder.register_module_tasks("affinity_pool", FORMATS)
