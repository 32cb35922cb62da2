"""The train state of any parameter-efficient method and the jitted training step.

Only the trainables (a tree, see `spot_jax.methods`) are differentiated: the frozen T5 weights
enter the step as an argument that is never differentiated, so they get no gradients and no
optimizer state, and XLA computes no frozen-weight gradient products.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from spot_jax.models.losses import DEFAULT_Z_LOSS, summed_loss
from spot_jax.models.t5 import T5
from spot_jax.methods import Trainables, combine

Array = jax.Array
Batch = dict[str, Array]  # encoder_input_tokens [b, s], decoder_{input,target}_tokens [b, t]
DEFAULT_RNG_IMPL = "threefry2x32"


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; `step` is also the data position."""

  step: Array  # [] int32, updates done so far.
  params: Trainables  # the trainable tree (prompt: {'encoder': {'prompt': ...}}), float32.
  opt_state: optax.OptState
  rng: Array  # raw key data (uint32) for dropout; the per-step key is fold_in(rng, step).


def init_train_state(params: Trainables, optimizer: optax.GradientTransformation, seed: int,
                     rng_impl: str = DEFAULT_RNG_IMPL) -> TrainState:
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  rng = jax.random.key_data(jax.random.key(seed, impl=rng_impl))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=rng)


def make_train_step(model: T5, optimizer: optax.GradientTransformation,
                    z_loss: float = DEFAULT_Z_LOSS, rng_impl: str = DEFAULT_RNG_IMPL
                    ) -> Callable[[TrainState, Any, Batch], tuple[TrainState, dict[str, Array]]]:
  """Returns step(state, frozen_params, batch) -> (new state, metrics); not yet jitted."""
  enable_dropout = model.config.dropout_rate > 0

  def loss_fn(params: Trainables, frozen_params: Any, batch: Batch, dropout_key: Array):
    logits = model.apply({"params": combine(frozen_params, params)},
                         batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                         batch["decoder_target_tokens"], enable_dropout=enable_dropout,
                         rngs={"dropout": dropout_key})
    return summed_loss(logits, batch["decoder_target_tokens"], z_loss)

  def step(state: TrainState, frozen_params: Any, batch: Batch):
    dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl=rng_impl),
                                     state.step)
    (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, jax.lax.stop_gradient(frozen_params), batch, dropout_key)
    updates, opt_state = optimizer.update(grad, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grad))
    return new_state, metrics

  return step

