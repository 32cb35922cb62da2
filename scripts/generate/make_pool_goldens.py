"""Writes tests/golden/pool_task_strings.json: inputs/targets of one hand-made example per
pool task (the affinity paper's and TuPaTE's), from the rows in tests/test_tasks_pools.py.

Review the diff by hand before committing: the goldens pin the documented formats.

  PYTHONPATH=. python scripts/generate/make_pool_goldens.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class _Writer:
  """A pytest plugin that writes the goldens from inside the test module's fixtures."""

  def pytest_collection_modifyitems(self, items):
    items[:] = [i for i in items if i.name == "test_golden_input_and_target_strings"]

  def pytest_runtest_call(self, item):
    strings = item.module.golden_strings()
    item.module.GOLDEN.write_text(json.dumps(strings, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {item.module.GOLDEN} ({len(strings)} tasks)")


if __name__ == "__main__":
  sys.exit(pytest.main(["-q", "-p", "no:xdist", "-s", str(ROOT / "tests" / "test_tasks_pools.py")],
                       plugins=[_Writer()]))
