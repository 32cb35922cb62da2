"""Metadata of the real tasks: names, sources, splits, metrics, sizes and groups.

This module is pure data (no seqio, no TensorFlow): it is cheap to import and works offline.
`tasks.glue` and `tasks.spot_suite` read it to register SPoT's seqio Tasks, `tasks.mixtures`
to register the source-mixture families, `tasks.affinity_pool` and `tasks.tupate_pool` the
task pools of the affinity paper and TuPaTE (section "task pools" at the end, and
docs/tasks.md); `register_all()` imports them all.

Task naming scheme (stable; never rename a registered task)
-----------------------------------------------------------
* GLUE:       `glue_<tfds config>`        glue_cola glue_sst2 glue_mrpc glue_qqp glue_stsb
                                          glue_mnli glue_qnli glue_rte   (WNLI is excluded)
* SuperGLUE:  `super_glue_<task>`         super_glue_boolq super_glue_cb super_glue_copa
                                          super_glue_multirc super_glue_record super_glue_rte
                                          super_glue_wic super_glue_wsc (TFDS `wsc.fixed`)
              plus `dpr` (Definite Pronoun Resolution, in T5's SuperGLUE mixture)
* Diagnostics: `glue_ax` (as MNLI), `super_glue_axb`, `super_glue_axg` (as RTE): the leaderboards'
              unlabelled diagnostic test sets, for `spot-jax eval --predictions_out`
* Other sets: `<dataset>` in snake case   c4_prefix_lm docnli yelp_polarity cxc squad drop ...
              MRQA in-domain sets:        mrqa_<tfds config> (mrqa_squad, mrqa_news_qa, ...)
              GEM sets:                   gem_<tfds config>  (gem_common_gen, gem_dart, ...)
              translation:                wmt14_en_de wmt14_en_fr wmt16_en_ro
* Taskless:   `<name>_taskless` is the same task whose inputs drop the leading `<benchmark>`
              word (keys stay), for prompts that must carry the task identity themselves.
* Mixtures:   `spot_mix_<family>` and `spot_mix_<family>_taskless` (see `mixture_families()`).

Input format: `<benchmark> key1: value1 key2: value2 ...`, keys in a fixed order (T5 uses the
dataset's feature names, sorted, for GLUE and SuperGLUE); targets are label names
(`"<unk>"` for unlabelled test examples), STS-B / CxC scores rounded to 0.2 (`"3.8"`), or
the reference text for generation tasks. MNLI is one task with splits `validation`
(= validation_matched), `validation_matched`, `validation_mismatched`, `test` (= test_matched),
`test_matched`, `test_mismatched`.

Data
----
TFDS tasks read prepared TFDS data from the TFDS data dir (`seqio.set_tfds_data_dir_override`,
as T5X's `--tfds_data_dir` sets it, else `$TFDS_DATA_DIR`, default `~/tensorflow_datasets`);
they never download on their own: run `tfds build <name>`
(datasets marked "manual" need files put in `<data_dir>/downloads/manual` first). File-backed
tasks read JSONL from `<data dir>/<task name>/<split>.jsonl`, where the data dir is the gin
binding `tasks.sources.get_data_dir.path`, else `$SPOT_JAX_DATA_DIR`; their schemas are in
`TaskInfo.schema` and the `tasks.spot_suite` docstring. A task whose data is missing fails
when it is first read, with a message that says what to download and where to put it.

Sizes are numbers of input examples from the dataset papers / TFDS catalog (RACE counts
questions, ReCoRD queries). Mixtures weight a task by its number of training examples after
preprocessing (`train_size`), as seqio does for cached tasks: `TaskInfo.train_examples` where
preprocessing changes the count (ReCoRD: one example per answer, 138,854; WSC: correct
referents only, 259; both from `t5/data/glue_utils.py:SUPER_GLUE_WEIGHT_MAPPING`), else the
training input count, so rates are known offline. `None` means unknown: the rate then comes
from the data itself.

`spot_mix_all` is SPoT Appendix B's mixture: C4 plus the 55 distinct labelled datasets of the
ten families (a dataset in several families counts once; GLUE's RTE and SuperGLUE's RTE are
one dataset, kept as `glue_rte`). The `superglue` family adds DPR as T5's SuperGLUE mixture
does (`glue_utils.SUPER_GLUE_WEIGHT_MAPPING`, `dpr_v001_simple`); DPR is no SPoT dataset, so
`all` leaves it out.

Summarization family (SPoT Appendix B, as best reconstructed; 9 sets): AESLC, BillSum,
CNN/DailyMail, Gigaword, Multi-News, Newsroom, SAMSum, XSum, WikiLingua (English).
GEM family (8): CommonGen, DART, E2E NLG, Schema-Guided Dialog, WebNLG (en), WikiAuto +
ASSET/TURK, XSum (GEM), WikiLingua (en, GEM).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Optional

TASKLESS_SUFFIX = "_taskless"
MIXTURE_PREFIX = "spot_mix_"
MIXING_CAP = 2**19  # K of SPoT's examples-proportional mixing.

_STD = MappingProxyType({"train": "train", "validation": "validation", "test": "test"})
_TRAIN_VAL = MappingProxyType({"train": "train", "validation": "validation"})
_TRAIN_TEST = MappingProxyType({"train": "train", "validation": "test", "test": "test"})
_EMPTY: Mapping[str, int] = MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """What a real task is, where its data comes from and how it is scored.

  Attributes:
    name: seqio task name (the prompted variant; `taskless_name` is the other one).
    benchmark: the leading word of the inputs ("" when the task has none).
    module: the module that registers it ("glue", "spot_suite", "affinity_pool", "tupate_pool").
    tfds_names: TFDS `name/config:version`s read (several are concatenated); empty for a
      file-backed task.
    splits: canonical split -> source split.
    metrics: names of metric functions in `tasks.metrics.METRIC_FNS`.
    sizes: known example counts per canonical split.
    schema: JSONL field -> type ("string", "int", "float", "string_list") of file-backed and
      Hugging Face tasks (the JSONL override of the latter).
    download: where to get the data (shown when it is missing).
    groups: groups the task belongs to (filled from the group tables below).
    train_examples: training examples after preprocessing, where that differs from
      `sizes["train"]` (the mixing rate's count).
    hf_id: Hugging Face dataset id read offline by `tasks.hf_source` ("" for none).
    hf_config: its config name (None for the default config).
  """

  name: str
  benchmark: str
  module: str
  tfds_names: tuple[str, ...] = ()
  splits: Mapping[str, str] = dataclasses.field(default_factory=lambda: _STD)
  metrics: tuple[str, ...] = ("accuracy",)
  sizes: Mapping[str, int] = dataclasses.field(default_factory=lambda: _EMPTY)
  schema: Mapping[str, str] = dataclasses.field(default_factory=lambda: _EMPTY)
  download: str = ""
  groups: tuple[str, ...] = ()
  train_examples: Optional[int] = None
  hf_id: str = ""
  hf_config: Optional[str] = None

  @property
  def is_file_backed(self) -> bool:
    return not self.tfds_names and not self.hf_id

  @property
  def source(self) -> str:
    """`tfds:<name>[+<name>...]`, `hf:<id>[/<config>]` or `file:<task>/<split>.jsonl`."""
    if self.hf_id:
      return f"hf:{self.hf_id}" + (f"/{self.hf_config}" if self.hf_config else "")
    if self.is_file_backed:
      return f"file:{self.name}/<split>.jsonl"
    return "tfds:" + "+".join(self.tfds_names)

  @property
  def taskless_name(self) -> str:
    return self.name + TASKLESS_SUFFIX

  def size(self, split: str = "train") -> Optional[int]:
    return self.sizes.get(split)


def _sizes(train: Optional[int] = None, validation: Optional[int] = None,
           test: Optional[int] = None, **others: int) -> Mapping[str, int]:
  pairs = {"train": train, "validation": validation, "test": test, **others}
  return MappingProxyType({k: v for k, v in pairs.items() if v is not None})


def _tfds_hint(*names: str, manual: str = "", note: str = "") -> str:
  builds = " && ".join(f"tfds build {n.split(':')[0]}" for n in names)
  text = (f"prepare TFDS data with `{builds}` (writes to $TFDS_DATA_DIR, default "
          "~/tensorflow_datasets)")
  if manual:
    text += f"; manual download first: {manual}, into <TFDS data dir>/downloads/manual"
  return text + (f"; {note}" if note else "")


def _glue(config: str, benchmark: str, metrics: tuple[str, ...], sizes: Mapping[str, int],
          splits: Mapping[str, str] = _STD) -> TaskInfo:
  name = f"glue/{config}:2.0.0"
  return TaskInfo(name=f"glue_{benchmark}", benchmark=benchmark, module="glue",
                  tfds_names=(name,), splits=splits, metrics=metrics, sizes=sizes,
                  download=_tfds_hint(name))


def _super_glue(config: str, benchmark: str, metrics: tuple[str, ...],
                sizes: Mapping[str, int], **kwargs) -> TaskInfo:
  name = f"super_glue/{config}:1.0.2"
  return TaskInfo(name=f"super_glue_{config.split('.')[0]}", benchmark=benchmark, module="glue",
                  tfds_names=(name,), metrics=metrics, sizes=sizes, download=_tfds_hint(name),
                  **kwargs)


def _tfds(name: str, tfds_names: tuple[str, ...], *, benchmark: Optional[str] = None,
          splits: Mapping[str, str] = _STD, metrics: tuple[str, ...] = ("accuracy",),
          sizes: Mapping[str, int] = _EMPTY, manual: str = "", note: str = "") -> TaskInfo:
  return TaskInfo(name=name, benchmark=name if benchmark is None else benchmark,
                  module="spot_suite", tfds_names=tfds_names, splits=splits, metrics=metrics,
                  sizes=sizes, download=_tfds_hint(*tfds_names, manual=manual, note=note))


def _file(name: str, schema: Mapping[str, str], download: str, *,
          splits: Mapping[str, str] = _TRAIN_VAL, metrics: tuple[str, ...] = ("accuracy",),
          sizes: Mapping[str, int] = _EMPTY) -> TaskInfo:
  return TaskInfo(name=name, benchmark=name, module="spot_suite", splits=splits,
                  metrics=metrics, sizes=sizes, schema=MappingProxyType(dict(schema)),
                  download=download)


_MNLI_SPLITS = MappingProxyType({
    "train": "train", "validation": "validation_matched",
    "validation_matched": "validation_matched",
    "validation_mismatched": "validation_mismatched", "test": "test_matched",
    "test_matched": "test_matched", "test_mismatched": "test_mismatched"})
_MNLI_SIZES = _sizes(392702, 9815, 9796, validation_matched=9815, validation_mismatched=9832,
                     test_matched=9796, test_mismatched=9847)

_GLUE_INFOS = (
    # Metrics: t5/data/glue_utils.py GLUE_METRICS and SUPERGLUE_METRICS.
    _glue("cola", "cola", ("matthews_corrcoef",), _sizes(8551, 1043, 1063)),
    _glue("sst2", "sst2", ("accuracy",), _sizes(67349, 872, 1821)),
    _glue("mrpc", "mrpc", ("f1_score_with_invalid", "accuracy"), _sizes(3668, 408, 1725)),
    _glue("qqp", "qqp", ("f1_score_with_invalid", "accuracy"), _sizes(363846, 40430, 390965)),
    _glue("stsb", "stsb", ("pearson_corrcoef", "spearman_corrcoef"), _sizes(5749, 1500, 1379)),
    _glue("mnli", "mnli", ("accuracy",), _MNLI_SIZES, splits=_MNLI_SPLITS),
    _glue("qnli", "qnli", ("accuracy",), _sizes(104743, 5463, 5463)),
    _glue("rte", "rte", ("accuracy",), _sizes(2490, 277, 3000)),
)

_SUPER_GLUE_INFOS = (
    _super_glue("boolq", "boolq", ("accuracy",), _sizes(9427, 3270, 3245)),
    _super_glue("cb", "cb", ("mean_3class_f1", "accuracy"), _sizes(250, 56, 250)),
    _super_glue("copa", "copa", ("accuracy",), _sizes(400, 100, 500)),
    _super_glue("multirc", "multirc", ("multirc_f1_over_all_answers", "multirc_exact_match"),
                _sizes(27243, 4848, 9693)),
    _super_glue("record", "record", ("record",), _sizes(100730, 10000, 10000),
                train_examples=138854),
    _super_glue("rte", "rte", ("accuracy",), _sizes(2490, 277, 3000)),
    _super_glue("wic", "wic", ("accuracy",), _sizes(5428, 638, 1400)),
    # T5's wsc_simple form (`t5/data/tasks.py`): inputs start "wsc:", targets are referents.
    _super_glue("wsc.fixed", "wsc:", ("accuracy",), _sizes(554, 104, 146), train_examples=259),
    # DPR, mixed into SuperGLUE as T5 does (`dpr_v001_simple`); no validation split.
    TaskInfo(name="dpr", benchmark="wsc:", module="glue",
             tfds_names=("definite_pronoun_resolution:1.1.0",),
             splits=MappingProxyType({"train": "train", "test": "test"}),
             sizes=_sizes(1322, test=564),
             download=_tfds_hint("definite_pronoun_resolution:1.1.0")),
)

# The leaderboards' diagnostic sets: unlabelled test splits, in no group or mixture;
# `spot-jax eval --predictions_out` predicts them with the prompt of the task t5 casts them as
# (`t5/data/glue_utils.py` `get_glue_text_preprocessor`: AX as MNLI, AX-b and AX-g as RTE, with
# those benchmark words). Their "accuracy" is never computed (the labels are unknown): seqio's
# Evaluator only reads tasks that declare a metric.
_TEST_ONLY = MappingProxyType({"test": "test"})
_DIAGNOSTIC_INFOS = tuple(
    TaskInfo(name=name, benchmark=benchmark, module="glue_diagnostics", tfds_names=(tfds_name,),
             splits=_TEST_ONLY, metrics=("accuracy",), sizes=_sizes(test=size),
             download=_tfds_hint(tfds_name))
    for name, benchmark, tfds_name, size in (
        ("glue_ax", "mnli", "glue/ax:2.0.0", 1104),
        ("super_glue_axb", "rte", "super_glue/axb:1.0.2", 1104),
        ("super_glue_axg", "rte", "super_glue/axg:1.0.2", 356)))

_SQUAD = ("squad",)
_GEN = ("rouge", "bleu")
_ROUGE = ("rouge",)  # prompt-tuning's summarisation tasks (`spot/data/summarization.py`).
_DEV = MappingProxyType({"train": "train", "validation": "dev", "test": "test"})

_SPOT_SUITE_INFOS = (
    # Table 2 sources not in GLUE/SuperGLUE.
    _tfds("c4_prefix_lm", ("c4/en:3.1.0",), benchmark="", splits=_TRAIN_VAL, metrics=(),
          sizes=_sizes(364868892, 364608),
          note="C4 is ~800 GB and is built with Apache Beam (see the TFDS c4 page), or copy a "
               "prepared c4/en:3.1.0 into the TFDS data dir"),
    # NLI family: prompt-tuning's task words (`spot/data/nli.py`: doc_nli, anli_r1..r3).
    _tfds("docnli", ("doc_nli:1.0.0",), benchmark="doc_nli", sizes=_sizes(942314, 234258, 267086)),
    _tfds("yelp_polarity", ("yelp_polarity_reviews:0.2.0",), splits=_TRAIN_TEST,
          sizes=_sizes(560000, 38000, 38000)),
    _file("cxc", {"sentence1": "string", "sentence2": "string", "score": "float"},
          "Crisscrossed Captions STS pairs (https://github.com/google-research-datasets/"
          "Crisscrossed-Captions, joined with the MS-COCO 2014 captions)",
          splits=_STD, metrics=("pearson_corrcoef", "spearman_corrcoef")),
    _tfds("squad", ("squad/v1.1:3.0.0",), splits=_TRAIN_VAL, metrics=_SQUAD,
          sizes=_sizes(87599, 10570)),
    _tfds("drop", ("drop:2.0.0",), splits=MappingProxyType({"train": "train", "validation": "dev"}),
          metrics=_SQUAD, sizes=_sizes(77409, 9536)),
    _tfds("winogrande", ("winogrande:1.2.0",),
          splits=MappingProxyType({"train": "train_xl", "validation": "validation",
                                   "test": "test"}),
          sizes=_sizes(40398, 1267, 1767)),
    _tfds("hellaswag", ("hellaswag:1.1.0",), sizes=_sizes(39905, 10042, 10003)),
    _tfds("cosmos_qa", ("cosmos_qa:1.0.0",), sizes=_sizes(25262, 2985, 6963)),
    _tfds("race", ("race/high:2.0.0", "race/middle:2.0.0"), splits=_DEV,
          sizes=_sizes(87866, 4887, 4934)),
    # NLI family.
    _tfds("anli", ("anli/r1:0.1.0", "anli/r2:0.1.0", "anli/r3:0.1.0"),
          sizes=_sizes(162865, 3200, 3200)),
    _tfds("snli", ("snli:1.1.0",), sizes=_sizes(550152, 10000, 10000)),
    # Sentiment family.
    _file("cr", {"sentence": "string", "label": "int"},
          "Customer Reviews (Hu & Liu 2004), e.g. SentEval's data/downstream/CR "
          "(https://github.com/facebookresearch/SentEval); label 0 = negative, 1 = positive",
          splits=_STD),
    _tfds("goemotions", ("goemotions:0.1.0",), metrics=("accuracy",),
          sizes=_sizes(43410, 5426, 5427)),
    _tfds("sentiment140", ("sentiment140:1.0.0",), splits=_TRAIN_TEST,
          sizes=_sizes(1600000, 498, 498)),
    # MRQA family: prompt-tuning's task words, the set names (`spot/data/mrqa.py`).
    _tfds("mrqa_squad", ("mrqa/squad:1.0.0",), benchmark="squad",
          splits=_TRAIN_VAL, metrics=_SQUAD, sizes=_sizes(86588, 10507)),
    _tfds("mrqa_news_qa", ("mrqa/news_qa:1.0.0",), benchmark="news_qa",
          splits=_TRAIN_VAL, metrics=_SQUAD, sizes=_sizes(74160, 4212)),
    _tfds("mrqa_trivia_qa", ("mrqa/trivia_qa:1.0.0",), benchmark="trivia_qa",
          splits=_TRAIN_VAL, metrics=_SQUAD, sizes=_sizes(61688, 7785)),
    _tfds("mrqa_search_qa", ("mrqa/search_qa:1.0.0",), benchmark="search_qa",
          splits=_TRAIN_VAL, metrics=_SQUAD, sizes=_sizes(117384, 16980)),
    _tfds("mrqa_hotpot_qa", ("mrqa/hotpot_qa:1.0.0",), benchmark="hotpot_qa",
          splits=_TRAIN_VAL, metrics=_SQUAD, sizes=_sizes(72928, 5904)),
    _tfds("mrqa_natural_questions", ("mrqa/natural_questions:1.0.0",),
          benchmark="natural_questions",
          splits=_TRAIN_VAL, metrics=_SQUAD, sizes=_sizes(104071, 12836)),
    # RAINBOW family.
    _file("abductive_nli", {"obs1": "string", "obs2": "string", "hyp1": "string",
                            "hyp2": "string", "label": "int"},
          "alphaNLI / ART (https://leaderboard.allenai.org/anli, alphanli-train-dev.zip): "
          "one JSON object per line with the official labels (1 or 2) added as `label`",
          sizes=_sizes(169654, 1532)),
    _tfds("piqa", ("piqa:1.0.0",), splits=_TRAIN_VAL, sizes=_sizes(16113, 1838)),
    _file("social_iqa", {"context": "string", "question": "string", "answerA": "string",
                         "answerB": "string", "answerC": "string", "label": "int"},
          "SocialIQa (https://leaderboard.allenai.org/socialiqa, socialiqa-train-dev.zip): "
          "one JSON object per line with the official labels (1, 2 or 3) added as `label`",
          sizes=_sizes(33410, 1954)),
    # Translation family.
    _tfds("wmt14_en_de", ("wmt14_translate/de-en:1.0.0",), metrics=("bleu",),
          sizes=_sizes(4508785, 3000, 3003)),
    _tfds("wmt14_en_fr", ("wmt14_translate/fr-en:1.0.0",), metrics=("bleu",),
          sizes=_sizes(40836715, 3000, 3003)),
    _tfds("wmt16_en_ro", ("wmt16_translate/ro-en:1.0.0",), metrics=("bleu",),
          sizes=_sizes(610320, 1999, 1999)),
    # Summarization family.
    _tfds("aeslc", ("aeslc:1.0.0",), metrics=_ROUGE, sizes=_sizes(14436, 1960, 1906)),
    _tfds("billsum", ("billsum:3.0.0",), splits=_TRAIN_TEST, metrics=_ROUGE,
          sizes=_sizes(18949, 3269, 3269)),
    _tfds("cnn_dailymail", ("cnn_dailymail:3.4.0",), metrics=_ROUGE,
          sizes=_sizes(287113, 13368, 11490)),
    _tfds("gigaword", ("gigaword:1.2.0",), metrics=_ROUGE, sizes=_sizes(3803957, 189651, 1951)),
    _tfds("multi_news", ("multi_news:2.1.0",), metrics=_ROUGE, sizes=_sizes(44972, 5622, 5622)),
    _tfds("newsroom", ("newsroom:1.0.0",), metrics=_ROUGE,
          sizes=_sizes(995041, 108837, 108862),
          manual="train.jsonl, dev.jsonl, test.jsonl from https://lil.nlp.cornell.edu/newsroom/"),
    _tfds("samsum", ("samsum:1.0.0",), metrics=_ROUGE, sizes=_sizes(14732, 818, 819),
          manual="train.json, val.json, test.json from the SAMSum corpus (arXiv:1911.12237)"),
    _tfds("xsum", ("xsum:1.1.0",), metrics=_ROUGE, sizes=_sizes(203577, 11305, 11301),
          manual="xsum-extracts-from-downloads.tar.gz (see the TFDS xsum page)"),
    _tfds("wiki_lingua_en", ("gem/wiki_lingua_english_en:1.1.0",), metrics=_ROUGE),
    # GEM family.
    _tfds("gem_common_gen", ("gem/common_gen:1.1.0",), benchmark="common_gen", metrics=_GEN,
          sizes=_sizes(67389, 993, 1497)),
    _tfds("gem_dart", ("gem/dart:1.1.0",), benchmark="dart", metrics=_GEN,
          sizes=_sizes(62659)),
    _tfds("gem_e2e_nlg", ("gem/e2e_nlg:1.1.0",), benchmark="e2e_nlg", metrics=_GEN,
          sizes=_sizes(33525, 4299, 4693)),
    _tfds("gem_schema_guided_dialog", ("gem/schema_guided_dialog:1.1.0",),
          benchmark="schema_guided_dialog", metrics=_GEN, sizes=_sizes(164982, 10000, 10000)),
    _tfds("gem_web_nlg_en", ("gem/web_nlg_en:1.1.0",), benchmark="web_nlg", metrics=_GEN,
          sizes=_sizes(35426, 1667, 1779)),
    _tfds("gem_wiki_auto_asset_turk", ("gem/wiki_auto_asset_turk:1.1.0",),
          benchmark="wiki_auto", splits=_TRAIN_VAL, metrics=_GEN, sizes=_sizes(483801)),
    _tfds("gem_xsum", ("gem/xsum:1.1.0",), benchmark="xsum", metrics=_GEN,
          sizes=_sizes(23206, 1117, 1166)),
    _tfds("gem_wiki_lingua_en", ("gem/wiki_lingua_english_en:1.1.0",), benchmark="wiki_lingua",
          metrics=_GEN),
)

# ----------------------------------------------------------------------------- groups
GLUE = tuple(i.name for i in _GLUE_INFOS)
SUPERGLUE = tuple(i.name for i in _SUPER_GLUE_INFOS if i.name != "dpr")
# SPoT Table 2: the 16 source and 10 target tasks of the transferability study.
SPOT_SOURCES = ("c4_prefix_lm", "docnli", "yelp_polarity", "glue_mnli", "glue_qqp", "glue_qnli",
                "super_glue_record", "cxc", "squad", "drop", "glue_sst2", "winogrande",
                "hellaswag", "super_glue_multirc", "cosmos_qa", "race")
SPOT_TARGETS = ("super_glue_boolq", "glue_cola", "glue_stsb", "super_glue_wic", "cr",
                "glue_mrpc", "super_glue_rte", "super_glue_wsc", "super_glue_copa",
                "super_glue_cb")
# SPoT Table 1: source-mixture families.
NLI = ("anli", "super_glue_cb", "docnli", "glue_mnli", "glue_qnli", "glue_rte", "snli")
PARAPHRASE = ("cxc", "glue_mrpc", "glue_qqp", "glue_stsb")
SENTIMENT = ("cr", "goemotions", "sentiment140", "glue_sst2", "yelp_polarity")
MRQA = ("mrqa_squad", "mrqa_news_qa", "mrqa_trivia_qa", "mrqa_search_qa", "mrqa_hotpot_qa",
        "mrqa_natural_questions")
RAINBOW = ("abductive_nli", "cosmos_qa", "hellaswag", "piqa", "social_iqa", "winogrande")
TRANSLATION = ("wmt14_en_de", "wmt14_en_fr", "wmt16_en_ro")
SUMMARIZATION = ("aeslc", "billsum", "cnn_dailymail", "gigaword", "multi_news", "newsroom",
                 "samsum", "xsum", "wiki_lingua_en")
GEM = ("gem_common_gen", "gem_dart", "gem_e2e_nlg", "gem_schema_guided_dialog",
       "gem_web_nlg_en", "gem_wiki_auto_asset_turk", "gem_xsum", "gem_wiki_lingua_en")

_FAMILIES_NO_ALL = (("glue", GLUE), ("superglue", SUPERGLUE), ("nli", NLI),
                    ("paraphrase", PARAPHRASE), ("sentiment", SENTIMENT), ("mrqa", MRQA),
                    ("rainbow", RAINBOW), ("translation", TRANSLATION),
                    ("summarization", SUMMARIZATION), ("gem", GEM))


def _dedupe(names) -> tuple[str, ...]:
  return tuple(dict.fromkeys(names))


# SPoT Appendix B "all": C4 plus the 55 distinct labelled datasets of the ten families. A
# dataset listed in several families counts once, and SuperGLUE's RTE is GLUE's RTE.
_SAME_DATASET = {"super_glue_rte": "glue_rte"}
ALL = _dedupe(("c4_prefix_lm",) + tuple(
    _SAME_DATASET.get(t, t) for _, members in _FAMILIES_NO_ALL for t in members))
# T5's SuperGLUE mixture adds DPR (`t5/data/glue_utils.py:SUPER_GLUE_WEIGHT_MAPPING`).
SUPERGLUE_MIXTURE = SUPERGLUE + ("dpr",)
MIXTURE_FAMILIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {**dict(_FAMILIES_NO_ALL), "superglue": SUPERGLUE_MIXTURE, "all": ALL})
GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    **MIXTURE_FAMILIES, "superglue": SUPERGLUE, "spot_sources": SPOT_SOURCES,
    "spot_targets": SPOT_TARGETS})


def _with_groups(infos) -> Mapping[str, TaskInfo]:
  out = {}
  for info in infos:
    groups = tuple(g for g, members in GROUPS.items() if info.name in members)
    out[info.name] = dataclasses.replace(info, groups=groups)
  return MappingProxyType(out)


_CATALOG = _with_groups(_GLUE_INFOS + _SUPER_GLUE_INFOS + _SPOT_SUITE_INFOS)


# ----------------------------------------------------------------------------- lookups
def taskless_name(name: str) -> str:
  """`glue_rte` -> `glue_rte_taskless` (idempotent)."""
  return name if name.endswith(TASKLESS_SUFFIX) else name + TASKLESS_SUFFIX


def base_name(name: str) -> str:
  """Strips the taskless suffix: `glue_rte_taskless` -> `glue_rte`."""
  return name[:-len(TASKLESS_SUFFIX)] if name.endswith(TASKLESS_SUFFIX) else name


def get_info(name: str) -> TaskInfo:
  """Metadata of a real task (prompted or taskless name)."""
  try:
    return _CATALOG[base_name(name)]
  except KeyError:
    raise KeyError(f"Unknown real task {name!r}; see tasks.registry.list_tasks().") from None


def all_infos(module: Optional[str] = None) -> tuple[TaskInfo, ...]:
  """Every TaskInfo, optionally only those registered by `module` ("glue"/"spot_suite")."""
  return tuple(i for i in _CATALOG.values() if module is None or i.module == module)


def group_names() -> tuple[str, ...]:
  return tuple(GROUPS)


def tasks_in_group(group: str, *, taskless: bool = False) -> list[str]:
  """Task names of a group, in the paper's order."""
  if group not in GROUPS:
    raise KeyError(f"Unknown task group {group!r}; groups: {', '.join(GROUPS)}")
  names = GROUPS[group]
  return [taskless_name(n) for n in names] if taskless else list(names)


def list_tasks(group: Optional[str] = None, *, taskless: bool = False) -> list[str]:
  """All real task names (or those of `group`); `taskless=True` gives the taskless twins."""
  if group is not None:
    return tasks_in_group(group, taskless=taskless)
  return [taskless_name(n) if taskless else n for n in _CATALOG]


def spot_sources(*, taskless: bool = False) -> list[str]:
  """The 16 source tasks of SPoT's transferability study (Table 2)."""
  return tasks_in_group("spot_sources", taskless=taskless)


def spot_targets(*, taskless: bool = False) -> list[str]:
  """The 10 target tasks of SPoT's transferability study (Table 2)."""
  return tasks_in_group("spot_targets", taskless=taskless)


def glue_tasks(*, taskless: bool = False) -> list[str]:
  return tasks_in_group("glue", taskless=taskless)


def superglue_tasks(*, taskless: bool = False) -> list[str]:
  return tasks_in_group("superglue", taskless=taskless)


def mixture_families() -> Mapping[str, tuple[str, ...]]:
  """Family name -> member task names (SPoT Table 1 plus "all")."""
  return MIXTURE_FAMILIES


def mixture_name(family: str, *, taskless: bool = False) -> str:
  """seqio name of a family's mixture: `spot_mix_<family>[_taskless]`."""
  if family not in MIXTURE_FAMILIES:
    raise KeyError(f"Unknown mixture family {family!r}; families: {', '.join(MIXTURE_FAMILIES)}")
  return MIXTURE_PREFIX + family + (TASKLESS_SUFFIX if taskless else "")


def list_mixtures(*, taskless: Optional[bool] = None) -> list[str]:
  """Mixture names; `taskless=None` lists both variants."""
  variants = (False, True) if taskless is None else (taskless,)
  return [mixture_name(f, taskless=t) for t in variants for f in MIXTURE_FAMILIES]


def train_size(name: str) -> Optional[int]:
  """Known number of training examples after preprocessing (prompted or taskless name): what
  seqio's `mixing_rate_num_examples` counts for a cached task."""
  info = get_info(name)
  return info.train_examples if info.train_examples is not None else info.size("train")


@functools.cache
def register_all_tasks() -> None:
  """Imports every task module of `tasks/`: the synthetic world, real tasks and mixtures (once
  per process; later calls return at once)."""
  import tasks.synthetic  # noqa: F401
  register_all()


def register_all() -> None:
  """Registers every real task and mixture with seqio (idempotent)."""
  for module in ("tasks.glue", "tasks.spot_suite", "tasks.mixtures") + POOL_MODULES:
    importlib.import_module(module)


# ============================================================================= task pools
# The task pools of two task-embedding papers (registered by `tasks.affinity_pool` and
# `tasks.tupate_pool`; formats, sources and data notes in those modules and docs/tasks.md).
#
# * Affinity paper: "Learning to predict task transferability via soft prompt" (EMNLP 2023):
#   44 source tasks (`affinity_pool`) and 6 targets (`affinity_targets`: SST-2, MRPC, QQP,
#   SciTail, IMDB, CoNLL2004): exactly the rows and columns of its Appendix B Table 5, named
#   as printed there in `AFFINITY_PAPER_NAMES` (tests/test_affinity_protocol.py checks them,
#   and Table 4's sizes, types and metrics, against ../shared/reference/). RTE is GLUE's copy
#   of the dataset (`glue_rte`). The task types of Table 4 are the `families:` of
#   gin_configs/study/affinity_paper.yaml.
# * TuPaTE, "Efficiently tuned parameters are task embeddings" (EMNLP 2022), Appendix A, the
#   pool of Vu et al. 2020 ("Exploring and predicting transferability across NLP tasks"):
#   11 classification/regression tasks (`tupate_cr`) and 11 QA tasks (`tupate_qa`).
#
# `TaskInfo.sizes` hold the datasets' own sizes; the affinity paper caps every task at 50K
# training / 10K evaluation examples (`MAX_TRAIN_EXAMPLES` / `MAX_EVAL_EXAMPLES`, see
# gin_configs/study/affinity_paper.yaml), which is what its Table 4 prints.
_CONLL_SPLITS = MappingProxyType({"train": "train", "validation": "dev", "test": "test"})
_HELD_OUT = MappingProxyType({"train": "train[:90%]", "validation": "train[90%:]"})
_TAGS = MappingProxyType({"tokens": "string_list", "tags": "string_list"})
_QA_FILE = MappingProxyType({"question": "string", "context": "string",
                             "answers": "string_list"})
_ACC = ("token_accuracy",)
_ACC_F1 = ("token_accuracy", "span_f1")
_SQUAD_V2 = ("squad_v2",)
_HELD_OUT_NOTE = "the dataset has one split: validation = the last 10% of train (our split)"


def _hf(name: str, module: str, hf_id: str, hf_config: Optional[str], schema: Mapping[str, str],
        *, splits: Mapping[str, str] = _TRAIN_VAL, metrics: tuple[str, ...] = ("accuracy",),
        sizes: Mapping[str, int] = _EMPTY, note: str = "") -> TaskInfo:
  return TaskInfo(name=name, benchmark=name, module=module, splits=splits, metrics=metrics,
                  sizes=sizes, schema=MappingProxyType(dict(schema)), download=note,
                  hf_id=hf_id, hf_config=hf_config)


def _pool_tfds(name: str, module: str, tfds_name: str, **kwargs) -> TaskInfo:
  return dataclasses.replace(_tfds(name, (tfds_name,), **kwargs), module=module)


def _pool_file(name: str, module: str, schema: Mapping[str, str], download: str,
               **kwargs) -> TaskInfo:
  return dataclasses.replace(_file(name, schema, download, **kwargs), module=module)


_AFF = "affinity_pool"
_TUP = "tupate_pool"
_AFFINITY_INFOS = (
    # Classification.
    _pool_tfds("imdb", _AFF, "imdb_reviews/plain_text:1.0.0", splits=_TRAIN_TEST,
               sizes=_sizes(25000, 25000, 25000)),
    _hf("scitail", _AFF, "allenai/scitail", "tsv_format",
        {"premise": "string", "hypothesis": "string", "label": "string"}, splits=_STD,
        sizes=_sizes(23097, 1304, 2126)),
    _hf("sick", _AFF, "RobZamp/sick", None,
        {"sentence_A": "string", "sentence_B": "string", "label": "int"}, splits=_STD,
        sizes=_sizes(4439, 495, 4906)),
    _pool_tfds("trec", _AFF, "trec:1.0.0", splits=_TRAIN_TEST, sizes=_sizes(5452, 500, 500)),
    _pool_tfds("scicite", _AFF, "scicite:1.0.0", sizes=_sizes(8194, 916, 1859)),
    _hf("emotion", _AFF, "dair-ai/emotion", "split", {"text": "string", "label": "int"},
        splits=_STD, sizes=_sizes(16000, 2000, 2000)),
    _hf("rotten_tomatoes", _AFF, "cornell-movie-review-data/rotten_tomatoes", None,
        {"text": "string", "label": "int"}, splits=_STD, sizes=_sizes(8530, 1066, 1066)),
    _pool_tfds("ag_news", _AFF, "ag_news_subset:1.0.0", splits=_TRAIN_TEST,
               sizes=_sizes(120000, 7600, 7600)),
    _hf("amazon_polarity", _AFF, "fancyzhx/amazon_polarity", None,
        {"title": "string", "content": "string", "label": "int"}, splits=_TRAIN_TEST,
        sizes=_sizes(3600000, 400000, 400000)),
    _hf("dbpedia_14", _AFF, "fancyzhx/dbpedia_14", None,
        {"title": "string", "content": "string", "label": "int"}, splits=_TRAIN_TEST,
        sizes=_sizes(560000, 70000, 70000)),
    _hf("hate_speech18", _AFF, "odegiber/hate_speech18", None,
        {"text": "string", "label": "int"}, splits=_HELD_OUT, note=_HELD_OUT_NOTE),
    _hf("hate_speech_offensive", _AFF, "tdavidson/hate_speech_offensive", None,
        {"tweet": "string", "class": "int"}, splits=_HELD_OUT, note=_HELD_OUT_NOTE),
    _hf("atis", _AFF, "tuetschek/atis", None, {"text": "string", "intent": "string"},
        splits=_TRAIN_TEST),
    _pool_file("laptop14", _AFF, {"sentence": "string", "aspect": "string",
                                  "polarity": "string"},
               "SemEval-2014 Task 4 laptop reviews (aspect term polarity; "
               "https://alt.qcri.org/semeval2014/task4/): one line per (sentence, aspect term) "
               "with polarity positive | negative | neutral | conflict"),
    _hf("emo", _AFF, "SemEvalWorkshop/emo", None, {"text": "string", "label": "int"},
        splits=_TRAIN_TEST, sizes=_sizes(30160, 5509, 5509)),
    _hf("app_reviews", _AFF, "sealuzh/app_reviews", None, {"review": "string", "star": "int"},
        splits=_HELD_OUT, note=_HELD_OUT_NOTE),
    # Question answering and multiple choice.
    _pool_tfds("squad_v2", _AFF, "squad/v2.0:3.0.0", splits=_TRAIN_VAL, metrics=_SQUAD_V2,
               sizes=_sizes(130319, 11873)),
    _hf("duorc_s", _AFF, "ibm/duorc", "SelfRC",
        {"question": "string", "plot": "string", "answers": "string_list"}, splits=_STD,
        metrics=_SQUAD_V2, sizes=_sizes(60721, 12961, 12559)),
    _hf("duorc_p", _AFF, "ibm/duorc", "ParaphraseRC",
        {"question": "string", "plot": "string", "answers": "string_list"}, splits=_STD,
        metrics=_SQUAD_V2, sizes=_sizes(69524, 15591, 15857)),
    _hf("swag", _AFF, "allenai/swag", "regular",
        {"startphrase": "string", "ending0": "string", "ending1": "string",
         "ending2": "string", "ending3": "string", "label": "int"},
        sizes=_sizes(73546, 20006)),
    _hf("quail", _AFF, "textmachinelab/quail", None,
        {"context": "string", "question": "string", "answers": "string_list",
         "correct_answer_id": "int"}, sizes=_sizes(10246, 2164)),
    # Sequence labelling (tasks.sequence_labelling).
    _hf("wnut17_ner", _AFF, "leondz/wnut_17", None, _TAGS, splits=_STD, metrics=_ACC_F1,
        sizes=_sizes(3394, 1009, 1287)),
    _hf("conll2000_chunk", _AFF, "eriktks/conll2000", None, _TAGS, splits=_TRAIN_TEST,
        metrics=_ACC_F1, sizes=_sizes(8937)),
    _pool_tfds("conll2003_pos", _AFF, "conll2003:1.0.0", splits=_CONLL_SPLITS, metrics=_ACC,
               sizes=_sizes(14041, 3250, 3453)),
    _pool_tfds("conll2003_ner", _AFF, "conll2003:1.0.0", splits=_CONLL_SPLITS,
               metrics=_ACC_F1, sizes=_sizes(14041, 3250, 3453)),
    _pool_file("pmb_semtag", _AFF, _TAGS,
               "Parallel Meaning Bank semantic tags (ST-PMB; https://pmb.let.rug.nl, the "
               "English gold sem-tagged sentences): one sentence per line as word and tag lists",
               splits=_STD, metrics=_ACC),
    _pool_file("mit_movie_ner", _AFF, _TAGS,
               "MIT Movie corpus (trivia10k13, BIO tags; "
               "https://groups.csail.mit.edu/sls/downloads/movie/)", splits=_TRAIN_TEST,
               metrics=_ACC_F1),
    _pool_file("fce_error_detection", _AFF, _TAGS,
               "FCE error detection (Rei & Yannakoudakis 2016, fce-error-detection.tar.gz from "
               "https://ilexir.co.uk/datasets/index.html): tags c (correct) | i (incorrect)",
               splits=_STD, metrics=_ACC),
    _pool_file("conll2004_ner", _AFF, _TAGS,
               "CoNLL-2004 entities and relations (Roth & Yih 2004), entity BIO tags "
               "(Loc, Peop, Org, Other) per sentence", splits=_STD, metrics=_ACC_F1),
    _hf("conll2012_pos", _AFF, "ontonotes/conll2012_ontonotesv5", "english_v4", _TAGS,
        splits=_STD, metrics=_ACC),
    _hf("ontonotes_ner", _AFF, "ontonotes/conll2012_ontonotesv5", "english_v4", _TAGS,
        splits=_STD, metrics=_ACC_F1),
)

_VU_DATA = ("the SQuAD-format data of Vu et al. 2020 (https://github.com/tuvuumass/"
            "task-transferability#data), one line per (question, context) with every answer")
_TUPATE_INFOS = (
    _pool_tfds("glue_wnli", _TUP, "glue/wnli:2.0.0", benchmark="wnli",
               sizes=_sizes(635, 71, 146)),
    _pool_file("news_qa", _TUP, _QA_FILE, "NewsQA, " + _VU_DATA, metrics=_SQUAD),
    _pool_file("hotpot_qa", _TUP, _QA_FILE, "HotpotQA, " + _VU_DATA, metrics=_SQUAD),
    _pool_file("wikihop", _TUP, _QA_FILE, "WikiHop (QAngaroo), " + _VU_DATA, metrics=_SQUAD),
    _pool_file("comqa", _TUP, _QA_FILE, "ComQA, " + _VU_DATA, metrics=_SQUAD),
    _pool_file("cq", _TUP, _QA_FILE, "ComplexQuestions (CQ), " + _VU_DATA, metrics=_SQUAD),
)

AFFINITY_TARGETS = ("glue_sst2", "glue_mrpc", "glue_qqp", "scitail", "imdb", "conll2004_ner")
AFFINITY_POOL = (
    # Tasks registered before this pool.
    "glue_cola", "glue_stsb", "glue_mnli", "glue_qnli", "glue_rte", "super_glue_boolq",
    "super_glue_cb", "super_glue_copa", "super_glue_multirc", "super_glue_wic", "squad",
    "cosmos_qa", "cr", "snli", "yelp_polarity",
    # Issue 15's list (ART = abductive_nli, registered before).
    "sick", "trec", "scicite", "emotion", "rotten_tomatoes", "squad_v2", "duorc_s", "duorc_p",
    "swag", "abductive_nli", "ag_news", "amazon_polarity", "dbpedia_14", "hate_speech18",
    "hate_speech_offensive", "atis", "laptop14", "emo", "app_reviews", "quail", "wnut17_ner",
    "conll2000_chunk", "conll2003_pos", "conll2003_ner", "pmb_semtag", "mit_movie_ner",
    "fce_error_detection", "conll2012_pos", "ontonotes_ner")
# Each task of the affinity paper's Table 5 -> (its name in Table 5, in Table 4); Table 4 has
# no row for APP Reviews and QuAIL (None).
AFFINITY_PAPER_NAMES: Mapping[str, tuple[str, Optional[str]]] = MappingProxyType({
    "glue_sst2": ("SST-2", "SST-2"), "glue_mrpc": ("MRPC", "MRPC"), "glue_qqp": ("QQP", "QQP"),
    "scitail": ("SciTail", "SciTail"), "imdb": ("IMDB", "IMDB"),
    "conll2004_ner": ("CoNLL2004", "CoNLL2004"),
    "ag_news": ("AG News", "AG news"), "amazon_polarity": ("Amazon Polarity", "Amazon Polarity"),
    "app_reviews": ("APP Reviews", None), "abductive_nli": ("ART", "ART"),
    "atis": ("ATIS", "ATIS"), "super_glue_boolq": ("BoolQ", "BoolQ"),
    "super_glue_cb": ("CB", "CB"), "glue_cola": ("COLA", "CoLA"),
    "conll2000_chunk": ("CoNLL2000", "Chunk-CoNLL2000"),
    "conll2003_ner": ("NER-CoNLL2003", "NER-CoNLL2003"),
    "conll2003_pos": ("POS-ConNLL2003", "POS-CoNLL2003"),
    "conll2012_pos": ("CoNLL2012", "CoNLL2012"), "super_glue_copa": ("COPA", "COPA"),
    "cosmos_qa": ("Cosmos QA", "Cosmos QA"), "cr": ("CR", "CR"),
    "dbpedia_14": ("DBpedia_14", "DBpedia14"), "duorc_p": ("DuoRC_p", "DuoRC-p"),
    "duorc_s": ("DuoRC_s", "DuoRC-s"), "emo": ("Emo", "Emo"), "emotion": ("Emotion", "Emotion"),
    "fce_error_detection": ("FCE-error-detection", "FCE-error-detection"),
    "hate_speech18": ("Hate_speech18", "Hate-speech18"),
    "hate_speech_offensive": ("hate_speech_offensive", "Hate-speech-offensive"),
    "laptop14": ("Laptop14", "Laptop14"), "mit_movie_ner": ("MIT movie", "NER-MIT Movie"),
    "glue_mnli": ("MNLI", "MNLI"), "super_glue_multirc": ("MultirRC", "MultiRC"),
    "ontonotes_ner": ("ontonotes", "ontonotes"), "pmb_semtag": ("ST-PMB", "ST-PMB"),
    "glue_qnli": ("QNLI", "QNLI"), "quail": ("QuAIL", None),
    "rotten_tomatoes": ("Rotten Tomatoes", "Rotten Tomatoes"), "glue_rte": ("RTE", "RTE"),
    "scicite": ("SciCite", "SciCite"), "sick": ("SICK", "SICK"), "snli": ("SNLI", "SNLI"),
    "squad": ("SQuAD", "SQuAD 1.0"), "squad_v2": ("SQuAD_v2", "SQuAD 2.0"),
    "glue_stsb": ("STS-B", "STS-B"), "swag": ("SWAG", "SWAG"), "trec": ("TREC", "TREC"),
    "super_glue_wic": ("WiC", "WiC"), "wnut17_ner": ("NER-WNUT17", "NER-WNUT17"),
    "yelp_polarity": ("Yelp Polarity", "Yelp Polarity"),
})
# Vu et al. 2020 Table 1 order (largest training set first).
TUPATE_CR = ("snli", "glue_mnli", "glue_qqp", "glue_qnli", "glue_sst2", "scitail", "glue_cola",
             "glue_stsb", "glue_mrpc", "glue_rte", "glue_wnli")
TUPATE_QA = ("squad_v2", "news_qa", "hotpot_qa", "squad", "duorc_p", "duorc_s", "drop",
             "wikihop", "super_glue_boolq", "comqa", "cq")

GROUPS = MappingProxyType({**GROUPS, "affinity_pool": AFFINITY_POOL,
                           "affinity_targets": AFFINITY_TARGETS, "tupate_cr": TUPATE_CR,
                           "tupate_qa": TUPATE_QA})
_CATALOG = _with_groups(_GLUE_INFOS + _SUPER_GLUE_INFOS + _DIAGNOSTIC_INFOS + _SPOT_SUITE_INFOS
                        + _AFFINITY_INFOS + _TUPATE_INFOS)
POOL_MODULES = ("tasks.affinity_pool", "tasks.tupate_pool")
