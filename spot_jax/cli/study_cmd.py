"""`spot-jax study analyze|evaluate`: transfer matrices and plots, and ranking evaluation.

  spot-jax study analyze results.csv --out analysis/ [--similarity similarity.csv] [--threshold 10]
  spot-jax study evaluate results.csv --predictions predictions.csv [--k_max 10] [--out r.json]
  spot-jax study evaluate results.csv --baseline random|data_size [--sizes sizes.csv]

More `study` actions live in the modules of STUDY_ACTION_MODULES, each exposing
`add_study_parser(study_subparsers)`; a module that does not exist (yet) is skipped.
"""

from __future__ import annotations

import argparse
import importlib

STUDY_ACTION_MODULES = ("spot_jax.cli.study_run_cmd",)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  parser = subparsers.add_parser("study", help="analyse transferability studies")
  study_sub = parser.add_subparsers(dest="study_command", metavar="ACTION", required=True)
  for module_name in STUDY_ACTION_MODULES:
    try:
      module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
      if e.name != module_name:
        raise
      continue
    module.add_study_parser(study_sub)
  analyze = study_sub.add_parser(
      "analyze", help="transfer matrices, gains, oracle sources and plots of a results CSV")
  analyze.add_argument("results", help="CSV with columns source,target,seed,score (source "
                                       "`none` = the target trained from scratch)")
  analyze.add_argument("--out", required=True, help="output directory")
  analyze.add_argument("--similarity", default=None,
                       help="similarity CSV (spot-jax library similarity) over tasks, or over "
                            "runs <task>@<seed> (--per_run: one point per source prompt and "
                            "the per-run heatmap), for the similarity heatmaps and the "
                            "similarity vs relative error reduction plots")
  analyze.add_argument("--threshold", type=float, default=0.0,
                       help="a transfer is positive when its relative error reduction (%%) "
                            "exceeds this (default 0; SPoT Table 7 uses 10)")
  analyze.add_argument("--metric_name", default=None,
                       help="metric name for labels (default: the CSV's metric column)")
  analyze.set_defaults(func=run_analyze, uses_jax=False)
  evaluate = study_sub.add_parser(
      "evaluate", help="score a ranking of source tasks against the true transfer")
  evaluate.add_argument("results", help="results CSV (as for analyze)")
  method = evaluate.add_mutually_exclusive_group(required=True)
  method.add_argument("--predictions", default=None,
                      help="CSV target,source,score (higher = more transferable)")
  method.add_argument("--baseline", choices=("random", "data_size"), default=None,
                      help="random: expected metrics of a uniformly random ranking; data_size: "
                           "rank sources by training-set size")
  evaluate.add_argument("--sizes", default=None,
                        help="CSV task,size for --baseline data_size (default: the registry)")
  evaluate.add_argument("--k_max", type=int, default=None,
                        help="longest top-k curve (default: the most candidates of a target)")
  evaluate.add_argument("--out", default=None, help="write the full report to this JSON file")
  evaluate.set_defaults(func=run_evaluate, uses_jax=False)


def run_analyze(args: argparse.Namespace) -> int:
  from spot_jax.study import analysis
  summary = analysis.run_analysis(args.results, args.out, args.similarity, args.threshold,
                                  args.metric_name)
  print(analysis.format_summary(summary))
  print(f"wrote {args.out}")
  return 0


def run_evaluate(args: argparse.Namespace) -> int:
  import os

  from spot_jax.study import ranking, results
  if args.sizes and args.baseline != "data_size":
    raise ValueError("--sizes only applies to --baseline data_size")
  table = results.aggregate(results.read_results(args.results))
  if args.predictions:
    predicted = ranking.predictions_by_target(results.read_predictions(args.predictions))
    method, where = f"predictions {args.predictions}", args.predictions
  elif args.baseline == "data_size":
    sizes = results.read_sizes(args.sizes) if args.sizes else None
    def size_of(task: str) -> float:
      if sizes is None:
        return ranking.registry_train_size(task)
      if task not in sizes:
        raise ValueError(f"{args.sizes}: no size for source {task!r}; add a row {task},SIZE")
      return sizes[task]
    predicted = ranking.data_size_predictions(table, size_of)
    method, where = "data_size", args.sizes or "data_size"
  else:
    predicted, method, where = None, "random (expected value)", "random"
  report = ranking.evaluate(table, method, predicted, args.k_max, where)
  report["results"] = os.path.abspath(args.results)
  print(ranking.format_report(report))
  if args.out:
    results.write_json(args.out, report)
    print(f"wrote {args.out}")
  return 0
