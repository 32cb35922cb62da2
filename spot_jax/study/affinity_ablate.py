"""The affinity paper's remaining experiments on a pool-pair study (Feng et al., EMNLP 2023),
each as CSV + PNG under one directory (`spot-jax affinity ablate --spec`):

  figure2_beta            Figure 2: Spearman on the novel targets against the smooth-L1 beta
  figure3_num_pairs       Figure 3: mean gain of the best of the top-1 / top-3 sources against
                          M, the head next to D_cos, D^_cos and the oracle (brute force)
  generalisation          §4.6.2: heads trained without the pool tasks of some families
                          (default: the sequence-labelling types), tested on the novel
                          targets of those families (CoNLL2004); every scorer on them
  figure4_target_size     Figure 4: gain of one source on one target at several training
                          sizes, one results CSV per size (studies with per-run caps)
  figure5_type_gains      Figure 5: each novel target's gains per source, by source type

Heads train as `spot_jax.affinity.train.train_pool_heads` does (pool pairs only, no
validation); every number is a mean over head seeds with its std (ddof = 1).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from spot_jax.affinity import data as data_lib
from spot_jax.affinity import train as train_lib
from spot_jax.library import scorers as scorers_lib
from spot_jax.study import affinity_eval, results
from spot_jax.study.plots import save_figure

# Feng et al. 2023, Figure 5's caption: Table 4's task types grouped for the violins; the
# sequence-labelling types are those §4.6.2 leaves out. Other types keep their own name.
SEQUENCE_LABELLING = "sequence labelling"
TEXT_CLASSIFICATION = "text classification"
PAPER_TYPE_GROUPS = {
    "NER": SEQUENCE_LABELLING, "Word Segmentation": SEQUENCE_LABELLING,
    "Chunking": SEQUENCE_LABELLING, "POS": SEQUENCE_LABELLING,
    "Sentiment Classification": TEXT_CLASSIFICATION,
    "Emotion Classification": TEXT_CLASSIFICATION,
    "Hatespeech Identification": TEXT_CLASSIFICATION,
    "Question Classification": TEXT_CLASSIFICATION,
    "Intent Classification": TEXT_CLASSIFICATION,
    "Linguistic Acceptability": TEXT_CLASSIFICATION,  # the caption's "grammatical judgment".
    "Topic Classification": TEXT_CLASSIFICATION,
}
FIGURE3_METHODS = ("affinity", "cosine", "per_token_cosine", "brute_force")


def type_group(family: str) -> str:
  """A task type's Figure 5 group (case-insensitive on the type), else the type itself."""
  lookup = {k.lower(): v for k, v in PAPER_TYPE_GROUPS.items()}
  return lookup.get(family.lower(), family)


@dataclasses.dataclass(frozen=True)
class PoolStudy:
  """A pool-pair study's inputs: results and keys, its pool (sources), its novel targets and
  each task's family (task type)."""

  inputs: affinity_eval.Inputs
  pool: tuple[str, ...]
  novel: tuple[str, ...]
  family_of: Callable[[str], str]


def pool_trainer(study: PoolStudy, cfg: train_lib.AffinityConfig, seeds: Sequence[int],
                 novel: Sequence[str], exclude: Sequence[str] = ()
                 ) -> Callable[[dict[str, Any], str], str]:
  """`affinity_eval.ablation_curve`'s trainer: heads per seed on pool pairs only
  (`train_pool_heads`) with the setting's AffinityConfig overrides (other keys, such as a
  setting's label, are ignored)."""
  fields = {f.name for f in dataclasses.fields(train_lib.AffinityConfig)}

  def train(overrides: dict[str, Any], head_dir: str) -> str:
    settings = {k: v for k, v in overrides.items() if k in fields}
    train_lib.train_pool_heads(dataclasses.replace(cfg, **settings), study.inputs.gains,
                               study.inputs.task_keys, head_dir, seeds, novel,
                               exclude=exclude, log=False)
    return head_dir
  return train


