"""Atomic file writes: a temporary name in the same directory, fsync, then rename.

A process killed at any moment leaves either the old file or the complete new one. numpy-free and
JAX-free, so every layer (library, study results, run directories) can use it.
"""

from __future__ import annotations

import os
import tempfile
import threading

_UMASK_LOCK = threading.Lock()


def umask_mode(mode: int = 0o666) -> int:
  """`mode` less the process umask: the permissions `open` would give a new file (mkstemp and
  mkdtemp always use 0600/0700, so their files are chmod-ed to this before they are renamed)."""
  with _UMASK_LOCK:  # reading the umask means setting it; no other thread may race.
    umask = os.umask(0o022)
    os.umask(umask)
  return mode & ~umask


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically, with the permissions the umask gives new files."""
  directory = os.path.dirname(path) or "."
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_")
  try:
    os.fchmod(fd, umask_mode(0o666))
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
