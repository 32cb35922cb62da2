"""The vocabularies tasks are tokenised with.

The real tasks use the T5 SentencePiece vocabulary with 100 extra ids (32100 ids; models pad
to 32128). Its usual public path is the default; set `SPOT_JAX_VOCAB` (or bind
`get_t5_vocabulary.path` in gin) to a local copy on machines without GCS access.
The synthetic world is tokenised either by bytes (`get_byte_vocabulary`, the tests' worlds) or
by words (`get_synthetic_word_vocabulary`: a SentencePiece word model with one piece per word
of the world, built from the world itself, the embedded demo's world). Neither needs a download.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile

import gin
import seqio

T5_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
VOCAB_ENV_VAR = "SPOT_JAX_VOCAB"
T5_EXTRA_IDS = 100


class VocabularyError(OSError):
  """A SentencePiece model that cannot be read (no access to its path, not a model file)."""


class SentencePieceVocabulary(seqio.SentencePieceVocabulary):
  """seqio's SentencePieceVocabulary, whose lazy model load fails with one clear error (the
  path, the cause and the fix) instead of a storage library's traceback."""

  def _model_context(self):
    try:
      return super()._model_context()
    except Exception as e:  # noqa: BLE001 (GCS, file system and parse errors alike)
      cause = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
      raise VocabularyError(
          f"cannot read the SentencePiece vocabulary {self.sentencepiece_model_file} "
          f"({cause}); on a machine without access to it, copy {T5_VOCAB_PATH} to local "
          f"disk and point ${VOCAB_ENV_VAR} (or gin `get_t5_vocabulary.path`) at the copy"
      ) from None


@functools.lru_cache(maxsize=None)
def _sentencepiece(path: str, extra_ids: int) -> seqio.SentencePieceVocabulary:
  return SentencePieceVocabulary(path, extra_ids=extra_ids)


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


SYNTHETIC_VOCAB_DIR_ENV_VAR = "SPOT_JAX_CACHE"
# Pieces before the words, at the ids T5's SentencePiece model gives them (seqio's defaults:
# PAD_ID 0, EOS 1, UNK 2; no BOS).
_SPECIAL_PIECES = (("<pad>", "CONTROL"), ("</s>", "CONTROL"), ("<unk>", "UNKNOWN"))


def word_model_proto(words: tuple[str, ...]) -> bytes:
  """A serialized SentencePiece model of type WORD: pad, eos, unk, then one piece per word.

  A WORD model splits the normalized text at whitespace and maps each word to its piece
  (sentencepiece/src/word_model.cc), so every word of `words` is one id and the order of
  `words` fixes the ids (the same words give the same model, byte for byte).
  """
  from sentencepiece import sentencepiece_model_pb2 as sp_pb2
  if len(set(words)) != len(words) or any(not w or any(c.isspace() for c in w) for w in words):
    raise ValueError("word_model_proto needs distinct non-empty words without whitespace")
  model = sp_pb2.ModelProto()
  piece_type = sp_pb2.ModelProto.SentencePiece.Type
  for piece, kind in _SPECIAL_PIECES:
    model.pieces.add(piece=piece, score=0.0, type=piece_type.Value(kind))
  for word in words:
    model.pieces.add(piece="\u2581" + word, score=0.0, type=piece_type.Value("NORMAL"))
  spec = model.trainer_spec
  spec.model_type = sp_pb2.TrainerSpec.ModelType.Value("WORD")
  spec.vocab_size = len(model.pieces)
  spec.pad_id, spec.eos_id, spec.unk_id, spec.bos_id = 0, 1, 2, -1
  # Identity normalization: text is only split at (and decoded back with single) spaces.
  normalizer = model.normalizer_spec
  normalizer.name = "identity"
  normalizer.add_dummy_prefix = True
  normalizer.remove_extra_whitespaces = True
  normalizer.escape_whitespaces = True
  return model.SerializeToString()


def _cache_dir() -> str:
  root = (os.environ.get(SYNTHETIC_VOCAB_DIR_ENV_VAR)
          or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                          "spot_jax"))
  return os.path.join(root, "vocabularies")


def write_model_file(proto: bytes, name: str) -> str:
  """Writes `proto` once to the cache (`$SPOT_JAX_CACHE` or ~/.cache/spot_jax) under a name
  carrying its content hash; returns the path. Falls back to the temp dir when the cache is
  not writable."""
  digest = hashlib.sha256(proto).hexdigest()[:12]
  for directory in (_cache_dir(), os.path.join(tempfile.gettempdir(), "spot_jax_vocabularies")):
    path = os.path.join(directory, f"{name}-{digest}.model")
    if os.path.exists(path):
      return path
    try:
      os.makedirs(directory, exist_ok=True)
      fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
      with os.fdopen(fd, "wb") as f:
        f.write(proto)
      os.replace(tmp, path)
      return path
    except OSError:
      continue
  raise OSError(f"cannot write the vocabulary {name}: set ${SYNTHETIC_VOCAB_DIR_ENV_VAR} to a "
                "writable directory")


@functools.lru_cache(maxsize=None)
def get_synthetic_word_vocabulary(seed: int = 0) -> seqio.SentencePieceVocabulary:
  """The word vocabulary of synthetic world `seed`: one SentencePiece piece per word
  (`synthetic_world.vocabulary_words`), about 430 ids for every seed."""
  from tasks import synthetic_world
  words = synthetic_world.vocabulary_words(synthetic_world.build_lexicon(seed))
  path = write_model_file(word_model_proto(words), f"synthetic_words_seed{seed}")
  return _sentencepiece(path, 0)
