"""Deterministic synthetic task world: a made-up lexicon, related text-to-text tasks and a corpus.

Pure python/numpy (no files, no TensorFlow); `tasks.synthetic` registers it with seqio.

The lexicon is drawn from all consonant-vowel-consonant-vowel words (`kelo`, `rami`, ...),
excluding English label and glue words, and split into disjoint word classes. Every task
family owns its word classes, so families share no content words and transfer across
families is not expected, while members of one family share a latent rule:

* sentiment  (sentiment_a, sentiment_b, sentiment_3way): label = polarity of the adjectives,
  from one shared polarity lexicon; a and b use different domain nouns and sentence templates.
  sentiment_3way is the harder sibling of sentiment_a (same reviews, plus a third of them
  with only a neutral adjective, labelled `neutral`): its rule covers a's, not the reverse.
* irony      (irony_a, irony_b): the lookalike of sentiment. The inputs of sentiment_a
  (irony_a) and sentiment_b (irony_b), drawn by the same generator, labelled with the opposite
  polarity: the two families look alike and their rules contradict each other everywhere.
* nli        (nli_facts, nli_facts_hard): facts `entity verb object`; every relation is
  functional (one object per entity), so a hypothesis about a premise's (entity, relation)
  is entailed or contradicted (flipped by `does not`) and anything else is neutral. The hard
  member has two premise facts, synonym verbs and negation.
* paraphrase (paraphrase_a, paraphrase_b): `same` iff both sentences mean the same after
  mapping synonyms to one meaning (and, in b, the order of the `x and y` subjects is free).
* topic      (topic_4way, topic_2way): label = majority topic of the topic nouns.
* transform  (copy, reverse, uppercase): output a transform of the input words.
* counting   (count): the number of input words, as an English word.
* noise      (noise): labels drawn independently of the input (unlearnable, unrelated).

The transfer rule these families are built for (docs/affinity.md, "The demo's world"):
within a family, a harder member's rule covers an easier member's (`RULE_COVERS`), so its
prompt carries what the easier sibling needs and not the reverse (directional difficulty);
a lookalike family (`LOOKALIKES`) shares its partner's inputs but not its rule, so prompts
that start alike pull transfers the wrong way (interference). A similarity of the two keys
is symmetric and rewards lookalikes; a learned function of both keys need not.

Inputs carry no task name, so related tasks share their surface form (pair tasks mark their
fields with `premise:`/`hypothesis:` or `sentence1:`/`sentence2:`). Consequently copy,
reverse and uppercase have identical inputs and are only told apart by the prompt. Inputs
are at most `MAX_INPUT_BYTES` bytes and targets at most `MAX_TARGET_BYTES` bytes (ASCII).
Labels are exactly balanced: every declared split size is a multiple of the label count.
Train and validation are drawn independently from the same distribution, so short
examples may occur in both.

Randomness comes only from `numpy.random.default_rng` seeded with the world seed plus the
crc32 of a tag (task name and split), never from `hash()` or set order.
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
MAX_INPUT_BYTES = 96
MAX_TARGET_BYTES = 15
CORPUS_MAX_DOC_BYTES = 120
CORPUS_MAX_INPUT_BYTES = 96
CORPUS_MAX_TARGET_BYTES = 64
CORPUS_SIZES = MappingProxyType({"train": 20000, "validation": 1000})
SPLITS = ("train", "validation")
DEFAULT_PREFIX = "synthetic_"  # registered task names: DEFAULT_PREFIX + TaskInfo.name.

SENTIMENT_LABELS = ("negative", "positive")
SENTIMENT3_LABELS = ("negative", "neutral", "positive")
NLI_LABELS = ("entailment", "neutral", "contradiction")
PARAPHRASE_LABELS = ("different", "same")
TOPIC_LABELS = ("sports", "food", "music", "travel")
COUNT_LABELS = ("one", "two", "three", "four", "five")
NOISE_LABELS = ("alpha", "beta")
CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
TRANSFORM_METRICS = ("exact_match",)

# Words that may not be drawn as made-up words (labels and template glue words).
_GLUE_WORDS = ("the", "this", "is", "was", "and", "not", "does", "with", "near", "or", "it",
               "its", "we", "saw", "felt", "seemed", "found", "means", "are", "about", "a",
               "i", "premise:", "hypothesis:", "sentence1:", "sentence2:")

# (word class, size), in the order classes are cut from the shuffled pool.
_LEXICON_SIZES = (
    ("pos_adjs", 16), ("neg_adjs", 16), ("neutral_adjs", 12), ("intensifiers", 4),
    ("product_nouns", 12), ("film_nouns", 12), ("sentiment_fillers", 24),
    ("topic_nouns", 4 * 12), ("topic_fillers", 16),
    ("entities", 16), ("relation_verbs", 2 * 6), ("objects", 16),
    ("para_nouns", 2 * 12), ("para_adjs", 2 * 10), ("para_verbs", 2 * 8),
    ("misc_words", 32), ("count_words", 16), ("noise_words", 24),
)


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """Seed-independent description of one synthetic task."""
  name: str
  family: str
  sizes: Mapping[str, int]
  labels: tuple[str, ...] | None
  metric_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SyntheticTaskSpec(TaskInfo):
  """A task bound to a world: `generate(split)` returns `sizes[split]` examples."""
  generate: Callable[[str], list[dict[str, str]]]


@dataclasses.dataclass(frozen=True)
class Lexicon:
  """The made-up word classes of one world (tuples, so the lexicon is immutable)."""
  pos_adjs: tuple[str, ...]
  neg_adjs: tuple[str, ...]
  neutral_adjs: tuple[str, ...]
  intensifiers: tuple[str, ...]
  product_nouns: tuple[str, ...]
  film_nouns: tuple[str, ...]
  sentiment_fillers: tuple[str, ...]
  topic_nouns: Mapping[str, tuple[str, ...]]
  topic_fillers: tuple[str, ...]
  entities: tuple[str, ...]
  relations: tuple[tuple[str, str], ...]
  objects: tuple[str, ...]
  para_nouns: tuple[tuple[str, str], ...]
  para_adjs: tuple[tuple[str, str], ...]
  para_verbs: tuple[tuple[str, str], ...]
  misc_words: tuple[str, ...]
  count_words: tuple[str, ...]
  noise_words: tuple[str, ...]

  def words(self) -> frozenset[str]:
    """Every made-up word of the lexicon."""
    found: set[str] = set()
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      groups = value.values() if isinstance(value, Mapping) else [value]
      for group in groups:
        for item in group:
          found.update((item,) if isinstance(item, str) else item)
    return frozenset(found)

  def polarity(self, word: str) -> str | None:
    """`positive`/`negative` for polar adjectives, else None."""
    if word in self.pos_adjs:
      return "positive"
    if word in self.neg_adjs:
      return "negative"
    return None

  def topic_of(self, word: str) -> str | None:
    """The topic label of a topic noun, else None."""
    for topic, nouns in self.topic_nouns.items():
      if word in nouns:
        return topic
    return None

  def relation_of(self, verb: str) -> int | None:
    """Index of the relation a verb (either synonym) expresses, else None."""
    for index, pair in enumerate(self.relations):
      if verb in pair:
        return index
    return None

  def meaning_of(self, word: str) -> str:
    """Canonical member of a paraphrase synonym pair; other words map to themselves."""
    for pairs in (self.para_nouns, self.para_adjs, self.para_verbs):
      for pair in pairs:
        if word in pair:
          return pair[0]
    return word


@dataclasses.dataclass(frozen=True)
class SyntheticWorld:
  """A seeded lexicon plus the task specs generated from it."""
  seed: int
  lexicon: Lexicon
  tasks: Mapping[str, SyntheticTaskSpec]

  def task(self, name: str) -> SyntheticTaskSpec:
    return self.tasks[name]

  def corpus(self, n: int, split: str = "train") -> list[str]:
    return corpus_documents(self, n, split)


Example = dict[str, str]
_Generator = Callable[[Lexicon, np.random.Generator, int], list[Example]]


def derived_rng(seed: int, *tags: str) -> np.random.Generator:
  """A generator seeded by `seed` and the crc32 of each tag (hash-randomization free)."""
  if seed < 0:
    raise ValueError(f"seed must be non-negative, got {seed}")
  entropy = [int(seed)] + [zlib.crc32(tag.encode("utf-8")) for tag in tags]
  return np.random.default_rng(np.random.SeedSequence(entropy))


def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
  return words[int(rng.integers(len(words)))]


def _pick_other(rng: np.random.Generator, words: Sequence[str], *avoid: str) -> str:
  while True:
    word = _pick(rng, words)
    if word not in avoid:
      return word


def _balanced(rng: np.random.Generator, n: int, k: int) -> list[int]:
  """`n` label indices in random order, each of the `k` labels `n // k` or `n // k + 1` times."""
  return [int(i) for i in rng.permutation(np.arange(n) % k)]


def _sentence(*words: str) -> str:
  return " ".join(w for w in words if w) + " ."


def _excluded_words() -> set[str]:
  labels = (SENTIMENT_LABELS + SENTIMENT3_LABELS + NLI_LABELS + PARAPHRASE_LABELS + TOPIC_LABELS + COUNT_LABELS
            + NOISE_LABELS)
  return set(labels) | set(_GLUE_WORDS)


def build_lexicon(seed: int) -> Lexicon:
  """Cuts disjoint word classes out of a seeded permutation of all CVCV words."""
  excluded = _excluded_words()
  pool = ["".join(p) for p in itertools.product(CONSONANTS, VOWELS, CONSONANTS, VOWELS)]
  pool = [w for w in pool if w not in excluded]
  order = derived_rng(seed, "lexicon").permutation(len(pool))
  words = [pool[int(i)] for i in order]
  classes: dict[str, tuple[str, ...]] = {}
  start = 0
  for name, size in _LEXICON_SIZES:
    classes[name] = tuple(words[start:start + size])
    start += size

  def pairs(flat: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(zip(flat[0::2], flat[1::2]))

  topic_flat = classes.pop("topic_nouns")
  per_topic = len(topic_flat) // len(TOPIC_LABELS)
  topic_nouns = MappingProxyType({
      topic: topic_flat[i * per_topic:(i + 1) * per_topic] for i, topic in enumerate(TOPIC_LABELS)})
  return Lexicon(
      topic_nouns=topic_nouns,
      relations=pairs(classes.pop("relation_verbs")),
      para_nouns=pairs(classes.pop("para_nouns")),
      para_adjs=pairs(classes.pop("para_adjs")),
      para_verbs=pairs(classes.pop("para_verbs")),
      **classes)


# ----------------------------------------------------------------------------------- sentiment


def _polar_adj(lex: Lexicon, rng: np.random.Generator, label: int, *avoid: str) -> str:
  return _pick_other(rng, lex.pos_adjs if label == 1 else lex.neg_adjs, *avoid)


def _product_review(lex: Lexicon, rng: np.random.Generator, label: int | None) -> str:
  """A product review with one adjective: polar (label 0 negative, 1 positive) or, with label
  None, neutral."""
  adjectives = lex.neutral_adjs if label is None else (
      lex.pos_adjs if label == 1 else lex.neg_adjs)
  noun, adj = _pick(rng, lex.product_nouns), _pick(rng, adjectives)
  intens, filler = _pick(rng, lex.intensifiers), _pick(rng, lex.sentiment_fillers)
  template = int(rng.integers(4))
  if template == 0:
    return _sentence("the", noun, "is", adj)
  if template == 1:
    return _sentence("this", noun, "was", intens, adj)
  if template == 2:
    return _sentence("i found the", noun, adj, "and", filler)
  return _sentence(adj, noun, ",", intens, filler)


def _film_review(lex: Lexicon, rng: np.random.Generator, label: int) -> str:
  noun, adj = _pick(rng, lex.film_nouns), _polar_adj(lex, rng, label)
  template = int(rng.integers(4))
  if template == 0:
    return f"we saw a {noun} . it felt {adj} ."
  if template == 1:
    adj2 = _polar_adj(lex, rng, label, adj)
    return _sentence(noun, ":", adj, ",", _pick(rng, lex.neutral_adjs), "and", adj2)
  if template == 2:
    fillers = (_pick(rng, lex.sentiment_fillers), _pick(rng, lex.sentiment_fillers))
    return _sentence("a", _pick(rng, lex.intensifiers), adj, noun, "with", *fillers)
  return _sentence("the", noun, "and its", _pick(rng, lex.sentiment_fillers), "seemed", adj)


def _sentiment_task(review: Callable[[Lexicon, np.random.Generator, int], str]) -> _Generator:
  def generate(lex: Lexicon, rng: np.random.Generator, n: int) -> list[Example]:
    return [dict(inputs=review(lex, rng, y), targets=SENTIMENT_LABELS[y])
            for y in _balanced(rng, n, 2)]
  return generate


def sentiment_label(lex: Lexicon, inputs: str) -> str:
  """The sentiment rule: the (single) polarity of the polar adjectives in `inputs`."""
  polarities = {lex.polarity(w) for w in inputs.split()} - {None}
  if len(polarities) != 1:
    raise ValueError(f"expected one polarity in {inputs!r}, got {sorted(polarities)}")
  return polarities.pop()


def _sentiment_3way_task(lex: Lexicon, rng: np.random.Generator, n: int) -> list[Example]:
  """sentiment_a's reviews plus neutral ones: labels negative / neutral / positive."""
  examples = []
  for y in _balanced(rng, n, 3):
    label = SENTIMENT3_LABELS[y]
    polarity = None if label == "neutral" else SENTIMENT_LABELS.index(label)
    examples.append(dict(inputs=_product_review(lex, rng, polarity), targets=label))
  return examples


