"""Losses, greedy decoding and rank classification against direct computations."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.evaluation import scoring
from spot_jax.models import T5, get_config
from spot_jax.models.losses import sequence_log_likelihood, summed_loss
from spot_jax.models.prompts import with_prompt

CONFIG = get_config("tiny", vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32)


def test_summed_loss_matches_hand_computation():
  logits = jnp.asarray([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])
  targets = jnp.asarray([[2, 0]])
  loss, metrics = summed_loss(logits, targets, z_loss=1e-4)
  log_z = np.log(np.exp([2.0, 0.0, -1.0]).sum())
  np.testing.assert_allclose(loss, (log_z + 1.0) + 1e-4 * log_z**2, rtol=1e-6)
  np.testing.assert_allclose(metrics["z_loss"], 1e-4 * log_z**2, rtol=1e-6)
  assert metrics["num_tokens"] == 1 and metrics["token_accuracy"] == 0
  np.testing.assert_allclose(sequence_log_likelihood(logits, targets), [-(log_z + 1.0)],
                             rtol=1e-6)


def model_and_params(prompt_length=3):
  model = T5(CONFIG, prompt_length)
  tokens = jnp.ones((1, 4), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, tokens)["params"]
  encoder_tokens = jnp.asarray(np.random.default_rng(0).integers(2, 64, (4, 9)), jnp.int32)
  return model, params, encoder_tokens.at[2, 6:].set(0)


@pytest.mark.parametrize("prompt_length", [0, 3])
def test_cached_greedy_decode_equals_uncached_step_by_step_argmax(prompt_length):
  model, params, enc = model_and_params(prompt_length)
  decoded = scoring.greedy_decode(model, params, enc, max_length=7)
  apply = jax.jit(model.apply)
  prefix = np.zeros((4, 7), np.int32)
  for i in range(7):
    logits = apply({"params": params}, enc, jnp.asarray(scoring.shift_right(jnp.asarray(prefix))))
    prefix[:, i] = np.asarray(jnp.argmax(logits[:, i], -1))
  expected = scoring.mask_after_eos(jnp.asarray(prefix))
  np.testing.assert_array_equal(decoded, expected)
  np.testing.assert_array_equal(scoring.greedy_decode_uncached(model, params, enc, 7), expected)


@pytest.mark.parametrize("remat", [False, True])
def test_decode_step_logits_equal_the_full_decoder(remat):
  """Teacher-forced: the cached step's logits at each position equal the uncached ones."""
  model, params, enc = model_and_params()
  model = T5(CONFIG.replace(remat=remat), model.prompt_length)
  targets = jnp.asarray(np.random.default_rng(1).integers(2, 64, (4, 6)), jnp.int32)
  encoded, mask = jax.jit(functools.partial(model.apply, method=T5.encode))(
      {"params": params}, enc)
  full = jax.jit(functools.partial(model.apply, method=T5.decode))(
      {"params": params}, encoded, mask, scoring.shift_right(targets))
  cache = jax.jit(scoring.init_decode_cache, static_argnums=(0, 4))(model, params, encoded,
                                                                    mask, 6)
  assert cache["decoder"]["layers_0"]["self_attention"]["cached_key"].shape == (4, 6, 2, 8)
  inputs = scoring.shift_right(targets)
  step = jax.jit(functools.partial(model.apply, method=T5.decode_step, mutable=["cache"]),
                 static_argnums=4)
  for i in range(6):
    logits, variables = step({"params": params, "cache": cache}, encoded, mask,
                             inputs[:, i:i + 1], 6)
    cache = variables["cache"]
    np.testing.assert_allclose(logits[:, 0], full[:, i], rtol=1e-5, atol=1e-5)
  assert int(cache["decoder"]["position"]) == 6


def test_greedy_decode_stops_when_every_row_has_ended():
  # Identical rows all emit the same first token; calling it EOS ends every row at step 1.
  model, params, enc = model_and_params()
  same = jnp.broadcast_to(enc[0], enc.shape)
  first = int(scoring.greedy_decode(model, params, same, max_length=1)[0, 0])
  tokens = np.asarray(scoring.greedy_decode(model, params, same, max_length=5, eos_id=first))
  np.testing.assert_array_equal(tokens, np.tile([first, 0, 0, 0, 0], (4, 1)))
  np.testing.assert_array_equal(
      tokens, scoring.greedy_decode_uncached(model, params, same, 5, eos_id=first))


def test_mask_after_eos():
  tokens = jnp.asarray([[5, 1, 7, 1], [1, 3, 3, 3], [4, 4, 4, 4]])
  np.testing.assert_array_equal(scoring.mask_after_eos(tokens),
                                [[5, 1, 0, 0], [1, 0, 0, 0], [4, 4, 4, 4]])


