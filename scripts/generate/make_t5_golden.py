"""Writes tests/golden/t5_tasks_golden.json with the `t5` library's and prompt-tuning's own code.

The golden file holds, for one hand-made raw example (TFDS features) of every GLUE / SuperGLUE
task plus the SPoT formats prompt-tuning defines (MRQA, summarisation, NLI), the exact
inputs / targets strings that the reference preprocessors produce; and reference values of
T5's postprocessors and metrics on hand-made predictions. `tests/test_task_golden.py` runs
our preprocessors, postprocessors and metrics on the same inputs and compares.

The reference code runs for real (nothing is copied): the `t5` package (0.9.4 from PyPI,
installed without its heavy dependencies mesh-tensorflow / transformers, which
`t5.data` and `t5.evaluation` do not import) and two files of google-research/prompt-tuning,
loaded by path because its package imports t5x:

  python3.11 -m venv /tmp/t5venv
  echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/t5venv/lib/python3.11/site-packages/main.pth
  /tmp/t5venv/bin/pip install --no-deps t5 && /tmp/t5venv/bin/pip install babel rouge-score \
      sacrebleu nltk
  git clone https://github.com/google-research/prompt-tuning /tmp/prompt-tuning
  /tmp/t5venv/bin/python scripts/generate/make_t5_golden.py --prompt_tuning /tmp/prompt-tuning

(the .pth line reuses this project's TensorFlow / seqio / TFDS; use a throwaway venv, never the
project's own). Last run: t5 0.9.4, prompt-tuning 72285ee.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
from t5.data import glue_utils
from t5.data import postprocessors as t5_post
from t5.data import preprocessors as t5_pre
from t5.evaluation import metrics as t5_metrics

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "t5_tasks_golden.json"


class _Config:
  """The two attributes of a TFDS BuilderConfig that `glue_utils` reads."""

  def __init__(self, name: str, label_classes=None):
    self.name, self.label_classes = name, label_classes


_NLI3 = ["entailment", "neutral", "contradiction"]
_NLI2 = ["entailment", "not_entailment"]
_BOOL = ["False", "True"]

# task -> (TFDS config name, label classes, raw example with the TFDS features).
GLUE_EXAMPLES = {
    "glue_cola": ("cola", ["unacceptable", "acceptable"],
                  {"sentence": "The book was by John written.", "label": 0, "idx": 3}),
    "glue_sst2": ("sst2", ["negative", "positive"],
                  {"sentence": "a gorgeous ,  witty film ", "label": 1, "idx": 7}),
    "glue_mrpc": ("mrpc", ["not_equivalent", "equivalent"],
                  {"sentence1": "He said \"no\".", "sentence2": "He refused.", "label": 1,
                   "idx": 0}),
    "glue_qqp": ("qqp", ["not_duplicate", "duplicate"],
                 {"question1": "Why is the sky blue?", "question2": "What makes the sky blue?",
                  "label": 1, "idx": 11}),
    "glue_stsb": ("stsb", None, {"sentence1": "A man plays a guitar.",
                                 "sentence2": "A man is playing guitar.", "label": 3.71,
                                 "idx": 2}),
    "glue_mnli": ("mnli", _NLI3, {"premise": "Cats sleep a lot.", "hypothesis": "Cats rest.",
                                  "label": 0, "idx": 5}),
    "glue_qnli": ("qnli", _NLI2, {"question": "Where is Paris?",
                                  "sentence": "Paris is in France.", "label": 0, "idx": 1}),
    "glue_rte": ("rte", _NLI2, {"sentence1": "It rained all day.",
                                "sentence2": "The ground is dry.", "label": 1, "idx": 9}),
    "super_glue_boolq": ("boolq", _BOOL, {"question": "is water wet",
                                          "passage": "Water is a liquid.", "label": 1,
                                          "idx": 4}),
    "super_glue_cb": ("cb", ["entailment", "contradiction", "neutral"],
                      {"premise": "It might rain.", "hypothesis": "It will rain.", "label": 2,
                       "idx": 6}),
    "super_glue_copa": ("copa", ["choice1", "choice2"],
                        {"premise": "The man broke his toe.", "choice1": "He dropped a hammer.",
                         "choice2": "He sang a song.", "question": "cause", "label": 0,
                         "idx": 8}),
    "super_glue_multirc": ("multirc", _BOOL,
                           {"paragraph": "<b>Sent 1: </b>Tom went home.<br><b>Sent 2: </b>He "
                                         "slept.<br>",
                            "question": "Where did Tom go?", "answer": "home", "label": 1,
                            "idx": {"paragraph": 2, "question": 17, "answer": 40}}),
    "super_glue_record": ("record", None,
                          {"passage": "Obama visited Paris.\n@highlight\nHe met Macron\n"
                                      "@highlight\nTalks went well",
                           "query": "@placeholder met Macron.",
                           "entities": ["Obama", "Paris", "Macron"],
                           "answers": ["Obama", "Barack Obama"],
                           "idx": {"passage": 3, "query": 7}}),
    "super_glue_rte": ("rte", _NLI2, {"premise": "It rained all day.",
                                      "hypothesis": "The ground is wet.", "label": 0,
                                      "idx": 10}),
    "super_glue_wic": ("wic", _BOOL, {"word": "bank", "sentence1": "He sat on the bank.",
                                      "sentence2": "The bank closed.", "start1": 14, "end1": 18,
                                      "start2": 4, "end2": 8, "label": 0, "idx": 12}),
}
# WSC and DPR use T5's `wsc_simple` / `definite_pronoun_resolution_simple`.
WSC_EXAMPLES = [
    {"text": "Mark told Pete many lies about himself , which Pete included in his book . He "
             "should have been more truthful .",
     "span1_index": 0, "span1_text": "Mark", "span2_index": 15, "span2_text": "He", "label": 1,
     "idx": 0},
    {"text": "The trophy does not fit into the brown suitcase because it is too large .",
     "span1_index": 6, "span1_text": "the brown suitcase", "span2_index": 10,
     "span2_text": "it", "label": 0, "idx": 1},
]
DPR_EXAMPLE = {"sentence": "Bob asked Tom if he can lend some money.", "pronoun": "he",
               "candidates": ["Bob", "Tom"], "label": 1}

# prompt-tuning SPoT formats: task -> (reference task word, raw example).
MRQA_EXAMPLE = {"qid": "q1", "question": "Who's the U.S. president?",
                "context": "In 2010, the U.S. president (Obama) spoke.",
                "answers": ["Obama", "the U.S. president"]}
SQUAD_EXAMPLE = {"id": "s1", "title": "t", "question": "When was it built?",
                 "context": "Built in 1889, it's tall.",
                 "answers": {"text": ["1889", "in 1889"], "answer_start": [9, 6]}}
SUMMARY_EXAMPLE = {"email_body": "Hi team,  the meeting moved to 3pm.\nThanks",
                   "subject_line": "Meeting moved"}
NLI_EXAMPLES = {
    "anli": ("anli_r2", {"uid": "a", "context": "The cat  sat.", "hypothesis": "A cat sat.",
                         "reason": "", "label": 0, "part": 1}),
    "docnli": ("doc_nli", {"premise": "Long document  here.", "hypothesis": "A claim.",
                           "label": 1}),
    "snli": ("snli", {"premise": "A dog runs.", "hypothesis": "An animal moves.",
                      "label": -1}),
}


def _tensors(example):
  return {k: _tensors(v) if isinstance(v, dict) else tf.constant(v) for k, v in example.items()}


def _run(preprocessor, example) -> list[dict[str, str]]:
  ds = preprocessor(tf.data.Dataset.from_tensors(_tensors(example)))
  return [{"inputs": ex["inputs"].decode(), "targets": ex["targets"].decode()}
          for ex in ds.as_numpy_iterator()]


def _load(path: Path, name: str):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def formats(prompt_tuning: Path) -> dict[str, dict]:
  out = {}
  for task, (config, labels, raw) in GLUE_EXAMPLES.items():
    preprocessor = glue_utils.get_glue_text_preprocessor(_Config(config, labels))
    out[task] = {"raw": raw, "examples": _run(preprocessor, raw),
                 "reference": f"t5 glue_utils.get_glue_text_preprocessor({config!r})"}
  out["super_glue_wsc"] = {
      "raw": WSC_EXAMPLES, "reference": "t5 preprocessors.wsc_simple",
      "examples": [e for raw in WSC_EXAMPLES for e in _run(t5_pre.wsc_simple, raw)]}
  out["dpr"] = {"raw": DPR_EXAMPLE, "reference": "t5 definite_pronoun_resolution_simple",
                "examples": _run(t5_pre.definite_pronoun_resolution_simple, DPR_EXAMPLE)}
  for task, target in (("wmt14_en_de", "de"), ("wmt14_en_fr", "fr"), ("wmt16_en_ro", "ro")):
    raw = {"en": "That is good.", target: "Translated ."}
    out[task] = {"raw": raw, "reference": f"t5 preprocessors.translate(en -> {target})",
                 "taskless": True, "examples": _run(lambda ds, t=target: t5_pre.translate(
                     ds, source_language="en", target_language=t), raw)}
  out["squad"] = {"raw": SQUAD_EXAMPLE, "reference": "t5 preprocessors.squad (no task word)",
                  "taskless": True, "examples": _run(t5_pre.squad, SQUAD_EXAMPLE)}
  pt_data = _load(prompt_tuning / "prompt_tuning" / "data" / "preprocessors.py", "pt_data")
  pt_spot = _load(prompt_tuning / "prompt_tuning" / "spot" / "data" / "preprocessors.py",
                  "pt_spot")
  out["mrqa_squad"] = {"raw": MRQA_EXAMPLE, "reference": "prompt-tuning data.preprocessors.mrqa",
                       "examples": _run(lambda ds: pt_data.mrqa(ds, task_name="squad"),
                                        MRQA_EXAMPLE)}
  out["aeslc"] = {"raw": SUMMARY_EXAMPLE,
                  "reference": "prompt-tuning preprocess_text_generation(prefix='summarize:')",
                  "examples": _run(lambda ds: pt_data.preprocess_text_generation(
                      ds, source_key="email_body", target_key="subject_line", task_name="aeslc",
                      prefix="summarize:"), SUMMARY_EXAMPLE)}
  for task, (word, raw) in NLI_EXAMPLES.items():
    labels = ["not_entailment", "entailment"] if task == "docnli" else _NLI3
    premise = "context" if task == "anli" else "premise"
    out[task] = {"raw": raw, "reference": "prompt-tuning preprocess_text_classification",
                 "examples": _run(lambda ds, w=word, p=premise, l=labels:
                                  pt_spot.preprocess_text_classification(
                                      ds, text_a_key="hypothesis", text_b_key=p, task_name=w,
                                      label_names=l), raw)}
  return out


def postprocessing() -> dict[str, list]:
  labels = ("negative", "positive")
  texts = ["positive", " positive", "Positive", "positive ", "negative", "", "neutral"]
  wsc_cases = [("Mark", "Mark"), ("mark", "Mark"), ("the brown suitcase", "the brown suitcase"),
               ("suitcase", "the brown suitcase"), ("brown suitcase bag", "suitcase"),
               ("Bob", "Bob's hat"), ("the", "the trophy"), ("", "Mark"), ("Pete", "Mark")]
  return {
      "string_label_to_class_id": [
          [t, t5_post.string_label_to_class_id(t, label_classes=labels)] for t in texts],
      "string_to_float": [[t, t5_post.string_to_float(t)] for t in
                          ["3.8", " 0.2 ", "three", "", "-1.0"]],
      "wsc_simple": [[p, r, t5_post.wsc_simple(p, example={"targets_pretokenized": r.encode()})]
                     for p, r in wsc_cases],
  }


def metric_values() -> dict[str, dict]:
  """Hand-made targets / predictions and T5's metric results on them."""
  cases = {}

  def add(name, fn, targets, predictions):
    cases[name] = {"targets": targets, "predictions": predictions,
                   "result": {k: float(v) for k, v in fn(targets, predictions).items()}}

  binary_t, binary_p = [1, 1, 0, 0, 1, 0], [1, -1, -1, 0, 0, 1]
  add("f1_score_with_invalid", t5_metrics.f1_score_with_invalid, binary_t, binary_p)
  add("accuracy", t5_metrics.accuracy, binary_t, binary_p)
  add("matthews_corrcoef", glue_utils.GLUE_METRICS["cola"][0], binary_t, binary_p)
  add("mean_3class_f1", t5_metrics.mean_multiclass_f1(num_classes=3),
      [0, 1, 2, 0, 0, 1], [0, 1, -1, 1, 0, -1])
  add("mean_3class_f1_missing_class", t5_metrics.mean_multiclass_f1(num_classes=3),
      [0, 0, 1, 1], [0, 1, 1, -1])
  add("pearson_corrcoef", t5_metrics.pearson_corrcoef, [1.0, 2.4, 3.8, 5.0], [1.2, 2.0, 4.4, -1.0])
  add("spearman_corrcoef", t5_metrics.spearman_corrcoef, [1.0, 2.4, 3.8, 5.0],
      [1.2, 2.0, 4.4, -1.0])
  add("squad", t5_metrics.squad,
      [["Paris", "the city of Paris"], ["Barack Obama"], ["the"], ["1,000"], ["a b"]],
      ["paris!", "Obama", "a", "1000", ""])
  multirc_t = [{"group": 1, "value": 1}, {"group": 1, "value": 0}, {"group": 2, "value": 1},
               {"group": 2, "value": 0}, {"group": 3, "value": 0}]
  multirc_p = [{"value": 1}, {"value": 0}, {"value": 1}, {"value": -1}, {"value": -1}]
  add("multirc_f1_over_all_answers", t5_metrics.multirc_f1_over_all_answers, multirc_t, multirc_p)
  add("multirc_exact_match", t5_metrics.mean_group_metric(t5_metrics.all_match), multirc_t,
      multirc_p)
  record_t = [{"group": [3, 7], "value": ["Obama", "Barack Obama"]},
              {"group": [3, 7], "value": ["Obama", "Barack Obama"]},
              {"group": [3, 8], "value": ["Paris"]}]
  record_p = [{"value": "Barack Obama"}, {"value": "nobody"}, {"value": "London, Paris"}]
  # T5 groups by a (passage, query) tuple; JSON stores lists, made tuples again when scored.
  add("record", t5_metrics.deduplicate_metric(t5_metrics.squad),
      [{**t, "group": tuple(t["group"])} for t in record_t], record_p)
  cases["record"]["targets"] = record_t
  refs = ["The cat sat on the mat .", "Der schnelle braune Fuchs springt .",
          "It is a guide to action that ensures the military will forever heed orders ."]
  hyps = ["The cat sat on a mat .", "Der schnelle Fuchs springt .",
          "It is a guide to action which ensures that the military always obeys the commands ."]
  add("bleu", t5_metrics.bleu, refs, hyps)
  # One example per call: the bootstrap's mid equals the score, so it is deterministic.
  add("rouge", t5_metrics.rouge, ["the cat sat on the mat . it was happy ."],
      ["a cat sat on the mat . it smiled ."])
  return cases


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--prompt_tuning", type=Path, required=True,
                      help="a checkout of google-research/prompt-tuning")
  parser.add_argument("--out", type=Path, default=OUT)
  args = parser.parse_args()
  import t5  # pylint: disable=import-outside-toplevel
  golden = {"t5_version": t5.__version__, "formats": formats(args.prompt_tuning),
            "postprocessors": postprocessing(), "metrics": metric_values()}
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(golden, indent=1, ensure_ascii=False, default=_jsonable) + "\n")
  print(f"wrote {args.out}", file=sys.stderr)


def _jsonable(value):
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f"not JSON serialisable: {value!r}")


if __name__ == "__main__":
  main()
