"""GLUE and SuperGLUE in T5's text-to-text formats (importing registers them).

Formats, postprocessors and metrics are the `t5` library's (`t5/data/glue_utils.py`:
`get_glue_text_preprocessor`, `get_glue_postprocess_fn`, `GLUE_METRICS`, `SUPERGLUE_METRICS`;
`t5/data/tasks.py` for WSC and DPR). Inputs list the dataset's features sorted by name unless
T5 fixes an order; targets are label names, scored by exact match (`postprocessors.class_id`,
T5's `string_label_to_class_id`). Metrics in brackets are T5's result keys:

* glue_cola:          `cola sentence: ..` -> unacceptable | acceptable  [matthews_corrcoef]
* glue_sst2:          `sst2 sentence: ..` -> negative | positive  [accuracy]
* glue_mrpc:          `mrpc sentence1: .. sentence2: ..` -> not_equivalent | equivalent
                      [f1 (invalid = wrong class), accuracy]
* glue_qqp:           `qqp question1: .. question2: ..` -> not_duplicate | duplicate  [f1, acc]
* glue_stsb:          `stsb sentence1: .. sentence2: ..` -> score rounded to 0.2, "3.8"
                      [pearson_corrcoef, spearman_corrcoef]
* glue_mnli:          `mnli hypothesis: .. premise: ..` -> entailment | neutral | contradiction
                      [accuracy]
* glue_qnli:          `qnli question: .. sentence: ..` -> entailment | not_entailment  [accuracy]
* glue_rte:           `rte sentence1: .. sentence2: ..` -> entailment | not_entailment  [accuracy]
* super_glue_boolq:   `boolq passage: .. question: ..` -> False | True  [accuracy]
* super_glue_cb:      `cb hypothesis: .. premise: ..` -> entailment | contradiction | neutral
                      [mean_3class_f1, accuracy]
* super_glue_copa:    `copa choice1: .. choice2: .. premise: .. question: ..` -> choice1 | choice2
                      [accuracy]
* super_glue_multirc: `multirc question: .. answer: .. paragraph: ..` -> False | True
                      [f1 over all answers, exact_match per question]
* super_glue_record:  `record query: .. entities: a, b passage: ..` -> an answer, one example
                      per answer  [em, f1: max over answers, once per query]
* super_glue_rte:     `rte hypothesis: .. premise: ..` -> entailment | not_entailment  [accuracy]
* super_glue_wic:     `wic sentence1: .. sentence2: .. word: ..` -> False | True  [accuracy]
* super_glue_wsc:     `wsc: .. *pronoun* ..` -> the candidate referent's text (T5's
                      `wsc_simple`); trains on correct referents only, validation / test keep
                      every candidate and `postprocessors.wsc_simple` scores whether the output
                      names the candidate against the label  [accuracy]
* dpr:                `wsc: .. *pronoun* ..` -> the referent (Definite Pronoun Resolution, in
                      the SuperGLUE mixture as T5 has it; train and test splits)  [accuracy]

MNLI's matched / mismatched validation and test sets are splits of `glue_mnli` (see
`tasks.registry`). Each task also exists as `<name>_taskless` without the benchmark word.
Unlabelled (test) examples get the target "<unk>".
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import tensorflow as tf

from tasks import builder, postprocessors, preprocessors

_BINARY_BOOL = ("False", "True")
_NLI3 = ("entailment", "neutral", "contradiction")
_NLI2 = ("entailment", "not_entailment")


def _sorted_fields(*keys: str) -> tuple[tuple[str, str], ...]:
  return tuple((k, k) for k in sorted(keys))


def _classification(keys: Sequence[str], label_names: Sequence[str]) -> builder.TaskFormat:
  fields = _sorted_fields(*keys)
  return builder.TaskFormat(
      text=lambda benchmark: [functools.partial(
          preprocessors.classify, benchmark=benchmark, fields=fields,
          label_names=tuple(label_names))],
      postprocess=functools.partial(postprocessors.class_id, label_names=tuple(label_names)))


def _regression(keys: Sequence[str]) -> builder.TaskFormat:
  fields = _sorted_fields(*keys)
  return builder.TaskFormat(
      text=lambda benchmark: [functools.partial(preprocessors.regress, benchmark=benchmark,
                                                fields=fields)],
      postprocess=postprocessors.to_float)


def _custom(fn, postprocess) -> builder.TaskFormat:
  return builder.TaskFormat(text=lambda benchmark: [functools.partial(fn, benchmark=benchmark)],
                            postprocess=postprocess)


FORMATS: dict[str, builder.TaskFormat] = {
    "glue_cola": _classification(["sentence"], ("unacceptable", "acceptable")),
    "glue_sst2": _classification(["sentence"], ("negative", "positive")),
    "glue_mrpc": _classification(["sentence1", "sentence2"], ("not_equivalent", "equivalent")),
    "glue_qqp": _classification(["question1", "question2"], ("not_duplicate", "duplicate")),
    "glue_stsb": _regression(["sentence1", "sentence2"]),
    "glue_mnli": _classification(["premise", "hypothesis"], _NLI3),
    "glue_qnli": _classification(["question", "sentence"], _NLI2),
    "glue_rte": _classification(["sentence1", "sentence2"], _NLI2),
    "super_glue_boolq": _classification(["question", "passage"], _BINARY_BOOL),
    "super_glue_cb": _classification(["premise", "hypothesis"],
                                     ("entailment", "contradiction", "neutral")),
    "super_glue_copa": _classification(["premise", "question", "choice1", "choice2"],
                                       ("choice1", "choice2")),
    "super_glue_multirc": _custom(preprocessors.multirc, postprocessors.multirc_value),
    "super_glue_record": _custom(preprocessors.record, postprocessors.record_answers),
    "super_glue_rte": _classification(["premise", "hypothesis"], _NLI2),
    "super_glue_wic": _classification(["sentence1", "sentence2", "word"], _BINARY_BOOL),
    # T5: `super_glue_wsc_v102_simple_train` (train) and `_simple_eval` (validation, test).
    "super_glue_wsc": builder.TaskFormat(
        text=lambda benchmark: [functools.partial(preprocessors.wsc_simple,
                                                  benchmark=benchmark)],
        postprocess=postprocessors.wsc_simple,
        split_filters={"train": lambda ex: tf.cast(ex["label"], tf.bool)}),
    "dpr": _custom(preprocessors.dpr_simple, None),
}

# The leaderboards' diagnostic sets (test only; see `registry._DIAGNOSTIC_INFOS`), with the
# TFDS features and label names of glue/ax (as MNLI), super_glue/axb and axg (as RTE).
DIAGNOSTIC_FORMATS: dict[str, builder.TaskFormat] = {
    "glue_ax": _classification(["premise", "hypothesis"], _NLI3),
    "super_glue_axb": _classification(["sentence1", "sentence2"], _NLI2),
    "super_glue_axg": _classification(["premise", "hypothesis"], _NLI2),
}

builder.register_module_tasks("glue", FORMATS)
builder.register_module_tasks("glue_diagnostics", DIAGNOSTIC_FORMATS)
