"""Wall time of `spot-jax demo` (full and --quick) from nothing and on a rerun.

  python -m benchmarks.demo_time [--variants quick,full] [--taskset 0,1]

Each variant runs `spot-jax demo` (through `python -m spot_jax.cli.main`, the console entry
point's code) in a fresh output directory, then again in the same directory (every run
finished: only the analysis is redone). Writes the wall times, the load average at the start
(other processes sharing the cores slow the numbers down) and the demo's summary lines to
benchmarks/RESULTS.md (section `demo`). Targets: full <= 5 min, quick <= 2 min on 2 idle cores
(issue 25); the load average is recorded because a shared machine misses them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGETS = {"quick": 120, "full": 300}


def timed_demo(output_dir: str, quick: bool, taskset: str | None) -> tuple[float, str]:
  """Seconds of one demo run and its stdout."""
  command = [sys.executable, "-m", "spot_jax.cli.main", "demo", "--output_dir", output_dir]
  if quick:
    command.append("--quick")
  if taskset:
    command = ["taskset", "-c", taskset, *command]
  start = time.perf_counter()
  completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=ROOT))
  seconds = time.perf_counter() - start
  if completed.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
  return seconds, completed.stdout


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variants", default="quick,full")
  parser.add_argument("--taskset", default=None, help="pin the demo to these CPUs, e.g. 0,1")
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
  args = parser.parse_args()
  rows, summaries = [], {}
  load = os.getloadavg()[0]
  loads = []
  for variant in args.variants.split(","):
    output_dir = tempfile.mkdtemp(prefix=f"spot_jax_demo_{variant}_")
    try:
      fresh, stdout = timed_demo(output_dir, variant == "quick", args.taskset)
      rerun, _ = timed_demo(output_dir, variant == "quick", args.taskset)
    finally:
      shutil.rmtree(output_dir, ignore_errors=True)
    loads.append(os.getloadavg()[0])
    rows.append(f"| {variant} | {fresh:.0f} s | {rerun:.0f} s | <= {TARGETS[variant]} s |")
    summaries[variant] = [line for line in stdout.splitlines() if line.strip()][-7:]
  cores = args.taskset or f"all {os.cpu_count()}"
  body = ("## The demo (`spot-jax demo`)\n\n"
          f"Command: `python -m benchmarks.demo_time --variants {args.variants}"
          f"{' --taskset ' + args.taskset if args.taskset else ''}` ({cores} cores, load "
          f"average {load:.1f} at the start and "
          f"{', '.join(f'{x:.1f}' for x in loads)} after each variant, "
          f"{time.strftime('%Y-%m-%d')}).\n\n"
          "| variant | from nothing | rerun (all runs finished) | target |\n"
          "| --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")
  for variant, lines in summaries.items():
    body += f"\nThe {variant} demo's summary:\n\n```\n" + "\n".join(lines) + "\n```\n"
  print(body)
  from benchmarks.results_md import update_section
  update_section(args.results, "demo", body)


if __name__ == "__main__":
  main()
