"""Evaluating a prompt on a split with each task's seqio metrics, as T5X's infer_eval does it.

Inputs and targets are never truncated: seqio measures the longest example of the evaluated
split (`sequence_length=None`, as T5X's `infer_eval`), and examples are batched by length
bucket (powers of two up to that longest input) so short examples stay fast; each bucket is
compiled once and reused by every later evaluation. Predictions are decoded up to the longest
target: with T5X's beam search (the default, `EVAL_MODE = 'beam_search'`: 1 beam, length
normalisation alpha 0.6, as T5X's EncoderDecoderModel predicts) or argmax per step
(`'greedy'`); or they come from rank classification over a task's label set
(`'rank_classification'`: one batched pass, the prediction is the best label's tokens). seqio
then decodes them and applies the task's postprocessor and metrics.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import seqio

from spot_jax.evaluation import scoring
from spot_jax.evaluation.scores import SPLIT_GROUP_SUFFIXES
from spot_jax.models.t5 import T5
from spot_jax.methods import Trainables, combine
from tasks.lookup import subtasks_with_metrics, task_labels as declared_labels
from spot_jax.data.batches import feature_converter, pad_batch

BEAM_SEARCH = "beam_search"
GREEDY = "greedy"
RANK_CLASSIFICATION = "rank_classification"
EVAL_MODES = (BEAM_SEARCH, GREEDY, RANK_CLASSIFICATION)
DECODING_MODES = (BEAM_SEARCH, GREEDY)
MIN_BUCKET = 8  # the shortest input bucket (tokens).


def check_eval_mode(mode: str) -> str:
  if mode not in EVAL_MODES:
    raise ValueError(f"Unknown EVAL_MODE {mode!r}; choose one of {EVAL_MODES} "
                     "(beam_search is T5X's evaluation)")
  return mode


def encode_labels(labels: Sequence[str], vocabulary: seqio.Vocabulary,
                  length: int | None = None) -> np.ndarray:
  """Label strings -> [num_labels, length] token ids ending in EOS, right-padded with 0;
  `length` defaults to the longest label's."""
  ids = [list(vocabulary.encode(label)) + [vocabulary.eos_id] for label in labels]
  length = length or max(len(row) for row in ids)
  rows = np.zeros((len(labels), length), np.int32)
  for i, (label, row) in enumerate(zip(labels, ids)):
    if len(row) > length:
      raise ValueError(f"Label {label!r} needs {len(row)} target tokens with EOS but the "
                       f"targets length is {length}; raise TASK_FEATURE_LENGTHS['targets']")
    rows[i, : len(row)] = row
  return rows


def length_bucket(length: int, max_length: int) -> int:
  """The padded length of an input of `length` tokens: the next power of two (at least
  MIN_BUCKET), capped at the split's longest input."""
  bucket = MIN_BUCKET
  while bucket < length:
    bucket *= 2
  return min(bucket, max_length)


def bucketed_batches(indices: np.ndarray, tokens: np.ndarray, batch_size: int
                     ) -> list[tuple[np.ndarray, np.ndarray, int]]:
  """Examples [n, max_length] (right-padded with 0) -> batches (indices, tokens
  [batch_size, bucket], real size), each batch from one length bucket, in length order."""
  max_length = tokens.shape[1]
  lengths = max_length - np.argmax(tokens[:, ::-1] != 0, axis=1)
  lengths[~np.any(tokens != 0, axis=1)] = 0
  order = np.argsort(lengths, kind="stable")
  buckets = np.array([length_bucket(int(n), max_length) for n in lengths[order]])
  batches = []
  for bucket in np.unique(buckets):
    members = order[buckets == bucket]
    for start in range(0, len(members), batch_size):
      chosen = members[start:start + batch_size]
      padded, size = pad_batch({"tokens": tokens[chosen, :bucket]}, batch_size)
      batches.append((indices[chosen], padded["tokens"], size))
  return batches


