"""What every parameter-efficient method shares: trainable trees, their init, their embedding.

Trainables are a nested dict shaped like the flax param tree (e.g. {'encoder': {'layers_0':
{'attention': {'query': {'lora_a': [embed, rank], ...}}}}}); the frozen model's params never
contain their paths, so `combine(frozen, trainables)` is the full param tree and only the
trainables are differentiated. A leaf is saved and named by its dotted path
('encoder.layers_0.attention.query.lora_a').
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from spot_jax import task_embedding
from spot_jax.models.layers import MethodHooks
from spot_jax.models.t5 import T5

Array = jax.Array
Trainables = dict[str, Any]
EMBEDDING_KINDS = task_embedding.EMBEDDING_KINDS


class MethodError(ValueError):
  """An unknown method, bad settings, or trainables that do not fit the model."""


def combine(frozen: Mapping[str, Any], trainables: Mapping[str, Any]) -> dict[str, Any]:
  """The full param tree: `frozen` with the trainable leaves added beside the frozen ones."""
  out = dict(frozen)
  for key, value in trainables.items():
    if isinstance(value, Mapping):
      out[key] = combine(frozen.get(key, {}), value)
    else:
      out[key] = value
  return out


def flatten(trainables: Mapping[str, Any]) -> dict[str, Any]:
  """{dotted path: leaf}, e.g. 'encoder.prompt.prompt.prompt'."""
  return traverse_util.flatten_dict(trainables, sep=".")


def unflatten(flat: Mapping[str, Any]) -> Trainables:
  return traverse_util.unflatten_dict(dict(flat), sep=".")


def _init_tokens() -> Array:
  return jnp.ones((1, 4), jnp.int32)


def init_added_params(model: T5, frozen: Mapping[str, Any], key: Array) -> Trainables:
  """The params `model`'s hooks add to the frozen tree, from their flax initialisers.

  Only those leaves are returned from the jitted init, so XLA drops the frozen weights' init.
  """
  shapes = jax.eval_shape(model.init, key, _init_tokens(), _init_tokens())["params"]
  frozen_paths = set(flatten(frozen))
  added = sorted(set(flatten(shapes)) - frozen_paths)

  def init(k):
    full = flatten(model.init(k, _init_tokens(), _init_tokens())["params"])
    return {path: full[path] for path in added}

  return unflatten(jax.device_get(jax.jit(init)(key)))


def check_trainables(trainables: Mapping[str, Any], expected: Mapping[str, Any],
                     source: str) -> Trainables:
  """`trainables` as float32 arrays, after checking its paths and shapes equal `expected`'s."""
  got, want = flatten(trainables), flatten(expected)
  if set(got) != set(want):
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    raise MethodError(f"Trainables from {source} do not fit this method: missing {missing}, "
                      f"unexpected {extra}")
  for path, value in got.items():
    if tuple(np.shape(value)) != tuple(np.shape(want[path])):
      raise MethodError(f"Trainable {path} from {source} has shape {np.shape(value)}; the "
                        f"model expects {tuple(np.shape(want[path]))}")
  return unflatten({p: jnp.asarray(v, jnp.float32) for p, v in got.items()})


def layer_embedding(trainables: Mapping[str, Any], kind: str = "layer_mean") -> np.ndarray:
  """A task embedding [size] from per-layer parameters (TuPaTE, Zhou et al. 2022, §3).

  `layer_mean` (the paper's definition): each layer's tuned parameters flattened and
  concatenated (in path order), averaged over the layers of a stack; the encoder's and the
  decoder's averages concatenated. `concat`: every parameter flattened and concatenated in
  layer order (what the authors' released extraction script does). The numpy definition is
  `spot_jax.task_embedding.layer_embedding` (the library computes keys with it).
  """
  try:
    return task_embedding.layer_embedding(trainables, kind)
  except task_embedding.EmbeddingError as e:
    raise MethodError(str(e)) from None


# name -> Method subclass; filled as method modules are imported (`spot_jax.methods` imports
# the built-in ones; a gin file's `import my_method` or METHOD_MODULES adds others).
REGISTRY: dict[str, type["Method"]] = {}


@dataclasses.dataclass(frozen=True)
class KernelLayout:
  """How the frozen module a trainable sits in is split: its kernel's input and output dim
  specs (mesh axis names or None), its kernel shape [in, out] (() if it has no kernel), and the
  heads axis of its attention's q/k/v kernels."""

  spec_in: Any
  spec_out: Any
  shape: tuple[int, ...]
  heads_axis: Any


