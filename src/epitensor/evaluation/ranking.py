"""The ENCODE Imputation Challenge's ranking rule, and bootstraps over chromosomes to feed it.

The challenge (Schreiber et al., Genome Biology 2023; its ``rank.py`` in
ENCODE-DCC/imputation_challenge) ranked entries in three steps:

1. for every blind track and bootstrap, rank the entries on each of the nine
   measures (:data:`~epitensor.evaluation.metrics.CHALLENGE_METRICS`; rank 1 the
   best, ties averaged), add ``log(rank / (n + 1))`` over the measures (``n``
   entries scored on the track) and rank that sum again;
2. an entry's score for a bootstrap is the mean over tracks of
   ``min(0.5, rank / (n + 1))``, 0.5 for a track it did not submit; the
   entries are ranked on it per bootstrap (lower is better, ties averaged);
3. an entry's final rank is its second-best rank over the bootstraps.

:func:`challenge_ranking` implements the rule on a wide table of scores; a
test reproduces all 25 published ranks of the challenge's round 2 from its
published per-track scores (``tests/data/eic``). :func:`chromosome_bootstraps`
makes the bootstraps of a store: the challenge's bootstraps each left out part
of the genome; here each leaves out one group of chromosomes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from epitensor._utils import EpitensorError
from epitensor.evaluation.metrics import CHALLENGE_METRICS, LOWER_IS_BETTER
from epitensor.evaluation.options import DEFAULT_BOOTSTRAPS

__all__ = [
    "DEFAULT_BOOTSTRAPS",
    "challenge_ranking",
    "chromosome_bootstraps",
    "track_ranks",
]


def _combined(block: pd.DataFrame, measures: Sequence[str], lower: Collection[str]) -> np.ndarray:
    """Step 1 for one track and bootstrap: the rank of the sum of log(rank / (n + 1))."""
    n = len(block)
    total = np.zeros(n)
    for name in measures:
        values = block[name].to_numpy(dtype=float)
        if np.isnan(values).all():  # a measure no entry has (msevar of a lone assay)
            continue
        ranks = pd.Series(values if name in lower else -values).rank(
            method="average", na_option="bottom"
        )
        total += np.log(ranks.to_numpy() / (n + 1))
    return pd.Series(total).rank(method="average").to_numpy()


def track_ranks(
    scores: pd.DataFrame,
    entry: str = "method",
    track: Sequence[str] = ("celltype", "assay"),
    bootstrap: str = "bootstrap",
    measures: Sequence[str] = CHALLENGE_METRICS,
    lower_is_better: Collection[str] = LOWER_IS_BETTER,
) -> pd.DataFrame:
    """Step 1 of the challenge's rule: each entry's combined rank per track and bootstrap.

    Parameters
    ----------
    scores : pandas.DataFrame
        Wide: one row per entry, track and bootstrap; the columns ``entry``,
        ``track``, ``bootstrap`` and one per measure.
    entry : str
        Column naming the entry (method, team). Default ``"method"``.
    track : sequence of str
        Columns naming the track. Default ``("celltype", "assay")``.
    bootstrap : str
        Column naming the bootstrap. Default ``"bootstrap"``.
    measures : sequence of str
        Measures added up. Default the challenge's nine.
    lower_is_better : collection of str
        Measures where lower is better (the others: higher). Default the MSEs.

    Returns
    -------
    pandas.DataFrame
        ``track..., bootstrap, entry, rank, n, score``: the combined rank (1
        the best), the number of entries on the track and
        ``min(0.5, rank / (n + 1))``.
    """
    track = list(track)
    missing = [c for c in [entry, *track, bootstrap, *measures] if c not in scores.columns]
    if missing:
        raise EpitensorError(f"the scores lack the columns {missing}; they have {list(scores)}")
    repeated = scores.duplicated([*track, bootstrap, entry])
    if repeated.any():
        first = scores[repeated].iloc[0]
        raise EpitensorError(
            f"{int(repeated.sum())} entries are scored twice on one track and bootstrap "
            f"(first {first[entry]} on {tuple(first[track])}, bootstrap {first[bootstrap]})"
        )
    parts = []
    for _, block in scores.groupby([*track, bootstrap], sort=False):
        ranks = _combined(block, measures, lower_is_better)
        n = len(block)
        parts.append(
            block[[*track, bootstrap, entry]].assign(
                rank=ranks, n=n, score=np.minimum(0.5, ranks / (n + 1))
            )
        )
    return pd.concat(parts, ignore_index=True)


def challenge_ranking(
    scores: pd.DataFrame,
    entry: str = "method",
    track: Sequence[str] = ("celltype", "assay"),
    bootstrap: str = "bootstrap",
    measures: Sequence[str] = CHALLENGE_METRICS,
    lower_is_better: Collection[str] = LOWER_IS_BETTER,
) -> pd.DataFrame:
    """Rank entries by the ENCODE Imputation Challenge's rule (module docstring).

    Parameters
    ----------
    scores : pandas.DataFrame
        Wide scores, as :func:`track_ranks` takes them.
    entry, track, bootstrap, measures, lower_is_better
        As in :func:`track_ranks`.

    Returns
    -------
    pandas.DataFrame
        Indexed by entry, best first: ``rank`` (the second-best rank over the
        bootstraps; the only one when there is one bootstrap), ``score_mean``,
        ``score_lb`` and ``score_ub`` (the mean, lowest and highest of the
        bootstrap scores: mean over tracks of ``min(0.5, rank / (n + 1))``,
        lower is better) and ``n_bootstraps``.

    Examples
    --------
    >>> import pandas as pd
    >>> from epitensor.evaluation.ranking import challenge_ranking
    >>> scores = pd.DataFrame({"method": ["a", "b"], "celltype": "C1", "assay": "A1",
    ...                        "bootstrap": 0, "mse": [1.0, 2.0], "gwcorr": [0.5, 0.4]})
    >>> challenge_ranking(scores, measures=["mse", "gwcorr"])["rank"].to_dict()
    {'a': 1.0, 'b': 2.0}
    """
    ranked = track_ranks(scores, entry, track, bootstrap, measures, lower_is_better)
    # a track an entry did not submit scores 0.5 (the worst a submitted track can score)
    per_track = ranked.pivot_table(
        index=[bootstrap, *track], columns=entry, values="score", aggfunc="first", sort=False
    ).fillna(0.5)
    per_bootstrap = per_track.groupby(level=bootstrap, sort=False).mean()
    ranks = per_bootstrap.rank(axis=1, method="average")
    second = ranks.apply(lambda col: np.sort(col.to_numpy())[min(1, len(col) - 1)])
    table = pd.DataFrame(
        {
            "rank": second,
            "score_mean": per_bootstrap.mean(),
            "score_lb": per_bootstrap.min(),
            "score_ub": per_bootstrap.max(),
            "n_bootstraps": per_bootstrap.count(),
        }
    )
    table.index.name = entry
    return table.sort_values(["rank", "score_mean"], kind="stable")


def chromosome_bootstraps(
    layout, axes: Sequence[str], n: int = DEFAULT_BOOTSTRAPS, seed: int = 0
) -> list[tuple[str, np.ndarray]]:
    """Bootstraps that each leave out one group of chromosomes, as masks over the axes.

    The layout's chromosomes are shuffled with ``numpy.random.default_rng(seed)``
    and dealt into ``min(n, n_chromosomes)`` groups; bootstrap ``k`` keeps every
    position but those of group ``k``. With a single chromosome there is one
    bootstrap: every position.

    Parameters
    ----------
    layout : Layout
        The store's layout (its regions name each position's chromosome).
    axes : sequence of str
        The axes scored, in the order their positions are concatenated.
    n : int
        Bootstraps wanted. Default :data:`DEFAULT_BOOTSTRAPS` (10).
    seed : int
        Seed of the grouping. Default 0.

    Returns
    -------
    list of (str, numpy.ndarray)
        Per bootstrap, a label naming the chromosomes left out and a boolean
        mask of shape ``(n_positions,)`` (every axis concatenated), True where kept.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise EpitensorError(f"bootstraps must be a positive integer; got n={n!r}")
    regions = layout.regions
    chroms = list(dict.fromkeys(regions[regions.axis.isin(list(axes))].chrom))
    codes = []
    for axis in axes:
        code = np.full(int(layout.axis_lengths[axis]), -1, dtype=np.int32)
        for row in regions[regions.axis == axis].itertuples(index=False):
            code[int(row.offset) : int(row.offset) + int(row.n_bins)] = chroms.index(row.chrom)
        codes.append(code)
    code = np.concatenate(codes)
    if len(chroms) < 2:
        return [("none", np.ones(code.size, dtype=bool))]
    order = np.random.default_rng(seed).permutation(len(chroms))
    k = min(n, len(chroms))
    groups = [sorted(int(i) for i in order[g::k]) for g in range(k)]
    return [(",".join(chroms[i] for i in group), ~np.isin(code, group)) for group in groups]
