"""Thin CLI commands: tasks list, and the train-step benchmark script."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT


def run(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                        timeout=timeout, cwd=PROJECT_ROOT)


def test_tasks_list_prints_groups_with_sources_and_metrics():
  process = run("-m", "spot_jax.cli.main", "tasks", "list", "--group", "spot_targets")
  assert process.returncode == 0, process.stderr
  lines = process.stdout.splitlines()
  assert lines[0].split() == ["task", "source", "splits", "metrics", "train", "size"]
  rows = {line.split()[0]: line.split() for line in lines[1:]}
  assert len(rows) == 10
  assert rows["super_glue_rte"][1].startswith("tfds:super_glue/rte")
  assert rows["glue_cola"][3] == "matthews_corrcoef"
  synthetic = run("-m", "spot_jax.cli.main", "tasks", "list", "--group", "synthetic")
  assert "synthetic_sentiment_a" in synthetic.stdout
  mixtures = run("-m", "spot_jax.cli.main", "tasks", "list", "--mixtures")
  assert "spot_mix_glue" in mixtures.stdout.split()
  bad = run("-m", "spot_jax.cli.main", "tasks", "list", "--group", "glu")
  assert bad.returncode == 2 and "Unknown group 'glu'" in bad.stderr


def test_train_step_benchmark_prints_and_records(tmp_path):
  out = tmp_path / "bench.jsonl"
  process = run("-m", "benchmarks.train_step", "--model", "tiny_byte", "--input_length", "16",
                "--prompt_length", "4", "--batch_size", "4", "--steps", "2", "--json", str(out))
  assert process.returncode == 0, process.stderr
  assert "examples/s" in process.stdout and "peak memory" in process.stdout
  result = json.loads(out.read_text())
  assert result["examples_per_second"] > 0 and result["peak_memory_bytes"] > 0
  assert abs(result["tokens_per_second"] - result["examples_per_second"] * (16 + 4 + 8)) < 1e-6 * result["tokens_per_second"]


@pytest.mark.slow
def test_world_vocabulary_benchmark_writes_its_section(tmp_path):
  results = tmp_path / "RESULTS.md"
  process = run("-m", "benchmarks.world_vocabulary", "--steps", "2", "--num_examples", "6",
                "--work_dir", str(tmp_path / "work"), "--results", str(results))
  assert process.returncode == 0, process.stderr[-3000:]
  text = results.read_text()
  assert "<!-- begin world_vocabulary -->" in text
  rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
  assert len(rows) == 1 + 8  # the header, then a source and its target for 4 families.
  assert rows[2].startswith("| sentiment_b | sentiment_a | 50 |")
  cells = [float(c) for row in rows[1:] for c in row.strip("| ").split(" | ")[2:]]
  assert len(cells) == 8 * 5 and all(0 <= c <= 100 for c in cells)
