"""Prompt-tuning train-step throughput: examples/s, tokens/s and peak memory.

  python benchmarks/train_step.py --model tiny --input_length 128 --batch_size 32
  python benchmarks/train_step.py --model small --input_length 512 --steps 5 --json out.jsonl

Times the jitted step of the trainer (random frozen weights, random tokens; the prompt is the
only trained parameter) after a warm-up step that compiles it. Tokens/s counts encoder inputs
plus prompt plus targets per example. Peak memory is the process's peak resident set size
(ru_maxrss) on CPU and the device's peak bytes in use on GPU/TPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from spot_jax.models import T5, get_config
from spot_jax.prompts import from_sampled_vocab, without_prompt
from spot_jax.train.optimizer import prompt_adafactor
from spot_jax.train.step import init_train_state, make_train_step


def random_batch(rng: np.random.Generator, batch_size: int, input_length: int,
                 target_length: int, vocab_size: int) -> dict[str, jax.Array]:
  targets = rng.integers(2, vocab_size, (batch_size, target_length), dtype=np.int32)
  return {"encoder_input_tokens": jnp.asarray(
              rng.integers(2, vocab_size, (batch_size, input_length), dtype=np.int32)),
          "decoder_input_tokens": jnp.asarray(np.pad(targets, ((0, 0), (1, 0)))[:, :-1]),
          "decoder_target_tokens": jnp.asarray(targets)}


def peak_memory_bytes() -> int:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"])
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def benchmark(model_name: str, input_length: int, batch_size: int, target_length: int,
              prompt_length: int, dropout_rate: float, dtype: str, steps: int,
              **overrides) -> dict:
  config = get_config(model_name, dropout_rate=dropout_rate, dtype=dtype, **overrides)
  model = T5(config, prompt_length)
  rng = np.random.default_rng(0)
  batch = random_batch(rng, batch_size, input_length, target_length, config.vocab_size)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch["encoder_input_tokens"][:1],
                               batch["decoder_input_tokens"][:1])["params"]
  frozen = without_prompt(params)
  optimizer = prompt_adafactor()
  state = init_train_state(from_sampled_vocab(jax.random.PRNGKey(1),
                                              frozen["token_embedder"]["embedding"],
                                              prompt_length), optimizer, seed=0)
  step = jax.jit(make_train_step(model, optimizer), donate_argnums=(0,))
  state, metrics = step(state, frozen, batch)  # compile + warm up
  jax.block_until_ready(metrics["loss"])
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step(state, frozen, batch)
    jax.block_until_ready(metrics["loss"])
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  tokens = batch_size * (input_length + prompt_length + target_length)
  return {"model": model_name, "input_length": input_length, "prompt_length": prompt_length,
          "target_length": target_length, "batch_size": batch_size, "dtype": dtype,
          "dropout_rate": dropout_rate, "device": jax.devices()[0].device_kind,
          "step_seconds_median": median, "examples_per_second": batch_size / median,
          "tokens_per_second": tokens / median, "peak_memory_bytes": peak_memory_bytes(),
          "steps_timed": steps}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="tiny")
  parser.add_argument("--input_length", type=int, default=128)
  parser.add_argument("--target_length", type=int, default=8)
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--dropout_rate", type=float, default=0.1)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--json", default=None, help="append the result as a JSON line here")
  args = parser.parse_args()
  result = benchmark(args.model, args.input_length, args.batch_size, args.target_length,
                     args.prompt_length, args.dropout_rate, args.dtype, args.steps)
  print(f"{result['model']} input {result['input_length']}+{result['prompt_length']} "
        f"batch {result['batch_size']} {result['dtype']} on {result['device']}: "
        f"{result['examples_per_second']:.2f} examples/s, "
        f"{result['tokens_per_second']:.0f} tokens/s, "
        f"step {1000 * result['step_seconds_median']:.1f} ms (median of {args.steps}), "
        f"peak memory {result['peak_memory_bytes'] / 2**30:.2f} GiB")
  if args.json:
    with open(args.json, "a") as f:
      f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
  main()
