"""Prediction intervals of the ensemble: per-assay conformal calibration on left-out tracks.

The ensemble (:mod:`epitensor.estimators.ensemble`) gives one value per bin; an
interval says how far to trust it. The method is split conformal prediction,
per assay, with the residual normalised by a per-bin difficulty:

1. **Honest residuals without retraining.** For each training track ``(c,
   a)`` of the model (at most ``max_tracks_per_assay`` per assay) the
   ensemble's parts are recomputed *as if the track were missing*: the
   ChromImpute-style trees of a target never use the target's own values
   (their training cell types are the others with the assay), so their
   prediction is already left-out; the average activity is taken over the
   other cell types (``(n * mean - y) / (n - 1)``, no refit). The network
   cannot leave a track out without retraining, and its in-sample
   predictions are far too good (0.048 training against 0.139 held-out MSE
   on the demo model; calibrated on them, 90% intervals covered 86.8% of
   held-out bins), so it is replaced by a stand-in made of the left-out parts
   (:data:`PROXIES`; the left-out average covered 90.5%, the trees 89.9%:
   ``benchmarks/intervals.py``). The calibration ensemble is the ensemble's own
   rule applied to them.
2. **Difficulty.** ``sigma = b0 + b1 * max(prediction, 0) + b2 * |trees -
   average|``: the signal level (errors grow with it on the arcsinh scale)
   and the disagreement of the ensemble's two left-out parts, fitted per
   assay by least squares to the absolute residuals (coefficients kept >= 0).
3. **Conformal quantiles.** Per assay the quantiles of the signed normalised
   residual ``(y - prediction) / sigma`` are stored on a grid of
   probabilities (optionally per group of ``sigma``, ``n_groups``), so any
   level can be read later. A central ``level`` interval is ``prediction +
   sigma * [q((1 - level) / 2), q((1 + level) / 2)]`` (asymmetric: peaks are
   under-predicted), the lower bound clipped at 0 (observed values are >= 0
   on the arcsinh scale); the interval always holds the prediction.

The baseline it is measured against (:meth:`IntervalCalibration.constant_interval`)
has one width per assay and level: the quantile of the absolute residuals of
the same calibration bins, so the comparison isolates the per-bin width.

A calibration is stored in the model directory as ``intervals.json``
(:data:`CALIBRATION_FILE`), keyed by the checksums of the model's files and
the ensemble's fingerprint (store content by digest, rule, trees): a model or
store that changed gets a new calibration, never a stale one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from epitensor._utils import EpitensorError, atomic_write_bytes, warn

__all__ = [
    "CALIBRATION_FILE",
    "PROBABILITIES",
    "PROXIES",
    "IntervalCalibration",
    "calibrate",
    "calibration_for",
    "check_levels",
    "interval_path",
    "left_out_samples",
    "level_label",
]

CALIBRATION_FILE = "intervals.json"
"""The calibration's file in a model directory."""

PROBABILITIES = np.linspace(0.0, 1.0, 1001)
"""The grid of probabilities at which each group's normalised residual quantiles are stored."""

PROXIES = ("trees", "average", "mid")
"""Stand-ins for the network's value of a left-out track: the trees, the average, or their mean."""

FORMAT = 1
Track = tuple[str, str]
Sample = tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray
]  # observed, prediction, trees, average


def check_levels(levels: float | Sequence[float] | None) -> list[float]:
    """Interval levels as a sorted list of floats in (0, 1), without repeats.

    Parameters
    ----------
    levels : float or sequence of float, optional
        e.g. 0.9 or (0.8, 0.9). None or empty: no interval.

    Returns
    -------
    list of float

    Examples
    --------
    >>> check_levels([0.9, 0.8, 0.9])
    [0.8, 0.9]
    """
    if levels is None:
        return []
    if isinstance(levels, int | float | np.floating):
        levels = [levels]
    out = []
    for level in levels:
        try:
            value = float(level)
        except (TypeError, ValueError):
            value = float("nan")
        if not 0.0 < value < 1.0:
            raise EpitensorError(
                f"an interval level must lie in (0, 1), e.g. 0.9 for 90%; got {level!r}"
            )
        out.append(value)
    return sorted(set(out))