def sentiment_3way_label(lex: Lexicon, inputs: str) -> str:
  """The 3-way sentiment rule: the polarity of the polar adjectives, `neutral` without any."""
  polarities = {lex.polarity(w) for w in inputs.split()} - {None}
  return sentiment_label(lex, inputs) if polarities else "neutral"


def _irony_task(review: Callable[[Lexicon, np.random.Generator, int], str]) -> _Generator:
  """The reviews of the sentiment task with generator `review`, labelled with the opposite
  polarity (the lookalike family: same inputs, contradicting rule)."""
  def generate(lex: Lexicon, rng: np.random.Generator, n: int) -> list[Example]:
    return [dict(inputs=review(lex, rng, y), targets=SENTIMENT_LABELS[1 - y])
            for y in _balanced(rng, n, 2)]
  return generate


def irony_label(lex: Lexicon, inputs: str) -> str:
  """The irony rule: the opposite of the sentiment rule's label."""
  return SENTIMENT_LABELS[1 - SENTIMENT_LABELS.index(sentiment_label(lex, inputs))]


# ----------------------------------------------------------------------------------------- nli

_Fact = tuple[str, int, str]  # (entity, relation index, object)


def _fact_text(lex: Lexicon, fact: _Fact, rng: np.random.Generator | None,
               negated: bool = False) -> str:
  entity, relation, obj = fact
  verb = lex.relations[relation][0 if rng is None else int(rng.integers(2))]
  return " ".join([entity] + (["does", "not"] if negated else []) + [verb, obj])


