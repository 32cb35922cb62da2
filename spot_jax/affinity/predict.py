"""A trained affinity head as a scorer: `affinity:PATH` in `spot_jax.library.scorers`.

PATH is a head directory (head.json + best_params.npz) or a directory of them (`seed_*/`, as
`spot-jax affinity train --seeds` writes): the scorer then averages the heads' predicted gains.
A cross-validation directory (`affinity train --cross_validate`: fold directories of `seed_*/`
heads) scores each target with the heads of the fold that held it out.
Scores are predicted gains (the target's score points over its baseline), higher = better.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from spot_jax.affinity import folds as folds_lib
from spot_jax.affinity import train as train_lib
from spot_jax.library.similarity import LibraryError
from spot_jax.library.scorers import check_keys

SCORE_BATCH = 256  # pairs per forward pass (one compiled shape).


@dataclasses.dataclass
class AffinityHead:
  """One trained head: record (head.json), trainable and frozen params, the jitted forward."""

  path: str
  record: dict[str, Any]
  trainable: Any
  frozen: Any
  predict: Any

  @classmethod
  def load(cls, path: str) -> AffinityHead:
    record_path = os.path.join(path, train_lib.HEAD_JSON)
    try:
      with open(record_path) as f:
        record = json.load(f)
    except FileNotFoundError:
      raise LibraryError(f"{path} is no affinity head (no {train_lib.HEAD_JSON}); train one "
                         "with `spot-jax affinity train`") from None
    if record.get("format") != train_lib.FORMAT_NAME:
      raise LibraryError(f"{record_path} is not a {train_lib.FORMAT_NAME!r} record")
    cfg = train_lib.AffinityConfig(**record["config"])
    length, emb = int(record["prompt_length"]), int(record["emb_dim"])
    if cfg.variant == "encoder" and cfg.freeze_backbone:  # the backbone is rebuilt, not stored.
      head, _, frozen = train_lib.initial_params(cfg, train_lib.load_backbone(cfg),
                                                 (length, length), emb)
    else:
      from spot_jax.affinity.model import make_head
      from spot_jax.models.config import get_config
      config = get_config(cfg.model) if cfg.variant == "encoder" else None
      head, frozen = make_head(cfg.variant, cfg.hidden_dim, config), {}
    with np.load(os.path.join(path, train_lib.BEST_PARAMS), allow_pickle=False) as data:
      trainable = train_lib.unflatten({k: data[k] for k in data.files})
    return cls(path, record, trainable, frozen, train_lib.make_score(head))

  @property
  def key_shape(self) -> tuple[int, int]:
    return int(self.record["prompt_length"]), int(self.record["emb_dim"])

  def gains(self, target_key: np.ndarray, source_keys: np.ndarray) -> np.ndarray:
    """Predicted gains [N] of one target key [L, E] with each of source_keys [N, L, E], in
    batches of SCORE_BATCH, a smaller last one padded to a power of two (few compiled shapes)."""
    target_key, source_keys = np.asarray(target_key, np.float32), np.asarray(source_keys,
                                                                               np.float32)
    for shape in (target_key.shape, source_keys.shape[1:]):
      if shape != self.key_shape:
        raise LibraryError(f"The affinity head {self.path} takes keys [L, E] = "
                           f"{list(self.key_shape)}; got {list(shape)}")
    scale = np.float32(self.record["input_scale"])
    out = []
    for start in range(0, len(source_keys), SCORE_BATCH):
      chunk = source_keys[start:start + SCORE_BATCH]
      pad = min(SCORE_BATCH, 1 << (len(chunk) - 1).bit_length()) - len(chunk)
      chunk = np.pad(chunk, ((0, pad), (0, 0), (0, 0))) if pad else chunk
      pred = self.predict(self.trainable, self.frozen, target_key, chunk, scale)
      out.append(np.asarray(pred)[:len(chunk) - pad])
    pred = np.concatenate(out) if out else np.zeros(0, np.float32)
    return pred * float(self.record["label_std"]) + float(self.record["label_mean"])


@dataclasses.dataclass
class HeadScorer:
  """Scores pool entries by the mean predicted gain of one or more heads."""

  heads: Sequence[AffinityHead]
  name: str

  def score(self, target_key, pool_keys, *, target=None, pool_tasks=None) -> np.ndarray:
    target_key, pool_keys = check_keys(target_key, pool_keys, self.name)
    return np.mean([h.gains(target_key, pool_keys) for h in self.heads],
                   axis=0).astype(np.float64)


@dataclasses.dataclass
class HeldOutScorer:
  """Cross-validation: each target is scored by the heads of the fold that held it out (never
  by a head that trained on it). by_target: {target: that fold's HeadScorer}."""

  by_target: Mapping[str, HeadScorer]
  name: str

  def score(self, target_key, pool_keys, *, target=None, pool_tasks=None) -> np.ndarray:
    if target not in self.by_target:
      raise LibraryError(f"No head of {self.name} held out target {target!r}; held out: "
                         f"{sorted(self.by_target)}")
    return self.by_target[target].score(target_key, pool_keys, target=target,
                                        pool_tasks=pool_tasks)


def held_out_folds(folds: Sequence[Sequence[AffinityHead]], name: str) -> HeldOutScorer:
  """The HeldOutScorer of folds (each fold: the seed heads of one `affinity train`, sharing
  their held-out targets); a target held out by two folds is an error."""
  by_target: dict[str, HeadScorer] = {}
  for heads in folds:
    held = [tuple(h.record.get("val_targets") or ()) for h in heads]
    if not held[0] or len(set(held)) > 1:
      raise LibraryError(f"The heads {[h.path for h in heads]} do not share one set of "
                         "held-out targets; train each fold with one `affinity train`")
    for target in held[0]:
      if target in by_target:
        raise LibraryError(f"Target {target!r} is held out by two folds "
                           f"({by_target[target].name} and {heads[0].path}); give each "
                           "target to one fold")
      by_target[target] = HeadScorer(heads, heads[0].path)
  return HeldOutScorer(by_target, name)


def head_dirs(path: str) -> list[str]:
  """[path] when it is a head, else its `seed_*` heads (sorted)."""
  if os.path.exists(os.path.join(path, train_lib.HEAD_JSON)):
    return [path]
  found = sorted(os.path.dirname(p) for p in
                 glob.glob(os.path.join(path, "*", train_lib.HEAD_JSON)))
  if not found:
    raise LibraryError(f"No affinity head in {path} (no {train_lib.HEAD_JSON} in it or in its "
                       "subdirectories); train one with `spot-jax affinity train`")
  return found


def fold_dirs(path: str) -> list[str] | None:
  """The fold directories of a cross-validation directory (`spot-jax affinity train
  --cross_validate`, `folds.train_held_out_heads`): those its folds.json lists, else every
  subdirectory holding `seed_*` heads; None when `path` is a head or a directory of heads."""
  record = folds_lib.read_folds(path)
  if record is not None:
    return [os.path.join(path, fold["dir"]) for fold in record["folds"]]
  if os.path.exists(os.path.join(path, train_lib.HEAD_JSON)) or glob.glob(
      os.path.join(path, "*", train_lib.HEAD_JSON)):
    return None
  found = sorted({os.path.dirname(os.path.dirname(p)) for p in
                  glob.glob(os.path.join(path, "*", "seed_*", train_lib.HEAD_JSON))})
  return found or None


def load_folds(paths: Sequence[str]) -> tuple[list[list[AffinityHead]], bool]:
  """(folds, cross-validated) of `affinity evaluate --head PATH...`: each path is a head
  directory (one fold) or a cross-validation directory (its folds); several folds, or any
  cross-validation directory, are scored by `held_out_folds`."""
  folds, cross_validated = [], len(paths) > 1
  for path in paths:
    dirs = fold_dirs(path)
    cross_validated |= dirs is not None
    folds += [[AffinityHead.load(d) for d in fold_heads(path, f)] for f in (dirs or [path])]
  return folds, cross_validated


def fold_heads(path: str, fold_dir: str) -> list[str]:
  """The head directories of one fold of PATH: the `seed_*` heads folds.json lists when PATH
  has one (heads of seeds no longer listed are stale and ignored), else every one
  (`head_dirs`)."""
  record = folds_lib.read_folds(path)
  if record is None:
    return head_dirs(fold_dir)
  heads = [os.path.join(fold_dir, f"seed_{seed}") for seed in record["seeds"]]
  missing = [h for h in heads if not os.path.exists(os.path.join(h, train_lib.HEAD_JSON))]
  if missing:
    raise LibraryError(f"{os.path.join(path, folds_lib.FOLDS_JSON)} lists heads that are "
                       f"missing: {', '.join(missing)}; rerun the `spot-jax affinity train "
                       "--cross_validate` command that wrote it")
  return heads


def selected_on(heads: Sequence[AffinityHead], targets: Sequence[str]) -> list[str]:
  """The `targets` some head was early-stopped or best-step-selected on: held out as its
  validation targets while training evaluated them (`eval_period` > 0, a finite best score).
  Heads of `train.held_out_config` (cross-validation) never are."""
  chosen = set()
  for head in heads:
    if (head.record["config"].get("eval_period") and
        head.record.get("best_val_spearman") is not None):
      chosen |= set(head.record.get("val_targets") or ()) & set(targets)
  return sorted(chosen)


def load_scorer(path: str) -> HeadScorer | HeldOutScorer:
  """The `affinity:PATH` scorer: a cross-validation directory's folds score each target with
  the fold that held it out."""
  folds, cross_validated = load_folds([path])
  name = f"affinity:{path}"
  return held_out_folds(folds, name) if cross_validated else HeadScorer(folds[0], name)
