"""Prediction intervals: the scores on arrays with known answers, the calibration, the files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from epitensor._utils import EpitensorError
from epitensor.estimators.intervals import (
    IntervalCalibration,
    check_levels,
    interval_path,
    level_label,
)
from epitensor.evaluation.intervals import (
    coverage,
    interval_summary,
    interval_table,
    pinball,
    reliability_table,
    width,
    winkler,
)

# ---------------------------------------------------------------- scores with known answers


def test_coverage_counts_the_bounds_as_inside():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    assert coverage(y, np.zeros(4), np.full(4, 2.0)) == 0.75  # 0, 1 and 2 (the bound itself) in


def test_width_is_the_mean_width():
    assert width(np.array([0.0, 1.0]), np.array([2.0, 5.0])) == 3.0


def test_winkler_charges_two_over_alpha_per_unit_missed():
    # level 0.8: alpha 0.2, 2 / alpha = 10; widths 1; misses by 0.5 below and 0.3 above
    y = np.array([0.5, -0.5, 1.3])
    lower, upper = np.zeros(3), np.ones(3)
    expected = np.mean([1.0, 1.0 + 10 * 0.5, 1.0 + 10 * 0.3])
    assert winkler(y, lower, upper, 0.8) == pytest.approx(expected)


def test_pinball_of_a_perfectly_narrow_interval_is_zero_and_relates_to_winkler():
    y = np.array([1.0, 2.0, 3.0])
    assert pinball(y, y, y, 0.9) == 0.0
    rng = np.random.default_rng(0)
    y = rng.normal(size=1000)
    lower, upper = y - rng.uniform(-1, 2, 1000), y + rng.uniform(-1, 2, 1000)
    # interval score = (2 / alpha) * (pinball of the lower + pinball of the upper)
    assert winkler(y, lower, upper, 0.9) == pytest.approx(
        2 / 0.1 * 2 * pinball(y, lower, upper, 0.9)
    )


def test_scores_of_nothing_are_nan_and_bad_input_is_refused():
    empty = np.array([])
    assert np.isnan(coverage(empty, empty, empty))
    assert np.isnan(winkler(empty, empty, empty, 0.9))
    with pytest.raises(EpitensorError, match="one shape"):
        coverage(np.zeros(3), np.zeros(2), np.zeros(3))
    with pytest.raises(EpitensorError, match=r"in \(0, 1\)"):
        winkler(np.zeros(3), np.zeros(3), np.ones(3), 90)


def test_gaussian_quantile_intervals_cover_their_level():
    """The central 90% interval of N(0, 1) is +-1.6449: it covers 90% of draws."""
    y = np.random.default_rng(1).normal(size=200_000)
    half = 1.6448536
    assert coverage(y, np.full(y.size, -half), np.full(y.size, half)) == pytest.approx(
        0.9, abs=0.005
    )


def test_levels_and_file_names():
    assert check_levels(None) == []
    assert check_levels((0.9, 0.8, 0.9)) == [0.8, 0.9]
    for bad in (0, 1, 90, "x", -0.1):
        with pytest.raises(EpitensorError, match="interval level"):
            check_levels(bad)
    assert level_label(0.8) == "80"
    assert level_label(0.975) == "97.5"
    assert (
        interval_path("o/E003.H3K4me3.bigWig", "upper", 0.9).name == "E003.H3K4me3.upper90.bigWig"
    )
    assert interval_path("x.bedGraph.gz", "lower", 0.5).name == "x.lower50.bedGraph.gz"
    assert interval_path("x.bw", "lower", 0.8).parent == interval_path("x.bw", "upper", 0.8).parent


# ---------------------------------------------------------------- tables


def _table():
    y = np.arange(1000, dtype=float)  # the top 1% are 990..999
    exact = {0.9: (y - 1, y + 1)}
    shift = (y >= 990) * 100.0
    shifted = {0.9: (y - 1 - shift, y + 1 - shift)}  # misses every top-1% bin
    tracks = {("A", "H3K4me3"): y, ("B", "H3K27me3"): y}
    intervals = {
        "per-bin": {("A", "H3K4me3"): exact, ("B", "H3K27me3"): shifted},
        "constant": {("A", "H3K4me3"): exact, ("B", "H3K27me3"): exact},
    }
    train = [("A", "H3K27me3"), ("B", "H3K4me3"), ("B", "H3K9me3"), ("B", "H3K36me3")]
    return interval_table(tracks, intervals, train=train)


def test_interval_table_scores_all_bins_and_the_top_percent():
    table = _table()
    row = table[
        (table.method == "per-bin") & (table.celltype == "B") & (table.metric == "coverage")
    ]
    assert row.set_index("subset").value.to_dict() == {"all": 0.99, "top1": 0.0}
    assert set(table.n_bins) == {1000, 10}
    assert table.set_index("celltype").celltype_tracks.to_dict() == {"A": 1, "B": 3}


def test_interval_summary_pools_overall_per_assay_and_few_track_cell_types():
    summary = interval_summary(_table())
    per_bin = summary[(summary.method == "per-bin") & (summary.subset == "all")].set_index("group")
    assert per_bin.coverage["all"] == pytest.approx((1.0 + 0.99) / 2)
    assert per_bin.coverage["assay:H3K27me3"] == pytest.approx(0.99)
    assert per_bin.coverage["few-tracks"] == 1.0  # only A kept <= 2 tracks
    assert per_bin.width["all"] == pytest.approx(2.0)
    top = summary[(summary.method == "per-bin") & (summary.subset == "top1")].set_index("group")
    assert top.coverage["all"] == pytest.approx(0.5)  # A's top 1% in, B's out
    reliability = reliability_table(summary)
    assert list(reliability.columns) == ["subset", "method", "level", "coverage"]
    assert len(reliability) == 4  # 2 methods x 2 subsets x 1 level


def test_interval_summary_of_an_empty_table():
    empty = interval_summary(pd.DataFrame())
    assert empty.empty and "coverage" in empty.columns


# ---------------------------------------------------------------- calibration on synthetic data


def _heteroscedastic(n: int, seed: int):
    """Errors whose spread is 0.1 + the disagreement of the two parts: a per-bin width should win."""
    rng = np.random.default_rng(seed)
    truth = rng.gamma(1.0, 1.0, n)
    disagreement = rng.gamma(1.0, 0.5, n)
    trees, average = truth + disagreement / 2, truth - disagreement / 2
    y = np.maximum(truth + rng.normal(size=n) * (0.1 + disagreement), 0.0)
    return y, truth, trees, average


def test_calibration_covers_and_beats_constant_width_on_heteroscedastic_errors():
    calibration = IntervalCalibration.fit(
        {"H3K4me3": [_heteroscedastic(50_000, s) for s in (0, 1)]}, n_groups=4
    )
    y, prediction, trees, average = _heteroscedastic(50_000, 2)
    for level in (0.8, 0.9):
        lower, upper = calibration.interval("H3K4me3", prediction, trees, average, level)
        assert np.all((lower <= prediction) & (prediction <= upper)) and np.all(lower >= 0)
        assert coverage(y, lower, upper) == pytest.approx(level, abs=0.02)
        flat = calibration.constant_interval("H3K4me3", prediction, level)
        assert coverage(y, *flat) == pytest.approx(level, abs=0.03)
        assert winkler(y, lower, upper, level) < 0.9 * winkler(y, *flat, level)
    # an assay it never saw takes the pooled calibration; the JSON form reads back the same
    again = IntervalCalibration.from_dict(calibration.to_dict())
    np.testing.assert_array_equal(
        again.interval("H3K9me3", prediction, trees, average, 0.9)[1],
        calibration.interval("H3K4me3", prediction, trees, average, 0.9)[1],
    )
    with pytest.raises(EpitensorError, match="not an interval calibration"):
        IntervalCalibration.from_dict({"format": 99})
    with pytest.raises(EpitensorError, match="no track to calibrate"):
        IntervalCalibration.fit({"H3K4me3": []})


# ---------------------------------------------------------------- real data: impute --interval

CHEAP_TREES = {"n_train_positions": 3000, "n_estimators": 10, "max_depth": 3}
TRACK = ("E065", "H3K4me1")  # held out of the model


@pytest.fixture(scope="module")
def small_model(small_pilot_store, tmp_path_factory):
    """A tiny model on the first 40,000 pilot positions, the standard split held out, saved."""
    from epitensor.estimators.avocado import Avocado
    from epitensor.evaluation.benchmark import STANDARD_SPLIT

    model = Avocado(n_celltype_factors=4, n_assay_factors=4, n_25bp_factors=4,
                    n_250bp_factors=4, n_5kbp_factors=4, n_nodes=16, n_epochs=1,
                    n_genome_epochs=1, batch_size=8192, verbose=False, seed=0)  # fmt: skip
    model.fit(small_pilot_store, holdout=STANDARD_SPLIT)
    path = tmp_path_factory.mktemp("interval-model") / "model"
    model.save(path)
    return path


def _cheap_ensemble(model_dir, store):
    from epitensor.estimators.avocado import load_model
    from epitensor.estimators.baselines import ChromImputeGBT
    from epitensor.estimators.ensemble import Ensemble

    model = load_model(model_dir)
    trees = ChromImputeGBT(seed=0, **CHEAP_TREES).fit(store, model.training_tracks_)
    return model, Ensemble(model, store, trees=trees)


def test_impute_interval_writes_bounds_beside_each_track(small_model, small_pilot_store, tmp_path):
    """lower <= imputed <= upper in every bin, 80% inside 90%; the calibration kept in the model."""
    import json

    import pybigtools

    from epitensor.estimators.intervals import CALIBRATION_FILE
    from epitensor.workflows.impute import impute

    model, ensemble = _cheap_ensemble(small_model, small_pilot_store)
    out = tmp_path / "out"
    tracks = [TRACK, ("E003", "H3K4me3")]
    paths = impute(small_model, tracks, out, trees_store=ensemble, interval=(0.9, 0.8),
                   arcsinh=True, verbose=False)  # fmt: skip
    assert (small_model / CALIBRATION_FILE).is_file()
    names = sorted(p.name for p in out.glob("*.bigWig"))
    assert names == sorted(f"{c}.{a}.{s}.bigWig".replace("..", ".") for c, a in tracks
                           for s in ("", "lower80", "upper80", "lower90", "upper90"))  # fmt: skip

    def read(path):  # one value per written bin, every chromosome in file order
        with pybigtools.open(str(path)) as reader:
            return np.asarray([r[2] for c in reader.chroms() for r in reader.records(c)])

    observed_inside = []
    for path in paths:
        values = read(path)
        low80, up80 = (
            read(path.with_name(path.name.replace(".bigWig", ".lower80.bigWig"))),
            read(path.with_name(path.name.replace(".bigWig", ".upper80.bigWig"))),
        )
        low90 = read(path.with_name(path.name.replace(".bigWig", ".lower90.bigWig")))
        up90 = read(path.with_name(path.name.replace(".bigWig", ".upper90.bigWig")))
        ok = ~np.isnan(values)
        assert ok.sum() > 1000
        assert np.all(low90[ok] <= low80[ok] + 1e-6) and np.all(low80[ok] <= values[ok] + 1e-6)
        assert np.all(values[ok] <= up80[ok] + 1e-6) and np.all(up80[ok] <= up90[ok] + 1e-6)
        assert np.all(low90[ok] >= 0) and (up90[ok] - low90[ok]).std() > 0  # per-bin widths
        observed_inside.append(np.mean(up90[ok] - low90[ok] > up80[ok] - low80[ok] - 1e-6))
    assert min(observed_inside) == 1.0
    # the same values as the Python API, and the record of the run
    mean, lower, upper = ensemble.predict_interval(*TRACK, level=0.9)
    params = json.loads((out / "impute.json").read_text())
    assert params["intervals"]["levels"] == [0.8, 0.9]
    assert params["intervals"]["calibration"]["proxy"] == "average"
    bigwig = read(out / f"{TRACK[0]}.{TRACK[1]}.upper90.bigWig")
    np.testing.assert_allclose(np.sort(bigwig[~np.isnan(bigwig)])[-100:],
                               np.sort(upper)[-100:], rtol=1e-5, atol=1e-5)  # fmt: skip
    assert np.all(lower <= mean) and np.all(mean <= upper)
    # a rerun finds every file finished and keeps them
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.bigWig")}
    impute(small_model, tracks, out, trees_store=ensemble, interval=(0.8, 0.9), arcsinh=True,
           verbose=False)  # fmt: skip
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("*.bigWig")}


def test_impute_interval_needs_the_ensemble(small_model, tmp_path):
    from epitensor.workflows.impute import impute

    with pytest.raises(EpitensorError, match="calibrated for the ensemble"):
        impute(small_model, [TRACK], tmp_path / "x", interval=0.9, verbose=False)
    with pytest.raises(EpitensorError, match="interval level"):
        impute(small_model, [TRACK], tmp_path / "y", interval=1.5, verbose=False)


def test_benchmark_scores_intervals_beside_constant_width(small_model, small_pilot_store, tmp_path):
    """run_benchmark with the interval scorer: its tables, summary and reliability diagram."""
    from epitensor.estimators.avocado import load_model
    from epitensor.estimators.baselines import AverageActivity, ChromImputeGBT
    from epitensor.estimators.ensemble import EnsembleRule
    from epitensor.evaluation.benchmark import run_benchmark
    from epitensor.evaluation.intervals import SCORER_NAME, interval_scorer

    model = load_model(small_model)
    baselines = {"chromimpute_gbt": ChromImputeGBT(seed=0, **CHEAP_TREES),
                 "average_activity": AverageActivity()}  # fmt: skip
    scorer = interval_scorer(levels=(0.8, 0.9), trees=CHEAP_TREES)
    result = run_benchmark(small_pilot_store, tmp_path / "bench", model=model,
                           baselines=baselines, scorers={SCORER_NAME: scorer},
                           ensemble=EnsembleRule(), verbose=False)  # fmt: skip
    table = result.extra[SCORER_NAME]
    assert set(table.method) == {"per-bin", "constant"} and set(table.level) == {0.8, 0.9}
    assert len(table[["celltype", "assay"]].drop_duplicates()) == len(result.holdout)
    assert scorer.calibration.info["tracks"]  # calibrated on training tracks only
    assert not set(map(tuple, scorer.calibration.info["tracks"])) & set(result.holdout)
    for name in ("intervals.csv", "intervals_summary.csv", "intervals_summary.md",
                 "reliability.png"):  # fmt: skip
        assert (tmp_path / "bench" / name).is_file()
    summary = pd.read_csv(tmp_path / "bench" / "intervals_summary.csv")
    overall = summary[(summary.group == "all") & (summary.subset == "all")]
    assert overall.coverage.between(0.5, 1.0).all()
    assert {"assay:H3K4me3", "all"} <= set(summary.group)


def test_cli_impute_refuses_bad_interval_options(small_model, tmp_path):
    from typer.testing import CliRunner

    from epitensor.cli import app

    base = ["impute", str(small_model), "--celltype", TRACK[0], "--assay", TRACK[1]]
    runner = CliRunner()
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--interval", "90"])
    assert result.exit_code != 0 and "levels in (0, 1)" in result.output
    result = runner.invoke(
        app, [*base, "--out", str(tmp_path / "b"), "--interval", "0.9", "--model-only"]
    )
    assert result.exit_code != 0 and "drop --model-only" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---------------------------------------------------------------- the commands, end to end

TINY_N = 3_000  # positions: the commands fit their trees with the defaults (one per track)
TINY_ASSAYS = ("H3K4me3", "H3K27me3")  # two assays of the five cell types: 10 real tracks
TINY_HELD = [("E003", "H3K4me3"), ("E116", "H3K27me3")]


def _pilot_head_store(path, n, tracks):
    """The first ``n`` pilot positions of ``tracks`` (real Roadmap tracks) as a store."""
    from conftest import pilot_head_layout
    from epitensor.genome.coordinates import chrom_sizes
    from epitensor.store.compendium import Store
    from epitensor.store.datasets import roadmap_pilot_arrays

    store = Store.create(path, pilot_head_layout(n), chrom_sizes("hg19"), genome="hg19")
    for (celltype, assay), values in roadmap_pilot_arrays().items():
        if (celltype, assay) in tracks:
            store.add_track(celltype, assay, {"pilot": values[:n]})
    return Store.open(path)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """Two assays of the five pilot cell types on the first 3,000 positions."""
    from epitensor.store.datasets import roadmap_pilot_arrays

    tracks = [t for t in roadmap_pilot_arrays() if t[1] in TINY_ASSAYS]
    return _pilot_head_store(tmp_path_factory.mktemp("tiny") / "tiny.zarr", TINY_N, tracks)


def test_cli_impute_interval_writes_bounds_beside_every_missing_track(tiny_store, tmp_path):
    """`impute MODEL --all-missing STORE --interval 0.9`: every track the store lacks gets its
    bounds beside it, and lower <= imputed <= upper in every bin of every track."""
    import json

    import pybigtools
    from typer.testing import CliRunner

    from epitensor.cli import app
    from epitensor.estimators.avocado import Avocado

    model = Avocado(n_celltype_factors=4, n_assay_factors=4, n_25bp_factors=4,
                    n_250bp_factors=4, n_5kbp_factors=4, n_nodes=16, n_epochs=1,
                    n_genome_epochs=1, batch_size=8192, verbose=False, seed=0)  # fmt: skip
    model.fit(tiny_store, holdout=TINY_HELD).save(tmp_path / "model")
    kept = [tuple(t) for t in model.training_tracks_]  # a store without the held-out tracks
    _pilot_head_store(tmp_path / "kept.zarr", TINY_N, kept)
    out = tmp_path / "out"
    args = ["impute", str(tmp_path / "model"), "--all-missing", str(tmp_path / "kept.zarr"),
            "--out", str(out), "--interval", "0.9", "--trees", tiny_store.url, "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = {f"{c}.{a}{s}.bigWig" for c, a in TINY_HELD for s in ("", ".lower90", ".upper90")}
    assert {p.name for p in out.glob("*.bigWig")} == expected
    assert result.output.count("wrote ") == len(expected)

    def read(path):
        with pybigtools.open(str(path)) as reader:
            return np.asarray([r[2] for c in reader.chroms() for r in reader.records(c)])

    for c, a in TINY_HELD:
        values = read(out / f"{c}.{a}.bigWig")
        lower, upper = read(out / f"{c}.{a}.lower90.bigWig"), read(out / f"{c}.{a}.upper90.bigWig")
        assert values.shape == lower.shape == upper.shape == (TINY_N,)
        assert np.all(lower <= values) and np.all(values <= upper), (c, a)
        assert np.all(lower >= np.minimum(values, 0))  # 0 at most, unless imputed below 0
        assert np.mean(upper > lower) > 0.99  # a real width in (nearly) every bin
    params = json.loads((out / "impute.json").read_text())
    assert params["intervals"]["levels"] == [0.9] and len(params["intervals"]["files"]) == 2
    assert sorted(map(tuple, params["intervals"]["calibration"]["tracks"])) == sorted(kept)


def test_cli_benchmark_intervals_writes_its_tables(tiny_store, tmp_path):
    """`benchmark STORE --intervals`: per-bin and constant-width scores per assay, coverage near nominal."""
    from typer.testing import CliRunner

    from epitensor.cli import app

    out = tmp_path / "bench"
    split = tmp_path / "split.tsv"
    split.write_text("".join(f"{c}\t{a}\n" for c, a in TINY_HELD))
    args = ["benchmark", tiny_store.url, "--out", str(out), "--split", str(split), "--intervals",
            "--epochs", "1", "--parafac-epochs", "1", "--bootstraps", "0", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("intervals.csv", "intervals_summary.csv", "intervals_summary.md",
                 "reliability.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "intervals.csv")
    assert set(zip(table.celltype, table.assay)) == set(TINY_HELD)
    assert set(table.subset) == {"all", "top1"} and set(table.method) == {"per-bin", "constant"}
    summary = pd.read_csv(out / "intervals_summary.csv")
    assert {f"assay:{a}" for a in TINY_ASSAYS} | {"all"} <= set(summary.group)
    for group, part in summary.groupby("group"):  # every level, both methods, both subsets
        assert len(part) == 2 * 2 * 6, group
    overall = summary[(summary.group == "all") & (summary.subset == "all")].set_index(
        ["method", "level"]
    )
    # a one-epoch network on 3,000 positions errs more than the calibration's stand-in (the
    # left-out average), so its intervals under-cover here; they must still widen and cover
    # more with the level, and cover most bins at 90%
    for method in ("per-bin", "constant"):
        assert (overall.coverage.loc[method].diff().dropna() > 0).all(), overall
        assert (overall.width.loc[method].diff().dropna() > 0).all(), overall
    assert 0.5 < overall.coverage[("per-bin", 0.9)] <= 1.0
    markdown = (out / "intervals_summary.md").read_text()
    assert "all all per-bin 0.9" in markdown and "assay:H3K27me3" in markdown
