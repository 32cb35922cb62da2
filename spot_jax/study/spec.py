"""A transferability study spec: which sources, targets and seeds to train, and how.

  name: synthetic_small
  model: models/tiny_byte.gin          # one gin file or a list (models/*.gin)
  initial_checkpoint: null             # INITIAL_CHECKPOINT_PATH; absent: the gin file's
  sources: [synthetic_sentiment_a, synthetic_nli_facts]
  targets: [synthetic_sentiment_b]
  seeds: [0, 1, 2]
  source_steps: 262144
  target_steps: 100000
  key_step: 10000                      # the task-embedding step of every run
  feature_lengths: {inputs: 512, targets: 32}
  batch_size: 32
  source_prompt_init: sampled_vocab    # SPoT §2.1.4 (default)
  baseline_prompt_init: class_labels   # SPoT Appendix C (default); transfers start from a source
  gin_bindings: {LEARNING_RATE: 0.3}   # any other macro
  method: prompt                       # any spot_jax.methods method (gin_configs/methods/*.gin)
  embedding: layer_mean                # non-prompt methods: the library keys' embedding kind
  pool_pairs: {num_pairs: 400, seed: 0}   # also M transfers sampled inside the source pool
  max_train_examples: {sources: 50000, targets: 2000, glue_sst2: 5000}  # or one number
  families: {glue_mnli: NLI, ...}      # task -> family (leave-family-out of the head)
  select_sources: {top_k: 1, predictions: PRED.csv}   # only each target's top-k predicted sources
  select_sources: {random: 20, seed: 0}                # or the same N random sources for all
  affinity: {beta: 1.0, learning_rate: 2e-5}   # the head's AffinityConfig on this study

Pool-pair studies (`pool_pairs`, Feng et al. EMNLP 2023 §3.2): besides every source run, the
study trains every source task's baseline, the M sampled transfers source i -> source j
(`spot_jax.affinity.pairs.sample_pool_pairs`), and every source -> each target (the novel
targets' brute force, the ground truth of `spot-jax affinity evaluate`).

Selected sources (`select_sources`, Feng et al. 2023 §4.6.4, Table 3): instead of every source
-> every target, each target is transferred to only from its `top_k` sources as ranked by a
predictions table (`target,source,score`, e.g. `spot-jax affinity predict --out PRED.csv`; the
spec's `predictions`, or `spot-jax study run --predictions`), and only the selected sources are
trained. Planning such a study without predictions is refused. `{random: N, seed: S}` draws N
of the sources once (the same for every target, and for every spec with the same pool and
seed), as §4.6.4 compares prompt tuning with full fine-tuning on 20 random sources.

Training caps: `max_train_examples` is one number for every run, or a mapping whose keys are
`sources` (source runs, and baselines and transfers trained on a source task), `targets`
(baselines and transfers trained on a target) and task names (every run trained on that task,
over its role); a run with no matching key, or a null value, keeps its whole training split.

Optional run settings left out keep the defaults of runs/prompt_train.gin. `load_spec` and
`StudySpec.from_dict` validate everything before a study starts: unknown keys (with the
closest valid one), unknown task names, empty or duplicate lists, non-positive steps and a
key step no run reaches.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Any, Mapping, Sequence

import yaml
from spot_jax import macros

# Macros the study itself sets (spot_jax/macros.py) -> the spec key or what sets them; a
# `gin_bindings` entry naming one is refused.
RUNNER_MACROS = {**macros.SET_BY_STUDY, "TrainConfig.init_from": "the transfer's source run"}
# Optional spec keys -> the gin macro each sets (None: keep the gin file's default).
RUN_SETTINGS = macros.SPEC_KEYS
POSITIVE_INTS = ("source_steps", "target_steps", "key_step", "batch_size", "prompt_length",
                 "max_eval_examples", "checkpoint_period", "eval_period")
CAP_ROLES = ("sources", "targets")  # `max_train_examples` mapping keys besides task names.
SCRATCH_PROMPT_INITS = ("sampled_vocab", "class_labels", "uniform")


class SpecError(ValueError):
  """A study spec that cannot be run as written."""


@dataclasses.dataclass(frozen=True)
class StudySpec:
  """What a study trains: every source and target prompt per seed, and every transfer."""

  name: str
  model: tuple[str, ...]  # gin files, e.g. ("models/base.gin",).
  sources: tuple[str, ...]
  targets: tuple[str, ...]
  seeds: tuple[int, ...]
  source_steps: int
  target_steps: int
  key_step: int
  initial_checkpoint: str | None = None
  feature_lengths: Mapping[str, int] | None = None
  batch_size: int | None = None
  prompt_length: int | None = None
  max_train_examples: int | Mapping[str, int | None] | None = None
  max_eval_examples: int | None = None
  checkpoint_period: int | None = None
  eval_period: int | None = None
  eval_metric: str | None = None
  # SPoT §2.1.4 and Appendix C: source prompts start from sampled vocabulary, the baselines
  # (PROMPTTUNING, source `none`) from the class labels; transfers start from their source.
  source_prompt_init: str = "sampled_vocab"
  baseline_prompt_init: str = "class_labels"
  gin_bindings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  library: str | None = None  # default STUDY_DIR/library.
  # The parameter-efficient method every run trains (spot_jax.methods; its gin file
  # gin_configs/methods/<method>.gin sets its optimizer and settings). Transfers of `prompt`
  # start from the source's best prompt (PROMPT_FILE), those of any other method from all of
  # its best checkpoint's trainables (TrainConfig.init_from).
  method: str = "prompt"
  embedding: str | None = None  # non-prompt methods: task-embedding kind (default layer_mean).
  description: str = ""
  # {num_pairs: M, seed: s}: M transfers sampled inside the source pool (see the docstring).
  pool_pairs: Mapping[str, int] | None = None
  families: Mapping[str, str] | None = None  # task -> family (e.g. the paper's task types).
  affinity: Mapping[str, Any] | None = None  # AffinityConfig overrides for this study's head.
  # {top_k: K, predictions: PATH | None}: each target's top-K predicted sources only;
  # {random: N, seed: S}: N sources drawn once, for every target.
  select_sources: Mapping[str, Any] | None = None
  # Which settings the spec set explicitly (INITIAL_CHECKPOINT_PATH: null is meaningful).
  explicit: frozenset[str] = frozenset()

  @classmethod
  def from_dict(cls, data: Mapping[str, Any], where: str = "study spec",
                check_tasks: bool = True) -> StudySpec:
    """Validates a parsed spec; `where` (the file) prefixes every error."""
    if not isinstance(data, Mapping):
      raise SpecError(f"{where}: expected a mapping of keys (name, model, sources, ...), got "
                      f"{type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls) if f.name != "explicit"]
    for key in data:
      if key not in names:
        close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {names}"
        raise SpecError(f"{where}: unknown key {key!r}{hint}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
      raise SpecError(f"{where}: missing required keys {missing}")
    values = dict(data)
    values["model"] = _string_list(where, "model", data["model"])
    for key in ("sources", "targets"):
      values[key] = _string_list(where, key, data[key])
    values["seeds"] = _seed_list(where, data["seeds"])
    for key in POSITIVE_INTS:
      if data.get(key) is not None:
        values[key] = _positive_int(where, key, data[key])
    if not isinstance(data["name"], str) or not data["name"].strip():
      raise SpecError(f"{where}: name must be a non-empty string")
    values["feature_lengths"] = _feature_lengths(where, data.get("feature_lengths"))
    values["max_train_examples"] = _train_caps(where, data.get("max_train_examples"),
                                               values["sources"] + values["targets"])
    values["pool_pairs"] = _pool_pairs(where, data.get("pool_pairs"), values["sources"])
    values["families"] = _families(where, data.get("families"),
                                   values["sources"] + values["targets"])
    values["affinity"] = _affinity(where, data.get("affinity"))
    values["select_sources"] = _select_sources(where, data.get("select_sources"),
                                               values["sources"], values["pool_pairs"])
    values["gin_bindings"] = _gin_bindings(where, data.get("gin_bindings") or {})
    for key in ("initial_checkpoint", "eval_metric", "library", "method", "embedding"):
      if data.get(key) is not None and not isinstance(data[key], str):
        raise SpecError(f"{where}: {key} must be a string or null, got {data[key]!r}")
    for key in ("source_prompt_init", "baseline_prompt_init"):
      if key in data and data[key] not in SCRATCH_PROMPT_INITS:
        raise SpecError(f"{where}: {key} {data[key]!r} is not one of {SCRATCH_PROMPT_INITS} "
                        "(transfers always start from their source)")
    if data.get("method") is not None:
      _check_method(where, data["method"])
    else:
      values.pop("method", None)
    if data.get("embedding") is not None:
      from spot_jax.task_embedding import EMBEDDING_KINDS
      if data["embedding"] not in EMBEDDING_KINDS:
        raise SpecError(f"{where}: embedding {data['embedding']!r} is not one of "
                        f"{EMBEDDING_KINDS}")
    values["explicit"] = frozenset(k for k in RUN_SETTINGS if k in data)
    spec = cls(**values)
    _check_steps(where, spec)
    if check_tasks:
      check_task_names(spec, where)
    return spec

  @property
  def library_path(self) -> str | None:
    return os.path.abspath(os.path.expanduser(self.library)) if self.library else None

  def prompt_init(self, kind: str, task: str) -> str | None:
    """PROMPT_INIT of a run: `source_prompt_init` for a source, `baseline_prompt_init` for a
    baseline, None for a transfer (study/transfer.gin starts it from the source prompt) and
    for methods that have no prompt.

    `class_labels` backs off to sampled vocabulary for the positions the labels leave free
    (SPoT Appendix C), so a baseline on a task without a label set (STS-B, ReCoRD...) gets
    `sampled_vocab`.
    """
    from spot_jax.methods import prompt_like_methods
    if self.method not in prompt_like_methods():
      return None
    if kind == "source":
      return self.source_prompt_init
    if kind != "baseline":
      return None
    if self.baseline_prompt_init == "class_labels" and not _has_labels(task):
      return "sampled_vocab"
    return self.baseline_prompt_init

  def pool_transfers(self) -> list[tuple[str, str]]:
    """The (source i, source j) transfers sampled inside the pool (`pool_pairs`; [] without)."""
    if not self.pool_pairs:
      return []
    from spot_jax.affinity.pairs import sample_pool_pairs
    return sample_pool_pairs(self.sources, self.pool_pairs["num_pairs"],
                             self.pool_pairs["seed"])

  def selected_sources(self) -> dict[str, tuple[str, ...]] | None:
    """{target: its selected sources} (`select_sources`; None without a selection): its
    top_k by the predictions table, best first, or the `random` draw in pool order. A target's
    own task is never its source; ties go to the source listed first. Raises SpecError when
    the predictions are not given, unreadable, or rank fewer than top_k of the spec's sources
    for a target."""
    if not self.select_sources:
      return None
    if "random" in self.select_sources:
      import numpy as np
      rng = np.random.default_rng(self.select_sources["seed"])
      drawn = set(rng.choice(len(self.sources), self.select_sources["random"], replace=False))
      pool = tuple(s for i, s in enumerate(self.sources) if i in drawn)
      return {target: tuple(s for s in pool if s != target) for target in self.targets}
    top_k, path = self.select_sources["top_k"], self.select_sources["predictions"]
    if path is None:
      raise SpecError(f"study {self.name!r} transfers each target from its top {top_k} "
                      "predicted sources, and no predictions were given: pass `spot-jax study "
                      "run --predictions PRED.csv` (a target,source,score table, e.g. from "
                      "`spot-jax affinity predict --out PRED.csv`) or set "
                      "select_sources.predictions")
    from spot_jax.study.results import StudyTableError, read_predictions
    try:
      table = read_predictions(os.path.expanduser(path))
    except (OSError, StudyTableError) as e:
      raise SpecError(f"study {self.name!r}: select_sources.predictions: {e}") from None
    scores = {(t, s): float(v) for t, s, v in zip(table.target, table.source, table.score)}
    selected = {}
    for target in self.targets:
      ranked = [s for s in self.sources if s != target and (target, s) in scores]
      if len(ranked) < top_k:
        raise SpecError(f"{path} ranks {len(ranked)} of the study's sources for target "
                        f"{target!r}, fewer than select_sources.top_k {top_k}; predict every "
                        "source of the spec for every target")
      order = sorted(range(len(ranked)), key=lambda i: (-scores[(target, ranked[i])], i))
      selected[target] = tuple(ranked[i] for i in order[:top_k])
    return selected

  def train_cap(self, kind: str, task: str) -> int | None:
    """MAX_TRAIN_EXAMPLES of a run of `kind` (source | baseline | transfer) trained on `task`:
    the task's own cap, else its role's (`sources` for source runs and for runs trained on a
    pool task, `targets` for runs trained on a target), else None (the whole split)."""
    caps = self.max_train_examples
    if not isinstance(caps, Mapping):
      return caps
    if task in caps:
      return caps[task]
    role = "targets" if kind != "source" and task in self.targets else "sources"
    return caps.get(role)

  def affinity_config(self, base: Any) -> Any:
    """`base` (an AffinityConfig) with the spec's `affinity` settings; on a pool-pair study M
    (num_pairs) defaults to the pool pairs the study ran (Feng et al. 2023 §4.2: M = 400)."""
    overrides = dict(self.affinity or {})
    if self.pool_pairs:
      overrides.setdefault("num_pairs", self.pool_pairs["num_pairs"])
    return dataclasses.replace(base, **overrides)

  def family_of(self, task: str) -> str:
    """The spec's family of a task (`families`)."""
    if not self.families or task not in self.families:
      raise SpecError(f"study {self.name!r} names no family for task {task!r}; add it under "
                      "`families:`")
    return self.families[task]

  def run_bindings(self) -> dict[str, Any]:
    """Macro -> value for the shared run settings the spec sets, then `gin_bindings`
    (MAX_TRAIN_EXAMPLES only when one number caps every run; else `train_cap` per run)."""
    bindings = {macro: getattr(self, key) for key, macro in RUN_SETTINGS.items()
                if key in self.explicit or getattr(self, key) is not None}
    if isinstance(self.max_train_examples, Mapping):
      bindings.pop(macros.gin_name("max_train_examples"), None)
    lengths = macros.gin_name("feature_lengths")
    if bindings.get(lengths) is not None:
      bindings[lengths] = dict(bindings[lengths])
    bindings.update(self.gin_bindings)
    return bindings


