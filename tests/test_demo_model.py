"""The demo's shipped frozen model (spot_jax/app/assets/tiny_words_frozen.npz, made by
scripts/generate/make_demo_model.py): its record matches demo.gin, the demo installs it instead of
pretraining, any other setting pretrains, and a fresh pretraining reproduces it (slow)."""

import dataclasses
import io
import json

import numpy as np
import pytest
from flax import traverse_util

from spot_jax.app import demo
from spot_jax.checkpoints import t5x
from spot_jax.train import pretrain as pretrain_lib


class PretrainingCalled(Exception):
  pass


def _no_pretraining(monkeypatch):
  def refuse(cfg, log=print):
    raise PretrainingCalled(cfg)
  monkeypatch.setattr(pretrain_lib, "pretrain", refuse)


def _stored_params() -> dict[str, np.ndarray]:
  with np.load(demo.STORED_MODEL) as stored:
    return {k: stored[k] for k in stored.files}


def test_stored_model_record_matches_the_full_and_quick_demos_pretraining_settings():
  record = pretrain_lib.stored_identity(demo.STORED_MODEL)
  assert record is not None, f"{demo.STORED_MODEL} or its .json is missing"
  for quick in (False, True):
    identity = demo.pretrain_config(demo.load_config(quick=quick)).identity()
    assert json.loads(json.dumps(identity)) == record
  assert record["model"] == "tiny_words" and record["train_steps"] == 1500


def test_demo_installs_the_stored_model_as_a_t5x_checkpoint_without_pretraining(
    tmp_path, monkeypatch):
  _no_pretraining(monkeypatch)
  cfg = dataclasses.replace(demo.load_config(), output_dir=str(tmp_path))
  out = io.StringIO()
  path = demo.pretrain_stage(cfg, demo.Console(out))
  assert path == pretrain_lib.checkpoint_path(demo.pretrain_config(cfg))
  assert "the shipped model" in out.getvalue()
  loaded = traverse_util.flatten_dict(t5x.read_checkpoint(path), sep="/")
  stored = _stored_params()
  assert sorted(loaded) == sorted(stored)
  for name, value in stored.items():
    np.testing.assert_array_equal(np.asarray(loaded[name]), value, err_msg=name)
  monkeypatch.undo()  # a rerun reuses the written checkpoint (pretrain's cache check).
  again = io.StringIO()
  assert demo.pretrain_stage(cfg, demo.Console(again)) == path
  assert "reusing" in again.getvalue()


@pytest.mark.parametrize("change", [dict(pretrain_seed=1), dict(pretrain_steps=800),
                                    dict(stored_model=False)])
def test_any_other_pretraining_setting_pretrains_again(tmp_path, monkeypatch, change):
  _no_pretraining(monkeypatch)
  cfg = dataclasses.replace(demo.load_config(), output_dir=str(tmp_path), **change)
  out = io.StringIO()
  with pytest.raises(PretrainingCalled):
    demo.pretrain_stage(cfg, demo.Console(out))
  assert ("differ from the shipped model's" in out.getvalue()) == cfg.stored_model


@pytest.mark.slow
def test_fresh_pretraining_with_the_recorded_settings_reproduces_the_stored_model(tmp_path):
  """Pretraining is deterministic on CPU; across CPUs float sums may be ordered differently,
  so each leaf is compared with a tolerance scaled to its size (RMS)."""
  from tasks.lookup import register_all_tasks
  register_all_tasks()
  cfg = dataclasses.replace(demo.pretrain_config(demo.load_config()), output_dir=str(tmp_path))
  fresh = traverse_util.flatten_dict(t5x.read_checkpoint(pretrain_lib.pretrain(cfg)), sep="/")
  for name, value in _stored_params().items():
    scale = float(np.sqrt(np.mean(np.square(value)))) + 1e-6
    np.testing.assert_allclose(np.asarray(fresh[name], np.float32), value, rtol=0,
                               atol=0.05 * scale, err_msg=name)
