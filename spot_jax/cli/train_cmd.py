"""`spot-jax train` and `spot-jax eval`: gin-configured like T5X's train/eval scripts.

  spot-jax train --gin_file=models/base.gin --gin_file=runs/prompt_train.gin \
      --gin.MODEL_DIR=/tmp/rte --gin.MIXTURE_OR_TASK_NAME=super_glue_rte --gin.TRAIN_STEPS=1000
  spot-jax train --packed_job STUDY_DIR/jobs/pack_....json   (several runs in one step)
"""

from __future__ import annotations

import argparse
import json

GIN_HELP = ("gin flags: --gin_file=FILE (repeatable; searched in the cwd and gin_configs/), "
            "--gin.MACRO=VALUE or --gin.Configurable.param=VALUE (T5X style)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  train = subparsers.add_parser("train", help="prompt-tune on a task or mixture",
                                description=GIN_HELP)
  train.add_argument("--overwrite", action="store_true",
                     help="delete a different run found in MODEL_DIR instead of refusing")
  train.add_argument("--packed_job", metavar="FILE",
                     help="train the runs of a packed job file (written by `study run "
                          "--emit_jobs --pack N`) together, in one jitted step; no gin flags")
  train.set_defaults(func=run_train, accepts_gin=True)
  evaluate = subparsers.add_parser("eval", help="evaluate a prompt file on a task",
                                   description=GIN_HELP)
  evaluate.add_argument("--predictions_out", metavar="DIR",
                        help="also write test-split predictions as the GLUE (TSV) / SuperGLUE "
                             "(JSONL) leaderboards take them, into DIR: CoLA.tsv, MNLI-m.tsv, "
                             "MNLI-mm.tsv and AX.tsv (MNLI's prompt), BoolQ.jsonl, RTE.jsonl, "
                             "AX-b.jsonl and AX-g.jsonl (RTE's prompt), ...")
  evaluate.set_defaults(func=run_eval, accepts_gin=True)
  export = subparsers.add_parser(
      "export", help="write a run's LoRA/IA3 folded into its frozen model as a T5X checkpoint")
  export.add_argument("--merged", action="store_true", required=True,
                      help="fold the trainables into the frozen kernels (the only export)")
  export.add_argument("--run", required=True, help="the run's MODEL_DIR")
  export.add_argument("--output", required=True, help="the T5X checkpoint directory to write")
  export.add_argument("--step", type=int, default=None, help="default: the run's best step")
  export.add_argument("--overwrite", action="store_true")
  export.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
  from spot_jax.runs.in_process import train_from_flags
  return train_from_flags(args.gin_files, args.gin_bindings, packed_job=args.packed_job,
                          overwrite=args.overwrite)


def run_eval(args: argparse.Namespace) -> int:
  from spot_jax import gin_utils
  from tasks.lookup import register_all_tasks
  from spot_jax.train.evaluate import EvalConfig, evaluate_prompt, write_test_predictions
  register_all_tasks()
  gin_utils.parse_gin(args.gin_files, args.gin_bindings)
  try:
    cfg = EvalConfig()
  except TypeError as e:
    raise ValueError(f"Incomplete eval config ({e}); set PROMPT_FILE and MIXTURE_OR_TASK_NAME "
                     "and include runs/prompt_eval.gin") from None
  mode = {"beam_search": "T5X's beam search (1 beam, alpha 0.6), then the task's postprocessor",
          "greedy": "greedy decoding, then the task's postprocessor",
          "rank_classification": "rank classification over the label set"}.get(cfg.eval_mode,
                                                                                cfg.eval_mode)
  print(f"Evaluating {cfg.task} ({cfg.split}) with EVAL_MODE={cfg.eval_mode}: {mode}; inputs "
        "and targets untruncated.")
  print(json.dumps(evaluate_prompt(cfg), indent=2))
  if args.predictions_out:
    written, skipped = write_test_predictions(cfg, args.predictions_out)
    for task, (path, invalid) in written.items():
      note = f" ({invalid} invalid predictions written as class 0)" if invalid else ""
      print(f"Wrote {task} test predictions to {path}{note}")
    if skipped:
      print(f"No leaderboard file for {', '.join(skipped)} (in neither GLUE nor SuperGLUE).")
  return 0


def run_export(args: argparse.Namespace) -> int:
  from spot_jax.train.export import export_merged
  path = export_merged(args.run, args.output, args.step, args.overwrite)
  print(f"Wrote {path}")
  return 0
