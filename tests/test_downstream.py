"""Tests for the downstream harness (folds, AP, models, outputs) and region features."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError
from epitensor.evaluation.downstream import (
    BASELINE,
    _fit_predict_xgboost,
    average_precision,
    compare_feature_sets,
    genome_factor_features,
    load_features,
    load_labels,
    locate_intervals,
    make_folds,
    pair_features,
    pairs_in_layout,
    parse_interval_names,
    promoter_features,
    read_targetfinder_pairs,
    run_downstream,
    track_features,
)


def _labelled(n=400, prevalence=0.2, seed=0):
    """0/1 labels, a feature set carrying the label (plus noise) and a random one."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(float)
    carrying = np.c_[y + rng.normal(0, 0.3, n), rng.normal(size=(n, 3))]
    return y, {"carrying": carrying, "random": rng.normal(size=(n, 4))}


# -- average precision -------------------------------------------------------------------


def test_average_precision_by_hand_with_ties():
    """Scores 3, 2, 2, 1, 0 for labels 1, 0, 1, 0, 1: the tied pair enters at one threshold.

    Thresholds give (recall, precision) (1/3, 1), (2/3, 2/3), (2/3, 1/2), (1, 3/5):
    AP = 1/3 + 1/3 * 2/3 + 1/3 * 3/5 = 34/45. Ranking the tie in input order
    instead would give 1/3 + 1/3 + 1/3 * 3/5 = 13/15.
    """
    y = np.array([1, 0, 1, 0, 1])
    assert average_precision(y, np.array([3.0, 2, 2, 1, 0])) == pytest.approx(34 / 45)
    # order 0, 1, 0, 1, 1: positives enter at ranks 2, 4 and 5
    assert average_precision(y, np.array([0.5, 0.9, 0.8, 0.7, 0.6])) == pytest.approx(
        (1 / 2 + 2 / 4 + 3 / 5) / 3
    )


def test_average_precision_edge_cases():
    y = np.array([0, 1, 0, 0, 1])
    assert average_precision(y, np.zeros(5)) == pytest.approx(0.4)  # constant: prevalence
    assert average_precision(y, y) == 1.0
    assert np.isnan(average_precision(np.zeros(4), np.arange(4)))
    with pytest.raises(EpitensorError, match="score has 3"):
        average_precision(y, np.zeros(3))


# -- folds -------------------------------------------------------------------------------


def test_folds_partition_and_validation_never_overlaps_test():
    y = (np.arange(203) % 5 == 0).astype(float)
    folds = make_folds(y, n_folds=7, n_repeats=2, seed=3)
    assert len(folds) == 14
    for repeat in (0, 1):
        tests = [f.test for f in folds if f.repeat == repeat]
        assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(y.size))
    for fold in folds:
        assert np.intersect1d(fold.valid, fold.test).size == 0
        assert np.intersect1d(fold.train, fold.test).size == 0
        assert np.isin(fold.valid, fold.train).all()
        assert np.array_equal(np.union1d(fold.fit, fold.valid), fold.train)
        assert np.intersect1d(fold.fit, fold.valid).size == 0
        assert 5 <= y[fold.test].sum() <= 7  # stratified: 41 positives over 7 folds
    # repeats reshuffle; the same seed gives the same folds
    assert not np.array_equal(folds[0].test, folds[7].test)
    again = make_folds(y, n_folds=7, n_repeats=2, seed=3)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again))


def test_grouped_folds_keep_each_group_in_one_fold():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, size=300)
    y = (groups % 4 == 0).astype(float)  # the label follows the group, as for shared promoters
    folds = make_folds(y, n_folds=5, n_repeats=2, groups=groups)
    for fold in folds:
        assert np.intersect1d(groups[fold.test], groups[fold.train]).size == 0
        assert np.intersect1d(groups[fold.valid], groups[fold.test]).size == 0
    with pytest.raises(EpitensorError, match="groups has 3"):
        make_folds(y, n_folds=5, groups=groups[:3])
    with pytest.raises(EpitensorError, match="2 groups cannot fill"):
        make_folds(y, n_folds=5, groups=np.arange(300) % 2)
    # a feature naming the group (like position-specific genome factors naming an element)
    # looks perfect with random folds and is exposed by grouped folds
    ids = np.eye(40)[groups]
    free = compare_feature_sets({"ids": ids}, y, model="logistic", n_folds=5, verbose=False)
    grouped = compare_feature_sets(
        {"ids": ids}, y, model="logistic", n_folds=5, groups=groups, verbose=False
    )
    assert free.summary().mean_ap[0] > 0.95
    assert grouped.summary().set_index("feature_set").loc["ids", "mean_ap"] < 0.6
    assert grouped.params["grouped"] and not free.params["grouped"]


