"""The affinity paper's and TuPaTE's task pools: groups, sources, formats, metrics, goldens.

Every new task runs through its real source (TFDS `mock_data`; a tiny `datasets.DatasetDict`
saved to a temporary directory for Hugging Face tasks; temporary JSONL for file tasks), its
preprocessors, the T5 vocabulary, the encoder-decoder feature converter, its postprocessor and
its metrics. Golden input/target strings of one hand-made example per task are in
tests/golden/pool_task_strings.json (written by scripts/generate/make_pool_goldens.py, checked by hand).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from tasks import hf_source, registry, sources

datasets = pytest.importorskip("datasets")

_ROOT = Path(__file__).resolve().parents[1]
_FIXTURE_VOCAB = _ROOT.parent / "shared" / "fixtures" / "t5_vocab" / "sentencepiece.model"
GOLDEN = Path(__file__).parent / "golden" / "pool_task_strings.json"
LENGTHS = {"inputs": 128, "targets": 128}  # Random mock tag sequences are long.
POOL_TASKS = [i.name for i in registry.all_infos()
              if i.module in ("affinity_pool", "tupate_pool")]

_S = datasets.Value("string")
_I = datasets.Value("int64")


def _labels(*names):
  return datasets.ClassLabel(names=list(names))


def _tags(*names):
  return datasets.Sequence(datasets.ClassLabel(names=list(names)))


_WORDS = datasets.Sequence(_S)
# One raw example per Hugging Face task, with (a subset of) the dataset's real features.
HF_ROWS = {
    "scitail": ({"premise": "Plants need light.", "hypothesis": "Light helps plants.",
                 "label": "entails"}, {"premise": _S, "hypothesis": _S, "label": _S}),
    "sick": ({"sentence_A": "A man is singing", "sentence_B": "Nobody sings", "label": 2,
              "relatedness_score": 2.5},
             {"sentence_A": _S, "sentence_B": _S,
              "label": _labels("entailment", "neutral", "contradiction"),
              "relatedness_score": datasets.Value("float32")}),
    "emotion": ({"text": "i feel great", "label": 1}, {"text": _S, "label": _I}),
    "rotten_tomatoes": ({"text": "a dull film", "label": 0},
                        {"text": _S, "label": _labels("neg", "pos")}),
    "amazon_polarity": ({"title": "Great", "content": "Works well", "label": 1},
                        {"title": _S, "content": _S, "label": _I}),
    "dbpedia_14": ({"title": "Ulm", "content": "Ulm is a city.", "label": 8},
                   {"title": _S, "content": _S, "label": _I}),
    "hate_speech18": ({"text": "have a nice day", "label": 0, "user_id": 7},
                      {"text": _S, "label": _I, "user_id": _I}),
    "hate_speech_offensive": ({"tweet": "you are fine", "class": 2, "count": 3},
                              {"tweet": _S, "class": _I, "count": _I}),
    "atis": ({"text": "flights from boston to denver", "intent": "flight",
              "slots": "O O B-fromloc O B-toloc"},
             {"text": _S, "intent": _S, "slots": _S}),
    "emo": ({"text": "so happy today", "label": 1}, {"text": _S, "label": _I}),
    "app_reviews": ({"package_name": "a.b", "review": "crashes a lot", "date": "2017",
                     "star": 2}, {"package_name": _S, "review": _S, "date": _S, "star": _I}),
    "duorc_s": ({"plot": "Ann sails to Crete.", "question": "Where does Ann sail?",
                 "answers": ["Crete", "to Crete"], "no_answer": False},
                {"plot": _S, "question": _S, "answers": datasets.Sequence(_S),
                 "no_answer": datasets.Value("bool")}),
    "duorc_p": ({"plot": "Bob stays home.", "question": "Who is the villain?",
                 "answers": [], "no_answer": True},
                {"plot": _S, "question": _S, "answers": datasets.Sequence(_S),
                 "no_answer": datasets.Value("bool")}),
    "swag": ({"startphrase": "She opens the door. She", "sent1": "She opens the door.",
              "sent2": "She", "ending0": "walks in.", "ending1": "flies.",
              "ending2": "melts.", "ending3": "sings a door.", "label": 0},
             {"startphrase": _S, "sent1": _S, "sent2": _S, "ending0": _S, "ending1": _S,
              "ending2": _S, "ending3": _S, "label": _I}),
    "quail": ({"context": "Tom was late.", "question": "Why?",
               "answers": ["traffic", "rain", "sleep", "not enough information"],
               "correct_answer_id": 3},
              {"context": _S, "question": _S, "answers": datasets.Sequence(_S),
               "correct_answer_id": _I}),
    "wnut17_ner": ({"tokens": ["Go", "Spurs", "!"], "ner_tags": [0, 5, 0]},
                   {"tokens": _WORDS,
                    "ner_tags": _tags("O", "B-corporation", "I-corporation",
                                      "B-creative-work", "I-creative-work", "B-group",
                                      "I-group", "B-location", "I-location", "B-person",
                                      "I-person", "B-product", "I-product")}),
    "conll2000_chunk": ({"tokens": ["He", "reckons", "the", "deficit"], "pos_tags": [0, 1, 2, 3],
                         "chunk_tags": [1, 3, 1, 2]},
                        {"tokens": _WORDS, "pos_tags": datasets.Sequence(_I),
                         "chunk_tags": _tags("O", "B-NP", "I-NP", "B-VP")}),
}
_ONTONOTES_FEATURES = {
    "document_id": _S,
    "sentences": [{"part_id": _I, "words": _WORDS,
                   "pos_tags": _tags("XX", "``", "NNP", "VBZ", "."),
                   "named_entities": _tags("O", "B-PERSON", "I-PERSON", "B-GPE")}]}
_ONTONOTES_ROW = {"document_id": "bc/cctv/00/cctv_0001", "sentences": [
    {"part_id": 0, "words": ["``", "Mary", "Lu", "smiles", "."], "pos_tags": [1, 2, 2, 3, 4],
     "named_entities": [0, 1, 2, 0, 0]},
    {"part_id": 0, "words": ["Paris", "."], "pos_tags": [2, 4], "named_entities": [3, 0]}]}
HF_ROWS["conll2012_pos"] = (_ONTONOTES_ROW, _ONTONOTES_FEATURES)
HF_ROWS["ontonotes_ner"] = (_ONTONOTES_ROW, _ONTONOTES_FEATURES)

_QA_ROW = {"question": "Who wrote Hamlet?", "context": "Hamlet is a play by Shakespeare.",
           "answers": ["Shakespeare", "William Shakespeare"]}
FILE_ROWS = {
    "laptop14": {"sentence": "The battery lasts long", "aspect": "battery",
                 "polarity": "positive"},
    "pmb_semtag": {"tokens": ["Tom", "is", "n't", "here"], "tags": ["PER", "NOW", "NOT", "REL"]},
    "mit_movie_ner": {"tokens": ["films", "with", "tom", "hanks"],
                      "tags": ["O", "O", "B-Actor", "I-Actor"]},
    "fce_error_detection": {"tokens": ["I", "has", "a", "cat"], "tags": ["c", "i", "c", "c"]},
    "conll2004_ner": {"tokens": ["Smith", "visited", "New", "York"],
                      "tags": ["B-Peop", "O", "B-Loc", "I-Loc"]},
    **{name: _QA_ROW for name in ("news_qa", "hotpot_qa", "wikihop", "comqa", "cq")},
}
# Raw TFDS examples (for the goldens; the source is exercised with mock_data).
TFDS_ROWS = {
    "imdb": {"text": "A fine film.", "label": 1},
    "trec": {"text": "Who is Tom?", "label-coarse": 3, "label-fine": 0},
    "scicite": {"string": "as in prior work [1]", "label": 1, "sectionName": "intro"},
    "ag_news": {"title": "Rain", "description": "It rains.", "label": 0},
    "squad_v2": {"question": "Why?", "context": "No reason given.", "title": "t", "id": "1",
                 "answers": {"text": tf.constant([], tf.string),
                             "answer_start": tf.constant([], tf.int32)},
                 "is_impossible": True},
    "conll2003_pos": {"tokens": ["EU", "rejects", "German", "call", "."],
                      "pos": [22, 42, 16, 21, 7], "ner": [3, 0, 7, 0, 0],
                      "chunks": [11, 21, 11, 12, 0]},
    "conll2003_ner": {"tokens": ["EU", "rejects", "German", "call", "."],
                      "pos": [22, 42, 16, 21, 7], "ner": [3, 0, 7, 0, 0],
                      "chunks": [11, 21, 11, 12, 0]},
    "glue_wnli": {"sentence1": "The cat sat.", "sentence2": "It sat.", "label": 1, "idx": 0},
}
NUM_ROWS = 10  # Enough for the 90/10 slices of single-split datasets.


_SEQIO_TEST_VOCAB = Path(seqio.__file__).parent / "test_data" / "sentencepiece" / "sentencepiece.model"


def _vocab_path() -> str:
  """$SPOT_JAX_VOCAB, else the T5 vocabulary fixture, else seqio's small test vocabulary."""
  if os.environ.get("SPOT_JAX_VOCAB"):
    return os.environ["SPOT_JAX_VOCAB"]
  return str(_FIXTURE_VOCAB if _FIXTURE_VOCAB.exists() else _SEQIO_TEST_VOCAB)


