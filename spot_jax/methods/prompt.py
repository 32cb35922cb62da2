"""`prompt`: the soft prompt of prompt tuning / SPoT (T5X `encoder/prompt/prompt/prompt`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import gin
import numpy as np

from spot_jax.models import prompts
from spot_jax.methods.base import Method, Trainables
from spot_jax.models.layers import MethodHooks


@gin.configurable(module="spot_jax.methods")
@dataclasses.dataclass(frozen=True)
class PromptMethod(Method):
  """A [length, embed] prompt prepended to the embedded input; Adafactor lr 0.3 (SPoT)."""

  name = "prompt"
  prompt_like = True
  default_optimizer = "adafactor"
  default_learning_rate = 0.3
  length: int = prompts.DEFAULT_PROMPT_LENGTH

  def hooks(self) -> MethodHooks:
    return MethodHooks(prompt_length=self.length)

  def init(self, key, model, frozen, prompt=None) -> Trainables:
    if prompt is None:
      raise ValueError("The prompt method starts from an initial prompt [L, embed]")
    return prompts.with_prompt({}, prompt)

  def embedding(self, trainables: Mapping[str, Any], kind: str = "layer_mean") -> np.ndarray:
    """The prompt itself [L, embed] (SPoT's task embedding; pooled by the library)."""
    del kind
    return np.asarray(prompts.get_prompt(trainables), np.float32)
