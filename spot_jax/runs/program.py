"""The process harness shared by `spot-jax` and run workers: host settings at start, Ctrl-C
that always stops, and one clear line (no traceback) for an expected failure.

`spot_jax.cli.main` (the `spot-jax` program) and `spot_jax.runs.worker` (the worker processes
of `spot_jax.runs.execute`) both run their command through `run_command`, so a run fails with
the same message and exit status in either.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import signal
import sys
import threading
from typing import Any, Callable

from spot_jax import fileio

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


def run_command(command: str, func: Callable[[Any], int | None], args: Any, *,
                uses_jax: bool = True, configure_jax: Callable[[], None] | None = None) -> int:
  """Runs `func(args)` for `spot-jax {command}`: the JAX host settings first when it uses JAX,
  Ctrl-C -> status 130, an expected failure -> one line on stderr and status 2 (a full disk:
  fileio.DISK_FULL_EXIT); SPOT_JAX_DEBUG=1 shows tracebacks."""
  with interrupts() as interrupted:
    try:
      if uses_jax and configure_jax is not None:
        configure_jax()
      code = int(func(args) or 0)
    except KeyboardInterrupt as e:
      if os.environ.get("SPOT_JAX_DEBUG"):
        raise
      print(f"spot-jax {command}: {str(e) or 'interrupted'}", file=sys.stderr)
      return INTERRUPTED
    except Exception as e:  # pylint: disable=broad-except
      message = error_message(e)
      if message is None or os.environ.get("SPOT_JAX_DEBUG"):
        raise
      # Bad input or an OS error: one clear line, no traceback (SPOT_JAX_DEBUG=1 shows it).
      print(f"spot-jax {command}: error: {message}", file=sys.stderr)
      return fileio.DISK_FULL_EXIT if fileio.disk_full_path(e) is not None else 2
  if interrupted and code != INTERRUPTED:  # a Ctrl-C some library swallowed.
    print(f"spot-jax {command}: interrupted", file=sys.stderr)
    return INTERRUPTED
  return code


def start_program() -> Callable[[], None]:
  """Restarts this process under the host allocator settings (`spot_jax.runtime`, jemalloc
  when installed), checks the CPU dispatch setting, quiets the libraries' console output
  (`spot_jax.quiet`); returns the JAX host settings to apply once a command needs JAX."""
  from spot_jax import runtime
  try:
    runtime.reexec_with_host_environment()
    runtime.cpu_dispatch()  # a bad SPOT_JAX_CPU_DISPATCH fails here, before any work.
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"spot-jax: error: {e}")
  configure_jax = runtime.configure_jax
  from spot_jax import quiet
  quiet.quiet_console()  # the libraries' log lines off the console (spot_jax/quiet.py).
  return configure_jax