def _hypothesis(lex: Lexicon, rng: np.random.Generator, premise: list[_Fact], label: str,
                allow_negation: bool) -> tuple[_Fact, bool]:
  """A hypothesis fact and negation flag with the requested label under the functional rule."""
  negated = allow_negation and bool(rng.integers(2))
  if label != "neutral":
    entity, relation, obj = premise[int(rng.integers(len(premise)))]
    keep_object = (label == "entailment") != negated
    return (entity, relation, obj if keep_object else _pick_other(rng, lex.objects, obj)), negated
  known = {(e, r) for e, r, _ in premise}
  while True:
    entity = premise[0][0] if rng.integers(2) else _pick(rng, lex.entities)
    relation = int(rng.integers(len(lex.relations)))
    if (entity, relation) not in known:
      return (entity, relation, _pick(rng, lex.objects)), negated


def _random_fact(lex: Lexicon, rng: np.random.Generator) -> _Fact:
  return (_pick(rng, lex.entities), int(rng.integers(len(lex.relations))),
          _pick(rng, lex.objects))


def _nli_task(hard: bool) -> _Generator:
  def generate(lex: Lexicon, rng: np.random.Generator, n: int) -> list[Example]:
    examples = []
    for y in _balanced(rng, n, 3):
      premise = [_random_fact(lex, rng)]
      if hard:
        while True:
          second = _random_fact(lex, rng)
          if second[:2] != premise[0][:2]:
            premise.append(second)
            break
      hyp, negated = _hypothesis(lex, rng, premise, NLI_LABELS[y], allow_negation=hard)
      verb_rng = rng if hard else None
      premise_text = " and ".join(_fact_text(lex, f, verb_rng) for f in premise)
      hyp_text = _fact_text(lex, hyp, verb_rng, negated)
      examples.append(dict(inputs=f"premise: {premise_text} . hypothesis: {hyp_text} .",
                           targets=NLI_LABELS[y]))
    return examples
  return generate


