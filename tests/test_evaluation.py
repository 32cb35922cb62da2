"""seqio evaluation of prompts: every task and both evaluation modes, labels of any length."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf

from spot_jax.evaluation import evaluator as evaluator_lib
from spot_jax.models import T5, get_config
from spot_jax.tasks_util import register_all_tasks
from tasks import synthetic
from tasks.vocabulary import get_byte_vocabulary

register_all_tasks()

CONFIG = get_config("tiny_byte", emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32)
LENGTHS = {"inputs": 64, "targets": 16}
MOCK_TASK = "test_eval_mock_rte"
MOCK_LABELS = ("entailment", "not_entailment")  # 10 and 14 bytes: predictions of two lengths.
# Inputs starting with "a" are predicted `entailment` by the scripted scorer below.
MOCK_EXAMPLES = [("a one", "entailment"), ("b two", "not_entailment"), ("a three", "entailment"),
                 ("b four", "entailment"), ("a five", "not_entailment"), ("b six", "not_entailment")]


def _register_mock_task() -> None:
  if MOCK_TASK in seqio.TaskRegistry.names():
    return
  vocabulary = get_byte_vocabulary()

  def dataset_fn(split, shuffle_files=False, seed=None):
    del split, shuffle_files, seed
    inputs, targets = zip(*MOCK_EXAMPLES)
    return tf.data.Dataset.from_tensor_slices({"inputs": list(inputs), "targets": list(targets)})

  seqio.TaskRegistry.add(
      MOCK_TASK, seqio.FunctionDataSource(dataset_fn, splits=("validation",)),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features={k: seqio.Feature(vocabulary, add_eos=True) for k in ("inputs", "targets")},
      postprocess_fn=synthetic.strip_text, metric_fns=[synthetic.accuracy])


_register_mock_task()


@pytest.fixture(scope="module")
def frozen():
  model = T5(CONFIG, prompt_length=2)
  tokens = jnp.ones((1, 4), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, tokens)["params"]
  prompt = params["encoder"].pop("prompt")["prompt"]["prompt"]
  return model, params, prompt


def make_evaluator(frozen, task, mode, **kwargs):
  model, params, _ = frozen
  labels = {}
  if mode == "rank_classification":
    labels = {task: synthetic.task_labels(task) if task.startswith("synthetic_") else MOCK_LABELS}
  return evaluator_lib.PromptEvaluator(model, params, task, LENGTHS, 8, num_examples=8,
                                       task_labels=labels, **kwargs)


@pytest.mark.parametrize("mode", ["greedy", "rank_classification"])
@pytest.mark.parametrize("task", synthetic.synthetic_task_names())
def test_every_synthetic_task_evaluates(frozen, task, mode):
  if mode == "rank_classification" and not synthetic.task_labels(task):
    pytest.skip(f"{task} has no label set to rank")
  results = make_evaluator(frozen, task, mode).evaluate(frozen[2])
  metrics = results[task]
  assert set(metrics) == set(synthetic.synthetic_task_info(task).metric_names)
  assert all(0.0 <= v <= 100.0 for v in metrics.values())


@pytest.mark.parametrize("mode", ["greedy", "rank_classification"])
def test_predictions_of_different_token_lengths_are_scored(frozen, mode, monkeypatch):
  # The scorer is scripted so the predictions really have two token lengths (a random model
  # tends to predict one class); seqio then scores them against the targets.
  vocabulary = get_byte_vocabulary()
  rows = evaluator_lib.encode_labels(MOCK_LABELS, vocabulary, LENGTHS["targets"])
  first_is_a = lambda tokens: np.asarray(tokens)[:, 0] != vocabulary.encode("a")[0]
  monkeypatch.setattr(evaluator_lib.scoring, "rank_classify",
                      lambda model, params, tokens, candidates: first_is_a(tokens).astype(int))
  monkeypatch.setattr(evaluator_lib.scoring, "greedy_decode",
                      lambda model, params, tokens, length, eos: rows[first_is_a(tokens).astype(int)])
  results = make_evaluator(frozen, MOCK_TASK, mode).evaluate(frozen[2])
  # Correct: examples 1, 2, 3 and 6 of 6.
  np.testing.assert_allclose(results[MOCK_TASK]["accuracy"], 100 * 4 / 6)
