"""The soft prompt: a [length, embed] matrix prepended to the embedded encoder input.

The parameter lives at `encoder/prompt/prompt/prompt` as in T5X prompt tuning. Initialisers are
pure functions returning a float32 array [length, embed]; put the result into a param tree with
`with_prompt`. SPoT's default for source prompts is `from_sampled_vocab`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PROMPT_PATH = ("encoder", "prompt", "prompt", "prompt")
DEFAULT_PROMPT_LENGTH = 100
SAMPLED_VOCAB_SIZE = 5000


class PromptError(ValueError):
  """A prompt of the wrong shape or dtype, or an unreadable prompt file."""


class _PromptParam(nn.Module):
  length: int
  emb_dim: int

  @nn.compact
  def __call__(self) -> Array:
    return self.param("prompt", nn.initializers.uniform(scale=1.0),
                      (self.length, self.emb_dim), jnp.float32)


class Prompt(nn.Module):
  """Prepends the prompt to embedded inputs; prompt positions count as real tokens."""

  length: int
  emb_dim: int

  @nn.compact
  def __call__(self, embedded: Array, mask: Array) -> tuple[Array, Array]:
    """embedded [b, s, e], mask [b, s] -> ([b, L+s, e], [b, L+s])."""
    return prepend(_PromptParam(self.length, self.emb_dim, name="prompt")(), embedded, mask)


class PromptEncoder(nn.Module):
  """A prompt reparametrised by a two-layer feed-forward network over a prompt table.

  prompt = relu(table W_1 + b_1) W_2 + b_2, `table` [length, embed], `hidden` [embed, hidden],
  `output` [hidden, embed]; the prompt is prepended like `Prompt` (the prompt_encoder method).
  """

  length: int
  emb_dim: int
  hidden: int

  def setup(self):
    self.table = self.param("table", nn.initializers.uniform(scale=1.0),
                            (self.length, self.emb_dim), jnp.float32)
    self.hidden_layer = nn.Dense(self.hidden, name="hidden")
    self.output_layer = nn.Dense(self.emb_dim, name="output")

  def prompt(self) -> Array:
    """The encoder's output [length, embed]: the prompt the frozen model sees."""
    return self.output_layer(nn.relu(self.hidden_layer(self.table)))

  def __call__(self, embedded: Array, mask: Array) -> tuple[Array, Array]:
    """embedded [b, s, e], mask [b, s] -> ([b, L+s, e], [b, L+s])."""
    return prepend(self.prompt(), embedded, mask)


def prepend(prompt: Array, embedded: Array, mask: Array) -> tuple[Array, Array]:
  """prompt [L, e], embedded [b, s, e], mask [b, s] -> ([b, L+s, e], [b, L+s]); prompt
  positions count as real tokens."""
  batch, length = embedded.shape[0], prompt.shape[0]
  prompt = jnp.broadcast_to(prompt.astype(embedded.dtype), (batch,) + prompt.shape)
  prompt_mask = jnp.ones((batch, length), dtype=mask.dtype)
  return (jnp.concatenate([prompt, embedded], axis=1),
          jnp.concatenate([prompt_mask, mask], axis=1))


# ----------------------------------------------------------------------------- param trees


def get_prompt(params: Mapping[str, Any]) -> Array:
  """The prompt [L, e] stored in a param tree."""
  node: Any = params
  for key in PROMPT_PATH:
    if key not in node:
      raise PromptError(f"No prompt in params: missing {'/'.join(PROMPT_PATH)}")
    node = node[key]
  return node


def with_prompt(params: Mapping[str, Any], prompt: Array) -> dict[str, Any]:
  """A copy of `params` (nested dicts) with the prompt set to `prompt` [L, e]."""
  out = dict(params)
  node = out
  for key in PROMPT_PATH[:-1]:
    node[key] = dict(node.get(key, {}))
    node = node[key]
  node[PROMPT_PATH[-1]] = prompt
  return out


def without_prompt(params: Mapping[str, Any]) -> dict[str, Any]:
  """A copy of `params` with the prompt removed (the frozen model's parameters)."""
  out = dict(params)
  encoder = dict(out.get("encoder", {}))
  encoder.pop("prompt", None)
  out["encoder"] = encoder
  return out


# ----------------------------------------------------------------------------- initialisers


def from_sampled_vocab(key: Array, embedding: Array, length: int,
                       population_size: int = SAMPLED_VOCAB_SIZE) -> Array:
  """Rows drawn without replacement from the first `population_size` rows of `embedding`."""
  population_size = min(population_size, embedding.shape[0])
  rows = jax.random.choice(key, population_size, (length,),
                           replace=length > population_size)
  return jnp.asarray(embedding, jnp.float32)[rows]


def from_class_labels(key: Array, embedding: Array, length: int,
                      label_token_ids: Sequence[Sequence[int]],
                      population_size: int = SAMPLED_VOCAB_SIZE) -> Array:
  """Row i < len(labels) is the mean embedding of label i's sub-tokens; the rest sampled vocab.

  `label_token_ids` are the labels' token ids without EOS, e.g. vocabulary.encode("entailment").
  """
  if len(label_token_ids) > length:
    raise PromptError(f"{len(label_token_ids)} class labels do not fit a prompt of length {length}")
  if any(len(ids) == 0 for ids in label_token_ids):
    raise PromptError("A class label encodes to no tokens")
  table = jnp.asarray(embedding, jnp.float32)
  label_rows = jnp.stack([table[jnp.asarray(ids)].mean(axis=0) for ids in label_token_ids])
  sampled = from_sampled_vocab(key, table, length, population_size)
  return sampled.at[: len(label_token_ids)].set(label_rows)


def from_array(array: Any, length: int, emb_dim: int, source: str = "array") -> Array:
  """Checks a [length, emb_dim] floating array and returns it as float32."""
  array = np.asarray(array)
  if array.dtype.kind != "f" and array.dtype.name != "bfloat16":
    raise PromptError(f"Prompt from {source} has dtype {array.dtype}; expected a float array")
  if array.shape != (length, emb_dim):
    raise PromptError(f"Prompt from {source} has shape {array.shape}; the model expects "
                      f"({length}, {emb_dim}) = (PROMPT_LENGTH, embedding dim)")
  if not np.all(np.isfinite(array.astype(np.float32))):
    raise PromptError(f"Prompt from {source} contains NaN or infinite values")
  return jnp.asarray(array, jnp.float32)


def from_file(path: str | os.PathLike, length: int, emb_dim: int) -> Array:
  """Loads a `.npy` prompt (e.g. a T5X `numpy_checkpoints/.../encoder.prompt.prompt.prompt`)."""
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      array = np.load(f, allow_pickle=False)
  except FileNotFoundError as e:
    raise PromptError(f"Prompt file {path!r} does not exist") from e
  except (ValueError, EOFError, OSError) as e:  # pickles, empty, truncated or non-npy files.
    raise PromptError(f"Prompt file {path!r} is not a plain .npy array "
                      f"({type(e).__name__}: {e}); pickled files are refused") from e
  return from_array(array, length, emb_dim, source=f"file {path!r}")


def uniform(key: Array, length: int, emb_dim: int, scale: float = 0.5) -> Array:
  """[length, emb_dim] uniform in [0, scale): Flax `linen.initializers.uniform(scale)`, which
  prompt-tuning's configs use with scale 0.5 (e.g. `configs/extended/models/*prompt.gin`)."""
  return nn.initializers.uniform(scale)(key, (length, emb_dim), jnp.float32)
