"""Compile time of the prompt-tuning train step, layers under nn.scan against unrolled.

  python -m benchmarks.compile_time --models base,large,xxl --limit_seconds 300

Lowers and compiles the trainer's jitted step (`spot_jax.train.step.make_train_step`, Adafactor)
ahead of time from shapes alone (`jax.ShapeDtypeStruct`: no weights are allocated, so XXL
compiles on any machine), batch 32, inputs 512 + prompt 100, targets 8, bf16 compute. Each
(model, layout) runs in a fresh process under `--limit_seconds` ("over N s" past it), on the
default backend; the table goes to RESULTS.md's `compile_time_<backend>` section.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH, INPUTS, TARGETS, PROMPT = 32, 512, 8, 100


def worker(model_name: str, layout: str) -> dict:
  import jax
  import jax.numpy as jnp

  from spot_jax.models import T5, get_config
  from spot_jax.models.init import frozen_shapes
  from spot_jax.models.prompts import with_prompt
  from spot_jax.train.optimizer import prompt_adafactor
  from spot_jax.train.step import init_train_state, make_train_step
  config = get_config(model_name, dtype="bfloat16", scan_layers=layout == "scan")
  model = T5(config, prompt_length=PROMPT)
  optimizer = prompt_adafactor(0.3)
  state = jax.eval_shape(lambda: init_train_state(
      with_prompt({}, jnp.zeros((PROMPT, config.emb_dim))), optimizer, seed=0))
  frozen = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.bfloat16),
                        frozen_shapes(config))
  tokens = lambda n: jax.ShapeDtypeStruct((BATCH, n), jnp.int32)  # noqa: E731
  batch = {"encoder_input_tokens": tokens(INPUTS), "decoder_input_tokens": tokens(TARGETS),
           "decoder_target_tokens": tokens(TARGETS)}
  step = jax.jit(make_train_step(model, optimizer), donate_argnums=(0,))
  start = time.perf_counter()
  lowered = step.lower(state, frozen, batch)
  lowered_at = time.perf_counter()
  lowered.compile()
  done = time.perf_counter()
  return {"lower_seconds": lowered_at - start, "compile_seconds": done - lowered_at,
          "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
          "jax": jax.__version__}


def run(model_name: str, layout: str, limit: float) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", SPOT_JAX_COMPILATION_CACHE="0")
  start = time.perf_counter()
  try:
    done = subprocess.run([sys.executable, "-m", "benchmarks.compile_time", "--worker",
                           model_name, layout], capture_output=True, text=True, env=env,
                          timeout=limit, cwd=os.path.dirname(HERE))
  except subprocess.TimeoutExpired:
    return {"model": model_name, "layout": layout, "status": f"over {limit:.0f} s"}
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode or not lines:
    return {"model": model_name, "layout": layout, "status": "failed: " + done.stderr[-300:]}
  return dict(json.loads(lines[-1]), model=model_name, layout=layout, status="ok",
              wall_seconds=time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="base,large,xxl")
  parser.add_argument("--limit_seconds", type=float, default=300)
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
  parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(*args.worker)))
    return
  rows = []
  for model_name in args.models.split(","):
    for layout in ("scan", "unrolled"):
      rows.append(run(model_name, layout, args.limit_seconds))
      print(json.dumps(rows[-1]), flush=True)
  ok = [r for r in rows if r["status"] == "ok"]
  backend = ok[0]["backend"] if ok else "unknown"
  device = f"{ok[0]['device']}, jax {ok[0]['jax']}" if ok else "unknown"
  lines = [f"Command: `python -m benchmarks.compile_time --models {args.models} "
           f"--limit_seconds {args.limit_seconds:.0f}`", "",
           f"{device}, {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}. The prompt-tuning "
           f"train step (batch {BATCH}, inputs {INPUTS} + prompt {PROMPT}, targets {TARGETS}, "
           "bf16 compute), lowered and compiled ahead of time from shapes; each in a fresh "
           "process without the persistent cache.", "",
           "| model | layout | trace + lower | XLA compile |", "| --- | --- | --- | --- |"]
  for r in rows:
    if r["status"] == "ok":
      lines.append(f"| {r['model']} | {r['layout']} | {r['lower_seconds']:.1f} s "
                   f"| {r['compile_seconds']:.1f} s |")
    else:
      lines.append(f"| {r['model']} | {r['layout']} | - | {r['status'][:60]} |")
  from benchmarks.results_md import update_section
  update_section(args.results, f"compile_time_{backend}",
                 f"## Step compile time, scan against unrolled ({backend})\n\n"
                 + "\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  main()
