"""The T5 1.1 encoder-decoder with an optional soft prompt, parameter names equal to T5X's.

Param tree (under `params`):
  token_embedder/embedding                          [vocab, embed]
  encoder/prompt/prompt/prompt                      [prompt_length, embed]  (when prompt_length > 0)
  encoder/relpos_bias/rel_embedding                 [heads, buckets]
  encoder/layers_{i}/pre_attention_layer_norm/scale [embed]
  encoder/layers_{i}/attention/{query,key,value}/kernel [embed, heads*head_dim]
  encoder/layers_{i}/attention/out/kernel           [heads*head_dim, embed]
  encoder/layers_{i}/pre_mlp_layer_norm/scale, mlp/{wi_0,wi_1}/kernel [embed, mlp], mlp/wo/kernel
  encoder/encoder_norm/scale
  decoder/relpos_bias/rel_embedding, decoder/layers_{i}/{pre_self_attention_layer_norm,
    self_attention, pre_cross_attention_layer_norm, encoder_decoder_attention, pre_mlp_layer_norm,
    mlp}, decoder/decoder_norm/scale, decoder/logits_dense/kernel [embed, vocab]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from spot_jax.models import layers
from spot_jax.models.config import T5Config
from spot_jax.models.layers import MethodHooks
from spot_jax.models.prompts import Prompt, PromptEncoder

Array = jax.Array

# The layer axis of a scanned stack's params (T5X's scalable_t5 `param_scan_axis`): a kernel
# [in, out] is stored [in, layers, out], a scale [embed] as [embed, layers].
SCAN_AXIS = 1


class EncoderLayer(nn.Module):
  config: T5Config
  hooks: MethodHooks = MethodHooks()
  scanned: bool = False  # under nn.scan: returns (x, None).

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool) -> Array:
    """x [b, l, e], bias [b, h, l, P+l] (P = encoder prefix length) -> [b, l, e]."""
    cfg, hooks = self.config, self.hooks
    y = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="pre_attention_layer_norm")(x)
    y = layers.MultiHeadAttention(cfg, hooks, encoder_prefix_length(hooks), name="attention")(
        y, y, bias, deterministic)
    x = x + layers.sublayer_dropout(cfg)(y, deterministic=deterministic)
    y = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="pre_mlp_layer_norm")(x)
    y = layers.GatedGeluMlp(cfg, hooks, name="mlp")(y, deterministic)
    x = x + layers.sublayer_dropout(cfg)(y, deterministic=deterministic)
    return (x, None) if self.scanned else x


class DecoderLayer(nn.Module):
  config: T5Config
  hooks: MethodHooks = MethodHooks()
  scanned: bool = False  # under nn.scan: returns (x, None).

  @nn.compact
  def __call__(self, x: Array, encoded: Array, self_bias: Array, cross_bias: Array,
               deterministic: bool, decode: bool = False) -> Array:
    """x [b, t, e], encoded [b, s, e], self_bias [b, h, t, P+t] (P = decoder prefix length),
    cross_bias [b, 1, t, s].

    `decode`: keys/values in the `cache` collection (one new position per call).
    """
    cfg, hooks = self.config, self.hooks
    eps, dtype = cfg.layer_norm_epsilon, cfg.compute_dtype
    y = layers.RMSNorm(eps, dtype, name="pre_self_attention_layer_norm")(x)
    y = layers.MultiHeadAttention(cfg, hooks, decoder_prefix_length(hooks),
                                  name="self_attention")(
        y, y, self_bias, deterministic, "self" if decode else None)
    x = x + layers.sublayer_dropout(cfg)(y, deterministic=deterministic)
    y = layers.RMSNorm(eps, dtype, name="pre_cross_attention_layer_norm")(x)
    y = layers.MultiHeadAttention(cfg, hooks, name="encoder_decoder_attention")(
        y, encoded, cross_bias, deterministic, "cross" if decode else None)
    x = x + layers.sublayer_dropout(cfg)(y, deterministic=deterministic)
    y = layers.RMSNorm(eps, dtype, name="pre_mlp_layer_norm")(x)
    y = layers.GatedGeluMlp(cfg, hooks, name="mlp")(y, deterministic)
    x = x + layers.sublayer_dropout(cfg)(y, deterministic=deterministic)
    return (x, None) if self.scanned else x


def encoder_prefix_length(hooks: MethodHooks) -> int:
  """P of the encoder self-attention's key/value prefixes (0: none)."""
  return hooks.prefix_length if hooks.prefix_encoder else 0


def decoder_prefix_length(hooks: MethodHooks) -> int:
  """P of the decoder self-attention's key/value prefixes (0: none)."""
  return hooks.prefix_length if hooks.prefix_decoder else 0


REMAT_POLICIES = ("full", "minimal", "dots")


def _remat_policy(name: str) -> Any:
  """T5X scalable_t5's remat policies: full saves nothing, minimal keeps the products with no
  batch dims (weights-only, nothing activation-sized), dots keeps every product."""
  policies = {"full": None,
              "minimal": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
              "dots": jax.checkpoint_policies.checkpoint_dots}
  if name not in policies:
    raise ValueError(f"Unknown remat_policy {name!r}; choose one of {REMAT_POLICIES}")
  return policies[name]


