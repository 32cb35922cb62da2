"""Where a compiled step's device time goes, and which of its ops are memory-bound.

  python -m benchmarks.profile_step --results benchmarks/RESULTS.md   # small/128, both layouts
  python -m benchmarks.gpu_suite --worker profile base     # on a GPU, as a suite part

The step runs a few times under `jax.profiler.trace` (Perfetto JSON, readable without
TensorBoard). Each op's device time comes from the trace's events (`hlo_op` / `hlo_module`
arguments; on GPU the kernels on the device's streams, on CPU the runtime's thunks). Each op's
FLOPs (its dots, also inside fusions and cuBLAS custom calls) and bytes (its operands plus its
result, the roofline convention of XLA's HloCostAnalysis) come from the compiled HLO text. An op
is memory-bound when its arithmetic intensity (FLOP per byte) is below the card's ridge point:
the measured matmul ceiling over the measured copy bandwidth, both from the same run.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import math
import os
import re
import tempfile
import time
from typing import Any, Callable, Iterable

DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
               "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
               "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.+?) ([\w\-]+)\((.*?)\)(?:, (.*))?$")
_OPERAND = re.compile(r"%([\w.\-]+)")
_CALLED = re.compile(r"\b(?:calls|to_apply|body|condition|branch_computations)="
                     r"\{?(%[\w.\-]+(?:, %[\w.\-]+)*)\}?")
_LHS_CONTRACTING = re.compile(r"lhs_contracting_dim(?:s=\{([\d,]*)\}|ensions\":\[([\d\",]*)\])")
_TRIP = re.compile(r'known_trip_count"?:\{"n":"(\d+)"\}')
_GEMM_TARGET = re.compile(r"custom_call_target=\"[^\"]*(gemm|matmul)[^\"]*\"", re.I)


@dataclasses.dataclass(frozen=True)
class Instruction:
  name: str
  shape: str  # the result's shape text: `f32[8,16]{1,0}` or a tuple `(f32[..], s8[..])`.
  opcode: str
  operands: tuple[str, ...]
  attributes: str


@dataclasses.dataclass(frozen=True)
class OpCost:
  """An op's matmul FLOPs and the bytes it reads and writes."""
  flops: float
  bytes: float
  opcode: str = ""
  executions: int = 0  # runs per step: 1 at the top level, n in a loop of n trips; 0 unknown.


# Ops whose trace events span the ops they run (a loop's body, a branch): not counted again.
CONTAINER_OPCODES = frozenset({"while", "conditional", "call", "async-start", "async-done"})


def shape_bytes(shape: str) -> float:
  """Bytes of a shape's arrays (every element of a tuple)."""
  return sum(DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
             for dtype, dims in _ARRAY.findall(shape))


def _dims(shape: str) -> tuple[int, ...]:
  match = _ARRAY.search(shape)
  return tuple(int(d) for d in match.group(2).split(",") if d) if match else ()


def parse_hlo(text: str) -> tuple[dict[str, Instruction], dict[str, list[str]], str]:
  """(instructions by name, instruction names by computation, the entry computation's name)
  of compiled HLO text."""
  instructions: dict[str, Instruction] = {}
  computations: dict[str, list[str]] = {}
  current: list[str] | None = None
  entry = ""
  for line in text.splitlines():
    header = _COMPUTATION.match(line)
    if header and not line.startswith(" "):
      current = computations.setdefault(header.group(1), [])
      entry = header.group(1) if line.startswith("ENTRY") else entry
      continue
    if line.startswith("}"):
      current = None
      continue
    match = _INSTRUCTION.match(line)
    if match and current is not None:
      name, shape, opcode, operands, attributes = match.groups()
      instructions[name] = Instruction(name, shape, opcode,
                                       tuple(_OPERAND.findall(operands)), attributes or "")
      current.append(name)
  return instructions, computations, entry


