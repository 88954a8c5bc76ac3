"""Baselines for imputation, run through the same evaluation code as the model.

Every baseline has the interface of the model's estimator that the evaluation
uses: ``fit(store, train_tracks)`` returns ``self``, and ``predict(celltype,
assay, axis=None, start=0, end=None)`` returns one track on an axis, shape
``(end - start,)``, float32, arcsinh scale. Positions are axis positions
(25-bp bins), half-open ``[start, end)``.

* :class:`GlobalMean`: the mean of every training value, everywhere.
* :class:`AssayMean`: the mean of the training values of the same assay.
* :class:`AverageActivity`: at each position, the mean of the same assay over
  the training cell types; for a held-out track these are exactly the other
  cell types. The ENCODE Imputation Challenge found it very hard to beat.
* :class:`TensorFactorization`: a linear PARAFAC model in the style of PREDICTD
  (Durham et al. 2018): the generalised dot product of cell type, assay and
  genome factors plus a bias for each, trained on the training tracks by the
  model's own sampler, optimisers and loop (:mod:`epitensor.train.fitting`).
* :class:`ChromImputeGBT`: gradient-boosted trees per target track on the
  signal of the same assay in the other cell types and of the other assays in
  the target cell type, at the position and its neighbours, in the style of
  ChromImpute (Ernst & Kellis 2015) and of the ENCODE Imputation Challenge's
  winner.

When a track cannot be imputed the way a baseline works (its assay has no
training track in any other cell type), :class:`AverageActivity` and
:class:`ChromImputeGBT` predict the global mean of the training values, and
:class:`AssayMean` likewise; the tensor factorization raises, having no factor
for an unseen cell type or assay.

Fitted baselines hold their learned summaries (for the tree model: the
training tracks in memory), never the store.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from epitensor._utils import EpitensorError, resolve_device
from epitensor.store.compendium import Store

__all__ = [
    "BASELINES",
    "AssayMean",
    "AverageActivity",
    "Baseline",
    "ChromImputeGBT",
    "GlobalMean",
    "ParafacGenome",
    "ParafacModule",
    "TensorFactorization",
    "all_baselines",
]

Track = tuple[str, str]
BLOCK = 1 << 18  # positions read from the store at a time


def _check_tracks(store: Store, tracks: Sequence[Track]) -> list[Track]:
    tracks = [(str(c), str(a)) for c, a in tracks]
    if not tracks:
        raise EpitensorError("no training tracks given; a baseline needs at least one")
    for celltype, assay in tracks:
        store.track_index(celltype, assay)  # raises a clear error for a missing track
    return tracks


def _axis_range(lengths: dict[str, int], axis: str | None, start: int, end: int | None):
    if axis is None:
        if len(lengths) != 1:
            raise EpitensorError(f"the baseline was fitted on {len(lengths)} axes; name one")
        axis = next(iter(lengths))
    if axis not in lengths:
        raise EpitensorError(f"unknown axis {axis!r}; the baseline knows {list(lengths)}")
    end = lengths[axis] if end is None else int(end)
    if not 0 <= int(start) < end <= lengths[axis]:
        raise EpitensorError(
            f"invalid range [{start}, {end}) on axis {axis!r} of length {lengths[axis]}"
        )
    return axis, int(start), end


def _track_sums(store: Store, tracks: list[Track], axis: str) -> dict[str, np.ndarray]:
    """Per assay, the sum over its training tracks at each position (float64)."""
    rows = [store.track_index(c, a) for c, a in tracks]
    n = store.axis_length(axis)
    sums = {a: np.zeros(n, dtype=np.float64) for _, a in tracks}
    for lo in range(0, n, BLOCK):
        block = store.read_block(axis, lo, min(lo + BLOCK, n), tracks=rows)
        for (_, assay), values in zip(tracks, block):
            sums[assay][lo : lo + len(values)] += values
    return sums


def _global_mean(store: Store, tracks: list[Track]) -> float:
    """Mean of every training value over every axis (arcsinh)."""
    total, count = 0.0, 0
    for axis in store.axes:
        for values in _track_sums(store, tracks, axis).values():
            total += float(values.sum())
        count += len(tracks) * store.axis_length(axis)
    return total / count


class Baseline:
    """Common interface: ``fit(store, train_tracks)`` then ``predict(celltype, assay, ...)``.

    Attributes
    ----------
    name : str
        Method name used in evaluation tables.
    training_tracks_ : list of (str, str)
        The ``(celltype, assay)`` tracks it was fitted on.
    axis_lengths_ : dict of str to int
        Positions per axis of the store it was fitted on.
    """

    name = "baseline"

    def fit(self, store: Store, train_tracks: Sequence[Track]) -> Baseline:
        """Learn from the training tracks of a store; returns ``self``."""
        raise NotImplementedError

    def predict(
        self, celltype: str, assay: str, axis: str | None = None, start: int = 0, end=None
    ) -> np.ndarray:
        """Impute one track.

        Parameters
        ----------
        celltype, assay : str
            The track to impute.
        axis : str, optional
            Axis. Default None: the only axis (error when there are several).
        start, end : int
            Axis positions, half-open. Default: the whole axis.

        Returns
        -------
        numpy.ndarray, shape=(end - start,), float32, arcsinh
        """
        axis, start, end = _axis_range(self._lengths(), axis, start, end)
        return self._predict(celltype, assay, axis, start, end).astype(np.float32)

    def predict_tracks(
        self, tracks: Sequence[Track], axis: str | None = None, start: int = 0, end=None
    ) -> np.ndarray:
        """Impute several tracks; returns ``(n_tracks, end - start)``, float32, arcsinh."""
        return np.stack([self.predict(c, a, axis, start, end) for c, a in tracks])

    def _lengths(self) -> dict[str, int]:
        if not hasattr(self, "axis_lengths_"):
            raise EpitensorError(f"this {type(self).__name__} is not fitted; call fit first")
        return self.axis_lengths_

    def _predict(self, celltype: str, assay: str, axis: str, start: int, end: int) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GlobalMean(Baseline):
    """The mean of every training value, at every position of every track.

    Attributes
    ----------
    mean_ : float
        Mean over all positions of all training tracks, arcsinh scale.
    """

    name = "global_mean"

    def fit(self, store: Store, train_tracks: Sequence[Track]) -> GlobalMean:
        """Average all training values; returns ``self``."""
        tracks = _check_tracks(store, train_tracks)
        self.mean_ = _global_mean(store, tracks)
        self.training_tracks_ = tracks
        self.axis_lengths_ = dict(store.layout.axis_lengths)
        return self

    def _predict(self, celltype, assay, axis, start, end):
        return np.full(end - start, self.mean_)


class AssayMean(Baseline):
    """The mean of the training values of the same assay, at every position.

    An assay with no training track gets the mean of all training values.

    Attributes
    ----------
    means_ : dict of str to float
        Per assay, the mean over all positions of its training tracks, arcsinh.
    mean_ : float
        Mean of all training values (the fallback), arcsinh.
    """

    name = "assay_mean"

    def fit(self, store: Store, train_tracks: Sequence[Track]) -> AssayMean:
        """Average the training values of each assay; returns ``self``."""
        tracks = _check_tracks(store, train_tracks)
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        for axis in store.axes:
            for assay, values in _track_sums(store, tracks, axis).items():
                n_tracks = sum(1 for _, a in tracks if a == assay)
                totals[assay] = totals.get(assay, 0.0) + float(values.sum())
                counts[assay] = counts.get(assay, 0) + n_tracks * store.axis_length(axis)
        self.means_ = {a: totals[a] / counts[a] for a in totals}
        self.mean_ = sum(totals.values()) / sum(counts.values())
        self.training_tracks_ = tracks
        self.axis_lengths_ = dict(store.layout.axis_lengths)
        return self

    def _predict(self, celltype, assay, axis, start, end):
        return np.full(end - start, self.means_.get(assay, self.mean_))


class AverageActivity(Baseline):
    """At each position, the mean of the same assay over the training cell types.

    For a held-out track these are all the other cell types with the assay;
    for a training track its own cell type is included (it is a training value).
    An assay no training cell type has (a cross-validation fold can take every
    track of one assay) gets the mean of all training values, everywhere:
    nothing is known of that assay's activity.

    Parameters
    ----------
    low_memory : bool
        Hold the means of one axis at a time, computed from the store when an
        axis is first asked for (``n_assays x`` one chromosome's positions on a
        genome-wide store, instead of every axis): the last axis read by ``fit``,
        then the axis last asked for. Reads the training tracks of an axis
        again each time the axis changes, so predict axis by axis.
        Default False: every axis's means from ``fit`` on.

    Attributes
    ----------
    activity_ : dict of str to dict of str to numpy.ndarray, shape=(n_positions,)
        Per axis held and assay, the mean training signal, float32, arcsinh.
    celltypes_ : dict of str to list of str
        Per assay, the training cell types averaged.
    mean_ : float
        Mean of all training values (the fallback), arcsinh.

    Examples
    --------
    >>> import epitensor as et
    >>> store = et.open_store("roadmap-pilot")
    >>> train = [t for t in store.track_names() if t != ("E116", "H3K27me3")]
    >>> average = et.AverageActivity().fit(store, train)
    >>> average.predict("E116", "H3K27me3").shape
    (1126469,)
    """

    name = "average_activity"

    def __init__(self, low_memory: bool = False) -> None:
        self.low_memory = low_memory

    def fit(self, store: Store, train_tracks: Sequence[Track]) -> AverageActivity:
        """Average each assay over its training cell types; returns ``self``."""
        tracks = _check_tracks(store, train_tracks)
        self.celltypes_ = {}
        for celltype, assay in tracks:
            self.celltypes_.setdefault(assay, []).append(celltype)
        self.store_, self.training_tracks_ = store, tracks
        self.activity_, total, count = {}, 0.0, 0
        for axis in store.axes:
            sums = _track_sums(store, tracks, axis)
            if not self.low_memory or axis == store.axes[-1]:  # low_memory keeps the last
                self.activity_[axis] = self._means(sums)
            total += sum(float(v.sum()) for v in sums.values())
            count += len(tracks) * store.axis_length(axis)
        self.mean_ = total / count
        self.axis_lengths_ = dict(store.layout.axis_lengths)
        return self

    def _means(self, sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per assay, the sums divided by its number of training cell types (float32)."""
        return {
            assay: (values / len(self.celltypes_[assay])).astype(np.float32)
            for assay, values in sums.items()
        }

    def _predict(self, celltype, assay, axis, start, end):
        if assay not in self.celltypes_:
            return np.full(end - start, self.mean_)
        if axis not in self.activity_:  # low_memory: this axis replaces the one held
            self.activity_ = {
                axis: self._means(_track_sums(self.store_, self.training_tracks_, axis))
            }
        return self.activity_[axis][assay][start:end]

    def __repr__(self) -> str:
        return "AverageActivity(low_memory=True)" if self.low_memory else "AverageActivity()"