def level_label(level: float) -> str:
    """The level in percent as written in file names: ``0.9 -> "90"``, ``0.975 -> "97.5"``.

    Examples
    --------
    >>> level_label(0.9), level_label(0.975)
    ('90', '97.5')
    """
    return f"{round(100.0 * float(level), 6):g}"


def interval_path(path: str | os.PathLike, bound: str, level: float) -> Path:
    """The file of a bound beside an imputed track's: ``E003.H3K4me3.lower90.bigWig``.

    Parameters
    ----------
    path : str or path-like
        The imputed track's file (``.bigWig``, ``.bw``, ``.bedGraph``, ``.bg``,
        optionally ``.gz``).
    bound : {"lower", "upper"}
    level : float
        In (0, 1).

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> interval_path("out/E003.H3K4me3.bigWig", "lower", 0.9).name
    'E003.H3K4me3.lower90.bigWig'
    """
    path = Path(path)
    name = path.name
    suffix = "".join(path.suffixes[-2:]) if name.lower().endswith(".gz") else path.suffix
    stem = name[: len(name) - len(suffix)] if suffix else name
    return path.with_name(f"{stem}.{bound}{level_label(level)}{suffix}")


def difficulty(prediction: np.ndarray, trees: np.ndarray, average: np.ndarray) -> np.ndarray:
    """The difficulty features of each bin: ``(n_positions, 3)``: 1, level, disagreement.

    Parameters
    ----------
    prediction, trees, average : numpy.ndarray, shape=(n_positions,)
        The ensemble and its two parts, arcsinh.

    Returns
    -------
    numpy.ndarray, shape=(n_positions, 3), float64
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    return np.stack(
        [
            np.ones_like(prediction),
            np.maximum(prediction, 0.0),
            np.abs(np.asarray(trees, np.float64) - np.asarray(average, np.float64)),
        ],
        axis=1,
    )


def _fit_assay(samples: Sequence[Sample], n_groups: int, rng: np.random.Generator) -> dict:
    """One assay's calibration from its left-out samples."""
    y = np.concatenate([s[0] for s in samples]).astype(np.float64)
    prediction = np.concatenate([s[1] for s in samples]).astype(np.float64)
    features = difficulty(
        prediction, np.concatenate([s[2] for s in samples]), np.concatenate([s[3] for s in samples])
    )
    residual = y - prediction
    fit = rng.choice(len(y), size=min(len(y), 400_000), replace=False)
    coef, *_ = np.linalg.lstsq(features[fit], np.abs(residual[fit]), rcond=None)
    coef = np.maximum(coef, 0.0)
    coef[0] = max(coef[0], 1e-3)  # never a zero width
    sigma = features @ coef
    edges = np.quantile(sigma, np.linspace(0, 1, n_groups + 1)[1:-1]) if n_groups > 1 else []
    group = np.searchsorted(edges, sigma)
    z = residual / sigma
    quantiles = [np.quantile(z[group == k], PROBABILITIES) for k in range(n_groups)]
    return {
        "coef": coef.tolist(),
        "edges": np.asarray(edges, dtype=np.float64).tolist(),
        "quantiles": np.round(np.asarray(quantiles), 6).tolist(),
        "constant": np.round(np.quantile(np.abs(residual), PROBABILITIES), 6).tolist(),
        "n_bins": int(len(y)),
        "n_tracks": len(samples),
    }


