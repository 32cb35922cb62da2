"""Packed multi-run training: runs stacked on a leading axis never mix and follow their lone twins."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.runs import commands, packing
from spot_jax.runs import execute as executor
from spot_jax.runs.spec import read_packed_job
from spot_jax.runs.spec import RunSpec
from spot_jax.models import T5, get_config
from spot_jax.models.prompts import from_sampled_vocab, with_prompt, without_prompt
from tasks.lookup import register_all_tasks
from spot_jax.train import loop, packed, run_dir
from spot_jax.train.loop import TrainConfig
from spot_jax.train.optimizer import prompt_adafactor
from spot_jax.train.step import init_train_state, make_train_step

register_all_tasks()
pytestmark = pytest.mark.usefixtures("compilation_cache")  # one compilation per step shape.
PROMPT_LENGTH, INPUTS, TARGETS, BATCH = 4, 12, 4, 4


def _setup(dropout_rate: float = 0.1):
  config = get_config("tiny", dropout_rate=dropout_rate)
  model = T5(config, PROMPT_LENGTH)
  tokens = jnp.ones((1, INPUTS), jnp.int32)
  frozen = without_prompt(jax.jit(model.init)(jax.random.PRNGKey(0), tokens,
                                              tokens[:, :TARGETS])["params"])
  optimizer = prompt_adafactor()
  step = make_train_step(model, optimizer)
  return model, frozen, optimizer, step


def _state(frozen, optimizer, seed):
  prompt = from_sampled_vocab(jax.random.PRNGKey(100 + seed),
                              frozen["token_embedder"]["embedding"], PROMPT_LENGTH)
  return init_train_state(with_prompt({}, prompt), optimizer, seed)


def _batch(rng: np.random.Generator, vocab: int) -> dict[str, np.ndarray]:
  targets = rng.integers(2, vocab, (BATCH, TARGETS), dtype=np.int32)
  return {"encoder_input_tokens": rng.integers(2, vocab, (BATCH, INPUTS), dtype=np.int32),
          "decoder_input_tokens": np.pad(targets, ((0, 0), (1, 0)))[:, :-1],
          "decoder_target_tokens": targets}


def test_a_run_is_unchanged_by_other_runs_examples():
  model, frozen, optimizer, step = _setup()
  packed_step = jax.jit(packed.make_packed_train_step(step))
  state = packed.stack_trees([_state(frozen, optimizer, s) for s in range(2)])
  rng = np.random.default_rng(0)
  mine, theirs = _batch(rng, model.config.vocab_size), _batch(rng, model.config.vocab_size)
  # Run 1's examples: once real, once all padding (zero loss weight), once other tokens.
  silent = {k: np.zeros_like(v) for k, v in theirs.items()}
  other = _batch(rng, model.config.vocab_size)
  results = [packed.unstack_tree(packed_step(state, frozen, packed.stack_batches([mine, b]))[0])
             for b in (theirs, silent, other)]
  for result in results[1:]:
    jax.tree.map(np.testing.assert_array_equal, result[0], results[0][0])
  # ... while run 1 itself did see its own examples.
  assert not np.array_equal(jax.tree.leaves(results[0][1])[1], jax.tree.leaves(results[2][1])[1])


def test_packed_runs_equal_runs_trained_alone():
  model, frozen, optimizer, step = _setup(dropout_rate=0.1)
  runs, steps = 3, 50
  rng = np.random.default_rng(1)
  batches = [[_batch(rng, model.config.vocab_size) for _ in range(runs)] for _ in range(steps)]
  alone_step = jax.jit(step)
  alone = [_state(frozen, optimizer, seed) for seed in range(runs)]
  for per_run in batches:
    alone = [alone_step(s, frozen, b)[0] for s, b in zip(alone, per_run)]
  packed_step = jax.jit(packed.make_packed_train_step(step))
  state = packed.stack_trees([_state(frozen, optimizer, seed) for seed in range(runs)])
  for per_run in batches:
    state, metrics = packed_step(state, frozen, packed.stack_batches(per_run))
  assert metrics["loss"].shape == (runs,)
  for lone, twin in zip(alone, packed.unstack_tree(state)):
    assert int(twin.step) == int(lone.step) == steps
    np.testing.assert_array_equal(np.asarray(twin.rng), np.asarray(lone.rng))
    # Measured: max |difference| of the prompts after 50 steps with dropout 0.1 (values ~1).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=PACKED_ATOL),
                 jax.device_get(twin), jax.device_get(lone))


PACKED_ATOL = 1e-4


# ----------------------------------------------------------------------------- packed jobs

TASKS = ("synthetic_sentiment_a", "synthetic_paraphrase_a")


def packed_run(model_dir, task: str, **overrides) -> TrainConfig:
  """A seconds-long run (random frozen tiny_byte model, dropout 0.1) as tests/test_train.py's."""
  fields = dict(model_dir=str(model_dir), task=task, model="tiny_byte",
                feature_lengths={"inputs": 48, "targets": 12}, train_steps=6, batch_size=8,
                prompt_length=4, checkpoint_period=3, eval_period=3, max_eval_examples=8,
                log_period=3, key_step=3)
  fields.update(overrides)
  return TrainConfig(**fields)


