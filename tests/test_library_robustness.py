"""Prompt library robustness: corrupt entries, concurrent creation, disk full while indexing,
export targets, the umask, stale temporary directories, read-only libraries."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import PROJECT_ROOT, cli_in_process, small_library
from spot_jax.library.store import IndexUpdateError, LibraryError, ModelIdentity, PromptLibrary

MODEL = ModelIdentity("tiny", 4, "fp")  # small_library's model.


def test_corrupt_entry_is_skipped_reported_removable_and_repairable(tmp_path, capsys):
  library = small_library(tmp_path)
  (tmp_path / "lib/entries/e1/entry.json").write_text("{not json")
  (tmp_path / "lib/entries/e2/pooled.npz").write_bytes(b"PK\x03\x04garbage")
  root = str(tmp_path / "lib")
  code, out, err = cli_in_process(capsys, "library", "list", "--library", root)
  assert code == 0 and "e0" in out and "e1" not in out
  assert "skipped corrupt entry e1" in err and "--repair" in err
  fresh = PromptLibrary(root)
  entries, keys = fresh.pooled_keys("mean")
  assert [e.id for e in entries] == ["e0"] and keys.shape == (1, 4)
  assert "pooled.npz" in fresh.problems["e2"] and "allow_pickle" not in fresh.problems["e2"]
  code, out, _ = cli_in_process(capsys, "library", "check", "--library", root)
  assert code == 1 and "e1" in out and "e2" in out
  code, out, _ = cli_in_process(capsys, "library", "remove", "--library", root, "e1")
  assert code == 0 and "e1" not in PromptLibrary(root).ids()
  code, out, _ = cli_in_process(capsys, "library", "check", "--library", root, "--repair")
  assert code == 0 and "quarantine" in out
  assert PromptLibrary(root).ids() == ["e0"] and os.listdir(tmp_path / "lib/quarantine")
  assert cli_in_process(capsys, "library", "check", "--library", root)[0] == 0


def test_concurrent_create_is_atomic_and_idempotent(tmp_path):
  root = tmp_path / "new"
  code = ("import sys; from spot_jax.library.store import PromptLibrary\n"
          f"PromptLibrary({str(root)!r}, create=True)")
  env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
  writers = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE,
                              text=True) for _ in range(6)]
  errors = [w.communicate()[1] for w in writers]
  assert [w.returncode for w in writers] == [0] * 6, errors
  assert PromptLibrary(str(root)).ids() == []


def test_disk_full_while_indexing_says_the_entry_was_added(tmp_path, monkeypatch):
  library = small_library(tmp_path, n=0)

  def full(*args, **kwargs):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(library, "_update_index", full)
  with pytest.raises(IndexUpdateError, match="'e9' was added.*No space left.*rebuilt"):
    library.add(task="t", value=np.ones((2, 4)), key=np.ones((2, 4)), model=MODEL,
                entry_id="e9")
  monkeypatch.undo()
  assert [e.id for e in PromptLibrary(library.root).pooled_keys("mean")[0]] == ["e9"]


def test_export_refuses_an_existing_target_and_library_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    library = small_library(tmp_path, n=1)
  finally:
    os.umask(old)
  entry_dir = tmp_path / "lib/entries/e0"
  assert stat.S_IMODE(entry_dir.stat().st_mode) == 0o755
  assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in entry_dir.iterdir())
  assert stat.S_IMODE((tmp_path / "lib/library.json").stat().st_mode) == 0o644
  other = small_library(tmp_path / "other", n=0)
  with pytest.raises(LibraryError, match="already exists.*never merges"):
    library.export(other.root)
  assert other.ids() == []
  library.export(str(tmp_path / "copy"))
  assert PromptLibrary(str(tmp_path / "copy")).ids() == ["e0"]


def test_stale_temporary_directories_are_cleaned(tmp_path, capsys):
  library = small_library(tmp_path, n=1)
  stale = tmp_path / "lib/entries/.tmp-dead"
  stale.mkdir()
  (stale / "value.npy").write_bytes(b"partial")
  trash = tmp_path / "lib/entries/.trash-e5-0000"
  trash.mkdir()
  live = tmp_path / "lib/entries/.tmp-live"  # a writer still at work: young, kept.
  live.mkdir()
  os.utime(stale, (time.time() - 7200, time.time() - 7200))
  code, out, _ = cli_in_process(capsys, "library", "check", "--library", library.root)
  assert code == 1 and ".tmp-dead" in out and ".trash-e5" in out and ".tmp-live" not in out
  assert cli_in_process(capsys, "library", "check", "--library", library.root, "--repair")[0] == 0
  assert not stale.exists() and not trash.exists() and live.exists()


def test_read_only_library_with_a_stale_index_still_searches(tmp_path):
  library = small_library(tmp_path, n=2)
  os.remove(os.path.join(library.index_dir, os.listdir(library.index_dir)[0]))
  for directory in (library.root, library.index_dir, library.entries_dir):
    os.chmod(directory, 0o555)
  try:
    entries, keys = PromptLibrary(library.root).pooled_keys("mean")
  finally:
    for directory in (library.root, library.index_dir, library.entries_dir):
      os.chmod(directory, 0o755)
  assert [e.id for e in entries] == ["e0", "e1"] and keys.shape == (2, 4)
