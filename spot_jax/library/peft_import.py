"""Hugging Face PEFT LoRA, IA3 and prefix-tuning adapters of T5 as this repository's trainables.

PEFT saves an adapter as `adapter_config.json` + `adapter_model.safetensors` with the base
model's module names (`base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight`).
Each is mapped to the trainables our method trains (names and layouts as
scripts/generate/make_peft_golden.py states them, checked against PEFT's logits by
tests/test_peft_parity.py):
  LORA           lora_A.weight [r, in] -> `<module>.lora_a` [in, r] (transposed), lora_B.weight
                 [out, r] -> `<module>.lora_b` [r, out]; settings rank = r, alpha = lora_alpha,
                 targets from target_modules (attention q/k/v/o only)
  IA3            ia3_l ([out, 1], or [1, in] for a feed-forward module) -> `<module>.ia3_scale`
                 flattened; the attention modules are output targets, PEFT's
                 feedforward_modules (`wo`) input targets
  PREFIX_TUNING  prompt_embeddings [P, 2 L d_model] -> per decoder layer j `prefix_key` /
                 `prefix_value` [P, heads, head_dim] (PEFT's T5 placement: the decoder
                 self-attention only), from PEFT's cache layout: layer j reads the key slot
                 4j mod 2L and the value slot 4j + 1 mod 2L (docs/methods.md "Prefixes")
The library keys them by TuPaTE's layer-mean embedding (spot_jax.task_embedding), so they are
searched with runs of the same method and settings. Shapes are checked against the frozen
model's width, the adapter's config and each other; a mismatch names the tensor and the fix.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import numpy as np

from spot_jax.library.similarity import LibraryError

PEFT_WEIGHTS, PEFT_CONFIG = "adapter_model.safetensors", "adapter_config.json"
TYPES = {"LORA": "lora", "IA3": "ia3", "PREFIX_TUNING": "prefix"}
_MODULES = {"SelfAttention": "attention", "EncDecAttention": "encoder_decoder_attention",
            "DenseReluDense": "mlp"}
_LINEAR = {"q": "query", "k": "key", "v": "value", "o": "out", "wi": "wi", "wi_0": "wi_0",
           "wi_1": "wi_1", "wo": "wo"}
_ATTENTION_ORDER = ("query", "key", "value", "out")
_NAME = re.compile(r"(encoder|decoder)\.block\.(\d+)\.layer\.\d+\.(\w+)\.(\w+)\."
                   r"(lora_A\.weight|lora_B\.weight|ia3_l)$")


def read_adapter(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
  """(adapter_config.json, tensors, weights path) of an adapter directory or weights file."""
  from safetensors.numpy import load_file
  weights = os.path.join(path, PEFT_WEIGHTS) if os.path.isdir(path) else path
  config_path = os.path.join(os.path.dirname(weights), PEFT_CONFIG)
  config: dict[str, Any] = {}
  if os.path.exists(config_path):
    try:
      with open(config_path) as f:
        config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise LibraryError(f"PEFT config {config_path} is unreadable ({e})") from None
  if not os.path.exists(weights):
    raise LibraryError(f"PEFT adapter weights {weights!r} do not exist")
  try:
    tensors = load_file(weights)
  except Exception as e:  # safetensors raises its own error type for corrupt files.
    raise LibraryError(f"PEFT adapter weights {weights!r} are not a readable safetensors "
                       f"file ({e})") from None
  return config, {k: np.asarray(v, np.float32) for k, v in tensors.items()}, weights


def our_module(stack: str, layer: str, module: str, linear: str, where: str) -> str:
  """('decoder', '1', 'SelfAttention', 'q') -> 'decoder.layers_1.self_attention.query'."""
  if module not in _MODULES or linear not in _LINEAR:
    raise LibraryError(f"{where}: PEFT module {module}.{linear} has no T5X counterpart")
  name = _MODULES[module]
  if stack == "decoder" and name == "attention":
    name = "self_attention"
  return f"{stack}.layers_{layer}.{name}.{_LINEAR[linear]}"


def _modules(tensors: Mapping[str, np.ndarray], where: str
             ) -> dict[str, dict[str, np.ndarray]]:
  """{our module path: {PEFT leaf: tensor}} of every adapted T5 module."""
  out: dict[str, dict[str, np.ndarray]] = {}
  for name, value in tensors.items():
    match = _NAME.search(name)
    if match is None:
      raise LibraryError(f"{where}: tensor {name!r} is not a T5 LoRA/IA3 weight (expected "
                         "'...(encoder|decoder).block.<i>.layer.<j>.<Module>.<linear>.(lora_A."
                         "weight|lora_B.weight|ia3_l)')")
    stack, layer, module, linear, leaf = match.groups()
    out.setdefault(our_module(stack, layer, module, linear, where), {})[leaf] = value
  if not out:
    raise LibraryError(f"{where} holds no adapter tensors")
  return out


def _attention_targets(target_modules: Any, where: str) -> str:
  names = [target_modules] if isinstance(target_modules, str) else list(target_modules or ())
  ours = {_LINEAR.get(n) for n in names}
  if not names or not ours <= set(_ATTENTION_ORDER):
    raise LibraryError(f"{where}: target_modules {names} are not T5 attention projections "
                       "(q, k, v, o); only those map onto this method's targets")
  return "attention/(" + "|".join(n for n in _ATTENTION_ORDER if n in ours) + ")$"


def _check(where: str, name: str, shape: tuple[int, ...], want: tuple[int, ...],
           fix: str) -> None:
  if tuple(shape) != tuple(want):
    raise LibraryError(f"{where}: {name} has shape {tuple(shape)}, but {fix} needs {want}; "
                       "import an adapter trained on this frozen model (--emb_dim) with the "
                       "settings its adapter_config.json states")


def lora(config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], emb_dim: int,
         where: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  rank, alpha = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
  settings = {"rank": rank, "alpha": alpha,
              "targets": _attention_targets(config.get("target_modules"), where)}
  out = {}
  for module, leaves in _modules(tensors, where).items():
    if set(leaves) != {"lora_A.weight", "lora_B.weight"}:
      raise LibraryError(f"{where}: {module} has {sorted(leaves)}; LoRA needs lora_A.weight "
                         "and lora_B.weight")
    a, b = leaves["lora_A.weight"], leaves["lora_B.weight"]
    if module.endswith((".query", ".key", ".value")):
      _check(where, f"{module} lora_A.weight", a.shape, (rank, emb_dim),
             f"rank {rank} on a model of width {emb_dim}")
    _check(where, f"{module} lora_B.weight", b.shape, (b.shape[0], rank), f"rank {rank}")
    if module.endswith(".out"):
      _check(where, f"{module} lora_B.weight", b.shape, (emb_dim, rank),
             f"rank {rank} on a model of width {emb_dim}")
    out[f"{module}.lora_a"], out[f"{module}.lora_b"] = a.T.copy(), b.T.copy()
  return settings, out


def ia3(config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], emb_dim: int,
        where: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  targets = config.get("target_modules") or ()
  feedforward = set(config.get("feedforward_modules") or ())
  targets = [targets] if isinstance(targets, str) else list(targets)
  attention = [t for t in targets if t not in feedforward]
  if not set(feedforward) <= {"wo"} or not set(attention) <= {"q", "k", "v", "o"}:
    raise LibraryError(f"{where}: IA3 target_modules {targets} with feedforward_modules "
                       f"{sorted(feedforward)}: only attention outputs and the input of wo map "
                       "onto this method's targets")
  settings = {"targets": _attention_targets(attention, where) if attention else "",
              "input_targets": "mlp/wo$" if feedforward else ""}
  out = {}
  for module, leaves in _modules(tensors, where).items():
    if set(leaves) != {"ia3_l"}:
      raise LibraryError(f"{where}: {module} has {sorted(leaves)}; IA3 needs ia3_l")
    scale = leaves["ia3_l"]
    if module.endswith(".wo"):
      if scale.ndim != 2 or scale.shape[0] != 1:
        raise LibraryError(f"{where}: {module} ia3_l has shape {scale.shape}; a feed-forward "
                           "IA3 scale is [1, mlp]")
    elif module.endswith((".key", ".value", ".query")):
      _check(where, f"{module} ia3_l", scale.shape, (scale.shape[0], 1), "an output scale")
    out[f"{module}.ia3_scale"] = scale.reshape(-1).copy()
  return settings, out


def prefix(config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], emb_dim: int,
           num_heads: int | None, where: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  if config.get("prefix_projection"):
    raise LibraryError(f"{where}: a prefix with prefix_projection saves its projection MLP, "
                       "not the prefixes; export one without it")
  if "prompt_embeddings" not in tensors:
    raise LibraryError(f"{where} has no 'prompt_embeddings' tensor (found {sorted(tensors)})")
  table = tensors["prompt_embeddings"]
  length = int(config.get("num_virtual_tokens", table.shape[0]))
  layers = int(config.get("num_layers", 0))
  heads = int(config.get("num_attention_heads", num_heads or 0))
  token_dim = int(config.get("token_dim", emb_dim))
  if not layers or not heads:
    raise LibraryError(f"{where}: adapter_config.json lacks num_layers or num_attention_heads")
  if token_dim != emb_dim:
    raise LibraryError(f"{where}: token_dim {token_dim} differs from the model width {emb_dim}")
  _check(where, "prompt_embeddings", table.shape, (length, 2 * layers * emb_dim),
         f"{length} virtual tokens x {layers} layers of width {emb_dim}")
  if emb_dim % heads:
    raise LibraryError(f"{where}: width {emb_dim} does not split into {heads} heads")
  slots = table.reshape(length, 2 * layers, heads, emb_dim // heads)
  out = {}
  for j in range(layers):
    path = f"decoder.layers_{j}.self_attention"
    out[f"{path}.prefix_key"] = slots[:, (4 * j) % (2 * layers)].copy()
    out[f"{path}.prefix_value"] = slots[:, (4 * j + 1) % (2 * layers)].copy()
  return {"length": length, "encoder": False, "decoder": True}, out


def convert(config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], where: str,
            emb_dim: int, num_heads: int | None = None
            ) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
  """(method, its settings, {dotted path: array}) of a LoRA/IA3/prefix adapter
  (`read_adapter`'s config and tensors; `where` names it in errors)."""
  kind = config.get("peft_type")
  if kind not in TYPES:
    raise LibraryError(f"{where}: peft_type {kind!r} is not one of {sorted(TYPES)} (or "
                       "PROMPT_TUNING, imported as a prompt); its adapter_config.json must say")
  if kind == "LORA":
    settings, arrays = lora(config, tensors, emb_dim, where)
  elif kind == "IA3":
    settings, arrays = ia3(config, tensors, emb_dim, where)
  else:
    settings, arrays = prefix(config, tensors, emb_dim, num_heads, where)
  return TYPES[kind], settings, arrays
