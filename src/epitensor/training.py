"""Training: the epoch sampler, the training plan and runner, stage 1, stage 2, transfer, checkpoints.

Three layers (STYLE.md): :mod:`epitensor.model` holds the torch module,
this module the loops and optimisers, :mod:`epitensor.avocado` the user class.

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

import contextlib
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from epitensor._utils import (
    EpitensorError,
    atomic_directory,
    default_threads,
    progress,
    resolve_device,
    resolve_precision,
)
from epitensor.genome import Layout
from epitensor.model import AvocadoModule, GenomeFactors
from epitensor.store import RegionView, Store, open_store

__all__ = [
    "TrainConfig",
    "TrackSet",
    "AxisSource",
    "EpochSampler",
    "TrainingPlan",
    "Checkpoint",
    "run_training",
    "fit_stage1",
    "stage1_store",
    "fit_genome_axis",
    "fit_new_rows",
    "freeze",
    "HISTORY_COLUMNS",
]

LR_SCHEDULES = ["constant", "cosine"]
HISTORY_COLUMNS = ["epoch", "stage", "train_mse", "holdout_mse", "seconds"]
# Stage 1 trains on every position of stores up to this size, else on the pilot regions.
ALL_POSITIONS_LIMIT = 20_000_000
# Stores up to this many bytes of training signal are read once and kept in memory.
CACHE_BYTES = 1 << 30


@dataclass
class TrainConfig:
    """Hyperparameters of one training loop.

    Parameters
    ----------
    n_epochs : int
        Passes over the training axes.
    batch_size : int
        Samples per optimiser step.
    lr : float
        Adam learning rate of the network and the cell type and assay factors.
    genome_lr : float, optional
        Learning rate of the genome factors. Default None: ``lr``.
    seed : int
        Seed of every random draw of the loop. Default 0.
    device : str, optional
        torch device. Default None: CUDA, else MPS, else CPU.
    n_threads : int, optional
        CPU threads for torch. Default None: the CPUs the process may use
        (affinity, cgroup quota), at most torch's setting.
    precision : str
        ``"fp32"``, ``"bf16"`` (autocast of the network) or ``"auto"`` (bf16
        where the device has native bf16). Default ``"fp32"``.
    block_size, group_blocks : int
        Sampler block length (positions) and blocks shuffled together.
        Defaults 65,536 and 8.
    tracks_per_position : int
        Training tracks per position per epoch (the paper: 1). Default 1.
    genome_weight_decay : float
        L2 penalty on the genome factors a batch touches (added to the loss as
        ``decay * mean over the batch of the squared factors``). Default 0.
    early_stopping : int, optional
        Stop when the holdout MSE has not improved for this many epochs, and
        end with the parameters of the best epoch. Default None: never.
    n_validation : int
        Positions (in evenly spaced windows) on which held-out tracks are
        scored after each epoch. Default 100,000.
    verbose : bool
        Progress bars on stderr. Default True.
    lr_schedule : str
        ``"constant"`` or ``"cosine"`` (every learning rate annealed from its
        value to 0 over the run, step by step). Default ``"constant"``.
    swa_start : int, optional
        End with the mean of the parameters after each epoch from this one on
        (stochastic weight averaging). Default None: the last epoch's.
    """

    n_epochs: int
    batch_size: int
    lr: float
    genome_lr: float | None = None
    seed: int = 0
    device: str | None = None
    n_threads: int | None = None
    precision: str = "fp32"
    block_size: int = 1 << 16
    group_blocks: int = 8
    tracks_per_position: int = 1
    genome_weight_decay: float = 0.0
    early_stopping: int | None = None
    n_validation: int = 100_000
    verbose: bool = True
    lr_schedule: str = "constant"
    swa_start: int | None = None

    def check(self) -> None:
        """Raise an :class:`EpitensorError` for an impossible value."""
        for name in (
            "n_epochs",
            "batch_size",
            "block_size",
            "group_blocks",
            "n_validation",
            "tracks_per_position",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < (0 if name == "n_epochs" else 1):
                raise EpitensorError(f"{name} must be a positive integer; got {name}={value!r}")
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise EpitensorError(f"lr must be a positive number; got lr={self.lr!r}")
        if self.genome_lr is not None and not self.genome_lr > 0:
            raise EpitensorError(f"genome_lr must be a positive number; got {self.genome_lr!r}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise EpitensorError(
                f"invalid precision: got {self.precision!r}, expected one of "
                f"['fp32', 'bf16', 'auto']"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise EpitensorError(
                f"invalid lr_schedule: got {self.lr_schedule!r}, expected one of {LR_SCHEDULES}"
            )
        if self.swa_start is not None:
            if not isinstance(self.swa_start, int | np.integer) or self.swa_start < 1:
                raise EpitensorError(
                    f"swa_start must be a positive integer or None; got {self.swa_start!r}"
                )
            if self.early_stopping is not None:
                raise EpitensorError(
                    "early_stopping and swa_start cannot be combined: one ends with the best "
                    "epoch's parameters, the other with an average; set one of them"
                )
        if self.early_stopping is not None and self.early_stopping < 1:
            raise EpitensorError(
                f"early_stopping must be a positive integer or None; got {self.early_stopping!r}"
            )


# tracks and data -----------------------------------------------------------------------------


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
    """

    axis: str
    celltypes: torch.Tensor
    assays: torch.Tensor
    positions: torch.Tensor
    values: torch.Tensor

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
    ) -> None:
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
        cls, sources: dict[str, AxisSource], tracks: TrackSet, config: TrainConfig
    ) -> EpochSampler:
        """The sampler a :class:`TrainConfig` describes."""
        return cls(
            sources,
            tracks,
            config.batch_size,
            config.block_size,
            config.group_blocks,
            config.seed,
            config.tracks_per_position,
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
        for k in range(0, len(order), self.batch_size):
            sl = slice(k, k + self.batch_size)
            yield (axis, ct[sl], assay[sl], pos[sl], y[sl])

    def batches(self, epoch: int) -> Iterator[Batch]:
        """All batches of ``epoch``, built in a background thread."""

        def produce() -> Iterator[tuple]:
            for group_id, axis, blocks in self.groups(epoch):
                yield from self._group_batches(epoch, group_id, axis, blocks)

        for axis, ct, assay, pos, y in _prefetch(produce(), depth=64):
            yield Batch(
                axis,
                torch.from_numpy(ct),
                torch.from_numpy(assay),
                torch.from_numpy(pos),
                torch.from_numpy(y),
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


# plan: loss, step, optimisers ------------------------------------------------------------------


def freeze(module: AvocadoModule, trainable: Sequence[str]) -> None:
    """Freeze every part of ``module`` except the named ones.

    Parameters
    ----------
    module : AvocadoModule
    trainable : sequence of str
        Parts left trainable, among ``"celltype"``, ``"assay"``, ``"genome"``
        (all axes) or ``"genome:<axis>"``, and ``"network"``.
    """
    parts = {
        "celltype": [module.celltype_embedding],
        "assay": [module.assay_embedding],
        "network": [module.network],
        "genome": list(module.genome.values()),
    }
    for axis, factors in module.genome.items():
        parts[f"genome:{axis}"] = [factors]
    unknown = set(trainable) - set(parts)
    if unknown:
        raise EpitensorError(f"unknown parts {sorted(unknown)}; expected among {sorted(parts)}")
    module.requires_grad_(False)
    for name in trainable:
        for part in parts[name]:
            part.requires_grad_(True)


def _is_genome(module: AvocadoModule, param: torch.Tensor) -> bool:
    return any(param is p for p in module.genome.parameters())


class TrainingPlan:
    """Loss, optimisers and one step: Adam for dense parameters, SparseAdam for genome tables.

    SparseAdam is lazy: a genome row's moments and value change only on the
    steps whose batch touches it (rows off the batch are not decayed), which is
    what makes a step cost what its batch touches.

    Parameters
    ----------
    module : AvocadoModule
        Only parameters with ``requires_grad`` are optimised.
    config : TrainConfig
    device : torch.device
    row_masks : dict of str to torch.Tensor, optional
        Per parameter name, a ``(n_rows, 1)`` float mask multiplied into its
        gradient (transfer: only new rows learn). Default None.
    """

    def __init__(
        self,
        module: AvocadoModule,
        config: TrainConfig,
        device: torch.device,
        row_masks: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.module = module
        self.config = config
        self.device = device
        self.precision = resolve_precision(config.precision, device)
        sparse, dense = [], []
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            is_sparse = name.startswith("genome.") and module.sparse
            (sparse if is_sparse else dense).append(param)
        if not sparse and not dense:
            raise EpitensorError("nothing to train: every parameter is frozen")
        self.optimizers: list[torch.optim.Optimizer] = []
        genome_lr = config.lr if config.genome_lr is None else config.genome_lr
        if dense:
            groups = [
                {"params": [p for p in dense if not _is_genome(module, p)], "lr": config.lr},
                {"params": [p for p in dense if _is_genome(module, p)], "lr": genome_lr},
            ]
            self.optimizers.append(torch.optim.Adam([g for g in groups if g["params"]]))
        if sparse:
            self.optimizers.append(torch.optim.SparseAdam(sparse, lr=genome_lr))
        self.base_lrs = [[g["lr"] for g in opt.param_groups] for opt in self.optimizers]
        self._hooks = []
        for name, mask in (row_masks or {}).items():
            param = module.get_parameter(name)
            mask = mask.to(device)
            self._hooks.append(param.register_hook(lambda g, m=mask: g * m))

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch MSE and the loss minimised (MSE plus the genome-factor penalty), scalars."""
        with self._autocast():
            pred = self.module(batch.celltypes, batch.assays, batch.positions, batch.axis)
        mse = torch.mean((pred.float() - batch.values) ** 2)
        decay = self.config.genome_weight_decay
        if decay <= 0:
            return mse, mse
        factors = self.module.genome[batch.axis](batch.positions)
        return mse, mse + decay * factors.pow(2).sum(dim=1).mean()

    def set_progress(self, fraction: float) -> None:
        """Set the learning rates the schedule gives at ``fraction`` (in [0, 1)) of training.

        ``"cosine"`` anneals every rate from its base value to 0 over the run;
        ``"constant"`` leaves them alone.
        """
        if self.config.lr_schedule != "cosine":
            return
        factor = 0.5 * (1 + math.cos(math.pi * fraction))
        for opt, bases in zip(self.optimizers, self.base_lrs):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = base * factor

    def step(self, batch: Batch) -> float:
        """One optimiser step; returns the batch MSE (without the penalty)."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        mse, loss = self.losses(batch)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        return float(mse.detach())

    def state_dict(self) -> list[dict]:
        """States of the optimisers, in order."""
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        """Restore the optimisers."""
        if len(states) != len(self.optimizers):
            raise EpitensorError("checkpoint does not match this training run (optimisers differ)")
        for opt, state in zip(self.optimizers, states):
            opt.load_state_dict(state)

    def close(self) -> None:
        """Remove gradient hooks."""
        for hook in self._hooks:
            hook.remove()


# validation ------------------------------------------------------------------------------------


class HoldoutScorer:
    """MSE of held-out tracks on fixed positions of one axis.

    Parameters
    ----------
    store : Store
    axis : str
    tracks : TrackSet
        Held-out tracks (their cell type and assay must be in the model).
    n_positions : int
        Positions scored (evenly spaced windows).
    """

    def __init__(self, store: Store, axis: str, tracks: TrackSet, n_positions: int) -> None:
        self.axis = axis
        self.tracks = tracks
        self.positions = validation_positions(store.axis_length(axis), n_positions)
        # Read window by window: the windows span the whole axis, and one read from
        # the first to the last position would load every track of the axis.
        breaks = np.flatnonzero(np.diff(self.positions) != 1) + 1
        pieces = [
            store.read_block(axis, int(w[0]), int(w[-1]) + 1, tracks=tracks.rows)
            for w in np.split(self.positions, breaks)
        ]
        self.values = torch.from_numpy(np.ascontiguousarray(np.concatenate(pieces, axis=1)))

    @torch.inference_mode()
    def score(self, module: AvocadoModule, device: torch.device, chunk: int = 16384) -> float:
        """Mean over tracks and positions of the squared error (arcsinh scale)."""
        was_training = module.training
        module.eval()
        ct = torch.from_numpy(self.tracks.celltypes).to(device)
        assay = torch.from_numpy(self.tracks.assays).to(device)
        total = 0.0
        for k in range(0, len(self.positions), chunk):
            pos = torch.from_numpy(self.positions[k : k + chunk]).to(device)
            pred = module.forward_tracks(ct, assay, pos, self.axis).float().cpu()
            total += float(((pred - self.values[:, k : k + chunk]) ** 2).sum())
        module.train(was_training)
        return total / self.values.numel()


# checkpoints -----------------------------------------------------------------------------------


def _flatten_optimizer_states(states: list[dict]) -> tuple[dict[str, torch.Tensor], list]:
    tensors: dict[str, torch.Tensor] = {}
    meta = []
    for i, state in enumerate(states):
        entries = {}
        for pid, slots in state["state"].items():
            entry = {}
            for key, value in slots.items():
                if torch.is_tensor(value):
                    name = f"opt{i}.{pid}.{key}"
                    tensors[name] = value.detach().cpu().contiguous()
                    entry[key] = {"tensor": name}
                else:
                    entry[key] = {"value": value}
            entries[str(pid)] = entry
        meta.append({"state": entries, "param_groups": state["param_groups"]})
    return tensors, meta


def _unflatten_optimizer_states(tensors: dict[str, torch.Tensor], meta: list) -> list[dict]:
    states = []
    for item in meta:
        state = {}
        for pid, entry in item["state"].items():
            state[int(pid)] = {
                key: tensors[v["tensor"]] if "tensor" in v else v["value"]
                for key, v in entry.items()
            }
        states.append({"state": state, "param_groups": item["param_groups"]})
    return states


class Checkpoint:
    """An atomic per-epoch checkpoint of a training loop, in a directory.

    Files: ``checkpoint/state.json`` (epoch, history, run fingerprint),
    ``checkpoint/module.safetensors``, ``checkpoint/optim.safetensors`` and
    ``log.jsonl`` (one line of figures per finished epoch).

    Parameters
    ----------
    directory : str or path-like
        Where checkpoints live.
    fingerprint : dict
        JSON description of the run; resuming from a checkpoint with another
        fingerprint raises.
    """

    def __init__(self, directory: str | Path, fingerprint: dict) -> None:
        self.directory = Path(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint))

    @property
    def path(self) -> Path:
        """The checkpoint folder."""
        return self.directory / "checkpoint"

    def exists(self) -> bool:
        """True when a finished epoch was checkpointed."""
        return (self.path / "state.json").is_file()

    def save(
        self,
        epoch: int,
        module: nn.Module,
        plan: TrainingPlan,
        history: list[dict],
        extra: dict,
        kept: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        """Write the state after ``epoch`` (atomic: the old checkpoint stays until the rename).

        ``kept`` holds further parameter sets (the best epoch's, the running
        average), written in the same atomic step so they always match the epoch.
        """
        from safetensors.torch import save_file

        tensors, meta = _flatten_optimizer_states(plan.state_dict())
        with atomic_directory(self.path, overwrite=True) as tmp:
            save_file(_module_tensors(module), str(tmp / "module.safetensors"))
            save_file(tensors, str(tmp / "optim.safetensors"))
            for name, state in (kept or {}).items():
                save_file(state, str(tmp / f"kept-{name}.safetensors"))
            state = {
                "epoch": epoch,
                "fingerprint": self.fingerprint,
                "history": history,
                "optimizers": meta,
                "extra": extra,
            }
            (tmp / "state.json").write_text(json.dumps(state))
        with open(self.directory / "log.jsonl", "a") as log:
            log.write(json.dumps(history[-1]) + "\n")

    def load(self, module: nn.Module, plan: TrainingPlan) -> tuple[int, list[dict], dict]:
        """Restore module and optimisers; returns (last epoch, history, extra)."""
        from safetensors.torch import load_file

        state = json.loads((self.path / "state.json").read_text())
        if state["fingerprint"] != self.fingerprint:
            raise EpitensorError(
                f"checkpoint in {self.directory} belongs to another run (other data or "
                f"hyperparameters); remove it or train without resume"
            )
        weights = load_file(str(self.path / "module.safetensors"))
        module.load_state_dict(weights)
        tensors = load_file(str(self.path / "optim.safetensors"))
        plan.load_state_dict(_unflatten_optimizer_states(tensors, state["optimizers"]))
        return int(state["epoch"]), list(state["history"]), dict(state["extra"])

    def load_kept(self) -> dict[str, dict[str, torch.Tensor]]:
        """The parameter sets saved with ``kept=`` by :meth:`save`, by name."""
        from safetensors.torch import load_file

        return {
            path.stem.removeprefix("kept-"): load_file(str(path))
            for path in sorted(self.path.glob("kept-*.safetensors"))
        }

    def clear(self) -> None:
        """Remove the checkpoint folder and log."""
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)
        (self.directory / "log.jsonl").unlink(missing_ok=True)


def _trained_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the parameters that require gradients."""
    return {
        name: param.detach().to("cpu", copy=True)
        for name, param in module.named_parameters()
        if param.requires_grad
    }


def _module_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every parameter and buffer."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


# runner ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Run a block with ``n_threads`` torch CPU threads, restoring the previous count after.

    ``n_threads=None`` uses :func:`~epitensor._utils.default_threads`: no more
    threads than the CPUs the process may run on (affinity, cgroup quota).
    """
    n_threads = default_threads(n_threads)
    if not isinstance(n_threads, int | np.integer) or n_threads < 1:
        raise EpitensorError(f"n_threads must be a positive integer; got n_threads={n_threads!r}")
    previous = torch.get_num_threads()
    if n_threads == previous:  # also MKL's and the pool's setting: leave them untouched
        yield
        return
    torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class KeptWeights:
    """Parameter sets kept beside the live ones during a run.

    ``best``: the parameters of the epoch with the lowest holdout MSE (kept when
    early stopping is on). ``average``: the running mean of the parameters after
    each epoch from ``config.swa_start`` on (stochastic weight averaging,
    Izmailov et al. 2018). Each is a CPU copy of the module's state dict.
    """

    def __init__(self, config: TrainConfig, scored: bool) -> None:
        self.keep_best = config.early_stopping is not None and scored
        self.swa_start = config.swa_start
        self.sets: dict[str, dict[str, torch.Tensor]] = {}
        self.n_averaged = 0

    def update(self, module: nn.Module, epoch: int, improved: bool) -> None:
        """Record the parameters after ``epoch``."""
        if self.keep_best and improved:
            self.sets["best"] = _trained_tensors(module)
        if self.swa_start is not None and epoch >= self.swa_start:
            current = _trained_tensors(module)
            average = self.sets.setdefault("average", current)
            if average is not current:
                for name, value in average.items():
                    value += (current[name] - value) / (self.n_averaged + 1)
            self.n_averaged += 1

    def final(self) -> dict[str, torch.Tensor] | None:
        """The parameters to end the run with, or None to keep the live ones."""
        return self.sets.get("average", self.sets.get("best"))


@dataclass
class RunResult:
    """What a loop leaves.

    Per-epoch history rows, whether it stopped early, the best epoch, and the
    holdout MSE of the parameters it ended with when those are not the last
    epoch's (best or averaged).
    """

    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int | None = None
    final_holdout_mse: float | None = None


def run_training(
    module: AvocadoModule,
    plan: TrainingPlan,
    sampler: EpochSampler,
    config: TrainConfig,
    stage: str,
    scorer: HoldoutScorer | None = None,
    checkpoint: Checkpoint | None = None,
    resume: bool = False,
    desc: str = "train",
    on_epoch: Callable[[dict], None] | None = None,
) -> RunResult:
    """Run ``config.n_epochs`` epochs: steps, holdout scoring, checkpoints, progress.

    Randomness (dropout included) is reseeded from ``(seed, epoch)`` at the start
    of every epoch inside a forked RNG, so the caller's global RNG is untouched
    and a resumed run replays the interrupted epoch exactly.

    Parameters
    ----------
    module : AvocadoModule
        On ``plan.device``; left in eval mode afterwards.
    plan : TrainingPlan
    sampler : EpochSampler
    config : TrainConfig
    stage : str
        Label written into the history (``"stage1"``, ``"genome:<axis>"``, ...).
    scorer : HoldoutScorer, optional
        Scores held-out tracks after each epoch. Default None.
    checkpoint : Checkpoint, optional
        Saved after each epoch. Default None.
    resume : bool
        Continue from ``checkpoint`` when it exists. Default False.
    desc : str
        Progress-bar label.
    on_epoch : callable, optional
        Called with each epoch's history row.

    Returns
    -------
    RunResult
    """
    result = RunResult()
    start_epoch = 0
    best, since_best = math.inf, 0
    kept = KeptWeights(config, scored=scorer is not None)
    if checkpoint is not None and resume and checkpoint.exists():
        start_epoch, result.history, extra = checkpoint.load(module, plan)
        best, since_best = extra.get("best", math.inf), extra.get("since_best", 0)
        result.best_epoch = extra.get("best_epoch")
        kept.sets, kept.n_averaged = checkpoint.load_kept(), extra.get("n_averaged", 0)
        if extra.get("stopped_early"):
            result.stopped_early = True
            start_epoch = config.n_epochs
    elif checkpoint is not None:
        checkpoint.clear()
    n_batches = sampler.n_batches()
    module.train()
    try:
        for epoch in range(start_epoch + 1, config.n_epochs + 1):
            tic = time.perf_counter()
            total, count = 0.0, 0
            bar = progress(
                total=n_batches,
                desc=f"{desc} {epoch}/{config.n_epochs}",
                verbose=config.verbose,
                unit="batch",
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed * 1_000_003 + epoch)
                for i, batch in enumerate(sampler.batches(epoch)):
                    plan.set_progress((epoch - 1 + i / n_batches) / config.n_epochs)
                    mse = plan.step(batch.to(plan.device))
                    n = len(batch.values)
                    total, count = total + mse * n, count + n
                    bar.update(1)
                    if bar.n % 16 == 0:
                        bar.set_postfix(mse=f"{total / max(count, 1):.4f}")
            bar.close()
            row = {
                "epoch": epoch,
                "stage": stage,
                "train_mse": total / max(count, 1),
                "holdout_mse": float("nan"),
                "seconds": time.perf_counter() - tic,
            }
            improved = False
            if scorer is not None:
                row["holdout_mse"] = scorer.score(module, plan.device)
                module.train()
                improved = row["holdout_mse"] < best
                if improved:
                    best, since_best, result.best_epoch = row["holdout_mse"], 0, epoch
                else:
                    since_best += 1
            kept.update(module, epoch, improved)
            row["seconds"] = time.perf_counter() - tic
            result.history.append(row)
            stop = config.early_stopping is not None and since_best >= config.early_stopping
            if checkpoint is not None:
                extra = {
                    "best": best,
                    "since_best": since_best,
                    "best_epoch": result.best_epoch,
                    "n_averaged": kept.n_averaged,
                    "stopped_early": stop,
                }
                checkpoint.save(epoch, module, plan, result.history, extra, kept.sets)
            if on_epoch is not None:
                on_epoch(row)
            if config.verbose:
                holdout = "" if scorer is None else f", holdout MSE {row['holdout_mse']:.4f}"
                progress_write(
                    f"{desc} epoch {epoch}: train MSE {row['train_mse']:.4f}{holdout}"
                    f" ({row['seconds']:.1f} s)"
                )
            if stop:
                result.stopped_early = True
                break
        if kept.final() is not None:
            module.load_state_dict(kept.final(), strict=False)
            if scorer is not None:
                result.final_holdout_mse = scorer.score(module, plan.device)
    finally:
        module.eval()
    return result


def progress_write(message: str) -> None:
    """Print a line above the progress bars (stderr)."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=__import__("sys").stderr)


# stages ----------------------------------------------------------------------------------------


def stage1_store(store: Store, regions: str | os.PathLike | pd.DataFrame | None = None) -> Store:
    """The store stage 1 trains on: ``store`` itself, or a view of some of its regions.

    Parameters
    ----------
    store : Store
    regions : str, path-like or pandas.DataFrame, optional
        ``"all"``: every position of ``store``. ``"pilot"``: the ENCODE pilot
        regions (hg19 only). A BED path or table: those regions. Default None:
        ``"all"`` for stores of at most :data:`ALL_POSITIONS_LIMIT` positions,
        else ``"pilot"``.

    Returns
    -------
    Store
        ``store``, or a :class:`~epitensor.store.RegionView` of it with one axis.
    """
    if regions is None:
        regions = "all" if store.layout.n_positions <= ALL_POSITIONS_LIMIT else "pilot"
    if isinstance(regions, str) and regions == "all":
        return store
    if isinstance(regions, str) and regions == "pilot":
        if store.genome != "hg19":
            raise EpitensorError(
                f"store {store.url} is on {store.genome} and the bundled ENCODE pilot regions "
                f"are on hg19; pass training regions on {store.genome} as a BED "
                f"(regions=..., --regions) or regions='all'"
            )
        from epitensor.datasets import pilot_regions_bed

        layout = Layout.from_bed(pilot_regions_bed(), store.resolution, "pilot")
    else:
        if not isinstance(regions, pd.DataFrame) and not Path(regions).is_file():
            raise EpitensorError(
                f"invalid regions {str(regions)!r}: expected 'all', 'pilot' or a BED file"
            )
        layout = Layout.from_bed(regions, store.resolution, "regions")
    return RegionView(store, layout)


def fit_stage1(
    module: AvocadoModule,
    store: Store,
    axes: Sequence[str],
    tracks: TrackSet,
    config: TrainConfig,
    holdout: TrackSet | None = None,
    checkpoint: Checkpoint | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> RunResult:
    """Stage 1: every part of ``module`` learned jointly on ``axes``.

    Parameters
    ----------
    module : AvocadoModule
        Has genome factors for each axis in ``axes``.
    store : Store
    axes : sequence of str
        Training axes.
    tracks : TrackSet
        Training tracks.
    config : TrainConfig
    holdout : TrackSet, optional
        Held-out tracks scored after every epoch on the first axis.
    checkpoint : Checkpoint, optional
    resume : bool
    on_epoch : callable, optional
        Called with each epoch's history row (see :func:`run_training`).

    Returns
    -------
    RunResult
    """
    config.check()
    device = resolve_device(config.device)
    freeze(module, ["celltype", "assay", "network", *(f"genome:{a}" for a in axes)])
    module.to(device)
    plan = TrainingPlan(module, config, device)
    sources = {axis: AxisSource(store, axis, tracks.rows) for axis in axes}
    sampler = EpochSampler.from_config(sources, tracks, config)
    scorer = None
    if holdout is not None and len(holdout):
        scorer = HoldoutScorer(store, axes[0], holdout, config.n_validation)
    try:
        with torch_threads(config.n_threads):
            return run_training(
                module,
                plan,
                sampler,
                config,
                "stage1",
                scorer,
                checkpoint,
                resume,
                desc="stage 1",
                on_epoch=on_epoch,
            )
    finally:
        plan.close()
        module.requires_grad_(True)


def module_kwargs_of(module: AvocadoModule) -> dict:
    """Constructor arguments that rebuild ``module`` (without genome axes)."""
    network = [m for m in module.network if isinstance(m, nn.Linear)]
    dropout = [m.p for m in module.network if isinstance(m, nn.Dropout)]
    return {
        "n_celltypes": module.celltype_embedding.num_embeddings,
        "n_assays": module.assay_embedding.num_embeddings,
        "n_celltype_factors": module.celltype_embedding.embedding_dim,
        "n_assay_factors": module.assay_embedding.embedding_dim,
        "n_25bp_factors": module.genome_sizes[0],
        "n_250bp_factors": module.genome_sizes[1],
        "n_5kbp_factors": module.genome_sizes[2],
        "n_layers": len(network) - 1,
        "n_nodes": network[0].out_features,
        "dropout": dropout[0] if dropout else 0.0,
        "sparse": module.sparse,
    }


def fit_genome_axis(
    module_kwargs: dict,
    state: dict[str, torch.Tensor],
    celltypes: Sequence[str],
    assays: Sequence[str],
    store: Store | str,
    axis: str,
    tracks: Sequence[tuple[str, str]],
    config: TrainConfig,
    init: dict[str, torch.Tensor] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Stage 2 for one axis: learn its genome factors with everything else frozen.

    A self-contained function (plain arguments in, tensors out) so that one
    call can run per chromosome in another process or on another machine.

    Parameters
    ----------
    module_kwargs : dict
        :class:`AvocadoModule` constructor arguments without ``axis_lengths``
        (see :func:`module_kwargs_of`).
    state : dict of str to torch.Tensor
        The frozen module's state; ``genome.*`` entries are ignored.
    celltypes, assays : sequence of str
        The module's cell type and assay names, in embedding-row order.
    store : Store or str
        The compendium (or its URL).
    axis : str
        The axis (chromosome) to fit.
    tracks : sequence of (str, str)
        Training tracks.
    config : TrainConfig
        ``n_epochs`` is the number of stage-2 epochs.
    init : dict of str to torch.Tensor, optional
        Starting tables (``emb_25bp.weight``, ...). Default None: uniform
        [-0.5, 0.5] drawn from ``config.seed``.
    checkpoint_dir : str or path-like, optional
        Per-epoch checkpoints of this axis. Default None.
    resume : bool
        Continue from ``checkpoint_dir``. Default False.

    Returns
    -------
    tables : dict of str to torch.Tensor
        The axis's :class:`GenomeFactors` state (``emb_25bp.weight``
        ``(n, n_25bp)``, ``emb_250bp.weight`` ``(ceil(n/10), n_250bp)``,
        ``emb_5kbp.weight`` ``(ceil(n/200), n_5kbp)``), float32 on the CPU.
    history : list of dict
        Per-epoch figures.
    """
    store = open_store(store)
    config.check()
    module = AvocadoModule(axis_lengths={}, **module_kwargs)
    module.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith("genome.")}, strict=False
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        factors = module.new_genome_factors(store.axis_length(axis))
    if init is not None:
        factors.load_state_dict(init)
    module.genome[axis] = factors
    track_set = TrackSet.build(store, tracks, celltypes, assays)
    device = resolve_device(config.device)
    freeze(module, [f"genome:{axis}"])
    module.to(device)
    plan = TrainingPlan(module, config, device)
    sampler = EpochSampler.from_config(
        {axis: AxisSource(store, axis, track_set.rows)}, track_set, config
    )
    checkpoint = None
    if checkpoint_dir is not None:
        fingerprint = {"axis": axis, "tracks": track_set.names, "config": _fingerprint(config)}
        checkpoint = Checkpoint(checkpoint_dir, fingerprint)
    try:
        with torch_threads(config.n_threads):
            result = run_training(
                module,
                plan,
                sampler,
                config,
                f"genome:{axis}",
                None,
                checkpoint,
                resume,
                desc=f"stage 2 {axis}",
            )
    finally:
        plan.close()
    tables = {k: v.detach().cpu().contiguous() for k, v in factors.state_dict().items()}
    return tables, result.history


def _fingerprint(config: TrainConfig) -> dict:
    keep = {k: v for k, v in asdict(config).items() if k not in ("verbose", "device", "n_threads")}
    return json.loads(json.dumps(keep))


def fit_new_rows(
    module: AvocadoModule,
    store: Store,
    axes: Sequence[str],
    tracks: TrackSet,
    part: str,
    new_rows: Sequence[int],
    config: TrainConfig,
) -> RunResult:
    """Transfer: learn only some rows of the cell type or assay embedding.

    Everything else is frozen; gradients of the old rows are masked and the
    old rows are restored bit for bit afterwards.

    Parameters
    ----------
    module : AvocadoModule
    store : Store
    axes : sequence of str
        Axes with genome factors to train on.
    tracks : TrackSet
        Tracks of the new cell types (or assays).
    part : str
        ``"celltype"`` or ``"assay"``.
    new_rows : sequence of int
        Embedding rows to learn.
    config : TrainConfig

    Returns
    -------
    RunResult
    """
    config.check()
    device = resolve_device(config.device)
    embedding = module.celltype_embedding if part == "celltype" else module.assay_embedding
    old = embedding.weight.detach().clone()
    mask = torch.zeros(embedding.num_embeddings, 1)
    mask[list(new_rows)] = 1.0
    freeze(module, [part])
    module.to(device)
    name = f"{part}_embedding.weight"
    plan = TrainingPlan(module, config, device, row_masks={name: mask})
    sources = {axis: AxisSource(store, axis, tracks.rows) for axis in axes}
    sampler = EpochSampler.from_config(sources, tracks, config)
    try:
        with torch_threads(config.n_threads):
            result = run_training(
                module, plan, sampler, config, f"transfer:{part}", desc="transfer"
            )
    finally:
        plan.close()
        module.requires_grad_(True)
    keep = mask.squeeze(1) == 0
    with torch.no_grad():
        embedding.weight[keep.to(embedding.weight.device)] = old[keep].to(embedding.weight.device)
    return result


def new_genome_module(module: AvocadoModule, tables: dict[str, torch.Tensor]) -> GenomeFactors:
    """A :class:`GenomeFactors` of ``module``'s sizes holding ``tables``."""
    n_positions = tables["emb_25bp.weight"].shape[0]
    factors = module.new_genome_factors(n_positions)
    factors.load_state_dict(tables)
    return factors


def history_frame(rows: list[dict]) -> pd.DataFrame:
    """History rows as a DataFrame with :data:`HISTORY_COLUMNS`."""
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)
