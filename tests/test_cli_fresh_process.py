"""Each subcommand's real code path in a FRESH process, through the installed `spot-jax` entry
point: nothing registered or imported by an earlier command or test can hide a missing set-up
step (issue 24, item 1: `transfer` looked its target up before any task was registered, which
an in-process test missed because `embed` ran first and registered everything).

The commands chain as the README's "Use it for real" steps do: embed a target's key run, add
sources to a library, retrieve, transfer for real, evaluate a prompt, dry-run a study, and score
sources with `affinity predict`.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import PROJECT_ROOT

TARGET = "synthetic_sentiment_b"
SOURCES = ("synthetic_sentiment_a", "synthetic_topic_2way")
GIN = ["--gin_file=models/tiny_byte.gin", "--gin_file=runs/prompt_train.gin",
       "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 12}", "--gin.BATCH_SIZE=8",
       "--gin.PROMPT_LENGTH=4", "--gin.TRAIN_STEPS=2", "--gin.CHECKPOINT_PERIOD=2",
       "--gin.EVAL_PERIOD=2", "--gin.MAX_EVAL_EXAMPLES=8", "--gin.KEY_STEP=2"]


def spot_jax(*args: str, cwd=None, timeout: int = 300) -> subprocess.CompletedProcess:
  """`spot-jax ARGS` as a new user runs it: the installed entry point, a new process."""
  program = os.path.join(os.path.dirname(sys.executable), "spot-jax")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  process = subprocess.run([program, *args], capture_output=True, text=True, timeout=timeout,
                           cwd=cwd or PROJECT_ROOT, env=env)
  assert process.returncode == 0, (f"spot-jax {' '.join(args)} exited {process.returncode}:\n"
                                   f"{process.stdout}\n{process.stderr}")
  return process


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """A target's key run made by `spot-jax embed`, and a library of two source prompts of the
  same frozen model (the sources' arrays are made here: what is tested is the commands)."""
  from spot_jax.library.store import ModelIdentity, PromptLibrary
  from spot_jax.train import run_dir
  root = tmp_path_factory.mktemp("fresh")
  key_run, key = root / "key_run", root / "key.npy"
  spot_jax("embed", *GIN, f"--gin.MODEL_DIR={key_run}", f"--gin.MIXTURE_OR_TASK_NAME={TARGET}",
           "--out", str(key))
  summary = run_dir.read_summary(str(key_run))
  library = PromptLibrary(str(root / "library"), create=True)
  rng = np.random.default_rng(0)
  for task in SOURCES:
    prompt = np.load(key) + 0.1 * rng.standard_normal(np.load(key).shape).astype(np.float32)
    library.add(task=task, value=prompt, key=prompt, seed=0,
                model=ModelIdentity.from_run_summary(summary))
  return root, key_run, key, library.root


def test_embed_writes_the_key_of_its_run_in_a_fresh_process(world):
  from spot_jax.train import run_dir
  _, key_run, key, _ = world
  np.testing.assert_array_equal(np.load(key), np.load(run_dir.prompt_path(str(key_run), 2)))


def test_retrieve_ranks_the_library_in_a_fresh_process(world, tmp_path):
  _, key_run, _, library = world
  out = tmp_path / "pred.csv"
  printed = spot_jax("retrieve", "--library", library, "--run", str(key_run), "--k", "2",
                     "--out", str(out)).stdout
  with open(out) as f:
    rows = list(csv.DictReader(f))
  assert {r["source"] for r in rows} == set(SOURCES) and {r["target"] for r in rows} == {TARGET}
  assert all(task in printed for task in SOURCES)


def test_transfer_trains_the_target_in_a_fresh_process(world, tmp_path):
  """The README's step 4 as the issue ran it: weighted average of the top 2, trained for real."""
  _, key_run, _, library = world
  out_dir = tmp_path / "transfer"
  printed = spot_jax("transfer", "--strategy", "weighted_average", "--library", library,
                     "--run", str(key_run), "--target", TARGET, "--k", "2",
                     "--out_dir", str(out_dir), *GIN).stdout
  record = json.loads((out_dir / "transfer.json").read_text())
  assert record["strategy"] == "weighted_average" and len(record["retrieved"]) == 2
  assert [r["status"] for r in record["runs"]] == ["finished"], record["runs"]
  assert "Best:" in printed


def test_eval_scores_a_prompt_file_in_a_fresh_process(world, tmp_path):
  _, _, key, _ = world
  out = tmp_path / "metrics.json"
  spot_jax("eval", "--gin_file=models/tiny_byte.gin", "--gin_file=runs/prompt_eval.gin",
           f"--gin.MIXTURE_OR_TASK_NAME={TARGET}", "--gin.PROMPT_LENGTH=4",
           f"--gin.PROMPT_FILE={key}", "--gin.MAX_EVAL_EXAMPLES=8", f"--gin.OUTPUT_FILE={out}")
  assert "accuracy" in json.loads(out.read_text())[TARGET]


def test_study_run_dry_run_plans_every_run_in_a_fresh_process(tmp_path):
  printed = spot_jax("study", "run", "gin_configs/study/synthetic.yaml", "--out",
                     str(tmp_path / "study"), "--dry_run").stdout
  # 4 sources + 4 baselines + 4 x 4 transfers, times 3 seeds.
  assert "total: 72 runs" in printed and "4 targets x 3 seeds" in printed, printed


def test_affinity_predict_scores_library_sources_in_a_fresh_process(world, tmp_path):
  _, _, _, library = world
  out = tmp_path / "cosine.csv"
  spot_jax("affinity", "predict", "--scorer", "cosine", "--library", library, "--out", str(out))
  with open(out) as f:
    rows = list(csv.DictReader(f))
  assert {(r["target"], r["source"]) for r in rows} == {
      (t, s) for t in SOURCES for s in SOURCES if s != t}