def _stack(layer_cls: type[nn.Module], config: T5Config, length: int, *static_argnums: int):
  """The layer class each stack calls: rematerialised when `config.remat`, and with
  `config.scan_layers` one nn.scan over `length` layers (T5X scalable_t5 `scan_with_axes`:
  params stacked along SCAN_AXIS, a key per layer for params and dropout, every input but the
  carry broadcast). `static_argnums` count the module as argument 0."""
  cls = layer_cls
  if config.remat:
    cls = nn.remat(cls, static_argnums=static_argnums, policy=_remat_policy(config.remat_policy),
                   prevent_cse=not config.scan_layers)
  if config.scan_layers:
    cls = nn.scan(cls, variable_axes={"params": SCAN_AXIS, "cache": 0},
                  split_rngs={"params": True, "dropout": True},
                  in_axes=(nn.broadcast,) * (max(static_argnums) - 1), length=length)
  return cls


def check_scannable(hooks: MethodHooks) -> None:
  """Scanned stacks share one module path for all layers: methods that add per-layer
  parameters are refused (their targets and saved names are per layer)."""
  per_layer = hooks.per_layer()
  if per_layer:
    raise ValueError(f"scan_layers=True cannot carry the per-layer parameters of {per_layer}; "
                     "train this method with scan_layers=False (SCAN_LAYERS = False)")


class Encoder(nn.Module):
  """Embeds tokens, combines them with the soft prompt (input combination hook), runs the
  bidirectional stack."""

  config: T5Config
  shared_embedding: nn.Module
  hooks: MethodHooks = MethodHooks()

  @nn.compact
  def __call__(self, tokens: Array, deterministic: bool) -> tuple[Array, Array]:
    """tokens [b, s] -> (encoded [b, L+s, e], mask [b, L+s] bool); L = prompt length."""
    cfg, hooks = self.config, self.hooks
    x = self.shared_embedding(tokens).astype(cfg.compute_dtype)
    mask = tokens > 0
    if hooks.prompt_length and hooks.prompt_encoder_hidden:
      x, mask = PromptEncoder(hooks.prompt_length, cfg.emb_dim, hooks.prompt_encoder_hidden,
                              name="prompt_encoder")(x, mask)
    elif hooks.prompt_length:
      x, mask = Prompt(hooks.prompt_length, cfg.emb_dim, name="prompt")(x, mask)
    x = layers.sublayer_dropout(cfg)(x, deterministic=deterministic)
    length, prefix = x.shape[1], encoder_prefix_length(hooks)
    relpos = layers.RelativePositionBias(
        cfg.num_heads, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance,
        bidirectional=True, dtype=cfg.compute_dtype, name="relpos_bias")
    position_bias = layers.prefix_position_bias(relpos, prefix, length)
    key_mask = jnp.concatenate([jnp.ones((mask.shape[0], prefix), bool), mask], axis=1)
    bias = position_bias + layers.mask_to_bias(key_mask[:, None, None, :], cfg.compute_dtype)
    layer_cls = _stack(EncoderLayer, cfg, cfg.num_encoder_layers, 3)  # deterministic
    if cfg.scan_layers:
      x, _ = layer_cls(cfg, hooks, scanned=True, name="layers")(x, bias, deterministic)
    for i in range(0 if cfg.scan_layers else cfg.num_encoder_layers):
      x = layer_cls(cfg, hooks, name=f"layers_{i}")(x, bias, deterministic)
    x = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="encoder_norm")(x)
    return layers.sublayer_dropout(cfg)(x, deterministic=deterministic), mask


