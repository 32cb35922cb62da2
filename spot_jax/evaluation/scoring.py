"""Scoring a (prompted) T5 for evaluation: greedy decoding and rank classification.

Both encode once. Greedy decoding runs the decoder one token per step with cached keys/values
(T5X's decoding.py loop with flaxformer's attention cache) and stops when every row has emitted
EOS; rank classification scores every candidate label for every example in one batched
decoder pass.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from spot_jax.models.losses import sequence_log_likelihood
from spot_jax.models.t5 import T5

Array = jax.Array
EOS_ID = 1


def shift_right(targets: Array) -> Array:
  """Decoder inputs from targets [b, t]: start token 0, then targets[:, :-1]."""
  return jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]


def init_decode_cache(model: T5, params: Any, encoded: Array, encoder_mask: Array,
                      max_length: int) -> Any:
  """The decoder's `cache` collection for `max_length` steps: self-attention keys/values
  [b, max_length, h, d] (zeros), the cross-attention keys/values of `encoded`, positions 0."""
  dummy = jnp.zeros((encoded.shape[0], max_length), jnp.int32)
  _, variables = model.apply({"params": params}, encoded, encoder_mask, dummy, max_length,
                             method=T5.decode_step, mutable=["cache"])
  return variables["cache"]


@functools.partial(jax.jit, static_argnames=("model", "max_length", "eos_id"))
def greedy_decode(model: T5, params: Any, encoder_tokens: Array, max_length: int,
                  eos_id: int = EOS_ID) -> Array:
  """Greedy output tokens [b, max_length]; positions after the first EOS are 0.

  As T5X's `decoding.temperature_sample` with topk=1: one cached decoder step per token, the
  first input the start token 0, the loop ends once every row has produced EOS.
  """
  encoded, mask = model.apply({"params": params}, encoder_tokens, method=T5.encode)
  batch = encoder_tokens.shape[0]

  def not_finished(state):
    i, _, _, done, _ = state
    return (i < max_length) & ~jnp.all(done)

  def step(state):
    i, previous, cache, done, tokens = state
    logits, variables = model.apply({"params": params, "cache": cache}, encoded, mask,
                                    previous[:, None], max_length, method=T5.decode_step,
                                    mutable=["cache"])
    token = jnp.where(done, 0, jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32))
    tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, i))
    return i + 1, token, variables["cache"], done | (token == eos_id), tokens

  state = (jnp.zeros((), jnp.int32), jnp.zeros((batch,), jnp.int32),
           init_decode_cache(model, params, encoded, mask, max_length),
           jnp.zeros((batch,), bool), jnp.zeros((batch, max_length), jnp.int32))
  return jax.lax.while_loop(not_finished, step, state)[-1]


@functools.partial(jax.jit, static_argnames=("model", "max_length", "eos_id"))
def greedy_decode_uncached(model: T5, params: Any, encoder_tokens: Array, max_length: int,
                           eos_id: int = EOS_ID) -> Array:
  """Greedy decoding without a cache (the reference for tests and the decode benchmark):
  every step re-runs the decoder over the whole prefix [b, max_length]."""
  encoded, mask = model.apply({"params": params}, encoder_tokens, method=T5.encode)
  batch = encoder_tokens.shape[0]

  def step(i, tokens):
    logits = model.apply({"params": params}, encoded, mask, shift_right(tokens),
                         method=T5.decode)
    next_token = jnp.argmax(logits[:, i], axis=-1).astype(tokens.dtype)
    return tokens.at[:, i].set(next_token)

  tokens = jax.lax.fori_loop(0, max_length, step, jnp.zeros((batch, max_length), jnp.int32))
  return mask_after_eos(tokens, eos_id)


def mask_after_eos(tokens: Array, eos_id: int = EOS_ID) -> Array:
  """Zeroes every token after the first EOS in each row of [b, t]."""
  is_eos = tokens == eos_id
  return jnp.where(jnp.cumsum(is_eos, axis=1) - is_eos > 0, 0, tokens)


@functools.partial(jax.jit, static_argnames=("model",))
def rank_classification_scores(model: T5, params: Any, encoder_tokens: Array,
                               candidate_targets: Array) -> Array:
  """Log-likelihood of each candidate: encoder_tokens [b, s], candidates [c, t] -> [b, c].

  Candidates are tokenised labels ending in EOS, right-padded with 0.
  """
  encoded, mask = model.apply({"params": params}, encoder_tokens, method=T5.encode)
  batch, num_candidates = encoder_tokens.shape[0], candidate_targets.shape[0]
  encoded = jnp.repeat(encoded, num_candidates, axis=0)
  mask = jnp.repeat(mask, num_candidates, axis=0)
  targets = jnp.tile(candidate_targets, (batch, 1))
  logits = model.apply({"params": params}, encoded, mask, shift_right(targets), targets,
                       method=T5.decode)
  return sequence_log_likelihood(logits, targets).reshape(batch, num_candidates)


def rank_classify(model: T5, params: Any, encoder_tokens: Array, candidate_targets: Array
                  ) -> Array:
  """Index of the most likely candidate per example: [b]."""
  return jnp.argmax(rank_classification_scores(model, params, encoder_tokens,
                                               candidate_targets), axis=-1)
