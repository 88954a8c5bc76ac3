"""Training data: track sets, per-axis sources and the block-shuffled epoch sampler.

The paper's epoch
-----------------
One epoch passes over every position of the training axes once; each position
is paired with one training track drawn uniformly at random. Positions are
block-shuffled: each axis is cut into blocks of ``block_size`` positions, the
blocks are shuffled, ``group_blocks`` consecutive shuffled blocks of one axis
form a group, and the positions of a group are shuffled together. A group is
read from the store as a few sequential block reads, so a store larger than
memory streams; a small store is cached in memory once. Everything random in an
epoch derives from ``(seed, epoch)``, so an epoch replays identically after a
crash and a resumed run ends with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from epitensor._utils import EpitensorError
from epitensor.nn.hyperparams import TrainConfig
from epitensor.store.compendium import Store

__all__ = ["AxisSource", "Batch", "EpochSampler", "TrackSet", "validation_positions"]

# Stores up to this many bytes of training signal are read once and kept in memory.
CACHE_BYTES = 1 << 30


@dataclass
class TrackSet:
    """Tracks used by a loop: their store rows and embedding rows.

    Attributes
    ----------
    names : list of (str, str)
        ``(celltype, assay)`` per track.
    rows : numpy.ndarray, shape=(n_tracks,), int64
        Rows in the store.
    celltypes, assays : numpy.ndarray, shape=(n_tracks,), int64
        Rows of the cell type and assay embeddings.
    """

    names: list[tuple[str, str]]
    rows: np.ndarray
    celltypes: np.ndarray
    assays: np.ndarray

    @classmethod
    def build(
        cls,
        store: Store,
        names: Sequence[tuple[str, str]],
        celltypes: Sequence[str],
        assays: Sequence[str],
    ) -> TrackSet:
        """Look tracks up in the store and in the model's name lists (errors name the track)."""
        ct_index = {c: i for i, c in enumerate(celltypes)}
        as_index = {a: i for i, a in enumerate(assays)}
        for celltype, assay in names:
            if celltype not in ct_index:
                raise EpitensorError(
                    f"cell type {celltype!r} is not in the model: {list(celltypes)}"
                )
            if assay not in as_index:
                raise EpitensorError(f"assay {assay!r} is not in the model: {list(assays)}")
        return cls(
            names=[(str(c), str(a)) for c, a in names],
            rows=np.array([store.track_index(c, a) for c, a in names], dtype=np.int64),
            celltypes=np.array([ct_index[c] for c, _ in names], dtype=np.int64),
            assays=np.array([as_index[a] for _, a in names], dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.names)


class AxisSource:
    """Signal of some tracks on one axis, read in blocks (cached when small).

    Parameters
    ----------
    store : Store
        The compendium.
    axis : str
        Axis name.
    rows : numpy.ndarray, shape=(n_tracks,), int64
        Store rows of the tracks.
    cache_bytes : int
        Cache the whole axis (float16) when it needs at most this many bytes.
        Default 1 GiB.
    """

    def __init__(
        self, store: Store, axis: str, rows: np.ndarray, cache_bytes: int = CACHE_BYTES
    ) -> None:
        self.store = store
        self.axis = axis
        self.rows = np.asarray(rows, dtype=np.int64)
        self.length = store.axis_length(axis)
        self._cache: np.ndarray | None = None
        if len(self.rows) * self.length * 2 <= cache_bytes:
            self._cache = self._read(0, self.length).astype(np.float16)

    def _read(self, start: int, end: int) -> np.ndarray:
        return self.store.read_block(self.axis, start, end, tracks=self.rows)

    def read(self, start: int, end: int) -> np.ndarray:
        """Signal of ``[start, end)``: ``(n_tracks, end - start)``, float16 or float32, arcsinh."""
        if self._cache is not None:
            return self._cache[:, start:end]
        return self._read(start, end)


def validation_positions(length: int, n_positions: int, n_windows: int = 64) -> np.ndarray:
    """Evenly spaced windows of positions on an axis used to score held-out tracks.

    Parameters
    ----------
    length : int
        Axis length.
    n_positions : int
        Positions wanted (all of the axis when it is shorter).
    n_windows : int
        Number of contiguous windows. Default 64.

    Returns
    -------
    numpy.ndarray, shape=(min(length, n_positions),), int64, sorted
    """
    if n_positions >= length:
        return np.arange(length, dtype=np.int64)
    width = max(1, n_positions // n_windows)
    n_windows = n_positions // width
    starts = np.linspace(0, length - width, n_windows).astype(np.int64)
    return (starts[:, None] + np.arange(width)[None, :]).ravel()


# sampler ---------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One batch of samples (torch tensors on the CPU).

    Attributes
    ----------
    axis : str
    celltypes, assays, positions : torch.Tensor, shape=(batch,), int64
    values : torch.Tensor, shape=(batch,), float32, arcsinh
    baseline : torch.Tensor, shape=(batch,), float32, optional
        The leave-one-out average of each sample's assay (``average="residual"``,
        :mod:`epitensor.nn.average`); None otherwise.
    """

    axis: str
    celltypes: torch.Tensor
    assays: torch.Tensor
    positions: torch.Tensor
    values: torch.Tensor
    baseline: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device``."""
        if device.type == "cpu":
            return self
        move = {"non_blocking": True}
        return Batch(
            self.axis,
            self.celltypes.to(device, **move),
            self.assays.to(device, **move),
            self.positions.to(device, **move),
            self.values.to(device, **move),
            None if self.baseline is None else self.baseline.to(device, **move),
        )


def _epoch_rng(seed: int, epoch: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), *map(int, keys)])


