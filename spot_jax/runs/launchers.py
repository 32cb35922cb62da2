"""The launch scripts (`launch/`) as command prefixes for `spot-jax train` arguments.

One place says how a training run is started: on this machine (`local`), on a GPU host
(`gpu`), on every worker of a TPU VM pod (`tpu_pod`), or as a SLURM batch job (`slurm_gpu`,
through `sbatch`). Transfers (`spot_jax.library.transfer`) and studies (`spot_jax.study.runner`)
build their commands with `launch_prefix`.
"""

from __future__ import annotations

from spot_jax.resources import data_dir

# The checkout root, or the installed package (its copy of launch/): PROJECT_ROOT / "launch/..".
PROJECT_ROOT = data_dir("launch").parent
LAUNCH_SCRIPTS = {"local": "launch/local.sh", "gpu": "launch/gpu.sh",
                  "tpu_pod": "launch/tpu_pod.sh", "slurm_gpu": "launch/slurm_gpu.sbatch"}


def launch_prefix(launcher: str, *, absolute: bool = False, sbatch_options: tuple[str, ...] = ()
                  ) -> list[str]:
  """The words before the train arguments: the launcher's script, behind `sbatch [options]`
  for SLURM. Script paths are relative to the checkout root unless `absolute` (then they name
the installed copy when the package is installed)."""
  if launcher not in LAUNCH_SCRIPTS:
    raise ValueError(f"Unknown launcher {launcher!r}; choose one of {sorted(LAUNCH_SCRIPTS)}")
  script = LAUNCH_SCRIPTS[launcher]
  script = str(PROJECT_ROOT / script) if absolute else script
  if launcher == "slurm_gpu":
    return ["sbatch", *sbatch_options, script]
  return [script]
