"""Token losses as in T5X: cross-entropy plus z-loss, summed over non-padding targets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
DEFAULT_Z_LOSS = 1e-4


def token_losses(logits: Array, targets: Array, z_loss: float = DEFAULT_Z_LOSS
                 ) -> tuple[Array, Array]:
  """logits [b, t, v], targets [b, t] -> (cross-entropy + z-loss, z-loss), each [b, t].

  z-loss is z_loss * log(Z)^2 with Z the softmax normaliser (T5X `cross_entropy_with_logits`).
  """
  logits = logits.astype(jnp.float32)
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  z_term = z_loss * jnp.square(log_z)
  return cross_entropy + z_term, z_term


def summed_loss(logits: Array, targets: Array, z_loss: float = DEFAULT_Z_LOSS
                ) -> tuple[Array, dict[str, Array]]:
  """Loss summed over target tokens with targets > 0, and metrics (z_loss, num_tokens, accuracy)."""
  weights = (targets > 0).astype(jnp.float32)
  per_token, z_term = token_losses(logits, targets, z_loss)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32) * weights
  num_tokens = weights.sum()
  metrics = {
      "z_loss": (z_term * weights).sum(),
      "num_tokens": num_tokens,
      "token_accuracy": correct.sum() / jnp.maximum(num_tokens, 1.0),
  }
  return (per_token * weights).sum(), metrics


def sequence_log_likelihood(logits: Array, targets: Array) -> Array:
  """Sum of log p(target token) over targets > 0: [b, t, v], [b, t] -> [b]."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  token_ll = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return (token_ll * (targets > 0)).sum(axis=-1)
