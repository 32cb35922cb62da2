"""`spot-jax demo`: the embedded default (see spot_jax/demo.py)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  from spot_jax.demo import DemoConfig
  defaults = DemoConfig()
  parser = subparsers.add_parser("demo", help="run the embedded default end to end (no downloads)")
  parser.add_argument("--output_dir", default=defaults.output_dir)
  parser.add_argument("--task", default=defaults.task)
  parser.add_argument("--pretrain_steps", type=int, default=defaults.pretrain_steps)
  parser.add_argument("--train_steps", type=int, default=defaults.train_steps)
  parser.add_argument("--seed", type=int, default=defaults.seed)
  parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  from spot_jax.demo import DemoConfig, run_demo
  run_demo(DemoConfig(output_dir=args.output_dir, task=args.task,
                      pretrain_steps=args.pretrain_steps, train_steps=args.train_steps,
                      seed=args.seed))
  return 0