def layout(model_dir) -> list[str]:
  """The run directory's files, relative; orbax's train_state/{step} directories as such (their
  file names are content hashes), TensorBoard event names and the lock left out."""
  paths = set()
  for root, _, files in os.walk(model_dir):
    for name in files:
      rel = os.path.relpath(os.path.join(root, name), model_dir)
      if rel.startswith(run_dir.TRAIN_STATE_DIR + os.sep):
        paths.add(os.path.join(*rel.split(os.sep)[:2]))
      elif name != run_dir.LOCK_FILE and not name.startswith("events.out.tfevents"):
        paths.add(rel)
  return sorted(paths)


@pytest.mark.slow  # minutes on 2 CPU cores: the default suite stays under 15 min
def test_packed_job_keeps_each_runs_contract_and_equals_runs_trained_alone(tmp_path):
  cfgs = [packed_run(tmp_path / "packed" / task, task) for task in TASKS]
  summaries = loop.train_packed(cfgs, [f"# {task}\n" for task in TASKS])
  for cfg, summary in zip(cfgs, summaries):
    alone_dir = tmp_path / "alone" / cfg.task
    alone = loop.train(dataclasses.replace(cfg, model_dir=str(alone_dir)), f"# {cfg.task}\n")
    assert summary.finished and summary.steps_done == 6
    assert layout(cfg.model_dir) == layout(alone_dir)
    assert run_dir.read_summary(cfg.model_dir) == summary
    assert summary.task == cfg.task and summary.best_step == alone.best_step
    assert set(summary.checkpoints) == set(alone.checkpoints) == {"3", "6"}
    for step in (0, 3, 6):
      np.testing.assert_allclose(np.load(run_dir.prompt_path(cfg.model_dir, step)),
                                 np.load(run_dir.prompt_path(str(alone_dir), step)),
                                 rtol=0, atol=PACKED_ATOL)
    for step, results in summary.checkpoints.items():
      for task, metrics in results.items():
        for name, value in metrics.items():
          assert value == pytest.approx(alone.checkpoints[step][task][name], abs=1e-3)


def test_packed_job_refuses_runs_that_cannot_share_a_step(tmp_path):
  a, b = (packed_run(tmp_path / task, task) for task in TASKS)
  with pytest.raises(ValueError, match="batch_size is 8 vs 4"):
    loop.train_packed([a, dataclasses.replace(b, batch_size=4)])
  with pytest.raises(ValueError, match="seed"):  # a random frozen model differs per seed.
    loop.train_packed([a, dataclasses.replace(b, seed=1)])
  with pytest.raises(ValueError, match="share a MODEL_DIR"):
    loop.train_packed([a, dataclasses.replace(b, model_dir=a.model_dir)])
  assert not os.path.exists(a.model_dir) and not os.path.exists(b.model_dir)


