"""Tests of the synthetic task world and its seqio registration."""

from __future__ import annotations

import collections
import functools
import itertools

import pytest
import seqio
import tensorflow as tf

from spot_jax.models.config import get_config
from tasks import synthetic
from tasks import synthetic_world as sw
from tasks.vocabulary import get_byte_vocabulary

SEQUENCE_LENGTH = {"inputs": 128, "targets": 16}
CLASSIFICATION = [t.name for t in sw.TASKS if t.labels]
TRANSFORM = [t.name for t in sw.TASKS if not t.labels]


def _examples(name: str, split: str) -> list[dict[str, str]]:
  inputs, targets = synthetic.synthetic_examples(synthetic.DEFAULT_SEED, name, split)
  return [dict(inputs=i, targets=t) for i, t in zip(inputs, targets)]


@pytest.fixture(scope="module")
def lexicon() -> sw.Lexicon:
  return synthetic.generate_world(synthetic.DEFAULT_SEED).lexicon


def test_task_table_shape():
  names = synthetic.synthetic_task_names()
  assert len(names) >= 10 and len(set(names)) == len(names)
  assert all(n.startswith("synthetic_") for n in names)
  families = synthetic.task_families()
  assert sorted(itertools.chain(*families.values())) == sorted(t.name for t in sw.TASKS)
  assert sum(len(members) >= 2 for members in families.values()) >= 4
  sizes = [n for t in sw.TASKS for n in t.sizes.values()]
  assert min(sizes) <= 300 and max(sizes) >= 10000


def test_same_seed_same_examples():
  first, second = synthetic.generate_world(3), synthetic.generate_world(3)
  assert first.lexicon == second.lexicon
  for name in first.tasks:
    assert first.task(name).generate("validation") == second.task(name).generate("validation")
  assert first.task("sentiment_b").generate("train") == second.task("sentiment_b").generate("train")
  assert first.corpus(50) == second.corpus(50)
  assert sw.corpus_examples(first, "validation") == sw.corpus_examples(second, "validation")


def test_different_seed_different_examples():
  first, second = synthetic.generate_world(0), synthetic.generate_world(1)
  assert first.lexicon.pos_adjs != second.lexicon.pos_adjs
  for name in first.tasks:
    assert first.task(name).generate("validation") != second.task(name).generate("validation")
  assert first.corpus(50) != second.corpus(50)


def test_splits_differ_and_unknown_split_rejected():
  spec = synthetic.generate_world(0).task("sentiment_a")
  assert spec.generate("train")[:100] != spec.generate("validation")[:100]
  with pytest.raises(ValueError):
    spec.generate("test")


@pytest.mark.parametrize("split", sw.SPLITS)
def test_declared_sizes_match(split):
  for info in sw.TASKS:
    assert len(_examples(info.name, split)) == info.sizes[split], info.name
  assert len(_examples(synthetic.CORPUS_TASK, split)) == sw.CORPUS_SIZES[split]


@pytest.mark.parametrize("split", sw.SPLITS)
def test_label_balance(split):
  """Every label occurs n // k or n // k + 1 times (exactly n / k for the declared sizes)."""
  for name in CLASSIFICATION:
    labels = synthetic.task_labels(name)
    counts = collections.Counter(e["targets"] for e in _examples(name, split))
    assert set(counts) == set(labels), name
    assert max(counts.values()) - min(counts.values()) <= 1, (name, counts)


def test_lengths_within_documented_bounds():
  for info, split in itertools.product(sw.TASKS, sw.SPLITS):
    for example in _examples(info.name, split):
      assert example["inputs"].isascii() and example["targets"].isascii()
      assert 0 < len(example["inputs"]) <= sw.MAX_INPUT_BYTES, example
      assert 0 < len(example["targets"]) <= sw.MAX_TARGET_BYTES, example


def test_sentiment_tasks_share_the_polarity_lexicon(lexicon):
  for name in ("sentiment_a", "sentiment_b"):
    for example in _examples(name, "validation"):
      assert sw.sentiment_label(lexicon, example["inputs"]) == example["targets"]
  words = lambda name: {w for e in _examples(name, "train") for w in e["inputs"].split()}
  assert not words("sentiment_a") & set(lexicon.film_nouns)
  assert not words("sentiment_b") & set(lexicon.product_nouns)


