"""The held-out-track protocol: splits, evaluate, the benchmark files, the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError
from epitensor.cli import app
from epitensor.estimators.baselines import (
    AssayMean,
    AverageActivity,
    ChromImputeGBT,
    GlobalMean,
    TensorFactorization,
)
from epitensor.evaluation import metrics
from epitensor.evaluation.benchmark import (
    STANDARD_SPLIT,
    best_methods,
    cv_folds,
    evaluate,
    interval_counts,
    read_split,
    resolve_split,
    run_benchmark,
    run_cv,
    stratified_evaluation,
    summarise,
)
from epitensor.evaluation.options import BenchmarkOptions, CVOptions
from epitensor.genome.annotations import Annotations
from epitensor.viz.tables import markdown_table


def test_read_split_with_and_without_header(tmp_path):
    plain = tmp_path / "split.tsv"
    plain.write_text("E003\tH3K4me3\nE116\tH3K27me3\n")
    assert read_split(plain) == [("E003", "H3K4me3"), ("E116", "H3K27me3")]
    header = tmp_path / "header.tsv"
    header.write_text("celltype\tassay\nE003\tH3K4me3\n")
    assert read_split(header) == [("E003", "H3K4me3")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("E003 H3K4me3\n")
    with pytest.raises(EpitensorError, match="two tab-separated columns"):
        read_split(bad)
    with pytest.raises(EpitensorError, match="not found"):
        read_split(tmp_path / "missing.tsv")


def test_resolve_split(small_pilot_store, tmp_path):
    holdout, train = resolve_split("standard", small_pilot_store)
    assert holdout == STANDARD_SPLIT
    assert len(train) == 20 and not set(train) & set(holdout)
    path = tmp_path / "split.tsv"
    path.write_text("E017\tH3K9me3\n")
    assert resolve_split(path, small_pilot_store)[0] == [("E017", "H3K9me3")]
    with pytest.raises(EpitensorError, match="not observed"):
        resolve_split([("E999", "H3K4me3")], small_pilot_store)
    with pytest.raises(EpitensorError, match="holds no track"):
        resolve_split([], small_pilot_store)
    with pytest.raises(EpitensorError, match="every track"):
        resolve_split(small_pilot_store.track_names(), small_pilot_store)


def test_evaluate_matches_metrics_score(small_pilot_store):
    _, train = resolve_split("standard", small_pilot_store)
    baseline = AverageActivity().fit(small_pilot_store, train)
    annotations = Annotations.from_directory()
    predictions = {}
    table = evaluate(
        baseline,
        small_pilot_store,
        [("E003", "H3K4me3"), ("E116", "H3K27me3")],
        annotations,
        predictions=predictions,
        verbose=False,
    )
    assert list(table.columns) == ["celltype", "assay", "method", "metric", "value"]
    assert set(table.method) == {"average_activity"}
    assert list(table.metric.iloc[: len(metrics.METRICS)]) == list(metrics.METRICS)
    observed = small_pilot_store.read_track("E003", "H3K4me3")
    layout = small_pilot_store.layout
    counts = {
        name: interval_counts(layout, getattr(annotations, name), "pilot")
        for name in ("promoters", "genes", "enhancers")
    }
    # msevar: the population variance of H3K4me3 over all five cell types, as the challenge
    h3k4me3 = [small_pilot_store.read_track(c, "H3K4me3") for c in ("E003", "E017", "E065")]
    h3k4me3 += [small_pilot_store.read_track(c, "H3K4me3") for c in ("E116", "E117")]
    expected = metrics.score(
        observed,
        baseline.predict("E003", "H3K4me3"),
        mask=annotations.keep(layout, "pilot"),
        regions=counts,
        weights=np.var(np.stack(h3k4me3), axis=0),
    )
    got = table[(table.celltype == "E003")].set_index("metric").value
    for name in metrics.METRICS:
        assert got[name] == pytest.approx(expected[name], nan_ok=True), name
    # promoters lie in the first 40,000 pilot positions, so the region metrics are numbers
    assert np.isfinite(got["mseprom"]) and np.isfinite(got["msegene"])
    assert np.isfinite(got["msevar"])
    # overlapping genes: some bins are counted more than once
    assert counts["genes"].max() >= 2
    assert np.array_equal(counts["genes"] > 0, annotations.regions(layout, "pilot")["genes"])
    assert set(predictions) == {("E003", "H3K4me3"), ("E116", "H3K27me3")}
    with pytest.raises(EpitensorError, match="no track"):
        evaluate(baseline, small_pilot_store, [], annotations)
    with pytest.raises(EpitensorError, match="not in store"):
        evaluate(baseline, small_pilot_store, [("E003", "H3K9ac")], annotations)


def test_evaluate_against_a_peak_mask(small_pilot_store):
    _, train = resolve_split("standard", small_pilot_store)
    baseline = AverageActivity().fit(small_pilot_store, train)
    track = ("E003", "H3K4me3")
    observed = small_pilot_store.read_track(*track)
    peaks = observed >= 3.0
    table = evaluate(
        baseline, small_pilot_store, [track], Annotations(), peaks={track: peaks}, verbose=False
    )
    got = table.set_index("metric").value
    expected = metrics.peak_scores(observed, baseline.predict(*track), peaks=peaks)
    assert got["recall"] == pytest.approx(expected["recall"])
    # no annotations: the region metrics are NaN and nothing is masked
    assert np.isnan(got["mseprom"]) and got["mse"] == pytest.approx(
        metrics.mse(observed, baseline.predict(*track))
    )


def test_msegene_sums_over_each_gene_window(small_pilot_store):
    """msegene on real data equals the challenge's loop: sum over genes of the window's errors."""
    annotations = Annotations.from_directory()
    layout = small_pilot_store.layout
    observed = small_pilot_store.read_track("E017", "H3K36me3")
    imputed = small_pilot_store.read_track("E065", "H3K36me3")
    region = layout.axis_regions("pilot").iloc[0]
    sse, n = 0.0, 0
    for gene in annotations.genes[annotations.genes.chrom == region.chrom].itertuples():
        lo = max(gene.start // 25 - region.first_bin, 0)
        hi = min(-(-gene.end // 25) - region.first_bin, region.n_bins)
        if hi > lo:
            sse += float(np.sum((observed[lo:hi] - imputed[lo:hi]) ** 2.0))
            n += hi - lo
    assert n > 0
    counts = interval_counts(layout, annotations.genes, "pilot")
    assert metrics.msegene(observed, imputed, counts) == pytest.approx(sse / n, rel=1e-5)


def test_summaries_and_markdown():
    table = pd.DataFrame(
        [
            ("c", "a", "m1", "mse", 1.0),
            ("c", "a", "m2", "mse", 0.5),
            ("c", "a", "m1", "gwcorr", 0.9),
            ("c", "a", "m2", "gwcorr", 0.1),
            ("d", "a", "m1", "gwcorr", 0.7),
            ("d", "a", "m2", "gwcorr", np.nan),
        ],
        columns=["celltype", "assay", "method", "metric", "value"],
    )
    summary = summarise(table)
    assert list(summary.index) == ["mse", "gwcorr"] and list(summary.columns) == ["m1", "m2"]
    assert summary.loc["gwcorr", "m1"] == pytest.approx(0.8)
    best = best_methods(summary)
    assert best["mse"] == "m2" and best["gwcorr"] == "m1"
    text = markdown_table(summary, digits=2, bold=best.to_dict())
    assert text.splitlines()[0] == "| metric | m1 | m2 |"
    assert "| mse | 1.00 | **0.50** |" in text
    counts = pd.DataFrame({"n": [1234567], "x": [np.nan]}, index=pd.Index(["a"], name="k"))
    assert "| a | 1,234,567 | – |" in markdown_table(counts)


@pytest.mark.parametrize("command", ["evaluate", "benchmark"])
def test_cli_help(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_stratified_by_hand(small_pilot_store):
    track = ("E003", "H3K4me3")
    observed = small_pilot_store.read_track(*track)
    perfect = {"perfect": {track: observed}, "zero": {track: np.zeros_like(observed)}}
    table = stratified_evaluation(small_pilot_store, perfect, Annotations())
    assert set(table.n_celltypes_with_peak) <= set(range(6))
    assert table.groupby("method").n_positions.sum().eq(len(observed)).all()
    exact = table[table.method == "perfect"]
    assert np.allclose(exact.mse, 0)
    # a perfect imputation finds every peak of a group that has them
    with_peaks = exact[exact.n_celltypes_with_peak >= 1]
    assert (with_peaks.recall.dropna() == 1).all()
    assert (table[table.method == "zero"].recall.dropna() == 0).all()


def _count_tracks(store, predictions, holdout, train):
    """An extra per-method table, as the benchmark's scorer hook takes."""
    assert len(holdout) + len(train) == len(store.track_names())
    return pd.DataFrame({"method": list(predictions), "n": [len(p) for p in predictions.values()]})


