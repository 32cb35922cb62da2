"""The on-disk prompt library: round trips, real runs, imports (.npy, PEFT), concurrent writers,
bad inputs that leave the library untouched, index repair, model separation and the CLI."""

from __future__ import annotations

import builtins
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from conftest import PROJECT_ROOT
from spot_jax.cli.main import main
from spot_jax.library import similarity
from spot_jax.library.store import Entry, LibraryError, ModelIdentity, PromptLibrary
from tasks.lookup import register_all_tasks
from spot_jax.train import run_dir

register_all_tasks()
MODEL = ModelIdentity("tiny_test", 6, "fp-test")
OTHER_MODEL = ModelIdentity("tiny_test", 6, "fp-other")
TASKS = ("synthetic_sentiment_a", "synthetic_sentiment_b")


def prompt(seed: int, length: int = 4, emb_dim: int = 6) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(length, emb_dim))


def snapshot(root) -> dict[str, str]:
  """Every path under root (directories too) -> sha256 of its bytes ("dir" for directories)."""
  out = {}
  for directory, dirs, files in os.walk(root):
    for name in dirs:
      out[os.path.relpath(os.path.join(directory, name), root)] = "dir"
    for name in files:
      with open(os.path.join(directory, name), "rb") as f:
        out[os.path.relpath(os.path.join(directory, name), root)] = hashlib.sha256(
            f.read()).hexdigest()
  return out


@pytest.fixture
def library(tmp_path) -> PromptLibrary:
  return PromptLibrary(str(tmp_path / "lib"), create=True)


