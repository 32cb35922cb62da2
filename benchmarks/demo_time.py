"""Wall time of the embedded default (`spot-jax demo`) from nothing, and of a rerun.

  python benchmarks/demo_time.py

Runs `spot-jax demo` in a fresh output directory (pretraining the tiny model, then prompt
tuning the held-out synthetic task), then again in the same directory (everything reused), and
writes both wall times and the demo's own report to benchmarks/RESULTS.md (section `demo`).
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
sys.path.insert(0, HERE)


def timed_demo(output_dir: str) -> tuple[float, str]:
  """Seconds of one `spot-jax demo` run (through the console entry point) and its output."""
  start = time.perf_counter()
  completed = subprocess.run(
      [sys.executable, "-m", "spot_jax.cli.main", "demo", "--output_dir", output_dir],
      capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  seconds = time.perf_counter() - start
  if completed.returncode != 0:
    raise RuntimeError(f"spot-jax demo failed:\n{completed.stderr[-3000:]}")
  return seconds, completed.stdout


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
  args = parser.parse_args()
  output_dir = tempfile.mkdtemp(prefix="spot_jax_demo_")
  try:
    fresh, report = timed_demo(output_dir)
    rerun, _ = timed_demo(output_dir)
  finally:
    shutil.rmtree(output_dir, ignore_errors=True)
  summary = [line for line in report.splitlines() if line.strip()][-6:]
  body = ("## The embedded default (`spot-jax demo`)\n\n"
          "Command: `python benchmarks/demo_time.py` (the demo in a fresh directory, then a "
          f"rerun), {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}.\n\n"
          f"| run | wall time |\n| --- | --- |\n| from nothing | {fresh:.0f} s |\n"
          f"| rerun (reuses everything) | {rerun:.0f} s |\n\nThe demo's last lines:\n\n```\n"
          + "\n".join(summary) + "\n```\n")
  print(body)
  from results_md import update_section
  update_section(args.results, "demo", body)


if __name__ == "__main__":
  main()
