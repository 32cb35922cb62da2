"""One table of gin macros (spot_jax/macros.py): every other list derives from it, the gin
files agree with it, and no module spells a macro name where it binds or looks one up."""

import ast
import dataclasses
import pathlib
import re

import pytest

from conftest import PROJECT_ROOT
from spot_jax import macros

PACKAGE = PROJECT_ROOT / "spot_jax"
GIN_CONFIGS = PROJECT_ROOT / "gin_configs"


def _string_constants(tree: ast.AST):
  """Every str constant of a module but docstrings (f-string parts included)."""
  docstrings = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        docstrings.add(id(body[0].value))
  for node in ast.walk(tree):
    if isinstance(node, ast.Constant) and isinstance(node.value, str) \
        and id(node) not in docstrings:
      yield node


def _spells_a_macro(text: str, name: str) -> bool:
  """`text` binds or looks up macro `name`: the name itself (a bindings key), `NAME = ...`,
  `--gin.NAME` or `%NAME`. Prose that mentions a macro ("MODEL_DIR ... is in use") is not."""
  return (text == name or re.match(rf"\s*{name}\s*=", text) is not None
          or re.search(rf"(--gin\.|%){name}(?![A-Z0-9_])", text) is not None)


def test_no_module_spells_a_macro_name_outside_the_table():
  found = []
  for path in sorted(PACKAGE.rglob("*.py")):
    if path == PACKAGE / "macros.py":
      continue
    for node in _string_constants(ast.parse(path.read_text())):
      for name in (*macros.NAMES, *macros.RENAMED):
        if _spells_a_macro(node.value, name):
          found.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}: {name}")
  assert not found, "use spot_jax.macros (gin_name, setting, flag) instead:\n" + "\n".join(found)


def test_the_check_catches_bindings_lookups_and_flags_but_not_prose():
  assert _spells_a_macro("MODEL_DIR", "MODEL_DIR")
  assert _spells_a_macro("TRAIN_STEPS = 10", "TRAIN_STEPS")
  assert _spells_a_macro("set --gin.EVAL_PERIOD=0", "EVAL_PERIOD")
  assert _spells_a_macro("TrainConfig.seed = %RANDOM_SEED", "RANDOM_SEED")
  assert not _spells_a_macro("MODEL_DIR /x is in use by another process", "MODEL_DIR")
  assert not _spells_a_macro("--gin.TRAIN_STEPS_X=1", "TRAIN_STEPS")


def test_prompt_train_gin_binds_exactly_the_tables_fields_to_its_macros():
  text = (GIN_CONFIGS / "runs" / "prompt_train.gin").read_text()
  bound = dict(re.findall(r"^TrainConfig\.(\w+) = %([A-Z_][A-Z0-9_]*)$", text, re.M))
  assert bound == macros.BY_FIELD


def test_table_fields_are_train_config_fields_and_gin_files_define_only_its_macros():
  from spot_jax.train.loop import TrainConfig
  fields = {f.name for f in dataclasses.fields(TrainConfig)}
  assert set(macros.BY_FIELD) <= fields
  defined = set()
  for path in GIN_CONFIGS.rglob("*.gin"):
    defined |= set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*=", path.read_text(), re.M))
  assert defined <= set(macros.NAMES), sorted(defined - set(macros.NAMES))


def test_derived_lists_come_from_the_table():
  from spot_jax import gin_utils
  from spot_jax.library import transfer
  from spot_jax.study import spec
  assert gin_utils.KNOWN_MACROS == macros.NAMES
  assert spec.RUN_SETTINGS == macros.SPEC_KEYS
  assert {k: v for k, v in spec.RUNNER_MACROS.items() if k in macros.NAMES} == \
      macros.SET_BY_STUDY
  assert all(transfer.GIN_MACROS[f] == macros.gin_name(f) for f in transfer.GIN_MACROS
             if f in macros.BY_FIELD)


def test_a_setting_without_a_macro_is_named_by_its_train_config_binding():
  """Validation errors name what the user can actually set: LOG_PERIOD is no macro."""
  from spot_jax.train.loop import TrainConfig, validate_config
  assert macros.setting("train_steps") == "TRAIN_STEPS"
  assert macros.setting("log_period") == "TrainConfig.log_period"
  cfg = TrainConfig(model_dir="/tmp/x", task="synthetic_sentiment_b", log_period=0)
  with pytest.raises(ValueError, match=r"set --gin\.TrainConfig\.log_period to one"):
    validate_config(cfg)
  with pytest.raises(KeyError, match="No gin macro sets TrainConfig.log_period"):
    macros.gin_name("log_period")