def split_evaluations(task: seqio.Task, split: str) -> list[tuple[str, str]]:
  """[(result key, split)] evaluated for `task` on `split`: MNLI's `validation` (and `test`)
  is its matched and mismatched sets, keyed `<task>_matched` / `<task>_mismatched` (t5's
  `glue_mnli_matched_v002` / `glue_mnli_mismatched_v002`; `scores.score_group` joins them),
  every other task the split itself under its own name."""
  halves = [f"{split}{suffix}" for suffix in SPLIT_GROUP_SUFFIXES]
  if all(half in task.splits for half in halves):
    return [(f"{task.name}{suffix}", half) for suffix, half in zip(SPLIT_GROUP_SUFFIXES, halves)]
  return [(task.name, split)]


# seqio.Evaluator per (task, split, number of examples), shared by every PromptEvaluator of this
# process: building one reads, preprocesses and caches the split (about 0.5 s of CPU per task on
# the demo's tasks), which a study of many short runs would otherwise pay per run. Its
# datasets are the unshuffled eval split, so sharing cannot change what a run evaluates. The
# registered task object is kept beside it: a task registered again under the same name (a
# new definition) gets a new evaluator.
_EVALUATORS: dict[tuple[str, str, int | None], tuple[seqio.Task, seqio.Evaluator]] = {}


def shared_evaluator(task: seqio.Task, split: str, num_examples: int | None) -> seqio.Evaluator:
  """The process's seqio.Evaluator of `task` on `split` (first `num_examples`), built once."""
  key = (task.name, split, num_examples)
  cached = _EVALUATORS.get(key)
  if cached is None or cached[0] is not task:
    evaluator = seqio.Evaluator(task.name, feature_converter(), eval_split=split,
                                sequence_length=None, num_examples=num_examples,
                                async_compute_metrics=False)
    _EVALUATORS[key] = cached = (task, evaluator)
  return cached[1]


@dataclasses.dataclass
class _TaskData:
  task: str  # the seqio task (several result keys may evaluate one task on several splits).
  evaluator: seqio.Evaluator
  vocabulary: seqio.Vocabulary
  labels: tuple[str, ...] | None
  batches: list[tuple[np.ndarray, np.ndarray, int]] | None = None  # filled on first use.