def test_make_folds_raises():
    y = np.r_[np.ones(3), np.zeros(50)]
    with pytest.raises(EpitensorError, match="rarest class has 3"):
        make_folds(y, n_folds=5)
    with pytest.raises(EpitensorError, match="at least 3"):
        make_folds(y, n_folds=2)
    with pytest.raises(EpitensorError, match="n_repeats"):
        make_folds(y, n_folds=3, n_repeats=0)
    with pytest.raises(EpitensorError, match="cannot fill"):
        make_folds(np.zeros(4), n_folds=5, stratify=False)


def test_same_folds_for_every_feature_set():
    """Two copies of one feature set get identical fold-by-fold scores; fold sizes agree."""
    y, sets = _labelled(n=200)
    sets["copy"] = sets["random"].copy()
    result = compare_feature_sets(sets, y, model="logistic", n_folds=3, n_repeats=2, verbose=False)
    wide = result._wide()
    assert np.array_equal(wide["random"].to_numpy(), wide["copy"].to_numpy())
    per_fold = result.scores.groupby(["repeat", "fold"])[["n_test", "n_test_positive"]].nunique()
    assert (per_fold == 1).all().all()
    assert len(result.scores) == 4 * 6  # three sets and the baseline, 6 folds each


def test_early_stopping_is_driven_by_the_validation_fold():
    """Inverting the labels of the validation fold alone stops boosting at the first tree."""
    rng = np.random.default_rng(0)
    n = 600
    x = rng.random((n, 1)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(float)
    folds = make_folds(y, n_folds=3, seed=0)
    fold = folds[0]
    params = dict(n_estimators=40, max_depth=2, early_stopping_rounds=5, threads=1, seed=0)
    _, trees_consistent = _fit_predict_xgboost(x, y, fold, False, params)
    flipped = y.copy()
    flipped[fold.valid] = 1 - flipped[fold.valid]  # only the validation fold disagrees
    pred, trees_flipped = _fit_predict_xgboost(x, flipped, fold, False, params)
    assert trees_consistent > 20
    assert trees_flipped == 1
    assert pred.shape == fold.test.shape


# -- comparison --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["xgboost", "logistic"])
def test_label_beats_random_and_random_scores_near_prevalence(model):
    y, sets = _labelled(n=500, prevalence=0.2)
    result = compare_feature_sets(
        sets, y, model=model, n_folds=5, n_estimators=60, threads=1, verbose=False
    )
    summary = result.summary().set_index("feature_set")
    prevalence = summary.loc[BASELINE, "mean_ap"]
    assert prevalence == pytest.approx(y.mean(), abs=0.01)
    assert summary.loc["carrying", "mean_ap"] > 0.9
    assert abs(summary.loc["random", "mean_ap"] - prevalence) < 0.08
    assert summary.loc["random", "p_vs_best"] < 1e-3
    assert summary.index[0] == "carrying"
    tests = result.ttests().set_index(["a", "b"])
    assert tests.loc[("carrying", "random"), "mean_diff"] > 0.6


def test_regression_scores_pearson_and_r2():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2))
    target = 2 * x[:, 0] + rng.normal(0, 0.5, 300)
    result = compare_feature_sets(
        {"x": x}, target, regression=True, n_folds=4, n_estimators=80, verbose=False
    )
    table = result.summary().set_index("feature_set")
    assert table.loc["x", "mean_pearson"] > 0.9
    assert table.loc["x", "mean_r2"] > 0.8
    assert table.loc["training-mean baseline", "mean_r2"] < 0.05
    assert "R²" in result.to_markdown()


def test_compare_raises_on_bad_inputs():
    y, sets = _labelled(n=100)
    with pytest.raises(EpitensorError, match="invalid model"):
        compare_feature_sets(sets, y, model="svm")
    with pytest.raises(EpitensorError, match="99 samples"):
        compare_feature_sets({"a": sets["random"][:99]}, y)
    with pytest.raises(EpitensorError, match="not 0/1"):
        compare_feature_sets(sets, y + 0.5)
    with pytest.raises(EpitensorError, match="NaN"):
        compare_feature_sets({"a": np.full((100, 2), np.nan)}, y)
    with pytest.raises(EpitensorError, match="no feature sets"):
        compare_feature_sets({}, y)


