"""Each CPU performance lever of the training step, measured side by side in one run.

  python -m benchmarks.levers --config small/128 --rounds 2 --steps 4

Variants of the trainer's step (batch 32, prompt 100, targets 8, float32), each timed in a fresh
worker process, alternating variant by variant for `--rounds` rounds:

  glibc            plain JAX (SPOT_JAX_JEMALLOC=0, SPOT_JAX_CPU_DISPATCH=async): XLA's step
                   buffer is mmap'd and munmap'd every step
  glibc+thp        glibc mapping large blocks with transparent huge pages
                   (GLIBC_TUNABLES=glibc.malloc.hugetlb=1): 2 MiB faults instead of 4 KiB ones
  glibc+sync       glibc with synchronous CPU dispatch
  glibc+keep       glibc told to keep freed memory (no system package needed): one arena, no
                   mmap'd blocks, no trimming (`runtime.GLIBC_KEEP_TUNABLES`), synchronous
                   dispatch; what `spot-jax` runs under where jemalloc is not installed
  jemalloc+async   jemalloc with purging off, JAX's asynchronous CPU dispatch
  jemalloc         what `spot-jax` runs under (`spot_jax.runtime`): jemalloc with purging off
                   and synchronous CPU dispatch
  jemalloc+rbg     dropout randomness from the `rbg` PRNG instead of threefry
  jemalloc+no_ynn  XLA:CPU dots outside YNNPACK fusions (--xla_cpu_experimental_ynn_fusion_type=
                   -individual_dot)
  jemalloc+no_dropout  dropout 0 (what dropout costs; not a lever: SPoT trains with 0.1)

Prints examples/s (median step), page faults per step and peak RSS per variant; appends JSON
lines to `--json` and writes the table to benchmarks/RESULTS.md (section `levers`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

from benchmarks import timing
from spot_jax import runtime  # noqa: E402

NO_YNN_DOT = "--xla_cpu_experimental_ynn_fusion_type=-individual_dot"
ASYNC = {"SPOT_JAX_CPU_DISPATCH": "async"}
VARIANTS: dict[str, dict[str, Any]] = {
    "glibc": {"env": dict(ASYNC, SPOT_JAX_JEMALLOC="0")},
    "glibc+thp": {"env": dict(ASYNC, SPOT_JAX_JEMALLOC="0",
                              GLIBC_TUNABLES="glibc.malloc.hugetlb=1")},
    "glibc+sync": {"env": {"SPOT_JAX_JEMALLOC": "0"}},
    "glibc+keep": {"env": {"SPOT_JAX_JEMALLOC": "0",
                           "GLIBC_TUNABLES": runtime.GLIBC_KEEP_TUNABLES}},
    "jemalloc+async": {"env": dict(runtime.host_environment(), **ASYNC)},
    "jemalloc": {"env": runtime.host_environment()},
    "jemalloc+rbg": {"env": runtime.host_environment(), "rng_impl": "rbg"},
    "jemalloc+no_ynn": {"env": dict(runtime.host_environment(), XLA_FLAGS=NO_YNN_DOT)},
    "jemalloc+no_dropout": {"env": runtime.host_environment(), "dropout_rate": 0.0},
}
BATCH_SIZE, TARGET_LENGTH, PROMPT_LENGTH = 32, 8, 100


def worker(variant: str, model: str, input_length: int, steps: int) -> dict[str, Any]:
  import jax
  from benchmarks import train_step
  from benchmarks.timing import time_steps
  runtime.configure_cpu_dispatch()
  settings = VARIANTS[variant]
  run_step, _ = train_step.build_step(
      model, input_length, BATCH_SIZE, TARGET_LENGTH, PROMPT_LENGTH,
      settings.get("dropout_rate", 0.1), "float32",
      rng_impl=settings.get("rng_impl", train_step.DEFAULT_RNG_IMPL))
  jax.block_until_ready(run_step())
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  times = time_steps(run_step, steps, jax.block_until_ready)
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return {"times": times, "faults_per_step": (usage.ru_minflt - faults) / steps,
          "peak_rss_bytes": usage.ru_maxrss * 1024}


def run_variant(variant: str, model: str, input_length: int, steps: int) -> dict[str, Any]:
  return timing.run_worker("benchmarks.levers", [variant, model, str(input_length), str(steps)],
                           VARIANTS[variant]["env"])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="small/128", help="MODEL/INPUT_LENGTH")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--json", default=os.path.join(HERE, "results", "levers.jsonl"))
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
  parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    variant, model, length, steps = args.worker
    print(json.dumps(worker(variant, model, int(length), int(steps))))
    return
  model, _, length = args.config.partition("/")
  variants = args.variants.split(",")
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    raise SystemExit(f"--variants: unknown {unknown}; choose from {sorted(VARIANTS)}")
  if not runtime.host_environment():
    print("note: jemalloc is not installed, so the jemalloc variants run on glibc "
          "(apt-get install libjemalloc2)")
  results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
  for round_index in range(args.rounds):
    for variant in variants:
      result = run_variant(variant, model, int(length), args.steps)
      results[variant].append(result)
      print(f"round {round_index + 1} {variant}: "
            f"{BATCH_SIZE / statistics.median(result['times']):.2f} examples/s, "
            f"{result['faults_per_step']:.0f} page faults/step", flush=True)
  command = "python -m benchmarks.levers " + shlex.join(sys.argv[1:])
  base = statistics.median(t for r in results["glibc"] for t in r["times"]) if (
      "glibc" in results) else None
  lines = [f"Command: `{command}` ({args.config}, batch {BATCH_SIZE}, prompt "
           f"{PROMPT_LENGTH}, targets {TARGET_LENGTH}, float32; median step over "
           f"{args.rounds} alternating rounds of {args.steps} steps)", "",
           "| variant | examples/s | vs glibc | page faults / step | peak RSS |",
           "| --- | --- | --- | --- | --- |"]
  os.makedirs(os.path.dirname(args.json), exist_ok=True)
  with open(args.json, "a") as f:
    for variant, runs in results.items():
      step = statistics.median(t for r in runs for t in r["times"])
      faults = statistics.median(r["faults_per_step"] for r in runs)
      rss = max(r["peak_rss_bytes"] for r in runs)
      speedup = f"{base / step:.2f}x" if base else "-"
      lines.append(f"| {variant} | {BATCH_SIZE / step:.2f} | {speedup} | {faults:.0f} | "
                   f"{rss / 2**30:.2f} GiB |")
      f.write(json.dumps({"config": args.config, "variant": variant, "command": command,
                          "examples_per_second": BATCH_SIZE / step, "faults_per_step": faults,
                          "peak_rss_bytes": rss, "runs": runs}) + "\n")
  table = "\n".join(lines) + "\n"
  print(table)
  from benchmarks.results_md import update_section
  update_section(args.results, f"levers {args.config}",
                 f"## CPU levers, measured side by side ({args.config})\n\n" + table)


if __name__ == "__main__":
  main()
