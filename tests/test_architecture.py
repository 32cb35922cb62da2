"""The layering of spot_jax/ and tasks/, read from every module's imports (ast, imports inside
functions included): no import cycles, and no module importing a floor above its own.

Floors (docs/architecture.md): tasks < models < methods < checkpoints < data <
train, evaluation < runs < library, affinity < study < app < cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("spot_jax", "tasks")

# Floor of each folder of spot_jax/ (two folders on one floor may import each other).
FLOORS = {
    "models": 1, "methods": 2, "checkpoints": 3, "data": 4, "train": 5, "evaluation": 5,
    "runs": 6, "library": 7, "affinity": 7, "study": 8, "app": 9, "cli": 10,
}
# The loose modules of the spot_jax/ root and their floors: standard-library helpers that
# import nothing above the models (task_embedding is the methods' embedding vocabulary,
# gin_utils reads gin_configs/ through resources).
ROOT_MODULE_FLOORS = {
    "fileio": 1, "runtime": 1, "gin_utils": 1, "macros": 1, "quiet": 1, "resources": 1,
    "task_embedding": 1, "__init__": 1,
}
TASKS_FLOOR = 0  # tasks/ is below everything and imports nothing of spot_jax.

# Upward imports still in the tree, each with its reason (the count is the debt left).
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}
# Modules below cli/ that name the CLI's module in code (a command line they build), with the
# reason: the same debt as an upward import, invisible to the import graph.
ALLOWED_CLI_NAMERS: dict[str, str] = {}


def module_files() -> dict[str, Path]:
  """Every module of the packages, by dotted name (a package by its __init__)."""
  modules = {}
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob("*.py")):
      parts = list(path.relative_to(ROOT).with_suffix("").parts)
      if parts[-1] == "__init__":
        parts = parts[:-1]
      modules[".".join(parts)] = path
  return modules


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
  """The project modules that `path` imports anywhere in its body."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # `from pkg import a, b`: every imported submodule counts, else the package itself.
      subs = [f"{node.module}.{alias.name}" for alias in node.names
              if f"{node.module}.{alias.name}" in modules]
      names = subs or [node.module]
    else:
      continue
    for name in names:
      while name and name not in modules:
        name = name.rpartition(".")[0]
      if name:
        found.add(name)
  return found


def import_graph() -> dict[str, set[str]]:
  modules = module_files()
  return {name: imported_modules(path, modules) - {name} for name, path in modules.items()}


def floor(module: str) -> int:
  parts = module.split(".")
  if parts[0] == "tasks":
    return TASKS_FLOOR
  if len(parts) == 1:
    return ROOT_MODULE_FLOORS["__init__"]
  if parts[1] in FLOORS:
    return FLOORS[parts[1]]
  if parts[1] in ROOT_MODULE_FLOORS:
    return ROOT_MODULE_FLOORS[parts[1]]
  raise AssertionError(f"{module} has no floor: add its folder to FLOORS or the module to "
                       "ROOT_MODULE_FLOORS (and docs/architecture.md)")


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan)."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  cycles = []

  def visit(node: str) -> None:
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for nxt in sorted(graph[node]):
      if nxt not in index:
        visit(nxt)
        low[node] = min(low[node], low[nxt])
      elif nxt in on_stack:
        low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return cycles


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
  return sorted((src, dst) for src, dsts in graph.items() for dst in dsts
                if floor(dst) > floor(src))


def test_every_module_has_a_floor():
  for module in import_graph():
    floor(module)


def test_no_import_cycles_between_modules():
  assert import_cycles(import_graph()) == []


def test_tasks_never_import_spot_jax():
  graph = import_graph()
  bad = sorted((src, dst) for src, dsts in graph.items() if src.startswith("tasks")
               for dst in dsts if dst.startswith("spot_jax"))
  assert bad == []


def test_no_upward_imports_beyond_the_allow_list():
  upward = upward_imports(import_graph())
  assert [edge for edge in upward if edge not in ALLOWED_UPWARD] == []
  # An allowed import that is gone must leave the list, so its count stays true.
  assert sorted(ALLOWED_UPWARD) == upward


def test_nothing_below_cli_names_the_cli_module():
  namers = set()
  for module, path in module_files().items():
    if module.startswith("spot_jax.cli"):
      continue
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
      if (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and node.value.startswith("spot_jax.cli")):
        namers.add(module)
  assert sorted(namers) == sorted(ALLOWED_CLI_NAMERS)


