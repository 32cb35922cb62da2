"""The launch scripts: exact dry-run commands, and argument passing through fake launchers."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAUNCH = PROJECT_ROOT / "launch"
# Arguments that break naive quoting: spaces, both quote kinds, $, backticks, globs, empty.
ARGS = ["--gin_file=configs/train.gin", "--gin.MIXTURE_OR_TASK_NAME='glue_rte'",
        "--gin.MODEL_DIR=/tmp/my run", "--gin.NOTE=it's \"quoted\" $HOME `id` *", ""]
SLURM_NODES = ["gpu-node-07", "gpu-node-08"]
GPU_ENV = ["XLA_PYTHON_CLIENT_MEM_FRACTION=0.9",
           "XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true",
           "TF_FORCE_GPU_ALLOW_GROWTH=true", "TF_CPP_MIN_LOG_LEVEL=1"]

# Records how it was called: argv, cwd and the SPOT_JAX_* environment, one JSON file per process.
FAKE_SPOT_JAX = f"""#!{sys.executable}
import json, os, sys
record = {{"argv": sys.argv[1:], "cwd": os.getcwd(),
          "env": {{k: v for k, v in os.environ.items() if k.startswith(("SPOT_JAX_", "XLA_"))}}}}
name = "call_" + os.environ.get("SPOT_JAX_PROCESS_ID", "0") + ".json"
with open(os.path.join(os.environ["FAKE_RECORD_DIR"], name), "w") as f:
  json.dump(record, f)
