"""Evaluating a prompt on validation splits with each task's seqio metrics.

Predictions come from greedy decoding, or, for tasks with a known label set, from rank
classification over the labels (one batched pass; the prediction is the best label's tokens).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import seqio

from spot_jax.evaluation import scoring
from spot_jax.models.t5 import T5
from spot_jax.methods import Trainables, combine
from spot_jax.tasks_util import subtasks_with_metrics
from spot_jax.train.data import feature_converter, pad_batch


def encode_labels(labels: Sequence[str], vocabulary: seqio.Vocabulary, length: int) -> np.ndarray:
  """Label strings -> [num_labels, length] token ids ending in EOS, right-padded with 0."""
  rows = np.zeros((len(labels), length), np.int32)
  for i, label in enumerate(labels):
    ids = list(vocabulary.encode(label)) + [vocabulary.eos_id]
    if len(ids) > length:
      raise ValueError(f"Label {label!r} needs {len(ids)} target tokens with EOS but the "
                       f"targets length is {length}; raise TASK_FEATURE_LENGTHS['targets']")
    rows[i, : len(ids)] = ids
  return rows


class PromptEvaluator:
  """Evaluates prompts for one task or mixture; the eval data is cached on first use."""

  def __init__(self, model: T5, frozen_params: Any, task_name: str,
               feature_lengths: Mapping[str, int], batch_size: int, *,
               split: str = "validation", num_examples: int | None = None,
               task_labels: Mapping[str, Sequence[str]] | None = None,
               place: Callable[[Any], Any] = jnp.asarray):
    """`frozen_params` may be sharded over a mesh; `place` then puts host arrays (prompt,
    token batches) on the same devices, e.g. replicated (`partitioning.replicate`)."""
    self.model = model
    self.place = place
    self.frozen_params = frozen_params
    self.batch_size = batch_size
    self.feature_lengths = dict(feature_lengths)
    self.task_labels = dict(task_labels or {})
    self.evaluators = {
        task.name: seqio.Evaluator(task.name, feature_converter(), eval_split=split,
                                   sequence_length=self.feature_lengths,
                                   num_examples=num_examples, async_compute_metrics=False)
        for task in subtasks_with_metrics(task_name)}
    if not self.evaluators:
      raise ValueError(f"{task_name!r} has no task with metrics to evaluate")

  def evaluate(self, trainables: Trainables, step: int | None = None
               ) -> dict[str, dict[str, float]]:
    """{task name: {metric: value}} for a method's trainables (e.g. `with_prompt({}, prompt)`)."""
    params = combine(self.frozen_params,
                     jax.tree.map(lambda x: self.place(np.asarray(x, np.float32)), trainables))
    results = {}
    for name, evaluator in self.evaluators.items():
      predict = self._predict_fn(params, name)
      metrics_future, _ = evaluator.evaluate(compute_metrics=True, step=step, predict_fn=predict)
      results[name] = {k: float(v) for k, v in metrics_future.result()[name].items()}
    return results

  def _predict_fn(self, params: Any, task_name: str):
    target_length = self.feature_lengths["targets"]
    labels = self.task_labels.get(task_name)
    vocabulary = seqio.get_mixture_or_task(task_name).output_features["targets"].vocabulary
    eos_id = vocabulary.eos_id
    candidates = candidate_rows = None
    if labels:
      candidate_rows = encode_labels(labels, vocabulary, target_length)
      candidates = self.place(candidate_rows)

    def predict(dataset, model_feature_shapes=None):
      outputs = []
      for indices, features in dataset.batch(self.batch_size).as_numpy_iterator():
        batch, size = pad_batch({"encoder_input_tokens": features["encoder_input_tokens"]},
                                self.batch_size)
        tokens = self.place(batch["encoder_input_tokens"])
        if candidates is not None:
          best = scoring.rank_classify(self.model, params, tokens, candidates)
          predicted = candidate_rows[np.asarray(best)]
        else:
          predicted = np.asarray(scoring.greedy_decode(self.model, params, tokens, target_length,
                                                       eos_id))
        for index, row in zip(indices[:size], predicted[:size]):
          row = row.tolist()
          outputs.append((int(index), row[: row.index(eos_id)] if eos_id in row else row))
      return outputs

    return predict