def test_run_benchmark_writes_everything(small_pilot_store, tmp_path):
    baselines = {
        "global_mean": GlobalMean(),
        "assay_mean": AssayMean(),
        "average_activity": AverageActivity(),
        "parafac": TensorFactorization(n_factors=4, n_epochs=1, batch_size=8192, verbose=False),
        "chromimpute_gbt": ChromImputeGBT(n_train_positions=4000, n_estimators=10, n_threads=1),
    }
    tiny = {
        "n_celltype_factors": 4,
        "n_assay_factors": 4,
        "n_25bp_factors": 4,
        "n_250bp_factors": 4,
        "n_5kbp_factors": 4,
        "n_nodes": 16,
        "n_epochs": 1,
        "n_genome_epochs": 1,
        "batch_size": 8192,
        "verbose": False,
    }
    out = tmp_path / "bench"
    result = run_benchmark(
        small_pilot_store,
        out,
        preset="cpu-small",
        model_params=tiny,
        baselines=baselines,
        verbose=False,
        scorers={"n_tracks": _count_tracks},
    )
    methods = [
        "epitensor",  # the default imputation (the ensemble impute writes), named once, first
        "avocado",
        "global_mean",
        "assay_mean",
        "average_activity",
        "parafac",
        "chromimpute_gbt",
    ]
    assert list(result.summary.columns) == methods
    assert result.ensemble is not None and result.ensemble.name == "epitensor"
    assert len(result.table) == 5 * len(methods) * len(metrics.METRICS)  # tracks, methods, metrics
    assert set(result.predictions) == set(methods)
    assert result.predictions["avocado"][("E003", "H3K4me3")].shape == (40_000,)
    assert result.model is not None and result.model.training_tracks_ == result.train
    for name in (
        "metrics.csv",
        "metrics_by_track.csv",
        "metrics_by_track.md",
        "summary.csv",
        "summary.md",
        "stratified.csv",
        "stratified.md",
        "metrics.png",
        "stratified.png",
        "parameters.json",
        "pairwise.csv",
        "pairwise_summary.csv",
        "pairwise.md",
        "n_tracks.csv",
        "n_tracks.md",
        "summary_by_assay.csv",
        "summary_by_assay.md",
        "ranking.csv",
        "ranking.md",
        "ranking_by_track.csv",
        "ranking_by_track.md",
    ):
        assert (out / name).stat().st_size > 0, name
    # every metric per assay (one held-out track each here): the per-track values
    by_assay = result.by_assay
    assert list(by_assay.columns) == ["n_tracks", *methods]
    assert set(by_assay.index.get_level_values("assay")) == {a for _, a in result.holdout}
    track_mse = result.table.query("celltype == 'E003' and metric == 'mse'")
    assert by_assay.loc[("H3K4me3", "mse"), "avocado"] == pytest.approx(
        track_mse[track_mse.method == "avocado"].value.iloc[0]
    )
    # the methods ranked by the challenge's rule over chromosome bootstraps
    ranking = pd.read_csv(out / "ranking.csv", index_col=0)
    assert set(ranking.index) == set(methods) and ranking["rank"].min() >= 1
    assert ranking.n_bootstraps.max() == len(result.ranking.attrs["left_out"]) > 1
    assert ranking.loc["global_mean", "rank"] >= ranking["rank"].median()
    assert "Bootstraps (chromosomes left out)" in (out / "ranking.md").read_text()
    # the pairwise relationships of the held-out tracks, every method beside the observed
    assert set(result.pairwise.method) == {"observed", *methods}
    assert "Not scored: H3K36me3 gene body ~ RNA-seq" in (out / "pairwise.md").read_text()
    # the extra scorer saw every method's held-out predictions
    assert dict(zip(result.extra["n_tracks"].method, result.extra["n_tracks"].n)) == dict.fromkeys(
        methods, 5
    )
    written = pd.read_csv(out / "metrics.csv")
    assert list(written.columns) == ["celltype", "assay", "method", "metric", "value"]
    assert "| mse |" in (out / "summary.md").read_text()
    assert set(result.stratified.method) == set(methods)
    with pytest.raises(EpitensorError, match="already exists"):
        run_benchmark(small_pilot_store, out, preset=None, baselines=baselines, verbose=False)
    # fitted baselines are reused, not refitted; no model with preset None
    again = run_benchmark(small_pilot_store, None, preset=None, baselines=baselines, verbose=False,
                          bootstraps=0)  # fmt: skip
    assert again.seconds == {} and list(again.summary.columns) == methods[2:]
    assert again.ensemble is None and again.ranking is None  # no model: no default imputation


