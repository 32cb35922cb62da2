"""Greedy decoding throughput: our KV-cache decoder vs our uncached decoder vs Hugging Face
`generate`, on the same random T5 1.1 shapes, side by side in one run.

  python -m benchmarks.decode                          # tiny and small, inputs 128, 16 tokens
  python -m benchmarks.decode --models small --input_length 512 --decode_length 32 --rounds 3

Every side decodes exactly `--decode_length` tokens per example (no early stop at EOS, so the
work is equal): ours with an EOS id that never occurs, Hugging Face with
`min_new_tokens = max_new_tokens`, greedy (`num_beams=1, do_sample=False`), with its cache.
Weights are random (T5 1.1 shapes, 32128 ids, float32); the prompt is 100 positions
prepended to every input (ours) or 100 more input tokens (Hugging Face), the same encoder
length. Times are medians over alternating rounds after a warm-up call (compilation on our
side). Hugging Face needs the `bench` extra (torch, transformers); without it that column is
skipped with the reason printed. The machine may be shared: each row gives the 1-minute load
average before and after it, and the ratios (measured side by side, alternating) are what
compares. Writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

from spot_jax import runtime

if __name__ == "__main__":
  runtime.configure_host()  # jemalloc and synchronous CPU dispatch, as `spot-jax` runs.

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from spot_jax.evaluation import scoring  # noqa: E402
from spot_jax.models import T5, get_config  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NEVER = -1  # an EOS id no token equals: every row decodes the full length.


def ours(model_name: str, batch: int, input_length: int, prompt_length: int, length: int):
  """(cached, uncached) decode callables on one random model and batch, and their outputs."""
  model = T5(get_config(model_name, dropout_rate=0.0), prompt_length)
  tokens = jnp.ones((1, 4), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, tokens)["params"]
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.integers(2, 32000, (batch, input_length)), jnp.int32)
  cached = lambda: scoring.greedy_decode(model, params, inputs, length, NEVER)
  uncached = lambda: scoring.greedy_decode_uncached(model, params, inputs, length, NEVER)
  return cached, uncached


def hugging_face(model_name: str, batch: int, encoder_length: int, length: int):
  """A `generate` callable on a random HF T5 of the same shape, or the reason it cannot run."""
  try:
    import torch
    import transformers
  except ImportError as e:
    return None, f"Hugging Face skipped: {e.name} is not installed (pip install -e '.[bench]')"
  cfg = get_config(model_name)
  hf_config = transformers.T5Config(
      vocab_size=cfg.vocab_size, d_model=cfg.emb_dim, d_kv=cfg.head_dim, d_ff=cfg.mlp_dim,
      num_layers=cfg.num_encoder_layers, num_decoder_layers=cfg.num_decoder_layers,
      num_heads=cfg.num_heads, relative_attention_num_buckets=cfg.relative_attention_num_buckets,
      relative_attention_max_distance=cfg.relative_attention_max_distance, dropout_rate=0.0,
      feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
      pad_token_id=0, eos_token_id=1)
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration(hf_config).eval()
  inputs = torch.from_numpy(np.random.default_rng(0).integers(2, 32000, (batch, encoder_length)))

  def generate():
    with torch.inference_mode():
      return model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                            max_new_tokens=length, min_new_tokens=length, do_sample=False,
                            num_beams=1, use_cache=True)

  return generate, f"torch {torch.__version__}, transformers {transformers.__version__}, " \
                   f"{torch.get_num_threads()} threads"


def timed(fn, sync) -> float:
  start = time.perf_counter()
  sync(fn())
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="tiny,small")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--input_length", type=int, default=128)
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--decode_length", type=int, default=16)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
  args = parser.parse_args()
  batch, length = args.batch_size, args.decode_length
  rows, notes = [], []
  for name in args.models.split(","):
    load_before = os.getloadavg()[0]
    cached, uncached = ours(name, batch, args.input_length, args.prompt_length, length)
    np.testing.assert_array_equal(np.asarray(cached()), np.asarray(uncached()))  # + warm-up
    hf, note = hugging_face(name, batch, args.input_length + args.prompt_length, length)
    if note not in notes:
      notes.append(note)
    sides = {"cached": (cached, jax.block_until_ready),
             "uncached": (uncached, jax.block_until_ready)}
    if hf is not None:
      hf()  # warm-up
      sides["hf"] = (hf, lambda x: x)
    times = {side: [] for side in sides}
    for _ in range(args.rounds):
      for side, (fn, sync) in sides.items():
        times[side].append(timed(fn, sync))
    speed = {side: batch / statistics.median(t) for side, t in times.items()}
    row = {"model": name, **speed, "load": (load_before, os.getloadavg()[0])}
    rows.append(row)
    print(f"{name}: " + ", ".join(f"{s} {v:.1f} examples/s" for s, v in speed.items()),
          flush=True)
  for note in notes:
    print(note)
  command = "python -m benchmarks.decode " + shlex.join(sys.argv[1:])
  lines = [f"Command: `{command}` on {platform.machine()} ({os.cpu_count()} CPUs, "
           f"{jax.devices()[0].device_kind}); batch {batch}, inputs {args.input_length} + prompt "
           f"{args.prompt_length}, {length} decoded tokens per example (no early stop), "
           f"random T5 1.1 weights, float32, median of {args.rounds} alternating rounds; "
           "shared machine: 1-minute load average before and after each row; "
           f"{time.strftime('%Y-%m-%d')}.", "",
           "| model | KV cache (ours) examples/s | uncached (ours) | HF generate | "
           "cache vs uncached | cache vs HF | load |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    hf = f"{r['hf']:.1f}" if "hf" in r else "-"
    vs_hf = f"{r['cached'] / r['hf']:.2f}x" if "hf" in r else "-"
    lines.append(f"| {r['model']} | {r['cached']:.1f} | {r['uncached']:.1f} | {hf} | "
                 f"{r['cached'] / r['uncached']:.2f}x | {vs_hf} | "
                 f"{r['load'][0]:.1f} -> {r['load'][1]:.1f} |")
  lines += ["", *notes]
  table = "\n".join(lines) + "\n"
  print(table)
  from benchmarks.results_md import update_section
  update_section(args.results, "decode", "## Greedy decoding: KV cache vs uncached vs "
                 "Hugging Face generate\n\n" + table)


if __name__ == "__main__":
  main()
