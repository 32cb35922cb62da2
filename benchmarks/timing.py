"""Step timing shared by the benchmarks (no framework imports: PEFT workers use it too)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any, Callable


def time_steps(run_step: Callable[[], Any], steps: int, sync: Callable[[Any], Any]
               ) -> list[float]:
  """Seconds of each of `steps` calls of `run_step`, each waited for with `sync`."""
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    sync(run_step())
    times.append(time.perf_counter() - start)
  return times


def peak_rss_bytes() -> int:
  """This process's peak resident memory so far (ru_maxrss)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


ALLOCATOR_VARIABLES = ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES", "SPOT_JAX_JEMALLOC",
                       "SPOT_JAX_CPU_DISPATCH")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout root.


def run_worker(module: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
  """Runs `python -m MODULE --worker ARGS...` (e.g. benchmarks.levers) from the checkout root
  in a fresh process with this environment minus any allocator or dispatch settings, plus
  `env`; returns the last JSON line it prints."""
  environment = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}
  environment.update(TF_CPP_MIN_LOG_LEVEL="3", **env)
  completed = subprocess.run([sys.executable, "-m", module, "--worker", *args],
                             capture_output=True, text=True, env=environment, cwd=ROOT)
  lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
  if completed.returncode != 0 or not lines:
    raise RuntimeError(f"worker {args} failed (exit {completed.returncode}):\n"
                       f"{completed.stderr[-3000:]}")
  return json.loads(lines[-1])
