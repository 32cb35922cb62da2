"""Many runs in one jitted step, sharing one frozen model (packed multi-run training).

A packed step is the single-run step (`spot_jax.train.step.make_train_step`) mapped over a
leading run axis with `jax.vmap(step, in_axes=(0, None, 0))`:

  state   every leaf [runs, ...]: each run's trainables, optimizer state, step and dropout rng
  frozen  the frozen model's params, shared (never stacked, never differentiated)
  batch   [runs, batch, length]: row r holds run r's examples, so an example's run index is its
          position on the run axis

Each run's loss, gradients and optimizer update are computed from its own examples only, and its
dropout key is fold_in(its rng, its step) exactly as when it trains alone, so an example never
updates another run's trainables and a packed run follows its lone twin up to float32 round-off
(the batched matrix products may sum in another order). The frozen weights are read once per
step for all runs: the matrix products get `runs` times the rows, which is what raises small
models' throughput on a machine whose matmul units they cannot fill alone.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spot_jax.models.config import T5Config
from spot_jax.models.flops import prompt_tuning_step_flops

Step = Callable[[Any, Any, Mapping[str, jax.Array]], tuple[Any, dict[str, jax.Array]]]


def stack_trees(trees: Sequence[Any]) -> Any:
  """Pytrees of one structure -> one pytree whose leaves are stacked on a new leading axis."""
  if not trees:
    raise ValueError("Nothing to pack: no runs")
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack_tree(tree: Any) -> list[Any]:
  """The inverse of `stack_trees`: one pytree per index of the leading axis."""
  leaves, treedef = jax.tree.flatten(tree)
  runs = leaves[0].shape[0]
  return [jax.tree.unflatten(treedef, [leaf[i] for leaf in leaves]) for i in range(runs)]


def stack_batches(batches: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Per-run host batches {feature: [batch, length]} -> {feature: [runs, batch, length]}."""
  features = set(batches[0])
  for batch in batches[1:]:
    if set(batch) != features:
      raise ValueError(f"Packed runs feed different features: {sorted(features)} vs "
                       f"{sorted(batch)}")
  return {k: np.stack([np.asarray(b[k]) for b in batches]) for k in sorted(features)}


def make_packed_train_step(step: Step) -> Step:
  """The single-run `step(state, frozen, batch)` over a leading run axis of state and batch;
  metrics come back per run ([runs] each). Not yet jitted."""
  return jax.vmap(step, in_axes=(0, None, 0))


# The default pack size (`default_pack_size`). A packed step's matrix products get `runs` times
# the rows; packing pays until one step's work fills the machine's matrix units for long enough
# to hide the per-op overheads: SATURATING_FLOPS per step (CPU: ~0.5-1 s of 2-core float32
# matmul work, benchmarks/study_throughput.py; accelerators: ~10 ms of a modern GPU's bf16
# peak). MAX_PACK bounds the per-run host work (data pipelines, evaluation) of one job.
SATURATING_FLOPS = {"cpu": 1e11}
ACCELERATOR_SATURATING_FLOPS = 5e12
MAX_PACK = 16
MEMORY_FRACTION = 0.5  # of the memory left beside the frozen weights, for the runs' activations.


def run_step_bytes(config: T5Config, batch_size: int, input_length: int, target_length: int,
                   prompt_length: int) -> int:
  """An estimate of one run's activation memory in a train step (float32, kept for the
  backward pass): per layer ~ b S (10 d + 3 f) + 2 b h S^2 (encoder; the decoder alike with T
  and its cross-attention b h T S), plus the logits and their gradient 2 b T V."""
  b, d, f, h, v = (batch_size, config.emb_dim, config.mlp_dim, config.num_heads,
                   config.vocab_size)
  s, t = prompt_length + input_length, target_length
  encoder = b * s * (10 * d + 3 * f) + 2 * b * h * s * s
  decoder = b * t * (14 * d + 3 * f) + 2 * b * h * (t * t + t * s)
  values = (config.num_encoder_layers * encoder + config.num_decoder_layers * decoder
            + 2 * b * t * v)
  return 4 * values


def default_pack_size(config: T5Config, batch_size: int, input_length: int, target_length: int,
                      prompt_length: int, *, memory_bytes: int, frozen_bytes: int,
                      backend: str = "cpu") -> int:
  """How many runs one job packs by default: enough for a step of SATURATING_FLOPS (packing
  beyond that adds no throughput), no more than fit in MEMORY_FRACTION of the memory beside
  the frozen weights (`run_step_bytes` each), between 1 and MAX_PACK.

  E.g. on CPU: tiny_byte at batch 8, 48+4 inputs -> MAX_PACK; small at SPoT's batch 32 x 512
  -> 1 (one run already saturates the cores).
  """
  flops = prompt_tuning_step_flops(config, batch_size, input_length, target_length,
                                   prompt_length).total
  saturating = SATURATING_FLOPS.get(backend, ACCELERATOR_SATURATING_FLOPS)
  by_compute = math.ceil(saturating / max(flops, 1))
  free = MEMORY_FRACTION * max(memory_bytes - frozen_bytes, 0)
  by_memory = int(free // max(run_step_bytes(config, batch_size, input_length, target_length,
                                             prompt_length), 1))
  return int(min(max(min(by_compute, by_memory), 1), MAX_PACK))