def _parse_fact(lex: Lexicon, words: list[str]) -> tuple[_Fact, bool]:
  negated = words[1:3] == ["does", "not"]
  if negated:
    words = [words[0]] + words[3:]
  entity, verb, obj = words
  relation = lex.relation_of(verb)
  if relation is None:
    raise ValueError(f"unknown verb {verb!r}")
  return (entity, relation, obj), negated


def nli_label(lex: Lexicon, inputs: str) -> str:
  """The nli rule (functional relations), computed from a `premise: ... hypothesis: ...` input."""
  premise_text, hyp_text = inputs.removeprefix("premise: ").split(" . hypothesis: ")
  premise = {}
  for fact_text in premise_text.split(" and "):
    (entity, relation, obj), _ = _parse_fact(lex, fact_text.split())
    premise[(entity, relation)] = obj
  (entity, relation, obj), negated = _parse_fact(lex, hyp_text.removesuffix(" .").split())
  if (entity, relation) not in premise:
    return "neutral"
  return "entailment" if (premise[(entity, relation)] == obj) != negated else "contradiction"


# ---------------------------------------------------------------------------------- paraphrase


def _swap(rng: np.random.Generator, pair: tuple[str, str]) -> str:
  return pair[int(rng.integers(2))]


def _paraphrase_task(with_pair_subject: bool) -> _Generator:
  """Pairs of `[the] adj noun verb the obj` (a) or `n1 and n2 verb the adj obj` (b) sentences."""
  def render(slots: list[tuple[str, str]], rng: np.random.Generator, reorder: bool) -> str:
    words = [_swap(rng, pair) for pair in slots]
    if with_pair_subject:
      first, second, verb, adj, obj = words
      if reorder:
        first, second = second, first
      return _sentence(first, "and", second, verb, "the", adj, obj)
    adj, noun, verb, obj = words
    return _sentence("the", adj, noun, verb, "the", obj)

  def generate(lex: Lexicon, rng: np.random.Generator, n: int) -> list[Example]:
    examples = []
    for y in _balanced(rng, n, 2):
      nouns = [lex.para_nouns[int(i)] for i in rng.choice(len(lex.para_nouns), 3, replace=False)]
      adj, verb = _pick(rng, lex.para_adjs), _pick(rng, lex.para_verbs)
      if with_pair_subject:
        slots = [nouns[0], nouns[1], verb, adj, nouns[2]]
        classes = [lex.para_nouns, lex.para_nouns, lex.para_verbs, lex.para_adjs, lex.para_nouns]
      else:
        slots = [adj, nouns[0], verb, nouns[1]]
        classes = [lex.para_adjs, lex.para_nouns, lex.para_verbs, lex.para_nouns]
      first = render(slots, rng, reorder=False)
      if PARAPHRASE_LABELS[y] == "different":
        slot = int(rng.integers(len(slots)))
        changed = list(slots)
        while changed[slot] in slots:
          changed[slot] = _pick(rng, classes[slot])
        second = render(changed, rng, reorder=bool(rng.integers(2)))
      else:
        second = first
        while second == first:
          second = render(slots, rng, reorder=bool(rng.integers(2)))
      examples.append(dict(inputs=f"sentence1: {first} sentence2: {second}",
                           targets=PARAPHRASE_LABELS[y]))
    return examples
  return generate


