"""Rules that combine the network, the trees and average activity, scored under ``--cv``.

Runs issue 16's protocol for one fold seed (:func:`epitensor.evaluation.benchmark.run_cv`:
5 folds over all 25 tracks of the bundled sample, the default model beside
``average_activity`` and ``chromimpute_gbt``, every method retrained per fold
and training seed), saves every held-out imputation (float16, one ``.npz`` per
fold and training seed) and scores combination rules on them (the three methods themselves keep the
run's own scores)::

    base = w_net * network + w_trees * trees + w_avg * average
    rule = base + lift * max(average - base, 0) * [average >= q-quantile of average]

``network`` is the default model's network alone, recovered from its
prediction ``w network + (1 - w) average`` (``w`` the preset's ``average_weight``, 0.6). Every rule is scored by every
challenge and peak metric per track; the table gives the means over tracks of
each track's mean over training seeds, and the wins against average activity
and the trees (challenge metrics of 9, peak metrics of 5, tracks on Pearson).

    python benchmarks/cv_rules.py --fold-seed 0 --out cv-rules-0            # run + grid
    python benchmarks/cv_rules.py --fold-seed 1 --out cv-rules-1 --rule 0.3,0.5,0.2,0.7
    python benchmarks/cv_rules.py --out cv-rules-1 --rescore --rule ...      # reuse the npz

About 45 minutes per fold seed on a 2-core AVX-512 machine (3 training
seeds); scoring costs about 0.6 s per rule and track.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import cpu_summary
from epitensor.estimators.ensemble import EnsembleRule
from epitensor.evaluation import metrics
from epitensor.evaluation.benchmark import Scorer, plot_metrics, run_cv, summarise
from epitensor.genome.annotations import Annotations
from epitensor.nn.hyperparams import read_preset
from epitensor.store.registry import open_store
from epitensor.viz.tables import markdown_table

PRESET = "cpu-small"  # the model run_cv trains by default
NETWORK_WEIGHT = read_preset(PRESET).average_weight  # its blend: w network + (1 - w) average
SCORED = (*metrics.CHALLENGE_METRICS, *metrics.PEAK_METRICS)
GRID_WEIGHTS = [(1 / 3, 1 / 3, 1 / 3), (0.4, 0.4, 0.2), (0.3, 0.4, 0.3), (0.35, 0.45, 0.2),
                (0.3, 0.5, 0.2)]  # fmt: skip
GRID_LIFTS = [0.0, 0.5, 0.6, 0.7, 0.8]
GRID_GATES = [0.0]  # q = 0: the lift everywhere
Rule = tuple[float, ...]  # w_net, w_trees, w_avg, lift[, q]


def rule_name(rule: Rule) -> str:
    """``w<net>/<trees>/<avg>+<lift>``, then ``@<q>`` for a gated lift."""
    name = "w{:.2f}/{:.2f}/{:.2f}+{}".format(*rule[:4])
    return name + (f"@{rule[4]}" if len(rule) > 4 and rule[4] > 0 else "")


def apply_rule(rule: Rule, net: np.ndarray, trees: np.ndarray, avg: np.ndarray) -> np.ndarray:
    """The rule's imputation, shape ``(n_positions,)``, arcsinh.

    With a gate ``q`` the lift applies only where the average reaches its own
    ``q`` quantile over the track (its peaks), leaving the rest of the track
    as the weighted mean.
    """
    w_net, w_trees, w_avg, lift = rule[:4]
    base = w_net * net + w_trees * trees + w_avg * avg
    gain = np.maximum(avg - base, 0.0)
    if len(rule) > 4 and rule[4] > 0:
        gain *= avg >= np.quantile(avg, rule[4])
    return base + lift * gain


def run_and_save(
    fold_seed: int, out: Path, seeds: list[int], ensemble: EnsembleRule | None = None
) -> None:
    """Run the CV protocol; write its tables to ``out/cv`` and the imputations to ``out/npz``."""
    (out / "npz").mkdir(parents=True, exist_ok=True)
    calls = {"n": 0}  # run_cv calls its scorers once per fold and seed, seeds innermost

    def save(store, predictions, holdout, train) -> pd.DataFrame:
        fold, seed = divmod(calls["n"], len(seeds))
        calls["n"] += 1
        arrays = {
            f"{method}|{c}|{a}": np.asarray(values, dtype=np.float16)
            for method, tracks in predictions.items()
            for (c, a), values in tracks.items()
        }
        np.savez(out / "npz" / f"fold{fold}-seed{seeds[seed]}.npz", **arrays)
        return pd.DataFrame({"saved": [len(arrays)]})

    result = run_cv("roadmap-pilot", out / "cv", k=5, seed=fold_seed, training_seeds=seeds, presets=[PRESET],
                    methods=["average_activity", "chromimpute_gbt"], scorers={"saved": save},
                    ensemble=ensemble)  # fmt: skip
    print(result.summary_markdown(), flush=True)


def score_rules(npz_dir: Path, rules: dict[str, Rule], seeds: list[int]) -> pd.DataFrame:
    """Long table ``fold, seed, celltype, assay, method, metric, value`` of every rule."""
    store = open_store("roadmap-pilot")
    scorer = Scorer(store, Annotations.from_directory())
    rows = []
    for seed in seeds:
        for path in sorted(npz_dir.glob(f"fold*-seed{seed}.npz")):
            fold = int(path.stem.split("-")[0][len("fold") :])
            data = np.load(path)
            for c, a in sorted({tuple(key.split("|")[1:]) for key in data.files}):
                saved = {m: data[f"{m}|{c}|{a}"].astype(np.float32)
                         for m in ("avocado", "average_activity", "chromimpute_gbt")}  # fmt: skip
                avg, trees = saved["average_activity"], saved["chromimpute_gbt"]
                net = (saved["avocado"] - (1 - NETWORK_WEIGHT) * avg) / NETWORK_WEIGHT
                for name, rule in rules.items():
                    scores = scorer.score((c, a), apply_rule(rule, net, trees, avg))
                    rows += [(fold, seed, c, a, name, m, scores[m]) for m in SCORED]
            print(f"scored {path.name}", flush=True)
    return pd.DataFrame(rows, columns=["fold", "seed", "celltype", "assay", "method", "metric",
                                       "value"])  # fmt: skip


def cv_scores(out: Path, seeds: list[int]) -> pd.DataFrame:
    """The run's own scores of the default, average activity and the trees, as ``score_rules``."""
    table = pd.read_csv(out / "cv" / "cv_metrics.csv")
    table = table[table.training_seed.isin(seeds) & table.metric.isin(SCORED)]
    table = table.rename(columns={"training_seed": "seed"})
    return table.assign(method=table.method.replace({"avocado": "default"}))


