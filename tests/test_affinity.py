"""The learned affinity head: loss, splits, planted pools, resume, and the CLI end to end."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from spot_jax.affinity import data, train
from spot_jax.affinity.predict import load_scorer
from spot_jax.library import scorers

LIGHT = train.AffinityConfig(
    variant="light", hidden_dim=64, learning_rate=1e-2, warmup_steps=20, weight_decay=1e-4,
    train_steps=400, batch_size=32, eval_period=100, patience=0, checkpoint_period=10_000)


def planted_pool(kind: str, n_tasks: int = 40, emb: int = 8, length: int = 4, seed: int = 0):
  """(tasks, {task: keys [1, L, E]}, {(source, target): gain}).

  Each task has a latent z [E]; its key is 50 (z + small token noise), the scale of trained
  prompts. "nonlinear": gain = 10 tanh(1.5 z_t[0] z_s[1]) + 4 sin(2 z_s[2]), a function of the
  two embeddings that no similarity expresses (every similarity is invariant to rotations of
  both keys; this is not). "cosine": gain = 20 cos(z_s, z_t).
  """
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n_tasks, emb))
  tasks = [f"task_{i:02d}" for i in range(n_tasks)]
  keys = {t: (50 * (z[i] + 0.05 * rng.normal(size=(1, length, emb)))).astype(np.float32)
          for i, t in enumerate(tasks)}
  gains = {}
  for i, s in enumerate(tasks):
    for j, t in enumerate(tasks):
      if i != j:
        if kind == "nonlinear":
          gain = 10 * np.tanh(1.5 * z[j, 0] * z[i, 1]) + 4 * np.sin(2 * z[i, 2])
        else:
          gain = 20 * z[i] @ z[j] / np.linalg.norm(z[i]) / np.linalg.norm(z[j])
        gains[(s, t)] = float(gain)
  return tasks, keys, gains


def held_out_spearman(scorer, keys, gains, targets, sources) -> float:
  predicted = scorers.predictions(scorer, keys, targets, sources)
  pairs = [(s, t) for t in targets for s in sources if s != t]
  return train.mean_target_spearman(pairs, np.array([predicted[t][s] for s, t in pairs]),
                                    np.array([gains[p] for p in pairs]))


def library_and_results(tmp_path, kind: str, n_tasks: int) -> str:
  """A planted pool as a prompt library (tmp_path/lib, returned) and tmp_path/results.csv
  (baseline 50, transfer 50 + gain, one seed)."""
  from spot_jax.library.store import ModelIdentity, PromptLibrary
  from spot_jax.study import results
  tasks, keys, gains = planted_pool(kind, n_tasks=n_tasks)
  library = PromptLibrary(str(tmp_path / "lib"), create=True)
  for task in tasks:
    library.add(task=task, value=keys[task][0], key=keys[task][0],
                model=ModelIdentity("tiny", 8, "fp"), seed=0)
  rows = [{"source": "none", "target": t, "seed": 0, "score": 50.0} for t in tasks]
  rows += [{"source": s, "target": t, "seed": 0, "score": 50.0 + g}
           for (s, t), g in gains.items()]
  results.write_results(str(tmp_path / "results.csv"), rows)
  return str(tmp_path / "lib")


def train_planted(kind: str, out_dir: str):
  tasks, keys, gains = planted_pool(kind)
  summary = train.train_seeds(LIGHT, gains, keys, out_dir, [0], log=False)
  scorer = load_scorer(out_dir)
  held = summary["val_targets"]
  measured = {name: held_out_spearman(scorers.get_scorer(name), keys, gains, held, tasks)
              for name in scorers.SIMILARITY_SCORERS}
  return held_out_spearman(scorer, keys, gains, held, tasks), measured, summary


def test_smooth_l1_equals_the_papers_formula():
  u = np.array([0.0, 0.3, -0.7, 1.0, 2.5, -4.0, 10.0])
  v = np.array([0.0, 0.0, 0.2, -0.5, 0.0, 1.0, -3.0])
  for beta in (0.5, 1.0, 1.5, 2.0, 2.5):
    e = np.abs(u - v)
    paper = np.where(e <= beta, 0.5 * e ** 2 / beta, e - 0.5 * beta)
    np.testing.assert_allclose(train.smooth_l1(u, v, beta), paper, rtol=1e-6)
  with pytest.raises(ValueError, match="beta > 0"):
    train.smooth_l1(u, v, 0.0)


def test_held_out_targets_never_enter_training_pairs():
  tasks, _, gains = planted_pool("cosine", n_tasks=12)
  held = data.split_targets(tasks, 0.25, seed=3)
  assert len(held) == 3
  split = data.make_split(gains, held, num_pairs=40, seed=1)
  assert len(split.train) == 40 and split.available == 9 * 8
  assert not {t for pair in split.train for t in pair} & set(held)
  assert {t for _, t in split.val} == set(held)
  assert len(split.val) == 3 * 11
  again = data.make_split(gains, held, num_pairs=40, seed=1)
  assert again.train == split.train  # M is sampled with a seed.
  family = {t: "odd" if int(t[-1]) % 2 else "even" for t in tasks}
  odd = data.family_targets(tasks, "odd", family.get)
  loo = data.make_split(gains, odd, None, 0, exclude=odd)
  assert all(family[s] == family[t] == "even" for s, t in loo.train)


def test_gains_are_transfer_minus_baseline_means():
  means = {"t": {"none": 50.0, "a": 60.0, "t": 55.0}, "u": {"none": 40.0, "a": 35.0}}
  assert data.gains_from_means(means) == {("a", "t"): 10.0, ("a", "u"): -5.0}
  with pytest.raises(data.AffinityDataError, match="no baseline"):
    data.gains_from_means({"t": {"a": 1.0}})


def test_head_recovers_a_planted_nonlinear_gain_that_no_similarity_sees(tmp_path):
  """Bound: the held-out Spearman of the head >= 0.7 and every similarity's |Spearman| < 0.25.

  The planted gain is a smooth function of two coordinates of each latent, which 400 pairs
  from 32 training tasks sample densely enough for a 2-layer MLP (0.89 measured on CPU); 0.7
  leaves room for platform differences. A similarity ignores the planted direction, so its
  Spearman over the 39 sources of a held-out target has mean 0 and std ~1/sqrt(38); averaged
  over 8 held-out targets std ~0.06, so 0.25 is a 4-sigma bound.
  """
  head, similarities, summary = train_planted("nonlinear", str(tmp_path / "heads"))
  assert len(summary["val_targets"]) == 8
  assert head >= 0.7, (head, similarities)
  for name, value in similarities.items():
    assert abs(value) < 0.25, (name, value)
    assert head > value + 0.4


def test_on_cosine_gains_cosine_is_near_perfect_and_the_head_comes_close(tmp_path):
  head, similarities, _ = train_planted("cosine", str(tmp_path / "heads"))
  assert similarities["cosine"] >= 0.98
  assert head >= 0.93, (head, similarities)


def test_kill_and_resume_of_head_training_is_bit_equal(tmp_path):
  tasks, keys, gains = planted_pool("nonlinear", n_tasks=10)
  bank = data.KeyBank.build(keys)
  split = data.make_split(gains, data.split_targets(tasks, 0.2, 0), 60, 0)
  examples = bank.examples(split.train, gains), bank.examples(split.val, gains)
  cfg = dataclasses.replace(LIGHT, train_steps=30, eval_period=5, checkpoint_period=10,
                            batch_size=8)
  straight = train.train_head(cfg, bank, *examples, str(tmp_path / "straight"), log=False)

  class Killed(Exception):
    pass

  def kill(step):
    if step == 17:
      raise Killed
  with pytest.raises(Killed):
    train.train_head(cfg, bank, *examples, str(tmp_path / "killed"), on_step=kill, log=False)
  assert not os.path.exists(tmp_path / "killed" / train.HEAD_JSON)
  resumed = train.train_head(cfg, bank, *examples, str(tmp_path / "killed"), log=False)
  assert resumed == straight
  with np.load(tmp_path / "straight" / train.BEST_PARAMS) as a, \
      np.load(tmp_path / "killed" / train.BEST_PARAMS) as b:
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
      np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.slow
@pytest.mark.parametrize("freeze", [False, True])
def test_encoder_head_trains_on_a_tiny_backbone(tmp_path, freeze):
  tasks, keys, gains = planted_pool("cosine", n_tasks=6, emb=64, length=3)
  cfg = train.AffinityConfig(variant="encoder", model="tiny", freeze_backbone=freeze,
                             hidden_dim=16, learning_rate=1e-3, warmup_steps=2, train_steps=4,
                             batch_size=4, eval_period=2, patience=0, checkpoint_period=100)
  train.train_seeds(cfg, gains, keys, str(tmp_path), [0], log=False)
  with np.load(tmp_path / "seed_0" / train.BEST_PARAMS) as saved:
    has_encoder = any(name.startswith("encoder/") for name in saved.files)
  assert has_encoder != freeze  # a frozen backbone is rebuilt, not stored.
  scorer = load_scorer(str(tmp_path))
  out = scorer.score(keys["task_00"][0], np.concatenate([keys[t] for t in tasks[1:]]))
  assert out.shape == (5,) and np.all(np.isfinite(out))


def test_train_predict_evaluate_from_the_cli(tmp_path, capsys):
  """A results CSV and a library -> affinity train -> predict -> study evaluate accepts it."""
  from spot_jax.cli.main import main
  from spot_jax.study import results
  library_and_results(tmp_path, "cosine", 8)
  heads, csv = str(tmp_path / "heads"), str(tmp_path / "results.csv")
  steps = ["--gin.AffinityConfig.train_steps=40", "--gin.AffinityConfig.eval_period=20",
           "--gin.AffinityConfig.val_fraction=0.25"]
  assert main(["affinity", "train", csv, "--library", str(tmp_path / "lib"), "--out", heads,
               "--seeds", "0", "1", "--gin_file=affinity/light.gin", *steps]) == 0
  summary = json.loads(open(os.path.join(heads, "summary.json")).read())
  assert summary["seeds"] == [0, 1] and len(summary["val_targets"]) == 2
  predictions = str(tmp_path / "predictions.csv")
  assert main(["affinity", "predict", "--scorer", f"affinity:{heads}", "--library",
               str(tmp_path / "lib"), "--results", csv, "--out", predictions]) == 0
  table = results.read_predictions(predictions)
  assert len(table.score) == 8 * 7
  assert main(["study", "evaluate", csv, "--predictions", predictions,
               "--ndcg_relevance", "gain"]) == 0
  out = str(tmp_path / "table.csv")
  assert main(["affinity", "evaluate", csv, "--head", heads, "--library", str(tmp_path / "lib"),
               "--out", out]) == 0
  printed = capsys.readouterr().out
  for method in ("affinity (mean over 2 seeds)", "cosine", "max_pairwise", "brute_force",
                 "random (expected)"):
    assert method in printed
  assert "data_size left out" in printed  # the planted tasks have no known sizes.
  # selected on the targets it is evaluated on: one note pointing at the clean protocol.
  assert printed.count("selected (early stopping, best step) on the validation Spearman of "
                       f"{', '.join(summary['val_targets'])}") == 1
  assert "--cross_validate" in printed
  assert open(out).readline().startswith("method,spearman,pearson,regret_at_1")


def test_cross_validate_trains_folds_that_never_see_their_targets_and_evaluate_finds_them(
    tmp_path, capsys):
  """`affinity train --cross_validate [K]` writes one fold per target (or K folds) without
  validation; `affinity evaluate --head OUT` scores every target with its fold, no leak note."""
  from spot_jax.affinity.predict import fold_dirs
  from spot_jax.cli.main import main
  from spot_jax.study import results
  tasks, _, _ = planted_pool("cosine", n_tasks=4)
  library = library_and_results(tmp_path, "cosine", 4)
  csv, out = str(tmp_path / "results.csv"), str(tmp_path / "folds")
  steps = ["--gin.AffinityConfig.train_steps=10", "--gin.AffinityConfig.eval_period=5"]
  train_cmd = ["affinity", "train", csv, "--library", library, *steps, "--seeds"]
  assert main([*train_cmd, "0", "1", "--out", out, "--cross_validate"]) == 0
  printed = capsys.readouterr().out
  assert fold_dirs(out) == [os.path.join(out, t) for t in tasks]
  for target in tasks:
    assert f"held out {target}: 2 heads on 6 training pairs in {os.path.join(out, target)}" \
        in printed
    for seed in (0, 1):
      record = json.loads(open(os.path.join(out, target, f"seed_{seed}", "head.json")).read())
      assert record["val_targets"] == [target] and record["config"]["eval_period"] == 0
      assert len(record["train_pairs"]) == 6  # the 3 other tasks' pairs among themselves.
      assert all(target not in pair for pair in record["train_pairs"])
  assert "4 folds (leave one target out" in printed
  assert main(["affinity", "evaluate", csv, "--head", out, "--library", library]) == 0
  printed = capsys.readouterr().out
  assert f"targets: {', '.join(tasks)} (cross-validated: 4 folds)" in printed
  assert "affinity (mean over 2 seeds)" in printed and "early stopping, best step" not in printed
  predictions = str(tmp_path / "predictions.csv")
  assert main(["affinity", "predict", "--scorer", f"affinity:{out}", "--library", library,
               "--results", csv, "--out", predictions]) == 0
  assert len(results.read_predictions(predictions).score) == 4 * 3

  k_out = str(tmp_path / "k_folds")
  assert main([*train_cmd, "0", "--out", k_out, "--cross_validate", "2"]) == 0
  held = [json.loads(open(os.path.join(d, "seed_0", "head.json")).read())["val_targets"]
          for d in fold_dirs(k_out)]
  assert sorted(t for fold in held for t in fold) == tasks and list(map(len, held)) == [2, 2]
  assert "2 folds (K folds" in capsys.readouterr().out
  with pytest.raises(data.AffinityDataError, match="pick 2 <= K <= 4"):
    data.target_folds(tasks, 5, 0)
  os.remove(os.path.join(out, "folds.json"))  # fold directories without a listing are found.
  assert fold_dirs(out) == [os.path.join(out, t) for t in tasks]
  assert fold_dirs(os.path.join(out, tasks[0])) is None

  for other in (["--val_targets", tasks[0]], ["--leave_family_out", "sentiment"]):
    with pytest.raises(SystemExit):
      main([*train_cmd, "0", "--out", str(tmp_path / "x"), "--cross_validate", *other])
    assert "not allowed with argument" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "x")


def test_evaluate_averages_only_the_seeds_folds_json_lists_and_prints_ndcg_on_request(
    tmp_path, capsys):
  """A cross-validation directory retrained with fewer seeds keeps the old seed_* heads on
  disk; `affinity evaluate` and `affinity:OUT` use only the seeds folds.json lists. NDCG is a
  column only when --ndcg_relevance is given."""
  from spot_jax.cli.main import main
  tasks, _, _ = planted_pool("cosine", n_tasks=3)
  library = library_and_results(tmp_path, "cosine", 3)
  csv, out = str(tmp_path / "results.csv"), str(tmp_path / "folds")
  train_cmd = ["affinity", "train", csv, "--library", library, "--out", out, "--cross_validate",
               "--gin.AffinityConfig.train_steps=5", "--seeds"]
  assert main([*train_cmd, "0", "1"]) == 0
  assert main([*train_cmd, "0"]) == 0  # seed_1 stays on disk, stale.
  assert all(os.path.isdir(os.path.join(out, t, "seed_1")) for t in tasks)
  assert all(len(load_scorer(out).by_target[t].heads) == 1 for t in tasks)
  capsys.readouterr()
  evaluate = ["affinity", "evaluate", csv, "--head", out, "--library", library]
  assert main(evaluate) == 0
  printed = capsys.readouterr().out
  assert "mean over" not in printed and "ensemble" not in printed
  assert "ndcg" not in printed.splitlines()[1]
  table = str(tmp_path / "table.csv")
  assert main([*evaluate, "--ndcg_relevance", "gain", "--out", table]) == 0
  header = capsys.readouterr().out.splitlines()[1].split()
  assert header[-1] == "ndcg" and "ndcg" in open(table).readline().split(",")


def test_encoder_head_refuses_keys_of_another_model_up_front_in_one_line(tmp_path):
  """Keys 8 wide against the base backbone (768): one message naming the fix, no traceback."""
  from conftest import spot_jax_cli
  library = library_and_results(tmp_path, "cosine", 3)
  done = spot_jax_cli("affinity", "train", tmp_path / "results.csv", "--library", library,
                      "--out", tmp_path / "heads", "--gin_file=affinity/encoder.gin")
  assert done.returncode == 2, done.stderr
  assert done.stderr.strip().splitlines() == [
      "spot-jax affinity: error: The keys are 8 wide but the encoder affinity head's backbone "
      "embeds 768: the keys come from another frozen model. Use keys of the backbone's model "
      "(--model or a library of that model), set AffinityConfig.model (and checkpoint) to the "
      "keys' model, or train the light head (--gin_file=affinity/light.gin), which takes keys "
      "of any width"]
  assert not os.path.exists(tmp_path / "heads")


def test_tasks_missing_from_the_library_are_named_up_front(tmp_path):
  from conftest import spot_jax_cli
  from spot_jax.library.store import PromptLibrary
  library = library_and_results(tmp_path, "cosine", 3)
  PromptLibrary(library).remove(next(e.id for e in PromptLibrary(library).entries()
                                     if e.task == "task_02"))
  done = spot_jax_cli("affinity", "train", tmp_path / "results.csv", "--library", library,
                      "--out", tmp_path / "folds", "--cross_validate")
  assert done.returncode == 2
  assert done.stderr.strip() == (
      f"spot-jax affinity: error: {tmp_path / 'results.csv'} has tasks with no keys in the "
      f"library {library}: task_02; add their runs or prompts to the library (`spot-jax "
      "library add`), or drop their rows from the results")


def test_cross_validated_evaluation_scores_each_target_with_the_fold_that_held_it_out(
    tmp_path, capsys):
  """`affinity evaluate --head FOLD1 FOLD2`: every target is scored by the heads that never
  trained on it; a target held out by two folds is refused."""
  from spot_jax.affinity.predict import AffinityHead, HeadScorer, held_out_folds
  from spot_jax.cli.main import main
  from spot_jax.library.similarity import LibraryError
  tasks, keys, _ = planted_pool("cosine", n_tasks=6)
  library_and_results(tmp_path, "cosine", 6)
  csv = str(tmp_path / "results.csv")
  steps = ["--gin.AffinityConfig.train_steps=20", "--gin.AffinityConfig.eval_period=10"]
  folds = {"a": tasks[:2], "b": tasks[2:4], "c": tasks[1:3]}
  for fold, held in folds.items():
    assert main(["affinity", "train", csv, "--library", str(tmp_path / "lib"), "--out",
                 str(tmp_path / fold), "--val_targets", *held, *steps]) == 0
  capsys.readouterr()
  out = str(tmp_path / "table.csv")
  assert main(["affinity", "evaluate", csv, "--head", str(tmp_path / "a"), str(tmp_path / "b"),
               "--library", str(tmp_path / "lib"), "--out", out]) == 0
  printed = capsys.readouterr().out
  assert f"targets: {', '.join(tasks[:4])} (cross-validated: 2 folds)" in printed
  assert "early stopping, best step" in printed  # --val_targets folds validate on their targets.
  heads = {f: [AffinityHead.load(str(tmp_path / f / "seed_0"))] for f in folds}
  scorer = held_out_folds([heads["a"], heads["b"]], "affinity")
  for target, fold in ((tasks[0], "a"), (tasks[3], "b")):
    pool = np.concatenate([keys[t] for t in tasks])
    np.testing.assert_array_equal(
        scorer.score(keys[target][0], pool, target=target),
        HeadScorer(heads[fold], fold).score(keys[target][0], pool))
  with pytest.raises(LibraryError, match="held out target 'task_05'"):
    scorer.score(keys[tasks[5]][0], keys[tasks[0]], target=tasks[5])
  with pytest.raises(LibraryError, match="held out by two folds"):
    held_out_folds([heads["a"], heads["c"]], "affinity")


def test_the_synthetic_study_gives_the_head_pairs_on_held_out_targets():
  """gin_configs/affinity/synthetic_study.yaml (scripts/affinity_synthetic_study.sh): enough
  sources x targets that the light head's default split keeps training and validation pairs."""
  from conftest import PROJECT_ROOT
  from spot_jax.study.spec import load_spec
  spec = load_spec(str(PROJECT_ROOT / "gin_configs" / "affinity" / "synthetic_study.yaml"))
  assert len(spec.sources) >= 8 and len(spec.targets) >= 4 and spec.key_step <= spec.target_steps
  gains = {(s, t): 0.0 for s in spec.sources for t in spec.targets if s != t}
  held = data.split_targets(list(spec.targets), train.AffinityConfig().val_fraction, 0)
  split = data.make_split(gains, held, None, 0)
  assert len(split.train) >= 15 and len(split.val) >= 6


