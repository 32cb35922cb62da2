"""Random frozen T5 weights without compiling the whole random init.

`jax.jit(T5(config).init)` traces the model's forward pass and every initialiser into one
program; on a GPU XLA took 89 s (base) and 174 s (large) to compile it (issue 27). Here the
shapes come from `jax.eval_shape` (tracing only, nothing compiled) and each leaf is drawn by a
small jitted sampler keyed on (initialiser, shape, dtype, sharding): the layers of a stack share
one executable, so the number of compilations does not grow with depth, and each leaf is
written straight into its sharding (`shardings`), never gathered on one device first.

The initialisers are the modules' own (`spot_jax.models.layers`); a leaf's key is
fold_in(key(seed), crc32(path)), so a seed gives the same weights in every process; a stacked
(scanned) leaf `encoder/layers/...` draws layer i with the key of `encoder/layers_i/...`, so
both layouts hold the same weights.
"""

from __future__ import annotations

import functools
import re
import zlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from spot_jax.models import layers
from spot_jax.models.config import T5Config

# (regex searched in the slash-joined param path, initialiser factory of the config).
FROZEN_INITIALIZERS: tuple[tuple[str, Callable[[T5Config], layers.Initializer]], ...] = (
    (r"(^|/)token_embedder/embedding$", lambda c: layers.embedding_init),
    (r"relpos_bias/rel_embedding$", lambda c: layers.relpos_init),
    (r"norm/scale$", lambda c: nn.initializers.ones),
    (r"attention/query/kernel$", lambda c: layers.query_kernel_init(c.head_dim)),
    (r"attention/(key|value|out)/kernel$", lambda c: layers.default_kernel_init),
    (r"mlp/(wi_0|wi_1|wo)/kernel$", lambda c: layers.mlp_kernel_init),
    (r"(^|/)logits_dense/kernel$", lambda c: layers.mlp_kernel_init),
)


def frozen_shapes(config: T5Config) -> dict[str, Any]:
  """The frozen param tree of jax.ShapeDtypeStruct (no prompt, no method params); traced only."""
  from spot_jax.models.t5 import T5  # t5 imports layers; this module sits beside it.
  tokens = jax.ShapeDtypeStruct((1, 4), jnp.int32)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)
  return jax.eval_shape(lambda k, t: T5(config).init(k, t, t), key, tokens)["params"]


def initializer_for(path: str, config: T5Config) -> layers.Initializer:
  """The initialiser of a frozen leaf, by its path."""
  for pattern, make in FROZEN_INITIALIZERS:
    if re.search(pattern, path):
      return make(config)
  raise ValueError(f"No frozen initialiser matches {path!r}; add a rule to "
                   "spot_jax.models.init.FROZEN_INITIALIZERS")


def stacked_axis(path: str) -> int | None:
  """The layer axis of a scanned stack's leaf (`encoder/layers/...`), None for other leaves."""
  from spot_jax.models.t5 import SCAN_AXIS
  return SCAN_AXIS if re.search(r"(^|/)(encoder|decoder)/layers/", path) else None


@functools.lru_cache(maxsize=None)
def _sampler(init: layers.Initializer, shape: tuple[int, ...], dtype: Any, axis: int | None,
             sharding: Any) -> Callable[[Any, Any], jax.Array]:
  """jit((seed, salt) -> one leaf); cached so that leaves alike share one executable."""

  def sample(seed, salt):
    base = jax.random.key(seed)
    if axis is None:
      value = init(jax.random.fold_in(base, salt), shape, jnp.float32)
    else:  # salt [layers]: one key per layer.
      inner = shape[:axis] + shape[axis + 1:]
      value = jax.vmap(lambda s: init(jax.random.fold_in(base, s), inner, jnp.float32),
                       out_axes=axis)(salt)
    return value.astype(dtype)

  return jax.jit(sample, out_shardings=sharding)


def _salts(path: str, shape: tuple[int, ...], axis: int | None) -> np.ndarray:
  """crc32 of the leaf's unscanned path(s): one for a leaf, one per layer for a stacked one."""
  if axis is None:
    return np.uint32(zlib.crc32(path.encode()))
  names = [re.sub(r"(^|/)layers/", rf"\1layers_{i}/", path, count=1)
           for i in range(shape[axis])]
  return np.array([zlib.crc32(n.encode()) for n in names], np.uint32)


def init_frozen(config: T5Config, seed: int = 0, dtype: Any = jnp.float32,
                shardings: Callable[[dict[str, Any]], Any] | Any = None) -> dict[str, Any]:
  """Random frozen weights of `config` (device arrays in `dtype`), leaf by leaf.

  `shardings`: None (the default device), a tree of shardings matching the params, or a
  function from the tree of shapes to one (e.g. `lambda s: partitioning.param_shardings(s,
  mesh)`).
  """
  shapes = frozen_shapes(config)
  if callable(shardings):
    shardings = shardings(shapes)
  flat = traverse_util.flatten_dict(shapes, sep="/")
  placed = (traverse_util.flatten_dict(shardings, sep="/") if shardings is not None
            else dict.fromkeys(flat))
  out = {}
  for path, shape in flat.items():
    axis = stacked_axis(path)
    fn = _sampler(initializer_for(path, config), tuple(shape.shape), jnp.dtype(dtype), axis,
                  placed[path])
    out[path] = fn(jnp.uint32(seed), jnp.asarray(_salts(path, shape.shape, axis), jnp.uint32))
  return traverse_util.unflatten_dict(out, sep="/")


def random_fingerprint(config: T5Config, seed: int, dtype: Any = jnp.float32) -> str:
  """The identity of `init_frozen(config, seed, dtype)`'s weights without reading them back."""
  import hashlib
  fields = {k: v for k, v in config.to_dict().items()
            if k not in ("dropout_rate", "dtype", "remat", "scan_layers", "remat_policy")}
  text = f"init_frozen/v1:{sorted(fields.items())}:{seed}:{jnp.dtype(dtype).name}"
  return hashlib.sha256(text.encode()).hexdigest()[:16]
