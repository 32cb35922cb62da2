"""Full fine-tuning (`METHOD = 'model'`): T5X's Adafactor, learning, T5X checkpoints, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

from conftest import PRETRAINED_STEP
from test_methods import Interrupted, interrupt_after_first_checkpoint
from spot_jax import methods
from spot_jax.checkpoints import t5x
from spot_jax.checkpoints.load import load_model
from spot_jax.evaluation.evaluator import PromptEvaluator
from spot_jax.models import get_config
from tasks.lookup import register_all_tasks
from spot_jax.train import full_checkpoints, loop, run_dir
from spot_jax.train.evaluate import EvalConfig, evaluate_prompt
from spot_jax.train.export import export_merged
from spot_jax.train.loop import TrainConfig, build_frozen_model, train
from spot_jax.train.optimizer import finetune_adafactor
from spot_jax.train.step import init_train_state

register_all_tasks()


def small_run(model_dir, **overrides) -> TrainConfig:
  fields = dict(model_dir=str(model_dir), task="synthetic_sentiment_a", model="tiny_byte",
                feature_lengths={"inputs": 32, "targets": 12}, train_steps=6, batch_size=4,
                checkpoint_period=3, eval_period=0, log_period=3, key_step=3, method="model")
  fields.update(overrides)
  return TrainConfig(**fields)


def t5x_adafactor_step(param, grad, v, step, lr=1e-3, decay_exponent=0.8, clip=1.0):
  """T5X's `Adafactor.apply_param_gradient` (t5x/adafactor.py) for one parameter, in numpy,
  with its defaults (heuristic factoring, parameter scale, clipping, no momentum/decay)."""
  decay = 1.0 - (step + 1.0) ** -decay_exponent
  scale = lr * max(np.sqrt(np.mean(param * param)), 1e-3)
  grad_sqr = grad * grad + 1e-30
  dims = np.argsort(param.shape)
  if param.ndim >= 2 and param.shape[dims[-2]] >= 128:
    d1, d0 = int(dims[-2]), int(dims[-1])
    v_row = decay * v[0] + (1 - decay) * grad_sqr.mean(axis=d0)
    v_col = decay * v[1] + (1 - decay) * grad_sqr.mean(axis=d1)
    row = (v_row / v_row.mean()) ** -0.5
    y = grad * np.expand_dims(row, d0) * np.expand_dims(v_col ** -0.5, d1)
    v = (v_row, v_col)
  else:
    v = (decay * v[0] + (1 - decay) * grad_sqr,)
    y = grad * v[0] ** -0.5
  y = y / max(1.0, np.sqrt(np.mean(y * y)) / clip)
  return param - scale * y, v


def test_finetune_adafactor_is_t5x_adafactor():
  """Three steps from step offset 1000: factored [256, 160], unfactored [4, 200] and [8]."""
  rng = np.random.default_rng(0)
  params = {"kernel": rng.standard_normal((256, 160)).astype(np.float32) * 0.05,
            "small": rng.standard_normal((4, 200)).astype(np.float32),
            "scale": np.full((8,), 1e-4, np.float32)}  # RMS below epsilon2.
  optimizer = finetune_adafactor(step_offset=1000)
  state = optimizer.init(params)
  ours = dict(params)
  reference = {k: np.asarray(p, np.float64) for k, p in params.items()}
  moments = {"kernel": (np.zeros(160), np.zeros(256)), "small": (np.zeros((4, 200)),),
             "scale": (np.zeros(8),)}
  for step in range(3):
    grads = {k: rng.standard_normal(p.shape).astype(np.float32) for k, p in params.items()}
    updates, state = optimizer.update(grads, state, ours)
    ours = jax.tree.map(lambda p, u: p + u, ours, updates)
    for k in params:
      reference[k], moments[k] = t5x_adafactor_step(reference[k], grads[k].astype(np.float64),
                                                    moments[k], 1000 + step)
  for k in params:
    moved = np.abs(reference[k] - params[k]).max()
    np.testing.assert_allclose(ours[k], reference[k], rtol=0, atol=1e-4 * moved, err_msg=k)


@pytest.mark.slow  # three runs, a CLI process and two evaluations.
def test_model_run_checkpoints_are_t5x_checkpoints_every_reader_loads(pretrained_checkpoint,
                                                                       tmp_path):
  """T5X's fine-tuning defaults; the checkpoint is read by `model info`, `eval`, `export`, and
  is the frozen model of a prompt-tuning run (its step the next run's offset)."""
  summary = train(small_run(tmp_path / "full", train_steps=3,
                            initial_checkpoint=str(pretrained_checkpoint), eval_period=3,
                            max_eval_examples=8, eval_mode="rank_classification"))
  assert summary.method == "model" and summary.finished
  assert summary.optimizer == {"name": "adafactor_finetune", "learning_rate": 1e-3,
                               "weight_decay": 0.0, "decay_rate": 0.8, "clipping_threshold": 1.0,
                               "step_offset": PRETRAINED_STEP}
  assert run_dir.checkpoint_steps(str(tmp_path / "full")) == [3]  # step 0 is the checkpoint.
  checkpoint = run_dir.checkpoint_dir(str(tmp_path / "full"), 3)
  assert t5x.read_step(checkpoint) == PRETRAINED_STEP + 3
  loaded = load_model(checkpoint, config=get_config("tiny_byte"))
  fresh = init_train_state(loaded.params, finetune_adafactor(), 0).opt_state
  assert not full_checkpoints.restore_moments(fresh, str(pretrained_checkpoint))[1]  # none kept.
  pretrained = load_model(str(pretrained_checkpoint), config=get_config("tiny_byte"))
  assert loaded.fingerprint != pretrained.fingerprint

  info = subprocess.run([sys.executable, "-m", "spot_jax.cli.main", "model", "info",
                         f"--checkpoint={checkpoint}", "--config=tiny_byte"],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert info.returncode == 0, info.stderr
  described = json.loads(info.stdout[info.stdout.index("{"):])
  assert (described["step"], described["fingerprint"]) == (PRETRAINED_STEP + 3,
                                                           loaded.fingerprint)

  results = evaluate_prompt(EvalConfig(task="synthetic_sentiment_a", prompt_file=None,
                                       model="tiny_byte", initial_checkpoint=checkpoint,
                                       batch_size=4, num_examples=8,
                                       eval_mode="rank_classification"))
  assert results == summary.checkpoints["3"]

  exported = load_model(export_merged(str(tmp_path / "full"), str(tmp_path / "export")))
  assert exported.fingerprint == loaded.fingerprint and exported.step == 3

  prompt = train(TrainConfig(model_dir=str(tmp_path / "prompt"), task="synthetic_sentiment_a",
                             model="tiny_byte", initial_checkpoint=checkpoint,
                             feature_lengths={"inputs": 32, "targets": 12}, train_steps=2,
                             batch_size=4, prompt_length=4, checkpoint_period=2, eval_period=0,
                             key_step=2))
  assert prompt.finished and prompt.model["fingerprint"] == loaded.fingerprint
  assert prompt.step_offset == PRETRAINED_STEP + 3 and prompt.optimizer["name"] == "adafactor"


def test_interrupted_model_run_resumes_bit_equal(tmp_path, monkeypatch):
  """Stopped after step 3's checkpoint, trained again: the T5X checkpoint at 6 equals an
  uninterrupted run's (only the latest and best are kept); a model run starts from another's
  checkpoint (init_from)."""
  train(small_run(tmp_path / "straight"))
  interrupt_after_first_checkpoint(monkeypatch)  # the helper of every method's resume test.
  with pytest.raises(Interrupted):
    train(small_run(tmp_path / "killed"))
  monkeypatch.undo()
  assert train(small_run(tmp_path / "killed")).steps_done == 6
  for model_dir in ("straight", "killed"):  # the latest and the best (no evaluation: step 6).
    assert run_dir.checkpoint_steps(str(tmp_path / model_dir)) == [6]
  for step in (6,):
    want = traverse_util.flatten_dict(t5x.read_checkpoint(
        run_dir.checkpoint_dir(str(tmp_path / "straight"), step)), sep="/")
    got = traverse_util.flatten_dict(t5x.read_checkpoint(
        run_dir.checkpoint_dir(str(tmp_path / "killed"), step)), sep="/")
    assert set(got) == set(want)
    for path in want:
      np.testing.assert_array_equal(got[path], want[path], err_msg=f"{path} at {step}")

  source = run_dir.checkpoint_dir(str(tmp_path / "straight"), 6)
  assert full_checkpoints.stored_step(source) == (6, "init_from checkpoint")  # T5X's offset.
  # The checkpoint holds Adafactor's second moments as T5X's state/param_states, and a run
  # starting from it continues them (T5X restores them; SPoT Appendix C).
  stored = t5x.read_checkpoint(source, subtree="state/param_states")
  kernel = stored["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  assert set(kernel) >= {"v_row", "v_col", "v"} and np.abs(kernel["v"]).max() > 0
  fresh = init_train_state(full_checkpoints.load(source), finetune_adafactor(), 0).opt_state
  restored, found = full_checkpoints.restore_moments(fresh, source)
  assert found
  moments = full_checkpoints._factored_state(restored)
  np.testing.assert_array_equal(
      moments.v["encoder"]["layers_0"]["attention"]["query"]["kernel"], kernel["v"])
  cfg = small_run(tmp_path / "target", init_from=source)
  method = loop.method_of(cfg)
  model, frozen, _, _ = build_frozen_model(cfg, method)
  start = methods.flatten(loop.initial_trainables(cfg, method, model, frozen))
  for path, value in methods.flatten(full_checkpoints.load(source)).items():
    np.testing.assert_array_equal(start[path], value, err_msg=path)
  with pytest.raises(run_dir.RunDirError, match="not a T5X checkpoint"):
    loop.initial_trainables(small_run(tmp_path / "t2", init_from=str(tmp_path)), method, model,
                            frozen)


@pytest.mark.slow
def test_full_tuning_learns_a_held_out_task_and_moves_every_weight(pretrained_checkpoint,
                                                                   tmp_path):
  """sentiment_b is held out of the tiny model's pretraining; tuning every weight learns it."""
  summary = train(TrainConfig(
      model_dir=str(tmp_path), task="synthetic_sentiment_b", model="tiny_byte",
      initial_checkpoint=str(pretrained_checkpoint),
      feature_lengths={"inputs": 48, "targets": 12}, train_steps=150, method="model",
      checkpoint_period=75, eval_period=75, eval_metric="accuracy", log_period=75,
      key_step=75, learning_rate=1e-2, eval_mode="rank_classification"))
  cfg = small_run(tmp_path, task="synthetic_sentiment_b",
                  initial_checkpoint=str(pretrained_checkpoint), dropout_rate=0.0)
  model, frozen, _, _ = build_frozen_model(cfg, methods.create("model"))
  evaluator = PromptEvaluator(model, frozen, "synthetic_sentiment_b", 32,
                              mode="rank_classification")
  untrained = evaluator.evaluate({})["synthetic_sentiment_b"]["accuracy"]
  print(f"model: untrained {untrained:.1f}%, trained {summary.best_score:.1f}%")
  assert summary.best_score >= untrained + 10, (untrained, summary.checkpoints)
  tuned = methods.flatten(full_checkpoints.load(run_dir.checkpoint_dir(str(tmp_path), 150)))
  before = methods.flatten(frozen)
  assert set(tuned) == set(before)
  unmoved = [path for path in before if np.array_equal(tuned[path], np.asarray(before[path]))]
  assert not unmoved, unmoved


@pytest.mark.slow  # two worker processes (1 and 8 simulated devices).
def test_eight_device_model_sharded_full_tuning_matches_one_device(tmp_path):
  """4 x 2 mesh of simulated CPU devices == 1 device for full fine-tuning: the weights and their
  Adafactor moments split over 'model' as T5X splits the params (checked in the worker)."""
  from multihost_worker import assert_same_training, start_worker, wait_workers
  one, eight = tmp_path / "one.npz", tmp_path / "eight.npz"
  logs = [tmp_path / "one.log", tmp_path / "eight.log"]
  wait_workers([start_worker(one, 1, data=1, model=1, log=logs[0], methods="model"),
                start_worker(eight, 8, data=4, model=2, log=logs[1], methods="model")], logs,
               timeout_s=600)
  reference, result = dict(np.load(one)), dict(np.load(eight))
  assert int(result["device_count"]) == 8 and result["mesh_shape"].tolist() == [4, 2]
  assert_same_training(result, reference)
  assert "model:losses" in result
  assert "model:encoder.layers_0.attention.query.kernel" in result
