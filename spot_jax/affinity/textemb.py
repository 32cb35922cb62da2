"""TextEmb (Vu et al. 2020, "Exploring and predicting transferability across NLP tasks"):
a task's embedding is the frozen encoder's output states mean-pooled over the non-padding
positions of its training inputs, then averaged over examples [E]; a source scores
cos(TextEmb(target), TextEmb(source)). It reads the tasks' data, not the prompt keys.

`textemb:CHECKPOINT` names it (`spot_jax.library.scorers`). *(choice)* the first
NUM_EXAMPLES training examples of the seed-0 shuffled seqio stream, inputs truncated to
INPUT_LENGTH tokens; Vu et al. pool BERT states over the whole training set.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from spot_jax.library.similarity import LibraryError

NUM_EXAMPLES = 64
INPUT_LENGTH = 128


def mean_pooled(encoded: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """encoded [b, s, E], mask [b, s] -> the mean over examples of each example's mean over its
  non-padding positions: [E]."""
  mask = np.asarray(mask, np.float64)[..., None]
  per_example = (np.asarray(encoded, np.float64) * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
  return per_example.mean(0)


@dataclasses.dataclass
class TextEmbScorer:
  """cos(TextEmb(target), TextEmb(task of each pool entry)), embeddings cached per task."""

  checkpoint: str
  num_examples: int = NUM_EXAMPLES
  input_length: int = INPUT_LENGTH
  cache: dict = dataclasses.field(default_factory=dict)

  @property
  def name(self) -> str:
    return f"textemb:{self.checkpoint}"

  @functools.cached_property
  def _model(self) -> tuple[Any, Any]:
    import jax

    from spot_jax.checkpoints.load import load_model
    from spot_jax.models.t5 import T5
    loaded = load_model(self.checkpoint)
    model = T5(loaded.config.replace(dropout_rate=0.0))
    encode = jax.jit(lambda params, tokens: model.apply({"params": params}, tokens,
                                                        method=T5.encode))
    return loaded.params, encode

  def embed(self, task: str) -> np.ndarray:
    """TextEmb of a registered task [E]."""
    if task not in self.cache:
      from tasks.lookup import register_all_tasks
      from spot_jax.data.batches import train_batches
      register_all_tasks()
      params, encode = self._model
      lengths = {"inputs": self.input_length, "targets": 8}
      batch = next(train_batches(task, lengths, self.num_examples, seed=0))
      tokens = batch["encoder_input_tokens"]
      encoded, mask = encode(params, tokens)
      self.cache[task] = mean_pooled(np.asarray(encoded), np.asarray(mask))
    return self.cache[task]

  def score(self, target_key, pool_keys, *, target=None, pool_tasks=None) -> np.ndarray:
    if target is None or pool_tasks is None or len(pool_tasks) != len(pool_keys):
      raise LibraryError("The textemb scorer embeds task data: it needs the target task's name "
                         "and the task of every pool entry (CLI: --target)")
    query = self.embed(target)
    rows = np.stack([self.embed(t) for t in pool_tasks]) if len(pool_tasks) else np.zeros(
        (0, query.size))
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(query)
    return rows @ query / np.where(norms > 0, norms, 1.0)


def load_scorer(checkpoint: str) -> TextEmbScorer:
  """The `textemb:CHECKPOINT` scorer (a T5X or Hugging Face checkpoint of the frozen model)."""
  return TextEmbScorer(checkpoint)
