"""Ordered task pairs sampled inside a source pool (Feng et al., EMNLP 2023, §3.2, §4.2).

The paper trains its affinity head on M ordered pairs <i, j> (i != j) drawn at random from
the n-task source pool (M = 400 of the 44 x 43 = 1,892 ordered pairs), each labelled with the
transfer gain a_ij of source i's prompt on task j; novel targets outside the pool are only
ever scored. `sample_pool_pairs` is that draw: pure, seeded, and independent of the order in
which the pool is listed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

Pair = tuple[str, str]  # (source, target)


class PairSamplingError(ValueError):
  """A pool-pair draw that cannot be made as asked."""


def sample_indices(count: int, num: int | None, seed: int) -> list[int]:
  """`num` distinct indices of range(count), drawn with `seed`, in increasing order (every
  index when `num` is None or >= count)."""
  if num is None or num >= count:
    return list(range(count))
  return sorted(int(i) for i in np.random.default_rng(seed).permutation(count)[:num])


def ordered_pairs(pool: Sequence[str]) -> list[Pair]:
  """Every ordered pair (i, j), i != j, of the pool's tasks, in sorted order."""
  tasks = sorted(pool)
  return [(i, j) for i in tasks for j in tasks if i != j]


def sample_pool_pairs(pool: Sequence[str], num_pairs: int, seed: int) -> list[Pair]:
  """M = `num_pairs` ordered pairs (source i, target j), i != j, drawn without replacement and
  uniformly from the pool's n (n - 1) ordered pairs with `seed`; sorted by (source, target).

  The draw depends only on the set of tasks, M and the seed. M > n (n - 1) is an error."""
  tasks = list(pool)
  duplicates = sorted({t for t in tasks if tasks.count(t) > 1})
  if duplicates:
    raise PairSamplingError(f"The pool lists {duplicates} more than once; keep one of each")
  if len(tasks) < 2:
    raise PairSamplingError(f"A pool of {len(tasks)} task(s) has no ordered pair i != j; "
                            "list at least two sources")
  candidates = ordered_pairs(tasks)
  if isinstance(num_pairs, bool) or not isinstance(num_pairs, (int, np.integer)) or num_pairs < 1:
    raise PairSamplingError(f"num_pairs must be a positive integer, got {num_pairs!r}")
  if num_pairs > len(candidates):
    raise PairSamplingError(
        f"num_pairs {num_pairs} > the {len(candidates)} ordered pairs of {len(tasks)} pool "
        f"tasks (n (n - 1)); lower num_pairs to at most {len(candidates)}")
  return [candidates[i] for i in sample_indices(len(candidates), int(num_pairs), seed)]