def test_nli_tasks_share_the_fact_rule(lexicon):
  for name in ("nli_facts", "nli_facts_hard"):
    for example in _examples(name, "validation"):
      assert sw.nli_label(lexicon, example["inputs"]) == example["targets"], example
  hard = " ".join(e["inputs"] for e in _examples("nli_facts_hard", "validation"))
  assert "does not" in hard and any(pair[1] in hard.split() for pair in lexicon.relations)


def test_paraphrase_tasks_share_the_synonym_rule(lexicon):
  for name in ("paraphrase_a", "paraphrase_b"):
    for example in _examples(name, "validation"):
      assert sw.paraphrase_label(lexicon, example["inputs"]) == example["targets"], example


def test_topic_tasks_share_the_noun_topics(lexicon):
  for name in ("topic_4way", "topic_2way"):
    for example in _examples(name, "validation"):
      assert sw.topic_label(lexicon, example["inputs"]) == example["targets"], example


def test_transform_count_and_noise_rules():
  for name in TRANSFORM:
    for example in _examples(name, "validation"):
      assert sw.TRANSFORMS[name](example["inputs"]) == example["targets"]
  for example in _examples("count", "validation"):
    assert sw.COUNT_LABELS[len(example["inputs"].split()) - 1] == example["targets"]
  first_inputs = [_examples(name, "validation")[0]["inputs"] for name in TRANSFORM]
  assert len(set(first_inputs)) == len(TRANSFORM)  # Each task draws its own examples.


def test_families_share_no_content_words(lexicon):
  """Unrelated families draw their words from disjoint lexicon classes; only a lookalike
  family shares its partner's words (sw.LOOKALIKES)."""
  made_up = lexicon.words()
  family_words = {}
  for family, members in synthetic.task_families().items():
    family_words[family] = {w for name in members for e in _examples(name, "validation")
                            for w in e["inputs"].split() if w in made_up}
    assert family_words[family], family
  lookalike_families = {frozenset(sw.task_info(n).family for n in pair) for pair in sw.LOOKALIKES}
  for (a, words_a), (b, words_b) in itertools.combinations(family_words.items(), 2):
    if frozenset((a, b)) not in lookalike_families:
      assert not words_a & words_b, (a, b)


# What each harder sibling (sw.RULE_COVERS) asks that its easier sibling's examples never do.
BEYOND_THE_EASIER = {
    ("sentiment_3way", "sentiment_a"): lambda e: e["targets"] == "neutral",
    ("nli_facts_hard", "nli_facts"): lambda e: "does not" in e["inputs"] or " and " in e["inputs"],
    ("topic_4way", "topic_2way"): lambda e: e["targets"] not in sw.TOPIC_LABELS[:2],
}
RULES = {"sentiment_3way": sw.sentiment_3way_label, "nli_facts_hard": sw.nli_label,
         "topic_4way": sw.topic_label}


def test_harder_siblings_rule_covers_the_easier_one_and_not_the_reverse(lexicon):
  """Directional difficulty: the harder task's rule labels every input of the easier sibling
  as the easier task does, while a share of the harder task's examples lies beyond anything
  the easier task shows (a label it lacks, or a form it never has)."""
  assert set(sw.RULE_COVERS) == set(BEYOND_THE_EASIER)
  for (harder, easier), beyond in BEYOND_THE_EASIER.items():
    assert sw.task_info(harder).family == sw.task_info(easier).family
    assert set(sw.task_info(easier).labels) <= set(sw.task_info(harder).labels)
    easy = _examples(easier, "validation")
    assert all(RULES[harder](lexicon, e["inputs"]) == e["targets"] for e in easy), harder
    assert not any(beyond(e) for e in easy), easier
    hard = _examples(harder, "validation")
    assert all(RULES[harder](lexicon, e["inputs"]) == e["targets"] for e in hard), harder
    share = sum(map(beyond, hard)) / len(hard)
    assert share >= 0.25, (harder, share)


def test_lookalikes_draw_their_partners_inputs_with_the_opposite_labels(lexicon):
  """Interference: a lookalike's generator makes exactly its partner's inputs from the same
  random state, and every label contradicts the partner's."""
  for lookalike, partner in sw.LOOKALIKES:
    assert sw.task_info(lookalike).family != sw.task_info(partner).family
    assert sw.task_info(lookalike).labels == sw.task_info(partner).labels
    mine = sw.draw_examples(lexicon, lookalike, sw.derived_rng(0, "lookalike"), 200)
    theirs = sw.draw_examples(lexicon, partner, sw.derived_rng(0, "lookalike"), 200)
    assert [e["inputs"] for e in mine] == [e["inputs"] for e in theirs]
    assert all(a["targets"] != b["targets"] for a, b in zip(mine, theirs))
    for example in _examples(lookalike, "validation"):
      assert sw.irony_label(lexicon, example["inputs"]) == example["targets"], example


