"""Our T5 on weights read from a Hugging Face checkpoint matches HF's own logits.

The golden files come from `scripts/generate/make_hf_golden.py` (torch + transformers, not needed here).
HF does not mask queries at padded decoder positions and we do (as T5X), so logits are compared
where the labels are not padding.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import golden_tolerance
from spot_jax.checkpoints.hf import read_hf_checkpoint
from spot_jax.models import T5
from spot_jax.models.prompts import with_prompt

GOLDEN = Path(__file__).resolve().parent / "golden"
MODEL_DIR = GOLDEN / "hf_t5_tiny"
NPZ_PATH = GOLDEN / "hf_t5_tiny_golden.npz"


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
  with np.load(NPZ_PATH, allow_pickle=False) as data:
    return dict(data)


@pytest.fixture(scope="module")
def model_params():
  return read_hf_checkpoint(MODEL_DIR, dtype="float32")


def _matches(logits, reference: np.ndarray, targets: np.ndarray | None = None) -> bool:
  """|logits - reference| within conftest.golden_tolerance at the target positions (all
  positions without `targets`)."""
  logits = np.asarray(logits)
  assert logits.shape == reference.shape and logits.dtype == np.float32
  keep = np.ones(reference.shape, bool) if targets is None else np.broadcast_to(
      (targets > 0)[..., None], reference.shape)
  return float(np.abs(logits - reference)[keep].max()) <= golden_tolerance(reference[keep])


def test_logits_match_hf_without_prompt(golden, model_params):
  params, config = model_params
  logits = jax.jit(T5(config).apply)({"params": params}, golden["encoder_input_tokens"],
                            golden["decoder_input_tokens"], golden["decoder_target_tokens"])
  assert _matches(logits, golden["logits"], golden["decoder_target_tokens"])


def test_logits_match_hf_with_prompt(golden, model_params):
  """Encoder length 100 + 40 = 140: relative distances past max_distance=128, every bucket."""
  params, config = model_params
  prompt = golden["prompt"]
  assert prompt.shape == (100, config.emb_dim)
  logits = jax.jit(T5(config, prompt_length=100).apply)(
      {"params": with_prompt(params, prompt)}, golden["encoder_input_tokens"],
      golden["decoder_input_tokens"], golden["decoder_target_tokens"])
  assert _matches(logits, golden["prompt_logits"], golden["decoder_target_tokens"])


def test_prompt_changes_logits(golden):
  """Guards the fixture: the prompt case is not trivially equal to the plain one."""
  targets = golden["decoder_target_tokens"] > 0
  assert np.abs(golden["prompt_logits"] - golden["logits"])[targets].max() > 0.1


def test_logits_match_hf_without_decoder_targets(golden, model_params):
  """Without decoder_target_tokens only the causal mask applies, as in HF: all positions match."""
  params, config = model_params
  logits = jax.jit(T5(config).apply)({"params": params}, golden["encoder_input_tokens"],
                            golden["decoder_input_tokens"])
  assert _matches(logits, golden["logits"])
