"""The ensemble imputation: the model and ChromImpute-style trees, lifted toward the average.

The trained model (network, with its average blend) and gradient-boosted trees
on the other tracks of the compendium (:class:`~epitensor.estimators.baselines.ChromImputeGBT`)
err in different places: averaged, they beat each alone on every challenge
metric but the one scored on the observed peaks (``mse1obs``), where both
predict too little and the assay's average activity is closer. The rule
therefore lifts the mean toward the average wherever the average is above it
(optionally only where the average is at its peaks)::

    base = (1 - t) * model + t * trees
    ensemble = base + lift * max(average - base, 0) * [average >= q-quantile of average]

``t`` is :attr:`EnsembleRule.trees_weight`, ``lift`` and ``q``
(:attr:`EnsembleRule.gate`, the quantile of the assay's average over the
axis) the lift and its gate. With the default model (whose prediction is
``0.6 network + 0.4 average``) and ``t = 0.6`` the base is ``0.24 network +
0.6 trees + 0.16 average``; with ``lift = 0.7`` and no gate that is the rule
``benchmarks/cv_rules.py`` picked under cross-validation on one fold
assignment and reported on another (``docs/cv-rules``).

The trees and the average are fitted on the store's copies of the model's
training tracks, so an ensemble needs the compendium the model was trained on
(or one holding the same tracks on the axes imputed) at imputation time: the
model records it (``Avocado.training_store_``), and :func:`training_compendium`
checks it, reading a stage 1 trained on regions of a genome-wide store
through those regions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from epitensor._utils import EpitensorError
from epitensor.estimators.baselines import AverageActivity, ChromImputeGBT
from epitensor.store.compendium import RegionView, Store
from epitensor.store.identity import check_coordinates, check_data, data_record
from epitensor.store.registry import open_store

__all__ = ["DEFAULT_METHOD", "Ensemble", "EnsembleRule", "training_compendium"]

Track = tuple[str, str]

DEFAULT_METHOD = "epitensor"
"""The name, in every table, of what ``epitensor impute`` writes by default.

