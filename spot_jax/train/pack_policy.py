"""Which runs may train packed in one job (spot_jax/train/packed.py): the settings they must
share, and how many to pack by default."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax

from spot_jax.models.config import get_config
from spot_jax.train import packed as packed_lib
from spot_jax.train.config import TrainConfig


PACK_FREE_FIELDS = frozenset({
    "model_dir", "task", "seed", "prompt_init", "prompt_file", "class_labels", "init_from",
    "max_train_examples", "max_eval_examples", "eval_batch_size", "eval_metric", "eval_mode",
    "key_step", "keep_train_states", "overwrite"})


def pack_key(cfg: TrainConfig) -> tuple[tuple[str, Any], ...]:
  """What runs packed together must share: every field but `PACK_FREE_FIELDS`, plus the seed
  when the frozen model is randomly initialised (the seed then picks the frozen model)."""
  key = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
         if f.name not in PACK_FREE_FIELDS}
  if not cfg.initial_checkpoint:
    key["seed"] = cfg.seed
  return tuple(sorted((k, repr(v)) for k, v in key.items()))


def default_pack_size(cfg: TrainConfig) -> int:
  """`spot_jax.train.packed.default_pack_size` for runs like `cfg` on this host: the default
  device's memory limit (host memory on CPU) and the named model's weights."""
  config = get_config(cfg.model)
  memory = 0
  try:
    memory = int((jax.devices()[0].memory_stats() or {}).get("bytes_limit", 0))
  except Exception:  # noqa: BLE001 (CPU backends report no memory stats)
    pass
  if not memory:
    try:
      memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
      memory = 2**33
  d, f, v = config.emb_dim, config.mlp_dim, config.vocab_size
  inner = config.num_heads * config.head_dim
  layers = config.num_encoder_layers + config.num_decoder_layers
  frozen = 4 * (2 * v * d + layers * (4 * d * inner + 3 * d * f) + config.num_decoder_layers
                * 4 * d * inner)
  return packed_lib.default_pack_size(
      config, cfg.batch_size, cfg.feature_lengths["inputs"], cfg.feature_lengths["targets"],
      cfg.prompt_length, memory_bytes=memory, frozen_bytes=frozen,
      backend=jax.default_backend())


def check_packable(cfgs: Sequence[TrainConfig]) -> None:
  """Refuses runs that cannot share one step, naming the first setting that differs."""
  if not cfgs:
    raise ValueError("Nothing to pack: no runs")
  first = dict(pack_key(cfgs[0]))
  dirs = [os.path.abspath(os.path.expanduser(c.model_dir)) for c in cfgs]
  if len(set(dirs)) != len(dirs):
    shared = sorted(d for d in dirs if dirs.count(d) > 1)[0]
    raise ValueError(f"Packed runs share a MODEL_DIR: {shared}; give each run its own")
  for cfg in cfgs[1:]:
    for name, value in pack_key(cfg):
      if first.get(name) != value:
        raise ValueError(f"Runs {cfgs[0].model_dir} and {cfg.model_dir} cannot be packed: "
                         f"{name} is {first.get(name)} vs {value}; pack only runs with the "
                         "same model, lengths, batch, steps and optimizer settings")
