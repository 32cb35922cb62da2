"""The affinity head s([P_t; P_s]) -> predicted transfer gain (Feng et al., EMNLP 2023).

Two variants over a target prompt [Lt, E] and a source prompt [Ls, E] (batched: [b, L, E]):

  encoder  the frozen T5's encoder stack (same checkpoint as the prompts; parameter names equal
           T5X's `encoder/...`) over [P_t; separator; P_s] fed as input embeddings, plus a
           learned segment embedding (0 target, 1 separator, 2 source), mean-pooled, then an
           MLP to one scalar. The paper fine-tunes a backbone initialised from the language
           model; so do we by default (`freeze_backbone` keeps it frozen).
  light    an MLP over pooled features of both prompts and their similarities
           (`pair_features`), for CPU and for large pools.

Inputs are rescaled first (`input_scale`): trained prompts have far larger norms than token
embeddings (released T5 1.1 base prompts: mean per-token L2 norm ~870-1385), so both prompts are
multiplied by one scalar, `target_norm / mean per-token L2 norm of the training keys`, where
target_norm is the mean row norm of the frozen embedding table (encoder) or 1 (light). One
scalar for all keys keeps the relative norms of prompts.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spot_jax.models import layers
from spot_jax.models.config import T5Config
from spot_jax.models.t5 import EncoderLayer

Array = jax.Array
VARIANTS = ("encoder", "light")
SEGMENTS = 3  # target, separator, source.


def mean_token_norm(keys: np.ndarray) -> float:
  """Mean per-token L2 norm of prompts [..., L, E]."""
  return float(np.linalg.norm(np.asarray(keys, np.float64), axis=-1).mean())


def input_scale(keys: np.ndarray, target_norm: float) -> float:
  """The scalar that maps the keys' mean token norm to `target_norm`."""
  norm = mean_token_norm(keys)
  return float(target_norm / norm) if norm > 0 else 1.0


def embedding_norm(embedding: np.ndarray) -> float:
  """Mean row L2 norm of a token-embedding table [vocab, E]."""
  return mean_token_norm(np.asarray(embedding)[None])


def _unit(x: Array) -> Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pair_features(target: Array, source: Array) -> Array:
  """[b, Lt, E], [b, Ls, E] -> [b, 4E + 5]: the means mt, ms, mt * ms, |mt - ms| and five
  similarities: cosine of the means, per-token cosine (dot of unit-token means),
  1/(1 + L2 distance), 1/(1 + L1 distance) of the means, and max-pairwise token cosine."""
  mt, ms = target.mean(1), source.mean(1)
  ut, us = _unit(target), _unit(source)
  max_pairwise = jnp.einsum("bse,bte->bst", us, ut).max(-1).mean(-1)
  sims = jnp.stack([
      (_unit(mt) * _unit(ms)).sum(-1), (ut.mean(1) * us.mean(1)).sum(-1),
      1.0 / (1.0 + jnp.linalg.norm(mt - ms, axis=-1)),
      1.0 / (1.0 + jnp.abs(mt - ms).sum(-1)), max_pairwise], axis=-1)
  return jnp.concatenate([mt, ms, mt * ms, jnp.abs(mt - ms), sims], axis=-1)


class Mlp(nn.Module):
  """Dense(hidden) -> gelu -> Dense(hidden) -> gelu -> Dense(1): [b, d] -> [b]."""

  hidden_dim: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for i in range(2):
      x = nn.gelu(nn.Dense(self.hidden_dim, name=f"dense_{i}")(x))
    return nn.Dense(1, name="out")(x)[:, 0]


class LightHead(nn.Module):
  hidden_dim: int = 64

  @nn.compact
  def __call__(self, target: Array, source: Array) -> Array:
    """[b, Lt, E], [b, Ls, E] (rescaled) -> [b] standardised gains."""
    return Mlp(self.hidden_dim, name="mlp")(pair_features(target, source))