def sentence_meaning(lex: Lexicon, sentence: str) -> tuple:
  """Synonyms mapped to one meaning; the two words around `and` form an unordered pair."""
  words = [lex.meaning_of(w) for w in sentence.split() if w not in ("the", ".")]
  if "and" in words:
    i = words.index("and")
    return (tuple(sorted((words[i - 1], words[i + 1]))),) + tuple(words[i + 2:])
  return tuple(words)


def paraphrase_label(lex: Lexicon, inputs: str) -> str:
  """The paraphrase rule: `same` iff both sentences have the same meaning."""
  first, second = inputs.removeprefix("sentence1: ").split(" sentence2: ")
  return "same" if sentence_meaning(lex, first) == sentence_meaning(lex, second) else "different"


# --------------------------------------------------------------------------------------- topic


def _topic_sentence(lex: Lexicon, rng: np.random.Generator, topic: str,
                    with_distractor: bool) -> str:
  nouns = lex.topic_nouns[topic]
  first, filler = _pick(rng, nouns), _pick(rng, lex.topic_fillers)
  second = _pick_other(rng, nouns, first)
  if with_distractor and rng.integers(2):
    other = TOPIC_LABELS[(TOPIC_LABELS.index(topic) + 1 + int(rng.integers(3))) % 4]
    words = [first, second, _pick(rng, lex.topic_nouns[other])]
    order = rng.permutation(3)
    return _sentence(words[order[0]], ",", words[order[1]], "and", words[order[2]], filler)
  template = int(rng.integers(3))
  if template == 0:
    return _sentence("the", first, filler, "near the", second)
  if template == 1:
    return _sentence(filler, first, "with", second)
  return _sentence(first, "or", second, ",", filler)


