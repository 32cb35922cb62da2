"""Small-target study specs: SPoT §3.1's low-resource targets and the affinity paper's
low-resource SST-2 sweep (Feng et al. 2023 §4.6.3, Figure 4), as dry runs."""

from __future__ import annotations

import pytest

from conftest import PROJECT_ROOT
from spot_jax.study import runner
from spot_jax.study.spec import load_spec
from tasks import registry

STUDY = PROJECT_ROOT / "gin_configs" / "study"
FIGURE_4_SIZES = (2000, 5000, 10000, 20000)


def test_spot_transferability_targets_are_low_resource():
  """SPoT §3.1: every target of the transferability study has under 10K training examples
  (CR is read from the user's files, so the registry knows no size for it)."""
  spec = load_spec(str(STUDY / "spot_glue_superglue.yaml"))
  sizes = {t: registry.train_size(t) for t in spec.targets}
  assert len(sizes) == 10 and [t for t, n in sizes.items() if n is None] == ["cr"]
  assert {t: n for t, n in sizes.items() if n is not None and n >= 10_000} == {}


@pytest.mark.parametrize("size", FIGURE_4_SIZES)
def test_affinity_low_resource_caps_only_the_target(size, tmp_path):
  """Figure 4 at one size: the MNLI source run keeps §4.2's 50K cap, the SST-2 baselines and
  transfers see `size` examples; 3 seeds of each kind."""
  spec = load_spec(str(STUDY / "affinity_low_resource" / f"sst2_{size}.yaml"))
  assert (spec.sources, spec.targets, spec.method) == (("glue_mnli",), ("glue_sst2",),
                                                        "prompt_encoder")
  jobs = runner.plan(spec, str(tmp_path / "dry"))
  assert [sum(j.kind == k for j in jobs) for k in runner.KINDS] == [3, 3, 3]
  caps = {(j.kind, j.seed): j.gin_bindings["MAX_TRAIN_EXAMPLES"] for j in jobs}
  assert caps == {(kind, seed): str(50_000 if kind == "source" else size)
                  for kind in runner.KINDS for seed in (0, 1, 2)}
  assert size < registry.train_size("glue_sst2")  # a real subsample of the training split.
  lines = runner.describe_plan(spec, jobs)
  assert any("total: 9 runs, 1386432 train steps" in line for line in lines), lines
  assert not (tmp_path / "dry").exists()
