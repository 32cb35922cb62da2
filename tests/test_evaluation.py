"""seqio evaluation of prompts: every task and both evaluation modes, labels of any length."""

from __future__ import annotations

import collections
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf

from spot_jax.evaluation import evaluator as evaluator_lib
from spot_jax.models import T5, get_config
from spot_jax.models.prompts import with_prompt
from tasks.lookup import register_all_tasks
from tasks import postprocessors, synthetic
from tasks.vocabulary import get_byte_vocabulary

register_all_tasks()

CONFIG = get_config("tiny_byte", emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32)
MOCK_TASK = "test_eval_mock_rte"
MOCK_LABELS = ("entailment", "not_entailment")  # 10 and 14 bytes: predictions of two lengths.
# Inputs starting with "a" are predicted `entailment` by the scripted scorer below.
MOCK_EXAMPLES = [("a one", "entailment"), ("b two", "not_entailment"),
                 ("a three", "entailment"), ("b four", "entailment"),
                 ("a five", "not_entailment"), ("b six", "not_entailment")]


def register_mock_task(name, examples, postprocess_fn=synthetic.strip_text,
                       metric_fns=(synthetic.accuracy,)) -> str:
  """A byte-vocabulary seqio task with (inputs, targets) string pairs in every split."""
  if name in seqio.TaskRegistry.names():
    return name
  vocabulary = get_byte_vocabulary()

  def dataset_fn(split, shuffle_files=False, seed=None):
    del split, shuffle_files, seed
    inputs, targets = zip(*examples)
    return tf.data.Dataset.from_tensor_slices({"inputs": list(inputs), "targets": list(targets)})

  seqio.TaskRegistry.add(
      name, seqio.FunctionDataSource(dataset_fn, splits=("validation", "test")),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features={k: seqio.Feature(vocabulary, add_eos=True) for k in ("inputs", "targets")},
      postprocess_fn=postprocess_fn, metric_fns=list(metric_fns))
  return name


register_mock_task(MOCK_TASK, MOCK_EXAMPLES)


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
  return evaluator_lib.PromptEvaluator(model, params, task, 8, mode=mode, num_examples=8,
                                       task_labels=labels, **kwargs)


@pytest.mark.parametrize("mode", ["beam_search", "greedy", "rank_classification"])
@pytest.mark.parametrize("task", synthetic.synthetic_task_names())
def test_every_synthetic_task_evaluates(frozen, task, mode):
  if mode == "rank_classification" and not synthetic.task_labels(task):
    pytest.skip(f"{task} has no label set to rank")
  results = make_evaluator(frozen, task, mode).evaluate(with_prompt({}, frozen[2]))
  metrics = results[task]
  assert set(metrics) == set(synthetic.synthetic_task_info(task).metric_names)
  assert all(0.0 <= v <= 100.0 for v in metrics.values())


@pytest.mark.parametrize("mode", ["greedy", "rank_classification"])
def test_predictions_of_different_token_lengths_are_scored(frozen, mode, monkeypatch):
  # The scorer is scripted so the predictions really have two token lengths (a random model
  # tends to predict one class); seqio then scores them against the targets.
  vocabulary = get_byte_vocabulary()
  rows = evaluator_lib.encode_labels(MOCK_LABELS, vocabulary, 15)
  first_is_a = lambda tokens: np.asarray(tokens)[:, 0] != vocabulary.encode("a")[0]
  monkeypatch.setattr(evaluator_lib.scoring, "rank_classify",
                      lambda model, params, tokens, candidates: first_is_a(tokens).astype(int))
  monkeypatch.setattr(
      evaluator_lib.scoring, "greedy_decode",
      lambda model, params, tokens, length, eos: rows[first_is_a(tokens).astype(int)])
  results = make_evaluator(frozen, MOCK_TASK, mode).evaluate(with_prompt({}, frozen[2]))
  # Correct: examples 1, 2, 3 and 6 of 6.
  np.testing.assert_allclose(results[MOCK_TASK]["accuracy"], 100 * 4 / 6)


