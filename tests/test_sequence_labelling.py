"""Sequence labelling as text-to-text: format/parse round trip, malformed outputs, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tasks import metrics, sequence_labelling as sl

SENTENCES = [
    # Multi-word spans.
    (["John", "Smith", "moved", "to", "New", "York", "City", "."],
     ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O"]),
    # No span at all.
    (["it", "rained", "."], ["O", "O", "O"]),
    # Words that look like tags.
    (["O", "B-PER", "I-LOC", "%41"], ["B-MISC", "O", "O", "O"]),
    # PTB punctuation tags, including ones T5's vocabulary cannot generate.
    (["``", "Hi", "''", "$", "5", "{"], ["``", "UH", "''", "$", "CD", "-LRB-"]),
    # An empty sentence.
    ([], []),
]


@pytest.mark.parametrize("words,tags", SENTENCES)
def test_format_then_parse_gives_back_the_tags(words, tags):
  text = sl.format_tags(tags)
  assert sl.parse_tags(text, len(words)) == tuple(tags)
  # Only tags are generated, and only characters the T5 vocabulary can produce.
  assert not set(text) & set("<\\^`{}~")
  assert len(text.split()) == len(tags)
  # What the postprocessor returns for a prediction equals the target's value.
  example = {"num_words": np.int32(len(words))}
  assert sl.tags_postprocessor(text, example, is_target=True) == tuple(tags)
  assert sl.tags_postprocessor(text.encode(), example, is_target=False) == tuple(tags)


def test_escapes_are_exact():
  assert sl.format_tags(["``", "''", "%", "a~b"]) == "%60%60 '' %25 a%7Eb"
  assert sl.decode_tag("%60%60") == "``"
  assert sl.decode_tag("100%") is None and sl.decode_tag("%zz") is None


def test_tf_escaping_matches_python():
  tags = ["``", "%", "<x>", "a\\b", "^{}~", "B-PER", "NN|SYM"]
  got = [t.decode() for t in sl.escape_tags_tf(tf.constant(tags)).numpy()]
  assert got == [sl.encode_tag(t) for t in tags]


def test_the_tf_formatter_writes_the_documented_strings():
  words, tags = SENTENCES[3]
  ds = tf.data.Dataset.from_tensors({"tokens": words, "tags": tags})
  [ex] = list(sl.tagging(ds, benchmark="pos").as_numpy_iterator())
  assert ex["inputs"].decode() == "pos sentence: `` Hi '' $ 5 {"
  assert ex["targets"].decode() == "%60%60 UH '' $ CD -LRB-"
  assert ex["num_words"] == 6
  ids = tf.data.Dataset.from_tensors({"tokens": ["a", "b"], "ner": [2, 0]})
  [ex] = list(sl.tagging(ids, benchmark="", tags_key="ner",
                         tag_names=("O", "B-X", "I-X")).as_numpy_iterator())
  assert ex["inputs"].decode() == "sentence: a b" and ex["targets"].decode() == "I-X O"


@pytest.mark.parametrize("generated", [
    "B-PER I-PER",                 # too few tags
    "B-PER I-PER O O B-LOC I-LOC I-LOC O O",  # too many
    "",                            # nothing
    "B-PER I-PER O O B-LOC I-LOC I-LOC 100%",  # a broken escape
    " ⁇  ⁇ ",                      # what an unknown piece decodes to (wrong count)
])
def test_malformed_predictions_score_zero_without_exceptions(generated):
  words, tags = SENTENCES[0]
  example = {"num_words": len(words)}
  pred = sl.tags_postprocessor(generated, example, is_target=False)
  assert pred == (sl.INVALID_TAG,) * len(words)
  assert sl.token_accuracy([tags], [pred]) == {"token_accuracy": 0.0}
  assert sl.span_f1([tags], [pred]) == {"span_f1": 0.0}


def test_a_malformed_target_is_an_error():
  with pytest.raises(ValueError, match="Malformed tagging target"):
    sl.tags_postprocessor("O O", {"num_words": 3}, is_target=True)


def test_format_rejects_tags_with_spaces():
  with pytest.raises(ValueError, match="whitespace"):
    sl.format_tags(["B-PER", "I PER"])


def test_token_accuracy_by_hand():
  gold = [["B-PER", "I-PER", "O"], ["O", "B-LOC"]]
  pred = [["B-PER", "O", "O"], ["O", "B-LOC"]]  # 4 of 5 right.
  assert sl.token_accuracy(gold, pred)["token_accuracy"] == pytest.approx(80.0)
  # A short prediction counts its missing tags as wrong; invalid tags are never right.
  assert sl.token_accuracy([["O", "O"]], [["O"]])["token_accuracy"] == pytest.approx(50.0)
  assert sl.token_accuracy([[sl.INVALID_TAG]], [[sl.INVALID_TAG]])["token_accuracy"] == 0.0
  assert sl.token_accuracy([], []) == {"token_accuracy": 0.0}


def test_span_f1_by_hand():
  # Gold spans: PER(0-1), LOC(4-6), ORG(8). Predicted: PER(0-1) right, LOC(4-5) wrong
  # boundary, MISC(8) wrong type, LOC(10) spurious. TP=1, FP=3, FN=2:
  # P = 1/4, R = 1/3, F1 = 2PR/(P+R) = 2/7.
  gold = [["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O", "B-ORG", "O", "O"]]
  pred = [["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O", "O", "B-MISC", "O", "B-LOC"]]
  assert sl.span_f1(gold, pred)["span_f1"] == pytest.approx(100 * 2 / 7)
  # conlleval rules: an I- tag after O starts a span (I-LOC alone = one LOC span).
  assert sl.span_f1([["O", "B-LOC", "O"]], [["O", "I-LOC", "O"]])["span_f1"] == 100.0
  # Sentences without spans: no gold and no predicted spans -> 0 (seqeval's zero_division).
  assert sl.span_f1([["O"]], [["O"]])["span_f1"] == 0.0
  # Chunk tags (CoNLL-2000): NP(0-1), VP(2), NP(3) vs NP(0-1), VP(2), PP(3): P = R = 2/3.
  assert sl.span_f1([["B-NP", "I-NP", "B-VP", "B-NP"]],
                    [["B-NP", "I-NP", "B-VP", "B-PP"]])["span_f1"] == pytest.approx(200 / 3)


def test_metrics_are_registered_by_name():
  fns = metrics.metric_fns(["token_accuracy", "span_f1"])
  assert fns == [sl.token_accuracy, sl.span_f1]