That is the :class:`Ensemble` with the default :class:`EnsembleRule` where the
model's training compendium is at hand, else the model alone (``avocado``).
``evaluate``, ``benchmark`` (split and ``--cv``), the demo and its report score
it under this name, beside the model alone (``avocado``), the ensemble's parts
(``chromimpute_gbt``, ``average_activity``) and the other baselines.
"""


@dataclass(frozen=True)
class EnsembleRule:
    """How the ensemble combines the model, the trees and the average.

    Parameters
    ----------
    trees_weight : float
        ``t``: the trees' weight in the base mean. Default 0.6.
    lift : float
        Fraction of the gap to the average closed where the average is above
        the base and at its peaks. Default 0.7.
    gate : float
        ``q``: the lift applies where the average reaches its own ``q``
        quantile over the axis; 0 lifts everywhere. Default 0 (the gates
        cross-validation tried, 0.9 to 0.98, gave up ``mse1obs`` against the
        average for small gains elsewhere).

    Examples
    --------
    >>> import epitensor as et
    >>> rule = et.EnsembleRule()  # the default: 0.6 trees, lift 0.7, no gate
    >>> rule.trees_weight, rule.lift
    (0.6, 0.7)
    """

    trees_weight: float = 0.6
    lift: float = 0.7
    gate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("trees_weight", "lift", "gate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise EpitensorError(f"{name} must lie in [0, 1]; got {name}={value!r}")

    def combine(
        self,
        model: np.ndarray,
        trees: np.ndarray,
        average: np.ndarray,
        threshold: np.ndarray | float,
    ) -> np.ndarray:
        """The ensemble's values.

        Parameters
        ----------
        model, trees, average : numpy.ndarray, shape=(n_tracks, n_positions) or (n_positions,)
            The three imputations, arcsinh.
        threshold : numpy.ndarray, shape=(n_tracks, 1), or float
            Each track's gate: the average's ``gate`` quantile over the axis
            (:meth:`Ensemble.thresholds`); ``-inf`` lifts everywhere.

        Returns
        -------
        numpy.ndarray, the shape of ``model``, float32, arcsinh
        """
        base = (1.0 - self.trees_weight) * model + self.trees_weight * trees
        gain = np.maximum(average - base, 0.0) * (average >= threshold)
        return (base + self.lift * gain).astype(np.float32)


def training_compendium(
    model,
    store: Store | str | list,
    axes: Sequence[str] | None = None,
    allow_changed: bool = False,
) -> Store:
    """Open ``store`` and check that it holds ``model``'s training tracks on the ``axes`` imputed.

    Parameters
    ----------
    model : Avocado
        A fitted model.
    store : Store, str or list of them
        The compendium: the one the model trained on, or any holding its
        training tracks on the same axes; a list is read as one
        :class:`~epitensor.store.compendium.TrackUnion` (a model extended from a second
        store).
    axes : sequence of str, optional
        The axes the ensemble will impute. Default None: every axis of the
        model's layout that has genome factors and genomic regions (stage 2
        leaves the stage-1 axis without regions where it fitted them all).
    allow_changed : bool
        Accept a store whose copies of the model's tracks hold other values
        than the data the model was made from (``training_data_``), with a
        warning. Default False: refuse it.

    Returns
    -------
    Store
        ``store``, or when it holds none of the model's axes but the chromosomes
        its regions lie on (a stage 1 trained on the pilot regions of a
        genome-wide store, before stage 2), the
        :class:`~epitensor.store.compendium.RegionView` of those regions that stage 1
        trained on. A model with stage-2 axes and stage-1 regions left takes the
        ensemble on the stage-2 axes only.

    Raises
    ------
    EpitensorError
        When the store does not open, lacks one of ``axes`` (or has it at
        another length), or lacks a training track; nothing has been read of
        its tracks yet.
    StoreMismatch
        (an EpitensorError) when it is not the data the model was made from:
        other coordinates on an axis imputed, or (without ``allow_changed``)
        training tracks holding other values.
    """
    return _checked_compendium(model, store, axes, allow_changed)[0]


def _checked_compendium(
    model, store, axes: Sequence[str] | None, allow_changed: bool
) -> tuple[Store, str | None]:
    """:func:`training_compendium`, and the warning given under ``allow_changed`` (or None)."""
    store = open_store(store)
    expected = dict(model.layout_.axis_lengths)
    if axes is None:  # the axes imputation can reach: with genome factors and regions left
        placed = set(model.layout_.regions.axis)
        axes = [a for a in expected if a in model.genome_axes_ and a in placed]
    axes = list(dict.fromkeys(axes))
    if not any(a in store.axes for a in expected):  # a stage 1 on regions of the store
        store = _region_view(model, store)
    held = dict(store.layout.axis_lengths)
    wrong = [a for a in axes if held.get(a) != expected.get(a)]
    if wrong:
        where = {a: held.get(a) for a in wrong}
        raise EpitensorError(
            f"the store {store.url} has {where} positions on the axes imputed, the model "
            f"{ {a: expected.get(a) for a in wrong} }; give the compendium the model was trained "
            "on, or impute only chromosomes it holds (--chroms)"
        )
    present = set(store.track_names())
    missing = [t for t in model.training_tracks_ if t not in present]
    if missing:
        raise EpitensorError(
            f"the store {store.url} lacks {len(missing)} of the model's training tracks "
            f"(first {missing[0][0]}:{missing[0][1]}); give the compendium the model was "
            "trained on"
        )
    check_coordinates(model.layout_, store, "the model", axes)
    record = getattr(model, "training_data_", None)
    note = check_data(record, store, "the model", model.training_tracks_, allow_changed)
    return store, note


def _region_view(model, store: Store) -> Store:
    """``store`` read through the model's region layout, when its regions lie on the store."""
    try:
        return RegionView(store, model.layout_)
    except EpitensorError:
        return store  # the caller names the axes that do not match


