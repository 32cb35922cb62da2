"""Step timing shared by the benchmarks (no framework imports: PEFT workers use it too)."""

from __future__ import annotations

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
