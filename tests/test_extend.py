"""Adding cell types and assays to a saved model: only the new rows change, the original stays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import pilot_head_layout
from epitensor._utils import EpitensorError, md5sum
from epitensor.cli import app
from epitensor.estimators.avocado import Avocado
from epitensor.genome.coordinates import chrom_sizes
from epitensor.store.compendium import Store
from epitensor.store.datasets import roadmap_pilot_arrays
from epitensor.workflows.extend import extend

N = 40_000


@pytest.fixture(scope="module")
def new_store(tmp_path_factory):
    """The first 40,000 pilot positions holding real tracks under names the model lacks.

    ``E065x`` is aorta (E065) H3K4me3 as a new cell type; ``H3K4me3x`` is H3K4me3 of
    E003 and E116 as a new assay.
    """
    layout = pilot_head_layout(N)  # the true coordinates of those positions
    store = Store.create(tmp_path_factory.mktemp("new") / "new.zarr", layout, chrom_sizes("hg19"))
    arrays = roadmap_pilot_arrays()
    for celltype, assay, source in [
        ("E065x", "H3K4me3", ("E065", "H3K4me3")),
        ("E003", "H3K4me3x", ("E003", "H3K4me3")),
        ("E116", "H3K4me3x", ("E116", "H3K4me3")),
    ]:
        store.add_track(celltype, assay, {"pilot": arrays[source][:N]})
    return store


@pytest.fixture(scope="module")
def model_dir(trained_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("extend") / "model"
    trained_model.save(path)
    return path


def _hashes(path):
    return {p.relative_to(path): md5sum(p) for p in sorted(path.rglob("*")) if p.is_file()}


def _state(model: Avocado) -> dict[str, torch.Tensor]:
    model.genome_module("pilot")
    return {k: v.detach().clone() for k, v in model.module_.state_dict().items()}


def test_extend_celltype_cli_freezes_the_model(model_dir, new_store, tmp_path):
    before = _hashes(model_dir)
    out = tmp_path / "extended"
    result = CliRunner().invoke(
        app,
        ["extend", str(model_dir), new_store.url, "--celltype", "E065x"]
        + ["--out", str(out), "--epochs", "1", "-q"],
    )
    assert result.exit_code == 0, result.output
    assert _hashes(model_dir) == before  # the original directory is byte for byte the same
    old, new = Avocado.load(model_dir), Avocado.load(out)
    assert new.celltypes_ == old.celltypes_ + ["E065x"] and new.assays_ == old.assays_
    old_state, new_state = _state(old), _state(new)
    assert old_state.keys() == new_state.keys()
    n_old = len(old.celltypes_)
    for name, value in old_state.items():
        if name == "celltype_embedding.weight":
            assert torch.equal(new_state[name][:n_old], value)
            assert new_state[name].shape[0] == n_old + 1
        else:
            assert torch.equal(new_state[name], value), name
    assert new.history_.stage.iloc[-1].startswith("transfer")
    # the new cell type is imputable for assays it was never observed with
    assert np.isfinite(new.predict("E065x", "H3K27me3", start=0, end=1000)).all()
    with pytest.raises(EpitensorError, match="already in the model"):
        extend(out, new_store, tmp_path / "again", celltypes=["E065x"], n_epochs=1, verbose=False)


def test_extend_assay_and_errors(model_dir, new_store, tmp_path):
    assert CliRunner().invoke(app, ["extend", "--help"]).exit_code == 0
    result = CliRunner().invoke(app, ["extend", str(model_dir), new_store.url, "--out", "x"])
    assert result.exit_code != 0 and "one kind per call" in result.output
    with pytest.raises(EpitensorError, match="is the original model"):
        extend(model_dir, new_store, model_dir, assays=["H3K4me3x"], overwrite=True)
    with pytest.raises(EpitensorError, match="not both or none"):
        extend(model_dir, new_store, tmp_path / "x", celltypes=["E065x"], assays=["H3K4me3x"])
    with pytest.raises(EpitensorError, match="no tracks of"):
        extend(model_dir, new_store, tmp_path / "x", celltypes=["E999"], verbose=False)
    old = Avocado.load(model_dir)
    new = extend(
        model_dir, new_store, tmp_path / "assay", assays=["H3K4me3x"], n_epochs=1, verbose=False
    )
    assert new.assays_ == old.assays_ + ["H3K4me3x"]
    n_old = len(old.assays_)
    new_rows = new.module_.assay_embedding.weight.detach()
    assert torch.equal(new_rows[:n_old], old.module_.assay_embedding.weight.detach())
    assert torch.equal(
        new.module_.celltype_embedding.weight.detach(),
        old.module_.celltype_embedding.weight.detach(),
    )
    for mine, theirs in zip(new.module_.network.parameters(), old.module_.network.parameters()):
        assert torch.equal(mine, theirs)
