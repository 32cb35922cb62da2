"""Prompt-tuning train-step throughput: examples/s, tokens/s, MFU and peak memory.

  python -m benchmarks.train_step --model tiny --input_length 128 --batch_size 32
  python -m benchmarks.train_step --model small --input_length 512 --steps 5 --json out.jsonl
  python -m benchmarks.train_step --model base --input_length 512 --dtype bfloat16 --max_batch
                                          # on a GPU: MFU and the largest batch that fits

Times the jitted step of the trainer (random frozen weights, random tokens; the prompt is the
only trained parameter) after a warm-up step that compiles it. Tokens/s counts encoder inputs
plus prompt plus targets per example. Peak memory is the process's peak resident set size
(ru_maxrss) on CPU and the device's peak bytes in use on GPU/TPU. MFU is the step's matrix
FLOPs (`spot_jax.models.flops`) per second over the measured ceiling: the best of a few large
products (8192^3 on accelerators, 4096^3 on CPU) in the compute dtype, timed in the same run.
`--max_batch` also times the largest batch whose compiled step fits in device memory
(`largest_batch`: XLA's memory analysis at two batch sizes, extrapolated, then checked).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from typing import Any, Callable

from spot_jax import runtime

if __name__ == "__main__":
  runtime.configure_host()  # jemalloc and synchronous CPU dispatch, as `spot-jax` runs.

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from spot_jax import methods  # noqa: E402
from spot_jax.models import T5, get_config  # noqa: E402
from spot_jax.models.flops import prompt_tuning_step_flops  # noqa: E402
from spot_jax.models.init import init_frozen  # noqa: E402
from spot_jax.models.prompts import from_sampled_vocab  # noqa: E402
from spot_jax.train.optimizer import (adamw_warmup, finetune_adafactor,  # noqa: E402
                                     prompt_adafactor)
from spot_jax.train.step import (DEFAULT_RNG_IMPL, init_train_state,  # noqa: E402
                                 make_train_step)
from benchmarks.timing import peak_rss_bytes, time_steps


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
  return peak_rss_bytes()


def matmul_ceiling(dtype: str, repeats: int = 5) -> float:
  """Best FLOP/s of a large square product in `dtype` on the default device."""
  size = 4096 if jax.default_backend() == "cpu" else 8192
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (size, size), dtype)
  return 2 * size ** 3 / best_product_seconds(a, b, repeats)


def best_product_seconds(a: jax.Array, b: jax.Array, repeats: int) -> float:
  """The fastest of `repeats` timed calls of the jitted `a @ b` (after one that compiles)."""
  return best_call_seconds(jax.jit(jnp.matmul), (a, b), repeats)


def best_call_seconds(fn: Callable[..., Any], args: tuple[Any, ...], repeats: int) -> float:
  """The fastest of `repeats` timed, synchronised calls of `fn(*args)` after one warm-up call
  (which compiles a jitted `fn`)."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def batch_shapes(batch_size: int, input_length: int, target_length: int
                 ) -> dict[str, jax.ShapeDtypeStruct]:
  """The shapes of `random_batch`'s arrays, to compile a step without making a batch."""
  return {"encoder_input_tokens": jax.ShapeDtypeStruct((batch_size, input_length), jnp.int32),
          "decoder_input_tokens": jax.ShapeDtypeStruct((batch_size, target_length), jnp.int32),
          "decoder_target_tokens": jax.ShapeDtypeStruct((batch_size, target_length), jnp.int32)}


def compiled_bytes(compiled: Any) -> int:
  """Device bytes a compiled step needs: arguments + outputs + temporaries - donated aliases."""
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def device_memory_limit() -> int | None:
  """The default device's allocator limit in bytes (None where jax does not report one: CPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  return int(stats["bytes_limit"]) if "bytes_limit" in stats else None


@dataclasses.dataclass(frozen=True)
class LargestBatch:
  """The largest batch whose compiled step fits `limit_bytes`, from XLA's memory analysis."""
  batch_size: int
  step_bytes: int  # the compiled step's bytes at `batch_size`.
  bytes_per_example: float
  fixed_bytes: float  # weights, optimizer state, code: what does not grow with the batch.
  limit_bytes: int
  compiles: int
  compiled: Any = dataclasses.field(repr=False, compare=False, default=None)