def test_metrics_known_values():
  targets = ["positive", "negative", "positive", "negative"]
  predictions = ["positive", "positive", "positive", "negative"]
  assert synthetic.accuracy(targets, predictions) == {"accuracy": 75.0}
  f1 = synthetic.macro_f1(targets, predictions)["macro_f1"]
  assert f1 == pytest.approx(100 * (0.8 + 2 / 3) / 2)
  assert synthetic.exact_match(["a b", "C D"], ["a b", "c d"]) == {"exact_match": 50.0}
  assert synthetic.accuracy([], []) == {"accuracy": 0.0}
  assert synthetic.strip_text(" same \n") == "same"
  assert synthetic.strip_text(b"neutral ", is_target=True) == "neutral"


def test_task_labels_and_info():
  assert synthetic.task_labels("synthetic_topic_2way") == ("sports", "food")
  assert synthetic.task_labels("nli_facts") == ("entailment", "neutral", "contradiction")
  assert synthetic.task_labels("copy") is None
  assert synthetic.synthetic_task_info("synthetic_copy").metric_names == ("exact_match",)
  with pytest.raises(KeyError):
    synthetic.task_labels("synthetic_nope")


def test_registration_is_idempotent_and_seed_checked():
  names = synthetic.register_synthetic_tasks()
  assert names == synthetic.synthetic_task_names() + ["synthetic_corpus"]
  assert synthetic.register_synthetic_tasks() == names
  with pytest.raises(ValueError):
    synthetic.register_synthetic_tasks(seed=1)
  other = synthetic.register_synthetic_tasks(seed=1, prefix="synthetic_test_s1_")
  try:
    assert all(n in seqio.TaskRegistry.names() for n in other)
  finally:
    for name in other:
      seqio.TaskRegistry.remove(name)


def test_seqio_tasks_tokenise_and_convert():
  """Every task tokenises with EOS; all of them together go through the feature converter."""
  vocab = get_byte_vocabulary()
  datasets = []
  names = synthetic.register_synthetic_tasks()
  for name in names:
    task = seqio.get_mixture_or_task(name)
    info = sw.CORPUS_SIZES if name.endswith("corpus") else synthetic.synthetic_task_info(name).sizes
    assert task.num_input_examples("train") == info["train"]
    assert task.metric_fns or name.endswith("corpus")
    dataset = task.get_dataset(sequence_length=SEQUENCE_LENGTH, split="validation",
                               shuffle=False).take(2)
    example = next(dataset.as_numpy_iterator())
    assert example["inputs"][-1] == example["targets"][-1] == 1  # EOS
    pretokenized = example["targets_pretokenized"].decode()
    max_target = SEQUENCE_LENGTH["targets"] - 1
    assert vocab.decode(example["targets"].tolist()) == pretokenized[:max_target]
    datasets.append(dataset)
  combined = functools.reduce(lambda a, b: a.concatenate(b), datasets)
  converted = seqio.EncDecFeatureConverter(pack=False)(combined, SEQUENCE_LENGTH)
  features = list(converted.as_numpy_iterator())
  assert len(features) == 2 * len(names)
  assert all(f["encoder_input_tokens"].shape == (128,) for f in features)
  assert all(f["decoder_target_tokens"].shape == (16,) for f in features)
  assert all(f["decoder_loss_weights"].sum() > 1 for f in features)


def test_corpus_is_prefix_lm():
  world = synthetic.generate_world(synthetic.DEFAULT_SEED)
  docs = world.corpus(sw.CORPUS_SIZES["validation"], "validation")
  assert all(len(d) <= sw.CORPUS_MAX_DOC_BYTES for d in docs)
  examples = _examples(synthetic.CORPUS_TASK, "validation")
  for doc, example in zip(docs, examples):
    assert example["inputs"] and example["targets"]
    assert f"{example['inputs']} {example['targets']}" == doc
    assert len(example["inputs"]) <= sw.CORPUS_MAX_INPUT_BYTES
    assert len(example["targets"]) <= sw.CORPUS_MAX_TARGET_BYTES
  # The corpus states the latent facts the tasks rely on, with the label words.
  text = " ".join(docs)
  assert "means positive" in text and "is about sports" in text and "are same" in text


