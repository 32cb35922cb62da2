"""Tests for spot_jax.checkpoints.t5x: reading the real T5X fixture, round trips, bad input."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import ml_dtypes
import msgpack
import numpy as np
import pytest
import tensorstore as ts

from spot_jax.checkpoints import t5x
from spot_jax.checkpoints.t5x import CheckpointError, LazyArray

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
TINY = FIXTURES / "t5x_t5_1_1_tiny" / "checkpoint_3"
BF16 = np.dtype(ml_dtypes.bfloat16)


@pytest.fixture
def tiny() -> Path:
  if not (TINY / "checkpoint").is_file():
    pytest.skip(f"T5X fixture checkpoint absent ({TINY}); it lives in ../shared/fixtures "
                "beside the project root")
  return TINY


@pytest.fixture
def tiny_copy(tiny: Path, tmp_path: Path) -> Path:
  """A writable copy of the fixture (the shared one is read-only) for corrupting."""
  dst = tmp_path / "checkpoint_3"
  shutil.copytree(tiny, dst)
  for root, dirs, files in os.walk(dst):
    for name in dirs + files:
      p = os.path.join(root, name)
      os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)
  os.chmod(dst, os.stat(dst).st_mode | stat.S_IWUSR)
  return dst


def leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
  """Flat {slash/path: leaf}."""
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(leaves(v, f"{prefix}/{k}" if prefix else k))
    return out
  return {prefix: tree}


def direct_read(zarr_dir: Path) -> np.ndarray:
  store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(zarr_dir)}},
                  read=True).result()
  return np.asarray(store.read().result())


def assert_trees_equal(got: Any, want: Any) -> None:
  got_flat, want_flat = leaves(got), leaves(want)
  assert sorted(got_flat) == sorted(want_flat)
  for name, w in want_flat.items():
    g = got_flat[name]
    w = w.load() if isinstance(w, LazyArray) else np.asarray(w)
    assert isinstance(g, np.ndarray), name
    assert g.dtype == w.dtype, name
    assert g.shape == w.shape, name
    np.testing.assert_array_equal(g.view(np.uint8) if g.dtype == BF16 else g,
                                  w.view(np.uint8) if w.dtype == BF16 else w, err_msg=name)


def ext_array(array: np.ndarray) -> msgpack.ExtType:
  """Flax's inline ndarray encoding, built by hand for synthetic checkpoints."""
  return msgpack.ExtType(1, msgpack.packb((list(array.shape), array.dtype.name, array.tobytes()),
                                          use_bin_type=True))


def write_zarr(path: Path, array: np.ndarray, chunks: list[int]) -> None:
  spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)},
          "metadata": {"shape": list(array.shape), "chunks": chunks, "dtype": array.dtype.str,
                       "compressor": {"id": "gzip", "level": 1}}}
  ts.open(spec, create=True, open=False).result().write(array).result()


# ----------------------------------------------------------------------------- the real fixture


def test_fixture_every_array_equals_direct_tensorstore_read(tiny: Path) -> None:
  full = leaves(t5x.read_checkpoint(tiny, subtree=None))
  zarr_dirs = sorted(p.name for p in tiny.iterdir() if p.is_dir())
  # 14 encoder + 22 decoder kernels, the embedding and the untied logits projection.
  assert len(zarr_dirs) == 38
  for dirname in zarr_dirs:
    name = dirname.replace(".", "/")
    assert name in full, dirname
    np.testing.assert_array_equal(full[name], direct_read(tiny / dirname), err_msg=name)
  assert all(isinstance(v, np.ndarray) for v in full.values())


