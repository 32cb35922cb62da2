"""Scoring a (prompted) T5 for evaluation: beam search, greedy decoding, rank classification.

All encode once. Beam search is T5X's `EncoderDecoderModel` default (`t5x/models.py`:
`decode_fn=decoding.beam_search`, `num_decodes=1`, `alpha=0.6`; `predict_batch_with_aux` keeps
the best beam); greedy decoding is argmax per step until every row has emitted EOS. Both run
the decoder one token per step with cached keys/values (flaxformer's attention cache); rank
classification scores every candidate label for every example in one batched decoder pass.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from spot_jax.models.losses import sequence_log_likelihood
from spot_jax.models.t5 import T5

Array = jax.Array
EOS_ID = 1
NEG_INF = -1.0e7  # t5x/decoding.py NEG_INF: the score of an impossible or empty beam.
BEAM_ALPHA = 0.6  # t5x/decoding.py beam_search's default length-normalisation exponent.
NUM_BEAMS = 1  # T5X's DecoderParams.num_decodes default for EncoderDecoderModel.


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

  Argmax at every step (EVAL_MODE='greedy', not T5X's default for encoder-decoder models,
  which is `beam_decode`): one cached decoder step per token, the first input the start token
  0, the loop ends once every row has produced EOS.
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


def brevity_penalty(alpha: float, length: Array | int) -> Array:
  """T5X's length normalisation of a finished beam's log-probability: ((5 + length) / 6)^alpha
  (t5x/decoding.py `brevity_penalty`, from GNMT)."""
  return jnp.power((5.0 + length) / 6.0, alpha)


def _gather(x: Array, indices: Array) -> Array:
  """x [b, n, ...], indices [b, k] -> x[i, indices[i]] [b, k, ...]."""
  return jax.vmap(lambda row, index: row[index])(x, indices)


def beam_search(tokens_to_logits: Callable[[Array, Any], tuple[Array, Any]], cache: Any,
                batch: int, max_length: int, eos_id: int = EOS_ID, num_beams: int = NUM_BEAMS,
                alpha: float = BEAM_ALPHA) -> tuple[Array, Array]:
  """T5X's beam search: (sequences [b, beams, max_length], scores [b, beams]), the beams in
  increasing score order (the best last).

  The algorithm of t5x/decoding.py `beam_search` without a decoder prompt (T5X's
  `predict_batch_with_aux` passes all-zero prompts, so forcing is a no-op): each step extends
  the live beams by the 2*beams most likely tokens over all beams; candidates ending in EOS
  compete for the finished set on log-probability / brevity_penalty(length), the others for
  the live set on log-probability. The loop stops at `max_length` tokens, or once no live beam
  can beat the worst finished one even with the longest length's penalty. A row with no
  finished beam returns its live beams and their log-probabilities. Positions after EOS are 0.

  `tokens_to_logits(ids [b*beams, 1], cache) -> (logits [b*beams, vocab], cache)`, beams of a
  row adjacent; every cache leaf with dimensions has the flattened batch first (scalars, such as
  the decoding position, are shared).
  """
  length = max_length + 1  # position 0 holds the start token 0 (dropped on return).
  candidates = 2 * num_beams  # so that `num_beams` can stay live when as many end at once.

  def reorder_cache(cache: Any, beams: Array) -> Any:
    def gather_leaf(x):
      if x.ndim == 0:
        return x
      rows = _gather(x.reshape((batch, num_beams) + x.shape[1:]), beams)
      return rows.reshape(x.shape)
    return jax.tree.map(gather_leaf, cache)

  def not_done(state):
    i, live_logp, finished_scores, _, _, finished, _ = state
    longest = brevity_penalty(alpha, length)
    best_live = live_logp[:, -1:] / longest
    worst_finished = jnp.where(finished, jnp.min(finished_scores, axis=1, keepdims=True),
                               NEG_INF)
    settled = jnp.all(worst_finished > best_live)
    hopeless = jnp.all(best_live < NEG_INF / longest) & (i > 0)  # T5X's min_log_prob test.
    return (i < length - 1) & ~settled & ~hopeless

  def step(state):
    i, live_logp, finished_scores, live, finished_seqs, finished, cache = state
    ids = jax.lax.dynamic_slice_in_dim(live, i, 1, axis=2).reshape(batch * num_beams, 1)
    logits, cache = tokens_to_logits(ids, cache)
    vocab = logits.shape[-1]
    logp = (jax.nn.log_softmax(logits.reshape(batch, num_beams, vocab).astype(jnp.float32))
            + live_logp[:, :, None])
    top_logp, top_index = jax.lax.top_k(logp.reshape(batch, num_beams * vocab), candidates)
    token, parent = top_index % vocab, top_index // vocab
    seqs = jax.lax.dynamic_update_slice(_gather(live, parent), token[:, :, None], (0, 0, i + 1))
    ended = token == eos_id
    # Live: the best `num_beams` candidates that did not end (ascending, as T5X keeps them).
    alive_logp = top_logp + ended * NEG_INF
    alive = jnp.flip(jax.lax.top_k(alive_logp, num_beams)[1], axis=1)
    live, live_logp = _gather(seqs, alive), _gather(alive_logp, alive)
    if num_beams > 1:  # one beam is its own parent: its cache stays in place.
      cache = reorder_cache(cache, _gather(parent, alive))
    # Finished: the best `num_beams` of the old finished beams and the candidates that ended.
    scores = top_logp / brevity_penalty(alpha, i + 1) + (~ended) * NEG_INF
    all_seqs = jnp.concatenate([finished_seqs, seqs], axis=1)
    all_scores = jnp.concatenate([finished_scores, scores], axis=1)
    all_flags = jnp.concatenate([finished, ended], axis=1)
    best = jnp.flip(jax.lax.top_k(all_scores, num_beams)[1], axis=1)
    return (i + 1, live_logp, _gather(all_scores, best), live, _gather(all_seqs, best),
            _gather(all_flags, best), cache)

  start_logp = jnp.tile(jnp.asarray([0.0] + [NEG_INF] * (num_beams - 1), jnp.float32),
                        (batch, 1))
  empty = jnp.zeros((batch, num_beams, length), jnp.int32)
  state = (jnp.zeros((), jnp.int32), start_logp, jnp.full((batch, num_beams), NEG_INF,
                                                            jnp.float32),
           empty, empty, jnp.zeros((batch, num_beams), bool), cache)
  _, live_logp, finished_scores, live, finished_seqs, finished, _ = jax.lax.while_loop(
      not_done, step, state)
  any_finished = jnp.any(finished, axis=1)
  seqs = jnp.where(any_finished[:, None, None], finished_seqs, live)
  scores = jnp.where(any_finished[:, None], finished_scores, live_logp)
  return seqs[:, :, 1:], scores


@functools.partial(jax.jit, static_argnames=("model", "max_length", "eos_id", "num_beams",
                                             "alpha"))
def beam_decode(model: T5, params: Any, encoder_tokens: Array, max_length: int,
                eos_id: int = EOS_ID, num_beams: int = NUM_BEAMS, alpha: float = BEAM_ALPHA
                ) -> tuple[Array, Array]:
  """T5X's default prediction (EVAL_MODE='beam_search'): the best beam's tokens
  [b, max_length] (0 after EOS) and its score [b], as `predict_batch_with_aux` returns them
  (t5x/models.py: `decodes[:, -1]`). One cached decoder step per token: the encoder output is
  repeated per beam (beams of a row adjacent, as `decoding.flat_batch_beam_expand`) and the
  self-attention cache follows each beam's parent."""
  encoded, mask = model.apply({"params": params}, encoder_tokens, method=T5.encode)
  encoded = jnp.repeat(encoded, num_beams, axis=0)
  mask = jnp.repeat(mask, num_beams, axis=0)

  def tokens_to_logits(ids, cache):
    logits, variables = model.apply({"params": params, "cache": cache}, encoded, mask, ids,
                                    max_length, method=T5.decode_step, mutable=["cache"])
    return logits[:, 0], variables["cache"]

  seqs, scores = beam_search(tokens_to_logits,
                             init_decode_cache(model, params, encoded, mask, max_length),
                             encoder_tokens.shape[0], max_length, eos_id, num_beams, alpha)
  return seqs[:, -1], scores[:, -1]


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