def load_spec(path: str, check_tasks: bool = True, **overrides: Any) -> StudySpec:
  """Reads and validates a YAML study spec; `overrides` replace its keys (e.g. method='lora',
  `spot-jax study run --method`)."""
  try:
    with open(path, encoding="utf-8") as f:
      data = yaml.safe_load(f)
  except yaml.YAMLError as e:
    raise SpecError(f"{path} is not valid YAML: {e}") from None
  except UnicodeDecodeError as e:
    raise SpecError(f"{path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                    f"{e.start}); save the spec as UTF-8") from None
  if data is None:
    raise SpecError(f"{path} is empty; see gin_configs/study/synthetic.yaml for a spec")
  if overrides and isinstance(data, dict):
    data.update({k: v for k, v in overrides.items() if v is not None})
  return StudySpec.from_dict(data, path, check_tasks)


def with_predictions(spec: StudySpec, path: str) -> StudySpec:
  """`spec` ranking its sources by the predictions table at `path` (`spot-jax study run
  --predictions`); only a spec with `select_sources` takes one."""
  if not spec.select_sources or "top_k" not in spec.select_sources:
    raise SpecError(f"--predictions ranks the sources of a study that selects its top ones; "
                    f"study {spec.name!r} has no select_sources.top_k (add `select_sources: "
                    "{top_k: 1}` to the spec, or drop --predictions)")
  if not os.path.isfile(os.path.expanduser(path)):
    raise SpecError(f"--predictions {path}: no such file (write one with `spot-jax affinity "
                    "predict --out PRED.csv`)")
  absolute = os.path.abspath(os.path.expanduser(path))
  return dataclasses.replace(spec, select_sources={**spec.select_sources,
                                                   "predictions": absolute})