def wins_table(long: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Means (metrics x methods) and each method's wins against average activity and the trees."""
    per_track = long.groupby(["celltype", "assay", "method", "metric"]).value.mean().reset_index()
    means = summarise(per_track).loc[list(SCORED)]
    pearson = per_track[per_track.metric == "gwcorr"].pivot(
        index=["celltype", "assay"], columns="method", values="value"
    )
    rows = []
    for method in means.columns:
        row = {"method": method}
        for other, label in (("average_activity", "average"), ("chromimpute_gbt", "trees")):
            diff = means[method] - means[other]
            better = [diff[m] < 0 if m in metrics.LOWER_IS_BETTER else diff[m] > 0 for m in SCORED]
            row[f"vs {label}: challenge / peak"] = f"{sum(better[:9])}/9, {sum(better[9:])}/5"
            row[f"Pearson > {label} (tracks)"] = f"{int((pearson[method] > pearson[other]).sum())}"
            row[f"lost to {label}"] = ", ".join(m for m, b in zip(SCORED, better) if not b)
        rows.append(row)
    return means, pd.DataFrame(rows)


def pick(means: pd.DataFrame, long: pd.DataFrame) -> str:
    """The rule this benchmark picks on a selection run.

    Among the rules that beat average activity on all 9 challenge metrics, on
    at least 4 of the 5 peak metrics and on Pearson for over two thirds of the
    tracks, the one with the most challenge wins against the trees; ties go to
    the largest smallest relative margin over the metrics it wins against
    either baseline (the win least likely to flip on other folds).
    """
    per_track = long.groupby(["celltype", "assay", "method", "metric"]).value.mean().reset_index()
    pearson = per_track[per_track.metric == "gwcorr"].pivot(
        index=["celltype", "assay"], columns="method", values="value"
    )
    scored = []
    for method in means.columns:
        if method in ("average_activity", "chromimpute_gbt", "default"):
            continue
        margins = {}
        for other in ("average_activity", "chromimpute_gbt"):
            sign = np.array([-1.0 if m in metrics.LOWER_IS_BETTER else 1.0 for m in SCORED])
            margins[other] = sign * (means[method] - means[other]).to_numpy() / means[other].abs()
        vs_avg, vs_trees = margins["average_activity"] > 0, margins["chromimpute_gbt"] > 0
        tracks = int((pearson[method] > pearson["average_activity"]).sum())
        if vs_avg[:9].all() and vs_avg[9:].sum() >= 4 and tracks > 2 * len(pearson) / 3:
            won = np.concatenate([margins[o][:9][margins[o][:9] > 0] for o in margins])
            scored.append((int(vs_trees[:9].sum()), float(won.min()), method))
    if not scored:
        return ""
    return max(scored)[2]


def write_per_track(long: pd.DataFrame, out: Path, label: str) -> None:
    """``metrics_by_track.md`` (track x method, mean over seeds) and ``metrics.png``."""
    per_track = long.groupby(["celltype", "assay", "method", "metric"]).value.mean().reset_index()
    wide = per_track.pivot_table(index=["celltype", "assay", "method"], columns="metric",
                                 values="value")[list(SCORED)]  # fmt: skip
    wide.index = [" ".join(key) for key in wide.index]
    wide.index.name = "track method"
    (out / "metrics_by_track.md").write_text(markdown_table(wide) + "\n")
    plot_metrics(out / "metrics.png", per_track,
                 f"5-fold CV, {label}: each metric by method, one point per track")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument("--training-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rule", action="append", help="w_net,w_trees,w_avg,lift[,q] (repeat)")
    parser.add_argument(
        "--gates",
        type=float,
        nargs="+",
        default=GRID_GATES,
        help="grid of lift gates q (quantiles of the average)",
    )
    parser.add_argument(
        "--weights",
        type=float,
        nargs=3,
        action="append",
        help="grid weighting w_net w_trees w_avg (repeat); default: GRID_WEIGHTS",
    )
    parser.add_argument("--ensemble", help="also run epitensor.estimators.ensemble with t,lift,q")
    parser.add_argument("--lifts", type=float, nargs="+", default=GRID_LIFTS)
    parser.add_argument("--rescore", action="store_true", help="score the saved npz only")
    parser.add_argument("--score-seeds", type=int, nargs="+", help="default: --training-seeds")
    args = parser.parse_args()
    print(f"cpu: {cpu_summary()}", flush=True)
    if not args.rescore:
        rule = EnsembleRule(*map(float, args.ensemble.split(","))) if args.ensemble else None
        run_and_save(args.fold_seed, args.out, args.training_seeds, rule)
    if args.rule:
        chosen = [tuple(float(x) for x in r.split(",")) for r in args.rule]
    else:
        grid = itertools.product(args.weights or GRID_WEIGHTS, args.lifts, args.gates)
        chosen = [(*w, lift, q) if lift and q else (*w, lift) for w, lift, q in grid]
    rules = {rule_name(r): r for r in chosen}
    seeds = args.score_seeds or args.training_seeds
    scored = score_rules(args.out / "npz", rules, seeds)
    own = cv_scores(args.out, seeds)
    runs = set(zip(scored.fold, scored.seed))  # the (fold, seed) pairs saved and scored
    own = own[[pair in runs for pair in zip(own.fold, own.seed)]]
    long = pd.concat([scored, own])
    long.to_csv(args.out / "rules_long.csv", index=False)
    means, wins = wins_table(long)
    (args.out / "rules.md").write_text(
        markdown_table(means) + "\n\n" + markdown_table(wins.set_index("method")) + "\n"
    )
    if args.rule:  # the chosen rules: per-track table and figure
        write_per_track(long, args.out, f"fold seed {args.fold_seed}")
    print(means.round(3).to_string())
    print(wins.to_string(index=False))
    print(f"picked (see pick): {pick(means, long) or 'none passes'}")


if __name__ == "__main__":
    main()
