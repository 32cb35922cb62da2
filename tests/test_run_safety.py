"""Run safety: the run identity (a changed setting is refused), locks, workers that die with their
parent, settings validated before the run directory is touched, interrupts and resume, corrupt
run files, the umask, and reuse of the jitted step."""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import PROJECT_ROOT, cli_in_process
from tasks.lookup import register_all_tasks
from spot_jax.train import config, loop, run_dir
from spot_jax.train.loop import TrainConfig, train

register_all_tasks()
TASK = "synthetic_sentiment_a"


def small_run(model_dir, **overrides) -> TrainConfig:
  fields = dict(model_dir=str(model_dir), task=TASK, model="tiny_byte",
                feature_lengths={"inputs": 48, "targets": 12}, train_steps=4, batch_size=4,
                prompt_length=2, checkpoint_period=2, eval_period=0, log_period=2, key_step=2)
  fields.update(overrides)
  return TrainConfig(**fields)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("finished")
  cfg = small_run(model_dir)
  train(cfg, gin_config="# the original config\n")
  return cfg

@pytest.mark.parametrize("change", [dict(learning_rate=0.001), dict(dropout_rate=0.2),
                                    dict(prompt_init="uniform"), dict(key_step=4),
                                    dict(eval_metric="accuracy")])
def test_changed_setting_is_refused_and_config_gin_kept(finished, change):
  with pytest.raises(run_dir.RunDirError, match=f"different run.*{list(change)[0]}"):
    train(dataclasses.replace(finished, train_steps=6, **change), gin_config="# new\n")
  assert open(os.path.join(finished.model_dir, "config.gin")).read() == "# the original config\n"
  assert run_dir.read_summary(finished.model_dir).steps_done == 4


def test_prompt_file_content_is_part_of_the_identity(tmp_path):
  prompt = tmp_path / "p.npy"
  np.save(prompt, np.ones((2, 64), np.float32))
  cfg = small_run(tmp_path / "run", prompt_init="file", prompt_file=str(prompt), train_steps=2)
  settings = config.result_settings(cfg)
  np.save(prompt, np.zeros((2, 64), np.float32))
  assert config.result_settings(cfg)["prompt_file"] != settings["prompt_file"]
  assert config.result_settings(small_run(tmp_path))["prompt_file"] is None


def test_finished_rerun_writes_nothing_even_read_only(finished):
  before = {n: os.stat(os.path.join(finished.model_dir, n)).st_mtime_ns
            for n in ("config.gin", "run.json")}
  os.chmod(finished.model_dir, 0o555)
  try:
    summary = train(finished, gin_config="# another config text\n")
  finally:
    os.chmod(finished.model_dir, 0o755)
  assert summary.finished and summary.steps_done == 4
  assert before == {n: os.stat(os.path.join(finished.model_dir, n)).st_mtime_ns
                    for n in ("config.gin", "run.json")}


def test_second_writer_gets_a_clear_error_and_the_lock_dies_with_its_holder(tmp_path):
  with run_dir.locked(str(tmp_path)):
    with pytest.raises(run_dir.RunDirInUseError, match=f"in use .*pid {os.getpid()}"):
      train(small_run(tmp_path))
  assert not (tmp_path / "run.json").exists() and not (tmp_path / "config.gin").exists()
  # A holder killed with SIGKILL leaves the lock file, but not the lock.
  holder = subprocess.Popen([sys.executable, "-c", (
      "import sys, time; from spot_jax.train import run_dir\n"
      f"with run_dir.locked({str(tmp_path)!r}):\n  print('locked', flush=True); time.sleep(60)")],
      stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)))
  assert holder.stdout.readline().strip() == "locked"
  with pytest.raises(run_dir.RunDirInUseError, match=f"pid {holder.pid}"):
    with run_dir.locked(str(tmp_path)):
      pass
  holder.kill()
  holder.wait()
  with run_dir.locked(str(tmp_path)):
    pass