RUNS_SCRIPT = """
import sys
from tasks.lookup import register_all_tasks
from spot_jax.train.loop import TrainConfig, train
register_all_tasks()
for model_dir, task, seed in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
  train(TrainConfig(model_dir=model_dir, task=task, model="tiny_byte",
                    feature_lengths={"inputs": 48, "targets": 12}, train_steps=10, batch_size=8,
                    prompt_length=4, checkpoint_period=5, eval_period=5, max_eval_examples=8,
                    log_period=5, key_step=5, seed=int(seed)))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, int], str]:
  """Four finished seconds-long runs (2 tasks x 2 seeds; the seed also draws the random frozen
  tiny_byte model, so seeds 0 and 1 are two different frozen models).

  They train in one subprocess with a JAX compilation cache private to it, so only the first
  run compiles (about 4x faster than four in-process runs, and no global JAX config here).
  """
  root = tmp_path_factory.mktemp("runs")
  out = {(task, seed): str(root / f"{task}_{seed}") for task in TASKS for seed in (0, 1)}
  argv = [str(x) for (task, seed), model_dir in out.items() for x in (model_dir, task, seed)]
  env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  process = subprocess.run([sys.executable, "-c", RUNS_SCRIPT, *argv], env=env, cwd=PROJECT_ROOT,
                           capture_output=True, text=True, timeout=900)
  assert process.returncode == 0, process.stderr[-3000:]
  return out


# ----------------------------------------------------------------------------- round trips


def test_add_get_value_key_round_trip(library):
  value, key = prompt(0), prompt(1)  # float64 in, float32 stored
  entry = library.add(task="t", value=value, key=key, model=MODEL, seed=3, key_step=5,
                      value_step=10, metrics={"t": {"accuracy": 50.0}}, score=50.0)
  assert entry.id.startswith("t-") and "3" in entry.id
  assert library.get(entry.id) == entry
  assert entry.prompt_length == 4 and entry.origin == {"kind": "array"} and entry.created
  for got, want in ((library.value(entry.id), value), (library.key(entry.id), key)):
    assert got.dtype == np.float32
    assert got.tobytes() == want.astype(np.float32).tobytes()  # bit-equal
  assert library.entries() == [entry] and library.models() == [MODEL]
  # A reopened library sees the same; float16 and bfloat16 prompts are accepted as float32.
  reopened = PromptLibrary(library.root)
  half = prompt(2).astype(np.float16)
  bf16 = prompt(3).astype(ml_dtypes.bfloat16)
  e16 = reopened.add(task="u", value=half, key=half, model=MODEL)
  ebf = reopened.add(task="u", value=bf16, key=bf16, model=MODEL)
  assert reopened.value(e16.id).tobytes() == half.astype(np.float32).tobytes()
  assert reopened.key(ebf.id).tobytes() == bf16.astype(np.float32).tobytes()
  assert [e.id for e in library.entries(task="u")] == sorted([e16.id, ebf.id])


def test_missing_library_is_named(tmp_path):
  with pytest.raises(LibraryError, match=f"{tmp_path / 'nope'}.*create=True"):
    PromptLibrary(str(tmp_path / "nope"))


@pytest.mark.slow
def test_add_run_dir_from_real_runs(runs, library):
  for (task, seed), model_dir in runs.items():
    summary = run_dir.read_summary(model_dir)
    entry = library.add_run_dir(model_dir)
    best = summary.best_step
    assert best in (5, 10) and summary.key_step == 5
    expected_value = np.load(run_dir.prompt_path(model_dir, best))
    expected_key = np.load(run_dir.prompt_path(model_dir, 5))
    assert library.value(entry.id).tobytes() == expected_value.tobytes()
    assert library.key(entry.id).tobytes() == expected_key.tobytes()
    assert (entry.task, entry.seed, entry.key_step, entry.value_step, entry.steps_done) == (
        task, seed, 5, best, 10)
    assert entry.metrics == summary.checkpoints[str(best)] and entry.score == summary.best_score
    assert entry.model == ModelIdentity("tiny_byte", summary.model["config"]["emb_dim"],
                                        summary.model["fingerprint"])
    assert entry.run == os.path.abspath(model_dir) and entry.origin["kind"] == "run_dir"
  # key_step override: the key becomes the step-10 prompt.
  model_dir = runs[TASKS[0], 0]
  entry = library.add_run_dir(model_dir, key_step=10, entry_id="override")
  assert entry.key_step == 10
  assert library.key("override").tobytes() == np.load(
      run_dir.prompt_path(model_dir, 10)).tobytes()


@pytest.mark.slow
def test_models_of_different_runs_never_mix(runs, library):
  for model_dir in runs.values():
    library.add_run_dir(model_dir)
  models = library.models()
  assert len(models) == 2  # seeds 0 and 1 drew two random frozen models.
  for call in (lambda: library.pooled_keys("mean"), lambda: library.full_keys(),
               lambda: similarity.task_similarity(library, "cosine")):
    with pytest.raises(LibraryError, match="2 frozen models") as error:
      call()
    assert all(m.fingerprint in str(error.value) for m in models)
  for model in models:
    entries, keys = library.pooled_keys("mean", model=model)
    assert sorted(e.task for e in entries) == list(TASKS) and keys.shape == (2, model.emb_dim)
    assert all(e.model == model for e in entries)
    for e, row in zip(entries, keys):
      np.testing.assert_array_equal(row, similarity.pool(library.key(e.id), "mean"))
    tasks, matrix = similarity.task_similarity(library, "per_token_cosine", model=model)
    assert tasks == list(TASKS) and matrix.shape == (2, 2)


# ----------------------------------------------------------------------------- imports


def test_add_npy_with_and_without_key_file(library, tmp_path):
  value_path, key_path = tmp_path / "encoder.prompt.prompt.prompt", tmp_path / "key.npy"
  with open(value_path, "wb") as f:  # the T5X name has no .npy suffix
    np.save(f, prompt(5).astype(np.float32))
  np.save(key_path, prompt(6).astype(np.float32))
  entry = library.add_npy(str(value_path), task="t", model=MODEL, seed=1, score=70.0)
  assert library.key(entry.id).tobytes() == library.value(entry.id).tobytes() == \
      prompt(5).astype(np.float32).tobytes()
  assert entry.origin["kind"] == "npy" and "value" in entry.origin["key"]
  assert entry.origin["path"] == str(value_path) and entry.score == 70.0
  keyed = library.add_npy(str(value_path), task="t", model=MODEL, key_path=str(key_path),
                          entry_id="with-key")
  assert library.key(keyed.id).tobytes() == prompt(6).astype(np.float32).tobytes()
  assert str(key_path) in json.dumps(keyed.origin)


def test_add_peft_takes_the_encoder_half(library, tmp_path):
  adapter = tmp_path / "adapter"
  adapter.mkdir()
  rows = prompt(7, length=6).astype(np.float32)  # 2n rows, n = 3: encoder rows first
  safetensors.numpy.save_file({"prompt_embeddings": rows},
                              str(adapter / "adapter_model.safetensors"))
  (adapter / "adapter_config.json").write_text(json.dumps(
      {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 3, "task_type": "SEQ_2_SEQ_LM"}))
  entry = library.add_peft(str(adapter), task="t", model=MODEL)
  assert entry.prompt_length == 3 and entry.origin["kind"] == "peft"
  assert library.value(entry.id).tobytes() == rows[:3].tobytes()
  assert library.key(entry.id).tobytes() == rows[:3].tobytes()
  # The file itself, with an explicit n.
  entry = library.add_peft(str(adapter / "adapter_model.safetensors"), task="t", model=MODEL,
                           num_virtual_tokens=2, entry_id="two")
  assert library.value("two").tobytes() == rows[:2].tobytes()
  # No prompt_embeddings tensor; no config and no n.
  bare = tmp_path / "bare"
  bare.mkdir()
  safetensors.numpy.save_file({"other": rows}, str(bare / "adapter_model.safetensors"))
  before = snapshot(library.root)
  with pytest.raises(LibraryError, match="prompt_embeddings"):
    library.add_peft(str(bare), task="t", model=MODEL, num_virtual_tokens=3)
  safetensors.numpy.save_file({"prompt_embeddings": rows}, str(bare / "adapter_model.safetensors"))
  with pytest.raises(LibraryError, match="num_virtual_tokens"):
    library.add_peft(str(bare), task="t", model=MODEL)
  assert snapshot(library.root) == before


# ----------------------------------------------------------------------------- concurrency

WORKER = """
import os, sys, time
import numpy as np
from spot_jax.library.store import ModelIdentity, PromptLibrary
root, worker, barrier = sys.argv[1], int(sys.argv[2]), sys.argv[3]
library = PromptLibrary(root)
model = ModelIdentity("tiny_test", 6, "fp-test")
open(f"{barrier}.ready{worker}", "w").close()
while not os.path.exists(barrier):
  time.sleep(0.005)