def test_run_benchmark_presets_side_by_side(small_pilot_store):
    result = run_benchmark(
        small_pilot_store,
        None,
        preset=("cpu-small", "paper"),
        model_params={**TINY_AVOCADO, "precision": "fp32"},
        baselines={"average_activity": AverageActivity()},
        verbose=False,
    )
    assert list(result.summary.columns) == [
        "avocado-cpu-small",
        "avocado-paper",
        "average_activity",
    ]
    assert list(result.models) == ["avocado-cpu-small", "avocado-paper"]
    assert result.model is result.models["avocado-cpu-small"]
    # each keeps its preset's own schedule where the overrides leave it
    assert result.models["avocado-paper"].lr == 1e-3
    assert result.models["avocado-cpu-small"].lr == 3e-3


def test_cli_evaluate_and_benchmark(trained_model, pilot_store, tmp_path):
    model_dir = tmp_path / "model"
    trained_model.save(model_dir)
    out = tmp_path / "metrics.csv"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(model_dir),
            pilot_store.url,
            "--tracks",
            "E003:H3K4me3",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    # the default imputation (what `impute` writes: the ensemble), the model and its parts
    assert list(dict.fromkeys(table.method)) == [
        "epitensor", "avocado", "chromimpute_gbt", "average_activity"
    ]  # fmt: skip
    assert len(table) == 4 * len(metrics.METRICS)
    bad = runner.invoke(
        app, ["evaluate", str(model_dir), pilot_store.url, "--tracks", "E003", "--out", str(out)]
    )
    assert bad.exit_code != 0
    missing = runner.invoke(
        app,
        [
            "benchmark",
            pilot_store.url,
            "--out",
            str(tmp_path / "b"),
            "--split",
            str(tmp_path / "nope.tsv"),
        ],
    )
    assert missing.exit_code == 1 and "split file not found" in missing.output