def test_the_graph_sees_imports_inside_functions(tmp_path):
  modules = {"spot_jax.cli.main": Path(), "spot_jax.models": Path()}
  source = tmp_path / "m.py"
  source.write_text("def f():\n  from spot_jax.cli import main\n  import spot_jax.models.t5\n")
  assert imported_modules(source, modules) == {"spot_jax.cli.main", "spot_jax.models"}


def floor_map() -> dict[str, tuple[int, set[str]]]:
  """docs/architecture.md's floor map: {folder: (floor, module names)}."""
  text = (ROOT / "docs" / "architecture.md").read_text()
  block = text.split("```floors\n", 1)[1].split("```", 1)[0]
  folders = {}
  for line in block.splitlines():
    _, number, folder, *names = line.split()
    folders[folder.rstrip("/")] = (int(number), set(names))
  return folders


def test_floor_map_lists_every_module():
  documented = {("spot_jax" if folder == "(root)" else
                 folder if folder == "tasks" else f"spot_jax.{folder}") + f".{name}"
                for folder, (_, names) in floor_map().items() for name in names}
  modules = {name for name, path in module_files().items() if path.name != "__init__.py"}
  assert sorted(modules - documented) == [] and sorted(documented - modules) == []


def test_floor_map_floors_are_the_tested_floors():
  for folder, (number, names) in floor_map().items():
    if folder == "tasks":
      assert number == TASKS_FLOOR
    elif folder == "(root)":
      assert all(ROOT_MODULE_FLOORS[name] == number for name in names)
    else:
      assert FLOORS[folder] == number, folder


TRAINING_DOOR = "spot_jax/runs/in_process.py"  # train_in_process: the one door into training.


def _calls_the_trainer(tree: ast.AST) -> list[int]:
  """Lines where a module imports or calls spot_jax.train.loop's train / train_packed."""
  entry = {"train", "train_packed"}
  aliases, lines = set(), []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module == "spot_jax.train.loop":
      lines += [node.lineno for a in node.names if a.name in entry]
    elif isinstance(node, ast.ImportFrom) and node.module == "spot_jax.train":
      aliases |= {a.asname or a.name for a in node.names if a.name == "loop"}
    elif isinstance(node, ast.Import):
      aliases |= {a.asname for a in node.names if a.name == "spot_jax.train.loop" and a.asname}
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and node.attr in entry
        and isinstance(node.value, ast.Name) and node.value.id in aliases):
      lines.append(node.lineno)
  return lines


def test_training_has_one_door():
  """Only runs/in_process.train_in_process calls the trainer (train/loop.train, train_packed):
  `spot-jax train`, workers, studies, transfers, embed_target and the demo go through it."""
  found = []
  for path in sorted((ROOT / "spot_jax").rglob("*.py")):
    relative = str(path.relative_to(ROOT))
    if relative in (TRAINING_DOOR, "spot_jax/train/loop.py"):
      continue
    found += [f"{relative}:{line}" for line in _calls_the_trainer(ast.parse(path.read_text()))]
  assert not found, f"train through {TRAINING_DOOR} train_in_process instead: {found}"
  door = _calls_the_trainer(ast.parse((ROOT / TRAINING_DOOR).read_text()))
  assert door, "the door itself calls the trainer"


def test_benchmarks_and_tests_import_without_editing_sys_path():
  """`benchmarks` is a package run as `python -m benchmarks.<name>` from the checkout root (its
  workers too) and imported by tests as `from benchmarks import ...`: no file edits sys.path."""
  offenders = [f"{path.relative_to(ROOT)}:{number}"
               for folder in ("benchmarks", "tests", "spot_jax", "scripts")
               for path in sorted((ROOT / folder).rglob("*.py")) if path != Path(__file__)
               for number, line in enumerate(path.read_text().splitlines(), 1)
               if "sys.path.insert" in line or "sys.path.append" in line]
  assert not offenders, f"import through the package instead of editing sys.path: {offenders}"


# What the demo and its report may import of the project: the pipeline API and the loose
# standard-library helpers; everything else goes through spot_jax.app.pipeline.
DEMO_MODULES = ("spot_jax.app.demo", "spot_jax.app.demo_report")
DEMO_MAY_IMPORT = ("spot_jax.app", "spot_jax.macros", "spot_jax.runtime", "spot_jax.fileio",
                   "spot_jax.gin_utils", "tasks")


def test_the_demo_goes_through_the_pipeline_api():
  graph = import_graph()
  bypasses = {module: sorted(m for m in graph[module]
                             if not any(m == a or m.startswith(a + ".")
                                        for a in DEMO_MAY_IMPORT))
              for module in DEMO_MODULES}
  assert not any(bypasses.values()), (
      f"call spot_jax.app.pipeline (add the function there) instead of: {bypasses}")