for i in range(10):
  seed = 1000 * worker + i
  value = np.random.default_rng(seed).normal(size=(4, 6))
  key = np.random.default_rng(seed + 500).normal(size=(4, 6))
  library.add(task=f"task{worker}", value=value, key=key, model=model, seed=seed)
"""


@pytest.mark.slow
def test_concurrent_writers_lose_nothing(library, tmp_path):
  barrier = tmp_path / "go"
  env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
  workers = [subprocess.Popen([sys.executable, "-c", WORKER, library.root, str(w), str(barrier)],
                              env=env, stderr=subprocess.PIPE, text=True) for w in range(4)]
  deadline = time.time() + 120
  while not all(os.path.exists(f"{barrier}.ready{w}") for w in range(4)):  # all imported
    assert time.time() < deadline and all(p.poll() is None for p in workers)
    time.sleep(0.01)
  barrier.write_text("go")  # then all add at once
  for process in workers:
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
  entries = library.entries()
  assert len(entries) == 40 and len({e.id for e in entries}) == 40
  before = snapshot(library.root)
  for form in similarity.POOLED_FORMS:
    indexed, keys = library.pooled_keys(form)
    assert sorted(e.id for e in indexed) == sorted(e.id for e in entries)  # each id once
    for e, row in zip(indexed, keys):
      seed = e.seed
      np.testing.assert_array_equal(library.value(e.id), np.random.default_rng(seed).normal(
          size=(4, 6)).astype(np.float32))
      key = np.random.default_rng(seed + 500).normal(size=(4, 6)).astype(np.float32)
      np.testing.assert_array_equal(library.key(e.id), key)
      np.testing.assert_array_equal(row, similarity.pool(key, form))
  assert snapshot(library.root) == before  # the index was complete: nothing was repaired


# ----------------------------------------------------------------------------- bad inputs


class _Exploit:
  """Unpickling this would create a file: a pickled .npy must never be unpickled."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return builtins.open, (self.path, "w")


