"""Integrated-gradients attributions on a model trained on the bundled pilot data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from epitensor._utils import EpitensorError, EpitensorWarning
from epitensor.genome.pilot import pilot_layout
from epitensor.nn.module import COMPONENTS, AvocadoModule
from epitensor.workflows.explain import (
    PEAK_THRESHOLD,
    explain,
    integrated_gradients,
    peak_attribution_summary,
    peak_attributions,
    plot_peak_attributions,
    reference_features,
    region_positions,
)

# TRIM22 promoter (GENCODE TSS chr11:5,712,256, + strand): strong H3K4me3 in
# GM12878 (E116), weak in HeLa-S3 (E117) in the bundled data.
REGION = "chr11:5,707,000-5,717,000"
WINDOW = (620_000, 636_000)  # pilot axis positions around it


@pytest.fixture(scope="module")
def module(trained_model) -> AvocadoModule:
    """The shared fixture's torch module (left in eval mode, never modified)."""
    module = trained_model.module_
    was_training = module.training
    yield module.eval()
    module.train(was_training)


@pytest.fixture(scope="module")
def positions() -> np.ndarray:
    return region_positions(pilot_layout(), REGION).position.to_numpy()


def test_region_positions_maps_bins_to_the_pilot_axis(positions):
    table = region_positions(pilot_layout(), REGION)
    assert len(table) == 400
    assert (table.end - table.start == 25).all()
    assert table.start.iloc[0] == 5_707_000
    assert np.all(np.diff(positions) == 1)
    assert WINDOW[0] <= positions.min() and positions.max() < WINDOW[1]


def _indices(model, celltype: str, assay: str) -> tuple[int, int]:
    return model.celltypes_.index(celltype), model.assays_.index(assay)


def test_completeness_on_a_trained_model(trained_model, module, positions):
    e116, h3k4me3 = _indices(trained_model, "E116", "H3K4me3")
    with warnings.catch_warnings():
        warnings.simplefilter("error", EpitensorWarning)
        table = integrated_gradients(module, e116, h3k4me3, positions, "pilot", n_steps=256)
    difference = table.prediction - table.reference_prediction
    total = table[list(COMPONENTS)].sum(axis=1)
    # within 1% of the prediction minus the reference prediction (plus 1e-3
    # arcsinh where that difference is itself close to zero)
    assert np.all(np.abs(total - difference) <= 0.01 * np.abs(difference) + 1e-3)
    assert np.abs(difference).max() > 0.05  # there is something to attribute
    # two steps leave a visible gap, and a warning names it
    with pytest.warns(EpitensorWarning, match="raise n_steps"):
        two = integrated_gradients(
            module, e116, h3k4me3, positions, "pilot", n_steps=2, rtol=1e-4, atol=1e-6
        )
    assert two.gap.abs().max() > table.gap.abs().max()


def test_component_equal_to_reference_gets_zero(trained_model, module, positions):
    e116, h3k4me3 = _indices(trained_model, "E116", "H3K4me3")
    reference = reference_features(module, "mean").clone()
    n_ct = module.component_sizes["celltype"]
    reference[:n_ct] = module.celltype_embedding.weight[e116].detach()
    table = integrated_gradients(module, e116, h3k4me3, positions, "pilot", reference=reference)
    assert np.all(table.celltype == 0.0)
    assert np.abs(table.genome_25bp).max() > 1e-3  # the others still move


def test_batch_size_invariance(module, positions):
    positions = positions[:120]
    one = integrated_gradients(module, 3, 0, positions, "pilot", n_steps=16, batch_size=64)
    big = integrated_gradients(module, 3, 0, positions, "pilot", n_steps=16, batch_size=100_000)
    odd = integrated_gradients(module, 3, 0, positions, "pilot", n_steps=16, batch_size=777)
    for other in (big, odd):
        np.testing.assert_allclose(one[list(COMPONENTS)], other[list(COMPONENTS)], atol=1e-5)


