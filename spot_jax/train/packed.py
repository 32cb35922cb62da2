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

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

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
