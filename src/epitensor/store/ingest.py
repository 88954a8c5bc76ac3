"""Ingestion: read bigWig / bedGraph / wig / npz tracks, bin to 25 bp, transform, fill a store.

A *manifest* is a TSV file with a header and the columns ``celltype``, ``assay``
and ``path`` (relative to the manifest's folder, absolute, or an http(s) URL),
optionally ``md5`` (checked before reading) and ``scale`` (``raw``, the default:
the values are -log10 p and the store's transform is applied; or ``arcsinh``:
the values are already transformed and are stored as they are).

Every track is averaged into bins of the layout's resolution (25 bp): a bin's
value is the sum of signal x bases over the bin divided by the bin width, so
bases without data count as 0 (as the original Avocado did), including the
bases of a chromosome's last, partial bin that lie past the chromosome end.
Non-finite values (NaN, inf) become 0 with a warning that counts them; then
arcsinh is applied (in float64). A finite value that the store cannot hold
(beyond float32 in a text file, or beyond the store's float16 after the
transform) is an error naming the line or bin, as are overlapping records
of a bedGraph or wig file. Cell type and assay names follow
:func:`epitensor.io.names.validate_name`.

Tracks are read in worker processes, one chromosome (axis) of one track per
task for bigWig and array files, one whole file per task for the text formats
(which have no index), while the parent process writes into the store in
manifest order; at most ``2 * workers`` results wait in memory at any time.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import (
    EpitensorError,
    atomic_directory,
    check_parent_folder,
    is_local_path,
    local_path,
    progress,
    warn,
)
from epitensor.genome.coordinates import (
    BUILDS,
    Layout,
    check_bed_regions,
    chrom_sizes,
    natural_sort,
    read_bed,
)
from epitensor.io.fetch import (
    DEFAULT_DOWNLOAD_TIMEOUT,
    DEFAULT_MAX_DOWNLOAD,
    RunScratch,
    download,
    parse_size,
    terminate_cleanly,
    watch_parent,
)
from epitensor.io.manifest import TrackSpec, check_duplicates, read_manifest
from epitensor.io.names import validate_name
from epitensor.io.readers import (
    TRANSFORMS,
    ReadTally,
    TrackSource,
    check_choice,
    inspect_track,
    open_text,
    read_axes,
    task_axes,
)
from epitensor.store.compendium import DEFAULT_TRACK_CHUNK, Store
from epitensor.store.options import IngestOptions

__all__ = ["add_tracks", "ingest", "resolve_layout"]

BLOCK_BYTES = 256 << 20  # tracks buffered for one block write


# the store -----------------------------------------------------------------------------


def resolve_layout(
    regions: Layout | str | os.PathLike | None,
    sizes: pd.Series,
    chroms: Sequence[str] | None = None,
) -> Layout:
    """The layout to ingest onto.

    Parameters
    ----------
    regions : Layout, str, path-like or None
        A :class:`Layout`; ``"roadmap-pilot"`` (the bundled pilot layout); a BED
        file (regions concatenated on one axis, see :meth:`Layout.from_bed`);
        a layout TSV with an ``array_offset`` column; or None for whole
        chromosomes.
    sizes : pandas.Series
        Chromosome lengths of the genome.
    chroms : sequence of str, optional
        For whole chromosomes: which ones. Default None: all of ``sizes``.

    Returns
    -------
    Layout
    """
    if regions is None:
        return Layout.from_chrom_sizes(sizes, chroms=chroms)
    if isinstance(regions, Layout):
        layout = regions
    elif str(regions) == "roadmap-pilot":
        from epitensor.genome.pilot import pilot_layout

        layout = pilot_layout()
    else:
        if not Path(regions).is_file():
            raise EpitensorError(f"regions file not found: {regions}; pass a BED file")
        with open_text(regions) as handle:
            first = handle.readline()
        if "array_offset" in first:
            layout = Layout.from_avocado_table(regions)
        else:
            bed = read_bed(regions)
            check_bed_regions(bed, sizes, regions)  # W12: negative, past the end, overlapping
            layout = Layout.from_bed(bed)
    unknown = sorted(set(layout.regions.chrom) - set(sizes.index))
    if unknown:
        raise EpitensorError(
            f"regions {getattr(regions, 'name', regions)}: chromosome(s) {unknown[:5]} not in "
            f"the genome; pass the regions' build with --genome"
        )
    return layout


class _Inline:
    """An executor that runs each task at submission (workers <= 1: no processes)."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Nothing to stop."""


def _executor(workers: int, ray_address: str | None = None):
    if ray_address is not None:
        from epitensor.parallel import RayExecutor

        return RayExecutor(ray_address)
    if workers <= 1:
        return _Inline()
    # spawn: the parent may hold zarr's event-loop thread, which fork would copy half-alive
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=watch_parent,
        initargs=(os.getpid(),),
    )


