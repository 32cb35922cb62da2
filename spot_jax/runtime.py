"""Host memory allocator for fast training steps on CPU; `spot-jax` applies it at start-up.

XLA:CPU takes each step's temporary buffer (GiBs for small T5 at batch 32) from malloc and
frees it at the end of the step. glibc serves blocks that large with mmap (its per-thread arenas
always do, whatever `mallopt` says) and returns them with munmap, so every step faults all
those pages in again: about a million page faults per step for small/128. jemalloc with page
purging off and one arena (`MALLOC_CONF`) keeps the freed pages and hands them to the next
step (a thousand faults per step). The price is memory: resident memory stays at least at the
step's peak, and in some runs jemalloc splits the retained buffer for other allocations and maps
a second one (small/128: 4.8 GiB in one run, 8.2 GiB in another, against 4.5 GiB with glibc;
benchmarks/RESULTS.md). Turn it off where memory is tight.
`benchmarks/compare_peft.py` measures the effect (benchmarks/RESULTS.md).

A preloaded allocator must be in place when the process starts, so the `spot-jax` command
re-executes itself once with `LD_PRELOAD` and `MALLOC_CONF` set when jemalloc is installed
(Debian/Ubuntu: `apt-get install libjemalloc2`); without it nothing changes. Set
`SPOT_JAX_JEMALLOC=0` to turn this off, or a path to use that library.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from typing import Mapping

ENV_SWITCH = "SPOT_JAX_JEMALLOC"
# Never purge freed pages (dirty or muzzy) back to the kernel: reuse them at the next step. One
# arena: XLA's worker threads free what others allocated, and with an arena per thread each
# would keep its own copy of the step's pages (small/512 then needs 24 GiB instead of 14).
MALLOC_CONF = "narenas:1,dirty_decay_ms:-1,muzzy_decay_ms:-1"
_DEFAULT_PATHS = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2", "/usr/lib64/libjemalloc.so.2")


def jemalloc_path(environ: Mapping[str, str] = os.environ) -> str | None:
  """The jemalloc library to preload, or None (not installed, or turned off)."""
  choice = environ.get(ENV_SWITCH, "")
  if choice.lower() in ("0", "false", "no", "off"):
    return None
  if choice and choice.lower() not in ("1", "true", "yes", "on"):
    if not os.path.exists(choice):
      raise FileNotFoundError(f"{ENV_SWITCH}={choice}: no such file (a libjemalloc.so path, "
                              "or 0 to turn jemalloc off)")
    return choice
  for path in _DEFAULT_PATHS:
    if os.path.exists(path):
      return path
  return ctypes.util.find_library("jemalloc")


def host_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
  """Environment variables that preload jemalloc with purging off ({} where unavailable)."""
  library = jemalloc_path(environ)
  if library is None:
    return {}
  preload = environ.get("LD_PRELOAD", "").split()
  return {"LD_PRELOAD": " ".join(preload if library in preload else [library, *preload]),
          "MALLOC_CONF": environ.get("MALLOC_CONF") or MALLOC_CONF}


def reexec_with_host_environment() -> None:
  """Restarts this program under `host_environment()` once (no-op when already in place).

  Call first thing in a command's entry point, before other work: the process is replaced.
  """
  wanted = host_environment()
  if not wanted or all(os.environ.get(k) == v for k, v in wanted.items()):
    return
  os.environ.update(wanted)
  argv = list(getattr(sys, "orig_argv", [])[1:]) or sys.argv
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable, *argv])
