"""Studies of non-prompt methods end to end: `study run --method lora|prefix` trains sources,
baselines and transfers with the method (transfers start from the source's best checkpoint via
init_from), the library holds the method's entries, and `study evaluate --scorer` ranks the
sources by the method's task embeddings (rho, NDCG); the ensemble averages the methods."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import yaml

from spot_jax.cli.main import main
from spot_jax.library import scorers
from spot_jax.library.store import PromptLibrary
from spot_jax.study import runner
from spot_jax.study.spec import SpecError, StudySpec, load_spec
from spot_jax.train import run_dir
from test_study_run import SMALL, SOURCES, TARGET

SPEC = dict(name="tiny", sources=SOURCES, targets=[TARGET], seeds=[0],
            **dict(SMALL, source_steps=6, target_steps=6, key_step=3, checkpoint_period=3,
                   eval_period=3, max_eval_examples=8))


@pytest.fixture(scope="module")
def compilation_cache(request):
  path = str(request.config.cache.mkdir("spot_jax_xla_cache"))
  names = {"jax_compilation_cache_dir": path, "jax_persistent_cache_min_compile_time_secs": 0,
           "jax_persistent_cache_min_entry_size_bytes": -1}
  old = {name: getattr(jax.config, name) for name in names}
  for name, value in names.items():
    jax.config.update(name, value)
  yield
  for name, value in old.items():
    jax.config.update(name, value)


@pytest.fixture(scope="module")
def studies(tmp_path_factory, compilation_cache) -> dict[str, str]:
  """One tiny study per method, run and evaluated through the CLI."""
  root = tmp_path_factory.mktemp("studies")
  spec_path = root / "spec.yaml"
  spec_path.write_text(yaml.safe_dump(SPEC))
  out = {}
  for method in ("lora", "prefix"):
    study_dir = str(root / method)
    assert main(["study", "run", str(spec_path), "--out", study_dir, "--method", method]) == 0
    out[method] = study_dir
  return out


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


@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_method_study_runs_end_to_end(studies, method, tmp_path):
  study_dir = studies[method]
  spec = StudySpec.from_dict(dict(SPEC, method=method))
  jobs = {(j.kind, j.source): j for j in runner.plan(spec, study_dir)}
  for job in jobs.values():
    summary = run_dir.read_summary(job.model_dir)
    assert summary.finished and summary.method == method, job.name
  for source in SOURCES:
    # The transfer started from every trainable of the source's best checkpoint.
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
  # study evaluate ranks the sources by the method's embeddings: rho and NDCG.
  results = os.path.join(study_dir, "results.csv")
  report_path = str(tmp_path / "report.json")
  assert main(["study", "evaluate", results, "--scorer", "cosine", "--out", report_path]) == 0
  with open(report_path) as f:
    report = json.load(f)
  ranked = report["targets"][TARGET]["predicted_ranking"]
  assert sorted(ranked) == sorted(SOURCES)
  assert {"spearman", "ndcg", "rho"} <= set(report["average"])
  assert np.isfinite(report["average"]["ndcg"])


def test_ensemble_is_the_mean_of_the_methods_similarities(studies, tmp_path):
  from spot_jax import pipeline
  from spot_jax.study import results
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
  assert isinstance(scorers.get_scorer("ensemble:cosine"), scorers.EnsembleScorer)