def test_study_workers_die_with_their_parent(tmp_path):
  pid_file = tmp_path / "worker.pid"
  parent = subprocess.Popen([sys.executable, "-c", (
      "import sys, time\nfrom spot_jax.runs import workers\n"
      "worker = workers.start_worker([sys.executable, '-c', 'import time; time.sleep(120)'], None)\n"
      f"open({str(pid_file)!r}, 'w').write(str(worker.pid))\ntime.sleep(120)")],
      env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)))
  deadline = time.time() + 60
  while not pid_file.exists() or not pid_file.read_text():
    assert time.time() < deadline and parent.poll() is None
    time.sleep(0.05)
  worker = int(pid_file.read_text())
  parent.send_signal(signal.SIGKILL)
  parent.wait()
  deadline = time.time() + 10
  while _alive(worker):
    assert time.time() < deadline, "the worker outlived its parent"
    time.sleep(0.05)


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"
  except FileNotFoundError:
    return False


@pytest.mark.parametrize("change, message", [
    (dict(eval_period=2, eval_metric="bleu"), "EVAL_METRIC 'bleu' is not reported"),
    (dict(feature_lengths={"inputs": 0, "targets": 12}), "feature lengths"),
    (dict(eval_period=2, feature_lengths={"inputs": 48, "targets": 2}), "targets length is 2"),
    (dict(initial_checkpoint="/nonexistent/checkpoint_1"), "INITIAL_CHECKPOINT_PATH"),
    (dict(eval_period=-1), "eval_period=-1"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(batch_size="8"), "batch_size='8' is not an integer"),
    (dict(train_steps="2O"), "TRAIN_STEPS"),
    (dict(learning_rate="fast"), "LEARNING_RATE"),
    (dict(feature_lengths={"inputs": 100000, "targets": 12}, batch_size=64), "GiB"),
    (dict(prompt_init="file", prompt_file="EMPTY"), "not a plain .npy array"),
])
def test_bad_settings_fail_before_the_run_dir_is_touched(tmp_path, change, message):
  model_dir = tmp_path / "run"
  if change.get("prompt_file") == "EMPTY":
    (tmp_path / "empty.npy").write_bytes(b"")
    change = dict(change, prompt_file=str(tmp_path / "empty.npy"))
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    train(small_run(model_dir, **change))
  assert not model_dir.exists()


def test_study_run_validates_every_job_before_any_starts(tmp_path, capsys):
  spec = tmp_path / "spec.yaml"
  spec.write_text(
      "name: s\nmodel: models/tiny_byte.gin\nsources: [synthetic_sentiment_a]\n"
      "targets: [synthetic_nli_facts]\nseeds: [0]\nsource_steps: 2\ntarget_steps: 2\n"
      "key_step: 2\neval_metric: bleu\n")
  for extra in ([], ["--dry_run"]):
    code, out, err = cli_in_process(capsys, "study", "run", str(spec), "--out", str(tmp_path / "study"),
                         *extra)
    assert code == 2 and "EVAL_METRIC 'bleu' is not reported" in err, err
    assert "source.synthetic_sentiment_a.seed_0" in err and not (tmp_path / "study").exists()
  spec.write_text(spec.read_text().replace("eval_metric: bleu\n",
                                           "gin_bindings: {LEARNING_RATE: fast}\n"))
  code, _, err = cli_in_process(capsys, "study", "run", str(spec), "--out", str(tmp_path / "study"))
  assert code == 2 and "learning_rate='fast'" in err


