"""A command's console output without the libraries' log lines (`spot-jax` applies it).

JAX, XLA and TensorFlow log from C++ through absl straight to file descriptor 2, whatever
`TF_CPP_MIN_LOG_LEVEL` says once absl logs before its initialisation ("WARNING: All log
messages before absl::InitializeLog() ...", "cudart_stub.cc ... Could not find cuda drivers",
"oneDNN custom operations are on ..."), and their Python code logs and warns through `logging`
and `warnings`. `quiet_console()` keeps what a user of the command needs and drops the rest:

- Python logging: records of spot_jax's own modules (its warnings: truncation, ...) and errors of
  any module reach stderr as `LEVEL: message`; library INFO/WARNING records are dropped.
- Python warnings: those of spot_jax's modules are shown, the libraries' are not.
- File descriptor 2 (C and C++ writes, and the stderr of child processes, e.g. study workers)
  flows through a small filter process that drops absl/glog-format INFO and WARNING lines, CUDA
  plugin registration errors and TensorFlow's CPU-feature notice, and passes everything else
  (fatal XLA errors, crashes) unchanged. Python's own `sys.stderr` (our messages, progress
  bars, tracebacks) writes to the terminal directly. The filter ignores SIGINT (a Ctrl-C meant
  for the command) and ends when the last writer closes the pipe, so output of a crashed
  command still gets through.

`SPOT_JAX_DEBUG=1` or `SPOT_JAX_VERBOSE=1` turns it off.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# The filter process: reads the pipe, writes kept bytes to its stdout (the original stderr).
# A partial line that may be the start of a log line is held until its newline; any other
# partial line (a progress bar) is passed at once.
_FILTER = r"""
import os, re, signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
noise = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog|"
    rb"[IW]\d{4} [\d:. ]+\d+ [\w.]+:\d+\]|"
    rb"\d{4}-\d\d-\d\d [\d:.]+: [IW] |"
    rb"E\d{4} [\d:. ]+\d+ (cuda\w*|cudart_stub|cuda_dnn|cuda_fft|cuda_blas)\.cc:\d+\]|"
    rb".*oneDNN custom operations are on|"
    rb"To enable the following instructions|"
    rb"This TensorFlow binary is optimized")
maybe = re.compile(rb"[IWEFTo]|\Z")
pending, passing = b"", False
while True:
  try:
    data = os.read(0, 65536)
  except InterruptedError:
    continue
  if not data:
    break
  out, pending = [], pending + data
  while pending:
    if passing:
      end = pending.find(b"\n")
      chunk, pending = (pending, b"") if end < 0 else (pending[:end + 1], pending[end + 1:])
      out.append(chunk)
      passing = end < 0
      continue
    end = pending.find(b"\n")
    if end < 0:
      if not maybe.match(pending):
        out.append(pending)
        pending, passing = b"", True
      break
    line, pending = pending[:end + 1], pending[end + 1:]
    if not noise.match(line):
      out.append(line)
  if out:
    try:
      os.write(1, b"".join(out))
    except OSError:
      pass
if pending and not noise.match(pending):
  os.write(1, pending)
"""


class _OwnOrSevere(logging.Filter):
  """Records of spot_jax's modules, and errors of any module."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or record.pathname.startswith(_PACKAGE_DIR)


def quiet_console() -> None:
  """Applies the policy of the module docstring for the rest of the process."""
  if os.environ.get("SPOT_JAX_DEBUG") or os.environ.get("SPOT_JAX_VERBOSE"):
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  _filter_native_stderr()
  handler = logging.StreamHandler()  # writes to sys.stderr: the terminal, past the filter.
  handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
  handler.addFilter(_OwnOrSevere())
  root = logging.getLogger()
  root.handlers = [handler]  # absl's Python logging then uses it (no basicConfig of its own).
  root.setLevel(logging.INFO)
  warnings.filterwarnings("ignore")
  warnings.filterwarnings("default", module=r"spot_jax(\.|$)")


def _filter_native_stderr() -> None:
  try:
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    process = subprocess.Popen([sys.executable, "-S", "-c", _FILTER], stdin=read_end,
                               stdout=terminal, stderr=subprocess.DEVNULL, close_fds=True)
  except OSError:  # no process to spare: leave stderr as it is.
    return
  os.close(read_end)
  os.dup2(write_end, 2)
  os.close(write_end)
  sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding,
                         errors=sys.stderr.errors)

  def drain() -> None:
    try:
      sys.stderr.flush()
    except (OSError, ValueError):
      pass
    os.dup2(terminal, 2)  # closes this process's end of the pipe: the filter sees EOF.
    try:
      process.wait(timeout=5)
    except subprocess.TimeoutExpired:  # a child still holds the pipe; it drains on its own.
      pass

  atexit.register(drain)
