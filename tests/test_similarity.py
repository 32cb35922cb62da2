"""Task similarity metrics between prompt keys: hand-computed values, loop definitions, task
averaging over runs (SPoT footnote 14) and centring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spot_jax.library import similarity
from spot_jax.library.similarity import METRICS, center, pairwise, pool, scores
from spot_jax.library.store import LibraryError, ModelIdentity, PromptLibrary

# Three tiny prompts [L=2, E=2].
A = np.array([[3.0, 4.0], [1.0, 0.0]])   # mean [2, 2]; unit tokens [.6, .8], [1, 0]
B = np.array([[0.0, 2.0], [2.0, 0.0]])   # mean [1, 1]; unit tokens [0, 1], [1, 0]
C = np.array([[-1.0, 0.0], [-3.0, 0.0]])  # mean [-2, 0]; unit tokens [-1, 0], [-1, 0]


def test_pool_forms_by_hand():
  np.testing.assert_allclose(pool(A, "mean"), [2.0, 2.0])
  # unit_mean(A) = ([.6, .8] + [1, 0]) / 2 = [.8, .4]
  np.testing.assert_allclose(pool(A, "unit_mean"), [0.8, 0.4], rtol=1e-6)
  np.testing.assert_allclose(pool(np.stack([A, B, C]), "unit_mean"),
                             [[0.8, 0.4], [0.5, 0.5], [-1.0, 0.0]], rtol=1e-6)
  assert pool(np.zeros((3, 2)), "unit_mean").tolist() == [0.0, 0.0]  # zero tokens stay zero
  with pytest.raises(LibraryError, match=r"Unknown key form 'max'.*'mean', 'unit_mean'"):
    pool(A, "max")


# Expected similarity of A to (B, C) per metric.
SQRT2, SQRT5, SQRT13, SQRT17 = (math.sqrt(x) for x in (2, 5, 13, 17))
HAND = {
    # cos([2,2], [1,1]) = 1; cos([2,2], [-2,0]) = -4 / (2*sqrt2 * 2) = -1/sqrt2
    "cosine": [1.0, -1 / SQRT2],
    # [.8,.4].[.5,.5] = .6 (pairs: .8, .6, 0, 1 -> 2.4/4); [.8,.4].[-1,0] = -.8
    # (pairs: -.6, -.6, -1, -1 -> -3.2/4)
    "per_token_cosine": [0.6, -0.8],
    # ||[2,2]-[1,1]|| = sqrt2; ||[2,2]-[-2,0]|| = ||[4,2]|| = sqrt20 = 2 sqrt5
    "euclidean": [1 / (1 + SQRT2), 1 / (1 + 2 * SQRT5)],
    # |1|+|1| = 2; |4|+|2| = 6
    "manhattan": [1 / 3, 1 / 7],
    # A-B token pairs: [3,2] sqrt13, [1,4] sqrt17, [1,-2] sqrt5, [-1,0] 1
    # A-C token pairs: [4,4] 4sqrt2, [6,4] 2sqrt13, [2,0] 2, [4,0] 4
    "per_token_euclidean": [1 / (1 + (SQRT13 + SQRT17 + SQRT5 + 1) / 4),
                            1 / (1 + (4 * SQRT2 + 2 * SQRT13 + 2 + 4) / 4)],
    # A-B: 5, 5, 3, 1 -> 3.5; A-C: 8, 10, 2, 4 -> 6
    "per_token_manhattan": [1 / 4.5, 1 / 7],
}


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_metrics_match_hand_computed_values(metric):
  assert set(HAND) == set(METRICS)
  form = METRICS[metric].form
  if form == "full":
    query, keys = A, np.stack([B, C])
  else:
    query, keys = pool(A, form), pool(np.stack([B, C]), form)
  np.testing.assert_allclose(scores(metric, query, keys), HAND[metric], rtol=1e-6)


def _cos(x, y):
  return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_per_token_metrics_equal_explicit_double_loops():
  rng = np.random.default_rng(0)
  query = rng.normal(size=(3, 6))          # Lq = 3 tokens
  keys = rng.normal(size=(4, 5, 6)) * 2.0  # 4 keys of L = 5 tokens
  loops = {"per_token_cosine": lambda a, b: np.mean([_cos(x, y) for x in a for y in b]),
           "per_token_euclidean": lambda a, b: 1 / (1 + np.mean(
               [np.linalg.norm(x - y) for x in a for y in b])),
           "per_token_manhattan": lambda a, b: 1 / (1 + np.mean(
               [np.abs(x - y).sum() for x in a for y in b]))}
  for metric, loop in loops.items():
    expected = [loop(query, key) for key in keys]
    form = METRICS[metric].form
    got = (scores(metric, query, keys) if form == "full"
           else scores(metric, pool(query, form), pool(keys, form)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=metric)


def test_pooled_distance_metrics_are_one_over_one_plus_distance():
  rng = np.random.default_rng(1)
  query, keys = rng.normal(size=8), rng.normal(size=(5, 8))
  np.testing.assert_allclose(scores("euclidean", query, keys),
                             1 / (1 + np.linalg.norm(keys - query, axis=1)), rtol=1e-6)
  np.testing.assert_allclose(scores("manhattan", query, keys),
                             1 / (1 + np.abs(keys - query).sum(axis=1)), rtol=1e-6)
  # A large vector against itself: ||k||^2 - 2 k.k + ||k||^2 rounds to -1.5e-8 here (checked
  # for this seed); clipped at 0 it gives d = 0 and similarity 1 instead of NaN.
  big = np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32) * 1e3
  assert scores("euclidean", big[0], big).tolist() == [1.0]


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_pairwise_rows_equal_scores(metric):
  rng = np.random.default_rng(2)
  prompts = rng.normal(size=(5, 3, 4))
  form = METRICS[metric].form
  keys = prompts if form == "full" else pool(prompts, form)
  matrix = pairwise(metric, keys)
  assert matrix.shape == (5, 5)
  for i in range(5):
    np.testing.assert_allclose(matrix[i], scores(metric, keys[i], keys), rtol=1e-12)
  np.testing.assert_allclose(matrix, matrix.T, rtol=1e-6)


def test_center_subtracts_the_mean_key():
  keys = np.array([[1.0, 2.0], [3.0, 4.0]])
  np.testing.assert_allclose(center(keys), [[-1, -1], [1, 1]])  # mean [2, 3]
  np.testing.assert_allclose(center(keys, mean=np.array([1.0, 0.0])), [[0, 2], [2, 4]])
  full = np.array([[[1.0, 0.0], [3.0, 2.0]], [[5.0, 4.0], [7.0, 6.0]]])  # mean over N, L: [4, 3]
  np.testing.assert_allclose(center(full), full - np.array([4.0, 3.0]))


def test_unknown_metric_and_bad_shapes():
  with pytest.raises(LibraryError, match=r"Unknown similarity metric 'cos'.*'cosine'"):
    scores("cos", np.zeros(2), np.zeros((1, 2)))
  with pytest.raises(LibraryError, match=r"query \[E\] and keys \[N, E\]"):
    scores("cosine", np.zeros(3), np.zeros((1, 2)))
  with pytest.raises(LibraryError, match=r"query \[Lq, E\] and keys \[N, L, E\]"):
    scores("per_token_euclidean", np.zeros(2), np.zeros((1, 2)))


@pytest.fixture
def two_task_library(tmp_path):
  """Task x: two runs with mean keys [1, 0] and [0, 1]; task y: one run with mean key [1, 1]."""
  library = PromptLibrary(str(tmp_path / "lib"), create=True)
  model = ModelIdentity("tiny", 2, "fp")
  for task, seed, key in (("x", 0, [[1, 0], [1, 0]]), ("x", 1, [[0, 1], [0, 1]]),
                          ("y", 0, [[1, 1], [1, 1]])):
    library.add(task=task, value=np.ones((2, 2)) * (seed + 1), key=np.array(key, float),
                model=model, seed=seed)
  return library


def test_task_similarity_averages_over_pairs_of_runs(two_task_library):
  tasks, matrix = similarity.task_similarity(two_task_library, "cosine")
  assert tasks == ["x", "y"]
  r = 1 / SQRT2
  # (x, x): cos(x0, x1) = 0 only (the self-pairs are left out; with them it would be 0.5).
  # (x, y): (cos([1,0],[1,1]) + cos([0,1],[1,1])) / 2 = 1/sqrt2.  (y, y): one run, cos = 1.
  np.testing.assert_allclose(matrix, [[0.0, r], [r, 1.0]], atol=1e-7)
  # manhattan: x0-x1: 2 -> 1/3; x-y: 1 -> 1/2 for both runs; y-y: 0 -> 1
  _, matrix = similarity.task_similarity(two_task_library, "manhattan")
  np.testing.assert_allclose(matrix, [[1 / 3, 0.5], [0.5, 1.0]], rtol=1e-6)
  # Centred: library mean key [2/3, 2/3]; x0 -> [1/3, -2/3], x1 -> [-2/3, 1/3], y -> [1/3, 1/3]
  # cos(x0, x1) = (-2/9 - 2/9) / (5/9) = -0.8; cos(x0, y) = cos(x1, y) = (-1/9) / (sqrt10/9)
  _, matrix = similarity.task_similarity(two_task_library, "cosine", center_keys=True)
  np.testing.assert_allclose(matrix, [[-0.8, -1 / math.sqrt(10)], [-1 / math.sqrt(10), 1.0]],
                             rtol=1e-5)
  # Per-token metrics use the full keys: x0-x1 token distances are all sqrt2.
  _, matrix = similarity.task_similarity(two_task_library, "per_token_euclidean")
  np.testing.assert_allclose(matrix[0, 0], 1 / (1 + SQRT2), rtol=1e-6)


def test_task_similarity_needs_entries(tmp_path):
  library = PromptLibrary(str(tmp_path / "empty"), create=True)
  with pytest.raises(LibraryError, match="no entries"):
    similarity.task_similarity(library, "cosine")


def test_run_similarity_has_one_row_per_seeded_entry(two_task_library, tmp_path):
  labels, matrix = similarity.run_similarity(two_task_library, "cosine")
  assert labels == ["x@0", "x@1", "y@0"]
  r = 1 / SQRT2
  np.testing.assert_allclose(matrix, [[1, 0, r], [0, 1, r], [r, r, 1]], atol=1e-7)
  # The task-level matrix is its average over run pairs (self-pairs left out).
  _, tasks = similarity.task_similarity(two_task_library, "cosine")
  assert tasks[0, 1] == pytest.approx(matrix[:2, 2].mean())
  model = ModelIdentity("tiny", 2, "fp")
  two_task_library.add(task="y", value=np.ones((2, 2)), key=np.ones((2, 2)), model=model,
                       seed=0, entry_id="y_again")
  with pytest.raises(LibraryError, match=r"\['y@0'\]; keep one entry per task and seed"):
    similarity.run_similarity(two_task_library, "cosine")
  library = PromptLibrary(str(tmp_path / "unseeded"), create=True)
  library.add(task="z", value=np.ones((2, 2)), key=np.ones((2, 2)), model=model)
  with pytest.raises(LibraryError, match="have no seed"):
    similarity.run_similarity(library, "cosine")


def test_ensemble_is_the_mean_of_the_methods_similarities():
  rng = np.random.default_rng(7)
  queries = {"prompt": rng.normal(size=8), "lora": rng.normal(size=30)}
  keys = {"prompt": rng.normal(size=(5, 8)), "lora": rng.normal(size=(5, 30))}
  expected = (similarity.scores("cosine", queries["prompt"], keys["prompt"])
              + similarity.scores("cosine", queries["lora"], keys["lora"])) / 2
  np.testing.assert_allclose(similarity.ensemble_scores("cosine", queries, keys), expected)
  with pytest.raises(similarity.LibraryError, match="same sources"):
    similarity.ensemble_scores("cosine", queries, dict(keys, lora=keys["lora"][:4]))
  with pytest.raises(similarity.LibraryError, match="one query and one key matrix per method"):
    similarity.ensemble_scores("cosine", {"prompt": queries["prompt"]}, keys)
