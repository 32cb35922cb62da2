"""Training pairs of the affinity head: gains a_ij joined with the tasks' keys.

  gain(i -> j) = mean over seeds of target j's score initialised from source i
                 - mean over seeds of j's score from a fresh prompt (source `none`)

Each (source, target) pair is one labelled pair; its examples are every combination of one key
of the target and one key of the source (a key per seed: K_t * K_s examples, same label). The
M training pairs are sampled without replacement (seeded) from the pairs whose tasks are all
outside the validation split, so a held-out target never appears in a training pair, neither as
target nor as source.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from spot_jax.affinity.pairs import sample_indices

BASELINE = "none"


class AffinityDataError(ValueError):
  """Pairs or keys that cannot train or evaluate a head as given."""


Pair = tuple[str, str]  # (source, target)


def gains_from_means(means: Mapping[str, Mapping[str, float]]) -> dict[Pair, float]:
  """{(source, target): gain} from {target: {source: mean score}} (holding `none`)."""
  gains = {}
  for target, by_source in means.items():
    if BASELINE not in by_source:
      raise AffinityDataError(f"Target {target!r} has no baseline (source {BASELINE!r})")
    for source, mean in by_source.items():
      if source not in (BASELINE, target):
        gains[(source, target)] = float(mean) - float(by_source[BASELINE])
  return gains


# ----------------------------------------------------------------------------- keys


def keys_from_library(library: Any, model: Any = None) -> dict[str, np.ndarray]:
  """{task: keys [K, L, E]} of a PromptLibrary's entries (one frozen model), by entry id."""
  entries, keys = library.full_keys(model=model)
  out: dict[str, list[np.ndarray]] = {}
  for entry, key in zip(entries, keys):
    out.setdefault(entry.task, []).append(key)
  return {t: np.stack(k) for t, k in out.items()}


def keys_from_study(study_dir: str, embedding: str | None = None) -> dict[str, np.ndarray]:
  """{task: keys [K, L, E]}: the key_step task embeddings of a study's source and baseline runs
  (runs/source/<task>/seed_*, runs/baseline/<task>/seed_*), seeds in sorted order. Prompt-like
  methods: the prompt [L, E]; others: the method's embedding of kind `embedding` (default
  layer_mean) as a one-token key [1, D] (`spot_jax.library.run_keys.run_key`)."""
  from spot_jax.library.identity import ModelIdentity
  from spot_jax.library.run_keys import run_key
  from spot_jax.library.store import LibraryError
  from spot_jax.train import run_dir
  out: dict[str, list[np.ndarray]] = {}
  methods: dict[tuple[str, str], str] = {}
  pattern = os.path.join(study_dir, "runs", "{kind}", "*", "seed_*")
  for kind in ("source", "baseline"):
    for path in sorted(glob.glob(pattern.format(kind=kind))):
      summary = run_dir.read_summary(path)
      try:
        model = ModelIdentity.from_run_summary(summary, embedding=embedding)
      except LibraryError as e:
        raise AffinityDataError(str(e)) from None
      methods.setdefault((model.method, model.method_settings), path)
      if summary.key_step not in run_dir.checkpoint_steps(path):
        raise AffinityDataError(f"Run {path} has no checkpoint at its key step "
                                f"{summary.key_step}; finish the study's source and baseline "
                                "runs first")
      task = os.path.basename(os.path.dirname(path))
      out.setdefault(task, []).append(run_key(path, summary.key_step, model))
  if not out:
    raise AffinityDataError(f"{study_dir} holds no runs/source or runs/baseline runs")
  if len(methods) > 1:
    raise AffinityDataError(f"{study_dir} holds runs of several methods or method settings "
                            f"({sorted(methods)}, e.g. {sorted(methods.values())}); their "
                            "embeddings are never compared: use one study per method")
  return {t: np.stack(k).astype(np.float32) for t, k in out.items()}


# ----------------------------------------------------------------------------- splits


