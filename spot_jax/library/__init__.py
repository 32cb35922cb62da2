"""The prompt library (values and keys of trained prompts) and task similarity between keys."""

from spot_jax.library.similarity import (METRICS, POOLED_FORMS, Metric, center, pairwise, pool,
                                         scores, task_similarity)
from spot_jax.library.store import Entry, LibraryError, ModelIdentity, PromptLibrary
