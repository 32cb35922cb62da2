"""Parameter-efficient training throughput, ours against Hugging Face PEFT, side by side.

  pip install -e '.[bench]'
  python -m benchmarks.compare_peft                       # 4 CPU configurations x 4 methods
  python -m benchmarks.compare_peft --methods prompt      # the prompt-tuning table only
  python -m benchmarks.compare_peft --configs small/128 --methods lora,ia3 --rounds 3

Both sides train the same method on the same random T5 1.1 shapes (tiny: d_model 64, d_ff 128,
2+2 layers, 4 heads of 16; small: d_model 512, d_ff 1024, 8+8 layers, 6 heads of 64;
vocabulary 32128, gated-GELU, untied logits), batch 32, target length 8, dropout 0.1, float32:
  ours  the trainer's jitted step (`spot_jax.train.step`) with the method from
        `spot_jax.methods` (`benchmarks/train_step.py:build_step`), under the `spot-jax`
        command's host settings (`spot_jax.runtime`: jemalloc when installed, with page purging
        off, and synchronous CPU dispatch);
  PEFT  the same method's PEFT config (`peft.get_peft_model`) on transformers'
        T5ForConditionalGeneration, loss.backward(), optimizer.step().
Methods (`--methods`; METHODS below):
  prompt  100-token soft prompt; Adafactor lr 0.3 as in SPoT (PEFT: transformers' Adafactor(
          lr=0.3, scale_parameter=False, relative_step=False, warmup_init=False,
          weight_decay=1e-5)); `PromptTuningConfig(num_virtual_tokens=100)`.
  lora    rank 8, alpha 8, no dropout, on every attention query and value (encoder, decoder and
          cross-attention); `LoraConfig(r=8, lora_alpha=8, target_modules=["q", "v"])`.
  ia3     key and value outputs scaled, MLP hidden scaled at the input of wo;
          `IA3Config(target_modules=["k", "v", "wo"], feedforward_modules=["wo"])` (PEFT's T5
          defaults).
  prefix  20 key/value prefixes per decoder self-attention; `PrefixTuningConfig(
          num_virtual_tokens=20)`, whose T5 prefix goes to the decoder self-attention only
          (PEFT 0.21 `get_prompt` empties the cross-attention cache it also fills), and ours
          `Prefix(length=20, encoder=False, decoder=True)`, the same placement (logits equal:
          tests/test_peft_parity.py).
  The non-prompt methods use AdamW at our method's default learning rate, weight decay 0, with
  a linear warmup over 6% of 1000 steps then linear decay (ours `adamw_warmup`, PEFT
  `torch.optim.AdamW` and `get_linear_schedule_with_warmup`).

Each timing block runs in a fresh worker process (so each side's peak resident memory is its
own, and neither holds memory while the other runs); blocks alternate ours, PEFT, ours, PEFT...
so that load on a shared machine hits both alike, and the reported figure is the median step
over all blocks. The float32 matrix-multiply ceiling is measured in the same run (a 4096^3
product with numpy and with jax.jit, best of both) before and after the configurations.
GFLOP/s (prompt rows only) use `spot_jax.models.flops.prompt_tuning_step_flops` (matrix
products of the forward pass and the activation-gradient backward pass; formula in that module)
for both sides.

Writes one JSON line per configuration and method (`--json`) and the markdown table, with the
command, to `benchmarks/RESULTS.md`: section `compare_peft` for a prompt-only run (the
prompt-tuning table of the README), `compare_peft methods` for any other method list.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
from benchmarks import timing
from benchmarks.timing import peak_rss_bytes, time_steps

from spot_jax import runtime  # noqa: E402

SHAPES = {
    "tiny": dict(d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16),
    "small": dict(d_model=512, d_ff=1024, num_layers=8, num_heads=6, d_kv=64),
}
VOCAB_SIZE = 32128
BATCH_SIZE, TARGET_LENGTH, PROMPT_LENGTH, DROPOUT_RATE = 32, 8, 100, 0.1
DEFAULT_CONFIGS = ("tiny/128", "tiny/512", "small/128", "small/512")
# Each side runs as its users get it: ours under the `spot-jax` host settings (jemalloc when
# installed, and synchronous CPU dispatch: `spot_jax.runtime`), PEFT in the plain environment.
ENVIRONMENT = {"ours": runtime.host_environment(), "peft": {}}
TARGETS = {"geomean_ratio": 2.0, "min_ratio": 1.2, "small/128_ceiling_fraction": 0.6}

# Each method's settings on both sides: ours (`spot_jax.methods.create(name, PROMPT_LENGTH,
# **ours)`), PEFT (the config class in `peft` and its arguments, task_type SEQ_2_SEQ_LM).
METHODS: dict[str, dict[str, Any]] = {
    "prompt": {"ours": {}, "peft": ("PromptTuningConfig",
                                    {"num_virtual_tokens": PROMPT_LENGTH})},
    "lora": {"ours": {"rank": 8, "alpha": 8.0},
             "peft": ("LoraConfig", {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0,
                                     "target_modules": ["q", "v"]})},
    "prefix": {"ours": {"length": 20, "encoder": False, "decoder": True},
               "peft": ("PrefixTuningConfig", {"num_virtual_tokens": 20})},
    "ia3": {"ours": {}, "peft": ("IA3Config", {"target_modules": ["k", "v", "wo"],
                                               "feedforward_modules": ["wo"]})},
}
DEFAULT_METHODS = ("prompt", "lora", "prefix", "ia3")
SCHEDULE_STEPS = 1000  # AdamW's schedule length (warmup: spot_jax's ADAMW_WARMUP_FRACTION).
NOTES = {
    "prompt": "100-token soft prompt, Adafactor lr 0.3 both sides.",
    "lora": "rank 8, alpha 8 on all attention q and v (PEFT target_modules q, v).",
    "ia3": "k, v outputs and the wo input scaled (PEFT's T5 defaults k, v, wo; wo feed-forward).",
    "prefix": "20 prefixes in each decoder self-attention, PEFT's T5 placement (ours "
              "Prefix(encoder=False, decoder=True)).",
}


def parse_methods(text: str) -> list[str]:
  """'prompt,lora' -> ['prompt', 'lora'], each a METHODS name, in the given order."""
  names = [name.strip() for name in text.split(",") if name.strip()]
  unknown = [name for name in names if name not in METHODS]
  if unknown or not names or len(set(names)) != len(names):
    raise SystemExit(f"--methods: {text!r} must be distinct comma-separated names from "
                     f"{sorted(METHODS)}, e.g. prompt,lora")
  return names


def results_section(method_names: list[str]) -> str:
  """RESULTS.md section: `compare_peft` for the prompt-only table, else `compare_peft methods`."""
  return "compare_peft" if method_names == ["prompt"] else "compare_peft methods"


def parse_config(text: str) -> tuple[str, int]:
  model, _, length = text.partition("/")
  if model not in SHAPES or not length.isdigit():
    raise SystemExit(f"--configs: {text!r} is not MODEL/INPUT_LENGTH with MODEL in "
                     f"{sorted(SHAPES)}, e.g. small/128")
  return model, int(length)


def random_tokens(batch_size: int, input_length: int, seed: int = 0):
  import numpy as np
  rng = np.random.default_rng(seed)
  inputs = rng.integers(2, VOCAB_SIZE, (batch_size, input_length), dtype=np.int32)
  targets = rng.integers(2, VOCAB_SIZE, (batch_size, TARGET_LENGTH), dtype=np.int32)
  return inputs, targets


# ----------------------------------------------------------------------------- workers


def worker_ours(method: str, model: str, input_length: int, steps: int) -> dict[str, Any]:
  from benchmarks import train_step
  import jax
  runtime.configure_cpu_dispatch()
  runtime.enable_compilation_cache(os.path.join(HERE, ".jax_cache"))
  run_step, _ = train_step.build_step(model, input_length, BATCH_SIZE, TARGET_LENGTH,
                                      PROMPT_LENGTH, DROPOUT_RATE, "float32", method=method,
                                      method_settings=METHODS[method]["ours"],
                                      schedule_steps=SCHEDULE_STEPS)
  start = time.perf_counter()
  jax.block_until_ready(run_step())  # compile (or load from the cache) and warm up.
  warmup = time.perf_counter() - start
  times = time_steps(run_step, steps, jax.block_until_ready)
  return {"times": times, "warmup_seconds": warmup, "peak_rss_bytes": peak_rss_bytes(),
          "versions": {"jax": jax.__version__}}


def worker_peft(method: str, model: str, input_length: int, steps: int, learning_rate: float,
                warmup_steps: int) -> dict[str, Any]:
  """PEFT's `method` on transformers' T5: Adafactor for prompt, else AdamW at `learning_rate`,
  warming up over `warmup_steps` of SCHEDULE_STEPS."""
  import torch
  import transformers
  import peft
  from transformers.optimization import Adafactor, get_linear_schedule_with_warmup

  torch.manual_seed(0)
  shape = SHAPES[model]
  config = transformers.T5Config(
      vocab_size=VOCAB_SIZE, d_model=shape["d_model"], d_kv=shape["d_kv"], d_ff=shape["d_ff"],
      num_layers=shape["num_layers"], num_decoder_layers=shape["num_layers"],
      num_heads=shape["num_heads"], feed_forward_proj="gated-gelu", tie_word_embeddings=False,
      dropout_rate=DROPOUT_RATE, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  base = transformers.T5ForConditionalGeneration(config)
  config_class, settings = METHODS[method]["peft"]
  if method == "prefix":  # PEFT takes d_model as heads x head_dim, which T5 1.1 small is not.
    settings = dict(settings, num_attention_heads=shape["num_heads"],
                    token_dim=shape["num_heads"] * shape["d_kv"])
  net = peft.get_peft_model(base, getattr(peft, config_class)(
      task_type=peft.TaskType.SEQ_2_SEQ_LM, **settings))
  net.train()
  trainable = [p for p in net.parameters() if p.requires_grad]
  if method == "prompt":
    optimizer = Adafactor(trainable, lr=learning_rate, scale_parameter=False, relative_step=False,
                          warmup_init=False, weight_decay=1e-5)
    schedule = None
  else:
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(optimizer, warmup_steps, SCHEDULE_STEPS)
  inputs, targets = random_tokens(BATCH_SIZE, input_length)
  input_ids = torch.from_numpy(inputs).long()
  attention_mask = torch.ones_like(input_ids)
  labels = torch.from_numpy(targets).long()

  def run_step():
    loss = net(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    optimizer.step()
    if schedule is not None:
      schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return loss

  start = time.perf_counter()
  run_step()
  warmup = time.perf_counter() - start
  times = time_steps(run_step, steps, lambda loss: loss.item())
  return {"times": times, "warmup_seconds": warmup, "peak_rss_bytes": peak_rss_bytes(),
          "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                       "peft": peft.__version__}}


def worker_matmul(size: int, repeats: int) -> dict[str, Any]:
  """Best float32 GFLOP/s of a size^3 product: numpy, and jax.jit with our host runtime."""
  import jax
  runtime.configure_cpu_dispatch()
  import jax.numpy as jnp
  import numpy as np
  rng = np.random.default_rng(0)
  a = rng.standard_normal((size, size), dtype=np.float32)
  b = rng.standard_normal((size, size), dtype=np.float32)
  flops = 2 * size ** 3
  result = {}
  a @ b
  numpy_times = time_steps(lambda: a @ b, repeats, lambda x: x)
  result["numpy"] = flops / min(numpy_times) / 1e9
  ja, jb = jnp.asarray(a), jnp.asarray(b)
  product = jax.jit(jnp.matmul)
  jax.block_until_ready(product(ja, jb))
  jax_times = time_steps(lambda: product(ja, jb), repeats, jax.block_until_ready)
  result["jax"] = flops / min(jax_times) / 1e9
  return result


def run_worker(args: list[str], env: dict[str, str]) -> dict[str, Any]:
  """Runs this script as a worker in a fresh process; returns its JSON result."""
  return timing.run_worker("benchmarks.compare_peft", args,
                           dict(env, USE_TF="0", USE_JAX="0",
                                TRANSFORMERS_NO_ADVISORY_WARNINGS="1"))


# ----------------------------------------------------------------------------- the comparison


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else platform.machine()
  except OSError:
    return platform.processor() or platform.machine()


def geometric_mean(values: list[float]) -> float:
  return math.exp(sum(math.log(v) for v in values) / len(values))


def worker_args(side: str, method: str, model: str, input_length: int, steps: int) -> list[str]:
  """A worker's command-line arguments; PEFT's also carry our method's optimizer settings."""
  args = [side, method, model, str(input_length), str(steps)]
  if side == "peft":
    from spot_jax import methods
    from spot_jax.train.optimizer import ADAMW_WARMUP_FRACTION
    warmup = max(int(round(ADAMW_WARMUP_FRACTION * SCHEDULE_STEPS)), 1)  # as adamw_warmup.
    args += [repr(methods.method_class(method).default_learning_rate), str(warmup)]
  return args