def test_fixture_shapes_inline_arrays_and_optimizer_state(tiny: Path) -> None:
  params = t5x.read_checkpoint(tiny)
  assert params["token_embedder"]["embedding"].shape == (32128, 4)
  assert params["decoder"]["logits_dense"]["kernel"].shape == (4, 32128)
  for stack in ("encoder", "decoder"):
    assert sorted(k for k in params[stack] if k.startswith("layers_")) == ["layers_0", "layers_1"]
    assert params[stack]["relpos_bias"]["rel_embedding"].shape == (2, 4)
  enc0 = params["encoder"]["layers_0"]
  assert enc0["attention"]["query"]["kernel"].shape == (4, 4)
  assert enc0["mlp"]["wi_0"]["kernel"].shape == (4, 8)
  assert enc0["mlp"]["wo"]["kernel"].shape == (8, 4)
  dec1 = params["decoder"]["layers_1"]
  assert set(dec1) == {"pre_self_attention_layer_norm", "self_attention",
                       "pre_cross_attention_layer_norm", "encoder_decoder_attention",
                       "pre_mlp_layer_norm", "mlp"}
  # Inline (msgpack ExtType) arrays: no zarr dir, yet present with real values.
  inline = ["encoder/encoder_norm/scale", "encoder/relpos_bias/rel_embedding",
            "encoder/layers_0/pre_attention_layer_norm/scale",
            "decoder/layers_1/pre_cross_attention_layer_norm/scale", "decoder/decoder_norm/scale"]
  flat = leaves(params)
  for name in inline:
    assert not (tiny / f"target.{name.replace('/', '.')}").exists()
    assert flat[name].dtype == np.float32 and np.all(np.isfinite(flat[name]))
    assert np.any(flat[name] != 0)
  assert abs(float(flat["encoder/encoder_norm/scale"].mean()) - 1.0) < 0.2
  state = t5x.read_checkpoint(tiny, subtree="state")
  assert state["step"].dtype == np.int32 and int(state["step"]) == 3
  v = state["param_states"]["token_embedder"]["embedding"]["v"]
  assert v.shape == (32128, 4)
  np.testing.assert_array_equal(
      v, t5x.read_checkpoint(tiny, subtree="state/param_states/token_embedder/embedding/v"))


def test_read_step(tiny: Path) -> None:
  assert t5x.read_step(tiny) == 3
  assert t5x.read_step(tiny / "checkpoint") == 3
  assert t5x.read_step(str(tiny)) == 3


