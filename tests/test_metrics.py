"""Imputation metrics against hand computations and scipy / scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, mean_squared_error, precision_score, recall_score

from epitensor import metrics
from epitensor._utils import EpitensorError

# 200 positions: n = int(0.01 * 200) = 2 for the top 1%, int(0.05 * 200) = 10 for the top 5%.
N = 200


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    observed = np.arcsinh(rng.exponential(1.0, N)).astype(np.float32)
    imputed = (observed + rng.normal(0, 0.3, N)).astype(np.float32)
    return observed, imputed


def test_metric_names_are_metrics_not_functions():
    assert "score" not in metrics.METRICS
    assert metrics.METRICS == (
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
    assert metrics.LOWER_IS_BETTER == {
        "mse",
        "mse1obs",
        "mse1imp",
        "mseprom",
        "msegene",
        "mseenh",
        "msevar",
    }
    assert metrics.PEAK_THRESHOLD == pytest.approx(np.arcsinh(2.0))


def test_mse_by_hand_and_with_mask():
    observed = np.array([0.0, 1.0, 2.0, 3.0])
    imputed = np.array([1.0, 1.0, 0.0, 3.5])
    # squared errors 1, 0, 4, 0.25
    assert metrics.mse(observed, imputed) == pytest.approx(5.25 / 4)
    mask = np.array([True, False, True, False])
    assert metrics.mse(observed, imputed, mask) == pytest.approx(2.5)
    assert np.isnan(metrics.mse(observed, imputed, np.zeros(4, bool)))


def test_mse_agrees_with_sklearn(pair):
    observed, imputed = pair
    assert metrics.mse(observed, imputed) == pytest.approx(
        mean_squared_error(observed, imputed), rel=1e-6
    )


def test_top_fraction_includes_ties_at_the_threshold():
    values = np.zeros(N)
    values[:5] = [9.0, 7.0, 7.0, 7.0, 1.0]
    # n = 2: the 2nd largest is 7, and all three 7s are tied with it.
    top = metrics.top_fraction(values, 0.01)
    assert top.sum() == 4
    assert top[:4].all() and not top[4:].any()
    # without ties exactly n positions
    assert metrics.top_fraction(np.arange(N, dtype=float), 0.01).sum() == 2
    assert metrics.top_fraction(np.arange(N, dtype=float), 0.05).sum() == 10
    # fewer than 100 positions: the top 1% is empty
    assert not metrics.top_fraction(np.arange(99.0), 0.01).any()
    with pytest.raises(EpitensorError, match="fraction"):
        metrics.top_fraction(values, 0.0)


def test_mse1obs_and_mse1imp_by_hand_with_ties():
    observed = np.zeros(N)
    imputed = np.zeros(N)
    observed[:4] = [5.0, 3.0, 3.0, 1.0]  # top 1% by observed: positions 0, 1, 2 (tie at 3)
    imputed[:4] = [4.0, 3.0, 1.0, 6.0]
    imputed[10] = 6.0  # top 1% by imputed: positions 3 and 10 (both 6)
    assert metrics.mse1obs(observed, imputed) == pytest.approx((1.0 + 0.0 + 4.0) / 3)
    assert metrics.mse1imp(observed, imputed) == pytest.approx((25.0 + 36.0) / 2)
    # the mask applies before ranking: drop position 0 and the top 1% of the
    # remaining 199 (n = 1) is the tied pair 1, 2
    mask = np.ones(N, bool)
    mask[0] = False
    assert metrics.mse1obs(observed, imputed, mask) == pytest.approx(2.0)


def test_region_mses_are_mse_over_the_region_and_the_mask():
    observed = np.array([1.0, 2.0, 3.0, 4.0])
    imputed = np.array([0.0, 0.0, 0.0, 0.0])
    region = np.array([True, True, False, True])
    keep = np.array([True, False, True, True])
    for func in (metrics.mseprom, metrics.msegene, metrics.mseenh):
        assert func(observed, imputed, region) == pytest.approx((1 + 4 + 16) / 3)
        assert func(observed, imputed, region, keep) == pytest.approx((1 + 16) / 2)
    with pytest.raises(EpitensorError, match="annotation mask"):
        metrics.mseprom(observed, imputed, np.ones(3, bool))
    with pytest.raises(EpitensorError, match="annotation mask"):
        metrics.mseprom(observed, imputed, np.ones(4, dtype=np.int64))


def test_correlations_by_hand_and_against_scipy(pair):
    observed = np.array([1.0, 2.0, 3.0, 4.0])
    imputed = np.array([2.0, 4.0, 6.0, 8.0])
    assert metrics.pearson(observed, imputed) == pytest.approx(1.0)
    assert metrics.pearson(observed, -imputed) == pytest.approx(-1.0)
    # Spearman with ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4)
    tied = np.array([0.0, 1.0, 1.0, 5.0])
    ranks = np.array([1.0, 2.5, 2.5, 4.0])
    expected = np.corrcoef(ranks, [1, 2, 3, 4])[0, 1]
    assert metrics.spearman(tied, observed) == pytest.approx(expected)
    observed, imputed = pair
    assert metrics.pearson(observed, imputed) == pytest.approx(pearsonr(observed, imputed)[0])
    rounded = np.round(imputed, 1)  # many ties
    assert metrics.spearman(observed, rounded) == pytest.approx(
        spearmanr(observed, rounded).statistic
    )
    assert np.isnan(metrics.pearson(observed, np.ones(N)))
    assert np.isnan(metrics.spearman(observed[:1], imputed[:1]))


def test_catch1_by_hand():
    observed = np.arange(N, dtype=float)  # top 1%: 198, 199; top 5%: 190..199
    imputed = np.zeros(N)
    imputed[199] = 10.0
    imputed[0] = 9.0  # imputed top 1%: 199 and 0
    imputed[190:199] = 1.0  # imputed top 5%: 199, 0 and the nine tied 1s (ties included)
    # observed top 1% {198, 199} both lie in the imputed top 5%
    assert metrics.catch1obs(observed, imputed) == pytest.approx(1.0)
    # imputed top 1% {0, 199}: only 199 is in the observed top 5%
    assert metrics.catch1imp(observed, imputed) == pytest.approx(0.5)
    assert np.isnan(metrics.catch1obs(observed[:50], imputed[:50]))
    # A constant imputation catches nothing: NaN, not a perfect score from ties.
    constant = np.full_like(imputed, 0.3)
    assert np.isnan(metrics.catch1obs(observed, constant))
    assert np.isnan(metrics.catch1imp(observed, constant))
    # likewise the MSE over the top 1% of a constant track is undefined
    assert np.isnan(metrics.mse1imp(observed, constant))
    assert np.isnan(metrics.mse1obs(constant, observed))
    assert metrics.mse1obs(observed, constant) == pytest.approx(np.mean((observed[-2:] - 0.3) ** 2))


def test_peak_scores_by_hand_and_against_sklearn(pair):
    t = metrics.PEAK_THRESHOLD
    observed = np.array([t, t + 1, 0.0, 0.0, t - 1e-3, 3.0])
    imputed = np.array([t, 0.0, t + 2, 0.0, t, 3.0])
    # true peaks {0, 1, 5}; called {0, 2, 4, 5}; hits {0, 5}
    scores = metrics.peak_scores(observed, imputed)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # against given peaks
    peaks = np.array([False, False, True, True, False, False])
    given = metrics.peak_scores(observed, imputed, peaks=peaks)
    assert given["precision"] == pytest.approx(1 / 4) and given["recall"] == pytest.approx(1 / 2)
    # nothing called: precision NaN, recall 0
    none = metrics.peak_scores(observed, np.zeros(6))
    assert np.isnan(none["precision"]) and none["recall"] == 0 and np.isnan(none["f1"])
    # called but no hit: F1 is 0
    miss = metrics.peak_scores(np.array([0.0, 3.0]), np.array([3.0, 0.0]))
    assert miss["precision"] == 0 and miss["recall"] == 0 and miss["f1"] == 0
    observed, imputed = pair
    truth, called = observed >= t, imputed >= t
    scores = metrics.peak_scores(observed, imputed)
    assert scores["precision"] == pytest.approx(precision_score(truth, called))
    assert scores["recall"] == pytest.approx(recall_score(truth, called))
    assert scores["f1"] == pytest.approx(f1_score(truth, called))
    with pytest.raises(EpitensorError, match="peaks must be a boolean"):
        metrics.peak_scores(observed, imputed, peaks=np.ones(3, bool))


def test_weighted_mse_by_hand():
    observed = np.array([1.0, 2.0, 3.0])
    imputed = np.zeros(3)
    weights = np.array([1.0, 0.0, 3.0])
    assert metrics.mse_weighted(observed, imputed, weights) == pytest.approx((1 + 27) / 4)
    mask = np.array([False, True, True])
    assert metrics.mse_weighted(observed, imputed, weights, mask) == pytest.approx(9.0)
    assert np.isnan(metrics.mse_weighted(observed, imputed, np.zeros(3)))
    with pytest.raises(EpitensorError, match="non-negative"):
        metrics.mse_weighted(observed, imputed, np.array([1.0, -1.0, 0.0]))
    # uniform weights give the plain MSE
    assert metrics.mse_weighted(observed, imputed, np.ones(3)) == pytest.approx(
        metrics.mse(observed, imputed)
    )


def test_blacklist_mask_removes_positions_from_every_metric(pair):
    observed, imputed = pair
    observed, imputed = observed.copy(), imputed.copy()
    blacklisted = np.zeros(N, bool)
    blacklisted[:7] = True
    # wreck the blacklisted positions: a masked score must not see them
    observed[:7] = 9.0
    imputed[:7] = 0.0
    promoters = np.zeros(N, bool)
    promoters[::3] = True
    regions = {"promoters": promoters, "genes": ~promoters, "enhancers": None}
    masked = metrics.score(observed, imputed, mask=~blacklisted, regions=regions)
    clean = metrics.score(
        observed[7:],
        imputed[7:],
        regions={"promoters": promoters[7:], "genes": ~promoters[7:]},
    )
    assert list(masked) == list(metrics.METRICS)
    for name in metrics.METRICS:
        if name == "mseenh":
            assert np.isnan(masked[name])
        else:
            assert masked[name] == pytest.approx(clean[name]), name
    unmasked = metrics.score(observed, imputed, regions=regions)
    assert unmasked["mse"] > masked["mse"] + 1.0


def test_score_matches_the_single_metrics(pair):
    observed, imputed = pair
    peaks = observed > 1.0
    weights = np.linspace(0, 1, N)
    result = metrics.score(observed, imputed, peaks=peaks, weights=weights)
    assert result["mse"] == pytest.approx(metrics.mse(observed, imputed))
    assert result["mse1imp"] == pytest.approx(metrics.mse1imp(observed, imputed))
    assert result["spearman"] == pytest.approx(metrics.spearman(observed, imputed))
    assert result["catch1imp"] == pytest.approx(metrics.catch1imp(observed, imputed))
    assert result["recall"] == pytest.approx(
        metrics.peak_scores(observed, imputed, peaks=peaks)["recall"]
    )
    assert result["msevar"] == pytest.approx(metrics.mse_weighted(observed, imputed, weights))
    assert np.isnan(result["mseprom"])


@pytest.mark.parametrize(
    ("observed", "imputed", "mask", "match"),
    [
        (np.zeros(4), np.zeros(5), None, "same length"),
        (np.zeros((2, 2)), np.zeros((2, 2)), None, "1-D"),
        (np.zeros(4), np.zeros(4), np.ones(4), "mask must be a boolean"),
        (np.zeros(4), np.zeros(4), np.ones(3, bool), "mask must be a boolean"),
        (np.zeros(4), np.array([0.0, np.nan, 0, 0]), None, "finite"),
    ],
)
def test_bad_input_raises(observed, imputed, mask, match):
    with pytest.raises(EpitensorError, match=match):
        metrics.mse(observed, imputed, mask)
    with pytest.raises(EpitensorError, match=match):
        metrics.score(observed, imputed, mask=mask)


def test_score_rejects_unknown_regions():
    with pytest.raises(EpitensorError, match="invalid regions"):
        metrics.score(np.zeros(4), np.zeros(4), regions={"blacklist": np.ones(4, bool)})
