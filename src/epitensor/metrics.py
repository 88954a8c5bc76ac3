"""Imputation metrics: pure functions of observed and imputed tracks (arcsinh scale).

Every function takes ``observed`` and ``imputed`` arrays of the same shape
``(n_positions,)`` on the arcsinh(-log10 p) scale, and an optional boolean
``mask`` of the same shape selecting the positions to score (for instance
"not blacklisted", or "in a promoter"). Metrics are not training losses.

Conventions (ENCODE Imputation Challenge, Durham et al. 2018):

* the top 1% of a track are its ``n = int(0.01 * N)`` largest values, with
  every position tied with the n-th largest value included (so ties never make
  the set depend on the sort order);
* a peak is a position whose -log10 p value is at least 2, i.e. whose arcsinh
  value is at least ``arcsinh(2)`` (:data:`PEAK_THRESHOLD`);
* a metric over an empty selection is NaN, and so are the top-1% metrics of
  a constant track (with ties included its top 1% would be every position).
"""

from __future__ import annotations

import numpy as np

from epitensor._utils import EpitensorError

PEAK_THRESHOLD = float(np.arcsinh(2.0))
"""arcsinh(2): the peak threshold of -log10 p = 2 on the arcsinh scale."""

__all__ = [
    "LOWER_IS_BETTER",
    "METRICS",
    "PEAK_THRESHOLD",
    "WEIGHTED_METRIC",
    "catch1imp",
    "catch1obs",
    "mse",
    "mse1imp",
    "mse1obs",
    "msegene",
    "mseenh",
    "mseprom",
    "mse_weighted",
    "peak_scores",
    "pearson",
    "score",
    "spearman",
    "top_fraction",
]


def _check_mask(mask: np.ndarray, shape: tuple, name: str) -> np.ndarray:
    """Return ``mask`` as an array after checking it is boolean with ``shape``."""
    mask = np.asarray(mask)
    if mask.shape != tuple(shape) or mask.dtype != bool:
        raise EpitensorError(
            f"{name} must be a boolean array of shape {tuple(shape)}; "
            f"got {mask.dtype} of shape {mask.shape}; map annotations onto the track's axis"
        )
    return mask


