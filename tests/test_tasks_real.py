"""Real SPoT tasks: registration, text formats through seqio, missing data, mixture rates.

TFDS tasks read `tfds.testing.mock_data` (random examples from each builder's features);
file-backed tasks read small JSONL files written from their registry schema.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from tasks import mixtures, preprocessors, registry, sources

_FIXTURE_VOCAB = (Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "t5_vocab"
                  / "sentencepiece.model")
LENGTHS = {"inputs": 64, "targets": 16}
# SPoT's tasks (the affinity / TuPaTE pools are tested in test_tasks_pools.py).
SPOT_TASKS = [i.name for i in registry.all_infos() if i.module in ("glue", "spot_suite")]
UNK = "<unk>"

# `<benchmark> key1: key2: ...` of every task ("-" = no benchmark word): the inputs start
# with the benchmark and first key, and the keys appear in this order.
EXPECTED_FORMAT = {
    "glue_cola": "cola sentence:",
    "glue_sst2": "sst2 sentence:",
    "glue_mrpc": "mrpc sentence1: sentence2:",
    "glue_qqp": "qqp question1: question2:",
    "glue_stsb": "stsb sentence1: sentence2:",
    "glue_mnli": "mnli hypothesis: premise:",
    "glue_qnli": "qnli question: sentence:",
    "glue_rte": "rte sentence1: sentence2:",
    "super_glue_boolq": "boolq passage: question:",
    "super_glue_cb": "cb hypothesis: premise:",
    "super_glue_copa": "copa choice1: choice2: premise: question:",
    "super_glue_multirc": "multirc question: answer: paragraph:",
    "super_glue_record": "record query: entities: passage:",
    "super_glue_rte": "rte hypothesis: premise:",
    "super_glue_wic": "wic sentence1: sentence2: word:",
    "super_glue_wsc": "wsc:",
    "dpr": "wsc:",
    "c4_prefix_lm": "-",
    "docnli": "doc_nli hypothesis: premise:",
    "yelp_polarity": "yelp_polarity text:",
    "cxc": "cxc sentence1: sentence2:",
    "squad": "squad question: context:",
    "drop": "drop question: context:",
    "winogrande": "winogrande sentence: choice1: choice2:",
    "hellaswag": "hellaswag context: choice1:",
    "cosmos_qa": "cosmos_qa context: question: choice1:",
    "race": "race article: question: choice1:",
    "anli": "anli_r hypothesis: context:",  # anli_r1 / anli_r2 / anli_r3 by round.
    "snli": "snli hypothesis: premise:",
    "cr": "cr sentence:",
    "goemotions": "goemotions text:",
    "sentiment140": "sentiment140 text:",
    "mrqa_squad": "squad question: context:",
    "mrqa_news_qa": "news_qa question: context:",
    "mrqa_trivia_qa": "trivia_qa question: context:",
    "mrqa_search_qa": "search_qa question: context:",
    "mrqa_hotpot_qa": "hotpot_qa question: context:",
    "mrqa_natural_questions": "natural_questions question: context:",
    "abductive_nli": "abductive_nli observation1: observation2: choice1: choice2:",
    "piqa": "piqa goal: choice1: choice2:",
    "social_iqa": "social_iqa context: question: choice1: choice2: choice3:",
    "wmt14_en_de": "wmt14_en_de translate English to German:",
    "wmt14_en_fr": "wmt14_en_fr translate English to French:",
    "wmt16_en_ro": "wmt16_en_ro translate English to Romanian:",
    "aeslc": "aeslc summarize:",
    "billsum": "billsum summarize:",
    "cnn_dailymail": "cnn_dailymail summarize:",
    "gigaword": "gigaword summarize:",
    "multi_news": "multi_news summarize:",
    "newsroom": "newsroom summarize:",
    "samsum": "samsum summarize:",
    "xsum": "xsum summarize:",
    "wiki_lingua_en": "wiki_lingua_en summarize:",
    "gem_common_gen": "common_gen concepts:",
    "gem_dart": "dart triples:",
    "gem_e2e_nlg": "e2e_nlg meaning_representation:",
    "gem_schema_guided_dialog": "schema_guided_dialog service: acts: context:",
    "gem_web_nlg_en": "web_nlg triples:",
    "gem_wiki_auto_asset_turk": "wiki_auto source:",
    "gem_xsum": "xsum document:",
    "gem_wiki_lingua_en": "wiki_lingua source:",
}

_BOOL = {"False", "True"}
_NLI3 = {"entailment", "neutral", "contradiction"}
_NLI2 = {"entailment", "not_entailment"}


def _choices(n: int) -> set[str]:
  return {f"choice{i}" for i in range(1, n + 1)}


LABEL_TARGETS = {
    "glue_cola": {"unacceptable", "acceptable"}, "glue_sst2": {"negative", "positive"},
    "glue_mrpc": {"not_equivalent", "equivalent"}, "glue_qqp": {"not_duplicate", "duplicate"},
    "glue_mnli": _NLI3, "glue_qnli": _NLI2, "glue_rte": _NLI2, "super_glue_boolq": _BOOL,
    "super_glue_cb": _NLI3, "super_glue_copa": _choices(2), "super_glue_multirc": _BOOL,
    "super_glue_rte": _NLI2, "super_glue_wic": _BOOL,
    "docnli": _NLI2,
    "yelp_polarity": {"negative", "positive"}, "winogrande": _choices(2),
    "hellaswag": _choices(4), "cosmos_qa": _choices(4), "race": _choices(4), "anli": _NLI3,
    "snli": _NLI3, "cr": {"negative", "positive"},
    "sentiment140": {"negative", "neutral", "positive"}, "abductive_nli": _choices(2),
    "piqa": _choices(2), "social_iqa": _choices(3),
}
SCORE_TARGETS = {"glue_stsb", "cxc"}
ANSWER_TARGETS = {"squad", "drop", "super_glue_record"} | {t for t in EXPECTED_FORMAT
                                                           if t.startswith("mrqa_")}


def _vocab_path() -> str:
  if _FIXTURE_VOCAB.exists():
    return str(_FIXTURE_VOCAB)
  return str(Path(seqio.__file__).parent / "test_data" / "sentencepiece" / "sentencepiece.model")


def _jsonl_row(schema: dict[str, str], i: int) -> dict[str, object]:
  values = {"string": f"some text {i}", "int": 1, "float": 3.14}
  return {field: values[kind] for field, kind in schema.items()}


@pytest.fixture(scope="module", autouse=True)
def data_dir(tmp_path_factory):
  """T5 vocabulary from the fixture, JSONL files for every file-backed task, all registered."""
  root = tmp_path_factory.mktemp("spot_data")
  for info in registry.all_infos():
    if not info.is_file_backed or info.name not in SPOT_TASKS:
      continue
    (root / info.name).mkdir()
    for split in set(info.splits.values()):
      rows = [_jsonl_row(dict(info.schema), i) for i in range(2)]
      (root / info.name / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("SPOT_JAX_VOCAB", _vocab_path())
    mp.setenv(sources.DATA_DIR_ENV_VAR, str(root))
    registry.register_all()
    yield root


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _dataset(name: str, split: str = "train"):
  task = seqio.get_mixture_or_task(name)
  return task.get_dataset(sequence_length=LENGTHS, split=split, shuffle=False)


# ----------------------------------------------------------------------------- registry
def test_every_registry_task_has_a_format_spec_and_is_registered():
  names = SPOT_TASKS
  assert len(names) == len(set(names))
  assert set(names) == set(EXPECTED_FORMAT)
  registered = set(seqio.TaskRegistry.names())
  for name in names:
    assert name in registered and registry.taskless_name(name) in registered


def test_groups_match_the_paper():
  sizes = {"glue": 8, "superglue": 8, "spot_sources": 16, "spot_targets": 10, "nli": 7,
           "paraphrase": 4, "sentiment": 5, "mrqa": 6, "rainbow": 6, "translation": 3,
           "summarization": 9, "gem": 8}
  for group, size in sizes.items():
    members = registry.tasks_in_group(group)
    assert len(members) == len(set(members)) == size, group
  assert len(registry.spot_sources()) == 16 and len(registry.spot_targets()) == 10
  assert "wnli" not in " ".join(registry.glue_tasks())
  assert registry.superglue_tasks(taskless=True)[0].endswith(registry.TASKLESS_SUFFIX)
  assert registry.list_tasks("all")[0] == "c4_prefix_lm"
  for name in SPOT_TASKS:
    info = registry.get_info(name)
    assert registry.get_info(info.taskless_name) is info
    assert all(name in registry.tasks_in_group(g) for g in info.groups)
    assert info.source.startswith("file:" if info.is_file_backed else "tfds:")
  with pytest.raises(KeyError, match="Unknown task group"):
    registry.tasks_in_group("nope")


def test_pinned_tfds_names_and_versions_exist(tmp_path):
  for info in registry.all_infos():
    for name in info.tfds_names:
      builder = tfds.builder(name, data_dir=str(tmp_path))  # Code only: no data is read.
      assert str(builder.version) == name.rsplit(":", 1)[1], name


def test_registration_is_idempotent():
  before = (set(seqio.TaskRegistry.names()), set(seqio.MixtureRegistry.names()))
  for module in ("tasks.glue", "tasks.spot_suite", "tasks.mixtures"):
    importlib.reload(importlib.import_module(module))
  registry.register_all()
  assert (set(seqio.TaskRegistry.names()), set(seqio.MixtureRegistry.names())) == before


def test_mnli_has_matched_and_mismatched_splits():
  splits = set(seqio.get_mixture_or_task("glue_mnli").splits)
  assert {"train", "validation", "validation_matched", "validation_mismatched",
          "test_matched", "test_mismatched"} <= splits


# ----------------------------------------------------------------------------- formats
def _check_keys(inputs: str, name: str, benchmark: str) -> None:
  words = EXPECTED_FORMAT[name].split()
  if name == "anli":  # The task word names the round.
    assert re.match(r"anli_r[123] ", inputs), inputs[:80]
    benchmark = inputs.split(" ", 1)[0]
  else:
    assert words[0] == (benchmark or "-")
  keys = words[1:]
  if not keys:
    assert inputs.startswith(f"{benchmark} "), inputs[:80]
    return
  start = f"{benchmark} {keys[0]} " if benchmark else f"{keys[0]} "
  assert inputs.startswith(start), (inputs[:80], start)
  position = 0
  for key in keys:
    found = inputs.find(f"{key} ", position)
    assert found >= position, (key, inputs[:120])
    position = found + len(key)


def _check_target(name: str, example: dict) -> None:
  target = _text(example["targets_pretokenized"])
  if name in LABEL_TARGETS:
    assert target in LABEL_TARGETS[name] | {UNK}, target
  elif name in SCORE_TARGETS:
    assert re.fullmatch(r"\d\.\d", target), target
    assert float(target) * 5 == pytest.approx(round(float(target) * 5))
  elif name in ANSWER_TARGETS:
    answers = [_text(a) for a in example["answers"]]
    assert target in answers or (target == UNK and not answers), (target, answers)
  elif name == "goemotions":
    assert target == UNK or set(target.split(", ")) <= set(preprocessors.GOEMOTIONS_LABELS)
  else:
    assert isinstance(target, str)


def _check_tokens(example: dict) -> None:
  for key in ("inputs", "targets"):
    ids = example[key]
    assert ids.dtype == np.int32 and 1 <= len(ids) <= LENGTHS[key]
    assert ids[-1] == 1  # EOS


def _check_feature_converter(example: dict) -> None:
  """The tokenised example goes through T5's unpacked encoder-decoder feature converter."""
  ds = tf.data.Dataset.from_tensors({k: example[k] for k in ("inputs", "targets")})
  batch = next(seqio.EncDecFeatureConverter(pack=False)(ds, LENGTHS).as_numpy_iterator())
  assert batch["encoder_input_tokens"].shape == (LENGTHS["inputs"],)
  for key in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights"):
    assert batch[key].shape == (LENGTHS["targets"],)
  assert batch["decoder_loss_weights"].sum() == len(example["targets"])


