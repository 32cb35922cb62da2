"""The optimizers of the methods: Adafactor as in SPoT / T5X prompt tuning (composed from optax
transformations), T5X's fine-tuning Adafactor (`finetune_adafactor`) and AdamW with warmup.

Prompt tuning's Adafactor:

update = -lr * clip_by_block_rms(g / sqrt(v_hat), 1.0) - weight_decay * param, i.e.
param <- (1 - weight_decay) * param - lr * clipped update: the decay is multiplicative per step and
not scaled by the learning rate. No momentum, no parameter scaling. The second-moment decay is
1 - (t + 1)^-0.8 at the *absolute* step t = step_offset + updates so far; T5X restores the step of
the LM-adapted checkpoint (1,100,000), so reproducing published runs means passing that offset.
"""

from __future__ import annotations

import gin
import optax

SPOT_LEARNING_RATE = 0.3
SPOT_WEIGHT_DECAY = 1e-5


@gin.configurable
def prompt_adafactor(learning_rate: float = SPOT_LEARNING_RATE,
                     decay_rate: float = 0.8,
                     clipping_threshold: float | None = 1.0,
                     weight_decay: float = SPOT_WEIGHT_DECAY,
                     min_dim_size_to_factor: int = 128,
                     step_offset: int = 0,
                     epsilon: float = 1e-30) -> optax.GradientTransformation:
  """Adafactor with a constant learning rate and multiplicative weight decay.

  Args:
    step_offset: the absolute step of the first update (T5X: the loaded checkpoint's step).
  """
  transforms = [optax.scale_by_factored_rms(
      factored=True, decay_rate=decay_rate, step_offset=-step_offset,
      min_dim_size_to_factor=min_dim_size_to_factor, epsilon=epsilon)]
  if clipping_threshold is not None:
    transforms.append(optax.clip_by_block_rms(clipping_threshold))
  transforms.append(optax.scale(-learning_rate))
  if weight_decay:
    transforms.append(optax.add_decayed_weights(-weight_decay))
  return optax.chain(*transforms)


@gin.configurable
def finetune_adafactor(learning_rate: float = 1e-3, decay_rate: float = 0.8,
                       clipping_threshold: float | None = 1.0, step_offset: int = 0,
                       weight_decay: float = 0.0, min_dim_size_to_factor: int = 128
                       ) -> optax.GradientTransformation:
  """T5X's fine-tuning Adafactor (google-research/t5x `t5x/adafactor.py`, `Adafactor` with its
  defaults, as `t5x/configs/runs/finetune.gin` uses it with a constant learning rate 1e-3).

  `optax.adafactor` computes T5X's `apply_param_gradient` step for step: second moments
  g^2 + 1e-30 (epsilon1), factored into row and column means for a parameter whose two largest
  dims are both >= 128 (T5X's heuristic `_factored_dims`, which T5X also uses for every
  parameter of rank <= 2 even with logical factor rules: `_parse_rule` falls back to it), else
  a full second moment; decay 1 - (t + 1)^-0.8 at the absolute step t; the update's RMS clipped
  to 1.0 per parameter; scaled by lr * max(RMS(param), 1e-3) (multiply_by_parameter_scale,
  epsilon2); no momentum (beta1 None), no weight decay (weight_decay_rate None).
  T5X continues the second moments stored in the checkpoint it starts from
  (`RestoreCheckpointConfig` restores the optimizer state); the trainer does the same for full
  fine-tuning (`spot_jax.train.full_checkpoints.restore_moments`: both libraries drop the same
  dims). Rank-3 parameters (scanned layers) would need T5X's logical factor rules (optax
  factors the two largest dims, T5X rows and columns within each layer).
  `weight_decay`: multiplicative per step like T5X's weight_decay_rate (0: none).

  Args:
    step_offset: the absolute step of the first update (T5X: the loaded checkpoint's step).
  """
  adafactor = optax.adafactor(
      learning_rate, min_dim_size_to_factor=min_dim_size_to_factor, decay_rate=decay_rate,
      decay_offset=-step_offset, multiply_by_parameter_scale=True,
      clipping_threshold=clipping_threshold, momentum=None, eps=1e-30, factored=True)
  if not weight_decay:
    return adafactor
  return optax.chain(adafactor, optax.add_decayed_weights(-weight_decay))


ADAMW_WARMUP_FRACTION = 0.06
OPTIMIZERS = ("adafactor", "adamw", "adafactor_finetune")


@gin.configurable
def adamw_warmup(learning_rate: float, total_steps: int,
                 warmup_fraction: float = ADAMW_WARMUP_FRACTION, weight_decay: float = 0.0,
                 b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                 ) -> optax.GradientTransformation:
  """AdamW with a linear warmup over `warmup_fraction` of the steps, then linear decay to 0.

  The schedule of HF `get_linear_schedule_with_warmup` (the TuPaTE and affinity papers' trainer;
  their warmup fraction 6%); decoupled weight decay (optax.adamw; HF's default decay is 0).
  """
  warmup = max(int(round(warmup_fraction * total_steps)), 1) if warmup_fraction > 0 else 0
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, learning_rate, warmup),
       optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup, 1))],
      [warmup]) if warmup else optax.linear_schedule(learning_rate, 0.0, max(total_steps, 1))
  return optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
