"""`spot-jax demo --quick` end to end, as CI runs it: every report section with finite numbers,
the claims (a)-(d) hold or the report says which did not, a clean stdout, and a rerun after
deleting one source run retrains only that run. Slow (the quick demo takes minutes): CI runs the
slow tests after the default suite (.ci/run)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow

RUN_LINE = re.compile(r"^\s+\[\d+/\d+\] (.+?):")
NOISE = re.compile(r"WARNING|absl|tensorflow|TensorFlow|cuda|I0000|W0000|Got: |Max Lengths|"
                   r"Traceback|oneDNN|FunctionDataset")


def demo(output_dir) -> subprocess.CompletedProcess:
  """The quick demo through the CLI, stdout a pipe (not a terminal)."""
  env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), JAX_PLATFORMS="cpu")
  completed = subprocess.run(
      [sys.executable, "-m", "spot_jax.cli.main", "demo", "--quick", "--output_dir",
       str(output_dir)], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env,
      timeout=3600)
  assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
  return completed


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  """(output dir, stdout) of the one quick demo run from nothing that every test reads."""
  out = tmp_path_factory.mktemp("demo") / "out"
  completed = demo(out)
  return out, completed.stdout


def _finite(values) -> bool:
  flat = [v for row in values for v in (row if isinstance(row, list) else [row])]
  return bool(flat) and all(v is not None and math.isfinite(v) for v in flat)


def test_report_has_every_section_with_finite_numbers(quick):
  out, _ = quick
  data = json.loads((out / "results.json").read_text())
  for section in ("config", "world", "frozen_model", "sources", "targets", "transfer_matrix",
                  "oracle", "rankings", "strategies", "checks", "figures"):
    assert section in data, section
  matrix = data["transfer_matrix"]
  assert _finite(matrix["score"]) and _finite(matrix["baseline"])
  assert _finite(matrix["relative_error_reduction"])
  cfg = data["config"]
  methods = set(cfg["ranking_methods"]) - {"affinity_head"}
  if "affinity_head" in cfg["ranking_methods"]:  # one ranking per head seed.
    methods |= {f"affinity_head/seed_{s}" for s in cfg["affinity_seeds"]}
    # Trained as the paper: M pairs inside the pool, none touching a held-out target.
    head = data["affinity_head"]
    pairs = [tuple(p) for p in head["pairs"]]
    assert head["train_pairs"] == len(pairs) == len(set(pairs)) == cfg["pool_num_pairs"]
    assert all(s != t and {s, t} <= set(cfg["sources"]) for s, t in pairs)
    assert not {t for p in pairs for t in p} & set(cfg["targets"])
    assert "sampled inside the pool" in (out / "report.md").read_text()
  assert set(data["rankings"]) == methods | {"random"}
  for method, ranking in data["rankings"].items():
    for metric in ("regret_at_1", "regret_at_3", "rho"):
      assert ranking["average"][metric] is not None and math.isfinite(
          ranking["average"][metric]), (method, metric)
    assert _finite(ranking["best_of_top_k"])
  for target, row in data["strategies"].items():
    for strategy in data["config"]["strategies"]:
      assert row[strategy] is not None and math.isfinite(row[strategy]), (target, strategy)
  for target, row in data["targets"].items():
    assert math.isfinite(row["untrained"]) and math.isfinite(row["baseline_mean"])
  figures = data["figures"]
  for path in [figures["transfer_heatmap"], figures["similarity_heatmap"],
               figures["best_of_top_k"], *figures["similarity_vs_transfer"]]:
    assert os.path.getsize(path) > 1000, path
  page = (out / "report.html").read_text()
  assert page.count("data:image/png;base64,") == 3 + len(figures["similarity_vs_transfer"])
  assert not re.search(r'src="(?!data:)', page)  # self-contained: nothing linked.
  assert "Transfer matrix" in (out / "report.md").read_text()


def test_claims_hold_or_the_report_says_which_did_not(quick):
  out, stdout = quick
  data = json.loads((out / "results.json").read_text())
  report = (out / "report.md").read_text()
  checks = data["checks"]
  a, b, c = checks["a"], checks["b"], checks["c"]
  # The checks are what the numbers say (recomputed here from the sections they summarise).
  targets = data["targets"]
  margin = data["config"]["tuning_margin"]
  assert a["holds"] == all(t["baseline_mean"] >= t["untrained"] + margin
                           for t in targets.values())
  related = [t["best_related_score"] is not None and t["best_related_score"] > t["baseline_mean"]
             for t in targets.values()]
  assert b["holds"] == (2 * sum(related) > len(related))
  random = data["rankings"]["random"]["average"]["regret_at_1"]
  assert c["holds"] == (data["rankings"][c["method"]]["average"]["regret_at_1"] < random)
  for name, check in checks.items():
    row = next(line for line in report.splitlines() if line.startswith(f"| ({name})"))
    assert ("| yes |" in row) == check["holds"] and ("| NO |" in row) == (not check["holds"])
    said = next(line for line in stdout.splitlines() if line.startswith(f"({name})"))
    assert said.endswith("holds" if check["holds"] else "does NOT hold"), said


def test_report_holds_claim_d_with_mean_and_std_over_head_seeds(quick):
  out, stdout = quick
  data = json.loads((out / "results.json").read_text())
  seeds = data["config"]["affinity_seeds"]
  assert len(seeds) >= 3
  d, scorers = data["checks"]["d"], data["scorers"]
  assert d["evaluated"] and d["seeds"] == len(seeds)
  for metric in ("spearman", "regret_at_1", "gain_at_1", "gain_at_3"):
    per_seed = [data["rankings"][f"affinity_head/seed_{s}"] for s in seeds]
    values = [r["average"][metric] if metric in r["average"] else
              r["gain_of_top_k"][0 if metric == "gain_at_1" else 2] for r in per_seed]
    stats = scorers["affinity_head"][metric]
    assert stats["values"] == values
    assert stats["mean"] == pytest.approx(sum(values) / len(values), abs=1e-9)
    spread = (sum((v - stats["mean"]) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    assert stats["std"] == pytest.approx(spread, abs=1e-9)
    assert scorers["cosine"][metric]["std"] == 0.0
  # The verdict is what the numbers say.
  head, cos = scorers["affinity_head"], scorers["cosine"]
  assert d["holds"] == (head["spearman"]["mean"] > cos["spearman"]["mean"]
                        and head["regret_at_1"]["mean"] <= cos["regret_at_1"]["mean"])
  report = (out / "report.md").read_text()
  row = next(line for line in report.splitlines() if line.startswith("| (d)"))
  assert "±" in row and ("| yes |" in row) == d["holds"]
  table = next(line for line in report.splitlines() if line.startswith("| affinity_head ("))
  assert table.count("±") == 4
  said = next(line for line in stdout.splitlines() if line.startswith("(d)"))
  assert said.endswith("holds" if d["holds"] else "does NOT hold"), said


def test_stdout_on_a_pipe_has_stage_and_run_lines_only(quick):
  out, stdout = quick
  lines = [line for line in stdout.splitlines() if line.strip()]
  noisy = [line for line in lines if NOISE.search(line)]
  assert not noisy, noisy
  assert [line[:5] for line in lines if line.startswith("[")] == [
      f"[{i}/6]" for i in range(1, 7)]
  assert any(line.startswith("Report: ") for line in lines)
  assert "WARNING" in (out / "demo.log").read_text()  # the noise went to the log.


def test_rerun_after_deleting_one_source_run_retrains_only_that_run(quick, tmp_path):
  # On a copy of the session's demo output: the other tests' output stays as the demo left it
  # whatever order the tests run in, and the quick demo runs from nothing once per session.
  out = tmp_path / "out"
  shutil.copytree(quick[0], out, symlinks=True)
  data = json.loads((out / "results.json").read_text())
  source = data["config"]["sources"][0]
  shutil.rmtree(out / "study" / "runs" / "source" / source)
  rerun = demo(out).stdout
  retrained = [RUN_LINE.match(line).group(1) for line in rerun.splitlines()
               if RUN_LINE.match(line)]
  from tasks import synthetic
  assert retrained == [f"source {synthetic.unprefixed_name(source)}"], rerun
  again = json.loads((out / "results.json").read_text())
  assert again["transfer_matrix"] == data["transfer_matrix"]  # fixed seeds: the same numbers.
  assert again["checks"] == data["checks"]
