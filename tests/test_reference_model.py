"""scripts/make_reference_model.py: a whole-chromosome model in the original's format, imported and imputed."""

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pyBigWig
import pytest
from typer.testing import CliRunner

from epitensor.cli import app

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "avocado-reference" / "avocado-chr1.h5"
CHR22_BP = 51_304_566  # hg19


def _script():
    """``scripts/make_reference_model.py`` as a module."""
    sys.path.insert(0, str(REPO / "scripts"))
    import make_reference_model

    return make_reference_model


TINY = _script().TINY  # the tiny sizes the benchmarks' --quick runs use too


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """chr21 + chr22 whole, tiny factor and network sizes, 4 cell types x 3 assays."""
    out = tmp_path_factory.mktemp("reference-model") / "avocado"
    files = _script().make_model(out, ["chr21", "chr22"], TINY, 4, 3, 8, seed=5, verbose=False)
    return out, files


def _weights(h5_path: Path) -> dict:
    """Every layer's weights, read with h5py through the layer_names / weight_names attributes."""
    weights = {}
    with h5py.File(h5_path, "r") as handle:
        root = handle["model_weights"]
        for layer in root.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else str(layer)
            for name in root[layer].attrs["weight_names"]:
                name = name.decode() if isinstance(name, bytes) else str(name)
                part = name.rsplit("/", 1)[-1].split(":")[0]
                weights[(layer, part)] = root[layer][name][()]
    return weights


def _forward(weights: dict, celltype: int, assay: int, positions: np.ndarray, n_layers: int):
    """The original's forward pass in float64 numpy: concat, ReLU hidden layers, linear output."""
    x = np.concatenate(
        [
            np.repeat(weights[("celltype_embedding", "embeddings")][[celltype]], len(positions), 0),
            np.repeat(weights[("assay_embedding", "embeddings")][[assay]], len(positions), 0),
            weights[("genome_25bp_embedding", "embeddings")][positions],
            weights[("genome_250bp_embedding", "embeddings")][positions // 10],
            weights[("genome_5kbp_embedding", "embeddings")][positions // 200],
        ],
        axis=1,
    ).astype(np.float64)
    for i in range(n_layers):
        x = np.maximum(x @ weights[(f"dense_{i}", "kernel")] + weights[(f"dense_{i}", "bias")], 0)
    return (x @ weights[("y_pred", "kernel")] + weights[("y_pred", "bias")])[:, 0]


def _structure(path: Path) -> dict:
    """Every group and dataset: kind, attribute names and values (sizes aside), dtype."""
    found = {}

    def visit(name, obj):
        attrs = {
            k: [str(x) for x in np.atleast_1d(v)] if k != "model_config" else "..."
            for k, v in obj.attrs.items()
        }
        found[name] = (type(obj).__name__, attrs, str(getattr(obj, "dtype", "")))

    with h5py.File(path, "r") as handle:
        handle.visititems(visit)
        found["/"] = sorted(handle.attrs)
    return found


def test_the_h5_layout_is_the_original_fixtures(tmp_path):
    """Same groups, datasets, dtypes and attributes as the file the original package wrote."""
    out = tmp_path / "avocado"
    sizes = {**TINY, "n_nodes": 64, "n_celltype_factors": 32, "n_assay_factors": 256}
    sizes.update(n_25bp_factors=25, n_250bp_factors=40, n_5kbp_factors=45)
    files = _script().make_model(out, ["chr1"], sizes, 5, 5, 24, positions=20002, verbose=False)
    mine, theirs = _structure(files["chr1"][1]), _structure(FIXTURE)
    assert mine == theirs
    with h5py.File(files["chr1"][1], "r") as a, h5py.File(FIXTURE, "r") as b:
        for name in ("model_weights/genome_25bp_embedding/genome_25bp_embedding/embeddings:0",
                     "model_weights/dense_0/dense_0/kernel:0"):  # fmt: skip
            assert a[name].shape == b[name].shape
        assert json.loads(a.attrs["training_config"]) == json.loads(b.attrs["training_config"])
        layers = json.loads(a.attrs["model_config"])["config"]["layers"]
        assert [x["name"] for x in layers] == list(b["model_weights"].attrs["layer_names"])
    config = json.loads(files["chr1"][0].read_text())
    assert config["n_genomic_positions"] == 20002 and len(config["experiments"]) == 24


def test_whole_chromosome_model_imports_and_imputes_as_a_numpy_forward_pass(tiny_model, tmp_path):
    prefix, files = tiny_model
    assert json.loads(files["chr22"][0].read_text())["n_genomic_positions"] == -(-CHR22_BP // 25)
    runner = CliRunner()
    model_dir = tmp_path / "model"
    result = runner.invoke(app, ["import-reference", str(prefix), "--out", str(model_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert "axes chr21, chr22" in result.output
    config = json.loads(files["chr21"][0].read_text())
    tracks = [(config["celltypes"][3], config["assays"][0]), (config["celltypes"][1], "H3K36me3")]
    regions = ["chr21:30000000-30100000", f"chr22:{CHR22_BP - 60_000}-{CHR22_BP}"]
    args = ["impute", str(model_dir), "--out", str(tmp_path / "bw"), "--arcsinh", "-q"]
    args += ["--threads", "1"]
    for celltype, assay in tracks:
        args += ["--celltype", celltype, "--assay", assay]
    for region in regions:
        args += ["--region", region]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rng = np.random.default_rng(0)
    for chrom, region in zip(("chr21", "chr22"), regions):
        weights = _weights(files[chrom][1])
        start_bp, end_bp = (int(x) for x in region.split(":")[1].split("-"))
        first, last = start_bp // 25, (end_bp - 1) // 25  # chr22's last bin is partial
        bins = np.unique(np.r_[rng.integers(first, last, 200), first, last])
        for celltype, assay in tracks:
            expected = _forward(
                weights, config["celltypes"].index(celltype), config["assays"].index(assay),
                bins, TINY["n_layers"],
            )  # fmt: skip
            with pyBigWig.open(str(tmp_path / "bw" / f"{celltype}.{assay}.bigWig")) as bw:
                got = np.array([bw.values(chrom, 25 * b, 25 * b + 1)[0] for b in bins])
                assert bw.chroms(chrom) == {"chr21": 48_129_895, "chr22": CHR22_BP}[chrom]
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
            # a realistic arcsinh range, not saturated or constant
            assert 0.1 < expected.std() < 2.0 and -0.5 < expected.mean() < 1.5


def test_values_are_deterministic_and_shared_layers_agree_across_chromosomes(tiny_model, tmp_path):
    prefix, files = tiny_model
    again = _script().make_model(
        tmp_path / "avocado", ["chr22"], TINY, 4, 3, 8, seed=5, verbose=False
    )
    a, b = _weights(files["chr22"][1]), _weights(again["chr22"][1])
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    c21 = _weights(files["chr21"][1])
    assert np.array_equal(c21[("dense_0", "kernel")], a[("dense_0", "kernel")])
    emb = ("genome_25bp_embedding", "embeddings")
    assert not np.array_equal(c21[emb][:1000], a[emb][:1000])
    other = _script().make_model(
        tmp_path / "other", ["chr22"], TINY, 4, 3, 8, seed=6, verbose=False
    )
    assert not np.array_equal(_weights(other["chr22"][1])[emb][:1000], a[emb][:1000])
