"""Gin at the edge: T5X-style `--gin_file=` / `--gin.NAME=value` flags -> a parsed config.

Macro names follow T5X (MODEL_DIR, TRAIN_STEPS, MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS,
BATCH_SIZE, DROPOUT_RATE, INITIAL_CHECKPOINT_PATH, PROMPT_LENGTH, PROMPT_FILE, EVAL_PERIOD...).
A `--gin.MACRO` that no gin file defines and that is not a known macro is refused with the
closest valid names, so a typo never silently trains with a default.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import tokenize
from pathlib import Path
from typing import Any, Sequence

import gin

from spot_jax import macros
from spot_jax.resources import data_dir

GIN_CONFIGS_DIR = data_dir("gin_configs")  # installed package copy, or the checkout's.
KNOWN_MACROS = macros.NAMES  # the one table: spot_jax/macros.py.
# Former macro names still accepted on the command line: {old: current}.
RENAMED_MACROS = macros.RENAMED
_MACRO_DEF = re.compile(r"^\s*([A-Z_][A-Z0-9_]*)\s*=", re.MULTILINE)


def _search_paths() -> list[str]:
  return [os.getcwd(), str(GIN_CONFIGS_DIR)]


def resolve_gin_file(name: str) -> str:
  """A gin file path as given, or relative to the cwd or `gin_configs/`."""
  for base in [""] + _search_paths():
    path = os.path.join(base, name) if base else name
    if os.path.isfile(path):
      return path
  available = sorted(str(p.relative_to(GIN_CONFIGS_DIR)) for p in GIN_CONFIGS_DIR.rglob("*.gin"))
  close = difflib.get_close_matches(name, available, n=3, cutoff=0.3)
  raise FileNotFoundError(f"gin file {name!r} not found (looked in {_search_paths()}). "
                          f"Closest in gin_configs/: {close or available[:8]}")


def _quote_if_needed(value: str) -> str:
  """T5X wants `--gin.MODEL_DIR=\\"/path\\"`; accept a bare path or name as a string too."""
  try:
    gin.config.parse_value(value)
    return value
  except Exception:  # gin raises various parser errors for bare strings.
    return repr(value)


def split_gin_args(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
  """Splits `--gin_file=F` and `--gin.X=V` (or `--gin.X V`) out of argv.

  Returns (gin files, bindings "X = V", remaining args). A former macro name
  (`RENAMED_MACROS`) binds its current name.
  """
  files, bindings, rest = [], [], []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    if arg.startswith("--gin_file"):
      value = arg.split("=", 1)[1] if "=" in arg else args[(i := i + 1)]
      files.append(value)
    elif arg.startswith("--gin."):
      name, _, value = arg[len("--gin."):].partition("=")
      if not _:
        i += 1
        value = args[i]
      name = RENAMED_MACROS.get(name, name)
      bindings.append(f"{name} = {_quote_if_needed(value)}")
    elif arg.startswith("--gin_bindings"):
      bindings.append(arg.split("=", 1)[1] if "=" in arg else args[(i := i + 1)])
    else:
      rest.append(arg)
    i += 1
  return files, bindings, rest


def parse_gin(files: Sequence[str], bindings: Sequence[str]) -> None:
  """Clears gin, then parses `files` and `bindings` (later ones override earlier)."""
  paths = [resolve_gin_file(f) for f in files]
  defined = set(KNOWN_MACROS)
  for path in paths:
    defined |= set(_MACRO_DEF.findall(Path(path).read_text()))
  for binding in bindings:
    name = binding.split("=", 1)[0].strip()
    if "." not in name and "/" not in name and name not in defined:
      close = difflib.get_close_matches(name, sorted(defined), n=3, cutoff=0.5)
      raise ValueError(f"Unknown gin macro {name!r}: no gin file defines it. "
                       f"Closest valid names: {close or sorted(defined)[:10]}")
  gin.clear_config()
  for directory in _search_paths():
    gin.add_config_file_search_path(directory)
  root = logging.getLogger()
  root.addFilter(_quiet_include_probe)
  try:
    gin.parse_config_files_and_bindings(paths, bindings, finalize_config=False)
  except (ValueError, KeyError, SyntaxError, tokenize.TokenError) as e:
    raise ValueError(f"{gin_error_summary(e, paths)}; fix the gin syntax") from None
  finally:
    root.removeFilter(_quiet_include_probe)


def gin_error_summary(e: BaseException, paths: Sequence[str]) -> str:
  """Gin's parse error in one short line: the file (or the binding) and line, the problem and
  the offending text; never the whole list of bindings."""
  if isinstance(e, SyntaxError):
    text = " ".join((e.text or "").split())
    text = f" in `{text[:120]}`" if text else ""
    if e.filename and e.filename != "<string>":
      return f"{e.filename}, line {e.lineno}: {(e.msg or '').rstrip('.')}{text}"
    return f"bad gin binding{text}: {(e.msg or '').rstrip('.')}"
  where = ", ".join(paths) + " or the --gin. bindings" if paths else "the --gin. bindings"
  if isinstance(e, tokenize.TokenError):
    return f"{where}: a bracket or quote is never closed ({e.args[0]})"
  first = str(e.args[0] if isinstance(e, KeyError) and e.args else e).strip().splitlines()
  return f"bad gin config in {where}: {first[0][:300] if first else type(e).__name__}"


def _quiet_include_probe(record: logging.LogRecord) -> bool:
  """Drops gin's `Path not found` errors: an `include` probes each prefix as a Python package
  (gin/resource_reader.py system_path_file_exists) before the search paths, logging one error
  per miss; gin raises its own IOError when no prefix holds the file."""
  return record.msg != "Path not found: %s"


def gin_literal(value: Any) -> str:
  """A Python value as gin text; strings starting with @ or % stay gin references."""
  if isinstance(value, str) and value[:1] in ("@", "%"):
    return value
  if isinstance(value, str) and not set(value) & set('"\\\n'):
    return f'"{value}"'  # double quotes: shell-quoted command lines stay readable.
  if value is None or isinstance(value, (str, bool, int, float)):
    return repr(value)
  if isinstance(value, dict):
    return "{" + ", ".join(f"{gin_literal(k)}: {gin_literal(v)}" for k, v in value.items()) + "}"
  if isinstance(value, (list, tuple)):
    return "[" + ", ".join(gin_literal(v) for v in value) + "]"
  raise ValueError(f"gin binding value {value!r} ({type(value).__name__}) is not a string, "
                   "number, bool, null, list or mapping")
