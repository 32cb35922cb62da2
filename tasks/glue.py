"""GLUE and SuperGLUE in T5's text-to-text formats (importing registers them).

Inputs use T5's sorted feature keys; targets are label names (metrics in brackets):

* glue_cola:          `cola sentence: ..` -> unacceptable | acceptable  [MCC]
* glue_sst2:          `sst2 sentence: ..` -> negative | positive  [accuracy]
* glue_mrpc:          `mrpc sentence1: .. sentence2: ..` -> not_equivalent | equivalent  [F1, acc]
* glue_qqp:           `qqp question1: .. question2: ..` -> not_duplicate | duplicate  [F1, acc]
* glue_stsb:          `stsb sentence1: .. sentence2: ..` -> score rounded to 0.2, "3.8"
                      [Pearson, Spearman]
* glue_mnli:          `mnli hypothesis: .. premise: ..` -> entailment | neutral | contradiction
                      [accuracy]
* glue_qnli:          `qnli question: .. sentence: ..` -> entailment | not_entailment  [accuracy]
* glue_rte:           `rte sentence1: .. sentence2: ..` -> entailment | not_entailment  [accuracy]
* super_glue_boolq:   `boolq passage: .. question: ..` -> False | True  [accuracy]
* super_glue_cb:      `cb hypothesis: .. premise: ..` -> entailment | contradiction | neutral
                      [macro F1, accuracy]
* super_glue_copa:    `copa choice1: .. choice2: .. premise: .. question: ..` -> choice1 | choice2
                      [accuracy]
* super_glue_multirc: `multirc answer: .. paragraph: .. question: ..` -> False | True  [F1a, EM]
* super_glue_record:  `record query: .. entities: a, b passage: ..` -> an answer, one example
                      per answer  [EM, F1: max over answers, once per query]
* super_glue_rte:     `rte hypothesis: .. premise: ..` -> entailment | not_entailment  [accuracy]
* super_glue_wic:     `wic sentence1: .. sentence2: .. word: ..` -> False | True  [accuracy]
* super_glue_wsc:     `wsc text: ..` with the candidate in `# .. #` and the pronoun in `* .. *`
                      -> False | True  [accuracy]

MNLI's matched / mismatched validation and test sets are splits of `glue_mnli` (see
`tasks.registry`). Each task also exists as `<name>_taskless` without the benchmark word.
Unlabelled (test) examples get the target "<unk>".
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

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
    "super_glue_wsc": _custom(preprocessors.wsc,
                              functools.partial(postprocessors.class_id, label_names=_BINARY_BOOL)),
}

builder.register_module_tasks("glue", FORMATS)
