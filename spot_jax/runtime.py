"""Host settings for fast, lean training steps on CPU; the `spot-jax` command applies them.

XLA:CPU takes each step's temporary buffer (GiBs for small T5 at batch 32) from malloc and
frees it at the end of the step. glibc serves blocks that large with mmap (its per-thread arenas
always do, whatever `mallopt` says) and returns them with munmap, so every step faults all
those pages in again: about a million page faults per step for small/128. Two settings fix it:

- **Keeping freed memory.** jemalloc with page purging off and one arena (`MALLOC_CONF`) keeps
  the freed pages and hands them to the next step (a thousand faults per step). Where jemalloc
  is not installed (`scripts/ensure_env.sh` installs `libjemalloc2` where it may), glibc does the
  same when told to (`GLIBC_KEEP_TUNABLES`: one arena, no mmap'd blocks, no trimming): tiny/512
  measured 2.75x glibc's default against jemalloc's 2.90x, with the same ~1,000 faults per step
  (benchmarks/RESULTS.md, "levers tiny/512"). Either must be in place when the process starts,
  so `spot-jax` re-executes itself once with `LD_PRELOAD` + `MALLOC_CONF`, or `GLIBC_TUNABLES`,
  set. `SPOT_JAX_JEMALLOC=0` turns jemalloc off (a path picks the library);
  `SPOT_JAX_GLIBC_KEEP=0` turns the glibc fallback off; a `GLIBC_TUNABLES` of the user's own is
  left as it is.
- **Synchronous CPU dispatch** (`jax_cpu_enable_async_dispatch=False`, single-device
  computations only; sharded ones stay parallel). With JAX's default asynchronous dispatch a
  worker thread runs the step and frees its buffer only after it has marked the outputs ready,
  so the next step, launched the moment they are, often allocates its buffer first. Any
  allocator that keeps freed pages then holds two step buffers (small/128: 8.2 GiB instead of
  4.8). Run inline, each step frees its buffer before the next one asks, and the same pages
  serve every step. `SPOT_JAX_CPU_DISPATCH=async` keeps JAX's default.

`benchmarks/levers.py` measures each setting and `benchmarks/compare_peft.py` the result
(benchmarks/RESULTS.md).
"""

from __future__ import annotations

import ctypes.util
import os
import sys
import warnings
from typing import Any, Callable, Mapping

ENV_SWITCH = "SPOT_JAX_JEMALLOC"
GLIBC_SWITCH = "SPOT_JAX_GLIBC_KEEP"
DISPATCH_SWITCH = "SPOT_JAX_CPU_DISPATCH"
# Never purge freed pages (dirty or muzzy) back to the kernel: reuse them at the next step. One
# arena: XLA's worker threads free what others allocated, and with an arena per thread each
# would keep its own copy of the step's pages (small/512 then needs 24 GiB instead of 14).
MALLOC_CONF = "narenas:1,dirty_decay_ms:-1,muzzy_decay_ms:-1"
# The same effect from glibc alone: every thread in the main arena, no block served by mmap (so
# nothing is unmapped at free), freed memory at the top of the heap never trimmed.
GLIBC_KEEP_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                       "glibc.malloc.trim_threshold=4611686018427387904")
_DEFAULT_PATHS = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2", "/usr/lib64/libjemalloc.so.2")


def jemalloc_path(environ: Mapping[str, str] = os.environ) -> str | None:
  """The jemalloc library to preload, or None (not installed, or turned off)."""
  choice = environ.get(ENV_SWITCH, "")
  if choice.lower() in ("0", "false", "no", "off"):
    return None
  if choice and choice.lower() not in ("1", "true", "yes", "on"):
    if not os.path.exists(choice):
      raise FileNotFoundError(f"{ENV_SWITCH}={choice}: no such file (a libjemalloc.so path, "
                              "or 0 to turn jemalloc off)")
    return choice
  for path in _DEFAULT_PATHS:
    if os.path.exists(path):
      return path
  return ctypes.util.find_library("jemalloc")


