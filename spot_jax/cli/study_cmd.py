"""`spot-jax study analyze|evaluate`: transfer matrices and plots, and ranking evaluation.

  spot-jax study analyze results.csv --out analysis/ [--similarity similarity.csv] [--threshold 10]
  spot-jax study evaluate results.csv --predictions predictions.csv [--k_max 10] [--out r.json]
  spot-jax study evaluate results.csv --baseline random|data_size [--sizes sizes.csv]
  spot-jax study evaluate STUDY_DIR/results.csv --scorer cosine [--study_dir DIR ...]

More `study` actions live in the modules of STUDY_ACTION_MODULES, each exposing
`add_study_parser(study_subparsers)`.
"""

from __future__ import annotations

import argparse
import importlib

STUDY_ACTION_MODULES = ("spot_jax.cli.study_run_cmd", "spot_jax.cli.study_papers_cmd")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  parser = subparsers.add_parser("study", help="analyse transferability studies")
  study_sub = parser.add_subparsers(dest="study_command", metavar="ACTION", required=True)
  for module_name in STUDY_ACTION_MODULES:
    importlib.import_module(module_name).add_study_parser(study_sub)
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
                      help="CSV target,source,score (higher = more transferable), from any "
                           "scorer: `spot-jax affinity predict --scorer NAME` writes one")
  method.add_argument("--scorer", default=None,
                      help="rank sources by this scorer over the study's task embeddings (its "
                           "source and baseline runs' key-step keys, any method): a similarity "
                           "(cosine...), max_pairwise, or ensemble:METRIC with one --study_dir "
                           "per method")
  method.add_argument("--baseline", choices=("random", "data_size"), default=None,
                      help="random: expected metrics of a uniformly random ranking; data_size: "
                           "rank sources by training-set size")
  evaluate.add_argument("--study_dir", action="append", default=None,
                        help="with --scorer: the study directory holding the runs (default the "
                             "results' directory); repeat for ensemble:METRIC")
  evaluate.add_argument("--embedding", default=None, choices=("layer_mean", "concat"),
                        help="with --scorer, non-prompt methods: the task-embedding kind "
                             "(default layer_mean)")
  evaluate.add_argument("--sizes", default=None,
                        help="CSV task,size for --baseline data_size (default: the registry)")
  evaluate.add_argument("--k_max", type=int, default=None,
                        help="longest top-k curve (default: the most candidates of a target)")
  evaluate.add_argument("--ndcg_relevance", default="rank", choices=("rank", "score", "gain"),
                        help="NDCG relevance: rank of the true score (default), raw score, or "
                             "normalised gain (docs/studies.md)")
  evaluate.add_argument("--classes", default=None, choices=("tupate",),
                        help="also TuPaTE's in-class / all-class rho and NDCG per task class "
                             "(CR, QA), its Table 2 layout")
  evaluate.add_argument("--out", default=None, help="write the full report to this JSON file")
  evaluate.set_defaults(func=run_evaluate, uses_jax=False)


def run_analyze(args: argparse.Namespace) -> int:
  from spot_jax.app import pipeline
  from spot_jax.study import analysis
  summary = pipeline.analyse(args.results, args.out, similarity_csv_path=args.similarity,
                             threshold=args.threshold, metric_name=args.metric_name)
  print(analysis.format_summary(summary))
  print(f"wrote {args.out}")
  return 0


def run_evaluate(args: argparse.Namespace) -> int:
  from spot_jax.app import pipeline
  from spot_jax.study import ranking
  report = pipeline.evaluate_rankings(args.results, predictions=args.predictions,
                                      baseline=args.baseline, scorer=args.scorer,
                                      study_dirs=args.study_dir or (),
                                      embedding=args.embedding, sizes=args.sizes,
                                      k_max=args.k_max, out=args.out,
                                      ndcg_relevance=args.ndcg_relevance,
                                      classes=args.classes)
  print(ranking.format_report(report))
  if "class_table" in report:
    print(report["class_table"], end="")
  if args.out:
    print(f"wrote {args.out}")
  return 0
