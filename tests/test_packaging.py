"""Packaging (issue 18): a wheel carries gin_configs/ and launch/ and works without the source
tree. Slow: builds the wheel and installs it into a temporary venv (no downloads: no build
isolation, --no-deps, dependencies seen through a .pth file naming this interpreter's
site-packages)."""

from __future__ import annotations

import glob
import os
import shutil
import site
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT

SOURCES = ("spot_jax", "tasks", "gin_configs", "launch", "pyproject.toml", "setup.py",
           "README.md")


@pytest.mark.slow
def test_wheel_installs_and_finds_its_gin_files_without_the_source_tree(tmp_path):
  source = tmp_path / "src"  # a copy: building never writes build/ into the checkout.
  for name in SOURCES:
    path = PROJECT_ROOT / name
    if path.is_dir():
      shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy2(path, source / name)
  pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
  subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                  str(tmp_path / "dist"), str(source)], check=True)
  wheel = glob.glob(str(tmp_path / "dist" / "spot_jax-*.whl"))[0]
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = str(venv / "bin" / "python")
  subprocess.run([*pip, "--python", python, "install", "--no-deps", "-q", wheel], check=True)
  purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
  with open(os.path.join(purelib, "deps.pth"), "w") as f:  # after the venv's own packages.
    f.write("\n".join(site.getsitepackages()) + "\n")
  shutil.rmtree(source)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env.update(TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu", SPOT_JAX_JEMALLOC="0")
  listing = subprocess.run([str(venv / "bin" / "spot-jax"), "tasks", "list", "--group",
                            "synthetic"], cwd=tmp_path, env=env, capture_output=True, text=True)
  assert listing.returncode == 0, listing.stderr
  assert "synthetic_sentiment_a" in listing.stdout
  code = ("import spot_jax, os\nfrom spot_jax import gin_utils\nfrom spot_jax.runs import launchers\n"
          "print(spot_jax.__file__)\nprint(gin_utils.resolve_gin_file('models/base.gin'))\n"
          "print(launchers.launch_prefix('local', absolute=True)[0])")
  found = subprocess.run([python, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
  assert found.returncode == 0, found.stderr
  package, gin_file, script = found.stdout.split()
  assert package.startswith(purelib) and gin_file.startswith(purelib), found.stdout
  assert gin_file.endswith("spot_jax/gin_configs/models/base.gin")
  assert script.startswith(purelib) and os.access(script, os.X_OK)
