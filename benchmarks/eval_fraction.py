"""The share of a prompt-tuning run's wall time spent evaluating, at SPoT's settings.

  python -m benchmarks.eval_fraction                   # tiny and small, side by side
  python -m benchmarks.eval_fraction --models tiny,small --scale 1,0.25 --rounds 1

One evaluation interval of SPoT: 500 training steps of batch 32 (inputs 512, targets 32,
prompt 100), then greedy evaluation of 1,000 examples. The train step is built as
`benchmarks/train_step.py` builds it, timed after compilation and a warm-up step (median),
and multiplied by 500;
the evaluation runs the evaluator's own path (`bucketed_batches` + KV-cache `greedy_decode`,
batch 32) over 1,000 random examples with input lengths drawn uniformly from 16..512 and
`--decode_length` tokens decoded for every example (no early stop at EOS: the worst case for
label targets). Side by side, the same evaluation with every example padded to the longest
input (one shape, no buckets). Compilation (once per bucket, reused by every later evaluation
of the run) is timed separately and left out of the fraction. `--scale` (one factor per
model) shrinks both the training steps and the evaluated examples of a model by the same
factor, which leaves the share unchanged (both sides are linear in their counts) while the
slow CPU evaluation of larger shapes stays short; the table states the counts used. The
1-minute load average before and after each model is printed and written: on a shared
machine the wall-time share depends on how busy other processes kept the cores in each phase,
so every time is also taken as this process's CPU time (all threads), whose share does not.
Writes its RESULTS.md section.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time

from spot_jax import runtime

if __name__ == "__main__":
  runtime.configure_host()  # jemalloc and synchronous CPU dispatch, as `spot-jax` runs.

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from spot_jax.evaluation import scoring  # noqa: E402
from spot_jax.evaluation.evaluator import bucketed_batches  # noqa: E402
from spot_jax.models import T5, get_config  # noqa: E402
from benchmarks.train_step import build_step

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_STEPS, BATCH, INPUTS, TARGETS, PROMPT, EVAL_EXAMPLES = 500, 32, 512, 32, 100, 1000
NEVER = -1  # an EOS id no token equals: every row decodes the full length.


def clocks() -> np.ndarray:
  """(wall seconds, this process's CPU seconds over all its threads)."""
  return np.array([time.perf_counter(), time.process_time()])


def train_step_seconds(model_name: str, steps: int) -> np.ndarray:
  """Median (wall, CPU) seconds of one training step after compilation and a warm-up step,
  built as `benchmarks/train_step.py` builds it."""
  run_step, _ = build_step(model_name, INPUTS, BATCH, TARGETS, PROMPT, 0.1, "float32")
  jax.block_until_ready(run_step())
  times = []
  for _ in range(steps):
    start = clocks()
    jax.block_until_ready(run_step())
    times.append(clocks() - start)
  return np.median(times, axis=0)


def eval_seconds(model_name: str, examples: int, decode_length: int, rounds: int,
                 bucketed: bool) -> tuple[np.ndarray, float]:
  """(median (wall, CPU) seconds of one evaluation of `examples` examples, compile wall
  seconds)."""
  model = T5(get_config(model_name, dropout_rate=0.0), PROMPT)
  dummy = jnp.ones((1, 4), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), dummy, dummy)["params"]
  rng = np.random.default_rng(0)
  tokens = np.zeros((examples, INPUTS), np.int32)
  for row, length in enumerate(rng.integers(16, INPUTS + 1, examples)):
    tokens[row, :length] = rng.integers(2, 32000, length)
  if bucketed:
    batches = bucketed_batches(np.arange(examples), tokens, BATCH)
  else:
    batches = [(None, np.pad(tokens[i:i + BATCH], ((0, max(0, i + BATCH - examples)), (0, 0))),
                None) for i in range(0, examples, BATCH)]

  def decode(batch):
    return jax.block_until_ready(scoring.greedy_decode(model, params, jnp.asarray(batch),
                                                       decode_length, NEVER))

  start = time.perf_counter()
  for shape in sorted({b[1].shape for b in batches}):  # compile each bucket once.
    decode(np.zeros(shape, np.int32))
  compile_seconds = time.perf_counter() - start
  times = []
  for _ in range(rounds):
    start = clocks()
    for _, batch, _ in batches:
      decode(batch)
    times.append(clocks() - start)
  return np.median(times, axis=0), compile_seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="tiny,small")
  parser.add_argument("--decode_length", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--train_steps_timed", type=int, default=3)
  parser.add_argument("--scale", default="",
                      help="comma-separated factor per model (default 1 each) applied to both "
                           f"the {TRAIN_STEPS} training steps and the {EVAL_EXAMPLES} examples")
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
  args = parser.parse_args()
  models = args.models.split(",")
  scales = [float(s) for s in args.scale.split(",")] if args.scale else [1.0] * len(models)
  if len(scales) != len(models) or not all(0 < s <= 1 for s in scales):
    parser.error(f"--scale needs one factor in (0, 1] per model ({len(models)}): {args.scale!r}")
  rows = []
  for name, scale in zip(models, scales):
    load_before = os.getloadavg()[0]
    steps, examples = round(TRAIN_STEPS * scale), round(EVAL_EXAMPLES * scale)
    step = train_step_seconds(name, args.train_steps_timed)
    bucketed, compile_seconds = eval_seconds(name, examples, args.decode_length, args.rounds,
                                             True)
    padded, _ = eval_seconds(name, examples, args.decode_length, args.rounds, False)
    train = steps * step
    row = {"model": name, "steps": steps, "examples": examples, "step": step, "train": train,
           "eval": bucketed, "padded": padded, "compile": compile_seconds,
           "fraction": bucketed / (train + bucketed), "padded_fraction": padded / (train + padded),
           "load": (load_before, os.getloadavg()[0])}
    rows.append(row)
    print(f"{name}: train {train[0]:.0f} s wall ({train[1]:.0f} s CPU) per {steps} steps, "
          f"evaluation of {examples} examples {bucketed[0]:.1f} s ({bucketed[1]:.1f} s CPU): "
          f"{row['fraction'][0]:.1%} of the wall time, {row['fraction'][1]:.1%} of the CPU time "
          f"(padded to the longest input: {padded[0]:.1f} s, {row['padded_fraction'][0]:.1%} / "
          f"{row['padded_fraction'][1]:.1%}); bucket compilation {compile_seconds:.1f} s once; "
          f"load average {row['load'][0]:.1f} -> {row['load'][1]:.1f}", flush=True)
    write_section(args, rows)  # after each model: a run cut short keeps what it measured.


def write_section(args: argparse.Namespace, rows: list[dict]) -> None:
  command = "python -m benchmarks.eval_fraction " + shlex.join(sys.argv[1:])
  lines = [f"Command: `{command}` on {platform.machine()} ({os.cpu_count()} CPUs, "
           f"{jax.devices()[0].device_kind}); {TRAIN_STEPS} steps of batch {BATCH} (inputs "
           f"{INPUTS}, targets {TARGETS}, prompt {PROMPT}, dropout 0.1) then greedy evaluation of "
           f"{EVAL_EXAMPLES} examples (inputs 16..{INPUTS} tokens, {args.decode_length} tokens "
           f"decoded each, KV cache, batch {BATCH}); a row with fewer steps and examples scales "
           "both by the same factor (`--scale`), which leaves the share unchanged; train time = "
           f"steps x the median of {args.train_steps_timed} timed steps; median of "
           f"{args.rounds} evaluation round(s); shared machine, 1-minute load average before "
           "and after each row given: times are wall / process CPU seconds (all threads), and "
           "the CPU-time share is the one that does not depend on how busy the other processes "
           f"kept the cores; {time.strftime('%Y-%m-%d')}. Target: evaluation <= 20% of the "
           "wall time.",
           "", "| model | train step wall / CPU | steps | train wall / CPU | examples | "
           "evaluation (buckets) wall / CPU | share: wall / CPU | padded to 512 wall / CPU | "
           "share padded: wall / CPU | bucket compiles (once) | load |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  pair = lambda v, fmt: f"{v[0]:{fmt}} / {v[1]:{fmt}}"
  for r in rows:
    lines.append(f"| {r['model']} | {pair(r['step'], '.2f')} s | {r['steps']} | "
                 f"{pair(r['train'], '.0f')} s | {r['examples']} | {pair(r['eval'], '.1f')} s | "
                 f"{pair(r['fraction'], '.1%')} | {pair(r['padded'], '.1f')} s | "
                 f"{pair(r['padded_fraction'], '.1%')} | {r['compile']:.1f} s | "
                 f"{r['load'][0]:.1f} -> {r['load'][1]:.1f} |")
  table = "\n".join(lines) + "\n"
  print(table)
  from benchmarks.results_md import update_section
  update_section(args.results, "eval_fraction",
                 "## Evaluation share of a run at SPoT's settings\n\n" + table)


if __name__ == "__main__":
  main()