@pytest.mark.slow
def test_bad_inputs_leave_the_library_byte_identical(runs, library, tmp_path):
  library.add(task="t", value=prompt(0), key=prompt(1), model=MODEL, entry_id="kept")
  library.add_run_dir(runs[TASKS[0], 0])
  before = snapshot(library.root)
  good = prompt(2)
  truncated, pickled = tmp_path / "truncated.npy", tmp_path / "pickled.npy"
  np.save(truncated, good.astype(np.float32))
  truncated.write_bytes(truncated.read_bytes()[:-10])
  marker = tmp_path / "pwned"
  np.save(pickled, np.array([_Exploit(str(marker))], dtype=object), allow_pickle=True)
  cases = {
      "shape": (lambda: library.add(task="t", value=good[None], key=good[None], model=MODEL),
                r"shape \(1, 4, 6\)"),
      "emb_dim": (lambda: library.add(task="t", value=prompt(3, emb_dim=5),
                                      key=prompt(3, emb_dim=5), model=MODEL),
                  "embed.* 5 .*emb_dim is 6"),
      "nan": (lambda: library.add(task="t", value=np.where(good > 1, np.nan, good), key=good,
                                  model=MODEL), "NaN"),
      "key shape": (lambda: library.add(task="t", value=good, key=good[:3], model=MODEL),
                    r"\(3, 6\)"),
      "integer": (lambda: library.add(task="t", value=good.astype(int), key=good, model=MODEL),
                  "dtype int64"),
      "truncated": (lambda: library.add_npy(str(truncated), task="t", model=MODEL),
                    "truncated.npy"),
      "pickled": (lambda: library.add_npy(str(pickled), task="t", model=MODEL),
                  "pickled.npy.*pickle"),
      "duplicate": (lambda: library.add(task="t", value=good, key=good, model=MODEL,
                                        entry_id="kept"), "'kept' already exists"),
      "bad id": (lambda: library.add(task="t", value=good, key=good, model=MODEL,
                                     entry_id="../escape"), "'../escape'"),
      "missing key step": (lambda: library.add_run_dir(runs[TASKS[1], 0], key_step=7),
                           r"key.* 7 .*checkpoint_7.*\[0, 5, 10\]"),
      "not a run": (lambda: library.add_run_dir(str(tmp_path)), "run.json"),
  }
  for name, (call, message) in cases.items():
    with pytest.raises(LibraryError, match=message):
      call()
    assert snapshot(library.root) == before, name
  assert not marker.exists()
  # The same run added twice gets the same default id: refused, nothing changed.
  with pytest.raises(LibraryError, match="already exists"):
    library.add_run_dir(runs[TASKS[0], 0])
  assert snapshot(library.root) == before


# ----------------------------------------------------------------------------- the index


def _pooled(library):
  entries, keys = library.pooled_keys("unit_mean")
  return [e.id for e in entries], np.array(keys)


def test_remove_then_add_again(library):
  for seed in range(3):
    library.add(task="t", value=prompt(seed), key=prompt(seed + 10), model=MODEL,
                entry_id=f"e{seed}")
  library.remove("e1")
  assert [e.id for e in library.entries()] == ["e0", "e2"]
  ids, keys = _pooled(library)
  assert ids == ["e0", "e2"]
  stored = np.stack([prompt(10), prompt(12)]).astype(np.float32)
  np.testing.assert_array_equal(keys, similarity.pool(stored, "unit_mean"))
  with pytest.raises(LibraryError, match="'e1'"):
    library.value("e1")
  with pytest.raises(LibraryError, match="'e1'"):
    library.remove("e1")
  library.add(task="t", value=prompt(1), key=prompt(11), model=MODEL, entry_id="e1")
  ids, keys = _pooled(library)
  assert sorted(ids) == ["e0", "e1", "e2"]
  for entry_id, row in zip(ids, keys):
    np.testing.assert_array_equal(row, similarity.pool(library.key(entry_id), "unit_mean"))


def test_index_is_repaired_when_deleted_corrupt_or_stale(library, tmp_path):
  for seed in range(3):
    library.add(task="t", value=prompt(seed), key=prompt(seed + 10), model=MODEL,
                entry_id=f"e{seed}")
  library.add(task="o", value=prompt(9), key=prompt(19), model=OTHER_MODEL, entry_id="o9")
  expected = {}
  for model in (MODEL, OTHER_MODEL):
    entries, keys = library.pooled_keys("mean", model=model)
    expected[model] = (entries, np.array(keys))
  index_dir = os.path.join(library.root, "index")

  def check():
    for model, (entries, keys) in expected.items():
      got_entries, got_keys = library.pooled_keys("mean", model=model)
      assert [e.id for e in got_entries] == [e.id for e in entries]
      np.testing.assert_array_equal(got_keys, keys)

  shutil.rmtree(index_dir)  # missing
  check()
  for directory, _, files in os.walk(index_dir):  # unreadable
    for name in files:
      with open(os.path.join(directory, name), "wb") as f:
        f.write(b"garbage")
  check()
  # Stale: an entry directory copied in by hand, and one deleted by hand.
  other = PromptLibrary(str(tmp_path / "other"), create=True)
  other.add(task="t", value=prompt(5), key=prompt(15), model=MODEL, entry_id="e5")
  shutil.copytree(os.path.join(other.root, "entries", "e5"),
                  os.path.join(library.root, "entries", "e5"))
  shutil.rmtree(os.path.join(library.root, "entries", "e0"))
  entries, keys = library.pooled_keys("mean", model=MODEL)
  assert [e.id for e in entries] == ["e1", "e2", "e5"]
  stored = np.stack([prompt(11), prompt(12), prompt(15)]).astype(np.float32)
  np.testing.assert_array_equal(keys, similarity.pool(stored, "mean"))


