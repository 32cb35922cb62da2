"""`spot-jax study run`: train a transferability study's sources, baselines and transfers.

  spot-jax study run SPEC.yaml --out STUDY_DIR [--dry_run] [--processes N]
      [--phase sources|baselines|transfers|all] [--emit_jobs DIR --launcher local|gpu|...]
      [--collect] [--method prompt|prompt_encoder|prefix|lora|bias|ia3]
      [--embedding layer_mean|concat] [--predictions PRED.csv]

Plugged into `spot-jax study` by spot_jax.cli.study_cmd.STUDY_ACTION_MODULES.
"""

from __future__ import annotations

import argparse


def add_study_parser(study_subparsers: argparse._SubParsersAction) -> None:
  from spot_jax.runs.launchers import LAUNCH_SCRIPTS  # light; spot_jax.study.runner is not.
  parser = study_subparsers.add_parser(
      "run", help="train a study (sources, baselines, transfers) and collect results.csv",
      description="Runs every unfinished run of a study spec (YAML, see "
                  "gin_configs/study/synthetic.yaml), adds the source prompts to the library "
                  "and rebuilds STUDY_DIR/results.csv. Rerunning skips finished runs.")
  parser.add_argument("spec", help="study spec YAML")
  parser.add_argument("--out", required=True, help="the study directory (STUDY_DIR)")
  parser.add_argument("--dry_run", action="store_true",
                      help="print the plan and the first commands; train nothing")
  parser.add_argument("--processes", type=int, default=1,
                      help="worker processes (default 1: train in this process)")
  parser.add_argument("--phase", default="all",
                      help="sources, baselines, transfers or all (default): only these runs "
                           "(transfers need their sources finished)")
  parser.add_argument("--emit_jobs", metavar="DIR", default=None,
                      help="write the unfinished runs as two phase files of launcher commands "
                           "for a cluster instead of training")
  parser.add_argument("--launcher", choices=sorted(LAUNCH_SCRIPTS), default="local",
                      help="launch script of the --emit_jobs commands (default local)")
  parser.add_argument("--method", default=None,
                      help="train every run with this parameter-efficient method (replaces "
                           "the spec's `method`; docs/methods.md): prompt, prompt_encoder, "
                           "prefix, lora, bias, ia3")
  parser.add_argument("--embedding", default=None, choices=("layer_mean", "concat"),
                      help="non-prompt methods: the task-embedding kind of the library keys "
                           "(replaces the spec's `embedding`; default layer_mean)")
  parser.add_argument("--predictions", metavar="PRED.csv", default=None,
                      help="a spec with select_sources: rank each target's sources by this "
                           "target,source,score table (e.g. `spot-jax affinity predict --out`) "
                           "and train only its top_k")
  parser.add_argument("--pack", type=_pack_size, default=0, metavar="N",
                      help="train up to N compatible runs (same model, lengths, batch, steps) "
                           "together in one jitted step; 1: one run per job; default: the "
                           "size the model and memory allow (docs/packing.md)")
  parser.add_argument("--collect", action="store_true",
                      help="train nothing: add finished sources to the library and rebuild "
                           "results.csv")
  parser.set_defaults(func=run_study_cmd)


def _pack_size(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"--pack must be at least 1, got {value}")
  return value


def run_study_cmd(args: argparse.Namespace) -> int:
  from spot_jax.study import runner
  from spot_jax.study.spec import load_spec, with_predictions
  if args.emit_jobs and (args.dry_run or args.collect):
    raise ValueError("--emit_jobs writes job files only; drop --dry_run/--collect")
  spec = load_spec(args.spec, method=args.method, embedding=args.embedding)
  if args.predictions:
    spec = with_predictions(spec, args.predictions)
  if args.emit_jobs:
    paths = runner.emit_jobs(spec, args.out, args.launcher, args.emit_jobs, pack=args.pack)
    for path in paths:
      with open(path) as f:
        print(f"{path}: {sum(1 for _ in f)} commands")
    print("Run phase 1 to the end, then phase 2, from the checkout root; then "
          f"`spot-jax study run {args.spec} --out {args.out} --collect`.")
    return 0
  report = runner.run_study(spec, args.out, processes=args.processes, dry_run=args.dry_run,
                            phase=args.phase, collect_only=args.collect, pack=args.pack)
  return 0 if report.ok else 1