TINY_AVOCADO = {
    "n_celltype_factors": 4,
    "n_assay_factors": 4,
    "n_25bp_factors": 4,
    "n_250bp_factors": 4,
    "n_5kbp_factors": 4,
    "n_nodes": 16,
    "n_epochs": 1,
    "n_genome_epochs": 1,
    "batch_size": 8192,
    "verbose": False,
}


def _cv_methods():
    return {
        "average_activity": lambda seed: AverageActivity(),
        "parafac": lambda seed: TensorFactorization(
            n_factors=4, batch_size=8192, seed=seed, verbose=False
        ),
        "chromimpute_gbt": lambda seed: ChromImputeGBT(
            n_train_positions=3000, n_estimators=10, n_threads=1, seed=seed
        ),
    }


def test_cv_folds_hold_every_track_out_once(small_pilot_store):
    tracks = small_pilot_store.track_names()
    folds = cv_folds(tracks, 5, seed=0)
    dealt = [t for fold in folds for t in fold]
    assert sorted(dealt) == sorted(tracks) and len(dealt) == len(set(dealt))
    assert [len(f) for f in folds] == [5] * 5
    assert cv_folds(tracks, 5, seed=0) == folds  # the seed fixes them
    assert cv_folds(tracks, 5, seed=1) != folds
    assert sorted(len(f) for f in cv_folds(tracks, 4, seed=0)) == [6, 6, 6, 7]
    for bad in (1, 26, 2.5):
        with pytest.raises(EpitensorError, match="number of folds"):
            cv_folds(tracks, bad)


