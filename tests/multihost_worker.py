"""Trains a small prompt for a few steps on a ('data', 'model') mesh and saves loss and prompt.

Run as a subprocess (`start_worker`, `wait_workers`) by tests/test_partitioning.py and
tests/test_multihost.py, so that the device count (XLA_FLAGS) and `jax.distributed` are set
before JAX starts. Multi-process runs set SPOT_JAX_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID;
process pid of n feeds rows [pid * b / n, (pid + 1) * b / n) of the same global batch.

  python tests/multihost_worker.py --out result.npz [--data 4 --model 2 --steps 3]

Writes `--out` (with `.p{process_id}` before the suffix when multi-process): losses [steps],
prompt [L, e], step, process_count, device_count, and `checks` (names of the sharding checks
that passed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]

from spot_jax.train import partitioning  # imports jax, starts no backend (the installed spot-jax)

GLOBAL_BATCH = 8
PROMPT_LENGTH = 4
INPUT_LENGTH = 12
TARGET_LENGTH = 6
SEED = 0
NUM_STEPS = 3
SUBPROCESS_TIMEOUT_S = 240


def small_config():
  from spot_jax.models import get_config
  return get_config("tiny", vocab_size=128, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                    num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.1)


def init_params(model, seed: int) -> dict:
  """Deterministic numpy params of the model's shapes (no XLA compile, unlike model.init)."""
  import jax
  tokens = np.ones((1, INPUT_LENGTH), np.int32)
  shapes = jax.eval_shape(model.init, jax.random.key(seed), tokens, tokens[:, :TARGET_LENGTH])
  rng = np.random.RandomState(seed)

  def init(path, leaf):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    if name.endswith("scale"):
      return (1.0 + 0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)
    fan_in = 1 if name.endswith("embedding") else leaf.shape[0]
    return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(init, shapes["params"])


