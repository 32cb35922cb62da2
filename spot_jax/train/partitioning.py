"""Multi-device and multi-host placement: the ('data', 'model') mesh, param and batch shardings.

The batch is split over 'data'; the frozen T5 weights are split over 'model' as in T5X's default
logical-axis rules (vocab, heads and mlp dims -> 'model'; embed -> replicated); the metrics are
replicated. A method's trainables (the prompt, LoRA factors, biases, IA3 scales, prefixes, the
prompt encoder) and their optimizer state are replicated by default (`TRAINABLE_SHARDINGS`
'replicated'), or with 'follow' split like the frozen kernel they attach to (`follow_spec`).
Every host runs the same program (SPMD): each holds the full frozen weights in host memory and
feeds its own rows of the global batch.

Host i reads data shard i of process_count (`host_shard_info`); `make_global_batch` places its
rows where its devices sit on the 'data' axis. This needs each host's devices to cover one
contiguous block of that axis (true for `make_mesh` when the 'model' axis fits inside a host);
if the blocks are not in process order the global batch is a row permutation, which leaves the
summed loss and the gradient unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from spot_jax import methods
from spot_jax.models.init import stacked_axis

if TYPE_CHECKING:
  import seqio

logger = logging.getLogger(__name__)

DATA_AXIS = "data"
MODEL_AXIS = "model"
MESH_AXES = (DATA_AXIS, MODEL_AXIS)

ENV_COORDINATOR = "SPOT_JAX_COORDINATOR"  # host:port of process 0.
ENV_NUM_PROCESSES = "SPOT_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "SPOT_JAX_PROCESS_ID"
ENV_DISTRIBUTED = "SPOT_JAX_DISTRIBUTED"  # "auto": let JAX detect the cluster (TPU pod, SLURM).
_EXPLICIT_ENV = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)

# (regex searched in the slash-joined param path, spec); the first match wins.
# T5's own weights, as T5X's standard logical-axis rules split them:
WEIGHT_RULES: tuple[tuple[str, P], ...] = (
    (r"(^|/)token_embedder/embedding$", P(MODEL_AXIS, None)),  # [vocab, embed]
    (r"attention/(query|key|value)/kernel$", P(None, MODEL_AXIS)),  # [embed, heads*head_dim]
    (r"attention/out/kernel$", P(MODEL_AXIS, None)),  # [heads*head_dim, embed]
    (r"mlp/wi(_\d+)?/kernel$", P(None, MODEL_AXIS)),  # [embed, mlp]
    (r"mlp/wo/kernel$", P(MODEL_AXIS, None)),  # [mlp, embed]
    (r"(^|/)logits_dense/kernel$", P(None, MODEL_AXIS)),  # [embed, vocab]
    (r"norm/scale$", P()),  # layer norms [embed]
    (r"relpos_bias/rel_embedding$", P()),  # [heads, buckets]
)
# The input slot's modules (spot_jax.models.prompts): replicated.
INPUT_SLOT_RULES: tuple[tuple[str, P], ...] = (
    (r"(^|/)prompt/prompt/prompt$", P()),
    (r"(^|/)prompt_encoder/", P()),
)


def partition_rules() -> tuple[tuple[str, P], ...]:
  """Every param's rule: the input slot's, T5's weights', and one replicated rule for the
  trainable leaves every registered method declares (`Method.trainable_leaves`, read when
  called, so a method registered later is covered)."""
  leaves = sorted({leaf for cls in methods.REGISTRY.values() for leaf in cls.trainable_leaves})
  added = ((rf"/({'|'.join(map(re.escape, leaves))})$", P()),) if leaves else ()
  return (INPUT_SLOT_RULES[0], *WEIGHT_RULES, *added, *INPUT_SLOT_RULES[1:])
# How a method's trainables (and their optimizer state) are placed on the mesh.
TRAINABLE_SHARDINGS = ("replicated", "follow")


# ----------------------------------------------------------------------------- processes


def _explicit_distributed_env() -> tuple[str, int, int] | None:
  """(coordinator, num_processes, process_id) from SPOT_JAX_* variables, None when all unset."""
  present = [name for name in _EXPLICIT_ENV if os.environ.get(name)]
  if not present:
    return None
  if len(present) != len(_EXPLICIT_ENV):
    missing = sorted(set(_EXPLICIT_ENV) - set(present))
    raise ValueError(f"Multi-process launch needs all of {list(_EXPLICIT_ENV)}; missing {missing}")
  try:
    num_processes = int(os.environ[ENV_NUM_PROCESSES])
    process_id = int(os.environ[ENV_PROCESS_ID])
  except ValueError as e:
    raise ValueError(f"{ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} must be integers: {e}") from e
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(f"Need 0 <= {ENV_PROCESS_ID} ({process_id}) < {ENV_NUM_PROCESSES} "
                     f"({num_processes})")
  return os.environ[ENV_COORDINATOR], num_processes, process_id


def maybe_initialize_distributed() -> bool:
  """Joins the other processes via `jax.distributed.initialize` when launched multi-process.

  Explicit: SPOT_JAX_COORDINATOR (host:port), SPOT_JAX_NUM_PROCESSES, SPOT_JAX_PROCESS_ID.
  Auto-detected (TPU pod, SLURM, ...): SPOT_JAX_DISTRIBUTED=auto. Must run before anything
  touches a JAX backend (jax.devices(), array creation). Idempotent. Returns whether the run
  is distributed.
  """
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  explicit = _explicit_distributed_env()
  mode = os.environ.get(ENV_DISTRIBUTED, "").strip().lower()
  if explicit is not None:
    coordinator, num_processes, process_id = explicit
    if num_processes == 1:
      return False
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
      # Cross-process collectives between CPU devices need gloo (unused on GPU/TPU; "mpi" kept).
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    logger.info("jax.distributed.initialize(%s, num_processes=%d, process_id=%d)",
                coordinator, num_processes, process_id)
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return True
  if mode == "auto":
    logger.info("jax.distributed.initialize() with cluster auto-detection")
    jax.distributed.initialize()
    return jax.process_count() > 1
  if mode not in ("", "0", "false", "none", "off"):
    raise ValueError(f"{ENV_DISTRIBUTED}={mode!r}: expected 'auto' or unset")
  return False


def host_batch_size(global_batch_size: int) -> int:
  """This host's share of the global batch: global_batch_size / process_count."""
  count = jax.process_count()
  if global_batch_size % count:
    raise ValueError(f"Global batch size {global_batch_size} is not divisible by the number of "
                     f"processes ({count})")
  return global_batch_size // count


