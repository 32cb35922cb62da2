"""What `spot-jax` prints: no library log lines, `~` in paths, Ctrl-C (the installed entry point
in fresh processes)."""

from __future__ import annotations

import os

import pytest

from conftest import spot_jax_cli
from test_affinity import library_and_results

# The environment of a user who set nothing: the libraries log CUDA probes, oneDNN notices and
# absl's pre-initialisation warning unless the command quiets them.
BARE = {"JAX_PLATFORMS": None, "TF_CPP_MIN_LOG_LEVEL": None, "CUDA_VISIBLE_DEVICES": None}


@pytest.mark.slow
def test_commands_print_no_library_log_lines(tmp_path):
  """`affinity train` and `affinity evaluate` (JAX, TensorFlow, seqio) print only their own
  lines; the same with SPOT_JAX_VERBOSE=1 shows what was dropped, when there is any."""
  library = library_and_results(tmp_path, "cosine", 3)
  csv, heads = tmp_path / "results.csv", tmp_path / "folds"
  train = spot_jax_cli("affinity", "train", csv, "--library", library, "--out", heads,
                       "--cross_validate", "--gin.AffinityConfig.train_steps=3", env=BARE)
  assert train.returncode == 0, train.stderr
  assert train.stderr == ""
  assert train.stdout.splitlines()[-1].startswith("3 folds (leave one target out")
  evaluate = spot_jax_cli("affinity", "evaluate", csv, "--library", library, "--head", heads,
                          env=BARE)
  assert evaluate.returncode == 0, evaluate.stderr
  assert evaluate.stderr == ""
  assert evaluate.stdout.startswith("targets: task_00, task_01, task_02 (cross-validated")
  assert not any(word in evaluate.stdout for word in ("absl", "oneDNN", "cuda", "I0000"))
