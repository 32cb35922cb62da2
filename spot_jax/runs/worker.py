"""The worker process of the run executor: `python -m spot_jax.runs.worker train [--overwrite]
[--packed_job FILE] [--gin_file=... --gin.MACRO=VALUE ...]`.

`spot_jax.runs.workers` starts one per run (or packed job) the executor trains in workers. It
takes the flags of `spot-jax train` and trains through the same path
(`spot_jax.runs.in_process.train_from_flags`) under the same process harness
(`spot_jax.runs.program`: host settings, Ctrl-C, one-line errors), without the CLI above it.
"""

from __future__ import annotations

import argparse
import os
import sys

from spot_jax.runs import program

_configure_jax = None  # set by `run`: the JAX host settings, applied before training.


def parse(argv: list[str]) -> argparse.Namespace:
  """The worker's arguments: gin flags split off into gin_files and gin_bindings, `~` expanded."""
  from spot_jax.gin_utils import split_gin_args
  parser = argparse.ArgumentParser(prog="python -m spot_jax.runs.worker")
  commands = parser.add_subparsers(dest="command", required=True)
  train = commands.add_parser("train", help="train one run, or the runs of a packed job file")
  train.add_argument("--overwrite", action="store_true")
  train.add_argument("--packed_job", metavar="FILE")
  gin_files, gin_bindings, rest = split_gin_args(argv)
  args = parser.parse_args(rest)
  args.gin_files, args.gin_bindings = gin_files, gin_bindings
  return program.expand_user(args)


def _train(args: argparse.Namespace) -> int:
  from spot_jax.runs.in_process import train_from_flags
  return train_from_flags(args.gin_files, args.gin_bindings, packed_job=args.packed_job,
                          overwrite=args.overwrite)


def main(argv: list[str] | None = None) -> int:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  args = parse(sys.argv[1:] if argv is None else argv)
  return program.run_command(args.command, _train, args, configure_jax=_configure_jax)


def run() -> None:
  global _configure_jax
  _configure_jax = program.start_program()
  sys.exit(main())


if __name__ == "__main__":
  run()
