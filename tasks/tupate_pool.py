"""TuPaTE's task pool (Vu et al. 2020's CR and QA tasks); importing registers the new ones.

"Efficiently tuned parameters are task embeddings" (EMNLP 2022), Appendix A: 11 text
classification / regression tasks (group `tupate_cr`) and 11 question-answering tasks
(`tupate_qa`), see `tasks.registry`. SciTail, SQuAD 2.0 and DuoRC are registered by
`tasks.affinity_pool` (both papers use them), the others existed before. New here:

task         source                               inputs -> targets  [metrics]
glue_wnli    tfds glue/wnli                       wnli sentence1: sentence2:
                                                  -> not_entailment | entailment  [accuracy]
news_qa      file (Vu et al.'s data)              news_qa question: context: -> answer
hotpot_qa    file                                 hotpot_qa question: context:
wikihop      file                                 wikihop question: context:
comqa        file                                 comqa question: context:
cq           file                                 cq question: context:          [EM, F1]

WNLI stays out of SPoT's suites (GLUE group, mixtures). QA files are
`<data dir>/<task>/{train,validation}.jsonl` with
`{"question": str, "context": str, "answers": [str, ...]}` (every reference answer, the first
is the training target), converted from the SQuAD-format files Vu et al. distribute.
"""

from __future__ import annotations

import functools

from tasks import builder, postprocessors, preprocessors

_WNLI_LABELS = ("not_entailment", "entailment")  # TFDS glue/wnli label order.


def _qa() -> builder.TaskFormat:
  return builder.TaskFormat(
      text=lambda benchmark: [functools.partial(preprocessors.qa, benchmark=benchmark,
                                                answer_keys=("answers",))],
      postprocess=postprocessors.qa_answers)


FORMATS: dict[str, builder.TaskFormat] = {
    "glue_wnli": builder.TaskFormat(
        text=lambda benchmark: [functools.partial(
            preprocessors.classify, benchmark=benchmark,
            fields=(("sentence1", "sentence1"), ("sentence2", "sentence2")),
            label_names=_WNLI_LABELS)],
        postprocess=functools.partial(postprocessors.class_id, label_names=_WNLI_LABELS)),
    "news_qa": _qa(),
    "hotpot_qa": _qa(),
    "wikihop": _qa(),
    "comqa": _qa(),
    "cq": _qa(),
}

builder.register_module_tasks("tupate_pool", FORMATS)
