"""Imputation metrics: pure functions of observed and imputed tracks (arcsinh scale).

Every function takes ``observed`` and ``imputed`` arrays of the same shape
``(n_positions,)`` on the arcsinh(-log10 p) scale, and an optional boolean
``mask`` of the same shape selecting the positions to score (for instance
"not blacklisted"). Metrics are not training losses.

The nine metrics the ENCODE Imputation Challenge ranked entries on
(:data:`CHALLENGE_METRICS`) follow the definitions of its published scoring
code (ENCODE-DCC/imputation_challenge, ``score_metrics.py``, used by
``score.py``); the five ChromImpute / Ernst-Kellis peak-agreement metrics
(:data:`PEAK_METRICS`) follow the earlier version of that code, which computed
them as counts; here they are fractions of the top 1%. Conventions:

* the top 1% of a track are its ``n = int(0.01 * N)`` largest values, with
  every position tied with the n-th largest value included (the challenge's
  ``y >= sorted(y)[-n]``), and the top 5% likewise with ``5 * n`` positions;
* ``mseprom``, ``msegene`` and ``mseenh`` sum the squared error over every
  annotated window and divide by the number of window bins, both counted with
  multiplicity: a bin in two genes counts twice (the challenge's ``sse / n``
  over the annotation lines). Here the region arguments may therefore be
  counts (how many windows cover each position) as well as boolean masks;
* ``msevar`` weights each position's squared error by the variance of the
  assay's observed signal across cell types, normalised to sum to 1
  (the challenge's ``((y - p) ** 2).dot(var) / var.sum()``);
* a peak is a position whose -log10 p value is at least 2, i.e. whose arcsinh
  value is at least ``arcsinh(2)`` (:data:`PEAK_THRESHOLD`);
* a metric over an empty selection is NaN, and so are the top-1% metrics of
  a constant track (with ties included its top 1% would be every position).

Departures from the challenge code: the blacklist is a mask (the challenge
deleted blacklisted bins from the array, which shifted its annotation windows
against the signal), an annotation window is the set of 25-bp bins that
overlap the interval (the challenge took ``[start // 25, end // 25 + 1)``, one
bin more when ``end`` is a multiple of 25), and promoters are the 2 kb
upstream of each annotated TSS (:mod:`epitensor.genome.annotations`) rather than of
each gene's start.
"""

from __future__ import annotations

import numpy as np

from epitensor._utils import EpitensorError

PEAK_THRESHOLD = float(np.arcsinh(2.0))
"""arcsinh(2): the peak threshold of -log10 p = 2 on the arcsinh scale."""

