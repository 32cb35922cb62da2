"""The SPoT tasks beyond GLUE / SuperGLUE (importing registers them).

Inputs are `<benchmark> key: value ...`; each task also exists as `<name>_taskless`.

task                   source (TFDS unless "file")    inputs -> targets
c4_prefix_lm           c4/en                          text prefix (no benchmark) -> continuation
docnli                 doc_nli                        doc_nli hypothesis: premise: -> entailment/..
yelp_polarity          yelp_polarity_reviews          yelp_polarity text: -> negative/positive
cxc                    file                           cxc sentence1: sentence2: -> "3.8" (0.2 steps)
squad                  squad/v1.1                     squad question: context: -> answer (padded)
drop                   drop (validation = dev)        drop question: context: -> answer
winogrande             winogrande (train = train_xl)  winogrande sentence: choice1: choice2:
hellaswag              hellaswag                      hellaswag context: choice1: .. choice4:
cosmos_qa              cosmos_qa                      cosmos_qa context: question: choice1: ..
race                   race/high + race/middle        race article: question: choice1: ..
                                                      (one example per question)
anli                   anli/r1 + r2 + r3              anli_r<k> hypothesis: context: -> NLI label
snli                   snli                           snli hypothesis: premise: -> NLI label
cr                     file                           cr sentence: -> negative/positive
goemotions             goemotions                     goemotions text: -> "joy, love" (sorted)
sentiment140           sentiment140 (val = test)      sentiment140 text: -> negative/neutral/..
mrqa_<set>             mrqa/<set>, 6 in-domain sets   <set> question: context: -> answer (padded)
abductive_nli          file                           abductive_nli observation1: observation2:
                                                      choice1: choice2:
piqa                   piqa                           piqa goal: choice1: choice2:
social_iqa             file                           social_iqa context: question: choice1..3:
wmt14_en_de/en_fr      wmt14_translate/{de,fr}-en     wmt14_en_de translate English to German:
wmt16_en_ro            wmt16_translate/ro-en          wmt16_en_ro translate English to Romanian:
aeslc billsum cnn_dailymail gigaword multi_news newsroom samsum xsum wiki_lingua_en
                       TFDS (wiki_lingua_en: GEM's)   <name> summarize: <document> -> summary
gem_<set>              gem/<set>                      <set> <data keys>: -> target

Multiple-choice targets are `choice<k>` (1-based); metrics: accuracy for labels, SQuAD EM/F1
for answers, Pearson/Spearman for scores, ROUGE for summaries, ROUGE and BLEU for GEM, BLEU
for translation (T5's `t5/evaluation/metrics.py` functions, see `tasks.metrics`).

Formats that google-research/prompt-tuning defines for SPoT follow it exactly:
* NLI (`prompt_tuning/spot/data/nli.py`, `preprocess_text_classification`): task words
  `doc_nli`, `anli_r1`..`anli_r3` (one per ANLI round; ANLI's premise field is `context`),
  `snli`; whitespace collapsed; unlabelled examples (label -1) kept with target `<unk>`.
* MRQA (`spot/data/mrqa.py`, `prompt_tuning/data/preprocessors.py:mrqa`): task word = the
  set's name (`squad`, `news_qa`, ...); spaces around punctuation in question, context and
  answers (T5's `_pad_punctuation`). The `squad` task uses the same padded format (T5's
  `preprocessors.squad`).
* Summarisation (`spot/data/summarization.py`, `preprocess_text_generation`):
  `<dataset> summarize: <document>`.
Translation is T5's (`t5/data/preprocessors.py:translate`, the `wmt*_v003` tasks):
`<task> translate English to German: <text>`.

File-backed tasks read `<data dir>/<task>/<split>.jsonl` (data dir: gin
`get_task_data_dir.path` or `$SPOT_JAX_DATA_DIR`), one JSON object per line:

* `cxc/{train,validation,test}.jsonl`: `{"sentence1": str, "sentence2": str, "score": float 0-5}`
  (Crisscrossed Captions sentence-sentence similarity, captions joined from MS-COCO).
* `cr/{train,validation,test}.jsonl`: `{"sentence": str, "label": 0 (negative) | 1 (positive)}`
  (Customer Reviews, e.g. from SentEval; split it yourself, it has no official split).
* `abductive_nli/{train,validation}.jsonl`: `{"obs1", "obs2", "hyp1", "hyp2": str, "label": 1 | 2}`
  (alphaNLI / ART jsonl with the official label files merged in).
* `social_iqa/{train,validation}.jsonl`:
  `{"context", "question", "answerA", "answerB", "answerC": str, "label": 1 | 2 | 3}`
  (SocialIQa jsonl with the official label files merged in).

A missing label reads as -1 (target "<unk>").
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from tasks import builder, postprocessors, preprocessors

_NLI3 = ("entailment", "neutral", "contradiction")


def _labels(label_names: Sequence[str]):
  return functools.partial(postprocessors.class_id, label_names=tuple(label_names))


def _fmt(fn, postprocess=None, **kwargs) -> builder.TaskFormat:
  return builder.TaskFormat(
      text=lambda benchmark: [functools.partial(fn, benchmark=benchmark, **kwargs)],
      postprocess=postprocess)


def _classification(fields, label_names: Sequence[str], **kwargs) -> builder.TaskFormat:
  return _fmt(preprocessors.classify, _labels(label_names), fields=tuple(fields),
              label_names=tuple(label_names), **kwargs)


def _choices(num_choices: int, **kwargs) -> builder.TaskFormat:
  names = tuple(f"choice{i}" for i in range(1, num_choices + 1))
  return _fmt(preprocessors.multiple_choice, _labels(names), **kwargs)


def _qa(answer_keys: Sequence[str], **kwargs) -> builder.TaskFormat:
  return _fmt(preprocessors.qa, postprocessors.qa_answers, answer_keys=tuple(answer_keys),
              **kwargs)


def _generation(fields, target_key: str, separator: str = "; ") -> builder.TaskFormat:
  return _fmt(preprocessors.generate, fields=tuple(fields), target_key=target_key,
              separator=separator)


def _summary(source_key: str, target_key: str) -> builder.TaskFormat:
  return _fmt(preprocessors.summarize, source_key=source_key, target_key=target_key)


def _nli(fields, label_names: Sequence[str]) -> builder.TaskFormat:
  """prompt-tuning `spot/data/preprocessors.py:preprocess_text_classification`."""
  return _classification(fields, label_names, collapse_whitespace=True)


_C4 = builder.TaskFormat(text=lambda benchmark: [preprocessors.c4_text],
                         tokenized=(preprocessors.prefix_lm,))
_MRQA = _fmt(preprocessors.padded_qa, postprocessors.qa_answers, answer_key="answers")

FORMATS: dict[str, builder.TaskFormat] = {
    "c4_prefix_lm": _C4,
    "docnli": _nli([("hypothesis", "hypothesis"), ("premise", "premise")],
                   ("not_entailment", "entailment")),
    "yelp_polarity": _classification([("text", "text")], ("negative", "positive")),
    "cxc": _fmt(preprocessors.regress, postprocessors.to_float,
                fields=(("sentence1", "sentence1"), ("sentence2", "sentence2")),
                score_key="score"),
    "squad": _fmt(preprocessors.padded_qa, postprocessors.qa_answers, answer_key="answers/text"),
    "drop": _qa(["answer", "validated_answers"], context_key="passage"),
    "winogrande": _choices(2, fields=(("sentence", "sentence"),),
                           choice_keys=("option1", "option2")),
    "hellaswag": _choices(4, fields=(("context", "context"),), choices_key="endings"),
    "cosmos_qa": _choices(4, fields=(("context", "context"), ("question", "question")),
                          choice_keys=("answer0", "answer1", "answer2", "answer3")),
    "race": _fmt(preprocessors.race, _labels(("choice1", "choice2", "choice3", "choice4"))),
    "anli": _fmt(preprocessors.anli, _labels(_NLI3)),
    "snli": _nli([("hypothesis", "hypothesis"), ("premise", "premise")], _NLI3),
    "cr": _classification([("sentence", "sentence")], ("negative", "positive")),
    "goemotions": _fmt(preprocessors.goemotions, postprocessors.label_set),
    "sentiment140": _fmt(preprocessors.sentiment140,
                         _labels(("negative", "neutral", "positive"))),
    "mrqa_squad": _MRQA,
    "mrqa_news_qa": _MRQA,
    "mrqa_trivia_qa": _MRQA,
    "mrqa_search_qa": _MRQA,
    "mrqa_hotpot_qa": _MRQA,
    "mrqa_natural_questions": _MRQA,
    "abductive_nli": _choices(2, fields=(("observation1", "obs1"), ("observation2", "obs2")),
                              choice_keys=("hyp1", "hyp2"), label_offset=1),
    "piqa": _choices(2, fields=(("goal", "goal"),), choice_keys=("sol1", "sol2")),
    "social_iqa": _choices(3, fields=(("context", "context"), ("question", "question")),
                           choice_keys=("answerA", "answerB", "answerC"), label_offset=1),
    "wmt14_en_de": _fmt(preprocessors.translate, source_language="en", target_language="de"),
    "wmt14_en_fr": _fmt(preprocessors.translate, source_language="en", target_language="fr"),
    "wmt16_en_ro": _fmt(preprocessors.translate, source_language="en", target_language="ro"),
    "aeslc": _summary("email_body", "subject_line"),
    "billsum": _summary("text", "summary"),
    "cnn_dailymail": _summary("article", "highlights"),
    "gigaword": _summary("document", "summary"),
    "multi_news": _summary("document", "summary"),
    "newsroom": _summary("text", "summary"),
    "samsum": _summary("dialogue", "summary"),
    "xsum": _summary("document", "summary"),
    "wiki_lingua_en": _summary("source_aligned/en", "target_aligned/en"),
    "gem_common_gen": _generation([("concepts", "concepts")], "target", separator=", "),
    "gem_dart": _generation([("triples", "tripleset")], "target"),
    "gem_e2e_nlg": _generation([("meaning_representation", "meaning_representation")],
                               "target"),
    "gem_schema_guided_dialog": _fmt(preprocessors.schema_guided_dialog),
    "gem_web_nlg_en": _generation([("triples", "input")], "target"),
    "gem_wiki_auto_asset_turk": _generation([("source", "source")], "target"),
    "gem_xsum": _generation([("document", "document")], "target"),
    "gem_wiki_lingua_en": _generation([("source", "source_aligned/en")], "target_aligned/en"),
}

builder.register_module_tasks("spot_suite", FORMATS)
