"""The model's average-activity options: the maths, training, inference, save/load, extend."""

from __future__ import annotations

import numpy as np
import pybigtools
import pytest
import torch

from epitensor.estimators.avocado import Avocado
from epitensor.estimators.baselines import AverageActivity
from epitensor.nn.average import combine, leave_one_out, track_sums
from epitensor.train.sampling import AxisSource, EpochSampler, TrackSet
from epitensor.workflows import impute as export

TINY = dict(
    n_celltype_factors=8, n_assay_factors=16, n_25bp_factors=8, n_250bp_factors=8,
    n_5kbp_factors=8, n_layers=2, n_nodes=32, n_epochs=1, n_genome_epochs=1,
    batch_size=8192, lr=0.003, seed=0, verbose=False,
)  # fmt: skip
HELD = ("E003", "H3K4me3")


def _tiny(average: str, **kw) -> Avocado:
    return Avocado(**{**TINY, "average": average, **kw})


# maths on small arrays ----------------------------------------------------------------------


def test_track_sums_and_leave_one_out_by_hand():
    """Three tracks of assay 0 and one of assay 1: sums, counts, leave-one-out averages."""
    values = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0], [7.0, 8.0]], dtype=np.float32)
    assays = np.array([0, 0, 0, 1])
    sums, counts = track_sums(values, assays, 3)
    np.testing.assert_array_equal(sums, [[9, 15], [7, 8], [0, 0]])
    np.testing.assert_array_equal(counts, [3, 1, 0])
    # track 0 at position 1: the others of assay 0 are 4 and 9; track 3 is alone in assay 1
    loo = leave_one_out(sums[[0, 0, 1], [1, 0, 0]], counts[[0, 0, 1]], np.array([2.0, 5.0, 7.0]))
    np.testing.assert_allclose(loo, [6.5, 2.0, 0.0])


def test_combine_blend_and_residual():
    net, avg = torch.tensor([1.0, 3.0]), torch.tensor([2.0, -1.0])
    torch.testing.assert_close(combine(net, avg, "blend", 0.25), torch.tensor([1.75, 0.0]))
    torch.testing.assert_close(combine(net, avg, "residual", 0.25), torch.tensor([3.0, 2.0]))
    assert combine(net, avg, "none", 0.5) is net


def test_invalid_average_settings_are_refused():
    from epitensor._utils import EpitensorError

    with pytest.raises(EpitensorError, match="invalid average"):
        Avocado(average="mean").hyperparameters().check()
    with pytest.raises(EpitensorError, match="average_weight"):
        Avocado(average="blend", average_weight=1.5).hyperparameters().check()


# training data ------------------------------------------------------------------------------


def test_sampler_leave_one_out_baseline_is_the_other_celltypes_mean(small_pilot_store):
    """Each sample's baseline is its assay's mean over the other training cell types, from the store."""
    store = small_pilot_store
    names = [t for t in store.track_names() if t != HELD]
    celltypes = list(dict.fromkeys(c for c, _ in names))
    assays = list(dict.fromkeys(a for _, a in names))
    tracks = TrackSet.build(store, names, celltypes, assays)
    source = AxisSource(store, "pilot", tracks.rows)
    sampler = EpochSampler({"pilot": source}, tracks, 4096, block_size=8192, leave_one_out=True)
    batch = next(iter(sampler.batches(1)))
    values = store.read_block("pilot", 0, store.axis_length("pilot"), tracks=tracks.rows)
    values = values.astype(np.float16).astype(np.float32)  # the sampler's cache is float16
    for i in range(0, len(batch.values), 97):
        a, c, p = int(batch.assays[i]), int(batch.celltypes[i]), int(batch.positions[i])
        others = [
            k for k in range(len(tracks)) if tracks.assays[k] == a and tracks.celltypes[k] != c
        ]
        expected = values[others, p].mean() if others else 0.0
        assert batch.baseline[i] == pytest.approx(expected, abs=1e-4)
    assert (
        sampler.leave_one_out
        and EpochSampler({"pilot": source}, tracks, 4096).leave_one_out is False
    )


# fit, predict, save, impute -----------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_and_blend(small_pilot_store):
    plain = _tiny("none").fit(small_pilot_store, holdout=[HELD])
    blend = _tiny("blend", average_weight=0.5).fit(small_pilot_store, holdout=[HELD])
    return plain, blend


def test_blend_is_the_mean_of_the_network_and_average_activity(plain_and_blend, small_pilot_store):
    """average='blend' trains the plain network, and predicts w * it + (1 - w) * average activity."""
    plain, blend = plain_and_blend
    train = [t for t in small_pilot_store.track_names() if t != HELD]
    baseline = AverageActivity().fit(small_pilot_store, train)
    average = baseline.predict(*HELD)
    expected = 0.5 * plain.predict(*HELD) + 0.5 * average
    np.testing.assert_allclose(blend.predict(*HELD), expected, atol=2e-3)  # float16 averages
    counts = dict(zip(blend.assays_, blend.module_.average_count.tolist()))
    assert counts["H3K4me3"] == 4 and sum(counts.values()) == 24
    assert blend.holdout_mse_ < plain.holdout_mse_


