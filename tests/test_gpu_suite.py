"""benchmarks/gpu_suite.py: every part saved as it finishes, overruns reported, RESULTS.md."""

from __future__ import annotations

import json

import pytest

from benchmarks import gpu_suite


def test_results_table_reports_each_part_overruns_and_targets(tmp_path):
  path = tmp_path / "gpu_suite.jsonl"
  header = {"part": "suite", "status": "ok", "date": "2026-12-04 16:00 UTC",
            "shape": {}, "parts": [], "command": "bash benchmarks/gpu_suite.sh --out x"}
  ours = {"time_to_first_step_seconds": 12.5, "init_seconds": 2.0, "first_step_seconds": 6.0,
          "compile_seconds": 5.94, "step_seconds_median": 0.05, "peak_memory_bytes": 2**31,
          "versions": {"jax": "0.11.2"}}
  records = [
      {"part": "ceiling", "status": "ok", "result": {"ceiling_gflops": 700_000.0,
                                                      "device": "NVIDIA H200"}},
      {"part": "base ours", "status": "ok", "result": ours, "mfu": 0.3,
       "examples_per_second": 640.0},
      {"part": "base PEFT", "status": "ok", "examples_per_second": 150.0, "mfu": 0.07,
       "result": dict(ours, time_to_first_step_seconds=9.0, versions={"peft": "0.18"})},
      {"part": "large ours", "status": "over", "message": "over 130 s", "limit_seconds": 130},
  ]
  with open(path, "w") as f:
    for record in [{"part": "suite", "status": "ok", "date": "old", "shape": {}, "parts": [],
                    "command": "old"}, {"part": "stale", "status": "ok"}, header, *records]:
      f.write(json.dumps(record) + "\n")
  got_header, got = gpu_suite.read_records(str(path))  # the last run in the file only.
  assert got_header == header and [r["part"] for r in got] == [r["part"] for r in records]
  table = gpu_suite.markdown(header, got)
  assert "Card: NVIDIA H200" in table and "jax 0.11.2" in table and "peft 0.18" in table
  assert "| base ours | 12.5 s | 2.0 s | 6.0 s | 5.9 s | 50.0 ms | 640.0 | 30.0% | 2.0 GiB |" in table
  assert "| large ours |" in table and "over 130 s" in table
  assert "- target base ours first step <= 15 s: 12.5 s: met" in table
  assert "- target large ours first step <= 25 s: over 130 s" in table
  assert "- base: ours 4.27x PEFT's examples/s" in table
  results = tmp_path / "RESULTS.md"
  gpu_suite.write_results(str(path), str(results))
  assert "<!-- begin gpu_suite -->" in results.read_text()


@pytest.mark.slow  # three worker processes (~1-3 min on 2 cores).
def test_suite_saves_each_part_and_reports_an_overrun_while_the_rest_run(tmp_path):
  out = tmp_path / "gpu_suite.jsonl"
  parts = [gpu_suite.Part("tiny ours", ("ours", "tiny_byte"), 400, cache="tiny"),
           gpu_suite.Part("slow part", ("largest", "tiny_byte"), 3),
           gpu_suite.Part("tiny ours warm cache", ("ours", "tiny_byte"), 400, cache="tiny")]
  records = gpu_suite.suite(parts, gpu_suite.SMOKE_SHAPE, 1000, str(out), str(tmp_path / "c"))
  assert [r["status"] for r in records] == ["ok", "over", "ok"]
  assert records[1]["message"] == "over 3 s"
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [line["part"] for line in lines] == ["suite", "tiny ours", "slow part",
                                              "tiny ours warm cache"]
  cold, warm = records[0]["result"], records[2]["result"]
  assert 0 < cold["init_seconds"] < cold["time_to_first_step_seconds"]
  assert warm["compilation_cache"] == cold["compilation_cache"]
  assert warm["first_step_seconds"] < cold["first_step_seconds"]  # loaded, not compiled.


def test_results_report_the_profile_the_largest_batch_mfu_and_packing_targets():
  header = {"part": "suite", "status": "ok", "date": "2026-12-06 10:00 UTC", "shape": {},
            "parts": [], "command": "bash benchmarks/gpu_suite.sh --out x --parts second"}
  top = [{"op": "custom-call.3", "opcode": "custom-call", "seconds": 0.02, "share": 0.5,
          "flops": 4e12, "bytes": 2e8, "intensity": 2e4, "bound": "compute"}]
  profile = {"step_seconds": 0.05, "op_seconds": 0.04, "idle_share": 0.2,
             "matmul_share": 0.6, "matmul_efficiency": 0.55, "memory_bound_share": 0.4,
             "memory_bound_bandwidth_share": 0.7, "batch_size": 32, "mfu": 0.3, "top": top}
  largest = {"largest_batch": 256, "predicted_batch": 256, "bytes_per_example": 2**28,
             "step_seconds_median": 0.4, "step_gflop": 1e5, "gflops": 2.5e5,
             "examples_per_second": 640.0}
  records = [
      {"part": "ceiling", "status": "ok", "result": {"ceiling_gflops": 700_000.0,
                                                      "device": "NVIDIA H200"}},
      {"part": "base profile, unrolled", "status": "ok", "result": profile},
      {"part": "base largest batch", "status": "ok", "result": largest, "mfu": 0.357,
       "examples_per_second": 640.0},
      {"part": "base packed 8", "status": "ok", "result": {
          "packed_examples_per_second": 3000.0, "sequential_examples_per_second": 1000.0}},
  ]
  table = gpu_suite.markdown(header, records)
  assert "largest batch 256 (predicted 256 from 256 MiB per example)" in table
  assert "| base largest batch |" in table and "| 35.7% |" in table
  assert "Profile of base profile, unrolled (batch 32" in table
  assert "| `custom-call.3` | custom-call | 20.00 | 50.0% | 4000.00 | 200.0 |" in table
  assert "matmuls 60% of op time at 55% of the ceiling" in table
  assert "- base at its largest batch 256: MFU 35.7% (target >= 45%): missed" in table
  assert "- base packed 8: 3.00x the same runs one after another (target >= 2.5x): met" in table
  assert "profiled: matmuls 60%" in gpu_suite.describe(records[1])
