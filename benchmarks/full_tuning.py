"""Full fine-tuning (`model`) against prompt tuning: step time and peak memory, and the memory
full fine-tuning needs at T5 base and XXL.

  python -m benchmarks.full_tuning                          # CPU: tiny/128 and small/128
  python -m benchmarks.full_tuning --configs tiny/128 --steps 3 --memory ''   # a short run

Timing: each (configuration, method) runs in a fresh worker process (`timing.run_worker`) so its
peak resident memory is its own: the trainer's jitted step (`train_step.build_step`: random
frozen weights and tokens, batch 32, target length 8, dropout 0.1, float32, each method's
default optimizer: prompt tuning's Adafactor on a 100-token prompt, T5X's fine-tuning Adafactor
on every weight), a compiling warm-up step, then the median of `--steps` steps.

Memory (`--memory base,xxl`), from shapes alone, nothing allocated: parameters and the
Adafactor state from `jax.eval_shape` of the model's and the optimizer's init; the step's
temporaries (activations kept for the backward pass, gradients, workspace) from XLA's
`memory_analysis()` of the compiled full-tuning step at the real widths with 1 and 2 layers per
stack, extrapolated linearly to the real depth (each layer adds the same buffers), at
`--memory_batch` x inputs 512 / targets 32 (SPoT's lengths), float32, dropout 0.1.
Writes the section "full_tuning" of benchmarks/RESULTS.md after each part; `--reuse LOG` keeps
the rows an earlier run printed (a run cut short finishes without measuring them again).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


from benchmarks.timing import peak_rss_bytes, run_worker, time_steps

METHODS = ("prompt", "model")
PROMPT_LENGTH = 100
BATCH = 32
TARGET_LENGTH = 8


def worker(config: str, method: str, steps: int) -> dict:
  from benchmarks.train_step import build_step
  model_name, length = config.split("/")
  run_step, _ = build_step(model_name, int(length), BATCH, TARGET_LENGTH, PROMPT_LENGTH, 0.1,
                           "float32", method=method)
  start = time.perf_counter()
  jax.block_until_ready(run_step())
  compile_s = time.perf_counter() - start
  median = statistics.median(time_steps(run_step, steps, jax.block_until_ready))
  return {"config": config, "method": method, "step_seconds_median": median,
          "first_step_seconds": compile_s, "peak_rss_bytes": peak_rss_bytes(), "steps": steps,
          "load_average": os.getloadavg()[0]}


def _bytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def memory(model_name: str, batch: int, inputs: int = 512, targets: int = 32) -> dict:
  """Bytes of parameters, Adafactor state and the full-tuning step's temporaries."""
  from spot_jax import methods
  from spot_jax.models import T5, get_config
  from spot_jax.train.optimizer import finetune_adafactor
  from spot_jax.train.step import init_train_state, make_train_step
  optimizer = finetune_adafactor()
  config = get_config(model_name, dropout_rate=0.1)
  tokens = jax.ShapeDtypeStruct((1, 4), jnp.int32)
  params = jax.eval_shape(T5(config).init, jax.random.PRNGKey(0), tokens, tokens)["params"]
  state = jax.eval_shape(optimizer.init, params)

  def temp_bytes(layers: int) -> int:
    small = config.replace(num_encoder_layers=layers, num_decoder_layers=layers)
    model = T5(small, hooks=methods.create("model").hooks())
    shapes = jax.eval_shape(T5(small).init, jax.random.PRNGKey(0), tokens, tokens)["params"]
    train_state = jax.eval_shape(lambda p: init_train_state(p, optimizer, 0), shapes)
    batch_shapes = {
        "encoder_input_tokens": jax.ShapeDtypeStruct((batch, inputs), jnp.int32),
        "decoder_input_tokens": jax.ShapeDtypeStruct((batch, targets), jnp.int32),
        "decoder_target_tokens": jax.ShapeDtypeStruct((batch, targets), jnp.int32)}
    step = jax.jit(make_train_step(model, optimizer), donate_argnums=(0,))
    analysis = step.lower(train_state, {}, batch_shapes).compile().memory_analysis()
    return int(analysis.temp_size_in_bytes)

  one, two = temp_bytes(1), temp_bytes(2)
  per_layer = two - one
  layers = config.num_encoder_layers  # encoder and decoder have the same depth (T5 1.1).
  return {"model": model_name, "batch": batch, "inputs": inputs, "targets": targets,
          "parameters": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)),
          "parameter_bytes": _bytes(params), "adafactor_bytes": _bytes(state),
          "temp_bytes": one + per_layer * (layers - 1), "temp_bytes_per_layer_pair": per_layer}


