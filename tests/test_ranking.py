"""The challenge's ranking rule (epitensor.evaluation.ranking) against the published outcome."""

import numpy as np
import pandas as pd
import pytest

from epitensor._utils import EpitensorError
from epitensor.evaluation.ranking import challenge_ranking, chromosome_bootstraps, track_ranks


def test_reproduces_every_published_rank_of_the_challenge(test_data):
    """All 25 round-2 entries of the ENCODE Imputation Challenge, from their published scores.

    51 blind tracks x 10 bootstraps x 9 measures (Genome Biology 2023, MOESM3); ties
    share a rank (Guacamole and Lavawizard both 3rd, Average and Song Lab 3 both 6th).
    """
    scores = pd.read_csv(test_data / "eic" / "moesm3_scores.csv.gz")
    published = pd.read_csv(test_data / "eic" / "published_ranks.tsv", sep="\t")
    ranking = challenge_ranking(
        scores, entry="team_id", track=("cell", "assay"), bootstrap="bootstrap_id"
    )
    assert len(ranking) == 25 and (ranking.n_bootstraps == 10).all()
    got = ranking["rank"].reindex(published.team_id).to_numpy()
    np.testing.assert_array_equal(got, published.published_rank.to_numpy())
    assert ranking.index[0] == 3393417  # Hongyang Li and Yuanfang Guan v1, the winner
    assert (ranking.score_lb <= ranking.score_mean).all()


def test_track_ranks_by_hand():
    """Two measures, three entries: b is best on both, a beats c on one and ties on none."""
    scores = pd.DataFrame({"method": ["a", "b", "c"], "celltype": "C1", "assay": "A1",
                           "bootstrap": 0, "mse": [2.0, 1.0, 3.0],
                           "gwcorr": [0.1, 0.9, 0.5]})  # fmt: skip
    ranked = track_ranks(scores, measures=["mse", "gwcorr"]).set_index("method")
    # sums of log(rank / 4): a log(2/4) + log(3/4), b 2 log(1/4), c log(3/4) + log(2/4): a ties c
    assert ranked["rank"].to_dict() == {"a": 2.5, "b": 1.0, "c": 2.5}
    assert ranked.loc["b", "score"] == pytest.approx(0.25)
    # a measure nobody has (msevar of an assay seen in one cell type) is left out
    scores["msevar"] = np.nan
    again = track_ranks(scores, measures=["mse", "gwcorr", "msevar"]).set_index("method")
    assert again["rank"].to_dict() == ranked["rank"].to_dict()
    # a track an entry did not submit counts 0.5, so skipping a track never pays
    two = pd.concat([scores, scores.assign(assay="A2").iloc[:2]], ignore_index=True)
    ranking = challenge_ranking(two, measures=["mse", "gwcorr"])
    assert ranking.loc["c", "score_mean"] == 0.5  # min(0.5, 2.5 / 4) on A1, 0.5 on A2
    assert ranking.loc["b", "score_mean"] == pytest.approx((1 / 4 + 1 / 3) / 2)
    assert list(ranking.index) == ["b", "a", "c"]
    with pytest.raises(EpitensorError, match="scored twice"):
        track_ranks(pd.concat([scores, scores]), measures=["mse"])
    with pytest.raises(EpitensorError, match="lack the columns"):
        track_ranks(scores, measures=["mseprom"])


def test_chromosome_bootstraps_leave_out_whole_chromosomes(pilot_store):
    layout, axes = pilot_store.layout, pilot_store.axes
    boots = chromosome_bootstraps(layout, axes, n=10, seed=0)
    assert len(boots) == 10
    n = layout.n_positions
    left_out = np.zeros(n, dtype=int)
    for label, keep in boots:
        assert keep.shape == (n,) and 0 < keep.sum() < n
        left_out += ~keep
        chroms = label.split(",")
        regions = layout.regions[layout.regions.chrom.isin(chroms)]
        assert int(regions.n_bins.sum()) == int((~keep).sum())
    placed = np.zeros(n, dtype=bool)
    for row in layout.regions.itertuples():
        placed[row.offset : row.offset + row.n_bins] = True
    assert (left_out[placed] == 1).all()  # a position of a chromosome: left out once
    assert (left_out[~placed] == 0).all()  # one in no region (none here but padding): kept
    assert [k.sum() for _, k in boots] == [k.sum() for _, k in chromosome_bootstraps(layout, axes)]
    with pytest.raises(EpitensorError, match="positive integer"):
        chromosome_bootstraps(layout, axes, n=0)
