"""Host settings: jemalloc found, preloaded by a re-exec, freed pages reused; synchronous CPU
dispatch keeps one step buffer, not two."""

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


# Under the host environment, runs the trainer's jitted step (tiny model, inputs 256 + prompt
# 100, batch 32, dropout 0.1: XLA's step buffer is about 0.5 GiB) eight times, waiting for each
# as a training loop does; reports the peak resident memory beyond what the warm-up step left.
STEP_BUFFER_SCRIPT = """
import json
from spot_jax import runtime
sync = runtime.configure_host()
import jax, numpy as np
from spot_jax.models import T5, get_config
from spot_jax.models.prompts import from_sampled_vocab, with_prompt, without_prompt
from spot_jax.train.optimizer import prompt_adafactor
from spot_jax.train.step import init_train_state, make_train_step
def memory(field):
  return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status")
              if l.startswith(field))
config = get_config("tiny", dropout_rate=0.1)
model = T5(config, 100)
tokens = np.random.default_rng(0).integers(2, config.vocab_size, (32, 264), np.int32)
batch = {"encoder_input_tokens": tokens[:, :256], "decoder_target_tokens": tokens[:, 256:],
         "decoder_input_tokens": np.pad(tokens[:, 256:], ((0, 0), (1, 0)))[:, :-1]}
params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens[:1, :256], tokens[:1, 256:])
frozen = without_prompt(params["params"])
optimizer = prompt_adafactor()
state = init_train_state(with_prompt({}, from_sampled_vocab(
    jax.random.PRNGKey(1), frozen["token_embedder"]["embedding"], 100)), optimizer, seed=0)
step = jax.jit(make_train_step(model, optimizer), donate_argnums=(0,))
state, metrics = jax.block_until_ready(step(state, frozen, batch))
start = memory("VmRSS:")
for _ in range(8):
  state, metrics = jax.block_until_ready(step(state, frozen, batch))
print(json.dumps({"sync": sync, "growth": memory("VmHWM:") - start}))
"""


def run_script(switch: str, script: str = FAULTS_SCRIPT, **environ: str) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES", runtime.DISPATCH_SWITCH,
                      runtime.GLIBC_SWITCH)}
  env.update(SPOT_JAX_JEMALLOC=switch, PYTHONPATH=str(PROJECT_ROOT), **environ)
  out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                       text=True, env=env).stdout
  return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(runtime.jemalloc_path({}) is None,
                    reason="jemalloc is not installed (apt-get install libjemalloc2)")
def test_reexec_preloads_jemalloc_and_freed_pages_are_reused():
  plain, preloaded = run_script("0", SPOT_JAX_GLIBC_KEEP="0"), run_script("1")
  assert not plain["jemalloc"] and preloaded["jemalloc"]
  assert plain["faults"] >= 4 * 128  # 256 MiB: at least 128 faults (2 MiB pages) a round.
  assert preloaded["faults"] < plain["faults"] / 20, (preloaded, plain)


def test_switched_off_nothing_changes():
  off = {"SPOT_JAX_JEMALLOC": "0", "SPOT_JAX_GLIBC_KEEP": "0"}
  assert runtime.host_environment(off) == {}
  assert not run_script("0", SPOT_JAX_GLIBC_KEEP="0")["jemalloc"]


def test_without_jemalloc_glibc_keeps_freed_memory():
  assert runtime.host_environment({"SPOT_JAX_JEMALLOC": "0"}) == {
      "GLIBC_TUNABLES": runtime.GLIBC_KEEP_TUNABLES}
  # A user's own glibc tunables are left alone.
  assert runtime.host_environment({"SPOT_JAX_JEMALLOC": "0", "GLIBC_TUNABLES": "x=1"}) == {}
  plain = run_script("0", SPOT_JAX_GLIBC_KEEP="0")
  kept = run_script("0")
  assert not kept["jemalloc"]
  assert plain["faults"] >= 4 * 128
  assert kept["faults"] < plain["faults"] / 20, (kept, plain)


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


NEEDS_JEMALLOC = pytest.mark.skipif(runtime.jemalloc_path({}) is None,
                                    reason="jemalloc is not installed (apt-get install "
                                           "libjemalloc2)")


@pytest.mark.parametrize("allocator", [pytest.param("1", marks=NEEDS_JEMALLOC), "0"],
                         ids=["jemalloc", "glibc_keep"])
def test_synchronous_dispatch_reuses_one_step_buffer(allocator):
  # With asynchronous dispatch a worker thread frees a step's buffer after marking its outputs
  # ready, so the next step maps a second one (here +485 MiB in 3 of 3 runs with
  # SPOT_JAX_CPU_DISPATCH=async); run inline, every step reuses the first.
  result = run_script(allocator, STEP_BUFFER_SCRIPT)
  assert result["sync"]
  assert result["growth"] < 64 * 2**20, result


def test_dispatch_switch_and_its_errors():
  assert runtime.cpu_dispatch({}) == "sync"
  assert runtime.cpu_dispatch({runtime.DISPATCH_SWITCH: "ASYNC"}) == "async"
  with pytest.raises(ValueError, match="SPOT_JAX_CPU_DISPATCH='fast': expected sync or async"):
    runtime.cpu_dispatch({runtime.DISPATCH_SWITCH: "fast"})
  script = ("import json\nfrom spot_jax import runtime\n"
            "print(json.dumps({'sync': runtime.configure_cpu_dispatch()}))")
  assert run_script("0", script)["sync"]
  assert not run_script("0", script, SPOT_JAX_CPU_DISPATCH="async")["sync"]
  env = dict(os.environ, SPOT_JAX_JEMALLOC="0", SPOT_JAX_CPU_DISPATCH="fast",
             PYTHONPATH=str(PROJECT_ROOT))
  failed = subprocess.run([sys.executable, "-m", "spot_jax.cli.main", "--help"], env=env,
                          capture_output=True, text=True)
  assert failed.returncode == 1 and not failed.stdout
  assert failed.stderr.strip().endswith(
      "spot-jax: error: SPOT_JAX_CPU_DISPATCH='fast': expected sync or async")


def test_dispatch_is_left_alone_once_jax_has_started():
  import jax
  jax.devices()  # the CPU client exists from here on
  before = jax.config.values["jax_cpu_enable_async_dispatch"]
  assert runtime.configure_cpu_dispatch({}) is (not before)
  assert jax.config.values["jax_cpu_enable_async_dispatch"] is before