class EmbeddingEncoder(nn.Module):
  """T5's encoder stack over input embeddings [b, l, e] (no padding) -> [b, l, e]; its params
  (`relpos_bias`, `layers_{i}`, `encoder_norm`) are those of `spot_jax.models.t5.Encoder`."""

  config: T5Config

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    length = x.shape[1]
    bias = layers.RelativePositionBias(
        cfg.num_heads, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance,
        bidirectional=True, dtype=cfg.compute_dtype, name="relpos_bias")(length, length)
    for i in range(cfg.num_encoder_layers):
      x = EncoderLayer(cfg, name=f"layers_{i}")(x, bias, True)
    return layers.RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="encoder_norm")(x)


class EncoderHead(nn.Module):
  config: T5Config
  hidden_dim: int = 256

  @nn.compact
  def __call__(self, target: Array, source: Array) -> Array:
    """[b, Lt, E], [b, Ls, E] (rescaled) -> [b] standardised gains."""
    batch, emb = target.shape[0], target.shape[-1]
    separator = self.param("separator", nn.initializers.normal(1.0), (1, emb), jnp.float32)
    segment = self.param("segment_embedding", nn.initializers.normal(0.1), (SEGMENTS, emb),
                         jnp.float32)
    x = jnp.concatenate([target, jnp.broadcast_to(separator, (batch, 1, emb)), source], axis=1)
    ids = np.concatenate([np.zeros(target.shape[1], int), [1], np.full(source.shape[1], 2)])
    x = (x + segment[ids][None]).astype(self.config.compute_dtype)
    encoded = EmbeddingEncoder(self.config, name="encoder")(x)
    return Mlp(self.hidden_dim, name="mlp")(encoded.mean(1).astype(jnp.float32))


def make_head(variant: str, hidden_dim: int, config: T5Config | None = None) -> nn.Module:
  if variant == "light":
    return LightHead(hidden_dim)
  if variant == "encoder":
    if config is None:
      raise ValueError("The encoder affinity head needs the frozen model's T5Config")
    return EncoderHead(config.replace(dropout_rate=0.0), hidden_dim)
  raise ValueError(f"Unknown affinity head variant {variant!r}; choose one of {VARIANTS}")


def check_key_dim(head: nn.Module, emb_dim: int) -> None:
  """An encoder head reads the keys as input embeddings of its backbone: their width must be
  the backbone's emb_dim (keys of another frozen model cannot enter it)."""
  if isinstance(head, EncoderHead) and emb_dim != head.config.emb_dim:
    raise ValueError(
        f"The keys are {emb_dim} wide but the encoder affinity head's backbone embeds "
        f"{head.config.emb_dim}: the keys come from another frozen model. Use keys of the "
        "backbone's model (--model or a library of that model), set AffinityConfig.model (and "
        "checkpoint) to the keys' model, or train the light head "
        "(--gin_file=affinity/light.gin), which takes keys of any width")


@functools.lru_cache(maxsize=16)
def _jitted_init(head: nn.Module):
  """One compiled init per head module (modules are frozen dataclasses, hence hashable)."""
  return jax.jit(head.init)


def init_params(head: nn.Module, seed: int, target_length: int, source_length: int,
                emb_dim: int, backbone: Any = None) -> dict[str, Any]:
  """Initial params; an encoder head's `encoder` subtree is replaced by `backbone` (the frozen
  T5's params["encoder"], prompt dropped) when given."""
  check_key_dim(head, emb_dim)
  params = _jitted_init(head)(jax.random.PRNGKey(seed), jnp.zeros((1, target_length, emb_dim)),
                              jnp.zeros((1, source_length, emb_dim)))["params"]
  params = jax.device_get(params)
  if backbone is not None:
    backbone = {k: v for k, v in backbone.items() if k != "prompt"}
    shapes = jax.tree.map(np.shape, params["encoder"])
    if jax.tree.map(np.shape, backbone) != shapes:
      raise ValueError("The backbone's encoder params do not match the head's T5Config; load "
                       "the checkpoint with the config it was trained with")
    params = {**params, "encoder": jax.tree.map(np.asarray, backbone)}
  return params
