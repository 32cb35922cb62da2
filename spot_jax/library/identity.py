"""What a library entry is: the identity of the frozen model, method and embedding its key is
comparable with (`ModelIdentity`), and the entry's metadata (`Entry`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

from spot_jax import task_embedding
from spot_jax.library.similarity import LibraryError
from spot_jax.task_embedding import PROMPT_EMBEDDING
from spot_jax.train import run_dir

UNKNOWN_MODEL = "unknown"  # name or fingerprint of a frozen model nobody recorded.


@dataclasses.dataclass(frozen=True)
class ModelIdentity:
  """What an entry's key is comparable with: the frozen model it was trained on, its method
  (with the settings that shape its embedding) and the embedding kind. Entries of different
  identities never mix (one index per identity).

  embedding: `prompt` for prompt-like methods (the key is a prompt [L, emb_dim]), else a kind
  of spot_jax.task_embedding.EMBEDDING_KINDS (the key is a vector [key_dim], stored [1, key_dim]).
  method_settings: the method's settings as canonical JSON (non-prompt methods: rank, targets,
  length... decide what each coordinate of the embedding means), "" for prompt-like ones.
  """

  name: str
  emb_dim: int  # 0 while unknown: `add_npy` and `add_peft` take it from the prompt's width.
  fingerprint: str
  method: str = "prompt"
  embedding: str = PROMPT_EMBEDDING
  method_settings: str = ""
  key_dim: int = 0  # vector keys: their size D (0 for prompts, whose width is emb_dim).

  @classmethod
  def from_run_summary(cls, summary: run_dir.RunSummary | Mapping[str, Any], *,
                       embedding: str | None = None, key_dim: int = 0) -> ModelIdentity:
    """From RunSummary.model (name, config["emb_dim"], fingerprint) and its method, or run.json
    as a dict; `embedding`: the kind of a non-prompt method's keys (default layer_mean)."""
    get = summary.get if isinstance(summary, Mapping) else (
        lambda name, default=None: getattr(summary, name, default))
    model, method = get("model"), str(get("method", "prompt") or "prompt")
    from spot_jax import methods  # jax and flax: imported when a run's identity is read.
    try:
      kind = methods.embedding_kind(method, embedding)
    except (task_embedding.EmbeddingError, methods.MethodError) as e:
      raise LibraryError(str(e)) from None
    settings = "" if kind == PROMPT_EMBEDDING else json.dumps(
        get("method_settings", {}) or {}, sort_keys=True)
    try:
      return cls(str(model["name"]), int(model["config"]["emb_dim"]), str(model["fingerprint"]),
                 method, kind, settings, 0 if kind == PROMPT_EMBEDDING else int(key_dim))
    except (KeyError, TypeError) as e:
      raise LibraryError(f"Run summary model {model!r} lacks name, config.emb_dim or "
                         f"fingerprint ({e})") from None

  @classmethod
  def outside(cls, name: str | None = None, fingerprint: str | None = None,
              emb_dim: int | None = None) -> ModelIdentity:
    """The frozen model of a prompt trained elsewhere (a .npy or PEFT file): what is known of
    it. Name and fingerprint default to UNKNOWN_MODEL: such entries are comparable only with
    entries of the same unknown model and width (one index per identity, emb_dim included);
    emb_dim None is taken from the prompt when it is added."""
    return cls(name or UNKNOWN_MODEL, int(emb_dim or 0), fingerprint or UNKNOWN_MODEL)

  @property
  def is_known(self) -> bool:
    return UNKNOWN_MODEL not in (self.name, self.fingerprint)

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> ModelIdentity:
    return cls(str(data["name"]), int(data["emb_dim"]), str(data["fingerprint"]),
               str(data.get("method", "prompt")),
               str(data.get("embedding", PROMPT_EMBEDDING)),
               str(data.get("method_settings", "")), int(data.get("key_dim", 0)))

  @property
  def is_prompt(self) -> bool:
    """Whether keys (and values) are prompts [L, emb_dim]."""
    return self.embedding == PROMPT_EMBEDDING

  @property
  def key_width(self) -> int:
    """The last dimension of the keys: emb_dim for prompts, key_dim for vector keys."""
    return self.emb_dim if self.is_prompt else self.key_dim

  @property
  def index_key(self) -> str:
    """A filename-safe digest of the identity (fingerprints may hold any character); prompt
    entries keep the key they had before methods were recorded."""
    identity = dataclasses.asdict(self)
    defaults = {"method": "prompt", "embedding": PROMPT_EMBEDDING, "method_settings": "",
                "key_dim": 0}
    for field, default in defaults.items():
      if identity[field] == default:
        del identity[field]
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

  def __str__(self) -> str:
    method = "" if self.method == "prompt" else f", method {self.method}"
    if not self.is_prompt:
      method += f" {self.method_settings}, embedding {self.embedding} [{self.key_dim}]"
    return f"{self.name} (emb_dim {self.emb_dim}, fingerprint {self.fingerprint}{method})"


@dataclasses.dataclass(frozen=True)
class Entry:
  """One library entry: a run of `model.method` trained on `task` with the frozen `model`."""

  id: str
  task: str
  model: ModelIdentity
  prompt_length: int  # 0 for non-prompt methods.
  run: str = ""
  seed: int | None = None
  key_step: int | None = None
  value_step: int | None = None
  steps_done: int | None = None
  metrics: dict = dataclasses.field(default_factory=dict)  # {task: {metric: value}} or flat.
  score: float | None = None  # the value checkpoint's selected validation score.
  origin: dict = dataclasses.field(default_factory=dict)  # {"kind": ..., "path": ...}.
  created: str = ""  # ISO time.

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> Entry:
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in fields}
    return cls(**{**values, "model": ModelIdentity.from_dict(data["model"])})
