"""Scores of prediction intervals: coverage, width, the interval (Winkler) score, pinball loss.

Every function takes ``observed`` (shape ``(n_positions,)``, arcsinh) and the
``lower`` and ``upper`` bounds of a central interval of nominal level
``level`` (in (0, 1), e.g. 0.9) on the same scale. The interval is read as the
``alpha / 2`` and ``1 - alpha / 2`` quantiles of the prediction, ``alpha = 1 -
level``, and scored as in Gneiting & Raftery (2007, JASA 102:359, section 6.2):

* ``coverage``: the share of positions with ``lower <= observed <= upper``;
* ``width``: the mean of ``upper - lower``;
* ``winkler``: the interval score ``(upper - lower) + (2 / alpha) (lower -
  y)+ + (2 / alpha) (y - upper)+``, a proper score, lower is better: an
  interval too narrow pays for its misses, one too wide for its width;
* ``pinball``: the mean pinball (quantile) loss of the two bounds as the
  ``alpha / 2`` and ``1 - alpha / 2`` quantiles; ``winkler = (2 / alpha) * 2 *
  pinball``, so both rank methods alike at one level, and the mean pinball over
  many levels approximates the CRPS.

:func:`interval_table` scores the intervals of many tracks and methods, over
all positions and over the top 1% of observed positions;
:func:`interval_summary` pools it (overall, per assay, top 1%, and the tracks
of cell types that kept one or two training tracks), and
:func:`reliability_table` gives nominal against empirical coverage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from epitensor._utils import EpitensorError
from epitensor.estimators.intervals import check_levels
from epitensor.evaluation.metrics import top_fraction

__all__ = [
    "INTERVAL_LEVELS",
    "INTERVAL_METRICS",
    "SCORER_NAME",
    "check_level",
    "coverage",
    "IntervalScorer",
    "interval_scorer",
    "interval_summary",
    "interval_table",
    "pinball",
    "reliability_table",
    "write_interval_files",
    "width",
    "winkler",
]

INTERVAL_METRICS = ("coverage", "width", "winkler", "pinball")
"""The per-interval scores, in table order."""

Track = tuple[str, str]


def check_level(level: float) -> float:
    """``level`` as a float in (0, 1), else an EpitensorError naming it.

    Examples
    --------
    >>> check_level(0.9)
    0.9
    """
    return check_levels(level)[0]


def _check(observed, lower, upper) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    observed, lower, upper = (np.asarray(v, dtype=np.float64) for v in (observed, lower, upper))
    if not observed.shape == lower.shape == upper.shape:
        raise EpitensorError(
            f"observed, lower and upper must have one shape; got {observed.shape}, "
            f"{lower.shape}, {upper.shape}"
        )
    return observed, lower, upper


def coverage(observed: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of positions inside ``[lower, upper]``; NaN for no position.

    Parameters
    ----------
    observed, lower, upper : numpy.ndarray, shape=(n_positions,)
        arcsinh.

    Returns
    -------
    float

    Examples
    --------
    >>> coverage([0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    0.6666666666666666
    """
    observed, lower, upper = _check(observed, lower, upper)
    if observed.size == 0:
        return float("nan")
    return float(np.mean((lower <= observed) & (observed <= upper)))


def width(lower: np.ndarray, upper: np.ndarray) -> float:
    """Mean width ``upper - lower``; NaN for no position.

    Examples
    --------
    >>> width([0.0, 1.0], [1.0, 4.0])
    2.0
    """
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    return float(np.mean(upper - lower)) if lower.size else float("nan")


def winkler(observed: np.ndarray, lower: np.ndarray, upper: np.ndarray, level: float) -> float:
    """Mean interval (Winkler) score of a central ``level`` interval: lower is better.

    Parameters
    ----------
    observed, lower, upper : numpy.ndarray, shape=(n_positions,)
        arcsinh.
    level : float
        Nominal coverage in (0, 1).

    Returns
    -------
    float
        ``mean(upper - lower + 2/alpha (lower - y)+ + 2/alpha (y - upper)+)``, ``alpha = 1 - level``.

    Examples
    --------
    >>> winkler([0.5, 3.0], [0.0, 0.0], [1.0, 1.0], level=0.5)  # widths 1, miss of 2 costs 8
    5.0
    """
    observed, lower, upper = _check(observed, lower, upper)
    if observed.size == 0:
        return float("nan")
    alpha = 1.0 - check_level(level)
    below = np.maximum(lower - observed, 0.0)
    above = np.maximum(observed - upper, 0.0)
    return float(np.mean(upper - lower + (2.0 / alpha) * (below + above)))


