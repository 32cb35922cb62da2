"""benchmarks/RESULTS.md is made of named sections, each rewritten by the script that owns it."""

from __future__ import annotations

import os
import re

HEADER = ("# Benchmark results\n\nEach section is written by the script it names (rerun it to "
          "refresh that section); numbers are from the machine and date the section gives.\n")


def update_section(path: str, name: str, body: str) -> None:
  """Replaces (or appends) the section `name` of the markdown file at `path`, atomically."""
  begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
  text = open(path).read() if os.path.exists(path) else HEADER
  block = f"{begin}\n{body.rstrip()}\n{end}"
  pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
  text = pattern.sub(lambda _: block, text) if pattern.search(text) else (
      text.rstrip() + "\n\n" + block + "\n")
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)
