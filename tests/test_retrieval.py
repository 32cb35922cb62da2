"""Retrieval: exact top-k, planted nearest neighbours, task-level ranking, model checks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import PROJECT_ROOT

from spot_jax.library import similarity
from spot_jax.library.retrieval import POOLED_METRICS, KeyIndex, rank_tasks, retrieve, top_k
from spot_jax.library.store import Entry, LibraryError, ModelIdentity, PromptLibrary

MODEL = ModelIdentity("tiny_test", 16, "fp-a")
OTHER = ModelIdentity("tiny_test", 16, "fp-b")
L = 3


def reference_order(scores: np.ndarray) -> np.ndarray:
  """Descending by score, ties to the lower index: a full stable sort."""
  return np.array(sorted(range(len(scores)), key=lambda i: (-scores[i], i)))


@pytest.mark.parametrize("n,k", [(50, 5), (50, 50), (50, 80), (7, 1), (1000, 10)])
def test_top_k_is_exact_with_ties(n, k):
  rng = np.random.default_rng(n + k)
  scores = rng.integers(0, 6, n).astype(np.float32)  # many ties, also at the k-th place.
  np.testing.assert_array_equal(top_k(scores, k), reference_order(scores)[:k])
  distinct = rng.standard_normal(n)
  np.testing.assert_array_equal(top_k(distinct, k), np.argsort(-distinct)[:k])


def test_top_k_edge_cases():
  np.testing.assert_array_equal(top_k(np.array([1.0, 3.0, 3.0, 2.0]), None), [1, 2, 3, 0])
  assert top_k(np.array([1.0, 2.0]), 0).size == 0
  with pytest.raises(ValueError):
    top_k(np.zeros((2, 2)), 1)


@pytest.mark.parametrize("metric", POOLED_METRICS)
def test_key_index_matches_similarity_scores(metric):
  rng = np.random.default_rng(1)
  prompts = rng.standard_normal((300, L, 16)).astype(np.float32)
  query = rng.standard_normal((L, 16)).astype(np.float32)
  form = similarity.METRICS[metric].form
  keys, q = similarity.pool(prompts, form), similarity.pool(query, form)
  expected = similarity.scores(metric, q, keys)
  for backend in ("jax", "numpy"):
    index = KeyIndex.build(keys, metric, manhattan_backend=backend)
    np.testing.assert_allclose(index.scores(q), expected, rtol=1e-5, atol=1e-6)
    indices, sims = index.search(q, 10)
    np.testing.assert_array_equal(indices, np.argsort(-expected)[:10])
    np.testing.assert_allclose(sims, expected[indices], rtol=1e-5, atol=1e-6)
  assert index.nbytes >= keys.nbytes
  with pytest.raises(LibraryError, match="does not match"):
    index.search(query, 3)  # unpooled query.


@pytest.mark.parametrize("metric", POOLED_METRICS)
def test_search_is_exact_despite_float32_rounding(metric):
  """Keys with a large shared offset and tiny differences: the float32 first pass cannot order
  them (euclidean's ||k||^2 - 2 k.q expansion cancels), the exact re-ranking must."""
  rng = np.random.default_rng(3)
  keys = (100.0 + 1e-3 * rng.standard_normal((2000, 16))).astype(np.float32)
  query = (100.0 + 1e-3 * rng.standard_normal(16)).astype(np.float32)
  expected = similarity.scores(metric, query, keys)
  indices, sims = KeyIndex.build(keys, metric).search(query, 10)
  np.testing.assert_array_equal(indices, top_k(expected, 10))
  np.testing.assert_array_equal(sims, expected[indices])


def test_key_index_refuses_per_token_distances():
  with pytest.raises(LibraryError, match="pooled metrics"):
    KeyIndex.build(np.zeros((2, 4)), "per_token_euclidean")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
  """40 random keys of 8 tasks plus 3 near-copies of the query (task `near`), an entry of
  another model identical to the query, and the query."""
  rng = np.random.default_rng(0)
  library = PromptLibrary(str(tmp_path_factory.mktemp("lib") / "library"), create=True)
  query = rng.standard_normal((L, 16)).astype(np.float32) + 1.0
  for i in range(40):
    library.add(task=f"task{i % 8}", value=rng.standard_normal((L, 16)),
                key=rng.standard_normal((L, 16)), model=MODEL, seed=i)
  near = []
  for i, noise in enumerate((0.01, 0.03, 0.05)):
    key = query + noise * rng.standard_normal((L, 16)).astype(np.float32)
    near.append(library.add(task="near", value=key, key=key, model=MODEL, seed=i).id)
  library.add(task="other_model", value=query, key=query, model=OTHER, seed=0)
  return library, query, near


@pytest.mark.parametrize("metric", sorted(similarity.METRICS))
def test_retrieve_finds_planted_neighbours(planted, metric):
  library, query, near = planted
  ranked = retrieve(library, query, model=MODEL, metric=metric, k=5)
  assert [r.rank for r in ranked] == [1, 2, 3, 4, 5]
  assert [r.entry.id for r in ranked[:3]] == near  # less noise = more similar.
  assert all(r.entry.model == MODEL for r in ranked)
  scores = [r.score for r in ranked]
  assert scores == sorted(scores, reverse=True)
  # The scores are similarity.scores of the query against every key of the model.
  form = similarity.METRICS[metric].form
  if form == "full":
    entries, keys = library.full_keys(model=MODEL)
    q = query
  else:
    entries, keys = library.pooled_keys(form, model=MODEL)
    q = similarity.pool(query, form)
  expected = dict(zip([e.id for e in entries], similarity.scores(metric, q, keys)))
  for r in ranked:
    assert r.score == pytest.approx(expected[r.entry.id], rel=1e-5, abs=1e-6)


def test_retrieve_excludes_target_task(planted):
  library, query, near = planted
  ranked = retrieve(library, query, model=MODEL, metric="cosine", exclude_task="near")
  assert len(ranked) == 40 and all(r.entry.task != "near" for r in ranked)


def test_retrieve_by_task_averages_entries(planted):
  library, query, _ = planted
  ranked = retrieve(library, query, model=MODEL, metric="euclidean", by_task=True)
  entries, keys = library.pooled_keys("mean", model=MODEL)
  scores = similarity.scores("euclidean", similarity.pool(query, "mean"), keys)
  by_task = {}
  for entry, score in zip(entries, scores):
    by_task.setdefault(entry.task, []).append((score, entry.id))
  means = {task: np.mean([s for s, _ in rows]) for task, rows in by_task.items()}
  assert [r.entry.task for r in ranked] == sorted(means, key=lambda t: -means[t])
  for r in ranked:
    assert r.score == pytest.approx(means[r.entry.task], rel=1e-5)
    assert r.entry.id == max(by_task[r.entry.task])[1]  # the task's best entry represents it.


def test_rank_tasks_by_hand():
  entries = [Entry(id=f"e{i}", task=t, model=MODEL, prompt_length=L)
             for i, t in enumerate(["a", "b", "a", "c", "b"])]
  scores = np.array([0.9, 0.7, 0.1, 0.6, 0.8])
  # a: (0.9 + 0.1) / 2 = 0.5, b: (0.7 + 0.8) / 2 = 0.75, c: 0.6 -> b, c, a.
  ranked = rank_tasks(entries, scores)
  assert [(r.entry.id, r.rank) for r in ranked] == [("e4", 1), ("e3", 2), ("e0", 3)]
  assert [r.score for r in ranked] == pytest.approx([0.75, 0.6, 0.5])
  assert [r.entry.task for r in rank_tasks(entries, scores, 2)] == ["b", "c"]


def test_retrieve_centering_uses_the_library_mean(planted):
  library, query, _ = planted
  entries, keys = library.pooled_keys("mean", model=MODEL)
  mean = keys.mean(axis=0, dtype=np.float64)
  expected = similarity.scores("cosine", similarity.pool(query, "mean") - mean, keys - mean)
  ranked = retrieve(library, query, model=MODEL, metric="cosine", center_keys=True)
  got = {r.entry.id: r.score for r in ranked}
  for entry, score in zip(entries, expected):
    assert got[entry.id] == pytest.approx(score, rel=1e-4, abs=1e-5)


def test_retrieve_searches_one_model_only(planted):
  library, query, _ = planted
  ranked = retrieve(library, query, model=OTHER, metric="cosine")
  assert [r.entry.task for r in ranked] == ["other_model"]
  with pytest.raises(LibraryError, match="no entries of model"):
    retrieve(library, query, model=ModelIdentity("tiny_test", 16, "fp-missing"))


def test_retrieve_refuses_wrong_embed_dim_and_metric(planted):
  library, query, _ = planted
  with pytest.raises(LibraryError, match=r"\[L, 16\]"):
    retrieve(library, np.zeros((L, 8), np.float32), model=MODEL)
  with pytest.raises(LibraryError, match=r"\[L, 16\]"):
    retrieve(library, np.zeros(16, np.float32), model=MODEL)
  with pytest.raises(LibraryError, match="Unknown similarity metric"):
    retrieve(library, query, model=MODEL, metric="cosinus")


def test_benchmark_script_records_every_pooled_metric(tmp_path):
  out = tmp_path / "bench.jsonl"
  process = subprocess.run(
      [sys.executable, "-m", "benchmarks.retrieval", "--sizes", "500", "--dim", "32",
       "--queries", "3", "--json", str(out), "--results", ""], capture_output=True, text=True,
      timeout=180, cwd=PROJECT_ROOT)
  assert process.returncode == 0, process.stderr
  assert "| 500 | manhattan | jax |" in process.stdout
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [(r["metric"], r["backend"]) for r in rows] == [
      ("cosine", "numpy"), ("per_token_cosine", "numpy"), ("euclidean", "numpy"),
      ("manhattan", "jax"), ("manhattan", "numpy")]
  for row in rows:
    assert row["n"] == 500 and row["queries"] == 2 and 0 < row["median_s"] <= row["p90_s"]
    assert row["index_bytes"] >= 500 * 32 * 4 and row["peak_rss_bytes"] > 0
