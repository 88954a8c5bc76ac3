"""Stores by name: open a compendium from a path, a URL, a list of them or a bundled dataset's name.

The bundled datasets are listed once, in :data:`DATASETS`: each name maps to
the function that builds (on first use) and opens it, and to where it is
built, so a model that trained on one records its name, not a cache path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from epitensor.store.compendium import RegionView, Store, TrackUnion, location_hint
from epitensor.store.datasets import bundled_store_path, roadmap_pilot

__all__ = ["DATASETS", "BundledDataset", "open_store", "store_reference"]


@dataclass(frozen=True)
class BundledDataset:
    """A dataset shipped with the package: how to open it and where it is built."""

    open: Callable[[], Store]
    path: Callable[[], Path]


#: The bundled datasets by the name a user types wherever a store goes.
DATASETS: dict[str, BundledDataset] = {
    "roadmap-pilot": BundledDataset(open=roadmap_pilot, path=bundled_store_path),
}


def store_reference(store: Store) -> str | list[str]:
    """What reopens ``store`` with :func:`open_store`: ``"roadmap-pilot"`` for the bundled sample.

    A local store is named by its absolute path (a relative one would be
    resolved against whatever folder a later command runs in). The path is
    only a hint: what a model was made from is checked by content
    (:mod:`epitensor.store.identity`). A :class:`RegionView` gives the store it
    reads; a :class:`TrackUnion` the list of its stores' references.
    """
    if isinstance(store, RegionView):
        return store_reference(store.source)
    if isinstance(store, TrackUnion):
        return [store_reference(source) for source in store.sources]
    url = str(store.url)
    if "://" not in url:
        for name, dataset in DATASETS.items():
            if Path(url).resolve() == dataset.path().resolve():
                return name
    return location_hint(url)


def open_store(store: Store | str | os.PathLike | list | tuple, mode: str = "r") -> Store:
    """Open a store from a path or URL; the name ``"roadmap-pilot"`` is the bundled sample.

    A list or tuple of stores (paths, URLs or open stores) opens as their
    :class:`TrackUnion` (one alone as itself), read-only.

    Parameters
    ----------
    store : Store, str, path-like, or a list of them
        An open store (returned as it is), a path or fsspec URL of a Zarr
        compendium, the name of a bundled dataset (:data:`DATASETS`), or a list.
    mode : str
        ``"r"`` (default) or ``"r+"`` to append tracks.

    Returns
    -------
    Store

    Examples
    --------
    >>> import epitensor as et
    >>> store = et.open_store("roadmap-pilot")  # the bundled sample, built on first use
    >>> store = et.open_store("my.zarr")  # a store written by et.ingest
    >>> store = et.open_store("s3://bucket/my.zarr")  # any filesystem fsspec reaches
    """
    if isinstance(store, Store):
        return store
    if isinstance(store, list | tuple):
        stores = [open_store(one) for one in store]
        return stores[0] if len(stores) == 1 else TrackUnion(stores)
    if str(store) in DATASETS:
        return DATASETS[str(store)].open()
    return Store.open(store, mode=mode)