def test_run_cv_retrains_per_fold_and_falls_back(small_pilot_store, tmp_path):
    """Three folds, the first taking every E003 track: no method has seen E003 in training."""
    tracks = small_pilot_store.track_names()
    e003 = [t for t in tracks if t[0] == "E003"]
    first = [*e003, ("E017", "H3K4me3")]
    rest = [t for t in tracks if t not in first]
    folds = [first, rest[::2], rest[1::2]]
    out = tmp_path / "cv"
    result = run_cv(
        small_pilot_store,
        out,
        training_seeds=(0, 1),
        presets=("cpu-small",),
        model_params=TINY_AVOCADO,
        methods=_cv_methods(),
        folds=folds,
        verbose=False,
        scorers={"n_tracks": _count_tracks},
    )
    methods = ["epitensor", "avocado", "average_activity", "parafac", "chromimpute_gbt"]
    # the default imputation is scored by default, and is what the others are compared with
    assert list(result.summary.columns) == methods and result.reference == "epitensor"
    # every track scored by every method on every metric, once per training seed
    assert len(result.table) == 25 * len(methods) * len(metrics.METRICS) * 2
    per_track = result.per_track[result.per_track.metric == "mse"]
    assert per_track.groupby("method").size().eq(25).all()
    assert dict(zip(result.folds.celltype + result.folds.assay, result.folds.fold)) == {
        c + a: next(i for i, f in enumerate(folds) if (c, a) in f) for c, a in tracks
    }
    assert (result.folds[result.folds.celltype == "E003"].celltype_kept == 0).all()
    assert (result.folds[result.folds.celltype != "E003"].celltype_kept > 0).all()
    # Avocado and PARAFAC know no E003: the fold's average activity stands in, and says so
    fell = result.fallbacks
    assert set(zip(fell.method, fell.celltype)) == {("avocado", "E003"), ("parafac", "E003")}
    assert len(fell) == 2 * 5 * 2  # two methods, five tracks, two seeds
    wide = result.per_track.pivot_table(
        index=["celltype", "assay", "metric"], columns="method", values="value"
    )
    e003_mse = wide.xs("mse", level="metric").loc["E003"]
    assert np.allclose(e003_mse.avocado, e003_mse.average_activity)
    assert np.allclose(e003_mse.parafac, e003_mse.average_activity)
    # the trees impute the new cell type from the same assay elsewhere: their own values
    assert not np.allclose(e003_mse.chromimpute_gbt, e003_mse.average_activity)
    # the model was retrained per fold and seed; deterministic baselines once per fold
    fits = result.seconds.groupby("method").size()
    assert fits["avocado"] == 6 and fits["parafac"] == 6 and fits["average_activity"] == 3
    # the two seeds train different models: a spread over seeds
    spread = result.seed_spread.set_index(["metric", "method"])
    assert spread.loc[("mse", "avocado"), "std"] > 0
    assert spread.loc[("mse", "average_activity"), "std"] == 0
    # paired tests across the 25 tracks against the reference
    paired = result.paired.set_index(["metric", "method"])
    row = paired.loc[("mse", "chromimpute_gbt")]
    assert row.n_tracks == 25 and row.reference_better + row.method_better + row.ties == 25
    assert 0 <= row.p_value <= 1
    assert set(result.wins().method) == set(methods[1:])
    assert len(result.extra["n_tracks"]) == 3 * 2 * len(methods)  # folds x seeds x methods
    assert set(result.ranking.index) == set(methods)
    assert result.by_assay.loc[("H3K4me3", "mse"), "n_tracks"] == 5
    # pairwise relationships of the imputations pooled over folds: every track is imputed, so
    # each method's correlations come from its own tracks and differ from the observed ones
    assert set(result.pairwise.method) == {"observed", *methods}
    imputed = result.pairwise[result.pairwise.method == "average_activity"]
    assert len(imputed) > 0 and (imputed.abs_error > 0).all()
    for name in (
        "cv_metrics.csv",
        "metrics_by_track.csv",
        "metrics_by_track.md",
        "summary.md",
        "paired.md",
        "wins.md",
        "seed_spread.md",
        "folds.csv",
        "fallbacks.csv",
        "metrics.png",
        "parameters.json",
        "n_tracks.csv",
        "pairwise.csv",
        "pairwise.md",
        "summary_by_assay.md",
        "ranking.md",
    ):
        assert (out / name).stat().st_size > 0, name
    by_track = pd.read_csv(out / "metrics_by_track.csv")
    assert len(by_track) == 25 * len(methods)
    with pytest.raises(EpitensorError, match="already exists"):
        run_cv(small_pilot_store, out, presets=(), methods=["average_activity"], verbose=False)


