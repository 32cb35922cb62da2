"""Parameter-efficient methods on the frozen T5, and full fine-tuning, one file each, found by name.

  prompt          soft prompt (SPoT, T5X prompt tuning)        Adafactor, lr 0.3
  prompt_encoder  prompt = 2-layer FFN over a prompt table     AdamW + 6% warmup, lr 1e-3
  prefix          P-tuning v2 per-layer key/value prefixes     AdamW + 6% warmup, lr 1e-2
  lora            rank-8 updates of attention query/value      AdamW + 6% warmup, lr 1e-3
  bias            added zero-initialised dense-layer biases    AdamW + 6% warmup, lr 1e-3
  ia3             scaling of keys, values, MLP hidden          AdamW + 6% warmup, lr 3e-3
  model           every weight (full fine-tuning, T5X finetune) T5X Adafactor, lr 1e-3

`create(name, prompt_length)` builds one with its gin-bound settings (METHOD macro; per-method
configurables `Lora.rank`, `Prefix.length`, ...).
"""

from __future__ import annotations

import difflib

from spot_jax import task_embedding
from spot_jax.methods.base import (EMBEDDING_KINDS, REGISTRY, KernelLayout, Method, MethodError,
                                   Trainables, check_trainables, combine, flatten,
                                   layer_embedding, unflatten)
from spot_jax.methods.bias import Bias
from spot_jax.methods.ia3 import IA3
from spot_jax.methods.lora import Lora
from spot_jax.methods.model import ModelTuning
from spot_jax.methods.prefix import Prefix
from spot_jax.methods.prompt import PromptMethod
from spot_jax.methods.prompt_encoder import PromptEncoderMethod

# Every registered method by name: the built-in ones imported above register themselves
# (`Method.__init_subclass__`), as does any other module defining a Method subclass with a
# name once it is imported (a gin file's `import my_package.my_method`: docs/methods.md).
METHODS = REGISTRY
BUILT_IN = (PromptMethod, PromptEncoderMethod, Prefix, Lora, Bias, IA3, ModelTuning)


def method_class(name: str) -> type[Method]:
  if name not in METHODS:
    close = difflib.get_close_matches(name, METHODS, n=2)
    hint = f" Did you mean {close}?" if close else ""
    raise MethodError(f"Unknown method {name!r}; valid methods: {sorted(METHODS)}.{hint} "
                      "A method defined in another module is registered by importing it "
                      "(an `import` line in its gin file)")
  return METHODS[name]


def prompt_like_methods() -> tuple[str, ...]:
  """The registered methods whose trainable is a soft prompt (`Method.prompt_like`)."""
  return tuple(sorted(name for name, cls in METHODS.items() if cls.prompt_like))


def embedding_kind(method: str, kind: str | None = None) -> str:
  """The embedding kind of `method`'s keys (`task_embedding.embedding_kind`)."""
  return task_embedding.embedding_kind(method_class(method).prompt_like, kind)


def create(name: str, prompt_length: int | None = None, **settings) -> Method:
  """The named method; prompt-like methods take `prompt_length` as their length."""
  cls = method_class(name)
  if cls.prompt_like and prompt_length is not None:
    settings.setdefault("length", prompt_length)
  try:
    return cls(**settings)
  except TypeError as e:
    raise MethodError(f"Bad settings for method {name!r}: {e}") from None


__all__ = ["EMBEDDING_KINDS", "METHODS", "REGISTRY", "KernelLayout", "Method", "MethodError",
           "Trainables", "check_trainables", "combine", "create", "embedding_kind", "flatten",
           "layer_embedding", "method_class", "prompt_like_methods", "unflatten"]
