"""Import of a model saved by the original Avocado package (the avocado-reference fixture)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from epitensor._utils import EpitensorError
from epitensor.workflows.reference import (
    chrom_of,
    find_reference_files,
    import_reference,
    read_reference,
)

# Position 0 of the fixture is hg19 chr1 bin 6046322 (its README).
FIXTURE_FIRST_BIN = 6046322
N_POSITIONS = 20002


@pytest.fixture(scope="module")
def fixture_dir(test_data) -> Path:
    return test_data / "avocado-reference"


@pytest.fixture(scope="module")
def expected(fixture_dir) -> dict[str, np.ndarray]:
    with np.load(fixture_dir / "reference_predictions.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def reference(fixture_dir):
    return read_reference(
        fixture_dir / "avocado-chr1", genome="hg19", first_bin=FIXTURE_FIRST_BIN, verbose=False
    )


def _module_predictions(ref, keys: list[str]) -> np.ndarray:
    celltypes = torch.tensor([ref.celltypes.index(k.split(".")[0]) for k in keys])
    assays = torch.tensor([ref.assays.index(k.split(".")[1]) for k in keys])
    with torch.inference_mode():
        return ref.module.forward_tracks(
            celltypes, assays, torch.arange(N_POSITIONS), ref.layout.axes[0]
        ).numpy()


def _copy(fixture_dir: Path, dest: Path, chrom: str = "chr1") -> Path:
    """Copy the fixture pair to ``dest/avocado-{chrom}.{json,h5}``; return the prefix."""
    dest.mkdir(parents=True, exist_ok=True)
    prefix = dest / f"avocado-{chrom}"
    for suffix in (".json", ".h5"):
        shutil.copyfile(fixture_dir / f"avocado-chr1{suffix}", prefix.with_suffix(suffix))
    return prefix


# the numbers ------------------------------------------------------------------------


def test_module_matches_original_predictions(reference, expected):
    """All 25 tracks, the held-out E065/H3K4me3 included, equal the original's to 1e-5."""
    keys = sorted(expected)
    assert len(keys) == 25
    predicted = _module_predictions(reference, keys)
    for row, key in zip(predicted, keys):
        np.testing.assert_allclose(row, expected[key], atol=1e-5, rtol=0, err_msg=key)
    # The per-sample forward (no genome-projection reuse) agrees too.
    ct = torch.tensor([reference.celltypes.index("E065")] * N_POSITIONS)
    assay = torch.tensor([reference.assays.index("H3K4me3")] * N_POSITIONS)
    with torch.inference_mode():
        direct = reference.module(ct, assay, torch.arange(N_POSITIONS), reference.layout.axes[0])
    np.testing.assert_allclose(direct.numpy(), expected["E065.H3K4me3"], atol=1e-5, rtol=0)


def test_mapping_names_sizes_and_layout(reference):
    assert reference.celltypes == ["E003", "E017", "E065", "E116", "E117"]
    assert reference.assays == ["H3K4me3", "H3K27me3", "H3K36me3", "H3K9me3", "H3K4me1"]
    assert len(reference.training_tracks) == 24
    assert ("E065", "H3K4me3") not in reference.training_tracks
    assert reference.params["n_nodes"] == 64 and reference.params["n_layers"] == 2
    factors = reference.module.genome[reference.layout.axes[0]]
    # Keras keeps n // 10 + 1 = 2001 and n // 200 + 1 = 101 rows; all are used here.
    assert factors.emb_25bp.num_embeddings == N_POSITIONS
    assert factors.emb_250bp.num_embeddings == 2001
    assert factors.emb_5kbp.num_embeddings == 101
    n_params = sum(p.numel() for p in reference.module.parameters())
    assert n_params == 615_836  # the original's count, in its README
    region = reference.layout.regions.iloc[0]
    assert (region.chrom, region.first_bin, region.n_bins) == ("chr1", FIXTURE_FIRST_BIN, 20002)
    assert reference.layout.axes == ["chr1_151158050-151658100"]
    # The pilot region ENr231 (hg19 chr1:151158060-151658060) lies on this axis.
    hits = reference.layout.locate("chr1", 151_158_060, 151_658_060)
    assert hits.axis_start.iloc[0] == 0


def test_whole_chromosome_layout_is_the_default(fixture_dir):
    ref = read_reference(fixture_dir, genome="hg19", verbose=False)
    assert ref.layout.axes == ["chr1"] and ref.layout.is_whole_genome
    assert ref.layout.regions.first_bin.iloc[0] == 0


