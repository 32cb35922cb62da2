"""The library for every method: tree values, vector keys, one index per (model, method,
embedding kind), searches that never mix methods, and the ensemble scorer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from spot_jax import task_embedding
from spot_jax.gin_utils import gin_literal
from spot_jax.library import scorers, similarity
from spot_jax.library.retrieval import retrieve
from spot_jax.library.identity import ModelIdentity
from spot_jax.library.run_keys import run_key
from spot_jax.library.store import LibraryError, PromptLibrary
from spot_jax.train import run_dir

MODEL = {"name": "tiny", "config": {"emb_dim": 6}, "fingerprint": "fp0"}
LORA_SETTINGS = {"rank": 2, "alpha": 8.0, "targets": "attention/(query|value)$"}


def lora_arrays(seed: int) -> dict[str, np.ndarray]:
  """LoRA-shaped trainables of 2 encoder layers and 1 decoder layer (rank 2, width 6)."""
  rng = np.random.default_rng(seed)
  out = {}
  for stack, layers in (("encoder", 2), ("decoder", 1)):
    for i in range(layers):
      for module in ("query", "value"):
        base = f"{stack}.layers_{i}.attention.{module}"
        out[f"{base}.lora_a"] = rng.normal(size=(6, 2)).astype(np.float32)
        out[f"{base}.lora_b"] = rng.normal(size=(2, 6)).astype(np.float32)
  return out


def fake_run(path, task: str, seed: int, method: str = "lora", steps=(0, 5, 10), best=10,
             key_step=5) -> str:
  """A finished run directory of `method` with trainables saved at `steps`."""
  path = str(path)
  for step in steps:
    if method == "prompt":
      run_dir.save_prompt(path, step, np.random.default_rng([seed, step]).normal(size=(4, 6)))
    else:
      run_dir.save_trainables(path, step, lora_arrays(seed * 100 + step))
  run_dir.write_summary(path, run_dir.RunSummary(
      task=task, model=MODEL, prompt_length=4 if method == "prompt" else 0, seed=seed,
      batch_size=4, feature_lengths={}, train_steps=max(steps), key_step=key_step,
      steps_done=max(steps), checkpoints={str(s): {task: {"accuracy": float(s)}} for s in steps},
      best_step=best, best_score=float(best), finished=True, method=method,
      method_settings={} if method == "prompt" else LORA_SETTINGS))
  return path


def test_non_prompt_run_entry_holds_its_best_trainables_and_embedding(tmp_path):
  library = PromptLibrary(str(tmp_path / "lib"), create=True)
  run = fake_run(tmp_path / "run", "task_a", 0)
  entry = library.add_run_dir(run, entry_id="a")
  assert (entry.model.method, entry.model.embedding) == ("lora", "layer_mean")
  assert json.loads(entry.model.method_settings) == LORA_SETTINGS
  # The value: the best checkpoint's trainables, a directory usable as init_from.
  best = lora_arrays(10)
  value = library.value("a")
  assert sorted(value) == sorted(best)
  for name, array in best.items():
    np.testing.assert_array_equal(value[name], array)
  assert sorted(os.listdir(library.value_dir("a"))) == sorted(best)
  # The key: TuPaTE's layer mean at the key step, a one-token key [1, D].
  expected = task_embedding.layer_embedding(lora_arrays(5), "layer_mean")
  assert expected.shape == (2 * 2 * (6 * 2 + 2 * 6),)  # encoder and decoder means.
  np.testing.assert_allclose(library.key("a"), expected[None], rtol=1e-6)
  assert entry.model.key_dim == expected.size and entry.key_step == 5
  # The key from the best step, or the concatenation: also selectable.
  at_best = library.add_run_dir(run, entry_id="best", key_step="best")
  assert at_best.key_step == 10 and at_best.model == entry.model
  np.testing.assert_allclose(library.key("best")[0],
                             task_embedding.layer_embedding(best, "layer_mean"), rtol=1e-6)
  concat = library.add_run_dir(run, entry_id="concat", embedding="concat")
  assert concat.model.embedding == "concat" and concat.model.index_key != entry.model.index_key
  np.testing.assert_allclose(library.key("concat")[0],
                             task_embedding.layer_embedding(lora_arrays(5), "concat"), rtol=1e-6)
  assert library.check() == {}
  # Export keeps trees: to a new library, and to one .npz archive.
  copy = PromptLibrary(library.export(str(tmp_path / "copy")))
  np.testing.assert_array_equal(copy.value("a")["encoder.layers_1.attention.value.lora_b"],
                                best["encoder.layers_1.attention.value.lora_b"])
  with np.load(library.export(str(tmp_path / "lib.npz"))) as archive:
    np.testing.assert_array_equal(archive["value/a/decoder.layers_0.attention.query.lora_a"],
                                  best["decoder.layers_0.attention.query.lora_a"])
  with pytest.raises(LibraryError, match="Unknown embedding kind 'mean'"):
    library.add_run_dir(run, entry_id="bad", embedding="mean")
  with pytest.raises(LibraryError, match=r"no lora checkpoint for the key step 7.*\[0, 5, 10\]"):
    library.add_run_dir(run, entry_id="bad", key_step=7)


def test_searches_never_mix_methods_or_embedding_kinds(tmp_path):
  library = PromptLibrary(str(tmp_path / "lib"), create=True)
  for seed, task in enumerate(("task_a", "task_b", "task_c")):
    library.add_run_dir(fake_run(tmp_path / f"lora_{task}", task, seed), entry_id=f"lora-{task}")
    library.add_run_dir(fake_run(tmp_path / f"lora_{task}", task, seed), embedding="concat",
                        entry_id=f"concat-{task}")
    library.add_run_dir(fake_run(tmp_path / f"prompt_{task}", task, seed, "prompt"),
                        entry_id=f"prompt-{task}")
  identities = library.models()
  assert sorted((m.method, m.embedding) for m in identities) == [
      ("lora", "concat"), ("lora", "layer_mean"), ("prompt", "prompt")]
  with pytest.raises(LibraryError, match="3 frozen models or methods"):
    library.pooled_keys("mean")
  with pytest.raises(LibraryError, match="matches several models"):
    library.resolve_model("fp0")
  lora = library.resolve_model("fp0", method="lora", embedding="layer_mean")
  prompt = library.resolve_model("tiny", method="prompt")
  entries, keys = library.pooled_keys("mean", model=lora)
  assert [e.id for e in entries] == ["lora-task_a", "lora-task_b", "lora-task_c"]
  assert keys.shape == (3, lora.key_dim)
  # Every metric works on one-token keys; a search only sees the query's identity.
  query = run_key(str(tmp_path / "lora_task_a"), 10, lora)
  for metric in similarity.METRICS:
    ranked = retrieve(library, query[0], model=lora, metric=metric, k=3)
    assert {r.entry.id for r in ranked} == {"lora-task_a", "lora-task_b", "lora-task_c"}, metric
  ranked = retrieve(library, query, model=lora, scorer=scorers.get_scorer("max_pairwise"))
  assert all(r.entry.model == lora for r in ranked)
  by_prompt = retrieve(library, library.key("prompt-task_b"), model=prompt, k=None)
  assert [r.entry.id for r in by_prompt][0] == "prompt-task_b"
  assert all(r.entry.model == prompt for r in by_prompt)
  with pytest.raises(LibraryError, match=r"needs a lora layer_mean embedding \[96\]"):
    retrieve(library, library.key("prompt-task_b"), model=lora)
  with pytest.raises(LibraryError, match=r"needs a prompt \[L, 6\]"):
    retrieve(library, query, model=prompt)


def test_other_method_settings_are_other_identities(tmp_path):
  """LoRA runs of another rank or targets have embeddings of other meaning: never compared."""
  library = PromptLibrary(str(tmp_path / "lib"), create=True)
  library.add_run_dir(fake_run(tmp_path / "a", "task_a", 0), entry_id="a")
  other = fake_run(tmp_path / "b", "task_b", 1)
  summary = run_dir.read_summary(other)
  summary.method_settings = dict(LORA_SETTINGS, targets="attention/(key|value)$")
  run_dir.write_summary(other, summary)
  library.add_run_dir(other, entry_id="b")
  assert len(library.models()) == 2
  assert len({m.index_key for m in library.models()}) == 2


def mixed_library(tmp_path) -> PromptLibrary:
  """Three tasks, each with a LoRA run and a prompt run (two seeds for task_b's LoRA)."""
  library = PromptLibrary(str(tmp_path / "lib"), create=True)
  for seed, task in enumerate(("task_a", "task_b", "task_c", "target")):
    library.add_run_dir(fake_run(tmp_path / f"lora_{task}", task, seed), entry_id=f"lora-{task}")
    library.add_run_dir(fake_run(tmp_path / f"prompt_{task}", task, seed, "prompt"),
                        entry_id=f"prompt-{task}")
  library.add_run_dir(fake_run(tmp_path / "lora_task_b_2", "task_b", 7), entry_id="lora-task_b-2")
  return library


def test_ensemble_ranking_is_the_mean_of_each_methods_task_similarities(tmp_path):
  from spot_jax.app import pipeline
  library = mixed_library(tmp_path)
  queries = [pipeline.target_query(library, run=str(tmp_path / f"{m}_target"))
             for m in ("lora", "prompt")]
  assert [q.model.method for q in queries] == ["lora", "prompt"]
  members = {q.model.method: {r.entry.task: r.score for r in pipeline.rank_sources(
      library, q, scorer="cosine", by_task=True, exclude_task="target")} for q in queries}
  ranked = pipeline.rank_sources(library, queries, scorer="ensemble:cosine",
                                 exclude_task="target")
  assert sorted(r.entry.task for r in ranked) == ["task_a", "task_b", "task_c"]
  for r in ranked:
    assert r.score == pytest.approx((members["lora"][r.entry.task]
                                     + members["prompt"][r.entry.task]) / 2, rel=1e-12)
    assert r.entry.model.method == "lora"  # represented by the first query's method.
  assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
  with pytest.raises(ValueError, match="need an ensemble scorer"):
    pipeline.rank_sources(library, queries, scorer="cosine")
  with pytest.raises(LibraryError, match="ensemble:cosine"):
    scorers.get_scorer("ensemble:max_pairwise")
  # The same on task keys: EnsembleScorer.predictions is the mean of the members'.
  rng = np.random.default_rng(0)
  keys = {"lora": {t: rng.normal(size=(2, 1, 9)) for t in ("a", "b", "c")},
          "prompt": {t: rng.normal(size=(1, 3, 5)) for t in ("a", "b", "c")}}
  ensemble = scorers.get_scorer("ensemble:euclidean").predictions(keys, ["a"], ["b", "c"])
  single = {m: scorers.predictions(scorers.get_scorer("euclidean"), k, ["a"], ["b", "c"])
            for m, k in keys.items()}
  for source in ("b", "c"):
    assert ensemble["a"][source] == pytest.approx(
        (single["lora"]["a"][source] + single["prompt"]["a"][source]) / 2, rel=1e-12)


def test_transfer_of_trees_starts_runs_from_init_from_directories(tmp_path):
  from spot_jax.app import pipeline
  from spot_jax.library import transfer
  library = mixed_library(tmp_path)
  query = pipeline.target_query(library, run=str(tmp_path / "lora_target"))
  ranked = pipeline.rank_sources(library, query, scorer="euclidean", exclude_task="target", k=2)
  out = str(tmp_path / "out")
  plan = transfer.plan_transfer("weighted_average", ranked, library, target="target",
                                out_dir=out, k=2, method="lora")
  result = transfer.run_transfer(plan, dry_run=True, echo=lambda line: None)
  run = plan.runs_by_name["weighted_average"]
  start = os.path.join(out, "init", "weighted_average")
  assert run.gin_bindings["TrainConfig.init_from"] == gin_literal(start)
  assert "TrainConfig.prompt_file" not in run.gin_bindings
  alphas = np.asarray(plan.alphas)
  assert alphas.sum() == pytest.approx(1.0)
  for name in lora_arrays(0):
    expected = sum(a * library.value(r.entry.id)[name] for a, r in zip(alphas, ranked))
    np.testing.assert_allclose(np.load(os.path.join(start, name)), expected, rtol=1e-5)
  assert result.runs[0]["init_from"] == start and json.load(
      open(os.path.join(out, "transfer.json")))["method"] == "lora"
  best = transfer.plan_transfer("best_of_top_k", ranked, library, target="target",
                                out_dir=str(tmp_path / "best"), k=2)
  for r in ranked:
    directory = os.path.join(str(tmp_path / "best"), "init", r.entry.id)
    assert best.runs_by_name[r.entry.id].gin_bindings["TrainConfig.init_from"] == gin_literal(directory)
    assert sorted(os.path.basename(p) for p in best.files if p.startswith(directory + "/")) == (
        sorted(lora_arrays(0)))
  with pytest.raises(transfer.TransferError, match=r"lora runs but the target runs train "
                                                   r"'prompt'.*methods/lora.gin"):
    transfer.plan_transfer("best_of_top_k", ranked, library, target="target", out_dir=out, k=2,
                           method="prompt")


@pytest.mark.parametrize("name", ["prompt_encoder", "prefix", "lora", "bias", "ia3"])
def test_library_keys_from_saved_files_equal_the_methods_embedding(name, tmp_path):
  """The numpy path (run_key over the saved .npy files) is Method.embedding."""
  import jax
  import jax.numpy as jnp

  from spot_jax import methods
  from spot_jax.models import prompts
  from spot_jax.models import T5, get_config
  config = get_config("tiny", vocab_size=40, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=12)
  method = methods.create(name, 3)
  model = T5(config, hooks=method.hooks())
  tokens = jnp.ones((1, 4), jnp.int32)
  frozen = T5(config).init(jax.random.PRNGKey(0), tokens, tokens)["params"]
  prompt = prompts.from_sampled_vocab(jax.random.PRNGKey(1),
                                      frozen["token_embedder"]["embedding"], 3)
  trainables = method.init(jax.random.PRNGKey(2), model, frozen, prompt)
  trainables = jax.tree_util.tree_map(lambda x: x + 0.1 * jnp.arange(x.size).reshape(x.shape),
                                      trainables)
  run_dir.save_trainables(str(tmp_path), 4, method.saved_arrays(trainables))
  summary = {"model": {"name": "tiny", "config": {"emb_dim": 8}, "fingerprint": "f"},
             "method": name, "method_settings": method.settings()}
  for kind in task_embedding.EMBEDDING_KINDS:
    identity = ModelIdentity.from_run_summary(summary, embedding=kind)
    key = run_key(str(tmp_path), 4, identity)
    expected = method.embedding(trainables, kind)
    np.testing.assert_allclose(key, expected if identity.is_prompt else expected[None],
                               rtol=1e-6, atol=1e-7)