def test_run_cv_presets_side_by_side_and_bad_input(small_pilot_store):
    result = run_cv(
        small_pilot_store,
        k=5,
        seed=2,
        presets=("cpu-small", "paper"),
        model_params={**TINY_AVOCADO, "precision": "fp32"},
        methods=["average_activity"],
        verbose=False,
        blends=[("avocado-cpu-small", "average_activity")],
    )
    blend = "avocado-cpu-small+average_activity"
    assert list(result.summary.columns) == [
        "avocado-cpu-small",
        "avocado-paper",
        "average_activity",
        blend,
    ]
    assert result.reference == "avocado-cpu-small"
    assert result.per_track.groupby("method").size().eq(25 * len(metrics.METRICS)).all()
    # the blend scores the mean of the two imputations: its MSE lies below their mean
    # (the squared error is convex) on every track
    wide = result.per_track[result.per_track.metric == "mse"].pivot_table(
        index=["celltype", "assay"], columns="method", values="value"
    )
    pair = (wide["avocado-cpu-small"] + wide["average_activity"]) / 2
    assert (wide[blend] <= pair + 1e-9).all()
    with pytest.raises(EpitensorError, match="a blend averages"):
        run_cv(small_pilot_store, presets=(), blends=[("average_activity", "x")], verbose=False)
    tracks = small_pilot_store.track_names()
    with pytest.raises(EpitensorError, match="invalid method"):
        run_cv(small_pilot_store, presets=(), methods=["knn"], verbose=False)
    with pytest.raises(EpitensorError, match="used twice"):
        run_cv(
            small_pilot_store,
            methods={"avocado": lambda seed: AverageActivity()},
            verbose=False,
        )
    with pytest.raises(EpitensorError, match="no method"):
        run_cv(small_pilot_store, presets=(), methods=[], verbose=False)
    with pytest.raises(EpitensorError, match="each track once"):
        run_cv(small_pilot_store, presets=(), folds=[tracks[:10], tracks[9:]], verbose=False)
    with pytest.raises(EpitensorError, match="each track once"):
        run_cv(small_pilot_store, presets=(), folds=[tracks[:10], tracks[11:]], verbose=False)
    # the settings are CVOptions: an unknown keyword is named; options and keywords combine
    with pytest.raises(EpitensorError, match="got 'n_folds', expected one of"):
        run_cv(small_pilot_store, presets=(), n_folds=3, verbose=False)
    with pytest.raises(EpitensorError, match="got BenchmarkOptions, expected CVOptions"):
        run_cv(small_pilot_store, options=BenchmarkOptions())
    with pytest.raises(EpitensorError, match="got 'k', expected one of"):
        run_benchmark(small_pilot_store, preset=None, k=3, verbose=False)
    options = CVOptions(presets=(), methods=["knn"], verbose=False)
    with pytest.raises(EpitensorError, match="invalid method"):
        run_cv(small_pilot_store, options=options)
    with pytest.raises(EpitensorError, match="no method"):
        run_cv(small_pilot_store, options=options, methods=[])