# ----------------------------------------------------------------- the world tokenised by words


@pytest.mark.parametrize("seed", [0, 1])
def test_word_vocabulary_gives_every_word_of_the_world_one_id(seed):
  from tasks.vocabulary import get_synthetic_word_vocabulary
  vocab = get_synthetic_word_vocabulary(seed)
  words = sw.vocabulary_words(sw.build_lexicon(seed))
  assert vocab.vocab_size == len(words) + 3 <= get_config("tiny_words").vocab_size
  world = sw.generate_world(seed)
  texts = [text for info in sw.TASKS for ex in world.task(info.name).generate("validation")[:50]
           for text in (ex["inputs"], ex["targets"])]
  texts += [f"{name}: {ex['inputs']}" for name in sw.CUED_TASKS
            for ex in world.task(name).generate("validation")[:50]]
  texts += world.corpus(50)
  for text in texts:
    ids = vocab.encode(text)
    assert len(ids) == len(text.split()) and vocab.unk_id not in ids, text
    assert vocab.decode(ids) == text
  # The TensorFlow path seqio tokenises with gives the same ids as the python one.
  batch = texts[:20]
  tf_ids = vocab.encode_tf(tf.constant(batch)).to_list()
  assert tf_ids == [vocab.encode(text) for text in batch]


def test_word_model_is_one_piece_per_word_and_reproducible():
  from tasks.vocabulary import word_model_proto
  first = word_model_proto(("kelo", "rami", "."))
  assert first == word_model_proto(("kelo", "rami", "."))
  import sentencepiece
  processor = sentencepiece.SentencePieceProcessor(model_proto=first)
  assert [processor.id_to_piece(i) for i in range(6)] == [
      "<pad>", "</s>", "<unk>", "\u2581kelo", "\u2581rami", "\u2581."]
  assert processor.encode("rami kelo zzz .") == [4, 3, 2, 5]
  with pytest.raises(ValueError, match="distinct"):
    word_model_proto(("kelo", "kelo"))
  with pytest.raises(ValueError, match="whitespace"):
    word_model_proto(("two words",))


def test_words_tasks_are_the_same_world_tokenised_by_words():
  from tasks.vocabulary import get_synthetic_word_vocabulary
  assert synthetic.unprefixed_name("synthetic_words_topic_2way") == "topic_2way"
  assert synthetic.unprefixed_name("synthetic_topic_2way") == "topic_2way"
  assert synthetic.unprefixed_name("glue_rte") == "glue_rte"
  assert synthetic.task_labels("synthetic_words_topic_2way") == ("sports", "food")
  assert synthetic.synthetic_task_info("synthetic_words_nli_facts").family == "nli"
  lengths = {"inputs": 24, "targets": 4}
  words = seqio.get_mixture_or_task("synthetic_words_sentiment_b").get_dataset(
      lengths, split="validation", shuffle=False)
  by_bytes = seqio.get_mixture_or_task("synthetic_sentiment_b").get_dataset(
      {"inputs": 128, "targets": 16}, split="validation", shuffle=False)
  vocab = get_synthetic_word_vocabulary(0)
  for ex_words, ex_bytes in itertools.islice(zip(words.as_numpy_iterator(),
                                                 by_bytes.as_numpy_iterator()), 20):
    assert ex_words["inputs_pretokenized"] == ex_bytes["inputs_pretokenized"]
    assert vocab.decode(ex_words["inputs"].tolist()) == ex_words["inputs_pretokenized"].decode()
    assert ex_words["inputs"][-1] == ex_words["targets"][-1] == 1  # EOS
    assert len(ex_words["targets"]) == 2  # one word and EOS.
  mixture = seqio.get_mixture_or_task("synthetic_words_pretraining")
  assert {t.name for t in mixture.tasks} == {"synthetic_words_corpus"} | {
      f"synthetic_words_pretrain_{name}" for name in synthetic.PRETRAINING_TASKS}
  with pytest.raises(ValueError, match="unknown synthetic vocabulary"):
    synthetic.register_synthetic_tasks(prefix="synthetic_test_chars_", vocabulary="chars")
  assert not any(n.startswith("synthetic_test_chars_") for n in seqio.TaskRegistry.names())
