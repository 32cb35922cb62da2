"""Transfer strategies: weighted average, retrieval mixtures, real tiny runs, launch commands,
resumability, and the embed/retrieve/transfer CLI."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import seqio

from conftest import PROJECT_ROOT
from spot_jax import gin_utils
from spot_jax.runs import launchers
from spot_jax.cli.main import main
from spot_jax.library import similarity, transfer
from spot_jax.library.retrieval import Ranked, retrieve
from spot_jax.library.store import Entry, ModelIdentity, PromptLibrary
from spot_jax.models import get_config
from spot_jax.study.results import read_predictions
from tasks import lookup as tasks_util
from tasks.lookup import get_task_or_mixture, register_all_tasks
from spot_jax.train import run_dir
from spot_jax.train.loop import TrainConfig

register_all_tasks()
EMB = get_config("tiny_byte").emb_dim
MODEL = ModelIdentity("tiny_byte", EMB, "fp-test")
TARGET = "synthetic_sentiment_b"
GIN_FILES = ["models/tiny_byte.gin", "runs/prompt_train.gin"]
# The target runs: seconds long (random frozen tiny_byte, 4-token prompt, short sequences).
RUN_BINDINGS = ["TASK_FEATURE_LENGTHS = {'inputs': 48, 'targets': 12}", "BATCH_SIZE = 8",
                "PROMPT_LENGTH = 4", "TRAIN_STEPS = 2", "CHECKPOINT_PERIOD = 2",
                "EVAL_PERIOD = 2", "MAX_EVAL_EXAMPLES = 8", "KEY_STEP = 2"]
BASE = dict(model="tiny_byte", feature_lengths={"inputs": 48, "targets": 12}, batch_size=8,
            prompt_length=4, train_steps=2, checkpoint_period=2, eval_period=2,
            max_eval_examples=8, log_period=2, key_step=2)


def ranked_entries(library: PromptLibrary, scores: dict[str, float]) -> list[Ranked]:
  order = sorted(scores, key=lambda i: -scores[i])
  return [Ranked(library.get(i), scores[i], rank) for rank, i in enumerate(order, 1)]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
  """Source prompts [4, EMB] of three synthetic tasks; the query sits next to copy/reverse."""
  rng = np.random.default_rng(0)
  lib = PromptLibrary(str(tmp_path_factory.mktemp("transfer") / "library"), create=True)
  query = rng.normal(0.0, 0.5, (4, EMB)).astype(np.float32)
  ids = {}
  for task, noise in (("synthetic_copy", 0.01), ("synthetic_reverse", 0.05),
                      ("synthetic_topic_2way", None), ("synthetic_sentiment_b", 0.0)):
    key = query + noise * rng.standard_normal((4, EMB)) if noise is not None \
        else rng.normal(0.0, 0.5, (4, EMB))
    value = rng.normal(0.0, 0.5, (4, EMB))
    ids[task] = lib.add(task=task, value=value, key=key, model=MODEL, seed=0).id
  return lib, query, ids


# ------------------------------------------------------------------------------ weighted average


def test_weighted_average_prompt_by_hand():
  prompts = np.array([[[1.0, 2.0], [0.0, 4.0]], [[3.0, 2.0], [4.0, 0.0]]])
  # alphas = [1, 3] / 4 = [0.25, 0.75]: 0.25 * p0 + 0.75 * p1.
  expected = np.array([[0.25 * 1 + 0.75 * 3, 2.0], [0.75 * 4, 0.25 * 4]])
  np.testing.assert_allclose(transfer.weighted_average_prompt(prompts, [1.0, 3.0]), expected)
  assert transfer.alphas([1.0, 3.0]) == [0.25, 0.75]


@pytest.mark.parametrize("sims", [[0.5, -0.1], [0.0, 0.0]])
def test_weighted_average_refuses_negative_or_zero_similarities(sims):
  with pytest.raises(transfer.TransferError, match="distance-based metric"):
    transfer.weighted_average_prompt(np.ones((2, 3, 4)), sims)


def test_weighted_average_plan_writes_prompt_and_alphas(library, tmp_path, capsys):
  lib, _, ids = library
  ranked = ranked_entries(lib, {ids["synthetic_copy"]: 0.6, ids["synthetic_reverse"]: 0.2,
                                ids["synthetic_topic_2way"]: 0.1})
  plan = transfer.plan_transfer("weighted_average", ranked, lib, target=TARGET,
                                out_dir=str(tmp_path / "out"), k=2, base_config=BASE,
                                metric="euclidean", gin_files=GIN_FILES)
  result = transfer.run_transfer(plan, dry_run=True)
  expected = 0.75 * lib.value(ids["synthetic_copy"]) + 0.25 * lib.value(ids["synthetic_reverse"])
  written = np.load(tmp_path / "out" / "init" / "weighted_average.npy")
  np.testing.assert_allclose(written, expected, rtol=1e-6)
  record = json.loads((tmp_path / "out" / "transfer.json").read_text())
  assert record["alphas"] == pytest.approx([0.75, 0.25])
  assert [r["id"] for r in record["retrieved"]] == [ids["synthetic_copy"],
                                                     ids["synthetic_reverse"]]
  assert record["strategy"] == "weighted_average" and record["metric"] == "euclidean"
  assert [r["status"] for r in result.runs] == ["dry_run"]
  assert shlex.join(result.commands[0]) in capsys.readouterr().out


# ------------------------------------------------------------------------------ mixtures


def test_retrieval_mixture_has_top_k_tasks_and_capped_rates(library, tmp_path):
  lib, query, _ = library
  ranked = retrieve(lib, query, model=MODEL, metric="cosine", k=2, exclude_task=TARGET)
  assert [r.entry.task for r in ranked] == ["synthetic_copy", "synthetic_reverse"]
  plan = transfer.plan_transfer("mixture", ranked, lib, target=TARGET,
                                out_dir=str(tmp_path / "mix"), k=2, base_config=BASE,
                                source_steps=3)
  name = "spot_transfer_mix.synthetic_copy.synthetic_reverse.synthetic_sentiment_b"
  assert plan.mixture == name == tasks_util.mixture_name(
      ["synthetic_sentiment_b", "synthetic_reverse", "synthetic_copy"])
  mixture = seqio.get_mixture_or_task(name)
  # Training set sizes of tasks/synthetic_world.py: copy 5000, reverse 2000, sentiment_b 500.
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  assert rates == {"synthetic_copy": 5000.0, "synthetic_reverse": 2000.0,
                   "synthetic_sentiment_b": 500.0}
  source, target = plan.runs
  assert source.gin_bindings["TrainConfig.task"] == f'"{name}"' and source.train_steps == 3
  assert plan.prompt_files[target.name] == run_dir.prompt_path(source.model_dir, 3)
  assert target.target == TARGET and target.depends_on == (source.model_dir,)
  # A fresh lookup by name alone rebuilds the same mixture.
  seqio.MixtureRegistry.remove(name)
  rebuilt = get_task_or_mixture(name)
  assert {t.name: rebuilt.get_rate(t) for t in rebuilt.tasks} == rates


def test_retrieval_mixture_of_real_tasks_is_capped_and_rebuilt_in_another_process():
  tasks = ["yelp_polarity", "glue_rte", "super_glue_cb"]
  name = tasks_util.mixture_name(tasks)
  code = ("import json; from tasks.lookup import get_task_or_mixture; "
          f"m = get_task_or_mixture({name!r}); "
          "print(json.dumps({t.name: m.get_rate(t) for t in m.tasks}))")
  process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=PROJECT_ROOT, timeout=120)
  assert process.returncode == 0, process.stderr
  # yelp_polarity has 560,000 examples, capped at 2**19 = 524,288; RTE 2,490; CB 250.
  assert json.loads(process.stdout.splitlines()[-1]) == {
      "glue_rte": 2490.0, "super_glue_cb": 250.0, "yelp_polarity": 524288.0}


def test_mixture_names_are_validated():
  with pytest.raises(tasks_util.TransferMixtureError, match="cannot be encoded"):
    tasks_util.mixture_name(["glue.rte"])
  with pytest.raises(tasks_util.TransferMixtureError, match="not canonical"):
    tasks_util.mixture_members("spot_transfer_mix.b.a")
  with pytest.raises(tasks_util.TransferMixtureError, match="unknown tasks"):
    get_task_or_mixture("spot_transfer_mix.glue_rte.no_such_task")


# ------------------------------------------------------------------------------ real runs


@pytest.mark.slow  # minutes on 2 CPU cores: the default suite stays under 15 min
def test_best_of_top_k_trains_from_each_value_and_resumes(library, tmp_path, monkeypatch):
  lib, query, ids = library
  ranked = retrieve(lib, query, model=MODEL, metric="euclidean", k=2, exclude_task=TARGET)
  plan = transfer.plan_transfer("best_of_top_k", ranked, lib, target=TARGET,
                                out_dir=str(tmp_path / "best"), k=2, base_config=BASE,
                                metric="euclidean", query={"key": "inline"})
  result = transfer.run_transfer(plan)
  assert [r["name"] for r in result.runs] == [ids["synthetic_copy"], ids["synthetic_reverse"]]
  for row, r in zip(result.runs, ranked):
    assert row["status"] == "finished"
    step0 = np.load(run_dir.prompt_path(row["model_dir"], 0))  # the run's initial prompt.
    np.testing.assert_array_equal(step0, lib.value(r.entry.id))
    summary = run_dir.read_summary(row["model_dir"])
    assert summary.finished and summary.task == TARGET and summary.prompt_init == "file"
    assert row["best_score"] == summary.best_score
  best = max(result.runs, key=lambda r: r["best_score"])
  assert result.best["name"] == best["name"]
  assert result.best["best_score"] == max(r["best_score"] for r in result.runs)
  record = json.loads((tmp_path / "best" / "transfer.json").read_text())
  assert record["best"] == result.best and [r["similarity"] for r in record["retrieved"]] == \
      pytest.approx([r.score for r in ranked])

  # Resuming: finished runs are skipped, nothing is trained again.
  monkeypatch.setattr("spot_jax.train.loop.train",
                      lambda *a, **k: pytest.fail("a finished run was trained again"))
  again = transfer.run_transfer(plan)
  assert [r["status"] for r in again.runs] == ["skipped", "skipped"]
  assert again.best == result.best
  # Another transfer in the same OUT_DIR is refused, not mixed in.
  other = transfer.plan_transfer("best_of_top_k", ranked[::-1], lib, target=TARGET,
                                 out_dir=str(tmp_path / "best"), k=2, base_config=BASE)
  with pytest.raises(transfer.TransferError, match="another transfer"):
    transfer.run_transfer(other)


# ------------------------------------------------------------------------------ launchers


@pytest.mark.parametrize("launcher", ["local", "gpu", "tpu_pod", "slurm_gpu"])
def test_launcher_dry_run_prints_exact_commands(library, tmp_path, capsys, launcher):
  lib, query, _ = library
  ranked = retrieve(lib, query, model=MODEL, metric="cosine", k=2, exclude_task=TARGET)
  out = str(tmp_path / "out")
  plan = transfer.plan_transfer("mixture", ranked, lib, target=TARGET, out_dir=out, k=2,
                                prompt_length=4, source_steps=3, gin_files=GIN_FILES,
                                gin_bindings=["TRAIN_STEPS = 4"])
  result = transfer.run_transfer(plan, launcher=launcher, dry_run=True)
  script = str(launchers.PROJECT_ROOT / launchers.LAUNCH_SCRIPTS[launcher])
  mix = plan.mixture
  source_dir, target_dir = f"{out}/runs/mixture_source", f"{out}/runs/mixture_target"
  source = [f"--gin_file={GIN_FILES[0]}", f"--gin_file={GIN_FILES[1]}",
            f'--gin.MODEL_DIR="{source_dir}"', f'--gin.MIXTURE_OR_TASK_NAME="{mix}"',
            "--gin.TRAIN_STEPS=3", '--gin.PROMPT_INIT="sampled_vocab"']
  target = [f"--gin_file={GIN_FILES[0]}", f"--gin_file={GIN_FILES[1]}",
            "--gin_file=prompts/from_file.gin", "--gin.TRAIN_STEPS=4",
            f'--gin.MODEL_DIR="{target_dir}"', f'--gin.MIXTURE_OR_TASK_NAME="{TARGET}"',
            '--gin.PROMPT_INIT="file"',
            f'--gin.PROMPT_FILE="{source_dir}/numpy_checkpoints/checkpoint_3/'
            'encoder.prompt.prompt.prompt"']
  if launcher == "slurm_gpu":
    expected = [["sbatch", "--parsable", script] + source,
                ["sbatch", "--parsable", "--dependency=afterok:<job id of mixture_source>",
                 script] + target]
  else:
    expected = [[script] + source, [script] + target]
  assert result.commands == expected
  assert capsys.readouterr().out.splitlines() == [shlex.join(c) for c in expected]
  assert not os.path.exists(source_dir)  # nothing trained.


# Stands in for `spot-jax train` behind launch/local.sh: records its arguments and writes a
# finished run.json whose best_score is the length of the MODEL_DIR path.
FAKE_SPOT_JAX = f"""#!{sys.executable}
import json, os, sys
bindings = dict(a[len("--gin."):].split("=", 1) for a in sys.argv[2:] if a.startswith("--gin."))
model_dir = json.loads(bindings["MODEL_DIR"])
os.makedirs(model_dir, exist_ok=True)
summary = dict(task=json.loads(bindings["MIXTURE_OR_TASK_NAME"]), model={{}}, prompt_length=4,
               seed=0, batch_size=8, feature_lengths={{}}, train_steps=2, key_step=2,
               steps_done=2, best_step=2, best_score=float(len(model_dir)), finished=True,
               eval_metric="accuracy")
