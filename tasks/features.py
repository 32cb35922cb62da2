"""Output features of the real tasks: "inputs" and "targets" in the T5 vocabulary, with EOS.

Tasks are registered at import time, usually before gin files are parsed or environment
variables are set, so the vocabulary is resolved lazily: `LazyT5Vocabulary` calls
`tasks.vocabulary.get_t5_vocabulary()` the first time it is used and delegates to it.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import seqio
import tensorflow as tf

from tasks import vocabulary


class LazyT5Vocabulary(seqio.Vocabulary):
  """The T5 SentencePiece vocabulary, looked up (gin / $SPOT_JAX_VOCAB) on first use."""

  def __init__(self):
    super().__init__(extra_ids=vocabulary.T5_EXTRA_IDS)

  @property
  def resolved(self) -> seqio.SentencePieceVocabulary:
    return vocabulary.get_t5_vocabulary()

  @property
  def eos_id(self) -> Optional[int]:
    return self.resolved.eos_id

  @property
  def unk_id(self) -> Optional[int]:
    return self.resolved.unk_id

  @property
  def pad_id(self) -> int:
    return self.resolved.pad_id

  @property
  def extra_ids(self) -> int:
    return self.resolved.extra_ids

  @property
  def vocab_size(self) -> int:
    return self.resolved.vocab_size

  @property
  def _base_vocab_size(self) -> int:
    return self.resolved._base_vocab_size  # pylint: disable=protected-access

  def _encode(self, s: str):
    return self.resolved.encode(s)

  def _decode(self, ids):
    return self.resolved.decode(ids)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    return self.resolved.encode_tf(s)

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    return self.resolved.decode_tf(ids)

  def encode(self, s):
    return self.resolved.encode(s)

  def decode(self, ids):
    return self.resolved.decode(ids)

  def encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    return self.resolved.encode_tf(s)

  def decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    return self.resolved.decode_tf(ids)

  def __getattr__(self, name: str) -> Any:
    # Only reached for attributes this class lacks (e.g. `sentencepiece_model_file`).
    if name.startswith("__"):
      raise AttributeError(name)
    return getattr(self.resolved, name)

  def __eq__(self, other: Any) -> bool:
    if isinstance(other, LazyT5Vocabulary):
      return True
    return isinstance(other, seqio.Vocabulary) and self.resolved == other

  def __hash__(self) -> int:
    return hash(LazyT5Vocabulary)

  def __str__(self) -> str:
    return "LazyT5Vocabulary()"


@functools.lru_cache(maxsize=None)
def t5_output_features() -> dict[str, seqio.Feature]:
  """{"inputs", "targets"}: T5 vocabulary, EOS appended, like T5's default features."""
  vocab = LazyT5Vocabulary()
  return {
      "inputs": seqio.Feature(vocabulary=vocab, add_eos=True, required=False),
      "targets": seqio.Feature(vocabulary=vocab, add_eos=True),
  }
