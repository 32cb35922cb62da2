"""What a study does when runs fail: a full disk stops it once, failed runs and the dependants
they block are named, and results.csv keeps every finished run's row."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from spot_jax.study import runner
from test_study_run import SOURCES, TARGET, read_rows, small_spec


def finish_fake_run(job) -> None:
  """Writes what a finished run leaves (run.json, the key and best prompts) without training."""
  task = job.source if job.kind == "source" else job.target
  for step in (5, 10):
    path = os.path.join(job.model_dir, "numpy_checkpoints", f"checkpoint_{step}")
    os.makedirs(path)
    with open(os.path.join(path, "encoder.prompt.prompt.prompt"), "wb") as f:
      np.save(f, np.full((4, 64), step + job.seed, np.float32))
  summary = dict(task=task, model={"name": "fake", "config": {"emb_dim": 64},
                                   "fingerprint": "f"},
                 prompt_length=4, seed=job.seed, batch_size=8, feature_lengths={},
                 train_steps=10, key_step=5, eval_metric="accuracy", steps_done=10,
                 checkpoints={}, best_step=10, best_score=50.0 + len(job.name) % 7,
                 prompt_init="", finished=True)
  with open(os.path.join(job.model_dir, "run.json"), "w") as f:
    json.dump(summary, f)


class ResourceExhaustedError(Exception):
  """The shape of TensorFlow's error when SaveV2 meets a full disk."""


DISK_FULL = {
    "OSError": lambda path: OSError(errno.ENOSPC, "No space left on device", path),
    "TensorFlow": lambda path: ResourceExhaustedError(
        "{{function_node __wrapped__SaveV2_dtypes_1_device_/job:localhost}} "
        f"{path}/checkpoint_5/x.data; No space left on device [Op:SaveV2]"),
}


@pytest.mark.parametrize("kind", sorted(DISK_FULL))
def test_a_full_disk_is_said_once_and_stops_scheduling(tmp_path, kind):
  spec = small_spec()
  calls, lines = [], []

  def run_one(job):
    calls.append(job.name)
    if len(calls) == 2:
      raise DISK_FULL[kind](job.model_dir)
    finish_fake_run(job)

  report = runner.run_study(spec, str(tmp_path), run_one=run_one, log=lines.append)
  assert len(calls) == 2  # nothing was started after the disk filled up.
  full = [line for line in lines if "no space left on the device holding" in line]
  assert full == [f"FAILED {calls[1]}: no space left on the device holding "
                  f"{report.failed[0][0].model_dir}; free space and rerun the same command "
                  "(finished runs are kept)"]
  assert not any("ResourceExhaustedError" in line for line in lines)
  (failed, why), = report.failed
  assert failed.name == calls[1] and why.startswith("no space left on the device holding")
  assert len(report.blocked) == len(runner.plan(spec, str(tmp_path))) - 2
  assert {why for _, why in report.blocked} <= {
      "not started: the disk is full",
      f"not started: the run it starts from, {calls[1]}, FAILED above"}


def test_failed_runs_and_the_dependants_they_block_are_named_on_stdout(tmp_path):
  spec = small_spec()
  lines = []
  broken = f"source.{SOURCES[0]}.seed_0"

  def run_one(job):
    if job.name == broken:
      raise ValueError("boom")
    finish_fake_run(job)

  report = runner.run_study(spec, str(tmp_path), run_one=run_one, log=lines.append)
  assert [line for line in lines if line.startswith("FAILED")] == [
      f"FAILED {broken}: ValueError: boom (run dir {report.failed[0][0].model_dir})"]
  (blocked, why), = report.blocked
  assert blocked.kind == "transfer" and blocked.source == SOURCES[0]
  assert why == f"not started: the run it starts from, {broken}, FAILED above"
  assert f"BLOCKED {blocked.name}: {why}" in lines


def test_results_csv_keeps_every_finished_run_whatever_happens_to_its_directory(tmp_path):
  """A rerun that finds a finished run's directory gone or broken keeps its row."""
  spec = small_spec()
  report = runner.run_study(spec, str(tmp_path), run_one=finish_fake_run, log=lambda _: None)
  path = os.path.join(str(tmp_path), runner.RESULTS_CSV)
  before = read_rows(path)
  assert report.ok and len(before) == 1 + len(SOURCES)  # the baseline and the transfers.
  transfers = [j for j in report.ran if j.kind == "transfer"]
  with open(os.path.join(transfers[0].model_dir, "run.json"), "w") as f:
    f.write("{ not json")  # broken ...
  os.rename(transfers[1].model_dir, transfers[1].model_dir + ".moved")  # ... and gone.
  lines = []
  report = runner.run_study(spec, str(tmp_path), collect_only=True, log=lines.append)
  assert sorted(map(str, read_rows(path))) == sorted(map(str, before))
  assert report.kept_results == 2 and report.missing_results == 0
  assert any("2 kept from the earlier results.csv" in line for line in lines)
  assert TARGET in {row["target"] for row in read_rows(path)}
