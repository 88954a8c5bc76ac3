"""The assay's average activity as a known input of the model ("pitfall" fix, optional).

Average activity (the mean of the same assay over the training cell types at
a position) is a strong imputation by itself: it carries most of the signal
that does not depend on the cell type. Schreiber, Singh, Bilmes and Noble
(2020, "A pitfall for machine learning methods aiming to predict across cell
types") propose letting the model know it. The estimator's ``average``
hyperparameter chooses how:

* ``"none"``: the network alone (the paper's Avocado; the default);
* ``"blend"``: ``w * network + (1 - w) * average`` at prediction time, the
  network trained as usual (``w`` = ``average_weight``);
* ``"residual"``: ``average + network``: the network learns the cell type's
  deviation from the average. In training, the average of a sample's assay
  leaves the sample's own cell type out, ``(S_a(p) - y) / (n_a - 1)``, else
  the target leaks into the input. An assay with a single training cell type
  has no leave-one-out average: for it the term is 0 in training and in
  prediction, so the network learns (and predicts) its whole signal.

The averages of each axis, ``(n_assays, n_positions)`` float16 on the arcsinh
scale, live on the axis's :class:`~epitensor.nn.module.GenomeFactors` as the buffer
``average`` (saved, loaded lazily and freed with the axis's genome factors);
the number of training cell types per assay is the module's buffer
``average_count``.
"""

from __future__ import annotations

import numpy as np
import torch

from epitensor._utils import EpitensorError
from epitensor.nn.hyperparams import AVERAGE_MODES
from epitensor.store.compendium import Store

__all__ = ["AVERAGE_MODES", "axis_averages", "combine", "leave_one_out", "track_sums"]


def track_sums(
    values: np.ndarray, track_assays: np.ndarray, n_assays: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-assay sums of the training tracks' signal and the tracks per assay.

    Parameters
    ----------
    values : numpy.ndarray, shape=(n_tracks, n_positions)
        Signal of the training tracks (one per cell type and assay).
    track_assays : numpy.ndarray, shape=(n_tracks,), int64
        Assay row of each track.
    n_assays : int
        Rows of the result.

    Returns
    -------
    sums : numpy.ndarray, shape=(n_assays, n_positions), float32
    counts : numpy.ndarray, shape=(n_assays,), int64
    """
    sums = np.zeros((n_assays, values.shape[1]), dtype=np.float32)
    np.add.at(sums, np.asarray(track_assays), values.astype(np.float32, copy=False))
    return sums, np.bincount(track_assays, minlength=n_assays).astype(np.int64)


def leave_one_out(sums: np.ndarray, counts: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The average of a sample's assay without the sample's own cell type.

    Parameters
    ----------
    sums : numpy.ndarray, shape=(batch,)
        ``S_a(p)``: the sum over the assay's training tracks at the sample's position.
    counts : numpy.ndarray, shape=(batch,)
        ``n_a``: the assay's training tracks (the sample's own included).
    y : numpy.ndarray, shape=(batch,)
        The sample's value (one of the summed ones).

    Returns
    -------
    numpy.ndarray, shape=(batch,), float32
        ``(S_a(p) - y) / (n_a - 1)``; 0 where ``n_a < 2`` (no other cell type).
    """
    others = np.asarray(counts) - 1
    out = (np.asarray(sums, dtype=np.float32) - y) / np.maximum(others, 1)
    return np.where(others > 0, out, 0.0).astype(np.float32)


def combine(net: torch.Tensor, average: torch.Tensor, mode: str, weight: float) -> torch.Tensor:
    """The prediction from the network's output and the average term.

    Parameters
    ----------
    net : torch.Tensor, shape=(...)
        The network's output, arcsinh.
    average : torch.Tensor, shape=(...)
        The average term (for ``"residual"`` already 0 where an assay has one
        training cell type).
    mode : {"none", "blend", "residual"}
    weight : float
        The network's weight ``w`` of ``"blend"``.

    Returns
    -------
    torch.Tensor, shape=(...)
    """
    if mode == "blend":
        return weight * net + (1.0 - weight) * average
    if mode == "residual":
        return net + average
    if mode == "none":
        return net
    raise EpitensorError(f"invalid average: got {mode!r}, expected one of {list(AVERAGE_MODES)}")


def axis_averages(
    store: Store,
    axis: str,
    rows: np.ndarray,
    track_assays: np.ndarray,
    n_assays: int,
    block: int = 1 << 18,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The average of each assay over its training tracks on one axis of a store.

    Parameters
    ----------
    store : Store
    axis : str
    rows : numpy.ndarray, shape=(n_tracks,), int64
        Store rows of the training tracks.
    track_assays : numpy.ndarray, shape=(n_tracks,), int64
        Assay row of each.
    n_assays : int
        The model's assays (an assay without a track here averages to 0).
    block : int
        Positions read at a time. Default 262,144.

    Returns
    -------
    average : torch.Tensor, shape=(n_assays, n_positions), float16, arcsinh
    counts : torch.Tensor, shape=(n_assays,), float32
        Training tracks per assay.
    """
    length = store.axis_length(axis)
    out = np.zeros((n_assays, length), dtype=np.float16)
    counts = np.bincount(track_assays, minlength=n_assays)
    for lo in range(0, length, block):
        hi = min(lo + block, length)
        sums, _ = track_sums(store.read_block(axis, lo, hi, tracks=rows), track_assays, n_assays)
        out[:, lo:hi] = sums / np.maximum(counts, 1)[:, None]
    return torch.from_numpy(out), torch.from_numpy(counts.astype(np.float32))
