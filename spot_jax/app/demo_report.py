"""The demo's results.json, report.md and report.html (one page, figures inline as base64 PNG).

`collect` gathers every measured number (nothing here is tuned or hard-coded: the checks
(a)-(d) are evaluated on the demo's own ground truth and reported whether or not they hold);
`write` renders the same blocks as Markdown and as self-contained HTML.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
SCALARS = ("spearman", "pearson", "regret_at_1", "regret_at_3", "ndcg", "rho")
# The scorer comparison on the held-out targets (claim (d)): Spearman, Regret@1 and the gain of
# the best of the top-1 / top-3 sources (SPoT Table 3's Abs.; the affinity paper's Figure 3).
COMPARISON = ("spearman", "regret_at_1", "gain_at_1", "gain_at_3")
HEAD = "affinity_head"


def _num(value: Any) -> float | None:
  if value is None:
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def _matrix(array: np.ndarray) -> list[list[float | None]]:
  return [[_num(v) for v in row] for row in np.asarray(array, np.float64)]


# ----------------------------------------------------------------------------- collecting


def collect(cfg, *, checkpoint: str, study_dir: str, untrained: Mapping[str, float],
            rankings: Mapping[str, Any], strategies: Mapping[str, Any],
            analysis: Mapping[str, Any], analysis_dir: str,
            families: Mapping[str, str], affinity: Mapping[str, Any] | None = None,
            world_rule: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
  """Every section of results.json from the demo's files and stage outputs (`affinity`: how
  the affinity_head ranking method was trained, demo.affinity_stage)."""
  from spot_jax.app import pipeline
  table = pipeline.study_table(study_dir)
  sources, targets = list(table.sources), list(table.targets)
  seed = cfg.seeds[0]
  source_scores = {}
  for s in cfg.sources:
    summary = pipeline.run_summary(pipeline.study_run_dir(study_dir, "source", s, None, seed))
    source_scores[s] = {"score": summary.best_score, "metric": summary.eval_metric,
                        "best_step": summary.best_step}
  pretrain_json = os.path.join(os.path.dirname(checkpoint), "pretrain.json")
  pretrain = json.load(open(pretrain_json)) if os.path.exists(pretrain_json) else {}

  target_rows = {}
  for j, t in enumerate(targets):
    entry = dict(analysis["targets"][t])
    entry["untrained"] = _num(untrained.get(t))
    related = [i for i, s in enumerate(sources) if families.get(s) == families.get(t)]
    entry["related_sources"] = [sources[i] for i in related]
    entry["best_related_score"] = (_num(max(table.mean[i, j] for i in related))
                                   if related else None)
    target_rows[t] = entry

  method_order = [m for m in cfg.ranking_methods if m in rankings]
  method_order += sorted(m for m in rankings if m.startswith(f"{HEAD}/")) + ["random"]
  ranking_rows = {m: {"average": {k: _num(rankings[m]["average"][k]) for k in SCALARS},
                      "oracle_gain_share": [_num(v) for v in
                                            rankings[m]["average"]["curve"]["oracle_gain_share"]],
                      "best_of_top_k": [_num(v) for v in
                                        rankings[m]["average"]["curve"]["best_of_top_k"]],
                      "gain_of_top_k": [_num(v) for v in
                                        rankings[m]["average"]["curve"]["gain_of_top_k"]],
                      "k_for_90_percent_gain": rankings[m]["average"]["k_for_90_percent_gain"],
                      "targets": {t: {**{k: _num(v[k]) for k in SCALARS},
                                      "predicted_ranking": v["predicted_ranking"]}
                                  for t, v in rankings[m]["targets"].items()},
                      "notes": rankings[m]["notes"]}
                  for m in method_order}

  strategy_rows = {}
  k = cfg.top_k
  for t in targets:
    j = targets.index(t)
    row = {"baseline": _num(table.baseline_mean[j]),
           "oracle": target_rows[t]["oracle_score"], "oracle_source": target_rows[t][
               "oracle_source"]}
    predicted = rankings[cfg.strategy_method]["targets"][t]["predicted_ranking"] \
        if cfg.strategy_method in rankings else None
    if "best_of_top_k" in cfg.strategies and predicted:
      top = predicted[:k]
      row["best_of_top_k"] = _num(max(table.mean[sources.index(s), j] for s in top))
      row["best_of_top_k_sources"] = top
    for name, result in strategies.get(t, {}).items():
      row[name] = _num(result["best"]["best_score"]) if result["best"] else None
      row[f"{name}_sources"] = result["retrieved"]
      if result.get("alphas"):
        row[f"{name}_alphas"] = result["alphas"]
    strategy_rows[t] = row

  scorers = compare_scorers(ranking_rows)
  checks = evaluate_checks(cfg, target_rows, ranking_rows, scorers)
  figures = {"transfer_heatmap": os.path.join(analysis_dir, "transfer_heatmap.png"),
             "similarity_heatmap": os.path.join(analysis_dir, "task_similarity_heatmap.png"),
             "similarity_vs_transfer": [os.path.join(analysis_dir, "similarity_vs_transfer",
                                                     f"{t}.png") for t in targets],
             "best_of_top_k": os.path.join(analysis_dir, "best_of_top_k.png")}
  best_of_top_k_plot(ranking_rows, [m for m in method_order if "/" not in m], target_rows,
                     figures["best_of_top_k"])
  return {
      "config": {k: (list(v) if isinstance(v, tuple) else v)
                 for k, v in dataclasses.asdict(cfg).items()},
      "world": {"families": dict(families), "sources": list(cfg.sources),
                "targets": list(cfg.targets)},
      "frozen_model": {"checkpoint": checkpoint, "pretraining": pretrain},
      "sources": source_scores,
      "targets": target_rows,
      "transfer_matrix": {
          "sources": sources, "targets": targets, "metric": analysis.get("metric"),
          "score": _matrix(table.mean), "baseline": [_num(v) for v in table.baseline_mean],
          "gain": _matrix(table.gain),
          "relative_error_reduction": _matrix(table.relative_error_reduction),
          "positive_transfers": analysis["num_positive_transfers"],
          "pairs": analysis["num_transfer_pairs"]},
      "oracle": {t: {"source": target_rows[t]["oracle_source"],
                     "score": target_rows[t]["oracle_score"],
                     "gain": target_rows[t]["oracle_gain"],
                     "relative_error_reduction": target_rows[t][
                         "oracle_relative_error_reduction"]} for t in targets},
      "similarity": analysis.get("similarity", {}),
      "rankings": ranking_rows,
      "scorers": scorers,
      "world_rule": [dict(r) for r in world_rule],
      "affinity_head": dict(affinity) if affinity else None,
      "strategies": strategy_rows,
      "checks": checks,
      "figures": figures,
      "notes": list(analysis.get("notes", [])),
  }


def compare_scorers(rankings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """{scorer: {metric: {"mean", "std", "values"}}} over the held-out targets for COMPARISON;
  the rankings `affinity_head/seed_<s>` are one scorer over its head seeds (std with ddof=1),
  a similarity (deterministic) has one value and std 0, random is the exact expectation."""
  grouped: dict[str, list[Mapping[str, Any]]] = {}
  for method, row in rankings.items():
    grouped.setdefault(method.split("/")[0], []).append(row)
  out = {}
  for scorer, rows in grouped.items():
    values = {"spearman": [r["average"]["spearman"] for r in rows],
              "regret_at_1": [r["average"]["regret_at_1"] for r in rows],
              "gain_at_1": [r["gain_of_top_k"][0] for r in rows],
              "gain_at_3": [r["gain_of_top_k"][min(2, len(r["gain_of_top_k"]) - 1)]
                            for r in rows]}
    out[scorer] = {"seeds": len(rows)}
    for metric, vals in values.items():
      finite = [v for v in vals if v is not None]
      out[scorer][metric] = {
          "mean": _num(np.mean(finite)) if finite else None,
          "std": _num(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0,
          "values": vals}
  return out


def head_beats_cosine(scorers: Mapping[str, Any]) -> dict[str, Any]:
  """Claim (d): the learned head's mean Spearman (over its seeds) is above cosine's and its
  mean Regret@1 is not above cosine's, on the held-out targets."""
  claim = ("the learned affinity head ranks the sources of the held-out targets better than "
           "cosine (mean over head seeds: higher Spearman and no higher Regret@1)")
  if HEAD not in scorers or "cosine" not in scorers:
    return {"claim": claim, "holds": False, "evaluated": False,
            "why": "needs both 'cosine' and 'affinity_head' in DemoConfig.ranking_methods"}
  head, cos = scorers[HEAD], scorers["cosine"]
  hs, cs = head["spearman"]["mean"], cos["spearman"]["mean"]
  hr, cr = head["regret_at_1"]["mean"], cos["regret_at_1"]["mean"]
  holds = None not in (hs, cs, hr, cr) and hs > cs and hr <= cr
  return {"claim": claim, "holds": bool(holds), "evaluated": True, "seeds": head["seeds"],
          "head": {m: head[m] for m in COMPARISON}, "cosine": {m: cos[m] for m in COMPARISON}}


