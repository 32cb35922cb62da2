"""Makes spot_jax/app/assets/tiny_words_frozen.npz (+ .json): the demo's frozen model, tiny_words
pretrained with gin_configs/demo.gin's pretraining settings (1500 steps on
synthetic_words_pretraining, seed 0; about 1-2 minutes on 2 CPU cores), shipped so that
`spot-jax demo` (full and --quick) starts from it instead of pretraining.

  python scripts/generate/make_demo_model.py

The JSON beside the npz records the PretrainConfig identity; the demo uses the stored model
only when its own pretraining settings equal it (`DemoConfig.stored_model = False` always
pretrains). tests/test_demo_model.py checks the record against demo.gin, and its slow test
pretrains afresh and compares with the stored parameters.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

from spot_jax.app import demo
from spot_jax.checkpoints import t5x
from spot_jax.train.pretrain import pretrain, save_stored
from tasks.lookup import register_all_tasks


def main() -> None:
  register_all_tasks()
  cfg = demo.pretrain_config(demo.load_config())
  with tempfile.TemporaryDirectory() as tmp:
    checkpoint = pretrain(dataclasses.replace(cfg, output_dir=tmp))
    params = t5x.read_checkpoint(checkpoint)
  os.makedirs(os.path.dirname(demo.STORED_MODEL), exist_ok=True)
  record = save_stored(cfg, params, demo.STORED_MODEL)
  size = os.path.getsize(demo.STORED_MODEL) / 2**20
  print(f"wrote {demo.STORED_MODEL} ({size:.2f} MiB) and {record}")


if __name__ == "__main__":
  main()
