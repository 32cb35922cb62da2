"""Study throughput: runs per hour, packed in one job against one run after another.

  python -m benchmarks.study_throughput                       # 8 tiny runs and 4 small runs
  python -m benchmarks.study_throughput --small_steps 6 --tiny_steps 40
  python -m benchmarks.study_throughput --repeats 3            # each side 3 times, medians

Each side trains the same runs with the real trainer (`spot_jax.train.loop`: data pipelines,
dropout 0.1, a train-state and prompt checkpoint at the end, no evaluation), on one random
frozen model, the runs on different synthetic tasks:

  sequential   `loop.train` for each run, one after another (what `--pack 1` does)
  packed       `loop.train_packed` for all of them: one job, one jitted step (`--pack N`)

Runs per hour = runs / the side's wall time (compilation, data and checkpoints included, as a
study sees them). Each side runs in its own fresh process (`timing.run_worker`) so its peak
resident memory is its own. The steady step is the trainer's own examples/s over its last
log interval (after compilation); the fraction of the matmul ceiling is that step's matrix
FLOPs (`spot_jax.models.flops`, times the runs for a packed step) per second over the best
4096^3 float32 product (`train_step.matmul_ceiling`), measured in the same invocation. The
machine may be shared: rerun for stable figures. Writes its RESULTS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time

from spot_jax import runtime

if __name__ == "__main__":
  runtime.configure_host()  # jemalloc and synchronous CPU dispatch, as `spot-jax` runs.

import jax  # noqa: E402

from spot_jax.models import get_config  # noqa: E402
from spot_jax.models.flops import prompt_tuning_step_flops  # noqa: E402
from benchmarks.timing import peak_rss_bytes, run_worker

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = ("synthetic_sentiment_a", "synthetic_sentiment_b", "synthetic_nli_facts",
         "synthetic_nli_facts_hard", "synthetic_paraphrase_a", "synthetic_paraphrase_b",
         "synthetic_topic_4way", "synthetic_topic_2way")
BATCH, TARGETS, PROMPT = 32, 16, 20


def worker(side: str, model: str, runs: int, steps: int, inputs: int) -> dict:
  """Trains `runs` runs on `side` in a temporary directory; their wall time and steady step."""
  from tasks.lookup import register_all_tasks
  from spot_jax.train import loop
  register_all_tasks()
  with tempfile.TemporaryDirectory() as root:
    cfgs = [loop.TrainConfig(
        model_dir=os.path.join(root, f"run_{i}"), task=TASKS[i % len(TASKS)], model=model,
        feature_lengths={"inputs": inputs, "targets": TARGETS}, train_steps=steps,
        batch_size=BATCH, prompt_length=PROMPT, checkpoint_period=steps, eval_period=0,
        log_period=max(steps // 2, 1), key_step=steps, seed=0) for i in range(runs)]
    start = time.perf_counter()
    if side == "packed":
      loop.train_packed(cfgs)
    else:
      for cfg in cfgs:
        loop.train(cfg)
    wall = time.perf_counter() - start
    with open(os.path.join(cfgs[0].model_dir, "metrics.jsonl")) as f:
      last = [json.loads(line) for line in f if '"train"' in line][-1]
  step = BATCH / last["examples_per_second"]  # seconds of one (packed) step, after compiling.
  return {"wall": wall, "step": step, "peak": peak_rss_bytes()}


def matmul_ceiling() -> float:
  from benchmarks.train_step import matmul_ceiling as ceiling
  return ceiling("float32")


def step_products(model: str, inputs: int) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
  """The main matrix products of one run's train step, as (name, lhs shape, rhs shape) with
  `jnp.matmul` semantics: the encoder's (whose rows are batch x (prompt + inputs) tokens) and
  the logits' (batch x targets rows; forward and the activation gradient)."""
  c = get_config(model)
  rows, inner, heads = BATCH * (PROMPT + inputs), c.num_heads * c.head_dim, BATCH * c.num_heads
  length = PROMPT + inputs
  return [("q/k/v projection", (rows, c.emb_dim), (c.emb_dim, inner)),
          ("MLP in", (rows, c.emb_dim), (c.emb_dim, c.mlp_dim)),
          ("MLP out", (rows, c.mlp_dim), (c.mlp_dim, c.emb_dim)),
          ("attention scores", (heads, length, c.head_dim), (heads, c.head_dim, length)),
          ("logits", (BATCH * TARGETS, c.emb_dim), (c.emb_dim, c.vocab_size)),
          ("logits gradient", (BATCH * TARGETS, c.vocab_size), (c.vocab_size, c.emb_dim))]