def global_batch(step: int, vocab_size: int) -> dict[str, np.ndarray]:
  """A deterministic global batch [GLOBAL_BATCH, ...] for `step`, with some padding."""
  rng = np.random.RandomState(1000 + step)
  inputs = rng.randint(1, vocab_size, (GLOBAL_BATCH, INPUT_LENGTH)).astype(np.int32)
  targets = rng.randint(2, vocab_size, (GLOBAL_BATCH, TARGET_LENGTH)).astype(np.int32)
  input_lengths = rng.randint(INPUT_LENGTH // 2, INPUT_LENGTH + 1, GLOBAL_BATCH)
  target_lengths = rng.randint(2, TARGET_LENGTH + 1, GLOBAL_BATCH)
  inputs[np.arange(INPUT_LENGTH)[None] >= input_lengths[:, None]] = 0
  targets[np.arange(TARGET_LENGTH)[None] >= target_lengths[:, None]] = 0
  decoder_inputs = np.concatenate([np.zeros((GLOBAL_BATCH, 1), np.int32), targets[:, :-1]], 1)
  return {"encoder_input_tokens": inputs, "decoder_input_tokens": decoder_inputs,
          "decoder_target_tokens": targets}


def run_checks(mesh, frozen, sharded) -> list[str]:
  """Sharding properties that must hold on this mesh; returns the names of those checked."""
  import jax
  checks = []
  model_size = mesh.shape["model"]
  query = sharded["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  full = frozen["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  shard_shape = query.addressable_shards[0].data.shape
  assert shard_shape == (full.shape[0], full.shape[1] // model_size), shard_shape
  checks.append("query_sharded")
  embedding = sharded["token_embedder"]["embedding"]
  assert embedding.addressable_shards[0].data.shape[0] == full_vocab(frozen) // model_size
  checks.append("embedding_sharded")
  for shard in query.addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data), np.asarray(full)[shard.index])
  checks.append("shard_contents")
  try:
    partitioning.host_batch_size(GLOBAL_BATCH * jax.process_count() + 1)
  except ValueError:
    checks.append("host_batch_size_error")
  if jax.process_count() == 1 and jax.device_count() == 8:
    assert dict(partitioning.make_mesh(-1, 2).shape) == {"data": 4, "model": 2}
    assert dict(partitioning.make_mesh(2, -1).shape) == {"data": 2, "model": 4}
    try:
      partitioning.make_mesh(3, 2)
    except ValueError:
      checks.append("mesh_errors")
  return checks


def full_vocab(frozen) -> int:
  return frozen["token_embedder"]["embedding"].shape[0]


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  parser.add_argument("--data", type=int, default=-1)
  parser.add_argument("--model", type=int, default=1)
  parser.add_argument("--steps", type=int, default=NUM_STEPS)
  parser.add_argument("--methods", default="",
                      help="comma-separated spot_jax.methods to train too (after the prompt)")
  parser.add_argument("--trainable_sharding", default="replicated",
                      help="how the methods' trainables are placed (partitioning)")
  args = parser.parse_args(argv)

  distributed = partitioning.maybe_initialize_distributed()
  assert partitioning.maybe_initialize_distributed() == distributed  # idempotent.

  import jax

  from spot_jax.models import T5
  from spot_jax.models.prompts import from_sampled_vocab, get_prompt, with_prompt, without_prompt
  from spot_jax.train.optimizer import prompt_adafactor

  config = small_config()
  model = T5(config, prompt_length=PROMPT_LENGTH)
  frozen = without_prompt(init_params(model, SEED))
  prompt = from_sampled_vocab(jax.random.key(SEED + 1), frozen["token_embedder"]["embedding"],
                              PROMPT_LENGTH)
  optimizer = prompt_adafactor()

  mesh = partitioning.make_mesh(args.data, args.model)
  sharded = partitioning.shard_params(frozen, mesh)
  checks = run_checks(mesh, frozen, sharded)
  state, losses = train_steps(model, optimizer, with_prompt({}, prompt), frozen, sharded, mesh,
                              args.steps)
  assert get_prompt(state.params).sharding.is_fully_replicated
  extra = {}
  for name in filter(None, args.methods.split(",")):
    extra.update(train_method(name, frozen, sharded, mesh, args.steps, args.trainable_sharding))
  out = Path(args.out)
  if distributed:
    out = out.with_name(f"{out.stem}.p{jax.process_index()}{out.suffix}")
  np.savez(out, losses=np.stack(losses), prompt=np.asarray(get_prompt(state.params)), **extra,
           step=np.asarray(state.step), process_count=jax.process_count(),
           device_count=jax.device_count(), mesh_shape=np.asarray(mesh.devices.shape),
           checks=np.asarray(checks))
  print(f"process {jax.process_index()}/{jax.process_count()} wrote {out}", flush=True)
  if distributed:
    jax.distributed.shutdown()
  return 0


def train_steps(model, optimizer, trainables, frozen, sharded, mesh, steps: int,
                trainable_sharding: str = "replicated"):
  """(final state, losses) of `steps` jitted steps on `mesh` from `trainables`."""
  import jax

  from spot_jax.train.step import init_train_state, make_train_step
  state = init_train_state(trainables, optimizer, seed=SEED)
  shardings = partitioning.state_shardings(state, partitioning.trainable_partition_specs(
      state.params, frozen, trainable_sharding, mesh), mesh)
  state = partitioning.place(state, shardings)
  train_step = partitioning.jit_train_step(make_train_step(model, optimizer), mesh, state,
                                           partitioning.param_shardings(frozen, mesh), shardings)
  local_size = partitioning.host_batch_size(GLOBAL_BATCH)
  first = jax.process_index() * local_size
  losses = []
  for step in range(steps):
    rows = global_batch(step, model.config.vocab_size)
    local = {k: v[first:first + local_size] for k, v in rows.items()}
    batch = partitioning.make_global_batch(local, mesh)
    assert batch["encoder_input_tokens"].shape == (GLOBAL_BATCH, INPUT_LENGTH)
    state, metrics = train_step(state, sharded, batch)
    losses.append(np.asarray(metrics["loss"]))
  return state, losses


def train_method(name: str, frozen, sharded, mesh, steps: int,
                 trainable_sharding: str = "replicated") -> dict[str, np.ndarray]:
  """Trains one method (AdamW) on the mesh: {'<method>:losses': ..., '<method>:<leaf>': ...}."""
  import jax

  from spot_jax import methods
  from spot_jax.models import T5
  from spot_jax.train.optimizer import adamw_warmup, finetune_adafactor
  method = methods.create(name, PROMPT_LENGTH, **({"length": 3} if name == "prefix" else {}))
  model = T5(small_config(), hooks=method.hooks())
  prompt = np.asarray(frozen["token_embedder"]["embedding"][:PROMPT_LENGTH])
  trainables = method.init(jax.random.key(SEED + 2), model, frozen, prompt)
  if method.full:  # every weight trained (T5X's fine-tuning Adafactor); nothing frozen.
    optimizer, frozen, sharded = finetune_adafactor(1e-2), {}, {}
  else:
    optimizer = adamw_warmup(1e-2, steps, warmup_fraction=0.0)
  state, losses = train_steps(model, optimizer, trainables, frozen, sharded, mesh, steps,
                              trainable_sharding)
  leaves = methods.flatten(partitioning.to_host(state.params))
  replicated = [x.sharding.is_fully_replicated for x in methods.flatten(state.params).values()]
  if method.full and mesh.shape["model"] > 1:  # weights and their Adafactor state split as T5X.
    query = state.params["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    assert query.addressable_shards[0].data.shape[1] == query.shape[1] // mesh.shape["model"]
    moments = [x for x in jax.tree.leaves(state.opt_state) if x.shape == query.shape]
    assert moments and not any(x.sharding.is_fully_replicated for x in moments)
  elif trainable_sharding == "replicated" or mesh.shape["model"] == 1:
    assert all(replicated)
  elif name in ("lora", "bias", "ia3", "prefix"):  # 'follow' splits some over 'model'.
    assert not all(replicated), name
  return {f"{name}:losses": np.stack(losses),
          **{f"{name}:{path}": np.asarray(v) for path, v in leaves.items()}}


# ----------------------------------------------------------------------------- test-side helpers


def worker_env(device_count: int, **extra: str) -> dict[str, str]:
  """This environment without SPOT_JAX_* launch variables, on `device_count` CPU devices."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_JAX_")}
  # Optimization level 0: a third less compile time, and the same for every run compared.
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=(f"--xla_force_host_platform_device_count={device_count} "
                        "--xla_backend_optimization_level=0"), **extra)
  return env


def start_worker(out: Path, device_count: int, data: int, model: int, log: Path,
                 methods: str = "", trainable_sharding: str = "replicated",
                 **env: str) -> subprocess.Popen:
  """Starts this script on `device_count` devices; stdout and stderr go to `log`."""
  with open(log, "w") as log_file:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), f"--out={out}", f"--data={data}",
         f"--model={model}", f"--steps={NUM_STEPS}", f"--methods={methods}",
         f"--trainable_sharding={trainable_sharding}"],
        env=worker_env(device_count, **env), stdout=log_file, stderr=subprocess.STDOUT,
        cwd=PROJECT_ROOT)


def wait_workers(procs: list[subprocess.Popen], logs: list[Path],
                 timeout_s: float = SUBPROCESS_TIMEOUT_S) -> None:
  """Waits for all workers; on a failure or timeout kills the rest and shows their logs."""
  deadline = time.monotonic() + timeout_s
  while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
    if any(p.returncode for p in procs):  # one failed: the others may wait for it forever.
      break
    time.sleep(0.2)
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  failures = [f"worker {i} (exit {p.returncode}{', killed' if p.returncode < 0 else ''}) "
              f"log:\n{log.read_text()[-4000:]}"
              for i, (p, log) in enumerate(zip(procs, logs)) if p.returncode]
  assert not failures, f"workers failed (time limit {timeout_s}s):\n" + "\n\n".join(failures)


def assert_same_training(result: dict, reference: dict) -> None:
  """Losses, prompt and other methods' trainables after NUM_STEPS agree within float32
  round-off (1e-5)."""
  np.testing.assert_allclose(result["losses"], reference["losses"], rtol=1e-5)
  np.testing.assert_allclose(result["prompt"], reference["prompt"], rtol=1e-5, atol=1e-5)
  assert sorted(k for k in result if ":" in k) == sorted(k for k in reference if ":" in k)
  for key in (k for k in reference if ":" in k):
    np.testing.assert_allclose(result[key], reference[key], rtol=1e-5, atol=1e-5, err_msg=key)
  assert int(result["step"]) == int(reference["step"]) == NUM_STEPS


if __name__ == "__main__":
  sys.exit(main())
