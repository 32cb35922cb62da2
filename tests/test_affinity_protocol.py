"""The affinity paper's protocol (Feng et al., EMNLP 2023): pool pairs, per-run caps, the
paper's spec against its reference tables, `affinity train --spec` / `evaluate` / `ablate`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from spot_jax.affinity import data, pairs
from spot_jax.study import runner
from spot_jax.study.spec import SpecError, StudySpec

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["synthetic_sentiment_a", "synthetic_nli_facts", "synthetic_reverse"]
TARGET = "synthetic_sentiment_b"
SMALL = dict(model="models/tiny_byte.gin", source_steps=10, target_steps=10, key_step=5)


def small_spec(**overrides) -> StudySpec:
  values = dict(name="tiny", sources=SOURCES, targets=[TARGET], seeds=[0, 1], **SMALL)
  values.update(overrides)
  return StudySpec.from_dict(values)


# ----------------------------------------------------------------------------- the sampler


def test_pool_pair_sampler_is_reproducible_ordered_distinct_and_draws_exactly_m():
  pool = [f"task_{i:02d}" for i in range(44)]
  first = pairs.sample_pool_pairs(pool, 400, seed=0)
  assert first == pairs.sample_pool_pairs(list(reversed(pool)), 400, seed=0)  # order-free.
  assert first != pairs.sample_pool_pairs(pool, 400, seed=1)
  assert len(first) == len(set(first)) == 400
  assert all(i != j and i in pool and j in pool for i, j in first)
  # Ordered pairs: both directions of a pair can be drawn, and all n (n - 1) can be.
  every = pairs.sample_pool_pairs(pool, 44 * 43, seed=3)
  assert len(set(every)) == 44 * 43 and ("task_00", "task_01") in every
  assert ("task_01", "task_00") in every


def test_pool_pair_sampler_rejects_more_pairs_than_the_pool_holds():
  with pytest.raises(pairs.PairSamplingError, match=r"num_pairs 7 > the 6 ordered pairs"):
    pairs.sample_pool_pairs(["a", "b", "c"], 7, seed=0)
  with pytest.raises(pairs.PairSamplingError, match="more than once"):
    pairs.sample_pool_pairs(["a", "a", "b"], 1, seed=0)
  with pytest.raises(SpecError, match=r"pool_pairs: num_pairs 7 > the 6 ordered pairs"):
    small_spec(pool_pairs={"num_pairs": 7})


def test_novel_targets_never_enter_the_training_pairs_of_a_pool_split():
  pool = [f"p{i}" for i in range(6)]
  novel = ["n0", "n1"]
  gains = {p: 1.0 for p in pairs.sample_pool_pairs(pool, 20, seed=0)}
  gains.update({(s, t): 2.0 for s in pool for t in novel})
  split = data.pool_split(gains, novel, num_pairs=12, seed=0)
  assert len(split.train) == 12 and split.val_targets == novel
  assert all(s in pool and t in pool for s, t in split.train)
  assert {t for _, t in split.val} == set(novel) and len(split.val) == 12
  with pytest.raises(data.AffinityDataError, match="n0.*is a source"):
    data.pool_split({**gains, ("n0", "p1"): 0.0}, novel, num_pairs=None, seed=0)


# ----------------------------------------------------------------------------- the study plan


def test_pool_pair_study_runs_pool_baselines_sampled_transfers_and_the_targets_brute_force():
  spec = small_spec(pool_pairs={"num_pairs": 4, "seed": 1})
  jobs = runner.plan(spec, "/study")
  sampled = pairs.sample_pool_pairs(SOURCES, 4, 1)
  kinds = {k: [j for j in jobs if j.kind == k] for k in runner.KINDS}
  assert len(kinds["source"]) == 3 * 2
  assert {j.target for j in kinds["baseline"]} == {*SOURCES, TARGET}
  assert len(kinds["baseline"]) == 4 * 2
  transfers = [(j.source, j.target) for j in kinds["transfer"]]
  assert sorted(set(transfers)) == sorted({*sampled, *((s, TARGET) for s in SOURCES)})
  assert len(transfers) == (4 + 3) * 2
  lines = runner.describe_plan(spec, jobs)
  assert "  4 pool pairs (source i -> source j, sampled with seed 1) x 2 seeds = 8 pool " \
         "transfer runs (10 steps each)" in lines
  assert "  3 pool tasks x 2 seeds = 6 pool baseline runs (10 steps each)" in lines
  assert "  total: 28 runs, 280 train steps; 0 already finished" in lines
  # Without pool_pairs the study is the plain sources x targets one.
  plain = runner.plan(small_spec(), "/study")
  assert [sum(j.kind == k for j in plain) for k in runner.KINDS] == [6, 2, 6]


def test_per_run_training_caps_follow_task_then_role():
  spec = small_spec(pool_pairs={"num_pairs": 2},
                    max_train_examples={"sources": 50, "targets": 20, "synthetic_reverse": 7})
  caps = {(j.kind, j.source, j.target): j.gin_bindings["MAX_TRAIN_EXAMPLES"]
          for j in runner.plan(spec, "/study")}
  assert caps[("source", "synthetic_sentiment_a", None)] == "50"
  assert caps[("source", "synthetic_reverse", None)] == "7"
  assert caps[("baseline", None, TARGET)] == "20"
  assert caps[("transfer", "synthetic_reverse", TARGET)] == "20"
  assert caps[("baseline", None, "synthetic_nli_facts")] == "50"  # a pool task: its source cap.
  assert "MAX_TRAIN_EXAMPLES" not in spec.run_bindings()
  only_targets = small_spec(max_train_examples={"targets": 20})
  caps = {j.kind: j.gin_bindings["MAX_TRAIN_EXAMPLES"] for j in runner.plan(only_targets, "/s")}
  assert caps == {"source": "None", "baseline": "20", "transfer": "20"}
  assert small_spec(max_train_examples=30).run_bindings()["MAX_TRAIN_EXAMPLES"] == 30
  with pytest.raises(SpecError, match="'target' is neither 'sources', 'targets' nor a source "
                                      "or target of the study; did you mean 'targets'"):
    small_spec(max_train_examples={"target": 20})
  with pytest.raises(SpecError, match=r"max_train_examples.targets must be a positive integer"):
    small_spec(max_train_examples={"targets": 0})


# ----------------------------------------------------------------------------- a fake pool study

POOL = [f"p{i:02d}" for i in range(10)]
NOVEL = ["n_ner", "n_sent", "n_nli"]
TYPES = ["NER", "POS", "Sentiment Classification", "NLI", "QA"]
FAMILIES = {**{t: TYPES[i % len(TYPES)] for i, t in enumerate(POOL)},
            "n_ner": "NER", "n_sent": "Sentiment Classification", "n_nli": "NLI"}
FAST = ["--gin_file=affinity/light.gin", "--gin.AffinityConfig.train_steps=30",
        "--gin.AffinityConfig.warmup_steps=5", "--gin.AffinityConfig.checkpoint_period=1000"]


def fake_pool_study(tmp_path, num_pairs: int = 40):
  """A pool-pair study without training T5: a spec (10 pool tasks, 3 novel targets, M pool
  pairs), a prompt library of keys [L=4, E=8] and results.csv (two seeds: every baseline, the
  spec's sampled pool transfers, every pool source -> each novel target). Gains are a planted
  function of both tasks' latents. Returns (spec path, library path, results path)."""
  import yaml

  from spot_jax.library.store import ModelIdentity, PromptLibrary
  from spot_jax.study import results
  rng = np.random.default_rng(0)
  tasks = POOL + NOVEL
  z = {t: rng.normal(size=8) for t in tasks}
  spec_path = tmp_path / "spec.yaml"
  spec_path.write_text(yaml.safe_dump(dict(
      name="fake_pool", model="models/tiny_byte.gin", sources=POOL, targets=NOVEL, seeds=[0, 1],
      source_steps=10, target_steps=10, key_step=5, families=FAMILIES,
      pool_pairs={"num_pairs": num_pairs, "seed": 0},
      max_train_examples={"sources": 50000, "targets": 2000})))
  spec = StudySpec.from_dict(yaml.safe_load(spec_path.read_text()), check_tasks=False)
  library = PromptLibrary(str(tmp_path / "lib"), create=True)
  for task in tasks:
    key = (50 * (z[task] + 0.05 * rng.normal(size=(4, 8)))).astype(np.float32)
    library.add(task=task, value=key, key=key, model=ModelIdentity("tiny", 8, "fp"), seed=0)
  transfers = spec.pool_transfers() + [(s, t) for s in POOL for t in NOVEL]
  rows = []
  for seed in (0, 1):
    rows += [{"source": "none", "target": t, "seed": seed, "score": 60.0} for t in tasks]
    rows += [{"source": s, "target": t, "seed": seed,
              "score": 60.0 + 8 * np.tanh(z[t][0] * z[s][1]) + 3 * np.sin(z[s][2])
              + 0.1 * seed} for s, t in transfers]
  results.write_results(str(tmp_path / "results.csv"), rows)
  return str(spec_path), str(tmp_path / "lib"), str(tmp_path / "results.csv")


def spot_jax(*argv: str) -> str:
  """Runs the installed `spot-jax` entry point in a fresh process; returns its stdout."""
  import subprocess
  import sys
  exe = os.path.join(os.path.dirname(sys.executable), "spot-jax")
  done = subprocess.run([exe, *argv], capture_output=True, text=True, timeout=600,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert done.returncode == 0, done.stdout + done.stderr
  return done.stdout


@pytest.mark.slow
def test_train_on_pool_pairs_and_evaluate_novel_targets_through_the_cli(tmp_path):
  """`affinity train --spec` trains on pool pairs only; `evaluate` writes Table 1 and Figure 3
  for the novel targets (the head, D_cos, D^_cos, the oracle)."""
  import csv
  import json
  spec, lib, csv_path = fake_pool_study(tmp_path, num_pairs=40)
  heads = str(tmp_path / "heads")
  printed = spot_jax("affinity", "train", csv_path, "--library", lib, "--out", heads, "--spec",
                     spec, "--seeds", "0", "1", *FAST)
  assert "2 heads on 40 pool pairs each (of 40 pool transfers; M = 40), no validation" in printed
  for seed in (0, 1):
    record = json.loads(open(os.path.join(heads, f"seed_{seed}", "head.json")).read())
    assert record["val_targets"] == sorted(NOVEL)
    assert all(s in POOL and t in POOL for s, t in record["train_pairs"])
    assert len(record["train_pairs"]) == 40
  out = str(tmp_path / "eval.csv")
  printed = spot_jax("affinity", "evaluate", csv_path, "--head", heads, "--library", lib,
                     "--out", out)
  assert "Table 1 (Feng et al.)" in printed and "Figure 3 (Feng et al.)" in printed
  assert "selected (early stopping" not in printed  # nothing was selected on novel targets.
  with open(str(tmp_path / "eval_table1.csv")) as f:
    table1 = list(csv.DictReader(f))
  assert list(table1[0]) == ["method", *sorted(NOVEL), "mean_delta"]
  assert table1[0]["method"] == "no_transfer" and float(table1[0]["n_ner"]) == pytest.approx(60.0)
  brute = next(r for r in table1 if r["method"] == "brute_force")
  for row in table1[1:]:  # nobody beats the oracle on any target.
    for target in NOVEL:
      assert float(row[target]) <= float(brute[target]) + 1e-9
  with open(str(tmp_path / "eval_figure3.csv")) as f:
    figure3 = {r["method"]: r for r in csv.DictReader(f)}
  assert {"affinity (ensemble)", "cosine", "per_token_cosine", "brute_force"} <= set(figure3)
  # best of top-3 >= best of top-1, both <= the oracle's gain.
  for row in figure3.values():
    assert float(row["top3_best_gain"]) >= float(row["top1_gain"]) - 1e-9
    assert float(row["top3_best_gain"]) <= float(figure3["brute_force"]["top1_gain"]) + 1e-9
  # The paper's figures through the entry point (one beta, one M, one seed: a smoke run).
  size_csv = str(tmp_path / "size_2000.csv")
  with open(csv_path) as f, open(size_csv, "w") as g:
    g.write(f.read())
  ablation = str(tmp_path / "paper")
  printed = spot_jax("affinity", "ablate", csv_path, "--library", lib, "--spec", spec, "--out",
                     ablation, "--betas", "1.0", "--num_pairs", "20", "--seeds", "0",
                     "--target_sizes", f"2000={size_csv}", "--size_target", "n_sent",
                     "--size_source", "p00", *FAST)
  for name in ("figure2_beta", "figure3_num_pairs", "generalisation", "figure4_target_size",
               "figure5_type_gains"):
    assert os.path.exists(os.path.join(ablation, f"{name}.csv")), printed
    assert os.path.exists(os.path.join(ablation, f"{name}.png"))
  assert "generalisation (n_ner without NER+POS, 4 pool tasks left out)" in printed
  assert "n_sent at 2000: p00 gains" in printed


def test_ablate_without_a_spec_writes_the_beta_m_and_family_curves(tmp_path, capsys):
  """The split-based ablation (no pool pairs): heads on `train_seeds`'s split per setting."""
  import csv
  from spot_jax.cli.main import main
  _, lib, csv_path = fake_pool_study(tmp_path, num_pairs=40)
  families = tmp_path / "families.csv"
  families.write_text("task,family\n" + "".join(f"{t},{f}\n" for t, f in FAMILIES.items()))
  out = str(tmp_path / "ablate")
  assert main(["affinity", "ablate", csv_path, "--library", lib, "--out", out, "--betas", "1.0",
               "2.0", "--num_pairs", "20", "--seeds", "0", "--leave_family_out", "--families",
               str(families), *FAST]) == 0
  printed = capsys.readouterr().out
  assert "beta=2.0" in printed and "num_pairs=20" in printed
  with open(os.path.join(out, "beta.csv")) as f:
    assert [r["beta"] for r in csv.DictReader(f)] == ["1.0", "2.0"]
  with open(os.path.join(out, "family.csv")) as f:
    assert {r["family"] for r in csv.DictReader(f)} == set(FAMILIES.values())
  assert os.path.exists(os.path.join(out, "num_pairs.png"))


def test_ablate_writes_each_figure_from_a_small_pool_study(tmp_path):
  """Figures 2, 3, 4, 5 and §4.6.2 from fake results + keys (light heads, a few steps)."""
  import csv
  import dataclasses as dc

  from spot_jax.affinity.train import AffinityConfig
  from spot_jax.study import affinity_ablate, affinity_eval, results
  spec_path, lib, csv_path = fake_pool_study(tmp_path, num_pairs=40)
  spec = StudySpec.from_dict(__import__("yaml").safe_load(open(spec_path)), check_tasks=False)
  study = affinity_ablate.pool_study(affinity_eval.load_inputs(csv_path, library=lib), spec)
  sizes = {}
  for size, gain in ((2000, 9.0), (5000, 4.0)):
    path = str(tmp_path / f"size_{size}.csv")
    results.write_results(path, [
        {"source": "none", "target": "n_sent", "seed": s, "score": 50.0} for s in (0, 1)] + [
        {"source": "p00", "target": "n_sent", "seed": s, "score": 50.0 + gain} for s in (0, 1)])
    sizes[size] = path
  cfg = dc.replace(AffinityConfig(variant="light", hidden_dim=16, learning_rate=3e-3,
                                  train_steps=20, warmup_steps=2, checkpoint_period=1000))
  out = str(tmp_path / "ablate")
  done = affinity_ablate.run_ablations(study, cfg, out, [0, 1], betas=[0.5, 1.0],
                                       num_pairs=[20, 40], sizes=sizes, size_target="n_sent",
                                       size_source="p00", log=lambda _: None)

  def read(name):
    assert os.path.getsize(os.path.join(out, f"{name}.png")) > 0
    with open(os.path.join(out, f"{name}.csv")) as f:
      return list(csv.DictReader(f))
  beta = read("figure2_beta")
  assert [float(r["beta"]) for r in beta] == [0.5, 1.0] and all(r["spearman_std"] for r in beta)
  figure3 = read("figure3_num_pairs")
  assert [(r["num_pairs"], r["method"]) for r in figure3][:2] == [("20", "affinity"),
                                                                  ("40", "affinity")]
  assert {r["method"] for r in figure3[2:]} == {"cosine", "per_token_cosine", "brute_force"}
  # §4.6.2: the sequence-labelling types (NER, POS) of the pool left out, tested on n_ner.
  general = read("generalisation")
  assert {r["targets"] for r in general} == {"n_ner"}
  assert {r["left_out"] for r in general} == {"NER+POS"}
  assert general[0]["pool_tasks_left_out"] == "4"  # p00, p05 (NER) and p01, p06 (POS).
  assert {"affinity", "cosine", "per_token_cosine", "brute_force"} <= {r["method"]
                                                                        for r in general}
  sizes_rows = read("figure4_target_size")
  assert [(int(r["size"]), float(r["gain"])) for r in sizes_rows] == [(2000, 9.0), (5000, 4.0)]
  types = read("figure5_type_gains")
  assert len(types) == len(POOL) * len(NOVEL)
  assert {r["group"] for r in types} == {"sequence labelling", "text classification", "NLI",
                                         "QA"}
  assert set(done) == {"figure2_beta", "figure3_num_pairs", "generalisation",
                       "figure4_target_size", "figure5_type_gains"}
  # The generalisation heads never trained on a left-out task nor on a novel target.
  import json
  record = json.loads(open(os.path.join(out, "heads", "left_out_NER+POS", "seed_0",
                                        "head.json")).read())
  left_out = {"p00", "p05", "p01", "p06", *NOVEL}
  assert not {t for pair in record["train_pairs"] for t in pair} & left_out


# ----------------------------------------------------------------------------- the paper's spec

SHARED = ROOT.parent / "shared"  # ../shared, beside the checkout.
REFERENCE = SHARED / "reference"
PAPER_SPEC = ROOT / "gin_configs" / "study" / "affinity_paper.yaml"
# Table 4's metric names -> the registry metrics that compute them.
PAPER_METRICS = {"ACC": {"accuracy", "token_accuracy"}, "F1": {"squad", "squad_v2"},
                 "MCC": {"matthews_corrcoef"}, "Pearson": {"pearson_corrcoef"},
                 "F1_a": {"multirc_f1_over_all_answers"}}
# Table 4 train sizes that are train minus a dev set the paper carved from it (its train + dev
# is the dataset's train split), and two it prints without an explanation we could find.
CARVED_DEV = {"trec", "imdb", "conll2000_chunk", "emo"}
UNEXPLAINED_SIZES = {"scitail": "27k printed, 23,097 in allenai/scitail",
                     "squad_v2": "52.2k printed, over the paper's own 50K cap"}


def _printed(text: str) -> tuple[float, float]:
  """A Table 4 count and its rounding half-width: 25.3k -> (25300, 50), 50k -> (50000, 500)."""
  if text.endswith("k"):
    digits = text[:-1]
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return float(digits) * 1000, 0.5 * 10 ** (3 - decimals)
  return float(text), 0.5


def _reference():
  if not REFERENCE.exists():
    pytest.skip(f"{REFERENCE} is absent (the shared reference tables)")
  import csv
  lines = [l for l in (REFERENCE / "affinity_paper_table5_pool.txt").read_text().splitlines()
           if l.strip() and not l.startswith("#")]
  targets = [t.strip() for t in lines[0].split(":", 1)[1].split(",")]
  sources = lines[lines.index("sources:") + 1:]
  with open(REFERENCE / "affinity_paper_table4_datasets.tsv") as f:
    table4 = list(csv.DictReader((l for l in f if not l.startswith("#")), delimiter="\t"))
  return sources, targets, table4


def test_reference_tables_match_the_registry_and_the_paper_spec():
  """Table 5's names against the registry's pool and the spec; Table 4's sizes (after the
  50K cap, within printed rounding), types (the spec's families) and metrics."""
  from tasks import registry
  from spot_jax.study.spec import load_spec
  sources, targets, table4 = _reference()
  by_table5 = {v[0]: k for k, v in registry.AFFINITY_PAPER_NAMES.items()}
  assert len(sources) == 44 and len(targets) == 6
  assert {by_table5[n] for n in sources} == set(registry.AFFINITY_POOL)
  assert len(registry.AFFINITY_POOL) == 44
  assert [by_table5[n] for n in targets] == list(registry.AFFINITY_TARGETS)
  spec = load_spec(str(PAPER_SPEC))
  assert set(spec.sources) == set(registry.AFFINITY_POOL)
  assert list(spec.targets) == list(registry.AFFINITY_TARGETS)
  by_table4 = {v[1]: k for k, v in registry.AFFINITY_PAPER_NAMES.items() if v[1]}
  assert {r["task"] for r in table4} == set(by_table4)  # every Table 4 row is mapped.
  assert {k for k, v in registry.AFFINITY_PAPER_NAMES.items() if not v[1]} == {"app_reviews",
                                                                                "quail"}
  checked = 0
  for row in table4:
    task = by_table4[row["task"]]
    info = registry.get_info(task)
    assert spec.family_of(task).lower() == row["type"].lower(), task
    assert PAPER_METRICS[row["metric"]] & set(info.metrics), (task, info.metrics)
    size = info.size("train")
    if size is None or task in UNEXPLAINED_SIZES:
      continue
    train, tolerance = _printed(row["train"])
    if task in CARVED_DEV:
      dev, dev_tolerance = _printed(row["dev"])
      assert abs(train + dev - size) <= tolerance + dev_tolerance, task
    else:
      assert abs(min(size, spec.train_cap("source", task)) - train) <= tolerance, task
    checked += 1
  assert checked >= 35
  assert spec.train_cap("source", "glue_mnli") == spec.train_cap("baseline", "glue_sst2") == 50000
  assert spec.max_eval_examples == 10000


def test_paper_spec_dry_run_lists_the_papers_run_set():
  """44 baselines + 400 pool transfers + 44 x 6 target transfers + 6 target baselines (and
  the 44 source prompts), times the spec's 3 seeds, with the paper's prompt and optimiser."""
  import subprocess
  import sys
  from spot_jax.study.spec import load_spec
  spec = load_spec(str(PAPER_SPEC))
  assert spec.pool_pairs == {"num_pairs": 400, "seed": 0} and spec.affinity["beta"] == 1.0
  assert (spec.method, spec.prompt_length, spec.batch_size) == ("prompt_encoder", 50, 16)
  assert spec.gin_bindings["TrainConfig.warmup_fraction"] == 0.06
  assert spec.gin_bindings["LEARNING_RATE"] in (1e-4, 2e-4)
  assert "PromptEncoderMethod.hidden = 200" in (ROOT / "gin_configs/methods/prompt_encoder.gin"
                                                ).read_text()
  jobs = runner.plan(spec, "/study")
  seeds = len(spec.seeds)
  pool = set(spec.pool_transfers())
  kinds = {k: [j for j in jobs if j.kind == k] for k in runner.KINDS}
  assert len(kinds["source"]) == 44 * seeds
  assert len([j for j in kinds["baseline"] if j.target in spec.sources]) == 44 * seeds
  assert len([j for j in kinds["baseline"] if j.target in spec.targets]) == 6 * seeds
  assert len([j for j in kinds["transfer"] if (j.source, j.target) in pool]) == 400 * seeds
  assert len([j for j in kinds["transfer"] if j.target in spec.targets]) == 44 * 6 * seeds
  assert len(jobs) == (44 + 44 + 6 + 400 + 44 * 6) * seeds
  flags = " ".join(kinds["transfer"][0].flags())
  assert "methods/prompt_encoder.gin" in flags and "PROMPT_LENGTH=50" in flags
  assert "MAX_TRAIN_EXAMPLES=50000" in flags
  vocab = SHARED / "fixtures" / "t5_vocab" / "sentencepiece.model"
  if not vocab.exists():
    pytest.skip(f"{vocab} is absent: the CLI dry run validates label encodings with it")
  exe = os.path.join(os.path.dirname(sys.executable), "spot-jax")
  done = subprocess.run([exe, "study", "run", str(PAPER_SPEC), "--out", "/tmp/never_made",
                         "--dry_run"], capture_output=True, text=True, timeout=600,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", "SPOT_JAX_VOCAB": str(vocab)})
  assert done.returncode == 0, done.stderr
  lines = done.stdout.splitlines()
  for line in (f"  44 sources x {seeds} seeds = {44 * seeds} source runs (262144 steps each)",
               f"  44 pool tasks x {seeds} seeds = {44 * seeds} pool baseline runs "
               "(100000 steps each)",
               f"  6 targets x {seeds} seeds = {6 * seeds} baseline runs (100000 steps each)",
               f"  400 pool pairs (source i -> source j, sampled with seed 0) x {seeds} seeds = "
               f"{400 * seeds} pool transfer runs (100000 steps each)",
               f"  44 sources x 6 targets x {seeds} seeds = {264 * seeds} transfer runs "
               "(100000 steps each)"):
    assert line in lines
  assert not os.path.exists("/tmp/never_made")