def product_speed(lhs: tuple[int, ...], rhs: tuple[int, ...], runs: int, repeats: int = 7
                  ) -> float:
  """FLOP/s of one product as `runs` packed runs compute it: the shared-weight products get
  `runs` times the rows (what `jax.vmap` over the run axis compiles to), the batched attention
  products `runs` times the batch. Best of `repeats`."""
  import jax.numpy as jnp
  import numpy as np
  lhs = (lhs[0] * runs, *lhs[1:])
  if len(rhs) == 3:
    rhs = (rhs[0] * runs, *rhs[1:])
  a = jnp.asarray(np.random.default_rng(0).standard_normal(lhs, np.float32))
  b = jnp.asarray(np.random.default_rng(1).standard_normal(rhs, np.float32))
  from benchmarks.train_step import best_product_seconds
  return 2 * int(np.prod(lhs)) * rhs[-1] / best_product_seconds(a, b, repeats)


def product_rows(model: str, inputs: int, runs: int) -> list[dict]:
  """Each of `step_products` at one run and at `runs` packed runs: what packing can gain is
  bounded by how much faster a step's products run with `runs` times the rows."""
  rows = []
  for name, lhs, rhs in step_products(model, inputs):
    one, packed = product_speed(lhs, rhs, 1), product_speed(lhs, rhs, runs)
    rows.append({"product": name, "lhs": lhs, "rhs": rhs, "one": one, "packed": packed})
    print(f"{model} {name} {lhs}x{rhs}: {one / 1e9:.1f} GFLOP/s alone, {packed / 1e9:.1f} "
          f"packed x{runs}", flush=True)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--worker", nargs=5, metavar=("SIDE", "MODEL", "RUNS", "STEPS", "INPUTS"),
                      help=argparse.SUPPRESS)
  parser.add_argument("--tiny_runs", type=int, default=8)
  parser.add_argument("--tiny_steps", type=int, default=60)
  parser.add_argument("--tiny_inputs", type=int, default=128)
  parser.add_argument("--small_runs", type=int, default=4)
  parser.add_argument("--small_steps", type=int, default=8)
  parser.add_argument("--small_inputs", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=1,
                      help="trials of each side (alternating); the table gives the medians")
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
  args = parser.parse_args()
  if args.worker:
    side, model, runs, steps, inputs = args.worker
    print(json.dumps(worker(side, model, int(runs), int(steps), int(inputs))), flush=True)
    return
  ceiling = matmul_ceiling()
  products = product_rows("tiny", args.tiny_inputs, args.tiny_runs) if args.tiny_runs else []
  rows = []
  for model, runs, steps, inputs in (("tiny", args.tiny_runs, args.tiny_steps, args.tiny_inputs),
                                     ("small", args.small_runs, args.small_steps,
                                      args.small_inputs)):
    if runs < 1:
      continue
    flops = prompt_tuning_step_flops(get_config(model), BATCH, inputs, TARGETS, PROMPT).total
    row = {"model": model, "runs": runs, "steps": steps, "inputs": inputs}
    trials = {"sequential": [], "packed": []}
    for _ in range(args.repeats):  # the sides alternate, so slow spells of a shared machine
      for side in trials:          # fall on both.
        trials[side].append(run_worker("benchmarks.study_throughput",
                                       [side, model, str(runs), str(steps), str(inputs)], {}))
        print(f"{model} x{runs} {side}: {trials[side][-1]['wall']:.1f} s", flush=True)
    for side, results in trials.items():
      walls = sorted(r["wall"] for r in results)
      result = dict(results[0], wall=statistics.median(walls), walls=walls,
                    step=statistics.median(r["step"] for r in results),
                    peak=max(r["peak"] for r in results))
      per_step_runs = runs if side == "packed" else 1
      row[side] = dict(result, runs_per_hour=runs * 3600 / result["wall"],
                       mfu=flops * per_step_runs / result["step"] / ceiling)
      print(f"{model} x{runs} {side}: median {result['wall']:.1f} s, "
            f"{row[side]['runs_per_hour']:.0f} runs/h, step {result['step']:.3f} s, "
            f"{row[side]['mfu']:.1%} of the ceiling, peak {result['peak'] / 2**20:.0f} MiB",
            flush=True)
    rows.append(row)
    write_section(args, rows, ceiling, products)  # a cut-short run keeps its numbers.