REAL_VOCAB = _vocab_path() != str(_SEQIO_TEST_VOCAB)


def _base_splits(info) -> set[str]:
  return {s.split("[")[0] for s in info.splits.values()}


@pytest.fixture(scope="module", autouse=True)
def pool_data(tmp_path_factory):
  """Saved Hugging Face datasets, JSONL files, the T5 vocabulary; every task registered."""
  hf_dir = tmp_path_factory.mktemp("hf")
  data_dir = tmp_path_factory.mktemp("jsonl")
  for name, (row, features) in HF_ROWS.items():
    info = registry.get_info(name)
    split_data = datasets.Dataset.from_list([row] * NUM_ROWS,
                                            features=datasets.Features(features))
    path = hf_dir / info.hf_id.replace("/", "__") / (info.hf_config or "default")
    if not path.exists():
      datasets.DatasetDict({s: split_data for s in _base_splits(info)}).save_to_disk(str(path))
  for name, row in FILE_ROWS.items():
    info = registry.get_info(name)
    (data_dir / name).mkdir()
    for split in set(info.splits.values()):
      (data_dir / name / f"{split}.jsonl").write_text(json.dumps(row) + "\n")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("SPOT_JAX_VOCAB", _vocab_path())
    mp.setenv(hf_source.HF_DIR_ENV_VAR, str(hf_dir))
    mp.setenv(sources.DATA_DIR_ENV_VAR, str(data_dir))
    registry.register_all()
    yield {"hf": hf_dir, "jsonl": data_dir}


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------- groups / registry
def test_groups_have_the_papers_sizes_and_every_task_is_registered():
  sizes = {"affinity_pool": 44, "affinity_targets": 6, "tupate_cr": 11, "tupate_qa": 11}
  registered = set(seqio.TaskRegistry.names())
  for group, size in sizes.items():
    members = registry.tasks_in_group(group)
    assert len(members) == len(set(members)) == size, group
    for name in members:
      assert name in registered and registry.taskless_name(name) in registered
  assert not set(registry.tasks_in_group("affinity_pool")) & set(
      registry.tasks_in_group("affinity_targets"))
  assert set(registry.tasks_in_group("affinity_targets")) == {
      "glue_sst2", "glue_mrpc", "glue_qqp", "scitail", "imdb", "conll2004_ner"}
  # Issue 15's list of tasks missing before the pools, every one present now.
  for name in ("imdb", "scitail", "sick", "trec", "scicite", "emotion", "rotten_tomatoes",
               "squad_v2", "duorc_s", "duorc_p", "swag", "abductive_nli", "ag_news",
               "amazon_polarity", "dbpedia_14", "hate_speech18", "hate_speech_offensive",
               "atis", "laptop14", "emo", "app_reviews", "quail", "wnut17_ner",
               "conll2000_chunk", "conll2003_pos", "conll2003_ner", "pmb_semtag",
               "mit_movie_ner", "fce_error_detection", "conll2004_ner", "conll2012_pos",
               "ontonotes_ner"):
    info = registry.get_info(name)
    assert {"affinity_pool", "affinity_targets"} & set(info.groups), name
  tupate = set(registry.tasks_in_group("tupate_cr") + registry.tasks_in_group("tupate_qa"))
  assert {"squad_v2", "duorc_p", "duorc_s", "wikihop", "comqa", "cq", "news_qa",
          "hotpot_qa", "scitail", "glue_wnli"} <= tupate
  # WNLI stays out of SPoT's suites and mixtures.
  assert "glue_wnli" not in registry.glue_tasks()
  assert all("glue_wnli" not in m for m in registry.mixture_families().values())


