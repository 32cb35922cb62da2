"""Host allocator settings: jemalloc found, preloaded by a re-exec, freed pages reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT
from spot_jax import runtime

# Re-executes itself under the host environment, then allocates, touches and frees a 256 MiB
# buffer five times (what XLA:CPU does with its step buffer) and reports the page faults of the
# last four rounds and whether jemalloc is mapped.
FAULTS_SCRIPT = """
import json, os, resource, sys
from spot_jax import runtime
runtime.reexec_with_host_environment()
import numpy as np
faults = []
for _ in range(5):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  buffer = np.ones(64 * 2**20, np.float32)
  del buffer
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"faults": sum(faults[1:]), "pid": os.getpid(),
                  "jemalloc": "jemalloc" in open("/proc/self/maps").read()}))
"""


def run_script(switch: str) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
  env.update(SPOT_JAX_JEMALLOC=switch, PYTHONPATH=str(PROJECT_ROOT))
  out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT], check=True, capture_output=True,
                       text=True, env=env).stdout
  return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(runtime.jemalloc_path({}) is None,
                    reason="jemalloc is not installed (apt-get install libjemalloc2)")
def test_reexec_preloads_jemalloc_and_freed_pages_are_reused():
  plain, preloaded = run_script("0"), run_script("1")
  assert not plain["jemalloc"] and preloaded["jemalloc"]
  assert plain["faults"] >= 4 * 128  # 256 MiB: at least 128 faults (2 MiB pages) a round.
  assert preloaded["faults"] < plain["faults"] / 20, (preloaded, plain)


def test_switched_off_nothing_changes():
  assert runtime.host_environment({"SPOT_JAX_JEMALLOC": "0"}) == {}
  assert not run_script("0")["jemalloc"]


def test_environment_keeps_what_the_user_set(tmp_path):
  library = tmp_path / "libjemalloc.so.2"
  library.write_bytes(b"")
  environ = {"SPOT_JAX_JEMALLOC": str(library), "LD_PRELOAD": "/opt/libother.so",
             "MALLOC_CONF": "narenas:2"}
  assert runtime.host_environment(environ) == {
      "LD_PRELOAD": f"{library} /opt/libother.so", "MALLOC_CONF": "narenas:2"}
  assert runtime.host_environment({"SPOT_JAX_JEMALLOC": str(library)}) == {
      "LD_PRELOAD": str(library), "MALLOC_CONF": runtime.MALLOC_CONF}


def test_a_missing_library_is_named():
  with pytest.raises(FileNotFoundError, match="SPOT_JAX_JEMALLOC=/nowhere/libjemalloc.so"):
    runtime.jemalloc_path({"SPOT_JAX_JEMALLOC": "/nowhere/libjemalloc.so"})