def gib(n: int) -> str:
  return f"{n / 2**30:.2f}"


def table(timings: list[dict], memories: list[dict], command: str) -> str:
  lines = ["## Full fine-tuning against prompt tuning (benchmarks/full_tuning.py)", "",
           f"`{command}` on {platform.machine()} ({os.cpu_count()} CPUs), "
           f"{time.strftime('%Y-%m-%d')}; batch {BATCH}, target length {TARGET_LENGTH}, "
           f"prompt {PROMPT_LENGTH} tokens, float32, each method's default optimizer. Prompt "
           f"tuning's encoder reads the input plus the {PROMPT_LENGTH}-token prompt, full "
           "tuning the input alone; `load` is the machine's 1-minute load average when the "
           "worker finished (other jobs inflate the times).", ""]
  if timings:
    lines += ["| config | method | step s (median) | first step s (compile) | peak RSS GiB | "
              "load |", "| --- | --- | --- | --- | --- | --- |"]
    for row in timings:
      load = row.get("load_average")
      lines.append(f"| {row['config']} | {row['method']} | {row['step_seconds_median']:.3f} | "
                   f"{row['first_step_seconds']:.1f} | {gib(row['peak_rss_bytes'])} | "
                   f"{'-' if load is None else f'{load:.1f}'} |")
    by = {(r["config"], r["method"]): r for r in timings}
    for config in dict.fromkeys(r["config"] for r in timings):
      if (config, "prompt") in by and (config, "model") in by:
        ratio = by[config, "model"]["step_seconds_median"] / by[config, "prompt"][
            "step_seconds_median"]
        lines.append(f"\n{config}: a full fine-tuning step takes {ratio:.2f}x a prompt-tuning "
                     "step.")
    lines.append("")
  if memories:
    lines += ["Full fine-tuning memory from shapes (float32; temporaries from XLA's memory "
              "analysis of the compiled step, extrapolated from 1 and 2 layers per stack):", "",
              "| model | parameters | params GiB | Adafactor state GiB | step temporaries GiB "
              "(batch x 512/32) | total GiB |", "| --- | --- | --- | --- | --- | --- |"]
    for m in memories:
      total = m["parameter_bytes"] + m["adafactor_bytes"] + m["temp_bytes"]
      lines.append(f"| {m['model']} | {m['parameters'] / 1e6:.0f}M | {gib(m['parameter_bytes'])}"
                   f" | {gib(m['adafactor_bytes'])} | {gib(m['temp_bytes'])} (batch "
                   f"{m['batch']}) | {gib(total)} |")
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="tiny/128,small/128")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--memory", default="base,xxl", help="models for the memory table")
  parser.add_argument("--memory_batch", type=int, default=32)
  parser.add_argument("--worker", action="store_true")
  parser.add_argument("--config")
  parser.add_argument("--method")
  parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"))
  parser.add_argument("--reuse", default=None,
                      help="the output of an earlier run: its JSON rows are kept, not measured "
                           "again (finish a run that was cut short)")
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(args.config, args.method, args.steps)))
    return
  earlier = []
  if args.reuse:
    with open(args.reuse) as f:
      earlier = [json.loads(line) for line in f if line.startswith("{")]
  done_timings = {(r["config"], r["method"]): r for r in earlier if "config" in r}
  done_memory = {r["model"]: r for r in earlier if "temp_bytes" in r}
  command = "python -m benchmarks.full_tuning " + " ".join(sys.argv[1:])
  from benchmarks.results_md import update_section
  timings = []
  for config in filter(None, args.configs.split(",")):
    for method in METHODS:
      row = done_timings.get((config, method)) or run_worker(
          "benchmarks.full_tuning",
          [f"--config={config}", f"--method={method}", f"--steps={args.steps}"],
          {"JAX_PLATFORMS": "cpu"})
      print(json.dumps(row), flush=True)
      timings.append(row)
  update_section(args.results, "full_tuning", table(timings, [], command.strip()))
  memories = []
  for name in filter(None, args.memory.split(",")):
    memories.append(done_memory.get(name) or memory(name, args.memory_batch))
    print(json.dumps(memories[-1]), flush=True)
    update_section(args.results, "full_tuning", table(timings, memories, command.strip()))


if __name__ == "__main__":
  main()