def test_length_buckets():
  assert [evaluator_lib.length_bucket(n, 100) for n in (0, 1, 8, 9, 16, 17, 64, 65, 99)] == [
      8, 8, 8, 16, 16, 32, 64, 100, 100]
  tokens = np.zeros((5, 40), np.int32)
  for row, length in enumerate([3, 40, 12, 9, 30]):
    tokens[row, :length] = 7
  batches = evaluator_lib.bucketed_batches(np.arange(5) + 100, tokens, batch_size=2)
  shapes = [(list(i), t.shape, n) for i, t, n in batches]
  assert shapes == [([100], (2, 8), 1), ([103, 102], (2, 16), 2), ([104], (2, 32), 1),
                    ([101], (2, 40), 1)]
  assert not batches[0][1][1].any()  # the padding row of a partial batch.


# Inputs of 3 to 130 bytes, targets of 1 to 20: none is truncated, five length buckets.
LONG_TASK = register_mock_task("test_eval_long", [
    ("x" * 3, "a"), ("y" * 20, "bb"), ("z" * 130, "c" * 20), ("w" * 40, "dd"), ("v" * 9, "e")],
    metric_fns=[synthetic.exact_match])


def test_no_truncation_and_one_compilation_per_bucket(frozen, caplog):
  import collections, logging, re
  evaluator = make_evaluator(frozen, LONG_TASK, "greedy")
  shapes = evaluator.tasks[LONG_TASK].evaluator.model_feature_shapes
  assert shapes["encoder_input_tokens"] == (131,) and shapes["decoder_target_tokens"] == (21,)
  jax.clear_caches()
  with jax.log_compiles(True), caplog.at_level(logging.WARNING,
                                               logger="jax._src.interpreters.pxla"):
    evaluator.evaluate(with_prompt({}, frozen[2]), step=1)
    evaluator.evaluate(with_prompt({}, frozen[2] + 1.0), step=2)
  buckets = {t.shape for _, t, _ in evaluator.tasks[LONG_TASK].batches}
  assert buckets == {(8, 8), (8, 16), (8, 32), (8, 64), (8, 131)}  # inputs + EOS
  compiled = collections.Counter(re.findall(r"Compiling (jit\([^)]*\))", caplog.text))
  assert compiled["jit(greedy_decode)"] == len(buckets), compiled


def test_predictions_in_split_order_postprocessed(frozen, monkeypatch):
  vocabulary = get_byte_vocabulary()
  rows = evaluator_lib.encode_labels(MOCK_LABELS, vocabulary)
  monkeypatch.setattr(
      evaluator_lib.scoring, "greedy_decode",
      lambda model, params, tokens, length, eos: np.pad(
          rows[(np.asarray(tokens)[:, 0] != vocabulary.encode("a")[0]).astype(int)],
          ((0, 0), (0, length - rows.shape[1]))))
  evaluator = make_evaluator(frozen, MOCK_TASK, "greedy", split="test")
  predicted = evaluator.predict(with_prompt({}, frozen[2]))[MOCK_TASK]
  assert [p for _, p in predicted] == ["entailment", "not_entailment"] * 3
  assert [e["inputs_pretokenized"].decode() for e, _ in predicted] == [i for i, _ in MOCK_EXAMPLES]


def _lenient(postprocess) -> bool:
  return postprocess(" positive", label_names=("negative", "positive")) != -1


@pytest.mark.skipif(_lenient(postprocessors.class_id),
                    reason="tasks.postprocessors.class_id still strips text; T5's strict "
                           "string_label_to_class_id comes with the task-fidelity change")