def host_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
  """Environment variables that keep freed memory for the next step: jemalloc preloaded with
  purging off, else glibc's keep-memory tunables ({} when both are switched off)."""
  library = jemalloc_path(environ)
  if library is None:
    off = environ.get(GLIBC_SWITCH, "").lower() in ("0", "false", "no", "off")
    if off or environ.get("GLIBC_TUNABLES"):
      return {}
    return {"GLIBC_TUNABLES": GLIBC_KEEP_TUNABLES}
  preload = environ.get("LD_PRELOAD", "").split()
  return {"LD_PRELOAD": " ".join(preload if library in preload else [library, *preload]),
          "MALLOC_CONF": environ.get("MALLOC_CONF") or MALLOC_CONF}


def describe_allocator(environment: Mapping[str, str]) -> str:
  """What a process started with `environment` allocates with, in words (for benchmark tables)."""
  if "jemalloc" in environment.get("LD_PRELOAD", ""):
    return f"jemalloc (MALLOC_CONF={environment.get('MALLOC_CONF', '')})"
  if environment.get("GLIBC_TUNABLES") == GLIBC_KEEP_TUNABLES:
    return "glibc with the keep-memory tunables"
  if environment.get("GLIBC_TUNABLES"):
    return f"glibc (GLIBC_TUNABLES={environment['GLIBC_TUNABLES']})"
  return "glibc defaults"


def reexec_with_host_environment() -> None:
  """Restarts this program under `host_environment()` once (no-op when already in place).

  Call first thing in a command's entry point, before other work: the process is replaced.
  """
  wanted = host_environment()
  if not wanted or all(os.environ.get(k) == v for k, v in wanted.items()):
    return
  os.environ.update(wanted)
  argv = list(getattr(sys, "orig_argv", [])[1:]) or sys.argv
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable, *argv])


def cpu_dispatch(environ: Mapping[str, str] = os.environ) -> str:
  """The CPU dispatch mode `SPOT_JAX_CPU_DISPATCH` asks for: "sync" (the default) or "async"."""
  choice = environ.get(DISPATCH_SWITCH, "sync").strip().lower() or "sync"
  if choice not in ("sync", "async"):
    raise ValueError(f"{DISPATCH_SWITCH}={environ[DISPATCH_SWITCH]!r}: expected sync or async")
  return choice


def configure_cpu_dispatch(environ: Mapping[str, str] = os.environ) -> bool:
  """Makes JAX run single-device CPU computations inline, on the launching thread.

  Call before JAX creates its CPU client (before the first computation or device query);
  later it cannot take effect. Returns whether dispatch is synchronous from here on.
  """
  import jax
  from jax._src import xla_bridge
  if not xla_bridge.backends_are_initialized():
    jax.config.update("jax_cpu_enable_async_dispatch", cpu_dispatch(environ) == "async")
  return not jax.config.values["jax_cpu_enable_async_dispatch"]


def configure_host() -> bool:
  """Both host settings, as the `spot-jax` command applies them: restarts the program under
  jemalloc once (`reexec_with_host_environment`), then sets synchronous CPU dispatch. Call
  first thing in a program. Returns whether dispatch is synchronous."""
  reexec_with_host_environment()
  return configure_cpu_dispatch()


# ----------------------------------------------------------------------------- accelerators

CACHE_SWITCH = "SPOT_JAX_COMPILATION_CACHE"  # a directory, or 0/off: no persistent cache.
_OFF = ("0", "false", "no", "off", "none")


def compilation_cache_dir(environ: Mapping[str, str] = os.environ) -> str | None:
  """Where compiled programs persist between processes: $SPOT_JAX_COMPILATION_CACHE, else
  $XDG_CACHE_HOME/spot_jax/xla (~/.cache/spot_jax/xla); None when switched off."""
  choice = environ.get(CACHE_SWITCH, "").strip()
  if choice.lower() in _OFF:
    return None
  if choice:
    return os.path.expanduser(choice)
  root = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "spot_jax", "xla")