def test_rank_classification_equals_per_candidate_likelihood():
  model, params, enc = model_and_params()
  candidates = jnp.asarray([[5, 1, 0], [7, 8, 1], [9, 1, 0]], jnp.int32)
  scores = scoring.rank_classification_scores(model, params, enc, candidates)
  assert scores.shape == (4, 3)
  apply = jax.jit(model.apply)
  for c in range(3):
    targets = jnp.broadcast_to(candidates[c], (4, 3))
    logits = apply({"params": params}, enc, scoring.shift_right(targets), targets)
    np.testing.assert_allclose(scores[:, c], sequence_log_likelihood(logits, targets),
                               rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(scoring.rank_classify(model, params, enc, candidates),
                                np.argmax(scores, -1))
  # The prompt is part of scoring: a different prompt changes the scores.
  other = with_prompt(params, params["encoder"]["prompt"]["prompt"]["prompt"] + 1.0)
  assert float(jnp.abs(scoring.rank_classification_scores(model, other, enc, candidates)
                       - scores).max()) > 1e-4


def test_checkpoint_score_is_the_mean_of_the_task_metrics():
  """SPoT footnote 5: a task's score averages its metrics; a mixture's averages its tasks."""
  from spot_jax.evaluation.scores import MEAN_OF_METRICS, select_score
  mrpc = {"glue_mrpc": {"accuracy": 80.0, "f1": 90.0}}
  stsb = {"glue_stsb": {"pearson": 70.0, "spearman": 80.0}}
  assert select_score(mrpc, None) == (MEAN_OF_METRICS, 85.0)
  assert select_score(stsb, None) == (MEAN_OF_METRICS, 75.0)
  # A mixture: tasks weigh equally, whatever their number of metrics.
  mixture = {**mrpc, **stsb, "super_glue_rte": {"accuracy": 50.0}}
  assert select_score(mixture, None) == pytest.approx((MEAN_OF_METRICS, (85 + 75 + 50) / 3))
  # EVAL_METRIC picks one metric, averaged over the tasks reporting it.
  assert select_score(mixture, "accuracy") == ("accuracy", 65.0)
  with pytest.raises(ValueError, match="EVAL_METRIC 'f2' is not reported; available: "
                                       r"\['accuracy', 'f1', 'pearson', 'spearman'\]"):
    select_score(mixture, "f2")
  with pytest.raises(ValueError, match="No metrics"):
    select_score({"glue_mrpc": {}}, None)


BEAM_GOLDEN = Path(__file__).parent / "golden" / "beam_search_golden.npz"


def markov_tokens_to_logits(golden, rows, beams):
  """The golden's hand-made decoder with a cache: the row bias, and the running sum of the
  inputs' history embeddings (which must follow each beam's parent)."""
  row_bias = jnp.repeat(jnp.asarray(golden["markov_row_bias"], jnp.float32), beams, axis=0)
  last = jnp.asarray(golden["markov_last"], jnp.float32)
  history = jnp.asarray(golden["markov_history"], jnp.float32)

  def tokens_to_logits(ids, cache):
    summed = cache["history"] + history[ids[:, 0]]
    return row_bias + last[ids[:, 0]] + summed, {"history": summed, "step": cache["step"] + 1}

  cache = {"history": jnp.zeros((rows * beams, last.shape[0])), "step": jnp.zeros((), jnp.int32)}
  return tokens_to_logits, cache


@pytest.mark.parametrize("beams", [1, 3])
def test_beam_search_matches_t5x_golden_on_a_decoder_with_history(beams):
  """scripts/generate/make_beam_golden.py: t5x.decoding.beam_search's algorithm in NumPy."""
  golden = np.load(BEAM_GOLDEN)
  rows, length = golden["markov_greedy"].shape
  tokens_to_logits, cache = markov_tokens_to_logits(golden, rows, beams)
  seqs, scores = jax.jit(lambda c: scoring.beam_search(tokens_to_logits, c, rows, length,
                                                       num_beams=beams))(cache)
  np.testing.assert_array_equal(seqs, golden[f"markov_beam{beams}_seqs"])
  # Scores are summed float32 log-probabilities of O(1-10): 1e-4 relative is float32 noise.
  np.testing.assert_allclose(scores, golden[f"markov_beam{beams}_scores"], rtol=1e-4, atol=1e-4)


def test_one_beam_search_differs_from_greedy_on_some_rows_of_the_golden():
  golden = np.load(BEAM_GOLDEN)
  greedy = golden["markov_greedy"]
  tokens_to_logits, cache = markov_tokens_to_logits(golden, greedy.shape[0], 1)
  seqs, _ = scoring.beam_search(tokens_to_logits, cache, greedy.shape[0], greedy.shape[1])
  differs = np.any(np.asarray(seqs[:, -1]) != greedy, axis=1)
  assert differs.any() and not differs.all()


def test_beam_search_matches_t5x_golden_on_the_tiny_model():
  from flax import traverse_util
  golden = np.load(BEAM_GOLDEN)
  params = traverse_util.unflatten_dict(
      {k[len("param/"):]: jnp.asarray(v) for k, v in golden.items() if k.startswith("param/")},
      sep="/")
  model = T5(CONFIG, 0)
  enc = jnp.asarray(golden["model_encoder_tokens"])
  length = golden["model_greedy"].shape[1]
  for beams in (1, 2):
    tokens, scores = scoring.beam_decode(model, params, enc, length, num_beams=beams)
    np.testing.assert_array_equal(tokens, golden[f"model_beam{beams}_seqs"][:, -1])
    np.testing.assert_allclose(scores, golden[f"model_beam{beams}_scores"][:, -1], rtol=1e-4,
                               atol=1e-4)
  np.testing.assert_array_equal(scoring.greedy_decode(model, params, enc, length),
                                golden["model_greedy"])
  # Length normalisation lets 1-beam search keep a sequence greedy decoding does not produce.
  assert np.any(np.asarray(scoring.beam_decode(model, params, enc, length)[0])
                != golden["model_greedy"])


def _summary():
  from spot_jax.train.run_dir import RunSummary
  return RunSummary(task="spot_mix_glue", model={}, prompt_length=3, seed=0, batch_size=2,
                    feature_lengths={"inputs": 8, "targets": 4}, train_steps=1500, key_step=500)


def test_nan_evaluation_never_becomes_the_best_step(caplog):
  """t5's metric_group_max fills NaN with -1e9: {500: NaN, 1000: 59, 1500: 84.5} -> 1500."""
  from spot_jax.evaluation.scores import record_evaluation
  summary = _summary()
  with caplog.at_level("WARNING"):
    for step, value in ((500, float("nan")), (1000, 59.0), (1500, 84.5)):
      record_evaluation(summary, step, {"glue_stsb": {"pearson": value, "spearman": value}},
                        None, "RUN")
  assert (summary.best_step, summary.best_score) == (1500, 84.5)
  assert "RUN: step 500: the mean score of glue_stsb is NaN" in caplog.text
  assert "step 1000" not in caplog.text
  # A NaN after a number never replaces it, and a NaN first is replaced by any number.
  record_evaluation(summary, 2000, {"glue_stsb": {"pearson": float("nan"), "spearman": 1.0}},
                    None)
  assert summary.best_step == 1500


def test_an_all_nan_run_keeps_its_first_evaluation_as_the_best_step():
  from spot_jax.evaluation.scores import record_evaluation
  summary = _summary()
  for step in (500, 1000):
    record_evaluation(summary, step, {"glue_stsb": {"pearson": float("nan")}}, None)
  assert summary.best_step == 500


def test_mnli_score_is_mean_of_matched_and_mismatched():
  """t5's eval_utils: MNLIm and MNLImm form one group (compute_avg_glue averages it once)."""
  from spot_jax.evaluation.evaluator import split_evaluations
  from spot_jax.evaluation.scores import group_scores, select_score
  from tasks import registry

  class Task:
    name, splits = "glue_mnli", tuple(registry.get_info("glue_mnli").splits)

  class Plain:
    name, splits = "glue_rte", ("train", "validation", "test")

  assert split_evaluations(Task, "validation") == [
      ("glue_mnli_matched", "validation_matched"), ("glue_mnli_mismatched", "validation_mismatched")]
  assert split_evaluations(Task, "test") == [
      ("glue_mnli_matched", "test_matched"), ("glue_mnli_mismatched", "test_mismatched")]
  assert split_evaluations(Task, "validation_mismatched") == [("glue_mnli", "validation_mismatched")]
  assert split_evaluations(Plain, "validation") == [("glue_rte", "validation")]
  results = {"glue_mnli_matched": {"accuracy": 80.0}, "glue_mnli_mismatched": {"accuracy": 70.0},
             "glue_rte": {"accuracy": 50.0}}
  assert group_scores(results) == {"glue_mnli": 75.0, "glue_rte": 50.0}
  assert select_score(results, None)[1] == pytest.approx((75.0 + 50.0) / 2)
  assert select_score(results, "accuracy")[1] == pytest.approx((75.0 + 50.0) / 2)


def test_each_task_of_a_mixture_keeps_its_own_best_step_in_run_json(tmp_path):
  from spot_jax.evaluation.scores import record_evaluation
  from spot_jax.train import run_dir
  summary = _summary()
  evaluations = {500: {"glue_mnli_matched": {"accuracy": 60.0},
                       "glue_mnli_mismatched": {"accuracy": 62.0},
                       "glue_stsb": {"pearson": float("nan"), "spearman": float("nan")}},
                 1000: {"glue_mnli_matched": {"accuracy": 70.0},
                        "glue_mnli_mismatched": {"accuracy": 50.0},
                        "glue_stsb": {"pearson": 40.0, "spearman": 42.0}}}
  for step, results in evaluations.items():
    record_evaluation(summary, step, results, None)
  # The mixture's mean is NaN at 500 (one NaN task), so 1000 is its best step; MNLI's own best
  # (the mean of matched and mismatched: 61 at 500, 60 at 1000) is 500.
  assert summary.best_step == 1000
  assert summary.task_best_steps == {"glue_mnli": {"step": 500, "score": 61.0},
                                     "glue_stsb": {"step": 1000, "score": 41.0}}
  run_dir.write_summary(str(tmp_path), summary)
  assert run_dir.read_summary(str(tmp_path)).task_best_steps == summary.task_best_steps
