"""Scorers as one interface; the retrieval hook; NDCG relevance options."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spot_jax.library import scorers, similarity
from spot_jax.library.retrieval import retrieve
from spot_jax.library.similarity import LibraryError
from spot_jax.library.store import ModelIdentity, PromptLibrary
from spot_jax.study import ranking

RNG = np.random.default_rng(0)
TARGET = RNG.normal(size=(3, 8)).astype(np.float32)
POOL = RNG.normal(size=(7, 3, 8)).astype(np.float32)


@pytest.mark.parametrize("name", scorers.SIMILARITY_SCORERS)
def test_similarity_scorers_equal_the_similarity_module(name):
  form = similarity.get_metric(name).form
  if form == "full":
    expected = similarity.scores(name, TARGET, POOL)
  else:
    expected = similarity.scores(name, similarity.pool(TARGET, form), similarity.pool(POOL, form))
  np.testing.assert_allclose(scorers.get_scorer(name).score(TARGET, POOL), expected)


def test_max_pairwise_is_the_mean_over_source_tokens_of_the_max_target_cosine():
  def cos(a, b):
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)
  expected = [np.mean([max(cos(s, t) for t in TARGET) for s in entry]) for entry in POOL]
  np.testing.assert_allclose(scorers.get_scorer("max_pairwise").score(TARGET, POOL), expected,
                             rtol=1e-6)
  # A pool entry equal to the target scores 1, the maximum.
  assert scorers.get_scorer("max_pairwise").score(TARGET, TARGET[None])[0] == pytest.approx(1.0)


def test_data_size_and_random_scorers():
  sizes = {"a": 10.0, "b": 1000.0}
  scorer = scorers.get_scorer("data_size", size_of=sizes.__getitem__)
  np.testing.assert_array_equal(scorer.score(TARGET, POOL[:3], pool_tasks=["a", "b", "a"]),
                                [10.0, 1000.0, 10.0])
  with pytest.raises(LibraryError, match="pool_tasks"):
    scorer.score(TARGET, POOL[:3])
  with pytest.raises(LibraryError, match="sizes"):
    scorers.get_scorer("data_size")
  first = scorers.get_scorer("random:3").score(TARGET, POOL, target="t")
  np.testing.assert_array_equal(first, scorers.get_scorer("random:3").score(TARGET, POOL,
                                                                            target="t"))
  assert not np.array_equal(first, scorers.get_scorer("random:4").score(TARGET, POOL, target="t"))
  with pytest.raises(LibraryError, match="Unknown scorer"):
    scorers.get_scorer("cosinus")
  with pytest.raises(LibraryError, match="target key"):
    scorers.get_scorer("cosine").score(TARGET[0], POOL)


def test_task_level_predictions_average_seeds_and_entries():
  keys = {"t": TARGET[None].repeat(2, 0), "a": POOL[:2], "b": POOL[2:3]}
  predicted = scorers.predictions(scorers.get_scorer("cosine"), keys, ["t"], ["a", "b", "t"])
  entry = scorers.get_scorer("cosine").score(TARGET, POOL[:3])
  assert set(predicted["t"]) == {"a", "b"}  # a target is never its own source.
  assert predicted["t"]["a"] == pytest.approx(entry[:2].mean())
  assert predicted["t"]["b"] == pytest.approx(entry[2])
  with pytest.raises(LibraryError, match="No keys for tasks"):
    scorers.predictions(scorers.get_scorer("cosine"), keys, ["t"], ["zzz"])


def test_retrieve_with_a_scorer_ranks_like_the_metric(tmp_path):
  model = ModelIdentity("tiny", 8, "fp")
  library = PromptLibrary(str(tmp_path / "lib"), create=True)
  for i, key in enumerate(POOL):
    library.add(task=f"task_{i % 4}", value=key, key=key, model=model, seed=i)
  for by_task in (False, True):
    plain = retrieve(library, TARGET, model=model, metric="cosine", k=None, by_task=by_task,
                     exclude_task="task_0")
    scored = retrieve(library, TARGET, model=model, k=None, by_task=by_task,
                      exclude_task="task_0", scorer=scorers.get_scorer("cosine"))
    assert [r.entry.id for r in plain] == [r.entry.id for r in scored]
    np.testing.assert_allclose([r.score for r in plain], [r.score for r in scored])
  ranked = retrieve(library, TARGET, model=model, k=2, target="x",
                    scorer=scorers.get_scorer("data_size", size_of=lambda t: int(t[-1])))
  assert [r.entry.task for r in ranked] == ["task_3", "task_2"]


# ----------------------------------------------------------------------------- NDCG relevance


def test_ndcg_relevance_forms_on_hand_values():
  true = np.array([70.0, 90.0, 60.0, 80.0])
  np.testing.assert_array_equal(ranking.relevance(true, "rank"), [1, 3, 0, 2])
  np.testing.assert_array_equal(ranking.relevance(np.array([-5.0, 40.0]), "score"), [0, 40])
  np.testing.assert_allclose(ranking.relevance(true, "gain", 65.0), [0.2, 1.0, 0.0, 0.6])
  assert np.isnan(ranking.relevance(true, "gain", 95.0)).all()
  # Predicted order 90, 70, 80, 60 with gain relevance: DCG = 1 + 0.2/log2(3) + 0.6/log2(4);
  # ideal = 1 + 0.6/log2(3) + 0.2/log2(4).
  m = ranking.ranking_metrics(true, np.array([3.0, 4.0, 1.0, 2.0]), 65.0, 4, "gain")
  dcg = 1 + 0.2 / math.log2(3) + 0.6 / 2
  ideal = 1 + 0.6 / math.log2(3) + 0.2 / 2
  assert m["ndcg"] == pytest.approx(dcg / ideal)
  with pytest.raises(ranking.RankingError, match="Unknown NDCG relevance"):
    ranking.relevance(true, "exp")


@pytest.mark.parametrize("kind", ranking.NDCG_RELEVANCE)
def test_ndcg_on_a_0_100_scale_is_finite_and_random_expectation_is_exact(kind):
  import itertools
  true = np.array([0.0, 100.0, 99.5, 37.0, 100.0])
  expected = ranking.expected_random_metrics(true, 10.0, 3, kind)["ndcg"]
  runs = [ranking.ranking_metrics(true, np.array(p, float), 10.0, 3, kind)["ndcg"]
          for p in itertools.permutations(range(5))]
  assert np.all(np.isfinite(runs)) and all(0 < r <= 1 for r in runs)
  assert expected == pytest.approx(np.mean(runs))
