"""`prompt_encoder`: a prompt reparametrised by a two-layer feed-forward network.

The trained parameters are a prompt table [length, embed] (initialised like a prompt) and the
network (hidden width 200 by default); the prompt the frozen model sees, the saved
`encoder.prompt.prompt.prompt` and the task embedding are the network's output [length, embed],
so the library, similarity and transfer treat it as a prompt.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import gin
import jax.numpy as jnp
import numpy as np

from spot_jax.models import prompts
from spot_jax.methods.base import Method, Trainables, init_added_params
from spot_jax.models.layers import MethodHooks

MODULE = "prompt_encoder"


@gin.configurable(module="spot_jax.methods")
@dataclasses.dataclass(frozen=True)
class PromptEncoderMethod(Method):
  """`encoder/prompt_encoder/{table, hidden/{kernel,bias}, output/{kernel,bias}}`."""

  name = "prompt_encoder"
  prompt_like = True
  default_learning_rate = 1e-3
  length: int = prompts.DEFAULT_PROMPT_LENGTH
  hidden: int = 200

  def hooks(self) -> MethodHooks:
    return MethodHooks(prompt_length=self.length, prompt_encoder_hidden=self.hidden)

  def init(self, key, model, frozen, prompt=None) -> Trainables:
    """The network from its initialisers; the table from `prompt` [L, embed] when given."""
    trainables = init_added_params(model, frozen, key)
    if prompt is not None:
      trainables["encoder"][MODULE]["table"] = jnp.asarray(prompt, jnp.float32)
    return trainables

  def prompt(self, trainables: Mapping[str, Any]) -> np.ndarray:
    """The encoder's output [length, embed]."""
    module = prompts.PromptEncoder(self.length, int(np.shape(
        trainables["encoder"][MODULE]["table"])[1]), self.hidden)
    return np.asarray(module.apply({"params": trainables["encoder"][MODULE]},
                                   method=prompts.PromptEncoder.prompt), np.float32)

  def saved_arrays(self, trainables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays = super().saved_arrays(trainables)
    arrays[".".join(prompts.PROMPT_PATH)] = self.prompt(trainables)
    return arrays

  def embedding(self, trainables: Mapping[str, Any], kind: str = "layer_mean") -> np.ndarray:
    del kind
    return self.prompt(trainables)