def _pinball(observed: np.ndarray, quantile: np.ndarray, tau: float) -> np.ndarray:
    diff = observed - quantile
    return np.maximum(tau * diff, (tau - 1.0) * diff)


def pinball(observed: np.ndarray, lower: np.ndarray, upper: np.ndarray, level: float) -> float:
    """Mean pinball loss of the bounds as the ``alpha/2`` and ``1 - alpha/2`` quantiles.

    Parameters
    ----------
    observed, lower, upper : numpy.ndarray, shape=(n_positions,)
        arcsinh.
    level : float
        Nominal coverage in (0, 1).

    Returns
    -------
    float
        The mean over positions and over the two bounds.

    Examples
    --------
    >>> pinball([1.0], [0.0], [2.0], level=0.5)  # 0.25 * 1 and 0.25 * 1, averaged
    0.25
    """
    observed, lower, upper = _check(observed, lower, upper)
    if observed.size == 0:
        return float("nan")
    alpha = 1.0 - check_level(level)
    low = _pinball(observed, lower, alpha / 2.0)
    high = _pinball(observed, upper, 1.0 - alpha / 2.0)
    return float(np.mean((low + high) / 2.0))


def _scores(observed, lower, upper, level) -> dict[str, float]:
    return {
        "coverage": coverage(observed, lower, upper),
        "width": width(lower, upper),
        "winkler": winkler(observed, lower, upper, level),
        "pinball": pinball(observed, lower, upper, level),
    }


