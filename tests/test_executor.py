"""The one run executor: run specs, the finished rule, the in-process path, and the layering
of the numpy-only modules."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT
from spot_jax.runs import commands, in_process
from spot_jax.runs import execute as executor
from spot_jax.runs import spec as run_spec
from spot_jax.runs.spec import RunSpec
from tasks.lookup import register_all_tasks
from spot_jax.train import loop, run_dir

register_all_tasks()
GIN_FILES = ("models/tiny_byte.gin", "runs/prompt_train.gin")


def spec(model_dir, steps: int = 2, name: str = "run", **extra) -> RunSpec:
  """A seconds-long run (random frozen tiny_byte, 4-token prompt, short sequences)."""
  bindings = {"MODEL_DIR": f'"{model_dir}"', "MIXTURE_OR_TASK_NAME": '"synthetic_sentiment_a"',
              "TASK_FEATURE_LENGTHS": "{'inputs': 48, 'targets': 12}", "BATCH_SIZE": "8",
              "PROMPT_LENGTH": "4", "TRAIN_STEPS": str(steps), "CHECKPOINT_PERIOD": "1",
              "EVAL_PERIOD": "0", "KEY_STEP": "1", **extra}
  return RunSpec(name, str(model_dir), GIN_FILES, bindings)


def test_spec_flags_and_train_steps(tmp_path):
  s = spec(tmp_path / "a", steps=7)
  assert s.train_steps == 7
  assert s.flags()[:2] == ["--gin_file=models/tiny_byte.gin", "--gin_file=runs/prompt_train.gin"]
  assert f'--gin.MODEL_DIR="{tmp_path / "a"}"' in s.flags()
  direct = RunSpec("b", "/b", (), {"TRAIN_STEPS": "3", "TrainConfig.train_steps": "9"})
  assert direct.train_steps == 9  # a direct TrainConfig binding wins over the macro.
  assert commands.launch_command(s, None)[:2] == ["spot-jax", "train"]


def test_in_process_run_writes_config_gin_and_extension_killed_is_not_finished(
    tmp_path, monkeypatch):
  model_dir = tmp_path / "run"
  first = spec(model_dir, steps=2)
  summary = in_process.train_spec(first)
  assert summary.finished and run_spec.is_finished(first)
  config = (model_dir / run_dir.CONFIG_GIN).read_text()
  assert "TRAIN_STEPS = 2" in config and str(model_dir) in config  # like `spot-jax train`.

  # Extended to 4 steps and killed after step 3: neither request reads as finished.
  original = loop._checkpoint
  def checkpoint_then_die(cfg, method, state, step, *args):
    original(cfg, method, state, step, *args)
    if step == 3:
      raise KeyboardInterrupt
  monkeypatch.setattr(loop, "_checkpoint", checkpoint_then_die)
  longer = spec(model_dir, steps=4)
  with pytest.raises(KeyboardInterrupt):
    in_process.train_spec(longer)
  state = run_dir.read_summary(str(model_dir))
  assert (state.steps_done, state.train_steps, state.finished) == (3, 4, False)
  assert not run_spec.is_finished(longer)
  assert run_spec.read_finished(str(model_dir)) is None
  monkeypatch.setattr(loop, "_checkpoint", original)
  assert in_process.train_spec(longer).steps_done == 4 and run_spec.is_finished(longer)


def test_execute_skips_finished_blocks_dependants_and_reports_failures(tmp_path):
  trained = []
  def fake_train(s: RunSpec):
    trained.append(s.name)
    if s.name == "bad":
      raise ValueError("boom")
    os.makedirs(s.model_dir, exist_ok=True)
    run_dir.write_summary(s.model_dir, run_dir.RunSummary(
        task="t", model={}, prompt_length=4, seed=0, batch_size=8, feature_lengths={},
        train_steps=s.train_steps, key_step=1, steps_done=s.train_steps, finished=True,
        best_score=1.0))
  good, bad = spec(tmp_path / "good", name="good"), spec(tmp_path / "bad", name="bad")
  after_bad = RunSpec("after", str(tmp_path / "after"), GIN_FILES, {"TRAIN_STEPS": "2"},
                      depends_on=(bad.model_dir,))
  after_good = RunSpec("after_good", str(tmp_path / "ag"), GIN_FILES, {"TRAIN_STEPS": "2"},
                       depends_on=(good.model_dir,))
  done = []
  result = executor.execute([good, bad, after_bad, after_good], run_one=fake_train,
                            log=lambda line: None, on_done=lambda s, summary: done.append(s.name))
  assert trained == ["good", "bad", "after_good"] and done == ["good", "after_good"]
  assert [s.name for s, _ in result.failed] == ["bad"] and "boom" in result.failed[0][1]
  assert [s.name for s, _ in result.blocked] == ["after"] and not result.ok
  assert result.status(good) == "finished" and result.status(after_bad) == "blocked"
  again = executor.execute([good, after_good], run_one=fake_train, log=lambda line: None)
  assert [s.name for s in again.skipped] == ["good", "after_good"] and trained[-1] == "after_good"
  # More steps asked than done: not finished, trained again.
  assert not run_spec.is_finished(spec(tmp_path / "good", steps=5, name="good"))


def test_library_and_results_import_without_flax_optax_orbax():
  code = ("import sys; import spot_jax.library, spot_jax.study.results, spot_jax.runs.execute; "
          "bad = [m for m in ('flax', 'optax', 'orbax', 'jax', 'tensorflow', 'seqio') "
          "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
  completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=PROJECT_ROOT, env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)))
  assert completed.returncode == 0, completed.stdout + completed.stderr


def test_configured_settings_reads_what_gin_binds_without_making_a_run():
  """`retrieve transfer` reads the shared settings of its runs before any run exists: macros
  resolved, unbound fields at TrainConfig's defaults, no MODEL_DIR or task needed, and the
  gin config cleared afterwards."""
  import gin

  from spot_jax.runs.in_process import configured_settings
  from spot_jax.train.loop import TrainConfig
  settings = configured_settings(["models/tiny_byte.gin", "runs/prompt_train.gin"],
                                 ["TRAIN_STEPS = 7", "PROMPT_LENGTH = 3"],
                                 ("train_steps", "prompt_length", "method", "log_period"))
  assert settings == {"train_steps": 7, "prompt_length": 3, "method": "prompt",
                      "log_period": TrainConfig.log_period}
  assert "TRAIN_STEPS" not in gin.config_str()
  with pytest.raises(ValueError, match=r"TrainConfig has no settings \['steps'\]"):
    configured_settings(["models/tiny_byte.gin"], [], ("steps",))