def check_task_names(spec: StudySpec, where: str = "study spec") -> None:
  """Every source and target must be a registered seqio task or mixture."""
  from tasks.lookup import get_task_or_mixture, register_all_tasks
  register_all_tasks()
  for key in ("sources", "targets"):
    for i, name in enumerate(getattr(spec, key)):
      try:
        get_task_or_mixture(name)
      except ValueError as e:
        raise SpecError(f"{where}: {key}[{i}]: {e}") from None


def _check_method(where: str, name: str) -> None:
  """A registered spot_jax.methods method (imported here: it brings JAX)."""
  from spot_jax import methods
  try:
    methods.method_class(name)
  except methods.MethodError as e:
    raise SpecError(f"{where}: method: {e}") from None


def _has_labels(task: str) -> bool:
  """Whether `task` declares a label set (an unknown task counts as labelled: the run names
  the problem when it starts)."""
  from tasks.lookup import register_all_tasks, task_labels
  register_all_tasks()
  try:
    return bool(task_labels(task))
  except ValueError:
    return True


def _string_list(where: str, key: str, value: Any) -> tuple[str, ...]:
  items = [value] if isinstance(value, str) and key == "model" else value
  if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v for v in items):
    raise SpecError(f"{where}: {key} must be a list of names, got {value!r}")
  if not items:
    raise SpecError(f"{where}: {key} is empty; list at least one")
  duplicates = sorted({v for v in items if items.count(v) > 1})
  if duplicates:
    raise SpecError(f"{where}: {key} lists {duplicates} more than once; keep one of each")
  return tuple(items)