def test_matches_integrated_gradients_on_the_inputs(module, positions):
    """The first-layer shortcut equals IG computed on the concatenated factors."""
    from epitensor.workflows.explain import _quadrature

    pos = torch.tensor(positions[:50])
    x = module.features(torch.full((50,), 1), torch.full((50,), 2), pos, "pilot").detach()
    reference = reference_features(module, "zero")
    nodes, weights = _quadrature(8, "trapezoid")
    total = torch.zeros_like(x)
    for a, w in zip(nodes, weights):
        path = (reference + a * (x - reference)).requires_grad_(True)
        (grad,) = torch.autograd.grad(module.network(path).sum(), path)
        total += w * grad
    sizes = list(module.component_sizes.values())
    expected = torch.stack([c.sum(1) for c in ((x - reference) * total).split(sizes, 1)], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EpitensorWarning)  # 8 steps: a gap is expected
        table = integrated_gradients(
            module, 1, 2, positions[:50], "pilot", reference="zero", n_steps=8, method="trapezoid"
        )
    np.testing.assert_allclose(table[list(COMPONENTS)], expected.numpy(), atol=1e-5)
    with torch.no_grad():
        direct = module(torch.full((50,), 1), torch.full((50,), 2), pos, "pilot")
    np.testing.assert_allclose(table.prediction, direct.numpy(), atol=1e-5)


def test_zero_reference_and_restores_mode(module, positions):
    module.train()
    try:
        table = integrated_gradients(module, 0, 0, positions[:20], "pilot", reference="zero")
        assert module.training
    finally:
        module.eval()
    with torch.no_grad():
        expected = module.network(torch.zeros(1, sum(module.component_sizes.values()))).item()
    assert table.reference_prediction.iloc[0] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reference": np.zeros(3)}, "invalid reference"),
        ({"reference": "median"}, "invalid reference"),
        ({"n_steps": 1}, "n_steps"),
        ({"method": "simpson"}, "invalid method"),
        ({"batch_size": 0}, "batch_size"),
        ({"celltype_idx": 9}, "cell type index"),
        ({"assay_idx": -1}, "assay index"),
        ({"axis": "chr1"}, "unknown axis"),
        ({"positions": [2_000_000]}, "positions must lie"),
        ({"positions": []}, "non-empty"),
    ],
)
def test_integrated_gradients_errors(module, kwargs, match):
    args = {"celltype_idx": 0, "assay_idx": 0, "positions": [10, 11], "axis": "pilot"} | kwargs
    with pytest.raises(EpitensorError, match=match):
        integrated_gradients(module, **args)


def test_region_partly_outside_the_layout_warns():
    # ENm009 ends at chr11:5,776,011: 1 kb beyond it is outside the pilot regions
    with pytest.warns(EpitensorWarning, match="only 42 of its 80 bins"):
        table = region_positions(pilot_layout(), "chr11:5,775,000-5,777,000")
    assert len(table) == 42 and table.end.max() == 5_776_050


def test_region_outside_the_layout():
    with pytest.raises(EpitensorError, match="outside the model's layout"):
        region_positions(pilot_layout(), "chr11:1,000-2,000")
    with pytest.raises(EpitensorError, match="invalid region"):
        region_positions(pilot_layout(), "chr11:5000-10")


def test_explain_two_celltypes_on_the_estimator(trained_model):
    table = explain(trained_model, ["E116", "E117"], "H3K4me3", REGION, n_steps=128)
    assert len(table) == 800
    assert table.track_celltype.tolist() == ["E116"] * 400 + ["E117"] * 400
    assert (table.track_assay == "H3K4me3").all()
    assert table.start.iloc[0] == 5_707_000 and table.end.iloc[-1] == 5_717_000
    for celltype in ("E116", "E117"):
        rows = table[table.track_celltype == celltype]
        expected = trained_model.predict(
            celltype, "H3K4me3", start=int(rows.position.min()), end=int(rows.position.max()) + 1
        )
        np.testing.assert_allclose(rows.prediction, expected, atol=1e-4)
    difference = table.prediction - table.reference_prediction
    assert np.abs(table[list(COMPONENTS)].sum(axis=1) - difference).max() < 0.01
    # the cell type changes only the cell-type factors, not the genome attributions' input
    assert not np.allclose(table.celltype[:400], table.celltype[400:].to_numpy())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"celltypes": "E999"}, "unknown cell type"),
        ({"celltypes": []}, "at least one cell type"),
        ({"assay": "H3K27ac"}, "unknown assay"),
        ({"region": "chr11:1,000-2,000"}, "outside the model's layout"),
        ({"region": "chrZ:1-100"}, "unknown chromosome"),
        ({"n_steps": 1}, "n_steps"),
        ({"reference": np.ones(5)}, "invalid reference"),
    ],
)
def test_explain_errors(trained_model, kwargs, match):
    args = {"celltypes": "E116", "assay": "H3K4me3", "region": REGION} | kwargs
    with pytest.raises(EpitensorError, match=match):
        explain(trained_model, **args)


