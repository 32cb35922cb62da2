"""Affinity head cost on CPU: training time for M = 400 pairs and scoring throughput over a
10K-entry pool, tiny and base shapes, side by side with the similarity scorers.

  python -m benchmarks.affinity                 # writes its section of benchmarks/RESULTS.md
  python -m benchmarks.affinity --quick         # fewer timed steps (a smoke run)
  python -m benchmarks.affinity --configs "light, tiny shapes" "encoder, tiny model"

Keys are synthetic prompts (N(0, 1) * 50, the scale of trained prompts), 44 tasks with one key
each as in the paper, M = 400 sampled pairs. Per configuration: the compile time of the train
step, the median time of a step after it, and the training time of the configured number of
steps = compile + steps x median step (projected from the timed steps: the base encoder is
timed for one step only; its backbone is randomly initialised, same cost). Scoring:
entries per second of `scorer.score(target, pool)` after a warm-up call on the same pool (which
compiles its batch shapes); the base encoder head is timed on fewer entries (given) and its rate
is per entry, the same at 10K.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.results_md import update_section
from spot_jax.affinity import data, train  # noqa: E402
from spot_jax.affinity.predict import AffinityHead, HeadScorer  # noqa: E402
from spot_jax.library import scorers  # noqa: E402

SHAPES = {"tiny": (64, 20), "base": (768, 100)}  # (emb_dim, prompt_length)
CONFIGS = {  # name -> (variant, shape, model, train_steps, timed steps, scored entries)
    "light, tiny shapes": ("light", "tiny", None, 1500, 50, 10_000),
    "light, base shapes": ("light", "base", None, 1500, 20, 10_000),
    "encoder, tiny model": ("encoder", "tiny", "tiny", 2000, 20, 10_000),
    "encoder, base model": ("encoder", "base", "base", 2000, 1, 64),
}


def pool(shape: str, n_tasks: int = 44, seed: int = 0):
  emb, length = SHAPES[shape]
  rng = np.random.default_rng(seed)
  tasks = [f"t{i}" for i in range(n_tasks)]
  keys = {t: (50 * rng.normal(size=(1, length, emb))).astype(np.float32) for t in tasks}
  gains = {(s, t): float(rng.normal()) for s in tasks for t in tasks if s != t}
  return tasks, keys, gains


def time_training(name: str, timed_steps: int) -> dict:
  variant, shape, model, steps, _, _ = CONFIGS[name]
  cfg = train.AffinityConfig(variant=variant, model=model or "base", hidden_dim=64 if
                             variant == "light" else 256, train_steps=steps,
                             batch_size=32 if variant == "light" else 16)
  _, keys, gains = pool(shape)
  bank = data.KeyBank.build(keys)
  split = data.make_split(gains, ["t0"], 400, 0)
  examples = bank.examples(split.train, gains)
  backbone = train.load_backbone(cfg)
  head, trainable, frozen = train.initial_params(cfg, backbone, (bank.keys.shape[1],) * 2,
                                                 bank.keys.shape[2])
  optimizer = train.make_optimizer(cfg)
  state = train.HeadState(step=np.zeros((), np.int32), params=trainable,
                          opt_state=optimizer.init(trainable), best_score=np.float32(-np.inf),
                          best_step=np.zeros((), np.int32),
                          evals_since_best=np.zeros((), np.int32))
  step = train.make_step(head, optimizer, cfg.beta)
  times = []
  for i in range(timed_steps + 1):
    rows = train.batch_indices(len(examples), cfg.batch_size, 0, i + 1)
    start = time.perf_counter()
    state, loss = step(state, frozen, bank.keys[examples.t[rows]] * 0.02,
                       bank.keys[examples.s[rows]] * 0.02, examples.y[rows])
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - start)
  median = float(np.median(times[1:]))
  head_record = {"config": {**cfg.__dict__}, "prompt_length": bank.keys.shape[1],
                 "emb_dim": bank.keys.shape[2], "input_scale": 0.02, "label_mean": 0.0,
                 "label_std": 1.0}
  scorer = HeadScorer([AffinityHead("bench", head_record, state.params, frozen,
                                    train.make_score(head))], "affinity")
  return {"compile_s": times[0], "step_s": median, "steps": steps,
          "train_s": times[0] + steps * median, "scorer": scorer, "keys": keys}


def time_scoring(scorer, keys: dict, entries: int) -> float:
  """Entries per second of scorer.score over `entries` pool keys (after a warm-up call)."""
  target = next(iter(keys.values()))[0]
  rng = np.random.default_rng(1)
  pool_keys = (50 * rng.normal(size=(entries,) + target.shape)).astype(np.float32)
  scorer.score(target, pool_keys)  # warm-up: compiles every batch shape the pool needs.
  start = time.perf_counter()
  scorer.score(target, pool_keys)
  return entries / (time.perf_counter() - start)


def _rate(rate: float) -> str:
  return f"{rate:,.0f}" if rate >= 10 else f"{rate:.3g}"


def _reading(results: dict) -> str:
  """What the measured rows say about where each head belongs (from this run's numbers)."""
  lines = []
  light = [n for n in results if n.startswith("light")]
  if light:
    lines.append("Light head: " + "; ".join(
        f"{n}: trains M = 400 in {results[n]['train_s']:.0f} s, scores "
        f"{_rate(results[n]['rate'])} entries/s" for n in light) + ".")
  base = results.get("encoder, base model")
  if base:
    lines.append(f"The base encoder head (fine-tuned T5 base encoder over 201 positions) takes "
                 f"{base['step_s']:.0f} s per step of batch 16 here, so {base['steps']} steps "
                 f"are ~{base['train_s'] / 3600:.0f} h: not a CPU workload; use the light head "
                 "on CPU and the encoder head on an accelerator.")
  return ("\n" + "\n".join(lines) + "\n") if lines else ""


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                      help="head configurations to time (default all)")
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
  args = parser.parse_args()
  rows, results = [], {}
  load = os.getloadavg()[0]
  for name in args.configs:
    _, _, _, _, timed, entries = CONFIGS[name]
    result = time_training(name, 2 if args.quick else timed)
    rate = time_scoring(result["scorer"], result["keys"], min(entries, 1000) if args.quick
                        else entries)
    results[name] = {**result, "rate": rate}
    rows.append((name, f"{result['compile_s']:.2f}", f"{result['step_s'] * 1e3:.1f}",
                 f"{result['steps']}", f"{result['train_s']:.0f}", _rate(rate),
                 f"{min(entries, 1000) if args.quick else entries}"))
    print(rows[-1], flush=True)
  for shape in SHAPES:
    _, keys, _ = pool(shape)
    for name in ("cosine", "per_token_euclidean", "max_pairwise"):
      rate = time_scoring(scorers.get_scorer(name), keys, 1000 if args.quick else 10_000)
      rows.append((f"{name}, {shape} shapes", "-", "-", "-", "-", _rate(rate),
                   "1000" if args.quick else "10000"))
      print(rows[-1], flush=True)
  header = ("scorer", "compile (s)", "step (ms)", "steps", "train M=400 (s)",
            "scoring (entries/s)", "pool entries timed")
  table = [header, tuple("---" for _ in header)] + rows
  body = "\n".join("| " + " | ".join(r) + " |" for r in table)
  cpus = len(os.sched_getaffinity(0))
  command = "python -m benchmarks.affinity" + (
      " --configs " + " ".join(f'"{c}"' for c in args.configs)
      if args.configs != list(CONFIGS) else "")
  text = (f"## Affinity head (benchmarks/affinity.py)\n\nCommand: `{command}`; "
          f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {cpus} "
          f"CPU cores visible (shared with other work; load average {load:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end), jax {jax.__version__}. "
          "M = 400 pairs of 44 synthetic tasks; "
          "light = MLP over pooled features, encoder = T5 encoder over [P_t; sep; P_s] + MLP "
          "(base: random-initialised base encoder, batch 16, prompt length 100; its training "
          "time is projected from 1 timed step). Scoring: `score(target, pool)` over the "
          "pool entries timed.\n\n" + body + "\n" + _reading(results))
  if not args.quick:
    update_section(args.results, "affinity", text)
  print(text)


if __name__ == "__main__":
  main()