def _seed_list(where: str, value: Any) -> tuple[int, ...]:
  if (not isinstance(value, (list, tuple))
      or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
    raise SpecError(f"{where}: seeds must be a list of non-negative integers, got {value!r}")
  if not value:
    raise SpecError(f"{where}: seeds is empty; SPoT uses three, e.g. [0, 1, 2]")
  if len(set(value)) != len(value):
    raise SpecError(f"{where}: seeds {list(value)} repeat a seed; keep one of each")
  return tuple(value)


def _positive_int(where: str, key: str, value: Any) -> int:
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise SpecError(f"{where}: {key} must be a positive integer, got {value!r}")
  return value


def _train_caps(where: str, value: Any, tasks: Sequence[str]
                ) -> int | dict[str, int | None] | None:
  """One positive number, or {sources|targets|task: positive number or null}."""
  if value is None or not isinstance(value, Mapping):
    return None if value is None else _positive_int(where, "max_train_examples", value)
  out = {}
  for key, cap in value.items():
    if key not in CAP_ROLES and key not in tasks:
      close = difflib.get_close_matches(str(key), [*CAP_ROLES, *tasks], n=1, cutoff=0.6)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      raise SpecError(f"{where}: max_train_examples: {key!r} is neither {CAP_ROLES[0]!r}, "
                      f"{CAP_ROLES[1]!r} nor a source or target of the study{hint}")
    out[key] = None if cap is None else _positive_int(where, f"max_train_examples.{key}", cap)
  return out


def _pool_pairs(where: str, value: Any, sources: Sequence[str]) -> dict[str, int] | None:
  """{num_pairs: M, seed: s (default 0)}, M at most n (n - 1) for n sources."""
  if value is None:
    return None
  if not isinstance(value, Mapping) or "num_pairs" not in value or not set(value) <= {
      "num_pairs", "seed"}:
    raise SpecError(f"{where}: pool_pairs must be {{num_pairs: M, seed: S}} (seed optional), "
                    f"got {value!r}")
  out = {"num_pairs": _positive_int(where, "pool_pairs.num_pairs", value["num_pairs"]),
         "seed": value.get("seed", 0)}
  if not isinstance(out["seed"], int) or isinstance(out["seed"], bool) or out["seed"] < 0:
    raise SpecError(f"{where}: pool_pairs.seed must be a non-negative integer, got "
                    f"{out['seed']!r}")
  from spot_jax.affinity.pairs import PairSamplingError, sample_pool_pairs
  try:
    sample_pool_pairs(sources, out["num_pairs"], out["seed"])
  except PairSamplingError as e:
    raise SpecError(f"{where}: pool_pairs: {e}") from None
  return out


def _families(where: str, value: Any, tasks: Sequence[str]) -> dict[str, str] | None:
  """{task: family} naming only the study's tasks, with non-empty string families."""
  if value is None:
    return None
  if not isinstance(value, Mapping) or not all(
      isinstance(f, str) and f.strip() for f in value.values()):
    raise SpecError(f"{where}: families must map task: family (non-empty strings), got "
                    f"{value!r}")
  unknown = sorted(set(value) - set(tasks))
  if unknown:
    raise SpecError(f"{where}: families names {unknown}, which are neither sources nor "
                    "targets of the study")
  return dict(value)


def _affinity(where: str, value: Any) -> dict[str, Any] | None:
  """AffinityConfig field: value overrides (the field names are checked)."""
  if value is None:
    return None
  from spot_jax.affinity.train import AffinityConfig
  names = [f.name for f in dataclasses.fields(AffinityConfig)]
  if not isinstance(value, Mapping):
    raise SpecError(f"{where}: affinity must map AffinityConfig fields to values, got "
                    f"{value!r}")
  for key in value:
    if key not in names:
      close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
      hint = f"; did you mean {close[0]!r}?" if close else f"; fields: {names}"
      raise SpecError(f"{where}: affinity: unknown AffinityConfig field {key!r}{hint}")
  return dict(value)


def _select_sources(where: str, value: Any, sources: Sequence[str],
                    pool_pairs: Mapping[str, int] | None) -> dict[str, Any] | None:
  """{top_k: K (1 <= K <= number of sources), predictions: a path or null}, or {random: N
  (1 <= N <= number of sources), seed: S (default 0)}."""
  if value is None:
    return None
  if pool_pairs:
    raise SpecError(f"{where}: select_sources and pool_pairs do not combine (pool pairs are "
                    "the head's training data, a selection is its use); keep one")
  if isinstance(value, Mapping) and "random" in value and set(value) <= {"random", "seed"}:
    count = _positive_int(where, "select_sources.random", value["random"])
    if count > len(sources):
      raise SpecError(f"{where}: select_sources.random {count} > the {len(sources)} sources")
    seed = value.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
      raise SpecError(f"{where}: select_sources.seed must be a non-negative integer, got "
                      f"{seed!r}")
    return {"random": count, "seed": seed}
  if not isinstance(value, Mapping) or "top_k" not in value or not set(value) <= {
      "top_k", "predictions"}:
    raise SpecError(f"{where}: select_sources must be {{top_k: K, predictions: PRED.csv}} "
                    "(predictions optional: `study run --predictions`) or {random: N, seed: S}, "
                    f"got {value!r}")
  top_k = _positive_int(where, "select_sources.top_k", value["top_k"])
  if top_k > len(sources):
    raise SpecError(f"{where}: select_sources.top_k {top_k} > the {len(sources)} sources")
  predictions = value.get("predictions")
  if predictions is not None and (not isinstance(predictions, str) or not predictions):
    raise SpecError(f"{where}: select_sources.predictions must be a path or null, got "
                    f"{predictions!r}")
  return {"top_k": top_k, "predictions": predictions}


def _feature_lengths(where: str, value: Any) -> dict[str, int] | None:
  if value is None:
    return None
  if (not isinstance(value, Mapping) or set(value) != {"inputs", "targets"}
      or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                 for v in value.values())):
    raise SpecError(f"{where}: feature_lengths must be {{inputs: N, targets: M}} with positive "
                    f"integers, got {value!r}")
  return {"inputs": value["inputs"], "targets": value["targets"]}


def _gin_bindings(where: str, value: Any) -> dict[str, Any]:
  if not isinstance(value, Mapping):
    raise SpecError(f"{where}: gin_bindings must map MACRO: value, got {value!r}")
  for name in value:
    if name in RUNNER_MACROS:
      raise SpecError(f"{where}: gin_bindings sets {name}, which the study sets from "
                      f"{RUNNER_MACROS[name]}; use that key instead")
    if not isinstance(name, str) or not name.replace("_", "").replace(".", "").isalnum():
      raise SpecError(f"{where}: gin_bindings key {name!r} is not a gin macro or "
                      "Configurable.param name")
  return dict(value)


def _check_steps(where: str, spec: StudySpec) -> None:
  for key, steps in (("source_steps", spec.source_steps), ("target_steps", spec.target_steps)):
    if spec.key_step > steps:
      raise SpecError(f"{where}: key_step {spec.key_step} > {key} {steps}: the task-embedding "
                      f"prompt would never be saved; lower key_step or raise {key}")
  if spec.checkpoint_period and spec.key_step % spec.checkpoint_period:
    raise SpecError(f"{where}: key_step {spec.key_step} is not a multiple of checkpoint_period "
                    f"{spec.checkpoint_period}, so no prompt is saved at it")