def enable_compilation_cache(path: str | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache at `path` (default: a directory already given
  to jax, e.g. by $JAX_COMPILATION_CACHE_DIR, else `compilation_cache_dir()`),
  for every program however quick to compile, so a restarted or repeated run (a study's runs,
  a preempted job) loads its executables instead of compiling them. Returns the directory, or
  None when switched off ($SPOT_JAX_COMPILATION_CACHE=0). The cache is keyed on the program,
  the jax/XLA version and the device, so one directory serves every backend."""
  import jax
  default = compilation_cache_dir()
  if default is None:
    return None
  path = path or getattr(jax.config, "jax_compilation_cache_dir", None) or default
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return path


def system_accelerators() -> list[str]:
  """Accelerators the operating system shows (NVIDIA device files or nvidia-smi, TPU device
  files), whether or not jax can use them."""
  import glob
  import shutil
  found = sorted(glob.glob("/dev/nvidia[0-9]*"))
  if not found and shutil.which("nvidia-smi"):
    found = ["nvidia-smi"]
  return found + sorted(glob.glob("/dev/accel[0-9]*") + glob.glob("/dev/vfio/[0-9]*"))


def hide_accelerators_from_tensorflow() -> None:
  """Keeps TensorFlow (tf.data, seqio, TFDS) off the GPUs/TPUs, as T5X's train.py does
  (`tf.config.experimental.set_visible_devices([], "GPU")`), so it never takes device memory
  that jax needs. TensorFlow claims devices at its first operation, not at import, so this
  hides them right after TensorFlow is imported, by whatever imports it (now if it already
  is); a program that never imports TensorFlow pays nothing."""
  if "tensorflow" in sys.modules:
    _hide(sys.modules["tensorflow"])
  elif not any(isinstance(f, _TensorFlowHook) for f in sys.meta_path):
    sys.meta_path.insert(0, _TensorFlowHook())


def tensorflow_devices_hidden() -> bool:
  """Whether this process has hidden the accelerators from TensorFlow."""
  tf = sys.modules.get("tensorflow")
  return bool(tf is not None and getattr(tf, _HIDDEN_MARK, False))


_HIDDEN_MARK = "_spot_jax_accelerators_hidden"


def _hide(tf: Any) -> None:
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # already initialised, or no such device type.
      pass
  setattr(tf, _HIDDEN_MARK, True)


class _TensorFlowHook:
  """A meta-path finder that runs `_hide` once the `tensorflow` package has been executed."""

  def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
    if name != "tensorflow":
      return None
    import importlib.machinery
    sys.meta_path.remove(self)  # one shot; the real finders locate the package.
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
      return spec
    load = spec.loader.exec_module

    def exec_module(module: Any) -> None:
      load(module)
      _hide(module)

    spec.loader.exec_module = exec_module
    return spec


def describe_backend() -> dict[str, Any]:
  """The jax backend and devices of this process (for logs and run.json)."""
  import jax
  devices = jax.devices()
  return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
          "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
          "process_count": jax.process_count(), "jax": jax.__version__,
          "tensorflow_accelerators_hidden": (tensorflow_devices_hidden()
                                             if "tensorflow" in sys.modules else None)}


def log_backend(log: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Logs the backend and devices; warns when the system shows an accelerator that jax cannot
  use (a CPU-only jax install on a GPU machine: see the README's accelerator section)."""
  import logging
  info = describe_backend()
  log = log or logging.getLogger("spot_jax").info
  log(f"jax {info['jax']}: backend {info['backend']}, {info['device_count']} x "
      f"{info['device_kind']} ({info['process_count']} process(es))")
  visible = system_accelerators()
  if info["backend"] == "cpu" and visible and not os.environ.get("JAX_PLATFORMS"):
    warnings.warn(f"The system shows accelerator(s) {visible[:4]} but jax runs on the CPU: "
                  "install the accelerator build (pip install 'spot-jax[cuda]' or "
                  "'spot-jax[tpu]', README 'GPUs and TPUs'); JAX_PLATFORMS=cpu silences this.",
                  stacklevel=2)
  return info


def configure_jax() -> None:
  """What every entry point does before jax or TensorFlow touch a device: CPU dispatch,
  TensorFlow kept off the accelerators, the persistent compilation cache."""
  configure_cpu_dispatch()
  hide_accelerators_from_tensorflow()
  enable_compilation_cache()