def test_greedy_output_with_a_leading_space_is_wrong(frozen, monkeypatch):
  """T5 scores the decoded string as is: ' positive' is no label (t5 postprocessors
  string_label_to_class_id), so greedy evaluation counts it wrong."""
  labels = ("negative", "positive")
  task = register_mock_task(
      "test_eval_strict_sentiment", [("good", "positive"), ("bad", "negative")],
      postprocess_fn=functools.partial(postprocessors.class_id, label_names=labels),
      metric_fns=[lambda targets, predictions: {"accuracy": 100.0 * float(np.mean(
          np.asarray(targets) == np.asarray(predictions)))}])
  vocabulary = get_byte_vocabulary()
  spaced = evaluator_lib.encode_labels([" positive"], vocabulary)  # [1, 10]

  def decode(model, params, tokens, length, eos):
    row = np.zeros(length, np.int32)
    row[:min(length, spaced.shape[1])] = spaced[0, :length]
    return np.tile(row, (len(tokens), 1))

  monkeypatch.setattr(evaluator_lib.scoring, "greedy_decode", decode)
  results = make_evaluator(frozen, task, "greedy").evaluate(with_prompt({}, frozen[2]))
  assert results[task]["accuracy"] == 0.0


def test_glue_and_superglue_submission_formats(tmp_path):
  from spot_jax.evaluation import submission
  ex = lambda i: {"idx": np.int32(i)}
  nli2 = ("entailment", "not_entailment")
  name, data, invalid = submission.format_predictions(
      "glue_rte", [(ex(0), 1), (ex(1), 0), (ex(2), -1)], nli2)
  assert name == "RTE.tsv" and invalid == 1
  assert data.decode() == ("index\tprediction\n0\tnot_entailment\n1\tentailment\n"
                           "2\tentailment\n")
  _, data, _ = submission.format_predictions("glue_sst2", [({}, 1), ({}, 0)],
                                             ("negative", "positive"))
  assert data.decode() == "index\tprediction\n0\t1\n1\t0\n"  # no idx: the split position.
  _, data, _ = submission.format_predictions("glue_stsb", [(ex(3), 4.25)], None)
  assert data.decode() == "index\tprediction\n3\t4.250\n"
  rows = lambda d: [json.loads(line) for line in d.decode().splitlines()]
  _, data, _ = submission.format_predictions("super_glue_boolq", [(ex(7), 1)], ("False", "True"))
  assert rows(data) == [{"idx": 7, "label": "true"}]
  _, data, _ = submission.format_predictions("super_glue_copa", [(ex(0), 1)],
                                             ("choice1", "choice2"))
  assert rows(data) == [{"idx": 0, "label": 1}]
  _, data, _ = submission.format_predictions("super_glue_cb", [(ex(0), 2)],
                                             ("entailment", "contradiction", "neutral"))
  assert rows(data) == [{"idx": 0, "label": "neutral"}]
  with pytest.raises(ValueError, match="in neither leaderboard"):
    submission.format_predictions("synthetic_sentiment_a", [], ("negative", "positive"))
  written = submission.write_predictions(
      str(tmp_path / "mix"), {"glue_rte": [(ex(0), 0)], "super_glue_rte": [(ex(0), 1)]},
      {"glue_rte": nli2, "super_glue_rte": nli2})
  assert written == {"glue_rte": (str(tmp_path / "mix" / "RTE.tsv"), 0),
                     "super_glue_rte": (str(tmp_path / "mix" / "RTE.jsonl"), 0)}
  assert rows((tmp_path / "mix" / "RTE.jsonl").read_bytes()) == [
      {"idx": 0, "label": "not_entailment"}]


def _preprocessed(preprocess, raw):
  """tfds-like SuperGLUE examples (nested `idx`) through one of our T5 preprocessors, as the
  numpy dicts `Evaluator.predict` pairs with predictions."""
  from tasks import preprocessors

  def spec(value):  # strings, lists of strings (any length), numpy scalars.
    if isinstance(value, dict):
      return {k: spec(v) for k, v in value.items()}
    if isinstance(value, (str, list)):
      return tf.TensorSpec([None] if isinstance(value, list) else [], tf.string)
    return tf.TensorSpec([], tf.as_dtype(value.dtype))

  ds = tf.data.Dataset.from_generator(lambda: iter(raw), output_signature=spec(raw[0]))
  return list(getattr(preprocessors, preprocess)(ds, benchmark="").as_numpy_iterator())