class Decoder(nn.Module):
  """Causal stack with cross-attention and the untied `logits_dense` output projection."""

  config: T5Config
  shared_embedding: nn.Module
  hooks: MethodHooks = MethodHooks()

  @nn.compact
  def __call__(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array | None, deterministic: bool,
               max_decode_length: int | None = None) -> Array:
    """encoded [b, s, e], encoder_mask [b, s], decoder tokens [b, t] -> logits [b, t, vocab] f32.

    Queries at padded target positions (decoder_target_tokens == 0) are masked as in T5X;
    without targets (decoding) only the causal mask applies. `max_decode_length` switches to
    incremental decoding with the `cache` collection (see `decode_step`).
    """
    cfg, hooks = self.config, self.hooks
    length, prefix = decoder_input_tokens.shape[1], decoder_prefix_length(hooks)
    x = self.shared_embedding(decoder_input_tokens).astype(cfg.compute_dtype)
    x = layers.sublayer_dropout(cfg)(x, deterministic=deterministic)
    relpos = layers.RelativePositionBias(
        cfg.num_heads, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance,
        bidirectional=False, dtype=cfg.compute_dtype, name="relpos_bias")
    # Prefix keys (positions before the first token) are visible to every query.
    prefix_keys = lambda rows: jnp.ones((rows, prefix), bool)
    if max_decode_length is not None:
      # One query at `position` over the P prefix keys and the cached keys
      # 0..max_decode_length-1 (flaxformer's RelativePositionBiases in decode mode: the bias
      # row of the current position).
      initialized = self.has_variable("cache", "position")
      position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
      keys = jnp.arange(max_decode_length)
      position_bias = jax.lax.dynamic_slice_in_dim(
          layers.prefix_position_bias(relpos, prefix, max_decode_length), position.value, 1,
          axis=2)
      self_mask = jnp.concatenate([prefix_keys(1), (keys <= position.value)[None]],
                                  axis=1)[None, None]
      cross_mask = encoder_mask[:, None, None, :]
      if initialized:
        position.value = position.value + 1
    else:
      position_bias = layers.prefix_position_bias(relpos, prefix, length)
      causal = jnp.tril(jnp.ones((length, prefix + length), bool), k=prefix)[None, None]
      if decoder_target_tokens is not None:
        valid = decoder_target_tokens > 0
        valid_keys = jnp.concatenate([prefix_keys(valid.shape[0]), valid], axis=1)
        self_mask = causal & valid[:, None, :, None] & valid_keys[:, None, None, :]
        cross_mask = valid[:, None, :, None] & encoder_mask[:, None, None, :]
      else:
        self_mask = causal
        cross_mask = encoder_mask[:, None, None, :]
    self_bias = position_bias + layers.mask_to_bias(self_mask, cfg.compute_dtype)
    cross_bias = layers.mask_to_bias(cross_mask, cfg.compute_dtype)
    layer_cls = _stack(DecoderLayer, cfg, cfg.num_decoder_layers, 5, 6)  # deterministic, decode
    decode = max_decode_length is not None
    if cfg.scan_layers:
      x, _ = layer_cls(cfg, hooks, scanned=True, name="layers")(
          x, encoded, self_bias, cross_bias, deterministic, decode)
    for i in range(0 if cfg.scan_layers else cfg.num_decoder_layers):
      x = layer_cls(cfg, hooks, name=f"layers_{i}")(x, encoded, self_bias, cross_bias,
                                                    deterministic, decode)
    x = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="decoder_norm")(x)
    x = layers.sublayer_dropout(cfg)(x, deterministic=deterministic)
    return nn.Dense(cfg.vocab_size, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32,
                    kernel_init=layers.mlp_kernel_init, name="logits_dense")(x)


class T5(nn.Module):
  """T5 1.1 encoder-decoder; `hooks` add a parameter-efficient method's parameters
  (`prompt_length` > 0 is shorthand for a soft prompt of that length).

  Dropout needs the `dropout` rng when `enable_dropout=True`.
  """

  config: T5Config
  prompt_length: int = 0
  hooks: MethodHooks = MethodHooks()

  @property
  def method_hooks(self) -> MethodHooks:
    """The hooks with the `prompt_length` shorthand applied."""
    if self.prompt_length:
      return dataclasses.replace(self.hooks, prompt_length=self.prompt_length)
    return self.hooks

  def setup(self):
    cfg = self.config
    if cfg.scan_layers:
      check_scannable(self.method_hooks)
    self.token_embedder = nn.Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.compute_dtype,
                                   param_dtype=jnp.float32,
                                   embedding_init=layers.embedding_init,
                                   name="token_embedder")
    hooks = self.method_hooks
    self.encoder = Encoder(cfg, self.token_embedder, hooks, name="encoder")
    self.decoder = Decoder(cfg, self.token_embedder, hooks, name="decoder")

  def encode(self, encoder_input_tokens: Array, *, enable_dropout: bool = False
             ) -> tuple[Array, Array]:
    """[b, s] -> (encoded [b, L+s, e], encoder_mask [b, L+s])."""
    return self.encoder(encoder_input_tokens, not enable_dropout)

  def decode(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array,
             decoder_target_tokens: Array | None = None, *, enable_dropout: bool = False) -> Array:
    """Logits [b, t, vocab] (float32) for decoder inputs given the encoder output."""
    return self.decoder(encoded, encoder_mask, decoder_input_tokens, decoder_target_tokens,
                        not enable_dropout)

  def decode_step(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array,
                  max_decode_length: int) -> Array:
    """Incremental decoding with the mutable `cache` collection -> logits [b, t, vocab].

    First call (cache creation, as T5X's EncoderDecoderModel does it): decoder inputs
    [b, max_decode_length]; its logits are not meaningful. Then one call per position with
    decoder inputs [b, 1]: the logits of that position, equal to the uncached decoder's.
    """
    return self.decoder(encoded, encoder_mask, decoder_input_tokens, None, True,
                        max_decode_length)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array | None = None, *, enable_dropout: bool = False
               ) -> Array:
    """Teacher-forced logits [b, t, vocab] (float32)."""
    encoded, mask = self.encode(encoder_input_tokens, enable_dropout=enable_dropout)
    return self.decode(encoded, mask, decoder_input_tokens, decoder_target_tokens,
                       enable_dropout=enable_dropout)
