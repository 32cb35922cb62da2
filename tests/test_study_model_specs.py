"""The study specs of the papers' full fine-tuning and SPoT ablation rows: dry runs with the
right run counts, and a `method: model` study end to end (transfers start from the source's
whole-model checkpoint)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import PROJECT_ROOT
from spot_jax.checkpoints import t5x
from spot_jax.study import runner
from spot_jax.study.spec import StudySpec, load_spec
from spot_jax.train import run_dir
from tasks import registry
from test_study_run import SMALL, SOURCES, TARGET

STUDY = PROJECT_ROOT / "gin_configs" / "study"
SIZES = ("small", "base", "large", "xl", "xxl")
GLUE_SUPERGLUE = set(registry.GLUE + registry.SUPERGLUE)


def counts(spec) -> list[int]:
  jobs = runner.plan(spec, "/study")
  return [sum(j.kind == kind for j in jobs) for kind in runner.KINDS]


def dry_run_total(path, tmp_path) -> str:
  """The dry run's total line (the plan as `study run --dry_run` prints it; the real tasks'
  label checks need their vocabulary, so the plan is described without them)."""
  spec = load_spec(str(path))
  lines = runner.describe_plan(spec, runner.plan(spec, str(tmp_path / "dry")))
  assert not (tmp_path / "dry").exists()
  return next(line for line in lines if "total:" in line)


def test_spot_model_tuning_rows(tmp_path):
  """ModelTuning = the baselines, Multi-task ModelTuning = the transfers from the GLUE
  mixture; full fine-tuning from the original T5 1.1 base (SPoT footnote 3), 2^16 tokens a
  batch (Appendix C)."""
  spec = load_spec(str(STUDY / "spot_model_tuning.yaml"))
  assert spec.method == "model" and spec.sources == ("spot_mix_glue",)
  assert set(spec.targets) == GLUE_SUPERGLUE and len(spec.targets) == 16
  assert counts(spec) == [3, 48, 48]
  assert spec.batch_size * spec.feature_lengths["inputs"] == 2**16
  assert spec.initial_checkpoint.endswith("t5_1_1_base/checkpoint_1000000")
  transfer = runner.plan(spec, "/study")[-1]
  assert transfer.gin_files[-2:] == ("methods/model.gin", runner.TRANSFER_INIT_FROM_GIN)
  assert "total: 99 runs" in dry_run_total(STUDY / "spot_model_tuning.yaml", tmp_path)


def test_spot_shorter_tuning_ablation(tmp_path):
  """Table 1 "- longer tuning": 30K steps against spot_generic.yaml's 2^18."""
  short = load_spec(str(STUDY / "spot_shorter_tuning.yaml"))
  generic = load_spec(str(STUDY / "spot_generic.yaml"))
  assert (short.source_steps, short.target_steps) == (30_000, 30_000)
  assert (generic.source_steps, generic.target_steps) == (2**18, 2**18)
  assert short.method == "prompt" and set(short.targets) == set(generic.targets)
  assert set(short.sources) <= set(generic.sources)
  assert counts(short) == [3, 48, 48]
  assert "total: 99 runs, 2970000 train steps" in dry_run_total(
      STUDY / "spot_shorter_tuning.yaml", tmp_path)


@pytest.mark.parametrize("size", SIZES)
def test_spot_size_sweep(size, tmp_path):
  """Figure 1 / Table 4 at each size: prompt tuning (LM-adapted) and model tuning (original
  T5 1.1) on the 8 SuperGLUE tasks, GLUE mixture as the source."""
  prompt = load_spec(str(STUDY / "spot_sizes" / f"prompt_{size}.yaml"))
  model = load_spec(str(STUDY / "spot_sizes" / f"model_{size}.yaml"))
  for spec in (prompt, model):
    assert spec.model == (f"models/{size}.gin",)
    assert set(spec.targets) == set(registry.SUPERGLUE) and spec.sources == ("spot_mix_glue",)
    assert counts(spec) == [3, 24, 24]
  assert (prompt.method, model.method) == ("prompt", "model")
  assert prompt.initial_checkpoint is None  # models/<size>.gin's LM-adapted checkpoint.
  assert model.initial_checkpoint.endswith(f"t5_1_1_{size}/checkpoint_1000000")
  assert "total: 51 runs" in dry_run_total(STUDY / "spot_sizes" / f"model_{size}.yaml",
                                           tmp_path)