def _multirc_raw(paragraph, question, answer, label=-1):
  return {"paragraph": f"p{paragraph}", "question": f"q{question}", "answer": f"a{answer}",
          "label": np.int64(label), "idx": {"paragraph": np.int32(paragraph),
                                            "question": np.int32(question),
                                            "answer": np.int32(answer)}}


def test_multirc_submission_groups_answers_by_question_and_paragraph():
  from spot_jax.evaluation import submission
  # The test split's order: paragraph 3 (questions 10, 11), then paragraph 0 (question 12).
  ids = [(3, 10, 0), (3, 10, 1), (3, 10, 2), (3, 11, 3), (3, 11, 4), (0, 12, 5)]
  examples = _preprocessed("multirc", [_multirc_raw(*i) for i in ids])
  decoded = ["True", "False", "True", "maybe", "False", "True"]  # "maybe": invalid.
  predictions = [(e, postprocessors.multirc_value(text, example=e))
                 for e, text in zip(examples, decoded)]
  name, data, invalid = submission.format_predictions("super_glue_multirc", predictions,
                                                      ("False", "True"))
  assert name == "MultiRC.jsonl" and invalid == 1
  lines = [json.loads(line) for line in data.decode().splitlines()]
  assert lines == [
      {"idx": 3, "passage": {"questions": [
          {"idx": 10, "answers": [{"idx": 0, "label": 1}, {"idx": 1, "label": 0},
                                  {"idx": 2, "label": 1}]},
          {"idx": 11, "answers": [{"idx": 3, "label": 0}, {"idx": 4, "label": 0}]}]}},
      {"idx": 0, "passage": {"questions": [
          {"idx": 12, "answers": [{"idx": 5, "label": 1}]}]}}]
  # Round trip: every (paragraph, question, answer) once, with its prediction (invalid -> 0).
  flat = {(line["idx"], q["idx"], a["idx"]): a["label"]
          for line in lines for q in line["passage"]["questions"] for a in q["answers"]}
  assert flat == {i: max(p["value"], 0) for i, (_, p) in zip(ids, predictions)}
  with pytest.raises(ValueError, match="two predictions for paragraph 3, question 10, answer 0"):
    submission.format_predictions("super_glue_multirc", predictions + predictions[:1], None)
  with pytest.raises(ValueError, match="lack idx/paragraph, idx/question, idx/answer"):
    submission.format_predictions("super_glue_multirc", [({"idx": np.int32(0)}, 1)], None)


def _record_raw(passage, query, answers):
  return {"passage": f"Passage {passage}\n@highlight\nIts highlight",
          "query": f"query {query} @placeholder", "entities": ["Alice", "Bob", "Carol"],
          "answers": answers, "idx": {"passage": np.int32(passage), "query": np.int32(query)}}


