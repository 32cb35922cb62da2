"""Seqio registration of the synthetic task world (see `tasks.synthetic_world`).

Importing this module registers, with the default seed and prefix `synthetic_`, one seqio task
per synthetic task (`synthetic_sentiment_a`, ...) plus `synthetic_corpus`, a prefix-LM task
over the generated corpus used to pretrain the embedded tiny model. Registration is cheap:
examples are generated lazily, on the first `get_dataset`, and cached per (seed, name, split).
The same world is registered twice: tokenised by bytes under `synthetic_` (the tests' worlds:
no vocabulary file at all) and by words under `synthetic_words_` (`get_synthetic_word_vocabulary`,
one SentencePiece piece per word: sequences 5x shorter, and a word is one token, as in a real
subword vocabulary; the demo's world). EOS is on both features; classification tasks report
accuracy and macro F1, transform tasks exact match (all in percent).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import seqio
import sklearn.metrics
import tensorflow as tf

from tasks.synthetic_world import (CORPUS_SIZES, DEFAULT_PREFIX, SPLITS, TASKS, SyntheticTaskSpec,
                                   SyntheticWorld, TaskInfo, corpus_documents, corpus_examples,
                                   generate_world, task_families, task_info)
from tasks.vocabulary import get_byte_vocabulary, get_synthetic_word_vocabulary

DEFAULT_SEED = 0
CORPUS_TASK = "corpus"
WORDS_PREFIX = "synthetic_words_"
VOCABULARIES = ("bytes", "words")
_REGISTERED_PREFIXES: set[str] = set()

__all__ = [
    "CORPUS_TASK", "DEFAULT_PREFIX", "DEFAULT_SEED", "METRIC_FNS", "SyntheticTaskSpec",
    "SyntheticWorld", "accuracy", "corpus_documents", "exact_match", "generate_world",
    "macro_f1", "register_synthetic_tasks", "strip_text", "synthetic_examples",
    "synthetic_task_info", "synthetic_task_names", "task_families", "task_labels",
    "PRETRAINING_TASKS", "register_pretraining_mixture", "VOCABULARIES", "WORDS_PREFIX",
    "unprefixed_name",
]


# ------------------------------------------------------------------------------------- metrics


def accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """Percentage of predictions equal to their target."""
  if not targets:
    return {"accuracy": 0.0}
  return {"accuracy": 100.0 * sklearn.metrics.accuracy_score(list(targets), list(predictions))}


def macro_f1(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """Macro F1 (percent) over the labels present in `targets`."""
  if not targets:
    return {"macro_f1": 0.0}
  labels = sorted(set(targets))
  score = sklearn.metrics.f1_score(list(targets), list(predictions), labels=labels,
                                   average="macro", zero_division=0)
  return {"macro_f1": 100.0 * float(score)}


def exact_match(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """Percentage of predictions identical to their target string."""
  if not targets:
    return {"exact_match": 0.0}
  hits = np.mean([t == p for t, p in zip(targets, predictions, strict=True)])
  return {"exact_match": 100.0 * float(hits)}


METRIC_FNS: Mapping[str, seqio.MetricFnCallable] = MappingProxyType({
    "accuracy": accuracy, "macro_f1": macro_f1, "exact_match": exact_match})


def strip_text(output: str | bytes, example: Mapping | None = None,
               is_target: bool = False) -> str:
  """Postprocessor: decoded text (or a byte string) to the stripped label/answer string."""
  del example, is_target
  if isinstance(output, bytes):
    output = output.decode("utf-8", errors="replace")
  return output.strip()


# ------------------------------------------------------------------------------------ examples


@functools.lru_cache(maxsize=None)
def synthetic_examples(seed: int, name: str, split: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(inputs, targets) of one task split (`name` unprefixed, or `corpus`), cached."""
  world = generate_world(seed)
  if name == CORPUS_TASK:
    examples = corpus_examples(world, split)
  else:
    examples = world.task(name).generate(split)
  return (tuple(e["inputs"] for e in examples), tuple(e["targets"] for e in examples))


