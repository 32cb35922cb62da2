"""What the demo's frozen model learns of the synthetic world, tokenised by bytes or by words.

Pretrains `tiny_byte` on `synthetic_pretraining` (the demo's world before it was tokenised by
words: 1500 steps, inputs/targets 96/64 bytes) and `tiny_words` on
`synthetic_words_pretraining` (gin_configs/demo.gin: 1500 steps, 32/16 words), side by side in
one run, then scores each frozen model by rank classification over each task's labels on 200
validation examples: with no cue, with the task's own `name:` cue (what pretraining taught),
and, for the held-out targets, with their source sibling's cue (what a transferred prompt can
reach). A prompt can only select what the frozen model can do, so these bound what the demo's
prompts can show.

  python -m benchmarks.world_vocabulary [--steps 1500] [--work_dir DIR]

Writes the `world_vocabulary` section of benchmarks/RESULTS.md. Pretrained models are cached
in --work_dir by everything that determines them (a rerun with the same settings reuses them
and reports no pretraining time).
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks import results_md

# (source, held-out sibling target) of the families the demo uses.
FAMILIES = (("sentiment_a", "sentiment_b"), ("topic_4way", "topic_2way"),
            ("nli_facts", "nli_facts_hard"), ("paraphrase_a", "paraphrase_b"))
WORLDS = {
    "bytes": dict(model="tiny_byte", task="synthetic_pretraining",
                  lengths={"inputs": 96, "targets": 64}, eval_length=128),
    "words": dict(model="tiny_words", task="synthetic_words_pretraining",
                  lengths={"inputs": 32, "targets": 16}, eval_length=40),
}


def vocabulary(world: str):
  from tasks.vocabulary import get_byte_vocabulary, get_synthetic_word_vocabulary
  return get_byte_vocabulary() if world == "bytes" else get_synthetic_word_vocabulary(0)


def tokens(vocab, texts, length: int) -> np.ndarray:
  """[n, length]: each text's ids + EOS, right-padded with 0 (truncated to length)."""
  out = np.zeros((len(texts), length), np.int32)
  for i, text in enumerate(texts):
    ids = list(vocab.encode(text))[:length - 1] + [1]
    out[i, :len(ids)] = ids
  return out


def accuracy(model, params, vocab, examples, labels, cue: str, length: int) -> float:
  """Rank-classification accuracy (%) of the frozen model on `examples` behind `cue`."""
  import jax.numpy as jnp

  from spot_jax.evaluation.scoring import rank_classify
  label_length = 1 + max(len(vocab.encode(label)) for label in labels)  # + EOS, never cut.
  candidates = jnp.asarray(tokens(vocab, labels, label_length))
  gold = np.array([labels.index(e["targets"]) for e in examples])
  inputs = jnp.asarray(tokens(vocab, [cue + e["inputs"] for e in examples], length))
  predicted = np.asarray(rank_classify(model, params, inputs, candidates))
  return 100.0 * float((predicted == gold).mean())


def measure(world: str, steps: int, work_dir: str, num_examples: int) -> dict:
  from spot_jax.checkpoints import t5x
  from spot_jax.models.config import get_config
  from spot_jax.models.t5 import T5
  from spot_jax.train.pretrain import PretrainConfig, checkpoint_path, pretrain
  from tasks import synthetic_world
  setting = WORLDS[world]
  cfg = PretrainConfig(output_dir=os.path.join(work_dir, world), task=setting["task"],
                       model=setting["model"], train_steps=steps,
                       warmup_steps=min(100, steps // 2),
                       feature_lengths=setting["lengths"], log_period=max(steps // 10, 1))
  cached = os.path.exists(checkpoint_path(cfg))
  start = time.perf_counter()
  path = pretrain(cfg, log=lambda line: None)
  seconds = None if cached else time.perf_counter() - start
  model = T5(get_config(setting["model"]))
  params = t5x.read_checkpoint(path)
  vocab = vocabulary(world)
  data = synthetic_world.generate_world(0)
  rows = []
  for source, target in FAMILIES:
    for task, cue_task in ((source, source), (target, source)):
      spec = data.task(task)
      examples = spec.generate("validation")[:num_examples]
      labels = list(spec.labels)
      score = lambda cue: accuracy(model, params, vocab, examples, labels, cue,  # noqa: E731
                                   setting["eval_length"])
      rows.append(dict(task=task, cue=cue_task, chance=100.0 / len(labels),
                       no_cue=score(""), with_cue=score(f"{cue_task}: ")))
  return dict(world=world, model=setting["model"], pretrain_task=setting["task"],
              lengths=setting["lengths"], seconds=seconds, rows=rows)


def section(results: list[dict], steps: int, num_examples: int, command: str) -> str:
  by_world = {r["world"]: r for r in results}
  load = os.getloadavg()[0]
  lines = [
      "## The synthetic world by bytes and by words: what the frozen model learns",
      "",
      f"Command: `{command}` ({os.cpu_count()} cores, load average {load:.1f} at the end, "
      f"{datetime.date.today()}). Each world's tiny model is pretrained {steps} steps (batch 32) "
      "and frozen; cells are rank-classification accuracy (%) on "
      f"{num_examples} validation examples, with no cue and with the `name:` cue of the task "
      "named (a target behind its source's cue: what a transferred prompt can select).",
      "",
      "| task | cue | chance | " + " | ".join(
          f"{w}: no cue | {w}: cue" for w in by_world) + " |",
      "|---|---|---|" + "---|---|" * len(by_world),
  ]
  first = results[0]["rows"]
  for i, row in enumerate(first):
    cells = [f"{by_world[w]['rows'][i]['no_cue']:.1f} | {by_world[w]['rows'][i]['with_cue']:.1f}"
             for w in by_world]
    lines.append(f"| {row['task']} | {row['cue']} | {row['chance']:.0f} | "
                 + " | ".join(cells) + " |")
  lines.append("")
  for r in results:
    took = "cached (not timed)" if r["seconds"] is None else f"{r['seconds']:.0f} s"
    lines.append(f"- {r['world']}: `{r['model']}` on `{r['pretrain_task']}`, feature lengths "
                 f"{r['lengths']}, pretraining {took}.")
  return "\n".join(lines) + "\n"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--num_examples", type=int, default=200)
  parser.add_argument("--work_dir", default="/tmp/spot_jax_world_vocabulary")
  parser.add_argument("--worlds", default="bytes,words")
  parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "RESULTS.md"))
  args = parser.parse_args(argv)
  from tasks.lookup import register_all_tasks
  register_all_tasks()
  results = [measure(w, args.steps, args.work_dir, args.num_examples)
             for w in args.worlds.split(",")]
  command = "python -m benchmarks.world_vocabulary" + (
      f" --steps {args.steps}" if args.steps != 1500 else "")
  body = section(results, args.steps, args.num_examples, command)
  print(body)
  results_md.update_section(args.results, "world_vocabulary", body)


if __name__ == "__main__":
  main()
