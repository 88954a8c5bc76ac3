"""The held-out-track protocol: splits, evaluate, the benchmark files, the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from epitensor import metrics
from epitensor._utils import EpitensorError
from epitensor.annotations import Annotations
from epitensor.baselines import AssayMean, AverageActivity, GlobalMean, TensorFactorization
from epitensor.benchmark import (
    STANDARD_SPLIT,
    best_methods,
    evaluate,
    markdown_table,
    read_split,
    resolve_split,
    run_benchmark,
    stratified_evaluation,
    summarise,
)
from epitensor.cli import app


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
    assert list(table.metric.iloc[:13]) == list(metrics.METRICS)
    observed = small_pilot_store.read_track("E003", "H3K4me3")
    layout = small_pilot_store.layout
    expected = metrics.score(
        observed,
        baseline.predict("E003", "H3K4me3"),
        mask=annotations.keep(layout, "pilot"),
        regions=annotations.regions(layout, "pilot"),
    )
    got = table[(table.celltype == "E003")].set_index("metric").value
    for name in metrics.METRICS:
        assert got[name] == pytest.approx(expected[name], nan_ok=True), name
    # promoters lie in the first 40,000 pilot positions, so the region metrics are numbers
    assert np.isfinite(got["mseprom"]) and np.isfinite(got["msegene"])
    # msevar: weighted by the variance over the other four cell types
    assert np.isfinite(got["msevar"])
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


def test_summaries_and_markdown():
    table = pd.DataFrame(
        [
            ("c", "a", "m1", "mse", 1.0),
            ("c", "a", "m2", "mse", 0.5),
            ("c", "a", "m1", "pearson", 0.9),
            ("c", "a", "m2", "pearson", 0.1),
            ("d", "a", "m1", "pearson", 0.7),
            ("d", "a", "m2", "pearson", np.nan),
        ],
        columns=["celltype", "assay", "method", "metric", "value"],
    )
    summary = summarise(table)
    assert list(summary.index) == ["mse", "pearson"] and list(summary.columns) == ["m1", "m2"]
    assert summary.loc["pearson", "m1"] == pytest.approx(0.8)
    best = best_methods(summary)
    assert best["mse"] == "m2" and best["pearson"] == "m1"
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


def test_run_benchmark_writes_everything(small_pilot_store, tmp_path):
    baselines = {
        "global_mean": GlobalMean(),
        "assay_mean": AssayMean(),
        "average_activity": AverageActivity(),
        "parafac": TensorFactorization(n_factors=4, n_epochs=1, batch_size=8192, verbose=False),
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
    )
    methods = ["avocado", "global_mean", "assay_mean", "average_activity", "parafac"]
    assert list(result.summary.columns) == methods
    assert len(result.table) == 5 * 5 * 14  # tracks x methods x (13 metrics + msevar)
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
    ):
        assert (out / name).stat().st_size > 0, name
    # the pairwise relationships of the held-out tracks, every method beside the observed
    assert set(result.pairwise.method) == {"observed", *methods}
    assert "Not scored: H3K36me3 gene body ~ RNA-seq" in (out / "pairwise.md").read_text()
    written = pd.read_csv(out / "metrics.csv")
    assert list(written.columns) == ["celltype", "assay", "method", "metric", "value"]
    assert "| mse |" in (out / "summary.md").read_text()
    assert set(result.stratified.method) == set(methods)
    with pytest.raises(EpitensorError, match="already exists"):
        run_benchmark(small_pilot_store, out, preset=None, baselines=baselines, verbose=False)
    # fitted baselines are reused, not refitted; no model with preset None
    again = run_benchmark(small_pilot_store, None, preset=None, baselines=baselines, verbose=False)
    assert again.seconds == {} and list(again.summary.columns) == methods[1:]


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
    assert set(table.method) == {"avocado"} and len(table) >= 13
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
