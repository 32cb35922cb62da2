"""Writes tests/golden/peft_t5_tiny_golden.npz: HF PEFT LoRA, IA3 and prefix-tuning logits on the
tiny HF T5.

Run from the repository root with the `bench` extra installed (torch, transformers 4.x, peft),
after scripts/generate/make_hf_golden.py (it reads tests/golden/hf_t5_tiny and the inputs of
tests/golden/hf_t5_tiny_golden.npz):

  python scripts/generate/make_peft_golden.py

For each method the adapter weights are set to random values (LoRA B non-zero, IA3 scales
around 1, so the adapters change the logits) and stored under our parameter names with our
layouts: `lora/<dotted path>.lora_a` [in, r] = PEFT lora_A.weight^T, `.lora_b` [r, out] =
lora_B.weight^T; `ia3/<dotted path>.ia3_scale` = PEFT ia3_l flattened ([out] for k and v, [in]
for the feed-forward wo); `prefix/decoder.layers_<j>.self_attention.prefix_key` (and
`.prefix_value`) [P, heads, head_dim] = the key/value PEFT's cache hands decoder layer j.
`<method>_logits` [2, 7, 256] are PEFT's float32 eval-mode logits. LoRA: r=4, alpha=8, target
q and v (PEFT's T5 default), no dropout. IA3: PEFT's T5 default (k, v, wo; wo feed-forward).
Prefix: 3 virtual tokens, no projection; PEFT places them in the decoder self-attention only
(`PeftModel.get_prompt` empties the cross-attention cache; the encoder gets no cache).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")

import numpy as np
import peft
import torch
import transformers

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
MODEL_DIR = GOLDEN / "hf_t5_tiny"
INPUTS = GOLDEN / "hf_t5_tiny_golden.npz"
OUT = GOLDEN / "peft_t5_tiny_golden.npz"
SEED = 20240612
LORA_RANK, LORA_ALPHA = 4, 8
PREFIX_LENGTH = 3

_MODULES = {"SelfAttention": "attention", "EncDecAttention": "encoder_decoder_attention",
            "DenseReluDense": "mlp"}
_LINEAR = {"q": "query", "k": "key", "v": "value", "o": "out", "wi_0": "wi_0", "wi_1": "wi_1",
           "wo": "wo"}


def our_path(hf_name: str) -> str:
  """'encoder.block.1.layer.0.SelfAttention.q' -> 'encoder.layers_1.attention.query'."""
  m = re.search(r"(encoder|decoder)\.block\.(\d+)\.layer\.\d+\.(\w+)\.(\w+)$", hf_name)
  stack, layer, module, linear = m.groups()
  module = _MODULES[module]
  if stack == "decoder" and module == "attention":
    module = "self_attention"
  return f"{stack}.layers_{layer}.{module}.{_LINEAR[linear]}"


@torch.no_grad()
def logits(model, inputs: dict[str, np.ndarray]) -> np.ndarray:
  ids = torch.from_numpy(inputs["encoder_input_tokens"]).long()
  out = model(input_ids=ids, attention_mask=(ids > 0).long(),
              decoder_input_ids=torch.from_numpy(inputs["decoder_input_tokens"]).long())
  return out.logits.float().numpy()


def base_model():
  return transformers.T5ForConditionalGeneration.from_pretrained(
      MODEL_DIR, dtype=torch.float32).eval()


@torch.no_grad()
def lora(inputs, gen: torch.Generator) -> dict[str, np.ndarray]:
  config = peft.LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules=["q", "v"],
                           lora_dropout=0.0)
  model = peft.get_peft_model(base_model(), config).eval()
  out = {}
  for name, module in model.named_modules():
    if isinstance(module, peft.tuners.lora.Linear):
      a = module.lora_A["default"].weight
      b = module.lora_B["default"].weight
      a.copy_(torch.randn(a.shape, generator=gen) * 0.3)
      b.copy_(torch.randn(b.shape, generator=gen) * 0.3)
      path = our_path(name)
      out[f"lora/{path}.lora_a"] = a.T.numpy().copy()
      out[f"lora/{path}.lora_b"] = b.T.numpy().copy()
  out["lora_logits"] = logits(model, inputs)
  return out


@torch.no_grad()
def ia3(inputs, gen: torch.Generator) -> dict[str, np.ndarray]:
  config = peft.IA3Config(target_modules=["k", "v", "wo"], feedforward_modules=["wo"])
  model = peft.get_peft_model(base_model(), config).eval()
  out = {}
  for name, module in model.named_modules():
    if isinstance(module, peft.tuners.ia3.Linear):
      scale = module.ia3_l["default"]
      scale.copy_(1.0 + 0.5 * torch.randn(scale.shape, generator=gen))
      out[f"ia3/{our_path(name)}.ia3_scale"] = scale.reshape(-1).numpy().copy()
  out["ia3_logits"] = logits(model, inputs)
  return out


@torch.no_grad()
def prefix(inputs, gen: torch.Generator) -> dict[str, np.ndarray]:
  config = peft.PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=PREFIX_LENGTH)
  model = peft.get_peft_model(base_model(), config).eval()
  table = model.prompt_encoder["default"].embedding.weight  # [P, layers * 2 * d_model]
  table.copy_(torch.randn(table.shape, generator=gen))
  cache = model.get_prompt(batch_size=1)  # what forward hands the base model.
  assert not cache.cross_attention_cache.layers, "PEFT now prefixes the cross-attention"
  out = {}
  for j, layer in enumerate(cache.self_attention_cache.layers):  # [1, heads, P, head_dim]
    path = f"decoder.layers_{j}.self_attention"
    out[f"prefix/{path}.prefix_key"] = layer.keys[0].permute(1, 0, 2).numpy().copy()
    out[f"prefix/{path}.prefix_value"] = layer.values[0].permute(1, 0, 2).numpy().copy()
  out["prefix_logits"] = logits(model, inputs)
  return out


def main() -> None:
  with np.load(INPUTS) as data:
    inputs = {k: data[k] for k in ("encoder_input_tokens", "decoder_input_tokens",
                                   "decoder_target_tokens")}
  gen = torch.Generator().manual_seed(SEED)
  arrays = {**lora(inputs, gen), **ia3(inputs, gen), **prefix(inputs, gen)}
  np.savez(OUT, **arrays)
  print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size} bytes (torch {torch.__version__}, "
        f"transformers {transformers.__version__}, peft {peft.__version__})")


if __name__ == "__main__":
  main()