class PromptEvaluator:
  """Evaluates prompts for one task or mixture; the eval data is cached on first use."""

  def __init__(self, model: T5, frozen_params: Any, task_name: str, batch_size: int, *,
               mode: str = BEAM_SEARCH, split: str = "validation", num_examples: int | None = None,
               task_labels: Mapping[str, Sequence[str]] | None = None,
               place: Callable[[Any], Any] = jnp.asarray):
    """`mode` one of EVAL_MODES ('rank_classification' decodes tasks without a label set with
    beam search); `task_labels` overrides the label sets tasks declare. `frozen_params` may be
    sharded over a mesh; `place` then puts host arrays (prompt, token batches) on the same
    devices, e.g. replicated (`partitioning.replicate`)."""
    self.model = model
    self.place = place
    self.frozen_params = frozen_params
    self.batch_size = batch_size
    self.mode = check_eval_mode(mode)
    self.split = split
    self.tasks: dict[str, _TaskData] = {}  # by result key (`split_evaluations`).
    for task in subtasks_with_metrics(task_name, split):
      labels = None
      if self.mode == RANK_CLASSIFICATION:
        labels = (task_labels or {}).get(task.name) or declared_labels(task.name)
      for key, task_split in split_evaluations(task, split):
        evaluator = shared_evaluator(task, task_split, num_examples)
        self.tasks[key] = _TaskData(task.name, evaluator,
                                    task.output_features["targets"].vocabulary,
                                    tuple(labels) if labels else None)
    if not self.tasks:
      raise ValueError(f"{task_name!r} has no task with metrics to evaluate")

  def evaluate(self, trainables: Trainables, step: int | None = None
               ) -> dict[str, dict[str, float]]:
    """{result key: {metric: value}} for a method's trainables (e.g. `with_prompt({}, prompt)`);
    the key is the task's name (MNLI: `glue_mnli_matched` and `glue_mnli_mismatched`)."""
    params = self._combined(trainables)
    results = {}
    for key, data in self.tasks.items():
      metrics_future, _ = data.evaluator.evaluate(compute_metrics=True, step=step,
                                                  predict_fn=self._predict_fn(params, data))
      results[key] = {k: float(v) for k, v in metrics_future.result()[data.task].items()}
    return results

  def target_lengths(self) -> dict[str, int]:
    """{result key: the split's longest target in tokens, EOS included}: how far decoding runs
    on this split."""
    return {name: int(data.evaluator.model_feature_shapes["decoder_target_tokens"][0])
            for name, data in self.tasks.items()}

  def predict(self, trainables: Trainables, decode_lengths: Mapping[str, int] | None = None,
              keys: Sequence[str] | None = None
              ) -> dict[str, list[tuple[Mapping[str, Any], Any]]]:
    """{result key: [(example, postprocessed prediction)]} in split order, without metrics
    (for splits without labels, e.g. GLUE/SuperGLUE test sets). Decoding runs to
    `decode_lengths[task]` tokens, by default this split's longest target; an unlabelled
    split's targets are placeholders (`<unk>`), so pass a labelled split's `target_lengths()`.
    `keys`: only these result keys (default: all)."""
    params = self._combined(trainables)
    outputs = {}
    for key in (self.tasks if keys is None else keys):
      data = self.tasks[key]
      length = (decode_lengths or {}).get(key)
      rows = sorted(self._predict_fn(params, data, length)(
          data.evaluator.cached_model_datasets[data.task]), key=lambda pair: pair[0])
      task = seqio.get_mixture_or_task(data.task)
      examples = data.evaluator.cached_task_datasets[data.task].as_numpy_iterator()
      outputs[key] = [
          (example, task.postprocess_fn(data.vocabulary.decode(row.tolist()), example=example,
                                        is_target=False))
          for example, (_, row) in zip(examples, rows, strict=True)]
    return outputs

  def _combined(self, trainables: Trainables) -> Any:
    """The frozen parameters with the method's trainables placed on the mesh."""
    return combine(self.frozen_params,
                   jax.tree.map(lambda x: self.place(np.asarray(x, np.float32)), trainables))

  def _predict_fn(self, params: Any, data: _TaskData, target_length: int | None = None):
    """seqio's predict_fn: [(index, tokens)], every row as long as the longest prediction
    (T5X's infer_fn hands seqio decodes [batch, max_decode_len]; seqio stacks them with
    np.array and Vocabulary.decode stops at the first EOS). Decoding runs to
    `target_length` tokens, by default the split's longest target."""
    target_length = (target_length
                     or data.evaluator.model_feature_shapes["decoder_target_tokens"][0])
    candidate_rows = candidates = None
    if data.labels:
      candidate_rows = encode_labels(data.labels, data.vocabulary)
      candidates = self.place(candidate_rows)

    def predict(dataset, model_feature_shapes=None):
      del model_feature_shapes
      if data.batches is None:
        data.batches = self._bucketed(dataset)
      outputs = []
      for indices, tokens, size in data.batches:
        tokens = self.place(tokens)
        if candidates is not None:
          best = scoring.rank_classify(self.model, params, tokens, candidates)
          predicted = candidate_rows[np.asarray(best)]
        elif self.mode == GREEDY:
          predicted = np.asarray(scoring.greedy_decode(self.model, params, tokens, target_length,
                                                       data.vocabulary.eos_id))
        else:
          predicted = np.asarray(scoring.beam_decode(self.model, params, tokens, target_length,
                                                     data.vocabulary.eos_id)[0])
        outputs.extend((int(index), np.asarray(row, np.int32))
                       for index, row in zip(indices[:size], predicted[:size]))
      return outputs

    return predict

  def _bucketed(self, dataset) -> list[tuple[np.ndarray, np.ndarray, int]]:
    indices, tokens = [], []
    for index, features in dataset.batch(1024).as_numpy_iterator():
      indices.append(index)
      tokens.append(features["encoder_input_tokens"])
    return bucketed_batches(np.concatenate(indices), np.concatenate(tokens), self.batch_size)
