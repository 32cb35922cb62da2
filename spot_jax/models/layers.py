"""Building blocks of T5 1.1 in Flax, with T5X parameter names.

Numerics follow the released T5 1.1 / LM-adapted checkpoints: RMS layer norm in float32,
no biases, gated-GELU MLP (tanh-approximate gelu), no 1/sqrt(d) at run time (folded into the
query initialiser), relative position bias shared by the layers of a stack.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spot_jax.models.config import T5Config

Array = jax.Array
Initializer = Callable[..., Array]

# A large negative number for masked logits; finite so that fully masked rows stay finite.
MASK_VALUE = -1e10

# The frozen weights' initialisers (T5X's t5x/examples/t5/layers.py defaults); `models.init`
# applies the same ones leaf by leaf.
default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
mlp_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
embedding_init = nn.initializers.normal(stddev=1.0)
relpos_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


@functools.lru_cache(maxsize=None)
def query_kernel_init(head_dim: int) -> Initializer:
  """The query kernel's initialiser: 1/sqrt(head_dim) folded in (no scaling at run time)."""
  depth_scaling = float(np.sqrt(head_dim))

  def init(*args):
    return default_kernel_init(*args) / depth_scaling

  return init


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


@dataclasses.dataclass(frozen=True)
class DenseSlot:
  """A parameter-efficient method's addition to the dense layers whose module path matches
  `targets` (a regex searched in the slash-joined path, e.g. 'encoder/layers_0/attention/query').

  The layers know two generic operations and no method: `scale_input` acts on the layer's input
  before the product with the frozen kernel, `adjust_output` on the product (e.g. add a low-rank
  update or a bias, scale the output). Each creates its parameters with `module.param`, so they
  sit beside the frozen `kernel` and the frozen names and shapes never change. Methods subclass
  it (`spot_jax.methods`); `name` says whose slot it is in messages.
  """

  targets: str = ""
  name: ClassVar[str] = "dense slot"

  def scale_input(self, module: "HookedDense", x: Array) -> Array:
    """x [..., in] -> [..., in], before the product."""
    return x

  def adjust_output(self, module: "HookedDense", inputs: Array, y: Array) -> Array:
    """inputs [..., in] (compute dtype), y = inputs @ kernel [..., out] -> [..., out]."""
    return y


@dataclasses.dataclass(frozen=True)
class MethodHooks:
  """What a parameter-efficient method adds to the frozen T5 (all off by default), in three
  generic slots, each read at the one place it acts:

  * the input slot (`prompt_length`, `prompt_encoder_hidden`): vectors [L, embed] prepended to
    the embedded input (`spot_jax.models.prompts`), given directly or by an MLP over a table;
  * dense slots (`dense`): `DenseSlot`s acting before/after the targeted dense layers' products;
  * the key/value slot (`prefix_length`, `prefix_encoder`, `prefix_decoder`): learned vectors
    [P, heads, head_dim] prepended to the projected keys and values of self-attention, in the
    encoder's and/or the decoder's layers.

  A method (`spot_jax.methods`) fills the slots it needs; the model names no method.
  """

  prompt_length: int = 0  # the input slot: a soft prompt [L, embed] prepended to the input.
  prompt_encoder_hidden: int = 0  # > 0: the prompt is an MLP over a prompt table.
  dense: tuple[DenseSlot, ...] = ()
  prefix_length: int = 0  # the key/value slot: P prefixes [P, heads, head_dim] in self-attention
  prefix_encoder: bool = True  # of the encoder's layers,
  prefix_decoder: bool = False  # of the decoder's.

  def per_layer(self) -> list[str]:
    """Names of the slots that add parameters to every layer (empty: the stacks can scan)."""
    return [*(slot.name for slot in self.dense if slot.targets),
            *(["key/value prefix"] if self.prefix_length else [])]


class HookedDense(nn.Module):
  """A bias-free dense layer with T5X's 2-D `kernel` [in, out], plus the methods' dense slots.

  x W is computed exactly as `nn.Dense` does, so with no slot the layer is
  `nn.Dense(use_bias=False)`; targeted slots scale the input before it and adjust the product
  after it, in the order given.
  """

  features: int
  config: T5Config
  hooks: MethodHooks = MethodHooks()
  kernel_init: Initializer = default_kernel_init

  def _targeted(self, pattern: str) -> bool:
    return bool(pattern) and re.search(pattern, "/".join(self.scope.path)) is not None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    dtype = self.config.compute_dtype
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    slots = [slot for slot in self.hooks.dense if self._targeted(slot.targets)]
    for slot in slots:
      x = slot.scale_input(self, x)
    inputs, kernel_c = x.astype(dtype), kernel.astype(dtype)
    y = jax.lax.dot_general(inputs, kernel_c, (((inputs.ndim - 1,), (0,)), ((), ())))
    for slot in slots:
      y = slot.adjust_output(self, inputs, y)
    return y


