"""Options of building a store: :class:`IngestOptions`, its defaults declared once.

Like the other options modules it imports neither numpy nor zarr, so the
command line reads the defaults when it starts; :func:`epitensor.store.ingest.ingest`
checks the values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from epitensor._utils import JobOptions
from epitensor.io.fetch import DEFAULT_DOWNLOAD_TIMEOUT, DEFAULT_MAX_DOWNLOAD

if TYPE_CHECKING:
    from epitensor.genome.coordinates import Layout

__all__ = ["IngestOptions"]


@dataclass(frozen=True)
class IngestOptions(JobOptions):
    """How :func:`epitensor.store.ingest.ingest` reads the tracks and builds the store.

    The manifest and the output folder are arguments of the function; the
    settings are here, with their defaults. ``epitensor ingest`` builds one
    from its options.

    Parameters
    ----------
    genome : str or path-like
        ``"hg19"`` (default), ``"hg38"``, ``"mm10"`` or a ``chrom.sizes`` file.
        Ignored with ``append`` (the store's genome is used).
    regions : Layout, str, path-like or None
        Region layout (see :func:`epitensor.store.ingest.resolve_layout`):
        a BED file, ``"roadmap-pilot"`` or a :class:`Layout`. Default None:
        whole chromosomes, restricted to those the tracks have data on.
    workers : int, optional
        Worker processes. Default None: the number of CPUs (at most 8);
        1 reads in this process.
    verbose : bool
        Progress bar on stderr. Default True.
    append : bool
        Add the tracks to the existing store at ``out`` (see
        :func:`epitensor.store.ingest.add_tracks`). Default False.
    overwrite : bool
        Replace an existing store at ``out``. Default False: refuse.
    transform : {"arcsinh", "none"}
        Transform of the binned signal. Default ``"arcsinh"``.
    ray_address : str, optional
        Read the tracks as Ray tasks (``"local"``, ``"auto"`` or an address;
        the files must be readable by every worker); this process writes the
        store, in manifest order. Default None: worker processes on this machine.
    scratch : str or path-like, optional
        Folder for downloaded track files. Default None: the run's scratch
        folder beside ``out`` (``.OUT.ingest-HOST-PID``, removed at the end; a
        later run removes those of runs that were killed).
    download_timeout : float
        Seconds all downloads of the run may take together. Default 14400 (4 h).
    max_download : int or str
        Largest file downloaded, in bytes or with a K/M/G/T suffix. Default
        16 GiB.

    Examples
    --------
    >>> import epitensor as et
    >>> et.IngestOptions(regions="roadmap-pilot").genome
    'hg19'
    """

    genome: str | os.PathLike = "hg19"
    regions: Layout | str | os.PathLike | None = None
    workers: int | None = None
    verbose: bool = True
    append: bool = False
    overwrite: bool = False
    transform: str = "arcsinh"
    ray_address: str | None = None
    scratch: str | os.PathLike | None = None
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT
    max_download: int | str = DEFAULT_MAX_DOWNLOAD
