"""Writes tests/golden/beam_search_golden.npz: T5X's beam search, computed by a NumPy
re-implementation of the algorithm of `t5x.decoding.beam_search` (t5x cannot be installed
here), for `tests/test_scoring.py::test_beam_search_matches_t5x_golden`.

  python scripts/generate/make_beam_golden.py        (from the repository root, CPU is enough)

The NumPy search below follows t5x/decoding.py step by step but shares no code with
`spot_jax.evaluation.scoring.beam_search`: no cache (every step scores the whole prefix),
NumPy's stable sorts for `lax.top_k`, explicit loops. Two cases:

* `markov_*`: a hand-made decoder (vocabulary 8, EOS 1) whose logits depend on the row, the
  last token and the sum of the embeddings of every earlier token, so a beam's history (the
  cache, in the JAX version) matters. The seed is the first one for which beam search with 1
  beam returns a different sequence than greedy decoding for some row (length normalisation
  picks another finished sequence, or the best live one avoids an early EOS).
* `model_*`: the tiny T5 of tests/test_scoring.py (`get_config("tiny", vocab_size=64, ...)`,
  PRNGKey(0)), its output kernel's EOS column raised so that sequences end; the parameters are
  stored (`param/<path>`) so the golden does not depend on initialisation. Logits come from the
  model's full (uncached) decoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "golden" / "beam_search_golden.npz"

NEG_INF = -1.0e7  # t5x/decoding.py
EOS = 1
ALPHA = 0.6
MARKOV_VOCAB, MARKOV_ROWS, MARKOV_LENGTH = 8, 6, 7
MODEL_LENGTH = 6
KERNEL_SCALE, EOS_SCALE = 3.0, 1.6
EOS_LIKE = (26, 31, 41, 18)  # tokens the unmodified kernel often picks: EOS leans their way.


def log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def top_k(x: np.ndarray, k: int) -> np.ndarray:
  """Indices of the k largest of each row, largest first, ties to the lower index (lax.top_k)."""
  return np.argsort(-x, axis=-1, kind="stable")[..., :k]


def penalty(length) -> np.ndarray:
  return ((5.0 + np.asarray(length, np.float64)) / 6.0) ** ALPHA


def reference_beam_search(prefix_logits, batch: int, max_length: int, beams: int):
  """(sequences [batch, beams, max_length], scores [batch, beams]), best beam last.

  `prefix_logits(row, tokens)`: next-token logits after the start token 0 and `tokens`."""
  length = max_length + 1
  live = np.zeros((batch, beams, length), np.int64)
  live_logp = np.tile(np.array([0.0] + [NEG_INF] * (beams - 1)), (batch, 1))
  fin = np.zeros((batch, beams, length), np.int64)
  fin_scores = np.full((batch, beams), NEG_INF)
  fin_flags = np.zeros((batch, beams), bool)
  i = 0
  while True:
    # Loop condition (beam_search_loop_cond_fn).
    longest = penalty(length)
    best_live = live_logp[:, -1:] / longest
    worst_fin = np.where(fin_flags, fin_scores.min(1, keepdims=True), NEG_INF)
    if not (i < length - 1) or np.all(worst_fin > best_live):
      break
    if i > 0 and np.all(best_live < NEG_INF / longest):
      break
    # Loop body (beam_search_loop_body_fn).
    new_live, new_logp = np.zeros_like(live), np.zeros_like(live_logp)
    new_fin, new_fin_scores = np.zeros_like(fin), np.zeros_like(fin_scores)
    new_flags = np.zeros_like(fin_flags)
    for b in range(batch):
      logp = np.stack([log_softmax(prefix_logits(b, live[b, k, 1:i + 1]))
                       for k in range(beams)]) + live_logp[b][:, None]
      vocab = logp.shape[-1]
      flat = logp.reshape(-1)
      chosen = top_k(flat, 2 * beams)
      cand_logp = flat[chosen]
      cand_tok, cand_parent = chosen % vocab, chosen // vocab
      cand_seq = live[b, cand_parent].copy()
      cand_seq[:, i + 1] = cand_tok
      ended = cand_tok == EOS
      alive_logp = cand_logp + ended * NEG_INF
      keep = top_k(alive_logp, beams)[::-1]
      new_live[b], new_logp[b] = cand_seq[keep], alive_logp[keep]
      scores = cand_logp / penalty(i + 1) + (~ended) * NEG_INF
      all_seq = np.concatenate([fin[b], cand_seq])
      all_scores = np.concatenate([fin_scores[b], scores])
      all_flags = np.concatenate([fin_flags[b], ended])
      best = top_k(all_scores, beams)[::-1]
      new_fin[b], new_fin_scores[b], new_flags[b] = all_seq[best], all_scores[best], all_flags[best]
    live, live_logp, fin, fin_scores, fin_flags = new_live, new_logp, new_fin, new_fin_scores, new_flags
    i += 1
  any_fin = fin_flags.any(1)
  seqs = np.where(any_fin[:, None, None], fin, live)
  scores = np.where(any_fin[:, None], fin_scores, live_logp)
  return seqs[:, :, 1:], scores


def reference_greedy(prefix_logits, batch: int, max_length: int) -> np.ndarray:
  out = np.zeros((batch, max_length), np.int64)
  for b in range(batch):
    for i in range(max_length):
      out[b, i] = int(np.argmax(prefix_logits(b, out[b, :i])))
      if out[b, i] == EOS:
        break
  return out


def markov_case(seed: int):
  rng = np.random.default_rng(seed)
  tables = {"row_bias": rng.normal(size=(MARKOV_ROWS, MARKOV_VOCAB)),
            "last": rng.normal(size=(MARKOV_VOCAB, MARKOV_VOCAB)),
            "history": 0.5 * rng.normal(size=(MARKOV_VOCAB, MARKOV_VOCAB))}
  tables = {k: v.astype(np.float32).astype(np.float64) for k, v in tables.items()}

  def prefix_logits(row, tokens):
    inputs = np.concatenate([[0], tokens]).astype(np.int64)  # start token 0, then the prefix.
    return (tables["row_bias"][row] + tables["last"][inputs[-1]]
            + tables["history"][inputs].sum(0))
  return tables, prefix_logits


def main() -> None:
  golden = {}
  for seed in range(1000):
    tables, logits_fn = markov_case(seed)
    seqs1, scores1 = reference_beam_search(logits_fn, MARKOV_ROWS, MARKOV_LENGTH, 1)
    greedy = reference_greedy(logits_fn, MARKOV_ROWS, MARKOV_LENGTH)
    if np.any(seqs1[:, -1] != greedy):
      break
  else:
    raise SystemExit("no seed makes beam search differ from greedy decoding")
  seqs3, scores3 = reference_beam_search(logits_fn, MARKOV_ROWS, MARKOV_LENGTH, 3)
  golden.update({f"markov_{k}": v for k, v in tables.items()})
  golden.update(markov_seed=seed, markov_greedy=greedy, markov_beam1_seqs=seqs1,
                markov_beam1_scores=scores1, markov_beam3_seqs=seqs3, markov_beam3_scores=scores3)
  print(f"markov seed {seed}: rows where 1-beam search differs from greedy: "
        f"{np.flatnonzero(np.any(seqs1[:, -1] != greedy, axis=1)).tolist()}")

  import jax
  import jax.numpy as jnp
  from flax import traverse_util

  from spot_jax.models import T5, get_config
  config = get_config("tiny", vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32)
  model = T5(config, 0)
  tokens = jnp.ones((1, 4), jnp.int32)
  params = jax.device_get(model.init(jax.random.PRNGKey(0), tokens, tokens)["params"])
  # A random output kernel large enough that the decoder's state (encoder input, history)
  # changes the argmax, and an EOS column that sometimes wins.
  kernel = np.random.default_rng(1).normal(size=(config.emb_dim, config.vocab_size)) * KERNEL_SCALE
  kernel[:, EOS] = EOS_SCALE * kernel[:, list(EOS_LIKE)].mean(1)
  params["decoder"]["logits_dense"]["kernel"] = kernel
  encoder_tokens = np.random.default_rng(0).integers(2, 64, (4, 9)).astype(np.int32)
  encoder_tokens[2, 6:] = 0
  apply = jax.jit(lambda p, e, d: model.apply({"params": p}, e, d))

  def model_logits(row, prefix):
    decoder_inputs = np.zeros((1, MODEL_LENGTH), np.int32)
    decoder_inputs[0, 1:len(prefix) + 1] = prefix  # shifted right: start token 0 first.
    logits = apply(params, encoder_tokens[row:row + 1], decoder_inputs)
    return np.asarray(logits[0, len(prefix)], np.float64)

  for beams in (1, 2):
    seqs, scores = reference_beam_search(model_logits, 4, MODEL_LENGTH, beams)
    golden[f"model_beam{beams}_seqs"], golden[f"model_beam{beams}_scores"] = seqs, scores
  golden["model_greedy"] = reference_greedy(model_logits, 4, MODEL_LENGTH)
  golden["model_encoder_tokens"] = encoder_tokens
  for path, value in traverse_util.flatten_dict(params, sep="/").items():
    golden[f"param/{path}"] = np.asarray(value)
  np.savez_compressed(OUT, **golden)
  print(f"wrote {OUT}; model 1-beam: {golden['model_beam1_seqs'][:, -1].tolist()}, "
        f"greedy: {golden['model_greedy'].tolist()}")


if __name__ == "__main__":
  main()
