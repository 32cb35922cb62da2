"""The prompt-tuning trainer: optimizer, compiled step, run directory, resume, failures, gin."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import traverse_util

from hlo_util import dot_output_shapes
from spot_jax import gin_utils
from spot_jax.checkpoints import t5x
from spot_jax.models import T5, get_config
from tasks.lookup import register_all_tasks
from spot_jax.train import full_checkpoints, loop, preflight, run_dir
from spot_jax.train.evaluate import EvalConfig, evaluate_prompt
from spot_jax.train.loop import NonFiniteLossError, TrainConfig, train
from spot_jax.train.optimizer import prompt_adafactor
from spot_jax.train.step import init_train_state, make_train_step

register_all_tasks()
TASK = "synthetic_sentiment_a"


def small_run(model_dir, **overrides) -> TrainConfig:
  """A seconds-long run: random frozen tiny_byte model, 4-token prompt, short sequences."""
  fields = dict(model_dir=str(model_dir), task=TASK, model="tiny_byte",
                feature_lengths={"inputs": 48, "targets": 12}, train_steps=10, batch_size=8,
                prompt_length=4, checkpoint_period=5, eval_period=5, max_eval_examples=16,
                log_period=5, key_step=5)
  fields.update(overrides)
  return TrainConfig(**fields)


def test_adafactor_first_step_matches_formula():
  """Step 1 at absolute step 0: v = g^2 (decay 0), u = g/|g|, clip rms 1 keeps it,
  p <- (1 - 1e-5) p - 0.3 u."""
  prompt = jnp.asarray([[0.5, -1.0, 2.0]])
  grad = jnp.asarray([[0.2, -3.0, 0.01]])
  optimizer = prompt_adafactor()
  updates, _ = optimizer.update(grad, optimizer.init(prompt), prompt)
  expected = prompt * (1 - 1e-5) - 0.3 * jnp.sign(grad) - prompt
  np.testing.assert_allclose(updates, expected, rtol=1e-5)


def test_adafactor_decay_uses_absolute_step():
  """At absolute step T the second moment keeps decay 1 - (T+1)^-0.8 of its old value."""
  prompt = jnp.zeros((2, 2))
  g1, g2 = jnp.full((2, 2), 1.0), jnp.asarray([[2.0, 1.0], [1.0, 1.0]])
  for offset in (0, 1_100_000):
    optimizer = prompt_adafactor(step_offset=offset, clipping_threshold=None, weight_decay=0.0)
    _, state = optimizer.update(g1, optimizer.init(prompt), prompt)
    updates, _ = optimizer.update(g2, state, prompt)
    decay1 = 1 - (offset + 1.0) ** -0.8
    decay2 = 1 - (offset + 2.0) ** -0.8
    v = decay2 * ((1 - decay1) * g1**2) + (1 - decay2) * g2**2
    # optax computes 1 - decay in float32: ~1e-3 relative error at t = 1.1M (the two offsets
    # give updates that differ by a factor of ~100, so this still tells them apart).
    np.testing.assert_allclose(updates, -0.3 * g2 / jnp.sqrt(v), rtol=2e-3)


def test_compiled_step_has_no_weight_gradient_products():
  config = get_config("tiny", vocab_size=72, emb_dim=24, num_heads=2, head_dim=10, mlp_dim=36)
  model = T5(config, prompt_length=4)
  tokens = jnp.ones((3, 7), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), tokens, tokens[:, :5])["params"]
  frozen = dict(params, encoder={k: v for k, v in params["encoder"].items() if k != "prompt"})
  optimizer = prompt_adafactor()
  state = init_train_state({"encoder": {"prompt": params["encoder"]["prompt"]}}, optimizer, 0)
  batch = {"encoder_input_tokens": tokens, "decoder_input_tokens": tokens[:, :5],
           "decoder_target_tokens": tokens[:, :5]}
  step = jax.jit(make_train_step(model, optimizer))
  kernel_shapes = {tuple(x.shape) for x in jax.tree_util.tree_leaves(frozen) if x.ndim == 2}
  dot_shapes = dot_output_shapes(step.lower(state, frozen, batch).compile().as_text())
  assert dot_shapes, "no dot found: the regex no longer matches XLA's HLO text"
  assert not dot_shapes & kernel_shapes, f"weight-gradient products {dot_shapes & kernel_shapes}"
  # The reference: differentiating all weights does produce such products.
  def full_loss(p):
    return model.apply({"params": p}, *batch.values()).sum()
  full_shapes = dot_output_shapes(jax.jit(jax.grad(full_loss)).lower(params).compile().as_text())
  assert full_shapes & kernel_shapes


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("run")
  summary = train(small_run(model_dir), gin_config="# test config\n")
  return model_dir, summary


def test_run_directory_contract(finished_run):
  model_dir, summary = finished_run
  assert summary.finished and summary.steps_done == 10
  assert run_dir.prompt_steps(str(model_dir)) == [0, 5, 10]
  prompt = np.load(model_dir / "numpy_checkpoints/checkpoint_10/encoder.prompt.prompt.prompt")
  assert prompt.shape == (4, 64) and prompt.dtype == np.float32
  on_disk = run_dir.read_summary(str(model_dir))
  assert on_disk == summary
  assert set(on_disk.checkpoints) == {"5", "10"} and on_disk.key_prompt_step == 5
  assert on_disk.eval_metric == "mean" and on_disk.eval_mode == "beam_search"  # T5X's.
  # A checkpoint's score is the mean of its task's metrics; the best is the first highest.
  scores = {int(step): float(np.mean(list(results[TASK].values())))
            for step, results in on_disk.checkpoints.items()}
  assert on_disk.best_step == max(scores, key=lambda step: (scores[step], -step))
  assert on_disk.best_score == scores[on_disk.best_step]
  assert on_disk.task_best_steps == {TASK: {"step": on_disk.best_step,
                                            "score": on_disk.best_score}}
  assert "accuracy" in on_disk.checkpoints["10"][TASK]
  assert on_disk.model["name"] == "tiny_byte" and len(on_disk.model["fingerprint"]) == 16
  assert (model_dir / "config.gin").read_text() == "# test config\n"
  lines = [json.loads(l) for l in (model_dir / "metrics.jsonl").read_text().splitlines()]
  assert {(l["step"], l["split"]) for l in lines} == {
      (5, "train"), (10, "train"), (5, "validation"), (10, "validation")}
  assert all(np.isfinite(l["loss"]) and l["examples_per_second"] > 0
             for l in lines if l["split"] == "train")
  assert list((model_dir / "tensorboard").glob("events.out.tfevents.*"))
  assert sorted(os.listdir(model_dir / "train_state")) == ["10", "5"]


def test_refuses_a_different_run_unless_overwrite(finished_run, tmp_path):
  model_dir, _ = finished_run
  other = small_run(model_dir, task="synthetic_topic_4way")
  with pytest.raises(run_dir.RunDirError, match=r"different run.*task.*synthetic_sentiment_a"):
    train(other)
  assert run_dir.read_summary(str(model_dir)).task == TASK  # untouched
  copy = tmp_path / "copy"
  import shutil
  shutil.copytree(model_dir, copy)
  summary = train(dataclasses.replace(other, model_dir=str(copy), overwrite=True, train_steps=5))
  assert summary.task == "synthetic_topic_4way" and run_dir.prompt_steps(str(copy)) == [0, 5]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  cfg = small_run(tmp_path, eval_period=0)
  train(cfg)
  good = np.load(run_dir.prompt_path(str(tmp_path), 10))
  make_step = loop.make_train_step

  def nan_from_step_12(*args, **kwargs):  # the loss of steps 12.. becomes NaN.
    step = make_step(*args, **kwargs)

    def poisoned(state, frozen, batch):
      new_state, metrics = step(state, frozen, batch)
      loss = jnp.where(state.step >= 11, jnp.nan, metrics["loss"])
      return new_state, dict(metrics, loss=loss)
    return poisoned

  monkeypatch.setattr(loop, "make_train_step", nan_from_step_12)
  monkeypatch.setattr(loop, "_STEP_CACHE", {})  # the first run's compiled step is not reused.
  with pytest.raises(NonFiniteLossError, match="Non-finite loss at step 12"):
    train(dataclasses.replace(cfg, train_steps=20))
  assert run_dir.prompt_steps(str(tmp_path)) == [0, 5, 10]
  np.testing.assert_array_equal(np.load(run_dir.prompt_path(str(tmp_path), 10)), good)
  assert run_dir.read_summary(str(tmp_path)).steps_done == 10


def test_ten_steps_and_two_evaluations_compile_the_step_once(tmp_path, caplog):
  # Static shapes and a state placed as the step returns it: no recompilation across steps
  # (before the state was placed on the mesh up front, the second step compiled again).
  # The scorers compile once per length bucket: tests/test_evaluation.py counts those.
  jax.clear_caches()  # what earlier tests compiled must not hide a compilation here
  with jax.log_compiles(True), caplog.at_level(logging.WARNING,
                                               logger="jax._src.interpreters.pxla"):
    summary = train(small_run(tmp_path, train_steps=10, log_period=1))
  assert summary.steps_done == 10 and set(summary.checkpoints) == {"5", "10"}
  compiled = collections.Counter(re.findall(r"Compiling (jit\([^)]*\))", caplog.text))
  assert compiled["jit(step)"] == 1, compiled


TRAIN_ARGS = ["--gin_file=models/tiny_byte.gin", "--gin_file=runs/prompt_train.gin",
              f"--gin.MIXTURE_OR_TASK_NAME={TASK}", "--gin.TRAIN_STEPS=40",
              "--gin.PROMPT_LENGTH=4", "--gin.BATCH_SIZE=8", "--gin.CHECKPOINT_PERIOD=4",
              "--gin.EVAL_PERIOD=0", "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 12}"]


def spot_jax(*args, **kwargs) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.Popen([sys.executable, "-m", "spot_jax.cli.main", *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _checkpoint_files(model_dir, step: int) -> dict[str, np.ndarray]:
  """{file: array} of every trainable leaf saved at `step` (a full fine-tuning run's T5X
  checkpoint: {param path: array})."""
  path = run_dir.checkpoint_dir(str(model_dir), step)
  if full_checkpoints.is_t5x_checkpoint(path):
    return traverse_util.flatten_dict(t5x.read_checkpoint(path), sep="/")
  return {name: np.load(os.path.join(path, name)) for name in sorted(os.listdir(path))}


@pytest.mark.slow  # two CLI processes per method; the default suite resumes in-process too.
# METHOD='model' keeps whole T5X checkpoints (latest and best only): its kill-and-resume is
# tests/test_model_tuning.py::test_interrupted_model_run_resumes_bit_equal.
@pytest.mark.parametrize("method", ["prompt", "prompt_encoder", "prefix", "lora", "bias", "ia3"])
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, method):
  """SIGKILL after step 12's checkpoint, `train` again: every leaf equals an uninterrupted run."""
  args = [*TRAIN_ARGS, f"--gin_file=methods/{method}.gin"]
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  uninterrupted = spot_jax("train", *args, f"--gin.MODEL_DIR={straight}")
  victim = spot_jax("train", *args, f"--gin.MODEL_DIR={killed}")
  deadline = time.time() + 240
  while not os.path.exists(run_dir.checkpoint_dir(str(killed), 16)):
    assert victim.poll() is None, victim.stdout.read()
    assert time.time() < deadline, "run never reached step 16"
    time.sleep(0.05)
  victim.send_signal(signal.SIGKILL)  # possibly in the middle of writing step 16.
  victim.wait()
  assert not os.path.exists(run_dir.checkpoint_dir(str(killed), 40))
  resumed = spot_jax("train", *args, f"--gin.MODEL_DIR={killed}")
  for process in (uninterrupted, resumed):
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output
  for step in (20, 40):
    expected, got = _checkpoint_files(straight, step), _checkpoint_files(killed, step)
    assert set(got) == set(expected) and expected
    for name in expected:
      np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{name} at {step}")
  summary = run_dir.read_summary(str(killed))
  assert summary.finished and summary.method == method