def _check(
    observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of tracks and return their masked float64 values."""
    observed = np.asarray(observed)
    imputed = np.asarray(imputed)
    if observed.ndim != 1 or imputed.shape != observed.shape:
        raise EpitensorError(
            f"observed and imputed must be 1-D arrays of the same length; got shapes "
            f"{observed.shape} and {imputed.shape}"
        )
    if observed.size and not (np.isfinite(observed).all() and np.isfinite(imputed).all()):
        raise EpitensorError(
            "observed and imputed must be finite (NaN or inf found); the store fills "
            "missing signal with 0, so check the predictor's output"
        )
    if mask is not None:
        mask = _check_mask(mask, observed.shape, "mask")
        observed, imputed = observed[mask], imputed[mask]
    return observed.astype(np.float64), imputed.astype(np.float64)


def top_fraction(values: np.ndarray, fraction: float = 0.01) -> np.ndarray:
    """Boolean mask of the top ``fraction`` of values, ties at the threshold included.

    Parameters
    ----------
    values : numpy.ndarray, shape=(n_positions,)
        Any scale.
    fraction : float
        Share of positions to take: ``n = int(fraction * n_positions)``.
        Default 0.01.

    Returns
    -------
    numpy.ndarray, shape=(n_positions,), bool
        True for the ``n`` largest values and every value equal to the n-th
        largest; all False when ``n`` is 0.
    """
    if not 0 < fraction <= 1:
        raise EpitensorError(f"fraction must lie in (0, 1]; got fraction={fraction!r}")
    values = np.asarray(values)
    n = int(fraction * values.size)
    if n <= 0:
        return np.zeros(values.shape, dtype=bool)
    threshold = np.partition(values, values.size - n)[values.size - n]
    return values >= threshold


def mse(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error over all (or the masked) positions (MSEglobal).

    Parameters
    ----------
    observed, imputed : numpy.ndarray, shape=(n_positions,), arcsinh
    mask : numpy.ndarray, shape=(n_positions,), bool, optional
        Positions to score. Default None: all.

    Returns
    -------
    float
        NaN when no position is selected.
    """
    obs, imp = _check(observed, imputed, mask)
    return float(np.mean((obs - imp) ** 2)) if obs.size else float("nan")


def mse_weighted(
    observed: np.ndarray,
    imputed: np.ndarray,
    weights: np.ndarray,
    mask: np.ndarray | None = None,
) -> float:
    """Weighted MSE, e.g. weighted by the across-cell-type variance of the assay.

    Parameters
    ----------
    observed, imputed : numpy.ndarray, shape=(n_positions,), arcsinh
    weights : numpy.ndarray, shape=(n_positions,), non-negative
        Weight of each position (such as the variance of the assay over the
        training cell types, which stresses cell-type-specific positions).
    mask : numpy.ndarray, shape=(n_positions,), bool, optional
        Default None: all positions.

    Returns
    -------
    float
        ``sum(w * (o - i)^2) / sum(w)``; NaN when the weights sum to 0.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != np.shape(observed) or (weights < 0).any():
        raise EpitensorError(
            f"weights must be non-negative with shape {np.shape(observed)}; "
            f"got shape {weights.shape}"
        )
    obs, imp = _check(observed, imputed, mask)
    w = weights if mask is None else weights[np.asarray(mask)]
    total = w.sum()
    return float(np.sum(w * (obs - imp) ** 2) / total) if total > 0 else float("nan")


def mse1obs(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """MSE over the top 1% of positions by observed signal (ties included).

    NaN when the observed track is constant: with ties included its "top 1%"
    would be every position.
    """
    obs, imp = _check(observed, imputed, mask)
    if obs.size == 0 or np.ptp(obs) == 0:
        return float("nan")
    return mse(obs, imp, top_fraction(obs, 0.01))


def mse1imp(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """MSE over the top 1% of positions by imputed signal (ties included).

    NaN when the imputed track is constant (such as a global-mean baseline):
    with ties included its "top 1%" would be every position.
    """
    obs, imp = _check(observed, imputed, mask)
    if imp.size == 0 or np.ptp(imp) == 0:
        return float("nan")
    return mse(obs, imp, top_fraction(imp, 0.01))


def _region_mse(observed, imputed, region, mask) -> float:
    region = _check_mask(region, np.shape(observed), "annotation mask")
    if mask is not None:
        region = region & _check_mask(mask, np.shape(observed), "mask")
    return mse(observed, imputed, region)


def mseprom(
    observed: np.ndarray,
    imputed: np.ndarray,
    promoters: np.ndarray,
    mask: np.ndarray | None = None,
) -> float:
    """MSE over promoters (2 kb upstream of each TSS; see :mod:`epitensor.annotations`).

    Parameters
    ----------
    observed, imputed : numpy.ndarray, shape=(n_positions,), arcsinh
    promoters : numpy.ndarray, shape=(n_positions,), bool
        Positions in a promoter.
    mask : numpy.ndarray, shape=(n_positions,), bool, optional
        Further positions to keep (e.g. not blacklisted). Default None: all.
    """
    return _region_mse(observed, imputed, promoters, mask)


def msegene(
    observed: np.ndarray,
    imputed: np.ndarray,
    genes: np.ndarray,
    mask: np.ndarray | None = None,
) -> float:
    """MSE over gene bodies; ``genes`` is a boolean mask like ``promoters`` in :func:`mseprom`."""
    return _region_mse(observed, imputed, genes, mask)


def mseenh(
    observed: np.ndarray,
    imputed: np.ndarray,
    enhancers: np.ndarray,
    mask: np.ndarray | None = None,
) -> float:
    """MSE over enhancers; ``enhancers`` is a boolean mask like ``promoters`` in :func:`mseprom`."""
    return _region_mse(observed, imputed, enhancers, mask)


def pearson(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation over all (or the masked) positions; NaN for a constant track."""
    obs, imp = _check(observed, imputed, mask)
    if obs.size < 2:
        return float("nan")
    obs = obs - obs.mean()
    imp = imp - imp.mean()
    denominator = np.sqrt(np.sum(obs * obs) * np.sum(imp * imp))
    return float(np.sum(obs * imp) / denominator) if denominator > 0 else float("nan")


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, method="average")


