"""Shared fixtures: the real test data in tests/data, the bundled store, devices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The real third-party files the tests read (tests/data; sources in its README.md)."""
    return TEST_DATA


@pytest.fixture(scope="session")
def pilot_store(tmp_path_factory):
    """The bundled 5 x 5 Roadmap pilot store, built once per session."""
    from epitensor.store.datasets import roadmap_pilot

    return roadmap_pilot(tmp_path_factory.mktemp("pilot") / "roadmap-pilot.zarr")


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> str:
    """Run a test on the CPU and, where one exists, on a CUDA GPU."""
    if request.param == "cuda" and not _cuda_available():
        pytest.skip("no CUDA device")
    return request.param


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Keep torch to the machine's cores (EPITENSOR_TEST_THREADS overrides) so parallel runs do not oversubscribe."""
    try:
        import torch

        default = min(2, os.cpu_count() or 1)
        torch.set_num_threads(int(os.environ.get("EPITENSOR_TEST_THREADS", default)))
    except ImportError:  # pragma: no cover
        pass


# The standard benchmark split of DESIGN.md: cell type i with assay (2i mod 5).
STANDARD_HOLDOUT = [
    ("E003", "H3K4me3"),
    ("E017", "H3K36me3"),
    ("E065", "H3K4me1"),
    ("E116", "H3K27me3"),
    ("E117", "H3K9me3"),
]


@pytest.fixture(scope="session")
def trained_model(pilot_store):
    """A small Avocado fitted on the pilot store with the standard split held out.

    One epoch of a 2 x 64 network with small factors (about 20 s on 2 cores).
    Session-scoped and shared: tests must not refit or extend it (``clone`` it
    or load a saved copy first).
    """
    from epitensor.estimators.avocado import Avocado

    model = Avocado(
        n_celltype_factors=8,
        n_assay_factors=16,
        n_25bp_factors=8,
        n_250bp_factors=8,
        n_5kbp_factors=8,
        n_layers=2,
        n_nodes=64,
        n_epochs=1,
        n_genome_epochs=1,
        batch_size=8192,
        lr=0.003,
        seed=0,
        verbose=False,
    )
    return model.fit(pilot_store, holdout=STANDARD_HOLDOUT)


def pilot_head_layout(n: int):
    """The layout of the first ``n`` positions of the pilot axis, on their true coordinates.

    The pilot regions as the bundled layout places them, the last one cut at
    ``n``: a model trained on the whole pilot sample and a store of its head
    agree bin for bin (issue 35, W4: consumers compare coordinates, so a
    store describing those positions as one chr1 stretch would be refused).
    """
    from epitensor.genome.coordinates import Layout
    from epitensor.genome.pilot import pilot_layout

    regions = pilot_layout().regions
    regions = regions[regions.offset < n].copy()
    last = regions.index[-1]
    regions.loc[last, "n_bins"] = n - int(regions.loc[last, "offset"])
    regions.loc[last, "end"] = (
        int(regions.loc[last, "first_bin"] + regions.loc[last, "n_bins"]) * 25
    )
    return Layout(regions.reset_index(drop=True), {"pilot": n}, 25, "pilot-head")


@pytest.fixture(scope="session")
def small_pilot_store(tmp_path_factory):
    """The first 40,000 positions of the pilot sample (all 25 real tracks) as a store."""
    from epitensor.genome.coordinates import chrom_sizes
    from epitensor.store.compendium import Store
    from epitensor.store.datasets import roadmap_pilot_arrays

    n = 40_000
    layout = pilot_head_layout(n)
    path = tmp_path_factory.mktemp("small") / "small.zarr"
    store = Store.create(path, layout, chrom_sizes("hg19"), genome="hg19")
    for (celltype, assay), values in roadmap_pilot_arrays().items():
        store.add_track(celltype, assay, {"pilot": values[:n]})
    return Store.open(path)


@pytest.fixture(scope="session")
def by_chrom_store(tmp_path_factory):
    """Three pilot regions (chr1, chr4, chr8; 20,002 positions each), one axis per chromosome.

    All 25 real tracks, so stage 2 has one task per chromosome as on a
    whole-genome store.
    """
    import numpy as np

    from epitensor.genome.coordinates import Layout, chrom_sizes
    from epitensor.genome.pilot import pilot_layout
    from epitensor.store.compendium import Store
    from epitensor.store.datasets import roadmap_pilot_arrays

    pilot = pilot_layout().regions
    picked = pilot[pilot.chrom.isin(["chr1", "chr4", "chr8"])]
    regions = picked.assign(axis=picked.chrom, offset=0)
    layout = Layout(regions, dict(zip(regions.axis, regions.n_bins)), name="pilot-by-chrom")
    path = tmp_path_factory.mktemp("by-chrom") / "store.zarr"
    store = Store.create(path, layout, chrom_sizes("hg19"), genome="hg19")
    arrays = roadmap_pilot_arrays()
    names = list(arrays)
    store.add_tracks(
        names,
        {
            row.chrom: np.stack([arrays[n][row.offset : row.offset + row.n_bins] for n in names])
            for row in picked.itertuples()
        },
    )
    return Store.open(path)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """One run of ``epitensor demo --quick`` (the CLI's result and the output folder).

    Shared by the tests that read a demo's outputs, so the suite runs it once.
    """
    from typer.testing import CliRunner

    from epitensor.cli import app

    folder = tmp_path_factory.mktemp("quick-demo")
    before = os.environ.get("EPITENSOR_CACHE")
    os.environ["EPITENSOR_CACHE"] = str(folder / "cache")
    try:
        out = folder / "demo"
        result = CliRunner().invoke(app, ["demo", "--quick", "--quiet", "--out", str(out)])
    finally:
        if before is None:
            os.environ.pop("EPITENSOR_CACHE", None)
        else:
            os.environ["EPITENSOR_CACHE"] = before
    return result, out
