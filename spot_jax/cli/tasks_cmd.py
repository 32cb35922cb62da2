"""`spot-jax tasks list`: the registered task names with source, splits, metrics and size.

The source column says where a task reads its data: `tfds:<name>`, `hf:<dataset id>[/<config>]`
(Hugging Face, read offline) or `file:<task>/<split>.jsonl`.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
  parser = subparsers.add_parser("tasks", help="list registered tasks and mixtures")
  tasks_sub = parser.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)
  listing = tasks_sub.add_parser("list", help="print tasks (or one group, or the mixtures)")
  listing.add_argument("--group", default=None,
                       help="only this group (spot_sources, spot_targets, glue, superglue, "
                            "nli, ..., affinity_pool, affinity_targets, tupate_cr, tupate_qa, "
                            "synthetic)")
  listing.add_argument("--taskless", action="store_true",
                       help="list the taskless variants (inputs without the benchmark word)")
  listing.add_argument("--mixtures", action="store_true", help="list mixtures instead")
  listing.set_defaults(func=run_list, uses_jax=False)


def task_rows(group: str | None, taskless: bool) -> list[tuple[str, str, str, str, str]]:
  """(name, source, splits, metrics, train size) per task, from the task metadata alone
  (`tasks.registry`, `tasks.synthetic_world`: no seqio, no TensorFlow)."""
  from tasks import registry, synthetic_world
  rows = []
  if group in (None, "synthetic"):
    for info in synthetic_world.TASKS:
      rows.append((synthetic_world.DEFAULT_PREFIX + info.name, "synthetic", ",".join(info.sizes),
                   ",".join(info.metric_names), str(info.sizes["train"])))
  if group != "synthetic":
    for name in registry.list_tasks(group, taskless=taskless):
      info = registry.get_info(registry.base_name(name))
      size = registry.train_size(info.name)
      rows.append((name, info.source, ",".join(info.splits), ",".join(info.metrics),
                   "?" if size is None else str(size)))
  return rows


def run_list(args: argparse.Namespace) -> int:
  from tasks import registry
  if args.mixtures:
    for name in registry.list_mixtures(taskless=args.taskless or None):
      print(name)
    return 0
  if args.group not in (None, "synthetic") and args.group not in registry.group_names():
    raise ValueError(f"Unknown group {args.group!r}; groups: "
                     f"{sorted(registry.group_names()) + ['synthetic']}")
  rows = [("task", "source", "splits", "metrics", "train size")]
  rows += task_rows(args.group, args.taskless)
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  for row in rows:
    print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
  return 0