def spearman(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Spearman correlation (Pearson of average ranks, so ties share a rank)."""
    obs, imp = _check(observed, imputed, mask)
    if obs.size < 2:
        return float("nan")
    return pearson(_ranks(obs), _ranks(imp))


def _catch(source: np.ndarray, target: np.ndarray) -> float:
    top1 = top_fraction(source, 0.01)
    # A constant track has no top 1% or 5%: with ties included its "top 5%" is every
    # position, which would give a constant imputation a perfect catch score.
    if not top1.any() or np.ptp(source) == 0 or np.ptp(target) == 0:
        return float("nan")
    top5 = top_fraction(target, 0.05)
    return float(np.mean(top5[top1]))


def catch1obs(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of the top 1% observed positions that lie in the top 5% imputed.

    NaN when either track is constant (its top fraction is undefined).
    """
    obs, imp = _check(observed, imputed, mask)
    return _catch(obs, imp)


def catch1imp(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of the top 1% imputed positions that lie in the top 5% observed."""
    obs, imp = _check(observed, imputed, mask)
    return _catch(imp, obs)


def peak_scores(
    observed: np.ndarray,
    imputed: np.ndarray,
    mask: np.ndarray | None = None,
    peaks: np.ndarray | None = None,
    threshold: float = PEAK_THRESHOLD,
) -> dict[str, float]:
    """Peak precision, recall and F1 of the thresholded imputation.

    A position is an imputed peak when ``imputed >= threshold``. The true
    peaks are ``observed >= threshold`` or, when given, the ``peaks`` mask
    (e.g. a narrowPeak file mapped onto the layout).

    Parameters
    ----------
    observed, imputed : numpy.ndarray, shape=(n_positions,), arcsinh
    mask : numpy.ndarray, shape=(n_positions,), bool, optional
        Positions to score. Default None: all.
    peaks : numpy.ndarray, shape=(n_positions,), bool, optional
        True peaks. Default None: threshold ``observed``.
    threshold : float
        Peak threshold on the arcsinh scale. Default arcsinh(2) (-log10 p = 2).

    Returns
    -------
    dict
        ``precision`` (NaN with no imputed peak), ``recall`` (NaN with no
        true peak) and ``f1`` (their harmonic mean; NaN when either is NaN,
        0 when both are 0).
    """
    obs, imp = _check(observed, imputed, mask)
    if peaks is None:
        truth = obs >= threshold
    else:
        peaks = _check_mask(peaks, np.shape(observed), "peaks")
        truth = peaks if mask is None else peaks[np.asarray(mask)]
    called = imp >= threshold
    hits = float(np.sum(called & truth))
    precision = hits / called.sum() if called.any() else float("nan")
    recall = hits / truth.sum() if truth.any() else float("nan")
    if np.isnan(precision) or np.isnan(recall):
        f1 = float("nan")
    elif precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


METRICS = (
    "mse",
    "mse1obs",
    "mse1imp",
    "mseprom",
    "msegene",
    "mseenh",
    "pearson",
    "spearman",
    "catch1obs",
    "catch1imp",
    "precision",
    "recall",
    "f1",
)
"""Metric names, in report order; lower is better for the MSEs, higher for the rest."""

WEIGHTED_METRIC = "msevar"
"""Name of the optional variance-weighted MSE that :func:`score` adds when given weights."""

LOWER_IS_BETTER = frozenset([*(m for m in METRICS if m.startswith("mse")), WEIGHTED_METRIC])


def score(
    observed: np.ndarray,
    imputed: np.ndarray,
    mask: np.ndarray | None = None,
    regions: dict[str, np.ndarray] | None = None,
    peaks: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one track.

    Parameters
    ----------
    observed, imputed : numpy.ndarray, shape=(n_positions,), arcsinh
    mask : numpy.ndarray, shape=(n_positions,), bool, optional
        Positions to score (e.g. outside the blacklist). Default None: all.
    regions : dict, optional
        Boolean masks ``"promoters"``, ``"genes"``, ``"enhancers"`` of shape
        ``(n_positions,)``; a missing one gives NaN for its metric. Default
        None: all three NaN.
    peaks : numpy.ndarray, shape=(n_positions,), bool, optional
        True peaks for precision / recall. Default None: thresholded observed.
    weights : numpy.ndarray, shape=(n_positions,), non-negative, optional
        Position weights, such as the variance of the assay across the
        training cell types; adds the weighted MSE :data:`WEIGHTED_METRIC`
        (``"msevar"``) after the others. Default None: not computed.

    Returns
    -------
    dict of str to float
        Keyed by the names in :data:`METRICS`, in that order (then
        ``"msevar"`` when ``weights`` is given).
    """
    regions = regions or {}
    unknown = set(regions) - {"promoters", "genes", "enhancers"}
    if unknown:
        raise EpitensorError(
            f"invalid regions: got {sorted(unknown)!r}, expected keys among "
            f"['promoters', 'genes', 'enhancers']"
        )
    obs, imp = _check(observed, imputed, mask)
    keep = mask if mask is not None else slice(None)

    def region(name: str, func) -> float:
        if regions.get(name) is None:
            return float("nan")
        return func(obs, imp, _check_mask(regions[name], np.shape(observed), name)[keep])

    result = {
        "mse": mse(obs, imp),
        "mse1obs": mse1obs(obs, imp),
        "mse1imp": mse1imp(obs, imp),
        "mseprom": region("promoters", mseprom),
        "msegene": region("genes", msegene),
        "mseenh": region("enhancers", mseenh),
        "pearson": pearson(obs, imp),
        "spearman": spearman(obs, imp),
        "catch1obs": catch1obs(obs, imp),
        "catch1imp": catch1imp(obs, imp),
    }
    truth = None if peaks is None else _check_mask(peaks, np.shape(observed), "peaks")[keep]
    result.update(peak_scores(obs, imp, peaks=truth))
    if weights is not None:
        result[WEIGHTED_METRIC] = mse_weighted(observed, imputed, weights, mask)
    return result