class IntervalCalibration:
    """Per-assay, difficulty-normalised conformal quantiles of the ensemble's errors.

    Built by :meth:`fit` (or :func:`calibrate` from an ensemble); read back
    with :meth:`from_dict`. See the module's docstring for the method.

    Parameters
    ----------
    assays : dict
        Per assay (and ``"*"``, all assays pooled, for an assay it has no
        calibration of), the fitted coefficients, group edges and quantiles.
    info : dict, optional
        What it was made from (tracks, proxy, fingerprint). Default None.

    Examples
    --------
    >>> import numpy as np
    >>> import epitensor as et
    >>> rng = np.random.default_rng(0)
    >>> y = rng.gamma(2.0, 1.0, 20_000); p = y + rng.normal(0, 0.5, y.size)
    >>> cal = et.IntervalCalibration.fit({"H3K4me3": [(y, p, p, p)]}, n_groups=2)
    >>> lower, upper = cal.interval("H3K4me3", p, p, p, 0.9)
    >>> bool(abs(np.mean((lower <= y) & (y <= upper)) - 0.9) < 0.02)
    True
    """

    def __init__(self, assays: dict, info: dict | None = None) -> None:
        self.assays = assays
        self.info = dict(info or {})

    @classmethod
    def fit(
        cls,
        samples: Mapping[str, Sequence[Sample]],
        n_groups: int = 1,
        seed: int = 0,
        info: dict | None = None,
    ) -> IntervalCalibration:
        """Calibrate from left-out samples, per assay and pooled.

        Parameters
        ----------
        samples : mapping of str to sequence of (observed, prediction, trees, average)
            Per assay, one tuple per left-out track, each array ``(n_positions,)``, arcsinh.
        n_groups : int
            Difficulty groups per assay (Mondrian). Default 1: measured
            on the bundled sample's standard split, 8 groups scored 2% better
            overall but covered fewer peaks (53% against 61% at 90%).
        seed : int
            Seed of the subsample the difficulty is fitted on. Default 0.
        info : dict, optional
            Kept in the calibration (and its file). Default None.

        Returns
        -------
        IntervalCalibration
        """
        if not isinstance(n_groups, int) or n_groups < 1:
            raise EpitensorError(f"n_groups must be a positive integer; got n_groups={n_groups!r}")
        samples = {a: list(s) for a, s in samples.items() if len(s)}
        if not samples:
            raise EpitensorError(
                "no track to calibrate intervals on: every assay needs a training track in "
                "at least two cell types"
            )
        rng = np.random.default_rng(seed)
        assays = {a: _fit_assay(s, n_groups, rng) for a, s in sorted(samples.items())}
        assays["*"] = _fit_assay([x for s in samples.values() for x in s], n_groups, rng)
        return cls(assays, {"n_groups": n_groups, "seed": seed, **(info or {})})

    def _of(self, assay: str) -> dict:
        return self.assays.get(assay, self.assays["*"])

    def sigma(self, assay: str, prediction, trees, average) -> np.ndarray:
        """Each bin's difficulty ``(n_positions,)`` (arcsinh units)."""
        return difficulty(prediction, trees, average) @ np.asarray(self._of(assay)["coef"])

    def interval(
        self,
        assay: str,
        prediction: np.ndarray,
        trees: np.ndarray,
        average: np.ndarray,
        level: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The central ``level`` interval of each bin.

        Parameters
        ----------
        assay : str
            The track's assay (an assay without its own calibration takes the pooled one).
        prediction, trees, average : numpy.ndarray, shape=(..., n_positions)
            The ensemble and its two parts, arcsinh.
        level : float
            In (0, 1).

        Returns
        -------
        lower, upper : numpy.ndarray, the shape of ``prediction``, float32, arcsinh
            ``0 <= lower <= prediction <= upper`` wherever ``prediction >= 0``.
        """
        return self.intervals(assay, prediction, trees, average, [level])[0]

    def intervals(
        self,
        assay: str,
        prediction: np.ndarray,
        trees: np.ndarray,
        average: np.ndarray,
        levels: Sequence[float],
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`interval` at several levels, the difficulty computed once.

        Returns
        -------
        list of (lower, upper)
            One pair per level, each the shape of ``prediction``, float32, arcsinh.
        """
        part = self._of(assay)
        shape = np.shape(prediction)
        p = np.asarray(prediction, dtype=np.float32).ravel()
        b0, b1, b2 = (np.float32(c) for c in part["coef"])
        disagreement = np.abs(np.ravel(trees).astype(np.float32) - np.ravel(average))
        sigma = b0 + b1 * np.maximum(p, 0) + b2 * disagreement
        table = np.asarray(part["quantiles"])
        group = np.searchsorted(np.asarray(part["edges"]), sigma) if len(table) > 1 else None
        out = []
        for level in check_levels(list(levels)):
            low = np.array([np.interp((1 - level) / 2, PROBABILITIES, q) for q in table])
            high = np.array([np.interp((1 + level) / 2, PROBABILITIES, q) for q in table])
            if group is None:  # one group: scalars, no gather
                low, high = np.float32(low[0]), np.float32(high[0])
            else:
                low, high = low[group].astype(np.float32), high[group].astype(np.float32)
            out.append(_bounds(p, p + low * sigma, p + high * sigma, shape))
        return out

    def constant_interval(
        self, assay: str, prediction: np.ndarray, level: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The baseline: ``prediction +- h``, one ``h`` per assay and level (same calibration bins).

        Returns
        -------
        lower, upper : numpy.ndarray, the shape of ``prediction``, float32, arcsinh
        """
        level = check_levels(level)[0]
        half = float(np.interp(level, PROBABILITIES, self._of(assay)["constant"]))
        p = np.asarray(prediction, dtype=np.float64)
        return _bounds(p.ravel(), p.ravel() - half, p.ravel() + half, p.shape)

    def to_dict(self) -> dict:
        """JSON-ready form (see :meth:`from_dict`)."""
        return {"format": FORMAT, "info": self.info, "assays": self.assays}

    @classmethod
    def from_dict(cls, data: dict) -> IntervalCalibration:
        """Read :meth:`to_dict`'s form back; an unknown format is an error."""
        if (
            not isinstance(data, dict)
            or data.get("format") != FORMAT
            or "*" not in data.get("assays", {})
        ):
            raise EpitensorError(
                f"not an interval calibration of format {FORMAT}; delete the file and let "
                "impute --interval calibrate again"
            )
        return cls(data["assays"], data.get("info"))

    def __repr__(self) -> str:
        assays = [a for a in self.assays if a != "*"]
        return f"IntervalCalibration(assays={assays}, proxy={self.info.get('proxy')!r})"


def _bounds(p, lower, upper, shape) -> tuple[np.ndarray, np.ndarray]:
    lower = np.minimum(np.maximum(lower, 0.0, out=lower), p, out=lower)
    upper = np.maximum(upper, p, out=upper)
    return (lower.reshape(shape).astype(np.float32, copy=False),
            upper.reshape(shape).astype(np.float32, copy=False))  # fmt: skip


def left_out_samples(
    store,
    trees,
    average,
    rule,
    tracks: Sequence[Track],
    proxy: str = "average",
    max_tracks_per_assay: int = 4,
    max_positions: int = 2_000_000,
    seed: int = 0,
) -> tuple[dict[str, list[Sample]], list[Track]]:
    """The calibration samples: the ensemble of training tracks recomputed as if each were missing.

    Parameters
    ----------
    store : Store
        The compendium holding ``tracks``.
    trees : ChromImputeGBT
        Fitted on ``tracks`` (a target's trees never use its own values).
    average : AverageActivity
        Fitted on ``tracks`` (its own cell type is taken out here).
    rule : EnsembleRule
        The ensemble's rule.
    tracks : sequence of (str, str)
        The training tracks.
    proxy : {"trees", "average", "mid"}
        The network's stand-in (see :data:`PROXIES`). Default ``"average"``
        (measured: ``benchmarks/intervals.py``).
    max_tracks_per_assay : int
        Calibration tracks per assay at most, drawn with ``seed``. Default 4.
    max_positions : int
        Whole axes in store order until this many positions. Default 2,000,000.
    seed : int
        Seed of the track draw. Default 0.

    Returns
    -------
    samples : dict of str to list of (observed, prediction, trees, average)
        Per assay; each array ``(n_positions,)``, arcsinh.
    used : list of (str, str)
        The tracks calibrated on.
    """
    if proxy not in PROXIES:
        raise EpitensorError(f"invalid proxy: got {proxy!r}, expected one of {list(PROXIES)}")
    tracks = [tuple(t) for t in tracks]
    per_assay: dict[str, list[Track]] = {}
    for c, a in tracks:
        per_assay.setdefault(a, []).append((c, a))
    rng = np.random.default_rng(seed)
    chosen = []
    for _, group in sorted(per_assay.items()):
        if len(group) < 2:  # no other cell type: nothing to leave it out against
            continue
        keep = rng.choice(len(group), size=min(len(group), max_tracks_per_assay), replace=False)
        chosen += [group[k] for k in sorted(keep)]
    axes, total = [], 0
    for axis in store.axes:
        if total >= max_positions:
            break
        axes.append(axis)
        total += store.axis_length(axis)
    samples: dict[str, list[Sample]] = {}
    for c, a in chosen:
        n = len(average.celltypes_[a])
        parts = []
        for axis in axes:
            y = store.read_track(c, a, axis)
            left_out = (n * average.predict(c, a, axis) - y) / (n - 1)
            g = trees.predict(c, a, axis)
            stand_in = {"trees": g, "average": left_out, "mid": 0.5 * (g + left_out)}[proxy]
            prediction = rule.combine(stand_in, g, left_out, -np.inf)
            parts.append((y, prediction, g, left_out.astype(np.float32)))
        samples.setdefault(a, []).append(tuple(np.concatenate(x) for x in zip(*parts)))
    return samples, chosen


def calibrate(
    ensemble,
    proxy: str = "average",
    n_groups: int = 1,
    max_tracks_per_assay: int = 4,
    max_positions: int = 2_000_000,
    seed: int = 0,
) -> IntervalCalibration:
    """Calibrate the intervals of an :class:`~epitensor.estimators.ensemble.Ensemble`.

    No training: the trees of the calibration tracks are fitted (seconds
    each) and the average is taken without each track. See the module's docstring.

    Parameters
    ----------
    ensemble : Ensemble
        The ensemble whose imputations the intervals are for.
    proxy, max_tracks_per_assay, max_positions, seed
        See :func:`left_out_samples`.
    n_groups : int
        See :meth:`IntervalCalibration.fit`. Default 1.

    Returns
    -------
    IntervalCalibration
    """
    samples, used = left_out_samples(
        ensemble.store,
        ensemble.trees,
        ensemble.average,
        ensemble.rule,
        ensemble.model.training_tracks_,
        proxy,
        max_tracks_per_assay,
        max_positions,
        seed,
    )
    info = {
        "proxy": proxy,
        "tracks": [list(t) for t in used],
        "max_positions": max_positions,
        "fingerprint": ensemble.fingerprint(),
    }
    return IntervalCalibration.fit(samples, n_groups, seed, info)


def _key(model, ensemble) -> dict:
    """What a stored calibration must match: the model's files (as pinned) and the ensemble."""
    pinned = getattr(model, "_checksums", None)  # every file of the model directory, as read
    return {
        "model": dict(pinned) if isinstance(pinned, dict) else None,
        "ensemble": json.loads(json.dumps(ensemble.fingerprint())),
    }


def calibration_for(
    ensemble, directory: str | os.PathLike | None = None, verbose: bool = False
) -> IntervalCalibration:
    """The ensemble's calibration: read from the model directory when it matches, else made.

    Parameters
    ----------
    ensemble : Ensemble
        The ensemble imputed.
    directory : str or path-like, optional
        The model directory: ``intervals.json`` there is used when its key (the
        model's weights checksum and the ensemble's fingerprint) matches, else
        a new calibration is made and written there (a directory that cannot
        be written keeps it in memory, with a warning). Default None: made in
        memory (kept on the ensemble for its next use).
    verbose : bool
        Say when calibrating. Default False.

    Returns
    -------
    IntervalCalibration
    """
    key = _key(ensemble.model, ensemble)
    held = getattr(ensemble, "_calibration", None)
    if held is not None and held.info.get("key") == key:
        return held
    path = None if directory is None else Path(directory) / CALIBRATION_FILE
    if path is not None and path.is_file():
        try:
            found = IntervalCalibration.from_dict(json.loads(path.read_text()))
        except (ValueError, EpitensorError):
            found = None
        if found is not None and found.info.get("key") == key:
            ensemble._calibration = found
            return found
    if verbose:
        import sys

        print("calibrating the prediction intervals (once per model)", file=sys.stderr)
    calibration = calibrate(ensemble)
    calibration.info["key"] = key
    if path is not None:
        try:
            atomic_write_bytes(path, json.dumps(calibration.to_dict()).encode())
        except OSError as exc:
            warn(
                f"could not keep the interval calibration in {path} ({exc}); it is redone next time"
            )
    ensemble._calibration = calibration
    return calibration
