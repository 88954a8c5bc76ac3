"""The bundled real sample: the 5 x 5 Roadmap Epigenomics pilot-region tensor."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from epitensor._utils import EpitensorError, atomic_directory, package_data
from epitensor.genome.coordinates import chrom_sizes
from epitensor.genome.pilot import pilot_layout
from epitensor.store.compendium import Store

ROADMAP_CELLTYPES = ["E003", "E017", "E065", "E116", "E117"]
ROADMAP_ASSAYS = ["H3K4me3", "H3K27me3", "H3K36me3", "H3K9me3", "H3K4me1"]

__all__ = [
    "ROADMAP_ASSAYS",
    "ROADMAP_CELLTYPES",
    "cache_dir",
    "roadmap_pilot",
    "roadmap_pilot_arrays",
]


def cache_dir() -> Path:
    """Folder for derived data: ``$EPITENSOR_CACHE`` or ``~/.cache/epitensor``."""
    return Path(os.environ.get("EPITENSOR_CACHE", Path.home() / ".cache" / "epitensor"))


def roadmap_pilot_arrays() -> dict[tuple[str, str], np.ndarray]:
    """The 25 bundled tracks as arrays.

    Returns
    -------
    dict of (str, str) to numpy.ndarray, shape=(1126469,), float32, arcsinh
        Keyed by ``(celltype, assay)``.
    """
    with np.load(package_data("roadmap_pilot.npz")) as bundle:
        return {
            (c, a): bundle[f"{c}.{a}"].astype(np.float32)
            for c in ROADMAP_CELLTYPES
            for a in ROADMAP_ASSAYS
        }


def _sound(path: Path) -> bool:
    """True when ``path`` holds a store that opens and has checksums (else it is rebuilt)."""
    if not path.exists():
        return False
    try:
        return Store.open(path).has_checksums
    except EpitensorError:
        return False


def bundled_store_path() -> Path:
    """Where :func:`roadmap_pilot` builds the bundled sample's store by default."""
    return cache_dir() / "roadmap-pilot.zarr"


def roadmap_pilot(path: str | os.PathLike | None = None, overwrite: bool = False) -> Store:
    """Open the bundled Roadmap sample as a store, building it on first use.

    Five cell types (E003 H1 ESC, E017 IMR-90, E065 aorta, E116 GM12878,
    E117 HeLa-S3) x five histone marks (H3K4me3, H3K27me3, H3K36me3, H3K9me3,
    H3K4me1): Roadmap consolidated MACS2 -log10 p-value signal, 25-bp means,
    arcsinh, over the ENCODE pilot regions of hg19.

    Parameters
    ----------
    path : str or path-like, optional
        Where to build the store. Default None: ``cache_dir()/roadmap-pilot.zarr``.
    overwrite : bool
        Rebuild even when the store exists. Default False: rebuild only a
        store that does not open or was written before chunk checksums.

    Returns
    -------
    Store
        Opened read-only.

    Examples
    --------
    >>> import epitensor as et
    >>> store = et.roadmap_pilot()
    >>> store.celltypes, store.assays
    """
    path = Path(path) if path is not None else bundled_store_path()
    if overwrite or not _sound(path):
        layout = pilot_layout()
        with atomic_directory(path, overwrite=True) as tmp:
            store = Store.create(tmp, layout, chrom_sizes("hg19"), genome="hg19", overwrite=True)
            arrays = roadmap_pilot_arrays()
            store.add_tracks(
                list(arrays),
                {layout.axes[0]: np.stack(list(arrays.values()))},
                source="epitensor/data/roadmap_pilot.npz",
            )
    return Store.open(path)
