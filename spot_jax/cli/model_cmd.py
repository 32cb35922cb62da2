"""`spot-jax model info`: load a T5X or Hugging Face checkpoint and describe it."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  parser = subparsers.add_parser("model", help="inspect frozen T5 checkpoints")
  model_sub = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
  info = model_sub.add_parser("info", help="load a checkpoint and print its config and identity")
  info.add_argument("--checkpoint", required=True,
                    help="T5X checkpoint dir (checkpoint_N) or Hugging Face T5 dir")
  info.add_argument("--config", default=None,
                    help="named config to validate against (tiny, small, base, large, xl, xxl)")
  info.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
  from spot_jax.checkpoints.load import load_model
  from spot_jax.models.config import get_config
  config = get_config(args.config) if args.config else None
  loaded = load_model(args.checkpoint, config=config)
  import jax
  import numpy as np
  num_params = sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(loaded.params))
  print(json.dumps({"source": loaded.source, "step": loaded.step, "parameters": num_params,
                    "fingerprint": loaded.fingerprint, "config": loaded.config.to_dict()},
                   indent=2))
  return 0