def largest_batch(setup: "StepSetup", input_length: int, target_length: int,
                  limit_bytes: int | None = None, start: int = 32, multiple: int = 8,
                  headroom: float = 0.95) -> LargestBatch:
  """The largest multiple of `multiple` whose step fits `headroom * limit_bytes`.

  Compiles the step (never runs it) at `start` and `2 * start`, fits bytes = fixed + per example
  x batch to XLA's memory analysis, and checks the predicted batch with one more compile; where
  memory grows faster than the fit, it steps down and then interpolates between the largest
  batch that fits and the smallest that does not. Three compiles when memory is linear in the
  batch, instead of a doubling-and-bisecting search of runs, which cost a compile each and ran
  over 150 s for base on an H200.
  `limit_bytes`: the device's allocator limit by default.
  """
  limit_bytes = limit_bytes or device_memory_limit()
  if not limit_bytes:
    raise ValueError("This device reports no memory limit (jax's memory_stats has no "
                     "bytes_limit, as on CPU); pass limit_bytes")
  budget = headroom * limit_bytes
  compiles = [0]

  def compile_at(batch_size: int) -> tuple[Any, int]:
    compiles[0] += 1
    compiled = setup.compile(batch_shapes(batch_size, input_length, target_length))
    return compiled, compiled_bytes(compiled)

  _, small = compile_at(start)
  _, large = compile_at(2 * start)
  per_example = (large - small) / start
  if per_example <= 0:
    raise ValueError(f"The step's compiled bytes do not grow with the batch ({small} at {start},"
                     f" {large} at {2 * start}); cannot extrapolate")
  fixed = small - per_example * start
  # The tolerance keeps an exact fit (a float just under an integer) from dropping a multiple.
  batch_size = max(multiple, int((budget - fixed) / per_example + 1e-6) // multiple * multiple)
  fitting: tuple[int, int, Any] | None = None  # (batch, bytes, compiled): largest that fits.
  too_big: tuple[int, int] | None = None  # (batch, bytes): smallest that does not.
  for _ in range(8):
    compiled, used = compile_at(batch_size)
    if used <= budget:
      fitting = (batch_size, used, compiled)
    else:
      too_big = (batch_size, used)
    if too_big is None or (fitting and too_big[0] - fitting[0] <= multiple):
      break
    if fitting is None:  # step down by what the excess costs at the fitted rate.
      if batch_size <= multiple:
        break
      over = math.ceil((used - budget) / per_example / multiple) * multiple
      batch_size = max(multiple, batch_size - over)
    else:  # between the two: interpolate (memory may grow faster than the first fit).
      slope = (too_big[1] - fitting[1]) / (too_big[0] - fitting[0])
      step = int((budget - fitting[1]) / slope) // multiple * multiple
      batch_size = min(max(fitting[0] + multiple, fitting[0] + step), too_big[0] - multiple)
  if fitting is None:
    raise ValueError(f"Even batch {batch_size} needs {used} bytes, over {budget:.0f}")
  batch_size, used, compiled = fitting
  return LargestBatch(batch_size, used, per_example, fixed, int(limit_bytes), compiles[0],
                      compiled)


@dataclasses.dataclass
class StepSetup:
  """The trainer's jitted step (donating its state) and what it runs on."""
  step: Any  # jax.jit(train step): (state, frozen, batch) -> (state, metrics).
  state: Any
  frozen: Any
  batch: dict[str, jax.Array]  # encoder_input_tokens [batch, inputs], decoder_* [batch, targets]
  config: Any
  prompt_length: int  # what the step's FLOPs count (`spot_jax.models.flops`).

  def compile(self, batch: dict[str, Any] | None = None) -> Any:
    """The step compiled ahead of time for `batch` (arrays or ShapeDtypeStructs; default: its
    own)."""
    return self.step.lower(self.state, self.frozen, self.batch if batch is None else batch
                           ).compile()

  def runner(self, compiled: Any = None) -> Callable[[], jax.Array]:
    """A function that does one step (with `compiled`, or through jit) and returns its loss;
    each step replaces `state` (the old one is donated)."""
    step = compiled or self.step

    def run_step() -> jax.Array:
      self.state, metrics = step(self.state, self.frozen, self.batch)
      return metrics["loss"]

    return run_step


def setup_step(model_name: str, input_length: int, batch_size: int, target_length: int,
               prompt_length: int, dropout_rate: float, dtype: str,
               rng_impl: str = DEFAULT_RNG_IMPL, method: str = "prompt",
               method_settings: dict[str, Any] | None = None, schedule_steps: int = 1000,
               frozen_init: str = "leaf", frozen_dtype: str = "float32", packed_runs: int = 0,
               **overrides) -> StepSetup:
  """The trainer's jitted step on random frozen weights and a random batch.

  `method` (a `spot_jax.methods` name; prompt-like ones take `prompt_length`) with
  `method_settings`, trained with its default optimizer as the trainer does: Adafactor lr 0.3
  for `prompt`, T5X's fine-tuning Adafactor lr 1e-3 for `model`, otherwise AdamW at the
  method's learning rate with 6% warmup over `schedule_steps`. `frozen_init`: "leaf" draws the
  frozen weights leaf by leaf as the trainer does (`spot_jax.models.init`), "jit" compiles the
  whole `T5.init` (the old way, for the compile-time comparison). `packed_runs` N > 0: N runs
  packed into one step (`spot_jax.train.packed`, each on its own copy of the batch).
  """
  config = get_config(model_name, dropout_rate=dropout_rate, dtype=dtype, **overrides)
  trained = methods.create(method, prompt_length, **(method_settings or {}))
  model = T5(config, hooks=trained.hooks())
  rng = np.random.default_rng(0)
  batch = random_batch(rng, batch_size, input_length, target_length, config.vocab_size)
  if frozen_init == "jit":
    frozen = jax.jit(T5(config).init)(jax.random.PRNGKey(0), batch["encoder_input_tokens"][:1],
                                      batch["decoder_input_tokens"][:1])["params"]
    frozen = jax.tree.map(lambda x: x.astype(frozen_dtype), frozen)
  else:
    frozen = init_frozen(config, 0, frozen_dtype)
  prompt = None
  if trained.prompt_like:
    prompt = from_sampled_vocab(jax.random.PRNGKey(1), frozen["token_embedder"]["embedding"],
                                prompt_length)
  params = trained.init(jax.random.PRNGKey(1), model, frozen, prompt)
  frozen = trained.frozen_part(frozen)  # {} for full fine-tuning (`model`): all is trained.
  if trained.default_optimizer == "adafactor":
    optimizer = prompt_adafactor(trained.default_learning_rate)
  elif trained.default_optimizer == "adafactor_finetune":
    optimizer = finetune_adafactor(trained.default_learning_rate)
  else:
    optimizer = adamw_warmup(trained.default_learning_rate, schedule_steps)
  state = init_train_state(params, optimizer, seed=0, rng_impl=rng_impl)
  step_fn = make_train_step(model, optimizer, rng_impl=rng_impl)
  if packed_runs:
    from spot_jax.train import packed
    step_fn = packed.make_packed_train_step(step_fn)
    state = packed.stack_trees([state] * packed_runs)
    batch = {k: jnp.stack([v] * packed_runs) for k, v in batch.items()}
  return StepSetup(jax.jit(step_fn, donate_argnums=(0,)), state, frozen, batch, config,
                   prompt_length)


def build_step(*args, **kwargs) -> tuple[Callable[[], jax.Array], Any]:
  """`setup_step(...)` as (run_step, config): each run_step() call does one step and returns
  its loss."""
  setup = setup_step(*args, **kwargs)
  return setup.runner(), setup.config


def packed_benchmark(model_name: str, input_length: int, batch_size: int, target_length: int,
                     prompt_length: int, dropout_rate: float, dtype: str, runs: int, steps: int,
                     sync: Callable[[Any], Any] = jax.block_until_ready, **overrides) -> dict:
  """`runs` runs packed into one step against one run's step taken `runs` times."""
  out = {}
  for name, packs in (("sequential", 0), ("packed", runs)):
    run_step, _ = build_step(model_name, input_length, batch_size, target_length,
                             prompt_length, dropout_rate, dtype, packed_runs=packs, **overrides)
    sync(run_step())
    step = statistics.median(time_steps(run_step, steps, sync))
    out[f"{name}_examples_per_second"] = batch_size * max(packs, 1) / step
    out[f"{name}_peak_memory_bytes"] = peak_memory_bytes()
  return out


def measure(setup: StepSetup, steps: int, compiled: Any = None) -> dict[str, Any]:
  """The steady step of `setup` (after one step that compiles it): time, throughput, MFU
  numerator, peak memory."""
  run_step = setup.runner(compiled)
  jax.block_until_ready(run_step())  # compile + warm up
  median = statistics.median(time_steps(run_step, steps, jax.block_until_ready))
  batch_size, input_length = setup.batch["encoder_input_tokens"].shape[-2:]
  target_length = setup.batch["decoder_target_tokens"].shape[-1]
  prompt_length = setup.prompt_length
  tokens = batch_size * (input_length + prompt_length + target_length)
  flops = prompt_tuning_step_flops(setup.config, batch_size, input_length, target_length,
                                   prompt_length).total
  return {"input_length": input_length, "prompt_length": prompt_length,
          "target_length": target_length, "batch_size": batch_size,
          "device": jax.devices()[0].device_kind,
          "step_seconds_median": median, "examples_per_second": batch_size / median,
          "tokens_per_second": tokens / median, "step_gflop": flops / 1e9,
          "gflops": flops / median / 1e9, "peak_memory_bytes": peak_memory_bytes(),
          "steps_timed": steps}


def benchmark(model_name: str, input_length: int, batch_size: int, target_length: int,
              prompt_length: int, dropout_rate: float, dtype: str, steps: int,
              **overrides) -> dict:
  setup = setup_step(model_name, input_length, batch_size, target_length, prompt_length,
                     dropout_rate, dtype, **overrides)
  return dict(measure(setup, steps), model=model_name, dtype=dtype, dropout_rate=dropout_rate)


def largest_batch_benchmark(model_name: str, input_length: int, target_length: int,
                            prompt_length: int, dropout_rate: float, dtype: str, steps: int,
                            start: int = 32, limit_bytes: int | None = None,
                            **overrides) -> dict[str, Any]:
  """The steady step at the largest batch that fits (`largest_batch`), stepping down by an
  eighth (one more compile) if the run still exhausts device memory."""
  setup = setup_step(model_name, input_length, start, target_length, prompt_length,
                     dropout_rate, dtype, **overrides)
  found = largest_batch(setup, input_length, target_length, limit_bytes, start)
  batch_size, compiled = found.batch_size, found.compiled
  rng = np.random.default_rng(0)
  while True:
    sized = dataclasses.replace(setup, batch=random_batch(
        rng, batch_size, input_length, target_length, setup.config.vocab_size))
    try:
      result = measure(sized, steps, compiled)
      break
    except Exception as e:  # XlaRuntimeError / JaxRuntimeError: RESOURCE_EXHAUSTED.
      if not ("RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower()) or (
          batch_size <= 8):
        raise
      batch_size = max(8, batch_size - max(8, batch_size // 8) // 8 * 8)
      compiled = sized.compile(batch_shapes(batch_size, input_length, target_length))
  return dict(result, model=model_name, dtype=dtype, largest_batch=batch_size,
              predicted_batch=found.batch_size, predicted_step_bytes=found.step_bytes,
              bytes_per_example=found.bytes_per_example, fixed_bytes=found.fixed_bytes,
              limit_bytes=found.limit_bytes, compiles=found.compiles)


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
  parser.add_argument("--max_batch", action="store_true",
                      help="also find the largest batch that fits (accelerators)")
  args = parser.parse_args()
  result = benchmark(args.model, args.input_length, args.batch_size, args.target_length,
                     args.prompt_length, args.dropout_rate, args.dtype, args.steps)
  ceiling = matmul_ceiling(args.dtype)
  result.update(ceiling_gflops=ceiling / 1e9, mfu=result["gflops"] * 1e9 / ceiling)
  if args.max_batch:
    largest = largest_batch_benchmark(args.model, args.input_length, args.target_length,
                                      args.prompt_length, args.dropout_rate, args.dtype,
                                      args.steps, start=args.batch_size)
    result["largest_batch"] = largest["largest_batch"]
    result["largest_batch_mfu"] = largest["gflops"] * 1e9 / ceiling
  print(f"{result['model']} input {result['input_length']}+{result['prompt_length']} "
        f"batch {result['batch_size']} {result['dtype']} on {result['device']}: "
        f"{result['examples_per_second']:.2f} examples/s, "
        f"{result['tokens_per_second']:.0f} tokens/s, "
        f"step {1000 * result['step_seconds_median']:.1f} ms (median of {args.steps}), "
        f"{result['gflops']:.1f} GFLOP/s = {100 * result['mfu']:.0f}% of the measured "
        f"{args.dtype} matmul ceiling ({result['ceiling_gflops']:.0f} GFLOP/s), "
        f"peak memory {result['peak_memory_bytes'] / 2**30:.2f} GiB"
        + (f", largest batch {result['largest_batch']} at "
           f"{100 * result['largest_batch_mfu']:.0f}% MFU" if args.max_batch else ""))
  if args.json:
    with open(args.json, "a") as f:
      f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
  main()