def head_curve(study: PoolStudy, cfg: train_lib.AffinityConfig, parameter: str,
               values: Sequence[Any], seeds: Sequence[int], out_dir: str,
               novel: Sequence[str] | None = None, exclude: Sequence[str] = ()
               ) -> list[dict[str, Any]]:
  """One row per value of `parameter` (the head's metrics on `novel`, default the study's
  novel targets, mean ± std over seeds), the value also under the parameter's name."""
  novel = list(study.novel if novel is None else novel)
  rows = affinity_eval.ablation_curve(
      study.inputs, pool_trainer(study, cfg, seeds, novel, exclude),
      [{parameter: v} for v in values], os.path.join(out_dir, "heads"), lambda _: novel, seeds,
      parameter)
  return [{**r, parameter: r["value"]} for r in rows]


def baseline_rows(study: PoolStudy, targets: Sequence[str],
                  names: Sequence[str] = ("cosine", "per_token_cosine")) -> list[dict[str, Any]]:
  """The rows of similarity scorers, the expected random ranking and brute force."""
  named: dict[str, Any] = {n: scorers_lib.get_scorer(n) for n in names}
  named["random (expected)"] = None
  return affinity_eval.compare(study.inputs, named, targets)


# ----------------------------------------------------------------------------- figures 2 and 3


def beta_curve(study: PoolStudy, cfg: train_lib.AffinityConfig, betas: Sequence[float],
               seeds: Sequence[int], out_dir: str) -> list[dict[str, Any]]:
  """Figure 2: one row per beta (the head's metrics on the novel targets, mean ± std)."""
  return head_curve(study, cfg, "beta", [float(b) for b in betas], seeds, out_dir)


def num_pairs_curve(study: PoolStudy, cfg: train_lib.AffinityConfig, num_pairs: Sequence[int],
                    seeds: Sequence[int], out_dir: str) -> list[dict[str, Any]]:
  """Figure 3: rows (num_pairs, method) with the best-of-top-1/top-3 gains: the head per M,
  and D_cos, D^_cos and the oracle (the same at every M, listed once with num_pairs NaN)."""
  rows = head_curve(study, cfg, "num_pairs", [int(m) for m in num_pairs], seeds, out_dir)
  rows += [{**r, "num_pairs": math.nan} for r in baseline_rows(study, study.novel)
           if r["method"] in FIGURE3_METHODS]
  return rows


