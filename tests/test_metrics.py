"""Imputation metrics against hand computations and scipy / scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, mean_squared_error, precision_score, recall_score

from epitensor._utils import EpitensorError
from epitensor.evaluation import metrics

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
    # the challenge's nine, in its order (ENCODE-DCC/imputation_challenge score_metrics.Score)
    assert metrics.CHALLENGE_METRICS == (
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
    assert metrics.PEAK_METRICS == ("match1", "catch1obs", "catch1imp", "aucobs1", "aucimp1")
    assert metrics.METRICS == (
        *metrics.CHALLENGE_METRICS,
        *metrics.PEAK_METRICS,
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
    assert metrics.gwcorr is metrics.pearson and metrics.gwspear is metrics.spearman
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
    with pytest.raises(EpitensorError, match="promoters must be a boolean or non-negative"):
        metrics.mseprom(observed, imputed, np.ones(3, bool))
    with pytest.raises(EpitensorError, match="genes must be a boolean or non-negative"):
        metrics.msegene(observed, imputed, np.array([1, -1, 0, 0]))
    with pytest.raises(EpitensorError, match="enhancers must be"):
        metrics.mseenh(observed, imputed, np.ones(4))  # floats are not counts
    assert np.isnan(metrics.mseprom(observed, imputed, np.zeros(4, bool)))


def test_region_mses_count_a_bin_once_per_window():
    """The challenge sums squared errors over each window: a bin in two genes counts twice.

    Squared errors 1, 4, 9, 16. Windows: gene A covers positions 0-1, gene B
    positions 1-3, so the counts are 1, 2, 1, 1 and
    msegene = (1*1 + 2*4 + 1*9 + 1*16) / (1 + 2 + 1 + 1) = 34 / 5 = 6.8,
    not the boolean mask's (1 + 4 + 9 + 16) / 4 = 7.5. Masking position 3 out
    leaves (1 + 8 + 9) / 4 = 4.5.
    """
    observed = np.array([1.0, 2.0, 3.0, 4.0])
    imputed = np.zeros(4)
    counts = np.array([1, 2, 1, 1])
    assert metrics.msegene(observed, imputed, counts) == pytest.approx(6.8)
    assert metrics.msegene(observed, imputed, counts > 0) == pytest.approx(7.5)
    keep = np.array([True, True, True, False])
    assert metrics.msegene(observed, imputed, counts, keep) == pytest.approx(4.5)
    scores = metrics.score(observed, imputed, regions={"genes": counts})
    assert scores["msegene"] == pytest.approx(6.8)


def test_challenge_and_peak_metrics_by_hand():
    """Every top-1% metric on 200 positions worked out by hand.

    observed = 0, 1, ..., 199. imputed = observed, except position 5 -> 500
    (a false top) and position 199 -> 191.5 (a true top imputed lower).
    n = int(0.01 * 200) = 2, 5n = 10.

    * top 1% observed: {198, 199}; top 5% observed: {190, ..., 199}.
    * top 1% imputed: values 500 (pos 5), 198 (pos 198) -> {5, 198}; top 5%
      imputed: 500, 198, 197, ..., 192, 191.5 (pos 199), 191 -> {5, 191..199}.
    * squared errors: pos 5 (5 - 500)^2 = 245025, pos 199 (7.5)^2 = 56.25, else 0.
    * mse = (245025 + 56.25) / 200 = 1225.40625.
    * mse1obs = (0 + 56.25) / 2 = 28.125; mse1imp = (245025 + 0) / 2 = 122512.5.
    * match1 = |{198, 199} & {5, 198}| / 2 = 0.5.
    * catch1obs = |{198, 199} & top5 imputed| / 2 = 2 / 2 = 1.
    * catch1imp = |{5, 198} & {190..199}| / 2 = 1 / 2 = 0.5.
    * aucobs1: positives 198 (imputed 198) and 199 (191.5) against the 198
      negatives. 198 beats every negative but pos 5: 197. 191.5 beats the
      negatives valued below it, 0..191 without pos 5: 191.
      AUC = (197 + 191) / (2 * 198) = 388 / 396.
    * aucimp1: positives 5 (observed 5) and 198 (observed 198), scored by the
      observed values. 5 beats 0..4: 5. 198 beats every negative but 199: 197.
      AUC = (5 + 197) / 396 = 202 / 396.
    """
    from sklearn.metrics import roc_auc_score

    observed = np.arange(200, dtype=np.float64)
    imputed = observed.copy()
    imputed[5] = 500.0
    imputed[199] = 191.5
    assert metrics.mse(observed, imputed) == pytest.approx(1225.40625)
    assert metrics.mse1obs(observed, imputed) == pytest.approx(28.125)
    assert metrics.mse1imp(observed, imputed) == pytest.approx(122512.5)
    assert metrics.match1(observed, imputed) == pytest.approx(0.5)
    assert metrics.catch1obs(observed, imputed) == pytest.approx(1.0)
    assert metrics.catch1imp(observed, imputed) == pytest.approx(0.5)
    assert metrics.aucobs1(observed, imputed) == pytest.approx(388 / 396)
    assert metrics.aucimp1(observed, imputed) == pytest.approx(202 / 396)
    # the challenge computes the AUCs with scikit-learn
    top_obs, top_imp = observed >= 198, imputed >= 198
    assert metrics.aucobs1(observed, imputed) == pytest.approx(roc_auc_score(top_obs, imputed))
    assert metrics.aucimp1(observed, imputed) == pytest.approx(roc_auc_score(top_imp, observed))
    scores = metrics.score(observed, imputed)
    assert scores["match1"] == pytest.approx(0.5) and scores["aucimp1"] == pytest.approx(202 / 396)
    # a constant imputation has no top 1%; as a score it ranks nothing (AUC one half)
    for func in (metrics.match1, metrics.catch1obs, metrics.catch1imp, metrics.aucimp1):
        assert np.isnan(func(observed, np.ones(200)))
    assert metrics.aucobs1(observed, np.ones(200)) == pytest.approx(0.5)


def test_peak_metrics_keep_ties():
    """Ties at the threshold stay in the top 1% (the challenge's ``y >= sorted(y)[-n]``).

    observed: 200 positions, 0 except three tied at 5 (positions 0, 1, 2);
    n = 2, so the top 1% is all three. imputed ranks position 0 first and
    position 3 second: top 1% imputed = {0, 3}. match1 = |{0, 1, 2} & {0, 3}| / 3 = 1/3.
    """
    observed = np.zeros(200)
    observed[:3] = 5.0
    imputed = np.linspace(0, 1, 200)[::-1].copy()  # position 0 highest
    imputed[3] = 0.999
    imputed[1] = imputed[2] = 0.0
    assert metrics.match1(observed, imputed) == pytest.approx(1 / 3)


def test_msevar_by_hand():
    """MSE weighted by the across-cell-type variance, normalised to sum to 1.

    Two other cell types 0, 0, 0, 0 and 0, 2, 0, 2: population variances
    0, 1, 0, 1. Squared errors 0, 0, 0, 16: msevar = (1 * 0 + 1 * 16) / 2 = 8.
    """
    observed = np.array([1.0, 2.0, 3.0, 4.0])
    imputed = np.array([1.0, 2.0, 3.0, 0.0])
    variance = np.var(np.array([[0.0, 0, 0, 0], [0, 2, 0, 2]]), axis=0)
    assert list(variance) == [0, 1, 0, 1]
    assert metrics.msevar(observed, imputed, variance) == pytest.approx(8.0)
    assert metrics.score(observed, imputed, weights=variance)["msevar"] == pytest.approx(8.0)


def test_challenge_metrics_on_real_tracks(pilot_store):
    """Real pilot tracks: the AUCs match scikit-learn, match1 and the catches the set counts."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    observed = pilot_store.read_track("E116", "H3K4me3")
    imputed = pilot_store.read_track("E003", "H3K4me3")  # another cell type as the "imputation"
    n = int(0.01 * observed.size)
    top_obs = observed >= np.sort(observed)[-n]
    top_imp = imputed >= np.sort(imputed)[-n]
    top5_imp = imputed >= np.sort(imputed)[-5 * n]
    assert top_obs.sum() >= n
    assert metrics.match1(observed, imputed) == pytest.approx(
        (top_obs & top_imp).sum() / top_obs.sum()
    )
    assert metrics.catch1obs(observed, imputed) == pytest.approx(
        (top_obs & top5_imp).sum() / top_obs.sum()
    )
    assert metrics.aucobs1(observed, imputed) == pytest.approx(roc_auc_score(top_obs, imputed))
    assert metrics.aucimp1(observed, imputed) == pytest.approx(roc_auc_score(top_imp, observed))
    assert metrics.gwspear(observed, imputed) == pytest.approx(
        spearmanr(observed, imputed).statistic
    )
    # two cell types' H3K4me3 agree far better than chance on their top 1%
    assert 0.3 < metrics.match1(observed, imputed) < 1
    assert metrics.aucobs1(observed, imputed) > 0.8


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
        if name in ("mseenh", "msevar"):
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
    assert result["gwspear"] == pytest.approx(metrics.spearman(observed, imputed))
    assert result["gwcorr"] == pytest.approx(metrics.pearson(observed, imputed))
    for name in ("match1", "aucobs1", "aucimp1", "mse1obs", "catch1obs"):
        assert result[name] == pytest.approx(getattr(metrics, name)(observed, imputed)), name
    assert result["catch1imp"] == pytest.approx(metrics.catch1imp(observed, imputed))
    assert result["recall"] == pytest.approx(
        metrics.peak_scores(observed, imputed, peaks=peaks)["recall"]
    )
    assert result["msevar"] == pytest.approx(metrics.mse_weighted(observed, imputed, weights))
    assert np.isnan(result["mseprom"])
    assert list(result) == list(metrics.METRICS)
    assert np.isnan(metrics.score(observed, imputed)["msevar"])  # no weights given


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
