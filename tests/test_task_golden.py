"""Our task formats, postprocessors and metrics against the reference code's own outputs.

`tests/golden/t5_tasks_golden.json` is written by `scripts/generate/make_t5_golden.py`, which runs the
`t5` library (0.9.4) and google-research/prompt-tuning's SPoT preprocessors on hand-made raw
examples and predictions.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import tensorflow as tf

from tasks import glue, metrics, postprocessors, registry, spot_suite

GOLDEN = json.loads((Path(__file__).parent / "golden" / "t5_tasks_golden.json").read_text())
FORMATS = {**glue.FORMATS, **spot_suite.FORMATS}


def _tensors(example):
  return {k: _tensors(v) if isinstance(v, dict) else tf.constant(v) for k, v in example.items()}


def _ours(name: str, raw, taskless: bool = False) -> list[dict[str, str]]:
  benchmark = "" if taskless else registry.get_info(name).benchmark
  out = []
  for example in raw if isinstance(raw, list) else [raw]:
    ds = tf.data.Dataset.from_tensors(_tensors(example))
    for preprocessor in FORMATS[name].text(benchmark):
      ds = preprocessor(ds)
    out += [{"inputs": e["inputs"].decode(), "targets": e["targets"].decode()}
            for e in ds.as_numpy_iterator()]
  return out


def test_every_glue_and_superglue_task_has_a_golden():
  assert set(registry.glue_tasks() + registry.superglue_tasks() + ["dpr"]) <= set(
      GOLDEN["formats"])


@pytest.mark.parametrize("name", sorted(GOLDEN["formats"]))
def test_preprocessed_strings_equal_the_reference(name):
  case = GOLDEN["formats"][name]
  assert _ours(name, case["raw"], taskless=case.get("taskless", False)) == case["examples"], (
      case["reference"])


def test_multirc_inputs_in_t5_field_order():
  [example] = GOLDEN["formats"]["super_glue_multirc"]["examples"]
  assert example["inputs"].startswith("multirc question: Where did Tom go? answer: home "
                                      "paragraph: Sent 1: Tom went home.")


def test_strict_label_postprocessor_equals_string_label_to_class_id():
  for text, expected in GOLDEN["postprocessors"]["string_label_to_class_id"]:
    assert postprocessors.class_id(text, label_names=("negative", "positive")) == expected, text
  assert postprocessors.class_id(" positive", label_names=("negative", "positive")) == -1


def test_float_and_wsc_postprocessors_equal_t5():
  for text, expected in GOLDEN["postprocessors"]["string_to_float"]:
    assert postprocessors.to_float(text) == pytest.approx(expected), text
  for prediction, referent, expected in GOLDEN["postprocessors"]["wsc_simple"]:
    example = {"targets_pretokenized": referent.encode(), "label": 1}
    assert postprocessors.wsc_simple(prediction, example=example) == expected, (prediction,
                                                                                referent)
  assert postprocessors.wsc_simple("x", example={"label": 0}, is_target=True) == 0


_OURS = {
    "f1_score_with_invalid": metrics.f1_score_with_invalid, "accuracy": metrics.accuracy,
    "matthews_corrcoef": metrics.matthews_corrcoef, "mean_3class_f1": metrics.mean_3class_f1,
    "mean_3class_f1_missing_class": metrics.mean_3class_f1,
    "pearson_corrcoef": metrics.pearson_corrcoef, "spearman_corrcoef": metrics.spearman_corrcoef,
    "squad": metrics.squad, "multirc_f1_over_all_answers": metrics.multirc_f1_over_all_answers,
    "multirc_exact_match": metrics.multirc_exact_match, "record": metrics.record,
    "bleu": metrics.bleu, "rouge": metrics.rouge,
}


@pytest.mark.parametrize("name", sorted(_OURS))
def test_metric_equals_t5(name):
  case = GOLDEN["metrics"][name]
  targets = case["targets"]
  if name == "record":  # T5 groups ReCoRD by a (passage, query) tuple.
    targets = [{**t, "group": tuple(t["group"])} for t in targets]
  result = _OURS[name](targets, case["predictions"])
  assert result == pytest.approx(case["result"]), name


def test_metric_wiring_matches_t5_per_task():
  """Every GLUE / SuperGLUE task scores with T5's metrics (glue_utils GLUE/SUPERGLUE_METRICS)."""
  expected = {
      "glue_cola": ("matthews_corrcoef",), "glue_mrpc": ("f1_score_with_invalid", "accuracy"),
      "glue_qqp": ("f1_score_with_invalid", "accuracy"),
      "glue_stsb": ("pearson_corrcoef", "spearman_corrcoef"),
      "super_glue_cb": ("mean_3class_f1", "accuracy"),
      "super_glue_multirc": ("multirc_f1_over_all_answers", "multirc_exact_match"),
      "super_glue_record": ("record",), "super_glue_wsc": ("accuracy",), "dpr": ("accuracy",),
  }
  for name in registry.glue_tasks() + registry.superglue_tasks() + ["dpr"]:
    assert registry.get_info(name).metrics == expected.get(name, ("accuracy",)), name
  assert isinstance(FORMATS["glue_sst2"].postprocess, functools.partial)
  assert FORMATS["glue_sst2"].postprocess.func is postprocessors.class_id
  assert FORMATS["super_glue_wsc"].postprocess is postprocessors.wsc_simple