def _topic_task(labels: tuple[str, ...], with_distractor: bool) -> _Generator:
  def generate(lex: Lexicon, rng: np.random.Generator, n: int) -> list[Example]:
    return [dict(inputs=_topic_sentence(lex, rng, labels[y], with_distractor),
                 targets=labels[y]) for y in _balanced(rng, n, len(labels))]
  return generate


def topic_label(lex: Lexicon, inputs: str) -> str:
  """The topic rule: the topic most of the topic nouns in `inputs` belong to."""
  topics = [t for t in (lex.topic_of(w) for w in inputs.split()) if t is not None]
  best = max(set(topics), key=topics.count)
  if topics.count(best) * 2 <= len(topics):
    raise ValueError(f"no majority topic in {inputs!r}")
  return best


# --------------------------------------------------------------------- transform, count, noise

TRANSFORMS: Mapping[str, Callable[[str], str]] = MappingProxyType({
    "copy": lambda text: text,
    "reverse": lambda text: " ".join(reversed(text.split())),
    "uppercase": str.upper,
})


def _words(rng: np.random.Generator, pool: Sequence[str], low: int, high: int) -> str:
  count = int(rng.integers(low, high + 1))
  return " ".join(_pick(rng, pool) for _ in range(count))


def _transform_task(name: str) -> _Generator:
  def generate(lex: Lexicon, rng: np.random.Generator, n: int) -> list[Example]:
    texts = [_words(rng, lex.misc_words, 2, 3) for _ in range(n)]
    return [dict(inputs=text, targets=TRANSFORMS[name](text)) for text in texts]
  return generate


def _count_task(lex: Lexicon, rng: np.random.Generator, n: int) -> list[Example]:
  return [dict(inputs=_words(rng, lex.count_words, y + 1, y + 1), targets=COUNT_LABELS[y])
          for y in _balanced(rng, n, len(COUNT_LABELS))]


def _noise_task(lex: Lexicon, rng: np.random.Generator, n: int) -> list[Example]:
  return [dict(inputs=_words(rng, lex.noise_words, 3, 6), targets=NOISE_LABELS[y])
          for y in _balanced(rng, n, len(NOISE_LABELS))]


# ---------------------------------------------------------------------------------- task table


def _info(name: str, family: str, train: int, validation: int,
          labels: tuple[str, ...] | None) -> TaskInfo:
  metrics = CLASSIFICATION_METRICS if labels else TRANSFORM_METRICS
  return TaskInfo(name, family, MappingProxyType({"train": train, "validation": validation}),
                  labels, metrics)


TASKS: tuple[TaskInfo, ...] = (
    _info("sentiment_a", "sentiment", 20000, 1000, SENTIMENT_LABELS),
    _info("sentiment_b", "sentiment", 500, 200, SENTIMENT_LABELS),
    _info("sentiment_3way", "sentiment", 6000, 600, SENTIMENT3_LABELS),
    _info("irony_a", "irony", 8000, 800, SENTIMENT_LABELS),
    _info("irony_b", "irony", 500, 200, SENTIMENT_LABELS),
    _info("nli_facts", "nli", 15000, 900, NLI_LABELS),
    _info("nli_facts_hard", "nli", 600, 300, NLI_LABELS),
    _info("paraphrase_a", "paraphrase", 10000, 1000, PARAPHRASE_LABELS),
    _info("paraphrase_b", "paraphrase", 400, 200, PARAPHRASE_LABELS),
    _info("topic_4way", "topic", 8000, 800, TOPIC_LABELS),
    _info("topic_2way", "topic", 300, 200, TOPIC_LABELS[:2]),
    _info("copy", "transform", 5000, 500, None),
    _info("reverse", "transform", 2000, 300, None),
    _info("uppercase", "transform", 1000, 300, None),
    _info("count", "counting", 3000, 500, COUNT_LABELS),
    _info("noise", "noise", 2000, 400, NOISE_LABELS),
)

