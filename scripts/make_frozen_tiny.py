"""Makes tests/golden/tiny_byte_frozen.npz: the tiny_byte frozen model pretrained on the
synthetic pretraining mixture (1500 steps, seed 0; about 5-10 minutes on 2 CPU cores).

  python scripts/make_frozen_tiny.py

Tests that need a frozen model a prompt can actually steer (a trained prompt must beat an
untrained one) load it instead of pretraining for minutes; `spot-jax demo` runs the same
pretraining itself.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from flax import traverse_util

from spot_jax.checkpoints import t5x
from spot_jax.tasks_util import register_all_tasks
from spot_jax.train.pretrain import PretrainConfig, pretrain

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "tiny_byte_frozen.npz"
PRETRAIN = PretrainConfig(output_dir="", task="synthetic_pretraining", train_steps=1500, seed=0)


def main() -> None:
  register_all_tasks()
  with tempfile.TemporaryDirectory() as tmp:
    import dataclasses
    checkpoint = pretrain(dataclasses.replace(PRETRAIN, output_dir=tmp))
    params = t5x.read_checkpoint(checkpoint)
  flat = traverse_util.flatten_dict(params, sep="/")
  np.savez_compressed(OUT, **{k: np.asarray(v, np.float32) for k, v in flat.items()})
  print(f"wrote {OUT} ({OUT.stat().st_size / 2**20:.2f} MiB)")


if __name__ == "__main__":
  main()
