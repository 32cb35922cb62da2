"""Building blocks of T5 1.1 in Flax, with T5X parameter names.

Numerics follow the released T5 1.1 / LM-adapted checkpoints: RMS layer norm in float32,
no biases, gated-GELU MLP (tanh-approximate gelu), no 1/sqrt(d) at run time (folded into the
query initialiser), relative position bias shared by the layers of a stack.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spot_jax.models.config import T5Config

Array = jax.Array
Initializer = Callable[..., Array]

# A large negative number for masked logits; finite so that fully masked rows stay finite.
MASK_VALUE = -1e10

default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
mlp_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


class RMSNorm(nn.Module):
  """T5 layer norm: scale only, no mean subtraction, computed in float32. Param `scale` [embed]."""

  epsilon: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = jnp.asarray(x, jnp.float32)
    mean2 = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    y = x * jax.lax.rsqrt(mean2 + self.epsilon)
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    return jnp.asarray(y, self.dtype) * jnp.asarray(scale, self.dtype)


def dense(features: int, name: str, config: T5Config,
          kernel_init: Initializer = default_kernel_init) -> nn.Dense:
  """A bias-free dense layer with a 2-D `kernel` [in, out] as in T5X."""
  return nn.Dense(features, use_bias=False, dtype=config.compute_dtype,
                  param_dtype=jnp.float32, kernel_init=kernel_init, name=name)


def relative_position_bucket(relative_position: np.ndarray, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> np.ndarray:
  """Maps key-minus-query offsets to T5 buckets (T5X/Mesh TensorFlow formula, with its eps)."""
  bucket = np.zeros_like(relative_position)
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0).astype(np.int32) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  val_if_large = max_exact + (
      np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
      / np.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(np.int32)
  val_if_large = np.minimum(val_if_large, num_buckets - 1)
  return bucket + np.where(is_small, n, val_if_large)


class RelativePositionBias(nn.Module):
  """Per-head bias from bucketed relative positions. Param `rel_embedding` [heads, buckets]."""

  num_heads: int
  num_buckets: int
  max_distance: int
  bidirectional: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, query_length: int, key_length: int) -> Array:
    """Returns the bias [1, heads, query_length, key_length]."""
    context = np.arange(query_length, dtype=np.int32)[:, None]
    memory = np.arange(key_length, dtype=np.int32)[None, :]
    buckets = relative_position_bucket(memory - context, self.bidirectional,
                                       self.num_buckets, self.max_distance)
    table = self.param("rel_embedding",
                       nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                       (self.num_heads, self.num_buckets), jnp.float32)
    bias = jnp.take(jnp.asarray(table, self.dtype), jnp.asarray(buckets), axis=1)
    return bias[None]


class MultiHeadAttention(nn.Module):
  """T5 attention: `query`, `key`, `value` [embed, heads*head_dim], `out` [heads*head_dim, embed]."""

  config: T5Config

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, bias: Array,
               deterministic: bool, decode: str | None = None) -> Array:
    """inputs_q [b, q, e], inputs_kv [b, k, e], bias [b or 1, h or 1, q, k] -> [b, q, e].

    `decode` keeps keys/values in the `cache` collection (see `_cached_key_value`):
    "self" appends this call's one position, "cross" projects the encoder output once.
    """
    cfg = self.config
    inner = cfg.num_heads * cfg.head_dim
    depth_scaling = float(np.sqrt(cfg.head_dim))

    def query_init(*args):
      return default_kernel_init(*args) / depth_scaling

    def heads(x: Array) -> Array:
      return x.reshape(x.shape[:-1] + (cfg.num_heads, cfg.head_dim))

    query = heads(dense(inner, "query", cfg, query_init)(inputs_q))
    if decode == "cross" and self.has_variable("cache", "cached_key"):
      key, value = self.get_variable("cache", "cached_key"), self.get_variable("cache",
                                                                                "cached_value")
    else:
      key = heads(dense(inner, "key", cfg)(inputs_kv))
      value = heads(dense(inner, "value", cfg)(inputs_kv))
      if decode is not None:
        key, value = self._cached_key_value(key, value, decode)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key) + bias.astype(query.dtype)
    weights = jax.nn.softmax(logits.astype(jnp.float32)).astype(cfg.compute_dtype)
    weights = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(
        weights, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    out = out.reshape(out.shape[:-2] + (inner,))
    return dense(cfg.emb_dim, "out", cfg)(out)

  def _cached_key_value(self, key: Array, value: Array, decode: str) -> tuple[Array, Array]:
    """The key/value cache of incremental decoding, as flaxformer's dense_attention
    (MultiHeadDotProductAttention, `decode=True`) and T5X's decoding.py use it.

    The first call (cache creation, decoder inputs [b, max_length]) stores zeros for
    "self" ([b, max_length, h, d]) and the projected encoder output for "cross", and
    attends as without a cache. Later "self" calls take one position [b, 1, h, d], write it
    at `cache_index` and attend over the whole cache (the caller's bias masks the future).
    """
    initialized = self.has_variable("cache", "cached_key")
    init = (lambda x: x) if decode == "cross" else jnp.zeros_like
    cached_key = self.variable("cache", "cached_key", init, key)
    cached_value = self.variable("cache", "cached_value", init, value)
    if decode != "self":
      return key, value
    index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
    if not initialized:
      return key, value
    start = (0, index.value, 0, 0)
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
    index.value = index.value + 1
    return cached_key.value, cached_value.value


class GatedGeluMlp(nn.Module):
  """gelu(x W_0) * (x W_1) -> dropout -> W_o; params `wi_0`, `wi_1` [embed, mlp], `wo` [mlp, embed]."""

  config: T5Config

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    cfg = self.config
    gate = jax.nn.gelu(dense(cfg.mlp_dim, "wi_0", cfg, mlp_kernel_init)(x), approximate=True)
    hidden = gate * dense(cfg.mlp_dim, "wi_1", cfg, mlp_kernel_init)(x)
    hidden = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(hidden, deterministic=deterministic)
    return dense(cfg.emb_dim, "wo", cfg, mlp_kernel_init)(hidden)


def sublayer_dropout(config: T5Config) -> nn.Dropout:
  """Dropout after a sublayer / embedding / final norm, shared across the length axis (T5X)."""
  return nn.Dropout(config.dropout_rate, broadcast_dims=(-2,))


def mask_to_bias(mask: Array, dtype: Any) -> Array:
  """Boolean mask [b, 1, q, k] -> additive bias with 0 where allowed and MASK_VALUE elsewhere."""
  return jnp.where(mask, 0.0, MASK_VALUE).astype(dtype)