def interval_table(
    observed: Mapping[Track, np.ndarray],
    intervals: Mapping[str, Mapping[Track, Mapping[float, tuple[np.ndarray, np.ndarray]]]],
    mask: np.ndarray | None = None,
    train: Sequence[Track] | None = None,
) -> pd.DataFrame:
    """Score the intervals of every method and track, over all and the top 1% of observed positions.

    Parameters
    ----------
    observed : mapping of (str, str) to numpy.ndarray, shape=(n_positions,)
        Observed tracks, arcsinh.
    intervals : mapping of str to mapping of (str, str) to mapping of float to (lower, upper)
        Per method (e.g. ``"per-bin"``, ``"constant"``), per track, per level,
        the bounds (each ``(n_positions,)``, arcsinh).
    mask : numpy.ndarray, shape=(n_positions,), bool, optional
        Positions to score (e.g. not blacklisted). Default None: all.
    train : sequence of (str, str), optional
        The training tracks, to count those each cell type kept. Default None.

    Returns
    -------
    pandas.DataFrame
        Long: ``celltype, assay, method, level, subset`` (``"all"`` or
        ``"top1"``), ``metric`` (:data:`INTERVAL_METRICS`), ``value``,
        ``n_bins`` (positions scored) and ``celltype_tracks`` (training
        tracks of the cell type; -1 when ``train`` is not given).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.arange(200.0)
    >>> bounds = {0.9: (y - 1, y + 1)}
    >>> table = interval_table({("E003", "H3K4me3"): y}, {"per-bin": {("E003", "H3K4me3"): bounds}})
    >>> table[(table.metric == "coverage") & (table.subset == "all")].value.tolist()
    [1.0]
    """
    kept = pd.Series([c for c, _ in train or []], dtype=object).value_counts().to_dict()
    rows = []
    for method, tracks in intervals.items():
        for track, levels in tracks.items():
            y = np.asarray(observed[track])
            keep = np.ones(y.shape, dtype=bool) if mask is None else np.asarray(mask, bool)
            top = top_fraction(np.where(keep, y, -np.inf), 0.01) & keep
            for level, (lower, upper) in levels.items():
                for subset, where in (("all", keep), ("top1", top)):
                    scores = _scores(y[where], lower[where], upper[where], level)
                    n_kept = int(kept.get(track[0], 0)) if train is not None else -1
                    rows += [
                        (*track, method, float(level), subset, metric, value,
                         int(where.sum()), n_kept)
                        for metric, value in scores.items()
                    ]  # fmt: skip
    columns = ["celltype", "assay", "method", "level", "subset", "metric", "value", "n_bins",
               "celltype_tracks"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def interval_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Pool :func:`interval_table` rows: overall, per assay, top 1%, few-track cell types.

    Scores are bin-weighted means over tracks (every track of a store has the
    same positions, so this is the score of all held-out bins pooled).

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`interval_table` (several folds or seeds may be stacked): a
        track whose cell type kept one or two training tracks
        (``celltype_tracks``) is also pooled as ``group="few-tracks"``.

    Returns
    -------
    pandas.DataFrame
        Columns ``group`` (``"all"``, ``"assay:<name>"``, ``"few-tracks"``),
        ``subset``, ``method``, ``level`` and one column per metric of
        :data:`INTERVAL_METRICS`.
    """
    if table.empty:
        return pd.DataFrame(columns=["group", "subset", "method", "level", *INTERVAL_METRICS])
    groups = [("all", table)]
    groups += [(f"assay:{a}", part) for a, part in table.groupby("assay", sort=True)]
    if "celltype_tracks" in table:
        part = table[table.celltype_tracks.between(0, 2)]
        if not part.empty:
            groups.append(("few-tracks", part))
    frames = []
    for group, part in groups:
        weighted = part.assign(weighted=part.value * part.n_bins)
        keys = ["subset", "method", "level", "metric"]
        sums = weighted.groupby(keys, sort=False)[["weighted", "n_bins"]].sum()
        pooled = (sums.weighted / sums.n_bins).rename("value").reset_index()
        wide = pooled.pivot_table(
            index=["subset", "method", "level"], columns="metric", values="value", sort=False
        ).reset_index()
        frames.append(wide.assign(group=group))
    out = pd.concat(frames, ignore_index=True)
    out.columns.name = None
    return out[["group", "subset", "method", "level", *INTERVAL_METRICS]]


def reliability_table(summary: pd.DataFrame, group: str = "all") -> pd.DataFrame:
    """Nominal against empirical coverage, per method and subset, from :func:`interval_summary`.

    Returns
    -------
    pandas.DataFrame
        Columns ``subset, method, level, coverage``, sorted by level.

    Examples
    --------
    >>> import pandas as pd
    >>> s = pd.DataFrame({"group": ["all"], "subset": ["all"], "method": ["per-bin"],
    ...                   "level": [0.9], "coverage": [0.88], "width": [1.0],
    ...                   "winkler": [2.0], "pinball": [0.05]})
    >>> reliability_table(s).coverage.tolist()
    [0.88]
    """
    part = summary[summary.group == group]
    return part[["subset", "method", "level", "coverage"]].sort_values(
        ["subset", "method", "level"], ignore_index=True
    )


INTERVAL_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
"""The levels a benchmark scores (the reliability diagram's points)."""

SCORER_NAME = "intervals"
"""The name of :func:`interval_scorer`'s table among a benchmark's extra tables."""

METHODS = {"per-bin": "ensemble, per-bin width", "constant": "ensemble, constant width per assay"}


def interval_scorer(
    levels: Sequence[float] = INTERVAL_LEVELS, rule=None, seed: int = 0, trees: dict | None = None
) -> IntervalScorer:
    """A ``scorers`` entry of :func:`~epitensor.evaluation.benchmark.run_benchmark` / ``run_cv``.

    For each split (fold) it calibrates the ensemble's intervals on the
    training tracks alone (:func:`epitensor.estimators.intervals.left_out_samples`:
    trees and average activity fitted on those tracks, each left out in
    turn; no network is trained), then scores the held-out tracks' intervals
    around the ensemble's imputations, per bin and with the constant-width
    baseline, by :func:`interval_table`. A fold's calibration is reused for
    every training seed (it does not depend on the network).

    Parameters
    ----------
    levels : sequence of float
        Nominal levels. Default :data:`INTERVAL_LEVELS`.
    rule : EnsembleRule, optional
        The benchmark's ensemble rule. Default None: ``EnsembleRule()``.
    seed : int
        Seed of the calibration's trees and draws. Default 0.
    trees : dict, optional
        Parameters of the calibration's
        :class:`~epitensor.estimators.baselines.ChromImputeGBT` (those of the
        benchmark's trees). Default None: its defaults.

    Returns
    -------
    IntervalScorer
        Called as ``scorer(store, predictions, holdout, train)``, it returns
        the long table of :func:`interval_table` (it needs the ``ensemble``
        and ``chromimpute_gbt`` predictions).

    Examples
    --------
    >>> import epitensor as et
    >>> from epitensor.evaluation.intervals import interval_scorer
    >>> scorers = {"intervals": interval_scorer()}
    >>> et.run_benchmark("roadmap-pilot", "out", scorers=scorers,
    ...                  ensemble=et.EnsembleRule())  # doctest: +SKIP
    """
    return IntervalScorer(levels, rule, seed, trees)


class IntervalScorer:
    """See :func:`interval_scorer`.

    Attributes
    ----------
    calibration : IntervalCalibration or None
        The last split's calibration.
    average : AverageActivity or None
        The last split's average activity (fitted on its training tracks).
    """

    def __init__(
        self,
        levels: Sequence[float] = INTERVAL_LEVELS,
        rule=None,
        seed: int = 0,
        trees: dict | None = None,
    ):
        from epitensor.estimators.ensemble import EnsembleRule

        self.trees = dict(trees or {})
        self.levels = check_levels(levels)
        # "auto" (the benchmark's default ensemble) is the default rule
        self.rule = EnsembleRule() if rule is None or rule == "auto" else rule
        self.seed = seed
        self.calibration, self.average, self._key = None, None, None

    def bounds(self, track: Track, prediction, trees, average, level: float):
        """The per-bin ``(lower, upper)`` of a held-out track from its ensemble and parts."""
        return self.calibration.interval(track[1], prediction, trees, average, level)

    def __call__(self, store, predictions, holdout, train) -> pd.DataFrame:
        """Calibrate on ``train`` (once per split) and score ``holdout``'s intervals: :func:`interval_table`."""
        from epitensor.estimators.ensemble import DEFAULT_METHOD

        # the default ensemble is scored as "epitensor"; one of another rule as "ensemble"
        name = DEFAULT_METHOD if DEFAULT_METHOD in predictions else "ensemble"
        needed = [m for m in (name, "chromimpute_gbt") if m not in predictions]
        if needed:
            raise EpitensorError(
                f"interval scoring needs the ensemble's imputations; the benchmark lacks "
                f"{needed}: score the ensemble (drop --model-only) with the default baselines"
            )
        key = (str(store.url), tuple(sorted(map(tuple, train))))
        if key != self._key:
            self.calibration, self.average = _calibration(
                store, train, self.rule, self.seed, self.trees
            )
            self._key = key
        observed, bounds = {}, {"per-bin": {}, "constant": {}}
        for track in holdout:
            prediction = predictions[name][track]
            trees = predictions["chromimpute_gbt"][track]
            average = np.concatenate([self.average.predict(*track, a) for a in store.axes])
            observed[track] = _observed(store, track)
            bounds["per-bin"][track] = {
                x: self.bounds(track, prediction, trees, average, x) for x in self.levels
            }
            bounds["constant"][track] = {
                x: self.calibration.constant_interval(track[1], prediction, x) for x in self.levels
            }
        return interval_table(observed, bounds, train=train)


def _observed(store, track: Track) -> np.ndarray:
    return np.concatenate([store.read_track(*track, axis=axis) for axis in store.axes])


def _calibration(store, train, rule, seed, params):
    from epitensor.estimators.baselines import AverageActivity, ChromImputeGBT
    from epitensor.estimators.intervals import IntervalCalibration, left_out_samples

    train = [tuple(t) for t in train]
    trees = ChromImputeGBT(**{"seed": seed, **params}).fit(store, train)
    average = AverageActivity().fit(store, train)
    samples, used = left_out_samples(store, trees, average, rule, train, seed=seed)
    info = {"tracks": [list(t) for t in used]}
    return IntervalCalibration.fit(samples, seed=seed, info=info), average


def write_interval_files(folder, table: pd.DataFrame) -> None:
    """Beside a benchmark's ``intervals.csv``: ``intervals_summary.csv`` / ``.md`` and ``reliability.png``.

    Parameters
    ----------
    folder : path-like
        The benchmark's folder.
    table : pandas.DataFrame
        :func:`interval_scorer`'s tables (folds and seeds stacked).
    """
    from pathlib import Path

    from epitensor.viz.plots import plot_reliability
    from epitensor.viz.tables import markdown_table

    folder = Path(folder)
    summary = interval_summary(table)
    summary.to_csv(folder / "intervals_summary.csv", index=False)
    frame = summary.set_index(["group", "subset", "method", "level"])
    frame.index = [" ".join(map(str, i)) for i in frame.index]
    frame.index.name = "group subset method level"
    (folder / "intervals_summary.md").write_text(markdown_table(frame, 3))
    plot_reliability(
        folder / "reliability.png",
        reliability_table(summary),
        "prediction intervals of the ensemble, held-out bins",
    )