def test_lazy_reads_nothing_until_load(tiny_copy: Path, monkeypatch) -> None:
  opened = []
  real_open = ts.open
  monkeypatch.setattr(t5x.ts, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
  lazy = t5x.read_checkpoint(tiny_copy, subtree=None, lazy=True)
  assert opened == []
  emb = lazy["target"]["token_embedder"]["embedding"]
  assert isinstance(emb, LazyArray) and not emb.is_inline
  assert emb.shape == (32128, 4) and emb.dtype == np.float32
  # Nothing was read: removing a zarr dir now only fails when that variable is loaded.
  shutil.rmtree(tiny_copy / "target.decoder.logits_dense.kernel")
  with pytest.raises(CheckpointError, match="target/decoder/logits_dense/kernel"):
    lazy["target"]["decoder"]["logits_dense"]["kernel"].load()
  loaded = emb.load()
  assert len(opened) == 1
  monkeypatch.undo()
  np.testing.assert_array_equal(loaded, direct_read(tiny_copy / "target.token_embedder.embedding"))
  eager = leaves(t5x.read_checkpoint(TINY, subtree=None))
  for name, leaf in leaves(lazy).items():
    if name != "target/decoder/logits_dense/kernel":
      np.testing.assert_array_equal(leaf.load(), eager[name], err_msg=name)
  cast = t5x.read_checkpoint(tiny_copy, lazy=True, dtype="bfloat16")["token_embedder"]["embedding"]
  assert cast.dtype == BF16 and cast.load().dtype == BF16


def test_read_variable_equals_full_read(tiny: Path) -> None:
  full = leaves(t5x.read_checkpoint(tiny))
  for name, value in full.items():
    got = t5x.read_variable(tiny, name)
    assert got.dtype == value.dtype
    np.testing.assert_array_equal(got, value, err_msg=name)
  np.testing.assert_array_equal(t5x.read_variable(tiny, "target/token_embedder/embedding"),
                                full["token_embedder/embedding"])
  bf = t5x.read_variable(tiny, "token_embedder/embedding", dtype="bfloat16")
  assert bf.dtype == BF16
  np.testing.assert_array_equal(bf, full["token_embedder/embedding"].astype(BF16))


def test_dtype_cast_to_bfloat16(tiny: Path) -> None:
  f32 = leaves(t5x.read_checkpoint(tiny, subtree=None))
  bf = leaves(t5x.read_checkpoint(tiny, subtree=None, dtype="bfloat16"))
  for name, value in f32.items():
    if name == "state/step":
      assert bf[name].dtype == np.int32 and int(bf[name]) == 3
      continue
    assert bf[name].dtype == BF16, name
    np.testing.assert_array_equal(bf[name], value.astype(BF16), err_msg=name)
  same = t5x.read_checkpoint(tiny, dtype=np.float32)
  np.testing.assert_array_equal(same["token_embedder"]["embedding"],
                                f32["target/token_embedder/embedding"])
  with pytest.raises(CheckpointError, match="not a floating dtype"):
    t5x.read_checkpoint(tiny, dtype=np.int32)


# ----------------------------------------------------------------------------- round trips


def random_tree(rng: np.random.Generator) -> tuple[dict, dict]:
  params = {
      "token_embedder": {"embedding": rng.standard_normal((300, 64)).astype(np.float32)},
      "encoder": {
          "layers_0": {
              "attention": {"query": {"kernel": rng.standard_normal((64, 64)).astype(BF16)}},
              "pre_attention_layer_norm": {"scale": rng.standard_normal(64).astype(np.float32)},
          },
          "prompt": {"prompt": {"prompt": rng.standard_normal((5, 64)).astype(BF16)}},
          "relpos_bias": {"rel_embedding": rng.standard_normal((4, 32)).astype(np.float32)},
      },
      "decoder": {"logits_dense": {"kernel": rng.standard_normal((64, 300)).astype(BF16)}},
  }
  opt = {"param_states": {"token_embedder": {"embedding": {
      "v_row": rng.random(300).astype(np.float32),
      "v_col": rng.random(64).astype(np.float32),
      "m": np.zeros((300, 64), np.float32)}}},
      "count": np.asarray(7, np.int32)}
  return params, opt


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_round_trip_random_tree(tmp_path: Path, compression: str) -> None:
  params, opt = random_tree(np.random.default_rng(0))
  dest = tmp_path / "checkpoint_12"
  t5x.write_checkpoint(dest, params, step=12, optimizer_state=opt, inline_threshold=1024,
                       compression=compression)
  assert_trees_equal(t5x.read_checkpoint(dest), params)
  assert t5x.read_step(dest) == 12
  everything = t5x.read_checkpoint(dest, subtree=None)
  assert_trees_equal(everything["state"], {**opt, "step": np.asarray(12, np.int32)})
  # Large arrays went to zarr dirs named by dotted path, small ones inline.
  zarr_dirs = sorted(p.name for p in dest.iterdir() if p.is_dir())
  assert zarr_dirs == ["state.param_states.token_embedder.embedding.m",
                       "target.decoder.logits_dense.kernel",
                       "target.encoder.layers_0.attention.query.kernel",
                       "target.token_embedder.embedding"]
  meta = (dest / "target.decoder.logits_dense.kernel" / ".zarray").read_text()
  assert '"bfloat16"' in meta
  expected = {"gzip": '"id":"gzip"', "zstd": '"id":"zstd"', "none": '"compressor":null'}
  assert expected[compression] in meta.replace(" ", "")
  np.testing.assert_array_equal(direct_read(dest / "target.token_embedder.embedding"),
                                params["token_embedder"]["embedding"])
  # Nothing left beside the checkpoint (temp dirs renamed or removed).
  assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_12"]


def test_written_layout_mirrors_fixture(tiny: Path, tmp_path: Path) -> None:
  params, _ = random_tree(np.random.default_rng(1))
  dest = tmp_path / "checkpoint_5"
  t5x.write_checkpoint(dest, params, step=5, inline_threshold=1024)
  ours = msgpack.unpackb((dest / "checkpoint").read_bytes(), raw=False)
  theirs = msgpack.unpackb((tiny / "checkpoint").read_bytes(), raw=False)
  assert set(ours) == set(theirs) == {"version", "optimizer"}
  assert ours["version"] == theirs["version"] == 3
  assert set(ours["optimizer"]) == set(theirs["optimizer"]) == {"state", "target"}
  assert ours["optimizer"]["state"]["step"] == msgpack.ExtType(1, msgpack.packb(
      ([], "int32", np.int32(5).tobytes()), use_bin_type=True))
  spec = ours["optimizer"]["target"]["token_embedder"]["embedding"]
  ref = theirs["optimizer"]["target"]["token_embedder"]["embedding"]
  assert spec["driver"] == ref["driver"] == "zarr"
  assert spec["kvstore"] == {"driver": "file", "path": "target.token_embedder.embedding"}
  assert set(spec["metadata"]) == set(ref["metadata"]) == {"chunks", "compressor", "dtype", "shape"}
  assert spec["metadata"]["shape"] == [300, 64] and spec["metadata"]["dtype"] == "<f4"
  assert isinstance(ours["optimizer"]["target"]["encoder"]["relpos_bias"]["rel_embedding"],
                    msgpack.ExtType)


def test_written_checkpoint_decodes_with_flax_serialization(tmp_path: Path) -> None:
  serialization = pytest.importorskip("flax.serialization")
  params, opt = random_tree(np.random.default_rng(2))
  dest = tmp_path / "checkpoint_1"
  t5x.write_checkpoint(dest, params, step=1, optimizer_state=opt, inline_threshold=1024)
  restored = serialization.msgpack_restore((dest / "checkpoint").read_bytes())
  assert int(restored["optimizer"]["state"]["step"]) == 1
  layer = restored["optimizer"]["target"]["encoder"]["layers_0"]
  np.testing.assert_array_equal(layer["pre_attention_layer_norm"]["scale"],
                                params["encoder"]["layers_0"]["pre_attention_layer_norm"]["scale"])
  prompt = restored["optimizer"]["target"]["encoder"]["prompt"]["prompt"]["prompt"]
  assert np.asarray(prompt).dtype.name == "bfloat16"


def test_round_trip_fixture(tiny: Path, tmp_path: Path) -> None:
  full = t5x.read_checkpoint(tiny, subtree=None)
  dest = tmp_path / "checkpoint_3"
  t5x.write_checkpoint(dest, full["target"], step=3, optimizer_state=full["state"])
  assert t5x.read_step(dest) == 3
  assert_trees_equal(t5x.read_checkpoint(dest, subtree=None), full)
  # Lazily read trees can be written directly as well.
  lazy = t5x.read_checkpoint(tiny, lazy=True)
  t5x.write_checkpoint(tmp_path / "from_lazy", lazy, step=3, compression="zstd")
  assert_trees_equal(t5x.read_checkpoint(tmp_path / "from_lazy"), full["target"])


OLD_LAYOUTS = ["optimizer_no_version", "top_level_target"]


@pytest.mark.parametrize("layout", OLD_LAYOUTS)
def test_older_layouts_and_top_level_spec_path(tmp_path: Path, layout: str) -> None:
  rng = np.random.default_rng(3)
  kernel = rng.standard_normal((40, 30)).astype(np.float32)
  embedding = rng.standard_normal((50, 8)).astype(np.float32)
  moved = rng.standard_normal((6, 7)).astype(np.float32)
  scale = rng.standard_normal(8).astype(np.float32)
  ckpt = tmp_path / "checkpoint_1100000"
  ckpt.mkdir()
  write_zarr(ckpt / "target.dense.kernel", kernel, [16, 30])
  write_zarr(ckpt / "target.token_embedder.embedding", embedding, [50, 8])
  write_zarr(ckpt / "target.moved.kernel", moved, [6, 7])
  meta = lambda a: {"shape": list(a.shape), "dtype": "<f4"}
  state = {
      "target": {
          # tensorstore<0.1.14 spec: the path is a top-level key, kvstore has none.
          "dense": {"kernel": {"driver": "zarr", "kvstore": {"driver": "file"},
                               "path": "target.dense.kernel", "metadata": meta(kernel)}},
          # ... or no kvstore at all.
          "token_embedder": {"embedding": {
              "driver": "zarr", "path": "target.token_embedder.embedding",
              "metadata": meta(embedding)}},
          # Absolute path from where it was written, since moved: found beside the file.
          "moved": {"kernel": {"driver": "zarr", "kvstore": {
              "driver": "file", "path": "/nonexistent/elsewhere/target.moved.kernel"}}},
          "norm": {"scale": ext_array(scale)},
      },
      "state": {"step": ext_array(np.asarray(1100000, np.int32)), "param_states": {}},
  }
  contents = {"optimizer": state} if layout == "optimizer_no_version" else state
  (ckpt / "checkpoint").write_bytes(msgpack.packb(contents, use_bin_type=True))
  params = t5x.read_checkpoint(ckpt)
  assert_trees_equal(params, {"dense": {"kernel": kernel},
                              "token_embedder": {"embedding": embedding},
                              "moved": {"kernel": moved}, "norm": {"scale": scale}})
  assert t5x.read_step(ckpt) == 1100000
  np.testing.assert_array_equal(t5x.read_variable(ckpt, "dense/kernel"), kernel)
  assert t5x.read_checkpoint(ckpt, lazy=True)["moved"]["kernel"].shape == (6, 7)


def test_gcs_spec_prefers_local_copy_and_reports_gcs_failure(tmp_path: Path) -> None:
  ckpt = tmp_path / "checkpoint_2"
  ckpt.mkdir()
  local = np.arange(12, dtype=np.float32).reshape(3, 4)
  write_zarr(ckpt / "target.local.kernel", local, [3, 4])
  gcs = lambda bucket, path: {"driver": "zarr", "kvstore": {"driver": "gcs", "bucket": bucket,
                                                              "path": path}}
  contents = {"version": 3, "optimizer": {"target": {
      "local": {"kernel": gcs("t5x-dummy-bucket", "target.local.kernel")},
      "remote": {"kernel": gcs("spot-jax-no-such-bucket-9f3c", "ckpt/target.remote.kernel")}},
      "state": {}}}
  (ckpt / "checkpoint").write_bytes(msgpack.packb(contents, use_bin_type=True))
  np.testing.assert_array_equal(t5x.read_variable(ckpt, "local/kernel"), local)
  assert t5x.read_step(ckpt) is None
  start = time.monotonic()
  with pytest.raises(CheckpointError) as e:
    t5x.read_variable(ckpt, "remote/kernel")
  assert time.monotonic() - start < 15
  message = str(e.value)
  assert str(ckpt / "checkpoint") in message and "gcs access failed" in message
  assert "gs://spot-jax-no-such-bucket-9f3c/ckpt/target.remote.kernel" in message


# ----------------------------------------------------------------------------- bad input


def raises_naming(path: Path | str, match: str, fn, *args, **kwargs) -> CheckpointError:
  with pytest.raises(CheckpointError, match=match) as e:
    fn(*args, **kwargs)
  assert str(path) in str(e.value)
  assert e.value.__cause__ is None  # rewrapped, not chained onto a deep traceback
  return e.value


def test_missing_checkpoint_file(tmp_path: Path) -> None:
  raises_naming(tmp_path / "nope", "no such checkpoint", t5x.read_checkpoint, tmp_path / "nope")
  (tmp_path / "checkpoint_7").mkdir()
  err = raises_naming(tmp_path / "checkpoint", "missing", t5x.read_checkpoint, tmp_path)
  assert "checkpoint_7" in str(err)
  raises_naming(tmp_path / "checkpoint_7" / "checkpoint", "missing", t5x.read_step,
                tmp_path / "checkpoint_7")


@pytest.mark.parametrize("content,match", [
    pytest.param(b"", "empty file", id="empty"),
    pytest.param(b"this is plainly not msgpack\n", "not a valid msgpack", id="text"),
    pytest.param(b"\xc1\xc1\xc1", "not a valid msgpack", id="invalid-bytes"),
    pytest.param(msgpack.packb([1, 2, 3]), "not a T5X checkpoint", id="msgpack-list"),
    pytest.param(msgpack.packb({"version": 3, "something": {}}), "not a T5X checkpoint",
                 id="msgpack-no-target"),
    pytest.param(pickle.dumps({"target": {"w": [1.0]}}, protocol=4), "pickles are refused",
                 id="pickle-4"),
    pytest.param(pickle.dumps({"target": {}}, protocol=2), "pickles are refused", id="pickle-2"),
])
def test_not_a_msgpack_checkpoint(tmp_path: Path, content: bytes, match: str) -> None:
  (tmp_path / "checkpoint").write_bytes(content)
  raises_naming(tmp_path / "checkpoint", match, t5x.read_checkpoint, tmp_path)


def test_truncated_msgpack(tiny: Path, tmp_path: Path) -> None:
  raw = (tiny / "checkpoint").read_bytes()
  (tmp_path / "checkpoint").write_bytes(raw[: len(raw) // 2])
  raises_naming(tmp_path / "checkpoint", "corrupt or truncated", t5x.read_checkpoint,
                tmp_path / "checkpoint")


def test_missing_zarr_directory(tiny_copy: Path) -> None:
  shutil.rmtree(tiny_copy / "target.encoder.layers_1.mlp.wo.kernel")
  readers = [(t5x.read_checkpoint, ()),
             (t5x.read_variable, ("encoder/layers_1/mlp/wo/kernel",))]
  for fn, args in readers:
    err = raises_naming(tiny_copy / "checkpoint", "is missing", fn, tiny_copy, *args)
    assert "target/encoder/layers_1/mlp/wo/kernel" in str(err)
    assert str(tiny_copy / "target.encoder.layers_1.mlp.wo.kernel") in str(err)
  # Other variables remain readable one by one.
  assert t5x.read_variable(tiny_copy, "encoder/layers_0/mlp/wo/kernel").shape == (8, 4)


def test_missing_zarr_chunk(tiny_copy: Path) -> None:
  (tiny_copy / "target.token_embedder.embedding" / "3.0").unlink()
  err = raises_naming(tiny_copy / "checkpoint", "chunk", t5x.read_variable, tiny_copy,
                      "token_embedder/embedding")
  assert "3.0" in str(err) and "missing" in str(err)


def test_truncated_zarr_chunk(tiny_copy: Path) -> None:
  chunk = tiny_copy / "target.token_embedder.embedding" / "5.0"
  chunk.write_bytes(chunk.read_bytes()[:1000])
  err = raises_naming(tiny_copy / "checkpoint", "cannot read zarr", t5x.read_checkpoint, tiny_copy)
  assert "target/token_embedder/embedding" in str(err)


def test_truncated_uncompressed_chunk(tmp_path: Path) -> None:
  dest = tmp_path / "ck"
  t5x.write_checkpoint(dest, {"w": np.ones((64, 64), np.float32)}, step=0, compression="none",
                       inline_threshold=16)
  chunk = next((dest / "target.w").glob("0*"))
  chunk.write_bytes(chunk.read_bytes()[:100])
  raises_naming(dest / "checkpoint", "target/w", t5x.read_variable, dest, "w")


def test_unsupported_kvstore_driver(tmp_path: Path) -> None:
  contents = {"version": 3, "optimizer": {"target": {"w": {
      "driver": "zarr", "kvstore": {"driver": "s3", "bucket": "b", "path": "target.w"}}}}}
  (tmp_path / "checkpoint").write_bytes(msgpack.packb(contents))
  err = raises_naming(tmp_path / "checkpoint", "unsupported kvstore driver 's3'",
                      t5x.read_checkpoint, tmp_path)
  assert "target/w" in str(err)


def test_variable_not_present_lists_close_names(tiny: Path) -> None:
  err = raises_naming(tiny / "checkpoint", "no variable", t5x.read_variable, tiny,
                      "encoder/layers_0/attention/qeury/kernel")
  assert "encoder/layers_0/attention/query/kernel" in str(err)
  err = raises_naming(tiny / "checkpoint", "no variable", t5x.read_variable, tiny,
                      "encoder/prompt/prompt/prompt")
  raises_naming(tiny / "checkpoint", "is a group", t5x.read_variable, tiny, "encoder/layers_0")
  err = raises_naming(tiny / "checkpoint", "no subtree", t5x.read_checkpoint, tiny,
                      subtree="encoder/layer_0")
  assert "close names" in str(err)


# ----------------------------------------------------------------------------- bad writes


def test_overwrite_refused_without_flag(tmp_path: Path) -> None:
  dest = tmp_path / "checkpoint_1"
  first = {"w": np.zeros((200, 100), np.float32), "b": np.ones(3, np.float32)}
  second = {"w": np.ones((10, 10), BF16)}
  t5x.write_checkpoint(dest, first, step=1)
  raises_naming(dest, "already exists", t5x.write_checkpoint, dest, second, step=2)
  assert_trees_equal(t5x.read_checkpoint(dest), first)
  t5x.write_checkpoint(dest, second, step=2, overwrite=True)
  assert_trees_equal(t5x.read_checkpoint(dest), second)
  assert t5x.read_step(dest) == 2
  assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1"]
  empty = tmp_path / "empty"
  empty.mkdir()
  t5x.write_checkpoint(empty, second, step=0)
  assert t5x.read_step(empty) == 0


def test_failed_write_leaves_no_partial_checkpoint(tiny_copy: Path, tmp_path: Path) -> None:
  lazy = t5x.read_checkpoint(tiny_copy, lazy=True)
  shutil.rmtree(tiny_copy / "target.encoder.layers_1.attention.out.kernel")
  out = tmp_path / "out"
  out.mkdir()
  # Fails midway: earlier zarrs are already written when this variable cannot be read.
  raises_naming(tiny_copy / "checkpoint", "target/encoder/layers_1/attention/out/kernel",
                t5x.write_checkpoint, out / "checkpoint_3", lazy, step=3)
  assert list(out.iterdir()) == []
  # With overwrite=True a failed write keeps the old checkpoint intact.
  good = {"w": np.full((4, 4), 2.0, np.float32)}
  t5x.write_checkpoint(out / "checkpoint_3", good, step=3)
  with pytest.raises(CheckpointError):
    t5x.write_checkpoint(out / "checkpoint_3", lazy, step=4, overwrite=True)
  assert_trees_equal(t5x.read_checkpoint(out / "checkpoint_3"), good)
  assert [p.name for p in out.iterdir()] == ["checkpoint_3"]


@pytest.mark.parametrize("params,kwargs,match", [
    pytest.param({"w": np.array(["a", "b"])}, {}, "unsupported dtype", id="strings"),
    pytest.param({"w": np.array([object()], dtype=object)}, {}, "unsupported dtype",
                 id="objects"),
    pytest.param({"a.b": np.ones(3, np.float32)}, {}, "must be a non-empty str", id="dotted-key"),
    pytest.param({"w": np.ones(3, np.float32)}, {"compression": "lz4"}, "unknown compression",
                 id="compression"),
    pytest.param({"w": np.ones(3, np.float32)}, {"step": -1}, "step must be an int",
                 id="negative-step"),
    pytest.param({"w": np.ones(3, np.float32)}, {"optimizer_state": {"step": np.int32(9)}},
                 "differs from", id="step-mismatch"),
    pytest.param(np.ones(3, np.float32), {}, "params must be a nested dict", id="not-a-dict"),
])
def test_invalid_write_input(tmp_path: Path, params: dict, kwargs: dict, match: str) -> None:
  dest = tmp_path / "checkpoint_1"
  raises_naming(dest, match, t5x.write_checkpoint, dest, params, **{"step": 1, **kwargs})
  assert list(tmp_path.iterdir()) == []
