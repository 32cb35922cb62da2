"""Retrieval ("transfer") mixtures: `spot_transfer_mix.<task>.<task>...` (SPoT §3.3, TOP-k MULTI-TASK
MIXTURE).

The name lists the members, so any process registers the mixture on demand from its name alone
(`tasks.lookup.get_task_or_mixture`). Mixing is examples-proportional with the registry's
cap (`tasks.registry.MIXING_CAP`).
"""

from __future__ import annotations

from typing import Sequence

import seqio

TRANSFER_MIXTURE_PREFIX = "spot_transfer_mix."


class TransferMixtureError(ValueError):
  """A retrieval mixture name that cannot be built."""


def mixture_name(tasks: Sequence[str]) -> str:
  """`spot_transfer_mix.<task>.<task>...`: the distinct members, sorted (order-independent)."""
  members = sorted(set(tasks))
  if not members:
    raise TransferMixtureError("A retrieval mixture needs at least one task")
  bad = [t for t in members if not t or not all(c.isalnum() or c == "_" for c in t)]
  if bad:
    raise TransferMixtureError(f"Task names {bad} cannot be encoded in a retrieval mixture name: only "
                               "letters, digits and '_' are allowed ('.' separates the members)")
  return TRANSFER_MIXTURE_PREFIX + ".".join(members)


def mixture_members(name: str) -> list[str]:
  """The member tasks encoded in a `mixture_name`."""
  if not name.startswith(TRANSFER_MIXTURE_PREFIX) or name == TRANSFER_MIXTURE_PREFIX:
    raise TransferMixtureError(f"{name!r} is not a retrieval mixture name "
                        f"({TRANSFER_MIXTURE_PREFIX}<task>.<task>...)")
  members = name[len(TRANSFER_MIXTURE_PREFIX):].split(".")
  if mixture_name(members) != name:
    raise TransferMixtureError(f"{name!r} is not canonical: expected {mixture_name(members)!r}")
  return members


def mixing_rate(task: str) -> float:
  """min(number of training examples, MIXING_CAP): the registry's known size, else seqio's."""
  from tasks import registry
  try:
    size = registry.train_size(task)
  except KeyError:  # not a real SPoT task (e.g. synthetic): ask seqio.
    size = None
  if size is None:
    provider = seqio.get_mixture_or_task(task)
    if isinstance(provider, seqio.Mixture):
      raise TransferMixtureError(f"{task!r} is a mixture; retrieval mixtures take tasks only")
    try:
      size = provider.num_input_examples("train")
    except Exception:  # pylint: disable=broad-except  # TFDS metadata missing, unreadable data.
      size = None
  if size is None:
    raise TransferMixtureError(f"The number of training examples of {task!r} is unknown (not in "
                               "tasks.registry and not countable from its data), so its mixing rate is "
                               "unknown: prepare its data or leave it out of the mixture")
  return float(min(int(size), registry.MIXING_CAP))


def register_transfer_mixture(tasks: Sequence[str]) -> seqio.Mixture:
  """Registers (once) the examples-proportional mixture of `tasks`; returns it."""
  name = mixture_name(tasks)
  if name in seqio.MixtureRegistry.names():
    return seqio.get_mixture_or_task(name)
  members = mixture_members(name)
  if any(t not in seqio.TaskRegistry.names() for t in members):
    from tasks.registry import register_all_tasks
    register_all_tasks()
  unknown = [t for t in members if t not in seqio.TaskRegistry.names()]
  if unknown:
    raise TransferMixtureError(f"Retrieval mixture {name!r}: unknown tasks {unknown} "
                               "(`spot-jax tasks list` prints the registered ones)")
  seqio.MixtureRegistry.add(name, [(t, mixing_rate(t)) for t in members])
  return seqio.get_mixture_or_task(name)
