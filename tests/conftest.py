"""Shared test fixtures: paths to ../shared/fixtures and small models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = PROJECT_ROOT.parent / "shared" / "fixtures"
T5X_TINY_CHECKPOINT = SHARED_FIXTURES / "t5x_t5_1_1_tiny" / "checkpoint_3"
T5_VOCAB = SHARED_FIXTURES / "t5_vocab" / "sentencepiece.model"


@pytest.fixture
def t5x_tiny_checkpoint() -> Path:
  if not T5X_TINY_CHECKPOINT.exists():
    pytest.skip(f"T5X fixture checkpoint absent ({T5X_TINY_CHECKPOINT}); it lives in ../shared")
  return T5X_TINY_CHECKPOINT


@pytest.fixture
def t5_vocab_path() -> Path:
  if not T5_VOCAB.exists():
    pytest.skip(f"T5 vocabulary fixture absent ({T5_VOCAB}); it lives in ../shared")
  return T5_VOCAB
