"""Hardening (issue 18): run identity, locks, validation, corrupt files, OS errors, interrupts,
umask, scales. Each test names the issue item it covers."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import PROJECT_ROOT
from spot_jax.cli import main as cli_main
from spot_jax.library.store import IndexUpdateError, LibraryError, ModelIdentity, PromptLibrary
from spot_jax.study import results
from tasks.lookup import register_all_tasks
from spot_jax.train import loop, run_dir
from spot_jax.train.loop import TrainConfig, train

register_all_tasks()
TASK = "synthetic_sentiment_a"
MODEL = ModelIdentity("tiny", 4, "fp")


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


def cli(capsys, *argv) -> tuple[int, str, str]:
  code = cli_main.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


# ------------------------------------------------------------------ item 2: identity


@pytest.mark.parametrize("change", [dict(learning_rate=0.001), dict(dropout_rate=0.2),
                                    dict(prompt_init="uniform"), dict(key_step=4),
                                    dict(eval_metric="accuracy")])
def test_item2_changed_setting_is_refused_and_config_gin_kept(finished, change):
  with pytest.raises(run_dir.RunDirError, match=f"different run.*{list(change)[0]}"):
    train(dataclasses.replace(finished, train_steps=6, **change), gin_config="# new\n")
  assert open(os.path.join(finished.model_dir, "config.gin")).read() == "# the original config\n"
  assert run_dir.read_summary(finished.model_dir).steps_done == 4


def test_item2_prompt_file_content_is_part_of_the_identity(tmp_path):
  prompt = tmp_path / "p.npy"
  np.save(prompt, np.ones((2, 64), np.float32))
  cfg = small_run(tmp_path / "run", prompt_init="file", prompt_file=str(prompt), train_steps=2)
  settings = loop.result_settings(cfg)
  np.save(prompt, np.zeros((2, 64), np.float32))
  assert loop.result_settings(cfg)["prompt_file"] != settings["prompt_file"]
  assert loop.result_settings(small_run(tmp_path))["prompt_file"] is None


def test_item2_item8_finished_rerun_writes_nothing_even_read_only(finished):
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


# ------------------------------------------------------------------ item 3/4: locks, workers


def test_item3_second_writer_gets_a_clear_error_and_the_lock_dies_with_its_holder(tmp_path):
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


def test_item4_study_workers_die_with_their_parent(tmp_path):
  pid_file = tmp_path / "worker.pid"
  parent = subprocess.Popen([sys.executable, "-c", (
      "import sys, time\nfrom spot_jax.runs import execute as executor\n"
      "worker = executor.start_worker([sys.executable, '-c', 'import time; time.sleep(120)'], None)\n"
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


# ------------------------------------------------------------------ item 5: early validation


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
def test_item5_item8_bad_settings_fail_before_the_run_dir_is_touched(tmp_path, change, message):
  model_dir = tmp_path / "run"
  if change.get("prompt_file") == "EMPTY":
    (tmp_path / "empty.npy").write_bytes(b"")
    change = dict(change, prompt_file=str(tmp_path / "empty.npy"))
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    train(small_run(model_dir, **change))
  assert not model_dir.exists()


def test_item5_study_run_validates_every_job_before_any_starts(tmp_path, capsys):
  spec = tmp_path / "spec.yaml"
  spec.write_text(
      "name: s\nmodel: models/tiny_byte.gin\nsources: [synthetic_sentiment_a]\n"
      "targets: [synthetic_nli_facts]\nseeds: [0]\nsource_steps: 2\ntarget_steps: 2\n"
      "key_step: 2\neval_metric: bleu\n")
  for extra in ([], ["--dry_run"]):
    code, out, err = cli(capsys, "study", "run", str(spec), "--out", str(tmp_path / "study"),
                         *extra)
    assert code == 2 and "EVAL_METRIC 'bleu' is not reported" in err, err
    assert "source.synthetic_sentiment_a.seed_0" in err and not (tmp_path / "study").exists()
  spec.write_text(spec.read_text().replace("eval_metric: bleu\n",
                                           "gin_bindings: {LEARNING_RATE: fast}\n"))
  code, _, err = cli(capsys, "study", "run", str(spec), "--out", str(tmp_path / "study"))
  assert code == 2 and "learning_rate='fast'" in err


# ------------------------------------------------------------------ items 6/7/10: the library


def _library_with(tmp_path, n=3) -> PromptLibrary:
  library = PromptLibrary(str(tmp_path / "lib"), create=True)
  rng = np.random.default_rng(0)
  for i in range(n):
    library.add(task=f"t{i}", value=rng.normal(size=(2, 4)), key=rng.normal(size=(2, 4)),
                model=MODEL, entry_id=f"e{i}")
  return library


def test_item6_corrupt_entry_is_skipped_reported_removable_and_repairable(tmp_path, capsys):
  library = _library_with(tmp_path)
  (tmp_path / "lib/entries/e1/entry.json").write_text("{not json")
  (tmp_path / "lib/entries/e2/pooled.npz").write_bytes(b"PK\x03\x04garbage")
  root = str(tmp_path / "lib")
  code, out, err = cli(capsys, "library", "list", "--library", root)
  assert code == 0 and "e0" in out and "e1" not in out
  assert "skipped corrupt entry e1" in err and "--repair" in err
  fresh = PromptLibrary(root)
  entries, keys = fresh.pooled_keys("mean")
  assert [e.id for e in entries] == ["e0"] and keys.shape == (1, 4)
  assert "pooled.npz" in fresh.problems["e2"] and "allow_pickle" not in fresh.problems["e2"]
  code, out, _ = cli(capsys, "library", "check", "--library", root)
  assert code == 1 and "e1" in out and "e2" in out
  code, out, _ = cli(capsys, "library", "remove", "--library", root, "e1")
  assert code == 0 and "e1" not in PromptLibrary(root).ids()
  code, out, _ = cli(capsys, "library", "check", "--library", root, "--repair")
  assert code == 0 and "quarantine" in out
  assert PromptLibrary(root).ids() == ["e0"] and os.listdir(tmp_path / "lib/quarantine")
  assert cli(capsys, "library", "check", "--library", root)[0] == 0


def test_item7_concurrent_create_is_atomic_and_idempotent(tmp_path):
  root = tmp_path / "new"
  code = ("import sys; from spot_jax.library.store import PromptLibrary\n"
          f"PromptLibrary({str(root)!r}, create=True)")
  env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
  writers = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE,
                              text=True) for _ in range(6)]
  errors = [w.communicate()[1] for w in writers]
  assert [w.returncode for w in writers] == [0] * 6, errors
  assert PromptLibrary(str(root)).ids() == []


def test_item8_disk_full_while_indexing_says_the_entry_was_added(tmp_path, monkeypatch):
  library = _library_with(tmp_path, n=0)

  def full(*args, **kwargs):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(library, "_update_index", full)
  with pytest.raises(IndexUpdateError, match="'e9' was added.*No space left.*rebuilt"):
    library.add(task="t", value=np.ones((2, 4)), key=np.ones((2, 4)), model=MODEL,
                entry_id="e9")
  monkeypatch.undo()
  assert [e.id for e in PromptLibrary(library.root).pooled_keys("mean")[0]] == ["e9"]


def test_item10_export_refuses_an_existing_target_and_library_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    library = _library_with(tmp_path, n=1)
  finally:
    os.umask(old)
  entry_dir = tmp_path / "lib/entries/e0"
  assert stat.S_IMODE(entry_dir.stat().st_mode) == 0o755
  assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in entry_dir.iterdir())
  assert stat.S_IMODE((tmp_path / "lib/library.json").stat().st_mode) == 0o644
  other = _library_with(tmp_path / "other", n=0)
  with pytest.raises(LibraryError, match="already exists.*never merges"):
    library.export(other.root)
  assert other.ids() == []
  library.export(str(tmp_path / "copy"))
  assert PromptLibrary(str(tmp_path / "copy")).ids() == ["e0"]


def test_item10_stale_temporary_directories_are_cleaned(tmp_path, capsys):
  library = _library_with(tmp_path, n=1)
  stale = tmp_path / "lib/entries/.tmp-dead"
  stale.mkdir()
  (stale / "value.npy").write_bytes(b"partial")
  trash = tmp_path / "lib/entries/.trash-e5-0000"
  trash.mkdir()
  live = tmp_path / "lib/entries/.tmp-live"  # a writer still at work: young, kept.
  live.mkdir()
  os.utime(stale, (time.time() - 7200, time.time() - 7200))
  code, out, _ = cli(capsys, "library", "check", "--library", library.root)
  assert code == 1 and ".tmp-dead" in out and ".trash-e5" in out and ".tmp-live" not in out
  assert cli(capsys, "library", "check", "--library", library.root, "--repair")[0] == 0
  assert not stale.exists() and not trash.exists() and live.exists()


def test_item8_item10_cli_bad_input_is_one_line(tmp_path, capsys):
  library = _library_with(tmp_path, n=1)
  a_file = tmp_path / "file.txt"
  a_file.write_text("x")
  empty = tmp_path / "empty.npy"
  empty.write_bytes(b"")
  results_csv = tmp_path / "r.csv"
  results_csv.write_text("source,target,seed,score\nnone,t,0,50\n")
  bad_gin = tmp_path / "bad.gin"
  bad_gin.write_text("X = (\n")
  cases = [
      (["library", "list", "--library", str(a_file)], "is a file"),
      (["library", "add", "--library", library.root, "--npy", str(empty), "--task", "t",
        "--model_name", "tiny", "--emb_dim", "4", "--fingerprint", "fp"], "empty.npy"),
      (["study", "analyze", str(results_csv), "--out", str(a_file)], "file.txt"),
      (["retrieve", "--library", library.root, "--key", str(empty), "--model", "fp", "--k",
        "0"], "--k must be at least 1"),
      (["train", f"--gin_file={bad_gin}"], "fix the gin syntax"),
  ]
  for argv, message in cases:
    code, out, err = cli(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert "Traceback" not in err


def test_item8_read_only_library_with_a_stale_index_still_searches(tmp_path):
  library = _library_with(tmp_path, n=2)
  os.remove(os.path.join(library.index_dir, os.listdir(library.index_dir)[0]))
  for directory in (library.root, library.index_dir, library.entries_dir):
    os.chmod(directory, 0o555)
  try:
    entries, keys = PromptLibrary(library.root).pooled_keys("mean")
  finally:
    for directory in (library.root, library.index_dir, library.entries_dir):
      os.chmod(directory, 0o755)
  assert [e.id for e in entries] == ["e0", "e1"] and keys.shape == (2, 4)


def test_item10_results_scale_and_bom(tmp_path):
  fractions = tmp_path / "f.csv"
  fractions.write_text("source,target,seed,score\nnone,t,0,0.5\na,t,0,0.7\n")
  with pytest.raises(results.StudyTableError, match="look like fractions.*Multiply"):
    results.read_results(str(fractions))
  bom = tmp_path / "bom.csv"
  bom.write_bytes("\ufeffsource,target,seed,score\nnone,t,0,50\na,t,0,70\n".encode())
  assert list(results.read_results(str(bom)).score) == [50.0, 70.0]
  zeros = tmp_path / "z.csv"  # a 0-100 table of zeros is not mistaken for fractions.
  zeros.write_text("source,target,seed,score\nnone,t,0,0\na,t,0,0\n")
  assert list(results.read_results(str(zeros)).score) == [0.0, 0.0]


def test_item10_model_dir_tilde_is_expanded_and_run_files_follow_the_umask(tmp_path,
                                                                         monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  old = os.umask(0o022)
  try:
    cfg = loop.validate_config(small_run("~/run"))
    assert cfg.model_dir == str(tmp_path / "run")
    run_dir.write_summary(cfg.model_dir, run_dir.RunSummary(
        task=TASK, model={}, prompt_length=2, seed=0, batch_size=4, feature_lengths={},
        train_steps=1, key_step=1))
    path = run_dir.save_prompt(cfg.model_dir, 0, np.zeros((2, 4)))
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
  assert stat.S_IMODE(os.stat(os.path.join(cfg.model_dir, "run.json")).st_mode) == 0o644


# ------------------------------------------------------------------ item 9: interrupts


def test_item9_ctrl_c_prints_the_step_and_exits_130_then_resume_finishes(tmp_path, capsys,
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
  code, _, err = cli(capsys, *argv)
  assert code == 130
  assert err.strip() == ("spot-jax train: interrupted at step 2 (last checkpoint: step 2); "
                         "run the same command to resume")
  monkeypatch.undo()
  assert cli(capsys, *argv)[0] == 0 and run_dir.read_summary(str(tmp_path)).finished


def test_item9_corrupt_run_json_is_refused_without_overwrite_and_replaced_with_it(tmp_path):
  (tmp_path / "run.json").write_text("{truncated")
  cfg = small_run(tmp_path, train_steps=2)
  with pytest.raises(run_dir.RunDirError, match="run.json is not a valid run summary.*overwrite"):
    train(cfg)
  assert (tmp_path / "run.json").read_text() == "{truncated"
  summary = train(dataclasses.replace(cfg, overwrite=True))
  assert summary.finished and run_dir.read_summary(str(tmp_path)).steps_done == 2


# ------------------------------------------------------------------ item 11: start-up


def test_item11_light_commands_import_neither_jax_nor_tensorflow(tmp_path):
  _library_with(tmp_path, n=1)
  code = ("import sys, contextlib, io\nfrom spot_jax.cli import main\n"
          f"for argv in (['--help'], ['tasks', 'list'], ['library', 'list', '--library', "
          f"{str(tmp_path / 'lib')!r}], ['study', 'run', '--help']):\n"
          "  with contextlib.redirect_stdout(io.StringIO()):\n"
          "    try:\n      assert main.main(argv) == 0, argv\n    except SystemExit:\n      pass\n"
          "print(sorted(m for m in ('jax', 'tensorflow', 'seqio', 'scipy') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)))
  assert out.returncode == 0, out.stderr
  assert out.stdout.splitlines()[-1] == "[]"


# ------------------------------------------------------------------ long runs: resume


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
    assert loop.validate_config(small_run(tmp_path / "run", eval_mode=mode)).eval_mode == mode
  with pytest.raises(ValueError, match="Unknown EVAL_MODE 'rank'"):
    loop.validate_config(small_run(tmp_path / "run", eval_mode="rank"))


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