class Ensemble:
    """A trained model with trees and average activity fitted on its training tracks.

    Parameters
    ----------
    model : Avocado
        A fitted model.
    store : Store or str
        A compendium holding the model's training tracks on the axes imputed
        (see :func:`training_compendium`).
    rule : EnsembleRule, optional
        Default :class:`EnsembleRule` ``()``.
    seed : int
        Seed of the trees. Default 0.
    trees : ChromImputeGBT, optional
        Trees already fitted on the model's training tracks (a benchmark's).
        Default None: fitted here.
    average : AverageActivity, optional
        Likewise for the average. Default None.
    axes : sequence of str, optional
        The axes it will impute (checked in ``store``). Default None: see
        :func:`training_compendium`.
    allow_changed : bool
        See :func:`training_compendium`. Default False.

    Attributes
    ----------
    name : str
        Its name in benchmark tables: :data:`DEFAULT_METHOD` (``"epitensor"``)
        with the default rule, what ``epitensor impute`` writes; ``"ensemble"``
        with any other rule.
    warnings : list of str
        The warning given when ``allow_changed`` let a changed store in
        (kept in :meth:`fingerprint`, so in an imputation's records); else empty.

    Examples
    --------
    >>> import epitensor as et
    >>> store = et.open_store("roadmap-pilot")
    >>> model = et.Avocado.from_preset("cpu-small").fit(store, holdout=["E116:H3K27me3"])
    >>> ensemble = et.Ensemble(model, store)
    >>> ensemble.predict("E116", "H3K27me3").shape
    (1126469,)
    """

    def __init__(
        self,
        model,
        store: Store | str | list,
        rule: EnsembleRule | None = None,
        seed: int = 0,
        trees: ChromImputeGBT | None = None,
        average: AverageActivity | None = None,
        axes: Sequence[str] | None = None,
        allow_changed: bool = False,
    ) -> None:
        model.check_fitted()
        self.model = model
        self.store, note = _checked_compendium(model, store, axes, allow_changed)
        # a store used under allow_changed: its warning stays in every record of the result
        self.warnings = [note] if note else []
        # what the trees and average are fitted on, by content (in the resume fingerprint)
        self.data = data_record(self.store, model.training_tracks_)
        self.rule = EnsembleRule() if rule is None else rule
        tracks = list(model.training_tracks_)
        self.trees = (
            trees if trees is not None else ChromImputeGBT(seed=seed).fit(self.store, tracks)
        )
        if average is None:  # one axis of means at a time, as the trees
            average = AverageActivity(low_memory=True).fit(self.store, tracks)
        self.average = average
        self._cache: dict[tuple[Track, str], np.ndarray] = {}
        self._gates: dict[tuple[Track, str], float] = {}

    @property
    def name(self) -> str:
        """:data:`DEFAULT_METHOD` with the default rule, else ``"ensemble"``."""
        return DEFAULT_METHOD if self.rule == EnsembleRule() else "ensemble"

    def _axis(self, axis: str | None) -> str:
        axes = list(self.store.axes)
        if axis is None and len(axes) == 1:
            return axes[0]
        if axis not in axes:
            raise EpitensorError(f"give one of the axes {axes}; got axis={axis!r}")
        return axis

    def thresholds(self, tracks: Sequence[Track], axis: str) -> np.ndarray:
        """Each track's gate on ``axis``: ``(n_tracks, 1)``, the average's ``gate`` quantile."""
        if self.rule.gate <= 0:
            return np.full((len(tracks), 1), -np.inf, dtype=np.float32)
        for track in tracks:
            if (track, axis) not in self._gates:  # a quantile of the whole axis, once
                whole = self.average.predict(*track, axis)
                self._gates[(track, axis)] = float(np.quantile(whole, self.rule.gate))
        return np.asarray([self._gates[(t, axis)] for t in tracks], dtype=np.float32)[:, None]

    def _trees(self, track: Track, axis: str) -> np.ndarray:
        """The trees' imputation of ``track`` over the whole axis, kept for the axis's blocks."""
        if not any(key[1] == axis for key in self._cache):
            self._cache.clear()  # one axis at a time
        key = (track, axis)
        if key not in self._cache:
            self._cache[key] = self.trees.predict(*track, axis)
        return self._cache[key]

    def combine(
        self, model_values: np.ndarray, tracks: Sequence[Track], axis: str, start: int, end: int
    ) -> np.ndarray:
        """The ensemble from the model's values of ``tracks`` over ``[start, end)`` of ``axis``.

        Parameters
        ----------
        model_values : numpy.ndarray, shape=(n_tracks, end - start)
            The model's imputation, arcsinh.

        Returns
        -------
        numpy.ndarray, shape=(n_tracks, end - start), float32, arcsinh
        """
        return self.combine_parts(model_values, tracks, axis, start, end)[0]

    def combine_parts(
        self, model_values: np.ndarray, tracks: Sequence[Track], axis: str, start: int, end: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`combine`, with the trees' and the average's values it combined.

        What a prediction interval needs besides the ensemble
        (:mod:`epitensor.estimators.intervals`: their disagreement is the bin's difficulty).

        Returns
        -------
        ensemble, trees, average : numpy.ndarray, shape=(n_tracks, end - start), arcsinh
        """
        trees = np.stack([self._trees(t, axis)[start:end] for t in tracks])
        average = np.stack([self.average.predict(c, a, axis, start, end) for c, a in tracks])
        values = self.rule.combine(model_values, trees, average, self.thresholds(tracks, axis))
        return values, trees, average

    def combine_imputations(
        self, track: Track, model: np.ndarray, trees: np.ndarray, average: np.ndarray
    ) -> np.ndarray:
        """The ensemble of ``track`` from its three parts' imputations over the whole store.

        What a benchmark holds (every axis of the store, concatenated): the
        ensemble is then scored without predicting its parts again.

        Parameters
        ----------
        track : (str, str)
            The track, for its gate on each axis.
        model, trees, average : numpy.ndarray, shape=(n_positions,)
            The model's (the average where it lacks the cell type or assay),
            the trees' and the average's imputations, arcsinh, axes in store order.

        Returns
        -------
        numpy.ndarray, shape=(n_positions,), float32, arcsinh
        """
        out, lo = [], 0
        for axis in self.store.axes:
            hi = lo + self.store.axis_length(axis)
            gate = self.thresholds([track], axis)[0, 0]
            out.append(self.rule.combine(model[lo:hi], trees[lo:hi], average[lo:hi], gate))
            lo = hi
        return np.concatenate(out)

    def predict_tracks(
        self, tracks: Sequence[Track], axis: str | None = None, start: int = 0, end=None
    ) -> np.ndarray:
        """Impute several tracks: ``(n_tracks, end - start)``, float32, arcsinh.

        A track whose cell type or assay the model lacks (a cross-validation
        fold can take all of them) takes the average in the model's place.
        """
        return self.predict_parts(tracks, axis, start, end)[0]

    def predict_parts(
        self, tracks: Sequence[Track], axis: str | None = None, start: int = 0, end=None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict_tracks`, with the trees' and the average's values: three ``(n_tracks, end - start)``."""
        tracks = [(str(c), str(a)) for c, a in tracks]
        axis = self._axis(axis)
        end = self.store.axis_length(axis) if end is None else int(end)
        known = [c in self.model.celltypes_ and a in self.model.assays_ for c, a in tracks]
        model_values = np.stack([self.average.predict(c, a, axis, start, end) for c, a in tracks])
        if any(known):
            inside = [t for t, k in zip(tracks, known) if k]
            model_values[np.flatnonzero(known)] = self.model.predict_tracks(
                inside, axis, start, end
            )
        return self.combine_parts(model_values, tracks, axis, start, end)

    def predict_interval(
        self,
        celltype: str,
        assay: str,
        level: float = 0.9,
        axis: str | None = None,
        start: int = 0,
        end=None,
        calibration=None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Impute one track with its central ``level`` prediction interval.

        Parameters
        ----------
        celltype, assay : str
            The track.
        level : float
            Nominal coverage in (0, 1). Default 0.9.
        axis : str, optional
            Default None: the store's only axis.
        start, end : int
            Axis positions, half-open. Default: the whole axis.
        calibration : IntervalCalibration, optional
            Default None: :func:`~epitensor.estimators.intervals.calibration_for`
            this ensemble (made in memory on first use, seconds per training
            track, and kept on the ensemble).

        Returns
        -------
        prediction, lower, upper : numpy.ndarray, shape=(end - start,), float32, arcsinh
            ``lower <= prediction <= upper``.

        Examples
        --------
        >>> import epitensor as et
        >>> store = et.open_store("roadmap-pilot")
        >>> model = et.Avocado.from_preset("cpu-small").fit(store, holdout=["E116:H3K27me3"])  # doctest: +SKIP
        >>> mean, lower, upper = et.Ensemble(model, store).predict_interval("E116", "H3K27me3")  # doctest: +SKIP
        """
        from epitensor.estimators.intervals import calibration_for

        if calibration is None:
            calibration = calibration_for(self)
        values, trees, average = self.predict_parts([(celltype, assay)], axis, start, end)
        lower, upper = calibration.interval(assay, values[0], trees[0], average[0], level)
        return values[0], lower, upper

    def predict(
        self, celltype: str, assay: str, axis: str | None = None, start: int = 0, end=None
    ) -> np.ndarray:
        """Impute one track: ``(end - start,)``, float32, arcsinh."""
        return self.predict_tracks([(celltype, assay)], axis, start, end)[0]

    def fingerprint(self) -> dict:
        """What identifies the ensemble's part of an imputation (for resuming its files)."""
        from dataclasses import asdict

        fingerprint = {"store": str(self.store.url), "rule": asdict(self.rule),
                       "trees": repr(self.trees),
                       "tracks": [list(t) for t in self.model.training_tracks_],
                       "data": {k: self.data[k] for k in ("coordinates", "tracks")}}  # fmt: skip
        if self.warnings:  # a changed store used anyway: the records say so
            fingerprint["warnings"] = list(self.warnings)
        return fingerprint

    def __repr__(self) -> str:
        return f"Ensemble({self.rule}, trees={self.trees!r})"