def _stop(pool, interrupted: bool) -> None:
    """Shut the pool down; on SIGTERM / Ctrl-C, end its workers instead of awaiting their tasks."""
    if interrupted and isinstance(pool, ProcessPoolExecutor):
        # the public API of Python < 3.14 cannot end busy workers; _processes is stable since 3.2
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _pool(workers: int, ray_address: str | None) -> Iterator:
    pool = _executor(workers, ray_address)
    interrupted = False
    try:
        yield pool
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        raise
    finally:
        _stop(pool, interrupted)


def _ordered(pool, tasks: list, window: int) -> Iterator:
    """Results of ``(fn, *args)`` tasks in order, with at most ``window`` in flight."""
    pending: list[Future] = []
    tasks_iter = iter(tasks)
    for task in tasks_iter:
        pending.append(pool.submit(*task))
        if len(pending) >= window:
            break
    while pending:
        result = pending.pop(0).result()
        nxt = next(tasks_iter, None)
        if nxt is not None:
            pending.append(pool.submit(*nxt))
        yield result


def _fetch(specs: Sequence[TrackSpec], scratch: RunScratch, limits: tuple[float, int]) -> list[str]:
    """Local paths of the track files, downloading URLs into the run's scratch.

    ``limits`` is ``(seconds for all downloads, largest file in bytes)``.
    """
    deadline = time.monotonic() + limits[0]
    paths = []
    for i, spec in enumerate(specs):
        if is_local_path(spec.path):
            paths.append(str(spec.path).removeprefix("file://"))
            continue
        name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(spec.path.split("?")[0]).name)[-80:]
        target = scratch.downloads / f"{i}-{name}"
        download(spec.path, target, spec.where, deadline, limits[1])
        paths.append(str(target))
    return paths


def _check_limits(download_timeout: float, max_download: int | str) -> tuple[float, int]:
    if not download_timeout > 0:
        raise EpitensorError(
            f"download_timeout must be a positive number of seconds; got {download_timeout!r}"
        )
    return float(download_timeout), parse_size(max_download)


def _inspect_all(pool, specs, paths, sizes, genome) -> list[TrackSource]:
    sources = list(
        _ordered(pool, [(inspect_track, s, p, sizes, genome) for s, p in zip(specs, paths)], 64)
    )
    for source in sources:
        for note in source.notes:
            warn(note, 4)
    return sources


def _write_tracks(
    store: Store, sources: list[TrackSource], pool, workers: int, verbose: bool
) -> None:
    """Read every track in the pool and write it into the store, in manifest order.

    When a whole chunk of tracks (``DEFAULT_TRACK_CHUNK`` rows) of the whole
    layout fits in ``BLOCK_BYTES`` (in the store's dtype), tracks are gathered into blocks
    aligned with the store's track chunks and each block is written at once:
    :meth:`Store.add_track` would recompress every chunk once per track. Larger
    layouts (whole genomes) stream one axis of one track at a time.
    """
    layout, transform = store.layout, store.transform
    tasks, owners = [], []
    for k, source in enumerate(sources):
        for axes in task_axes(source, layout):
            tasks.append((read_axes, source, layout, axes, transform, store.dtype))
            owners.append(k)
    counts = [owners.count(k) for k in range(len(sources))]
    results = _ordered(pool, tasks, max(2, 2 * workers))
    total = len(sources) * layout.n_positions
    with progress(total=total, desc="ingest", verbose=verbose, unit="bin", unit_scale=True) as bar:

        def pieces(k: int) -> Iterator[tuple[str, np.ndarray]]:
            tally = ReadTally(sources[k], layout)
            for _ in range(counts[k]):
                for axis, values, n_bad in next(results):
                    tally.add(values, n_bad)
                    bar.update(len(values))
                    yield axis, values
            tally.close()

        chunk = DEFAULT_TRACK_CHUNK
        if chunk * layout.n_positions * np.dtype(store.dtype).itemsize > BLOCK_BYTES:
            for k, source in enumerate(sources):
                spec = source.spec
                store.add_track(spec.celltype, spec.assay, pieces(k), spec.path, spec.md5)
            return
        k = 0
        while k < len(sources):
            batch = list(range(k, min(len(sources), k + chunk - store.n_tracks % chunk)))
            _write_block(store, [sources[i].spec for i in batch], [pieces(i) for i in batch])
            k = batch[-1] + 1


def _write_block(store: Store, specs: list[TrackSpec], tracks: list[Iterator]) -> None:
    """Gather a few tracks in memory and add them with one block write per axis."""
    layout = store.layout
    dtype = np.dtype(store.dtype)
    block = {a: np.zeros((len(specs), n), dtype=dtype) for a, n in layout.axis_lengths.items()}
    for row, track in enumerate(tracks):
        for axis, values in track:
            block[axis][row] = values
    store.add_tracks(
        [(spec.celltype, spec.assay) for spec in specs],
        block,
        source=[spec.path for spec in specs],
        md5=[spec.md5 for spec in specs],
    )


