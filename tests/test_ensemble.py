"""The ensemble of the model, the trees and average activity, on the real pilot data."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pybigtools
import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError
from epitensor.cli import app
from epitensor.estimators.baselines import AverageActivity, ChromImputeGBT
from epitensor.estimators.ensemble import Ensemble, EnsembleRule
from epitensor.evaluation.benchmark import run_cv
from epitensor.workflows import impute as export

TRACK = ("E065", "H3K4me1")
TINY_AVOCADO = {"n_celltype_factors": 4, "n_assay_factors": 4, "n_25bp_factors": 4,
                "n_250bp_factors": 4, "n_5kbp_factors": 4, "n_nodes": 16, "n_epochs": 1,
                "n_genome_epochs": 1, "batch_size": 8192, "verbose": False}  # fmt: skip  # held out of the trained model (the standard split)


def test_rule_combine_by_hand():
    """base = (1 - t) model + t trees; the lift closes part of the gap up to a gated average."""
    rule = EnsembleRule(trees_weight=0.25, lift=0.5, gate=0.5)
    model = np.array([[1.0, 2.0, 0.0, 4.0]])
    trees = np.array([[5.0, 2.0, 4.0, 0.0]])
    average = np.array([[4.0, 3.0, 0.5, 1.0]])
    threshold = np.array([[2.0]])  # positions 0 and 1 are at the average's peaks
    # base: 2.0, 2.0, 1.0, 3.0; gaps to the average 2.0, 1.0, -, - (below base or gate)
    np.testing.assert_allclose(
        rule.combine(model, trees, average, threshold), [[3.0, 2.5, 1.0, 3.0]]
    )
    # lift everywhere (no gate): position 2's average (0.5) is below its base, untouched
    everywhere = rule.combine(model, trees, average, -np.inf)
    np.testing.assert_allclose(everywhere, [[3.0, 2.5, 1.0, 3.0]])
    assert rule.combine(model, trees, average, threshold).dtype == np.float32
    with pytest.raises(EpitensorError, match="lift must lie in"):
        EnsembleRule(lift=1.5)


@pytest.fixture(scope="module")
def ensemble(trained_model, pilot_store):
    return Ensemble(trained_model, pilot_store)


def test_ensemble_is_the_mean_below_the_gate_and_lifted_above(ensemble, trained_model, pilot_store):
    # its own fitted parts (refitting and re-predicting the trees here cost 25 s of the
    # suite); the parts' fits are tested in test_baselines.py and test_average.py
    average = ensemble.average
    blended, tree, avg = (values[0] for values in ensemble.predict_parts([TRACK]))
    np.testing.assert_allclose(avg, average.predict(*TRACK))
    net = trained_model.predict(*TRACK)
    # the default: 0.4 model + 0.6 trees, lifted 0.7 of the way up to the average everywhere
    base = 0.4 * net + 0.6 * tree
    expected = base + 0.7 * np.maximum(avg - base, 0.0)
    np.testing.assert_allclose(blended, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ensemble.predict(*TRACK), blended)
    assert (avg > base + 0.1).mean() > 0.05  # the lift moves a real share of the positions
    # a gated rule: the plain mean below the average's 95th percentile
    rule = EnsembleRule(trees_weight=0.5, lift=0.7, gate=0.95)
    gated = Ensemble(trained_model, pilot_store, rule, trees=ensemble.trees, average=average)
    got = gated.predict(*TRACK)
    base = 0.5 * net + 0.5 * tree
    gate = avg >= np.quantile(avg, 0.95)
    assert 0.04 < gate.mean() < 0.06  # the top 5% of the average
    np.testing.assert_allclose(got[~gate], base[~gate], rtol=1e-5, atol=1e-5)
    lifted = gate & (avg > base)
    assert lifted.sum() > 1000
    np.testing.assert_allclose(
        got[lifted], base[lifted] + 0.7 * (avg - base)[lifted], rtol=1e-5, atol=1e-5
    )


def test_ensemble_needs_the_training_compendium(trained_model, small_pilot_store):
    with pytest.raises(EpitensorError, match="the model was trained on"):
        Ensemble(trained_model, small_pilot_store)


def test_impute_with_trees_writes_the_ensemble(ensemble, trained_model, pilot_store, tmp_path):
    """The bigWig holds sinh of Ensemble.predict; a file of the model alone is not resumed as one."""
    model_dir = tmp_path / "model"
    trained_model.save(model_dir)
    seg = export.track_segments(trained_model.layout_, trained_model.chrom_sizes_, ["chr11"])
    seg = seg.iloc[1]
    start_bp = int(seg.first_bin) * 25
    region = f"chr11:{start_bp}-{start_bp + 25 * 400}"
    out = tmp_path / "out"
    alone = export.impute(model_dir, [TRACK], out, regions=[region], verbose=False)[0]
    runner = CliRunner()
    args = ["impute", str(model_dir), "--celltype", TRACK[0], "--assay", TRACK[1]]
    args += ["--region", region, "--out", str(out), "--quiet", "--trees", pilot_store.url]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "not a finished file of this imputation" in result.output
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    lo = int(seg.axis_start)
    expected = np.sinh(ensemble.predict(*TRACK, start=lo, end=lo + 400))
    with pybigtools.open(str(alone)) as reader:
        values = reader.values("chr11", start_bp, start_bp + 25 * 400, bins=400, fillna=None)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    params = json.loads((out / "impute.json").read_text())
    assert params["ensemble"]["rule"] == {"trees_weight": 0.6, "lift": 0.7, "gate": 0.0}
    # rerunning the same ensemble imputation keeps the finished file
    before = alone.stat().st_mtime_ns
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and alone.stat().st_mtime_ns == before
    # an Ensemble given ready (its fitted trees kept) is the same file: the rerun keeps it
    export.impute(model_dir, [TRACK], out, regions=[region], verbose=False, trees_store=ensemble)
    assert alone.stat().st_mtime_ns == before
    with pytest.raises(EpitensorError, match="other training tracks"):
        other = Ensemble(trained_model, pilot_store)
        other.model = copy.copy(trained_model)
        other.model.training_tracks_ = trained_model.training_tracks_[1:]
        export.impute(model_dir, [TRACK], tmp_path / "x", verbose=False, trees_store=other)
    with pytest.raises(EpitensorError, match="this process only"):
        export.impute(model_dir, [TRACK], tmp_path / "ray", trees_store=pilot_store.url,
                      ray_address="local", verbose=False)  # fmt: skip


def test_impute_writes_the_ensemble_by_default(ensemble, trained_model, pilot_store, tmp_path):
    """The model records its compendium; `impute` uses it unless told not to or it is gone."""
    model_dir = tmp_path / "model"
    trained_model.save(model_dir)
    loaded = export.load_model(model_dir)
    assert loaded.training_store_ == trained_model.training_store_ == pilot_store.url
    seg = export.track_segments(trained_model.layout_, trained_model.chrom_sizes_, ["chr11"])
    seg = seg.iloc[1]
    start_bp, lo = int(seg.first_bin) * 25, int(seg.axis_start)
    region = f"chr11:{start_bp}-{start_bp + 25 * 200}"
    base = ["impute", str(model_dir), "--celltype", TRACK[0], "--assay", TRACK[1]]
    base += ["--region", region, "--arcsinh"]
    runner = CliRunner()

    def written(out, *extra):
        result = runner.invoke(app, [*base, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        with pybigtools.open(str(out / "E065.H3K4me1.bigWig")) as reader:
            values = reader.values("chr11", start_bp, start_bp + 25 * 200, bins=200, fillna=None)
        return values, json.loads((out / "impute.json").read_text()), result.output

    values, params, _ = written(tmp_path / "auto", "--quiet")
    expected = ensemble.predict(*TRACK, start=lo, end=lo + 200)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    assert params["ensemble"]["store"] == pilot_store.url
    values, params, _ = written(tmp_path / "alone", "--model-only", "--quiet")
    alone = trained_model.predict(*TRACK, start=lo, end=lo + 200)
    np.testing.assert_allclose(values, alone, rtol=1e-5, atol=1e-5)
    assert params["ensemble"] is None and np.abs(values - expected).max() > 0.05
    # a compendium that is gone: the model alone, and the reason on stderr
    config = json.loads((model_dir / "config.json").read_text())
    config["training_store_"] = str(tmp_path / "moved.zarr")
    (model_dir / "config.json").write_text(json.dumps(config))
    values, params, output = written(tmp_path / "gone")
    assert params["ensemble"] is None and "writing the model alone" in output
    np.testing.assert_allclose(values, alone, rtol=1e-5, atol=1e-5)
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "x"), "--model-only",
                                 "--trees", pilot_store.url])  # fmt: skip
    assert result.exit_code != 0 and "drop --trees or --model-only" in result.output


def test_run_cv_scores_the_ensemble_of_its_own_fits(small_pilot_store):
    """The ensemble method is the rule applied to the fold's model, trees and average."""
    rule = EnsembleRule(trees_weight=0.4, lift=0.6, gate=0.9)
    seen = {}

    def keep(store, predictions, holdout, train):
        seen.update({(m, t): v for m, by_track in predictions.items() for t, v in by_track.items()})
        return pd.DataFrame()

    methods = {
        "average_activity": lambda seed: AverageActivity(),
        "chromimpute_gbt": lambda seed: ChromImputeGBT(
            n_train_positions=3000, n_estimators=10, n_threads=1, seed=seed
        ),
    }
    result = run_cv(small_pilot_store, k=3, seed=1, presets=("cpu-small",),
                    model_params=TINY_AVOCADO, methods=methods, ensemble=rule, verbose=False,
                    scorers={"keep": keep})  # fmt: skip
    assert "ensemble" in result.summary.columns
    for track in small_pilot_store.track_names():
        avg = seen[("average_activity", track)]
        threshold = np.quantile(avg, 0.9)
        expected = rule.combine(
            seen[("avocado", track)], seen[("chromimpute_gbt", track)], avg, threshold
        )
        np.testing.assert_allclose(seen[("ensemble", track)], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(EpitensorError, match="chromimpute_gbt"):
        run_cv(small_pilot_store, presets=("cpu-small",), methods=["average_activity"],
               ensemble=rule, verbose=False)  # fmt: skip


def test_the_default_is_scored_only_where_its_parts_run(small_pilot_store, tmp_path):
    """ "auto" (the default) scores the ensemble when the run has its parts, else leaves it out."""
    result = run_cv(small_pilot_store, k=2, presets=(), methods=["average_activity"],
                    verbose=False, bootstraps=0)  # fmt: skip
    assert list(result.summary.columns) == ["average_activity"] and result.ranking is None
    with pytest.raises(EpitensorError, match="invalid ensemble"):
        run_cv(small_pilot_store, k=2, presets=(), methods=["average_activity"],
               ensemble="always", verbose=False)  # fmt: skip
    runner = CliRunner()
    args = ["benchmark", small_pilot_store.url, "--out", str(tmp_path / "b"), "--cv", "2"]
    args += ["--preset", "none", "--method", "average_activity", "--model-only", "--quiet"]
    result = runner.invoke(app, [*args, "--bootstraps", "2"])
    assert result.exit_code == 0, result.output
    assert "Ranked by the ENCODE Imputation Challenge" in result.output
    params = json.loads((tmp_path / "b" / "parameters.json").read_text())
    assert params["ensemble"] is None and params["bootstraps"] == 2


def test_run_benchmark_scores_the_ensemble(small_pilot_store):
    from epitensor.evaluation.benchmark import run_benchmark

    rule = EnsembleRule()
    baselines = {
        "average_activity": AverageActivity(),
        "chromimpute_gbt": ChromImputeGBT(n_train_positions=3000, n_estimators=10, n_threads=1),
    }
    result = run_benchmark(small_pilot_store, None, model_params=TINY_AVOCADO,
                           baselines=baselines, ensemble=rule, verbose=False)  # fmt: skip
    # the default rule: the default imputation, named once and first
    assert list(result.summary.columns) == ["epitensor", "avocado", "average_activity",
                                            "chromimpute_gbt"]  # fmt: skip
    p = result.predictions
    for track in result.holdout:
        avg = p["average_activity"][track]
        expected = rule.combine(
            p["avocado"][track], p["chromimpute_gbt"][track], avg, np.quantile(avg, rule.gate)
        )
        np.testing.assert_allclose(p["epitensor"][track], expected, rtol=1e-5, atol=1e-5)
    # combined from the parts' imputations: the same as the ensemble predicting the track
    ensemble = Ensemble(result.model, small_pilot_store, rule,
                        trees=result.baselines["chromimpute_gbt"],
                        average=result.baselines["average_activity"])  # fmt: skip
    track = result.holdout[0]
    np.testing.assert_allclose(
        p["epitensor"][track], ensemble.predict(*track), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(EpitensorError, match="missing"):
        run_benchmark(small_pilot_store, None, preset=None, baselines=baselines, ensemble=rule,
                      verbose=False)  # fmt: skip


def test_paper_workflow_imputes_the_ensemble(by_chrom_store, tmp_path):
    """Stage 1 on the pilot regions of a by-chromosome store, then stage 2 per chromosome.

    Both the stage-1 model (read through the regions it trained on) and the
    stage-2 model (on the chromosome axes) impute the ensemble by default; a
    model whose other positions still lie on the stage-1 regions falls back to
    the model alone there and takes the ensemble on the chromosomes fitted.
    """
    from epitensor.estimators.avocado import Avocado
    from epitensor.estimators.ensemble import training_compendium
    from epitensor.store.compendium import RegionView

    with pytest.warns(UserWarning, match="lie on chromosomes"):
        model = Avocado(**TINY_AVOCADO, n_threads=1).fit(by_chrom_store, regions="pilot")
    assert model.training_store_ == by_chrom_store.url
    view = training_compendium(model, model.training_store_)
    assert isinstance(view, RegionView) and dict(view.layout.axis_lengths) == dict(
        model.layout_.axis_lengths
    )

    def imputed(predictor, chrom, out):
        seg = export.track_segments(predictor.layout_, predictor.chrom_sizes_, [chrom]).iloc[0]
        start = int(seg.first_bin) * 25
        region = f"{chrom}:{start}-{start + 25 * 300}"
        export.impute(predictor, [TRACK], out, regions=[region], arcsinh=True,
                      trees_store="auto", verbose=False, n_threads=1)  # fmt: skip
        with pybigtools.open(str(out / "E065.H3K4me1.bigWig")) as reader:
            values = reader.values(chrom, start, start + 25 * 300, bins=300, fillna=None)
        params = json.loads((out / "impute.json").read_text())
        return values, params, str(seg.axis), int(seg.axis_start)

    values, params, axis, lo = imputed(model, "chr4", tmp_path / "stage1")
    assert params["ensemble"] is not None and axis == "pilot"
    expected = Ensemble(model, view).predict(*TRACK, axis, lo, lo + 300)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected - model.predict(*TRACK, axis, lo, lo + 300)).max() > 0.05

    partly = copy.deepcopy(model).fit_genome(by_chrom_store, axes=["chr1"])
    assert partly.training_store_ == by_chrom_store.url
    with pytest.raises(EpitensorError, match="--chroms"):  # chr4 and chr8 are still regions
        training_compendium(partly, by_chrom_store)
    values, params, axis, lo = imputed(partly, "chr1", tmp_path / "stage2")
    assert params["ensemble"] is not None and axis == "chr1"
    expected = Ensemble(partly, by_chrom_store, axes=["chr1"]).predict(*TRACK, "chr1", lo, lo + 300)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    _, params, axis, _ = imputed(partly, "chr8", tmp_path / "regions-left")
    assert params["ensemble"] is None and axis == "pilot"  # the model alone, as the note says

    # every chromosome fitted: a gated ensemble over three axes, from its parts as a benchmark does
    from epitensor.evaluation.benchmark import predict_track

    full = copy.deepcopy(model).fit_genome(by_chrom_store)
    gated = Ensemble(full, by_chrom_store, EnsembleRule(gate=0.9))
    parts = [predict_track(p, by_chrom_store, *TRACK) for p in (full, gated.trees, gated.average)]
    combined = gated.combine_imputations(TRACK, *parts)
    np.testing.assert_allclose(combined, predict_track(gated, by_chrom_store, *TRACK), rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    assert combined.shape == (by_chrom_store.layout.n_positions,)


def test_extended_model_imputes_the_ensemble_from_both_stores(trained_model, pilot_store, tmp_path):
    """A cell type added from a store of its own: the ensemble reads both stores as one."""
    from epitensor.store.compendium import Store, TrackUnion
    from epitensor.store.datasets import roadmap_pilot_arrays
    from epitensor.workflows.extend import extend

    new = Store.create(tmp_path / "new.zarr", pilot_store.layout, pilot_store.chrom_sizes,
                       genome=pilot_store.genome)  # fmt: skip
    new.add_track("E065x", "H3K4me3", {"pilot": roadmap_pilot_arrays()[("E065", "H3K4me3")]})
    trained_model.save(tmp_path / "model")
    model = extend(tmp_path / "model", new.url, tmp_path / "extended", celltypes=["E065x"],
                   n_epochs=1, verbose=False)  # fmt: skip
    assert model.training_store_ == [pilot_store.url, new.url]
    assert export.load_model(tmp_path / "extended").training_store_ == model.training_store_
    track = ("E065x", "H3K27me3")  # never observed: the trees learn it from H3K4me3
    seg = export.track_segments(model.layout_, model.chrom_sizes_, ["chr11"]).iloc[1]
    start_bp, lo = int(seg.first_bin) * 25, int(seg.axis_start)
    out = tmp_path / "imputed"
    export.impute(tmp_path / "extended", [track], out, regions=[f"chr11:{start_bp}-{start_bp + 5000}"],
                  arcsinh=True, trees_store="auto", verbose=False, n_threads=1)  # fmt: skip
    params = json.loads((out / "impute.json").read_text())
    assert params["ensemble"]["store"] == f"{pilot_store.url} + {new.url}"
    with pybigtools.open(str(out / "E065x.H3K27me3.bigWig")) as reader:
        values = reader.values("chr11", start_bp, start_bp + 5000, bins=200, fillna=None)
    union = TrackUnion([pilot_store, new])
    expected = Ensemble(model, union).predict(*track, start=lo, end=lo + 200)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected - model.predict(*track, start=lo, end=lo + 200)).max() > 0.05
