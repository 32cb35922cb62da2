"""Our LoRA, IA3 and prefix on weights read from a Hugging Face T5 match HF PEFT's logits.

Golden file from `scripts/generate/make_peft_golden.py` (torch + transformers + peft, not needed here),
on the model of tests/golden/hf_t5_tiny with the inputs of hf_t5_tiny_golden.npz. HF does not
mask queries at padded decoder positions and we do (as T5X), so logits are compared where the
labels are not padding. PEFT's T5 prefix sits in the decoder self-attention only, which is
`Prefix(encoder=False, decoder=True)`.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import golden_tolerance
from spot_jax import methods
from spot_jax.checkpoints.hf import read_hf_checkpoint
from spot_jax.models import T5

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
  with np.load(GOLDEN / "peft_t5_tiny_golden.npz", allow_pickle=False) as data:
    peft = dict(data)
  with np.load(GOLDEN / "hf_t5_tiny_golden.npz", allow_pickle=False) as data:
    return {**dict(data), **peft}


@pytest.fixture(scope="module")
def model_params():
  return read_hf_checkpoint(GOLDEN / "hf_t5_tiny", dtype="float32")


def adapter(golden, name: str) -> dict:
  prefix = f"{name}/"
  return methods.unflatten({k[len(prefix):]: v for k, v in golden.items()
                            if k.startswith(prefix)})


@pytest.mark.parametrize("name, method", [
    ("lora", methods.create("lora", rank=4, alpha=8.0)),
    ("ia3", methods.create("ia3")),
    ("prefix", methods.create("prefix", length=3, encoder=False, decoder=True))])
def test_logits_match_peft(golden, model_params, name, method):
  params, config = model_params
  model = T5(config, hooks=method.hooks())
  trainables = adapter(golden, name)
  expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), golden["encoder_input_tokens"],
                            golden["decoder_input_tokens"])["params"]
  added = {p: v for p, v in methods.flatten(expected).items()
           if p not in methods.flatten(params)}
  methods.check_trainables(trainables, methods.unflatten(added), "the PEFT golden file")
  logits = np.asarray(jax.jit(model.apply)(
      {"params": methods.combine(params, trainables)}, golden["encoder_input_tokens"],
      golden["decoder_input_tokens"], golden["decoder_target_tokens"]))
  targets = golden["decoder_target_tokens"] > 0
  reference = golden[f"{name}_logits"][targets]
  assert np.abs(logits[targets] - reference).max() <= golden_tolerance(reference)
  # The fixture is not trivial: the adapter moves the logits.
  assert np.abs(golden[f"{name}_logits"] - golden["logits"])[targets].max() > 0.1
