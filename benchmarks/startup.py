"""Start-up time of light `spot-jax` commands, side by side with the imports they avoid.

  python -m benchmarks.startup [--repeats 5] [--no_results_md]

Runs each command as a fresh `python -m spot_jax.cli.main ...` process (what `spot-jax` runs
after its one jemalloc re-exec) and reports the median and best wall time over the repeats,
next to a process that only imports JAX, TensorFlow and seqio: what every command paid when
the parser imported them up front. Also checks in-process that none of those modules is
imported by the light commands. Writes its section of benchmarks/RESULTS.md. The target:
`--help`, `tasks list` and `library list` under 2 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "tensorflow", "seqio")
TARGET_S = 2.0


def timed(argv: list[str], env: dict[str, str], repeats: int) -> list[float]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    times.append(time.perf_counter() - start)
    if done.returncode != 0:
      raise SystemExit(f"{argv} failed: {done.stderr[-2000:]}")
  return times


def heavy_imports(args: list[str], env: dict[str, str]) -> list[str]:
  code = ("import sys, contextlib, io\nfrom spot_jax.cli import main\n"
          "with contextlib.redirect_stdout(io.StringIO()):\n"
          f"  try:\n    main.main({args!r})\n  except SystemExit:\n    pass\n"
          f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
  if out.returncode != 0:
    raise SystemExit(f"{args} failed: {out.stderr[-2000:]}")
  last = (out.stdout.splitlines() or [""])[-1]
  return [m for m in last.split(",") if m]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--no_results_md", action="store_true")
  args = parser.parse_args()
  env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
  with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, "-c", (
        "import numpy as np; from spot_jax.library.store import PromptLibrary, ModelIdentity\n"
        f"lib = PromptLibrary({tmp!r} + '/lib', create=True)\n"
        "for i in range(20):\n"
        "  lib.add(task=f't{i}', value=np.ones((4, 8)) * i, key=np.ones((4, 8)) * i,\n"
        "          model=ModelIdentity('tiny', 8, 'fp'))")], env=env, check=True)
    commands = {"spot-jax --help": ["--help"], "spot-jax tasks list": ["tasks", "list"],
                "spot-jax library list (20 entries)": ["library", "list", "--library",
                                                       f"{tmp}/lib"]}
    rows = []
    for name, argv in commands.items():
      times = timed([sys.executable, "-m", "spot_jax.cli.main", *argv], env, args.repeats)
      rows.append((name, statistics.median(times), min(times), heavy_imports(argv, env)))
    peer = timed([sys.executable, "-c", "import jax, tensorflow, seqio"], env, args.repeats)
    rows.append(("peer: `import jax, tensorflow, seqio` only", statistics.median(peer),
                 min(peer), list(HEAVY)))
  lines = [f"Start-up of light commands (`python -m benchmarks.startup --repeats "
           f"{args.repeats}`; {platform.node()}, {os.cpu_count()} CPUs, "
           f"{time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f}). Target: "
           f"under {TARGET_S:g} s.", "",
           "| command | median s | best s | imports of jax/tensorflow/seqio |",
           "|---|---|---|---|"]
  lines += [f"| {name} | {median:.2f} | {best:.2f} | {', '.join(heavy) or 'none'} |"
            for name, median, best, heavy in rows]
  print("\n".join(lines))
  if not args.no_results_md:
    from benchmarks.results_md import update_section
    update_section(str(Path(__file__).parent / "RESULTS.md"), "startup",
                   "## Start-up (benchmarks/startup.py)\n\n" + "\n".join(lines))


if __name__ == "__main__":
  main()