def executions(instructions: dict[str, Instruction], computations: dict[str, list[str]],
               entry: str) -> dict[str, int]:
  """How many times each op of the entry computation, of loop bodies and of called
  computations runs per call: a while loop's body runs its `known_trip_count` times (once when
  XLA does not know it). Fusions' insides are not listed: a fusion runs as one op."""
  counts: collections.Counter = collections.Counter()

  def visit(computation: str, times: int, depth: int = 0) -> None:
    for name in computations.get(computation, ()):
      counts[name] += times
      op = instructions[name]
      if depth > 16 or op.opcode not in CONTAINER_OPCODES:
        continue
      trip = _TRIP.search(op.attributes) if op.opcode == "while" else None
      trips = int(trip.group(1)) if trip else 1
      for group in _CALLED.findall(op.attributes):
        for called in _OPERAND.findall(group):
          visit(called, times * trips, depth + 1)

  visit(entry, 1)
  return dict(counts)


def _dot_flops(op: Instruction, instructions: dict[str, Instruction]) -> float:
  """2 x result elements x contracted elements of a dot (or a gemm custom call)."""
  match = _LHS_CONTRACTING.search(op.attributes)
  if not match or not op.operands or op.operands[0] not in instructions:
    return 0.0
  contracting = [int(d) for d in (match.group(1) or match.group(2) or "").replace('"', "")
                 .split(",") if d]
  lhs = _dims(instructions[op.operands[0]].shape)
  return 2.0 * math.prod(_dims(op.shape)) * math.prod(lhs[i] for i in contracting)


def op_costs(text: str) -> dict[str, OpCost]:
  """FLOPs and bytes of every instruction of compiled HLO text, by name.

  FLOPs: the dots of the op, of the computations it calls (fusions), and cuBLAS-style gemm
  custom calls. Bytes: the op's operands plus its result (no credit for reuse or in-place
  updates), as XLA's HloCostAnalysis counts `bytes accessed` at the top level.
  """
  instructions, computations, entry = parse_hlo(text)
  runs = executions(instructions, computations, entry)
  flops_of_computation: dict[str, float] = {}

  def flops(op: Instruction, depth: int = 0) -> float:
    if op.opcode in ("dot", "convolution") or (op.opcode == "custom-call"
                                               and _GEMM_TARGET.search(op.attributes)):
      return _dot_flops(op, instructions)
    if op.opcode != "fusion" or depth > 8:
      return 0.0
    total = 0.0
    for group in _CALLED.findall(op.attributes):
      for called in _OPERAND.findall(group):
        if called not in flops_of_computation:
          flops_of_computation[called] = sum(
              flops(instructions[n], depth + 1) for n in computations.get(called, ()))
        total += flops_of_computation[called]
    return total

  return {name: OpCost(flops(op), shape_bytes(op.shape) + sum(
      shape_bytes(instructions[o].shape) for o in op.operands if o in instructions), op.opcode,
      runs.get(name, 0)) for name, op in instructions.items()}


def read_trace(trace_dir: str) -> list[dict[str, Any]]:
  """The events of the newest Perfetto trace under `trace_dir`."""
  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"),
                           recursive=True), key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"No perfetto_trace.json.gz under {trace_dir}: was the step run "
                            "under jax.profiler.trace(..., create_perfetto_trace=True)?")
  with gzip.open(paths[-1], "rt") as f:
    data = json.load(f)
  return data["traceEvents"] if isinstance(data, dict) else data