@pytest.mark.parametrize("split", ["test", "validation"])
def test_record_submission_one_answer_per_query(split):
  from spot_jax.evaluation import submission
  # Test queries carry no answers (one `<unk>` example each); validation queries one example
  # per reference answer, all with the same inputs.
  answers = {"test": [[], [], []], "validation": [["Alice", "Alice Smith"], ["Bob"],
                                                 ["Carol", "Carol", "C."]]}[split]
  raw = [_record_raw(5, 20, answers[0]), _record_raw(5, 21, answers[1]),
         _record_raw(6, 22, answers[2])]
  examples = _preprocessed("record", raw)
  assert len(examples) == (3 if split == "test" else 6)
  # Greedy decoding sees the same inputs for every example of a query; the first one counts
  # (T5's deduplicate_metric), a later different text (impossible for one input) is ignored.
  decoded = {20: ["Alice", "Alice again"], 21: ["Bob"], 22: ["Carol", "x", "y"]}
  seen = collections.Counter()
  predictions = []
  for e in examples:
    query = int(e["idx/query"])
    predictions.append((e, postprocessors.record_answers(decoded[query][seen[query]],
                                                         example=e)))
    seen[query] += 1
  name, data, invalid = submission.format_predictions("super_glue_record", predictions, None)
  assert name == "ReCoRD.jsonl" and invalid == 0
  lines = [json.loads(line) for line in data.decode().splitlines()]
  assert lines == [{"idx": 20, "label": "Alice"}, {"idx": 21, "label": "Bob"},
                   {"idx": 22, "label": "Carol"}]
  # Round trip: one line per (passage, query) group the postprocessor's targets name.
  groups = {postprocessors.record_answers(None, example=e, is_target=True)["group"]
            for e in examples}
  assert {line["idx"] for line in lines} == {query for _, query in groups}
  assert len(lines) == len(groups)
  clash = dict(examples[0], **{"idx/passage": np.int32(9)})
  with pytest.raises(ValueError, match="query 20 appears under passages 5 and 9"):
    submission.format_predictions("super_glue_record", predictions + [(clash, {"value": "z"})],
                                  None)


def test_predict_decodes_as_far_as_the_labelled_split(frozen, monkeypatch):
  """Test targets are `<unk>` placeholders: predict decodes to the given lengths instead."""
  lengths = []

  def decode(model, params, tokens, length, eos):
    lengths.append(length)
    return np.zeros((len(tokens), length), np.int32)

  monkeypatch.setattr(evaluator_lib.scoring, "greedy_decode", decode)
  evaluator = make_evaluator(frozen, MOCK_TASK, "greedy", split="test")
  assert evaluator.target_lengths() == {MOCK_TASK: 15}  # "not_entailment" + EOS.
  trainables = with_prompt({}, frozen[2])
  evaluator.predict(trainables)
  assert set(lengths) == {15}
  lengths.clear()
  evaluator.predict(trainables, decode_lengths={MOCK_TASK: 40})
  assert set(lengths) == {40}


GLUE_LEADERBOARD = {"AX.tsv", "CoLA.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "MRPC.tsv", "QNLI.tsv",
                    "QQP.tsv", "RTE.tsv", "SST-2.tsv", "STS-B.tsv"}  # WNLI is not registered.
SUPERGLUE_LEADERBOARD = {"AX-b.jsonl", "AX-g.jsonl", "BoolQ.jsonl", "CB.jsonl", "COPA.jsonl",
                         "MultiRC.jsonl", "ReCoRD.jsonl", "RTE.jsonl", "WiC.jsonl", "WSC.jsonl"}