def evaluate_checks(cfg, targets: Mapping[str, Any], rankings: Mapping[str, Any],
                    scorers: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
  """(a) tuning beats the untrained prompt on every target (by cfg.tuning_margin points);
  (b) transfer from a related source beats the baseline on most (> half of the) targets;
  (c) the first ranking method's mean regret@1 is below the random ranking's expectation;
  (d) when the affinity head ranks: `head_beats_cosine`."""
  tuned = {t: (v["baseline_mean"], v["untrained"]) for t, v in targets.items()}
  a_ok = [t for t, (b, u) in tuned.items()
          if b is not None and u is not None and b >= u + cfg.tuning_margin]
  a_fail = sorted(set(tuned) - set(a_ok))
  b_ok = [t for t, v in targets.items() if v["best_related_score"] is not None
          and v["baseline_mean"] is not None and v["best_related_score"] > v["baseline_mean"]]
  b_fail = sorted(set(targets) - set(b_ok))
  method = cfg.ranking_methods[0]
  ours = rankings[method]["average"]["regret_at_1"]
  random = rankings["random"]["average"]["regret_at_1"]
  c_holds = ours is not None and random is not None and ours < random
  checks = {
      "a": {"claim": f"prompt tuning beats the untrained prompt by >= {cfg.tuning_margin:g} "
                     "points on every target",
            "holds": not a_fail, "passed": sorted(a_ok), "failed": a_fail,
            "detail": {t: {"untrained": u, "tuned": b} for t, (b, u) in tuned.items()}},
      "b": {"claim": "transfer from a related source (same family) beats the no-transfer "
                     "baseline on most targets",
            "holds": len(b_ok) * 2 > len(targets), "passed": sorted(b_ok), "failed": b_fail},
      "c": {"claim": f"similarity retrieval ({method}) beats a random ranking at finding the "
                     "best source (mean regret@1, lower is better)",
            "holds": bool(c_holds), "method": method, "regret_at_1": ours,
            "random_regret_at_1": random,
            "other_methods": {m: r["average"]["regret_at_1"] for m, r in rankings.items()
                              if m not in (method, "random")}},
  }
  if scorers and HEAD in scorers:
    checks["d"] = head_beats_cosine(scorers)
  return checks


def affinity_sentence(info: Mapping[str, Any]) -> str:
  """How the affinity_head ranking was trained, in one sentence."""
  return (f"affinity_head: the {info['variant']} affinity head trained as the affinity paper "
          f"does (Feng et al. 2023, §3.2): on M = {info['train_pairs']} ordered source -> "
          f"source transfers sampled inside the pool (seed {info['pool_pairs_seed']}), each "
          "labelled with its measured gain over the pool task's own no-transfer baseline; no "
          "pair touches a held-out target, nothing is selected on them (no validation, the "
          f"last of {info['train_steps']} steps). One head per seed "
          f"({', '.join(map(str, info['seeds']))}), each ranked on its own; keys not centred.")


def _pm(stats: Mapping[str, Any], digits: int) -> str:
  if stats["mean"] is None:
    return "-"
  return f"{_fmt(stats['mean'], digits)} ± {_fmt(stats['std'], digits)}"


def comparison_rows(scorers: Mapping[str, Any]) -> list[tuple]:
  """One row per scorer: COMPARISON as mean ± std (over head seeds; similarities are
  deterministic: std 0; random: the exact expectation)."""
  digits = {"spearman": 3, "regret_at_1": 2, "gain_at_1": 2, "gain_at_3": 2}
  rows = []
  for scorer, v in scorers.items():
    label = (f"{scorer} ({v['seeds']} seeds)" if scorer == HEAD else
             "random (expected)" if scorer == "random" else scorer)
    rows.append((label, *(_pm(v[m], digits[m]) for m in COMPARISON)))
  return rows


def check_d_evidence(d: Mapping[str, Any]) -> str:
  if not d.get("evaluated"):
    return d.get("why", "not evaluated")
  h, c = d["head"], d["cosine"]
  return (f"Spearman {_pm(h['spearman'], 3)} vs {_fmt(c['spearman']['mean'], 3)}; Regret@1 "
          f"{_pm(h['regret_at_1'], 2)} vs {_fmt(c['regret_at_1']['mean'], 2)} (head over "
          f"{d['seeds']} seeds vs cosine)")


def best_of_top_k_plot(rankings: Mapping[str, Any], methods: Sequence[str],
                       targets: Mapping[str, Any], path: str) -> None:
  """Mean best-of-top-k score over targets for each ranking method, with the mean baseline
  and oracle."""
  from matplotlib.figure import Figure

  from spot_jax.app.pipeline import save_figure
  figure = Figure(figsize=(6.5, 4.2))
  ax = figure.add_subplot()
  k_max = max(len(rankings[m]["best_of_top_k"]) for m in methods)
  ax.set_xticks(range(1, k_max + 1))
  for method in methods:
    values = rankings[method]["best_of_top_k"]
    ks = range(1, len(values) + 1)
    style = dict(linestyle="--", color="0.4") if method == "random" else dict(marker="o")
    ax.plot(list(ks), values, label=method + (" (expected)" if method == "random" else ""),
            **style)
  baseline = [v["baseline_mean"] for v in targets.values() if v["baseline_mean"] is not None]
  oracle = [v["oracle_score"] for v in targets.values() if v["oracle_score"] is not None]
  if baseline:
    ax.axhline(float(np.mean(baseline)), color="tab:red", linewidth=1, label="no transfer")
  if oracle:
    ax.axhline(float(np.mean(oracle)), color="tab:green", linewidth=1, label="oracle source")
  ax.set_xlabel("k (sources tried, best first by the ranking)")
  ax.set_ylabel("best target score among the top k (mean over targets)")
  ax.set_title("Best of top-k: how many transfers the ranking needs")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  save_figure(figure, path)


# ----------------------------------------------------------------------------- rendering


def _fmt(value: Any, digits: int = 1, sign: bool = False) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  if isinstance(value, float):
    return format(value, f"+.{digits}f" if sign else f".{digits}f")
  return str(value)


def _short(task: str) -> str:
  from tasks import synthetic
  return synthetic.unprefixed_name(task)


def blocks(data: Mapping[str, Any]) -> list[tuple]:
  """The report as blocks: ("h", level, text), ("p", text), ("table", header, rows),
  ("img", path, caption)."""
  cfg, checks, tm = data["config"], data["checks"], data["transfer_matrix"]
  out: list[tuple] = [("h", 1, "SPoT on a miniature world: the spot-jax demo")]
  out.append(("p", "Soft prompt transfer (SPoT, Vu et al. 2022) end to end on a synthetic "
                   "world: a tiny T5 1.1 model pretrained here and frozen, source prompts "
                   "in a prompt library, held-out target tasks, task embeddings from early "
                   "target prompts, ranked retrieval and three transfer strategies. Every "
                   "number below was measured by this run; nothing was tuned to the report."))
  out.append(("h", 2, "What was measured"))
  out.append(("table", ("claim", "holds", "evidence"), [
      (f"(a) {checks['a']['claim']}", "yes" if checks["a"]["holds"] else "NO",
       "failed on: " + ", ".join(checks["a"]["failed"]) if checks["a"]["failed"]
       else f"all {len(checks['a']['passed'])} targets"),
      (f"(b) {checks['b']['claim']}", "yes" if checks["b"]["holds"] else "NO",
       f"{len(checks['b']['passed'])} of {len(checks['b']['passed']) + len(checks['b']['failed'])}"
       " targets" + (f"; not on: {', '.join(checks['b']['failed'])}" if checks["b"]["failed"]
                     else "")),
      (f"(c) {checks['c']['claim']}", "yes" if checks["c"]["holds"] else "NO",
       f"regret@1 {_fmt(checks['c']['regret_at_1'])} vs {_fmt(checks['c']['random_regret_at_1'])}"
       " expected for a random ranking"),
      *([(f"(d) {checks['d']['claim']}", "yes" if checks["d"]["holds"] else "NO",
          check_d_evidence(checks["d"]))] if "d" in checks else [])]))
  out.append(("h", 2, "The world and the frozen model"))
  out.append(("p", f"Frozen model: `{cfg['model']}` pretrained for {cfg['pretrain_steps']} "
                   f"steps on `{cfg['pretrain_task']}`, written as a T5X checkpoint and "
                   f"loaded from disk by every prompt run (`{data['frozen_model']['checkpoint']}`)."
                   f" Prompts: {cfg['prompt_length']} tokens, batch {cfg['batch_size']}, "
                   f"sources {cfg['source_steps']} steps, targets {cfg['target_steps']} steps, "
                   f"keys at step {cfg['key_step']}, seeds {cfg['seeds']}, validation on "
                   f"{cfg['eval_num_examples']} examples (accuracy, %, "
                   f"{cfg['eval_mode'].replace('_', ' ')})."))
  fam = data["world"]["families"]
  out.append(("table", ("source task", "family", "accuracy after tuning"), [
      (_short(s), fam[s], _fmt(v["score"])) for s, v in data["sources"].items()]))
  if data.get("world_rule"):
    out.append(("h", 2, "The world's transfer rule, measured"))
    out.append(("p", "Pool pairs the world was built around (tasks/synthetic_world.py: "
                     "RULE_COVERS, LOOKALIKES; docs/affinity.md): a harder sibling's rule "
                     "covers the easier one's, and a lookalike shares its partner's inputs "
                     "with the opposite labels. Gains are measured transfers over the pool "
                     "task's own baseline (accuracy points). Pairs not among the M sampled "
                     "ones are probes: measured for this table only, never trained on."))
    out.append(("table", ("source -> target", "kind", "gain", "reverse direction's gain",
                          "in the head's training set"),
                [(f"{_short(r['source'])} -> {_short(r['target'])}", r["kind"],
                  _fmt(r["gain"], sign=True), _fmt(r["reverse_gain"], sign=True),
                  "yes" if r["trained_on"] else "no (probe)") for r in data["world_rule"]]))
  out.append(("h", 2, "Targets: untrained prompt, tuning, oracle source"))
  out.append(("table", ("target", "family", "untrained prompt", "tuned (baseline)",
                        "best related source", "oracle source", "oracle score",
                        "relative error reduction %"), [
      (_short(t), fam[t], _fmt(v["untrained"]), _fmt(v["baseline_mean"]),
       _fmt(v["best_related_score"]), _short(v["oracle_source"] or "-"),
       _fmt(v["oracle_score"]), _fmt(v["oracle_relative_error_reduction"], sign=True))
      for t, v in data["targets"].items()]))
  out.append(("h", 2, "Transfer matrix (brute force, the ground truth)"))
  header = ("source \\ target", *(_short(t) for t in tm["targets"]))
  rows = [("no transfer", *(_fmt(b) for b in tm["baseline"]))]
  for i, s in enumerate(tm["sources"]):
    rows.append((_short(s), *(f"{_fmt(tm['score'][i][j])} ({_fmt(tm['relative_error_reduction'][i][j], sign=True)})"
                              for j in range(len(tm["targets"])))))
  out.append(("table", header, rows))
  out.append(("p", f"Cells: target accuracy after transfer (relative error reduction over the "
                   f"no-transfer baseline, %). Positive transfers: {tm['positive_transfers']} "
                   f"of {tm['pairs']} pairs."))
  out.append(("img", data["figures"]["transfer_heatmap"], "Transfer heatmap (relative error "
                                                           "reduction over the baseline)"))
  out.append(("h", 2, "Ranking the sources from task embeddings"))
  out.append(("p", "Each target's key is its baseline prompt at step "
                   f"{cfg['key_step']}; sources are ranked by the similarity of their keys"
                   + (" (keys centred on the library mean)" if cfg["center_keys"] else "")
                   + ". Random: the exact expectation over uniformly random rankings. "
                   "Regret@k: % of the oracle score lost by the best of the top k; rho: "
                   "position of the best source; share of oracle gain at k = 1."))
  rows = []
  for method, r in data["rankings"].items():
    avg = r["average"]
    share = r["oracle_gain_share"][0] if r["oracle_gain_share"] else None
    rows.append((method, *(_fmt(avg[k], 3 if k in ("spearman", "pearson", "ndcg") else 2)
                           for k in SCALARS), _fmt(share, 2)))
  out.append(("table", ("method", "Spearman", "Pearson", "Regret@1", "Regret@3", "NDCG",
                        "rho", "oracle gain share@1"), rows))
  if data.get("affinity_head"):
    out.append(("p", affinity_sentence(data["affinity_head"])))
    out.append(("h", 2, "The learned head against similarity (held-out targets)"))
    out.append(("table", ("scorer", "Spearman", "Regret@1", "gain of the best of top-1",
                          "gain of the best of top-3"), comparison_rows(data["scorers"])))
    out.append(("p", "Mean over the held-out targets, then mean ± std (ddof 1) over the "
                     "head's seeds; a similarity is deterministic (std 0), random is the "
                     "exact expectation. Gains: target accuracy points over the no-transfer "
                     "baseline. Claim (d) is the row above: "
                     + ("it holds." if data["checks"].get("d", {}).get("holds") else
                        "it did NOT hold on this run.")))
    targets = list(tm["targets"])
    out.append(("p", "Spearman per held-out target (the head: mean over its seeds):"))
    out.append(("table", ("scorer", *(_short(t) for t in targets)),
                per_target_spearman(data["rankings"], targets)))
    out.append(("h", 3, "The head's training set: measured source -> source gains"))
    out.append(("table", ("pair (source -> target, both in the pool)", "gain", "reverse "
                          "direction"), pool_rows(data["affinity_head"])))
  out.append(("img", data["figures"]["best_of_top_k"], "Best of top-k, per ranking method"))
  out.append(("img", data["figures"]["similarity_heatmap"], "Task similarity of the keys "
                                                             "(clustered)"))
  for path in data["figures"]["similarity_vs_transfer"]:
    out.append(("img", path, "Similarity to the target vs. transfer gain"))
  out.append(("h", 2, f"Transfer strategies (top-{cfg['top_k']}, ranked by "
                      f"{cfg['strategy_method']})"))
  names = [s for s in ("best_of_top_k", "weighted_average", "mixture") if s in cfg["strategies"]]
  rows = []
  for t, v in data["strategies"].items():
    rows.append((_short(t), _fmt(v["baseline"]), *(_fmt(v.get(n)) for n in names),
                 f"{_fmt(v['oracle'])} ({_short(v['oracle_source'] or '-')})"))
  means = ["mean", _mean_text([v["baseline"] for v in data["strategies"].values()])]
  means += [_mean_text([v.get(n) for v in data["strategies"].values()]) for n in names]
  means.append(_mean_text([v["oracle"] for v in data["strategies"].values()]))
  rows.append(tuple(means))
  out.append(("table", ("target", "no transfer", *(n.replace("_", " ") for n in names),
                        "oracle"), rows))
  out.append(("p", "BEST OF TOP-k is read off the transfer matrix: its runs are the "
                   "matrix's runs (the same source prompt, target steps and seed). "
                   "WEIGHTED AVERAGE starts from the similarity-weighted average of the top-k "
                   "source prompts; MIXTURE trains a source prompt on the top-k tasks plus "
                   "the target, then tunes it on the target."))
  notes = list(data.get("notes", []))
  for r in data["rankings"].values():
    notes += r["notes"]
  if notes:
    out.append(("h", 2, "Notes"))
    out.append(("p", "; ".join(dict.fromkeys(notes))))
  out.append(("p", f"Finished in {data.get('seconds', 0):.0f} s. Every file is in "
                   f"`{cfg['output_dir']}`; results.json holds every number above."))
  return out


def per_target_spearman(rankings: Mapping[str, Any], targets: Sequence[str]) -> list[tuple]:
  """One row per scorer: each target's Spearman, the mean over a scorer's seeds ('-' where a
  target's gains are all equal and Spearman is undefined)."""
  grouped: dict[str, list[Mapping[str, Any]]] = {}
  for method, row in rankings.items():
    grouped.setdefault(method.split("/")[0], []).append(row)
  rows = []
  for scorer, runs in grouped.items():
    cells = []
    for t in targets:
      values = [r["targets"][t]["spearman"] for r in runs if t in r["targets"]]
      cells.append(_fmt(_mean(values), 3))
    rows.append((scorer, *cells))
  return rows


def pool_rows(info: Mapping[str, Any]) -> list[tuple]:
  """The pool pairs' measured gains, with the reverse direction's where it was measured."""
  gains = info["pool_gains"]
  rows = []
  for pair, gain in gains.items():
    source, target = pair.split("->")
    reverse = gains.get(f"{target}->{source}")
    rows.append((f"{_short(source)} -> {_short(target)}", _fmt(gain, sign=True),
                 _fmt(reverse, sign=True) if reverse is not None else "not sampled"))
  return rows


def _mean(values: Sequence[float | None]) -> float | None:
  finite = [v for v in values if v is not None]
  return float(np.mean(finite)) if finite else None


def _mean_text(values: Sequence[float | None]) -> str:
  """The mean as text, saying how many values it leaves out (missing results)."""
  known = sum(v is not None for v in values)
  text = _fmt(_mean(values))
  return text if known == len(values) else f"{text} (of {known}/{len(values)})"


def render_markdown(items: Sequence[tuple], root: str) -> str:
  lines = []
  for item in items:
    if item[0] == "h":
      lines += ["#" * item[1] + " " + item[2], ""]
    elif item[0] == "p":
      lines += [item[1], ""]
    elif item[0] == "table":
      header, rows = item[1], item[2]
      lines.append("| " + " | ".join(header) + " |")
      lines.append("|" + "---|" * len(header))
      lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
      lines.append("")
    elif item[0] == "img" and os.path.exists(item[1]):
      lines += [f"![{item[2]}]({os.path.relpath(item[1], root)})", ""]
  return "\n".join(lines)


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block;margin:1em 0}
figure{margin:1em 0}figcaption{color:#555;font-size:13px}code{background:#f5f5f5;padding:0 3px}"""


def render_html(items: Sequence[tuple]) -> str:
  def inline(text: str) -> str:
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
  body = []
  for item in items:
    if item[0] == "h":
      body.append(f"<h{item[1]}>{inline(item[2])}</h{item[1]}>")
    elif item[0] == "p":
      body.append(f"<p>{inline(item[1])}</p>")
    elif item[0] == "table":
      head = "".join(f"<th>{inline(h)}</th>" for h in item[1])
      rows = "".join("<tr>" + "".join(f"<td>{inline(str(c))}</td>" for c in row) + "</tr>"
                     for row in item[2])
      body.append(f"<table><tr>{head}</tr>{rows}</table>")
    elif item[0] == "img" and os.path.exists(item[1]):
      with open(item[1], "rb") as f:
        data = base64.b64encode(f.read()).decode()
      body.append(f'<figure><img alt="{html.escape(item[2])}" src="data:image/png;base64,'
                  f'{data}"><figcaption>{inline(item[2])}</figcaption></figure>')
  return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>spot-jax demo report"
          f"</title><style>{HTML_STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def write(data: Mapping[str, Any], out_dir: str) -> dict[str, str]:
  """Writes results.json, report.md and report.html; returns their paths."""
  from spot_jax.app.pipeline import write_json
  from spot_jax.fileio import atomic_write_bytes
  paths = {name: os.path.join(out_dir, name) for name in (RESULTS_JSON, REPORT_MD, REPORT_HTML)}
  write_json(paths[RESULTS_JSON], data)
  items = blocks(data)
  atomic_write_bytes(paths[REPORT_MD], render_markdown(items, out_dir).encode())
  atomic_write_bytes(paths[REPORT_HTML], render_html(items).encode())
  return paths


def headline(data: Mapping[str, Any], paths: Mapping[str, str]) -> list[str]:
  """The summary the demo prints last."""
  checks, cfg = data["checks"], data["config"]
  n = len(data["targets"])
  gains = [v["baseline_mean"] - v["untrained"] for v in data["targets"].values()
           if v["baseline_mean"] is not None and v["untrained"] is not None]
  c = checks["c"]
  lines = ["", f"Report: {paths[REPORT_HTML]} (also {REPORT_MD}, {RESULTS_JSON})",
           f"(a) prompt tuning beats the untrained prompt on {len(checks['a']['passed'])}/{n} "
           f"targets (mean +{_fmt(_mean(gains))} points): "
           f"{'holds' if checks['a']['holds'] else 'does NOT hold'}",
           f"(b) transfer from a related source beats the baseline on "
           f"{len(checks['b']['passed'])}/{n} targets: "
           f"{'holds' if checks['b']['holds'] else 'does NOT hold'}",
           f"(c) retrieval by {c['method']}: regret@1 {_fmt(c['regret_at_1'])} vs "
           f"{_fmt(c['random_regret_at_1'])} for a random ranking: "
           f"{'holds' if c['holds'] else 'does NOT hold'}"]
  if "d" in checks:
    lines.append(f"(d) learned head vs cosine: {check_d_evidence(checks['d'])}: "
                 f"{'holds' if checks['d']['holds'] else 'does NOT hold'}")
  strategies = data["strategies"]
  names = [n for n in ("best_of_top_k", "weighted_average", "mixture") if n in cfg["strategies"]]
  parts = [f"no transfer {_mean_text([v['baseline'] for v in strategies.values()])}"]
  parts += [f"{name.replace('_', ' ')} {_mean_text([v.get(name) for v in strategies.values()])}"
            for name in names]
  parts.append(f"oracle {_mean_text([v['oracle'] for v in strategies.values()])}")
  lines.append(f"Mean target accuracy (top-{cfg['top_k']}): " + ", ".join(parts))
  missing = [f"{name.replace('_', ' ')} -> {_short(t)}" for t, v in strategies.items()
             for name in names if v.get(name) is None]
  if missing:  # a mean over fewer targets is never shown without saying so.
    lines.append(f"MISSING (failed or not run; means above leave them out): "
                 f"{', '.join(missing)}")
  lines.append(f"Done in {data.get('seconds', 0):.0f} s.")
  return lines
