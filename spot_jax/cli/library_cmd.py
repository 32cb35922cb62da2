"""`spot-jax library`: add, list, show, remove and export prompt library entries; task similarity.

  spot-jax library add --library LIB --create --run MODEL_DIR [--key_step N|best]
      [--embedding layer_mean|concat]       # a run of any method (docs/methods.md)
  spot-jax library add --library LIB --npy PROMPT.npy --task T [--model_name base \
      --fingerprint FP] [--key_npy KEY.npy]   # width from the file; model default unknown
  spot-jax library add --library LIB --peft ADAPTER_DIR --task T [--model_name base \
      --fingerprint FP] [--num_virtual_tokens N]
  spot-jax library list --library LIB [--task T] [--model FP]
  spot-jax library similarity --library LIB --metric cosine --out SIM.csv [--plot SIM.png]
      [--per_run]
  spot-jax library check --library LIB [--repair]
"""

from __future__ import annotations

import argparse
import json
import os


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  parser = subparsers.add_parser("library", help="manage a prompt library; task similarity")
  actions = parser.add_subparsers(dest="library_command", metavar="ACTION", required=True)

  def action(name: str, help_text: str, func) -> argparse.ArgumentParser:
    sub = actions.add_parser(name, help=help_text)
    sub.add_argument("--library", required=True, help="the library directory")
    sub.set_defaults(func=func, uses_jax=False)
    return sub

  add = action("add", "add a finished run, a .npy prompt or a PEFT adapter", run_add)
  source = add.add_mutually_exclusive_group(required=True)
  source.add_argument("--run", help="a finished run's MODEL_DIR, any method (value: its best "
                                    "checkpoint; key: its task embedding at the key step)")
  source.add_argument("--npy", help="a T5X prompt-tuning .npy prompt [L, embed]")
  source.add_argument("--peft", help="a PEFT adapter dir or .safetensors file: prompt tuning, "
                                     "LoRA, IA3 or prefix tuning (adapter_config.json says)")
  add.add_argument("--key_step", type=_key_step, default=None,
                   help="with --run: the key's step, or `best` (default: the run's key_step)")
  add.add_argument("--embedding", default=None, choices=("layer_mean", "concat"),
                   help="with --run of a non-prompt method: the task-embedding kind (TuPaTE; "
                        "default layer_mean)")
  add.add_argument("--key_npy", help="with --npy: the key prompt (default: the value itself)")
  add.add_argument("--num_virtual_tokens", type=int, default=None,
                   help="with --peft: prompt length (default: adapter_config.json)")
  add.add_argument("--task", help="with --npy/--peft: the task the prompt was trained on")
  add.add_argument("--model_name", help="with --npy/--peft: frozen model name (e.g. base; "
                                         "default unknown)")
  add.add_argument("--emb_dim", type=int, help="with --npy/--peft: the model's embed dim "
                                               "(default: the prompt's width), checked")
  add.add_argument("--fingerprint", help="with --npy/--peft: the frozen model's fingerprint "
                                         "(`spot-jax model info` prints it; default unknown: "
                                         "comparable only with unknown-model entries of the "
                                         "same width)")
  add.add_argument("--seed", type=int, default=None, help="with --npy/--peft: run seed")
  add.add_argument("--score", type=float, default=None, help="with --npy/--peft: its score")
  add.add_argument("--id", dest="entry_id", default=None, help="entry id (default: derived)")
  add.add_argument("--create", action="store_true", help="create the library if missing")

  listing = action("list", "print a table of entries", run_list)
  listing.add_argument("--task", default=None, help="only this task")
  listing.add_argument("--model", default=None, help="only this model (fingerprint or name)")
  _identity_args(listing)

  show = action("show", "print one entry's metadata as JSON", run_show)
  show.add_argument("entry_id", metavar="ID")

  remove = action("remove", "delete one entry", run_remove)
  remove.add_argument("entry_id", metavar="ID")

  export = action("export", "write entries to FILE.npz or to a new library DIR", run_export)
  export.add_argument("--out", required=True, help="FILE.npz, or a directory for a new library")
  export.add_argument("--task", default=None, help="only this task")
  export.add_argument("--model", default=None, help="only this model (fingerprint or name)")
  _identity_args(export)

  check = action("check", "find corrupt entries and stale temporary directories", run_check)
  check.add_argument("--repair", action="store_true",
                     help="move corrupt entries to LIB/quarantine/, delete stale temporary "
                          "directories and rebuild the index")

  sim = action("similarity", "task-by-task similarity of the keys (CSV, optional heatmap)",
               run_similarity)
  sim.add_argument("--metric", default="cosine", help="cosine, per_token_cosine, euclidean, "
                   "manhattan, per_token_euclidean or per_token_manhattan")
  sim.add_argument("--center", action="store_true", help="subtract the library's mean key")
  sim.add_argument("--model", default=None,
                   help="the frozen model (fingerprint or name); needed when several")
  _identity_args(sim)
  sim.add_argument("--per_run", action="store_true",
                   help="one row per entry, labelled <task>@<seed> (SPoT Figure 7; `spot-jax "
                        "study analyze --similarity` then plots one point per source prompt)")
  sim.add_argument("--out", required=True, help="the CSV file to write")
  sim.add_argument("--plot", default=None, help="also save a clustered heatmap PNG here")


