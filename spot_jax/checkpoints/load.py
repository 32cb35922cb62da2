"""One entry point for frozen-model weights: T5X or Hugging Face checkpoints -> params + config.

T5X checkpoints carry no model config: pass a named config (`get_config("base")`) to validate
shapes against, or let the config be inferred from the shapes (max distance defaults to 128).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from spot_jax.models.config import T5Config, released_checkpoint_step
from spot_jax.models.layout import to_unscanned
from spot_jax.models.t5 import T5
from spot_jax.models.prompts import without_prompt


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """Frozen weights (nested dict of arrays, no prompt), their config, and the stored step."""

  params: dict[str, Any]
  config: T5Config
  step: int | None
  source: str
  fingerprint: str


HF_FILE_SUFFIXES = (".safetensors", ".bin", ".json")


def is_hf_checkpoint(path: str) -> bool:
  """A Hugging Face directory (config.json inside) or one of its weight/config/index files."""
  if os.path.isdir(path):
    return os.path.exists(os.path.join(path, "config.json"))
  return path.endswith(HF_FILE_SUFFIXES)


def infer_config(params: dict[str, Any], **overrides: Any) -> T5Config:
  """A T5Config matching the shapes of a T5X-named param tree."""
  enc, dec = params["encoder"], params["decoder"]
  vocab, emb_dim = params["token_embedder"]["embedding"].shape
  num_heads, num_buckets = enc["relpos_bias"]["rel_embedding"].shape
  query = enc["layers_0"]["attention"]["query"]["kernel"]
  count = lambda stack: sum(bool(re.fullmatch(r"layers_\d+", k)) for k in stack)
  fields = dict(vocab_size=vocab, emb_dim=emb_dim, num_heads=num_heads,
                head_dim=query.shape[1] // num_heads,
                mlp_dim=enc["layers_0"]["mlp"]["wi_0"]["kernel"].shape[1],
                num_encoder_layers=count(enc), num_decoder_layers=count(dec),
                relative_attention_num_buckets=num_buckets)
  fields.update(overrides)
  return T5Config(**fields)


def expected_shapes(config: T5Config) -> dict[str, Any]:
  """The param tree of shapes (no prompt) that `config` implies."""
  tokens = jnp.ones((1, 4), jnp.int32)
  shapes = jax.eval_shape(lambda: T5(config).init(jax.random.PRNGKey(0), tokens, tokens))
  return jax.tree_util.tree_map(lambda s: tuple(s.shape), shapes["params"])


def validate_shapes(params: dict[str, Any], config: T5Config, source: str) -> None:
  """Raises ValueError naming `source` and every missing, unexpected or mis-shaped variable."""
  want = dict(_flatten(expected_shapes(config)))
  have = {k: tuple(np.shape(v)) for k, v in _flatten(params)}
  problems = [f"{k}: checkpoint {have[k]} vs config {s}"
              for k, s in want.items() if k in have and have[k] != s]
  problems += [f"missing {k} {s}" for k, s in want.items() if k not in have]
  problems += [f"unexpected {k} {s}" for k, s in have.items() if k not in want]
  if problems:
    shown = "; ".join(problems[:8]) + (f"; ... ({len(problems)} in all)" if len(problems) > 8 else "")
    try:
      found = infer_config(params)
      summary = (f" The checkpoint has emb_dim {found.emb_dim}, {found.num_encoder_layers}+"
                 f"{found.num_decoder_layers} layers, {found.num_heads} heads, mlp_dim "
                 f"{found.mlp_dim}, vocab {found.vocab_size}; the config {config.emb_dim}, "
                 f"{config.num_encoder_layers}+{config.num_decoder_layers}, {config.num_heads}, "
                 f"{config.mlp_dim}, {config.vocab_size}.")
    except (KeyError, IndexError, TypeError, ValueError):
      summary = ""
    raise ValueError(f"Checkpoint {source} does not match the model config:{summary} {shown}")


def fingerprint(params: dict[str, Any]) -> str:
  """A short identity of frozen weights: hash of names, shapes and a few sampled values."""
  digest = hashlib.sha256()
  for name, value in _flatten(params):
    array = np.asarray(value)
    digest.update(f"{name}:{array.shape}:{array.dtype}".encode())
    flat = array.reshape(-1)
    digest.update(np.asarray(flat[:: max(1, flat.size // 64)], np.float32).tobytes())
  return digest.hexdigest()[:16]


def load_model(path: str | os.PathLike, config: T5Config | None = None,
               dtype: Any = None) -> LoadedModel:
  """Loads a T5X checkpoint dir/file or a Hugging Face T5 directory (config.json + weights).

  A prompt stored in the checkpoint is dropped (load it with `read_prompt`).
  """
  from spot_jax.checkpoints import hf, t5x
  path = os.fspath(path)
  if is_hf_checkpoint(path):
    params, inferred = hf.read_hf_checkpoint(path, dtype=dtype)
    step = None
  else:
    # A scanned-layout checkpoint (T5X scan_layers) is read in the unscanned one; the trainer
    # puts it back in the layout the run asks for (`models.layout.to_layout`).
    params = to_unscanned(without_prompt(t5x.read_checkpoint(path, dtype=dtype)))
    inferred = infer_config(params)
    step = t5x.read_step(path)
  config = config or inferred
  validate_shapes(params, config, path)
  return LoadedModel(params=params, config=config, step=step, source=path,
                     fingerprint=fingerprint(params))


def step_offset(loaded: LoadedModel | None, model_name: str) -> tuple[int, str]:
  """(Adafactor's step offset for a run on `loaded`, where it came from).

  T5X restores the step stored with the frozen weights, and Adafactor's second-moment decay
  continues from it (`spot_jax.train.optimizer`). A T5X checkpoint names its step; a Hugging Face
  copy of the LM-adapted weights does not, so the offset is the named config's released step
  (1,100,000 for `t5_1_1_lm100k_*`, `RELEASED_CHECKPOINT_STEPS`). When neither says, the offset
  is 0 with a warning (set STEP_OFFSET to silence it). No checkpoint (a random frozen model): 0.
  """
  if loaded is None:
    return 0, "no checkpoint"
  if loaded.step is not None:
    return int(loaded.step), "checkpoint"
  released = released_checkpoint_step(model_name)
  if released is not None:
    return released, f"named config {model_name!r}"
  warnings.warn(f"{loaded.source} stores no training step and the model config {model_name!r} "
                "names no released checkpoint step, so Adafactor's decay starts at step 0, not "
                "where T5X would continue it; set STEP_OFFSET (TrainConfig.step_offset) to the "
                "step these weights were trained for.", stacklevel=2)
  return 0, "unknown"


def _flatten(tree: dict[str, Any]) -> list[tuple[str, Any]]:
  return sorted(traverse_util.flatten_dict(tree, sep="/").items())
