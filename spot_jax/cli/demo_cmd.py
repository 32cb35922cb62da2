"""`spot-jax demo`: the whole SPoT pipeline on the synthetic world (spot_jax/app/demo.py).

  spot-jax demo [--quick] [--output_dir DIR] [--gin_file=F] [--gin.DemoConfig.x=V]
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  parser = subparsers.add_parser(
      "demo", help="run the whole pipeline on the synthetic world (no downloads)",
      description="Pretrains a tiny frozen model, tunes source prompts into a library, measures "
                  "the transfer matrix on held-out targets, ranks sources from task embeddings, "
                  "runs the transfer strategies and writes report.html/report.md/results.json. "
                  "Knobs: gin_configs/demo.gin (--gin.DemoConfig.x=V). Rerunning resumes.")
  parser.add_argument("--quick", action="store_true",
                      help="the CI-sized world (gin_configs/demo_quick.gin)")
  parser.add_argument("--output_dir", default=None, help="default: DemoConfig.output_dir")
  parser.set_defaults(func=run, accepts_gin=True)


def run(args: argparse.Namespace) -> int:
  import dataclasses
  import sys

  from spot_jax.app import demo
  cfg = demo.load_config(args.quick, tuple(args.gin_files), tuple(args.gin_bindings))
  if args.output_dir:
    cfg = dataclasses.replace(cfg, output_dir=args.output_dir)
  try:
    demo.run_demo(cfg)
  except KeyboardInterrupt:
    print("\ninterrupted; run the same command to resume (finished runs are kept)",
          file=sys.stderr)
    return 130
  return 0
