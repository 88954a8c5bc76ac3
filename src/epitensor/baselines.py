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
  model's own sampler, optimisers and loop (:mod:`epitensor.training`).

Fitted baselines hold their learned summaries, never the store.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from epitensor._utils import EpitensorError, resolve_device
from epitensor.store import Store

__all__ = [
    "AssayMean",
    "AverageActivity",
    "Baseline",
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
        total, count = 0.0, 0
        for axis in store.axes:
            for values in _track_sums(store, tracks, axis).values():
                total += float(values.sum())
            count += len(tracks) * store.axis_length(axis)
        self.mean_ = total / count
        self.training_tracks_ = tracks
        self.axis_lengths_ = dict(store.layout.axis_lengths)
        return self

    def _predict(self, celltype, assay, axis, start, end):
        return np.full(end - start, self.mean_)


class AssayMean(Baseline):
    """The mean of the training values of the same assay, at every position.

    Attributes
    ----------
    means_ : dict of str to float
        Per assay, the mean over all positions of its training tracks, arcsinh.
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
        self.training_tracks_ = tracks
        self.axis_lengths_ = dict(store.layout.axis_lengths)
        return self

    def _predict(self, celltype, assay, axis, start, end):
        if assay not in self.means_:
            raise EpitensorError(
                f"assay {assay!r} has no training track; the assay mean knows {sorted(self.means_)}"
            )
        return np.full(end - start, self.means_[assay])


class AverageActivity(Baseline):
    """At each position, the mean of the same assay over the training cell types.

    For a held-out track these are all the other cell types with the assay;
    for a training track its own cell type is included (it is a training value).

    Attributes
    ----------
    activity_ : dict of str to dict of str to numpy.ndarray, shape=(n_positions,)
        Per axis and assay, the mean training signal, float32, arcsinh.
    celltypes_ : dict of str to list of str
        Per assay, the training cell types averaged.
    """

    name = "average_activity"

    def fit(self, store: Store, train_tracks: Sequence[Track]) -> AverageActivity:
        """Average each assay over its training cell types; returns ``self``."""
        tracks = _check_tracks(store, train_tracks)
        self.celltypes_ = {}
        for celltype, assay in tracks:
            self.celltypes_.setdefault(assay, []).append(celltype)
        self.activity_ = {
            axis: {
                assay: (total / len(self.celltypes_[assay])).astype(np.float32)
                for assay, total in _track_sums(store, tracks, axis).items()
            }
            for axis in store.axes
        }
        self.training_tracks_ = tracks
        self.axis_lengths_ = dict(store.layout.axis_lengths)
        return self

    def _predict(self, celltype, assay, axis, start, end):
        if assay not in self.celltypes_:
            raise EpitensorError(
                f"assay {assay!r} has no training track; average activity knows "
                f"{sorted(self.celltypes_)}"
            )
        return self.activity_[axis][assay][start:end]


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

    Trained by the model's loop (:mod:`epitensor.training`): each epoch visits
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
        from epitensor import training

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


def all_baselines(
    parafac_epochs: int = 1, seed: int = 0, verbose: bool = True
) -> dict[str, Baseline]:
    """Fresh instances of every baseline, keyed by method name.

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
    ]
    return {b.name: b for b in baselines}
