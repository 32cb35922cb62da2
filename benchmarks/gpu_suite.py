"""GPU figures in one command, each part measured and saved the moment it finishes.

  bash benchmarks/gpu_suite.sh --out DIR            # on the GPU machine (first run: ~8 min)
  bash benchmarks/gpu_suite.sh --out DIR --parts second   # profile, largest batch, packing, XXL
  python -m benchmarks.gpu_suite --cpu_smoke --out /tmp/smoke   # every part, tiny, on CPU
  python -m benchmarks.gpu_suite --from_json DIR/gpu_suite.jsonl   # RESULTS.md's GPU section

Every part runs in a fresh worker process under its own time limit (and what is left of
`--budget_seconds`); a part that overruns is killed and recorded as "over N s", and the rest
still run. Each finished part is printed and appended to DIR/gpu_suite.jsonl as one JSON line.

For T5 1.1 shapes with random frozen weights (the step costs the same as with the released
ones), prompt length 100, batch 32, inputs 512, targets 8, dropout 0.1, bf16 compute, float32
parameters on both sides:
  ours      the trainer's jitted step (`benchmarks/train_step.py`: `spot_jax.train.step`,
            Adafactor lr 0.3), frozen weights drawn leaf by leaf (`spot_jax.models.init`),
            layers under nn.scan unless the part says unrolled. Recorded: seconds from process
            start to the first finished step (`time_to_first_step_seconds`; imports, init,
            compile and the step), its parts (`import_seconds`, `init_seconds`,
            `first_step_seconds`), `compile_seconds` (first step minus a steady one), the
            steady step (median of 20), MFU against the card's bf16 matmul ceiling (the best
            8192^3 product of jax.jit, measured in the same run), peak device memory;
  warm      the same in a second process over the first one's persistent compilation cache;
  PEFT      `PromptTuningConfig(num_virtual_tokens=100)` on transformers'
            T5ForConditionalGeneration under `torch.autocast(bfloat16)`, Adafactor lr 0.3;
  levers    base with XLA's GPU autotuning off (`--xla_gpu_autotune_level=0`), unrolled
            layers, and the old whole-model `jit(T5.init)`, each against the base part;
  second    (`--parts second`) the profiles of base's steady step, unrolled and scanned
            (per-op device time, FLOPs, bytes, memory- or compute-bound:
            `benchmarks/profile_step.py`), base and large at
            the largest batch whose compiled step fits (XLA's memory analysis at two batch
            sizes, extrapolated and checked: `train_step.largest_batch`) with its MFU, 8 and 4
            base runs packed into one step against the same runs one after another, large
            unrolled, XXL with bf16 frozen weights and remat, and PEFT at XXL.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
from benchmarks import timing
from benchmarks.timing import time_steps

T0_VARIABLE = "GPU_SUITE_T0"  # the wall-clock time the parent started the worker process.
LIMIT_VARIABLE = "GPU_SUITE_LIMIT_BYTES"  # device memory for the largest batch, where unreported.


@dataclasses.dataclass(frozen=True)
class Shape:
  batch_size: int = 32
  input_length: int = 512
  target_length: int = 8
  prompt_length: int = 100
  dropout_rate: float = 0.1
  steps: int = 20
  dtype: str = "bfloat16"


GPU_SHAPE = Shape()
SMOKE_SHAPE = Shape(batch_size=2, input_length=32, target_length=4, prompt_length=4, steps=2,
                    dtype="float32")


def shape_from_env() -> Shape:
  return Shape(**json.loads(os.environ.get("GPU_SUITE_SHAPE", "{}")))


def step_flops(model: str, shape: Shape, batch_size: int | None = None) -> float:
  from spot_jax.models import get_config
  from spot_jax.models.flops import prompt_tuning_step_flops
  return prompt_tuning_step_flops(get_config(model), batch_size or shape.batch_size,
                                  shape.input_length, shape.target_length,
                                  shape.prompt_length).total


# ----------------------------------------------------------------------------- workers


def _since_start() -> float:
  return time.time() - float(os.environ.get(T0_VARIABLE, time.time()))


def worker_matmul() -> dict[str, Any]:
  import jax
  from benchmarks import train_step
  repeats = 10 if jax.default_backend() != "cpu" else 2  # a CPU 4096^3 product takes seconds.
  return {"ceiling_gflops": train_step.matmul_ceiling(shape_from_env().dtype, repeats) / 1e9,
          "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
          "versions": {"jax": jax.__version__}}


def worker_ours(model: str, layout: str = "scan", frozen_init: str = "leaf",
                frozen_dtype: str = "float32", remat: str = "none") -> dict[str, Any]:
  """One model's time to the first step and steady step, from a fresh process."""
  shape = shape_from_env()
  from spot_jax import runtime
  runtime.hide_accelerators_from_tensorflow()
  cache = runtime.enable_compilation_cache()
  import jax
  from benchmarks import train_step
  imported = _since_start()
  overrides = {"scan_layers": layout == "scan"}
  if remat != "none":
    overrides.update(remat=True, remat_policy=remat)
  run_step, _ = train_step.build_step(model, shape.input_length, shape.batch_size,
                                      shape.target_length, shape.prompt_length,
                                      shape.dropout_rate, shape.dtype, frozen_init=frozen_init,
                                      frozen_dtype=frozen_dtype, **overrides)
  built = _since_start()
  start = time.perf_counter()
  jax.block_until_ready(run_step())
  first = time.perf_counter() - start
  first_done = _since_start()
  times = time_steps(run_step, shape.steps, jax.block_until_ready)
  step = statistics.median(times)
  return {"time_to_first_step_seconds": first_done, "import_seconds": imported,
          "init_seconds": built - imported, "first_step_seconds": first,
          "compile_seconds": max(first - step, 0.0), "step_seconds_median": step,
          "times": times, "peak_memory_bytes": train_step.peak_memory_bytes(),
          "compilation_cache": cache, "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "backend": jax.default_backend(), "versions": {"jax": jax.__version__}}


def worker_largest(model: str, layout: str = "scan") -> dict[str, Any]:
  """The steady step at the largest batch whose compiled step fits the card (multiples of 8)."""
  from spot_jax import runtime
  runtime.enable_compilation_cache()
  from benchmarks import train_step
  shape = shape_from_env()
  limit = os.environ.get(LIMIT_VARIABLE)  # set on CPU, which reports no memory limit.
  return train_step.largest_batch_benchmark(
      model, shape.input_length, shape.target_length, shape.prompt_length, shape.dropout_rate,
      shape.dtype, shape.steps, start=shape.batch_size, limit_bytes=int(limit) if limit else None,
      scan_layers=layout == "scan")


def worker_profile(model: str, layout: str = "unrolled") -> dict[str, Any]:
  """Where the steady step's device time goes (`benchmarks/profile_step.py`)."""
  from spot_jax import runtime
  runtime.enable_compilation_cache()
  from benchmarks import profile_step
  shape = shape_from_env()
  return profile_step.profile_model(model, shape.input_length, shape.batch_size,
                                    shape.target_length, shape.prompt_length, shape.dtype,
                                    steps=3, dropout_rate=shape.dropout_rate,
                                    scan_layers=layout == "scan")


def worker_peft(model: str) -> dict[str, Any]:
  import peft
  import torch
  import transformers
  from spot_jax.models import get_config
  try:
    from transformers.optimization import Adafactor
  except ImportError:  # newer transformers: PyTorch's own.
    Adafactor = None

  shape = shape_from_env()
  imported = _since_start()
  cfg = get_config(model)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  config = transformers.T5Config(
      vocab_size=cfg.vocab_size, d_model=cfg.emb_dim, d_kv=cfg.head_dim, d_ff=cfg.mlp_dim,
      num_layers=cfg.num_encoder_layers, num_decoder_layers=cfg.num_decoder_layers,
      num_heads=cfg.num_heads, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
      dropout_rate=shape.dropout_rate, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  net = peft.get_peft_model(transformers.T5ForConditionalGeneration(config),
                            peft.PromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM,
                                                    num_virtual_tokens=shape.prompt_length))
  net = net.to(device).train()
  trainable = [p for p in net.parameters() if p.requires_grad]
  if Adafactor is not None:
    optimizer = Adafactor(trainable, lr=0.3, scale_parameter=False, relative_step=False,
                          warmup_init=False, weight_decay=1e-5)
  else:
    optimizer = torch.optim.Adafactor(trainable, lr=0.3, weight_decay=1e-5)
  generator = torch.Generator().manual_seed(0)
  input_ids = torch.randint(2, cfg.vocab_size, (shape.batch_size, shape.input_length),
                            generator=generator).to(device)
  labels = torch.randint(2, cfg.vocab_size, (shape.batch_size, shape.target_length),
                         generator=generator).to(device)
  attention_mask = torch.ones_like(input_ids)

  def run_step():
    with torch.autocast(device, dtype=torch.bfloat16, enabled=shape.dtype == "bfloat16"):
      loss = net(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss

  built = _since_start()
  start = time.perf_counter()
  run_step().item()
  first = time.perf_counter() - start
  first_done = _since_start()
  times = time_steps(run_step, shape.steps, lambda loss: loss.item())
  return {"time_to_first_step_seconds": first_done, "import_seconds": imported,
          "init_seconds": built - imported, "first_step_seconds": first,
          "step_seconds_median": statistics.median(times), "times": times,
          "peak_memory_bytes": int(torch.cuda.max_memory_allocated()) if device == "cuda"
          else timing.peak_rss_bytes(),
          "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                       "peft": peft.__version__}}


def worker_packed(model: str, runs: int) -> dict[str, Any]:
  import jax
  from spot_jax.train import packed  # noqa: F401  (raises ImportError where packing is absent)
  from benchmarks import train_step
  shape = shape_from_env()
  from spot_jax import runtime
  runtime.enable_compilation_cache()
  return train_step.packed_benchmark(model, shape.input_length, shape.batch_size,
                                     shape.target_length, shape.prompt_length,
                                     shape.dropout_rate, shape.dtype, int(runs), shape.steps,
                                     sync=jax.block_until_ready, scan_layers=True)


WORKERS = {"matmul": worker_matmul, "ours": worker_ours, "peft": worker_peft,
           "largest": worker_largest, "profile": worker_profile, "packed": worker_packed}


# ----------------------------------------------------------------------------- the parts


@dataclasses.dataclass(frozen=True)
class Part:
  """One measurement: a worker in a fresh process, under `limit_seconds`."""

  name: str
  worker: tuple[str, ...]
  limit_seconds: float
  env: tuple[tuple[str, str], ...] = ()
  cache: str = ""  # the persistent compilation cache directory's name ("" none; shared = warm).


def first_parts(models: tuple[str, ...] = ("base", "large")) -> list[Part]:
  """The first run (at most 7.5 minutes on an H200): the ceiling, base and large (ours cold,
  ours warm from the cache, PEFT), then the compile levers on base while budget remains."""
  base = models[0]
  parts = [Part("ceiling", ("matmul",), 40)]
  for model in models:
    parts += [Part(f"{model} ours", ("ours", model), 100 if model == base else 130,
                   cache=f"{model}_scan"),
              Part(f"{model} ours warm cache", ("ours", model), 40, cache=f"{model}_scan"),
              Part(f"{model} PEFT", ("peft", model), 75 if model == base else 90)]
  parts += [
      Part(f"{base} ours, XLA GPU autotuning off", ("ours", base), 60,
           env=(("XLA_FLAGS", "--xla_gpu_autotune_level=0"),), cache=f"{base}_noautotune"),
      Part(f"{base} ours, unrolled layers", ("ours", base, "unrolled"), 90,
           cache=f"{base}_unrolled"),
      Part(f"{base} ours, whole-model jit(init)", ("ours", base, "scan", "jit"), 60,
           cache=f"{base}_jit_init"),
  ]
  return parts


def second_parts() -> list[Part]:
  """The second run, what the first leaves unmeasured, most wanted first: the profiles of base's
  steady step in both layouts (why scan is slower) and scanned base with T5X's minimal remat
  policy (residuals recomputed, not stacked), base and large at their largest batch (MFU),
  packing 8 and 4 base runs, large unrolled, then XXL on one card (bf16 frozen weights, remat)
  and PEFT at XXL."""
  big = (("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95"),)
  return [Part("ceiling", ("matmul",), 60),
          Part("base profile, unrolled", ("profile", "base", "unrolled"), 120,
               cache="base_unrolled"),
          Part("base profile, scan", ("profile", "base", "scan"), 60, cache="base_scan"),
          # Recomputing instead of stacking residuals: is the scan's extra time the stacking?
          Part("base ours, scan, remat minimal", ("ours", "base", "scan", "leaf", "float32",
                                                  "minimal"), 60, cache="base_scan_minimal"),
          Part("base largest batch", ("largest", "base", "scan"), 120, env=big,
               cache="base_largest"),
          Part("base packed 8", ("packed", "base", "8"), 120, cache="base_packed"),
          Part("large largest batch", ("largest", "large", "scan"), 120, env=big,
               cache="large_largest"),
          Part("base packed 4", ("packed", "base", "4"), 90, cache="base_packed"),
          Part("large ours, unrolled layers", ("ours", "large", "unrolled"), 150,
               cache="large_unrolled"),
          Part("xxl ours, bf16 frozen, remat", ("ours", "xxl", "scan", "leaf", "bfloat16",
                                                "full"), 120, cache="xxl"),
          Part("xxl PEFT", ("peft", "xxl"), 150)]


def smoke_parts() -> list[Part]:
  """Every kind of part of both runs at the tiny shape, for a CPU check of the suite."""
  first = first_parts(("tiny", "tiny_byte"))
  second = [Part("tiny ours, bf16 frozen, remat", ("ours", "tiny", "scan", "leaf", "bfloat16",
                                                   "full"), 120, cache="tiny_bf16"),
            Part("tiny largest batch", ("largest", "tiny"), 120,
                 env=((LIMIT_VARIABLE, str(64 * 2**20)),)),
            Part("tiny profile, unrolled", ("profile", "tiny", "unrolled"), 120),
            Part("tiny packed 2", ("packed", "tiny", "2"), 120)]
  return first + second


def run_part(part: Part, shape: Shape, limit: float, cache_root: str) -> dict[str, Any]:
  """Runs one part; returns its record (status ok / over / failed) without raising."""
  env = {k: v for k, v in os.environ.items() if k not in timing.ALLOCATOR_VARIABLES}
  env.update(TF_CPP_MIN_LOG_LEVEL="3", TRANSFORMERS_NO_ADVISORY_WARNINGS="1", USE_TF="0",
             USE_JAX="0", GPU_SUITE_SHAPE=json.dumps(dataclasses.asdict(shape)),
             SPOT_JAX_COMPILATION_CACHE=(os.path.join(cache_root, part.cache) if part.cache
                                         else "0"), **dict(part.env))
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env[T0_VARIABLE] = repr(time.time())
  start = time.perf_counter()
  record: dict[str, Any] = {"part": part.name, "worker": list(part.worker),
                            "env": dict(part.env), "limit_seconds": round(limit, 1)}
  try:
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--worker",
                           *part.worker], capture_output=True, text=True, env=env,
                          timeout=limit, cwd=os.path.dirname(HERE))
  except subprocess.TimeoutExpired:
    return dict(record, status="over", wall_seconds=round(time.perf_counter() - start, 1),
                message=f"over {limit:.0f} s")
  record["wall_seconds"] = round(time.perf_counter() - start, 1)
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode != 0 or not lines:
    return dict(record, status="failed", message=(done.stderr or done.stdout)[-1500:])
  return dict(record, status="ok", result=json.loads(lines[-1]))


def describe(record: dict[str, Any]) -> str:
  """One line per part, as printed."""
  if record["status"] != "ok":
    message = record["message"].strip().splitlines()[-1] if record["message"].strip() else ""
    return f"{record['part']}: {record['status'].upper()} ({message})"
  r = record["result"]
  bits = []
  if "ceiling_gflops" in r:
    bits.append(f"{r['device']}: matmul ceiling {r['ceiling_gflops'] / 1000:.1f} TFLOP/s")
  if "time_to_first_step_seconds" in r:
    bits.append(f"first step at {r['time_to_first_step_seconds']:.1f} s "
                f"(init {r['init_seconds']:.1f} s, first step {r['first_step_seconds']:.1f} s)")
  if "step_seconds_median" in r:
    bits.append(f"step {1000 * r['step_seconds_median']:.1f} ms")
  if "mfu" in record:
    bits.append(f"MFU {100 * record['mfu']:.1f}%")
  if "peak_memory_bytes" in r:
    bits.append(f"peak {r['peak_memory_bytes'] / 2**30:.2f} GiB")
  if "largest_batch" in r:
    bits.append(f"largest batch {r['largest_batch']}")
  if "top" in r:
    bits.append(f"profiled: matmuls {100 * r['matmul_share']:.0f}% of op time at "
                f"{100 * r['matmul_efficiency']:.0f}% of the ceiling, memory-bound ops "
                f"{100 * r['memory_bound_share']:.0f}%, idle {100 * r['idle_share']:.0f}%")
  if "packed_examples_per_second" in r:
    bits.append(f"packed {r['packed_examples_per_second']:.1f} ex/s vs sequential "
                f"{r['sequential_examples_per_second']:.1f}")
  return f"{record['part']}: " + ", ".join(bits)


def suite(parts: list[Part], shape: Shape, budget_seconds: float, out_path: str,
          cache_root: str) -> list[dict[str, Any]]:
  """Runs `parts` in order, each under min(its limit, what is left of the budget); appends
  each record to `out_path` (JSON lines) and prints it as it finishes."""
  start = time.perf_counter()
  records, ceiling = [], None
  header = {"part": "suite", "status": "ok", "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                    time.gmtime()),
            "shape": dataclasses.asdict(shape), "parts": [p.name for p in parts],
            "command": "bash benchmarks/gpu_suite.sh " + shlex.join(sys.argv[1:])}
  _append(out_path, header)
  for part in parts:
    left = budget_seconds - (time.perf_counter() - start)
    if left < 5:
      record = {"part": part.name, "status": "skipped", "message": "suite budget spent"}
    else:
      record = run_part(part, shape, min(part.limit_seconds, left), cache_root)
    result = record.get("result", {})
    if "ceiling_gflops" in result:
      ceiling = result["ceiling_gflops"]
    if ceiling and "step_seconds_median" in result and part.worker[0] in ("ours", "peft"):
      record["step_gflop"] = step_flops(part.worker[1], shape) / 1e9
      record["mfu"] = record["step_gflop"] / result["step_seconds_median"] / ceiling
      record["examples_per_second"] = shape.batch_size / result["step_seconds_median"]
    elif ceiling and "gflops" in result:  # largest batch: the worker counts its own FLOPs.
      record["step_gflop"] = result["step_gflop"]
      record["mfu"] = result["gflops"] / ceiling
      record["examples_per_second"] = result["examples_per_second"]
    _append(out_path, record)
    records.append(record)
    print(describe(record) if record["status"] != "skipped"
          else f"{part.name}: SKIPPED (suite budget spent)", flush=True)
  return records


def _append(path: str, record: dict[str, Any]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


# ----------------------------------------------------------------------------- RESULTS.md


def read_records(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """The last suite run in a JSON-lines file: (its header, its part records)."""
  with open(path) as f:
    lines = [json.loads(line) for line in f if line.strip()]
  starts = [i for i, r in enumerate(lines) if r.get("part") == "suite"]
  if not starts:
    raise SystemExit(f"{path}: no suite header line; not a gpu_suite.jsonl")
  return lines[starts[-1]], lines[starts[-1] + 1:]


def markdown(header: dict[str, Any], records: list[dict[str, Any]]) -> str:
  """RESULTS.md's GPU section: card, versions, date, then one row per part."""
  ok = {r["part"]: r for r in records if r["status"] == "ok"}
  ceiling = next((r["result"] for r in ok.values() if "ceiling_gflops" in r["result"]), {})
  versions = {}
  for r in ok.values():
    versions.update(r["result"].get("versions", {}))
  shape = Shape(**header["shape"])
  lines = [f"Command: `{header['command']}`", "",
           f"Card: {ceiling.get('device', 'unknown')}; {header['date']}; versions: "
           + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
           + f"; bf16 matmul ceiling (8192^3, jax.jit, best of 10): "
           f"{ceiling.get('ceiling_gflops', float('nan')) / 1000:.0f} TFLOP/s. Batch "
           f"{shape.batch_size}, inputs {shape.input_length} + prompt {shape.prompt_length}, "
           f"targets {shape.target_length}, dropout {shape.dropout_rate}, {shape.dtype} "
           "compute, random frozen weights. Time to first step: from the worker process's "
           "start to its first finished training step (imports, init, compile, step).", "",
           "| part | time to first step | init | first step | compile | steady step | ex/s "
           "| MFU | peak memory | note |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

  def fmt(value: float | None, unit: str = "s", scale: float = 1.0) -> str:
    if value is None:
      return "-"
    digits = 3 if scale == 1 and value < 1 else 1
    return f"{value * scale:.{digits}f} {unit}"

  for r in records:
    if r["part"] == "ceiling":
      continue
    res = r.get("result", {})
    note = {"ok": "", "over": r.get("message", ""), "failed": "failed: " + (
        r.get("message", "").strip().splitlines() or [""])[-1][:80],
            "skipped": "skipped: " + r.get("message", "")}[r["status"]]
    if "largest_batch" in res:
      note = (f"largest batch {res['largest_batch']} (predicted {res['predicted_batch']} from "
              f"{res['bytes_per_example'] / 2**20:.0f} MiB per example)"
              if "predicted_batch" in res else f"largest batch {res['largest_batch']}")
    if "top" in res:
      note = f"profile below; MFU {100 * res['mfu']:.1f}%"
    if "packed_examples_per_second" in res:
      note = (f"packed {res['packed_examples_per_second']:.1f} ex/s vs one after another "
              f"{res['sequential_examples_per_second']:.1f} "
              f"({res['packed_examples_per_second'] / res['sequential_examples_per_second']:.2f}x)")
    peak = res.get("peak_memory_bytes")
    lines.append(
        f"| {r['part']} | {fmt(res.get('time_to_first_step_seconds'))} "
        f"| {fmt(res.get('init_seconds'))} | {fmt(res.get('first_step_seconds'))} "
        f"| {fmt(res.get('compile_seconds'))} "
        f"| {fmt(res.get('step_seconds_median'), 'ms', 1000)} "
        f"| {r['examples_per_second']:.1f} | {100 * r['mfu']:.1f}% "
        if "mfu" in r else
        f"| {r['part']} | {fmt(res.get('time_to_first_step_seconds'))} "
        f"| {fmt(res.get('init_seconds'))} | {fmt(res.get('first_step_seconds'))} "
        f"| {fmt(res.get('compile_seconds'))} "
        f"| {fmt(res.get('step_seconds_median'), 'ms', 1000)} | - | - ")
    lines[-1] += f"| {'-' if peak is None else f'{peak / 2**30:.1f} GiB'} | {note} |"
  from benchmarks import profile_step
  for r in records:
    if r["status"] == "ok" and "top" in r["result"]:
      lines += ["", f"Profile of {r['part']} (batch {r['result']['batch_size']}, "
                f"`benchmarks/profile_step.py`):", "", profile_step.markdown(r["result"])]
  return "\n".join(lines + [""] + target_lines(records)) + "\n"


# Issue 27's targets: seconds from process start to the first finished step, one H100/H200.
FIRST_STEP_TARGETS = {"base ours": 15, "large ours": 25, "xxl ours, bf16 frozen, remat": 60,
                      "base ours warm cache": 5}


def target_lines(records: list[dict[str, Any]]) -> list[str]:
  """Each target against its measurement, and ours/PEFT per model."""
  by_part = {r["part"]: r for r in records}
  lines = []
  for part, target in FIRST_STEP_TARGETS.items():
    r = by_part.get(part)
    if r is None:
      continue
    got = r.get("result", {}).get("time_to_first_step_seconds")
    verdict = (f"{got:.1f} s: {'met' if got <= target else 'missed'}" if got is not None
               else r.get("message", r["status"]))
    lines.append(f"- target {part} first step <= {target} s: {verdict}")
  for part, r in by_part.items():
    if part.endswith("largest batch") and "mfu" in r:
      lines.append(f"- {part.split()[0]} at its largest batch {r['result']['largest_batch']}: "
                   f"MFU {100 * r['mfu']:.1f}% (target >= 45%): "
                   f"{'met' if r['mfu'] >= 0.45 else 'missed'}")
    result = r.get("result", {})
    if part.endswith("packed 8") and "packed_examples_per_second" in result:
      ratio = result["packed_examples_per_second"] / result["sequential_examples_per_second"]
      lines.append(f"- {part}: {ratio:.2f}x the same runs one after another (target >= 2.5x): "
                   f"{'met' if ratio >= 2.5 else 'missed'}")
    peft = by_part.get(part.replace(" ours", " PEFT"))
    if (part.endswith(" ours") and peft and "examples_per_second" in r
        and "examples_per_second" in peft):
      ratio = r["examples_per_second"] / peft["examples_per_second"]
      lines.append(f"- {part.split()[0]}: ours {ratio:.2f}x PEFT's examples/s (target >= 4x)")
  return lines


def write_results(path_jsonl: str, results_md: str, section: str = "gpu_suite") -> str:
  header, records = read_records(path_jsonl)
  table = markdown(header, records)
  from benchmarks.results_md import update_section
  update_section(results_md, section, "## GPU: time to first step, steady state, ours "
                 "against Hugging Face PEFT\n\n" + table)
  return table


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(HERE, "results"),
                      help="directory of gpu_suite.jsonl (and the compilation caches)")
  parser.add_argument("--parts", choices=("first", "second"), default="first")
  parser.add_argument("--models", default="base,large", help="first run's models")
  parser.add_argument("--budget_seconds", type=float, default=450.0)
  parser.add_argument("--cpu_smoke", action="store_true",
                      help="every part of both runs at a tiny shape (a CPU check of the suite)")
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
  parser.add_argument("--from_json", default=None,
                      help="only rewrite RESULTS.md's GPU section from this gpu_suite.jsonl")
  parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    kind, *rest = args.worker
    print(json.dumps(WORKERS[kind](*rest)))
    return
  if args.from_json:
    section = "gpu_suite_second" if "second" in os.path.basename(args.from_json) else "gpu_suite"
    print(write_results(args.from_json, args.results, section))
    return
  if args.cpu_smoke:
    parts, shape = smoke_parts(), SMOKE_SHAPE
  elif args.parts == "first":
    parts, shape = first_parts(tuple(args.models.split(","))), GPU_SHAPE
  else:
    parts, shape = second_parts(), GPU_SHAPE
  name = "gpu_suite_second.jsonl" if args.parts == "second" else "gpu_suite.jsonl"
  out_path = os.path.join(args.out, name)
  cache_root = os.path.join("/tmp" if not args.cpu_smoke else args.out, "gpu_suite_cache",
                            str(os.getpid()))
  suite(parts, shape, args.budget_seconds, out_path, cache_root)
  print(f"saved {out_path}; RESULTS.md: python -m benchmarks.gpu_suite --from_json {out_path}")


if __name__ == "__main__":
  main()
