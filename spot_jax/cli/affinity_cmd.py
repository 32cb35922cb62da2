"""`spot-jax affinity train|predict|evaluate|ablate`: the learned affinity scoring function.

  spot-jax affinity train results.csv --study_dir STUDY --out heads/ --seeds 0 1 2 \
      --gin_file=affinity/light.gin
  spot-jax affinity train results.csv --study_dir STUDY --out heads/ --spec SPEC.yaml
  spot-jax affinity predict --scorer affinity:heads/ --study_dir STUDY --results results.csv \
      --out predictions.csv
  spot-jax affinity evaluate results.csv --head heads/ --study_dir STUDY --out table.csv
  spot-jax affinity train results.csv --study_dir STUDY --out folds/ --cross_validate [K]
  spot-jax affinity evaluate results.csv --head folds/ --study_dir STUDY
  spot-jax affinity ablate results.csv --study_dir STUDY --out ablation/ --gin_file=affinity/light.gin
  spot-jax affinity ablate results.csv --study_dir STUDY --spec SPEC.yaml --out paper/ \
      --target_sizes 2000=sst2_2k/results.csv 5000=... --size_target glue_sst2 \
      --size_source glue_mnli

Keys come from a prompt library (--library, every task of the results must have entries) or
from a study directory (--study_dir: the key_step prompts of its source and baseline runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from spot_jax.cli.train_cmd import GIN_HELP

LEAVE_ONE_OUT = 0  # `--cross_validate` without K (affinity_experiments.LEAVE_ONE_OUT).


def _fold_count(text: str) -> int:
  k = int(text)
  if k < 2:
    raise argparse.ArgumentTypeError(f"K = {k}: cross-validation needs K >= 2 folds (omit K "
                                     "for one fold per target)")
  return k


def _keys_args(parser: argparse.ArgumentParser) -> None:
  origin = parser.add_mutually_exclusive_group(required=True)
  origin.add_argument("--library", help="prompt library holding keys of every task")
  origin.add_argument("--study_dir", help="study directory (runs/source, runs/baseline)")
  parser.add_argument("--model", default=None, help="frozen model of the library's entries "
                                                    "(fingerprint or name)")


def _family_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--families", default=None,
                      help="CSV task,family (default: the synthetic world's and the registry's)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  parser = subparsers.add_parser("affinity", help="train and use the learned affinity head")
  sub = parser.add_subparsers(dest="affinity_command", metavar="ACTION", required=True)

  train = sub.add_parser("train", help="train heads (one per seed) on a study's gains",
                         description="Trains the affinity head on gains from RESULTS joined "
                                     "with the tasks' keys. " + GIN_HELP)
  train.add_argument("results", help="results CSV source,target,seed,score")
  _keys_args(train)
  train.add_argument("--out", required=True, help="head directory (seed_<s>/ per seed)")
  train.add_argument("--seeds", type=int, nargs="+", default=[0])
  split = train.add_mutually_exclusive_group()
  split.add_argument("--val_targets", nargs="+", default=None,
                     help="held-out targets (default: AffinityConfig.val_fraction of them)")
  split.add_argument("--leave_family_out", default=None, nargs="+", metavar="FAMILY",
                     help="hold out every target of these families and train without their "
                          "tasks (with --spec: the paper's §4.6.2 generalisation test)")
  split.add_argument("--cross_validate", type=_fold_count, nargs="?", const=LEAVE_ONE_OUT,
                     default=None, metavar="K",
                     help="cross-validation folds under --out (OUT/<held-out targets>/seed_<s>/):"
                          " one per target (leave one target out), or K folds of targets drawn "
                          "with AffinityConfig.split_seed; no validation, so no early stopping "
                          "or best step on the held-out targets (last step's params). "
                          "`affinity evaluate --head OUT` scores each target with its fold")
  train.add_argument("--spec", default=None,
                     help="the study's spec (pool_pairs): the paper's protocol, heads trained "
                          "on pool-internal pairs only (M = pool_pairs.num_pairs unless its "
                          "`affinity:` sets num_pairs), the spec's targets held out as novel "
                          "targets, no validation; families from its `families:`")
  _family_args(train)
  train.set_defaults(func=run_train, accepts_gin=True)

  predict = sub.add_parser("predict", help="write target,source,score for any scorer")
  predict.add_argument("--scorer", required=True,
                       help="affinity:HEAD_DIR, a similarity, max_pairwise, data_size, random")
  _keys_args(predict)
  predict.add_argument("--results", default=None,
                       help="results CSV whose targets and sources to score (default: every "
                            "task with keys, each as target and source)")
  predict.add_argument("--targets", nargs="+", default=None, help="restrict the targets")
  predict.add_argument("--sizes", default=None, help="CSV task,size for data_size")
  predict.add_argument("--out", required=True, help="predictions CSV to write")
  predict.set_defaults(func=run_predict)

  evaluate = sub.add_parser("evaluate", help="every scorer side by side (paper Table 1/2)")
  evaluate.add_argument("results", help="results CSV")
  evaluate.add_argument("--head", required=True, nargs="+",
                        help="head directory (one head or seed_*/); a cross-validation "
                             "directory (`affinity train --cross_validate`) or several head "
                             "directories (one `affinity train --val_targets` each): folds, "
                             "every target scored by the fold that held it out")
  _keys_args(evaluate)
  evaluate.add_argument("--targets", nargs="+", default=None,
                        help="evaluated targets (default: the heads' held-out targets)")
  evaluate.add_argument("--sizes", default=None, help="CSV task,size for data_size")
  evaluate.add_argument("--ndcg_relevance", default=None, choices=("rank", "score", "gain"),
                        help="add an NDCG column with this relevance of each source (rank: "
                             "n - true rank; score; gain over the baseline)")
  evaluate.add_argument("--scorers", nargs="+", default=[], metavar="SCORER",
                        help="more rival scorers by name (spot_jax/library/scorers.py), e.g. "
                             "textemb:CHECKPOINT fisher:CHECKPOINT curvegrad:STUDY_DIR")
  evaluate.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="add 95%% bootstrap intervals over targets (N resamples) and the "
                             "head's per-target difference against each rival (--paired_with)")
  evaluate.add_argument("--paired_with", nargs="+", default=None, metavar="SCORER",
                        help="rivals of the paired comparison (default: every other scorer)")
  evaluate.add_argument("--out", default=None, help="write the table as CSV")
  evaluate.set_defaults(func=run_evaluate)

  ablate = sub.add_parser("ablate", help="beta and M curves (and leave-family-out) as CSV+PNG",
                          description="Trains heads per setting and seed. " + GIN_HELP)
  ablate.add_argument("results", help="results CSV")
  _keys_args(ablate)
  ablate.add_argument("--out", required=True, help="output directory")
  ablate.add_argument("--betas", type=float, nargs="*", default=[0.5, 1.0, 1.5, 2.0, 2.5])
  ablate.add_argument("--num_pairs", type=int, nargs="*", default=[100, 200, 300, 400])
  ablate.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ablate.add_argument("--leave_family_out", action="store_true",
                      help="also train without each family and test on its targets")
  ablate.add_argument("--spec", default=None,
                      help="a pool-pair study's spec: the paper's figures (2: beta, 3: M with "
                           "D_cos, D^_cos and the oracle, §4.6.2 generalisation, 4: target "
                           "size, 5: gains by source type) on its novel targets")
  ablate.add_argument("--leave_out", nargs="+", default=None, metavar="FAMILY",
                      help="--spec: the families left out for §4.6.2 (default: the "
                           "sequence-labelling types)")
  ablate.add_argument("--target_sizes", nargs="+", default=[], metavar="SIZE=RESULTS",
                      help="--spec, Figure 4: a results CSV per target training size")
  ablate.add_argument("--size_target", default=None, help="Figure 4's target (e.g. glue_sst2)")
  ablate.add_argument("--size_source", default=None, help="Figure 4's source (e.g. glue_mnli)")
  _family_args(ablate)
  ablate.set_defaults(func=run_ablate, accepts_gin=True)


def _config(args: argparse.Namespace):
  from spot_jax import gin_utils
  from spot_jax.affinity.train import AffinityConfig
  gin_utils.parse_gin(args.gin_files or ["affinity/light.gin"], args.gin_bindings)
  return AffinityConfig()


def _inputs(args: argparse.Namespace, results_path: str, cfg=None):
  from spot_jax.study import affinity_experiments
  return affinity_experiments.load_inputs(results_path, library=args.library,
                                          study_dir=args.study_dir, model=args.model, cfg=cfg)


def _print_summary(summary: dict, out: str) -> None:
  for seed, score in summary["best_val_spearman"].items():
    print(f"seed {seed}: best validation Spearman {score}")
  mean, std = summary["mean_val_spearman"], summary["std_val_spearman"]
  if mean is not None:
    print(f"mean ± std over {len(summary['seeds'])} seeds: {mean:.3f} ± {std:.3f}")
  print(f"held-out targets: {', '.join(summary['val_targets'])}; heads in {out}")


def _cross_validate(args: argparse.Namespace, cfg, inputs) -> int:
  from spot_jax.study import affinity_experiments
  listed = affinity_experiments.cross_validate(cfg, inputs, args.out, args.seeds,
                                               args.cross_validate)
  for fold in listed:
    pairs = "/".join(map(str, sorted(set(fold["train_pairs"].values()))))
    print(f"held out {', '.join(fold['held_out'])}: {len(args.seeds)} heads on {pairs} "
          f"training pairs in {os.path.join(args.out, fold['dir'])}")
  kind = "leave one target out" if args.cross_validate == LEAVE_ONE_OUT else "K folds"
  print(f"{len(listed)} folds ({kind}, no "
        f"validation); evaluate with `spot-jax affinity evaluate RESULTS --head {args.out}`")
  return 0


def _train_pool(args: argparse.Namespace, cfg, inputs) -> int:
  from spot_jax.study import affinity_experiments
  if args.val_targets or args.cross_validate is not None:
    raise ValueError("--spec holds out the spec's targets (the novel targets); drop "
                     "--val_targets / --cross_validate")
  cfg, summary, exclude = affinity_experiments.train_pool(
      cfg, inputs, args.spec, args.out, args.seeds, args.leave_family_out, args.families)
  counts = "/".join(str(n) for n in sorted({len(p) for p in summary["train_pairs"].values()}))
  print(f"{len(summary['seeds'])} heads on {counts} pool pairs each (of "
        f"{summary['available_pairs']} pool transfers; M = {cfg.num_pairs}), no validation"
        + (f"; left out {len(exclude)} pool tasks of {', '.join(args.leave_family_out)}"
           if exclude else ""))
  print(f"novel targets (never in training): {', '.join(summary['val_targets'])}; heads in "
        f"{args.out}; score them with `spot-jax affinity evaluate RESULTS --head {args.out}`")
  return 0


def run_train(args: argparse.Namespace) -> int:
  from spot_jax.study import affinity_experiments
  cfg = _config(args)
  inputs = _inputs(args, args.results, cfg)
  if args.spec:
    return _train_pool(args, cfg, inputs)
  if args.cross_validate is not None:
    return _cross_validate(args, cfg, inputs)
  summary = affinity_experiments.train_split(
      cfg, inputs, args.out, args.seeds, val_targets=args.val_targets,
      leave_family_out=args.leave_family_out, families_path=args.families)
  _print_summary(summary, args.out)
  return 0


def run_predict(args: argparse.Namespace) -> int:
  from spot_jax.library import scorers
  from spot_jax.study import affinity_experiments, results
  scorer = scorers.get_scorer(args.scorer, size_of=affinity_experiments.size_lookup(args.sizes))
  if args.results:
    inputs = _inputs(args, args.results)
    keys, sources = inputs.task_keys, inputs.sources
    targets = sorted({t for _, t in inputs.gains})
  else:
    from spot_jax.affinity import data
    if args.library:
      from spot_jax.library.store import PromptLibrary
      library = PromptLibrary(args.library)
      keys = data.keys_from_library(library, library.resolve_model(args.model)
                                    if args.model else None)
    else:
      keys = data.keys_from_study(args.study_dir)
    sources = targets = sorted(keys)
  targets = args.targets or targets
  predicted = scorers.predictions(scorer, keys, targets, sources)
  rows = [(t, s, v) for t in sorted(predicted) for s, v in predicted[t].items()]
  results.write_csv(args.out, results.PREDICTION_COLUMNS, rows)
  print(f"Wrote {len(rows)} predictions of {scorer.name} for {len(predicted)} targets to "
        f"{args.out}")
  return 0


def run_evaluate(args: argparse.Namespace) -> int:
  from spot_jax.study import affinity_eval, affinity_experiments
  inputs = _inputs(args, args.results)
  evaluation = affinity_experiments.evaluate_heads(
      inputs, args.head, args.targets, args.ndcg_relevance, args.sizes,
      extra_scorers=args.scorers, bootstrap=args.bootstrap, paired_with=args.paired_with)
  print(f"targets: {', '.join(sorted(evaluation.targets))}" + (
      f" (cross-validated: {evaluation.fold_count} folds)" if evaluation.fold_count else ""))
  print(affinity_eval.format_rows(evaluation.rows, evaluation.columns))
  print("\nTable 1 (Feng et al.): score after transfer from each method's top-1 source; "
        "mean_delta = mean gain over no transfer")
  print(affinity_eval.format_grid(evaluation.table1_header, evaluation.table1))
  print("\nFigure 3 (Feng et al.): mean gain of the best of the top-1 / top-3 sources")
  print(affinity_eval.format_rows(evaluation.figure3, affinity_eval.FIGURE3_COLUMNS))
  if evaluation.resamples:
    from spot_jax.study import affinity_intervals
    print(f"\nMeans over {len(evaluation.targets)} targets with 95% bootstrap intervals "
          f"({evaluation.resamples} resamples of the targets)")
    print(affinity_intervals.format_table(affinity_intervals.format_intervals(
        evaluation.intervals)))
    print(f"\n{evaluation.head} minus each rival, per target (positive: the head is better, "
          "for regret lower), with 95% bootstrap intervals")
    print(affinity_intervals.format_table(affinity_intervals.format_paired(evaluation.paired)))
  for note in evaluation.notes:
    print(f"note: {note}")
  if args.out:
    paths = affinity_experiments.write_evaluation(args.out, evaluation)
    print(f"wrote {', '.join(paths)}")
  return 0


def _sizes(pairs: list[str]) -> dict[int, str]:
  out = {}
  for item in pairs:
    size, sep, path = item.partition("=")
    if not sep or not size.isdigit() or not path:
      raise ValueError(f"--target_sizes {item!r}: write SIZE=RESULTS_CSV, e.g. "
                       "2000=sst2_2k/results.csv")
    out[int(size)] = path
  return out


def _ablate_paper(args: argparse.Namespace) -> int:
  from spot_jax.study import affinity_ablate, affinity_eval, affinity_experiments
  from spot_jax.study.spec import load_spec
  spec = load_spec(args.spec, check_tasks=False)
  cfg = spec.affinity_config(_config(args))
  study = affinity_ablate.pool_study(_inputs(args, args.results, cfg), spec)
  if args.families:
    study = dataclasses.replace(study, family_of=affinity_experiments.family_lookup(args.families))
  done = affinity_ablate.run_ablations(
      study, cfg, args.out, args.seeds, betas=args.betas, num_pairs=args.num_pairs,
      leave_out=args.leave_out, sizes=_sizes(args.target_sizes), size_target=args.size_target,
      size_source=args.size_source)
  for name, key in (("figure2_beta", "beta"), ("figure3_num_pairs", "num_pairs")):
    if name in done:
      print(f"{name}:")
      print(affinity_eval.format_rows([{**r, "method": f"{r['method']} {key}={r[key]}"}
                                       for r in done[name]]))
  if "generalisation" in done:
    row = done["generalisation"][0]
    print(f"generalisation ({row['targets']} without {row['left_out']}, "
          f"{row['pool_tasks_left_out']} pool tasks left out):")
    print(affinity_eval.format_rows(done["generalisation"]))
  for row in done.get("figure4_target_size", []):
    print(f"{row['target']} at {row['size']}: {row['source']} gains {row['gain']:.2f}")
  return 0


def run_ablate(args: argparse.Namespace) -> int:
  if args.spec:
    return _ablate_paper(args)
  from spot_jax.study import affinity_ablate, affinity_eval, affinity_experiments
  cfg = _config(args)
  inputs = _inputs(args, args.results, cfg)
  family_of = (affinity_experiments.family_lookup(args.families)
               if args.leave_family_out else None)
  curves = affinity_ablate.split_ablations(
      inputs, cfg, args.out, args.seeds, betas=args.betas, num_pairs=args.num_pairs,
      family_of=family_of)
  for parameter, (path, rows) in curves.items():
    print(f"{parameter}:")
    print(affinity_eval.format_rows([{**r, "method": f"{parameter}={r['value']}"}
                                     for r in rows]))
    print(f"wrote {path}" + (" and .png" if parameter != "family" else ""))
  return 0