def compare(method: str, model: str, input_length: int, rounds: int, steps: dict[str, int],
            ceiling: float) -> dict[str, Any]:
  from spot_jax.models import get_config
  from spot_jax.models.flops import prompt_tuning_step_flops
  flops = None  # the FLOP formula (and so GFLOP/s) covers prompt tuning only.
  if method == "prompt":
    flops = prompt_tuning_step_flops(get_config(model), BATCH_SIZE, input_length, TARGET_LENGTH,
                                     PROMPT_LENGTH).total
  runs: dict[str, list[dict[str, Any]]] = {"ours": [], "peft": []}
  for round_index in range(rounds):
    for side in ("ours", "peft"):
      result = run_worker(worker_args(side, method, model, input_length, steps[side]),
                          ENVIRONMENT[side])
      runs[side].append(result)
      print(f"  {method} {model}/{input_length} round {round_index + 1} {side}: "
            f"{BATCH_SIZE / statistics.median(result['times']):.2f} examples/s", flush=True)
  row: dict[str, Any] = {"config": f"{model}/{input_length}", "method": method, "model": model,
                         "input_length": input_length, "batch_size": BATCH_SIZE,
                         "method_settings": {"ours": METHODS[method]["ours"],
                                             "peft": METHODS[method]["peft"]},
                         "target_length": TARGET_LENGTH, "dropout_rate": DROPOUT_RATE,
                         "dtype": "float32", "ceiling_gflops": ceiling, "rounds": rounds,
                         "step_gflop": None if flops is None else flops / 1e9}
  if method == "prompt":
    row["prompt_length"] = PROMPT_LENGTH
  for side, results in runs.items():
    times = [t for result in results for t in result["times"]]
    step = statistics.median(times)
    row[side] = {"examples_per_second": BATCH_SIZE / step, "step_seconds_median": step,
                 "step_seconds": times,
                 "peak_rss_bytes": max(r["peak_rss_bytes"] for r in results),
                 "warmup_seconds": statistics.median(r["warmup_seconds"] for r in results),
                 "versions": results[0]["versions"]}
    if flops is not None:
      row[side].update(gflops=flops / step / 1e9, ceiling_fraction=flops / step / 1e9 / ceiling)
  row["ratio"] = row["ours"]["examples_per_second"] / row["peft"]["examples_per_second"]
  return row


