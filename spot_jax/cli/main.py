"""The `spot-jax` command: thin subcommands that parse, call the library and print.

Each subcommand lives in its own module exposing `add_parser(subparsers)`, which registers a
parser whose `func(args) -> int` runs it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Subcommand modules, in the order `spot-jax --help` lists them.
SUBCOMMAND_MODULES = (
    "spot_jax.cli.demo_cmd",
    "spot_jax.cli.train_cmd",
    "spot_jax.cli.model_cmd",
    "spot_jax.cli.tasks_cmd",
    "spot_jax.cli.library_cmd",
    "spot_jax.cli.retrieve_cmd",
    "spot_jax.cli.study_cmd",
    "spot_jax.cli.affinity_cmd",
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="spot-jax", description="Soft prompt transfer (SPoT) on frozen T5 1.1 in JAX.")
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
  for module_name in SUBCOMMAND_MODULES:
    importlib.import_module(module_name).add_parser(subparsers)
  return parser


def main(argv: list[str] | None = None) -> int:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from spot_jax.gin_utils import split_gin_args
  parser = build_parser()
  gin_files, gin_bindings, rest = split_gin_args(sys.argv[1:] if argv is None else argv)
  args = parser.parse_args(rest)
  if (gin_files or gin_bindings) and not getattr(args, "accepts_gin", False):
    parser.error(f"gin flags are only accepted by train and eval")
  args.gin_files, args.gin_bindings = gin_files, gin_bindings
  if not getattr(args, "func", None):
    parser.print_help()
    return 2
  try:
    return int(args.func(args) or 0)
  except (ValueError, FileNotFoundError, KeyError, FloatingPointError) as e:
    # Bad input: one clear line, no deep traceback (set SPOT_JAX_DEBUG=1 to see it).
    if os.environ.get("SPOT_JAX_DEBUG"):
      raise
    print(f"spot-jax {args.command}: error: {e}", file=sys.stderr)
    return 2


def run() -> None:
  """The `spot-jax` program: restarts itself under the host allocator settings
  (`spot_jax.runtime`, jemalloc when installed), sets synchronous CPU dispatch, then runs
  `main`."""
  from spot_jax import runtime
  try:
    runtime.configure_host()
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"spot-jax: error: {e}")
  sys.exit(main())


if __name__ == "__main__":
  run()