@pytest.mark.slow
def test_textemb_and_fisher_scorers_embed_task_data(tmp_path):
  from flax import traverse_util

  from conftest import PROJECT_ROOT
  from spot_jax.affinity import textemb
  from spot_jax.checkpoints import t5x
  from spot_jax.library.similarity import LibraryError
  encoded = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [0.0, 0.0],
                                                                   [0.0, 0.0]]])
  mask = np.array([[1, 1, 0], [1, 0, 0]])
  np.testing.assert_allclose(textemb.mean_pooled(encoded, mask), [3.5, 4.5])  # (2,3), (5,6).
  frozen = PROJECT_ROOT / "tests" / "golden" / "tiny_byte_frozen.npz"
  params = traverse_util.unflatten_dict(dict(np.load(frozen)), sep="/")
  t5x.write_checkpoint(tmp_path / "checkpoint_1500", params, step=1500)
  scorer = scorers.get_scorer(f"textemb:{tmp_path / 'checkpoint_1500'}")
  scorer.num_examples = 8
  tasks = ["synthetic_sentiment_a", "synthetic_sentiment_b", "synthetic_topic_4way"]
  out = scorer.score(np.zeros((2, 64)), np.zeros((3, 2, 64)), target=tasks[0], pool_tasks=tasks)
  assert out.shape == (3,) and out[0] == pytest.approx(1.0)
  assert np.all(np.abs(out) <= 1 + 1e-9) and len(set(np.round(out, 6))) == 3
  with pytest.raises(LibraryError, match="target task"):
    scorer.score(np.zeros((2, 64)), np.zeros((3, 2, 64)))
  fisher = scorers.get_scorer(f"fisher:{tmp_path / 'checkpoint_1500'}")
  fisher.num_examples = 4
  keys = np.random.default_rng(0).normal(size=(3, 2, 64)).astype(np.float32)
  embedding = fisher.embed(tasks[0], keys[0])
  assert embedding.shape == (2 * 64,) and np.all(embedding >= 0) and embedding.max() > 0
  out = fisher.score(keys[0], keys, target=tasks[0], pool_tasks=tasks)
  assert out[0] == pytest.approx(1.0) and np.all(out[1:] < 1.0) and np.all(out >= 0)