class EpochSampler:
    """The paper's epoch over some axes, block-shuffled, with a prefetching thread.

    Parameters
    ----------
    sources : dict of str to AxisSource
        The signal of the training tracks on each training axis (same track order).
    tracks : TrackSet
        The training tracks (their embedding rows).
    batch_size : int
    block_size, group_blocks : int
        See :class:`TrainConfig`.
    seed : int
    tracks_per_position : int
        Training tracks drawn (without replacement) per position and epoch. Default 1,
        the paper's epoch.
    leave_one_out : bool
        Give each sample the average of its assay over the other training tracks
        at its position (``Batch.baseline``, :func:`epitensor.nn.average.leave_one_out`).
        Default False.
    """

    def __init__(
        self,
        sources: dict[str, AxisSource],
        tracks: TrackSet,
        batch_size: int,
        block_size: int = 1 << 16,
        group_blocks: int = 8,
        seed: int = 0,
        tracks_per_position: int = 1,
        leave_one_out: bool = False,
    ) -> None:
        self.leave_one_out = bool(leave_one_out)
        self.sources = sources
        self.tracks_per_position = int(tracks_per_position)
        self.tracks = tracks
        self.batch_size = int(batch_size)
        self.block_size = int(block_size)
        self.group_blocks = int(group_blocks)
        self.seed = int(seed)

    @property
    def n_samples(self) -> int:
        """Samples per epoch: every position of every training axis once."""
        k = min(self.tracks_per_position, len(self.tracks))
        return k * sum(s.length for s in self.sources.values())

    def n_batches(self) -> int:
        """Batches per epoch."""
        k = min(self.tracks_per_position, len(self.tracks))
        return sum(
            math.ceil(k * sum(e - s for s, e in blocks) / self.batch_size)
            for _, _, blocks in self.groups(0)
        )

    @classmethod
    def from_config(
        cls,
        sources: dict[str, AxisSource],
        tracks: TrackSet,
        config: TrainConfig,
        leave_one_out: bool = False,
    ) -> EpochSampler:
        """The sampler a :class:`TrainConfig` describes (``leave_one_out`` as in the class)."""
        return cls(
            sources,
            tracks,
            config.batch_size,
            config.block_size,
            config.group_blocks,
            config.seed,
            config.tracks_per_position,
            leave_one_out,
        )

    def groups(self, epoch: int) -> list[tuple[int, str, list[tuple[int, int]]]]:
        """The epoch's groups in order: ``(group_id, axis, [(start, end), ...])``."""
        rng = _epoch_rng(self.seed, epoch)
        groups = []
        for axis, source in self.sources.items():
            starts = np.arange(0, source.length, self.block_size)
            starts = starts[rng.permutation(len(starts))]
            blocks = [(int(s), int(min(s + self.block_size, source.length))) for s in starts]
            for k in range(0, len(blocks), self.group_blocks):
                groups.append((axis, sorted(blocks[k : k + self.group_blocks])))
        order = rng.permutation(len(groups))
        return [(int(i), groups[i][0], groups[i][1]) for i in order]

    def _group_batches(
        self, epoch: int, group_id: int, axis: str, blocks: list[tuple[int, int]]
    ) -> Iterator[tuple]:
        rng = _epoch_rng(self.seed, epoch, group_id)
        source = self.sources[axis]
        positions = np.concatenate([np.arange(s, e, dtype=np.int64) for s, e in blocks])
        values = np.concatenate([source.read(s, e) for s, e in blocks], axis=1)
        order = rng.permutation(len(positions))
        n_tracks, k = len(self.tracks), min(self.tracks_per_position, len(self.tracks))
        if k == 1:
            choice = rng.integers(0, n_tracks, size=len(positions))
        else:  # k distinct tracks per position, kept together in one batch
            keys = rng.random((len(positions), n_tracks), dtype=np.float32)
            choice = np.argsort(keys, axis=1)[:, :k].ravel()
            order = np.repeat(order, k)
        # numpy only in this (prefetch) thread: a torch op here starts an OpenMP team
        # owned by this thread, and once the thread exits every later step of the
        # training thread ran up to 100x slower.
        y = values[choice, order].astype(np.float32)
        pos = positions[order]
        ct, assay = self.tracks.celltypes[choice], self.tracks.assays[choice]
        base = self._baseline(values, assay, order, y) if self.leave_one_out else None
        for k in range(0, len(order), self.batch_size):
            sl = slice(k, k + self.batch_size)
            yield (axis, ct[sl], assay[sl], pos[sl], y[sl], None if base is None else base[sl])

    def _baseline(
        self, values: np.ndarray, assay: np.ndarray, order: np.ndarray, y: np.ndarray
    ) -> np.ndarray:
        """Leave-one-out average of each sample's assay, ``(n_samples,)`` float32."""
        from epitensor.nn.average import leave_one_out, track_sums

        n_assays = int(self.tracks.assays.max()) + 1
        sums, counts = track_sums(values, self.tracks.assays, n_assays)
        return leave_one_out(sums[assay, order], counts[assay], y)

    def batches(self, epoch: int) -> Iterator[Batch]:
        """All batches of ``epoch``, built in a background thread."""

        def produce() -> Iterator[tuple]:
            for group_id, axis, blocks in self.groups(epoch):
                yield from self._group_batches(epoch, group_id, axis, blocks)

        for axis, ct, assay, pos, y, base in _prefetch(produce(), depth=64):
            yield Batch(
                axis,
                torch.from_numpy(ct),
                torch.from_numpy(assay),
                torch.from_numpy(pos),
                torch.from_numpy(y),
                None if base is None else torch.from_numpy(base),
            )


def _prefetch(iterator: Iterator, depth: int) -> Iterator:
    """Run ``iterator`` in a daemon thread, ``depth`` items ahead of the consumer."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            items.put(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