def test_gin_errors_name_the_closest_valid_names(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown gin macro 'TRAIN_STEP'.*TRAIN_STEPS"):
    gin_utils.parse_gin(["models/tiny_byte.gin", "runs/prompt_train.gin"], ["TRAIN_STEP = 5"])
  with pytest.raises(FileNotFoundError, match="prompt_train.gin"):
    gin_utils.parse_gin(["runs/prompt_trian.gin"], [])
  files, bindings, rest = gin_utils.split_gin_args(
      ["--gin_file=a.gin", "--gin.MODEL_DIR=/tmp/x", "--gin.TRAIN_STEPS", "7", "--overwrite"])
  assert files == ["a.gin"] and rest == ["--overwrite"]
  assert bindings == ["MODEL_DIR = '/tmp/x'", "TRAIN_STEPS = 7"]
  process = spot_jax("train", *TRAIN_ARGS, f"--gin.MODEL_DIR={tmp_path}",
                     "--gin.MIXTURE_OR_TASK_NAME=synthetic_sentimnt_a")
  output = process.communicate(timeout=120)[0]
  assert process.returncode == 2
  assert "Unknown task or mixture 'synthetic_sentimnt_a'" in output
  assert "synthetic_sentiment_a" in output and "Traceback" not in output


def test_eval_command_reports_task_metrics(finished_run, tmp_path):
  model_dir, _ = finished_run
  out = tmp_path / "metrics.json"
  process = spot_jax("eval", "--gin_file=models/tiny_byte.gin", "--gin_file=runs/prompt_eval.gin",
                     f"--gin.MIXTURE_OR_TASK_NAME={TASK}", "--gin.PROMPT_LENGTH=4",
                     f"--gin.PROMPT_FILE={run_dir.prompt_path(str(model_dir), 10)}",
                     "--gin.MAX_EVAL_EXAMPLES=16", f"--gin.OUTPUT_FILE={out}")
  output = process.communicate(timeout=180)[0]
  assert process.returncode == 0, output
  assert ("EVAL_MODE=beam_search: T5X's beam search (1 beam, alpha 0.6), then the task's "
          "postprocessor") in output
  expected = run_dir.read_summary(str(model_dir)).checkpoints["10"][TASK]
  reported = json.loads(out.read_text())[TASK]
  # The command reproduces the trainer's own evaluation of that checkpoint, metric by metric.
  assert set(reported) == set(expected) and "accuracy" in reported
  assert reported == pytest.approx(expected)


def test_prompt_tuning_clearly_beats_the_untrained_prompt(pretrained_checkpoint, tmp_path):
  """sentiment_b is held out of pretraining; inputs carry no task name, so only a learned
  prompt can make the frozen model solve it."""
  lengths = {"inputs": 48, "targets": 12}
  task = "synthetic_sentiment_b"
  summary = train(TrainConfig(
      model_dir=str(tmp_path), task=task, model="tiny_byte",
      initial_checkpoint=str(pretrained_checkpoint), feature_lengths=lengths, train_steps=200,
      prompt_length=20, checkpoint_period=100, eval_period=100, eval_metric="accuracy",
      log_period=100))
  untrained = evaluate_prompt(EvalConfig(
      task=task, prompt_file=run_dir.prompt_path(str(tmp_path), 0), model="tiny_byte",
      initial_checkpoint=str(pretrained_checkpoint), prompt_length=20))[task]["accuracy"]
  print(f"untrained {untrained:.1f}%, trained {summary.best_score:.1f}%")
  assert summary.best_score >= untrained + 10, (untrained, summary.checkpoints)


def test_target_truncation_of_a_generation_task_is_warned(tmp_path, caplog):
  """As inputs warn: a targets length that cuts a generation task's targets says so; a
  classification task's labels are checked (refused) elsewhere, so they do not warn here."""
  def warnings(task, targets):
    caplog.clear()
    cfg = TrainConfig(model_dir=str(tmp_path), task=task, model="tiny_byte",
                      feature_lengths={"inputs": 64, "targets": targets})
    with caplog.at_level(logging.WARNING):
      preflight._warn_truncation(cfg)
    return [r.getMessage() for r in caplog.records if "['targets']" in r.getMessage()]

  cut = warnings("synthetic_copy", 2)
  assert len(cut) == 1 and "TASK_FEATURE_LENGTHS['targets']=2 cuts" in cut[0]
  assert "synthetic_copy" in cut[0]
  assert warnings("synthetic_copy", 256) == []
  assert warnings("synthetic_sentiment_a", 2) == []
