"""Where the data directories `gin_configs/` and `launch/` are: inside the installed package
(a wheel or `pip install .` copies them to `spot_jax/<name>/`, see setup.py), else at the root
of the source checkout, where the repository keeps them."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIRS = ("gin_configs", "launch")


def data_dir(name: str) -> Path:
  """The directory `name` (one of DATA_DIRS): the installed copy, else the checkout's."""
  if name not in DATA_DIRS:
    raise ValueError(f"Unknown data directory {name!r}; one of {DATA_DIRS}")
  installed = PACKAGE_DIR / name
  return installed if installed.is_dir() else PACKAGE_DIR.parent / name