@pytest.fixture(scope="module")
def residual(small_pilot_store):
    return _tiny("residual").fit(small_pilot_store, holdout=[HELD])


def test_residual_save_load_round_trip_and_impute(residual, tmp_path):
    """Saved averages load lazily with the axis; predict, load and the bigWig agree."""
    residual.save(tmp_path / "m")
    loaded = Avocado.load(tmp_path / "m")
    assert loaded.average == "residual" and "pilot" not in loaded.module_.genome
    expected = residual.predict(*HELD)
    np.testing.assert_array_equal(loaded.predict(*HELD), expected)
    torch.testing.assert_close(
        loaded.module_.genome["pilot"].average, residual.module_.genome["pilot"].average
    )
    # the residual adds the average: the network alone differs from the prediction
    net = Avocado.load(tmp_path / "m")
    net.genome_module("pilot")
    net.module_.average = "none"
    assert np.abs(net.predict(*HELD) - expected).mean() > 0.05
    # the textbook forward pass agrees with the one inference implementation
    plain = export.plain_predict(loaded, *HELD, "pilot", 100, 5100)
    np.testing.assert_allclose(plain, expected[100:5100], rtol=1e-5, atol=1e-5)
    seg = export.track_segments(loaded.layout_, loaded.chrom_sizes_).iloc[0]
    out = tmp_path / "held.bw"
    export.impute(loaded, [HELD], out, arcsinh=True, verbose=False)
    n = int(seg.axis_end - seg.axis_start)
    with pybigtools.open(str(out)) as reader:
        start = int(seg.first_bin) * 25
        values = reader.values(seg.chrom, start, start + 25 * n, bins=n, fillna=None)
    np.testing.assert_allclose(values, expected[int(seg.axis_start) : int(seg.axis_end)],
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_extend_residual_with_a_new_celltype_and_a_new_assay(small_pilot_store):
    """fit_celltypes keeps the averages; fit_assays adds the new assay's mean over its cell types."""
    store = small_pilot_store
    model = _tiny("residual").fit(store, celltypes=["E003", "E017", "E065", "E116"],
                                  assays=["H3K4me3", "H3K4me1", "H3K36me3", "H3K27me3"])  # fmt: skip
    before = model.module_.genome["pilot"].average.clone()
    model.fit_celltypes(store, ["E117"])
    torch.testing.assert_close(model.module_.genome["pilot"].average, before)
    assert np.isfinite(model.predict("E117", "H3K4me3")).all()
    model.fit_assays(store, ["H3K9me3"])
    average = model.module_.genome["pilot"].average
    assert average.shape == (5, store.axis_length("pilot"))
    torch.testing.assert_close(average[:4], before)
    rows = [store.track_index(c, "H3K9me3") for c in model.celltypes_]
    mean = store.read_block("pilot", 0, store.axis_length("pilot"), tracks=rows).mean(axis=0)
    np.testing.assert_allclose(average[4].float().numpy(), mean, atol=2e-3, rtol=2e-3)
    assert model.module_.average_count.tolist() == [4, 4, 4, 4, 5]
    assert np.isfinite(model.predict("E117", "H3K9me3")).all()


def test_fit_genome_writes_each_axis_averages(by_chrom_store, small_pilot_store, tmp_path):
    """Stage 2 computes every new chromosome's averages and saves them with its factors."""
    model = _tiny("blend").fit(small_pilot_store)
    model.save(tmp_path / "m")
    model.fit_genome(by_chrom_store, out=tmp_path / "m")
    loaded = Avocado.load(tmp_path / "m")
    names = loaded.training_tracks_
    for axis in by_chrom_store.axes:
        average = loaded.genome_module(axis).average.float().numpy()
        assert average.shape == (len(loaded.assays_), by_chrom_store.axis_length(axis))
        for k, assay in enumerate(loaded.assays_):
            rows = [by_chrom_store.track_index(c, a) for c, a in names if a == assay]
            mean = by_chrom_store.read_block(axis, 0, 2000, tracks=rows).mean(axis=0)
            np.testing.assert_allclose(average[k, :2000], mean, atol=2e-3, rtol=2e-3)
        assert np.isfinite(loaded.predict("E003", "H3K4me3", axis=axis)).all()


def test_explain_a_residual_model_attributes_the_network_term(residual):
    """explain works on an average model, says what it explains, and completes the network term."""
    from epitensor._utils import EpitensorWarning
    from epitensor.workflows.explain import explain

    seg = export.track_segments(residual.layout_, residual.chrom_sizes_).iloc[0]
    start = int(seg.first_bin) * 25
    with pytest.warns(EpitensorWarning, match="network's term"):
        table = explain(residual, "E003", "H3K4me3", f"{seg.chrom}:{start}-{start + 2500}")
    assert len(table) == 100
    parts = table[["celltype", "assay", "genome_25bp", "genome_250bp", "genome_5kbp"]].sum(axis=1)
    np.testing.assert_allclose(parts, table.prediction - table.reference_prediction, atol=0.05)
