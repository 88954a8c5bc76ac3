"""Make tests/data/saved-model-v1: a tiny model saved by the epitensor of 2026-12-01.

A saved model is a promise to users: every later release must load this
directory and predict the numbers stored beside it (``expected.npz``). Never
regenerate it to make a failing test pass; add a new fixture instead.

Run from the repository root (one torch thread, so the numbers do not depend
on the machine's core count)::

    python tests/data/make_saved_model.py

The model: a 2 x 16 network with 4 factors per component, fitted for one epoch
on the first 3,000 positions of the first pilot region (all 25 real tracks,
axis ``"head"``), then stage 2 for one epoch on the next 3,000 positions
(axis ``"next"``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from epitensor.estimators.avocado import Avocado
from epitensor.genome.coordinates import Layout, chrom_sizes
from epitensor.genome.pilot import pilot_layout
from epitensor.store.compendium import Store
from epitensor.store.datasets import roadmap_pilot_arrays

HERE = Path(__file__).resolve().parent
MODEL = HERE / "saved-model-v1"
EXPECTED = HERE / "saved-model-v1.expected.npz"
N = 3_000
TRACKS = [("E003", "H3K4me3"), ("E065", "H3K4me1"), ("E117", "H3K27me3")]


def build_store(path: Path) -> Store:
    """The first 2 x 3,000 positions of the first pilot region, as axes head and next."""
    first = pilot_layout().regions.iloc[0]
    rows = []
    for k, axis in enumerate(("head", "next")):
        bin0 = int(first.first_bin) + k * N
        rows.append(
            {"axis": axis, "chrom": first.chrom, "start": bin0 * 25, "end": (bin0 + N) * 25,
             "name": f"pilot-{axis}", "offset": 0, "first_bin": bin0, "n_bins": N}
        )  # fmt: skip
    layout = Layout(pd.DataFrame(rows), {"head": N, "next": N}, 25, "saved-model-fixture")
    store = Store.create(path, layout, chrom_sizes("hg19"), genome="hg19")
    for (celltype, assay), values in roadmap_pilot_arrays().items():
        store.add_track(celltype, assay, {"head": values[:N], "next": values[N : 2 * N]})
    return Store.open(path)


def expected_numbers(model: Avocado) -> dict[str, np.ndarray]:
    """What the saved model must give back: predictions, factors, embeddings."""
    out = {}
    for axis in ("head", "next"):
        out[f"predict_{axis}"] = model.predict_tracks(TRACKS, axis=axis)
        out[f"factors_{axis}"] = model.genome_factors(axis)
    out["celltype_embedding"] = model.celltype_embedding_
    out["assay_embedding"] = model.assay_embedding_
    return out


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp) / "store.zarr")
        model = Avocado(
            n_celltype_factors=4, n_assay_factors=4, n_25bp_factors=4, n_250bp_factors=4,
            n_5kbp_factors=4, n_layers=2, n_nodes=16, n_epochs=1, n_genome_epochs=1,
            batch_size=2048, lr=3e-3, seed=0, device="cpu", verbose=False,
        )  # fmt: skip
        model.fit(store, axes=["head"], holdout=[("E003", "H3K4me3")])
        model.fit_genome(store, axes=["next"])
        if MODEL.exists():
            shutil.rmtree(MODEL)
        model.save(MODEL)
        np.savez(EXPECTED, **expected_numbers(model))
    print(f"wrote {MODEL} and {EXPECTED}")


if __name__ == "__main__":
    main()
