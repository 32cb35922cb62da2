"""Shared test fixtures: paths to ../shared/fixtures and small models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = PROJECT_ROOT.parent / "shared" / "fixtures"
T5X_TINY_CHECKPOINT = SHARED_FIXTURES / "t5x_t5_1_1_tiny" / "checkpoint_3"
T5_VOCAB = SHARED_FIXTURES / "t5_vocab" / "sentencepiece.model"
FROZEN_TINY = PROJECT_ROOT / "tests" / "golden" / "tiny_byte_frozen.npz"
PRETRAINED_STEP = 1500  # the step pretrained_checkpoint is written at.
SPOT_JAX = Path(sys.executable).parent / "spot-jax"  # the installed entry point.

# Golden logits (made with torch on another machine) are compared to ours with a tolerance
# relative to their scale: float32 keeps ~7 significant digits (eps 1.2e-7), and each logit is
# the end of a chain of reductions (attention, MLP, the vocabulary projection, over 2+2 layers)
# whose summation order differs between torch and XLA and between CPUs (SIMD width, FMA
# contraction), so round-off of many ulps *of the values' magnitude* is expected: measured
# up to 1.68e-4 on logits of magnitude ~20 (LoRA; 9e-5 here), i.e. 8.5e-6 of the scale. 2e-5
# of the largest |reference| admits that with room and stays >250x below the 0.1 by which
# each fixture's adapter or prompt moves the logits (the tests check that too).
GOLDEN_RTOL = 2e-5


def golden_tolerance(reference) -> float:
  """The largest admitted |ours - golden|: GOLDEN_RTOL of the reference's largest magnitude."""
  import numpy as np
  return GOLDEN_RTOL * float(np.abs(np.asarray(reference)).max())


def spot_jax_cli(*args: str, timeout: float = 300, env: dict | None = None,
                 **kwargs) -> subprocess.CompletedProcess:
  """Runs the installed `spot-jax` entry point in a fresh process on the CPU; text output.
  `env` adds variables to the environment, or removes those it maps to None."""
  full = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  for name, value in (env or {}).items():
    if value is None:
      full.pop(name, None)
    else:
      full[name] = value
  return subprocess.run([str(SPOT_JAX), *map(str, args)], capture_output=True, text=True,
                        timeout=timeout, env=full, **kwargs)


@pytest.fixture
def t5x_tiny_checkpoint() -> Path:
  if not T5X_TINY_CHECKPOINT.exists():
    pytest.skip(f"T5X fixture checkpoint absent ({T5X_TINY_CHECKPOINT}); it lives in ../shared")
  return T5X_TINY_CHECKPOINT


@pytest.fixture
def t5_vocab_path() -> Path:
  if not T5_VOCAB.exists():
    pytest.skip(f"T5 vocabulary fixture absent ({T5_VOCAB}); it lives in ../shared")
  return T5_VOCAB


@pytest.fixture(scope="module")
def compilation_cache(request):
  """A persistent XLA cache for the module: runs of the same shapes after the first (in this
  process and in worker processes) skip compilation."""
  import jax
  cache = getattr(request.config, "cache", None)  # None under `-p no:cacheprovider`.
  path = str(cache.mkdir("spot_jax_xla_cache") if cache is not None
             else request.getfixturevalue("tmp_path_factory").mktemp("spot_jax_xla_cache"))
  names = {"jax_compilation_cache_dir": path, "jax_persistent_cache_min_compile_time_secs": 0,
           "jax_persistent_cache_min_entry_size_bytes": -1}
  old = {name: getattr(jax.config, name) for name in names}
  with pytest.MonkeyPatch.context() as patch:
    for name, value in names.items():
      jax.config.update(name, value)
      patch.setenv(name.upper(), str(value))
    yield
  for name, value in old.items():
    jax.config.update(name, value)


@pytest.fixture(scope="module")
def pretrained_checkpoint(tmp_path_factory) -> Path:
  """The tiny_byte model pretrained on the synthetic world (scripts/generate/make_frozen_tiny.py),
  written as a T5X checkpoint like the released ones, at step PRETRAINED_STEP."""
  import numpy as np
  from flax import traverse_util

  from spot_jax.checkpoints import t5x
  params = traverse_util.unflatten_dict(dict(np.load(FROZEN_TINY)), sep="/")
  path = tmp_path_factory.mktemp("frozen") / f"checkpoint_{PRETRAINED_STEP}"
  t5x.write_checkpoint(path, params, step=PRETRAINED_STEP)
  return path


def cli_in_process(capsys, *argv: str) -> tuple[int, str, str]:
  """Runs `spot-jax ARGV` in this process; returns (exit code, stdout, stderr)."""
  from spot_jax.cli import main as cli_main
  code = cli_main.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def small_library(tmp_path: Path, n: int = 3):
  """A prompt library at tmp_path/lib with entries e0..e{n-1} of tasks t0..t{n-1}: (2, 4) values
  and keys of the model ModelIdentity("tiny", 4, "fp")."""
  import numpy as np

  from spot_jax.library.store import ModelIdentity, PromptLibrary
  library = PromptLibrary(str(tmp_path / "lib"), create=True)
  rng = np.random.default_rng(0)
  for i in range(n):
    library.add(task=f"t{i}", value=rng.normal(size=(2, 4)), key=rng.normal(size=(2, 4)),
                model=ModelIdentity("tiny", 4, "fp"), entry_id=f"e{i}")
  return library