_GENERATORS: Mapping[str, _Generator] = MappingProxyType({
    "sentiment_a": _sentiment_task(_product_review),
    "sentiment_b": _sentiment_task(_film_review),
    "sentiment_3way": _sentiment_3way_task,
    "irony_a": _irony_task(_product_review),
    "irony_b": _irony_task(_film_review),
    "nli_facts": _nli_task(hard=False),
    "nli_facts_hard": _nli_task(hard=True),
    "paraphrase_a": _paraphrase_task(with_pair_subject=False),
    "paraphrase_b": _paraphrase_task(with_pair_subject=True),
    "topic_4way": _topic_task(TOPIC_LABELS, with_distractor=True),
    "topic_2way": _topic_task(TOPIC_LABELS[:2], with_distractor=False),
    "copy": _transform_task("copy"),
    "reverse": _transform_task("reverse"),
    "uppercase": _transform_task("uppercase"),
    "count": _count_task,
    "noise": _noise_task,
})


# The world's transfer structure (module docstring). RULE_COVERS: (harder, easier) siblings
# whose harder rule labels every input of the easier task as the easier task does, while the
# easier rule cannot label all of the harder task's inputs. LOOKALIKES: tasks whose inputs are
# drawn exactly as their partner's (the same generator calls) and whose label is never the
# partner's. tests/test_tasks_synthetic.py checks both on generated examples.
RULE_COVERS: tuple[tuple[str, str], ...] = (
    ("sentiment_3way", "sentiment_a"), ("nli_facts_hard", "nli_facts"),
    ("topic_4way", "topic_2way"))
LOOKALIKES: tuple[tuple[str, str], ...] = (("irony_a", "sentiment_a"), ("irony_b", "sentiment_b"))
# The tasks whose `name:` cue is a word of the word vocabulary: the world's tasks before the
# sentiment_3way and irony tasks were added (those are never pretrained behind a cue), so the
# vocabulary, and with it every word id and a cached pretrained model, stays as it was.
CUED_TASKS: tuple[str, ...] = (
    "sentiment_a", "sentiment_b", "nli_facts", "nli_facts_hard", "paraphrase_a", "paraphrase_b",
    "topic_4way", "topic_2way", "copy", "reverse", "uppercase", "count", "noise")


def draw_examples(lex: Lexicon, name: str, rng: np.random.Generator, n: int) -> list[Example]:
  """`n` examples of task `name` drawn with `rng` (a task's splits use `derived_rng`)."""
  return _GENERATORS[name](lex, rng, n)


def _bind(seed: int, lex: Lexicon, info: TaskInfo) -> SyntheticTaskSpec:
  def generate(split: str) -> list[Example]:
    if split not in info.sizes:
      raise ValueError(f"unknown split {split!r} for {info.name}; expected {tuple(info.sizes)}")
    rng = derived_rng(seed, info.name, split)
    return draw_examples(lex, info.name, rng, info.sizes[split])
  return SyntheticTaskSpec(**{f.name: getattr(info, f.name) for f in dataclasses.fields(info)},
                           generate=generate)


def generate_world(seed: int = 0) -> SyntheticWorld:
  """Builds the lexicon and task specs of world `seed`; examples are generated on demand."""
  lex = build_lexicon(seed)
  tasks = {info.name: _bind(seed, lex, info) for info in TASKS}
  return SyntheticWorld(seed=seed, lexicon=lex, tasks=MappingProxyType(tasks))


def vocabulary_words(lexicon: Lexicon) -> tuple[str, ...]:
  """Every whitespace-separated word the world's texts can contain, sorted: the lexicon, the
  uppercase task's outputs, template glue words, labels, punctuation and the `name:` cues of
  CUED_TASKS. `tasks.vocabulary.get_synthetic_word_vocabulary` makes one
  SentencePiece piece of each."""
  words = set(lexicon.words()) | {w.upper() for w in lexicon.misc_words} | _excluded_words()
  words |= {".", ",", ":"} | {f"{name}:" for name in CUED_TASKS}
  return tuple(sorted(words))