def test_outputs_written(tmp_path):
    y, sets = _labelled(n=200)
    result = compare_feature_sets(sets, y, model="logistic", n_folds=3, verbose=False)
    out = result.save(tmp_path / "res", title="t")
    for name in ("scores.csv", "summary.csv", "ttests.csv", "table.md", "chart.png", "params.json"):
        assert (out / name).stat().st_size > 0
    assert pd.read_csv(out / "scores.csv").shape[0] == 3 * 3
    assert json.loads((out / "params.json").read_text())["model"] == "logistic"
    assert (out / "table.md").read_text().startswith("| feature set |")
    with pytest.raises(EpitensorError, match="already exists"):
        result.save(out)


# -- files and CLI -----------------------------------------------------------------------


def test_load_features_formats(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", x)
    pd.DataFrame(x, columns=list("abc")).assign(gene=list("wxyz")).to_csv(
        tmp_path / "c.tsv", sep="\t", index=False
    )
    for name in ("a.npy", "b.npz", "c.tsv"):
        got = load_features(tmp_path / name)
        assert got.dtype == np.float32 and np.array_equal(got, x)
    np.save(tmp_path / "y.npy", np.array([0.1, 0.7, 0.5, 2.0]))
    assert load_labels(tmp_path / "y.npy", threshold=0.5).tolist() == [0, 1, 1, 1]
    assert load_labels(tmp_path / "y.npy", n_samples=2).tolist() == [0.1, 0.7]
    with pytest.raises(EpitensorError, match="not found"):
        load_features(tmp_path / "missing.npy")
    with pytest.raises(EpitensorError, match="unknown feature format"):
        (tmp_path / "x.parquet").write_text("")
        load_features(tmp_path / "x.parquet")
    with pytest.raises(EpitensorError, match="one"):
        load_labels(tmp_path / "a.npy")


def test_cli_downstream(tmp_path):
    from epitensor.cli import app

    y, sets = _labelled(n=150)
    np.save(tmp_path / "y.npy", np.r_[y, np.zeros(10)] * 3.0)  # longer, unthresholded
    args = []
    for name, x in sets.items():
        np.save(tmp_path / f"{name}.npy", x)
        args += ["--features", f"{name}={tmp_path / f'{name}.npy'}"]
    base = [
        "downstream", *args, "--labels", str(tmp_path / "y.npy"), "--model", "logistic",
        "--folds", "3", "--threshold", "1.5", "-q",
    ]  # fmt: skip
    runner = CliRunner()
    bad = runner.invoke(app, [*base, "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and "--n-samples" in bad.output
    ok = runner.invoke(app, [*base, "--n-samples", "150", "--out", str(tmp_path / "res")])
    assert ok.exit_code == 0, ok.output
    assert "carrying" in ok.output and (tmp_path / "res" / "chart.png").is_file()
    params = json.loads((tmp_path / "res" / "params.json").read_text())
    assert params["n_samples"] == 150 and params["threshold"] == 1.5
    again = runner.invoke(app, [*base, "--n-samples", "150", "--out", str(tmp_path / "res")])
    assert again.exit_code == 1 and "already exists" in again.output
    assert runner.invoke(app, ["downstream", "--help"]).exit_code == 0


def test_run_downstream_rejects_bad_feature_spec(tmp_path):
    with pytest.raises(EpitensorError, match="NAME=FILE"):
        run_downstream(["nofile"], tmp_path / "y.npy", tmp_path / "o")


# -- region features on real data --------------------------------------------------------


def test_parse_interval_names():
    got = parse_interval_names(["IMR90|chr1:20,902,000-20902200", "chr2:5-10"])
    assert got.to_dict("list") == {
        "chrom": ["chr1", "chr2"],
        "start": [20902000, 5],
        "end": [20902200, 10],
    }
    with pytest.raises(EpitensorError, match="not chr:start-end"):
        parse_interval_names(["chr1-5-10"])
    with pytest.raises(EpitensorError, match="not below"):
        parse_interval_names(["chr1:10-5"])


@pytest.fixture(scope="module")
def imr90_pairs(test_data):
    from epitensor.genome.pilot import pilot_layout

    pairs = read_targetfinder_pairs(test_data / "targetfinder/IMR90.pairs.csv.gz")
    return pairs, pairs_in_layout(pairs, pilot_layout())


def test_targetfinder_pairs_map_into_the_pilot_regions(imr90_pairs):
    from epitensor.genome.pilot import pilot_layout

    pairs, inside = imr90_pairs
    layout = pilot_layout()
    assert len(pairs) == 26254 and pairs.label.sum() == 1254
    assert (len(inside), int(inside.label.sum())) == (305, 7)  # few pairs, 7 positives
    chrom_index, bins = layout.genome_bins("pilot")
    for element in ("enhancer", "promoter"):
        lo = inside[f"{element}_axis_start"].to_numpy()
        hi = inside[f"{element}_axis_end"].to_numpy()
        # axis positions map back to the element's own chromosome and bins
        chroms = layout.regions.chrom.to_numpy()[chrom_index[lo]]
        assert (chroms == inside[f"{element}_chrom"].to_numpy()).all()
        assert (bins[lo] == inside[f"{element}_start"].to_numpy() // 25).all()
        assert (bins[hi - 1] == (inside[f"{element}_end"].to_numpy() - 1) // 25).all()
        # agrees with Layout.locate, one slice per element
        for row in inside.head(20).itertuples(index=False):
            hit = layout.locate(
                getattr(row, f"{element}_chrom"),
                getattr(row, f"{element}_start"),
                getattr(row, f"{element}_end"),
            )
            assert len(hit) == 1
            assert hit.axis_start[0] == getattr(row, f"{element}_axis_start")
            assert hit.axis_end[0] == getattr(row, f"{element}_axis_end")
    # pairs left out have an element outside (or straddling) the pilot regions
    cols = {"enhancer_chrom": "chrom", "enhancer_start": "start", "enhancer_end": "end"}
    outside = locate_intervals(pairs[list(cols)].rename(columns=cols).head(2000), layout)
    assert (~outside.inside).sum() > 1900 and (outside.axis_start[~outside.inside] == -1).all()


def test_track_and_pair_features_on_the_pilot_store(imr90_pairs, pilot_store):
    _, inside = imr90_pairs
    tracks = [("E017", "H3K4me3"), ("E017", "H3K27me3")]
    enh = track_features(pilot_store, tracks, inside, "enhancer_")
    prom = track_features(pilot_store, tracks, inside, "promoter_")
    assert enh.shape == (305, 2)
    row = inside.iloc[0]
    direct = pilot_store.read_track("E017", "H3K4me3")[
        row.promoter_axis_start : row.promoter_axis_end
    ]
    assert prom[0, 0] == pytest.approx(direct.mean(), rel=1e-5)
    # promoters carry more H3K4me3 than enhancers in IMR-90
    assert np.median(prom[:, 0]) > np.median(enh[:, 0])
    assert pair_features(enh, prom).shape == (305, 4)
    with pytest.raises(EpitensorError, match="lacks the tracks"):
        track_features(pilot_store, [("E017", "H3K27ac")], inside, "enhancer_")
    with pytest.raises(EpitensorError, match="differ"):
        pair_features(enh, prom[:10])


def test_genome_factor_and_promoter_features(imr90_pairs, trained_model):
    _, inside = imr90_pairs
    sub = inside.head(30)
    feats = genome_factor_features(trained_model, sub, "enhancer_")
    n_factors = trained_model.genome_factors("pilot", 0, 1).shape[1]
    assert feats.shape == (30, n_factors)
    row = sub.iloc[0]
    direct = trained_model.genome_factors("pilot", row.enhancer_axis_start, row.enhancer_axis_end)
    np.testing.assert_allclose(feats[0], direct.mean(axis=0), rtol=1e-4, atol=1e-6)

    from epitensor.genome.annotations import read_tss
    from epitensor.genome.pilot import pilot_annotations_dir

    tss = read_tss(pilot_annotations_dir() / "gencode.v19.TSS.notlow.gff.gz").head(200)
    x, kept = promoter_features(trained_model, tss)
    n25, n250 = trained_model.n_25bp_factors, trained_model.n_250bp_factors
    assert x.shape == (kept.size, 16 * (n25 + n250) + trained_model.n_5kbp_factors)
    assert kept.size > 50 and np.isfinite(x).all()
    with pytest.raises(EpitensorError, match="250"):
        promoter_features(trained_model, tss, window=200)
