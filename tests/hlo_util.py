"""Reading compiled (optimised) HLO text: the float32 matrix products XLA actually runs."""

from __future__ import annotations

import re

import numpy as np

_DOT = re.compile(r"= f32\[([\d,]*)\]\{[^}]*\} (?:dot|convolution)\((%[\w.\-]+), [^)]*\),"
                  r"(?:.*?lhs_contracting_dims=\{([\d,]*)\})?")
_SHAPE = re.compile(r"(%[\w.\-]+) = f32\[([\d,]*)\]")


def _dims(text: str) -> tuple[int, ...]:
  return tuple(int(d) for d in text.split(",") if d)


def dot_output_shapes(hlo: str) -> set[tuple[int, ...]]:
  """Output shapes of the float32 dot/convolution ops in compiled HLO text."""
  return {_dims(m.group(1)) for m in _DOT.finditer(hlo)}


def dot_flops(hlo: str) -> int:
  """2 x output size x contracted size, summed over the float32 dots (instruction names are
  unique across an HLO module, so operand shapes are looked up by name)."""
  shapes = {name: _dims(dims) for name, dims in _SHAPE.findall(hlo)}
  total = 0
  for m in _DOT.finditer(hlo):
    lhs = shapes[m.group(2)]
    contracted = int(np.prod([lhs[i] for i in _dims(m.group(3) or "")]))
    total += 2 * int(np.prod(_dims(m.group(1)))) * contracted
  return total