__all__ = [
    "CHALLENGE_METRICS",
    "LOWER_IS_BETTER",
    "METRICS",
    "PEAK_METRICS",
    "PEAK_THRESHOLD",
    "WEIGHTED_METRIC",
    "aucimp1",
    "aucobs1",
    "catch1imp",
    "catch1obs",
    "gwcorr",
    "gwspear",
    "match1",
    "mse",
    "mse1imp",
    "mse1obs",
    "msegene",
    "mseenh",
    "mseprom",
    "msevar",
    "mse_weighted",
    "peak_scores",
    "pearson",
    "region_counts",
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


def region_counts(region: np.ndarray, shape: tuple, name: str) -> np.ndarray:
    """Windows covering each position: a boolean mask (0 or 1) or non-negative integer counts.

    Parameters
    ----------
    region : numpy.ndarray, shape=(n_positions,), bool or int
        True where a position lies in the annotation, or how many annotated
        windows cover it (a bin in two genes: 2).
    shape : tuple
        Expected shape ``(n_positions,)``.
    name : str
        Name for the error message.

    Returns
    -------
    numpy.ndarray, shape=(n_positions,), int64
    """
    region = np.asarray(region)
    if region.shape != tuple(shape) or region.dtype.kind not in "biu" or (region < 0).any():
        raise EpitensorError(
            f"{name} must be a boolean or non-negative integer array of shape {tuple(shape)}; "
            f"got {region.dtype} of shape {region.shape}; map annotations onto the track's axis"
        )
    return region.astype(np.int64)


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
    return _top(values, n)


def _top(values: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` largest values and every value tied with the n-th largest."""
    if n <= 0:
        return np.zeros(values.shape, dtype=bool)
    n = min(n, values.size)
    threshold = np.partition(values, values.size - n)[values.size - n]
    return values >= threshold


def _tops(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Top 1% and top 5% (``5 * int(0.01 N)`` positions) of a track, or None if undefined.

    None for a constant track or fewer than 100 positions: with ties included
    a constant track's "top 1%" is every position, which would give it perfect
    peak scores.
    """
    n = int(0.01 * values.size)
    if n == 0 or np.ptp(values) == 0:
        return None
    return _top(values, n), _top(values, 5 * n)


def mse(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error over all (or the masked) positions (the challenge's ``mse``).

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
    """Weighted MSE: ``sum(w * (o - i)^2) / sum(w)`` over all (or the masked) positions.

    Parameters
    ----------
    observed, imputed : numpy.ndarray, shape=(n_positions,), arcsinh
    weights : numpy.ndarray, shape=(n_positions,), non-negative
        Weight of each position.
    mask : numpy.ndarray, shape=(n_positions,), bool, optional
        Default None: all positions.

    Returns
    -------
    float
        NaN when the weights sum to 0.
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


def msevar(
    observed: np.ndarray,
    imputed: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray | None = None,
) -> float:
    """MSE weighted by the across-cell-type variance of the assay (the challenge's ``msevar``).

    The challenge builds ``variance`` per assay as the population variance
    (``numpy.std(...) ** 2``) at each bin of the observed tracks of that assay
    in every cell type (its ``build_var_npy.py``); :func:`epitensor.evaluation.benchmark.evaluate`
    does the same over the store's observed tracks.

    Parameters
    ----------
    observed, imputed : numpy.ndarray, shape=(n_positions,), arcsinh
    variance : numpy.ndarray, shape=(n_positions,), non-negative
        Variance of the assay's observed signal across cell types.
    mask : numpy.ndarray, shape=(n_positions,), bool, optional
        Default None: all positions.

    Returns
    -------
    float
        ``sum(var * (o - i)^2) / sum(var)``; NaN when the variance is 0 everywhere.
    """
    return mse_weighted(observed, imputed, variance, mask)


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


def _region_mse(observed, imputed, region, mask, name) -> float:
    counts = region_counts(region, np.shape(observed), name)
    obs, imp = _check(observed, imputed)
    if mask is not None:
        counts = counts * _check_mask(mask, np.shape(observed), "mask")
    total = counts.sum()
    return float(np.sum(counts * (obs - imp) ** 2) / total) if total > 0 else float("nan")


def mseprom(
    observed: np.ndarray,
    imputed: np.ndarray,
    promoters: np.ndarray,
    mask: np.ndarray | None = None,
) -> float:
    """MSE over promoter windows, a bin counted once per window covering it (challenge ``mseprom``).

    Parameters
    ----------
    observed, imputed : numpy.ndarray, shape=(n_positions,), arcsinh
    promoters : numpy.ndarray, shape=(n_positions,), bool or int
        How many promoters (2 kb upstream of a TSS) cover each position, or
        a boolean mask (each position counted once).
    mask : numpy.ndarray, shape=(n_positions,), bool, optional
        Further positions to keep (e.g. not blacklisted). Default None: all.

    Returns
    -------
    float
        ``sum(count * (o - i)^2) / sum(count)``; NaN when no window is kept.
    """
    return _region_mse(observed, imputed, promoters, mask, "promoters")


def msegene(
    observed: np.ndarray,
    imputed: np.ndarray,
    genes: np.ndarray,
    mask: np.ndarray | None = None,
) -> float:
    """MSE over gene bodies, counted with multiplicity like :func:`mseprom` (challenge ``msegene``)."""
    return _region_mse(observed, imputed, genes, mask, "genes")


def mseenh(
    observed: np.ndarray,
    imputed: np.ndarray,
    enhancers: np.ndarray,
    mask: np.ndarray | None = None,
) -> float:
    """MSE over enhancers, counted with multiplicity like :func:`mseprom` (challenge ``mseenh``)."""
    return _region_mse(observed, imputed, enhancers, mask, "enhancers")


def pearson(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation over all (or the masked) positions; NaN for a constant track.

    The challenge's ``gwcorr`` (genome-wide correlation); :func:`gwcorr` is this function.
    """
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
    """Spearman correlation (Pearson of average ranks, so ties share a rank).

    The challenge's ``gwspear`` (``scipy.stats.spearmanr``); :func:`gwspear` is this function.
    """
    obs, imp = _check(observed, imputed, mask)
    if obs.size < 2:
        return float("nan")
    return pearson(_ranks(obs), _ranks(imp))


gwcorr = pearson
gwspear = spearman


def match1(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of the top 1% observed positions that are also in the top 1% imputed.

    The challenge's early ``match1`` counted ``top1(obs) & top1(imp)``; this
    divides that count by the size of ``top1(obs)``. NaN when either track is
    constant.
    """
    obs, imp = _check(observed, imputed, mask)
    obs_tops, imp_tops = _tops(obs), _tops(imp)
    if obs_tops is None or imp_tops is None:
        return float("nan")
    return float(np.mean(imp_tops[0][obs_tops[0]]))


def _catch(source: np.ndarray, target: np.ndarray) -> float:
    source_tops, target_tops = _tops(source), _tops(target)
    if source_tops is None or target_tops is None:
        return float("nan")
    return float(np.mean(target_tops[1][source_tops[0]]))


def catch1obs(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of the top 1% observed positions that lie in the top 5% imputed.

    The challenge's early ``catch1obs`` as a fraction of ``top1(obs)``. NaN
    when either track is constant (its top fraction is undefined).
    """
    obs, imp = _check(observed, imputed, mask)
    return _catch(obs, imp)


def catch1imp(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of the top 1% imputed positions that lie in the top 5% observed (``catch1imp``)."""
    obs, imp = _check(observed, imputed, mask)
    return _catch(imp, obs)


def _auc(labels: np.ndarray, scores: np.ndarray, ranks: np.ndarray | None = None) -> float:
    """ROC AUC of ``scores`` for boolean ``labels`` (Mann-Whitney U, ties count one half).

    ``ranks``, the average ranks of ``scores``, may be given to save ranking again.
    Kept rather than ``sklearn.metrics.roc_auc_score`` (equal to 1e-16): reusing
    the ranks :func:`score` takes for ``gwspear``, the ranks and both AUCs
    of a million positions took 3.3x less time (``benchmarks/libraries.py``).
    """
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _ranks(scores) if ranks is None else ranks
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def aucobs1(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """ROC AUC of the imputed signal at recovering the top 1% observed positions (``aucobs1``).

    Equals ``sklearn.metrics.roc_auc_score(top1(observed), imputed)``, the
    challenge's definition. NaN when the observed track is constant.
    """
    obs, imp = _check(observed, imputed, mask)
    tops = _tops(obs)
    return float("nan") if tops is None else _auc(tops[0], imp)


def aucimp1(observed: np.ndarray, imputed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """ROC AUC of the observed signal at recovering the top 1% imputed positions (``aucimp1``).

    ``roc_auc_score(top1(imputed), observed)``. NaN when the imputed track is constant.
    """
    obs, imp = _check(observed, imputed, mask)
    tops = _tops(imp)
    return float("nan") if tops is None else _auc(tops[0], obs)


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


CHALLENGE_METRICS = (
    "mse",
    "gwcorr",
    "gwspear",
    "mseprom",
    "msegene",
    "mseenh",
    "msevar",
    "mse1obs",
    "mse1imp",
)
"""The nine metrics the ENCODE Imputation Challenge ranked on, in its order."""

PEAK_METRICS = ("match1", "catch1obs", "catch1imp", "aucobs1", "aucimp1")
"""ChromImpute / Ernst-Kellis agreement of the top 1%, as fractions (higher is better)."""

METRICS = (*CHALLENGE_METRICS, *PEAK_METRICS, "precision", "recall", "f1")
"""Metric names, in report order; lower is better for the MSEs, higher for the rest."""

WEIGHTED_METRIC = "msevar"
"""Name of the variance-weighted MSE (NaN in :func:`score` without ``weights``)."""

LOWER_IS_BETTER = frozenset(m for m in METRICS if m.startswith("mse"))


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
        ``"promoters"``, ``"genes"``, ``"enhancers"``: boolean masks or
        window counts of shape ``(n_positions,)`` (see :func:`mseprom`); a
        missing one gives NaN for its metric. Default None: all three NaN.
    peaks : numpy.ndarray, shape=(n_positions,), bool, optional
        True peaks for precision / recall. Default None: thresholded observed.
    weights : numpy.ndarray, shape=(n_positions,), non-negative, optional
        The assay's variance across cell types, for ``msevar``
        (:func:`msevar`). Default None: ``msevar`` is NaN.

    Returns
    -------
    dict of str to float
        Keyed by the names in :data:`METRICS`, in that order.
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
        return func(obs, imp, region_counts(regions[name], np.shape(observed), name)[keep])

    # rank each track once: gwspear and both AUCs use the ranks (the slow part on a genome)
    obs_ranks, imp_ranks = (_ranks(obs), _ranks(imp)) if obs.size >= 2 else (obs, imp)
    obs_tops, imp_tops = _tops(obs), _tops(imp)
    result = {
        "mse": mse(obs, imp),
        "gwcorr": pearson(obs, imp),
        "gwspear": pearson(obs_ranks, imp_ranks) if obs.size >= 2 else float("nan"),
        "mseprom": region("promoters", mseprom),
        "msegene": region("genes", msegene),
        "mseenh": region("enhancers", mseenh),
        "msevar": float("nan") if weights is None else msevar(observed, imputed, weights, mask),
        "mse1obs": mse1obs(obs, imp),
        "mse1imp": mse1imp(obs, imp),
        "match1": match1(obs, imp),
        "catch1obs": catch1obs(obs, imp),
        "catch1imp": catch1imp(obs, imp),
        "aucobs1": float("nan") if obs_tops is None else _auc(obs_tops[0], imp, imp_ranks),
        "aucimp1": float("nan") if imp_tops is None else _auc(imp_tops[0], obs, obs_ranks),
    }
    truth = None if peaks is None else _check_mask(peaks, np.shape(observed), "peaks")[keep]
    result.update(peak_scores(obs, imp, peaks=truth))
    return result