def test_every_leaderboard_file_is_named_as_the_leaderboards_name_it(tmp_path):
  """t5's prepare_glue_submission FILE_NAME_MAP, plus the diagnostics AX, AX-b, AX-g."""
  from spot_jax.evaluation import submission
  from tasks.lookup import task_labels
  ex = {"idx": np.int32(0), "idx/paragraph": 0, "idx/question": 0, "idx/answer": 0,
        "idx/passage": 0, "idx/query": 0}
  keys = [k for k in submission.LEADERBOARD_FILES if k != "glue_mnli"]
  written = submission.write_predictions(
      str(tmp_path), {k: [(ex, {"value": 0} if "multirc" in k else "x" if "record" in k else 0)]
                      for k in keys},
      {k: task_labels("glue_mnli" if "mnli" in k else k) for k in keys})
  names = {p.name for p in tmp_path.iterdir()}
  assert names == GLUE_LEADERBOARD | SUPERGLUE_LEADERBOARD
  assert len(written) == len(names)
  rows = lambda name: [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
  # WSC's predictions are wsc_simple's 0/1 (no label set declared): written True/False.
  assert rows("WSC.jsonl") == [{"idx": 0, "label": "False"}]
  assert rows("BoolQ.jsonl") == [{"idx": 0, "label": "false"}]
  assert rows("AX-b.jsonl") == [{"idx": 0, "label": "entailment"}]
  assert (tmp_path / "AX.tsv").read_text() == "index\tprediction\n0\tentailment\n"
  assert (tmp_path / "MNLI-mm.tsv").read_text() == "index\tprediction\n0\tentailment\n"
  with pytest.raises(ValueError, match="both make RTE.tsv"):
    submission.write_predictions(str(tmp_path / "two"), {"glue_rte": [(ex, 0)],
                                                         "glue_rte_taskless": [(ex, 0)]},
                                 {"glue_rte": ("a", "b"), "glue_rte_taskless": ("a", "b")})
  assert submission.leaderboard_file("dpr") is None


@pytest.mark.slow
def test_glue_submission_writes_the_leaderboard_file_set(tmp_path, monkeypatch, t5_vocab_path):
  """`spot-jax eval --predictions_out` on the GLUE mixture and on SuperGLUE RTE mixed with DPR,
  over mock test splits (TFDS mock data through the real task loaders)."""
  import tensorflow_datasets as tfds
  from spot_jax.train.evaluate import EvalConfig, write_test_predictions
  monkeypatch.setenv("SPOT_JAX_VOCAB", str(t5_vocab_path))
  prompt = tmp_path / "prompt.npy"
  np.save(prompt, np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32))
  if "test_mix_rte_dpr" not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add("test_mix_rte_dpr", ["super_glue_rte", "dpr"], default_rate=1.0)
  with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
    for task, expected, skipped in (
        ("spot_mix_glue", GLUE_LEADERBOARD, []),
        ("test_mix_rte_dpr", {"RTE.jsonl", "AX-b.jsonl", "AX-g.jsonl"}, ["dpr"])):
      out = tmp_path / task
      cfg = EvalConfig(task=task, prompt_file=str(prompt), model="tiny", batch_size=2,
                       prompt_length=2)
      written, not_written = write_test_predictions(cfg, str(out))
      assert {p.name for p in out.iterdir()} == expected and not_written == skipped
      for path, _ in written.values():
        lines = open(path).read().splitlines()
        if path.endswith(".tsv"):
          assert lines[0] == "index\tprediction" and len(lines) == 3, path
        else:
          assert len(lines) == 2 and all(set(json.loads(x)) == {"idx", "label"} for x in lines)


def test_evaluators_of_one_task_split_and_size_share_one_seqio_evaluator(frozen):
  """Building the seqio.Evaluator (reading and preprocessing the split) happens once per task,
  split and example count in a process; a second PromptEvaluator reuses it and scores the
  same, another count or a task registered again gets its own."""
  task = "synthetic_sentiment_b"
  first = make_evaluator(frozen, task, "rank_classification")
  second = make_evaluator(frozen, task, "rank_classification")
  assert second.tasks[task].evaluator is first.tasks[task].evaluator
  trainables = with_prompt({}, frozen[2])
  assert first.evaluate(trainables) == second.evaluate(trainables)
  other = evaluator_lib.PromptEvaluator(*frozen[:2], task, 8, mode="rank_classification",
                                        num_examples=4,
                                        task_labels={task: synthetic.task_labels(task)})
  assert other.tasks[task].evaluator is not first.tasks[task].evaluator
  name = register_mock_task("test_eval_reregistered", MOCK_EXAMPLES)
  before = make_evaluator(frozen, name, "greedy").tasks[name].evaluator
  seqio.TaskRegistry.remove(name)
  register_mock_task(name, MOCK_EXAMPLES)
  assert make_evaluator(frozen, name, "greedy").tasks[name].evaluator is not before
