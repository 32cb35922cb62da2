"""Atomic file writes (a temporary name in the same directory, fsync, then rename), and what
a full disk looks like.

A process killed at any moment leaves either the old file or the complete new one. numpy-free and
JAX-free, so every layer (library, study results, run directories) can use it.
"""

from __future__ import annotations

import errno
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


# ----------------------------------------------------------------------------- a full disk

DISK_FULL_EXIT = 75  # `spot-jax`'s exit status when the disk is full (sysexits.h EX_TEMPFAIL).
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def disk_full_path(error: BaseException, default: str | None = None) -> str | None:
  """The path on the full device when `error` says the disk is full, else None: an OSError
  ENOSPC/EDQUOT (its filename), or an error of another library whose text says so (TensorFlow's
  SaveV2 raises ResourceExhaustedError "... No space left on device"): `default` then, or
  "" when there is none."""
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
    return os.fspath(error.filename) if error.filename else (default or "")
  text = str(error)[:10_000]
  if any(t in text for t in _DISK_FULL_TEXT):
    return default or ""
  return None


def disk_full_message(path: str | None) -> str:
  """The one line a full disk gets, naming the device by a path on it."""
  where = f" holding {path}" if path else ""
  return (f"no space left on the device{where}; free space and rerun the same command "
          "(finished runs are kept)")