def op_seconds(events: Iterable[dict[str, Any]], module: str | None = None
               ) -> tuple[str, dict[str, float], dict[str, int]]:
  """(module, total seconds by HLO op, runs by HLO op) of the trace's op events.

  Device events (processes named `/device:...`: the GPU's streams, a TPU's cores) are used when
  the trace has any, else the host runtime's (CPU). `module`: the `hlo_module` to count (the one
  with the most time when None; a substring is enough).
  """
  events = list(events)
  process_names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
                   if e.get("ph") == "M" and e.get("name") == "process_name"}
  device = {pid for pid, name in process_names.items() if name.startswith("/device:")}
  by_module: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  runs: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  spans = [e for e in events if e.get("ph") == "X" and (not device or e.get("pid") in device)]
  named = any("hlo_op" in (e.get("args") or {}) for e in spans)
  for e in spans:
    args = e.get("args") or {}
    if (named and "hlo_op" not in args) or (not named and not device):
      continue
    # Without hlo_op arguments a device kernel is named after its HLO op (`loop_add_fusion_3`
    # for `loop_add_fusion.3`): `kernel_key` matches the two.
    op = args["hlo_op"] if named else kernel_key(e.get("name", ""))
    by_module[args.get("hlo_module", "")][op] += float(e.get("dur", 0.0)) / 1e6
    runs[args.get("hlo_module", "")][op] += 1
  if not by_module:
    raise ValueError("The trace has no events with an hlo_op: nothing ran under the profiler, "
                     "or this backend does not record ops")
  if module is not None:
    chosen = [m for m in by_module if module in m]
    if not chosen:
      raise ValueError(f"No module matching {module!r} in the trace; it has {sorted(by_module)}")
  else:
    chosen = list(by_module)
  name = max(chosen, key=lambda m: sum(by_module[m].values()))
  return name, dict(by_module[name]), dict(runs[name])


def kernel_key(name: str) -> str:
  """An HLO op's name as GPU kernel names spell it (`.` and `-` become `_`)."""
  return re.sub(r"[.\-]", "_", name)


@dataclasses.dataclass(frozen=True)
class OpRow:
  """One op of the profile, per step."""
  op: str
  opcode: str  # fusion, custom-call (cuBLAS), dot, copy, ...
  seconds: float
  share: float  # of the summed op time
  flops: float
  bytes: float
  bound: str  # "compute" or "memory", by intensity against the ridge point.

  @property
  def intensity(self) -> float:
    return self.flops / self.bytes if self.bytes else 0.0


def profile_rows(seconds: dict[str, float], runs: dict[str, int], costs: dict[str, OpCost],
                 steps: int, peak_flops: float, peak_bytes_per_second: float) -> list[OpRow]:
  """Per-step rows, longest first. An op that runs n times a step (a loop body's, as under
  nn.scan; from the HLO's trip counts, else from the trace) counts n times its FLOPs and
  bytes; ops the HLO does not name count 0 of both; loops and other containers
  (`CONTAINER_OPCODES`) are left out, their bodies' ops are counted."""
  ridge = peak_flops / peak_bytes_per_second
  seconds = {op: spent for op, spent in seconds.items()
             if costs.get(op, OpCost(0.0, 0.0)).opcode not in CONTAINER_OPCODES}
  total = sum(seconds.values()) or 1.0
  rows = []
  for op, spent in seconds.items():
    cost = costs.get(op, OpCost(0.0, 0.0))
    per_step = cost.executions or runs.get(op, steps) / steps
    rows.append(OpRow(op, cost.opcode, spent / steps, spent / total, cost.flops * per_step,
                      cost.bytes * per_step,
                      "compute" if cost.bytes and cost.flops / cost.bytes >= ridge
                      else "memory"))
  return sorted(rows, key=lambda r: -r.seconds)


def kind_of(row: OpRow) -> str:
  """What an op is, for grouping: `matmul` when it has FLOPs, else its name without the
  instance number (`wrapped_copy.14` -> `wrapped_copy`)."""
  return "matmul" if row.flops else re.sub(r"[._]\d+$", "", row.op)


def seconds_by_kind(rows: list[OpRow]) -> dict[str, float]:
  """Seconds per step by `kind_of`, largest first."""
  kinds: collections.Counter = collections.Counter()
  for row in rows:
    kinds[kind_of(row)] += row.seconds
  return dict(kinds.most_common())