def _key_step(text: str) -> int | str:
  return text if text == "best" else int(text)


def _identity_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--method", default=None,
                      help="with --model: the method's entries (where the library holds several)")
  parser.add_argument("--embedding", default=None,
                      help="with --model: the embedding kind (prompt, layer_mean, concat)")


def _open(args: argparse.Namespace, create: bool = False):
  from spot_jax.library.store import PromptLibrary
  return PromptLibrary(args.library, create=create)


def _report(library) -> None:
  from spot_jax.cli.retrieve_cmd import report_problems
  report_problems(library)


def _model(library, spec: str | None, args: argparse.Namespace | None = None):
  if spec is None:
    return None
  return library.resolve_model(spec, method=getattr(args, "method", None),
                               embedding=getattr(args, "embedding", None))


def run_add(args: argparse.Namespace) -> int:
  from spot_jax.library.identity import UNKNOWN_MODEL
  from spot_jax.library.store import LIBRARY_JSON
  new_dir = not os.path.exists(args.library)
  new_library = args.create and not os.path.exists(os.path.join(args.library, LIBRARY_JSON))
  library = _open(args, create=args.create)
  try:
    entry = _add(library, args)
  except BaseException:
    if new_library:  # a failed first add leaves no empty library behind.
      library.discard_if_empty(remove_root=new_dir)
    raise
  what = (f"{entry.prompt_length} tokens" if entry.model.is_prompt
          else f"{entry.model.method}, {entry.model.embedding} key [{entry.model.key_dim}]")
  print(f"Added {entry.id} ({entry.task}, {what}, model "
        f"{entry.model.name} {entry.model.fingerprint}) to {library.root}")
  if not entry.model.is_known:
    print(f"note: the frozen model is {UNKNOWN_MODEL}: this entry is compared only with "
          f"entries of an {UNKNOWN_MODEL} model and width {entry.model.emb_dim}; pass "
          "--model_name and --fingerprint (`spot-jax model info` prints it) to compare it with "
          "the entries of a known model")
  return 0


def _add(library, args: argparse.Namespace):
  from spot_jax.library.store import ModelIdentity
  if args.run:
    return library.add_run_dir(args.run, key_step=args.key_step, entry_id=args.entry_id,
                               embedding=args.embedding)
  if args.task is None:
    raise ValueError("--npy and --peft need --task (the task the prompt was trained on)")
  # The width comes from the file; a model nobody recorded is "unknown" (ModelIdentity.outside).
  model = ModelIdentity.outside(args.model_name, args.fingerprint, args.emb_dim)
  meta = dict(task=args.task, model=model, seed=args.seed, score=args.score,
              entry_id=args.entry_id)
  if args.npy:
    return library.add_npy(args.npy, key_path=args.key_npy, **meta)
  return library.add_peft(args.peft, num_virtual_tokens=args.num_virtual_tokens, **meta)


def _cell(value) -> str:
  if value is None:
    return "-"
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_list(args: argparse.Namespace) -> int:
  library = _open(args)
  entries = library.entries(model=_model(library, args.model, args), task=args.task)
  rows = [("id", "task", "seed", "model", "method", "L", "key step", "value step", "score")]
  rows += [(e.id, e.task, _cell(e.seed), f"{e.model.name}:{e.model.fingerprint}",
            e.model.method if e.model.is_prompt else f"{e.model.method}/{e.model.embedding}",
            str(e.prompt_length), _cell(e.key_step), _cell(e.value_step), _cell(e.score))
           for e in entries]
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  for row in rows:
    print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
  _report(library)
  return 0


def run_check(args: argparse.Namespace) -> int:
  library = _open(args)
  problems = library.check(repair=args.repair)
  for what, why in sorted(problems.items()):
    print(f"{what}: {why}")
  if not problems:
    print(f"{library.root}: {len(library.ids())} entries, no problems")
    return 0
  if args.repair:
    print(f"Repaired {len(problems)} problems; the index is rebuilt")
    return 0
  print(f"{len(problems)} problems; run `spot-jax library check --library {library.root} "
        "--repair` to quarantine corrupt entries and delete stale temporary directories")
  return 1


def run_show(args: argparse.Namespace) -> int:
  print(json.dumps(_open(args).get(args.entry_id).to_dict(), indent=2, sort_keys=True))
  return 0


def run_remove(args: argparse.Namespace) -> int:
  library = _open(args)
  library.remove(args.entry_id)
  print(f"Removed {args.entry_id} from {library.root}")
  return 0


def run_export(args: argparse.Namespace) -> int:
  library = _open(args)
  entries = library.entries(model=_model(library, args.model, args), task=args.task)
  library.export(args.out, entries=entries)
  print(f"Exported {len(entries)} entries to {os.path.abspath(args.out)}")
  _report(library)
  return 0


def run_similarity(args: argparse.Namespace) -> int:
  from spot_jax.app import pipeline
  library = _open(args)
  tasks, _ = pipeline.task_similarity(library, args.metric, args.out, center_keys=args.center,
                                      model=_model(library, args.model, args), plot=args.plot,
                                      per_run=args.per_run)
  print(f"Wrote the {len(tasks)}x{len(tasks)} {args.metric} "
        f"{'run' if args.per_run else 'task'} similarity to {args.out}")
  if args.plot:
    print(f"Wrote the clustered heatmap to {args.plot}")
  _report(library)
  return 0
