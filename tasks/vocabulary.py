"""The vocabularies tasks are tokenised with.

The real tasks use the T5 SentencePiece vocabulary with 100 extra ids (32100 ids; models pad
to 32128). Its usual public path is the default; set `SPOT_JAX_VOCAB` (or bind
`get_t5_vocabulary.path` in gin) to a local copy on machines without GCS access.
The synthetic world uses a byte vocabulary so the embedded default needs no files at all.
"""

from __future__ import annotations

import functools
import os

import gin
import seqio

T5_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
VOCAB_ENV_VAR = "SPOT_JAX_VOCAB"
T5_EXTRA_IDS = 100


@functools.lru_cache(maxsize=None)
def _sentencepiece(path: str, extra_ids: int) -> seqio.SentencePieceVocabulary:
  return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)


@gin.configurable
def get_t5_vocabulary(path: str | None = None,
                      extra_ids: int = T5_EXTRA_IDS) -> seqio.SentencePieceVocabulary:
  """The T5 SentencePiece vocabulary: `path`, else $SPOT_JAX_VOCAB, else the public GCS path."""
  path = path or os.environ.get(VOCAB_ENV_VAR) or T5_VOCAB_PATH
  if not path.startswith("gs://") and not os.path.exists(path):
    raise FileNotFoundError(
        f"T5 SentencePiece vocabulary not found at {path!r}. Download "
        f"{T5_VOCAB_PATH} and point ${VOCAB_ENV_VAR} (or gin `get_t5_vocabulary.path`) at it.")
  return _sentencepiece(path, extra_ids)


@functools.lru_cache(maxsize=None)
def get_byte_vocabulary() -> seqio.ByteVocabulary:
  """Byte-level vocabulary (259 ids: pad, eos, unk + 256 bytes) used by the synthetic world."""
  return seqio.ByteVocabulary()