def generalisation(study: PoolStudy, cfg: train_lib.AffinityConfig, seeds: Sequence[int],
                   out_dir: str, families: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """§4.6.2: heads without the pool tasks of `families` (default: every family of the
  sequence-labelling group), scored with every baseline on the novel targets of those
  families. Each row records the families left out and how many pool tasks that removed."""
  if families is None:
    families = sorted({study.family_of(t) for t in (*study.pool, *study.novel)
                       if type_group(study.family_of(t)) == SEQUENCE_LABELLING})
  held, exclude = data_lib.leave_families_out(study.pool, study.novel, families,
                                              study.family_of)
  rows = head_curve(study, cfg, "left_out", ["+".join(families)], seeds, out_dir, held, exclude)
  rows += baseline_rows(study, held, tuple(scorers_lib.SIMILARITY_SCORERS))
  note = {"left_out": "+".join(families), "pool_tasks_left_out": len(exclude),
          "targets": "+".join(held)}
  return [{**r, **note} for r in rows]


# ----------------------------------------------------------------------------- figures 4 and 5


def target_size_curve(results_by_size: Mapping[int, str], target: str, source: str
                      ) -> list[dict[str, Any]]:
  """Figure 4: per training size, the target's baseline and its score from `source` (means
  and stds over seeds) and the gain; each size's results CSV comes from a study whose target
  runs were capped at that size (`max_train_examples: {targets: SIZE}`)."""
  rows = []
  for size in sorted(results_by_size):
    table = results.aggregate(results.read_results(results_by_size[size]))
    cells = {}
    for name in (results.BASELINE, source):
      try:
        cells[name] = table.cell(name, target)
      except (KeyError, ValueError):
        raise ValueError(f"{results_by_size[size]}: no result of {name} -> {target}; run the "
                         f"study with target {target} capped at {size}") from None
    (base, base_std), (score, score_std) = cells[results.BASELINE], cells[source]
    if math.isnan(base) or math.isnan(score):
      raise ValueError(f"{results_by_size[size]}: {source} -> {target} or its baseline has no "
                       "finished run")
    rows.append({"size": int(size), "target": target, "source": source, "baseline": base,
                 "baseline_std": base_std, "transfer": score, "transfer_std": score_std,
                 "gain": score - base})
  return rows


def type_gains(study: PoolStudy) -> list[dict[str, Any]]:
  """Figure 5: every (novel target, pool source) gain with the source's type and group."""
  return [{"target": t, "source": s, "type": study.family_of(s),
           "group": type_group(study.family_of(s)), "gain": g}
          for (s, t), g in sorted(study.inputs.gains.items(), key=lambda kv: kv[0][::-1])
          if t in study.novel]


# ----------------------------------------------------------------------------- writing


def write_rows_csv(path: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
  results.write_csv(path, columns, [[r.get(c, "") for c in columns] for r in rows])


def _metric_columns(metrics: Sequence[str]) -> list[str]:
  return [*metrics, *(f"{m}_std" for m in metrics)]


def plot_beta(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  from matplotlib.figure import Figure
  fig = Figure(figsize=(4.5, 3.2))
  ax = fig.subplots()
  ax.errorbar([r["beta"] for r in rows], [r["spearman"] for r in rows],
              yerr=[r.get("spearman_std", 0.0) for r in rows], marker="o", capsize=3)
  ax.set_xlabel("beta (smooth L1)")
  ax.set_ylabel("Spearman on the novel targets")
  save_figure(fig, path)


def plot_num_pairs(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  from matplotlib.figure import Figure
  fig = Figure(figsize=(9, 3.4))
  axes = fig.subplots(1, 2)
  head = [r for r in rows if r["method"] == "affinity"]
  for ax, column, title in zip(axes, affinity_eval.FIGURE3_COLUMNS,
                               ("(a) best of top-1", "(b) best of top-3")):
    ax.errorbar([r["num_pairs"] for r in head], [r[column] for r in head],
                yerr=[r.get(f"{column}_std", 0.0) for r in head], marker="o", capsize=3,
                label="affinity head")
    for r, style in zip([r for r in rows if r["method"] != "affinity"], (":", "-.", "--")):
      ax.axhline(r[column], linestyle=style, color="grey", label=r["method"])
    ax.set_xlabel("M (training pairs)")
    ax.set_ylabel("mean absolute gain")
    ax.set_title(title)
  axes[1].legend(fontsize=7)
  save_figure(fig, path)


def plot_bars(path: str, rows: Sequence[Mapping[str, Any]], title: str) -> None:
  from matplotlib.figure import Figure
  fig = Figure(figsize=(7, 3.4))
  ax = fig.subplots()
  x = np.arange(len(rows))
  for offset, column in zip((-0.2, 0.2), affinity_eval.FIGURE3_COLUMNS):
    ax.bar(x + offset, [r[column] for r in rows], 0.4,
           yerr=[r.get(f"{column}_std", 0.0) for r in rows], label=column, capsize=2)
  ax.set_xticks(x, [str(r["method"]) for r in rows], rotation=30, ha="right", fontsize=7)
  ax.axhline(0.0, color="black", linewidth=0.5)
  ax.set_ylabel("mean absolute gain")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  save_figure(fig, path)


def plot_target_size(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  from matplotlib.figure import Figure
  fig = Figure(figsize=(4.5, 3.2))
  ax = fig.subplots()
  ax.bar([str(r["size"]) for r in rows], [r["gain"] for r in rows])
  ax.set_xlabel(f"{rows[0]['target']} training examples")
  ax.set_ylabel(f"gain from {rows[0]['source']}")
  save_figure(fig, path)


def plot_type_gains(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  """Violins of the gains per target, one point per source coloured by its type group."""
  from matplotlib.figure import Figure
  targets = sorted({r["target"] for r in rows})
  groups = sorted({r["group"] for r in rows})
  fig = Figure(figsize=(1.6 * len(targets) + 3, 3.6))
  ax = fig.subplots()
  values = [[r["gain"] for r in rows if r["target"] == t] for t in targets]
  ax.violinplot(values, positions=range(len(targets)), showextrema=False)
  jitter = np.random.default_rng(0)
  from matplotlib import colormaps
  cmap = colormaps["tab10"]
  for g, group in enumerate(groups):
    picked = [(targets.index(r["target"]), r["gain"]) for r in rows if r["group"] == group]
    xs = [x + jitter.uniform(-0.12, 0.12) for x, _ in picked]
    ax.scatter(xs, [y for _, y in picked], s=10, color=cmap(g % 10), label=group)
  ax.set_xticks(range(len(targets)), targets, rotation=20, fontsize=8)
  ax.axhline(0.0, color="black", linewidth=0.5)
  ax.set_ylabel("transfer gain")
  ax.legend(fontsize=6, bbox_to_anchor=(1.01, 1), loc="upper left")
  save_figure(fig, path)


HEAD_METRICS = list(affinity_eval.COLUMNS)


def write_beta(out_dir: str, rows) -> str:
  path = os.path.join(out_dir, "figure2_beta.csv")
  write_rows_csv(path, rows, ["beta", "method", *_metric_columns(HEAD_METRICS)])
  plot_beta(path[:-4] + ".png", rows)
  return path


def write_num_pairs(out_dir: str, rows) -> str:
  path = os.path.join(out_dir, "figure3_num_pairs.csv")
  write_rows_csv(path, rows, ["num_pairs", "method",
                              *_metric_columns(affinity_eval.FIGURE3_COLUMNS)])
  plot_num_pairs(path[:-4] + ".png", rows)
  return path


def write_generalisation(out_dir: str, rows) -> str:
  path = os.path.join(out_dir, "generalisation.csv")
  write_rows_csv(path, rows, ["method", "left_out", "pool_tasks_left_out", "targets",
                              *_metric_columns(HEAD_METRICS)])
  plot_bars(path[:-4] + ".png", rows, f"targets {rows[0]['targets']} without "
            f"{rows[0]['left_out']} in training")
  return path


def write_target_size(out_dir: str, rows) -> str:
  path = os.path.join(out_dir, "figure4_target_size.csv")
  write_rows_csv(path, rows, ["size", "target", "source", "baseline", "baseline_std",
                              "transfer", "transfer_std", "gain"])
  plot_target_size(path[:-4] + ".png", rows)
  return path


def write_type_gains(out_dir: str, rows) -> str:
  path = os.path.join(out_dir, "figure5_type_gains.csv")
  write_rows_csv(path, rows, ["target", "source", "type", "group", "gain"])
  plot_type_gains(path[:-4] + ".png", rows)
  return path


def pool_study(inputs: affinity_eval.Inputs, spec: Any) -> PoolStudy:
  """The PoolStudy of a pool-pair StudySpec (its sources, targets and `families`)."""
  if not spec.families:
    raise ValueError(f"study {spec.name!r} has no `families:`; the ablations by task type "
                     "need one per task")
  return PoolStudy(inputs, tuple(spec.sources), tuple(spec.targets), spec.family_of)


def run_ablations(study: PoolStudy, cfg: train_lib.AffinityConfig, out_dir: str,
                  seeds: Sequence[int], *, betas: Sequence[float] = (),
                  num_pairs: Sequence[int] = (), leave_out: Sequence[str] | None = None,
                  generalise: bool = True, sizes: Mapping[int, str] | None = None,
                  size_target: str | None = None, size_source: str | None = None,
                  log: Callable[[str], None] = print) -> dict[str, list[dict[str, Any]]]:
  """Every figure asked for, written under `out_dir` (CSV + PNG); returns {figure: rows}.

  Figure 5 needs no training; Figures 2 and 3 train heads per beta / M and seed; §4.6.2 trains
  one set of heads without `leave_out` (default the sequence-labelling types); Figure 4 reads
  one results CSV per target size (`sizes`: {size: path}) for `size_target` and `size_source`.
  """
  os.makedirs(out_dir, exist_ok=True)
  done: dict[str, list[dict[str, Any]]] = {}

  def wrote(name: str, rows, writer) -> None:
    done[name] = rows
    log(f"wrote {writer(out_dir, rows)} and .png")

  wrote("figure5_type_gains", type_gains(study), write_type_gains)
  if betas:
    wrote("figure2_beta", beta_curve(study, cfg, betas, seeds, out_dir), write_beta)
  if num_pairs:
    wrote("figure3_num_pairs", num_pairs_curve(study, cfg, num_pairs, seeds, out_dir),
          write_num_pairs)
  if generalise:
    try:
      rows = generalisation(study, cfg, seeds, out_dir, leave_out)
    except data_lib.AffinityDataError as e:
      if leave_out is not None:
        raise
      log(f"generalisation skipped: {e}")
    else:
      wrote("generalisation", rows, write_generalisation)
  if sizes:
    if not (size_target and size_source):
      raise ValueError("Figure 4 needs the target and the source whose gain it plots "
                       "(--size_target, --size_source)")
    wrote("figure4_target_size", target_size_curve(sizes, size_target, size_source),
          write_target_size)
  return done


# ----------------------------------------------------------------------------- split ablations


def split_ablations(inputs: affinity_eval.Inputs, cfg: train_lib.AffinityConfig, out_dir: str,
                    seeds: Sequence[int], *, betas: Sequence[float] = (),
                    num_pairs: Sequence[int] = (),
                    family_of: Callable[[str], str] | None = None
                    ) -> dict[str, tuple[str, list[dict[str, Any]]]]:
  """The beta and M curves (and, with `family_of`, leave-each-family-out) on a study without
  pool pairs: heads per setting and seed on `train_seeds`'s split (validation targets drawn
  with cfg.split_seed), each evaluated on its held-out targets. Writes OUT/<parameter>.csv
  (+ .png for the curves); returns {parameter: (csv path, rows)}."""
  from spot_jax.affinity.predict import AffinityHead, head_dirs
  os.makedirs(out_dir, exist_ok=True)

  def trainer(val_targets=None, exclude=()):
    def train(overrides: dict, head_dir: str) -> str:
      settings = {k: v for k, v in overrides.items() if k != "family"}
      train_lib.train_seeds(dataclasses.replace(cfg, **settings), inputs.gains,
                            inputs.task_keys, head_dir, seeds, val_targets=val_targets,
                            exclude=exclude, log=False)
      return head_dir
    return train

  def held_out(path: str) -> list[str]:
    return AffinityHead.load(head_dirs(path)[0]).record["val_targets"]

  out: dict[str, tuple[str, list[dict[str, Any]]]] = {}
  for parameter, values in (("beta", betas), ("num_pairs", num_pairs)):
    if values:
      rows = affinity_eval.ablation_curve(inputs, trainer(), [{parameter: v} for v in values],
                                          out_dir, held_out, seeds, parameter)
      out[parameter] = (write_curve(out_dir, parameter, rows), rows)
  if family_of is not None:
    rows = []
    targets = sorted({t for _, t in inputs.gains})
    for family in sorted({family_of(t) for t in targets}):
      held = data_lib.family_targets(targets, family, family_of)
      exclude = [t for t in sorted(inputs.task_keys) if family_of(t) == family]
      rows += affinity_eval.ablation_curve(inputs, trainer(held, exclude), [{"family": family}],
                                           out_dir, held_out, seeds, "family")
    out["family"] = (write_curve(out_dir, "family", rows, plot=False), rows)
  return out


def write_curve(out_dir: str, parameter: str, rows: Sequence[Mapping[str, Any]],
                plot: bool = True) -> str:
  """OUT/<parameter>.csv (value, metrics and their stds) and, when `plot`, its PNG."""
  columns = ["value", *_metric_columns(affinity_eval.COLUMNS)]
  path = os.path.join(out_dir, f"{parameter}.csv")
  results.write_csv(path, [parameter, *columns[1:]], [[r[c] for c in columns] for r in rows])
  if plot:
    affinity_eval.plot_curve(os.path.join(out_dir, f"{parameter}.png"), rows, parameter)
  return path