def test_model_dir_tilde_is_expanded_and_run_files_follow_the_umask(tmp_path,
                                                                         monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  old = os.umask(0o022)
  try:
    cfg = config.validate_config(small_run("~/run"))
    assert cfg.model_dir == str(tmp_path / "run")
    run_dir.write_summary(cfg.model_dir, run_dir.RunSummary(
        task=TASK, model={}, prompt_length=2, seed=0, batch_size=4, feature_lengths={},
        train_steps=1, key_step=1))
    path = run_dir.save_prompt(cfg.model_dir, 0, np.zeros((2, 4)))
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
  assert stat.S_IMODE(os.stat(os.path.join(cfg.model_dir, "run.json")).st_mode) == 0o644


def test_ctrl_c_prints_the_step_and_exits_130_then_resume_finishes(tmp_path, capsys,
                                                                          monkeypatch):
  make_batch = loop.partitioning.make_global_batch
  calls = []

  def interrupt_at_step_3(batch, mesh):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return make_batch(batch, mesh)

  monkeypatch.setattr(loop.partitioning, "make_global_batch", interrupt_at_step_3)
  argv = ["train", "--gin_file=models/tiny_byte.gin", "--gin_file=runs/prompt_train.gin",
          f"--gin.MODEL_DIR={tmp_path}", f"--gin.MIXTURE_OR_TASK_NAME={TASK}",
          "--gin.TRAIN_STEPS=4", "--gin.PROMPT_LENGTH=2", "--gin.BATCH_SIZE=4",
          "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_PERIOD=0", "--gin.KEY_STEP=2",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 12}"]
  code, _, err = cli_in_process(capsys, *argv)
  assert code == 130
  assert err.strip() == ("spot-jax train: interrupted at step 2 (last checkpoint: step 2); "
                         "run the same command to resume")
  monkeypatch.undo()
  assert cli_in_process(capsys, *argv)[0] == 0 and run_dir.read_summary(str(tmp_path)).finished


def test_corrupt_run_json_is_refused_without_overwrite_and_replaced_with_it(tmp_path):
  (tmp_path / "run.json").write_text("{truncated")
  cfg = small_run(tmp_path, train_steps=2)
  with pytest.raises(run_dir.RunDirError, match="run.json is not a valid run summary.*overwrite"):
    train(cfg)
  assert (tmp_path / "run.json").read_text() == "{truncated"
  summary = train(dataclasses.replace(cfg, overwrite=True))
  assert summary.finished and run_dir.read_summary(str(tmp_path)).steps_done == 2


def test_late_resume_restores_the_input_pipeline_without_replaying_it(tmp_path):
  from spot_jax.data.batches import TrainBatches
  args = (TASK, {"inputs": 48, "targets": 12}, 4)
  straight = TrainBatches(*args, seed=3)
  expected = [next(straight) for _ in range(6)]
  first = TrainBatches(*args, seed=3, model_dir=str(tmp_path))
  for _ in range(3):
    next(first)
  first.save(str(tmp_path), 3)
  # Saved at step 3, filed as step 10**9: replaying 10**9 batches would take days.
  os.rename(tmp_path / "data_state" / "3", tmp_path / "data_state" / str(10**9))
  start = time.perf_counter()
  resumed = TrainBatches(*args, seed=3, start_step=10**9, model_dir=str(tmp_path))
  batches = [next(resumed) for _ in range(3)]
  assert resumed.restored and time.perf_counter() - start < 30
  for got, want in zip(batches, expected[3:]):
    for name in want:
      np.testing.assert_array_equal(got[name], want[name])


def test_former_macro_name_eval_num_examples_binds_max_eval_examples():
  from spot_jax.gin_utils import split_gin_args
  files, bindings, rest = split_gin_args(["train", "--gin.EVAL_NUM_EXAMPLES=32",
                                          "--gin.BATCH_SIZE", "8"])
  assert bindings == ["MAX_EVAL_EXAMPLES = 32", "BATCH_SIZE = 8"] and rest == ["train"]


def test_every_eval_mode_the_evaluator_has_is_accepted_and_others_refused(tmp_path):
  from spot_jax.evaluation.evaluator import EVAL_MODES
  for mode in EVAL_MODES:
    assert config.validate_config(small_run(tmp_path / "run", eval_mode=mode)).eval_mode == mode
  with pytest.raises(ValueError, match="Unknown EVAL_MODE 'rank'"):
    config.validate_config(small_run(tmp_path / "run", eval_mode="rank"))


def test_runs_in_one_process_reuse_the_jitted_step_of_the_same_settings(tmp_path, monkeypatch):
  from spot_jax.train import partitioning
  built = []
  jit_train_step = partitioning.jit_train_step
  monkeypatch.setattr(loop, "_STEP_CACHE", {})
  monkeypatch.setattr(partitioning, "jit_train_step",
                      lambda *args, **kw: built.append(1) or jit_train_step(*args, **kw))
  first = train(small_run(tmp_path / "a", train_steps=2))
  second = train(small_run(tmp_path / "b", train_steps=2, seed=1))
  assert len(built) == 1 and first.finished and second.finished
  assert [key[1] for key in loop._STEP_CACHE] == [tuple(sorted(first.optimizer.items()))]
