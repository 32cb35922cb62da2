"""Makes tests/golden/tiny_byte_frozen.npz: the tiny_byte frozen model pretrained on the
synthetic pretraining mixture (1500 steps, seed 0; about 5-10 minutes on 2 CPU cores).

  python scripts/generate/make_frozen_tiny.py
  python scripts/generate/make_frozen_tiny.py --checkpoint_out DIR/checkpoint_1500   # no pretraining:
      # writes the stored npz as a T5X checkpoint (INITIAL_CHECKPOINT_PATH of a run or study)

Tests that need a frozen model a prompt can actually steer (a trained prompt must beat an
untrained one) load it instead of pretraining for minutes; `spot-jax demo` runs the same
pretraining itself.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from flax import traverse_util

from spot_jax.checkpoints import t5x
from tasks.lookup import register_all_tasks
from spot_jax.train.pretrain import PretrainConfig, pretrain

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "tiny_byte_frozen.npz"
PRETRAIN = PretrainConfig(output_dir="", task="synthetic_pretraining", train_steps=1500, seed=0)


def write_checkpoint(path: str) -> None:
  """Writes the stored pretrained model (OUT) as a T5X checkpoint directory at `path`."""
  params = traverse_util.unflatten_dict(dict(np.load(OUT)), sep="/")
  t5x.write_checkpoint(path, params, step=PRETRAIN.train_steps)
  print(f"wrote {path}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint_out", default=None,
                      help="write the stored npz as a T5X checkpoint here instead of pretraining")
  args = parser.parse_args()
  if args.checkpoint_out:
    write_checkpoint(args.checkpoint_out)
    return
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