def dense(features: int, name: str, config: T5Config,
          kernel_init: Initializer = default_kernel_init,
          hooks: MethodHooks = MethodHooks()) -> HookedDense:
  """The dense-layer factory: a bias-free [in, out] `kernel` as in T5X, with the dense slots."""
  return HookedDense(features, config, hooks, kernel_init, name=name)


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
    table = self.param("rel_embedding", relpos_init, (self.num_heads, self.num_buckets),
                       jnp.float32)
    bias = jnp.take(jnp.asarray(table, self.dtype), jnp.asarray(buckets), axis=1)
    return bias[None]


class MultiHeadAttention(nn.Module):
  """T5 attention: `query`, `key`, `value` [embed, heads*head_dim], `out` [heads*head_dim, embed].

  With `prefix_length` P > 0 (prefix tuning, P-tuning v2), learned `prefix_key` and
  `prefix_value` [P, heads, head_dim] are prepended to the projected keys and values; the bias
  then covers P + k keys (see `prefix_position_bias`).
  """

  config: T5Config
  hooks: MethodHooks = MethodHooks()
  prefix_length: int = 0

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, bias: Array,
               deterministic: bool, decode: str | None = None) -> Array:
    """inputs_q [b, q, e], inputs_kv [b, k, e], bias [b or 1, h or 1, q, P+k] -> [b, q, e].

    `decode` keeps keys/values in the `cache` collection (see `_cached_key_value`):
    "self" appends this call's one position, "cross" projects the encoder output once. The
    cache holds the projected keys/values only; a prefix is prepended after it.
    """
    cfg, hooks = self.config, self.hooks
    inner = cfg.num_heads * cfg.head_dim
    def heads(x: Array) -> Array:
      return x.reshape(x.shape[:-1] + (cfg.num_heads, cfg.head_dim))

    query = heads(dense(inner, "query", cfg, query_kernel_init(cfg.head_dim), hooks)(
        inputs_q))
    if decode == "cross" and self.has_variable("cache", "cached_key"):
      key, value = self.get_variable("cache", "cached_key"), self.get_variable("cache",
                                                                                "cached_value")
    else:
      key = heads(dense(inner, "key", cfg, hooks=hooks)(inputs_kv))
      value = heads(dense(inner, "value", cfg, hooks=hooks)(inputs_kv))
      if decode is not None:
        key, value = self._cached_key_value(key, value, decode)
    if self.prefix_length:
      key, value = (self._with_prefix(name, x) for name, x in
                    (("prefix_key", key), ("prefix_value", value)))
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key) + bias.astype(query.dtype)
    weights = jax.nn.softmax(logits.astype(jnp.float32)).astype(cfg.compute_dtype)
    weights = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(
        weights, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    out = out.reshape(out.shape[:-2] + (inner,))
    return dense(cfg.emb_dim, "out", cfg, hooks=hooks)(out)

  def _with_prefix(self, name: str, x: Array) -> Array:
    """[b, k, h, d] -> [b, P+k, h, d] with the learned prefix [P, h, d] first."""
    cfg = self.config
    prefix = self.param(name, nn.initializers.normal(stddev=1.0),
                        (self.prefix_length, cfg.num_heads, cfg.head_dim), jnp.float32)
    prefix = jnp.broadcast_to(prefix.astype(x.dtype), (x.shape[0],) + prefix.shape)
    return jnp.concatenate([prefix, x], axis=1)

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
  hooks: MethodHooks = MethodHooks()

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    cfg, hooks = self.config, self.hooks
    gate = jax.nn.gelu(dense(cfg.mlp_dim, "wi_0", cfg, mlp_kernel_init, hooks)(x),
                       approximate=True)
    hidden = gate * dense(cfg.mlp_dim, "wi_1", cfg, mlp_kernel_init, hooks)(x)
    hidden = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(hidden, deterministic=deterministic)
    return dense(cfg.emb_dim, "wo", cfg, mlp_kernel_init, hooks)(hidden)


def sublayer_dropout(config: T5Config) -> nn.Dropout:
  """Dropout after a sublayer / embedding / final norm, shared across the length axis (T5X)."""
  return nn.Dropout(config.dropout_rate, broadcast_dims=(-2,))


def mask_to_bias(mask: Array, dtype: Any) -> Array:
  """Boolean mask [b, 1, q, k] -> additive bias with 0 where allowed and MASK_VALUE elsewhere."""
  return jnp.where(mask, 0.0, MASK_VALUE).astype(dtype)


def prefix_position_bias(relpos: "RelativePositionBias", prefix_length: int, length: int) -> Array:
  """Relative position bias [1, h, length, P+length] with the P prefix keys at the positions
  just before the first token, as HF T5 places a past key/value cache (`T5Attention.forward`:
  the bias over P+length positions, last `length` query rows)."""
  return relpos(prefix_length + length, prefix_length + length)[:, :, prefix_length:, :]
