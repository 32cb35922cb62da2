"""`spot-jax study sizes|table3|agreement`: the papers' summary figures and tables over several
studies.

  spot-jax study sizes --model base=model_base/results.csv --prompt base=prompt_base/results.csv
      [--model SIZE=CSV ...] [--prompt SIZE=CSV ...] --out DIR [--benchmark superglue|glue]
  spot-jax study table3 TRUTH_results.csv --configurations CONFIGS.csv [--task_class CR|QA]
      [--out DIR]
  spot-jax study agreement PROMPT_results.csv MODEL_results.csv [--out FILE.csv]

Plugged into `spot-jax study` by spot_jax.cli.study_cmd.STUDY_ACTION_MODULES.
"""

from __future__ import annotations

import argparse


def add_study_parser(study_subparsers: argparse._SubParsersAction) -> None:
  sizes = study_subparsers.add_parser(
      "sizes", help="SPoT Figure 1: benchmark score against model size per approach (CSV+PNG)",
      description="Reads one results.csv per (size, tuning) study (gin_configs/study/"
                  "spot_sizes/) and writes size_curves.csv and size_curves.png: ModelTuning and "
                  "Multi-task ModelTuning from --model studies, PromptTuning and SPoT from "
                  "--prompt studies.")
  sizes.add_argument("--model", action="append", default=[], type=_size_path,
                     metavar="SIZE=CSV", help="a model-tuning study's results.csv at SIZE "
                                              "(small, base, large, xl, xxl); repeat per size")
  sizes.add_argument("--prompt", action="append", default=[], type=_size_path,
                     metavar="SIZE=CSV", help="a prompt-tuning study's results.csv at SIZE")
  sizes.add_argument("--benchmark", default="superglue", choices=("superglue", "glue"),
                     help="the benchmark averaged (default superglue, as Figure 1)")
  sizes.add_argument("--out", required=True, help="output directory")
  sizes.set_defaults(func=run_sizes, uses_jax=False)
  table3 = study_subparsers.add_parser(
      "table3", help="TuPaTE Table 3: each configuration's in-task performance next to its "
                     "prediction quality (rho, NDCG)",
      description="For every method/configuration of --configurations (CSV method,"
                  "configuration,performance,predictions: the configuration's tuning "
                  "results.csv and its predictions CSV), its mean in-task score and its "
                  "ranking's rho and NDCG against the ground-truth results; per method the "
                  "highest-minus-lowest-performance deltas and the NDCG-performance Pearson r.")
  table3.add_argument("results", help="the ground truth: the transfer study's results.csv")
  table3.add_argument("--configurations", required=True,
                      help="CSV method,configuration,performance,predictions (paths relative "
                           "to this file)")
  table3.add_argument("--task_class", default=None, choices=("CR", "QA"),
                      help="evaluate in-class within this TuPaTE class (the paper: CR)")
  table3.add_argument("--out", default=None,
                      help="write table3.csv and table3_configurations.csv here")
  table3.set_defaults(func=run_table3, uses_jax=False)
  agreement = study_subparsers.add_parser(
      "agreement", help="affinity paper §4.6.4: Spearman of two studies' gains per target",
      description="For every target both studies ran, the Spearman rho (and Pearson r) "
                  "between the gains of the sources both ran (e.g. prompt tuning against full "
                  "fine-tuning: gin_configs/study/affinity_finetune_agreement/).")
  agreement.add_argument("first", help="a study's results.csv (e.g. prompt tuning)")
  agreement.add_argument("second", help="another study's results.csv (e.g. full fine-tuning)")
  agreement.add_argument("--out", default=None, help="write the table as CSV here")
  agreement.set_defaults(func=run_agreement, uses_jax=False)


def _size_path(text: str) -> tuple[str, str]:
  size, sep, path = text.partition("=")
  if not sep or not size or not path:
    raise argparse.ArgumentTypeError(f"expected SIZE=results.csv (e.g. base=study/results.csv), "
                                     f"got {text!r}")
  return size, path


def run_sizes(args: argparse.Namespace) -> int:
  from spot_jax.study import results, size_curves
  studies = [(size, tuning, results.read_results(path))
             for tuning, given in (("model", args.model), ("prompt", args.prompt))
             for size, path in given]
  points = size_curves.size_curves(studies, args.benchmark)
  print(size_curves.format_points(points))
  for path in size_curves.write(points, args.out, args.benchmark):
    print(f"wrote {path}")
  return 0


def run_agreement(args: argparse.Namespace) -> int:
  from spot_jax.study import gain_agreement, results
  rows = gain_agreement.gain_agreement(results.read_results(args.first),
                                       results.read_results(args.second))
  print(gain_agreement.format_rows(rows))
  if args.out:
    print(f"wrote {gain_agreement.write(rows, args.out)}")
  return 0


def run_table3(args: argparse.Namespace) -> int:
  from spot_jax.study import performance_vs_prediction as table3
  configurations, rows = table3.table3(args.results, args.configurations, args.task_class)
  print(table3.format_tables(configurations, rows))
  if args.out:
    for path in table3.write(configurations, rows, args.out):
      print(f"wrote {path}")
  return 0
