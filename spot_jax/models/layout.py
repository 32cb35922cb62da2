"""The two layouts of a stack's layer params, and conversion between them.

Unscanned (T5X's t5x/examples/t5 network, every released T5 1.1 checkpoint): one subtree per
layer, `encoder/layers_{i}/...`. Scanned (T5X's scalable_t5 network with `scan_layers=True`):
one subtree `encoder/layers/...` whose leaves carry the layers along `SCAN_AXIS` (T5X's
`param_scan_axis` 1: a kernel [in, out] is stored [in, layers, out]; logical axis name
'layers'). The conversion is exact (stack / index), so a checkpoint read in one layout and
written in the other round-trips bit-equal.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from spot_jax.models.config import T5Config
from spot_jax.models.t5 import SCAN_AXIS

STACKS = ("encoder", "decoder")
_LAYER = re.compile(r"layers_(\d+)$")


def is_scanned(params: Mapping[str, Any]) -> bool:
  return any("layers" in params.get(stack, {}) for stack in STACKS)


def _stack_leaves(trees: list[Any], xp: Any) -> Any:
  if isinstance(trees[0], Mapping):
    return {k: _stack_leaves([t[k] for t in trees], xp) for k in trees[0]}
  return xp.stack(trees, axis=SCAN_AXIS)


def _take(tree: Any, i: int) -> Any:
  if isinstance(tree, Mapping):
    return {k: _take(v, i) for k, v in tree.items()}
  return tree[(slice(None),) * SCAN_AXIS + (i,)]


def _first_leaf(tree: Any) -> Any:
  while isinstance(tree, Mapping):
    tree = next(iter(tree.values()))
  return tree


def _xp(tree: Any) -> Any:
  """numpy for host trees, jax.numpy when a leaf is a jax array (stays on its device)."""
  import jax
  leaves = jax.tree.leaves(tree)
  if leaves and isinstance(leaves[0], jax.Array):
    import jax.numpy as jnp
    return jnp
  return np


def to_scanned(params: Mapping[str, Any]) -> dict[str, Any]:
  """`layers_{i}` subtrees -> one stacked `layers` subtree per stack (no-op when scanned)."""
  out = dict(params)
  for stack in STACKS:
    if stack not in params or "layers" in params[stack]:
      continue
    node = dict(params[stack])
    indices = sorted(int(m.group(1)) for k in node if (m := _LAYER.fullmatch(k)))
    if indices != list(range(len(indices))):
      raise ValueError(f"{stack} layers are not numbered 0..N-1: {indices}")
    layers = [node.pop(f"layers_{i}") for i in indices]
    node["layers"] = _stack_leaves(layers, _xp(layers))
    out[stack] = node
  return out


def to_unscanned(params: Mapping[str, Any]) -> dict[str, Any]:
  """One stacked `layers` subtree per stack -> `layers_{i}` subtrees (no-op when unscanned)."""
  out = dict(params)
  for stack in STACKS:
    if stack not in params or "layers" not in params[stack]:
      continue
    node = dict(params[stack])
    stacked = node.pop("layers")
    count = np.shape(_first_leaf(stacked))[SCAN_AXIS]
    for i in range(count):
      node[f"layers_{i}"] = _take(stacked, i)
    out[stack] = node
  return out


def to_layout(params: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
  """`params` in the layout `config.scan_layers` asks for, whichever layout they are in."""
  return to_scanned(params) if config.scan_layers else to_unscanned(params)