def summarize(rows: list[OpRow], step_seconds: float, peak_flops: float,
              peak_bytes_per_second: float, top: int = 12) -> dict[str, Any]:
  """The profile's headline numbers and its top ops, as a JSON-able dict."""
  def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0

  busy = sum(r.seconds for r in rows)
  matmul = [r for r in rows if r.flops]
  memory = [r for r in rows if r.bound == "memory"]
  matmul_seconds = sum(r.seconds for r in matmul)
  memory_seconds = sum(r.seconds for r in memory)
  return {
      "step_seconds": step_seconds, "op_seconds": busy,
      "idle_share": max(0.0, 1.0 - busy / step_seconds) if step_seconds else 0.0,
      "matmul_share": ratio(matmul_seconds, busy),
      "matmul_efficiency": ratio(sum(r.flops for r in matmul), matmul_seconds) / peak_flops,
      "memory_bound_share": ratio(memory_seconds, busy),
      "memory_bound_bandwidth_share": ratio(sum(r.bytes for r in memory), memory_seconds)
                                      / peak_bytes_per_second,
      "hlo_flops": sum(r.flops for r in rows), "peak_flops": peak_flops,
      "peak_bytes_per_second": peak_bytes_per_second,
      "ops": len(rows),
      "kinds": dict(list(seconds_by_kind(rows).items())[:top]),
      "top": [dict(dataclasses.asdict(r), intensity=r.intensity) for r in rows[:top]],
  }