def test_explain_unfitted_model():
    from epitensor.estimators.avocado import Avocado

    with pytest.raises(EpitensorError, match="not fitted"):
        explain(Avocado(), "E116", "H3K4me3", REGION)


@pytest.mark.filterwarnings("ignore::epitensor._utils.EpitensorWarning")
def test_peak_attributions_and_plot(trained_model, pilot_store, tmp_path):
    table = peak_attributions(
        trained_model,
        pilot_store,
        "H3K4me3",
        n_per_group=15,
        n_steps=16,
        start=600_000,
        end=700_000,
    )
    celltypes = [c for c in trained_model.celltypes_ if pilot_store.has_track(c, "H3K4me3")]
    assert sorted(set(table.track_celltype)) == sorted(celltypes)
    assert (table.peak == (table.observed >= PEAK_THRESHOLD)).all()
    by_position = table.groupby("position")
    assert (by_position.peak.sum() == by_position.n_peaks.first()).all()
    assert table.n_peaks.max() >= 3 and table.n_peaks.min() == 0
    assert table.position.between(600_000, 699_999).all()
    summary = peak_attribution_summary(table)
    assert summary.n.sum() == len(table)
    assert not summary[summary.n_peaks == 0].peak.any()
    assert summary[summary.n_peaks == len(celltypes)].peak.all()
    plot_peak_attributions(summary, tmp_path / "s8.png")
    assert (tmp_path / "s8.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(EpitensorError, match="unknown cell type"):
        peak_attributions(trained_model, pilot_store, "H3K4me3", celltypes=["E116", "E999"])
    with pytest.raises(EpitensorError, match="at least two cell types"):
        peak_attributions(trained_model, pilot_store, "H3K4me3", celltypes=["E116"])


@pytest.mark.filterwarnings("ignore::epitensor._utils.EpitensorWarning")
def test_cli_writes_png_and_tsv(trained_model, tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from epitensor.cli import app

    trained_model.save(tmp_path / "model")
    out, tsv = tmp_path / "fig.png", tmp_path / "attr.tsv"
    args = ["explain", str(tmp_path / "model"), "--celltype", "E116", "--celltype", "E117"]
    args += ["--assay", "H3K4me3", "--region", REGION, "--out", str(out), "--tsv", str(tsv)]
    result = CliRunner().invoke(app, [*args, "--steps", "16", "--quiet"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(tsv, sep="\t")
    assert len(table) == 800 and set(COMPONENTS) <= set(table.columns)
    bad = CliRunner().invoke(
        app, [*args[:-4], "--region", "chr11:1-100", "--out", str(out), "--overwrite"]
    )
    assert bad.exit_code == 1 and "outside the model's layout" in bad.output


def test_peak_summary_groups_and_means():
    import pandas as pd

    table = pd.DataFrame(
        {
            "n_peaks": [0, 0, 1, 1, 1],
            "peak": [False, False, True, False, False],
            **{c: [1.0, 3.0, 5.0, -1.0, 1.0] for c in COMPONENTS},
            "prediction": [0.0, 0.0, 2.0, 0.0, 0.0],
        }
    )
    summary = peak_attribution_summary(table)
    assert summary.n.tolist() == [2, 2, 1]
    assert summary.celltype.tolist() == [2.0, 0.0, 5.0]
