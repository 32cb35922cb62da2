"""Ships gin_configs/ and launch/ inside the installed package (spot_jax/gin_configs/,
spot_jax/launch/) while the repository keeps them at its root; `spot_jax.resources.data_dir`
finds either. Everything else is in pyproject.toml."""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_DIRS = ("gin_configs", "launch")  # spot_jax.resources.DATA_DIRS


class BuildPyWithData(build_py):
  """build_py, then a copy of each data directory into the built spot_jax package."""

  def run(self):
    super().run()
    root = os.path.dirname(os.path.abspath(__file__))
    for name in DATA_DIRS:
      shutil.copytree(os.path.join(root, name), os.path.join(self.build_lib, "spot_jax", name),
                      dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithData})