def test_extra_keras_rows_are_dropped_without_changing_predictions(fixture_dir, tmp_path, expected):
    """n = 20000: Keras tables have 2001 / 101 rows, ours 2000 / 100; the last rows are unused."""
    prefix = _copy(fixture_dir, tmp_path)
    config = json.loads(prefix.with_suffix(".json").read_text())
    config["n_genomic_positions"] = 20000
    prefix.with_suffix(".json").write_text(json.dumps(config))
    with h5py.File(prefix.with_suffix(".h5"), "r+") as f:
        name = "model_weights/genome_25bp_embedding/genome_25bp_embedding/embeddings:0"
        table = f[name][:20000]
        del f[name]
        f[name] = table
    ref = read_reference(prefix, first_bin=FIXTURE_FIRST_BIN, verbose=False)
    factors = ref.module.genome[ref.layout.axes[0]]
    assert factors.emb_250bp.num_embeddings == 2000 and factors.emb_5kbp.num_embeddings == 100
    celltypes = torch.tensor([ref.celltypes.index("E117")])
    assays = torch.tensor([ref.assays.index("H3K36me3")])
    with torch.inference_mode():
        y = ref.module.forward_tracks(celltypes, assays, torch.arange(20000), ref.layout.axes[0])
    np.testing.assert_allclose(y[0].numpy(), expected["E117.H3K36me3"][:20000], atol=1e-5, rtol=0)


def test_bytes_attributes_from_older_keras_are_decoded(fixture_dir, tmp_path, expected):
    prefix = _copy(fixture_dir, tmp_path)
    with h5py.File(prefix.with_suffix(".h5"), "r+") as f:
        root = f["model_weights"]
        names = [str(n) for n in root.attrs["layer_names"]]
        root.attrs["layer_names"] = np.array([n.encode() for n in names], dtype="S")
        for layer in names:
            weight_names = [str(n) for n in root[layer].attrs["weight_names"]]
            if weight_names:
                root[layer].attrs["weight_names"] = np.array(
                    [n.encode() for n in weight_names], dtype="S"
                )
    ref = read_reference(prefix, first_bin=FIXTURE_FIRST_BIN, verbose=False)
    np.testing.assert_allclose(
        _module_predictions(ref, ["E003.H3K27me3"])[0], expected["E003.H3K27me3"], atol=1e-5
    )


def test_keras1_weight_names_are_understood(fixture_dir, tmp_path, expected):
    """Keras 1 stored ``dense_0_W:0`` / ``dense_0_b:0`` and ``<embedding>_W:0``."""
    prefix = _copy(fixture_dir, tmp_path)
    with h5py.File(prefix.with_suffix(".h5"), "r+") as f:
        root = f["model_weights"]
        for layer in [str(n) for n in root.attrs["layer_names"]]:
            renamed = []
            for name in [str(n) for n in root[layer].attrs["weight_names"]]:
                short = name.rsplit("/", 1)[-1].split(":")[0]
                new = f"{layer}_{'b' if short == 'bias' else 'W'}:0"
                root[layer].move(name, new)
                renamed.append(new.encode())
            if renamed:
                root[layer].attrs["weight_names"] = np.array(renamed, dtype="S")
    ref = read_reference(prefix, first_bin=FIXTURE_FIRST_BIN, verbose=False)
    np.testing.assert_allclose(
        _module_predictions(ref, ["E116.H3K4me1"])[0], expected["E116.H3K4me1"], atol=1e-5
    )


def test_many_chromosomes_share_the_network(fixture_dir, tmp_path):
    for chrom in ("chr1", "chr2"):
        _copy(fixture_dir, tmp_path, chrom)
    ref = read_reference(tmp_path / "avocado", genome="hg19", verbose=False)
    assert ref.layout.axes == ["chr1", "chr2"]
    assert set(ref.module.genome) == {"chr1", "chr2"}
    assert list(find_reference_files(tmp_path)) == ["chr1", "chr2"]
    only = read_reference(tmp_path, chroms=["chr2"], verbose=False)
    assert only.layout.axes == ["chr2"]


# clear errors -------------------------------------------------------------------------


