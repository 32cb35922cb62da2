"""`spot-jax demo`: the embedded default (see spot_jax/demo.py)."""

from __future__ import annotations

import argparse


DEMO_OPTIONS = (("output_dir", str), ("task", str), ("pretrain_steps", int),
                ("train_steps", int), ("seed", int))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  # Defaults stay DemoConfig's: importing spot_jax.demo (JAX, TensorFlow) here would slow
  # down every command, `--help` included.
  parser = subparsers.add_parser("demo", help="run the embedded default end to end (no downloads)")
  for name, kind in DEMO_OPTIONS:
    parser.add_argument(f"--{name}", type=kind, default=None,
                        help="default: spot_jax.demo.DemoConfig's")
  parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  from spot_jax.demo import DemoConfig, run_demo
  given = {name: getattr(args, name) for name, _ in DEMO_OPTIONS
           if getattr(args, name) is not None}
  run_demo(DemoConfig(**given))
  return 0
