"""A model saved by an earlier release still loads and predicts the same numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from epitensor.estimators.avocado import Avocado

DATA = Path(__file__).resolve().parent / "data"
MODEL = DATA / "saved-model-v1"
TRACKS = [("E003", "H3K4me3"), ("E065", "H3K4me1"), ("E117", "H3K27me3")]


@pytest.fixture
def one_thread():
    """One torch thread, as when the fixture was made (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_saved_model_v1_loads_and_predicts_its_numbers(one_thread):
    expected = np.load(DATA / "saved-model-v1.expected.npz")
    model = Avocado.load(MODEL)
    assert model.celltypes_ == ["E003", "E017", "E065", "E116", "E117"]
    assert set(model.genome_axes_) == {"head", "next"}
    assert model.holdout_tracks_ == [("E003", "H3K4me3")]
    # stored tensors come back bit for bit
    np.testing.assert_array_equal(model.celltype_embedding_, expected["celltype_embedding"])
    np.testing.assert_array_equal(model.assay_embedding_, expected["assay_embedding"])
    for axis in ("head", "next"):
        np.testing.assert_array_equal(model.genome_factors(axis), expected[f"factors_{axis}"])
        got = model.predict_tracks(TRACKS, axis=axis)
        assert got.shape == (3, 3_000)
        # computed values: equal up to the rounding of another CPU's kernels
        np.testing.assert_allclose(got, expected[f"predict_{axis}"], rtol=1e-6, atol=1e-6)


def test_saved_model_v1_imputes_through_the_cli(one_thread, tmp_path):
    from typer.testing import CliRunner

    from epitensor.cli import app

    out = tmp_path / "E065.H3K4me1.bedGraph"
    result = CliRunner().invoke(
        app,
        ["impute", str(MODEL), "--celltype", "E065", "--assay", "H3K4me1", "--out", str(out),
         "--arcsinh", "--bedgraph", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()[1:]
    values = np.array([float(line.split("\t")[3]) for line in lines], dtype=np.float32)
    expected = np.load(DATA / "saved-model-v1.expected.npz")
    both = np.concatenate([expected["predict_head"][1], expected["predict_next"][1]])
    assert len(values) == 6_000
    np.testing.assert_allclose(values, both, rtol=1e-6, atol=2e-6)
