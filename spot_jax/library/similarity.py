"""Task similarity between prompt keys (task embeddings): pure numpy functions.

A key is a prompt [L, embed]. Pooled metrics compare one vector per key (`pool`); the per-token
distance metrics compare all token pairs of two full keys [L, embed].

  cosine               cos(mean(a), mean(b))                              SPoT §3.2
  per_token_cosine     1/(La Lb) sum_ij cos(a_i, b_j) = unit_mean(a) . unit_mean(b)    SPoT §3.2
  euclidean            1 / (1 + ||mean(a) - mean(b)||_2)                  Feng et al. (EMNLP 2023)
  manhattan            1 / (1 + ||mean(a) - mean(b)||_1)                  Feng et al. (EMNLP 2023)
  per_token_euclidean  1 / (1 + 1/(La Lb) sum_ij ||a_i - b_j||_2)          Feng et al. (EMNLP 2023)
  per_token_manhattan  1 / (1 + 1/(La Lb) sum_ij ||a_i - b_j||_1)          Feng et al. (EMNLP 2023)

Feng et al. = "Learning to predict task transferability via soft prompt" (EMNLP 2023). Every
score is "higher = more similar".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

POOLED_FORMS = ("mean", "unit_mean")
CHUNK_ELEMENTS = 1 << 24  # float64 elements per chunk of keys (128 MiB) in `scores`.


class LibraryError(ValueError):
  """Bad input to the prompt library or its similarities (re-exported by store.py)."""


@dataclasses.dataclass(frozen=True)
class Metric:
  """A similarity between keys; `form` says what it compares ("mean"|"unit_mean"|"full")."""

  name: str
  form: str
  description: str


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("cosine", "mean", "cosine of the average tokens (SPoT)"),
    Metric("per_token_cosine", "unit_mean",
           "average cosine over all token pairs (SPoT) = dot of the unit-token means"),
    Metric("euclidean", "mean", "1/(1+d), d the Euclidean distance of the average tokens"),
    Metric("manhattan", "mean", "1/(1+d), d the Manhattan distance of the average tokens"),
    Metric("per_token_euclidean", "full",
           "1/(1+d), d the Euclidean distance averaged over all token pairs"),
    Metric("per_token_manhattan", "full",
           "1/(1+d), d the Manhattan distance averaged over all token pairs"),
)}


def get_metric(name: str) -> Metric:
  if name not in METRICS:
    raise LibraryError(f"Unknown similarity metric {name!r}; choose one of {sorted(METRICS)}")
  return METRICS[name]


def _check_form(form: str, allowed: tuple[str, ...] = POOLED_FORMS) -> None:
  if form not in allowed:
    raise LibraryError(f"Unknown key form {form!r}; choose one of {list(allowed)}")


def pool(prompts: np.ndarray, form: str) -> np.ndarray:
  """[..., L, E] -> [..., E] float32.

  "mean": (1/L) sum_i p_i.  "unit_mean": (1/L) sum_i p_i / ||p_i|| (zero tokens stay zero).
  """
  _check_form(form)
  prompts = np.asarray(prompts, np.float64)
  if prompts.ndim < 2:
    raise LibraryError(f"pool expects prompts [..., L, E]; got shape {prompts.shape}")
  if form == "unit_mean":
    norms = np.linalg.norm(prompts, axis=-1, keepdims=True)
    prompts = prompts / np.where(norms > 0, norms, 1.0)
  return prompts.mean(axis=-2).astype(np.float32)


def center(keys: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
  """keys minus `mean` (default: the mean key of `keys`).

  Pooled keys [N, E]: the mean over entries [E]. Full keys [N, L, E]: the mean over entries and
  tokens [E].
  """
  keys = np.asarray(keys, np.float32)
  if keys.ndim not in (2, 3):
    raise LibraryError(f"center expects keys [N, E] or [N, L, E]; got shape {keys.shape}")
  if mean is None:
    mean = keys.reshape(-1, keys.shape[-1]).mean(axis=0, dtype=np.float64)
  return (keys - np.asarray(mean, np.float32)).astype(np.float32)


# ----------------------------------------------------------------------------- distances


def _unit(x: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.where(norms > 0, norms, 1.0)


def _euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[M, E], [K, E] -> [M, K]: sqrt(max(0, ||a||^2 - 2 a.b + ||b||^2)) via one matrix product."""
  sq = (a * a).sum(-1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(-1)[None, :]
  return np.sqrt(np.maximum(sq, 0.0))


def _manhattan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[M, E], [K, E] -> [M, K]: sum_e |a_e - b_e|."""
  from scipy.spatial import distance  # imported here: scipy slows every command's start-up.
  return distance.cdist(a, b, "cityblock")


def _inverse(d: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + d)


_POOLED: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    # query [1, E] (float64), keys chunk [K, E] (float64) -> [K]
    "cosine": lambda q, k: (_unit(k) @ _unit(q)[0]),
    "per_token_cosine": lambda q, k: k @ q[0],
    "euclidean": lambda q, k: _inverse(_euclidean(q, k)[0]),
    "manhattan": lambda q, k: _inverse(_manhattan(q, k)[0]),
}
_TOKEN_DISTANCE = {"per_token_euclidean": _euclidean, "per_token_manhattan": _manhattan}


def _chunks(keys: np.ndarray) -> Any:
  per_key = int(np.prod(keys.shape[1:])) or 1
  step = max(1, CHUNK_ELEMENTS // per_key)
  for start in range(0, keys.shape[0], step):
    yield np.asarray(keys[start: start + step], np.float64)


def scores(metric: str, query: np.ndarray, keys: np.ndarray) -> np.ndarray:
  """Similarity of `query` to each key, [N] float64 (higher = more similar).

  Pooled metrics: query [E], keys [N, E] (both pooled with the metric's form). "full" metrics:
  query [Lq, E], keys [N, L, E]. Keys are processed in chunks to bound memory.
  """
  m = get_metric(metric)
  query, keys = np.asarray(query), np.asarray(keys)
  full = m.form == "full"
  if query.ndim != (2 if full else 1) or keys.ndim != query.ndim + 1 \
      or query.shape[-1] != keys.shape[-1]:
    expected = "query [Lq, E] and keys [N, L, E]" if full else "query [E] and keys [N, E]"
    raise LibraryError(f"Metric {metric!r} compares {expected}; got query {query.shape} and "
                         f"keys {keys.shape}")
  q = np.asarray(query, np.float64)
  if not full:
    parts = [_POOLED[metric](q[None], chunk) for chunk in _chunks(keys)]
  else:
    token_distance = _TOKEN_DISTANCE[metric]
    parts = []
    for chunk in _chunks(keys):
      d = token_distance(q, chunk.reshape(-1, chunk.shape[-1]))  # [Lq, K * L]
      parts.append(_inverse(d.reshape(q.shape[0], chunk.shape[0], -1).mean(axis=(0, 2))))
  return np.concatenate(parts) if parts else np.zeros((0,), np.float64)


def ensemble_scores(metric: str, queries: Mapping[str, np.ndarray],
                    keys: Mapping[str, np.ndarray]) -> np.ndarray:
  """The mean over methods of `scores(metric, queries[m], keys[m])`, [N] (TuPaTE Table 3).

  One query and one key matrix per method (e.g. prompt keys pooled [N, E], LoRA task embeddings
  [N, D]); row i of every method's keys must be the same source. Each method's embeddings are
  only ever compared with the same method's.
  """
  if not queries or set(queries) != set(keys):
    raise LibraryError(f"An ensemble needs one query and one key matrix per method; got queries "
                       f"for {sorted(queries)} and keys for {sorted(keys)}")
  rows = {m: np.shape(k)[0] for m, k in keys.items()}
  if len(set(rows.values())) != 1:
    raise LibraryError(f"Every method must score the same sources; key rows per method: {rows}")
  return np.mean([scores(metric, queries[m], keys[m]) for m in sorted(queries)], axis=0)


def pairwise(metric: str, keys: np.ndarray) -> np.ndarray:
  """[N, N] similarities between all keys: row i = scores(metric, keys[i], keys)."""
  keys = np.asarray(keys)
  return np.stack([scores(metric, k, keys) for k in keys]) if len(keys) else np.zeros((0, 0))


def group_average(matrix: np.ndarray, groups: list[str]) -> tuple[list[str], np.ndarray]:
  """Average an [N, N] entry similarity over groups: ([G sorted], [G, G]).

  Cell (a, b) averages matrix[i, j] over entries i of a and j of b (SPoT footnote 14). On the
  diagonal, an entry's pairing with itself is left out when the group has > 1 entry.
  """
  names = sorted(set(groups))
  members = [np.flatnonzero(np.asarray(groups) == name) for name in names]
  out = np.zeros((len(names), len(names)))
  for a, rows in enumerate(members):
    for b, cols in enumerate(members):
      block = matrix[np.ix_(rows, cols)]
      if a == b and len(rows) > 1:
        block = block[~np.eye(len(rows), dtype=bool)]
      out[a, b] = block.mean()
  return names, out


RUN_SEPARATOR = "@"  # a run's label in a per-run similarity matrix: `<task>@<seed>`.


def entry_similarity(library: Any, metric: str, *, center_keys: bool = False,
                     model: Any = None) -> tuple[list[Any], np.ndarray]:
  """(entries, [N, N]): the similarity of every pair of library entries' keys.

  Keys come from `library` (a PromptLibrary) for one frozen model (`model`, or the only one).
  With `center_keys`, the library's mean key is subtracted first.
  """
  m = get_metric(metric)
  if m.form == "full":
    entries, keys = library.full_keys(model=model)
  else:
    entries, keys = library.pooled_keys(m.form, model=model)
  if not entries:
    raise LibraryError("The library holds no entries to compare"
                         + (f" for model {model}" if model is not None else ""))
  if center_keys:
    keys = center(keys)
  return entries, pairwise(metric, keys)


def task_similarity(library: Any, metric: str, *, center_keys: bool = False,
                    model: Any = None) -> tuple[list[str], np.ndarray]:
  """(tasks sorted, [T, T]): similarity of each task pair averaged over their entries."""
  entries, matrix = entry_similarity(library, metric, center_keys=center_keys, model=model)
  return group_average(matrix, [e.task for e in entries])


def run_similarity(library: Any, metric: str, *, center_keys: bool = False,
                   model: Any = None) -> tuple[list[str], np.ndarray]:
  """(labels `<task>@<seed>` sorted, [N, N]): one row per entry (prompt tuning run), as SPoT
  Figure 7 shows them; every entry needs a seed, and one entry per (task, seed)."""
  entries, matrix = entry_similarity(library, metric, center_keys=center_keys, model=model)
  unseeded = [e.id for e in entries if e.seed is None]
  if unseeded:
    raise LibraryError(f"Entries {unseeded[:5]} have no seed, so no run label <task>@<seed>; "
                       "use the task-level similarity, or add them with their seed")
  labels = [f"{e.task}{RUN_SEPARATOR}{e.seed}" for e in entries]
  repeated = sorted({label for label in labels if labels.count(label) > 1})
  if repeated:
    raise LibraryError(f"Several entries are the run {repeated[:5]}; keep one entry per task "
                       "and seed (or filter the library by model) for a per-run matrix")
  order = np.argsort(labels, kind="stable")
  return [labels[i] for i in order], matrix[np.ix_(order, order)]
