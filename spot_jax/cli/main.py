"""The `spot-jax` command: thin subcommands that parse, call the library and print.

Each subcommand lives in its own module exposing `add_parser(subparsers)`, which registers a
parser whose `func(args) -> int` runs it. Modules import JAX, TensorFlow and seqio inside the
commands that use them, never at the top, so `--help`, `tasks list` and `library list` start
in well under 2 s (benchmarks/startup.py); a command that does not need JAX sets
`uses_jax=False` in its parser defaults and skips the JAX host settings.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from spot_jax.runs import program
from spot_jax.runs.program import expand_user

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


def gin_commands(parser: argparse.ArgumentParser) -> list[str]:
  """The subcommands (as typed, e.g. `affinity train`) whose parsers accept gin flags."""
  found = []

  def walk(p: argparse.ArgumentParser, prefix: str) -> None:
    if p.get_default("accepts_gin"):
      found.append(prefix)
    for action in p._actions:  # pylint: disable=protected-access
      if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
        for name, sub in action.choices.items():
          walk(sub, f"{prefix} {name}".strip())

  walk(parser, "")
  return found


def parse(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
  """(parser, args) of a command line: gin flags split off into args.gin_files and
  args.gin_bindings, `~` expanded in every path (`expand_user`)."""
  from spot_jax.gin_utils import split_gin_args
  parser = build_parser()
  gin_files, gin_bindings, rest = split_gin_args(argv)
  args = parser.parse_args(rest)
  if (gin_files or gin_bindings) and not getattr(args, "accepts_gin", False):
    parser.error("gin flags (--gin_file, --gin.NAME=VALUE) are only accepted by "
                 f"{', '.join(gin_commands(parser))}")
  args.gin_files, args.gin_bindings = gin_files, gin_bindings
  return parser, expand_user(args)


def main(argv: list[str] | None = None) -> int:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  parser, args = parse(sys.argv[1:] if argv is None else argv)
  if not getattr(args, "func", None):
    parser.print_help()
    return 2
  return program.run_command(args.command, args.func, args,
                             uses_jax=getattr(args, "uses_jax", True),
                             configure_jax=_configure_jax)


_configure_jax = None  # set by `run`: the JAX host settings, applied once a command needs JAX.


def run() -> None:
  """The `spot-jax` program: restarts itself under the host allocator settings
  (`spot_jax.runtime`, jemalloc when installed), quiets the libraries' console output
  (`spot_jax.quiet`), then runs `main`, which sets synchronous CPU dispatch for the commands
  that use JAX."""
  global _configure_jax
  _configure_jax = program.start_program()
  sys.exit(main())


if __name__ == "__main__":
  run()