"""
# scontrol show hostnames LIST -> the nodes, one a line.
FAKE_SCONTROL = "#!/usr/bin/env bash\nprintf '%s\\n' " + " ".join(SLURM_NODES) + "\n"
# srun --ntasks=N ... CMD...: runs CMD once per task with SLURM_PROCID set.
FAKE_SRUN = """#!/usr/bin/env bash
n=1
while [[ $1 == --* ]]; do [[ $1 == --ntasks=* ]] && n=${1#--ntasks=}; shift; done
for ((i = 0; i < n; i++)); do SLURM_PROCID=$i "$@" || exit; done
"""
# gcloud ... --command CMD: runs CMD in a shell, as ssh does on each worker (one worker here).
FAKE_GCLOUD = """#!/usr/bin/env bash
while [[ $# -gt 0 ]]; do
  if [[ $1 == --command ]]; then exec bash -c "$2"; fi
  shift
done
exit 3
"""


def write_exe(path: Path, text: str) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(0o755)
  return path


def clean_env(**extra: str) -> dict[str, str]:
  drop = ("SPOT_JAX_", "SLURM_", "XLA_", "TF_", "DRY_RUN", "TPU_NAME", "ZONE", "PROJECT",
          "REMOTE_DIR", "VENV", "GCLOUD", "PYTHONPATH")
  env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
  env.update(extra)
  return env


def launch(script: str, args: list[str], env: dict[str, str], cwd: Path | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
  proc = subprocess.run(["bash", str(LAUNCH / script), *args], env=env, cwd=cwd or PROJECT_ROOT,
                        capture_output=True, text=True, timeout=60)
  if check:
    assert proc.returncode == 0, proc.stderr
  return proc


def dry_run(script: str, env: dict[str, str], args: list[str] = ARGS) -> list[str]:
  """Runs with --dry_run and with DRY_RUN=1; both must print the same; returns its lines."""
  by_flag = launch(script, ["--dry_run", *args], env).stdout
  by_env = launch(script, args, dict(env, DRY_RUN="1")).stdout
  assert by_flag == by_env
  return by_flag.splitlines()


def fake_slurm_env(tmp_path: Path, **extra: str) -> dict[str, str]:
  bin_dir = tmp_path / "bin"
  write_exe(bin_dir / "scontrol", FAKE_SCONTROL)
  return clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_NODELIST="gpu-node-[07-08]",
                   SLURM_NTASKS="2", SLURM_NNODES="2", SLURM_JOB_ID="123456", **extra)


def read_calls(record_dir: Path) -> list[dict]:
  return [json.loads(p.read_text()) for p in sorted(record_dir.glob("call_*.json"))]


# ----------------------------------------------------------------------------- dry runs


def test_local_dry_run_uses_the_venv_entry_point(tmp_path):
  venv = tmp_path / "venv"
  write_exe(venv / "bin" / "spot-jax", "#!/bin/sh\n")
  lines = dry_run("local.sh", clean_env(VENV=str(venv)))
  assert lines == [shlex.join([f"{venv}/bin/spot-jax", "train", *ARGS])]
  assert shlex.split(lines[0])[2:] == ARGS


def test_local_dry_run_without_installed_entry_point(tmp_path):
  venv = tmp_path / "venv"  # no bin/spot-jax: run the checkout's module.
  lines = dry_run("local.sh", clean_env(VENV=str(venv)))
  assert lines == [shlex.join(["env", f"PYTHONPATH={PROJECT_ROOT}", f"{venv}/bin/python", "-m",
                               "spot_jax.cli.main", "train", *ARGS])]


def test_local_default_venv_is_the_checkouts():
  (line,) = dry_run("local.sh", clean_env(), args=["--gin_file=a.gin"])
  assert line.startswith(str(PROJECT_ROOT / ".venv" / "bin"))
  assert line.endswith(" train --gin_file=a.gin")


def test_gpu_dry_run():
  lines = dry_run("gpu.sh", clean_env())
  assert lines == [shlex.join(["env", *GPU_ENV, "spot-jax", "train", *ARGS])]


def test_gpu_dry_run_keeps_user_settings():
  env = clean_env(XLA_PYTHON_CLIENT_MEM_FRACTION="0.5", XLA_FLAGS="--xla_dump_to=/tmp/d",
                  SPOT_JAX_BIN="/opt/venv/bin/spot-jax")
  (line,) = dry_run("gpu.sh", env, args=["--gin_file=a.gin"])
  assert shlex.split(line) == [
      "env", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.5",
      "XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true --xla_dump_to=/tmp/d",
      "TF_FORCE_GPU_ALLOW_GROWTH=true", "TF_CPP_MIN_LOG_LEVEL=1",
      "/opt/venv/bin/spot-jax", "train", "--gin_file=a.gin"]


def test_tpu_pod_dry_run():
  env = clean_env(TPU_NAME="spot-v4-32", ZONE="us-central2-b")
  lines = dry_run("tpu_pod.sh", env)
  remote = shlex.join(["env", "SPOT_JAX_DISTRIBUTED=auto", "spot-jax", "train", *ARGS])
  assert lines == [shlex.join(["gcloud", "compute", "tpus", "tpu-vm", "ssh", "spot-v4-32",
                               "--zone", "us-central2-b", "--worker=all", "--command", remote])]
  # What each worker's shell runs: the user's arguments, intact.
  assert shlex.split(shlex.split(lines[0])[-1]) == [
      "env", "SPOT_JAX_DISTRIBUTED=auto", "spot-jax", "train", *ARGS]


def test_tpu_pod_dry_run_with_project_and_remote_dir():
  env = clean_env(TPU_NAME="pod", ZONE="europe-west4-a", PROJECT="my-proj",
                  REMOTE_DIR="spot jax", SPOT_JAX_BIN=".venv/bin/spot-jax")
  (line,) = dry_run("tpu_pod.sh", env, args=["--gin_file=a.gin"])
  remote = ("cd 'spot jax' && env SPOT_JAX_DISTRIBUTED=auto .venv/bin/spot-jax train "
            "--gin_file=a.gin")
  assert shlex.split(line) == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod", "--zone",
                               "europe-west4-a", "--project", "my-proj", "--worker=all",
                               "--command", remote]


@pytest.mark.parametrize("missing", ["TPU_NAME", "ZONE"])
def test_tpu_pod_requires_name_and_zone(missing):
  env = clean_env(TPU_NAME="pod", ZONE="z")
  del env[missing]
  proc = launch("tpu_pod.sh", ["--dry_run", "--gin_file=a.gin"], env, check=False)
  assert proc.returncode != 0 and missing in proc.stderr and not proc.stdout


def test_slurm_dry_run(tmp_path):
  lines = dry_run("slurm_gpu.sbatch", fake_slurm_env(tmp_path))
  port = 20000 + 123456 % 20000
  assert lines == [shlex.join([
      "srun", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "env",
      f"SPOT_JAX_COORDINATOR=gpu-node-07:{port}", "SPOT_JAX_NUM_PROCESSES=2",
      "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9", "TF_FORCE_GPU_ALLOW_GROWTH=true",
      "bash", "-c", 'SPOT_JAX_PROCESS_ID="$SLURM_PROCID" exec "$@"', "spot-jax-task",
      "spot-jax", "train", *ARGS])]


def test_slurm_port_override_and_allocation_check(tmp_path):
  (line,) = dry_run("slurm_gpu.sbatch", fake_slurm_env(tmp_path, SPOT_JAX_PORT="4321"),
                    args=["--gin_file=a.gin"])
  assert "SPOT_JAX_COORDINATOR=gpu-node-07:4321" in shlex.split(line)
  proc = launch("slurm_gpu.sbatch", ["--dry_run"], clean_env(), check=False)
  assert proc.returncode != 0 and "SLURM" in proc.stderr


def test_sbatch_directives_come_first():
  lines = (LAUNCH / "slurm_gpu.sbatch").read_text().splitlines()
  directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
  assert directives and directives == list(range(1, len(directives) + 1))
  assert "#SBATCH --ntasks-per-node=1" in lines


# ----------------------------------------------------------------------------- real runs (fakes)


def test_gpu_passes_arguments_intact(tmp_path):
  fake = write_exe(tmp_path / "bin" / "spot-jax", FAKE_SPOT_JAX)
  launch("gpu.sh", ARGS, clean_env(SPOT_JAX_BIN=str(fake), FAKE_RECORD_DIR=str(tmp_path)))
  (call,) = read_calls(tmp_path)
  assert call["argv"] == ["train", *ARGS]
  assert call["env"]["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.9"


def test_local_passes_arguments_intact(tmp_path):
  venv = tmp_path / "venv"
  write_exe(venv / "bin" / "spot-jax", FAKE_SPOT_JAX)
  launch("local.sh", ARGS, clean_env(VENV=str(venv), FAKE_RECORD_DIR=str(tmp_path)), cwd=tmp_path)
  (call,) = read_calls(tmp_path)
  assert call["argv"] == ["train", *ARGS] and call["cwd"] == str(tmp_path)


def test_tpu_pod_remote_shell_gets_arguments_intact(tmp_path):
  bin_dir = tmp_path / "bin"
  fake = write_exe(bin_dir / "spot-jax", FAKE_SPOT_JAX)
  write_exe(bin_dir / "gcloud", FAKE_GCLOUD)
  (tmp_path / "remote home" / "spot jax").mkdir(parents=True)
  env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", TPU_NAME="pod", ZONE="z",
                  REMOTE_DIR="spot jax", SPOT_JAX_BIN=str(fake), FAKE_RECORD_DIR=str(tmp_path))
  launch("tpu_pod.sh", ARGS, env, cwd=tmp_path / "remote home")
  (call,) = read_calls(tmp_path)
  assert call["argv"] == ["train", *ARGS]
  assert call["cwd"] == str(tmp_path / "remote home" / "spot jax")
  assert call["env"]["SPOT_JAX_DISTRIBUTED"] == "auto"


def test_slurm_tasks_get_their_process_ids(tmp_path):
  fake = write_exe(tmp_path / "bin" / "spot-jax", FAKE_SPOT_JAX)
  write_exe(tmp_path / "bin" / "srun", FAKE_SRUN)
  env = fake_slurm_env(tmp_path, SPOT_JAX_BIN=str(fake), FAKE_RECORD_DIR=str(tmp_path))
  launch("slurm_gpu.sbatch", ARGS, env)
  calls = read_calls(tmp_path)
  assert [c["env"]["SPOT_JAX_PROCESS_ID"] for c in calls] == ["0", "1"]
  for call in calls:
    assert call["argv"] == ["train", *ARGS]
    assert call["env"]["SPOT_JAX_COORDINATOR"] == f"gpu-node-07:{20000 + 123456 % 20000}"
    assert call["env"]["SPOT_JAX_NUM_PROCESSES"] == "2"
