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
  # As from a terminal: a suite started in the background (`cmd &` without job control)
  # ignores SIGINT, and its children would inherit that (spot-jax then leaves it ignored).
  process = subprocess.Popen([str(SPOT_JAX), *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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
  # As a command starts (a library imported by an earlier test in this process may have left
  # its own SIGINT or SIGALRM handler, under which the guard stands aside).
  previous = {sig: signal.signal(sig, handler) for sig, handler in (
      (signal.SIGINT, signal.default_int_handler), (signal.SIGALRM, signal.SIG_DFL))}
  try:
    assert cli_main.main(["tasks", "list"]) == 130
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  _, err = capsys.readouterr()
  assert reached == [] and err == "spot-jax tasks: interrupted\n"


# Every subcommand with `~` in each of its path arguments (and the scorer form affinity:~/...).
TILDE_COMMANDS = {
    "demo": ["demo", "--output_dir=~/demo"],
    "train": ["train", "--gin_file=~/run.gin", "--packed_job", "~/job.json"],
    "eval": ["eval", "--gin_file=~/run.gin", "--predictions_out=~/predictions"],
    "export": ["export", "--merged", "--run", "~/run", "--output", "~/out"],
    "model info": ["model", "info", "--checkpoint", "~/ckpt", "--config", "~/config.gin"],
    "tasks list": ["tasks", "list"],
    "library add": ["library", "add", "--library", "~/lib", "--npy", "~/p.npy", "--key_npy",
                    "~/key.npy"],
    "library add --peft": ["library", "add", "--library", "~/lib", "--peft", "~/peft"],
    "library add --run": ["library", "add", "--library", "~/lib", "--run", "~/run"],
    "library list": ["library", "list", "--library", "~/lib"],
    "library show": ["library", "show", "--library", "~/lib", "id"],
    "library remove": ["library", "remove", "--library", "~/lib", "id"],
    "library export": ["library", "export", "--library", "~/lib", "--out=~/export"],
    "library check": ["library", "check", "--library", "~/lib"],
    "library similarity": ["library", "similarity", "--library", "~/lib", "--out", "~/s.csv",
                           "--plot", "~/s.png"],
    "embed": ["embed", "--out", "~/lib", "--gin_file=~/embed.gin"],
    "retrieve": ["retrieve", "--library", "~/lib", "--key", "~/key.npy", "--out", "~/r.csv",
                 "--scorer", "affinity:~/heads"],
    "transfer": ["transfer", "--strategy", "weighted_average", "--library", "~/lib", "--run",
                 "~/run", "--target", "t", "--out_dir", "~/out"],
    "study run": ["study", "run", "~/spec.yaml", "--out", "~/study", "--emit_jobs", "~/jobs",
                  "--predictions", "~/pred.csv"],
    "study agreement": ["study", "agreement", "~/prompt.csv", "~/model.csv", "--out",
                        "~/agreement.csv"],
    "study analyze": ["study", "analyze", "~/results.csv", "--out", "~/analysis",
                      "--similarity", "~/sim.csv"],
    "study evaluate": ["study", "evaluate", "~/results.csv", "--predictions", "~/p.csv",
                       "--study_dir", "~/study", "--sizes", "~/sizes.csv", "--out", "~/e.csv"],
    "study sizes": ["study", "sizes", "--model", "base=~/m.csv", "--prompt", "xl=~/p.csv",
                    "--out", "~/fig1"],
    "study table3": ["study", "table3", "~/results.csv", "--configurations", "~/c.csv",
                     "--out", "~/t3"],
    "affinity train": ["affinity", "train", "~/results.csv", "--library", "~/lib", "--out",
                       "~/heads", "--families", "~/families.csv"],
    "affinity predict": ["affinity", "predict", "--scorer", "affinity:~/heads", "--study_dir",
                         "~/study", "--results", "~/results.csv", "--sizes", "~/sizes.csv",
                         "--out=~/an"],
    "affinity evaluate": ["affinity", "evaluate", "~/results.csv", "--head", "~/h1", "~/h2",
                          "--library", "~/lib", "--sizes", "~/sizes.csv", "--out", "~/e.csv"],
    "affinity ablate": ["affinity", "ablate", "~/results.csv", "--study_dir", "~/study",
                        "--out", "~/ablation", "--families", "~/families.csv"],
}


def test_tilde_is_expanded_in_every_path_argument_of_every_subcommand(monkeypatch, tmp_path):
  import argparse

  from spot_jax.cli import main as cli_main
  monkeypatch.setenv("HOME", str(tmp_path))
  leaves = []

  def walk(parser, prefix):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    leaves.extend([prefix] if not subs else [])
    for action in subs:
      for name, sub in action.choices.items():
        walk(sub, f"{prefix} {name}".strip())

  walk(cli_main.build_parser(), "")
  # a new subcommand gets a line here.
  assert sorted({name.split(" --")[0] for name in TILDE_COMMANDS}) == sorted(leaves)
  for argv in TILDE_COMMANDS.values():
    _, args = cli_main.parse(argv)
    values = [v for value in vars(args).values()
              for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    assert not [v for v in values if "~" in v], argv
    assert argv == ["tasks", "list"] or any(v.startswith(str(tmp_path)) or
                                           v.startswith(f"affinity:{tmp_path}") for v in values)


def test_tilde_paths_reach_the_files_through_the_entry_point(tmp_path):
  """`affinity predict --scorer cosine --library ~/lib --out=~/an` reads and writes under
  HOME, never in a literal ./~ directory."""
  library_and_results(tmp_path, "cosine", 3)
  done = spot_jax_cli("affinity", "predict", "--scorer", "cosine", "--library", "~/lib",
                      "--results", "~/results.csv", "--out=~/an", cwd=tmp_path,
                      env={"HOME": str(tmp_path)})
  assert done.returncode == 0, done.stderr
  assert (tmp_path / "an").is_file() and not (tmp_path / "~").exists()


def test_study_evaluate_scorer_without_a_study_points_to_affinity_predict_library(tmp_path):
  library_and_results(tmp_path, "cosine", 3)
  done = spot_jax_cli("study", "evaluate", tmp_path / "results.csv", "--scorer", "cosine")
  assert done.returncode == 2
  message = done.stderr.strip()
  assert message.startswith(f"spot-jax study: error: {tmp_path} is not a study directory")
  assert "`spot-jax affinity predict --scorer cosine --library LIB --results " in message
  assert len(message.splitlines()) == 1


SPEC_HEAD = ("name: t\nmodel: models/tiny_byte.gin\nsources: [synthetic_sentiment_a]\n"
             "targets: [synthetic_sentiment_b]\nsource_steps: 10\ntarget_steps: 10\n"
             "key_step: 5\n")
BAD_INPUT = {  # file name, its bytes, the command, the one line it must print.
    "gin syntax": ("bad.gin", b'include "models/tiny_byte.gin"\nTRAIN_STEPS = (10\nBATCH = 3\n',
                   ["train", "--gin_file=bad.gin"],
                   "spot-jax train: error: bad.gin, line 3: Expected ',' or ')' in `BATCH = 3`; "
                   "fix the gin syntax"),
    "seed x": ("spec.yaml", (SPEC_HEAD + "seeds: [0, x]\n").encode(),
               ["study", "run", "spec.yaml", "--out", "study", "--dry_run"],
               "spot-jax study: error: spec.yaml: seeds must be a list of non-negative "
               "integers, got [0, 'x']"),
    "non-UTF-8 spec": ("spec.yaml", SPEC_HEAD.encode() + b"seeds: [0]\n# caf\xe9\n",
                       ["study", "run", "spec.yaml", "--out", "study", "--dry_run"],
                       "spot-jax study: error: spec.yaml is not UTF-8 text (byte 0xe9 at "
                       "offset 164); save the spec as UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_files_get_one_short_line_naming_the_file(tmp_path, case):
  name, content, argv, line = BAD_INPUT[case]
  (tmp_path / name).write_bytes(content)
  done = spot_jax_cli(*argv, cwd=tmp_path)
  assert done.returncode == 2
  assert done.stderr.splitlines() == [line]
  assert not (tmp_path / "study").exists()
