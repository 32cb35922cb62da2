"""Writes the Hugging Face parity fixtures in tests/golden/ from a tiny random HF T5 1.1.

Run from the repository root, with the `bench` extra installed (torch==2.13.0, transformers 4.x):

  pip install -e '.[bench]'
  python scripts/generate/make_hf_golden.py

Needs transformers 4.x: transformers 5 always ties T5's lm_head to shared.weight, so it cannot
build (or save) an untied T5 1.1 model.

Writes
  tests/golden/hf_t5_tiny/config.json, model.safetensors   (save_pretrained, safe serialization)
  tests/golden/hf_t5_tiny/pytorch_model.bin                 (torch.save(state_dict), zip format)
  tests/golden/hf_t5_tiny_golden.npz                        (inputs and reference logits)

Weights are rounded to bfloat16 and stored as bfloat16 in both files (half the size of float32);
the reference logits are computed in float32, eval mode, from those same rounded weights. The
relative attention biases are drawn with std 1 (HF draws them small) so that a wrong bucket
shows in the logits. The npz holds:
  encoder_input_tokens [2, 40] int32 (row 1 padded with 0 after 25 tokens; mask = tokens > 0)
  decoder_target_tokens [2, 7] int32 (labels; row 1 padded after 5 tokens, EOS id 1 last)
  decoder_input_tokens [2, 7] int32 (labels shifted right, start token 0)
  logits [2, 7, 256] float32
  prompt [100, 32] float32 (soft prompt prepended to shared(input_ids) via inputs_embeds)
  prompt_logits [2, 7, 256] float32 (encoder length 140: distances past 128, every bucket)
HF does not mask padded decoder queries (ours does), so compare logits where labels > 0.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")

import numpy as np
import torch
import transformers

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
MODEL_DIR = GOLDEN / "hf_t5_tiny"
NPZ_PATH = GOLDEN / "hf_t5_tiny_golden.npz"
SEED = 20240611
PROMPT_LENGTH = 100


def tiny_config() -> transformers.T5Config:
  return transformers.T5Config(
      vocab_size=256, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
      num_decoder_layers=2, relative_attention_num_buckets=32,
      relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
      tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0)


def build_model() -> transformers.T5ForConditionalGeneration:
  """A random untied T5 1.1 with bfloat16-representable float32 weights, in eval mode."""
  torch.manual_seed(SEED)
  model = transformers.T5ForConditionalGeneration(tiny_config()).eval()
  if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
    sys.exit(f"transformers {transformers.__version__} tied lm_head to shared.weight; "
             "use transformers 4.x")
  with torch.no_grad():
    for stack in (model.encoder, model.decoder):
      stack.block[0].layer[0].SelfAttention.relative_attention_bias.weight.normal_(0.0, 1.0)
    for param in model.parameters():
      param.copy_(param.to(torch.bfloat16).to(torch.float32))
  return model


def make_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Token ids in [2, 256) with padding (0) at the end of row 1; labels end with EOS (1)."""
  encoder = rng.integers(2, 256, size=(2, 40)).astype(np.int32)
  encoder[1, 25:] = 0
  labels = rng.integers(2, 256, size=(2, 7)).astype(np.int32)
  labels[0, -1] = 1
  labels[1, 4] = 1
  labels[1, 5:] = 0
  decoder = np.zeros_like(labels)
  decoder[:, 1:] = labels[:, :-1]
  return dict(encoder_input_tokens=encoder, decoder_target_tokens=labels,
              decoder_input_tokens=decoder)


@torch.no_grad()
def reference_logits(model: transformers.T5ForConditionalGeneration, inputs: dict[str, np.ndarray],
                     prompt: np.ndarray | None) -> np.ndarray:
  """HF logits [b, t, vocab] (float32), with `prompt` [L, d] prepended to the embedded input."""
  ids = torch.from_numpy(inputs["encoder_input_tokens"]).long()
  mask = (ids > 0).long()
  embeds = model.shared(ids)
  if prompt is not None:
    batch = ids.shape[0]
    soft = torch.from_numpy(prompt)[None].expand(batch, -1, -1)
    embeds = torch.cat([soft, embeds], dim=1)
    mask = torch.cat([torch.ones(batch, prompt.shape[0], dtype=mask.dtype), mask], dim=1)
  out = model(inputs_embeds=embeds, attention_mask=mask,
              decoder_input_ids=torch.from_numpy(inputs["decoder_input_tokens"]).long())
  return out.logits.float().numpy()


def main() -> None:
  model = build_model()
  rng = np.random.default_rng(SEED)
  inputs = make_inputs(rng)
  prompt = rng.uniform(-0.5, 0.5, size=(PROMPT_LENGTH, 32)).astype(np.float32)
  logits = reference_logits(model, inputs, None)
  prompt_logits = reference_logits(model, inputs, prompt)

  if MODEL_DIR.exists():
    shutil.rmtree(MODEL_DIR)
  model = model.to(torch.bfloat16)  # exact: the weights are bfloat16 values already.
  model.save_pretrained(MODEL_DIR, safe_serialization=True)
  # The state dict also names shared.weight as {en,de}coder.embed_tokens.weight (one storage).
  torch.save(model.state_dict(), MODEL_DIR / "pytorch_model.bin")
  for extra in MODEL_DIR.iterdir():
    if extra.name not in ("config.json", "model.safetensors", "pytorch_model.bin"):
      extra.unlink()
  np.savez(NPZ_PATH, **inputs, logits=logits, prompt=prompt, prompt_logits=prompt_logits)

  files = sorted(MODEL_DIR.iterdir()) + [NPZ_PATH]
  for f in files:
    print(f"{f.relative_to(ROOT)}: {f.stat().st_size} bytes")
  print(f"total {sum(f.stat().st_size for f in files) / 1024:.1f} KiB "
        f"(torch {torch.__version__}, transformers {transformers.__version__})")


if __name__ == "__main__":
  main()