def write_section(args: argparse.Namespace, rows: list[dict], ceiling: float,
                  products: list[dict]) -> None:
  command = "python -m benchmarks.study_throughput " + shlex.join(sys.argv[1:])
  lines = [f"Command: `{command}` on {platform.machine()} ({os.cpu_count()} CPUs, shared with "
           f"other work: figures are noisy; {jax.devices()[0].device_kind}); batch {BATCH}, "
           f"targets {TARGETS}, prompt {PROMPT}, dropout 0.1, random frozen weights, one "
           f"synthetic task per run, a checkpoint at the last step, no evaluation; wall time "
           f"includes compilation, data pipelines and checkpoints; float32 matmul ceiling "
           f"{ceiling / 1e9:.0f} GFLOP/s; {time.strftime('%Y-%m-%d')}; each side run "
           f"{args.repeats} time(s), alternating, medians (walls of every trial in the last "
           f"column). Target: packed tiny >= 3x the runs per hour of one after another.", "",
           "| model | runs x steps (inputs) | side | wall | runs/hour | packed/sequential | "
           "steady step | of matmul ceiling | peak memory | trials' walls |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    for side in ("sequential", "packed"):
      s = r[side]
      ratio = s["runs_per_hour"] / r["sequential"]["runs_per_hour"]
      lines.append(f"| {r['model']} | {r['runs']} x {r['steps']} ({r['inputs']}) | {side} | "
                   f"{s['wall']:.0f} s | {s['runs_per_hour']:.0f} | {ratio:.2f}x | "
                   f"{s['step']:.3f} s | {s['mfu']:.1%} | {s['peak'] / 2**20:.0f} MiB | "
                   f"{', '.join(f'{w:.0f}' for w in s['walls'])} s |")
  if products:
    lines += ["", f"Where a packed tiny step's time goes: the step's main products (batch {BATCH}, "
              f"{args.tiny_inputs} inputs + {PROMPT} prompt, {TARGETS} targets) timed alone, "
              f"for one run and as {args.tiny_runs} packed runs compute them ({args.tiny_runs}x "
              "the rows), in the same invocation:", "",
              "| product | one run: shapes | one run | packed | packed/one |",
              "| --- | --- | --- | --- | --- |"]
    for p in products:
      shapes = f"{'x'.join(map(str, p['lhs']))} @ {'x'.join(map(str, p['rhs']))}"
      lines.append(f"| {p['product']} | {shapes} | {p['one'] / 1e9:.1f} GFLOP/s | "
                   f"{p['packed'] / 1e9:.1f} GFLOP/s | {p['packed'] / p['one']:.2f}x |")
  table = "\n".join(lines) + "\n"
  print(table)
  from benchmarks.results_md import update_section
  update_section(args.results, "study_throughput",
                 "## Study throughput: packed runs against one after another\n\n" + table)


if __name__ == "__main__":
  main()