class ParafacGenome(nn.Module):
    """Genome factors and bias of one axis for :class:`ParafacModule`.

    Parameters
    ----------
    n_positions, n_factors : int
    sparse : bool
        Sparse gradients. Default True.
    """

    def __init__(self, n_positions: int, n_factors: int, sparse: bool = True) -> None:
        super().__init__()
        self.factors = nn.Embedding(n_positions, n_factors, sparse=sparse)
        self.bias = nn.Embedding(n_positions, 1, sparse=sparse)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Factors of ``positions``: ``(batch,)`` -> ``(batch, n_factors)``."""
        return self.factors(positions)


class ParafacModule(nn.Module):
    """Linear tensor factorization: generalised dot product of factors plus biases.

    ``y(c, a, p) = sum_k C[c, k] A[a, k] G[p, k] + b_c + b_a + b_p + b``.

    Parameters
    ----------
    n_celltypes, n_assays : int
        Rows of the cell type and assay tables.
    axis_lengths : dict of str to int
        Positions per genome axis; one :class:`ParafacGenome` per axis, in
        ``genome`` (the name the training loop looks for).
    n_factors : int
        Rank of the factorization. Default 32.
    sparse : bool
        Sparse gradients for the genome tables (trained by sparse Adam, as the
        model's). Default True.
    """

    def __init__(
        self,
        n_celltypes: int,
        n_assays: int,
        axis_lengths: dict[str, int],
        n_factors: int = 32,
        sparse: bool = True,
    ) -> None:
        super().__init__()
        self.sparse = sparse
        self.celltype_factors = nn.Embedding(n_celltypes, n_factors)
        self.assay_factors = nn.Embedding(n_assays, n_factors)
        self.celltype_bias = nn.Embedding(n_celltypes, 1)
        self.assay_bias = nn.Embedding(n_assays, 1)
        self.genome = nn.ModuleDict(
            {a: ParafacGenome(n, n_factors, sparse) for a, n in axis_lengths.items()}
        )
        self.bias = nn.Parameter(torch.zeros(()))
        # small factors: the product term starts near 0 and the biases carry the mean
        std = 0.3 * n_factors ** (-1 / 6)
        for table in (
            self.celltype_factors,
            self.assay_factors,
            *(g.factors for g in self.genome.values()),
        ):
            nn.init.normal_(table.weight, 0.0, std)
        for table in (self.celltype_bias, self.assay_bias, *(g.bias for g in self.genome.values())):
            nn.init.zeros_(table.weight)

    def forward(
        self, celltypes: torch.Tensor, assays: torch.Tensor, positions: torch.Tensor, axis: str
    ) -> torch.Tensor:
        """Predicted signal.

        Parameters
        ----------
        celltypes, assays, positions : torch.Tensor, shape=(batch,), int64
            Indices into the cell type, assay and ``axis`` genome tables.
        axis : str
            Genome axis of ``positions``.

        Returns
        -------
        torch.Tensor, shape=(batch,), arcsinh scale
        """
        genome = self.genome[axis]
        product = (
            self.celltype_factors(celltypes) * self.assay_factors(assays) * genome(positions)
        ).sum(dim=1)
        biases = (
            self.celltype_bias(celltypes) + self.assay_bias(assays) + genome.bias(positions)
        ).squeeze(1)
        return product + biases + self.bias

    def forward_tracks(
        self, celltypes: torch.Tensor, assays: torch.Tensor, positions: torch.Tensor, axis: str
    ) -> torch.Tensor:
        """Many tracks at many positions.

        Parameters
        ----------
        celltypes, assays : torch.Tensor, shape=(n_tracks,), int64
        positions : torch.Tensor, shape=(n_positions,), int64
        axis : str

        Returns
        -------
        torch.Tensor, shape=(n_tracks, n_positions), arcsinh scale
        """
        genome = self.genome[axis]
        track = self.celltype_factors(celltypes) * self.assay_factors(assays)
        bias = self.celltype_bias(celltypes) + self.assay_bias(assays) + self.bias
        return track @ genome(positions).T + bias + genome.bias(positions).T


@torch.no_grad()
def _warm_start(module: ParafacModule, store: Store, tracks: list[Track], assays: list[str]):
    """Start the biases at the data's means: global, per assay and per position.

    The sampler shows each genome row one value per epoch, so rows learned from
    zero need many epochs; starting the position bias at the position's mean
    over the training tracks lets the short training spend itself on what
    varies between tracks.
    """
    sums, counts, total, n_total = {}, {}, 0.0, 0
    position_means = {}
    for axis in store.axes:
        per_assay = _track_sums(store, tracks, axis)
        position_means[axis] = sum(per_assay.values()) / len(tracks)
        for assay, values in per_assay.items():
            n = sum(1 for _, a in tracks if a == assay) * len(values)
            sums[assay] = sums.get(assay, 0.0) + float(values.sum())
            counts[assay] = counts.get(assay, 0) + n
            total, n_total = total + float(values.sum()), n_total + n
    overall = total / n_total
    module.bias.fill_(overall)
    for i, assay in enumerate(assays):
        module.assay_bias.weight[i] = sums[assay] / counts[assay] - overall
    for axis, means in position_means.items():
        module.genome[axis].bias.weight[:, 0] = torch.from_numpy(means - overall).float()


def _load_training(store: Store, tracks: list[Track], axis: str) -> np.ndarray:
    """The training tracks of one axis in memory: ``(n_tracks, n_positions)``, float32."""
    rows = [store.track_index(c, a) for c, a in tracks]
    return store.read_block(axis, tracks=rows)


@torch.no_grad()
def _als_start(
    module: ParafacModule,
    store: Store,
    tracks: list[Track],
    celltypes: list[str],
    assays: list[str],
    n_iter: int = 15,
    ridge: float = 1e-3,
) -> None:
    """Fit the factors to the residual of the biases by alternating least squares.

    With the biases fixed (:func:`_warm_start`), the residual ``R`` (tracks x
    positions) is modelled as ``W G^T`` with track rows ``W[t] = C[c_t] * A[a_t]``.
    Each step solves one table exactly given the other two (ridge ``ridge``
    times the mean diagonal): genome rows from ``R^T W``, and each cell type
    (assay) row from the normal equations pooled over its tracks. The genome
    tables see one value per position per epoch under the model's sampler, so
    without this start a short training barely moves them.
    """
    ct = torch.tensor([celltypes.index(c) for c, _ in tracks])
    asy = torch.tensor([assays.index(a) for _, a in tracks])
    axes = list(module.genome)
    residual = {}
    for axis in axes:
        values = torch.from_numpy(_load_training(store, tracks, axis)).double()
        genome = module.genome[axis]
        bias = (
            module.bias + module.assay_bias.weight[asy, 0] + module.celltype_bias.weight[ct, 0]
        ).double()
        residual[axis] = values - bias[:, None] - genome.bias.weight[:, 0].double()[None, :]
    C = module.celltype_factors.weight.double().clone()
    A = module.assay_factors.weight.double().clone()
    k = C.shape[1]
    eye = torch.eye(k, dtype=torch.float64)
    G = {}

    def solve(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        scale = ridge * float(gram.diagonal().mean().clamp_min(1e-12))
        return torch.linalg.solve(gram + scale * eye, rhs)

    for _ in range(n_iter):
        W = C[ct] * A[asy]  # (T, k)
        for axis in axes:
            G[axis] = solve(W.T @ W, W.T @ residual[axis]).T  # (N, k)
        gram = sum(g.T @ g for g in G.values())  # (k, k)
        proj = sum(residual[a] @ G[a] for a in axes)  # (T, k): G^T R[t]
        for table, own, other in ((C, ct, asy), (A, asy, ct)):
            others = A if table is C else C
            for row in range(table.shape[0]):
                chosen = own == row
                if not chosen.any():
                    continue
                f = others[other[chosen]]  # (n, k)
                lhs = sum(gram * torch.outer(v, v) for v in f)
                rhs = (f * proj[chosen]).sum(0)
                table[row] = solve(lhs, rhs)
    W = C[ct] * A[asy]
    for axis in axes:
        G[axis] = solve(W.T @ W, W.T @ residual[axis]).T
        module.genome[axis].factors.weight.copy_(G[axis].float())
    module.celltype_factors.weight.copy_(C.float())
    module.assay_factors.weight.copy_(A.float())


class TensorFactorization(Baseline):
    """PREDICTD-like linear PARAFAC baseline, trained like the model.

    Trained by the model's loop (:mod:`epitensor.train.fitting`): each epoch visits
    every position of every axis once, paired with a training track drawn at
    random; Adam for the cell type and assay tables and sparse Adam for the
    genome tables. Under that sampler a genome row sees one value per epoch,
    so from a random start a PARAFAC model barely moves in the few epochs a
    CPU benchmark affords (measured: held-out MSE 0.205 after 5 epochs, worse
    than average activity). The biases therefore start at the data's means
    (``_warm_start``) and the factors at an alternating-least-squares fit of
    the rest (``_als_start``), which the loop then refines.

    Parameters
    ----------
    n_factors : int
        Rank. Default 8.
    n_epochs : int
        Passes of the model's loop over the positions after the start.
        Default 1.
    batch_size : int
        Samples per step. Default 4096.
    lr : float
        Adam learning rate of the cell type and assay tables. Default 1e-3
        (the model's).
    genome_lr : float
        Sparse Adam learning rate of the genome tables. Default 1e-3.
    als_iterations : int
        Alternating-least-squares sweeps that start the factors (see
        ``_als_start``); 0 starts them at random. Default 15.
    als_ridge : float
        Ridge penalty of those least-squares fits, relative to the mean
        diagonal of each Gram matrix. Default 1.0. Rank 8 and ridge 1.0 were
        chosen on the first 100,000 pilot positions with a split other than
        the standard one (cell type i held out with assay (2i + 1) mod 5):
        lower ridges overfit the 20 training tracks badly.
    device : str, optional
        torch device. Default None: CUDA if available, else CPU.
    seed : int
        Seed of the initialisation and the sampler. Default 0.
    verbose : bool
        Progress bars. Default True.

    Attributes
    ----------
    module_ : ParafacModule
    celltypes_, assays_ : list of str
    history_ : pandas.DataFrame
        Per epoch: ``epoch, stage, train_mse, holdout_mse, seconds``.
    """

    name = "parafac"

    def __init__(
        self,
        n_factors: int = 8,
        n_epochs: int = 1,
        batch_size: int = 4096,
        lr: float = 1e-3,
        genome_lr: float = 1e-3,
        als_iterations: int = 15,
        als_ridge: float = 1.0,
        device: str | None = None,
        seed: int = 0,
        verbose: bool = True,
    ) -> None:
        self.n_factors = n_factors
        self.als_iterations = als_iterations
        self.als_ridge = als_ridge
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.genome_lr = genome_lr
        self.device = device
        self.seed = seed
        self.verbose = verbose

    def __repr__(self) -> str:
        return (
            f"TensorFactorization(n_factors={self.n_factors}, n_epochs={self.n_epochs}, "
            f"als_iterations={self.als_iterations}, als_ridge={self.als_ridge}, "
            f"batch_size={self.batch_size}, lr={self.lr}, genome_lr={self.genome_lr})"
        )

    def fit(self, store: Store, train_tracks: Sequence[Track]) -> TensorFactorization:
        """Learn the factors from the training tracks; returns ``self``."""
        from epitensor.train import fitting as training

        if not isinstance(self.n_factors, int) or self.n_factors <= 0:
            raise EpitensorError(f"must be a positive integer; got n_factors={self.n_factors!r}")
        config = training.TrainConfig(
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            genome_lr=self.genome_lr,
            seed=self.seed,
            device=self.device,
            verbose=self.verbose,
        )
        config.check()
        tracks = _check_tracks(store, train_tracks)
        self.celltypes_ = list(dict.fromkeys(c for c, _ in tracks))
        self.assays_ = list(dict.fromkeys(a for _, a in tracks))
        self.axis_lengths_ = dict(store.layout.axis_lengths)
        self.training_tracks_ = tracks
        device = resolve_device(self.device)
        torch.manual_seed(self.seed)
        module = ParafacModule(
            len(self.celltypes_), len(self.assays_), self.axis_lengths_, self.n_factors
        )
        _warm_start(module, store, tracks, self.assays_)
        if self.als_iterations:
            _als_start(
                module,
                store,
                tracks,
                self.celltypes_,
                self.assays_,
                self.als_iterations,
                self.als_ridge,
            )
        module.to(device)
        track_set = training.TrackSet.build(store, tracks, self.celltypes_, self.assays_)
        sources = {a: training.AxisSource(store, a, track_set.rows) for a in store.axes}
        sampler = training.EpochSampler(
            sources,
            track_set,
            config.batch_size,
            config.block_size,
            config.group_blocks,
            config.seed,
        )
        plan = training.TrainingPlan(module, config, device)
        try:
            result = training.run_training(module, plan, sampler, config, "parafac", desc="parafac")
        finally:
            plan.close()
        self.history_ = training.history_frame(result.history)
        self.module_ = module.cpu().eval()
        return self

    def _predict(self, celltype, assay, axis, start, end):
        for kind, value, known in (
            ("cell type", celltype, self.celltypes_),
            ("assay", assay, self.assays_),
        ):
            if value not in known:
                raise EpitensorError(
                    f"{kind} {value!r} has no training track; the factorization knows {known}"
                )
        with torch.inference_mode():
            prediction = self.module_.forward_tracks(
                torch.tensor([self.celltypes_.index(celltype)]),
                torch.tensor([self.assays_.index(assay)]),
                torch.arange(start, end),
                axis,
            )
        return prediction[0].numpy()


def _n_threads() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


class ChromImputeGBT(Baseline):
    """ChromImpute-style gradient-boosted trees, one model per target track.

    For a target track ``(c, a)`` the features at a position describe a
    cell type ``x``: the mean, maximum and minimum of assay ``a`` over the
    other training cell types (all but ``c`` and ``x``), and the signal of
    every other assay that ``c`` has a training track of, in ``x`` (missing,
    so NaN, where ``x`` lacks it). Each is taken at the position, at its
    neighbours ``position +- offsets`` and as the mean of windows of
    ``+- windows`` positions around it (clipped at the ends of the axis), which
    gives ``7 * (3 + n_assays)`` features with the defaults. As in ChromImpute
    (Ernst & Kellis 2015), the model is trained on the other cell types ``x``
    that have a training track of ``a``, predicting ``(x, a)`` from the
    features of ``x``, then applied to the features of ``c``. Training uses
    ``n_train_positions`` positions drawn at random (shared between the
    training cell types), so one target fits in seconds. Trees are XGBoost's
    histogram method, whose NaN handling learns where a missing feature goes.

    A target whose assay no other cell type has in training gets the mean of
    all training values (there is nothing to learn from); a target cell type
    with no training track uses the same-assay features alone. Models are
    trained on the first prediction of each target (or by :meth:`fit_targets`)
    and kept; neighbours are taken along the axis, so on a store of
    concatenated regions a window may reach across a region boundary.

    Parameters
    ----------
    n_train_positions : int
        Training positions per target, drawn at random over all axes and
        split between the training cell types. Default 50,000.
    n_estimators : int
        Boosting rounds. Default 100.
    max_depth : int
        Tree depth. Default 6.
    learning_rate : float
        Shrinkage. Default 0.1.
    offsets : tuple of int
        Neighbour offsets, each taken on both sides. Default (1, 2).
    windows : tuple of int
        Half-widths of the window means. Default (5, 20): 11 and 41 bins.
    n_threads : int, optional
        XGBoost threads. Default None: every core this process may use.
    seed : int
        Seed of the position sample and of XGBoost. Default 0.
    verbose : bool
        Unused (the trees train silently); kept for a uniform interface. Default True.

    Memory holds the training tracks of one axis at a time (read from the
    store when a target's training or prediction reaches the axis), so a
    genome-wide store costs one chromosome's training tracks, not the genome's.

    Attributes
    ----------
    store_ : Store
        The store the training tracks are read from.
    rows_ : dict of (str, str) to int
        Row of each training track in an axis's signal (:meth:`signal`).
    mean_ : float
        Mean of all training values (the fallback), arcsinh.
    models_ : dict of (str, str) to tuple or None
        Per target trained so far: ``(booster, donor cell types, feature
        assays)``, or None where the fallback is used.

    Examples
    --------
    >>> import epitensor as et
    >>> store = et.open_store("roadmap-pilot")
    >>> train = [t for t in store.track_names() if t != ("E116", "H3K27me3")]
    >>> trees = et.ChromImputeGBT(n_train_positions=20_000).fit(store, train)
    >>> trees.predict("E116", "H3K27me3").shape
    (1126469,)
    """

    name = "chromimpute_gbt"

    def __init__(
        self,
        n_train_positions: int = 50_000,
        n_estimators: int = 100,
        max_depth: int = 6,
        learning_rate: float = 0.1,
        offsets: tuple[int, ...] = (1, 2),
        windows: tuple[int, ...] = (5, 20),
        n_threads: int | None = None,
        seed: int = 0,
        verbose: bool = True,
    ) -> None:
        self.n_train_positions = n_train_positions
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.offsets = offsets
        self.windows = windows
        self.n_threads = n_threads
        self.seed = seed
        self.verbose = verbose

    def __repr__(self) -> str:
        return (
            f"ChromImputeGBT(n_train_positions={self.n_train_positions}, "
            f"n_estimators={self.n_estimators}, max_depth={self.max_depth}, "
            f"learning_rate={self.learning_rate}, offsets={self.offsets}, windows={self.windows})"
        )

    def fit(self, store: Store, train_tracks: Sequence[Track]) -> ChromImputeGBT:
        """Check the training tracks and take their mean; the trees train per target on demand.

        Returns
        -------
        ChromImputeGBT
            ``self``.
        """
        for name in ("n_train_positions", "n_estimators", "max_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise EpitensorError(f"must be a positive integer; got {name}={value!r}")
        tracks = _check_tracks(store, train_tracks)
        self.store_ = store
        self.rows_ = {track: i for i, track in enumerate(tracks)}
        self._held: tuple[str | None, np.ndarray | None] = (None, None)
        total, count = 0.0, 0
        for axis in store.axes:
            values = self.signal(axis)
            total += float(values.sum(dtype=np.float64))
            count += values.size
        self.mean_ = total / count
        self.training_tracks_ = tracks
        self.axis_lengths_ = dict(store.layout.axis_lengths)
        self.models_ = {}
        return self

    def fit_targets(self, targets: Sequence[Track]) -> ChromImputeGBT:
        """Train the models of several targets now (otherwise done on first prediction)."""
        self._lengths()
        for celltype, assay in targets:
            self._model(str(celltype), str(assay))
        return self

    def signal(self, axis: str) -> np.ndarray:
        """The training tracks on ``axis``: ``(n_training_tracks, n_positions)``, float32, arcsinh.

        Kept until another axis is asked for (one axis in memory at a time).
        """
        held_axis, values = self._held
        if held_axis != axis:
            self._held = (None, None)  # free the last axis before reading the next
            rows = [self.store_.track_index(c, a) for c, a in self.rows_]
            values = self.store_.read_block(axis, tracks=rows)
            self._held = (axis, values)
        return values

    def _donors(self, celltype: str, assay: str) -> list[str]:
        """Training cell types other than ``celltype`` with a training track of ``assay``."""
        return [c for c, a in self.rows_ if a == assay and c != celltype]

    def _feature_assays(self, celltype: str, assay: str) -> list[str]:
        return [a for c, a in self.rows_ if c == celltype and a != assay]

    def _base(self, axis: str, x: str, assay: str, others: list[str], assays: list[str]):
        """Signals the features are built from: ``(3 + len(assays), n_positions)``, float32."""
        signal = self.signal(axis)
        n = signal.shape[1]
        base = np.full((3 + len(assays), n), np.nan, dtype=np.float32)
        if others:
            same = signal[[self.rows_[(c, assay)] for c in others]]
            base[0], base[1], base[2] = same.mean(0), same.max(0), same.min(0)
        for i, other in enumerate(assays):
            if (x, other) in self.rows_:
                base[3 + i] = signal[self.rows_[(x, other)]]
        return base

    @staticmethod
    def _cumulative(base: np.ndarray) -> np.ndarray:
        """Running sums of the base signals, ``(n_base, n_positions + 1)``, float64."""
        cumulative = np.zeros((base.shape[0], base.shape[1] + 1))
        np.cumsum(base, axis=1, out=cumulative[:, 1:])
        return cumulative

    def _expand(
        self, base: np.ndarray, positions: np.ndarray, cumulative: np.ndarray | None = None
    ) -> np.ndarray:
        """Features at ``positions``: ``(len(positions), n_base * (1 + 2 offsets + windows))``."""
        n = base.shape[1]
        columns = [base[:, positions]]
        for offset in self.offsets:
            for step in (-offset, offset):
                columns.append(base[:, np.clip(positions + step, 0, n - 1)])
        if self.windows:
            if cumulative is None:
                cumulative = self._cumulative(base)
            for half in self.windows:
                lo = np.clip(positions - half, 0, n)
                hi = np.clip(positions + half + 1, 0, n)
                columns.append((cumulative[:, hi] - cumulative[:, lo]) / (hi - lo))
        return np.concatenate(columns, axis=0).T.astype(np.float32)

    def _expand_range(
        self, base: np.ndarray, lo: int, hi: int, cumulative: np.ndarray | None
    ) -> np.ndarray:
        """:meth:`_expand` at the positions ``lo, ..., hi - 1``, by slices: C-contiguous float32.

        The same values as ``_expand(base, np.arange(lo, hi), cumulative)`` (the same
        reads, the same float64 window sums), without the per-position gathers.
        """
        n_base = base.shape[0]
        groups = 1 + 2 * len(self.offsets) + len(self.windows)
        out = np.empty((hi - lo, groups * n_base), dtype=np.float32)
        shifts = [0] + [step for offset in self.offsets for step in (-offset, offset)]
        for k, step in enumerate(shifts):  # base at the position and its clipped neighbours
            out[:, k * n_base : (k + 1) * n_base] = _clipped(base, lo + step, hi + step).T
        k = len(shifts)
        for half in self.windows:  # window means from the running sums, ends clipped
            upper = _clipped(cumulative, lo + half + 1, hi + half + 1)
            lower = _clipped(cumulative, lo - half, hi - half)
            positions, n = np.arange(lo, hi), base.shape[1]
            width = np.clip(positions + half + 1, 0, n) - np.clip(positions - half, 0, n)
            out[:, k * n_base : (k + 1) * n_base] = ((upper - lower) / width).T
            k += 1
        return out

    def _model(self, celltype: str, assay: str):
        key = (celltype, assay)
        if key in self.models_:
            return self.models_[key]
        import xgboost

        donors = self._donors(celltype, assay)
        if not donors:
            self.models_[key] = None
            return None
        assays = self._feature_assays(celltype, assay)
        rng = np.random.default_rng([self.seed, *map(ord, f"{celltype}\t{assay}")])
        lengths = {axis: self.store_.axis_length(axis) for axis in self.store_.axes}
        total = sum(lengths.values())
        per_donor = max(1, self.n_train_positions // len(donors))
        draws = {  # drawn donor by donor, axis by axis (the order fixes the sample)
            (x, axis): np.sort(rng.choice(n, size=min(max(1, round(per_donor * n / total)), n),
                                          replace=False))
            for x in donors
            for axis, n in lengths.items()
        }  # fmt: skip
        features, labels = {}, {}
        for axis in lengths:  # one axis of signal in memory at a time
            for x in donors:
                positions = draws[(x, axis)]
                base = self._base(axis, x, assay, [c for c in donors if c != x], assays)
                features[(x, axis)] = self._expand(base, positions)
                labels[(x, axis)] = self.signal(axis)[self.rows_[(x, assay)], positions]
        data = xgboost.DMatrix(
            np.concatenate([features[key] for key in draws]),
            label=np.concatenate([labels[key] for key in draws]),
        )
        params = {
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "objective": "reg:squarederror",
            "nthread": self.n_threads or _n_threads(),
            "seed": self.seed,
            "verbosity": 0,
        }
        booster = xgboost.train(params, data, num_boost_round=self.n_estimators)
        self.models_[key] = (booster, donors, assays)
        return self.models_[key]

    def _predict(self, celltype, assay, axis, start, end):
        model = self._model(celltype, assay)
        if model is None:
            return np.full(end - start, self.mean_)
        booster, donors, assays = model
        base = self._base(axis, celltype, assay, donors, assays)
        cumulative = self._cumulative(base) if self.windows else None
        out = np.empty(end - start, dtype=np.float32)
        for lo in range(start, end, BLOCK):
            hi = min(lo + BLOCK, end)
            features = self._expand_range(base, lo, hi, cumulative)
            # the compiled predictor on the dense float32 block (NaN missing, as in training)
            out[lo - start : hi - start] = booster.inplace_predict(features, missing=np.nan)
        return out


def _clipped(values: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``values[:, clip(range(lo, hi), 0, n - 1)]`` by slicing: the ends repeat the edge columns."""
    n = values.shape[1]
    inner = values[:, min(max(lo, 0), n) : max(min(hi, n), 0)]
    before, after = min(max(-lo, 0), hi - lo), min(max(hi - n, 0), hi - lo)
    if not before and not after:
        return inner
    parts = [np.repeat(values[:, :1], before, axis=1), inner,
             np.repeat(values[:, -1:], after, axis=1)]  # fmt: skip
    return np.concatenate(parts, axis=1)[:, : hi - lo]


def all_baselines(
    parafac_epochs: int = 1, seed: int = 0, verbose: bool = True
) -> dict[str, Baseline]:
    """Fresh instances of every baseline, keyed by method name (see :data:`BASELINES`).

    Parameters
    ----------
    parafac_epochs : int
        Epochs of the tensor factorization after its least-squares start. Default 1.
    seed : int
        Seed of the tensor factorization. Default 0.
    verbose : bool
        Progress bars. Default True.
    """
    baselines: list[Baseline] = [
        GlobalMean(),
        AssayMean(),
        AverageActivity(),
        TensorFactorization(n_epochs=parafac_epochs, seed=seed, verbose=verbose),
        ChromImputeGBT(seed=seed, verbose=verbose),
    ]
    return {b.name: b for b in baselines}


BASELINES = (
    "global_mean",
    "assay_mean",
    "average_activity",
    "parafac",
    "chromimpute_gbt",
)
"""Names of the baselines :func:`all_baselines` returns, in its order."""
