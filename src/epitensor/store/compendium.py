"""The compendium store: observed tracks on a layout, in Zarr, with batch access.

Layout on disk (Zarr v3, any fsspec URL)::

    STORE/
      zarr.json                 group attributes: format version, genome,
                                chromosome sizes, resolution, transform, dtype,
                                layout, the ordered track list (cell type,
                                assay, source file, md5)
      signal/<axis>             float16 array, shape (n_tracks, n_positions),
                                chunks (track_chunk, position_chunk)

Row ``k`` of every axis array is track ``k`` of the track list. Tracks are stored
as float16: the arcsinh signal lies in [0, ~10], where float16 keeps a relative
error below 5e-4 (an absolute error below 0.005, far under the MSE differences
between methods), and halves disk space and read bandwidth against float32.
Readers return float32.

The track list is written last when tracks are added, so an interrupted write
leaves the store as it was: rows past the listed tracks are ignored and reused.

Integrity: each chunk ends with a CRC-32C checksum (the Zarr v3 ``crc32c``
codec) and the arrays' fill value is NaN, so a chunk with changed bytes fails
to decode and a deleted chunk reads as NaN; readers turn both into an error
naming the store, axis and chunk instead of returning other numbers. Stores
written before (no checksum, fill value 0) still open; ``epitensor info
--check`` says they cannot be verified. Writers hold :func:`output_lock` on
the store, so concurrent appends wait for each other.

Identity by content: a chunk's CRC-32C covers its bytes, not where it lies,
so the metadata also keeps a table of every chunk's CRC by its key
(``chunk_crc32c``: per axis, per row of chunks, 8 hex digits per chunk). A
chunk file moved to another key decodes but its CRC is not the one recorded
there: reads and ``info --check`` refuse it. Each track also gets a sha256
of its stored values per axis (``track_digests``, parallel to ``tracks``),
computed when it is written, and each axis a digest of its coordinates (the
regions' chromosome, start, end and offset). :meth:`Store.identity` combines
them: what a model, a checkpoint, a study or an imputation records of the
data it was made from (see :mod:`epitensor.store.identity`). Stores written
before have neither table: they open, and their tracks cannot be verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import EpitensorError, is_local_path, local_path, output_lock, progress
from epitensor.genome.coordinates import Layout

FORMAT_VERSION = 1
DEFAULT_POSITION_CHUNK = 1 << 14
DEFAULT_TRACK_CHUNK = 32
DTYPES = ("float16", "float32")
TRANSFORMS = ("arcsinh", "none")
TRACK_COLUMNS = ["celltype", "assay", "source", "md5"]
_REINGEST = "re-ingest it (`epitensor ingest MANIFEST --out STORE --overwrite`)"

__all__ = ["RegionView", "Store", "StoreCheck", "TrackUnion", "coordinates_digest", "location_hint"]


def _zarr():
    import zarr

    return zarr


class Store:
    """A compendium of observed (cell type, assay) tracks on a genome layout.

    Use :meth:`create` or :meth:`open` (or :func:`epitensor.store.registry.open_store`, which also
    accepts the name ``"roadmap-pilot"``) rather than the constructor.

    Attributes
    ----------
    url : str
        Where the store lives (path or fsspec URL).
    layout : Layout
        The axes and the genomic regions on them.
    genome : str
        Genome build name (or ``"custom"``).
    chrom_sizes : pandas.Series
        Chromosome lengths in bp.
    transform : str
        Transform applied to the signal (``"arcsinh"``).
    tracks : pandas.DataFrame
        Columns ``celltype, assay, source, md5``; row ``k`` is array row ``k``.

    Examples
    --------
    >>> import epitensor as et
    >>> store = et.open_store("roadmap-pilot")
    >>> store.genome, store.n_tracks, store.axes
    ('hg19', 25, ['pilot'])
    """

    def __init__(self, group, url: str, mode: str = "r") -> None:
        self.url = url
        self.mode = mode
        self._load(group)

    def _load(self, group) -> None:
        """Read and check the metadata of ``group``; every problem names its key."""
        try:
            attrs = dict(group.attrs)
        except (TypeError, ValueError):
            _bad_metadata(self.url, "attributes", "not a mapping")
        version = attrs.get("epitensor_store")
        if version is None:
            raise EpitensorError(
                f"{self.url} is not an epitensor store (no epitensor_store attribute); "
                f"create one with `epitensor ingest`"
            )
        if version != FORMAT_VERSION:
            _bad_metadata(
                self.url, "epitensor_store", f"format {version!r}, expected {FORMAT_VERSION}"
            )
        self.layout = _check_layout(attrs, self.url)
        self.genome = _check_str(attrs, "genome", self.url)
        self.chrom_sizes = _check_chrom_sizes(attrs, self.url)
        self.transform = _check_choice(attrs, "transform", TRANSFORMS, self.url)
        _check_choice(attrs, "dtype", DTYPES, self.url)
        self.tracks = _check_tracks(attrs, self.url)
        _check_digests(attrs, self.url, len(self.tracks))
        self._group = group
        self._attrs = attrs
        self._bound: set[tuple[str, int, int]] = set()  # chunks whose position was checked
        for axis in self.axes:
            self._check_array(axis)

    def _check_array(self, axis: str) -> None:
        """The array of ``axis`` exists and agrees with the metadata."""
        where = f"signal/{axis}"
        try:
            array = self._group["signal"][axis]
            shape, dtype = tuple(array.shape), str(array.dtype)
        except KeyError:
            _bad_metadata(self.url, where, "missing (the array of that axis is gone)")
        except Exception as exc:  # noqa: BLE001 - zarr raises many types for bad array JSON
            _bad_metadata(self.url, f"{where}/zarr.json", f"unreadable ({_short(exc)})")
        if len(shape) != 2 or shape[1] != self.axis_length(axis) or shape[0] < self.n_tracks:
            _bad_metadata(
                self.url,
                f"{where}/zarr.json shape",
                f"{list(shape)}, expected [>= {self.n_tracks} tracks, "
                f"{self.axis_length(axis)} positions]",
            )
        if dtype != self.dtype:
            _bad_metadata(
                self.url, f"{where}/zarr.json data_type", f"{dtype}, dtype says {self.dtype}"
            )

    # opening ----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        url: str | os.PathLike,
        layout: Layout,
        chrom_sizes: pd.Series,
        genome: str = "custom",
        transform: str = "arcsinh",
        dtype: str = "float16",
        position_chunk: int = DEFAULT_POSITION_CHUNK,
        track_chunk: int = DEFAULT_TRACK_CHUNK,
        overwrite: bool = False,
        storage_options: dict | None = None,
    ) -> Store:
        """Create an empty store.

        Parameters
        ----------
        url : str or path-like
            Local path or fsspec URL of the new store.
        layout : Layout
            Axes and regions.
        chrom_sizes : pandas.Series
            Chromosome lengths in bp (written into exported bigWig headers).
        genome : str
            Genome build name. Default ``"custom"``.
        transform : str
            Transform of the stored values. Default ``"arcsinh"``.
        dtype : str
            ``"float16"`` (default) or ``"float32"``.
        position_chunk, track_chunk : int
            Chunk shape along positions and tracks. Defaults 16384 and 32.
        overwrite : bool
            Replace an existing store. Default False: refuse.
        storage_options : dict, optional
            Passed to fsspec for remote URLs. Default None.

        Notes
        -----
        Every chunk gets a CRC-32C checksum and the fill value is NaN, so
        damaged and missing chunks are errors on read (see the module notes).
        """
        zarr = _zarr()
        url = str(url)
        if is_local_path(url) and local_path(url).exists() and not overwrite:
            raise EpitensorError(f"{url} already exists; choose another path or pass overwrite")
        if dtype not in DTYPES:
            raise EpitensorError(f"invalid dtype: got {dtype!r}, expected one of {list(DTYPES)}")
        group = zarr.open_group(store=_zarr_target(url), mode="w", storage_options=storage_options)
        signal = group.create_group("signal")
        for axis, length in layout.axis_lengths.items():
            signal.create_array(
                axis,
                shape=(0, length),
                chunks=(track_chunk, min(position_chunk, max(length, 1))),
                dtype=dtype,
                # NaN, not 0: a lost chunk must not read as a plausible all-zero signal
                fill_value=math.nan,
                compressors=_compressors(),
            )
        group.attrs.update(
            {
                "epitensor_store": FORMAT_VERSION,
                "genome": genome,
                "chrom_sizes": {str(k): int(v) for k, v in chrom_sizes.items()},
                "resolution": int(layout.resolution),
                "transform": transform,
                "dtype": dtype,
                "layout": layout.to_dict(),
                "tracks": [],
                "track_digests": [],
                "chunk_crc32c": {axis: [] for axis in layout.axes},
            }
        )
        return cls(group, url, mode="r+")

    @classmethod
    def open(
        cls, url: str | os.PathLike, mode: str = "r", storage_options: dict | None = None
    ) -> Store:
        """Open an existing store (``mode="r"`` to read, ``"r+"`` to add tracks)."""
        zarr = _zarr()
        url = str(url)
        if is_local_path(url) and not local_path(url).exists():
            raise EpitensorError(f"store not found: {url}; create one with `epitensor ingest`")
        try:
            group = zarr.open_group(
                store=_zarr_target(url), mode=mode, storage_options=storage_options
            )
        except Exception as exc:  # noqa: BLE001 - zarr raises many types for damaged JSON
            raise EpitensorError(
                f"cannot open store {url}: {_short(exc)}; its zarr.json is damaged or it is "
                f"not a Zarr v3 store: {_REINGEST}"
            ) from None
        return cls(group, url, mode=mode)

    def _reload(self) -> None:
        """Re-read the metadata from disk (another process may have added tracks)."""
        zarr = _zarr()
        self._load(zarr.open_group(store=_zarr_target(self.url), mode=self.mode))

    @contextlib.contextmanager
    def locked(self, wait: bool = True) -> Iterator[Store]:
        """Hold the store's write lock and see its latest metadata while the block runs.

        Other processes adding tracks to the same store (or replacing it) wait
        until the block ends. Local stores only; remote stores are not locked.

        Parameters
        ----------
        wait : bool
            Wait for another writer (up to ``$EPITENSOR_LOCK_TIMEOUT`` s, a
            message on stderr). Default True. False: fail at once.

        Yields
        ------
        Store
            This store, its track list re-read under the lock.
        """
        if self.mode == "r":
            raise EpitensorError(f"store {self.url} is open read-only; open it with mode='r+'")
        if not is_local_path(self.url):
            yield self
            return
        with output_lock(local_path(self.url), wait=wait):
            self._reload()
            yield self

    @property
    def has_checksums(self) -> bool:
        """True when every chunk carries a CRC-32C checksum (stores made by this version)."""
        return all(_codec_names(self._array(a)) >= {"crc32c"} for a in self.axes)

    # metadata ---------------------------------------------------------------------

    @property
    def resolution(self) -> int:
        """Bin width in bp."""
        return self.layout.resolution

    @property
    def dtype(self) -> str:
        """On-disk dtype of the signal."""
        return self._attrs["dtype"]

    @property
    def axes(self) -> list[str]:
        """Axis (array) names in order."""
        return self.layout.axes

    @property
    def n_tracks(self) -> int:
        """Number of observed tracks."""
        return len(self.tracks)

    @property
    def celltypes(self) -> list[str]:
        """Cell types in order of first appearance."""
        return list(dict.fromkeys(self.tracks.celltype))

    @property
    def assays(self) -> list[str]:
        """Assays in order of first appearance."""
        return list(dict.fromkeys(self.tracks.assay))

    @property
    def observed(self) -> pd.DataFrame:
        """Boolean matrix, cell types x assays, True where a track is observed."""
        matrix = pd.DataFrame(False, index=self.celltypes, columns=self.assays)
        for celltype, assay in zip(self.tracks.celltype, self.tracks.assay):
            matrix.loc[celltype, assay] = True
        return matrix

    def track_names(self) -> list[tuple[str, str]]:
        """``(celltype, assay)`` of every track, in row order."""
        return list(zip(self.tracks.celltype, self.tracks.assay))

    def has_track(self, celltype: str, assay: str) -> bool:
        """True when the (cell type, assay) track is observed."""
        return (celltype, assay) in set(self.track_names())

    def track_index(self, celltype: str, assay: str) -> int:
        """Row of a track; a clear error when it is not in the store."""
        names = self.track_names()
        try:
            return names.index((celltype, assay))
        except ValueError:
            raise EpitensorError(
                f"track ({celltype}, {assay}) is not in store {self.url}; "
                f"it holds {len(names)} tracks (see `epitensor info {self.url}`)"
            ) from None

    def axis_length(self, axis: str) -> int:
        """Number of positions on ``axis``."""
        if axis not in self.layout.axis_lengths:
            raise EpitensorError(f"unknown axis {axis!r} in store {self.url}; it has {self.axes}")
        return self.layout.axis_lengths[axis]

    # identity ---------------------------------------------------------------------

    def coordinate_digests(self) -> dict[str, str]:
        """Per axis, the sha256 of its coordinates (length, resolution, regions).

        Each region counts by chromosome, start, end (0-based, half-open) and
        offset, so two layouts with the same axis names and lengths but other
        regions differ.
        """
        return {axis: coordinates_digest(self.layout, axis) for axis in self.axes}

    def digest_coordinates(self) -> dict[str, str]:
        """The coordinates of the axes :meth:`track_digests` are of (a view's: its store's)."""
        return self.coordinate_digests()

    def track_digests(self) -> dict[tuple[str, str], dict[str, str] | None]:
        """Per ``(celltype, assay)``, the sha256 of its stored values by axis.

        None for tracks written before digests existed (they cannot be verified).
        """
        digests = self._attrs.get("track_digests") or [None] * self.n_tracks
        return dict(zip(self.track_names(), digests))

    def identity(self) -> dict:
        """The store's content identity, recomputed from its metadata (so current after appends).

        Returns
        -------
        dict
            ``digest`` (sha256 of the genome, chromosome sizes, transform,
            dtype, coordinates, track list with each track's digests and the
            chunk CRC table), ``coordinates`` (:meth:`coordinate_digests`),
            ``tracks`` (``"CELL:ASSAY"`` -> digests by axis, or None) and
            ``url`` (where it was found: a hint, never the identity).
        """
        coordinates = self.coordinate_digests()
        tracks = {f"{c}:{a}": d for (c, a), d in self.track_digests().items()}
        whole = {
            "genome": self.genome,
            "chrom_sizes": {str(k): int(v) for k, v in self.chrom_sizes.items()},
            "transform": self.transform,
            "dtype": self.dtype,
            "coordinates": coordinates,
            "tracks": [[c, a, tracks[f"{c}:{a}"]] for c, a in self.track_names()],
            "chunks": self._attrs.get("chunk_crc32c"),
        }
        return {
            "digest": _json_digest(whole),
            "coordinates": coordinates,
            "tracks": tracks,
            "url": location_hint(self.url),
        }

    # reading ----------------------------------------------------------------------

    def _array(self, axis: str):
        self.axis_length(axis)
        return self._group["signal"][axis]

    def _read(self, axis: str, rows: np.ndarray | None, start: int, end: int) -> np.ndarray:
        """Rows (None: every listed track) of ``[start, end)`` of ``axis``, checked.

        A chunk that fails to decode (checksum mismatch) or reads non-finite
        values (a missing chunk reads as the NaN fill value) is an error naming it.

        Returns
        -------
        numpy.ndarray, shape=(n_rows, end - start), float32, arcsinh
        """
        array = self._array(axis)
        try:
            if rows is None:
                block = array[: self.n_tracks, start:end]
            else:  # only the chunks of these rows are read and decoded
                block = array.oindex[rows, start:end]
        except EpitensorError:
            raise
        except Exception as exc:  # noqa: BLE001 - codecs raise ValueError, RuntimeError, ...
            raise self._damage(axis, rows, start, end, exc) from None
        block = np.asarray(block, dtype=np.float32)
        # One reduction instead of an isfinite pass: any NaN or inf makes the sum non-finite.
        if block.size and not np.isfinite(block.sum()):
            raise self._damage(axis, rows, start, end, None)
        self._check_positions(axis, array, rows, start, end)
        return block

    def _check_positions(self, axis, array, rows, start: int, end: int) -> None:
        """Every chunk read lies where it was written: its CRC is the one recorded at its key.

        Each chunk is checked once per opened store (one 4-byte read of its
        file); a store without a chunk table (written before) is not checked.
        """
        table = (self._attrs.get("chunk_crc32c") or {}).get(axis)
        if not table or end <= start or not _has_crc(array):
            return
        track_chunk, position_chunk = array.chunks
        listed = np.arange(self.n_tracks) if rows is None else np.asarray(rows)
        todo = [
            (int(i), j)
            for i in np.unique(listed // track_chunk)
            for j in range(start // position_chunk, -(-end // position_chunk))
            if (axis, int(i), j) not in self._bound
        ]
        if not todo:
            return
        tails = _chunk_tails(self.url, array, todo)
        for (i, j), tail in zip(todo, tails):
            recorded = _table_entry(table, i, j)
            if recorded is not None and tail is not None and tail != recorded:
                # another process may have appended tracks since this store was opened
                fresh = (_fresh_attrs(self).get("chunk_crc32c") or {}).get(axis)
                if _table_entry(fresh or [], i, j) != tail:
                    key = array.metadata.encode_chunk_key((i, j))
                    raise EpitensorError(
                        f"store {self.url}: {_chunk_name(array, axis, i, j)} is not the chunk "
                        f"written at {key} (its CRC-32C {tail} is not the {recorded} recorded "
                        f"there: a chunk file was moved or replaced); {_REINGEST}"
                    )
            self._bound.add((axis, i, j))

    def _damage(
        self, axis: str, rows: np.ndarray | None, start: int, end: int, exc: Exception | None
    ) -> EpitensorError:
        """The error for the first bad chunk among rows x ``[start, end)`` of ``axis``."""
        listed = np.arange(self.n_tracks) if rows is None else np.asarray(rows)
        array = self._array(axis)
        track_chunk, position_chunk = array.chunks
        for i in np.unique(listed // track_chunk):
            chunk_rows = listed[listed // track_chunk == i]
            for j in range(start // position_chunk, -(-end // position_chunk)):
                lo, hi = max(start, j * position_chunk), min(end, (j + 1) * position_chunk)
                problem = _chunk_problem(array, chunk_rows, lo, hi)
                if problem is not None:
                    kind, reason = problem
                    return EpitensorError(
                        f"store {self.url}: {_chunk_name(array, axis, int(i), j)} is {kind} "
                        f"({reason}); "
                        f"the store is damaged: {_REINGEST}; `epitensor info --check "
                        f"{self.url}` lists every damaged chunk"
                    )
        detail = f" ({_short(exc)})" if exc is not None else ""
        return EpitensorError(
            f"store {self.url}: cannot read axis {axis!r} positions {start}-{end}{detail}; "
            f"run `epitensor info --check {self.url}`"
        )

    def read_block(
        self,
        axis: str,
        start: int = 0,
        end: int | None = None,
        tracks: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Read a block of positions for many tracks.

        Parameters
        ----------
        axis : str
            Axis name.
        start, end : int
            Positions on the axis, half-open. Default: the whole axis.
        tracks : sequence of int, optional
            Track rows. Default None: all tracks.

        Returns
        -------
        numpy.ndarray, shape=(n_tracks, end - start), float32, arcsinh
        """
        end = self.axis_length(axis) if end is None else int(end)
        rows = None if tracks is None else np.asarray(tracks, dtype=np.int64)
        return self._read(axis, rows, int(start), end)

    def read_track(
        self,
        celltype: str,
        assay: str,
        axis: str | None = None,
        start: int = 0,
        end: int | None = None,
    ) -> np.ndarray:
        """Read one track over a range of an axis.

        Parameters
        ----------
        celltype, assay : str
            The track.
        axis : str, optional
            Axis name. Default None: the only axis (error when there are several).
        start, end : int
            Positions on the axis, half-open. Default: the whole axis.

        Returns
        -------
        numpy.ndarray, shape=(end - start,), float32, arcsinh
        """
        axis = self._default_axis(axis)
        row = self.track_index(celltype, assay)
        end = self.axis_length(axis) if end is None else int(end)
        return self._read(axis, np.array([row]), int(start), end)[0]

    def _default_axis(self, axis: str | None) -> str:
        if axis is not None:
            return axis
        if len(self.axes) != 1:
            raise EpitensorError(
                f"store {self.url} has {len(self.axes)} axes; name one of {self.axes}"
            )
        return self.axes[0]

    # writing ----------------------------------------------------------------------

    def add_track(
        self,
        celltype: str,
        assay: str,
        values: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
        source: str = "",
        md5: str = "",
    ) -> int:
        """Append one track, axis by axis, and list it once all axes are written.

        Parameters
        ----------
        celltype, assay : str
            Names of the new track; must not be in the store yet.
        values : mapping or iterable of (axis, numpy.ndarray)
            Per axis, an array of shape ``(n_positions,)`` on the store's
            transformed (arcsinh) scale. An iterable lets callers produce one
            axis at a time so memory stays bounded by one axis.
        source, md5 : str
            Provenance kept in the metadata.

        Returns
        -------
        int
            The new track's row.
        """
        with self.locked():
            if self.has_track(celltype, assay):
                raise EpitensorError(
                    f"track ({celltype}, {assay}) is already in store {self.url}; "
                    f"remove the duplicate from the manifest"
                )
            row = self.n_tracks
            self._reserve_rows(row + 1)
            with self._unlisted_rows(row):
                self._add_track(row, celltype, assay, values, source, md5)
        return row

    def _add_track(self, row, celltype, assay, values, source, md5) -> None:
        """Write one track's axes at ``row``, then list it (under the lock)."""
        items = values.items() if isinstance(values, Mapping) else values
        written = set()
        digests: dict[str, str] = {}
        for axis, array in items:
            array = np.asarray(array)
            expected = self.axis_length(axis)
            if array.shape != (expected,):
                raise EpitensorError(
                    f"track ({celltype}, {assay}) from {source or 'memory'}: axis {axis!r} "
                    f"has {array.shape[0] if array.ndim == 1 else array.shape} values, "
                    f"expected {expected}"
                )
            where = f"track ({celltype}, {assay}) from {source or 'memory'}"
            digests[axis] = self._write(axis, slice(row, row + 1), array[None], where)[0]
            written.add(axis)
        missing = set(self.axes) - written
        if missing:
            raise EpitensorError(
                f"track ({celltype}, {assay}): no values for axes {sorted(missing)}"
            )
        self._list_tracks([[celltype, assay, str(source), str(md5)]], [digests])

    def add_tracks(
        self,
        names: Sequence[tuple[str, str]],
        values: Mapping[str, np.ndarray],
        source: str | Sequence[str] = "",
        md5: str | Sequence[str] = "",
    ) -> list[int]:
        """Append many tracks at once, one block write per axis.

        Writing a block of tracks costs one compression per chunk, where
        :meth:`add_track` recompresses each chunk (which holds up to
        ``track_chunk`` tracks) once per track.

        Parameters
        ----------
        names : sequence of (str, str)
            ``(celltype, assay)`` of each new track; none may be in the store.
        values : mapping of str to numpy.ndarray, shape=(n_new_tracks, n_positions)
            Per axis, the new tracks on the store's transformed (arcsinh) scale.
        source, md5 : str or sequence of str
            Provenance kept in the metadata: one string for every new track,
            or one per track.

        Returns
        -------
        list of int
            The new tracks' rows.
        """
        if self.mode == "r":
            raise EpitensorError(f"store {self.url} is open read-only; open it with mode='r+'")
        names = [(str(c), str(a)) for c, a in names]
        if set(values) != set(self.axes):
            raise EpitensorError(
                f"values must cover exactly the axes {self.axes}; got {sorted(values)}"
            )
        for axis, block in values.items():
            expected = (len(names), self.axis_length(axis))
            if np.shape(block) != expected:
                raise EpitensorError(
                    f"axis {axis!r}: got values of shape {np.shape(block)}, expected {expected}"
                )
        sources = [source] * len(names) if isinstance(source, str) else list(source)
        md5s = [md5] * len(names) if isinstance(md5, str) else list(md5)
        with self.locked():
            clashes = [n for n in names if self.has_track(*n)] + [
                n for i, n in enumerate(names) if n in names[:i]
            ]
            if clashes:
                raise EpitensorError(
                    f"tracks {clashes} are already in store {self.url} or repeated; "
                    f"remove the duplicates"
                )
            first = self.n_tracks
            self._reserve_rows(first + len(names))
            digests: list[dict[str, str]] = [{} for _ in names]
            with self._unlisted_rows(first):
                for axis, block in values.items():
                    where = (
                        f"tracks {names[0]}..{names[-1]}" if len(names) > 1 else f"track {names[0]}"
                    )
                    rows = slice(first, first + len(names))
                    for digest, hexed in zip(digests, self._write(axis, rows, block, where)):
                        digest[axis] = hexed
                self._list_tracks(
                    [[c, a, str(s), str(m)] for (c, a), s, m in zip(names, sources, md5s)], digests
                )
        return list(range(first, first + len(names)))

    def _write(self, axis: str, rows: slice, block: np.ndarray, where: str) -> list[str]:
        """Write rows of ``axis`` in the store's dtype, refusing values that are not finite.

        Parameters
        ----------
        block : numpy.ndarray, shape=(n_rows, n_positions), arcsinh

        Returns
        -------
        list of str
            The sha256 of each row as stored (its identity on this axis).
        """
        with np.errstate(over="ignore"):  # overflow to inf is reported just below
            cast = np.asarray(block).astype(self.dtype)
        finite = np.isfinite(cast.sum(dtype=np.float32))
        bad = 0 if finite else int(np.count_nonzero(~np.isfinite(cast)))
        if bad:
            raise EpitensorError(
                f"{where}: {bad} values on axis {axis!r} are NaN or infinite in {self.dtype} "
                f"(beyond +-{float(np.finfo(self.dtype).max):g}); fix the values before adding them"
            )
        try:
            self._array(axis)[rows, :] = cast
        except OSError as exc:
            raise EpitensorError(
                f"cannot write store {self.url}, axis {axis!r}: {exc.strerror or exc}; free "
                f"space or fix permissions, then add the tracks again"
            ) from None
        except Exception as exc:  # noqa: BLE001 - a damaged chunk met in read-modify-write
            raise EpitensorError(
                f"cannot write store {self.url}, axis {axis!r}: a chunk there does not decode "
                f"({_short(exc)}); run `epitensor info --check {self.url}`"
            ) from None
        return [_values_digest(row) for row in cast]

    def _list_tracks(self, new: list[list[str]], digests: list[dict[str, str]]) -> None:
        """Append entries to the track list (written last: the commit of an addition).

        The tracks' digests and the CRCs of the chunks written go in the same
        metadata write.
        """
        tracks = self._attrs["tracks"] + new
        old = self._attrs.get("track_digests")
        listed = (list(old) if old is not None else [None] * (len(tracks) - len(new))) + digests
        first = len(tracks) - len(new)
        table = self._chunk_table(first, len(tracks))
        self._group.attrs.update({"tracks": tracks, "track_digests": listed, "chunk_crc32c": table})
        self._attrs.update({"tracks": tracks, "track_digests": listed, "chunk_crc32c": table})
        self.tracks = pd.DataFrame(tracks, columns=TRACK_COLUMNS)

    @contextlib.contextmanager
    def _unlisted_rows(self, first: int) -> Iterator[None]:
        """On a failed append, record the chunks its unlisted rows changed.

        Rows past the listed tracks are ignored, but they share chunks with
        listed rows: those chunks' bytes changed, so their CRCs are recorded
        again (else the next read would take them for moved chunks).
        """
        try:
            yield
        except BaseException:
            if self.n_tracks == first and self._attrs.get("chunk_crc32c") is not None:
                table = self._chunk_table(first, first)
                self._group.attrs["chunk_crc32c"] = table
                self._attrs["chunk_crc32c"] = table
            raise

    def _chunk_table(self, first_row: int, n_tracks: int) -> dict[str, list[str | None]]:
        """The chunk CRC table for ``n_tracks`` tracks, the chunks from ``first_row`` on re-read."""
        table = {axis: list(v) for axis, v in (self._attrs.get("chunk_crc32c") or {}).items()}
        if not self.has_checksums:
            return table
        for axis in self.axes:
            array = self._array(axis)
            track_chunk, position_chunk = array.chunks
            n_pos = -(-self.axis_length(axis) // position_chunk)
            n_row_chunks = -(-n_tracks // track_chunk)
            entries = table.setdefault(axis, [])
            entries += [None] * (n_row_chunks - len(entries))
            del entries[n_row_chunks:]
            touched = range(first_row // track_chunk, n_row_chunks)
            for i in touched:
                tails = _chunk_tails(self.url, array, [(i, j) for j in range(n_pos)])
                entries[i] = "".join(t if t is not None else "-" * 8 for t in tails)
            self._bound -= {(axis, i, j) for i in touched for j in range(n_pos)}
        return table

    def truncate_tracks(self, n_tracks: int) -> None:
        """Keep only the first ``n_tracks`` tracks: undo an append that failed.

        Parameters
        ----------
        n_tracks : int
            Tracks the store held before the append.
        """
        tracks = list(self._attrs["tracks"])[:n_tracks]
        self._group.attrs["tracks"] = tracks
        self._attrs["tracks"] = tracks
        self.tracks = pd.DataFrame(tracks, columns=TRACK_COLUMNS)
        for axis in self.axes:
            array = self._array(axis)
            if array.shape[0] > n_tracks:
                array.resize((n_tracks, array.shape[1]))
        digests = self._attrs.get("track_digests")
        update = {"chunk_crc32c": self._chunk_table(n_tracks, n_tracks)}
        if digests is not None:
            update["track_digests"] = list(digests)[:n_tracks]
        self._group.attrs.update(update)
        self._attrs.update(update)

    def _reserve_rows(self, n_rows: int) -> None:
        for axis in self.axes:
            array = self._array(axis)
            if array.shape[0] < n_rows:
                array.resize((n_rows, array.shape[1]))

    # integrity --------------------------------------------------------------------

    def verify(self, verbose: bool = True, span: int = 8) -> StoreCheck:
        """Read and check every chunk of the listed tracks.

        A chunk is *corrupt* when it does not decode (checksum mismatch, bad
        compression) or holds NaN or infinite values, *missing* when its file
        is gone. Stores written before checksums read a missing chunk as zeros
        and a changed one as other numbers unless it no longer decompresses:
        their absent chunks are counted but cannot be told from all-zero ones.

        Parameters
        ----------
        verbose : bool
            Progress bar on stderr. Default True.
        span : int
            Position chunks read at once. Default 8.

        Returns
        -------
        StoreCheck
        """
        check = StoreCheck(self.url, self.has_checksums)
        rows = np.arange(self.n_tracks)
        plans = []
        for axis in self.axes:
            array = self._array(axis)
            track_chunk, position_chunk = array.chunks
            n_row_chunks = -(-self.n_tracks // track_chunk)
            n_pos_chunks = -(-self.axis_length(axis) // position_chunk)
            plans.append((axis, array, n_row_chunks, n_pos_chunks))
            check.n_chunks += n_row_chunks * n_pos_chunks
        recorded = list(self.track_digests().values())
        with progress(total=check.n_chunks, desc="check", verbose=verbose, unit="chunk") as bar:
            for axis, array, n_row_chunks, n_pos_chunks in plans:
                present = _chunk_keys(self.url, array)
                for i in range(n_row_chunks):
                    chunk_rows = rows[i * array.chunks[0] : (i + 1) * array.chunks[0]]
                    # each track's values hashed again as read, in position order
                    hashers = {int(r): hashlib.sha256() for r in chunk_rows
                               if (recorded[r] or {}).get(axis)}  # fmt: skip
                    for j0 in range(0, n_pos_chunks, span):
                        j1 = min(n_pos_chunks, j0 + span)
                        self._verify_span(
                            check, axis, array, present, chunk_rows, i, j0, j1, hashers
                        )
                        bar.update(j1 - j0)
                    self._compare_digests(check, axis, recorded, hashers)
        return check

    def _compare_digests(self, check, axis: str, recorded: list, hashers: dict) -> None:
        """Record the tracks whose values hash to other than their recorded digest on ``axis``."""
        names = self.track_names()
        for row, hasher in hashers.items():
            check.n_digests += 1
            if hasher.hexdigest() != recorded[row][axis]:
                celltype, assay = names[row]
                check.changed.append(
                    f"track {celltype}:{assay} on axis {axis!r}: its values are not those "
                    "recorded when it was written (values rewritten, or track names moved "
                    "in zarr.json)"
                )

    def _verify_span(
        self, check, axis, array, present, chunk_rows, i, j0, j1, hashers=None
    ) -> None:
        """Check chunks ``(i, j0..j1)`` of ``axis``, reading them at once when all are sound.

        ``hashers`` (row -> sha256) take each row's values read; a row met in a
        damaged chunk is dropped from them (the chunk is reported instead).
        """
        hashers = {} if hashers is None else hashers
        table = (self._attrs.get("chunk_crc32c") or {}).get(axis)
        if table and _has_crc(array):
            coords = [(i, j) for j in range(j0, j1)]
            for (_, j), tail in zip(coords, _chunk_tails(self.url, array, coords)):
                recorded = _table_entry(table, i, j)
                if recorded is not None and tail is not None and tail != recorded:
                    check.corrupt.append(
                        f"{_chunk_name(array, axis, i, j)}: its CRC-32C {tail} is not the "
                        f"{recorded} recorded at this key (a chunk file moved or replaced)"
                    )
        position_chunk = array.chunks[1]
        lo, hi = j0 * position_chunk, min(self.axis_length(axis), j1 * position_chunk)
        values, problem = _read_span(array, chunk_rows, lo, hi)
        if problem is None:
            for k, row in enumerate(chunk_rows):
                if int(row) in hashers:
                    hashers[int(row)].update(_little_endian(values[k]).data)
            for j in range(j0, j1):
                if array.metadata.encode_chunk_key((i, j)) not in present:
                    check.absent += 1  # read as zeros by a store without a NaN fill value
            return
        for row in chunk_rows:  # reported as damaged chunks: no digest to compare
            hashers.pop(int(row), None)
        for j in range(j0, j1):
            name = _chunk_name(array, axis, i, j)
            if array.metadata.encode_chunk_key((i, j)) not in present:
                if math.isnan(float(array.metadata.fill_value)):
                    check.missing.append(f"{name}: its file is gone")
                else:
                    check.absent += 1
                continue
            c_lo, c_hi = j * position_chunk, min(self.axis_length(axis), (j + 1) * position_chunk)
            problem = _chunk_problem(array, chunk_rows, c_lo, c_hi)
            if problem is not None:
                kind, reason = problem
                (check.missing if kind == "missing" else check.corrupt).append(f"{name}: {reason}")

    # summary ----------------------------------------------------------------------

    def nbytes_on_disk(self) -> int | None:
        """Size of the store on disk in bytes (None when it cannot be measured)."""
        if is_local_path(self.url):
            root = local_path(self.url)
            return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
        try:
            import fsspec

            fs, path = fsspec.core.url_to_fs(self.url)
            return int(fs.du(path))
        except Exception:  # noqa: BLE001 - size is informative only
            return None

    def summary(self) -> str:
        """Human-readable summary: genome, axes, tracks and the observed matrix."""
        lines = [
            f"store      {self.url}",
            f"genome     {self.genome}, {self.resolution}-bp bins, {self.transform}, {self.dtype}",
            f"layout     {self.layout.name}: {len(self.axes)} axes, "
            f"{self.layout.n_positions:,} positions, {len(self.layout.regions)} regions",
            f"tracks     {self.n_tracks} observed of "
            f"{len(self.celltypes)} cell types x {len(self.assays)} assays",
        ]
        lines.append(f"identity   sha256:{self.identity()['digest'][:16]}")
        lines.append(
            "integrity  a CRC-32C checksum per chunk"
            if self.has_checksums
            else "integrity  no checksums (written before them; re-ingest to add them)"
        )
        size = self.nbytes_on_disk()
        if size is not None:
            raw = self.n_tracks * self.layout.n_positions * 4
            ratio = f" ({size / raw:.1%} of raw float32)" if raw else ""
            lines.append(f"on disk    {size / 1e6:.1f} MB{ratio}")
        if self.n_tracks:
            observed = self.observed.replace({True: "x", False: "."})
            lines += ["", "observed (cell type x assay)", observed.to_string()]
        return "\n".join(lines)


class RegionView(Store):
    """A store read through another layout: chosen regions of its axes, concatenated.

    Stage 1 trains on a region layout (such as the ENCODE pilot regions) while
    the store holds whole chromosomes; the view reads each region's bins from
    the chromosome axes, so nothing is copied. Read-only.

    Parameters
    ----------
    store : Store
        The store read.
    layout : Layout
        Region layout (same resolution). Its regions must lie on positions the
        store holds; regions on chromosomes the store lacks entirely are dropped
        with a warning.

    Attributes
    ----------
    source : Store
        The store read.
    """

    def __init__(self, store: Store, layout: Layout) -> None:
        if layout.resolution != store.resolution:
            raise EpitensorError(
                f"regions use {layout.resolution}-bp bins but store {store.url} has "
                f"{store.resolution}-bp bins"
            )
        self.source = store
        self._group = store._group
        self.url = store.url
        self.mode = "r"
        self._attrs = store._attrs
        self.genome = store.genome
        self.chrom_sizes = store.chrom_sizes
        self.transform = store.transform
        self.tracks = store.tracks
        self.layout = _covered_layout(layout, store)
        self._pieces = {axis: _region_pieces(self.layout, axis, store) for axis in self.axes}

    def _read(self, axis: str, rows: np.ndarray | None, start: int, end: int) -> np.ndarray:
        """Rows of ``[start, end)`` of a region axis, gathered (and checked) from the store."""
        self.axis_length(axis)
        pieces = self._pieces[axis]
        offsets = pieces[:, 0].astype(np.int64)
        ends = offsets + pieces[:, 1].astype(np.int64)
        n_rows = self.n_tracks if rows is None else len(rows)
        out = np.zeros((n_rows, end - start), dtype=np.float32)
        first = np.searchsorted(ends, start, side="right")
        last = np.searchsorted(offsets, end, side="left")
        for offset, length, store_axis, axis_start in pieces[first:last]:
            lo, hi = max(start, offset), min(end, offset + length)
            read_from = axis_start + lo - offset
            out[:, lo - start : hi - start] = self.source._read(
                store_axis, rows, read_from, read_from + hi - lo
            )
        return out

    @property
    def has_checksums(self) -> bool:
        """Whether the store read carries checksums."""
        return self.source.has_checksums

    def digest_coordinates(self) -> dict[str, str]:
        """The coordinates of the store read: its track digests are of its axes."""
        return self.source.digest_coordinates()

    def verify(self, verbose: bool = True, span: int = 8) -> StoreCheck:
        """Check the store the view reads (see :meth:`Store.verify`)."""
        return self.source.verify(verbose=verbose, span=span)

    def add_track(self, *args, **kwargs) -> int:
        """Refused: a view is read-only."""
        raise EpitensorError(f"a region view of {self.url} is read-only; add tracks to the store")

    add_tracks = add_track


class TrackUnion(Store):
    """The tracks of several stores on one layout, read as one store.

    A model extended with new cell types or assays from a second store has
    its training tracks in two; the ensemble's trees and average read them
    through this union. Read-only. A track held by several stores is read
    from the first that holds it.

    Parameters
    ----------
    stores : sequence of Store
        Two or more stores of the same genome, transform and layout (axes,
        their lengths and regions).

    Attributes
    ----------
    sources : list of Store
        The stores, in order.
    """

    def __init__(self, stores: Sequence[Store]) -> None:
        stores = list(stores)
        if len(stores) < 2:
            raise EpitensorError("a union of stores needs two or more stores")
        first = stores[0]
        for other in stores[1:]:
            for what in ("genome", "transform"):
                if getattr(other, what) != getattr(first, what):
                    raise EpitensorError(
                        f"stores {first.url} and {other.url} differ in {what} "
                        f"({getattr(first, what)!r} vs {getattr(other, what)!r}); "
                        "a union needs stores of one genome and transform"
                    )
            if other.layout.to_dict() | {"name": None} != first.layout.to_dict() | {"name": None}:
                raise EpitensorError(
                    f"stores {first.url} and {other.url} have different layouts "
                    f"({dict(first.layout.axis_lengths)} vs {dict(other.layout.axis_lengths)}); "
                    "a union needs stores ingested on one layout"
                )
        self.sources = stores
        self.url = " + ".join(str(store.url) for store in stores)
        self.mode = "r"
        self._group = None
        self._attrs = first._attrs
        self.genome = first.genome
        self.chrom_sizes = first.chrom_sizes
        self.transform = first.transform
        self.layout = first.layout
        table = pd.concat(
            [s.tracks.assign(store=k, row=np.arange(len(s.tracks))) for k, s in enumerate(stores)],
            ignore_index=True,
        ).drop_duplicates(["celltype", "assay"])  # a track in two stores: the first's
        self._where = table[["store", "row"]].to_numpy(dtype=np.int64)  # (n_tracks, 2)
        self.tracks = table[TRACK_COLUMNS].reset_index(drop=True)

    def _read(self, axis: str, rows: np.ndarray | None, start: int, end: int) -> np.ndarray:
        """Rows of ``[start, end)`` of ``axis``, each read from its store."""
        self.axis_length(axis)
        rows = np.arange(self.n_tracks) if rows is None else np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), end - start), dtype=np.float32)
        where = self._where[rows]
        for k, store in enumerate(self.sources):
            picked = np.flatnonzero(where[:, 0] == k)
            if len(picked):
                out[picked] = store._read(axis, where[picked, 1], start, end)
        return out

    @property
    def has_checksums(self) -> bool:
        """Whether every store carries checksums."""
        return all(store.has_checksums for store in self.sources)

    def track_digests(self) -> dict[tuple[str, str], dict[str, str] | None]:
        """Each track's digests, from the store it is read from."""
        per_store = [list(store.track_digests().values()) for store in self.sources]
        return {name: per_store[k][row] for name, (k, row) in zip(self.track_names(), self._where)}

    def digest_coordinates(self) -> dict[str, str]:
        """The coordinates of its stores (one layout: see the constructor)."""
        return self.sources[0].digest_coordinates()

    def identity(self) -> dict:
        """The union's identity: its stores' digests combined (see :meth:`Store.identity`)."""
        parts = [store.identity() for store in self.sources]
        tracks = {f"{c}:{a}": d for (c, a), d in self.track_digests().items()}
        return {
            "digest": _json_digest([part["digest"] for part in parts]),
            "coordinates": self.coordinate_digests(),
            "tracks": tracks,
            "url": [part["url"] for part in parts],
        }

    def verify(self, verbose: bool = True, span: int = 8) -> StoreCheck:
        """Refused: check each store (see :meth:`Store.verify`)."""
        raise EpitensorError(f"check each store of the union {self.url} on its own")

    def add_track(self, *args, **kwargs) -> int:
        """Refused: a union is read-only."""
        raise EpitensorError(f"the union {self.url} is read-only; add tracks to one of its stores")

    add_tracks = add_track


def _covered_layout(layout: Layout, store: Store) -> Layout:
    """``layout`` without regions on chromosomes ``store`` lacks (warned), re-packed."""
    held = set(store.layout.regions.chrom)
    missing = sorted(set(layout.regions.chrom) - held)
    if not missing:
        return layout
    kept = layout.regions[layout.regions.chrom.isin(held)]
    if kept.empty:
        raise EpitensorError(
            f"none of the regions of {layout.name!r} lies on a chromosome of store "
            f"{store.url} (it holds {sorted(held)}); pass regions on those chromosomes"
        )
    warnings.warn(
        f"{len(layout.regions) - len(kept)} regions of {layout.name!r} lie on chromosomes "
        f"store {store.url} lacks ({', '.join(missing)}); training on the other {len(kept)}",
        stacklevel=3,
    )
    bed = kept[["chrom", "start", "end", "name"]]
    return Layout.from_bed(bed, layout.resolution, layout.axes[0])


def _region_pieces(layout: Layout, axis: str, store: Store) -> np.ndarray:
    """Where each stretch of ``axis`` lies in ``store``.

    Returns
    -------
    numpy.ndarray, shape=(n_pieces, 4), object
        Per piece, sorted by offset: offset on ``axis``, length, store axis and
        start on that store axis.
    """
    res = layout.resolution
    pieces = []
    for region in layout.axis_regions(axis).itertuples():
        lo, hi = region.first_bin, region.first_bin + region.n_bins
        found = store.layout.locate(region.chrom, lo * res, hi * res)
        covered = int((found.axis_end - found.axis_start).sum())
        if covered < region.n_bins:
            where = f"{region.chrom}:{region.start}-{region.end}"
            label = where if region.name == where else f"{region.name} ({where})"
            raise EpitensorError(
                f"region {label} is not "
                f"wholly in store {store.url}: {region.n_bins - covered} of its "
                f"{region.n_bins} bins are missing; drop or trim it in the regions BED"
            )
        for piece in found.itertuples():
            offset = region.offset + piece.first_bin - lo
            pieces.append((offset, piece.axis_end - piece.axis_start, piece.axis, piece.axis_start))
    return np.array(sorted(pieces), dtype=object).reshape(-1, 4)


def _zarr_target(url: str) -> str:
    """What zarr opens: the plain path for local stores, else the fsspec URL.

    A ``file://`` URL goes through zarr's local store rather than fsspec's local
    filesystem, which does not create the folders of new arrays.
    """
    return str(local_path(url)) if is_local_path(url) else url


def _compressors():
    from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec

    # The checksum comes last, so it covers the compressed bytes as written to disk.
    return [BloscCodec(cname="zstd", clevel=5, shuffle=BloscShuffle.shuffle), Crc32cCodec()]


@dataclass
class StoreCheck:
    """What :meth:`Store.verify` found.

    Attributes
    ----------
    url : str
        The store.
    checksums : bool
        Whether its chunks carry checksums (False for stores written before).
    n_chunks : int
        Chunks checked.
    missing, corrupt : list of str
        The chunks gone, and those that do not decode or hold non-finite
        values, each named by axis, key, tracks and positions.
    absent : int
        Chunks absent from a store without checksums: all-zero chunks were not
        written there, so a lost chunk cannot be told from an empty one.
    n_digests : int
        Track digests (one per track and axis) recomputed from the values read.
    changed : list of str
        The tracks whose values no longer match the digest recorded when they
        were written (values rewritten through other means, names moved).
    """

    url: str
    checksums: bool
    n_chunks: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    absent: int = 0
    n_digests: int = 0
    changed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no chunk is missing or corrupt and every track digest matches."""
        return not self.missing and not self.corrupt and not self.changed

    def summary(self) -> str:
        """Lines for ``epitensor info --check``."""
        lines = [f"check      {self.n_chunks} chunks read"]
        if self.checksums:
            lines[0] += ", every one with a CRC-32C checksum"
        else:
            lines.append(
                "           written before checksums: a changed chunk that still "
                "decompresses, or a lost one, cannot be detected"
                + (f" ({self.absent} chunks absent, read as zeros)" if self.absent else "")
                + f"; {_REINGEST} to add them"
            )
        if self.n_digests:
            lines.append(
                f"digests    {self.n_digests} track digests recomputed, "
                f"{self.n_digests - len(self.changed)} match"
            )
        lines += [f"missing    {name}" for name in self.missing]
        lines += [f"corrupt    {name}" for name in self.corrupt]
        lines += [f"changed    {name}" for name in self.changed]
        if self.ok:
            lines.append("result     no damaged chunk found")
        elif self.missing or self.corrupt:
            lines.append(
                f"result     {len(self.missing)} missing and {len(self.corrupt)} corrupt "
                f"chunks: the store is damaged; {_REINGEST}"
                + (f" ({len(self.changed)} tracks changed too)" if self.changed else "")
            )
        else:
            lines.append(
                f"result     {len(self.changed)} tracks hold other values than when written: "
                f"results made from them were made from other data; {_REINGEST}"
            )
        return "\n".join(lines)


# integrity helpers ----------------------------------------------------------------


def _codec_names(array) -> set[str]:
    """Names of the codecs of a Zarr v3 array (``{"bytes", "blosc", "crc32c"}``)."""
    return {codec.to_dict()["name"] for codec in array.metadata.codecs}


def _chunk_keys(url: str, array) -> set[str]:
    """Keys (``"c/0/3"``) of the chunks of ``array`` that exist, from one listing.

    Listed with fsspec, which is synchronous, rather than the store's async
    ``list_prefix``: awaiting that from synchronous code takes zarr's private
    event-loop helper (``zarr.core.sync``), and ``asyncio.run`` fails where a
    loop already runs, as in Jupyter.

    Parameters
    ----------
    url : str
        The store (path or fsspec URL).
    array : zarr.Array
        One of its arrays.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(_zarr_target(url))
    folder = f"{root.rstrip('/')}/{array.path}"
    return {key[len(folder) + 1 :] for key in fs.find(folder)}


def _chunk_name(array, axis: str, i: int, j: int) -> str:
    """``axis 'chr1' chunk c/0/3 (tracks 0-31, positions 49152-65535)``."""
    track_chunk, position_chunk = array.chunks
    rows = f"{i * track_chunk}-{min(array.shape[0], (i + 1) * track_chunk) - 1}"
    positions = f"{j * position_chunk}-{min(array.shape[1], (j + 1) * position_chunk) - 1}"
    key = array.metadata.encode_chunk_key((i, j))
    return f"axis {axis!r} chunk {key} (tracks {rows}, positions {positions})"


def _chunk_problem(array, rows: np.ndarray, start: int, end: int) -> tuple[str, str] | None:
    """Why ``rows`` x ``[start, end)`` of ``array`` cannot be trusted: (kind, reason), or None.

    ``kind`` is ``"missing"`` (a chunk file gone: it reads as the NaN fill value)
    or ``"corrupt"`` (it does not decode, or holds values that are not finite).
    """
    return _read_span(array, rows, start, end)[1]


def _read_span(array, rows: np.ndarray, start: int, end: int):
    """``rows`` x ``[start, end)`` of ``array`` as stored, and :func:`_chunk_problem`'s answer.

    Returns
    -------
    (numpy.ndarray or None, (str, str) or None)
        The values (the array's dtype; None when they do not decode) and the problem.
    """
    try:
        values = np.asarray(array.oindex[np.asarray(rows, dtype=np.int64), start:end])
    except Exception as exc:  # noqa: BLE001 - codecs raise ValueError, RuntimeError, ...
        if "checksum" in str(exc):
            return None, ("corrupt", "its checksum does not match")
        return None, ("corrupt", f"it does not decode: {_short(exc)}")
    bad = ~np.isfinite(values.astype(np.float32))
    if not bad.any():
        return values, None
    if math.isnan(float(array.metadata.fill_value)) and np.isnan(values).all():
        return values, ("missing", "its file is gone")
    return values, ("corrupt", f"it holds {int(bad.sum())} NaN or infinite values")


def _chunk_tails(url: str, array, coords: Sequence[tuple[int, int]]) -> list[str | None]:
    """The CRC-32C (hex, as stored: the last 4 bytes) of chunks ``(i, j)``; None where absent."""
    tails: list[str | None] = []
    if is_local_path(url):
        folder = Path(local_path(url)) / array.path
        for i, j in coords:
            try:
                with open(folder / array.metadata.encode_chunk_key((i, j)), "rb") as handle:
                    handle.seek(-4, os.SEEK_END)
                    tails.append(handle.read(4).hex())
            except (FileNotFoundError, OSError):
                tails.append(None)
        return tails
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    for i, j in coords:
        path = f"{root.rstrip('/')}/{array.path}/{array.metadata.encode_chunk_key((i, j))}"
        try:
            size = fs.size(path)
            tails.append(fs.cat_file(path, start=size - 4, end=size).hex())
        except (FileNotFoundError, OSError):
            tails.append(None)
    return tails


def _has_crc(array) -> bool:
    """Whether a chunk of ``array`` ends with its CRC-32C (the table means nothing otherwise)."""
    return "crc32c" in _codec_names(array)


def _table_entry(table: Sequence[str | None], i: int, j: int) -> str | None:
    """The recorded CRC of chunk ``(i, j)`` (None when not recorded or absent)."""
    if i >= len(table) or not table[i]:
        return None
    entry = table[i][8 * j : 8 * j + 8]
    return entry if len(entry) == 8 and entry != "-" * 8 else None


def _fresh_attrs(store: Store) -> dict:
    """The store's metadata as on disk now."""
    try:
        return dict(_zarr().open_group(store=_zarr_target(store.url), mode="r").attrs)
    except Exception:  # noqa: BLE001 - only a second look; the caller reports the mismatch
        return {}


def _values_digest(row: np.ndarray) -> str:
    """sha256 of one track's values on one axis as stored (little-endian)."""
    return hashlib.sha256(_little_endian(row).data).hexdigest()


def _little_endian(row: np.ndarray) -> np.ndarray:
    """``row`` contiguous and little-endian: the bytes a track digest is of."""
    row = np.ascontiguousarray(row)
    if row.dtype.byteorder == ">":
        row = row.byteswap().view(row.dtype.newbyteorder("<"))
    return row


def _json_digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def coordinates_digest(layout: Layout, axis: str) -> str:
    """sha256 of an axis's coordinates (see :meth:`Store.coordinate_digests`)."""
    regions = layout.regions[layout.regions.axis == axis]
    rows = [
        [str(r.chrom), int(r.start), int(r.end), int(r.offset)]
        for r in regions.itertuples(index=False)
    ]
    return _json_digest(
        {"resolution": int(layout.resolution), "length": int(layout.axis_lengths[axis]),
         "regions": rows}
    )  # fmt: skip


def location_hint(url: str | os.PathLike) -> str:
    """Where a store was found, absolute: a hint for finding it again, never its identity."""
    url = str(url)
    if is_local_path(url):
        return str(Path(local_path(url)).resolve())
    return url


def _short(exc: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# metadata checks ------------------------------------------------------------------


def _bad_metadata(url: str, key: str, problem: str):
    """Raise the one-line error for a bad metadata key."""
    raise EpitensorError(
        f"store {url}: metadata key {key!r} is {problem}; the store's zarr.json was edited "
        f"or damaged: restore it or {_REINGEST}"
    )


def _get(mapping: dict, key: str, url: str, kind: type, what: str, prefix: str = ""):
    """``mapping[key]`` when it is a ``kind`` (never a bool); else the error naming the key."""
    if key not in mapping:
        _bad_metadata(url, prefix + key, "missing")
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        _bad_metadata(url, prefix + key, f"{type(value).__name__} {_clip(value)}, expected {what}")
    return value


def _clip(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_str(attrs: dict, key: str, url: str) -> str:
    return _get(attrs, key, url, str, "a string")


def _check_choice(attrs: dict, key: str, choices: Sequence[str], url: str) -> str:
    value = _check_str(attrs, key, url)
    if value not in choices:
        _bad_metadata(url, key, f"{value!r}, expected one of {list(choices)}")
    return value


def _check_chrom_sizes(attrs: dict, url: str) -> pd.Series:
    sizes = _get(attrs, "chrom_sizes", url, dict, "a mapping of chromosome to length")
    for chrom, length in sizes.items():
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            _bad_metadata(url, f"chrom_sizes.{chrom}", f"{_clip(length)}, expected a length > 0")
    return pd.Series(sizes, name="length", dtype="int64")


def _check_tracks(attrs: dict, url: str) -> pd.DataFrame:
    tracks = _get(attrs, "tracks", url, list, "a list of [celltype, assay, source, md5]")
    for k, entry in enumerate(tracks):
        if (
            not isinstance(entry, list)
            or len(entry) != len(TRACK_COLUMNS)
            or not all(isinstance(x, str) for x in entry)
            or not entry[0]
            or not entry[1]
        ):
            _bad_metadata(url, f"tracks[{k}]", f"{_clip(entry)}, expected 4 strings")
    names = [tuple(t[:2]) for t in tracks]
    if len(set(names)) != len(names):
        repeated = next(n for i, n in enumerate(names) if n in names[:i])
        _bad_metadata(url, "tracks", f"listing {repeated} twice")
    return pd.DataFrame(tracks, columns=TRACK_COLUMNS)


def _check_digests(attrs: dict, url: str, n_tracks: int) -> None:
    """``track_digests`` (when present) lists one mapping or null per track."""
    digests = attrs.get("track_digests")
    if digests is None:
        return
    if not isinstance(digests, list) or len(digests) != n_tracks:
        _bad_metadata(url, "track_digests", f"{_clip(digests)}, expected {n_tracks} entries")
    for k, entry in enumerate(digests):
        if entry is not None and not (
            isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())
        ):
            _bad_metadata(url, f"track_digests[{k}]", f"{_clip(entry)}, expected axis -> sha256")
    table = attrs.get("chunk_crc32c")
    if table is not None and not (
        isinstance(table, dict)
        and all(isinstance(v, list) for v in table.values())
        and all(e is None or isinstance(e, str) for v in table.values() for e in v)
    ):
        _bad_metadata(url, "chunk_crc32c", f"{_clip(table)}, expected axis -> list of hex")


_REGION_KINDS = {"axis": str, "chrom": str, "name": str}  # the other columns are int


def _check_layout(attrs: dict, url: str) -> Layout:
    data = _get(attrs, "layout", url, dict, "a layout mapping")
    for key, kind, what in (
        ("name", str, "a string"),
        ("resolution", int, "an integer"),
        ("axis_lengths", dict, "a mapping of axis to length"),
        ("regions", dict, "a mapping of column to values"),
    ):
        _get(data, key, url, kind, what, prefix="layout.")
    resolution = attrs.get("resolution", data["resolution"])
    if data["resolution"] <= 0 or resolution != data["resolution"]:
        _bad_metadata(
            url, "resolution", f"{_clip(resolution)} and layout.resolution {data['resolution']}"
        )
    if not data["axis_lengths"]:
        _bad_metadata(url, "layout.axis_lengths", "empty")
    for axis, length in data["axis_lengths"].items():
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            _bad_metadata(url, f"layout.axis_lengths.{axis}", f"{_clip(length)}, expected a length")
    regions = data["regions"]
    n = None
    for column in ("axis", "chrom", "start", "end", "name", "offset", "first_bin", "n_bins"):
        values = regions.get(column)
        kind = _REGION_KINDS.get(column, int)
        if not isinstance(values, list) or not all(
            isinstance(v, kind) and not isinstance(v, bool) for v in values
        ):
            _bad_metadata(
                url,
                f"layout.regions.{column}",
                f"{_clip(values)}, expected a list of {kind.__name__}",
            )
        if n is not None and len(values) != n:
            _bad_metadata(url, f"layout.regions.{column}", f"{len(values)} long, other columns {n}")
        n = len(values)
    try:
        return Layout.from_dict(data)
    except EpitensorError as exc:
        _bad_metadata(url, "layout", f"invalid ({exc})")