def host_shard_info() -> "seqio.ShardInfo":
  """The data shard this host reads: index = process_index, num_shards = process_count."""
  import seqio  # pylint: disable=g-import-not-at-top  (seqio imports TensorFlow: slow)
  return seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())


# ----------------------------------------------------------------------------- mesh


def make_mesh(data: int = -1, model: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
  """A ('data', 'model') mesh over `devices` (default: all devices); -1 = all remaining."""
  devices = list(jax.devices() if devices is None else devices)
  count = len(devices)
  if model == -1 and data == -1:
    raise ValueError("At most one of the mesh sizes (data, model) may be -1")
  for name, size in ((DATA_AXIS, data), (MODEL_AXIS, model)):
    if size != -1 and size < 1:
      raise ValueError(f"Mesh axis {name!r} must be >= 1 or -1 (all remaining), got {size}")
  known = data if model == -1 else model
  if data == -1 or model == -1:
    if count % known:
      raise ValueError(f"{count} devices cannot be split into a mesh with "
                       f"{'data' if model == -1 else 'model'}={known}")
    data, model = (count // known, model) if data == -1 else (data, count // known)
  if data * model != count:
    raise ValueError(f"Mesh data={data} x model={model} = {data * model} devices, but there are "
                     f"{count}; use -1 for one axis to take the remaining devices")
  return jax.make_mesh((data, model), MESH_AXES, axis_types=(AxisType.Auto, AxisType.Auto),
                       devices=devices)


def batch_sharding(mesh: Mesh, run_axis: bool = False) -> NamedSharding:
  """The batch dim split over 'data', the rest replicated; the batch dim is the leading one,
  or the second behind a packed job's run axis ([runs, batch, ...], `spot_jax.train.packed`)."""
  return NamedSharding(mesh, P(None, DATA_AXIS) if run_axis else P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


# ----------------------------------------------------------------------------- params


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def param_path(key_path: Sequence[Any]) -> str:
  """A jax tree key path -> 'encoder/layers_0/attention/query/kernel'."""
  return "/".join(_key_name(k) for k in key_path)


def _fit_spec(path: str, spec: P, shape: tuple[int, ...], mesh: Mesh | None) -> P:
  """Replicates dims whose size is not divisible by their mesh axis size (logged)."""
  if len(spec) > len(shape):
    raise ValueError(f"Partition spec {spec} for {path!r} has more dims than its shape {shape}")
  if mesh is None:
    return spec
  fitted = []
  for dim, axes in enumerate(spec):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = math.prod(mesh.shape[name] for name in names)
    if names and shape[dim] % size:
      logger.warning("%s: dim %d of size %d is not divisible by mesh axes %s (size %d); "
                     "replicating it", path, dim, shape[dim], names, size)
      axes = None
    fitted.append(axes)
  return P(*fitted)


def param_partition_specs(params: Any, mesh: Mesh | None = None,
                          rules: Sequence[tuple[str, P]] | None = None) -> Any:
  """Same-structure tree of PartitionSpec, from the first rule whose regex matches each path.

  With `mesh`, dims not divisible by their mesh axis size fall back to replicated.
  """
  rules = partition_rules() if rules is None else rules
  compiled = [(re.compile(pattern), spec) for pattern, spec in rules]
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  specs, unmatched = [], []
  for key_path, leaf in leaves:
    path = param_path(key_path)
    spec = next((s for pattern, s in compiled if pattern.search(path)), None)
    if spec is None:
      unmatched.append(path)
      continue
    axis = stacked_axis(path)  # a scanned stack's leaf: the layer axis stays unsplit.
    if axis is not None:
      spec = P(*(tuple(spec) + (None,) * axis)[:axis], None, *tuple(spec)[axis:])
    specs.append(_fit_spec(path, spec, tuple(np.shape(leaf)), mesh))
  if unmatched:
    raise ValueError(f"No partition rule matches {len(unmatched)} param(s): {unmatched}; "
                     f"rules: {[pattern for pattern, _ in rules]}")
  return jax.tree_util.tree_unflatten(treedef, specs)


def _kernel_spec(module: str) -> P:
  """The frozen rule's spec of `module/kernel` (2 dims), P(None, None) when none applies."""
  path = f"{module}/kernel"
  spec = next((s for pattern, s in WEIGHT_RULES if re.search(pattern, path)), P())
  return P(*(tuple(spec) + (None, None))[:2])


def follow_spec(path: str, shape: tuple[int, ...], frozen: Mapping[str, Any]) -> P:
  """The spec of a trainable leaf that follows the frozen module it sits in: the registered
  method whose `trainable_leaves` hold the leaf decides (`Method.follow_spec`, e.g. LoRA's
  `lora_a` [in, r] takes the kernel's input dim rule); anything else (the prompt, the prompt
  encoder) stays replicated."""
  module, _, leaf = path.rpartition("/")
  owner = next((cls for cls in methods.REGISTRY.values() if leaf in cls.trainable_leaves), None)
  if owner is None:
    return P()
  node: Any = frozen
  for part in module.split("/"):
    node = node.get(part, {}) if isinstance(node, Mapping) else {}
  kernel_shape = tuple(np.shape(node.get("kernel"))) if isinstance(node, Mapping) else ()
  spec_in, spec_out = _kernel_spec(module)
  layout = methods.KernelLayout(spec_in, spec_out, kernel_shape,
                                heads_axis=_kernel_spec(f"{module}/query")[1])
  spec = owner.follow_spec(leaf, shape, layout)
  return P() if spec is None else spec


def trainable_partition_specs(trainables: Any, frozen: Mapping[str, Any], mode: str,
                              mesh: Mesh | None = None) -> Any:
  """Same-structure tree of PartitionSpec for a method's trainables (`TRAINABLE_SHARDINGS`).

  Trainables that are T5's own weights (full fine-tuning, the `model` method) are split by
  `WEIGHT_RULES` in either mode, as T5X splits the params (and so their optimizer state,
  `state_shardings`) when it fine-tunes."""
  if mode not in TRAINABLE_SHARDINGS:
    raise ValueError(f"Unknown trainable sharding {mode!r}; choose one of {TRAINABLE_SHARDINGS}")
  weights = [(re.compile(pattern), s) for pattern, s in WEIGHT_RULES]

  def spec(key_path, leaf):
    path, shape = param_path(key_path), tuple(np.shape(leaf))
    weight = next((s for pattern, s in weights if pattern.search(path)), None)
    if weight is not None:
      chosen = weight
    else:
      chosen = follow_spec(path, shape, frozen) if mode == "follow" else P()
    return _fit_spec(path, chosen, shape, mesh)

  return jax.tree_util.tree_map_with_path(spec, trainables)


def state_shardings(state: Any, trainable_specs: Any, mesh: Mesh) -> Any:
  """Shardings for a train state: its `params` per `trainable_specs`, every optimizer-state leaf
  shaped like a trainable (Adam's moments) like that trainable, the rest (step, rng, factored
  Adafactor statistics) replicated."""
  specs = {param_path(k): spec for k, spec in jax.tree_util.tree_flatten_with_path(
      trainable_specs, is_leaf=lambda x: isinstance(x, P))[0]}
  shapes = {param_path(k): tuple(np.shape(v))
            for k, v in jax.tree_util.tree_flatten_with_path(state.params)[0]}

  def sharding(key_path, leaf):
    parts = param_path(key_path).split("/")
    for start in range(1, len(parts)):  # the trainable path a state leaf ends with, if any.
      trainable = "/".join(parts[start:])
      if trainable in specs and tuple(np.shape(leaf)) == shapes[trainable]:
        return NamedSharding(mesh, specs[trainable])
    return replicated_sharding(mesh)

  return jax.tree_util.tree_map_with_path(sharding, state)


def with_run_axis(shardings: Any) -> Any:
  """One run's state shardings -> those of a packed state (a leading run axis, unsplit)."""
  return jax.tree.map(lambda s: NamedSharding(s.mesh, P(None, *s.spec)), shardings,
                      is_leaf=lambda x: isinstance(x, NamedSharding))


def place(tree: Any, shardings: Any) -> Any:
  """Host values, identical on every host -> global arrays with the matching `shardings`."""
  return jax.tree.map(_to_global, tree, shardings)


def to_host(tree: Any) -> Any:
  """Global arrays -> full numpy values on every host (gathers arrays split across hosts)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(get, tree)


def param_shardings(params: Any, mesh: Mesh) -> Any:
  """Same-structure tree of NamedSharding for `params` on `mesh`."""
  specs = param_partition_specs(params, mesh)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                      is_leaf=lambda x: isinstance(x, P))


def _to_global(value: Any, sharding: NamedSharding) -> jax.Array:
  """A value every host holds in full -> a global jax.Array with `sharding`."""
  if isinstance(value, jax.Array) and (value.sharding == sharding
                                       or not value.is_fully_addressable):
    return value if value.sharding == sharding else jax.device_put(value, sharding)
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_params(params: Any, mesh: Mesh) -> Any:
  """Host (numpy or jax) params, identical on every host -> global arrays split per the rules."""
  return jax.tree.map(_to_global, params, param_shardings(params, mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Host values, identical on every host -> global arrays replicated over the mesh.

  Use it to place the TrainState before the first jitted step on a multi-host mesh.
  """
  sharding = replicated_sharding(mesh)
  return jax.tree.map(lambda x: _to_global(x, sharding), tree)


# ----------------------------------------------------------------------------- batches and steps


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh, run_axis: bool = False
                      ) -> dict[str, jax.Array]:
  """This host's rows [b / process_count, ...] -> global arrays [b, ...] split over 'data'
  (run_axis: [runs, b / process_count, ...] -> [runs, b, ...])."""
  sharding = batch_sharding(mesh, run_axis)
  data_size = mesh.shape[DATA_AXIS]
  axis = int(run_axis)
  out = {}
  for name, value in local_batch.items():
    value = np.asarray(value)
    global_shape = (value.shape[:axis] + (value.shape[axis] * jax.process_count(),)
                    + value.shape[axis + 1:])
    if global_shape[axis] % data_size:
      raise ValueError(f"Global batch size {global_shape[axis]} ({name}) is not divisible by the "
                       f"mesh 'data' axis size {data_size}")
    out[name] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out


def jit_train_step(step_fn: Callable[..., Any], mesh: Mesh, state: Any,
                   frozen_params_shardings: Any, train_state_shardings: Any = None,
                   run_axis: bool = False) -> Callable[..., Any]:
  """jit(step_fn(state, frozen_params, batch) -> (state, metrics)) on `mesh`; donates the state.

  The state is placed per `train_state_shardings` (default replicated, see `state_shardings`),
  the metrics replicated, the batch split over 'data', the frozen params per
  `frozen_params_shardings` (e.g. `param_shardings(params, mesh)`); run_axis: a packed step's
  batch [runs, batch, ...] (`batch_sharding`).
  """
  replicated = replicated_sharding(mesh)
  if train_state_shardings is None:
    train_state_shardings = jax.tree.map(lambda _: replicated, state)
  return jax.jit(step_fn,
                 in_shardings=(train_state_shardings, frozen_params_shardings,
                               batch_sharding(mesh, run_axis)),
                 out_shardings=(train_state_shardings, replicated),
                 donate_argnums=(0,))