def markdown(rows: list[dict[str, Any]], ceilings: list[dict[str, float]], command: str) -> str:
  gib = 2 ** 30
  method_names = list(dict.fromkeys(row.get("method", "prompt") for row in rows))
  lines = [
      f"Command: `{command}`",
      "",
      f"Machine: {cpu_model()}, {os.cpu_count()} cores, "
      f"{platform.platform()}; date {time.strftime('%Y-%m-%d')}.",
      f"Allocators: ours {runtime.describe_allocator(ENVIRONMENT['ours'])}, synchronous CPU "
      f"dispatch; PEFT {runtime.describe_allocator(ENVIRONMENT['peft'])}.",
      f"Float32 matmul ceiling ({rows[0].get('matmul_size', 4096)}^3, best of numpy and jax.jit, before / after): "
      + " / ".join(f"{max(c.values()):.0f}" for c in ceilings) + " GFLOP/s.",
      "",
      "| config | method | ours ex/s | PEFT ex/s | ours/PEFT | ours GFLOP/s | PEFT GFLOP/s "
      "| ours / ceiling | step GFLOP | ours peak RSS | PEFT peak RSS |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for row in rows:
    ours, peft = row["ours"], row["peft"]
    flop_cells = "| - | - | - | - |"  # no FLOP formula for this method.
    if row.get("step_gflop") is not None:
      flop_cells = (f"| {ours['gflops']:.1f} | {peft['gflops']:.1f} | "
                    f"{100 * ours['ceiling_fraction']:.0f}% | {row['step_gflop']:.1f} |")
    lines.append(
        f"| {row['config']} | {row.get('method', 'prompt')} | "
        f"{ours['examples_per_second']:.2f} | {peft['examples_per_second']:.2f} | "
        f"{row['ratio']:.2f} {flop_cells} {ours['peak_rss_bytes'] / gib:.2f} GiB | "
        f"{peft['peak_rss_bytes'] / gib:.2f} GiB |")
  lines.append("")
  for method in method_names:
    ratios = [row["ratio"] for row in rows if row.get("method", "prompt") == method]
    line = (f"{method}: geometric mean of ours/PEFT {geometric_mean(ratios):.2f}, lowest "
            f"{min(ratios):.2f}")
    if method == "prompt":
      line += (f" (targets >= {TARGETS['geomean_ratio']} and >= {TARGETS['min_ratio']}, over "
               f"the four default configurations)")
    lines.append(line + ". " + NOTES[method])
  for row in rows:
    if row["config"] == "small/128" and row.get("method", "prompt") == "prompt":
      lines.append(f"small/128 prompt: ours at {100 * row['ours']['ceiling_fraction']:.0f}% of "
                   f"the measured matmul ceiling (target >= "
                   f"{100 * TARGETS['small/128_ceiling_fraction']:.0f}%).")
  leaner = [f"{row['config']} {row.get('method', 'prompt')}" for row in rows
            if row["ours"]["peak_rss_bytes"] <= row["peft"]["peak_rss_bytes"]]
  lines.append(f"Peak resident memory (each side's worker process, ru_maxrss) at or below "
               f"PEFT's in {len(leaner)} of {len(rows)} rows ({', '.join(leaner) or 'none'}).")
  if any(row.get("method", "prompt") != "prompt" for row in rows):
    lines.append("GFLOP/s: prompt rows only (`spot_jax.models.flops` counts prompt tuning). "
                 "Non-prompt methods: AdamW at our method's default learning rate, weight "
                 "decay 0, 6% linear warmup of 1000 steps, both sides.")
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                      help="comma-separated MODEL/INPUT_LENGTH (tiny|small)")
  parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                      help=f"comma-separated methods from {sorted(METHODS)}")
  parser.add_argument("--rounds", type=int, default=3, help="alternating blocks per side")
  parser.add_argument("--budget_seconds", type=float, default=25.0,
                      help="aim for about this many timed seconds per block")
  parser.add_argument("--steps", type=int, default=None,
                      help="timed steps per block (default: sized to --budget_seconds by one "
                           "probe step per side, which costs a worker start each)")
  parser.add_argument("--matmul_size", type=int, default=4096)
  parser.add_argument("--json", default=os.path.join(HERE, "results", "compare_peft.jsonl"))
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
  parser.add_argument("--from_json", default=None,
                      help="only rewrite the table from the rows of one earlier run in this "
                           "JSONL file (the last run in it)")
  parser.add_argument("--note", default="", help="a line added under the table (e.g. the load)")
  parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.from_json:
    with open(args.from_json) as f:
      recorded = [json.loads(line) for line in f if line.strip()]
    rows = [row for row in recorded if row["command"] == recorded[-1]["command"]]
    # The last row of each (config, method); rows from before --methods are prompt rows.
    rows = list({(row["config"], row.get("method", "prompt")): row for row in rows}.values())
    names = list(dict.fromkeys(row.get("method", "prompt") for row in rows))
    write_results(rows, max((row["ceilings"] for row in rows), key=len), rows[-1]["command"],
                  args.results, results_section(names), args.note)
    return
  if args.worker:
    kind, *rest = args.worker
    if kind == "matmul":
      result = worker_matmul(int(rest[0]), int(rest[1]))
    elif kind == "ours":
      result = worker_ours(rest[0], rest[1], int(rest[2]), int(rest[3]))
    else:
      result = worker_peft(rest[0], rest[1], int(rest[2]), int(rest[3]), float(rest[4]),
                           int(rest[5]))
    print(json.dumps(result))
    return

  configs = [parse_config(text) for text in args.configs.split(",")]
  method_names = parse_methods(args.methods)
  command = "python -m benchmarks.compare_peft " + shlex.join(sys.argv[1:])
  ceilings = [run_worker(["matmul", str(args.matmul_size), "3"], ENVIRONMENT["ours"])]
  print(f"matmul ceiling: {ceilings[0]}", flush=True)
  os.makedirs(os.path.dirname(args.json), exist_ok=True)
  rows = []
  for model, input_length in configs:
    for method in method_names:
      if args.steps:
        steps = {"ours": args.steps, "peft": args.steps}
      else:  # one probe step each sizes the blocks to the time budget.
        probe = {side: run_worker(worker_args(side, method, model, input_length, 1),
                                  ENVIRONMENT[side])["times"][0] for side in ("ours", "peft")}
        steps = {side: max(1, min(50, round(args.budget_seconds / t)))
                 for side, t in probe.items()}
      row = compare(method, model, input_length, args.rounds, steps, max(ceilings[0].values()))
      row["matmul_size"] = args.matmul_size
      rows.append(row)
      with open(args.json, "a") as f:  # each row as it comes (the ceiling before, so far).
        f.write(json.dumps(dict(row, command=command, ceilings=ceilings)) + "\n")
      print(f"{row['config']} {method}: ours {row['ours']['examples_per_second']:.2f} ex/s, "
            f"PEFT {row['peft']['examples_per_second']:.2f} ex/s, ratio {row['ratio']:.2f}, "
            f"peak RSS ours {row['ours']['peak_rss_bytes'] / 2**30:.2f} GiB, PEFT "
            f"{row['peft']['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
  ceilings.append(run_worker(["matmul", str(args.matmul_size), "3"], ENVIRONMENT["ours"]))
  with open(args.json, "a") as f:  # the complete run: every row with both ceilings.
    for row in rows:
      f.write(json.dumps(dict(row, command=command, ceilings=ceilings)) + "\n")
  write_results(rows, ceilings, command, args.results, results_section(method_names), args.note)


TITLES = {"compare_peft": "Prompt-tuning throughput: ours against Hugging Face PEFT (CPU)",
          "compare_peft methods": "Parameter-efficient methods, training throughput: ours "
                                  "against Hugging Face PEFT (CPU)"}


def write_results(rows: list[dict[str, Any]], ceilings: list[dict[str, float]], command: str,
                  path: str, section: str, note: str = "") -> None:
  table = markdown(rows, ceilings, command) + (f"\n{note}\n" if note else "")
  print(table)
  from benchmarks.results_md import update_section
  update_section(path, section, f"## {TITLES[section]}\n\n" + table)


if __name__ == "__main__":
  main()
