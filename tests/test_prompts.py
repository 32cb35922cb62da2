"""Soft-prompt initialisers and param-tree helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.models import prompts


def embedding_table(rows=6000, dim=8):
  return jnp.asarray(np.random.default_rng(0).normal(size=(rows, dim)), jnp.float32)


def test_sampled_vocab_rows_come_from_first_5000_without_replacement():
  table = embedding_table()
  prompt = prompts.from_sampled_vocab(jax.random.PRNGKey(0), table, 100)
  assert prompt.shape == (100, 8)
  matches = (np.asarray(prompt)[:, None, :] == np.asarray(table)[None]).all(-1)
  rows = matches.argmax(1)
  assert matches.any(1).all() and rows.max() < 5000 and len(set(rows)) == 100
  again = prompts.from_sampled_vocab(jax.random.PRNGKey(0), table, 100)
  np.testing.assert_array_equal(prompt, again)


def test_class_label_rows_are_mean_subtoken_embeddings():
  table = embedding_table()
  labels = [[5, 6], [7], [8, 9, 10]]
  prompt = prompts.from_class_labels(jax.random.PRNGKey(1), table, 10, labels)
  np.testing.assert_allclose(prompt[0], (table[5] + table[6]) / 2, rtol=1e-6)
  np.testing.assert_allclose(prompt[1], table[7])
  np.testing.assert_allclose(prompt[2], table[8:11].mean(0), rtol=1e-6)
  rest = prompts.from_sampled_vocab(jax.random.PRNGKey(1), table, 10)
  np.testing.assert_array_equal(prompt[3:], rest[3:])
  with pytest.raises(prompts.PromptError, match="do not fit"):
    prompts.from_class_labels(jax.random.PRNGKey(1), table, 2, labels)


def test_from_file_round_trip_and_errors(tmp_path):
  good = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
  np.save(tmp_path / "p.npy", good)
  np.testing.assert_array_equal(prompts.from_file(tmp_path / "p.npy", 5, 4), good)
  with pytest.raises(prompts.PromptError, match=r"p.npy.*shape \(5, 4\).*\(6, 4\)"):
    prompts.from_file(tmp_path / "p.npy", 6, 4)
  np.save(tmp_path / "int.npy", np.ones((5, 4), np.int32))
  with pytest.raises(prompts.PromptError, match="int.npy.*dtype int32"):
    prompts.from_file(tmp_path / "int.npy", 5, 4)
  np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
  with pytest.raises(prompts.PromptError, match="obj.npy.*pickled files are refused"):
    prompts.from_file(tmp_path / "obj.npy", 5, 4)
  (tmp_path / "trunc.npy").write_bytes((tmp_path / "p.npy").read_bytes()[:-7])
  with pytest.raises(prompts.PromptError, match="trunc.npy"):
    prompts.from_file(tmp_path / "trunc.npy", 5, 4)
  with pytest.raises(prompts.PromptError, match="does not exist"):
    prompts.from_file(tmp_path / "missing.npy", 5, 4)
  with pytest.raises(prompts.PromptError, match="NaN"):
    prompts.from_array(np.full((5, 4), np.nan, np.float32), 5, 4)


def test_uniform_range_and_tree_helpers():
  key = jax.random.PRNGKey(0)
  prompt = prompts.uniform(key, 50, 4, scale=0.5)
  # Flax's uniform(scale): U[0, scale), not symmetric around 0.
  assert float(prompt.min()) >= 0.0 and float(prompt.max()) < 0.5
  assert float(prompt.mean()) == pytest.approx(0.25, abs=0.05)
  np.testing.assert_array_equal(prompt, jax.nn.initializers.uniform(0.5)(key, (50, 4)))
  params = {"encoder": {"layers_0": {"x": 1}}, "decoder": {}}
  with_p = prompts.with_prompt(params, prompt)
  assert prompts.get_prompt(with_p) is prompt
  assert "prompt" not in params["encoder"]  # inputs are not mutated
  assert prompts.without_prompt(with_p) == params
  with pytest.raises(prompts.PromptError, match="No prompt"):
    prompts.get_prompt(params)
