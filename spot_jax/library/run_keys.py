"""Keys and trainables read from a run directory: the task embedding of a run at a step, of
the kind its `ModelIdentity` names."""

from __future__ import annotations

import os

import numpy as np

from spot_jax import task_embedding
from spot_jax.library.formats import as_key, as_prompt, load_npy
from spot_jax.library.identity import ModelIdentity
from spot_jax.library.similarity import LibraryError
from spot_jax.train import run_dir


def run_checkpoint(model_dir: str, step: int) -> dict[str, np.ndarray]:
  """{dotted path: array} of every trainable a run saved at `step` (plain .npy only)."""
  directory = run_dir.checkpoint_dir(model_dir, step)
  if os.path.isfile(os.path.join(directory, "checkpoint")):  # spot_jax.train.full_checkpoints
    raise LibraryError(f"{directory} is the T5X checkpoint of a full fine-tuning run (method "
                       "'model'): a whole model is no library entry; tune a prompt (or any "
                       "method) with it as INITIAL_CHECKPOINT_PATH and add that run")
  try:
    return run_dir.load_trainables(directory, run_dir.checkpoint_names(directory))
  except run_dir.RunDirError as e:
    raise LibraryError(str(e)) from None


def run_key(model_dir: str, step: int, model: ModelIdentity) -> np.ndarray:
  """A run's task embedding at `step`, of `model`'s kind (`ModelIdentity.from_run_summary`):
  its prompt [L, emb_dim] (prompt-like methods), else the method's embedding of its saved
  trainables (spot_jax.task_embedding, numpy only) as a one-token key [1, D]."""
  if model.is_prompt:
    path = run_dir.prompt_path(model_dir, step)
    return as_prompt(load_npy(path, "key prompt"), path, model.emb_dim)
  directory = run_dir.checkpoint_dir(model_dir, step)
  try:
    vector = task_embedding.layer_embedding(run_checkpoint(model_dir, step), model.embedding)
  except task_embedding.EmbeddingError as e:
    raise LibraryError(f"{directory}: {e}") from None
  return as_key(vector, f"The {model.embedding} embedding of {directory}", model)