json.dump(summary, open(os.path.join(model_dir, "run.json"), "w"))
json.dump(sys.argv[1:], open(os.path.join(model_dir, "argv.json"), "w"))
"""


def test_local_launcher_runs_each_command(library, tmp_path, monkeypatch):
  lib, query, _ = library
  venv = tmp_path / "venv"
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "spot-jax").write_text(FAKE_SPOT_JAX)
  (venv / "bin" / "spot-jax").chmod(0o755)
  monkeypatch.setenv("VENV", str(venv))
  ranked = retrieve(lib, query, model=MODEL, metric="cosine", k=2, exclude_task=TARGET)
  plan = transfer.plan_transfer("best_of_top_k", ranked, lib, target=TARGET,
                                out_dir=str(tmp_path / "o"), k=2, base_config=BASE,
                                gin_files=GIN_FILES)
  result = transfer.run_transfer(plan, launcher="local")
  assert [r["status"] for r in result.runs] == ["finished", "finished"]
  for run, command in zip(plan.runs, result.commands):
    argv = json.loads((tmp_path / "o" / "runs" / run.name / "argv.json").read_text())
    assert argv == ["train"] + command[1:]  # the script passes the arguments unchanged.
  longest = max(plan.runs, key=lambda run: len(run.model_dir))
  assert result.best["name"] == longest.name
  assert result.best["best_score"] == len(longest.model_dir)


def test_launch_arguments_configure_the_planned_runs(library, tmp_path):
  """What a launch script passes to `spot-jax train` builds exactly the planned TrainConfig."""
  lib, query, _ = library
  ranked = retrieve(lib, query, model=MODEL, metric="cosine", k=2, exclude_task=TARGET)
  plan = transfer.plan_transfer("best_of_top_k", ranked, lib, target=TARGET,
                                out_dir=str(tmp_path / "o"), k=2, base_config=BASE,
                                gin_files=GIN_FILES, gin_bindings=RUN_BINDINGS)
  for run in plan.runs:
    files, bindings, rest = gin_utils.split_gin_args(transfer.train_args(plan, run))
    assert rest == []
    gin_utils.parse_gin(files, bindings)
    cfg = TrainConfig()
    assert (cfg.model_dir, cfg.task) == (run.model_dir, TARGET)
    assert (cfg.prompt_init, cfg.prompt_file) == ("file", plan.prompt_files[run.name])
    assert (cfg.train_steps, cfg.prompt_length, cfg.batch_size) == (2, 4, 8)


# ------------------------------------------------------------------------------ CLI


def test_cli_retrieve_writes_predictions(library, tmp_path, capsys):
  lib, query, ids = library
  key = tmp_path / "key.npy"
  np.save(key, query)
  out = tmp_path / "pred.csv"
  assert main(["retrieve", "--library", lib.root, "--key", str(key), "--model", "fp-test",
               "--k", "2", "--target", TARGET, "--out", str(out)]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == ["rank", "id", "task", "seed", "similarity"]
  assert [line.split()[:3] for line in lines[1:3]] == [  # the query itself is a TARGET key.
      ["1", ids[TARGET], TARGET], ["2", ids["synthetic_copy"], "synthetic_copy"]]
  # A scorer that is not a similarity labels its column "score".
  assert main(["retrieve", "--library", lib.root, "--key", str(key), "--model", "fp-test",
               "--k", "2", "--scorer", "max_pairwise"]) == 0
  assert capsys.readouterr().out.splitlines()[0].split() == ["rank", "id", "task", "seed", "score"]
  with open(out) as f:
    rows = list(csv.DictReader(f))
  entries, keys = lib.pooled_keys("mean", model=MODEL)
  sims = dict(zip([e.task for e in entries],
                  similarity.scores("cosine", similarity.pool(query, "mean"), keys)))
  assert [r["source"] for r in rows] == ["synthetic_copy", "synthetic_reverse",
                                         "synthetic_topic_2way"]
  assert all(r["target"] == TARGET for r in rows)  # and TARGET is no source of itself.
  assert [float(r["score"]) for r in rows] == pytest.approx([sims[r["source"]] for r in rows])
  predictions = read_predictions(str(out))  # the study evaluator reads it.
  assert predictions.source == ("synthetic_copy", "synthetic_reverse", "synthetic_topic_2way")
  assert main(["retrieve", "--library", lib.root, "--key", str(key), "--out", str(out)]) == 2
  assert "--key needs --model" in capsys.readouterr().err


def test_cli_embed_then_retrieve_and_transfer_dry_run(library, tmp_path, capsys):
  lib, _, ids = library
  model_dir, key = tmp_path / "target", tmp_path / "key.npy"
  gin = [f"--gin_file={f}" for f in GIN_FILES] + [
      f"--gin.{b.replace(' = ', '=')}" for b in RUN_BINDINGS] + [
      f"--gin.MODEL_DIR={model_dir}", f"--gin.MIXTURE_OR_TASK_NAME={TARGET}"]
  assert main(["embed", *gin, "--key_step", "1", "--out", str(key)]) == 0
  summary = run_dir.read_summary(str(model_dir))
  assert summary.steps_done == 1 and summary.key_step == 1 and summary.finished
  step1 = np.load(run_dir.prompt_path(str(model_dir), 1))
  np.testing.assert_array_equal(np.load(key), step1)
  assert not np.array_equal(step1, np.load(run_dir.prompt_path(str(model_dir), 0)))
  capsys.readouterr()

  # The run's own model identity: the library (model "fp-test") has no entries of it.
  assert main(["retrieve", "--library", lib.root, "--run", str(model_dir)]) == 2
  assert "no entries of model tiny_byte" in capsys.readouterr().err
  run_model = ModelIdentity.from_run_summary(summary)
  lib.add(task="synthetic_copy", value=np.load(key), key=np.load(key), model=run_model, seed=7)
  assert main(["retrieve", "--library", lib.root, "--run", str(model_dir), "--k", "1"]) == 0
  assert capsys.readouterr().out.splitlines()[1].split()[2] == "synthetic_copy"
  out_dir = tmp_path / "transfer"
  assert main(["transfer", "--strategy", "best_of_top_k", "--library", lib.root, "--run",
               str(model_dir), "--target", TARGET, "--k", "1", "--out_dir", str(out_dir),
               "--launcher", "local", "--dry_run", *[g for g in gin if "MODEL_DIR" not in g
                                                     and "MIXTURE" not in g]]) == 0
  printed = capsys.readouterr().out
  assert "launch/local.sh --gin_file=models/tiny_byte.gin" in printed
  assert f"--gin.PROMPT_FILE=\"{out_dir}/init/" in printed.replace("'", "")
  record = json.loads((out_dir / "transfer.json").read_text())
  assert record["query"] == {"run": str(model_dir), "key_step": 1}
  assert [r["status"] for r in record["runs"]] == ["dry_run"]
