"""The latent representation: per-position genome factors, region rows, named factor tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import zarr
from typer.testing import CliRunner

from epitensor._utils import EpitensorError, EpitensorWarning
from epitensor.cli import app
from epitensor.workflows import impute as export


@pytest.fixture(scope="module")
def model(trained_model):
    return trained_model


def test_embed_rows_line_up_with_positions(model, tmp_path):
    """Row k of an axis array is the genome factors of axis position k (Zarr and npz alike)."""
    out = export.embed(model, tmp_path / "zarr", block_size=100_000, verbose=False)
    array = zarr.open_group(str(out / "genome_factors.zarr"))["pilot"]
    n = model.layout_.axis_lengths["pilot"]
    n_features = sum(model.module_.genome_sizes)
    assert array.shape == (n, n_features)
    rows = np.array([0, 9, 10, 199, 200, 99_999, 100_000, 777_777, n - 1])
    for k in rows:
        np.testing.assert_array_equal(array[k], model.genome_factors(start=k, end=k + 1)[0])
    np.testing.assert_array_equal(
        array[99_990:100_010], model.genome_factors(start=99_990, end=100_010)
    )
    npz = export.embed(model, tmp_path / "npz", fmt="npz", block_size=300_000, verbose=False)
    with np.load(npz / "genome_factors.npz") as bundle:
        np.testing.assert_array_equal(bundle["pilot"][rows], array[rows])
        assert bundle["pilot"].shape == (n, n_features)
    meta = json.loads((out / "embed.json").read_text())
    assert meta["columns"][0] == "genome_25bp_0" and len(meta["columns"]) == n_features
    celltypes = pd.read_csv(out / "celltype_factors.tsv", sep="\t", index_col=0)
    assert list(celltypes.index) == model.celltypes_
    np.testing.assert_allclose(celltypes.to_numpy(), model.celltype_embedding_, rtol=1e-6)
    assays = pd.read_csv(out / "assay_factors.tsv", sep="\t", index_col=0)
    assert list(assays.index) == model.assays_ and assays.shape[1] == model.n_assay_factors
    layout = pd.read_csv(out / "layout.tsv", sep="\t")
    assert len(layout) == 42 and {"chrom", "offset", "first_bin"} <= set(layout.columns)


def _bed(model) -> pd.DataFrame:
    """Three regions inside pilot regions, one straddling a region's end, one outside."""
    regions = model.layout_.regions
    r0, r5 = regions.iloc[0], regions.iloc[5]
    start0 = int(r0.first_bin) * 25 + 3_000
    start5 = int(r5.first_bin) * 25 + 52_510
    last_bp = (int(r5.first_bin) + int(r5.n_bins)) * 25
    return pd.DataFrame(
        {
            "chrom": [r0.chrom, r5.chrom, r5.chrom, "chrX"],
            "start": [start0, start5, last_bp - 100, 1_000],
            "end": [start0 + 1_000, start5 + 1, last_bp + 5_000, 2_000],
            "name": ["a", "tss", "edge", "outside"],
            "strand": ["+", "-", "+", "+"],
        }
    )


def test_region_rows_are_means_of_their_bins(model):
    bed = _bed(model)
    with pytest.warns(EpitensorWarning, match="1 of 4 regions"):
        table = export.region_factors(model, bed, verbose=False)
    names = export.factor_names(model.module_)
    assert list(table.columns[:5]) == ["chrom", "start", "end", "name", "strand"]
    features = table[names].to_numpy()
    r0, r5 = model.layout_.regions.iloc[0], model.layout_.regions.iloc[5]
    a = int(r0.offset) + 120  # 3,000 bp = 120 bins into region 0, 40 bins long
    np.testing.assert_allclose(
        features[0], model.genome_factors(start=a, end=a + 40).mean(0), rtol=1e-5
    )
    tss = int(r5.offset) + 52_510 // 25
    np.testing.assert_allclose(
        features[1], model.genome_factors(start=tss, end=tss + 1)[0], rtol=1e-6
    )
    end = int(r5.offset + r5.n_bins)  # only the 4 bins inside the layout count
    np.testing.assert_allclose(
        features[2], model.genome_factors(start=end - 4, end=end).mean(0), rtol=1e-5
    )
    assert np.isnan(features[3]).all()


def test_window_rows_follow_the_250bp_grid_and_strand(model):
    bed = _bed(model).iloc[:2]
    table = export.region_factors(model, bed, window=8, verbose=False)
    n25, n250, n5k = model.module_.genome_sizes
    assert table.shape[1] - 5 == 8 * (n25 + n250) + n5k
    r5 = model.layout_.regions.iloc[5]
    tss = int(r5.offset) + 52_510 // 25
    first = (tss // 10 - 4) * 10
    factors = model.genome_factors(start=first, end=first + 80).reshape(8, 10, -1)
    per_bin_25 = factors[:, :, :n25].mean(1)
    per_bin_250 = factors[:, 0, n25 : n25 + n250]
    row = table.iloc[1]
    # minus strand: window 0 is the most upstream bin, i.e. the last on the axis
    got_25 = np.stack([row[[f"w{j}_genome_25bp_{i}" for i in range(n25)]] for j in range(8)])
    got_250 = np.stack([row[[f"w{j}_genome_250bp_{i}" for i in range(n250)]] for j in range(8)])
    np.testing.assert_allclose(got_25.astype(float), per_bin_25[::-1], rtol=1e-5)
    np.testing.assert_allclose(got_250.astype(float), per_bin_250[::-1], rtol=1e-6)
    got_5k = row[[f"genome_5kbp_{i}" for i in range(n5k)]].astype(float)
    np.testing.assert_allclose(
        got_5k, factors[:, :, n25 + n250 :].reshape(80, -1).mean(0), rtol=1e-5
    )


def test_embed_raises_and_cli(model, tmp_path):
    with pytest.raises(EpitensorError, match="window needs regions"):
        export.embed(model, tmp_path / "x", window=8, verbose=False)
    with pytest.raises(EpitensorError, match="no genome factors for axis 'chr1'"):
        export.embed(model, tmp_path / "x", axes=["chr1"], verbose=False)
    with pytest.raises(EpitensorError, match="invalid fmt"):
        export.embed(model, tmp_path / "x", fmt="hdf5", verbose=False)
    with pytest.raises(EpitensorError, match="window must be a positive"):
        export.region_factors(model, _bed(model), window=0, verbose=False)
    model_dir = tmp_path / "model"
    model.save(model_dir)
    bed_path = tmp_path / "regions.bed"
    _bed(model).iloc[:3].to_csv(bed_path, sep="\t", header=False, index=False, columns=None)
    bed = pd.read_csv(bed_path, sep="\t", header=None)
    bed.insert(4, "score", 0)  # BED6: name, score, strand
    bed.to_csv(bed_path, sep="\t", header=False, index=False)
    out = tmp_path / "factors"
    runner = CliRunner()
    result = runner.invoke(
        app, ["embed", str(model_dir), "--out", str(out), "--regions", str(bed_path), "-q"]
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "region_factors.tsv", sep="\t")
    assert list(table.name) == ["a", "tss", "edge"] and not table.isna().any().any()
    result = runner.invoke(app, ["embed", str(model_dir), "--out", str(out)])
    assert result.exit_code == 1 and "already exists" in result.output
    assert runner.invoke(app, ["embed", "--help"]).exit_code == 0
