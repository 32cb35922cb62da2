"""The `spot-jax` command: thin subcommands that parse, call the library and print.

Each subcommand lives in its own module exposing `add_parser(subparsers)`, which registers a
parser whose `func(args) -> int` runs it. Modules import JAX, TensorFlow and seqio inside the
commands that use them, never at the top, so `--help`, `tasks list` and `library list` start
in well under 2 s (benchmarks/startup.py); a command that does not need JAX sets
`uses_jax=False` in its parser defaults and skips the JAX host settings.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import re
import signal
import sys
import threading

from spot_jax import fileio

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
  with interrupts() as interrupted:
    try:
      if getattr(args, "uses_jax", True) and _configure_jax is not None:
        _configure_jax()
      code = int(args.func(args) or 0)
    except KeyboardInterrupt as e:
      if os.environ.get("SPOT_JAX_DEBUG"):
        raise
      print(f"spot-jax {args.command}: {str(e) or 'interrupted'}", file=sys.stderr)
      return INTERRUPTED
    except Exception as e:  # pylint: disable=broad-except
      message = error_message(e)
      if message is None or os.environ.get("SPOT_JAX_DEBUG"):
        raise
      # Bad input or an OS error: one clear line, no traceback (SPOT_JAX_DEBUG=1 shows it).
      print(f"spot-jax {args.command}: error: {message}", file=sys.stderr)
      return fileio.DISK_FULL_EXIT if fileio.disk_full_path(e) is not None else 2
  if interrupted and code != INTERRUPTED:  # a Ctrl-C some library swallowed.
    print(f"spot-jax {args.command}: interrupted", file=sys.stderr)
    return INTERRUPTED
  return code


_USER_PATH = re.compile(r"^(?:[a-z_]+:)?~")  # ~/x, ~user/x and a scorer's affinity:~/x.


def expand_user(value):
  """`~` expanded (os.path.expanduser) in every argument that starts with it, or with a
  `scheme:` prefix and then it (`affinity:~/heads`): the paths of every subcommand, whatever
  the option (a namespace, list or string; a namespace is changed in place)."""
  if isinstance(value, argparse.Namespace):
    for name, item in vars(value).items():
      setattr(value, name, expand_user(item))
    return value
  if isinstance(value, (list, tuple)):
    return type(value)(expand_user(v) for v in value)
  match = _USER_PATH.match(value) if isinstance(value, str) else None
  if match:
    return value[:match.end() - 1] + os.path.expanduser(value[match.end() - 1:])
  return value


INTERRUPTED = 130  # the shell's exit status for a command ended by SIGINT (128 + 2).


@contextlib.contextmanager
def interrupts():
  """Makes every Ctrl-C stop the command: yields a list that records each SIGINT.

  Python ignores an exception raised where it cannot propagate (a garbage-collector callback,
  e.g. JAX's `_xla_gc_callback`, or a `__del__`): it prints "Exception ignored in ..." and runs
  on, so a Ctrl-C landing there was lost and the command finished with status 0. The hook below
  records such a KeyboardInterrupt without the traceback and raises it again a moment later
  (SIGALRM, once out of the hook), where it stops the command; `main` then exits 130 whatever
  happened to it."""
  seen: list[bool] = []
  if threading.current_thread() is not threading.main_thread() or (
      signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
    yield seen  # signals go to the main thread only; an ignored SIGINT stays ignored.
    return
  previous_hook = sys.unraisablehook
  alarm_free = signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)

  def on_unraisable(unraisable) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
      seen.append(True)
      if alarm_free:
        signal.setitimer(signal.ITIMER_REAL, 0.001)
    else:
      previous_hook(unraisable)

  def on_alarm(signum, frame) -> None:
    while frame is not None:
      if frame.f_code is on_unraisable.__code__:  # raised here it would be swallowed again.
        signal.setitimer(signal.ITIMER_REAL, 0.001)
        return
      frame = frame.f_back
    raise KeyboardInterrupt

  def on_sigint(signum, frame) -> None:
    seen.append(True)
    raise KeyboardInterrupt

  sys.unraisablehook = on_unraisable
  signal.signal(signal.SIGINT, on_sigint)
  if alarm_free:
    signal.signal(signal.SIGALRM, on_alarm)
  try:
    yield seen
  finally:
    sys.unraisablehook = previous_hook
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if alarm_free:
      signal.setitimer(signal.ITIMER_REAL, 0)
      signal.signal(signal.SIGALRM, signal.SIG_DFL)


_OS_FIXES = {
    errno.EACCES: "make it writable (or readable) for you, or choose another path",
    errno.EPERM: "make it writable (or readable) for you, or choose another path",
    errno.EROFS: "the file system is read-only; choose a writable path",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a path component is a file, not a directory; check the path",
    errno.EISDIR: "it is a directory; pass a file",
    errno.EEXIST: "it already exists; remove it or choose another path",
    errno.ENOTEMPTY: "it is not empty; choose an empty or new directory",
}


def error_message(e: BaseException) -> str | None:
  """One line for an expected failure (bad input, OS error, a full disk, out of memory), else
  None."""
  full = fileio.disk_full_path(e)
  if full is not None:
    return fileio.disk_full_message(full)
  if isinstance(e, OSError) and e.errno is not None:
    where = f" {e.filename}" if e.filename else ""
    fix = _OS_FIXES.get(e.errno, "check the path and its permissions")
    return f"{e.strerror or e}:{where} ({fix})"
  if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e)[:2000] or (
      type(e).__name__ == "XlaRuntimeError" and "memory" in str(e).lower()):
    return ("out of memory; lower BATCH_SIZE or TASK_FEATURE_LENGTHS, or use a smaller model "
            f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})")
  if isinstance(e, (ValueError, OSError, KeyError, FloatingPointError, SyntaxError)):
    if isinstance(e, KeyError) and len(e.args) == 1:
      return str(e.args[0])
    return str(e)
  return None


_configure_jax = None  # set by `run`: the JAX host settings, applied once a command needs JAX.


def run() -> None:
  """The `spot-jax` program: restarts itself under the host allocator settings
  (`spot_jax.runtime`, jemalloc when installed), quiets the libraries' console output
  (`spot_jax.quiet`), then runs `main`, which sets synchronous CPU dispatch for the commands
  that use JAX."""
  global _configure_jax
  from spot_jax import runtime
  try:
    runtime.reexec_with_host_environment()
    runtime.cpu_dispatch()  # a bad SPOT_JAX_CPU_DISPATCH fails here, before any work.
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"spot-jax: error: {e}")
  _configure_jax = runtime.configure_jax
  from spot_jax import quiet
  quiet.quiet_console()  # the libraries' log lines off the console (spot_jax/quiet.py).
  sys.exit(main())


if __name__ == "__main__":
  run()