def _one_line_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(EpitensorError, match=match) as info:
        read_reference(*args, verbose=False, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_error_chromosome_files_disagree(fixture_dir, tmp_path):
    _copy(fixture_dir, tmp_path, "chr1")
    chr2 = _copy(fixture_dir, tmp_path, "chr2")
    with h5py.File(chr2.with_suffix(".h5"), "r+") as f:
        f["model_weights/dense_0/dense_0/bias:0"][0] += 0.5
    message = _one_line_error("not one model", tmp_path)
    assert "chr2" in message and "dense_0" in message and "avocado-chr2.h5" in message


def test_error_chromosome_celltypes_disagree(fixture_dir, tmp_path):
    _copy(fixture_dir, tmp_path, "chr1")
    chr3 = _copy(fixture_dir, tmp_path, "chr3")
    with h5py.File(chr3.with_suffix(".h5"), "r+") as f:
        f["model_weights/celltype_embedding/celltype_embedding/embeddings:0"][2, 0] += 1.0
    message = _one_line_error("not one model", tmp_path)
    assert "chr3" in message and "celltype_embedding" in message


def test_error_not_hdf5(fixture_dir, tmp_path):
    prefix = _copy(fixture_dir, tmp_path)
    prefix.with_suffix(".h5").write_text("this is not HDF5\n")
    message = _one_line_error("not an HDF5 file", prefix)
    assert "avocado-chr1.h5" in message


def test_error_not_a_keras_model(fixture_dir, tmp_path):
    prefix = _copy(fixture_dir, tmp_path)
    prefix.with_suffix(".h5").unlink()
    with h5py.File(prefix.with_suffix(".h5"), "w") as f:
        f["data"] = np.zeros(3)
    message = _one_line_error("not a Keras model file", prefix)
    assert "avocado-chr1.h5" in message


def test_error_json_not_avocado(fixture_dir, tmp_path):
    prefix = _copy(fixture_dir, tmp_path)
    prefix.with_suffix(".json").write_text(json.dumps({"class_name": "Functional"}))
    message = _one_line_error("not an original Avocado model JSON", prefix)
    assert "avocado-chr1.json" in message and "celltypes" in message
    prefix.with_suffix(".json").write_text("{broken")
    _one_line_error("not an Avocado model JSON", prefix)


def test_error_missing_layer(fixture_dir, tmp_path):
    prefix = _copy(fixture_dir, tmp_path)
    with h5py.File(prefix.with_suffix(".h5"), "r+") as f:
        root = f["model_weights"]
        del root["dense_1"]
        root.attrs["layer_names"] = [n for n in root.attrs["layer_names"] if n != "dense_1"]
    message = _one_line_error("missing layers", prefix)
    assert "dense_1" in message and "avocado-chr1.h5" in message


def test_error_shape_mismatch(fixture_dir, tmp_path):
    prefix = _copy(fixture_dir, tmp_path)
    with h5py.File(prefix.with_suffix(".h5"), "r+") as f:
        name = "model_weights/dense_1/dense_1/kernel:0"
        del f[name]
        f[name] = np.zeros((64, 32), dtype=np.float32)
    message = _one_line_error("shape mismatch", prefix)
    assert "dense_1/kernel" in message and "(64, 32)" in message and "(64, 64)" in message


def test_error_json_h5_pair_disagree(fixture_dir, tmp_path):
    prefix = _copy(fixture_dir, tmp_path)
    config = json.loads(prefix.with_suffix(".json").read_text())
    config["celltypes"].append("E004")
    prefix.with_suffix(".json").write_text(json.dumps(config))
    message = _one_line_error("JSON/h5 pair disagree", prefix)
    assert "celltype_embedding" in message and "(6, 32)" in message


def test_error_unknown_chromosome(fixture_dir, tmp_path):
    prefix = _copy(fixture_dir, tmp_path, "chr99")
    message = _one_line_error("unknown chromosome 'chr99'", prefix, genome="hg38")
    assert "avocado-chr99.json" in message and "hg38" in message


def test_error_file_names(fixture_dir, tmp_path):
    with pytest.raises(EpitensorError, match="cannot tell which chromosome"):
        chrom_of(tmp_path / "model.json")
    _one_line_error("no original Avocado model files", tmp_path / "nothing")
    prefix = _copy(fixture_dir, tmp_path)
    prefix.with_suffix(".h5").unlink()
    _one_line_error(r"avocado-chr1\.h5 not found", prefix)
    _one_line_error("first bin", fixture_dir / "avocado-chr1", first_bin=10**9)


# the estimator, the model directory, the CLI and the downstream commands ---------------


@pytest.fixture(scope="module")
def imported(fixture_dir):
    from epitensor.workflows.reference import import_reference

    return import_reference(
        fixture_dir / "avocado-chr1", genome="hg19", first_bin=FIXTURE_FIRST_BIN, verbose=False
    )


def test_estimator_predicts_the_original_tracks(imported, expected):
    assert imported.celltypes_ == ["E003", "E017", "E065", "E116", "E117"]
    assert imported.genome_ == "hg19"
    assert imported.genome_axes_ == {"chr1_151158050-151658100": N_POSITIONS}
    for key, track in expected.items():
        celltype, assay = key.split(".")
        np.testing.assert_allclose(
            imported.predict(celltype, assay), track, atol=1e-5, rtol=0, err_msg=key
        )
    tracks = [tuple(k.split(".")) for k in expected]
    together = imported.predict_tracks(tracks, start=100, end=5100)
    np.testing.assert_allclose(
        together, np.stack([expected[k][100:5100] for k in expected]), atol=1e-5, rtol=0
    )
    assert imported.genome_factors(start=0, end=7).shape == (7, 110)


def test_cli_writes_a_model_that_loads_and_predicts_identically(fixture_dir, tmp_path, expected):
    from typer.testing import CliRunner

    from epitensor.cli import app
    from epitensor.estimators.avocado import Avocado

    out = tmp_path / "model"
    args = ["import-reference", str(fixture_dir / "avocado-chr1"), "--genome", "hg19"]
    args += ["--first-bin", f"chr1:{FIXTURE_FIRST_BIN}", "--out", str(out), "--quiet"]
    assert CliRunner().invoke(app, ["import-reference", "--help"]).exit_code == 0
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "5 cell types" in result.output
    assert (out / "config.json").is_file()
    record = json.loads((out / "import.json").read_text())
    assert record["first_bin"] == {"chr1": FIXTURE_FIRST_BIN} and "chr1" in record["sources"]
    assert (out / "genome" / "chr1_151158050-151658100.safetensors").is_file()
    loaded = Avocado.load(out)
    assert loaded.layout_.regions.first_bin.iloc[0] == FIXTURE_FIRST_BIN
    for key in ("E065.H3K4me3", "E116.H3K9me3"):
        np.testing.assert_allclose(loaded.predict(*key.split(".")), expected[key], atol=1e-5)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "already exists" in again.output
    unknown = CliRunner().invoke(
        app, ["import-reference", str(tmp_path / "nothing"), "--out", str(tmp_path / "m2")]
    )
    assert unknown.exit_code == 1 and "no original Avocado model files" in unknown.output


def test_impute_to_bigwig_and_embed_from_the_imported_model(imported, tmp_path, expected):
    """The bigWig lands at the original's hg19 bins and holds its numbers."""
    import pybigtools

    from epitensor.workflows.impute import embed, impute

    paths = impute(
        imported, [("E065", "H3K4me3")], tmp_path / "E065.H3K4me3.bw", arcsinh=True, verbose=False
    )
    with pybigtools.open(str(paths[0])) as bw:
        start = FIXTURE_FIRST_BIN * 25
        values = np.asarray(bw.values("chr1", start, start + N_POSITIONS * 25, fillna=np.nan))
    np.testing.assert_allclose(values[::25], expected["E065.H3K4me3"], atol=1e-5, rtol=0)
    out = embed(imported, tmp_path / "factors", fmt="npz", verbose=False)
    with np.load(out / "genome_factors.npz") as factors:
        table = factors["chr1_151158050-151658100"]
    assert table.shape == (N_POSITIONS, 110)
    np.testing.assert_array_equal(table[:50], imported.genome_factors(start=0, end=50))


def test_explain_on_the_imported_model(imported, expected):
    """Attributions land on the fixture's positions and explain the original's predictions."""
    from epitensor.workflows.explain import explain

    table = explain(imported, "E065", "H3K4me3", "chr1:151200000-151205000", n_steps=8)
    assert len(table) == 200
    positions = table.position.to_numpy()
    assert positions[0] == 151_200_000 // 25 - FIXTURE_FIRST_BIN
    np.testing.assert_allclose(
        table.prediction.to_numpy(), expected["E065.H3K4me3"][positions], atol=1e-5, rtol=0
    )


def test_extend_the_imported_model_with_a_new_cell_type(fixture_dir, pilot_store, tmp_path):
    """E065's real pilot tracks (first region = the fixture's positions) as a new cell type."""
    from epitensor.estimators.avocado import Avocado
    from epitensor.store.compendium import Store
    from epitensor.workflows.extend import extend

    model = import_reference(
        fixture_dir / "avocado-chr1", first_bin=FIXTURE_FIRST_BIN, batch_size=2000, verbose=False
    )
    model.save(tmp_path / "model")
    store = Store.create(
        tmp_path / "e065.zarr", model.layout_, model.chrom_sizes_, genome="hg19", dtype="float32"
    )
    axis = model.layout_.axes[0]
    for assay in ("H3K27me3", "H3K36me3", "H3K9me3", "H3K4me1"):  # not the held-out H3K4me3
        values = pilot_store.read_track("E065", assay, start=0, end=N_POSITIONS)
        store.add_track("E065new", assay, {axis: values})
    before = model.predict_tracks([("E003", "H3K4me3"), ("E117", "H3K9me3")])
    new = extend(
        tmp_path / "model",
        store,
        tmp_path / "extended",
        celltypes=["E065new"],
        n_epochs=2,
        verbose=False,
    )
    assert new.celltypes_[-1] == "E065new"
    history = new.history_
    assert history.train_mse.iloc[-1] < history.train_mse.iloc[0]
    # Everything but the new cell type's factors is frozen.
    after = Avocado.load(tmp_path / "extended")
    np.testing.assert_array_equal(
        after.predict_tracks([("E003", "H3K4me3"), ("E117", "H3K9me3")]), before
    )
    assert after.predict("E065new", "H3K4me3").shape == (N_POSITIONS,)
