"""Transferability scorers, one interface: `scorer.score(target_key, pool_keys, ...) -> [N]`.

A scorer rates how well each pool entry (a source prompt's key) should transfer to a target,
higher = more transferable. Keys are prompts: the target's [L, E], the pool's [N, L, E]. A scorer
may also read the tasks of the pool entries (`pool_tasks`, data size) or the target's name
(`target`, random). Names accepted by `get_scorer`:

  cosine, per_token_cosine, euclidean, manhattan,   the six similarities of
  per_token_euclidean, per_token_manhattan          `spot_jax.library.similarity`
  ensemble:METRIC        TuPaTE's ensemble (Zhou et al. 2022, Table 3): the mean over
                         methods (prompt, LoRA, prefix... keys, each compared only with the
                         same method's) of METRIC's task scores; needs one target key per
                         method (`ensemble_predictions`, pipeline.rank_sources with one query
                         per method); over a single method's keys it is METRIC itself
  max_pairwise           for each source token the max cosine over the target's tokens,
                         averaged over source tokens (Lin et al. 2024, "Selecting source
                         prompts ... prompt similarity"): [N]
  data_size              the training-set size of each entry's task (needs pool_tasks)
  random[:SEED]          uniform noise, reproducible per (seed, target)
  affinity:PATH          the learned affinity head trained by `spot-jax affinity train`
  textemb:CHECKPOINT     TextEmb: cosine of the tasks' mean-pooled frozen-encoder states over
                         their inputs (Vu et al. 2020; needs target and pool_tasks)
  fisher:CHECKPOINT      prompt-Fisher TaskEmb: cosine of the diagonal Fisher of each task's
                         loss with respect to its key prompt (needs target and pool_tasks)
  curvegrad:STUDY_DIR    CurveGrad (Bingel and Søgaard 2017; Vu et al. 2020; TuPaTE §4.2):
                         cosine of the tasks' tuning-loss-curve gradients, read from the
                         study's runs (`spot_jax.library.curvegrad`; needs target, pool_tasks)

Keys of non-prompt methods are their task embedding [D] as one-token keys [1, D], so every
similarity applies. Model-based scorers (`affinity:`, `textemb:`, `fisher:`) live in
`spot_jax.affinity`, CurveGrad in `spot_jax.library.curvegrad`; they are imported only when
named, so this module imports with numpy alone.
"""

from __future__ import annotations

import dataclasses
import importlib
import zlib
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np

from spot_jax.library import similarity
from spot_jax.library.similarity import LibraryError

SIMILARITY_SCORERS = tuple(similarity.METRICS)
BASELINE_SCORERS = ("max_pairwise", "data_size", "random")
ENSEMBLE = "ensemble"
# Prefix -> module with `load_scorer(argument) -> Scorer` (imported on use: model-based scorers).
MODEL_SCORER_MODULES = {"affinity": "spot_jax.affinity.predict",
                        "textemb": "spot_jax.affinity.textemb",
                        "fisher": "spot_jax.affinity.fisher",
                   "curvegrad": "spot_jax.library.curvegrad"}
_CHUNK_ELEMENTS = 1 << 22  # float64 elements of the [chunk, Ls, Lt] cosine block (32 MiB).


class Scorer(Protocol):
  """Anything with a name and `score`; higher = predicted more transferable."""

  name: str

  def score(self, target_key: np.ndarray, pool_keys: np.ndarray, *, target: str | None = None,
            pool_tasks: Sequence[str] | None = None) -> np.ndarray:
    """target_key [L, E], pool_keys [N, L', E] -> [N] float64."""


def check_keys(target_key: np.ndarray, pool_keys: np.ndarray, name: str
               ) -> tuple[np.ndarray, np.ndarray]:
  """(target [L, E], pool [N, L', E]) as float32, or one error naming the shapes."""
  target_key, pool_keys = np.asarray(target_key, np.float32), np.asarray(pool_keys, np.float32)
  if target_key.ndim != 2 or pool_keys.ndim != 3 or target_key.shape[-1] != pool_keys.shape[-1]:
    raise LibraryError(f"Scorer {name!r} needs a target key [L, E] and pool keys [N, L', E] of "
                       f"the same E; got {target_key.shape} and {pool_keys.shape}")
  return target_key, pool_keys