def split_targets(targets: Sequence[str], fraction: float, seed: int) -> list[str]:
  """A seeded random `fraction` of the targets (at least one) held out for validation."""
  targets = sorted(targets)
  if len(targets) < 2:
    raise AffinityDataError(f"Held-out validation needs >= 2 targets, got {targets}")
  count = min(len(targets) - 1, max(1, round(fraction * len(targets))))
  order = np.random.default_rng(seed).permutation(len(targets))
  return sorted(targets[i] for i in order[:count])


def target_folds(targets: Sequence[str], k: int, seed: int) -> list[list[str]]:
  """K cross-validation folds of the targets: a seeded permutation cut into k near-equal parts
  (sizes differ by at most one), each sorted; k = len(targets) is leave one target out."""
  targets = sorted(targets)
  if not 2 <= k <= len(targets):
    raise AffinityDataError(f"{k} folds of {len(targets)} targets: pick 2 <= K <= "
                            f"{len(targets)} (K = {len(targets)}: leave one target out)")
  order = np.random.default_rng(seed).permutation(len(targets))
  return sorted(sorted(targets[i] for i in part) for part in np.array_split(order, k))


def family_targets(targets: Sequence[str], family: str,
                   family_of: Callable[[str], str]) -> list[str]:
  """The targets of one family (leave-family-out validation)."""
  held = sorted(t for t in targets if family_of(t) == family)
  if not held:
    raise AffinityDataError(f"No target of family {family!r}; families: "
                            f"{sorted({family_of(t) for t in targets})}")
  return held


def task_family(task: str) -> str:
  """A task's family: the synthetic world's family, else the registry's first group."""
  try:
    from tasks import synthetic
    return synthetic.synthetic_task_info(task).family
  except (KeyError, ValueError):
    pass
  from tasks import registry
  try:
    groups = registry.get_info(task).groups
  except KeyError:
    groups = ()
  if not groups:
    raise AffinityDataError(f"No family known for task {task!r}; pass --families FILE.csv with "
                            "columns task,family")
  return groups[0]


def leave_families_out(pool: Sequence[str], novel_targets: Sequence[str],
                       families: Sequence[str], family_of: Callable[[str], str]
                       ) -> tuple[list[str], list[str]]:
  """(novel targets of `families`, pool tasks of `families`): the paper's generalisation test
  (§4.6.2) holds the first out and trains without the second."""
  known = {family_of(t) for t in [*pool, *novel_targets]}
  unknown = sorted(set(families) - known)
  if unknown:
    raise AffinityDataError(f"No task of family {unknown}; families: {sorted(known)}")
  held = sorted(t for t in novel_targets if family_of(t) in families)
  if not held:
    raise AffinityDataError(f"No novel target of the families {sorted(families)} to test on")
  return held, sorted(t for t in pool if family_of(t) in families)


@dataclasses.dataclass(frozen=True)
class Split:
  """Training pairs (the sampled M) and validation pairs (targets held out)."""

  train: list[Pair]
  val: list[Pair]
  val_targets: list[str]
  available: int  # training pairs before sampling M.


def make_split(gains: Mapping[Pair, float], val_targets: Sequence[str], num_pairs: int | None,
               seed: int, exclude: Sequence[str] = ()) -> Split:
  """Validation = every pair with a held-out target; training = M pairs sampled (seeded) from
  those touching no held-out target and no `exclude` task (leave-family-out) in either role."""
  held = set(val_targets)
  banned = held | set(exclude)
  val = sorted(p for p in gains if p[1] in held)
  pool = sorted(p for p in gains if p[0] not in banned and p[1] not in banned)
  if not pool:
    raise AffinityDataError(f"No training pairs left after holding out {sorted(banned)}")
  if not val:
    raise AffinityDataError(f"No validation pairs for the held-out targets {sorted(held)}")
  train = [pool[i] for i in sample_indices(len(pool), num_pairs, seed)]
  return Split(train=train, val=val, val_targets=sorted(held), available=len(pool))


