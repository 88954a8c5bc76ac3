"""Baselines: hand-checked means on the real pilot data, PARAFAC on a small exact tensor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from epitensor._utils import EpitensorError
from epitensor.estimators.baselines import (
    BASELINES,
    AssayMean,
    AverageActivity,
    ChromImputeGBT,
    GlobalMean,
    ParafacModule,
    TensorFactorization,
    all_baselines,
)
from epitensor.evaluation import metrics
from epitensor.evaluation.benchmark import STANDARD_SPLIT, resolve_split
from epitensor.genome.coordinates import Layout, chrom_sizes
from epitensor.store.compendium import Store


@pytest.fixture(scope="module")
def pilot_split(pilot_store):
    holdout, train = resolve_split("standard", pilot_store)
    block = pilot_store.read_block("pilot")
    names = pilot_store.track_names()
    data = {t: block[names.index(t)] for t in names}
    return holdout, train, data


def test_global_and_assay_means_by_hand(pilot_store, pilot_split):
    holdout, train, data = pilot_split
    glob = GlobalMean().fit(pilot_store, train)
    assert glob.mean_ == pytest.approx(np.mean([data[t].astype(np.float64).mean() for t in train]))
    prediction = glob.predict("E003", "H3K4me3")
    assert prediction.shape == (pilot_store.axis_length("pilot"),)
    assert prediction.dtype == np.float32
    # the reference point in tests/data/README.md: held-out MSE 0.215
    mses = [metrics.mse(data[t], glob.predict(*t)) for t in holdout]
    assert np.mean(mses) == pytest.approx(0.215, abs=0.002)
    per_assay = AssayMean().fit(pilot_store, train)
    k4 = [data[t].astype(np.float64).mean() for t in train if t[1] == "H3K4me3"]
    assert per_assay.means_["H3K4me3"] == pytest.approx(np.mean(k4))
    assert per_assay.predict("E003", "H3K4me3", start=10, end=20) == pytest.approx(
        np.full(10, np.mean(k4)), rel=1e-6
    )


def test_average_activity_is_the_mean_over_the_other_celltypes(pilot_store, pilot_split):
    holdout, train, data = pilot_split
    model = AverageActivity().fit(pilot_store, train)
    others = [data[(c, "H3K4me3")] for c in ("E017", "E065", "E116", "E117")]
    np.testing.assert_allclose(
        model.predict("E003", "H3K4me3"), np.mean(others, axis=0), rtol=1e-5, atol=1e-6
    )
    assert model.celltypes_["H3K4me3"] == ["E017", "E065", "E116", "E117"]
    # the reference point in tests/data/README.md: MSE 0.167, Pearson 0.458
    mses = [metrics.mse(data[t], model.predict(*t)) for t in holdout]
    pearsons = [metrics.pearson(data[t], model.predict(*t)) for t in holdout]
    assert np.mean(mses) == pytest.approx(0.167, abs=0.002)
    assert np.mean(pearsons) == pytest.approx(0.458, abs=0.003)
    np.testing.assert_array_equal(
        model.predict_tracks(holdout[:2], start=5, end=9),
        np.stack([model.predict(*t, start=5, end=9) for t in holdout[:2]]),
    )


def test_baseline_errors(pilot_store, pilot_split):
    _, train, _ = pilot_split
    with pytest.raises(EpitensorError, match="not fitted"):
        GlobalMean().predict("E003", "H3K4me3")
    with pytest.raises(EpitensorError, match="no training tracks"):
        AverageActivity().fit(pilot_store, [])
    with pytest.raises(EpitensorError, match="not in store"):
        GlobalMean().fit(pilot_store, [("E999", "H3K4me3")])
    only_k4 = [t for t in train if t[1] == "H3K4me3"]
    fitted = AverageActivity().fit(pilot_store, only_k4)
    with pytest.raises(EpitensorError, match="invalid range"):
        fitted.predict("E003", "H3K4me3", start=10, end=5)
    with pytest.raises(EpitensorError, match="unknown axis"):
        fitted.predict("E003", "H3K4me3", axis="chr1")
    for bad in ({"n_train_positions": 0}, {"max_depth": 1.5}):
        with pytest.raises(EpitensorError, match="must be a positive integer"):
            ChromImputeGBT(**bad).fit(pilot_store, train)
    assert (
        set(all_baselines(verbose=False))
        == set(BASELINES)
        == {
            "global_mean",
            "assay_mean",
            "average_activity",
            "parafac",
            "chromimpute_gbt",
        }
    )


def test_an_assay_with_no_training_track_gets_the_global_mean(pilot_store, pilot_split):
    """A fold can take every track of an assay: the means fall back to the global mean."""
    _, train, data = pilot_split
    only_k4 = [t for t in train if t[1] == "H3K4me3"]
    overall = np.mean([data[t].astype(np.float64).mean() for t in only_k4])
    for baseline in (AverageActivity(), AssayMean()):
        fitted = baseline.fit(pilot_store, only_k4)
        assert fitted.mean_ == pytest.approx(overall)
        np.testing.assert_allclose(fitted.predict("E003", "H3K27me3", end=10), overall, rtol=1e-6)
    gbt = ChromImputeGBT(n_train_positions=2000, n_estimators=5, n_threads=1)
    gbt.fit(pilot_store, only_k4)
    np.testing.assert_allclose(gbt.predict("E003", "H3K27me3", end=10), overall, rtol=1e-6)
    assert gbt.models_[("E003", "H3K27me3")] is None


def test_chromimpute_gbt_features_and_training(pilot_store, pilot_split):
    """Features by hand on a few positions; trained only on other cell types; beats the mean."""
    holdout, train, data = pilot_split
    gbt = ChromImputeGBT(n_train_positions=20_000, n_estimators=40, n_threads=1, seed=0)
    gbt.fit(pilot_store, train)
    target = ("E116", "H3K27me3")
    donors = gbt._donors(*target)
    assert donors == ["E003", "E017", "E065", "E117"]
    assays = gbt._feature_assays(*target)
    assert assays == ["H3K4me3", "H3K36me3", "H3K9me3", "H3K4me1"]
    # features of the target cell type: same-assay mean / max / min over the donors,
    # then the target's other assays; at the position, +-1, +-2, then window means
    base = gbt._base("pilot", "E116", "H3K27me3", donors, assays)
    same = np.stack([data[(c, "H3K27me3")] for c in donors])
    np.testing.assert_allclose(base[0], same.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(base[2], same.min(0))
    np.testing.assert_array_equal(base[3], data[("E116", "H3K4me3")])
    positions = np.array([0, 100, len(base[0]) - 1])
    features = gbt._expand(base, positions)
    assert features.shape == (3, 7 * len(base))
    n_base = len(base)
    k4 = data[("E116", "H3K4me3")].astype(np.float64)
    assert features[1, 3] == pytest.approx(k4[100])
    assert features[1, n_base + 3] == pytest.approx(k4[99])  # offset -1
    assert features[1, 4 * n_base + 3] == pytest.approx(k4[102])  # offset +2
    assert features[1, 5 * n_base + 3] == pytest.approx(k4[95:106].mean(), rel=1e-5)
    assert features[0, 6 * n_base + 3] == pytest.approx(k4[0:21].mean(), rel=1e-5)  # clipped
    assert features[2, 2 * n_base + 3] == pytest.approx(k4[-1])  # +1 clipped at the end
    # a donor lacking an assay of the target (E116 H3K27me3 is held out) gives NaN features
    assert np.isnan(gbt._base("pilot", "E116", "H3K4me3", ["E017"], ["H3K27me3"])[3]).all()
    prediction = gbt.predict(*target)
    assert (
        prediction.shape == (pilot_store.axis_length("pilot"),) and prediction.dtype == np.float32
    )
    booster, used_donors, _ = gbt.models_[target]
    assert target not in [(c, "H3K27me3") for c in used_donors]
    assert metrics.mse(data[target], prediction) < metrics.mse(
        data[target], AverageActivity().fit(pilot_store, train).predict(*target)
    )
    # same seed, same model; the stored model is reused
    assert gbt.predict(*target, start=5, end=9) == pytest.approx(prediction[5:9])
    again = ChromImputeGBT(n_train_positions=20_000, n_estimators=40, n_threads=1, seed=0)
    np.testing.assert_allclose(
        again.fit(pilot_store, train).predict(*target, end=1000), prediction[:1000], rtol=1e-5
    )
    # a new cell type (no training track) uses the same-assay features alone
    no_e116 = [t for t in train if t[0] != "E116"]
    alone = ChromImputeGBT(n_train_positions=5000, n_estimators=10, n_threads=1)
    alone.fit(pilot_store, no_e116)
    assert alone._feature_assays(*target) == []
    assert np.isfinite(alone.predict(*target, end=1000)).all()


def test_chromimpute_gbt_prediction_by_slices_equals_the_gathered_features(
    pilot_store, pilot_split
):
    """The prediction path (features by slices, the compiled in-place predictor) gives the
    values of the per-position gathers and a DMatrix, at the axis ends and in between."""
    import xgboost

    _, train, _ = pilot_split
    gbt = ChromImputeGBT(n_train_positions=3000, n_estimators=10, n_threads=1, seed=0)
    gbt.fit(pilot_store, train)
    target = ("E116", "H3K27me3")
    booster, donors, assays = gbt._model(*target)
    base = gbt._base("pilot", *target, donors, assays)
    cumulative = gbt._cumulative(base)
    n = base.shape[1]
    for lo, hi in ((0, 3), (0, 5000), (777, 1500), (n - 4000, n), (n - 1, n)):
        gathered = gbt._expand(base, np.arange(lo, hi), cumulative)
        sliced = gbt._expand_range(base, lo, hi, cumulative)
        assert sliced.flags.c_contiguous and sliced.dtype == np.float32
        np.testing.assert_array_equal(sliced, gathered)
    before = np.concatenate(
        [booster.predict(xgboost.DMatrix(gbt._expand(base, np.arange(lo, min(lo + 400_000, n)),
                                                      cumulative)))
         for lo in range(0, n, 400_000)]
    )  # fmt: skip
    now = gbt.predict(*target)
    np.testing.assert_allclose(now, before, rtol=1e-6, atol=1e-6)
    assert np.abs(now - before).max() <= 1e-6 and now.std() > 0


def test_chromimpute_gbt_holds_one_axis_at_a_time(by_chrom_store):
    """On a store of three chromosome axes the trees read one axis of signal at a time,
    and the predictions do not depend on the order the axes are visited in."""
    train = [t for t in by_chrom_store.track_names() if t != ("E065", "H3K4me1")]
    target = ("E065", "H3K4me1")

    def fitted():
        return ChromImputeGBT(n_train_positions=3000, n_estimators=10, n_threads=1, seed=1).fit(
            by_chrom_store, train
        )

    forward, backward = fitted(), fitted()
    first = {axis: forward.predict(*target, axis) for axis in ["chr1", "chr4", "chr8"]}
    held_axis, held = forward._held
    assert held_axis == "chr8" and held.shape == (24, by_chrom_store.axis_length("chr8"))
    np.testing.assert_array_equal(held, by_chrom_store.read_block("chr8", tracks=[
        by_chrom_store.track_index(c, a) for c, a in train]))  # fmt: skip
    for axis in ["chr8", "chr1", "chr4"]:
        np.testing.assert_array_equal(backward.predict(*target, axis), first[axis])
    assert backward._held[0] == "chr4"


def test_average_activity_low_memory_holds_one_axis(by_chrom_store):
    """low_memory=True gives the same means, holding only the axis last asked for."""
    train = [t for t in by_chrom_store.track_names() if t[0] != "E065"]
    full = AverageActivity().fit(by_chrom_store, train)
    lean = AverageActivity(low_memory=True).fit(by_chrom_store, train)
    assert list(lean.activity_) == [by_chrom_store.axes[-1]]  # the last axis fit read
    assert lean.mean_ == pytest.approx(full.mean_)
    for axis in ["chr8", "chr1", "chr4"]:
        for assay in ["H3K4me3", "H3K27me3"]:
            np.testing.assert_array_equal(
                lean.predict("E065", assay, axis), full.predict("E065", assay, axis)
            )
        assert list(lean.activity_) == [axis]
    assert set(full.activity_) == set(by_chrom_store.axes)


def test_parafac_module_by_hand():
    torch.manual_seed(0)
    module = ParafacModule(3, 2, {"a": 50, "b": 7}, n_factors=4)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    c, a, p = torch.tensor([0, 2, 1]), torch.tensor([1, 0, 1]), torch.tensor([3, 49, 0])
    expected = (
        (module.celltype_factors.weight[c] * module.assay_factors.weight[a])
        * module.genome["a"].factors.weight[p]
    ).sum(1)
    expected += (
        module.celltype_bias.weight[c, 0]
        + module.assay_bias.weight[a, 0]
        + module.genome["a"].bias.weight[p, 0]
        + module.bias
    )
    torch.testing.assert_close(module(c, a, p, "a"), expected)
    grid = module.forward_tracks(c, a, torch.arange(7), "b")
    assert grid.shape == (3, 7)
    for i in range(3):
        torch.testing.assert_close(
            grid[i], module(c[[i] * 7], a[[i] * 7], torch.arange(7), "b"), rtol=1e-5, atol=1e-5
        )


@pytest.fixture(scope="module")
def low_rank_store(tmp_path_factory):
    """A 3 x 3 store on 1,000 positions holding an exact rank-2 PARAFAC tensor plus biases."""
    rng = np.random.default_rng(1)
    n = 1000
    layout = Layout.from_bed(
        pd.DataFrame({"chrom": ["chr1"], "start": [1_000_000], "end": [1_000_000 + 25 * n]}),
        name="toy",
    )
    store = Store.create(
        tmp_path_factory.mktemp("toy") / "toy.zarr", layout, chrom_sizes("hg19"), genome="hg19"
    )
    celltypes, assays = ["c0", "c1", "c2"], ["a0", "a1", "a2"]
    ct, asy, genome = rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), rng.normal(size=(n, 2))
    for i, c in enumerate(celltypes):
        for j, a in enumerate(assays):
            values = 1.0 + 0.3 * j + genome @ (ct[i] * asy[j])
            store.add_track(c, a, {"toy": values.astype(np.float32)})
    return store


def test_parafac_learns_a_low_rank_tensor(low_rank_store):
    holdout, train = resolve_split([("c0", "a0"), ("c1", "a2")], low_rank_store)
    observed = {t: low_rank_store.read_track(*t) for t in holdout}
    average = AverageActivity().fit(low_rank_store, train)
    mse_average = np.mean([metrics.mse(observed[t], average.predict(*t)) for t in holdout])
    # the least-squares start alone recovers the held-out tracks of an exact rank-2 tensor
    als = TensorFactorization(n_factors=2, n_epochs=0, als_ridge=1e-6, verbose=False)
    als.fit(low_rank_store, train)
    mse_als = np.mean([metrics.mse(observed[t], als.predict(*t)) for t in holdout])
    assert mse_als < 0.05 * mse_average
    # from a random start, the model's loop lowers the training error
    sgd = TensorFactorization(
        n_factors=4,
        n_epochs=15,
        batch_size=100,
        lr=0.05,
        genome_lr=0.05,
        als_iterations=0,
        verbose=False,
    ).fit(low_rank_store, train)
    assert sgd.history_.train_mse.iloc[-1] < 0.6 * sgd.history_.train_mse.iloc[0]
    mse_sgd = np.mean([metrics.mse(observed[t], sgd.predict(*t)) for t in holdout])
    assert mse_sgd < mse_average
    with pytest.raises(EpitensorError, match="no training track"):
        sgd.predict("c9", "a0")
    with pytest.raises(EpitensorError, match="positive integer"):
        TensorFactorization(n_factors=0).fit(low_rank_store, train)


def test_standard_split_is_the_designed_one():
    celltypes = ["E003", "E017", "E065", "E116", "E117"]
    assays = ["H3K4me3", "H3K27me3", "H3K36me3", "H3K9me3", "H3K4me1"]
    assert STANDARD_SPLIT == [(celltypes[i], assays[(2 * i) % 5]) for i in range(5)]
