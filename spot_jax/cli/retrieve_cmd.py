"""`spot-jax embed`, `spot-jax retrieve` and `spot-jax transfer`: targeted SPoT from the CLI.

  spot-jax embed --gin_file=models/tiny_byte.gin --gin_file=runs/prompt_train.gin \
      --gin.MODEL_DIR=/tmp/target --gin.MIXTURE_OR_TASK_NAME=synthetic_sentiment_b --out key.npy
  spot-jax retrieve --library lib --run /tmp/target --k 5 --out predictions.csv
  spot-jax retrieve --library lib --run /tmp/target_prompt --run /tmp/target_lora \
      --scorer ensemble:cosine --by_task      # TuPaTE's ensemble: one target run per method
  spot-jax transfer --strategy best_of_top_k --library lib --run /tmp/target --k 3 \
      --out_dir /tmp/transfer --gin_file=models/tiny_byte.gin --gin_file=runs/prompt_train.gin
"""

from __future__ import annotations

import argparse
import os
import sys

from spot_jax import macros
from spot_jax.runs import launchers
from spot_jax.cli.train_cmd import GIN_HELP


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  embed = subparsers.add_parser(
      "embed", help="compute a task's key: tune a prompt for key_step steps",
      description="Trains the target prompt for exactly KEY_STEP steps with the normal trainer "
                  "(MODEL_DIR can later be trained on) and writes that step's prompt. " + GIN_HELP)
  embed.add_argument("--key_step", type=int, default=None,
                     help="steps to tune (default: the config's KEY_STEP)")
  embed.add_argument("--out", required=True, help="the key file to write (.npy [L, embed]; "
                     "other methods than prompts: their task embedding [D])")
  embed.add_argument("--embedding", default=None, choices=("layer_mean", "concat"),
                     help="non-prompt methods: the task-embedding kind (default layer_mean)")
  embed.set_defaults(func=run_embed, accepts_gin=True)

  retrieve = subparsers.add_parser("retrieve", help="rank library prompts for a target's key")
  _add_query_args(retrieve)
  retrieve.add_argument("--k", type=int, default=5, help="entries (tasks with --by_task) shown")
  retrieve.add_argument("--exclude_task", default=None, help="leave this task's entries out")
  retrieve.add_argument("--by_task", action="store_true",
                        help="rank tasks by the average similarity of their entries")
  retrieve.add_argument("--target", default=None,
                        help="target task name for --out (default: the --run's task)")
  retrieve.add_argument("--out", default=None,
                        help="write predictions target,source,score (one row per source task)")
  retrieve.set_defaults(func=run_retrieve, uses_jax=False)

  transfer = subparsers.add_parser(
      "transfer", help="initialise target prompts from retrieved ones and train them",
      description="Retrieves the top-k library prompts (the target's own task excluded) and "
                  "trains the target with a transfer strategy. Gin flags configure the target "
                  "runs like `spot-jax train` (MODEL_DIR and the task are set per run). "
                  + GIN_HELP)
  transfer.add_argument("--strategy", required=True,
                        choices=("best_of_top_k", "weighted_average", "mixture"))
  _add_query_args(transfer)
  transfer.add_argument("--target", required=True, help="the target task")
  transfer.add_argument("--k", type=int, default=3, help="retrieved prompts to transfer from")
  transfer.add_argument("--out_dir", required=True,
                        help="transfer directory: transfer.json, init/, runs/")
  transfer.add_argument("--source_steps", type=int, default=None,
                        help="mixture strategy: steps of the source run (default TRAIN_STEPS)")
  transfer.add_argument("--launcher", default=None,
                        choices=sorted(launchers.LAUNCH_SCRIPTS),
                        help="train through launch/<launcher> instead of in-process")
  transfer.add_argument("--dry_run", action="store_true",
                        help="print the training commands instead of running them")
  transfer.add_argument("--pack", type=int, default=0, metavar="N",
                        help="train up to N of the target runs together in one jitted step "
                             "(best_of_top_k); 1: one at a time; default: the size the model "
                             "and memory allow")
  transfer.set_defaults(func=run_transfer, accepts_gin=True)


def _add_query_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--library", required=True, help="the prompt library directory")
  query = parser.add_mutually_exclusive_group(required=True)
  query.add_argument("--key", help="the target's key, a .npy prompt [L, embed] (or a method's "
                                   "task embedding [D], with --method)")
  query.add_argument("--run", action="append",
                     help="a target run (MODEL_DIR) of any method: its key_step task embedding "
                          "is the key; repeat it (one run per method) for --scorer "
                          "ensemble:METRIC")
  parser.add_argument("--model", default=None,
                      help="frozen model (fingerprint, its prefix, or name); default with --run: "
                           "the run's model")
  parser.add_argument("--method", default=None,
                      help="with --key: the method whose library entries to search (where the "
                           "library holds several)")
  parser.add_argument("--embedding", default=None, choices=("layer_mean", "concat"),
                      help="non-prompt methods: the task-embedding kind (default layer_mean)")
  parser.add_argument("--metric", default="cosine", help="similarity metric (default cosine)")
  parser.add_argument("--scorer", default=None,
                      help="rank with a scorer instead of --metric: a similarity, "
                           "max_pairwise, data_size, random[:SEED], ensemble:METRIC (several "
                           "--run, one per method; ranks tasks) or affinity:HEAD_DIR "
                           "(spot_jax/library/scorers.py)")
  parser.add_argument("--center", action="store_true",
                      help="subtract the library's mean key from keys and query")


