"""What `spot-jax` prints: no library log lines, `~` in paths, Ctrl-C (the installed entry point
in fresh processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from conftest import SPOT_JAX, spot_jax_cli
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


SPEC = ("name: tiny\nmodel: models/tiny_byte.gin\nsources: [synthetic_sentiment_a]\n"
        "targets: [synthetic_sentiment_b]\nseeds: [0]\nsource_steps: 10\ntarget_steps: 10\n"
        "key_step: 5\nfeature_lengths: {inputs: 48, targets: 12}\nbatch_size: 8\n"
        "prompt_length: 4\ncheckpoint_period: 5\neval_period: 5\nmax_eval_examples: 16\n")


def interrupted(when, *args: str) -> tuple[int, str]:
  """(exit status, stderr) of `spot-jax ARGS` sent SIGINT once `when()` is true."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  process = subprocess.Popen([str(SPOT_JAX), *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
  deadline = time.monotonic() + 120
  while not when() and process.poll() is None and time.monotonic() < deadline:
    time.sleep(0.02)
  process.send_signal(signal.SIGINT)
  _, err = process.communicate(timeout=120)
  return process.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["study dir created", "first run dir created", "after 6 s"])
def test_ctrl_c_at_any_time_exits_130_with_one_clear_line(tmp_path, moment):
  """Early (task registration, planning, the first run's set-up and compilation) or later, a
  Ctrl-C ends `study run` with status 130 and a non-empty message, never a traceback or 0."""
  spec, study = tmp_path / "spec.yaml", tmp_path / "study"
  spec.write_text(SPEC)
  start = time.monotonic()
  when = {"study dir created": study.exists,
          "first run dir created": lambda: any((study / "runs").rglob("config.gin")),
          "after 6 s": lambda: time.monotonic() - start > 6}[moment]
  code, err = interrupted(when, "study", "run", str(spec), "--out", str(study))
  assert code == 130, err
  lines = err.splitlines()
  assert lines and lines[-1].startswith("spot-jax study: ") and lines[-1].split(": ", 1)[1], err
  assert "Traceback" not in err and "Exception ignored" not in err, err


def test_a_ctrl_c_a_library_swallows_still_stops_the_command_with_130(monkeypatch, capsys):
  """A KeyboardInterrupt raised where Python cannot propagate it (a gc callback such as JAX's
  `_xla_gc_callback`, a `__del__`) is not lost: the command stops and exits 130 quietly."""
  from spot_jax.cli import main as cli_main
  from spot_jax.cli import tasks_cmd
  reached = []

  class Swallowed:
    def __del__(self):
      raise KeyboardInterrupt

  def command(args):
    Swallowed()  # the interrupt is "ignored" here ...
    for _ in range(10_000_000):  # ... and must stop the command here.
      pass
    reached.append("end")
    return 0

  monkeypatch.setattr(tasks_cmd, "run_list", command)
  assert cli_main.main(["tasks", "list"]) == 130
  _, err = capsys.readouterr()
  assert reached == [] and err == "spot-jax tasks: interrupted\n"