def _add(store: Store, specs: Sequence[TrackSpec], run: _Run) -> None:
    local = is_local_path(store.url)
    # a remote store has no folder beside it here: its run folder goes to the temp folder
    beside = local_path(store.url) if local else Path(tempfile.gettempdir()) / "remote-store"
    with RunScratch(beside, run.scratch) as scratch:
        paths = _fetch(specs, scratch, run.limits)
        if local:
            scratch.snapshot(local_path(store.url))
        n_rows = store.n_tracks
        try:
            with _pool(run.workers, run.ray_address) as pool:
                sources = _inspect_all(pool, specs, paths, store.chrom_sizes, store.genome)
                _warn_dropped(store.layout, sources)
                _write_tracks(store, sources, pool, run.workers, run.verbose)
        except BaseException:
            if local:
                scratch.restore()
            else:
                store.truncate_tracks(n_rows)
            raise


@dataclass(frozen=True)
class _Run:
    """How one ingest runs: workers, progress, Ray, scratch folder, download limits."""

    workers: int
    verbose: bool
    ray_address: str | None
    scratch: str | os.PathLike | None
    limits: tuple[float, int]


def _warn_dropped(layout: Layout, sources: list[TrackSource]) -> None:
    """Warn when appended tracks have data on chromosomes a whole-genome store lacks."""
    if not layout.is_whole_genome:
        return
    kept = set(layout.regions.chrom)
    for source in sources:
        dropped = [c for c in source.chroms if c not in kept]
        if dropped:
            warn(
                f"{source.spec.where}: data on {', '.join(dropped[:3])}"
                f"{', ...' if len(dropped) > 3 else ''} dropped: the store holds only "
                f"{len(kept)} chromosomes; ingest all tracks together to keep them",
                3,
            )


def _default_workers(workers: int | None, n_tracks: int) -> int:
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if int(workers) < 0:
        raise EpitensorError(f"workers must be a positive integer; got workers={workers!r}")
    return max(1, min(int(workers), n_tracks))


def add_tracks(
    store: Store | str | os.PathLike,
    manifest: str | os.PathLike | Sequence[TrackSpec],
    workers: int | None = None,
    verbose: bool = True,
    ray_address: str | None = None,
    scratch: str | os.PathLike | None = None,
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
    max_download: int | str = DEFAULT_MAX_DOWNLOAD,
) -> Store:
    """Add the tracks of a manifest to an existing store, all or none.

    Tracks are binned onto the store's layout and genome. When any track fails
    (or the run is stopped by SIGTERM or Ctrl-C), a local store is put back
    byte for byte as it was (from a snapshot of hard links in the run's
    scratch folder); a remote store gets its track list and row count back.

    Parameters
    ----------
    store : Store, str or path-like
        The store (opened with ``mode="r+"`` when given as a path).
    manifest : str, path-like or sequence of TrackSpec
        Manifest TSV, or the tracks directly.
    workers : int, optional
        Worker processes. Default None: the number of CPUs (at most 8);
        1 reads in this process.
    verbose : bool
        Show a progress bar on stderr. Default True.
    ray_address : str, optional
        Read the tracks as Ray tasks (``"local"``, ``"auto"`` or an address;
        the files must be readable by every worker); this process writes the
        store. Default None: worker processes on this machine.
    scratch, download_timeout, max_download
        As for :func:`ingest`.

    Returns
    -------
    Store
        The store, reopened read-only.

    Examples
    --------
    >>> import epitensor as et
    >>> store = et.add_tracks("my.zarr", "more_tracks.tsv")  # same columns as ingest's manifest
    """
    limits = _check_limits(download_timeout, max_download)
    if not isinstance(store, Store):
        if is_local_path(store):  # before reading the track list: undo an append that was killed
            RunScratch(local_path(store), scratch).clean_stale()
        store = Store.open(store, mode="r+")
    specs = _specs(manifest)
    with store.locked():  # other writers wait; the track list is re-read under the lock
        check_duplicates(specs, f"store {store.url}", store.track_names())
        run = _Run(_default_workers(workers, len(specs)), verbose, ray_address, scratch, limits)
        with terminate_cleanly(), _writing(store.url):
            _add(store, specs, run)
    return Store.open(store.url)


@contextlib.contextmanager
def _writing(out: str | os.PathLike) -> Iterator[None]:
    """Turn an OS error while the store is written (disk full, read-only) into one line."""
    try:
        yield
    except OSError as exc:
        what = f"{exc.strerror} ({exc.filename})" if exc.strerror and exc.filename else exc
        raise EpitensorError(
            f"cannot write the store {out}: {what}; free disk space or choose a writable --out "
            f"(nothing was changed)"
        ) from None