@dataclasses.dataclass(frozen=True)
class SimilarityScorer:
  """One of the six similarities (pooled metrics pool both sides with the metric's form)."""

  metric: str

  @property
  def name(self) -> str:
    return self.metric

  def score(self, target_key, pool_keys, *, target=None, pool_tasks=None) -> np.ndarray:
    form = similarity.get_metric(self.metric).form
    target_key, pool_keys = check_keys(target_key, pool_keys, self.name)
    if form == "full":
      return similarity.scores(self.metric, target_key, pool_keys)
    return similarity.scores(self.metric, similarity.pool(target_key, form),
                             similarity.pool(pool_keys, form))


@dataclasses.dataclass(frozen=True)
class MaxPairwiseScorer:
  """mean_s max_t cos(source_s, target_t) per entry: [N] (Lin et al. 2024)."""

  name: str = "max_pairwise"

  def score(self, target_key, pool_keys, *, target=None, pool_tasks=None) -> np.ndarray:
    target_key, pool_keys = check_keys(target_key, pool_keys, self.name)
    unit_target = similarity._unit(np.asarray(target_key, np.float64))  # [Lt, E]
    per_entry = int(np.prod(pool_keys.shape[1:2])) * target_key.shape[0] or 1
    step = max(1, _CHUNK_ELEMENTS // per_entry)
    out = []
    for start in range(0, pool_keys.shape[0], step):
      chunk = similarity._unit(np.asarray(pool_keys[start:start + step], np.float64))
      cosines = np.einsum("nse,te->nst", chunk, unit_target)  # [n, Ls, Lt]
      out.append(cosines.max(axis=2).mean(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


@dataclasses.dataclass(frozen=True)
class DataSizeScorer:
  """The training-set size of each pool entry's task (larger = more transferable)."""

  size_of: Callable[[str], float]
  name: str = "data_size"

  def score(self, target_key, pool_keys, *, target=None, pool_tasks=None) -> np.ndarray:
    if pool_tasks is None or len(pool_tasks) != len(pool_keys):
      raise LibraryError("The data_size scorer needs the task of every pool entry (pool_tasks)")
    return np.asarray([float(self.size_of(t)) for t in pool_tasks], np.float64)


@dataclasses.dataclass(frozen=True)
class RandomScorer:
  """Uniform [0, 1) scores from a generator seeded by (seed, crc32(target)): reproducible."""

  seed: int = 0

  @property
  def name(self) -> str:
    return f"random:{self.seed}"

  def score(self, target_key, pool_keys, *, target=None, pool_tasks=None) -> np.ndarray:
    salt = zlib.crc32((target or "").encode())
    return np.random.default_rng([self.seed, salt]).random(len(pool_keys))


@dataclasses.dataclass(frozen=True)
class EnsembleScorer:
  """The mean over methods of one similarity metric's task scores (TuPaTE Table 3).

  Each method's keys are scored only against the same method's (`ensemble_predictions`,
  `mean_over_methods`); `score` over one pool of one method's keys is the metric itself (an
  ensemble of one)."""

  metric: str

  @property
  def name(self) -> str:
    return f"{ENSEMBLE}:{self.metric}"

  def score(self, target_key, pool_keys, *, target=None, pool_tasks=None) -> np.ndarray:
    return SimilarityScorer(self.metric).score(target_key, pool_keys)

  def predictions(self, task_keys: Mapping[str, Mapping[str, np.ndarray]],
                  targets: Sequence[str], sources: Sequence[str]
                  ) -> dict[str, dict[str, float]]:
    """{target: {source: mean over methods of the metric's task score}}.

    task_keys: {method: {task: keys [K, L, E]}}, every method holding every target and source.
    """
    if len(task_keys) < 1:
      raise LibraryError("An ensemble needs the keys of at least one method")
    member = SimilarityScorer(self.metric)
    per_method = {m: predictions(member, keys, targets, sources) for m, keys in task_keys.items()}
    return {target: mean_over_methods({m: p[target] for m, p in per_method.items()})
            for target in next(iter(per_method.values()))}


def mean_over_methods(scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
  """{source task: mean over methods of its score} from {method: {source task: score}}, for the
  sources every method scored (an ensemble compares the same source tasks)."""
  if not scores:
    raise LibraryError("An ensemble needs the scores of at least one method")
  common = set.intersection(*(set(s) for s in scores.values()))
  if not common:
    raise LibraryError(f"The methods {sorted(scores)} score no common source task")
  return {task: float(np.mean([s[task] for s in scores.values()])) for task in sorted(common)}


def scorer_names() -> list[str]:
  """Every plain scorer name plus the `PREFIX:ARG` forms."""
  return [*SIMILARITY_SCORERS, *BASELINE_SCORERS, f"{ENSEMBLE}:METRIC",
          *(f"{p}:PATH" for p in MODEL_SCORER_MODULES)]


def short_name(spec: str) -> str:
  """A table label for a scorer spec: a model-based scorer's path argument dropped
  (`textemb:/runs/x/checkpoint_1500` -> `textemb`); every other spec as it is."""
  name, _, argument = spec.partition(":")
  return name if name in MODEL_SCORER_MODULES and argument else spec


def get_scorer(spec: str, *, size_of: Callable[[str], float] | None = None) -> Scorer:
  """The scorer named by `spec` (see the module docstring); `size_of` for data_size."""
  name, _, argument = spec.partition(":")
  if name in SIMILARITY_SCORERS and not argument:
    return SimilarityScorer(name)
  if name == "max_pairwise" and not argument:
    return MaxPairwiseScorer()
  if name == "data_size" and not argument:
    if size_of is None:
      raise LibraryError("The data_size scorer needs training-set sizes (CLI: --sizes "
                         "FILE.csv with columns task,size, or registered tasks)")
    return DataSizeScorer(size_of)
  if name == "random":
    try:
      return RandomScorer(int(argument) if argument else 0)
    except ValueError:
      raise LibraryError(f"Scorer {spec!r}: the random seed must be an integer") from None
  if name == ENSEMBLE:
    if argument not in SIMILARITY_SCORERS:
      raise LibraryError(f"Scorer {spec!r}: an ensemble averages one similarity metric over "
                         f"methods, e.g. ensemble:cosine; metrics: {list(SIMILARITY_SCORERS)}")
    return EnsembleScorer(argument)
  if name in MODEL_SCORER_MODULES and argument:
    return importlib.import_module(MODEL_SCORER_MODULES[name]).load_scorer(argument)
  raise LibraryError(f"Unknown scorer {spec!r}; choose one of {scorer_names()}")


# ----------------------------------------------------------------------------- task level


def task_scores(scorer: Scorer, target_keys: np.ndarray, pool_keys: np.ndarray,
                pool_tasks: Sequence[str], *, target: str | None = None) -> dict[str, float]:
  """{source task: score} for one target: entry scores averaged over the target's keys
  [K, L, E] (one per seed) and over each task's entries (SPoT footnote 14)."""
  target_keys = np.asarray(target_keys)
  if target_keys.ndim != 3 or not len(target_keys):
    raise LibraryError(f"target keys must be [K >= 1, L, E], got {target_keys.shape}")
  per_entry = np.mean([scorer.score(k, pool_keys, target=target, pool_tasks=pool_tasks)
                       for k in target_keys], axis=0)
  tasks = list(pool_tasks)
  return {t: float(np.mean([s for s, u in zip(per_entry, tasks) if u == t]))
          for t in sorted(set(tasks))}


def predictions(scorer: Scorer, task_keys: Mapping[str, np.ndarray], targets: Sequence[str],
                sources: Sequence[str]) -> dict[str, dict[str, float]]:
  """{target: {source: score}} for every target x source (a target is never its own source).

  task_keys: {task: keys [K, L, E]} holding every target and source.
  """
  missing = sorted(t for t in {*targets, *sources} if t not in task_keys)
  if missing:
    raise LibraryError(f"No keys for tasks {missing}; add their runs to the library (or the "
                       "study's source and baseline runs)")
  out = {}
  for target in targets:
    pool = [s for s in sources if s != target]
    if not pool:
      continue
    keys = np.concatenate([task_keys[s] for s in pool])
    tasks = [s for s in pool for _ in range(len(task_keys[s]))]
    out[target] = task_scores(scorer, task_keys[target], keys, tasks, target=target)
  return out
