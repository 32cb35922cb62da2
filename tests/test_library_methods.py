"""The library for every method: tree values, vector keys, one index per (model, method,
embedding kind), searches that never mix methods, and the ensemble scorer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from spot_jax import task_embedding
from spot_jax.library import scorers, similarity
from spot_jax.library.retrieval import retrieve
from spot_jax.library.store import LibraryError, ModelIdentity, PromptLibrary, run_key
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