def _specs(manifest) -> list[TrackSpec]:
    if isinstance(manifest, (str, os.PathLike)):
        return read_manifest(manifest)
    specs = list(manifest)
    for i, spec in enumerate(specs, 1):
        where = f"track {i} of the list ({spec.path!r})"  # spec.where would print the bad name
        validate_name(spec.celltype, "cell type", where)
        validate_name(spec.assay, "assay", where)
    check_duplicates(specs, "tracks")
    if not specs:
        raise EpitensorError("no tracks to ingest; the manifest is empty")
    return specs


def ingest(
    manifest: str | os.PathLike | Sequence[TrackSpec],
    out: str | os.PathLike,
    *,
    options: IngestOptions | None = None,
    **overrides,
) -> Store:
    """Build a compendium store from the tracks of a manifest.

    The settings (genome, regions, workers, appending, overwriting, the
    transform, Ray, downloads) are an
    :class:`~epitensor.store.options.IngestOptions`, given whole as
    ``options`` or field by field as keywords (``genome="hg38"``), or both
    (the keywords win); ``epitensor ingest`` builds the same object.

    Parameters
    ----------
    manifest : str, path-like or sequence of TrackSpec
        Manifest TSV (columns ``celltype, assay, path``, optional ``md5``,
        ``scale``), or the tracks directly.
    out : str or path-like
        Local folder of the new store. It is built under a temporary name and
        renamed into place only when every track was read.
    options : IngestOptions, optional
        The settings. Default None: ``IngestOptions()``.
    **overrides
        Fields of :class:`~epitensor.store.options.IngestOptions` replacing
        those of ``options`` (``genome``, ``regions``, ``workers``,
        ``verbose``, ``append``, ``overwrite``, ``transform``,
        ``ray_address``, ``scratch``, ``download_timeout``,
        ``max_download``); any other name is refused.

    Returns
    -------
    Store
        The new store, opened read-only.

    Examples
    --------
    A manifest is a TSV with the columns ``celltype``, ``assay`` and ``path``:

    >>> import epitensor as et
    >>> store = et.ingest("manifest.tsv", "my.zarr", genome="hg19")  # whole chromosomes
    >>> store = et.ingest("manifest.tsv", "pilot.zarr", regions="roadmap-pilot")  # pilot regions
    >>> store.track_names()[:2]
    """
    opts = IngestOptions.resolve(options, **overrides)
    fetching = {"scratch": opts.scratch, "download_timeout": opts.download_timeout}
    if opts.append:
        return add_tracks(
            out,
            manifest,
            opts.workers,
            opts.verbose,
            opts.ray_address,
            max_download=opts.max_download,
            **fetching,
        )
    check_choice("transform", opts.transform, TRANSFORMS)
    limits = _check_limits(opts.download_timeout, opts.max_download)
    if not is_local_path(out):
        raise EpitensorError(f"ingest writes local stores; got {out}: build it locally, then copy")
    specs = _specs(manifest)
    if Path(out).exists() and not opts.overwrite:
        raise EpitensorError(f"{out} already exists; pass --append, --overwrite or another --out")
    sizes = chrom_sizes(opts.genome)
    build = str(opts.genome) if str(opts.genome) in BUILDS else "custom"
    check_parent_folder(Path(out), "the store")
    run = _Run(
        _default_workers(opts.workers, len(specs)),
        opts.verbose,
        opts.ray_address,
        opts.scratch,
        limits,
    )
    with (
        terminate_cleanly(),
        _writing(out),
        RunScratch(out, opts.scratch) as run_scratch,
        atomic_directory(out, overwrite=opts.overwrite) as tmp,
    ):
        run_scratch.own(tmp)
        paths = _fetch(specs, run_scratch, run.limits)
        with _pool(run.workers, run.ray_address) as pool:
            sources = _inspect_all(pool, specs, paths, sizes, build)
            layout = _layout_for(opts.regions, sizes, sources)
            store = Store.create(
                tmp, layout, sizes, genome=build, transform=opts.transform, overwrite=True
            )
            _write_tracks(store, sources, pool, run.workers, run.verbose)
    return Store.open(out)


def _layout_for(regions, sizes: pd.Series, sources: list[TrackSource]) -> Layout:
    if regions is not None:
        return resolve_layout(regions, sizes)
    arrays = [s for s in sources if not s.mapping]
    if arrays:
        raise EpitensorError(
            f"{arrays[0].spec.where}: an npz/npy array needs a layout: pass --regions "
            f"(the regions the array was made on), or name its arrays after chromosomes"
        )
    chroms = natural_sort(set().union(*(s.chroms for s in sources)))
    return resolve_layout(None, sizes, chroms=chroms)
