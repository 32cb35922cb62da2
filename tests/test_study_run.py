"""Running studies: spec validation, the plan, real tiny studies end to end, reruns, workers,
and cluster job files."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import PROJECT_ROOT
from spot_jax import gin_utils
from spot_jax.cli.main import main
from spot_jax.library.store import PromptLibrary
from spot_jax.study import runner
from spot_jax.study.spec import SpecError, StudySpec, load_spec, with_predictions
from spot_jax.train import run_dir
from spot_jax.train.loop import TrainConfig

# The seconds-long run of tests/test_train.py::small_run, as spec settings.
SMALL = dict(model="models/tiny_byte.gin", source_steps=10, target_steps=10, key_step=5,
             feature_lengths={"inputs": 48, "targets": 12}, batch_size=8, prompt_length=4,
             checkpoint_period=5, eval_period=5, max_eval_examples=16)
SOURCES = ["synthetic_sentiment_a", "synthetic_paraphrase_a"]
TARGET = "synthetic_sentiment_b"


def small_spec(**overrides) -> StudySpec:
  data = dict(name="tiny", sources=SOURCES, targets=[TARGET], seeds=[0], **SMALL)
  data.update(overrides)
  return StudySpec.from_dict(data)


# All runs have the same shapes: the persistent XLA cache (conftest) makes every run after the
# first (in this process and in worker processes) skip compilation.
pytestmark = pytest.mark.usefixtures("compilation_cache")


def read_rows(path) -> list[dict[str, str]]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- spec


def test_spec_errors_name_the_problem(tmp_path):
  base = dict(name="s", sources=SOURCES, targets=[TARGET], seeds=[0, 1], **SMALL)
  cases = [
      (dict(source_step=10), "unknown key 'source_step'; did you mean 'source_steps'?"),
      (dict(targets=["synthetic_sentimnt_b"]),
       "targets[0]: Unknown task or mixture 'synthetic_sentimnt_b'"),
      (dict(key_step=20), "key_step 20 > source_steps 10"),
      (dict(key_step=3), "key_step 3 is not a multiple of checkpoint_period 5"),
      (dict(sources=[]), "sources is empty"),
      (dict(seeds=[0, 0]), "repeat a seed"),
      (dict(targets=[TARGET, TARGET]), "targets lists ['synthetic_sentiment_b'] more than once"),
      (dict(target_steps=0), "target_steps must be a positive integer, got 0"),
      (dict(gin_bindings={"TRAIN_STEPS": 5}), "use that key instead"),
      (dict(baseline_prompt_init="file"), "transfers always start from their source"),
      (dict(prompt_init="uniform"), "unknown key 'prompt_init'; did you mean"),
  ]
  for overrides, message in cases:
    with pytest.raises(SpecError) as error:
      StudySpec.from_dict({**base, **overrides}, "spec.yaml")
    assert str(error.value).startswith("spec.yaml: ") and message in str(error.value)
  missing = {k: v for k, v in base.items() if k != "seeds"}
  with pytest.raises(SpecError, match=r"missing required keys \['seeds'\]"):
    StudySpec.from_dict(missing)
  bad = tmp_path / "bad.yaml"
  bad.write_text("name: s\nsources: [synthetic_sentiment_a]\ntarget: [x]\n")
  assert main(["study", "run", str(bad), "--out", str(tmp_path / "out")]) == 2
  assert not (tmp_path / "out").exists()


def test_every_shipped_study_spec_loads(tmp_path):
  """Regression: gin_configs/affinity/synthetic_study.yaml once set `eval_num_examples` (a gin
  macro's old name, not a spec key), so `study run` refused it. A spec that transfers from its
  top predicted sources plans once given a predictions table (`study run --predictions`)."""
  specs = sorted(PROJECT_ROOT.glob("gin_configs/**/*.yaml"))
  assert PROJECT_ROOT / "gin_configs/affinity/synthetic_study.yaml" in specs
  for path in specs:
    spec = load_spec(str(path))
    if (spec.select_sources or {}).get("predictions", "given") is None:
      with pytest.raises(SpecError, match="--predictions PRED.csv"):
        runner.plan(spec, "/study")
      predictions = tmp_path / f"{spec.name}_predictions.csv"
      predictions.write_text("target,source,score\n" + "".join(
          f"{t},{s},{i}\n" for t in spec.targets for i, s in enumerate(spec.sources)))
      spec = with_predictions(spec, str(predictions))
    assert runner.plan(spec, "/study"), path


def test_shipped_specs_load_and_match_the_registry():
  from tasks import registry
  spot = load_spec(str(PROJECT_ROOT / "gin_configs/study/spot_glue_superglue.yaml"))
  assert list(spot.sources) == registry.spot_sources()
  assert list(spot.targets) == registry.spot_targets()
  assert (spot.seeds, spot.source_steps, spot.target_steps) == ((0, 1, 2), 2**18, 100_000)
  jobs = runner.plan(spot, "/study")
  assert [sum(j.kind == k for j in jobs) for k in runner.KINDS] == [48, 30, 480]
  synthetic = load_spec(str(PROJECT_ROOT / "gin_configs/study/synthetic.yaml"))
  assert all(t.startswith("synthetic_") for t in synthetic.sources + synthetic.targets)
  # §2 (generic SPoT): single and mixture sources and their targets all train 2^18 steps.
  generic = load_spec(str(PROJECT_ROOT / "gin_configs/study/spot_generic.yaml"))
  assert (generic.source_steps, generic.target_steps) == (2**18, 2**18)
  assert {"spot_mix_glue", "glue_mnli"} <= set(generic.sources)
  assert set(generic.targets) == set(registry.GLUE + registry.SUPERGLUE)
  for spec in (spot, generic):
    assert (spec.source_prompt_init, spec.baseline_prompt_init) == ("sampled_vocab",
                                                                     "class_labels")
  steps = {f: (PROJECT_ROOT / "gin_configs/runs" / f).read_text()
           for f in ("section2_train.gin", "section3_target_train.gin", "source_train.gin")}
  assert "TRAIN_STEPS = 262144" in steps["section2_train.gin"]
  assert "TRAIN_STEPS = 100000" in steps["section3_target_train.gin"]
  assert "TRAIN_STEPS = 262144" in steps["source_train.gin"]


def test_baselines_start_from_class_labels_sources_from_sampled_vocab():
  """SPoT Appendix C: PROMPTTUNING (the `none` baseline) starts from the class labels, backing
  off to sampled vocabulary for a task without a label set; sources from sampled vocabulary."""
  spec = small_spec(targets=[TARGET, "synthetic_reverse"])
  init = {(j.kind, j.source or j.target): j.gin_bindings.get("PROMPT_INIT")
          for j in runner.plan(spec, "/study")}
  assert init[("source", "synthetic_sentiment_a")] == '"sampled_vocab"'
  assert init[("baseline", TARGET)] == '"class_labels"'
  assert init[("baseline", "synthetic_reverse")] == '"sampled_vocab"'  # no labels: back off.
  assert init[("transfer", "synthetic_sentiment_a")] is None  # study/transfer.gin: 'file'.
  swapped = small_spec(source_prompt_init="uniform", baseline_prompt_init="sampled_vocab")
  init = {j.kind: j.gin_bindings.get("PROMPT_INIT") for j in runner.plan(swapped, "/study")}
  assert (init["source"], init["baseline"]) == ('"uniform"', '"sampled_vocab"')
  baseline = next(j for j in runner.plan(spec, "/study") if j.target == TARGET
                  and j.kind == "baseline")
  gin_utils.parse_gin(*gin_utils.split_gin_args(baseline.flags())[:2])
  assert TrainConfig().prompt_init == "class_labels"


# ----------------------------------------------------------------------------- plan


def test_plan_layout_dependencies_flags_and_dry_run(tmp_path, capsys):
  spec = small_spec(targets=[TARGET, "synthetic_topic_2way"], seeds=[0, 1])
  study = tmp_path / "study"
  jobs = runner.plan(spec, str(study))
  assert [sum(j.kind == k for j in jobs) for k in runner.KINDS] == [4, 4, 8]
  by_dir = {os.path.relpath(j.model_dir, study): j for j in jobs}
  assert len(by_dir) == 16
  transfer = by_dir[f"runs/transfer/synthetic_paraphrase_a/{TARGET}/seed_1"]
  source_dir = str(study / "runs/source/synthetic_paraphrase_a/seed_1")
  assert transfer.depends_on == (source_dir,)
  assert by_dir[f"runs/baseline/{TARGET}/seed_0"].depends_on == ()
  assert transfer.gin_files == ("models/tiny_byte.gin", "runs/prompt_train.gin",
                                "study/transfer.gin")
  assert transfer.flags()[3:8] == [
      f'--gin.MODEL_DIR="{transfer.model_dir}"', f'--gin.MIXTURE_OR_TASK_NAME="{TARGET}"',
      "--gin.TRAIN_STEPS=10", "--gin.RANDOM_SEED=1", "--gin.KEY_STEP=5"]
  assert transfer.flags()[-1] == f'--gin.SOURCE_MODEL_DIR="{source_dir}"'
  # A target that is also a source gets no self-transfer.
  overlap = runner.plan(small_spec(targets=[TARGET, "synthetic_paraphrase_a"]), str(study))
  assert sorted((j.source, j.target) for j in overlap if j.kind == "transfer") == [
      ("synthetic_paraphrase_a", TARGET), ("synthetic_sentiment_a", "synthetic_paraphrase_a"),
      ("synthetic_sentiment_a", TARGET)]

  # The flags parse through the train command's gin path into the intended TrainConfig; the
  # transfer's PROMPT_FILE is resolved when the run starts, and refuses an unfinished source.
  source = by_dir["runs/source/synthetic_sentiment_a/seed_1"]
  files, bindings, rest = gin_utils.split_gin_args(source.flags())
  gin_utils.parse_gin(files, bindings)
  cfg = TrainConfig()
  assert (cfg.model_dir, cfg.task, cfg.train_steps, cfg.seed, cfg.key_step, cfg.model,
          cfg.prompt_length, dict(cfg.feature_lengths), cfg.prompt_init, rest) == (
      source.model_dir, "synthetic_sentiment_a", 10, 1, 5, "tiny_byte", 4,
      {"inputs": 48, "targets": 12}, "sampled_vocab", [])
  gin_utils.parse_gin(*gin_utils.split_gin_args(transfer.flags())[:2])
  with pytest.raises(ValueError, match="synthetic_paraphrase_a/seed_1/run.json not found"):
    TrainConfig()

  spec_file = tmp_path / "spec.yaml"
  spec_file.write_text(
      "name: tiny\nmodel: models/tiny_byte.gin\nsources: [synthetic_sentiment_a, "
      "synthetic_paraphrase_a]\ntargets: [synthetic_sentiment_b, synthetic_topic_2way]\n"
      "seeds: [0, 1]\nsource_steps: 10\ntarget_steps: 8\nkey_step: 5\n")
  assert main(["study", "run", str(spec_file), "--out", str(study), "--dry_run"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[:6] == [
      "Study 'tiny':",
      "  2 sources x 2 seeds = 4 source runs (10 steps each)",
      "  2 targets x 2 seeds = 4 baseline runs (8 steps each)",
      "  2 sources x 2 targets x 2 seeds = 8 transfer runs (8 steps each)",
      "  total: 16 runs, 136 train steps; 0 already finished",
      "First 3 commands:"]
  assert lines[6] == "  " + runner.plan(load_spec(str(spec_file)), str(study))[0].command()
  assert not study.exists()


def test_emitted_job_files_hold_the_exact_launcher_commands(tmp_path, capsys):
  spec = small_spec(targets=[TARGET, "synthetic_topic_2way"], seeds=[0, 1])
  study = str(tmp_path / "study")
  jobs = runner.plan(spec, study)
  prefixes = {"local": ["launch/local.sh"], "gpu": ["launch/gpu.sh"],
              "tpu_pod": ["launch/tpu_pod.sh"], "slurm_gpu": ["sbatch", "launch/slurm_gpu.sbatch"]}
  for launcher, prefix in prefixes.items():
    phase1, phase2 = runner.emit_jobs(spec, study, launcher, str(tmp_path / launcher))
    expected = []
    for kinds in (("source", "baseline"), ("transfer",)):
      lines = []
      for job in (j for j in jobs if j.kind in kinds):
        words = list(prefix)
        if launcher == "slurm_gpu":
          words[1:1] = [f"--job-name={job.name}", f"--output={study}/logs/{job.name}-%j.log"]
        lines.append(shlex.join(words + job.flags()))
      expected.append(lines)
    assert open(phase1).read().splitlines() == expected[0]
    assert open(phase2).read().splitlines() == expected[1]
    assert len(expected[0]) == 8 and len(expected[1]) == 8
  # A line runs as is: launch/local.sh hands exactly the job's flags to `spot-jax train`.
  line = shlex.split(open(tmp_path / "local" / runner.PHASE_FILES[1]).readline())
  shown = subprocess.run(["bash", line[0], "--dry_run", *line[1:]], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout
  assert shlex.split(shown)[-len(jobs[8].flags()) - 1:] == ["train", *jobs[8].flags()]
  assert os.listdir(study) == ["logs"]  # for sbatch --output; nothing else is written.


# ----------------------------------------------------------------------------- real studies


def snapshot(root: str) -> dict[str, tuple[bytes, int]]:
  """Content and mtime of every run.json and library entry file under root."""
  out = {}
  for directory, _, files in os.walk(root):
    for name in files:
      if name == run_dir.RUN_SUMMARY or "/entries/" in directory + "/":
        path = os.path.join(directory, name)
        out[path] = (open(path, "rb").read(), os.stat(path).st_mtime_ns)
  return out


@pytest.fixture(scope="module")
def study(tmp_path_factory, compilation_cache):
  """A real 2-source x 1-target x 1-seed study, trained in this process."""
  spec, study_dir = small_spec(), str(tmp_path_factory.mktemp("study"))
  report = runner.run_study(spec, study_dir, log=lambda line: None)
  assert report.ok and len(report.ran) == 5, (report.failed, report.blocked)
  return spec, study_dir


@pytest.mark.slow  # a real 5-run study (the `study` fixture): minutes on 2 cores.
def test_study_results_transfer_init_and_library(study):
  spec, study_dir = study
  jobs = {(j.kind, j.source, j.target): j for j in runner.plan(spec, study_dir)}
  rows = read_rows(os.path.join(study_dir, "results.csv"))
  expected = []
  for key in [("baseline", None, TARGET)] + [("transfer", s, TARGET) for s in SOURCES]:
    summary = run_dir.read_summary(jobs[key].model_dir)
    expected.append({"source": key[1] or "none", "target": TARGET, "seed": "0",
                     "score": repr(summary.best_score), "metric": summary.eval_metric,
                     "step": str(summary.best_step)})
    assert summary.eval_metric == "mean"  # SPoT footnote 5: the mean of the task's metrics.
  assert rows == expected
  library = PromptLibrary(os.path.join(study_dir, "library"))
  entries = library.entries()
  assert [e.id for e in entries] == ["tiny-synthetic_paraphrase_a-s0",
                                     "tiny-synthetic_sentiment_a-s0"]
  for source, entry in zip(sorted(SOURCES), entries):
    source_dir = jobs[("source", source, None)].model_dir
    best = np.load(runner.best_prompt_file(source_dir))
    assert entry.run == source_dir and entry.task == source
    np.testing.assert_array_equal(library.value(entry.id), best)
    # The transfer started from exactly the source's best prompt (its saved step-0 prompt).
    initial = np.load(run_dir.prompt_path(jobs[("transfer", source, TARGET)].model_dir, 0))
    np.testing.assert_array_equal(initial, best)
    assert best.shape == (4, 64)
  baseline_init = np.load(run_dir.prompt_path(jobs[("baseline", None, TARGET)].model_dir, 0))
  assert not np.array_equal(baseline_init, initial)


@pytest.mark.slow  # a real 5-run study (the `study` fixture): minutes on 2 cores.
def test_rerun_is_a_noop_and_retrains_only_a_deleted_run(study, capsys):
  spec, study_dir = study
  before = snapshot(study_dir)
  results = open(os.path.join(study_dir, "results.csv")).read()
  report = runner.run_study(spec, study_dir, log=lambda line: None)
  assert report.ok and report.ran == [] and len(report.skipped) == 5
  assert report.library_added == [] and snapshot(study_dir) == before
  assert open(os.path.join(study_dir, "results.csv")).read() == results

  transfer = [j for j in runner.plan(spec, study_dir) if j.kind == "transfer"][1]
  shutil.rmtree(transfer.model_dir)
  os.remove(os.path.join(study_dir, "results.csv"))
  report = runner.run_study(spec, study_dir, log=lambda line: None)
  assert report.ran == [transfer] and report.library_added == []
  assert open(os.path.join(study_dir, "results.csv")).read() == results  # same seed, same run.
  assert {p: v for p, v in snapshot(study_dir).items() if transfer.model_dir not in p} == {
      p: v for p, v in before.items() if transfer.model_dir not in p}

  # --collect trains nothing and rebuilds the same table.
  spec_file = os.path.join(study_dir, "spec.yaml")
  with open(spec_file, "w") as f:
    f.write("name: tiny\nsources: [synthetic_sentiment_a, synthetic_paraphrase_a]\n"
            "targets: [synthetic_sentiment_b]\nseeds: [0]\n"
            + "".join(f"{k}: {v}\n" for k, v in SMALL.items()))
  assert main(["study", "run", spec_file, "--out", study_dir, "--collect"]) == 0
  assert "results: 3 rows" in capsys.readouterr().out
  assert open(os.path.join(study_dir, "results.csv")).read() == results
  # Nothing left to emit for a finished study.
  for path in runner.emit_jobs(spec, study_dir, "gpu", os.path.join(study_dir, "jobs")):
    assert open(path).read() == ""


@pytest.mark.slow
def test_worker_processes_give_the_sequential_results(study, tmp_path):
  """Baseline and transfer trained by two `spot-jax train` worker processes at once (the
  transfer's source copied from the sequential study) score exactly as in that study."""
  spec, study_dir = study
  one = dataclasses.replace(spec, sources=(SOURCES[0],))
  source = runner.plan(one, str(tmp_path))[0]
  shutil.copytree(source.model_dir.replace(str(tmp_path), study_dir), source.model_dir)
  logs = []
  report = runner.run_study(one, str(tmp_path), processes=2, log=logs.append)
  assert report.ok and report.skipped == [source] and len(report.ran) == 2, (report.failed, logs)
  assert sum(line.startswith("start ") for line in logs) == 2
  sequential = [r for r in read_rows(os.path.join(study_dir, "results.csv"))
                if r["source"] in ("none", SOURCES[0])]
  assert read_rows(tmp_path / "results.csv") == sequential
  assert "Finished synthetic_sentiment_b" in open(runner.log_path(str(tmp_path),
                                                                  report.ran[0])).read()


# Stands in for `spot-jax train` in worker processes: sleeps, then writes a finished run (prompts
# at steps 5 and 10, score 50 + seed) and its start/end times, or fails when told to.
FAKE_TRAINER = """
import json, os, sys, time
start = time.time()  # before the slow imports: on a loaded machine they could outlast the sleep.
import numpy as np
model_dir, task, seed, fail = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
print("training", task, flush=True)
time.sleep(1.5)
if fail:
  print("boom: cannot train", task)
  sys.exit(3)
for step in (5, 10):
  path = os.path.join(model_dir, "numpy_checkpoints", f"checkpoint_{step}")
  os.makedirs(path)
  with open(os.path.join(path, "encoder.prompt.prompt.prompt"), "wb") as f:
    np.save(f, np.full((4, 64), step + seed, np.float32))
with open(os.path.join(model_dir, "times.json"), "w") as f:
  json.dump([start, time.time()], f)
summary = dict(task=task, model={"name": "fake", "config": {"emb_dim": 64}, "fingerprint": "f"},
               prompt_length=4, seed=seed, batch_size=8, feature_lengths={}, train_steps=10,
               key_step=5, eval_metric="accuracy", steps_done=10, checkpoints={}, best_step=10,
               best_score=50.0 + seed, prompt_init="", finished=True)
with open(os.path.join(model_dir, "run.json"), "w") as f:
  json.dump(summary, f)
"""


def test_workers_respect_dependencies_and_report_failures(tmp_path, monkeypatch):
  spec = small_spec(seeds=[0, 1])
  failing = runner.run_dir_of(str(tmp_path), "source", SOURCES[1], None, 1)
  def fake_command(job, job_dir=None):
    task = job.source if job.kind == "source" else job.target
    return [sys.executable, "-c", FAKE_TRAINER, job.model_dir, task, str(job.seed),
            str(int(job.model_dir == failing))]
  monkeypatch.setattr("spot_jax.runs.commands.worker_command", fake_command)
  report = runner.run_study(spec, str(tmp_path), processes=2, log=lambda line: None)
  jobs = {j.model_dir: j for j in runner.plan(spec, str(tmp_path))}
  (failed, why), = report.failed
  assert failed.model_dir == failing and "exit code 3" in why and failing in why
  assert "boom: cannot train synthetic_paraphrase_a" in open(
      runner.log_path(str(tmp_path), failed)).read()
  assert runner.log_path(str(tmp_path), failed) in why
  (blocked, why), = report.blocked
  assert blocked.depends_on == (failing,)
  assert why == f"not started: the run it starts from, {failed.name}, FAILED above"
  assert len(report.ran) == 8 and sorted(j.model_dir for j in report.ran) == sorted(
      set(jobs) - {failing, blocked.model_dir})
  times = {j.model_dir: json.load(open(os.path.join(j.model_dir, "times.json")))
           for j in report.ran}
  for job in report.ran:
    for dep in job.depends_on:
      assert times[job.model_dir][0] >= times[dep][1]  # a transfer starts after its source.
  edges = sorted([(t0, 1) for t0, _ in times.values()] + [(t1, -1) for _, t1 in times.values()])
  assert max(np.cumsum([d for _, d in edges])) == 2  # two workers, both used.
  rows = read_rows(tmp_path / "results.csv")
  assert sorted((r["source"], r["seed"], r["score"]) for r in rows) == [
      ("none", "0", "50.0"), ("none", "1", "51.0"), (SOURCES[1], "0", "50.0"),
      (SOURCES[0], "0", "50.0"), (SOURCES[0], "1", "51.0")]
  library = PromptLibrary(os.path.join(tmp_path, "library"))
  assert sorted(e.run for e in library.entries()) == sorted(
      j.model_dir for j in report.ran if j.kind == "source")


def test_failures_are_reported_and_block_only_dependants(tmp_path):
  # Transfers alone cannot start before their source; the NLI source is refused before any job
  # starts (its labels need 14 target tokens, the spec allows 12), naming the job and the fix.
  spec = small_spec(sources=["synthetic_nli_facts"])
  report = runner.run_study(spec, str(tmp_path), phase="transfers", log=lambda line: None)
  assert not report.ok and report.ran == [] and len(report.blocked) == 1
  assert "--phase sources first" in report.blocked[0][1]
  with pytest.raises(runner.StudyError, match=r"source\.synthetic_nli_facts\.seed_0: .*raise "
                     r"TASK_FEATURE_LENGTHS\['targets'\]"):
    runner.run_study(spec, str(tmp_path), phase="sources", log=lambda line: None)
  source, = [j for j in runner.plan(spec, str(tmp_path)) if j.kind == "source"]
  assert not os.path.exists(os.path.join(source.model_dir, "run.json"))  # nothing started.


@pytest.mark.slow  # a real 5-run study (the `study` fixture): minutes on 2 cores.
def test_packed_study_gives_the_unpacked_results(study, tmp_path, capsys):
  """`study run --pack 2`: sources, then the baseline with a transfer, train as packed jobs;
  results.csv equals the one-run-per-job study's (scores within float32 round-off)."""
  spec, study_dir = study
  spec_file = tmp_path / "spec.yaml"
  spec_file.write_text("name: tiny\nsources: [synthetic_sentiment_a, synthetic_paraphrase_a]\n"
                       "targets: [synthetic_sentiment_b]\nseeds: [0]\n"
                       + "".join(f"{k}: {v}\n" for k, v in SMALL.items()))
  emitted = runner.emit_jobs(spec, str(tmp_path / "packed"), "local", str(tmp_path / "emit"),
                             pack=2)
  lines = [open(path).read().splitlines() for path in emitted]
  assert [len(phase) for phase in lines] == [2, 1]  # [2 sources], [baseline] / [2 transfers].
  assert "--packed_job" in lines[0][0] and "--packed_job" in lines[1][0]
  assert "--packed_job" not in lines[0][1]
  out = str(tmp_path / "packed")
  assert main(["study", "run", str(spec_file), "--out", out, "--pack", "2"]) == 0
  printed = capsys.readouterr().out
  assert printed.count("packed job of 2 runs") == 2, printed
  packed, alone = (read_rows(os.path.join(d, "results.csv")) for d in (out, study_dir))
  assert [(r["source"], r["target"], r["seed"], r["metric"], r["step"]) for r in packed] == [
      (r["source"], r["target"], r["seed"], r["metric"], r["step"]) for r in alone]
  for p, a in zip(packed, alone):
    assert float(p["score"]) == pytest.approx(float(a["score"]), abs=1e-3)
  for job in runner.plan(spec, out):
    assert runner.is_finished(job)
