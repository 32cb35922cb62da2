"""Cross-validation folds of the affinity head: heads trained per fold of held-out targets
(never on a pair touching them), reused while their config and data are unchanged, and
OUT_DIR/folds.json, the record of the folds that `predict.load_folds` reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from spot_jax.affinity import train as train_lib
from spot_jax.fileio import atomic_write_bytes

FOLDS_JSON, FOLDS_FORMAT = "folds.json", "spot-jax affinity folds"


def reusable(head_dir: str, cfg: train_lib.AffinityConfig, fingerprint: str) -> bool:
  """Whether HEAD_DIR holds a head trained with `cfg` on the data of `fingerprint`."""
  try:
    with open(os.path.join(head_dir, train_lib.HEAD_JSON)) as f:
      record = json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return False
  return (record.get("data_fingerprint") == fingerprint
          and record.get("config") == json.loads(json.dumps(dataclasses.asdict(cfg)))
          and os.path.exists(os.path.join(head_dir, train_lib.BEST_PARAMS)))


def train_held_out_heads(cfg: train_lib.AffinityConfig, gains: dict,
                         task_keys: dict[str, np.ndarray],
                         out_dir: str, seeds: Sequence[int],
                         folds: Sequence[Sequence[str]] | None = None, *,
                         log: bool = False) -> dict[str, list[str]]:
  """Cross-validated heads: for each fold of held-out targets (default: leave one target out),
  the heads of `seeds` in OUT_DIR/<targets joined by +>/seed_<s>/, trained only on pairs that
  touch none of the fold's targets (`data.make_split`).

  The held-out gains never reach training: the heads train `train.held_out_config(cfg)` (no
  validation, so no early stopping or best-step selection on the held-out targets; the last
  step's params). A head whose record matches the config and the training data
  (`train.training_fingerprint`) is reused; a stale one is trained again from scratch.
  OUT_DIR/folds.json lists the folds (directory, held-out targets, training pairs per seed);
  `predict.fold_dirs` reads it. Fold directories of other folds already in OUT_DIR are kept
  but no longer listed.
  Returns {fold directory: its held-out targets}; `predict.held_out_folds` scores with them.
  """
  import shutil

  from spot_jax.affinity import data as data_lib
  cfg = train_lib.held_out_config(cfg)
  targets = sorted({t for _, t in gains})
  folds = [[t] for t in targets] if folds is None else [sorted(f) for f in folds]
  seen = [t for fold in folds for t in fold]
  if len(seen) != len(set(seen)) or not set(seen) <= set(targets):
    raise data_lib.AffinityDataError(f"Folds {folds} must hold each target of {targets} at "
                                     "most once")
  out, listed = {}, []
  for fold in folds:
    fold_dir = os.path.join(out_dir, fold_name(fold))
    stale, pairs = [], {}
    for seed in seeds:
      split = data_lib.make_split(gains, fold, cfg.num_pairs, int(seed))  # as train_seeds's.
      pairs[str(seed)] = len(split.train)
      head_dir = os.path.join(fold_dir, f"seed_{seed}")
      if not reusable(head_dir, dataclasses.replace(cfg, seed=int(seed)),
                       train_lib.training_fingerprint(split.train, gains, task_keys)):
        stale.append(head_dir)
    for head_dir in stale:  # another config or other data (or never trained): from scratch.
      shutil.rmtree(head_dir, ignore_errors=True)
    if stale:
      train_lib.train_seeds(cfg, gains, task_keys, fold_dir, seeds, val_targets=fold, log=log)
    out[fold_dir] = fold
    listed.append({"dir": os.path.basename(fold_dir), "held_out": fold, "train_pairs": pairs})
  record = {"format": FOLDS_FORMAT, "seeds": [int(s) for s in seeds], "folds": listed}
  atomic_write_bytes(os.path.join(out_dir, FOLDS_JSON),
                     (json.dumps(record, indent=2) + "\n").encode())
  return out


def read_folds(out_dir: str) -> dict[str, Any] | None:
  """OUT_DIR/folds.json of `train_held_out_heads` ({"seeds", "folds": [{"dir", "held_out",
  "train_pairs": {seed: count}}]}), None when there is none."""
  path = os.path.join(out_dir, FOLDS_JSON)
  try:
    with open(path) as f:
      record = json.load(f)
  except FileNotFoundError:
    return None
  if record.get("format") != FOLDS_FORMAT:
    raise ValueError(f"{path} is not a {FOLDS_FORMAT!r} record")
  return record


def fold_name(fold: Sequence[str]) -> str:
  """A fold's directory name: its targets joined by +, or fold_<sha256 prefix> when that would
  be too long for a file name."""
  import hashlib
  name = "+".join(fold)
  return name if len(name) <= 128 else "fold_" + hashlib.sha256(name.encode()).hexdigest()[:16]