@dataclasses.dataclass(frozen=True)
class Method:
  """A parameter-efficient method: its hooks into T5, its init, its task embedding.

  Subclasses set `name`, the optimizer defaults and `hooks()`; settings are dataclass fields
  (recorded in run.json).
  """

  name: ClassVar[str] = ""
  prompt_like: ClassVar[bool] = False  # takes PROMPT_LENGTH and an initial prompt.
  full: ClassVar[bool] = False  # trains the frozen weights themselves (full fine-tuning).
  default_optimizer: ClassVar[str] = "adamw"
  default_learning_rate: ClassVar[float] = 1e-3
  # The leaf names of its trainables beside frozen modules (e.g. `lora_a`), for sharding.
  trainable_leaves: ClassVar[tuple[str, ...]] = ()

  def __init_subclass__(cls, **kwargs):
    """A subclass with a `name` registers itself (as HF PEFT's tuners register in
    `peft.mapping.PEFT_TYPE_TO_TUNER_MAPPING`): defining the class is adding the method."""
    super().__init_subclass__(**kwargs)
    if cls.__dict__.get("name"):
      other = REGISTRY.get(cls.name)
      if other is not None and other.__qualname__ != cls.__qualname__:
        raise MethodError(f"Method name {cls.name!r} is taken by {other.__module__}."
                          f"{other.__qualname__}; name {cls.__module__}.{cls.__qualname__} "
                          "otherwise")
      REGISTRY[cls.name] = cls

  def hooks(self) -> MethodHooks:
    raise NotImplementedError

  @classmethod
  def follow_spec(cls, leaf: str, shape: tuple[int, ...], kernel: "KernelLayout") -> Any:
    """The PartitionSpec of one of this method's trainable leaves [shape] that follows the
    frozen module it sits in (`kernel`: that module's kernel layout), or None for replicated.
    `train/partitioning.follow_spec` asks the method whose `trainable_leaves` hold the leaf."""
    del leaf, shape, kernel
    return None

  def settings(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def init(self, key: Array, model: T5, frozen: Mapping[str, Any],
           prompt: Array | None = None) -> Trainables:
    """The trainables a fresh run starts from; `prompt` [L, embed] for prompt-like methods."""
    del prompt
    return init_added_params(model, frozen, key)

  def frozen_part(self, frozen: Mapping[str, Any]) -> dict[str, Any]:
    """What the step receives as frozen params: all of `frozen`, except for a method whose
    trainables are the weights themselves (`full`), where nothing stays frozen."""
    return dict(frozen)

  def saved_arrays(self, trainables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """{file name: array} written under numpy_checkpoints/checkpoint_{step}/."""
    return {p: np.asarray(v, np.float32) for p, v in flatten(trainables).items()}

  def embedding(self, trainables: Mapping[str, Any], kind: str = "layer_mean") -> np.ndarray:
    """The task embedding of these trainables (see `layer_embedding`)."""
    return layer_embedding(trainables, kind)

  def fold(self, frozen: Mapping[str, Any], trainables: Mapping[str, Any]) -> dict[str, Any]:
    """Frozen params with the trainables folded into the kernels (same names and shapes)."""
    raise MethodError(f"Method {self.name!r} cannot be folded into the frozen T5 1.1 weights "
                      "(only lora and ia3 can: T5 1.1 kernels have no bias, and prompts and "
                      "prefixes are not weights); use the run's numpy checkpoint instead")


def fold_modules(frozen: Mapping[str, Any], trainables: Mapping[str, Any], fold_one
                 ) -> dict[str, Any]:
  """Applies fold_one(module path 'a/b/c', kernel [in, out], {leaf: array}) -> new kernel to
  every module of `trainables` that sits beside a frozen `kernel`; returns a new frozen tree."""
  flat = {tuple(k.split(".")): np.asarray(v, np.float32)
          for k, v in flatten(trainables).items()}
  modules: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
  for path, value in flat.items():
    modules.setdefault(path[:-1], {})[path[-1]] = value
  out = traverse_util.flatten_dict(dict(frozen))
  for module, leaves in modules.items():
    kernel_path = module + ("kernel",)
    if kernel_path not in out:
      raise MethodError(f"{'/'.join(module)} has trainables {sorted(leaves)} but no frozen kernel")
    kernel = np.asarray(out[kernel_path], np.float32)
    out[kernel_path] = fold_one("/".join(module), kernel, leaves).astype(np.float32)
  return traverse_util.unflatten_dict(out)