def pool_split(gains: Mapping[Pair, float], novel_targets: Sequence[str], num_pairs: int | None,
               seed: int, exclude: Sequence[str] = ()) -> Split:
  """The paper's protocol (Feng et al. 2023, §3.2-3.3): training = M pairs sampled (seeded)
  among the pool-internal transfers (source i -> source j) touching no `exclude` task (§4.6.2:
  a task type left out), validation = every pool source -> each novel target. A novel target
  that is itself the source of a transfer is an error: it would be part of the pool."""
  novel = set(novel_targets)
  missing = sorted(novel - {t for _, t in gains})
  if missing:
    raise AffinityDataError(f"No transfer results for the novel targets {missing}")
  as_source = sorted(novel & {s for s, _ in gains})
  if as_source:
    raise AffinityDataError(f"Novel target(s) {', '.join(as_source)} is a source of transfers "
                            "in the results; a novel target must stay out of the pool")
  split = make_split(gains, sorted(novel), num_pairs, seed,
                     sorted(set(exclude) | set(outside_pool(gains))))
  trained = {t for pair in split.train for t in pair}
  leaked = sorted((trained - {s for s, _ in gains}) | (trained & novel))
  assert not leaked, f"tasks outside the pool {leaked} entered the training pairs"
  return split


def outside_pool(gains: Mapping[Pair, float]) -> list[str]:
  """Targets that are never a source: outside the pool, so never in a pool-internal pair."""
  return sorted({t for _, t in gains} - {s for s, _ in gains})


# ----------------------------------------------------------------------------- examples


@dataclasses.dataclass(frozen=True)
class Examples:
  """Indices into a key bank [Nk, L, E]: target key t[i], source key s[i], label y[i]; pair[i]
  is the index of the example's pair in `pairs`."""

  t: np.ndarray  # [n] int32
  s: np.ndarray  # [n] int32
  y: np.ndarray  # [n] float32 gains
  pair: np.ndarray  # [n] int32
  pairs: list[Pair]

  def __len__(self) -> int:
    return int(self.t.shape[0])


@dataclasses.dataclass(frozen=True)
class KeyBank:
  """Every task's keys stacked: keys [Nk, L, E]; rows[task] = its row indices."""

  keys: np.ndarray
  rows: dict[str, np.ndarray]

  @classmethod
  def build(cls, task_keys: Mapping[str, np.ndarray]) -> KeyBank:
    shapes = {t: np.shape(k)[1:] for t, k in task_keys.items()}
    if len(set(shapes.values())) > 1:
      raise AffinityDataError(f"Keys of different shapes {sorted(set(shapes.values()))}; the "
                              "head needs one prompt length and embedding size")
    rows, start, stacked = {}, 0, []
    for task in sorted(task_keys):
      keys = np.asarray(task_keys[task], np.float32)
      if keys.ndim != 3 or not len(keys):
        raise AffinityDataError(f"Keys of {task!r} must be [K >= 1, L, E], got {keys.shape}")
      rows[task] = np.arange(start, start + len(keys), dtype=np.int32)
      start += len(keys)
      stacked.append(keys)
    return cls(np.concatenate(stacked), rows)

  def examples(self, pairs: Sequence[Pair], gains: Mapping[Pair, float]) -> Examples:
    missing = sorted({t for p in pairs for t in p if t not in self.rows})
    if missing:
      raise AffinityDataError(f"No keys for tasks {missing}; add their runs to the library "
                              "(or pass the study directory)")
    t, s, y, index = [], [], [], []
    for i, (source, target) in enumerate(pairs):
      for row_t in self.rows[target]:
        for row_s in self.rows[source]:
          t.append(row_t), s.append(row_s), y.append(gains[(source, target)]), index.append(i)
    return Examples(np.asarray(t, np.int32), np.asarray(s, np.int32),
                    np.asarray(y, np.float32), np.asarray(index, np.int32), list(pairs))
