"""Targeted retrieval (SPoT §3.3): rank library entries by the similarity of their keys to a
target task's key.

The core is pure: `top_k` (exact, ties to the lower index) and `KeyIndex`, which precomputes
per-library quantities of a pooled metric once (unit rows for cosine, squared norms for
euclidean) so that a query costs one pass over the keys `[N, embed]`. `retrieve` is the thin
glue over a `PromptLibrary`: one frozen model's entries only, optional exclusion of the
target's own task, optional centring with the library mean, and task-level ranking (the
average over a task's entries, SPoT footnote 14). Similarities are those of
`spot_jax.library.similarity` (higher = more similar).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from spot_jax.library import similarity
from spot_jax.library.store import Entry, LibraryError, ModelIdentity, PromptLibrary

POOLED_METRICS = ("cosine", "per_token_cosine", "euclidean", "manhattan")
MANHATTAN_BACKENDS = ("jax", "numpy")
# The jitted JAX reduction beat numpy's chunked subtract/abs/sum on one CPU core
# (benchmarks/retrieval.py reports both).
DEFAULT_MANHATTAN_BACKEND = "jax"
# Relative rounding margin of the float32 first pass; candidates within it are re-ranked exactly.
RANKING_TOLERANCE = 1e-4
_NUMPY_CHUNK_ROWS = 512  # [512, 768] float32 = 1.5 MiB: stays in L2/L3 between the passes.


def top_k(scores: np.ndarray, k: int | None) -> np.ndarray:
  """Indices of the `k` largest of `scores` [N], by score descending, ties to the lower index.

  `k=None` or `k >= N` sorts all N. Exact: `np.argpartition` finds the k-th largest value, then
  only the candidates at or above it are sorted.
  """
  scores = np.asarray(scores)
  if scores.ndim != 1:
    raise ValueError(f"top_k needs scores of shape [N], got {scores.shape}")
  n = scores.shape[0]
  if k is not None and k < 0:
    raise ValueError(f"top_k: k must be >= 0 (or None for all), got {k}")
  if k is None or k >= n:
    return np.argsort(-scores, kind="stable")
  if k == 0:
    return np.zeros(0, np.int64)
  kth = scores[np.argpartition(scores, n - k)[n - k]]  # the k-th largest value.
  above = np.flatnonzero(scores > kth)
  ties = np.flatnonzero(scores == kth)[: k - above.size]
  candidates = np.concatenate([above, ties])
  return candidates[np.lexsort((candidates, -scores[candidates]))]


@functools.lru_cache(maxsize=None)
def _jax_manhattan():
  import jax
  import jax.numpy as jnp
  return jax.jit(lambda keys, query: jnp.sum(jnp.abs(keys - query), axis=1))


def _numpy_manhattan(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
  """sum_e |keys[n, e] - query[e]| -> [N], in cache-sized chunks with one reused buffer."""
  out = np.empty(keys.shape[0], np.float32)
  buffer = np.empty((min(_NUMPY_CHUNK_ROWS, keys.shape[0]), keys.shape[1]), np.float32)
  for start in range(0, keys.shape[0], _NUMPY_CHUNK_ROWS):
    rows = keys[start:start + _NUMPY_CHUNK_ROWS]
    chunk = buffer[:rows.shape[0]]
    np.subtract(rows, query, out=chunk)
    np.abs(chunk, out=chunk)
    chunk.sum(axis=1, out=out[start:start + rows.shape[0]])
  return out


@dataclasses.dataclass(frozen=True)
class KeyIndex:
  """Pooled keys [N, embed] prepared for exact search with one pooled metric.

  keys: the pooled keys [N, embed] float32 (the caller's array when it is float32: no copy).
  matrix: what the first pass reads: unit rows for cosine (a copy), a jax.Array copy for
    manhattan with the jax backend, else `keys` itself. sq_norms: [N] (euclidean only).

  `search` ranks all N keys with one fast float32 pass (a matrix-vector product, or the jitted
  L1 reduction), then recomputes the similarities of the candidates within a rounding margin of
  the k-th best with `similarity.scores` (float64) and ranks those: the result equals ranking
  `similarity.scores` itself.
  """

  metric: str
  keys: np.ndarray
  matrix: Any
  sq_norms: np.ndarray | None = None
  backend: str = "numpy"

  @classmethod
  def build(cls, keys: np.ndarray, metric: str, *,
            manhattan_backend: str = DEFAULT_MANHATTAN_BACKEND) -> KeyIndex:
    """keys: pooled keys [N, embed] in the metric's pooled form (`similarity.pool`)."""
    if metric not in POOLED_METRICS:
      raise LibraryError(f"KeyIndex supports the pooled metrics {POOLED_METRICS}, not "
                         f"{metric!r}; per-token distances use similarity.scores on full keys")
    keys = np.asarray(keys, np.float32)
    if keys.ndim != 2:
      raise LibraryError(f"KeyIndex needs pooled keys [N, embed], got shape {keys.shape}")
    if metric == "cosine":
      norms = np.sqrt(np.einsum("ne,ne->n", keys, keys))[:, None]  # no [N, E] temporary.
      return cls(metric, keys, keys / np.where(norms > 0, norms, 1.0))
    if metric == "euclidean":
      return cls(metric, keys, keys, sq_norms=np.einsum("ne,ne->n", keys, keys))
    if metric == "manhattan":
      if manhattan_backend not in MANHATTAN_BACKENDS:
        raise LibraryError(f"Unknown manhattan backend {manhattan_backend!r}; "
                           f"choose one of {MANHATTAN_BACKENDS}")
      if manhattan_backend == "jax":
        import jax.numpy as jnp
        return cls(metric, keys, jnp.asarray(keys), backend="jax")
    return cls(metric, keys, keys)

  @property
  def size(self) -> int:
    return int(self.keys.shape[0])

  @property
  def nbytes(self) -> int:
    """Bytes of the keys plus what the index adds (unit rows, jax copy, norms)."""
    extra = 0 if self.sq_norms is None else self.sq_norms.nbytes
    copy = 0 if self.matrix is self.keys else self.matrix.nbytes
    return int(self.keys.nbytes) + int(copy) + int(extra)

  def _check_query(self, query: np.ndarray) -> np.ndarray:
    query = np.asarray(query, np.float32)
    if query.shape != (self.matrix.shape[1],):
      raise LibraryError(f"Query of shape {query.shape} does not match the index keys "
                         f"[N, {self.matrix.shape[1]}]; pool the query with the metric's form")
    return query

  def _ranking_scores(self, query: np.ndarray) -> tuple[np.ndarray, float]:
    """([N] float32 scores ordered like the similarities, their rounding scale)."""
    if self.metric == "cosine":
      norm = float(np.linalg.norm(query))
      return self.matrix @ (query / norm if norm > 0 else query), 1.0
    if self.metric == "per_token_cosine":  # unit-mean keys have norms <= 1.
      return self.matrix @ query, float(np.linalg.norm(query))
    if self.metric == "euclidean":  # -||k - q||^2 + ||q||^2 = 2 k.q - ||k||^2.
      return (2 * (self.matrix @ query) - self.sq_norms,
              float(self.sq_norms.max(initial=0.0) + query @ query))
    if self.backend == "jax":
      return -np.asarray(_jax_manhattan()(self.matrix, query)), 0.0
    return -_numpy_manhattan(self.matrix, query), 0.0

  def _exact(self, query: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """similarity.scores of the query against all keys or the given rows, float64."""
    keys = self.keys if rows is None else self.keys[rows]
    return similarity.scores(self.metric, query, keys)

  def scores(self, query: np.ndarray) -> np.ndarray:
    """Similarities [N] (float64) of the pooled query [embed] to every key."""
    return self._exact(self._check_query(query))

  def search(self, query: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(indices [k], similarities [k]) of the k most similar keys, best first (k=None: all)."""
    query = self._check_query(query)
    if k is None or k >= self.size:
      exact = self._exact(query)
      order = top_k(exact, None)
      return order, exact[order]
    ranking, scale = self._ranking_scores(query)
    kth = ranking[top_k(ranking, k)[-1]] if k else np.inf
    candidates = np.flatnonzero(ranking >= kth - RANKING_TOLERANCE * (abs(kth) + scale))
    exact = self._exact(query, candidates)
    order = top_k(exact, k)
    return candidates[order], exact[order]


@dataclasses.dataclass(frozen=True)
class Ranked:
  """One retrieved library entry; rank 1 is the most similar. With `by_task`, `entry` is the
  task's best entry and `score` the task's average similarity."""

  entry: Entry
  score: float
  rank: int


def _library_keys(library: PromptLibrary, metric: similarity.Metric, query: np.ndarray,
                  model: ModelIdentity, center_keys: bool
                  ) -> tuple[list[Entry], np.ndarray, np.ndarray]:
  """(entries, keys [N, E] or [N, L, E], query [E] or [L, E]) in the metric's form."""
  if metric.form == "full":
    entries, keys = library.full_keys(model=model)
  else:
    entries, keys = library.pooled_keys(metric.form, model=model)
    query = similarity.pool(query, metric.form)
  if not entries:
    raise LibraryError(f"The library holds no entries of model {model.name} "
                       f"(fingerprint {model.fingerprint}); models present: "
                       f"{[(m.name, m.fingerprint) for m in library.models()]}")
  keys = np.asarray(keys, np.float32)
  if center_keys:
    mean = keys.reshape(-1, keys.shape[-1]).mean(axis=0, dtype=np.float64)
    keys = similarity.center(keys, mean)
    query = similarity.center(query.reshape(-1, query.shape[-1]), mean).reshape(query.shape)
  return entries, keys, query


def retrieve(library: PromptLibrary, query_key: np.ndarray, *, model: ModelIdentity,
             metric: str = "cosine", k: int | None = None, exclude_task: str | None = None,
             center_keys: bool = False, by_task: bool = False, scorer: Any = None,
             target: str | None = None) -> list[Ranked]:
  """The k library entries (or, with `by_task`, tasks) most similar to the query key [L, E]
  (a prompt; for non-prompt methods their embedding [D] or [1, D]).

  Only entries of `model` (a ModelIdentity: frozen model, method, embedding kind) are searched,
  so a LoRA embedding is never compared with a prompt. `center_keys` subtracts the mean key of the model's
  entries (all of them, before `exclude_task`) from keys and query alike. A `scorer`
  (`spot_jax.library.scorers`, e.g. the affinity head) replaces `metric`: it rates the full
  keys [N, L, E] of the entries (told the entries' tasks and the `target` name).
  """
  query = np.asarray(query_key, np.float32)
  if not model.is_prompt and query.ndim == 1:
    query = query[None]  # a vector embedding [D] is a one-token key [1, D].
  if query.ndim != 2 or query.shape[1] != model.key_width:
    need = (f"a prompt [L, {model.emb_dim}]" if model.is_prompt
            else f"a {model.method} {model.embedding} embedding [{model.key_width}]")
    raise LibraryError(f"Query key has shape {query.shape}; model {model.name} needs {need}: "
                       "compute the key with the same frozen model and method")
  if scorer is not None:
    return _retrieve_scored(library, query, scorer, model, k, exclude_task, center_keys,
                            by_task, target)
  spec = similarity.get_metric(metric)
  entries, keys, query = _library_keys(library, spec, query, model, center_keys)
  keep = np.asarray([e.task != exclude_task for e in entries])
  entries = [e for e, kept in zip(entries, keep) if kept]
  if not entries:
    raise LibraryError(f"No library entries of model {model.name} left after excluding task "
                       f"{exclude_task!r}")
  keys = keys if keep.all() else keys[keep]
  if spec.form != "full" and k is not None and not by_task:
    order, best = KeyIndex.build(keys, spec.name).search(query, k)
    return [Ranked(entries[i], float(s), rank) for rank, (i, s) in enumerate(zip(order, best), 1)]
  scores = similarity.scores(spec.name, query, keys)  # every score is needed: no index.
  if by_task:
    return rank_tasks(entries, scores, k)
  return [Ranked(entries[i], float(scores[i]), rank) for rank, i in enumerate(top_k(scores, k), 1)]


def _retrieve_scored(library: PromptLibrary, query: np.ndarray, scorer: Any,
                     model: ModelIdentity, k: int | None, exclude_task: str | None,
                     center_keys: bool, by_task: bool, target: str | None) -> list[Ranked]:
  """`retrieve` with a scorer over the full keys of the model's entries."""
  full = similarity.Metric(scorer.name, "full", "")
  entries, keys, query = _library_keys(library, full, query, model, center_keys)
  keep = [i for i, e in enumerate(entries) if e.task != exclude_task]
  if not keep:
    raise LibraryError(f"No library entries of model {model.name} left after excluding task "
                       f"{exclude_task!r}")
  entries, keys = [entries[i] for i in keep], keys[keep]
  scores = np.asarray(scorer.score(query, keys, target=target,
                                   pool_tasks=[e.task for e in entries]), np.float64)
  if by_task:
    return rank_tasks(entries, scores, k)
  return [Ranked(entries[i], float(scores[i]), rank) for rank, i in enumerate(top_k(scores, k), 1)]


def rank_tasks(entries: list[Entry], scores: np.ndarray, k: int | None = None) -> list[Ranked]:
  """Tasks ranked by the mean score of their entries; each represented by its best entry."""
  tasks = sorted({e.task for e in entries})
  column = {task: i for i, task in enumerate(tasks)}
  members = np.asarray([column[e.task] for e in entries])
  means = (np.bincount(members, weights=scores, minlength=len(tasks))
           / np.bincount(members, minlength=len(tasks)))
  best = {}
  for i in top_k(scores, None):  # best first: the first entry seen per task is its best.
    best.setdefault(entries[i].task, entries[i])
  return [Ranked(best[tasks[t]], float(means[t]), rank)
          for rank, t in enumerate(top_k(means, k), 1)]
