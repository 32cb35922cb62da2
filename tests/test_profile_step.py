"""benchmarks/profile_step.py: per-op device time, FLOPs and bytes of a compiled step, and
benchmarks/train_step.largest_batch: the largest batch from XLA's memory analysis."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import pytest

from benchmarks import profile_step, train_step
from spot_jax.models.flops import prompt_tuning_step_flops

INPUTS, TARGETS, PROMPT, BATCH = 16, 4, 4, 2


@pytest.mark.parametrize("scan_layers", [False, True])
def test_profile_counts_every_matmul_flop_of_the_step(scan_layers):
  """The profiled ops' FLOPs per step equal the step's formula (unrolled: exactly; scanned:
  the loop body counted once per layer, within 1%), so op times and trip counts line up."""
  setup = train_step.setup_step("tiny", INPUTS, BATCH, TARGETS, PROMPT, 0.1, "float32",
                                scan_layers=scan_layers)
  compiled = setup.compile()
  run_step = setup.runner(compiled)
  jax.block_until_ready(run_step())
  summary = profile_step.profile(lambda: jax.block_until_ready(run_step()), compiled.as_text(),
                                 steps=2, step_seconds=1.0, peak_flops=1e11,
                                 peak_bytes_per_second=1e10)
  formula = prompt_tuning_step_flops(setup.config, BATCH, INPUTS, TARGETS, PROMPT).total
  if scan_layers:
    assert summary["hlo_flops"] == pytest.approx(formula, rel=0.01)
  else:
    assert summary["hlo_flops"] == formula
  assert summary["top"] and summary["top"][0]["seconds"] > 0
  assert 0 < summary["matmul_share"] <= 1 and summary["module"].startswith("jit_")


def test_op_costs_count_dots_in_fusions_and_loop_trips():
  """A dot inside a 3-trip loop costs 2 m n k per run and runs 3 times a call."""
  m, k, n = 8, 16, 32

  def f(a, b):
    return jax.lax.fori_loop(0, 3, lambda i, x: jnp.tanh(x @ b) + i, a)

  text = jax.jit(f).lower(jnp.ones((m, k)), jnp.ones((k, n))[:, :k]).compile().as_text()
  costs = profile_step.op_costs(text)
  dots = [c for c in costs.values() if c.flops]
  assert dots, "no op with FLOPs: the HLO parser no longer reads XLA's text"
  run = [c for c in dots if c.executions == 3]
  assert run and all(c.flops == 2 * m * k * k for c in run)
  assert all(c.bytes >= 4 * (m * k + k * k) for c in run)  # its operands at least


def test_op_seconds_uses_device_events_and_falls_back_to_kernel_names():
  meta = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
          {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}}]
  host = {"ph": "X", "pid": 1, "dur": 900.0, "name": "thunk",
          "args": {"hlo_op": "fusion.1", "hlo_module": "jit_step"}}
  kernel = {"ph": "X", "pid": 2, "dur": 100.0, "name": "k",
            "args": {"hlo_op": "fusion.1", "hlo_module": "jit_step"}}
  other = dict(kernel, args={"hlo_op": "copy.2", "hlo_module": "jit_init"}, dur=5000.0)
  module, seconds, runs = profile_step.op_seconds(meta + [host, kernel, kernel, other],
                                                  module="step")
  assert module == "jit_step" and seconds == {"fusion.1": pytest.approx(2e-4)}
  assert runs == {"fusion.1": 2}
  unnamed = [dict(kernel, name="loop_add_fusion_3", args={})]
  _, seconds, _ = profile_step.op_seconds(meta + unnamed)
  assert seconds == {"loop_add_fusion_3": pytest.approx(1e-4)}
  assert profile_step.kernel_key("loop_add_fusion.3") == "loop_add_fusion_3"
  with pytest.raises(ValueError, match="No module matching 'decode'"):
    profile_step.op_seconds(meta + [kernel], module="decode")


def test_profile_rows_classify_by_the_ridge_point_and_skip_loops():
  costs = {"gemm": profile_step.OpCost(2e9, 1e7, "custom-call", 1),  # 200 FLOP/B
           "add": profile_step.OpCost(0.0, 1e8, "fusion", 1),
           "body_dot": profile_step.OpCost(1e6, 1e6, "fusion", 12),  # 1 FLOP/B, 12 trips
           "while.1": profile_step.OpCost(0.0, 0.0, "while", 1)}
  seconds = {"gemm": 0.02, "add": 0.01, "body_dot": 0.01, "while.1": 0.05}
  rows = profile_step.profile_rows(seconds, {}, costs, steps=2, peak_flops=1e12,
                                   peak_bytes_per_second=1e10)  # ridge 100 FLOP/B
  by_op = {r.op: r for r in rows}
  assert set(by_op) == {"gemm", "add", "body_dot"}
  assert by_op["gemm"].bound == "compute" and by_op["add"].bound == "memory"
  assert by_op["body_dot"].flops == 12e6 and by_op["body_dot"].bound == "memory"
  assert [r.op for r in rows][0] == "gemm" and by_op["gemm"].seconds == 0.01
  summary = profile_step.summarize(rows, step_seconds=0.025, peak_flops=1e12,
                                   peak_bytes_per_second=1e10)
  assert summary["matmul_share"] == pytest.approx(0.75)
  assert summary["memory_bound_share"] == pytest.approx(0.5)
  assert summary["idle_share"] == pytest.approx(0.2)
  assert "| `gemm` | custom-call |" in profile_step.markdown(summary)


@dataclasses.dataclass
class _Memory:
  argument_size_in_bytes: int
  output_size_in_bytes: int = 0
  temp_size_in_bytes: int = 0
  alias_size_in_bytes: int = 0


class _FakeSetup:
  """A step whose compiled bytes are 1000 + 100 per example below 64 and 200 above."""

  def __init__(self):
    self.batches = []

  def compile(self, batch):
    size = batch["encoder_input_tokens"].shape[0]
    self.batches.append(size)
    used = 1000 + 100 * size + (100 * (size - 64) if size > 64 else 0)
    return type("Compiled", (), {"memory_analysis": lambda _: _Memory(used)})()


def test_largest_batch_extrapolates_then_steps_down_and_interpolates_to_the_largest_fit():
  setup = _FakeSetup()
  found = train_step.largest_batch(setup, INPUTS, TARGETS, limit_bytes=20_000, start=8,
                                   headroom=1.0)
  # Linear from 8 and 16: (20000 - 1000) / 100 = 190 -> 184, which needs 31400: step down by
  # the excess at 100 per example to 64 (7400, fits), interpolate between 64 and 184 to 120
  # (18600, fits), then 128 (20200) does not: 120 is the largest multiple of 8 that fits.
  assert setup.batches == [8, 16, 184, 64, 120, 128]
  assert found.batch_size == 120 and found.step_bytes == 18_600
  assert found.compiles == 6 and found.bytes_per_example == 100


def test_largest_batch_asks_for_a_limit_where_the_device_reports_none(monkeypatch):
  monkeypatch.setattr(train_step, "device_memory_limit", lambda: None)  # as on CPU.
  with pytest.raises(ValueError, match="pass limit_bytes"):
    train_step.largest_batch(_FakeSetup(), INPUTS, TARGETS, start=8)


def test_largest_batch_of_a_real_step_is_the_largest_that_fits():
  setup = train_step.setup_step("tiny", INPUTS, 8, TARGETS, PROMPT, 0.1, "float32")
  need = {b: train_step.compiled_bytes(setup.compile(train_step.batch_shapes(b, INPUTS,
                                                                             TARGETS)))
          for b in (24, 32)}
  limit = math.floor((need[24] + need[32]) / 2)  # 24 fits, 32 does not.
  found = train_step.largest_batch(setup, INPUTS, TARGETS, limit_bytes=limit, start=8,
                                   headroom=1.0)
  assert found.batch_size == 24 and found.step_bytes == need[24] and found.compiles == 3


def test_layouts_compare_side_by_side_with_the_op_kinds_each_has():
  costs = {"dot.1": profile_step.OpCost(1e9, 1e6, "dot", 1),
           "wrapped_copy.14": profile_step.OpCost(0.0, 3e7, "fusion", 1),
           "wrapped_copy.15": profile_step.OpCost(0.0, 3e7, "fusion", 1)}
  common = dict(model="small", batch_size=4, dtype="float32", device="cpu", mfu=0.5)

  def result(seconds):
    rows = profile_step.profile_rows(seconds, {}, costs, 1, 1e11, 1e10)
    return dict(profile_step.summarize(rows, sum(seconds.values()), 1e11, 1e10), **common)

  table = profile_step.comparison({"unrolled": result({"dot.1": 0.8}),
                                   "scan": result({"dot.1": 0.8, "wrapped_copy.14": 0.1,
                                                   "wrapped_copy.15": 0.02})})
  assert "| | unrolled | scan |" in table and "ridge point 10 FLOP/B" in table
  assert "| steady step | 800.0 ms | 920.0 ms |" in table
  assert "| `wrapped_copy` ms/step | - | 120.0 |" in table
  assert "| `matmul` ms/step | 800.0 | 800.0 |" in table


@pytest.mark.slow  # a fresh process: imports, two compiles, the ceiling (~30 s on 2 cores).
def test_profile_command_writes_its_results_section_from_a_fresh_process(tmp_path):
  import os
  import subprocess
  import sys
  results = tmp_path / "RESULTS.md"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run(
      [sys.executable, "-m", "benchmarks.profile_step", "--model", "tiny", "--input_length",
       str(INPUTS), "--batch_size", str(BATCH), "--target_length", str(TARGETS),
       "--prompt_length", str(PROMPT), "--layouts", "unrolled,scan", "--steps", "2",
       "--results", str(results)],
      cwd=root, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3"))
  assert done.returncode == 0, done.stderr[-2000:]
  text = results.read_text()
  assert "<!-- begin profile_cpu -->" in text and "| | unrolled | scan |" in text
  assert "| `matmul` ms/step |" in text and "python -m benchmarks.profile_step" in text
