"""Studies of non-prompt methods end to end: `study run --method lora|prefix` trains sources,
baselines and transfers with the method (transfers start from the source's best checkpoint via
init_from), the library holds the method's entries, and `study evaluate --scorer` ranks the
sources by the method's task embeddings (rho, NDCG); the ensemble averages the methods."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml

from spot_jax.cli.main import main
from spot_jax.library.store import PromptLibrary
from spot_jax.study import runner
from spot_jax.study.spec import SpecError, StudySpec, load_spec
from spot_jax.train import run_dir
# The persistent XLA cache fixture of the prompt study tests (autouse) and their tiny settings.
from test_study_run import SMALL, SOURCES, TARGET

SPEC = dict(name="tiny", sources=SOURCES, targets=[TARGET], seeds=[0],
            **dict(SMALL, source_steps=6, target_steps=6, key_step=3, checkpoint_period=3,
                   eval_period=3, max_eval_examples=8))


def test_spec_method_selects_gin_files_and_transfer_init(tmp_path):
  spec = StudySpec.from_dict(dict(SPEC, method="lora"))
  jobs = {(j.kind, j.source): j for j in runner.plan(spec, str(tmp_path))}
  source, transfer = jobs[("source", SOURCES[0])], jobs[("transfer", SOURCES[0])]
  assert source.gin_files[-1] == "methods/lora.gin" and "PROMPT_INIT" not in source.gin_bindings
  assert transfer.gin_files[-2:] == ("methods/lora.gin", runner.TRANSFER_INIT_FROM_GIN)
  assert "PROMPT_FILE" not in transfer.gin_bindings
  prompt_jobs = runner.plan(StudySpec.from_dict(SPEC), str(tmp_path))
  assert all("methods/" not in " ".join(j.gin_files) for j in prompt_jobs)
  assert prompt_jobs[-1].gin_files[-1] == runner.TRANSFER_GIN
  with pytest.raises(SpecError, match="method: Unknown method 'lroa'"):
    StudySpec.from_dict(dict(SPEC, method="lroa"))
  with pytest.raises(SpecError, match="use that key instead"):
    StudySpec.from_dict(dict(SPEC, gin_bindings={"METHOD": "lora"}))
  path = tmp_path / "spec.yaml"
  path.write_text(yaml.safe_dump(SPEC))
  assert load_spec(str(path), method="prefix", embedding="concat").method == "prefix"


def check_method_study(study_dir: str, method: str, tmp_path) -> None:
  """Every run trained `method`; transfers started from the source's best checkpoint; the
  library holds the method's entries; study evaluate ranks by its embeddings (rho, NDCG)."""
  spec = StudySpec.from_dict(dict(SPEC, method=method))
  jobs = {(j.kind, j.source): j for j in runner.plan(spec, study_dir)}
  for job in jobs.values():
    summary = run_dir.read_summary(job.model_dir)
    assert summary.finished and summary.method == method, job.name
  for source in SOURCES:
    source_dir = jobs[("source", source)].model_dir
    best = runner.best_checkpoint_dir(source_dir)
    start = run_dir.checkpoint_dir(jobs[("transfer", source)].model_dir, 0)
    assert sorted(os.listdir(start)) == sorted(os.listdir(best))
    for name in os.listdir(best):
      np.testing.assert_array_equal(np.load(os.path.join(start, name)),
                                    np.load(os.path.join(best, name)), err_msg=name)
  library = PromptLibrary(os.path.join(study_dir, "library"))
  entries = library.entries()
  assert sorted(e.task for e in entries) == sorted(SOURCES)
  assert {(e.model.method, e.model.embedding) for e in entries} == {(method, "layer_mean")}
  assert entries[0].id == f"tiny-{method}-{entries[0].task}-s0"
  results = os.path.join(study_dir, "results.csv")
  report_path = str(tmp_path / f"{method}.json")
  assert main(["study", "evaluate", results, "--scorer", "cosine", "--out", report_path]) == 0
  with open(report_path) as f:
    report = json.load(f)
  assert sorted(report["targets"][TARGET]["predicted_ranking"]) == sorted(SOURCES)
  assert {"spearman", "ndcg", "rho"} <= set(report["average"])
  assert np.isfinite(report["average"]["ndcg"]) and report["average"]["rho"] in (1, 2)
  # The target's key, from its run or written by `embed` (no training: the step exists), ranks
  # the method's library entries.
  baseline = jobs[("baseline", None)].model_dir
  key_file = str(tmp_path / f"{method}_key.npy")
  assert main(["embed", "--gin_file=models/tiny_byte.gin", "--gin_file=runs/prompt_train.gin",
               f"--gin_file=methods/{method}.gin", f"--gin.MODEL_DIR='{baseline}'",
               f"--gin.MIXTURE_OR_TASK_NAME='{TARGET}'", "--key_step", "3",
               "--out", key_file]) == 0
  assert np.load(key_file).shape == (entries[0].model.key_dim,)
  lib = os.path.join(study_dir, "library")
  by_run, by_key = str(tmp_path / "run.csv"), str(tmp_path / "key.csv")
  assert main(["retrieve", "--library", lib, "--run", baseline, "--out", by_run]) == 0
  assert main(["retrieve", "--library", lib, "--key", key_file, "--model", "tiny_byte",
               "--method", method, "--target", TARGET, "--out", by_key]) == 0
  assert open(by_run).read() == open(by_key).read()


@pytest.mark.slow
def test_lora_and_prefix_studies_run_end_to_end(tmp_path):
  """`study run --method lora|prefix` -> `study evaluate --scorer` (rho, NDCG), and the
  ensemble of the two methods is the mean of their similarities (minutes on a loaded CPU)."""
  from spot_jax.app import pipeline
  from spot_jax.study import results
  spec_path = tmp_path / "spec.yaml"
  spec_path.write_text(yaml.safe_dump(SPEC))
  studies = {}
  for method in ("lora", "prefix"):
    studies[method] = str(tmp_path / method)
    assert main(["study", "run", str(spec_path), "--out", studies[method], "--method",
                 method]) == 0
    check_method_study(studies[method], method, tmp_path)
  table = results.aggregate(results.read_results(os.path.join(studies["lora"], "results.csv")))
  members = {m: pipeline.study_predictions(table, "cosine", [d]) for m, d in studies.items()}
  ensemble = pipeline.study_predictions(table, "ensemble:cosine", list(studies.values()))
  for source in SOURCES:
    expected = np.mean([members[m][TARGET][source] for m in studies])
    assert ensemble[TARGET][source] == pytest.approx(expected, rel=1e-12)
  assert main(["study", "evaluate", os.path.join(studies["lora"], "results.csv"), "--scorer",
               "ensemble:cosine", "--study_dir", studies["lora"], "--study_dir",
               studies["prefix"]]) == 0
  with pytest.raises(ValueError, match="need an ensemble scorer"):
    pipeline.study_predictions(table, "cosine", list(studies.values()))
