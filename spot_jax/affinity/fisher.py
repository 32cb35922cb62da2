"""A prompt-Fisher TaskEmb variant: a task's embedding is the diagonal empirical Fisher
information of its loss with respect to its prompt, F = mean_i (d loss_i / d P)^2 [L, E], over
one batch of its training examples (one gradient pass: per-example gradients by jax.vmap), at
the task's key P; a source scores cos(F_target, F_source) over the flattened [L * E].

TaskEmb (Vu et al. 2020) takes the Fisher of a fine-tuned BERT's weights; *(choice)* here the
prompt is the only trained parameter, so the Fisher is taken with respect to it, and the loss
is the summed token cross-entropy (`spot_jax.models.losses.summed_loss`, no z-loss) with the
frozen T5 in eval mode. `fisher:CHECKPOINT` names it (`spot_jax.library.scorers`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from spot_jax.library.similarity import LibraryError

NUM_EXAMPLES = 16
FEATURE_LENGTHS = {"inputs": 128, "targets": 16}


@dataclasses.dataclass
class FisherScorer:
  """cos(Fisher(target's key on its data), Fisher(each entry's key on its task's data))."""

  checkpoint: str
  num_examples: int = NUM_EXAMPLES
  batches: dict = dataclasses.field(default_factory=dict)

  @property
  def name(self) -> str:
    return f"fisher:{self.checkpoint}"

  @functools.cached_property
  def _model(self) -> tuple[Any, Any]:
    import jax
    import jax.numpy as jnp

    from spot_jax.checkpoints.load import load_model
    from spot_jax.models.losses import summed_loss
    from spot_jax.models.t5 import T5
    from spot_jax.models.prompts import with_prompt
    loaded = load_model(self.checkpoint)
    config = loaded.config.replace(dropout_rate=0.0)

    @functools.partial(jax.jit, static_argnums=3)
    def fisher(params, prompt, batch, length):
      model = T5(config, length)

      def loss(p, example):
        one = {k: v[None] for k, v in example.items()}
        logits = model.apply({"params": with_prompt(params, p)}, one["encoder_input_tokens"],
                             one["decoder_input_tokens"], one["decoder_target_tokens"])
        return summed_loss(logits, one["decoder_target_tokens"], 0.0)[0]
      grads = jax.vmap(jax.grad(loss), in_axes=(None, 0))(prompt, batch)  # [b, L, E]
      return jnp.mean(jnp.square(grads), axis=0)
    return loaded.params, fisher

  def _batch(self, task: str) -> dict[str, np.ndarray]:
    """The task's first `num_examples` training examples (seed-0 stream), cached."""
    if task not in self.batches:
      from tasks.lookup import register_all_tasks
      from spot_jax.data.batches import train_batches
      register_all_tasks()
      self.batches[task] = next(train_batches(task, FEATURE_LENGTHS, self.num_examples, seed=0))
    return self.batches[task]

  def embed(self, task: str, key: np.ndarray) -> np.ndarray:
    """Diagonal Fisher [L * E] of `task`'s loss at the prompt `key` [L, E]."""
    params, fisher = self._model
    key = np.asarray(key, np.float32)
    return np.asarray(fisher(params, key, self._batch(task), key.shape[0]),
                      np.float64).reshape(-1)

  def score(self, target_key, pool_keys, *, target=None, pool_tasks=None) -> np.ndarray:
    if target is None or pool_tasks is None or len(pool_tasks) != len(pool_keys):
      raise LibraryError("The fisher scorer reads task data: it needs the target task's name "
                         "and the task of every pool entry (CLI: --target)")
    query = self.embed(target, target_key)
    out = np.zeros(len(pool_keys))
    for i, (task, key) in enumerate(zip(pool_tasks, pool_keys)):
      row = self.embed(task, key)
      norm = np.linalg.norm(row) * np.linalg.norm(query)
      out[i] = row @ query / norm if norm > 0 else 0.0
    return out


def load_scorer(checkpoint: str) -> FisherScorer:
  """The `fisher:CHECKPOINT` scorer."""
  return FisherScorer(checkpoint)
