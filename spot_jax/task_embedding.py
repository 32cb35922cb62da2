"""Task embeddings of tuned parameters (TuPaTE, Zhou et al. 2022), with numpy alone.

Shared by `spot_jax.methods` (a method's `embedding`) and `spot_jax.library` (keys computed from
a run's saved .npy files), so the library needs no JAX. Trainables are named by dotted paths as
in the run directory ('encoder.layers_0.attention.query.lora_a').

  prompt       prompt-like methods: the prompt [L, embed] itself (SPoT's task embedding)
  layer_mean   each layer's parameters flattened and concatenated (path order), averaged over
               the layers of a stack; the encoder's and decoder's averages concatenated (the
               paper's definition) -> [D]
  concat       every parameter flattened and concatenated in layer order (the authors'
               released extraction script) -> [D]
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

EMBEDDING_KINDS = ("layer_mean", "concat")
PROMPT_EMBEDDING = "prompt"  # the key of a prompt-like method: its prompt [L, embed].
_LAYER = re.compile(r"^(encoder|decoder)\.layers_(\d+)\.")


class EmbeddingError(ValueError):
  """An unknown embedding kind, or parameters it cannot embed."""


def embedding_kind(prompt_like: bool, kind: str | None = None) -> str:
  """The embedding kind a method's keys use: `prompt` for a prompt-like method (its runs save
  `encoder.prompt.prompt.prompt` [L, embed]; any `kind` asked is ignored), else `kind` (default
  `layer_mean`), checked. `spot_jax.methods.embedding_kind` asks it by method name."""
  if prompt_like:
    return PROMPT_EMBEDDING
  kind = kind or EMBEDDING_KINDS[0]
  if kind not in EMBEDDING_KINDS:
    raise EmbeddingError(f"Unknown embedding kind {kind!r}; choose one of {EMBEDDING_KINDS}")
  return kind


def flat_arrays(trainables: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  """{dotted path: float32 array} of a nested or already flat (dotted) tree of arrays."""
  out = {}
  for key, value in trainables.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flat_arrays(value, path + "."))
    else:
      out[path] = np.asarray(value, np.float32)
  return out


def layer_embedding(trainables: Mapping[str, Any], kind: str = "layer_mean") -> np.ndarray:
  """The task embedding [D] float32 of per-layer parameters (nested or {dotted path: array}).

  `layer_mean` needs every parameter to sit in a layer (`encoder|decoder.layers_<i>.`) and the
  layers of a stack to have the same parameter sizes; `concat` takes any parameters.
  """
  if kind not in EMBEDDING_KINDS:
    raise EmbeddingError(f"Unknown embedding kind {kind!r}; choose one of {EMBEDDING_KINDS}")
  flat = {p: v.reshape(-1) for p, v in flat_arrays(trainables).items()}
  if not flat:
    raise EmbeddingError("No parameters to embed")

  def order(path: str):
    m = _LAYER.match(path)
    return (m.group(1), int(m.group(2)), path) if m else ("~", -1, path)

  paths = sorted(flat, key=order)
  if kind == "concat":
    return np.concatenate([flat[p] for p in paths])
  per_layer: dict[tuple[str, int], list[np.ndarray]] = {}
  for path in paths:
    m = _LAYER.match(path)
    if not m:
      raise EmbeddingError(f"Trainable {path} belongs to no layer; use the 'concat' embedding")
    per_layer.setdefault((m.group(1), int(m.group(2))), []).append(flat[path])
  stacks: dict[str, list[np.ndarray]] = {}
  for (stack, _), leaves in sorted(per_layer.items()):
    stacks.setdefault(stack, []).append(np.concatenate(leaves))
  out = []
  for stack, rows in sorted(stacks.items()):
    sizes = sorted({row.size for row in rows})
    if len(sizes) > 1:
      raise EmbeddingError(f"The {stack} layers hold parameters of different sizes {sizes}; "
                           "their mean is undefined: use the 'concat' embedding")
    out.append(np.mean(np.stack(rows), axis=0))
  return np.concatenate(out).astype(np.float32)