def test_full_keys_and_unknown_form(library):
  library.add(task="t", value=prompt(0), key=prompt(1), model=MODEL, entry_id="a")
  entries, keys = library.full_keys()
  assert [e.id for e in entries] == ["a"] and keys.shape == (1, 4, 6)
  np.testing.assert_array_equal(keys[0], prompt(1).astype(np.float32))
  with pytest.raises(LibraryError, match="mean.*unit_mean"):
    library.pooled_keys("max")
  library.add(task="t", value=prompt(2, length=5), key=prompt(3, length=5), model=MODEL)
  with pytest.raises(LibraryError, match=r"prompt lengths \[4, 5\]"):
    library.full_keys()


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_add_list_show_remove_export_similarity(runs, tmp_path, capsys):
  lib = str(tmp_path / "cli_lib")
  for model_dir in runs.values():
    assert main(["library", "add", "--library", lib, "--run", model_dir, "--create"]) == 0
  library = PromptLibrary(lib)
  model = library.models()[0]
  prompt_file = tmp_path / "p.npy"
  np.save(prompt_file, prompt(4, emb_dim=model.emb_dim).astype(np.float32))
  assert main(["library", "add", "--library", lib, "--npy", str(prompt_file), "--task",
               "imported", "--model_name", model.name, "--emb_dim", str(model.emb_dim),
               "--fingerprint", model.fingerprint, "--seed", "9", "--id", "imported-9"]) == 0
  capsys.readouterr()

  assert main(["library", "list", "--library", lib, "--model", model.fingerprint]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == ["id", "task", "seed", "model", "method", "L", "key", "step",
                              "value", "step", "score"]
  rows = {line.split()[0]: line.split() for line in lines[1:]}
  assert len(rows) == 3 and rows["imported-9"][1:6] == ["imported", "9",
                                                        f"{model.name}:{model.fingerprint}",
                                                        "prompt", "4"]
  run_entry = next(e for e in library.entries(model=model) if e.run)
  assert rows[run_entry.id][6:8] == ["5", str(run_entry.value_step)]

  assert main(["library", "show", "--library", lib, "imported-9"]) == 0
  shown = json.loads(capsys.readouterr().out)
  assert Entry.from_dict(shown) == library.get("imported-9")

  out_npz = tmp_path / "export.npz"
  assert main(["library", "export", "--library", lib, "--out", str(out_npz), "--task",
               TASKS[0]]) == 0
  with np.load(out_npz, allow_pickle=False) as data:
    metadata = json.loads(str(data["metadata"]))
    assert sorted(m["task"] for m in metadata) == [TASKS[0]] * 2
    for m in metadata:
      np.testing.assert_array_equal(data[f"value/{m['id']}"], library.value(m["id"]))
      np.testing.assert_array_equal(data[f"key/{m['id']}"], library.key(m["id"]))
  out_dir = tmp_path / "exported_lib"
  assert main(["library", "export", "--library", lib, "--out", str(out_dir)]) == 0
  assert PromptLibrary(str(out_dir)).entries() == library.entries()

  # Similarity needs one model: refused without --model, then CSV (+ heatmap) with it.
  capsys.readouterr()
  csv_path, png_path = tmp_path / "sim.csv", tmp_path / "plots" / "sim.png"
  assert main(["library", "similarity", "--library", lib, "--metric", "cosine", "--out",
               str(csv_path)]) == 2
  assert "2 frozen models" in capsys.readouterr().err
  assert main(["library", "similarity", "--library", lib, "--metric", "cosine", "--model",
               model.fingerprint, "--out", str(csv_path), "--plot", str(png_path)]) == 0
  with open(csv_path) as f:
    table = list(csv.reader(f))
  tasks, matrix = similarity.task_similarity(library, "cosine", model=model)
  assert table[0] == ["task"] + tasks and [row[0] for row in table[1:]] == tasks
  np.testing.assert_array_equal(np.array([row[1:] for row in table[1:]], float), matrix)
  assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert main(["library", "similarity", "--library", lib, "--metric", "cosines", "--model",
               model.fingerprint, "--out", str(csv_path)]) == 2
  assert "per_token_cosine" in capsys.readouterr().err

  assert main(["library", "remove", "--library", lib, "imported-9"]) == 0
  assert "imported-9" not in [e.id for e in library.entries()]
  assert main(["library", "show", "--library", lib, "imported-9"]) == 2
  assert "'imported-9'" in capsys.readouterr().err


def test_entries_of_different_methods_never_mix(tmp_path):
  """A prompt-encoder entry is indexed apart from prompt entries of the same frozen model;
  a non-prompt run without its checkpoints is refused naming them (tests/test_library_methods.py
  covers the other methods' entries)."""
  library = PromptLibrary(str(tmp_path / "lib"), create=True)
  encoder_model = ModelIdentity(MODEL.name, MODEL.emb_dim, MODEL.fingerprint, "prompt_encoder")
  assert encoder_model.index_key != MODEL.index_key
  assert ModelIdentity.from_dict(json.loads(json.dumps(MODEL.__dict__))) == MODEL
  library.add(task=TASKS[0], value=prompt(0), key=prompt(1), model=MODEL, entry_id="p")
  library.add(task=TASKS[1], value=prompt(2), key=prompt(3), model=encoder_model, entry_id="e")
  assert [e.id for e in library.entries(model=MODEL)] == ["p"]
  assert [e.id for e in library.entries(model=encoder_model)] == ["e"]
  assert "method prompt_encoder" in str(encoder_model)
  run = tmp_path / "lora_run"
  run.mkdir()
  run_dir.write_summary(str(run), run_dir.RunSummary(
      task=TASKS[0], model={"name": "tiny", "config": {"emb_dim": 6}, "fingerprint": "fp"},
      prompt_length=0, seed=0, batch_size=4, feature_lengths={}, train_steps=1, key_step=1,
      steps_done=1, best_step=1, finished=True, method="lora"))
  with pytest.raises(LibraryError, match="no lora checkpoint for the value.*checkpoint_1"):
    library.add_run_dir(str(run))


def test_add_npy_infers_the_width_and_records_an_unknown_model_comparable_by_shape(tmp_path):
  """`library add --npy` needs only --task: the width comes from the file, the model is
  `unknown` (said in a note), and such entries share an index only with the same width."""
  from conftest import spot_jax_cli
  lib = tmp_path / "lib"
  for name, width in (("a", 8), ("b", 8), ("c", 6)):
    np.save(tmp_path / f"{name}.npy", prompt(width, length=3, emb_dim=width).astype(np.float32))
  done = spot_jax_cli("library", "add", "--library", lib, "--create", "--npy",
                      tmp_path / "a.npy", "--task", "task_a")
  assert done.returncode == 0, done.stderr
  assert "model unknown unknown" in done.stdout and "note: the frozen model is unknown" \
      in done.stdout and "width 8" in done.stdout
  library = PromptLibrary(str(lib))
  library.add_npy(str(tmp_path / "b.npy"), task="task_b", model=ModelIdentity.outside())
  library.add_npy(str(tmp_path / "c.npy"), task="task_c", model=ModelIdentity.outside())
  models = sorted(library.models(), key=lambda m: m.emb_dim)
  assert [(m.name, m.fingerprint, m.emb_dim) for m in models] == [
      ("unknown", "unknown", 6), ("unknown", "unknown", 8)]
  assert sorted(e.task for e in library.entries(model=models[1])) == ["task_a", "task_b"]
  with pytest.raises(LibraryError, match="embedding dim 8 but the model's emb_dim is 6"):
    library.add_npy(str(tmp_path / "a.npy"), task="t", model=ModelIdentity.outside(emb_dim=6))


def test_a_failed_add_create_leaves_no_empty_library(tmp_path):
  from conftest import spot_jax_cli
  bad = tmp_path / "bad.npy"
  bad.write_bytes(b"not a numpy file")
  for lib in (tmp_path / "new", tmp_path / "empty_dir"):
    existed = lib.name == "empty_dir"
    if existed:
      lib.mkdir()
    done = spot_jax_cli("library", "add", "--library", lib, "--create", "--npy", bad,
                        "--task", "t")
    assert done.returncode == 2 and "not a readable plain .npy array" in done.stderr
    assert (sorted(os.listdir(lib)) == [] if existed else not lib.exists())