def test_tupate_intermediate_fine_tuning(tmp_path):
  """The TuPaTE pool with full fine-tuning: 22 tasks, each a source and a target, never its
  own source."""
  finetune = load_spec(str(STUDY / "tupate_finetune.yaml"))
  prompt = load_spec(str(STUDY / "tupate.yaml"))
  assert finetune.method == "model"
  assert (finetune.sources, finetune.targets) == (prompt.sources, prompt.targets)
  assert counts(finetune) == [66, 66, 22 * 21 * 3]
  assert "total: 1518 runs" in dry_run_total(STUDY / "tupate_finetune.yaml", tmp_path)


@pytest.mark.slow
def test_a_model_study_transfers_whole_models(tmp_path):
  """`method: model` end to end: sources, baseline and transfers fine-tune every weight; each
  transfer starts from its source's kept best checkpoint; no library entries."""
  spec = StudySpec.from_dict(dict(name="tiny", sources=SOURCES, targets=[TARGET], seeds=[0],
                                  method="model", **dict(SMALL, source_steps=4, target_steps=2,
                                                         key_step=2, checkpoint_period=2,
                                                         eval_period=2, max_eval_examples=8)))
  study = str(tmp_path / "study")
  report = runner.run_study(spec, study)
  assert not report.library_added
  jobs = {(j.kind, j.source): j for j in runner.plan(spec, study)}
  for job in jobs.values():
    summary = run_dir.read_summary(job.model_dir)
    assert summary.finished and summary.method == "model", job.name
  for source in SOURCES:
    best = runner.best_checkpoint_dir(jobs[("source", source)].model_dir)
    transfer = run_dir.read_summary(jobs[("transfer", source)].model_dir)
    assert transfer.step_offset == t5x.read_step(best)  # continues the source's Adafactor.
    assert transfer.settings["init_from"].startswith("sha256:")
  with open(os.path.join(study, runner.RESULTS_CSV)) as f:
    rows = f.read().splitlines()
  assert len(rows) == 1 + 1 + len(SOURCES)  # header, the baseline, the transfers.
  assert np.all([row.count(",") >= 3 for row in rows])


TUPATE_REGIMES = {  # spec -> (source runs' cap, target runs' cap, source steps, target steps)
    "tupate_finetune.yaml": (None, None, 2**18, 100_000),  # FULL -> FULL
    "tupate_full_limited.yaml": (None, 1000, 2**18, 625),  # FULL -> LIMITED
    "tupate_limited_limited.yaml": (1000, 1000, 625, 625),  # LIMITED -> LIMITED
}


@pytest.mark.parametrize("name", sorted(TUPATE_REGIMES))
def test_tupate_regimes_cap_each_run(name, tmp_path):
  """TuPaTE Table 2's three regimes over the same 22-task pool: every source run keeps its
  whole training split (FULL) or the first 1,000 examples (LIMITED), and so does every run
  trained on a target (baselines and transfers); LIMITED runs train 20 epochs at batch 32."""
  source_cap, target_cap, source_steps, target_steps = TUPATE_REGIMES[name]
  spec = load_spec(str(STUDY / name))
  pool = load_spec(str(STUDY / "tupate.yaml"))
  assert (spec.sources, spec.targets) == (pool.sources, pool.targets) and spec.method == "model"
  assert counts(spec) == [66, 66, 22 * 21 * 3]
  jobs = runner.plan(spec, "/study")
  for job in jobs:
    cap = source_cap if job.kind == "source" else target_cap
    # Unset (the run's default: the whole split) or bound per run as gin text.
    bound = job.gin_bindings.get("MAX_TRAIN_EXAMPLES")
    assert bound == (None if spec.max_train_examples is None else str(cap)), (job.name, bound)
    assert job.train_steps == (source_steps if job.kind == "source" else target_steps)
  if target_steps == 625:
    assert target_steps * spec.batch_size == 20 * 1000  # 20 epochs of a LIMITED set (§4.3).
  steps = 66 * source_steps + (66 + 1386) * target_steps
  assert f"total: 1518 runs, {steps} train steps" in dry_run_total(STUDY / name, tmp_path)