def test_packed_job_killed_between_two_runs_checkpoints_resumes_bit_equal(tmp_path, monkeypatch):
  straight = [packed_run(tmp_path / "straight" / task, task, eval_period=0, train_steps=9)
              for task in TASKS]
  loop.train_packed(straight)
  killed = [dataclasses.replace(cfg, model_dir=str(tmp_path / "killed" / cfg.task))
            for cfg in straight]
  checkpoint = loop._checkpoint

  def dies_at_second_runs_step_6(cfg, method, state, step, *args, **kwargs):
    if step == 6 and cfg.task == TASKS[1]:  # the first run has step 6, the second not yet.
      raise SystemExit("killed")
    return checkpoint(cfg, method, state, step, *args, **kwargs)

  monkeypatch.setattr(loop, "_checkpoint", dies_at_second_runs_step_6)
  with pytest.raises(SystemExit):
    loop.train_packed(killed)
  monkeypatch.setattr(loop, "_checkpoint", checkpoint)
  assert run_dir.prompt_steps(killed[0].model_dir) == [0, 3, 6]
  assert run_dir.prompt_steps(killed[1].model_dir) == [0, 3]
  loop.train_packed(killed)
  for a, b in zip(straight, killed):
    for step in (3, 6, 9):
      np.testing.assert_array_equal(np.load(run_dir.prompt_path(b.model_dir, step)),
                                    np.load(run_dir.prompt_path(a.model_dir, step)))
    assert run_dir.read_summary(b.model_dir).finished


def spec(name: str, tmp_path, task: str = TASKS[0], depends_on=(), files=(), **macros
         ) -> RunSpec:
  bindings = {"MODEL_DIR": repr(str(tmp_path / name)), "MIXTURE_OR_TASK_NAME": repr(task),
              "TRAIN_STEPS": "6", "BATCH_SIZE": "8", "PROMPT_LENGTH": "4", **macros}
  return RunSpec(name, str(tmp_path / name),
                 ("models/tiny_byte.gin", "runs/prompt_train.gin", *files), bindings,
                 tuple(str(tmp_path / d) for d in depends_on))


def test_pack_jobs_groups_compatible_runs_never_with_their_dependency(tmp_path):
  a, b = spec("a", tmp_path), spec("b", tmp_path, TASKS[1], PROMPT_INIT="'class_labels'")
  longer, c = spec("longer", tmp_path, TRAIN_STEPS="12"), spec("c", tmp_path)
  after_a = spec("after_a", tmp_path, depends_on=("a",))
  jobs = packing.pack_jobs([a, b, longer, c, after_a], pack=3)
  assert [[s.name for s in job] for job in jobs] == [["a", "b", "c"], ["longer"], ["after_a"]]
  assert packing.pack_jobs([a, b, c], pack=2) == [(a, b), (c,)]
  assert packing.pack_jobs([a, b], pack=1) == [(a,), (b,)]
  # The method's gin-bound settings are part of what packed runs share.
  lora = [spec(f"lora_{i}", tmp_path, files=("methods/lora.gin",), **{"Lora.rank": rank})
          for i, rank in enumerate(("4", "4", "8"))]
  assert [len(job) for job in packing.pack_jobs(lora, pack=3)] == [2, 1]
  # A packed job's command carries its job file, which lists its runs' specs.
  command = commands.launch_command(jobs[0], "local", job_dir=str(tmp_path / "jobs"))
  assert command[-2] == "--packed_job"
  assert read_packed_job(command[-1]) == list(jobs[0])
  execution = executor.execute([a, b, c], pack=2, dry_run=True, log=lambda line: None,
                               job_dir=str(tmp_path / "jobs"))
  assert execution.commands["a"] == execution.commands["b"] != execution.commands["c"]


def test_default_pack_size_follows_model_size_and_memory():
  tiny, small = get_config("tiny"), get_config("small")
  gib = 2**30
  assert packed.default_pack_size(tiny, 32, 128, 16, 20, memory_bytes=64 * gib,
                                  frozen_bytes=0) >= 8
  assert packed.default_pack_size(small, 32, 512, 32, 100, memory_bytes=64 * gib,
                                  frozen_bytes=0) == 1
  few = packed.run_step_bytes(tiny, 32, 128, 16, 20) * 3  # room for 1.5 runs' activations.
  assert packed.default_pack_size(tiny, 32, 128, 16, 20, memory_bytes=few, frozen_bytes=0) == 1
