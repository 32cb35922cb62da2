"""TuPaTE Table 3: each configuration's in-task performance next to its prediction quality, on
hand-made ground truth, tuning results and predictions."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import spot_jax_cli
from spot_jax.study import performance_vs_prediction as table3
from spot_jax.study.results import StudyTableError

# Ground truth: target -> {source: score}; squad (QA) is the best source of both CR targets,
# the best in-class (CR) sources are glue_mrpc and glue_stsb.
TRUTH = {"glue_rte": {"none": 50, "glue_mrpc": 60, "glue_stsb": 55, "glue_cola": 52, "squad": 70},
         "glue_mrpc": {"none": 70, "glue_rte": 75, "glue_stsb": 80, "glue_cola": 72,
                       "squad": 90}}
TASKS = ("glue_rte", "glue_mrpc", "glue_stsb", "glue_cola", "squad")


def write_csv(path, header, rows):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return path


def make_inputs(tmp, configs):
  """configs: (method, name, performance, sign): predictions = sign x the true score (sign -1
  ranks the best source last); the tuning results give every task performance -/+ 1 over two
  seeds."""
  truth = write_csv(tmp / "truth.csv", ["source", "target", "seed", "score"],
                    [[s, t, 0, v] for t, row in TRUTH.items() for s, v in row.items()])
  rows = []
  for method, name, perf, sign in configs:
    write_csv(tmp / f"{method}_{name}_perf.csv", ["source", "target", "seed", "score"],
              [["none", task, seed, perf + (2 * seed - 1)] for task in TASKS for seed in (0, 1)])
    write_csv(tmp / f"{method}_{name}_pred.csv", ["target", "source", "score"],
              [[t, s, sign * v] for t, row in TRUTH.items() for s, v in row.items()
               if s != "none"])
    rows.append([method, name, f"{method}_{name}_perf.csv", f"{method}_{name}_pred.csv"])
  return truth, write_csv(tmp / "configs.csv", table3.CONFIG_COLUMNS, rows)


CONFIGS = [("prefix", "lr1e-2_s0", 80.0, 1), ("prefix", "lr1e-3_s0", 60.0, -1),
           ("prefix", "lr1e-2_s1", 70.0, 1), ("lora", "lr5e-4_s0", 75.0, 1)]


@pytest.mark.parametrize("task_class,worst_rho", [(None, 4.0), ("CR", 3.0)])
def test_configurations_and_method_deltas(tmp_path, task_class, worst_rho):
  """A perfect ranking has rho 1 and NDCG 100; the reversed one puts the best source last (4
  candidates all-class, 3 in-class once squad is left out). Deltas are highest-performance minus
  lowest-performance configuration; Pearson is NDCG against performance."""
  truth, configs = make_inputs(tmp_path, CONFIGS)
  configurations, rows = table3.table3(str(truth), str(configs), task_class)
  got = {(c.method, c.configuration): (c.performance, c.rho) for c in configurations}
  assert got == {("prefix", "lr1e-2_s0"): (80.0, 1.0), ("prefix", "lr1e-3_s0"): (60.0, worst_rho),
                 ("prefix", "lr1e-2_s1"): (70.0, 1.0), ("lora", "lr5e-4_s0"): (75.0, 1.0)}
  ndcg = {c.configuration: c.ndcg for c in configurations}
  assert ndcg["lr1e-2_s0"] == pytest.approx(100.0) and ndcg["lr1e-3_s0"] < 100.0
  prefix, lora = rows
  assert (prefix.method, prefix.configurations) == ("prefix", 3)
  assert prefix.delta_rho == pytest.approx(1.0 - worst_rho)
  assert prefix.delta_ndcg == pytest.approx(100.0 - ndcg["lr1e-3_s0"])
  expected_r = np.corrcoef([100.0, ndcg["lr1e-3_s0"], 100.0], [80.0, 60.0, 70.0])[0, 1]
  assert prefix.pearson == pytest.approx(expected_r)
  assert (lora.delta_rho, lora.delta_ndcg, lora.configurations) == (0.0, 0.0, 1)
  assert np.isnan(lora.pearson)  # one configuration: no correlation.


def test_a_configuration_missing_a_task_is_refused(tmp_path):
  truth, configs = make_inputs(tmp_path, CONFIGS[:1])
  write_csv(tmp_path / "prefix_lr1e-2_s0_perf.csv", ["source", "target", "seed", "score"],
            [["none", "glue_rte", 0, 80.0]])
  with pytest.raises(StudyTableError, match=r"no baseline score for tasks \['glue_cola'"):
    table3.table3(str(truth), str(configs))


def test_cli_prints_and_writes_table3(tmp_path):
  truth, configs = make_inputs(tmp_path, CONFIGS)
  out = tmp_path / "t3"
  done = spot_jax_cli("study", "table3", truth, "--configurations", configs, "--task_class",
                      "CR", "--out", out)
  assert done.returncode == 0, done.stderr
  assert "delta_rho" in done.stdout and "lr1e-3_s0" in done.stdout
  with open(out / "table3.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["method"], float(r["delta_rho"]), r["configurations"]) for r in rows] == [
      ("prefix", -2.0, "3"), ("lora", 0.0, "1")]
  assert rows[1]["ndcg_performance_pearson"] == ""  # NaN: undefined with one configuration.
  bad = spot_jax_cli("study", "table3", truth, "--configurations", truth)
  assert bad.returncode != 0 and "configurations table" in bad.stderr