@pytest.mark.parametrize("group,count", [("affinity_pool", 44), ("affinity_targets", 6),
                                         ("tupate_cr", 11), ("tupate_qa", 11)])
def test_tasks_list_prints_each_pool_with_its_sources(group, count, capsys):
  from spot_jax.cli import main as cli
  assert cli.main(["tasks", "list", "--group", group]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split()[:2] == ["task", "source"]
  rows = {line.split()[0]: line.split() for line in lines[1:]}
  assert list(rows) == registry.tasks_in_group(group) and len(rows) == count
  for name, row in rows.items():
    assert row[1] == registry.get_info(name).source


def test_sources_are_visible_and_offline():
  expected = {"imdb": "tfds:imdb_reviews/plain_text:1.0.0",
              "scitail": "hf:allenai/scitail/tsv_format",
              "ontonotes_ner": "hf:ontonotes/conll2012_ontonotesv5/english_v4",
              "laptop14": "file:laptop14/<split>.jsonl", "glue_wnli": "tfds:glue/wnli:2.0.0"}
  for name, source in expected.items():
    assert registry.get_info(name).source == source
  for name in POOL_TASKS:
    info = registry.get_info(name)
    assert info.source.split(":")[0] in ("tfds", "hf", "file"), name
    assert name in (set(HF_ROWS) | set(FILE_ROWS) | set(TFDS_ROWS)), name


def test_pinned_tfds_versions_exist(tmp_path):
  for name in POOL_TASKS:
    for tfds_name in registry.get_info(name).tfds_names:
      assert str(tfds.builder(tfds_name, data_dir=str(tmp_path)).version) == \
          tfds_name.rsplit(":", 1)[1]


def test_study_specs_use_the_registry_pools():
  from spot_jax.study import spec as study_spec
  affinity = study_spec.load_spec(str(_ROOT / "gin_configs" / "study" / "affinity_pool.yaml"))
  assert list(affinity.sources) == list(registry.AFFINITY_POOL)
  assert list(affinity.targets) == list(registry.AFFINITY_TARGETS)
  assert (affinity.max_train_examples, affinity.max_eval_examples) == (50000, 10000)
  assert affinity.run_bindings()["MAX_TRAIN_EXAMPLES"] == 50000
  assert "base.gin" in str(affinity.model)
  tupate = study_spec.load_spec(str(_ROOT / "gin_configs" / "study" / "tupate.yaml"))
  pool = list(registry.TUPATE_CR + registry.TUPATE_QA)
  assert list(tupate.sources) == pool and list(tupate.targets) == pool


# ----------------------------------------------------------------------------- end to end
def _first_example(name: str, split: str = "validation") -> dict:
  task = seqio.get_mixture_or_task(name)
  ds = task.get_dataset(sequence_length=LENGTHS, split=split, shuffle=False)
  return next(ds.as_numpy_iterator())


def _decode(ids: np.ndarray) -> str:
  vocab = seqio.get_mixture_or_task(POOL_TASKS[0]).output_features["targets"].vocabulary
  return vocab.decode([int(i) for i in ids if int(i) != 1])


def _perfect_score(name: str, example: dict) -> dict[str, float]:
  """Metrics of the task when the model generates exactly the target.

  With the T5 vocabulary the generated text is the decoded target ids (so tags and labels
  must survive SentencePiece); seqio's test vocabulary cannot represent them all, so then it
  is the target text itself.
  """
  task = seqio.get_mixture_or_task(name)
  target_text = _text(example["targets_pretokenized"])
  target = task.postprocess_fn(target_text, example=example, is_target=True)
  generated = _decode(example["targets"]) if REAL_VOCAB else target_text
  prediction = task.postprocess_fn(generated, example=example, is_target=False)
  scores = {}
  for fn in task.metric_fns:
    scores.update(fn([target], [prediction]))
  return scores


@pytest.mark.parametrize("name", POOL_TASKS)
def test_pool_task_runs_through_source_preprocessor_converter_and_metric(name):
  info = registry.get_info(name)
  if info.tfds_names:
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
      example = _first_example(name)
      taskless = _first_example(info.taskless_name)
  else:
    example, taskless = _first_example(name), _first_example(info.taskless_name)
  inputs = _text(example["inputs_pretokenized"])
  assert inputs.startswith(info.benchmark + " ")
  assert _text(taskless["inputs_pretokenized"]) == inputs[len(info.benchmark) + 1:]
  for key in ("inputs", "targets"):
    assert example[key].dtype == np.int32 and example[key][-1] == 1  # EOS
  batch = next(seqio.EncDecFeatureConverter(pack=False)(
      tf.data.Dataset.from_tensors({k: example[k] for k in ("inputs", "targets")}),
      LENGTHS).as_numpy_iterator())
  assert batch["decoder_loss_weights"].sum() == len(example["targets"])
  scores = _perfect_score(name, example)
  assert scores and all(math.isfinite(v) for v in scores.values()), scores
  for metric in ("accuracy", "token_accuracy", "em", "f1"):
    if metric in scores and _text(example["targets_pretokenized"]) != "<unk>":
      assert scores[metric] == pytest.approx(100.0), (metric, scores)


def test_malformed_or_wrong_outputs_score_zero():
  example = _first_example("conll2004_ner")
  task = seqio.get_mixture_or_task("conll2004_ner")
  target = task.postprocess_fn(_text(example["targets_pretokenized"]), example=example,
                               is_target=True)
  for generated in ("B-Peop O", "nonsense", ""):
    prediction = task.postprocess_fn(generated, example=example, is_target=False)
    assert [fn([target], [prediction]) for fn in task.metric_fns] == [
        {"token_accuracy": 0.0}, {"span_f1": 0.0}]
  imdb = seqio.get_mixture_or_task("imdb")
  assert imdb.postprocess_fn("banana", example={}, is_target=False) == -1


def test_squad_v2_unanswerable_is_scored_as_the_official_script():
  task = seqio.get_mixture_or_task("duorc_p")
  example = _first_example("duorc_p")  # The hand-made row has no answer.
  assert _text(example["targets_pretokenized"]) == "unanswerable"
  target = task.postprocess_fn("unanswerable", example=example, is_target=True)
  assert target == [""]
  [squad] = task.metric_fns
  assert squad([target], [task.postprocess_fn("unanswerable", example=example)]) == {
      "em": 100.0, "f1": 100.0}
  assert squad([target], [task.postprocess_fn("Crete", example=example)]) == {
      "em": 0.0, "f1": 0.0}


def test_ontonotes_documents_become_one_example_per_sentence():
  ds = seqio.get_mixture_or_task("ontonotes_ner").get_dataset(
      sequence_length=LENGTHS, split="validation", shuffle=False)
  got = [(_text(e["inputs_pretokenized"]), _text(e["targets_pretokenized"]))
         for e in ds.take(2).as_numpy_iterator()]
  assert got == [("ontonotes_ner sentence: `` Mary Lu smiles .", "O B-PERSON I-PERSON O O"),
                 ("ontonotes_ner sentence: Paris .", "B-GPE O")]


def test_held_out_slices_split_a_single_split_dataset():
  source = seqio.get_mixture_or_task("hate_speech18").source
  train = list(source.get_dataset("train", shuffle=False).as_numpy_iterator())
  validation = list(source.get_dataset("validation", shuffle=False).as_numpy_iterator())
  assert (len(train), len(validation)) == (9, 1)


# ----------------------------------------------------------------------------- data sources
def test_jsonl_overrides_a_hugging_face_source(pool_data):
  path = pool_data["jsonl"] / "emotion"
  path.mkdir(exist_ok=True)
  (path / "validation.jsonl").write_text(json.dumps({"text": "so sad", "label": 0}) + "\n")
  try:
    example = _first_example("emotion")
    assert _text(example["inputs_pretokenized"]) == "emotion text: so sad"
    assert _text(example["targets_pretokenized"]) == "sadness"
    assert seqio.get_mixture_or_task("emotion").source.num_input_examples("validation") == 1
  finally:
    (path / "validation.jsonl").unlink()


def test_missing_hugging_face_data_names_the_dataset_and_the_fetch_command(monkeypatch,
                                                                           tmp_path):
  monkeypatch.setenv(hf_source.HF_DIR_ENV_VAR, str(tmp_path))  # No saved copy.
  monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
  source = seqio.get_mixture_or_task("wnut17_ner").source
  with pytest.raises(sources.MissingDataError) as error:
    source.get_dataset("train")
  message = str(error.value)
  assert "'leondz/wnut_17'" in message and "config None" in message
  assert "datasets.load_dataset('leondz/wnut_17')" in message
  assert "wnut17_ner/train.jsonl" in message
  assert hf_source.fetch_command("ibm/duorc", "SelfRC") == (
      "python -c \"import datasets; datasets.load_dataset('ibm/duorc', 'SelfRC')\"")
  assert os.environ.get("HF_HUB_OFFLINE") == "1" or datasets.config.HF_HUB_OFFLINE


# ----------------------------------------------------------------------------- goldens
def _tensors(value):
  if isinstance(value, dict):
    return {k: _tensors(v) for k, v in value.items()}
  return tf.convert_to_tensor(value)


def golden_strings() -> dict[str, list[str]]:
  """[inputs, targets] of the first hand-made example of every pool task."""
  out = {}
  for name in POOL_TASKS:
    if name in TFDS_ROWS:
      task = seqio.get_mixture_or_task(name)
      row = _tensors(TFDS_ROWS[name])
      # Unknown lengths, as TFDS yields them (a statically empty list would not be).
      spec = tf.nest.map_structure(lambda t: tf.TensorSpec([None] * t.shape.rank, t.dtype), row)
      ds = tf.data.Dataset.from_generator(lambda r=row: iter([r]), output_signature=spec)
      for prep in task.preprocessors:
        if prep is seqio.preprocessors.tokenize:
          break
        ds = prep(ds)
      example = next(ds.as_numpy_iterator())
      out[name] = [_text(example["inputs"]), _text(example["targets"])]
    else:
      example = _first_example(name)
      out[name] = [_text(example["inputs_pretokenized"]), _text(example["targets_pretokenized"])]
  return out


def test_golden_input_and_target_strings():
  expected = json.loads(GOLDEN.read_text())
  assert golden_strings() == expected


def test_squad_v2_metric_by_hand():
  from tasks import metrics
  # Answerable: max over answers; "in Crete" vs "Crete": P = 1/2, R = 1 -> F1 = 2/3.
  assert metrics.squad_v2([["Crete", "to Crete"]], ["in Crete"]) == {
      "em": 0.0, "f1": pytest.approx(100 * 2 / 3)}
  # Unanswerable ([""] or no answers): only the empty prediction scores.
  assert metrics.squad_v2([[""], []], ["", "Crete"]) == {"em": 50.0, "f1": 50.0}
  # T5's SQuAD v1.1 metric gives F1 0 to an empty answer predicted empty; v2 gives 1.
  assert metrics.squad([[""]], [""])["f1"] == 0.0
