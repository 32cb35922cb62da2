"""`spot-jax study sizes`: the papers' summary figures and tables over several studies.

  spot-jax study sizes --model base=model_base/results.csv --prompt base=prompt_base/results.csv
      [--model SIZE=CSV ...] [--prompt SIZE=CSV ...] --out DIR [--benchmark superglue|glue]

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