def test_cli_benchmark_cv(small_pilot_store, tmp_path):
    out = tmp_path / "cv"
    runner = CliRunner()
    args = ["benchmark", small_pilot_store.url, "--out", str(out), "--cv", "3", "--seed", "1"]
    baselines_only = ["--preset", "none", "--method", "average_activity", "--method", "assay_mean"]
    result = runner.invoke(app, [*args, *baselines_only, "--training-seeds", "0,1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "| gwcorr |" in result.output
    parameters = (out / "parameters.json").read_text()
    assert '"k": 3' in parameters and '"seed": 1' in parameters
    table = pd.read_csv(out / "cv_metrics.csv")
    assert set(table.training_seed) == {0, 1} and set(table.fold) == {0, 1, 2}
    assert set(table.method) == {"average_activity", "assay_mean"}
    bad = runner.invoke(app, [*args, "--preset", "none", "--training-seeds", "x", "--overwrite"])
    assert bad.exit_code != 0 and "invalid training seed" in bad.output
    no_cv = runner.invoke(app, [args[0], args[1], "--out", str(tmp_path / "b"), "--method", "x"])
    assert no_cv.exit_code != 0 and "go with --cv" in no_cv.output
    both = runner.invoke(app, [*args, "--split", "x.tsv", "--overwrite"])
    assert both.exit_code != 0 and "exclude each other" in both.output


def _bigwig_on_layout(path, layout, axis: str) -> np.ndarray:
    """A bigWig's 25-bp values at every position of one layout axis (regions read in turn)."""
    import pybigtools

    regions = layout.axis_regions(axis).sort_values("offset")
    values = np.full(int(regions.offset.iloc[-1] + regions.n_bins.iloc[-1]), np.nan, np.float32)
    with pybigtools.open(str(path)) as reader:
        for row in regions.itertuples(index=False):
            start, n = int(row.first_bin) * 25, int(row.n_bins)
            got = reader.values(row.chrom, start, start + 25 * n, bins=n, fillna=None)
            values[int(row.offset) : int(row.offset) + n] = got
    return values


def test_evaluate_scores_the_file_impute_writes(small_pilot_store, tmp_path):
    """`evaluate`'s `epitensor` rows are the metrics of the bigWig `impute` wrote (issue 32).

    As a new user would: train, `impute` the held-out track (the default: the ensemble,
    -log10 p), `evaluate` it; then score the file itself, read back onto the store's
    positions. The model alone (`avocado`) is its own row, and scores otherwise.
    """
    from epitensor.estimators.avocado import Avocado
    from epitensor.genome.annotations import Annotations as Ann

    track = ("E003", "H3K4me3")
    model = Avocado.from_preset("cpu-small", **TINY_AVOCADO).fit(small_pilot_store, holdout=[track])
    model_dir = tmp_path / "model"
    model.save(model_dir)
    runner = CliRunner()
    imputed = runner.invoke(app, ["impute", str(model_dir), "--celltype", track[0], "--assay",
                                  track[1], "--out", str(tmp_path / "imputed"), "--quiet"])  # fmt: skip
    assert imputed.exit_code == 0, imputed.output
    out = tmp_path / "metrics.csv"
    scored = runner.invoke(app, ["evaluate", str(model_dir), small_pilot_store.url, "--tracks",
                                 "E003:H3K4me3", "--out", str(out), "--quiet"])  # fmt: skip
    assert scored.exit_code == 0, scored.output
    table = pd.read_csv(out)
    assert list(dict.fromkeys(table.method)) == [
        "epitensor", "avocado", "chromimpute_gbt", "average_activity"
    ]  # fmt: skip
    wide = table.pivot_table(index="metric", columns="method", values="value")
    values = _bigwig_on_layout(
        tmp_path / "imputed" / "E003.H3K4me3.bigWig", small_pilot_store.layout, "pilot"
    )
    assert np.isfinite(values).all()
    from epitensor.evaluation.benchmark import Scorer

    on_file = Scorer(small_pilot_store, Ann.from_directory()).score(track, np.arcsinh(values))
    for name, value in on_file.items():
        np.testing.assert_allclose(wide.loc[name, "epitensor"], value, rtol=1e-5, atol=1e-7,
                                   err_msg=name)  # fmt: skip
    # the file is the ensemble's, not the model's: evaluate names both, and they differ
    assert abs(wide.loc["gwcorr", "epitensor"] - wide.loc["gwcorr", "avocado"]) > 1e-3
    # --model-only scores the model alone as the default, as `impute --model-only` writes
    alone = runner.invoke(app, ["evaluate", str(model_dir), small_pilot_store.url, "--tracks",
                                "E003:H3K4me3", "--out", str(out), "--quiet", "--overwrite",
                                "--model-only"])  # fmt: skip
    assert alone.exit_code == 0, alone.output
    alone = pd.read_csv(out).pivot_table(index="metric", columns="method", values="value")
    assert list(alone.columns) == ["avocado", "epitensor"]
    np.testing.assert_allclose(alone.epitensor, alone.avocado)
    np.testing.assert_allclose(alone.avocado, wide.avocado, rtol=1e-6)
