"""GPU figures in one command: ours against Hugging Face PEFT on the same card, bfloat16.

  bash benchmarks/gpu_suite.sh                 # on the GPU machine; writes results/gpu_suite.jsonl
  python benchmarks/gpu_suite.py --from_json benchmarks/results/gpu_suite.jsonl
                                               # rewrite the RESULTS.md section from that file

For T5 1.1 base and large shapes (random weights: the step costs the same as with the released
ones), prompt length 100, batch 32, inputs 512, targets 8, dropout 0.1, bfloat16 compute with
float32 parameters on both sides:
  ours      the trainer's jitted step (`benchmarks/train_step.py`: `spot_jax.train.step`,
            Adafactor lr 0.3), examples/s and MFU against the card's bf16 matmul ceiling
            (the best 8192^3 product of jax.jit, measured in the same run);
  PEFT      `PromptTuningConfig(num_virtual_tokens=100)` on transformers'
            T5ForConditionalGeneration under `torch.autocast(bfloat16)`, Adafactor lr 0.3,
            loss.backward(), optimizer.step();
  largest   the largest batch of ours whose step fits in device memory (doubling from 32, then
            bisecting to 1/8 of the last good size);
  packed    N runs packed into one jitted step (`spot_jax.train.packed`) against the same N
            trained one after another, when that module exists.
Each measurement runs in a fresh worker process (JAX and PyTorch each take the card alone).
Parts are skipped, and say so, once `--budget_seconds` is spent.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import timing  # noqa: E402
from timing import time_steps  # noqa: E402

BATCH_SIZE, INPUT_LENGTH, TARGET_LENGTH, PROMPT_LENGTH, DROPOUT_RATE = 32, 512, 8, 100, 0.1
STEPS = 20


def step_flops(model: str, batch_size: int) -> float:
  from spot_jax.models import get_config
  from spot_jax.models.flops import prompt_tuning_step_flops
  return prompt_tuning_step_flops(get_config(model), batch_size, INPUT_LENGTH, TARGET_LENGTH,
                                  PROMPT_LENGTH).total


# ----------------------------------------------------------------------------- workers


def worker_matmul() -> dict[str, Any]:
  import jax
  import train_step
  return {"jax_bf16_gflops": train_step.matmul_ceiling("bfloat16", repeats=10) / 1e9,
          "device": jax.devices()[0].device_kind}


def worker_ours(model: str) -> dict[str, Any]:
  import jax
  import train_step
  run_step, _ = train_step.build_step(model, INPUT_LENGTH, BATCH_SIZE, TARGET_LENGTH,
                                      PROMPT_LENGTH, DROPOUT_RATE, "bfloat16")
  start = time.perf_counter()
  jax.block_until_ready(run_step())
  warmup = time.perf_counter() - start
  times = time_steps(run_step, STEPS, jax.block_until_ready)
  return {"times": times, "warmup_seconds": warmup,
          "peak_memory_bytes": train_step.peak_memory_bytes(),
          "versions": {"jax": jax.__version__}}


def worker_largest(model: str) -> dict[str, Any]:
  import train_step
  return {"largest_batch": train_step.largest_batch(model, INPUT_LENGTH, TARGET_LENGTH,
                                                    PROMPT_LENGTH, "bfloat16", BATCH_SIZE)}


def worker_peft(model: str) -> dict[str, Any]:
  import peft
  import torch
  import transformers
  from spot_jax.models import get_config
  try:
    from transformers.optimization import Adafactor
  except ImportError:  # newer transformers: PyTorch's own.
    Adafactor = None

  cfg = get_config(model)
  torch.manual_seed(0)
  config = transformers.T5Config(
      vocab_size=cfg.vocab_size, d_model=cfg.emb_dim, d_kv=cfg.head_dim, d_ff=cfg.mlp_dim,
      num_layers=cfg.num_encoder_layers, num_decoder_layers=cfg.num_decoder_layers,
      num_heads=cfg.num_heads, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
      dropout_rate=DROPOUT_RATE, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  net = peft.get_peft_model(transformers.T5ForConditionalGeneration(config),
                            peft.PromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM,
                                                    num_virtual_tokens=PROMPT_LENGTH))
  net = net.cuda().train()
  trainable = [p for p in net.parameters() if p.requires_grad]
  if Adafactor is not None:
    optimizer = Adafactor(trainable, lr=0.3, scale_parameter=False, relative_step=False,
                          warmup_init=False, weight_decay=1e-5)
  else:
    optimizer = torch.optim.Adafactor(trainable, lr=0.3, weight_decay=1e-5)
  generator = torch.Generator().manual_seed(0)
  input_ids = torch.randint(2, cfg.vocab_size, (BATCH_SIZE, INPUT_LENGTH),
                            generator=generator).cuda()
  labels = torch.randint(2, cfg.vocab_size, (BATCH_SIZE, TARGET_LENGTH),
                         generator=generator).cuda()
  attention_mask = torch.ones_like(input_ids)

  def run_step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
      loss = net(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss

  start = time.perf_counter()
  run_step().item()
  warmup = time.perf_counter() - start
  times = time_steps(run_step, STEPS, lambda loss: loss.item())
  return {"times": times, "warmup_seconds": warmup,
          "peak_memory_bytes": int(torch.cuda.max_memory_allocated()),
          "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                       "peft": peft.__version__}}


def worker_packed(model: str, runs: int) -> dict[str, Any]:
  import jax
  from spot_jax.train import packed  # noqa: F401  (raises ImportError where packing is absent)
  import train_step
  return train_step.packed_benchmark(model, INPUT_LENGTH, BATCH_SIZE, TARGET_LENGTH,
                                     PROMPT_LENGTH, DROPOUT_RATE, "bfloat16", runs, STEPS,
                                     sync=jax.block_until_ready)


WORKERS = {"matmul": worker_matmul, "ours": worker_ours, "peft": worker_peft,
           "largest": worker_largest, "packed": worker_packed}


def run_worker(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
  return timing.run_worker(__file__, args, dict(env or {}, TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
                                                USE_TF="0", USE_JAX="0"))


# ----------------------------------------------------------------------------- the suite


def suite(models: list[str], budget_seconds: float, packed_runs: int, partial_path: str
          ) -> dict[str, Any]:
  """Runs every part; after each, the record so far is written to `partial_path`."""
  start = time.perf_counter()
  spent = lambda: time.perf_counter() - start  # noqa: E731
  record: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "rows": [], "skipped": []}
  ceiling = run_worker(["matmul"])
  record.update(device=ceiling["device"], ceiling_gflops=ceiling["jax_bf16_gflops"])
  print(f"{ceiling['device']}: bf16 matmul ceiling {ceiling['jax_bf16_gflops']:.0f} GFLOP/s",
        flush=True)
  for model in models:
    flops = step_flops(model, BATCH_SIZE)
    row: dict[str, Any] = {"model": model, "step_gflop": flops / 1e9}
    for side in ("ours", "peft"):
      try:
        result = run_worker([side, model])
      except RuntimeError as e:
        row[side] = {"error": str(e)[-500:]}
        print(f"{model} {side}: failed: {str(e)[-300:]}", flush=True)
        continue
      step = statistics.median(result["times"])
      row[side] = dict(result, examples_per_second=BATCH_SIZE / step, step_seconds_median=step,
                       mfu=flops / step / 1e9 / record["ceiling_gflops"])
      save_partial(record, partial_path, row)
      print(f"{model} {side}: {BATCH_SIZE / step:.1f} examples/s, "
            f"MFU {100 * row[side]['mfu']:.1f}%, peak "
            f"{result['peak_memory_bytes'] / 2**30:.2f} GiB", flush=True)
    record["rows"].append(row)
  for model in models:
    if spent() > budget_seconds or record["device"].lower() == "cpu":
      reason = "budget spent" if spent() > budget_seconds else "no accelerator memory to fill"
      record["skipped"].append(f"largest batch of {model}: {reason}")
      continue
    result = run_worker(["largest", model], {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95"})
    next(r for r in record["rows"] if r["model"] == model)["largest_batch"] = (
        result["largest_batch"])
    print(f"{model}: largest batch {result['largest_batch']}", flush=True)
  if spent() > budget_seconds:
    record["skipped"].append("packed runs: budget spent")
  else:
    try:
      record["packed"] = dict(run_worker(["packed", models[0], str(packed_runs)]),
                              model=models[0], runs=packed_runs)
      print(f"packed: {record['packed']}", flush=True)
    except RuntimeError as e:
      reason = "no spot_jax.train.packed" if "spot_jax.train.packed" in str(e) else str(e)[-300:]
      record["skipped"].append(f"packed runs: {reason}")
  record["seconds"] = spent()
  return record


def record_from_log(text: str, command: str) -> dict[str, Any]:
  """The record of a run from the lines it printed (for a run cut short before its JSON)."""
  import re
  record: dict[str, Any] = {"rows": [], "skipped": [], "command": command,
                            "date": time.strftime("%Y-%m-%d")}
  for line in text.splitlines():
    if m := re.fullmatch(r"(.+): bf16 matmul ceiling ([\d.]+) GFLOP/s", line.strip()):
      record.update(device=m.group(1), ceiling_gflops=float(m.group(2)))
    elif m := re.fullmatch(r"(\w+) (ours|peft): ([\d.]+) examples/s, MFU ([\d.]+)%, "
                           r"peak ([\d.]+) GiB", line.strip()):
      model, side = m.group(1), m.group(2)
      row = next((r for r in record["rows"] if r["model"] == model), None)
      if row is None:
        row = {"model": model, "step_gflop": step_flops(model, BATCH_SIZE) / 1e9}
        record["rows"].append(row)
      row[side] = {"examples_per_second": float(m.group(3)), "mfu": float(m.group(4)) / 100,
                   "peak_memory_bytes": float(m.group(5)) * 2**30}
  if "device" not in record:
    raise SystemExit("--from_log: no 'bf16 matmul ceiling' line in the log")
  record["skipped"].append("the rest: the run was cut short at its time limit (see the log)")
  return record


def save_partial(record: dict[str, Any], path: str, row: dict[str, Any]) -> None:
  rows = record["rows"] + ([] if row in record["rows"] else [row])
  with open(path, "w") as f:
    json.dump(dict(record, rows=rows, seconds=None), f)


def markdown(record: dict[str, Any], command: str) -> str:
  gib = 2 ** 30
  lines = [f"Command: `{command}`", "",
           f"Card: {record['device']}; date {record['date']}; bf16 matmul ceiling (8192^3, "
           f"jax.jit, best of 10): {record['ceiling_gflops'] / 1000:.0f} TFLOP/s. Batch "
           f"{BATCH_SIZE}, inputs {INPUT_LENGTH} + prompt {PROMPT_LENGTH}, targets "
           f"{TARGET_LENGTH}, dropout {DROPOUT_RATE}, bf16 compute, float32 parameters.", "",
           "| model | ours ex/s | PEFT ex/s | ours/PEFT | ours MFU | PEFT MFU | ours peak mem "
           "| PEFT peak mem | ours largest batch |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for row in record["rows"]:
    ours, peft = row.get("ours", {}), row.get("peft", {})
    both = "examples_per_second" in ours and "examples_per_second" in peft
    ratio = f"{ours['examples_per_second'] / peft['examples_per_second']:.2f}" if both else "-"
    cells = []
    for side in (ours, peft):
      ok = "examples_per_second" in side
      cells.append((f"{side['examples_per_second']:.1f}" if ok else "failed",
                    f"{100 * side['mfu']:.1f}%" if ok else "-",
                    f"{side['peak_memory_bytes'] / gib:.1f} GiB" if ok else "-"))
    (ours_ex, ours_mfu, ours_mem), (peft_ex, peft_mfu, peft_mem) = cells
    lines.append(f"| {row['model']} | {ours_ex} | {peft_ex} | {ratio} | {ours_mfu} | {peft_mfu} "
                 f"| {ours_mem} | {peft_mem} | {row.get('largest_batch', '-')} |")
  if "packed" in record:
    p = record["packed"]
    lines += ["", f"Packed runs ({p['model']}, {p['runs']} runs of batch {BATCH_SIZE} each): "
              f"{p['packed_examples_per_second']:.1f} examples/s packed against "
              f"{p['sequential_examples_per_second']:.1f} one run after another "
              f"({p['packed_examples_per_second'] / p['sequential_examples_per_second']:.2f}x); "
              f"peak memory {p['packed_peak_memory_bytes'] / gib:.1f} GiB packed."]
  for reason in record["skipped"]:
    lines.append(f"- skipped: {reason}")
  return "\n".join(lines) + "\n"


def write_results(record: dict[str, Any], command: str, path: str) -> None:
  table = markdown(record, command)
  print(table)
  from results_md import update_section
  update_section(path, "gpu_suite", "## GPU: ours against Hugging Face PEFT (bfloat16)\n\n" + table)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="base,large")
  parser.add_argument("--budget_seconds", type=float, default=420.0)
  parser.add_argument("--packed_runs", type=int, default=8)
  parser.add_argument("--json", default=os.path.join(HERE, "results", "gpu_suite.jsonl"))
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
  parser.add_argument("--from_json", default=None,
                      help="only rewrite the RESULTS.md section from the last record of this file")
  parser.add_argument("--from_log", nargs=2, metavar=("LOG", "COMMAND"), default=None,
                      help="rewrite the RESULTS.md section from the printed lines of a run that "
                           "was cut short (LOG), run as COMMAND")
  parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.from_log:
    with open(args.from_log[0]) as f:
      record = record_from_log(f.read(), args.from_log[1])
    write_results(record, record["command"], args.results)
    return
  if args.worker:
    kind, *rest = args.worker
    print(json.dumps(WORKERS[kind](*[int(x) if x.isdigit() else x for x in rest])))
    return
  if args.from_json:
    with open(args.from_json) as f:
      record = [json.loads(line) for line in f if line.strip()][-1]
    write_results(record, record["command"], args.results)
    return
  command = "bash benchmarks/gpu_suite.sh " + shlex.join(sys.argv[1:])
  record = suite(args.models.split(","), args.budget_seconds, args.packed_runs,
                 args.json + ".partial")
  record["command"] = command
  os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
  with open(args.json, "a") as f:
    f.write(json.dumps(record) + "\n")
  write_results(record, command, args.results)


if __name__ == "__main__":
  main()
