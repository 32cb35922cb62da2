"""`model`: full fine-tuning (ModelTuning in SPoT, Vu et al. 2022, Table 1 and §2).

Every weight of T5 is trainable: the trainables are the whole param tree and the frozen tree the
step receives is empty, so the same trainables tree, jitted step, train-state checkpoints and
resume serve it as every parameter-efficient method. The defaults are T5X's fine-tuning run
(google-research/t5x `t5x/configs/runs/finetune.gin`): Adafactor as T5X's `adafactor.Adafactor`
(factored second moments, update clipping 1.0, parameter scaling, no weight decay; see
`spot_jax.train.optimizer.finetune_adafactor`), a constant learning rate of 1e-3
(`create_learning_rate_scheduler.factors = 'constant'`, `base_learning_rate = 0.001`), dropout 0.1,
the loaded checkpoint's step as Adafactor's step offset and its stored second moments. A run's
checkpoints are T5X checkpoints (`spot_jax.train.full_checkpoints`), loadable as a frozen model
by any method.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import gin
import jax
import numpy as np

from spot_jax.methods.base import Method, Trainables
from spot_jax.models.layers import MethodHooks

T5X_FINETUNE_LEARNING_RATE = 1e-3  # t5x/configs/runs/finetune.gin base_learning_rate.


@gin.configurable(module="spot_jax.methods")
@dataclasses.dataclass(frozen=True)
class ModelTuning(Method):
  """Every frozen weight becomes a trainable; no hooks, nothing added to T5."""

  name = "model"
  full = True
  default_optimizer = "adafactor_finetune"
  default_learning_rate = T5X_FINETUNE_LEARNING_RATE

  def hooks(self) -> MethodHooks:
    return MethodHooks()

  def init(self, key, model, frozen, prompt=None) -> Trainables:
    """A float32 copy of the loaded weights (the run starts from INITIAL_CHECKPOINT_PATH)."""
    del key, model, prompt
    return jax.tree.map(lambda x: np.array(x, np.float32), dict(frozen))

  def frozen_part(self, frozen: Mapping[str, Any]) -> dict[str, Any]:
    del frozen
    return {}

  def fold(self, frozen, trainables):
    """The tuned weights themselves (they replace the frozen ones)."""
    del frozen
    return jax.tree.map(lambda x: np.asarray(x, np.float32), dict(trainables))