def copy_bandwidth(megabytes: int = 1024, repeats: int = 5) -> float:
  """Bytes/s of the best jitted `x + 1` over a `megabytes` float32 array (read + write)."""
  import jax
  import jax.numpy as jnp
  from benchmarks.train_step import best_call_seconds
  x = jnp.zeros((megabytes * 2 ** 20 // 4,), jnp.float32)
  return 2 * x.nbytes / best_call_seconds(jax.jit(lambda a: a + 1), (x,), repeats)


def profile(step: Callable[[], Any], hlo_text: str, steps: int, step_seconds: float,
            peak_flops: float, peak_bytes_per_second: float, module: str | None = None,
            trace_dir: str | None = None, top: int = 12) -> dict[str, Any]:
  """Runs `step` `steps` times under the profiler and summarizes where its time went.

  `step`: one call runs one step and blocks until it is done. `hlo_text`: its compiled HLO.
  """
  import jax
  trace_dir = trace_dir or tempfile.mkdtemp(prefix="profile_step_")
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(steps):
      step()
  name, seconds, runs = op_seconds(read_trace(trace_dir), module)
  costs = op_costs(hlo_text)
  costs.update({kernel_key(op): cost for op, cost in costs.items() if kernel_key(op) not in costs})
  rows = profile_rows(seconds, runs, costs, steps, peak_flops, peak_bytes_per_second)
  return dict(summarize(rows, step_seconds, peak_flops, peak_bytes_per_second, top),
              module=name, trace_dir=trace_dir)


def markdown(summary: dict[str, Any]) -> str:
  """The profile as a Markdown table with a headline line."""
  lines = [
      f"Step {summary['step_seconds'] * 1e3:.1f} ms, ops busy {summary['op_seconds'] * 1e3:.1f}"
      f" ms ({summary['idle_share']:.0%} idle); matmuls {summary['matmul_share']:.0%} of op "
      f"time at {summary['matmul_efficiency']:.0%} of the ceiling; memory-bound ops "
      f"{summary['memory_bound_share']:.0%} of op time at "
      f"{summary['memory_bound_bandwidth_share']:.0%} of the copy bandwidth.", "",
      "| op | kind | ms/step | share | GFLOP | MB | FLOP/B | bound |",
      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in summary["top"]:
    lines.append(f"| `{r['op']}` | {r['opcode'] or '-'} | {r['seconds'] * 1e3:.2f} "
                 f"| {r['share']:.1%} "
                 f"| {r['flops'] / 1e9:.2f} | {r['bytes'] / 1e6:.1f} | {r['intensity']:.1f} "
                 f"| {r['bound']} |")
  return "\n".join(lines)


def profile_model(model: str, input_length: int, batch_size: int, target_length: int,
                  prompt_length: int, dtype: str, steps: int = 3, top: int = 12,
                  dropout_rate: float = 0.1, **overrides) -> dict[str, Any]:
  """The trainer's step for `model` (`benchmarks.train_step.setup_step`), compiled once,
  timed, then profiled against this device's matmul ceiling and copy bandwidth."""
  import jax
  from benchmarks import train_step
  setup = train_step.setup_step(model, input_length, batch_size, target_length, prompt_length,
                                dropout_rate, dtype, **overrides)
  compiled = setup.compile()
  measured = train_step.measure(setup, max(steps, 3), compiled)
  run_step = setup.runner(compiled)
  ceiling = train_step.matmul_ceiling(dtype)
  bandwidth = copy_bandwidth(256 if jax.default_backend() == "cpu" else 2048)
  summary = profile(lambda: jax.block_until_ready(run_step()), compiled.as_text(), steps,
                    measured["step_seconds_median"], ceiling, bandwidth, top=top)
  return dict(summary, model=model, batch_size=batch_size, dtype=dtype,
              mfu=measured["gflops"] * 1e9 / ceiling, device=jax.devices()[0].device_kind)


def comparison(results: dict[str, dict[str, Any]], kinds: int = 10) -> str:
  """Side-by-side Markdown of profiles (one per layout): headline rows, then op kinds."""
  names = list(results)
  first = results[names[0]]
  ridge = first["peak_flops"] / first["peak_bytes_per_second"]
  lines = [f"{first['model']}, batch {first['batch_size']}, {first['dtype']}, on "
           f"{first['device']}; ridge point {ridge:.0f} FLOP/B (matmul ceiling "
           f"{first['peak_flops'] / 1e9:.0f} GFLOP/s, copy bandwidth "
           f"{first['peak_bytes_per_second'] / 1e9:.1f} GB/s).", "",
           "| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
  rows = [("steady step", lambda r: f"{r['step_seconds'] * 1e3:.1f} ms"),
          ("MFU", lambda r: f"{r['mfu']:.1%}"),
          ("matmul FLOPs per step", lambda r: f"{r['hlo_flops'] / 1e9:.2f} G"),
          ("ops busy", lambda r: f"{r['op_seconds'] * 1e3:.1f} ms"),
          ("matmul share of op time", lambda r: f"{r['matmul_share']:.0%}"),
          ("matmuls at (of the ceiling)", lambda r: f"{r['matmul_efficiency']:.0%}"),
          ("memory-bound share of op time", lambda r: f"{r['memory_bound_share']:.0%}")]
  for label, cell in rows:
    lines.append(f"| {label} | " + " | ".join(cell(results[n]) for n in names) + " |")
  ranked = collections.Counter()
  for r in results.values():
    for kind, seconds in r["kinds"].items():
      ranked[kind] = max(ranked[kind], seconds)
  for kind, _ in ranked.most_common(kinds):
    lines.append(f"| `{kind}` ms/step | " + " | ".join(
        f"{results[n]['kinds'][kind] * 1e3:.1f}" if kind in results[n]["kinds"] else "-"
        for n in names) + " |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="small")
  parser.add_argument("--input_length", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=4)
  parser.add_argument("--target_length", type=int, default=8)
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--layouts", default="unrolled,scan",
                      help="comma-separated: each layer layout is profiled, side by side")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=12)
  parser.add_argument("--results", default=None,
                      help="RESULTS.md to write the section `profile_<backend>` into")
  args = parser.parse_args()
  import jax
  results = {}
  for layout in args.layouts.split(","):
    if layout not in ("unrolled", "scan"):
      raise SystemExit(f"--layouts: {layout!r} is not a layout; use unrolled and/or scan")
    results[layout] = profile_model(args.model, args.input_length, args.batch_size,
                                    args.target_length, args.prompt_length, args.dtype,
                                    steps=args.steps, top=args.top,
                                    scan_layers=layout == "scan")
    print(f"{layout}:\n{markdown(results[layout])}\n", flush=True)
  table = comparison(results)
  print(table)
  if args.results:
    from benchmarks.results_md import update_section
    command = ("python -m benchmarks.profile_step " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k not in ("results",)))
    update_section(args.results, f"profile_{jax.default_backend()}",
                   f"## Where the step's time goes ({jax.default_backend()})\n\n"
                   f"Command: `{command}`; {time.strftime('%Y-%m-%d', time.gmtime())}.\n\n"
                   + table)


if __name__ == "__main__":
  main()