# T5's wsc_simple asserts that word `span2_index` of the text is the pronoun, which random mock
# text cannot satisfy; WSC is covered by test_wsc_task_trains_on_correct_referents_only and the
# goldens (tests/test_task_golden.py).
_MOCK_TASKS = [n for n in SPOT_TASKS if n != "super_glue_wsc"]


@pytest.mark.parametrize("name", _MOCK_TASKS)
def test_task_yields_formatted_tokenised_examples(name):
  info = registry.get_info(name)
  with tfds.testing.mock_data(num_examples=2, max_value=1,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    # One iterator over both variants: the same raw example, with and without benchmark.
    both = tf.data.Dataset.zip((_dataset(name), _dataset(info.taskless_name)))
    prompted, taskless = next(both.as_numpy_iterator())
  _check_feature_converter(prompted)
  _check_tokens(prompted)
  _check_tokens(taskless)
  if name == "c4_prefix_lm":  # Pure language modelling: no text fields to check.
    assert len(prompted["inputs"]) + len(prompted["targets"]) >= 3
    return
  inputs = _text(prompted["inputs_pretokenized"])
  _check_keys(inputs, name, info.benchmark)
  _check_target(name, prompted)
  # The taskless twin is the same example without the benchmark word.
  assert _text(taskless["inputs_pretokenized"]) == inputs.split(" ", 1)[1]
  assert _text(taskless["targets_pretokenized"]) == _text(prompted["targets_pretokenized"])


def test_known_values_through_file_backed_tasks(data_dir):
  """Hand-made rows check exact strings: label names, 1-based labels, rounded scores."""
  rows = {
      "cr": [{"sentence": "great phone", "label": 1}, {"sentence": "broke", "label": 0}],
      "cxc": [{"sentence1": "a dog", "sentence2": "a cat", "score": 2.93}],
      "social_iqa": [{"context": "c", "question": "q", "answerA": "x", "answerB": "y",
                      "answerC": "z", "label": 3}],
  }
  expected = {
      "cr": [("cr sentence: great phone", "positive"), ("cr sentence: broke", "negative")],
      "cxc": [("cxc sentence1: a dog sentence2: a cat", "3.0")],
      "social_iqa": [("social_iqa context: c question: q choice1: x choice2: y choice3: z",
                      "choice3")],
  }
  for name, lines in rows.items():
    (data_dir / name / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    ds = seqio.get_mixture_or_task(name).get_dataset(sequence_length=LENGTHS,
                                                     split="validation", shuffle=False)
    got = [(_text(e["inputs_pretokenized"]), _text(e["targets_pretokenized"]))
           for e in ds.as_numpy_iterator()]
    assert got == expected[name]


def test_postprocessors_and_metrics_are_wired():
  cola = seqio.get_mixture_or_task("glue_cola")
  assert cola.postprocess_fn("acceptable", example={}, is_target=True) == 1
  assert cola.postprocess_fn("banana", example={}, is_target=False) == -1
  assert [f.__name__ for f in cola.metric_fns] == ["matthews_corrcoef"]
  stsb = seqio.get_mixture_or_task("glue_stsb")
  assert stsb.postprocess_fn("3.8", example={}, is_target=False) == pytest.approx(3.8)
  squad = seqio.get_mixture_or_task("squad")
  example = {"answers": np.array([b"Paris", b"paris, France"])}
  assert squad.postprocess_fn("Paris", example=example, is_target=True) == ["Paris",
                                                                            "paris, France"]
  record = seqio.get_mixture_or_task("super_glue_record")
  target = record.postprocess_fn("x", example={"idx/passage": 1, "idx/query": 2,
                                               "answers": [b"x"]}, is_target=True)
  assert target == {"group": (1, 2), "value": ["x"]}
  sst2 = seqio.get_mixture_or_task("glue_sst2")
  assert sst2.postprocess_fn(" positive", example={}, is_target=False) == -1
  assert sst2.postprocess_fn("positive", example={}, is_target=False) == 1


# ----------------------------------------------------------------------------- missing data
def test_missing_tfds_data_says_what_to_build(tmp_path):
  seqio.set_tfds_data_dir_override(str(tmp_path))  # An empty TFDS data dir.
  try:
    for name, build in (("glue_cola", "tfds build glue/cola"),
                        ("race_taskless", "tfds build race/high && tfds build race/middle")):
      task = seqio.get_mixture_or_task(name)
      with pytest.raises(sources.MissingDataError) as error:
        task.get_dataset(sequence_length=LENGTHS, split="validation", shuffle=False)
      assert build in str(error.value) and str(tmp_path) in str(error.value)
    # Sizes stay known offline.
    assert seqio.get_mixture_or_task("glue_cola").num_input_examples("train") == 8551
    assert seqio.get_mixture_or_task("race").num_input_examples("train") == 87866
  finally:
    seqio.set_tfds_data_dir_override(None)
  info = registry.get_info("wiki_lingua_en")
  source = sources.GuardedTfdsDataSource(info.tfds_names[0], info.splits, task_name=info.name,
                                         hint=info.download, tfds_data_dir=str(tmp_path))
  assert source.num_input_examples("train") is None


def test_missing_file_data_says_what_to_download(tmp_path, monkeypatch):
  monkeypatch.setenv(sources.DATA_DIR_ENV_VAR, str(tmp_path))
  source = seqio.get_mixture_or_task("cr").source
  with pytest.raises(sources.MissingDataError) as error:
    source.get_dataset("train")
  message = str(error.value)
  assert os.path.join(str(tmp_path), "cr", "train.jsonl") in message
  assert "sentence (string)" in message and "SentEval" in message
  monkeypatch.delenv(sources.DATA_DIR_ENV_VAR)
  with pytest.raises(sources.MissingDataError, match=sources.DATA_DIR_ENV_VAR):
    source.get_dataset("train")
  with pytest.raises(ValueError, match="no split"):
    source.get_dataset("nonexistent")


def test_gin_binding_sets_the_data_dir(data_dir, monkeypatch):
  monkeypatch.delenv(sources.DATA_DIR_ENV_VAR)
  with gin.unlock_config():
    gin.bind_parameter("get_task_data_dir.path", str(data_dir))
  try:
    source = seqio.get_mixture_or_task("abductive_nli").source
    assert source.path("train") == str(data_dir / "abductive_nli" / "train.jsonl")
    assert len(list(source.get_dataset("train", shuffle=False).as_numpy_iterator())) == 2
  finally:
    gin.clear_config()


# ----------------------------------------------------------------------------- mixtures
@pytest.mark.parametrize("family", list(registry.mixture_families()))
@pytest.mark.parametrize("taskless", [False, True])
def test_mixture_rates_are_examples_proportional_capped(family, taskless, monkeypatch):
  mixture = seqio.get_mixture_or_task(registry.mixture_name(family, taskless=taskless))
  members = registry.mixture_families()[family]
  expected_names = [registry.taskless_name(t) if taskless else t for t in members]
  assert sorted(t.name for t in mixture.tasks) == sorted(expected_names)
  cap = registry.MIXING_CAP
  assert cap == 2**19
  for i, task in enumerate(mixture.tasks):
    size = registry.train_size(task.name)
    if size is None:  # Unknown size: the rate comes from the data (here: a stand-in count).
      size = [1234, 10**7][i % 2]
      monkeypatch.setattr(task, "num_input_examples", lambda split, n=size: n)
    assert mixture.get_rate(task) == pytest.approx(min(size, cap)), task.name
  if family == "all":
    c4 = seqio.get_mixture_or_task(registry.taskless_name("c4_prefix_lm") if taskless
                                   else "c4_prefix_lm")
    assert mixture.get_rate(c4) == cap


# ----------------------------------------------------------------------------- formatters
def _format(preprocessor, example: dict, **kwargs) -> list[dict]:
  ds = preprocessor(tf.data.Dataset.from_tensors(example), **kwargs)
  return [{k: _text(v) if isinstance(v, bytes) else v for k, v in ex.items()}
          for ex in ds.as_numpy_iterator()]


_WSC = [
    {"text": "Mark told Pete many lies about himself , which Pete included in his book . He "
             "should have been more truthful .", "span1_index": 0, "span1_text": "Mark",
     "span2_index": 15, "span2_text": "He", "label": 1, "idx": 0},
    {"text": "Mark told Pete many lies about himself , which Pete included in his book . He "
             "should have been more truthful .", "span1_index": 2, "span1_text": "Pete",
     "span2_index": 15, "span2_text": "He", "label": 0, "idx": 1},
]


def test_wsc_task_trains_on_correct_referents_only():
  """T5: super_glue_wsc_v102_simple_train (correct referents) / _simple_eval (all)."""
  task = seqio.get_mixture_or_task("super_glue_wsc")
  assert isinstance(task.source, sources.SplitFilteredDataSource)
  rows = {k: [ex[k] for ex in _WSC] for k in _WSC[0]}
  raw = seqio.FunctionDataSource(lambda split, shuffle_files: tf.data.Dataset.from_tensor_slices(
      rows), splits=("train", "validation"))
  wsc = sources.SplitFilteredDataSource(raw, task.source.filters)

  def formatted(split):
    ds = wsc.get_dataset(split, shuffle=False)
    for preprocessor in task.preprocessors[:1]:
      ds = preprocessor(ds)
    return [(_text(e["inputs"]), _text(e["targets"]), int(e["label"]))
            for e in ds.as_numpy_iterator()]

  inputs = ("wsc: Mark told Pete many lies about himself , which Pete included in his book . "
            "*He* should have been more truthful .")
  assert formatted("train") == [(inputs, "Mark", 1)]
  assert formatted("validation") == [(inputs, "Mark", 1), (inputs, "Pete", 0)]
  # Scored by whether the output names the candidate, against the label.
  example = {"targets_pretokenized": b"Pete", "label": 0}
  assert task.postprocess_fn("Mark", example=example) == 0
  assert task.postprocess_fn("pete", example=example) == 1
  assert task.postprocess_fn("Pete", example=example, is_target=True) == 0


def test_record_one_example_per_answer_with_t5_ids():
  example = {"passage": "Obama visited Paris.\n@highlight\nHe met Macron",
             "query": "@placeholder met Macron", "entities": ["Obama", "Paris", "Obama"],
             "answers": ["Obama", "Barack Obama"],
             "idx": {"passage": 3, "query": 7}}
  out = _format(preprocessors.record, example, benchmark="record")
  assert [o["targets"] for o in out] == ["Obama", "Barack Obama"]
  # Entities joined as given (T5 does not deduplicate them).
  assert out[0]["inputs"] == ("record query: @placeholder met Macron entities: Obama, Paris, "
                              "Obama passage: Obama visited Paris. He met Macron")
  assert {(o["idx/passage"], o["idx/query"]) for o in out} == {(3, 7)}
  assert [_text(a) for a in out[1]["answers"]] == ["Obama", "Barack Obama"]


def test_race_one_example_per_question():
  example = {"article": "A story.", "questions": ["Who?", "Where?"], "answers": ["B", "D"],
             "options": tf.ragged.constant([["a", "b", "c", "d"], ["e", "f", "g", "h"]]),
             "example_id": "x"}
  out = _format(preprocessors.race, example, benchmark="race")
  assert [o["targets"] for o in out] == ["choice2", "choice4"]
  assert out[1]["inputs"] == ("race article: A story. question: Where? choice1: e choice2: f "
                              "choice3: g choice4: h")


def test_multirc_is_question_answer_paragraph_like_t5():
  example = {"answer": "yes", "paragraph": "<b>Sent 1: </b>Hi.<br>", "question": "Q?",
             "label": 0, "idx": {"paragraph": 2, "question": 5, "answer": 1}}
  [out] = _format(preprocessors.multirc, example, benchmark="multirc")
  assert out["inputs"] == "multirc question: Q? answer: yes paragraph: Sent 1: Hi. "
  assert out["targets"] == "False"
  assert (out["idx/paragraph"], out["idx/question"], out["idx/answer"]) == (2, 5, 1)


def test_stsb_rounds_to_point_two_and_test_labels_become_unk():
  fields = (("sentence1", "sentence1"), ("sentence2", "sentence2"))
  [out] = _format(preprocessors.regress, {"sentence1": "a", "sentence2": "b", "label": 3.71},
                  benchmark="stsb", fields=fields)
  assert out["targets"] == "3.8"
  [out] = _format(preprocessors.classify, {"sentence": "x", "label": -1}, benchmark="",
                  fields=(("sentence", "sentence"),), label_names=("negative", "positive"))
  assert out == {"inputs": "sentence: x", "targets": "<unk>"}


def test_prefix_lm_cuts_contiguous_text_to_fit_the_lengths():
  ids = np.arange(10, 110, dtype=np.int32)
  ds = tf.data.Dataset.from_tensors({"targets": ids}).repeat(30)
  ds = ds.concatenate(tf.data.Dataset.from_tensors({"targets": ids[:1]}))  # Too short: dropped.
  lengths = {"inputs": 16, "targets": 8}
  splits = set()
  examples = list(preprocessors.prefix_lm(ds, sequence_length=lengths).as_numpy_iterator())
  assert len(examples) == 30
  for ex in examples:
    assert 1 <= len(ex["inputs"]) <= 15 and 1 <= len(ex["targets"]) <= 7  # EOS excluded.
    joined = np.concatenate([ex["inputs"], ex["targets"]])
    np.testing.assert_array_equal(joined, np.arange(joined[0], joined[0] + len(joined)))
    splits.add(len(ex["inputs"]))
  assert len(splits) > 1  # The cut point varies.


def test_rate_of_a_task_without_known_size_counts_its_data(tmp_path, monkeypatch):
  task = seqio.get_mixture_or_task("cr")
  assert registry.train_size("cr") is None
  assert mixtures.capped_rate(task) == 2.0  # The fixture's train.jsonl has two lines.
  monkeypatch.setenv(sources.DATA_DIR_ENV_VAR, str(tmp_path))
  with pytest.raises(sources.MissingDataError, match="mixing rate is unknown"):
    mixtures.capped_rate(task)


# ----------------------------------------------------------------------------- T5 mixtures
def test_rates_count_examples_after_preprocessing():
  """seqio weighs a cached task by its preprocessed examples: ReCoRD has one per answer."""
  mixture = seqio.get_mixture_or_task(registry.mixture_name("superglue"))
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  # t5/data/glue_utils.py SUPER_GLUE_WEIGHT_MAPPING.
  assert rates["super_glue_record"] == 138854 != registry.get_info("super_glue_record").size()
  assert rates["super_glue_wsc"] == 259
  assert rates["dpr"] == 1322
  assert rates["super_glue_multirc"] == 27243


def test_superglue_mixture_has_dpr_and_all_is_spot_appendix_b():
  assert set(registry.mixture_families()["superglue"]) == set(registry.superglue_tasks()) | {
      "dpr"}
  members = registry.mixture_families()["all"]
  assert members[0] == "c4_prefix_lm" and len(members) == len(set(members)) == 56  # C4 + 55.
  for duplicate in ("squad", "drop", "race", "super_glue_rte", "dpr"):
    assert duplicate not in members
  assert {"mrqa_squad", "glue_rte", "anli", "gem_xsum", "xsum"} <= set(members)


def test_mixture_evaluation_skips_tasks_without_the_split():
  """As seqio's get_valid_eval_tasks: DPR has no validation split, so validating the SuperGLUE
  mixture scores the eight SuperGLUE tasks only."""
  from tasks.lookup import subtasks_with_metrics
  mixture = registry.mixture_name("superglue")
  assert {t.name for t in subtasks_with_metrics(mixture)} == set(registry.superglue_tasks())
  assert "dpr" in {t.name for t in subtasks_with_metrics(mixture, split="test")}


def test_an_unreadable_vocabulary_is_one_clear_error_naming_the_fix(tmp_path):
  """A SentencePiece model that cannot be read (no GCS access, a wrong file) fails on first use
  with the path, the cause and the fix, not a storage library's traceback."""
  from tasks.vocabulary import VocabularyError, get_t5_vocabulary
  not_a_model = tmp_path / "sentencepiece.model"
  not_a_model.write_text("not a SentencePiece model")
  vocabulary = get_t5_vocabulary(str(not_a_model))
  with pytest.raises(VocabularyError, match=re.escape(str(not_a_model))) as raised:
    vocabulary.encode("hello")
  assert "$SPOT_JAX_VOCAB" in str(raised.value) and "\n" not in str(raised.value)
  assert isinstance(raised.value, OSError)  # the CLI prints it as one line (runs/program.py).