class _SyntheticDatasetFn:
  """Seqio dataset fn over the cached python examples; remembers its seed and task."""

  def __init__(self, seed: int, name: str):
    self.seed = seed
    self.name = name
    self.__name__ = f"synthetic_dataset_fn[{name}, seed={seed}]"

  def __call__(self, split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed  # One in-memory shard; the task pipeline shuffles examples.
    inputs, targets = synthetic_examples(self.seed, self.name, split)
    return tf.data.Dataset.from_tensor_slices({
        "inputs": tf.constant(inputs, dtype=tf.string),
        "targets": tf.constant(targets, dtype=tf.string)})


# -------------------------------------------------------------------------------- registration


def _check_vocabulary(vocabulary: str) -> None:
  if vocabulary not in VOCABULARIES:
    raise ValueError(f"unknown synthetic vocabulary {vocabulary!r}; expected one of {VOCABULARIES}")


def _output_features(vocabulary: str, seed: int) -> dict[str, seqio.Feature]:
  _check_vocabulary(vocabulary)
  vocab = get_byte_vocabulary() if vocabulary == "bytes" else get_synthetic_word_vocabulary(seed)
  return {"inputs": seqio.Feature(vocab, add_eos=True, required=True),
          "targets": seqio.Feature(vocab, add_eos=True)}


def _check_registered_seed(full_name: str, seed: int) -> None:
  source = seqio.TaskRegistry.get(full_name).source
  fn = getattr(source, "_dataset_fn", None)
  if isinstance(fn, _SyntheticDatasetFn) and fn.seed != seed:
    raise ValueError(f"{full_name} is already registered with seed {fn.seed}, not {seed}; "
                     "use another prefix for another seed.")


def _register(full_name: str, seed: int, name: str, sizes: Mapping[str, int],
              metric_names: Sequence[str], vocabulary: str) -> None:
  source = seqio.FunctionDataSource(_SyntheticDatasetFn(seed, name), splits=SPLITS,
                                    num_input_examples=dict(sizes))
  seqio.TaskRegistry.add(
      full_name, source=source, output_features=_output_features(vocabulary, seed),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
      postprocess_fn=strip_text, metric_fns=[METRIC_FNS[m] for m in metric_names])


def register_synthetic_tasks(seed: int = DEFAULT_SEED, prefix: str = DEFAULT_PREFIX,
                             vocabulary: str = "bytes") -> list[str]:
  """Registers every synthetic task and the corpus task, tokenised by `vocabulary` ('bytes' or
  'words'); returns their names (corpus last).

  Idempotent: names already registered are skipped (a ValueError if they belong to another
  seed). Use a different prefix per seed and per vocabulary.
  """
  _check_vocabulary(vocabulary)  # before anything registers.
  _REGISTERED_PREFIXES.add(prefix)
  entries = [(info.name, info.sizes, info.metric_names) for info in TASKS]
  entries.append((CORPUS_TASK, CORPUS_SIZES, ()))
  names = []
  for name, sizes, metric_names in entries:
    full_name = prefix + name
    if full_name in seqio.TaskRegistry.names():
      _check_registered_seed(full_name, seed)
    else:
      _register(full_name, seed, name, sizes, metric_names, vocabulary)
    names.append(full_name)
  return names


# Tasks the embedded default's frozen model is pretrained on, T5-style with a "<name>: " prefix
# (plus the corpus). Prompt tuning later sees inputs without the prefix, so a prompt has to
# select the task, as on a real frozen T5. The held-out variants (sentiment_b, nli_facts_hard,
# paraphrase_b, topic_2way) and noise are never seen in pretraining.
PRETRAINING_TASKS = ("sentiment_a", "nli_facts", "paraphrase_a", "topic_4way", "copy", "reverse",
                     "uppercase", "count")


def _prepend_task_name(name: str):
  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(lambda ex: dict(ex, inputs=tf.strings.join([f"{name}: ", ex["inputs"]])),
                       num_parallel_calls=tf.data.AUTOTUNE)
  return preprocess


def register_pretraining_mixture(seed: int = DEFAULT_SEED, prefix: str = DEFAULT_PREFIX,
                                 tasks: Sequence[str] = PRETRAINING_TASKS,
                                 vocabulary: str = "bytes") -> str:
  """Registers `{prefix}pretraining`: the corpus plus `tasks` with their names as an input
  prefix (`{prefix}pretrain_{name}`), mixed in proportion to their sizes. Returns its name."""
  register_synthetic_tasks(seed, prefix, vocabulary)
  mixture = f"{prefix}pretraining"
  if mixture in seqio.MixtureRegistry.names():
    return mixture
  members = [(prefix + CORPUS_TASK, CORPUS_SIZES["train"])]
  for name in tasks:
    info = task_info(name)
    full_name = f"{prefix}pretrain_{name}"
    if full_name not in seqio.TaskRegistry.names():
      source = seqio.FunctionDataSource(_SyntheticDatasetFn(seed, name), splits=SPLITS,
                                        num_input_examples=dict(info.sizes))
      seqio.TaskRegistry.add(
          full_name, source=source, output_features=_output_features(vocabulary, seed),
          preprocessors=[_prepend_task_name(name), seqio.preprocessors.tokenize,
                         seqio.preprocessors.append_eos_after_trim],
          postprocess_fn=strip_text, metric_fns=[METRIC_FNS[m] for m in info.metric_names])
    members.append((full_name, info.sizes["train"]))
  seqio.MixtureRegistry.add(mixture, members)
  return mixture


def synthetic_task_names(seed: int = DEFAULT_SEED, prefix: str = DEFAULT_PREFIX) -> list[str]:
  """Names of the supervised synthetic tasks (no corpus); the same list for every seed."""
  del seed  # The task list does not depend on the seed, only the examples do.
  return [prefix + info.name for info in TASKS]


def unprefixed_name(name: str) -> str:
  """A synthetic task's world name (`synthetic_words_topic_2way` -> `topic_2way`)."""
  return _unprefixed(name, DEFAULT_PREFIX)


def _unprefixed(name: str, prefix: str) -> str:
  """`name` without `prefix` or, failing that, the longest registered prefix it starts with."""
  for candidate in sorted({prefix, *_REGISTERED_PREFIXES}, key=len, reverse=True):
    if candidate and name.startswith(candidate):
      return name[len(candidate):]
  return name


def task_labels(name: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, ...] | None:
  """Label strings of a classification task (prefixed or not); None for transform tasks."""
  return task_info(_unprefixed(name, prefix)).labels


def synthetic_task_info(name: str, prefix: str = DEFAULT_PREFIX) -> TaskInfo:
  """Family, sizes, labels and metric names of a synthetic task (prefixed or not)."""
  return task_info(_unprefixed(name, prefix))


register_synthetic_tasks()
register_pretraining_mixture()
register_synthetic_tasks(prefix=WORDS_PREFIX, vocabulary="words")
register_pretraining_mixture(prefix=WORDS_PREFIX, vocabulary="words")