def task_info(name: str) -> TaskInfo:
  """The static description of task `name` (unprefixed)."""
  for info in TASKS:
    if info.name == name:
      return info
  raise KeyError(f"unknown synthetic task {name!r}; known: {[t.name for t in TASKS]}")


def task_families() -> dict[str, list[str]]:
  """{family: [task names]}: tasks in one family share a latent rule, families share none."""
  families: dict[str, list[str]] = {}
  for info in TASKS:
    families.setdefault(info.family, []).append(info.name)
  return families


# -------------------------------------------------------------------------------------- corpus


def _gloss(lex: Lexicon, rng: np.random.Generator) -> str:
  """A sentence stating a latent fact of the world (polarity, topic, synonymy)."""
  kind = int(rng.integers(5))
  if kind == 0:
    label = int(rng.integers(2))
    return _sentence(_polar_adj(lex, rng, label), "means", SENTIMENT_LABELS[label])
  if kind == 1:
    topic = _pick(rng, TOPIC_LABELS)
    return _sentence(_pick(rng, lex.topic_nouns[topic]), "is about", topic)
  if kind == 2:
    pair = _pick(rng, lex.para_nouns + lex.para_adjs + lex.para_verbs)
    return _sentence(pair[0], "and", pair[1], "are same")
  if kind == 3:
    first, second = _pick(rng, lex.relations)
    if rng.integers(2):
      first, second = second, first
    return _sentence(first, "means", second)
  pool = _pick(rng, (lex.misc_words, lex.count_words, lex.noise_words))
  return _sentence(_words(rng, pool, 2, 5))


def _corpus_sentence(lex: Lexicon, rng: np.random.Generator) -> str:
  kind = int(rng.integers(7))
  if kind == 0:
    return _product_review(lex, rng, int(rng.integers(2)))
  if kind == 1:
    return _film_review(lex, rng, int(rng.integers(2)))
  if kind == 2:
    return _sentence(_fact_text(lex, _random_fact(lex, rng), rng, bool(rng.integers(2))))
  if kind == 3:
    adj, verb = _pick(rng, lex.para_adjs), _pick(rng, lex.para_verbs)
    nouns = [_swap(rng, _pick(rng, lex.para_nouns)) for _ in range(2)]
    return _sentence("the", _swap(rng, adj), nouns[0], _swap(rng, verb), "the", nouns[1])
  if kind == 4:
    return _topic_sentence(lex, rng, _pick(rng, TOPIC_LABELS), with_distractor=False)
  return _gloss(lex, rng)


def corpus_documents(world: SyntheticWorld, n: int, split: str = "train") -> list[str]:
  """`n` documents of 1-4 lexicon sentences, each at most `CORPUS_MAX_DOC_BYTES` bytes."""
  rng = derived_rng(world.seed, "corpus", split)
  docs = []
  for _ in range(n):
    target = int(rng.integers(1, 5))
    sentences = [_corpus_sentence(world.lexicon, rng)]
    while len(sentences) < target:
      sentence = _corpus_sentence(world.lexicon, rng)
      if len(" ".join(sentences + [sentence])) > CORPUS_MAX_DOC_BYTES:
        break
      sentences.append(sentence)
    docs.append(" ".join(sentences))
  return docs


def prefix_lm_split(document: str, rng: np.random.Generator) -> Example:
  """Splits a document at a random word boundary into `inputs` (prefix) and `targets`.

  The boundary keeps the prefix within `CORPUS_MAX_INPUT_BYTES` and the continuation within
  `CORPUS_MAX_TARGET_BYTES` bytes whenever the document allows it.
  """
  words = document.split(" ")
  if len(words) < 2:
    raise ValueError(f"cannot split a one-word document: {document!r}")
  valid = [i for i in range(1, len(words))
           if len(" ".join(words[:i])) <= CORPUS_MAX_INPUT_BYTES
           and len(" ".join(words[i:])) <= CORPUS_MAX_TARGET_BYTES]
  cut = _pick(rng, valid or list(range(1, len(words))))
  return dict(inputs=" ".join(words[:cut]), targets=" ".join(words[cut:]))


def corpus_examples(world: SyntheticWorld, split: str) -> list[Example]:
  """Prefix-LM examples over `CORPUS_SIZES[split]` corpus documents."""
  rng = derived_rng(world.seed, "corpus_prefix_lm", split)
  return [prefix_lm_split(doc, rng) for doc in corpus_documents(world, CORPUS_SIZES[split], split)]