def _query(args: argparse.Namespace, library):
  """One Query, or one per --run when several are given (an ensemble)."""
  from spot_jax.app import pipeline
  options = dict(model=args.model, method=args.method, embedding=args.embedding)
  if args.key:
    return pipeline.target_query(library, key_path=args.key, **options)
  queries = [pipeline.target_query(library, run=run, **options) for run in args.run]
  tasks = {q.task for q in queries}
  if len(tasks) > 1:
    raise ValueError(f"The --run targets are different tasks {sorted(tasks)}; give one target's "
                     "runs (one per method)")
  return queries[0] if len(queries) == 1 else queries


def _task(query) -> str | None:
  return query.task if hasattr(query, "task") else query[0].task


def report_problems(library) -> None:
  """Prints the corrupt entries a command skipped, with the repair command, to stderr."""
  for entry_id, why in sorted(library.problems.items()):
    print(f"warning: skipped corrupt entry {entry_id}: {why}", file=sys.stderr)


def _print_ranked(ranked, scorer: str) -> None:
  """One row per ranked entry; the score column says what it is (a similarity or a learned
  scorer's predicted gain)."""
  from spot_jax.library import similarity
  column = "similarity" if scorer in similarity.METRICS else "score"
  rows = [("rank", "id", "task", "seed", column)] + [
      (str(r.rank), r.entry.id, r.entry.task, str(r.entry.seed), f"{r.score:.6f}")
      for r in ranked]
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  for row in rows:
    print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def run_retrieve(args: argparse.Namespace) -> int:
  from spot_jax.app import pipeline
  from spot_jax.library.store import PromptLibrary
  if args.k < 1:
    raise ValueError(f"--k must be at least 1, got {args.k}")
  library = PromptLibrary(args.library)
  query = _query(args, library)
  options = dict(scorer=args.scorer or args.metric, exclude_task=args.exclude_task,
                 center_keys=args.center, by_task=args.by_task, target=args.target)
  _print_ranked(pipeline.rank_sources(library, query, k=args.k, **options), options["scorer"])
  if args.out:
    target = args.target or _task(query)
    if not target:
      raise ValueError("--out needs --target (the target task's name) with --key")
    every = pipeline.rank_sources(library, query, k=None, **options)  # every source, best first.
    count = pipeline.write_predictions(args.out, target, every)
    print(f"Wrote the predictions of {target} ({count} source tasks) to {args.out}")
  report_problems(library)
  return 0


def run_embed(args: argparse.Namespace) -> int:
  from spot_jax.app import pipeline
  path, task = pipeline.embed_target(args.gin_files, args.gin_bindings, args.out, args.key_step,
                                     args.embedding)
  print(f"Wrote the key of {task} to {path}")
  return 0


def run_transfer(args: argparse.Namespace) -> int:
  from spot_jax.runs import in_process
  from spot_jax.app import pipeline
  from spot_jax.library import transfer
  from spot_jax.library.store import PromptLibrary
  from tasks.lookup import get_task_or_mixture
  if args.k < 1:
    raise ValueError(f"--k must be at least 1, got {args.k}")
  library = PromptLibrary(args.library)
  query = _query(args, library)
  if not args.gin_files:
    raise ValueError("transfer needs the target runs' gin config: --gin_file=models/<model>.gin "
                     f"--gin_file=runs/prompt_train.gin [{macros.flag('train_steps', '...')}]")
  get_task_or_mixture(args.target)  # an unknown --target fails here, naming close names.
  if _task(query) is not None and _task(query) != args.target:
    raise ValueError(f"--target {args.target!r} differs from the task of the query run "
                     f"{args.run} ({_task(query)!r}); the key must be the target's: pass "
                     f"--target {_task(query)} or another --run")
  base = in_process.configured_settings(args.gin_files, args.gin_bindings,
                                      ("train_steps", "prompt_length", "method"))
  ranked, result = pipeline.transfer(
      args.strategy, library, query, target=args.target, out_dir=args.out_dir, k=args.k,
      gin_files=args.gin_files, gin_bindings=args.gin_bindings,
      scorer=args.scorer or args.metric,
      center_keys=args.center, source_steps=args.source_steps or base["train_steps"],
      prompt_length=base["prompt_length"], method=base["method"], launcher=args.launcher,
      dry_run=args.dry_run, pack=args.pack)
  for row in result.runs:
    score = "" if row["best_score"] is None else f" {row['eval_metric']} {row['best_score']:.4f}"
    print(f"{row['name']}: {row['status']}{score} ({row['model_dir']})")
  if result.best:
    print(f"Best: {result.best['name']} ({result.best['eval_metric']} "
          f"{result.best['best_score']:.4f}) in {result.best['model_dir']}")
  print(f"Recorded in {os.path.join(result.plan.out_dir, transfer.TRANSFER_JSON)}")
  report_problems(library)
  return 0
