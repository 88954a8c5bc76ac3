"""The held-out-track protocols: score imputations, baselines side by side, cross-validation.

A *predictor* is anything with ``predict(celltype, assay, axis=None, start=0,
end=None) -> numpy.ndarray`` (float32, arcsinh, one value per axis position):
the fitted :class:`epitensor.estimators.avocado.Avocado` model or any baseline of
:mod:`epitensor.estimators.baselines`. :func:`evaluate` scores predictors on observed
tracks of a store; :func:`run_benchmark` trains the model and every baseline on
the training tracks of a split, imputes the held-out tracks and writes the
tables and figures; :func:`run_cv` holds every observed track out once over K
random folds, retraining every method per fold and training seed, and adds
paired Wilcoxon tests across tracks and the spread over training seeds.

Every metric masks the blacklist out; promoters, gene bodies and enhancers come
from :class:`epitensor.genome.annotations.Annotations` (default: the bundled hg19
annotations of the pilot regions). A track spanning several axes (one per
chromosome) is scored over all of them concatenated.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import EpitensorError, atomic_directory, progress, warn
from epitensor.evaluation import metrics
from epitensor.evaluation.options import (
    AUTO_ENSEMBLE,
    DEFAULT_CV_BASELINES,
    BenchmarkOptions,
    CVOptions,
)
from epitensor.evaluation.relationships import pairwise_table, write_pairwise
from epitensor.genome.annotations import Annotations, peak_mask
from epitensor.store.compendium import Store
from epitensor.store.identity import check_coordinates, check_data
from epitensor.store.registry import open_store
from epitensor.viz.tables import markdown_table

__all__ = [
    "STANDARD_SPLIT",
    "BenchmarkOptions",
    "BenchmarkResult",
    "CVOptions",
    "best_methods",
    "evaluate",
    "evaluate_model",
    "predict_track",
    "rank_methods",
    "ranking_markdown",
    "read_split",
    "resolve_split",
    "run_benchmark",
    "score_default",
    "summary_by_assay",
    "run_cv",
    "cv_folds",
    "CVResult",
    "Scorer",
    "interval_counts",
    "write_cv",
    "stratified_evaluation",
    "summarise",
]

Track = tuple[str, str]

STANDARD_SPLIT: list[Track] = [
    ("E003", "H3K4me3"),
    ("E017", "H3K36me3"),
    ("E065", "H3K4me1"),
    ("E116", "H3K27me3"),
    ("E117", "H3K9me3"),
]
"""The standard held-out tracks of the bundled 5 x 5 sample (DESIGN.md)."""

COLUMNS = ["celltype", "assay", "method", "metric", "value"]


# splits ---------------------------------------------------------------------------


def read_split(path: str | os.PathLike) -> list[Track]:
    """Read held-out tracks from a TSV of ``celltype`` and ``assay`` (header optional).

    Parameters
    ----------
    path : str or path-like
        Tab-separated file, one held-out track per line.

    Returns
    -------
    list of (str, str)
    """
    try:
        table = pd.read_csv(path, sep="\t", header=None, dtype=str, comment="#")
    except FileNotFoundError:
        raise EpitensorError(f"split file not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise EpitensorError(f"cannot read split file {path}: {exc}") from None
    if table.shape[1] < 2:
        raise EpitensorError(
            f"{path}: a split file needs two tab-separated columns: celltype, assay"
        )
    header = tuple(table.iloc[0, :2].fillna("").str.lower()) == ("celltype", "assay")
    if header:
        table = table.iloc[1:]
    tracks = []
    for number, (celltype, assay) in enumerate(zip(table[0], table[1]), start=1 + header):
        # a row with one column read its assay as NaN: an AttributeError on .strip (T10)
        if not all(isinstance(v, str) and v.strip() for v in (celltype, assay)):
            raise EpitensorError(
                f"{path}: row {number} ({celltype if isinstance(celltype, str) else ''!r}) "
                "lacks a cell type or an assay; give both, separated by a tab"
            )
        tracks.append((celltype.strip(), assay.strip()))
    return tracks


def resolve_split(
    split: str | os.PathLike | Sequence[Track], store: Store
) -> tuple[list[Track], list[Track]]:
    """Held-out and training tracks of a split.

    Parameters
    ----------
    split : str, path-like or sequence of (str, str)
        ``"standard"`` (:data:`STANDARD_SPLIT`), the path of a split TSV, or
        the held-out tracks themselves.
    store : Store
        The store; every held-out track must be observed in it.

    Returns
    -------
    holdout, train : list of (str, str)
        Held-out tracks, and every other observed track.
    """
    if isinstance(split, str | os.PathLike):
        holdout = STANDARD_SPLIT if str(split) == "standard" else read_split(split)
    else:
        holdout = [(str(c), str(a)) for c, a in split]
    if not holdout:
        raise EpitensorError("the split holds no track out; list at least one celltype, assay")
    missing = [t for t in holdout if not store.has_track(*t)]
    if missing:
        raise EpitensorError(
            f"held-out tracks {missing} are not observed in store {store.url}; "
            f"a split can only hold out observed tracks"
        )
    train = [t for t in store.track_names() if t not in set(holdout)]
    if not train:
        raise EpitensorError(f"the split holds out every track of {store.url}; keep some to train")
    return list(dict.fromkeys(holdout)), train


# evaluation -----------------------------------------------------------------------


def method_name(predictor) -> str:
    """Name of a predictor in tables: its ``name`` attribute, else ``"avocado"`` or the class."""
    name = getattr(predictor, "name", None)
    if isinstance(name, str):
        return name
    cls = type(predictor).__name__
    return "avocado" if cls == "Avocado" else cls.lower()


def predict_track(predictor, store: Store, celltype: str, assay: str) -> np.ndarray:
    """A predictor's imputation of one track over every axis of the store, concatenated.

    What the scores compare with the observed track; files of an imputation
    are :func:`epitensor.workflows.impute.impute`'s job.

    Parameters
    ----------
    predictor : object
        Has ``predict(celltype, assay, axis=...)``: the model, a baseline or
        an :class:`~epitensor.estimators.ensemble.Ensemble`.
    store : Store
        The store whose axes are predicted, in order.
    celltype, assay : str
        The track.

    Returns
    -------
    numpy.ndarray, shape=(n_positions,), float32, arcsinh
    """
    parts = []
    for axis in store.axes:
        values = np.asarray(predictor.predict(celltype, assay, axis=axis), dtype=np.float32)
        if values.shape != (store.axis_length(axis),):
            raise EpitensorError(
                f"{method_name(predictor)} predicted {values.shape} values for ({celltype}, "
                f"{assay}) on axis {axis!r}, expected {store.axis_length(axis)}"
            )
        parts.append(values)
    return np.concatenate(parts)


def _observed(store: Store, celltype: str, assay: str) -> np.ndarray:
    return np.concatenate([store.read_track(celltype, assay, axis) for axis in store.axes])


def interval_counts(layout, intervals: pd.DataFrame | None, axis: str) -> np.ndarray | None:
    """How many intervals overlap each bin of one layout axis (a bin in two genes: 2).

    Parameters
    ----------
    layout : Layout
        The store's layout.
    intervals : pandas.DataFrame or None
        Columns ``chrom, start, end`` in bp, 0-based half-open; None gives None.
    axis : str
        Axis to map onto.

    Returns
    -------
    numpy.ndarray, shape=(n_positions,), int32, or None
    """
    if intervals is None:
        return None
    return layout.count_intervals(intervals, axis)


def _masks(store: Store, annotations: Annotations) -> tuple[np.ndarray | None, dict]:
    """Blacklist-free positions and region window counts over all axes, concatenated."""
    keep = [annotations.keep(store.layout, axis) for axis in store.axes]
    keep_all = None if any(k is None for k in keep) else np.concatenate(keep)
    regions = {}
    for name in ("promoters", "genes", "enhancers"):
        parts = [interval_counts(store.layout, getattr(annotations, name), a) for a in store.axes]
        regions[name] = None if any(p is None for p in parts) else np.concatenate(parts)
    return keep_all, regions


class Scorer:
    """Scores imputations of a store's observed tracks, caching what every method shares.

    Keeps the blacklist mask, the region window counts, the observed tracks
    and each assay's variance across cell types (for ``msevar``) once for all
    the methods, folds and seeds scored with it.

    Parameters
    ----------
    store : Store
    annotations : Annotations
    exclude : sequence of (str, str)
        Tracks left out of the variance that weights ``msevar``. Default none:
        as the ENCODE Imputation Challenge, every observed track of the assay,
        the scored one included (the variance only weights the score; it is
        no input of any method).
    """

    def __init__(self, store: Store, annotations: Annotations, exclude: Sequence[Track] = ()):
        self.store = store
        self.keep, self.regions = _masks(store, annotations)
        self.exclude = {(str(c), str(a)) for c, a in exclude}
        self._observed: dict[Track, np.ndarray] = {}
        self._variance: dict[str, np.ndarray | None] = {}

    def observed(self, track: Track) -> np.ndarray:
        """The observed track over all axes, ``(n_positions,)``, float32, arcsinh."""
        if track not in self._observed:
            self._observed[track] = _observed(self.store, *track)
        return self._observed[track]

    def variance(self, assay: str) -> np.ndarray | None:
        """Population variance of the assay's observed tracks across cell types (None if < 2)."""
        if assay not in self._variance:
            same = [t for t in self.store.track_names() if t[1] == assay and t not in self.exclude]
            self._variance[assay] = (
                None
                if len(same) < 2
                else np.var(np.stack([self.observed(t) for t in same]), axis=0)
            )
        return self._variance[assay]

    def score(
        self, track: Track, imputed: np.ndarray, peaks=None, subset: np.ndarray | None = None
    ) -> dict[str, float]:
        """Every metric of :data:`epitensor.evaluation.metrics.METRICS` for one imputed track.

        ``subset`` (boolean, ``(n_positions,)``, optional) scores only those
        positions (a bootstrap of :func:`epitensor.evaluation.ranking.chromosome_bootstraps`),
        the blacklist still masked out. Default None: every position.
        """
        mask = self.keep
        if subset is not None:
            mask = subset if mask is None else mask & subset
        return metrics.score(
            self.observed(track),
            imputed,
            mask=mask,
            regions=self.regions,
            peaks=peaks,
            weights=self.variance(track[1]),
        )


def _peaks(peaks, store: Store, track: Track) -> np.ndarray | None:
    if peaks is None or track not in peaks:
        return None
    value = peaks[track]
    if isinstance(value, str | os.PathLike):
        return np.concatenate([peak_mask(value, store.layout, axis) for axis in store.axes])
    return np.asarray(value, dtype=bool)


def evaluate(
    predictor,
    store: Store | str,
    tracks: Sequence[Track],
    annotations: Annotations | None = None,
    peaks: Mapping[Track, str | os.PathLike | np.ndarray] | None = None,
    method: str | None = None,
    exclude: Sequence[Track] = (),
    predictions: dict | None = None,
    verbose: bool = True,
    scorer: Scorer | None = None,
) -> pd.DataFrame:
    """Score a predictor's imputation of observed tracks.

    To score what ``epitensor impute`` writes by default, pass
    :func:`epitensor.workflows.impute.default_imputer` ``(model)`` (or use
    :func:`evaluate_model`, which also scores the model alone and the parts).

    Parameters
    ----------
    predictor : object
        Has ``predict(celltype, assay, axis=...)`` (the model or a baseline);
        or None when ``predictions`` holds every track.
    store : Store or str
        The store with the observed tracks (``"roadmap-pilot"`` for the sample).
    tracks : sequence of (str, str)
        Observed tracks to score.
    annotations : Annotations, optional
        Promoters, genes, enhancers and blacklist. Default None: the bundled
        pilot annotations (:meth:`Annotations.from_directory`).
    peaks : mapping, optional
        Per track, a narrowPeak path or a boolean mask of shape
        ``(n_positions,)``: the true peaks for precision / recall. Default
        None: the observed signal thresholded at -log10 p = 2.
    method : str, optional
        Name in the ``method`` column. Default None: :func:`method_name`.
    exclude : sequence of (str, str)
        Tracks left out of the across-cell-type variance that weights
        ``msevar``. Default none: every observed track of the assay, as the
        challenge.
    predictions : dict, optional
        Filled with ``{(celltype, assay): imputed array}``; tracks already in
        it are not predicted again. Default None.
    verbose : bool
        Progress bar. Default True.
    scorer : Scorer, optional
        A :class:`Scorer` of this store to reuse (its annotations and
        ``exclude`` then apply). Default None: one is built.

    Returns
    -------
    pandas.DataFrame
        Long format: ``celltype, assay, method, metric, value``, the metrics of
        :data:`epitensor.evaluation.metrics.METRICS` (``msevar`` NaN where the assay is
        observed in fewer than two cell types).

    Examples
    --------
    >>> import epitensor as et
    >>> model = et.Avocado.load("model")  # doctest: +SKIP
    >>> table = et.evaluate(model, "roadmap-pilot", [("E003", "H3K4me3")])  # doctest: +SKIP
    """
    store = open_store(store)
    tracks = [(str(c), str(a)) for c, a in tracks]
    if not tracks:
        raise EpitensorError("no track to evaluate; give at least one CELL:ASSAY")
    for celltype, assay in tracks:
        store.track_index(celltype, assay)
    layout = getattr(predictor, "layout_", None)  # a model: its axes must lie where the store's do
    if layout is not None:
        check_coordinates(layout, store, f"the model ({method_name(predictor)})")
    if scorer is None:
        annotations = Annotations.from_directory() if annotations is None else annotations
        scorer = Scorer(store, annotations, exclude)
    method = method or method_name(predictor)
    predictions = {} if predictions is None else predictions
    rows = []
    for track in progress(tracks, desc=f"evaluating {method}", verbose=verbose):
        if track not in predictions:
            if predictor is None:
                raise EpitensorError(f"no prediction of {track} given and no predictor")
            predictions[track] = predict_track(predictor, store, *track)
        scores = scorer.score(track, predictions[track], _peaks(peaks, store, track))
        rows += [(*track, method, name, value) for name, value in scores.items()]
    return pd.DataFrame(rows, columns=COLUMNS)


def evaluate_model(
    model: str | os.PathLike,
    store: str | os.PathLike,
    tracks: Sequence[Track],
    out: str | os.PathLike,
    annotations: str | os.PathLike | None = None,
    verbose: bool = True,
    overwrite: bool = False,
    allow_changed: bool = False,
    trees_store=AUTO_ENSEMBLE,
) -> pd.DataFrame:
    """Load a saved model, score what ``epitensor impute`` writes for observed tracks, write the CSV.

    The method :data:`~epitensor.estimators.ensemble.DEFAULT_METHOD`
    (``epitensor``) is the imputation ``epitensor impute`` writes by default
    (:func:`epitensor.workflows.impute.default_imputer`: the ensemble of the
    model, ChromImpute-style trees and average activity where the model's
    training compendium is at hand, else the model alone): its numbers are
    those of the files. Beside it: the model alone (``avocado``) and, for an
    ensemble, its parts (``chromimpute_gbt``, ``average_activity``).

    Parameters
    ----------
    model : str or path-like
        Model directory written by ``Avocado.save``.
    store : str or path-like
        Store path, or ``"roadmap-pilot"``.
    tracks : sequence of (str, str)
        Observed tracks to score.
    out : str or path-like
        CSV to write (columns ``celltype, assay, method, metric, value``).
    annotations : str or path-like, optional
        Annotation folder for :meth:`Annotations.from_directory`. Default
        None: the bundled pilot annotations.
    verbose : bool
        Progress bars. Default True.
    overwrite : bool
        Replace an existing ``out``. Default False: refuse it (before any work).
    allow_changed : bool
        Score on a store whose copies of the model's tracks hold other values
        than the data the model was made from, with a warning. Default False:
        refuse it (:func:`epitensor.store.identity.check_data`); a store on
        other coordinates is refused either way.
    trees_store : Store, str, list of them, "auto" or None
        Where the ensemble's trees and average are fitted, as ``epitensor
        impute --trees``. Default ``"auto"``: as ``epitensor impute`` does by
        default. None: the model alone, as ``--model-only`` (``epitensor`` is
        then ``avocado``).

    Returns
    -------
    pandas.DataFrame
        The table written: ``epitensor`` rows first, then ``avocado``, then the parts.
    """
    from epitensor._utils import atomic_write_bytes
    from epitensor.estimators.avocado import Avocado
    from epitensor.workflows.impute import default_imputer

    if Path(out).exists() and not overwrite:
        raise EpitensorError(f"{out} already exists; choose another --out or pass --overwrite")
    fitted = Avocado.load(model)
    store = open_store(store)
    tracks = [(str(c), str(a)) for c, a in tracks]
    check_coordinates(fitted.layout_, store, f"model {model}")
    check_data(fitted.training_data_, store, f"model {model}", tracks=tracks,
               allow_changed=allow_changed)  # fmt: skip
    imputer = default_imputer(fitted, trees_store, axes=list(store.axes),
                              allow_changed=allow_changed, verbose=verbose)  # fmt: skip
    table = score_default(imputer, fitted, store, tracks,
                          Annotations.from_directory(annotations), verbose)  # fmt: skip
    atomic_write_bytes(out, table.to_csv(index=False).encode())
    return table


def score_default(
    imputer,
    model,
    store: Store,
    tracks: Sequence[Track],
    annotations: Annotations,
    verbose: bool = True,
) -> pd.DataFrame:
    """Score the default imputation, the model alone and the ensemble's parts on observed tracks.

    Parameters
    ----------
    imputer : Ensemble or Avocado
        From :func:`epitensor.workflows.impute.default_imputer`.
    model : Avocado
        The model (the ensemble's own, or ``imputer`` itself).
    store : Store
    tracks : sequence of (str, str)
    annotations : Annotations
    verbose : bool
        Progress bars. Default True.

    Returns
    -------
    pandas.DataFrame
        Long, as :func:`evaluate`: the methods
        :data:`~epitensor.estimators.ensemble.DEFAULT_METHOD`, ``avocado`` and,
        when ``imputer`` is an ensemble, ``chromimpute_gbt`` and ``average_activity``.
    """
    from epitensor.estimators.ensemble import DEFAULT_METHOD

    tracks = [(str(c), str(a)) for c, a in tracks]
    scorer = Scorer(store, annotations)
    known: dict[str, dict] = {"avocado": {}}
    tables = [evaluate(model, store, tracks, method="avocado", predictions=known["avocado"],
                       verbose=verbose, scorer=scorer)]  # fmt: skip
    if imputer is model:  # impute writes the model alone: so is the default
        default = dict(known["avocado"])
    else:
        for name, part in (
            ("chromimpute_gbt", imputer.trees),
            ("average_activity", imputer.average),
        ):
            known[name] = {}
            tables.append(evaluate(part, store, tracks, method=name, predictions=known[name],
                                   verbose=verbose, scorer=scorer))  # fmt: skip
        default = {}
        for track in tracks:
            if list(imputer.store.axes) == list(store.axes):  # from the parts, as impute combines
                parts = [
                    known[n][track] for n in ("avocado", "chromimpute_gbt", "average_activity")
                ]
                default[track] = imputer.combine_imputations(track, *parts)
            else:
                default[track] = predict_track(imputer, store, *track)
    first = evaluate(None, store, tracks, method=DEFAULT_METHOD, predictions=default,
                     verbose=False, scorer=scorer)  # fmt: skip
    return pd.concat([first, *tables], ignore_index=True)


# summaries ------------------------------------------------------------------------


def _metric_order(table: pd.DataFrame) -> list[str]:
    present = set(table.metric)
    order = [m for m in metrics.METRICS if m in present]
    return order + sorted(present - set(order))


def _method_order(table: pd.DataFrame) -> list[str]:
    """Methods in table order, the default imputation first."""
    from epitensor.estimators.ensemble import DEFAULT_METHOD

    methods = list(dict.fromkeys(table.method))
    return sorted(methods, key=lambda m: m != DEFAULT_METHOD)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric over tracks: rows metrics (report order), columns methods.

    The default imputation (:data:`~epitensor.estimators.ensemble.DEFAULT_METHOD`)
    comes first, then the methods in the order of ``table``.
    """
    wide = table.pivot_table(index="metric", columns="method", values="value", aggfunc="mean")
    return wide.reindex(index=_metric_order(table), columns=_method_order(table))


def summary_by_assay(table: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric over each assay's tracks: rows (assay, metric), columns methods.

    The challenge reported its results per assay too: the winners' margin over
    average activity came from some marks and not others.

    Parameters
    ----------
    table : pandas.DataFrame
        Long: ``celltype, assay, method, metric, value`` (one row per track,
        or per fold and track: they are averaged).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``assay`` (sorted) and ``metric`` (report order), with
        ``n_tracks`` and one column per method (:func:`summarise`'s order).
    """
    wide = table.pivot_table(
        index=["assay", "metric"], columns="method", values="value", aggfunc="mean"
    )
    order = _metric_order(table)
    assays = sorted(set(table.assay))
    index = pd.MultiIndex.from_product([assays, order], names=["assay", "metric"])
    wide = wide.reindex(index=index, columns=_method_order(table))
    counts = table.groupby("assay")[["celltype"]].nunique().celltype
    wide.insert(0, "n_tracks", counts.reindex(wide.index.get_level_values("assay")).to_numpy())
    return wide


def _by_assay_markdown(by_assay: pd.DataFrame, digits: int = 3) -> str:
    """The per-assay table as Markdown, the best method per row in bold."""
    frame = by_assay.copy()
    frame.index = [f"{a} {m}" for a, m in frame.index]
    frame.index.name = "assay metric"
    methods = [c for c in frame.columns if c != "n_tracks"]
    bold = {}
    for (assay, name), row in by_assay[methods].iterrows():
        row = row.dropna()
        if not row.empty:
            best = row.idxmin() if name in metrics.LOWER_IS_BETTER else row.idxmax()
            bold[f"{assay} {name}"] = best
    frame["best"] = pd.Series(bold)
    return markdown_table(frame, digits, bold=bold)


def rank_methods(
    scorer: Scorer,
    predictions: Mapping[str, Mapping[Track, np.ndarray]],
    n_bootstraps: int,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank methods by the ENCODE Imputation Challenge's rule, over bootstraps of chromosomes.

    Every method's imputation of every track is scored on each bootstrap of
    :func:`epitensor.evaluation.ranking.chromosome_bootstraps` (every position
    but one group of chromosomes), then ranked by
    :func:`epitensor.evaluation.ranking.challenge_ranking`.

    Parameters
    ----------
    scorer : Scorer
        The store's scorer.
    predictions : mapping
        ``{method: {(celltype, assay): imputed array, shape=(n_positions,)}}``.
    n_bootstraps : int
        Bootstraps wanted (fewer when the store has fewer chromosomes).
    seed : int
        Seed of the chromosome grouping. Default 0.

    Returns
    -------
    ranking : pandas.DataFrame
        :func:`~epitensor.evaluation.ranking.challenge_ranking`'s table, by method.
    by_track : pandas.DataFrame
        Each method's combined rank on each track (mean over bootstraps; 1
        the best): rows ``celltype, assay``, columns methods.
    """
    from epitensor.evaluation.ranking import challenge_ranking, chromosome_bootstraps, track_ranks

    store = scorer.store
    boots = chromosome_bootstraps(store.layout, list(store.axes), n_bootstraps, seed)
    rows = []
    for method, by_track in predictions.items():
        for track, imputed in by_track.items():
            for index, (_, keep) in enumerate(boots):
                scores = scorer.score(track, imputed, subset=keep)
                rows.append({"method": method, "celltype": track[0], "assay": track[1],
                             "bootstrap": index, **scores})  # fmt: skip
    wide = pd.DataFrame(rows)
    ranking = challenge_ranking(wide)
    ranking.attrs["left_out"] = [label for label, _ in boots]  # chromosomes, per bootstrap
    per_track = track_ranks(wide).groupby(["celltype", "assay", "method"], sort=False)["rank"]
    by_track = per_track.mean().unstack("method")
    return ranking, by_track[[m for m in ranking.index if m in by_track.columns]]


def best_methods(summary: pd.DataFrame) -> pd.Series:
    """The best method on each metric of a :func:`summarise` table (lowest MSE, else highest)."""
    best = {}
    for name, row in summary.iterrows():
        row = row.dropna()
        if row.empty:
            best[name] = ""
        else:
            best[name] = row.idxmin() if name in metrics.LOWER_IS_BETTER else row.idxmax()
    return pd.Series(best, name="best")


def stratified_evaluation(
    store: Store,
    predictions: Mapping[str, Mapping[Track, np.ndarray]],
    annotations: Annotations | None = None,
) -> pd.DataFrame:
    """MSE, precision and recall by how many cell types show a peak (the paper's Fig. 2).

    For each held-out track, every position is put in the group of the number
    of cell types (observed in the store, the held-out one included) whose
    signal of that assay is at least arcsinh(2). Positions are pooled over the
    held-out tracks within a group; the blacklist is masked out.

    Parameters
    ----------
    store : Store
    predictions : mapping
        ``{method: {(celltype, assay): imputed array, shape=(n_positions,)}}``.
    annotations : Annotations, optional
        For the blacklist. Default None: the bundled pilot annotations.

    Returns
    -------
    pandas.DataFrame
        Columns ``method, n_celltypes_with_peak, n_positions, mse, precision, recall``.
    """
    annotations = Annotations.from_directory() if annotations is None else annotations
    keep, _ = _masks(store, annotations)
    tracks = list(dict.fromkeys(t for per in predictions.values() for t in per))
    groups, observed = {}, {}
    for celltype, assay in tracks:
        same = [(c, a) for c, a in store.track_names() if a == assay]
        counts = sum(
            (_observed(store, c, a) >= metrics.PEAK_THRESHOLD).astype(np.int8) for c, a in same
        )
        groups[(celltype, assay)] = counts
        observed[(celltype, assay)] = _observed(store, celltype, assay)
    rows = []
    for method, per_track in predictions.items():
        pooled_groups = np.concatenate([_kept(groups[t], keep) for t in per_track])
        pooled_obs = np.concatenate([_kept(observed[t], keep) for t in per_track])
        pooled_imp = np.concatenate([_kept(np.asarray(per_track[t]), keep) for t in per_track])
        for group in np.unique(pooled_groups):
            chosen = pooled_groups == group
            peaks = metrics.peak_scores(pooled_obs, pooled_imp, mask=chosen)
            rows.append(
                {
                    "method": method,
                    "n_celltypes_with_peak": int(group),
                    "n_positions": int(chosen.sum()),
                    "mse": metrics.mse(pooled_obs, pooled_imp, chosen),
                    "precision": peaks["precision"],
                    "recall": peaks["recall"],
                }
            )
    return pd.DataFrame(rows)


def _kept(values: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    return values if keep is None else values[keep]


# figures --------------------------------------------------------------------------


def plot_metrics(path: str | os.PathLike, table: pd.DataFrame, title: str) -> None:
    """Bars of each metric's mean by method, with the per-track values as dots.

    Parameters
    ----------
    path : str or path-like
        PNG to write.
    table : pandas.DataFrame
        Long table from :func:`evaluate`.
    title : str
        Figure title.
    """
    from matplotlib import colormaps

    from epitensor.viz.plots import save_figure, subplots

    summary = summarise(table)
    methods = list(summary.columns)
    n = len(summary)
    n_cols = 5
    n_rows = -(-n // n_cols)
    fig, axes = subplots(n_rows, n_cols, figsize=(3.0 * n_cols, 2.6 * n_rows), squeeze=False)
    colours = [colormaps["tab10"](i % 10) for i in range(len(methods))]
    x = np.arange(len(methods))
    for ax, name in zip(axes.ravel(), summary.index):
        ax.bar(x, summary.loc[name].to_numpy(dtype=float), color=colours)
        per_track = table[table.metric == name]
        for i, method in enumerate(methods):
            values = per_track[per_track.method == method].value.to_numpy(dtype=float)
            ax.plot(np.full(len(values), i), values, "k.", ms=3)
        arrow = "lower is better" if name in metrics.LOWER_IS_BETTER else "higher is better"
        ax.set_title(f"{name} ({arrow})", fontsize=9)
        ax.set_xticks(x, methods, rotation=45, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_stratified(path: str | os.PathLike, stratified: pd.DataFrame, title: str) -> None:
    """MSE, precision and recall by the number of cell types with a peak, one line per method."""
    from epitensor.viz.plots import save_figure, subplots

    fig, axes = subplots(1, 3, figsize=(13, 3.8))
    for ax, name in zip(axes, ("mse", "precision", "recall")):
        for method, group in stratified.groupby("method", sort=False):
            ax.plot(group.n_celltypes_with_peak, group[name], "o-", label=method)
        ax.set_xticks(sorted(stratified.n_celltypes_with_peak.unique()))
        ax.set_xlabel("cell types with a peak of the assay")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


# the benchmark --------------------------------------------------------------------


@dataclass
class BenchmarkResult:
    """Everything a benchmark run produced.

    Attributes
    ----------
    table : pandas.DataFrame
        Long: ``celltype, assay, method, metric, value`` for every held-out track.
    summary : pandas.DataFrame
        Mean per metric (rows) and method (columns).
    best : pandas.Series
        Best method per metric.
    stratified : pandas.DataFrame
        From :func:`stratified_evaluation`.
    predictions : dict
        ``{method: {(celltype, assay): imputed array, shape=(n_positions,)}}``.
    model : Avocado or None
        The fitted model (None for a baselines-only run).
    baselines : dict
        Fitted baselines by method name.
    holdout, train : list of (str, str)
        The split.
    pairwise : pandas.DataFrame or None
        From :func:`epitensor.evaluation.relationships.pairwise_table`.
    seconds : dict
        Fit time of each method in seconds.
    models : dict
        Every fitted model by method name (``avocado``, or ``avocado-<preset>``
        for several presets); ``model`` is the first.
    extra : dict
        Tables of the extra scorers by name (see :func:`run_benchmark`).
    ensemble : Ensemble or None
        The ensemble scored (by default the default imputation, method
        ``epitensor``), its trees fitted on the training tracks; None when
        none was scored.
    by_assay : pandas.DataFrame or None
        From :func:`summary_by_assay`: every metric per assay and method.
    ranking : pandas.DataFrame or None
        The methods ranked by the challenge's rule over bootstraps of
        chromosomes (:func:`rank_methods`); None with ``bootstraps=0``.
    ranking_by_track : pandas.DataFrame or None
        Each method's combined rank per track (mean over bootstraps).
    out_dir : pathlib.Path or None
        Where the files were written.
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    best: pd.Series
    stratified: pd.DataFrame
    predictions: dict
    model: object | None
    baselines: dict
    holdout: list
    train: list
    seconds: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    out_dir: Path | None = None
    pairwise: pd.DataFrame | None = None
    ensemble: object | None = None
    by_assay: pd.DataFrame | None = None
    ranking: pd.DataFrame | None = None
    ranking_by_track: pd.DataFrame | None = None

    def summary_markdown(self, digits: int = 3) -> str:
        """The summary as Markdown: metrics x methods, the best in bold, plus a ``best`` column."""
        frame = self.summary.copy()
        frame.index.name = "metric"
        frame["best"] = self.best.reindex(frame.index)
        return markdown_table(frame, digits, bold=self.best.to_dict())


def _model_names(presets: Sequence[str]) -> dict[str, str]:
    """Method name of each Avocado preset: ``avocado`` alone, ``avocado-<preset>`` side by side.

    A preset file is named by its stem (``residual.json``: ``avocado-residual``).
    """
    presets = list(dict.fromkeys(presets))
    if len(presets) == 1:
        return {"avocado": presets[0]}
    return {f"avocado-{_preset_label(p)}": p for p in presets}


def _preset_label(preset) -> str:
    text = str(preset)
    return Path(text).stem if text.endswith(".json") else text


def _presets(preset: str | Sequence[str] | None) -> list[str]:
    if preset is None:
        return []
    return [preset] if isinstance(preset, str) else list(preset)


def _fit_model(store, holdout, preset, model_params, verbose, train=None, seed=None):
    """Fit an Avocado preset on the training tracks, the scorable held-out ones monitored.

    With ``train`` given, only its cell types and assays are fitted, so a
    held-out track whose cell type (or assay) has no training track is left
    out of the model altogether instead of being refused.
    """
    from epitensor.estimators.avocado import Avocado

    params = {"verbose": verbose, **(model_params or {})}
    if seed is not None:
        params["seed"] = seed
    model = Avocado.from_preset(preset, **params)
    if train is None:
        return model.fit(store, holdout=holdout)
    celltypes = sorted({c for c, _ in train})
    assays = sorted({a for _, a in train})
    scorable = [t for t in holdout if t[0] in celltypes and t[1] in assays]
    return model.fit(store, holdout=scorable, celltypes=celltypes, assays=assays)


def _extra_tables(scorers, store, predictions, holdout, train) -> dict[str, pd.DataFrame]:
    """Run the extra per-method scorers (see :func:`run_benchmark`)."""
    return {
        name: func(store, predictions, holdout, train) for name, func in (scorers or {}).items()
    }


def run_benchmark(
    store: Store | str,
    out_dir: str | os.PathLike | None = None,
    *,
    model=None,
    baselines: Mapping | None = None,
    annotations: Annotations | None = None,
    scorers: Mapping | None = None,
    options: BenchmarkOptions | None = None,
    **overrides,
) -> BenchmarkResult:
    """Train the model and every baseline on a split's training tracks; score the held-out ones.

    The settings (split, presets, model overrides, PARAFAC epochs, seed, the
    ensemble, overwriting, progress) are a
    :class:`~epitensor.evaluation.options.BenchmarkOptions`, given whole as
    ``options`` or field by field as keywords (``split=...``), or both (the
    keywords win); ``epitensor benchmark`` builds the same object.

    Parameters
    ----------
    store : Store or str
        The store (``"roadmap-pilot"`` for the sample).
    out_dir : str or path-like, optional
        Folder for the tables and figures (written atomically). Default None:
        write nothing.
    model : Avocado, optional
        An already fitted model to score instead of training one (it must not
        have seen the held-out tracks). Default None.
    baselines : mapping, optional
        Baselines by name; one already fitted on exactly the split's training
        tracks is used as it is, any other is fitted. Default None:
        :func:`epitensor.estimators.baselines.all_baselines`.
    annotations : Annotations, optional
        Default None: the bundled pilot annotations.
    scorers : mapping, optional
        Extra per-method tables, ``{name: func}``, each called as
        ``func(store, predictions, holdout, train)`` with ``predictions`` as
        in :class:`BenchmarkResult`, returning a DataFrame kept in
        ``result.extra[name]`` and written as ``<name>.csv`` / ``.md``.
        Default None: none.
    options : BenchmarkOptions, optional
        The settings. Default None: ``BenchmarkOptions()``.
    **overrides
        Fields of :class:`~epitensor.evaluation.options.BenchmarkOptions`
        replacing those of ``options`` (``split``, ``preset``,
        ``model_params``, ``parafac_epochs``, ``seed``, ``ensemble``,
        ``overwrite``, ``verbose``); any other name is refused.

    Returns
    -------
    BenchmarkResult

    Examples
    --------
    >>> import epitensor as et
    >>> result = et.run_benchmark("roadmap-pilot", "benchmark")  # doctest: +SKIP
    >>> result = et.run_benchmark("roadmap-pilot", preset=None, seed=1)  # doctest: +SKIP
    """
    from epitensor.estimators.baselines import all_baselines

    opts = BenchmarkOptions.resolve(options, **overrides)
    store = open_store(store)
    holdout, train = resolve_split(opts.split, store)
    if out_dir is not None and Path(out_dir).exists() and not opts.overwrite:
        raise EpitensorError(f"{out_dir} already exists; choose another folder or pass overwrite")
    annotations = Annotations.from_directory() if annotations is None else annotations
    if baselines is None:
        baselines = all_baselines(
            parafac_epochs=opts.parafac_epochs, seed=opts.seed, verbose=opts.verbose
        )
    seconds: dict[str, float] = {}
    predictors: dict[str, object] = {}
    models: dict[str, object] = {}
    if model is None:
        for name, name_preset in _model_names(_presets(opts.preset)).items():
            started = time.perf_counter()
            models[name] = _fit_model(store, holdout, name_preset, opts.model_params, opts.verbose)
            seconds[name] = time.perf_counter() - started
    else:
        models[method_name(model)] = model
    for name, fitted in models.items():
        leaked = set(holdout) & set(map(tuple, fitted.training_tracks_))
        if leaked:
            raise EpitensorError(f"the model was trained on held-out tracks {sorted(leaked)}")
        predictors[name] = fitted
    for name, baseline in baselines.items():
        if getattr(baseline, "training_tracks_", None) == train:
            predictors[name] = baseline  # already fitted on this split's training tracks
            continue
        started = time.perf_counter()
        predictors[name] = baseline.fit(store, train)
        seconds[name] = time.perf_counter() - started
    rule = _rule(
        opts.ensemble, bool(models) and {"chromimpute_gbt", "average_activity"} <= set(predictors)
    )
    ensemble_name = None
    if rule is not None:
        ensemble = _ensemble_of(predictors, models, store, rule)
        ensemble_name = ensemble.name
        predictors[ensemble_name] = ensemble
    scorer = Scorer(store, annotations)
    predictions: dict[str, dict] = {}
    tables = []
    for name, predictor in predictors.items():
        predictions[name] = {}
        if name == ensemble_name:  # from its parts' imputations, made above
            predictions[name] = {
                t: _ensemble_imputation(predictor, predictors, predictions, store, t)
                for t in holdout
            }
        tables.append(
            evaluate(
                predictor,
                store,
                holdout,
                method=name,
                predictions=predictions[name],
                verbose=opts.verbose,
                scorer=scorer,
            )
        )
    table = pd.concat(tables, ignore_index=True)
    summary = summarise(table)
    ranking, ranking_by_track = (
        rank_methods(scorer, predictions, opts.bootstraps, opts.seed)
        if opts.bootstraps
        else (None, None)
    )
    result = BenchmarkResult(
        table=table,
        summary=summary,
        best=best_methods(summary),
        by_assay=summary_by_assay(table),
        ranking=ranking,
        ranking_by_track=ranking_by_track,
        stratified=stratified_evaluation(store, predictions, annotations),
        predictions=predictions,
        model=next(iter(models.values()), None),
        baselines={n: predictors[n] for n in baselines},
        holdout=holdout,
        train=train,
        seconds=seconds,
        pairwise=pairwise_table(predictions, store, annotations),
        models=models,
        extra=_extra_tables(scorers, store, predictions, holdout, train),
        ensemble=predictors.get(ensemble_name),
    )
    if out_dir is not None:
        parameters = {
            "store": store.url,
            "split": holdout,
            "preset": opts.preset,
            "model_params": opts.model_params or {},
            "parafac_epochs": opts.parafac_epochs,
            "seed": opts.seed,
            "annotations": annotations.source,
            "seconds": seconds,
            "ensemble": None if rule is None else {"method": ensemble_name, **asdict(rule)},
            "bootstraps": opts.bootstraps,
        }
        write_benchmark(result, out_dir, parameters, overwrite=opts.overwrite)
    return result


def _rule(ensemble, available: bool):
    """The ensemble rule a run scores: ``"auto"`` is the default rule where the parts are run."""
    from epitensor.estimators.ensemble import EnsembleRule

    if isinstance(ensemble, str):
        if ensemble != AUTO_ENSEMBLE:
            raise EpitensorError(
                f"invalid ensemble: got {ensemble!r}, expected an EnsembleRule, {AUTO_ENSEMBLE!r} "
                "or None"
            )
        return EnsembleRule() if available else None
    return ensemble


def _ensemble_name(rule) -> str:
    """The method name of an ensemble with ``rule`` (as :attr:`Ensemble.name`)."""
    from epitensor.estimators.ensemble import DEFAULT_METHOD, EnsembleRule

    return DEFAULT_METHOD if rule == EnsembleRule() else "ensemble"


def _ensemble_of(predictors: dict, models: dict, store: Store, rule, average=None):
    """The :class:`~epitensor.estimators.ensemble.Ensemble` of the first model and the fitted baselines."""
    from epitensor.estimators.ensemble import Ensemble

    needed = [n for n in ("chromimpute_gbt", "average_activity") if n not in predictors]
    if average is not None and "average_activity" in needed:
        needed.remove("average_activity")
    if not models or needed:
        raise EpitensorError(
            f"the ensemble needs a model and the baselines chromimpute_gbt and average_activity; "
            f"missing {needed or ['a model']}"
        )
    model = next(iter(models.values()))
    average = predictors.get("average_activity") if average is None else average
    return Ensemble(model, store, rule, trees=predictors["chromimpute_gbt"], average=average)


def write_benchmark(
    result: BenchmarkResult, out_dir: str | os.PathLike, parameters: dict, overwrite: bool = False
) -> Path:
    """Write a benchmark's tables, figures and parameters into a folder (atomically).

    Files: ``metrics.csv`` (long), ``metrics_by_track.csv`` / ``.md`` (track x
    method rows, metric columns), ``summary.csv`` / ``.md`` (mean per method,
    best per metric), ``summary_by_assay.csv`` / ``.md`` (the same per assay),
    ``ranking.csv`` / ``.md`` and ``ranking_by_track.csv`` / ``.md`` (the
    challenge's rule, :func:`rank_methods`), ``stratified.csv`` / ``.md``, ``metrics.png``,
    ``stratified.png``, ``parameters.json`` and the pairwise relationships
    (``pairwise.csv``, ``pairwise_summary.csv``, ``pairwise.md``; see
    :func:`epitensor.evaluation.relationships.write_pairwise`).

    Returns
    -------
    pathlib.Path
        The folder.
    """
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        result.table.to_csv(tmp / "metrics.csv", index=False)
        by_track = result.table.pivot_table(
            index=["celltype", "assay", "method"], columns="metric", values="value", sort=False
        )
        by_track = by_track[[c for c in result.summary.index if c in by_track.columns]]
        by_track.to_csv(tmp / "metrics_by_track.csv")
        flat = by_track.copy()
        flat.index = [f"{c} {a} {m}" for c, a, m in flat.index]
        flat.index.name = "track method"
        (tmp / "metrics_by_track.md").write_text(markdown_table(flat))
        summary = result.summary.copy()
        summary["best"] = result.best
        summary.to_csv(tmp / "summary.csv")
        (tmp / "summary.md").write_text(result.summary_markdown())
        result.stratified.to_csv(tmp / "stratified.csv", index=False)
        strat = result.stratified.set_index(["n_celltypes_with_peak", "method"])
        strat.index = [f"{g} {m}" for g, m in strat.index]
        strat.index.name = "cell types with peak, method"
        (tmp / "stratified.md").write_text(markdown_table(strat))
        _write_assays_and_ranking(tmp, result)
        title = f"held-out tracks: {', '.join(f'{c} {a}' for c, a in result.holdout)}"
        plot_metrics(tmp / "metrics.png", result.table, title)
        plot_stratified(tmp / "stratified.png", result.stratified, "stratified by peak sharing")
        if result.pairwise is not None:
            write_pairwise(result.pairwise, tmp)
        _write_extra(tmp, result.extra)
        (tmp / "parameters.json").write_text(json.dumps(parameters, indent=2, default=str) + "\n")
    result.out_dir = Path(out_dir)
    return result.out_dir


def ranking_markdown(ranking: pd.DataFrame, digits: int = 3) -> str:
    """The challenge-rule ranking as Markdown, with the chromosomes each bootstrap left out."""
    text = markdown_table(ranking, digits)
    left_out = ranking.attrs.get("left_out", [])
    if left_out:
        text += (
            "\nBootstraps (chromosomes left out): "
            + "; ".join(f"{i}: {label}" for i, label in enumerate(left_out))
            + "\n"
        )
    return text


def _write_assays_and_ranking(folder: Path, result) -> None:
    """``summary_by_assay``, ``ranking`` and ``ranking_by_track`` as CSV and Markdown."""
    if result.by_assay is not None:
        result.by_assay.to_csv(folder / "summary_by_assay.csv")
        (folder / "summary_by_assay.md").write_text(_by_assay_markdown(result.by_assay))
    if result.ranking is not None:
        result.ranking.to_csv(folder / "ranking.csv")
        (folder / "ranking.md").write_text(ranking_markdown(result.ranking))
        by_track = result.ranking_by_track.copy()
        by_track.index = [f"{c} {a}" for c, a in by_track.index]
        by_track.index.name = "track"
        by_track.to_csv(folder / "ranking_by_track.csv")
        (folder / "ranking_by_track.md").write_text(markdown_table(by_track, 2))


def _write_extra(folder: Path, extra: Mapping[str, pd.DataFrame]) -> None:
    """Write each extra scorer's table as ``<name>.csv`` and ``<name>.md``.

    The prediction intervals' table (:func:`epitensor.evaluation.intervals.interval_scorer`)
    also gets its pooled summary and reliability diagram.
    """
    from epitensor.evaluation import intervals

    for name, frame in extra.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
        (folder / f"{name}.md").write_text(markdown_table(frame.reset_index(drop=True)))
        if name == intervals.SCORER_NAME:
            intervals.write_interval_files(folder, frame)


def warn_if_baseline_wins(result: BenchmarkResult, model_name: str = "avocado") -> list[str]:
    """Metrics on which a baseline beats the model (warned, and returned)."""
    lost = [m for m, best in result.best.items() if best and best != model_name]
    if model_name in result.summary.columns and lost:
        warn(f"a baseline beats {model_name} on {', '.join(lost)}")
    return lost


# cross-validation -------------------------------------------------------------------

DETERMINISTIC = frozenset({"global_mean", "assay_mean", "average_activity"})
"""Baselines whose fit does not depend on the seed: fitted once per fold, not per seed."""

FALLBACK = "average_activity"


def cv_folds(tracks: Sequence[Track], k: int, seed: int = 0) -> list[list[Track]]:
    """Split tracks into ``k`` folds at random: each track in exactly one fold.

    The tracks are shuffled with ``numpy.random.default_rng(seed)`` and dealt
    out in turn, so fold sizes differ by at most one and a fold may take most
    of one cell type's (or assay's) tracks.

    Parameters
    ----------
    tracks : sequence of (str, str)
        Every observed track.
    k : int
        Number of folds, ``2 <= k <= len(tracks)``.
    seed : int
        Seed of the shuffle. Default 0.

    Returns
    -------
    list of list of (str, str)
        ``k`` folds, each in the order of ``tracks``.
    """
    tracks = [(str(c), str(a)) for c, a in tracks]
    if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= len(tracks):
        raise EpitensorError(
            f"the number of folds must be an integer from 2 to the {len(tracks)} observed "
            f"tracks; got k={k!r}"
        )
    order = np.random.default_rng(seed).permutation(len(tracks))
    chosen = [set(order[i::k].tolist()) for i in range(k)]
    return [[t for i, t in enumerate(tracks) if i in fold] for fold in chosen]


def _check_folds(folds, tracks: list[Track], store: Store) -> list[list[Track]]:
    folds = [[(str(c), str(a)) for c, a in fold] for fold in folds]
    dealt = [t for fold in folds for t in fold]
    missing = [t for t in tracks if t not in set(dealt)]
    unknown = [t for t in dealt if t not in set(tracks)]
    repeated = sorted({t for t in dealt if dealt.count(t) > 1})
    if len(folds) < 2 or missing or unknown or repeated or any(not f for f in folds):
        raise EpitensorError(
            f"folds must deal every observed track of {store.url} into at least two non-empty "
            f"folds, each track once; missing {missing}, not observed {unknown}, "
            f"repeated {repeated}"
        )
    return folds


@dataclass
class CVResult:
    """Everything a cross-validation run produced.

    Attributes
    ----------
    table : pandas.DataFrame
        Long: ``fold, training_seed, celltype, assay, method, metric, value``,
        every track scored once per training seed by every method.
    per_track : pandas.DataFrame
        Long: ``fold, celltype, assay, method, metric, value``, the mean over
        training seeds.
    summary : pandas.DataFrame
        Mean over tracks of ``per_track``: metrics (rows) x methods (columns).
    best : pandas.Series
        Best method per metric.
    paired : pandas.DataFrame
        Per metric and method, the Wilcoxon signed-rank test across tracks of
        the reference method against it: ``metric, method, reference,
        n_tracks, reference_better, method_better, ties, reference_mean,
        method_mean, p_value`` (two-sided; NaN without a non-zero difference).
    seed_spread : pandas.DataFrame
        Per metric and method, the track mean of each training seed
        summarised over seeds: ``metric, method, n_seeds, mean, std, min, max``.
    folds : pandas.DataFrame
        ``celltype, assay, fold``, plus ``celltype_kept`` and ``assay_kept``:
        how many training tracks the track's cell type and assay kept in its fold.
    fallbacks : pandas.DataFrame
        ``fold, training_seed, method, celltype, assay, reason``: tracks a
        method could not impute, scored on the fold's average activity instead.
    seconds : pandas.DataFrame
        ``fold, training_seed, method, seconds``: fit times.
    reference : str
        The method the paired tests and :meth:`wins` compare against: the
        default imputation (``epitensor``) when scored, else the first model.
    extra : dict
        Extra scorers' tables by name, each with ``fold`` and ``training_seed`` columns.
    pairwise : pandas.DataFrame or None
        The pairwise mark relationships (:func:`epitensor.evaluation.relationships.pairwise_table`)
        of every method's imputations pooled over the folds (each track imputed
        once, by the fold that held it out), for the first training seed.
    out_dir : pathlib.Path or None
        Where the files were written.
    by_assay : pandas.DataFrame or None
        From :func:`summary_by_assay` of ``per_track``.
    ranking, ranking_by_track : pandas.DataFrame or None
        From :func:`rank_methods` on ``pairwise``'s imputations (each track
        by the fold that held it out, first training seed); None with
        ``bootstraps=0``.
    """

    table: pd.DataFrame
    per_track: pd.DataFrame
    summary: pd.DataFrame
    best: pd.Series
    paired: pd.DataFrame
    seed_spread: pd.DataFrame
    folds: pd.DataFrame
    fallbacks: pd.DataFrame
    seconds: pd.DataFrame
    reference: str
    extra: dict = field(default_factory=dict)
    pairwise: pd.DataFrame | None = None
    out_dir: Path | None = None
    by_assay: pd.DataFrame | None = None
    ranking: pd.DataFrame | None = None
    ranking_by_track: pd.DataFrame | None = None

    def summary_markdown(self, digits: int = 3) -> str:
        """The summary as Markdown: metrics x methods, the best in bold, plus a ``best`` column."""
        frame = self.summary.copy()
        frame.index.name = "metric"
        frame["best"] = self.best.reindex(frame.index)
        return markdown_table(frame, digits, bold=self.best.to_dict())

    def wins(self) -> pd.DataFrame:
        """Per method, on how many metrics the reference beats it (by the mean over tracks)."""
        rows = []
        for method in self.summary.columns:
            if method == self.reference:
                continue
            ref, other = self.summary[self.reference], self.summary[method]
            lower = self.summary.index.isin(list(metrics.LOWER_IS_BETTER))
            better = np.where(lower, ref < other, ref > other)
            valid = ref.notna() & other.notna()
            challenge = self.summary.index.isin(metrics.CHALLENGE_METRICS)
            peak = self.summary.index.isin(metrics.PEAK_METRICS)
            rows.append(
                {
                    "method": method,
                    "reference": self.reference,
                    "challenge_wins": int((better & valid & challenge).sum()),
                    "challenge_metrics": int((valid & challenge).sum()),
                    "peak_wins": int((better & valid & peak).sum()),
                    "peak_metrics": int((valid & peak).sum()),
                    "all_wins": int((better & valid).sum()),
                    "all_metrics": int(valid.sum()),
                }
            )
        return pd.DataFrame(rows)


def _method_factories(methods, parafac_epochs: int, verbose: bool) -> dict:
    """``{name: factory(seed) -> unfitted baseline}`` from names or a mapping of factories."""
    from epitensor.estimators.baselines import BASELINES, all_baselines

    if isinstance(methods, Mapping):
        return dict(methods)
    factories = {}
    for name in methods:
        if name not in BASELINES:
            raise EpitensorError(f"invalid method: got {name!r}, expected one of {list(BASELINES)}")
        factories[name] = lambda seed, name=name: all_baselines(
            parafac_epochs=parafac_epochs, seed=seed, verbose=verbose
        )[name]
    return factories


def _ensemble_imputation(ensemble, predictors: dict, known: dict, store, track) -> np.ndarray:
    """The ensemble's imputation of ``track``, combined from its parts' where ``known`` has them.

    ``predictors`` names the fitted methods (the ensemble's model, trees and
    average are among them, or its average is a fold's fallback); ``known``
    maps a method name to its imputations so far. A part not imputed yet
    makes the ensemble predict the track itself.
    """
    names = {id(predictor): name for name, predictor in predictors.items()}
    parts = [
        known.get(names.get(id(part)), {}).get(track)
        for part in (ensemble.model, ensemble.trees, ensemble.average)
    ]
    if any(part is None for part in parts):
        return predict_track(ensemble, store, *track)
    return ensemble.combine_imputations(track, *parts)


def _predict_or_fallback(predictor, fallback, store, track):
    """A method's imputation of a track, or the fallback's with the reason it was needed."""
    try:
        return predict_track(predictor, store, *track), None
    except EpitensorError as exc:
        return predict_track(fallback, store, *track), str(exc)


def _paired(per_track: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Wilcoxon signed-rank tests across tracks of ``reference`` against each other method."""
    from scipy.stats import wilcoxon

    wide = per_track.pivot_table(
        index=["celltype", "assay", "metric"], columns="method", values="value", dropna=False
    )
    rows = []
    for name in [m for m in metrics.METRICS if m in set(per_track.metric)]:
        block = wide.xs(name, level="metric")
        for method in [m for m in dict.fromkeys(per_track.method) if m != reference]:
            pair = block[[reference, method]].dropna()
            diff = pair[reference] - pair[method]
            if name in metrics.LOWER_IS_BETTER:
                diff = -diff  # positive: the reference is better
            nonzero = diff[diff != 0]
            p_value = float(wilcoxon(nonzero).pvalue) if len(nonzero) else float("nan")
            rows.append(
                {
                    "metric": name,
                    "method": method,
                    "reference": reference,
                    "n_tracks": len(pair),
                    "reference_better": int((diff > 0).sum()),
                    "method_better": int((diff < 0).sum()),
                    "ties": int((diff == 0).sum()),
                    "reference_mean": float(pair[reference].mean()),
                    "method_mean": float(pair[method].mean()),
                    "p_value": p_value,
                }
            )
    return pd.DataFrame(rows)


def _seed_spread(table: pd.DataFrame) -> pd.DataFrame:
    per_seed = table.groupby(["metric", "method", "training_seed"], sort=False).value.mean()
    spread = per_seed.groupby(level=["metric", "method"], sort=False).agg(
        n_seeds="count", mean="mean", std="std", min="min", max="max"
    )
    return spread.reset_index()


def _kept_counts(folds: list[list[Track]], tracks: list[Track]) -> pd.DataFrame:
    rows = []
    for i, fold in enumerate(folds):
        train = [t for t in tracks if t not in set(fold)]
        for celltype, assay in fold:
            rows.append(
                {
                    "celltype": celltype,
                    "assay": assay,
                    "fold": i,
                    "celltype_kept": sum(c == celltype for c, _ in train),
                    "assay_kept": sum(a == assay for _, a in train),
                }
            )
    return pd.DataFrame(rows)


def run_cv(
    store: Store | str,
    out_dir: str | os.PathLike | None = None,
    *,
    folds: Sequence[Sequence[Track]] | None = None,
    annotations: Annotations | None = None,
    scorers: Mapping | None = None,
    options: CVOptions | None = None,
    **overrides,
) -> CVResult:
    """K-fold cross-validation over every observed track; every method retrained per fold.

    The observed tracks are dealt into ``k`` random folds (:func:`cv_folds`).
    For each fold and each training seed, every method is fitted on the other
    folds' tracks only and imputes the fold's tracks, each scored by every
    metric of :data:`epitensor.evaluation.metrics.METRICS`. A fold may leave a cell type
    (or an assay) without any training track; then

    * average activity imputes as usual from the other cell types (an assay
      with no training track at all gets the mean of all training values),
      and so do the global and assay means;
    * the ChromImpute-style trees use the same-assay features alone for a
      cell type with no training track (the mean of all training values for
      an assay with none);
    * Avocado is fitted on the cell types and assays that have training
      tracks, and PARAFAC has no factor for the missing one: a track they
      cannot impute is scored on the fold's average activity instead, and
      listed in ``fallbacks``.

    The settings (folds and seeds, presets, model overrides, baselines,
    blends, the ensemble, overwriting, progress) are a
    :class:`~epitensor.evaluation.options.CVOptions`, given whole as
    ``options`` or field by field as keywords (``k=3``), or both (the keywords
    win); ``epitensor benchmark --cv K`` builds the same object.

    Parameters
    ----------
    store : Store or str
        The store (``"roadmap-pilot"`` for the sample).
    out_dir : str or path-like, optional
        Folder for the tables and the figure (written atomically). Default
        None: write nothing.
    folds : sequence of sequences of (str, str), optional
        The folds themselves (e.g. one per cell type), instead of ``k`` random
        ones: every observed track in exactly one. Default None: :func:`cv_folds`
        with the options' ``k`` and ``seed``.
    annotations : Annotations, optional
        Default None: the bundled pilot annotations.
    scorers : mapping, optional
        Extra per-method tables as in :func:`run_benchmark`, called once per
        fold and seed. Default None.
    options : CVOptions, optional
        The settings. Default None: ``CVOptions()``.
    **overrides
        Fields of :class:`~epitensor.evaluation.options.CVOptions` replacing
        those of ``options`` (``k``, ``seed``, ``training_seeds``, ``presets``,
        ``model_params``, ``methods``, ``parafac_epochs``, ``blends``,
        ``ensemble``, ``overwrite``, ``verbose``); any other name is refused.

    Returns
    -------
    CVResult

    Examples
    --------
    >>> import epitensor as et
    >>> from epitensor.evaluation.options import CVOptions
    >>> options = CVOptions(k=5, training_seeds=(0, 1, 2))
    >>> result = et.run_cv("roadmap-pilot", "cv", options=options)  # doctest: +SKIP
    >>> result = et.run_cv("roadmap-pilot", k=3, presets=())  # doctest: +SKIP
    """
    from epitensor.estimators.baselines import AverageActivity

    opts = CVOptions.resolve(options, **overrides)
    store = open_store(store)
    tracks = store.track_names()
    k = opts.k
    if folds is None:
        folds = cv_folds(tracks, k, opts.seed)
    else:
        folds = _check_folds(folds, tracks, store)
        k = len(folds)
    training_seeds = [int(s) for s in opts.training_seeds] or [0]
    if out_dir is not None and Path(out_dir).exists() and not opts.overwrite:
        raise EpitensorError(f"{out_dir} already exists; choose another folder or pass overwrite")
    factories = _method_factories(
        DEFAULT_CV_BASELINES if opts.methods is None else opts.methods,
        opts.parafac_epochs,
        opts.verbose,
    )
    model_names = _model_names(list(opts.presets)) if opts.presets else {}
    clash = set(model_names) & set(factories)
    if clash:
        raise EpitensorError(f"method names used twice: {sorted(clash)}")
    if not model_names and not factories:
        raise EpitensorError("no method to cross-validate; give a preset or a baseline")
    has_parts = bool(model_names) and "chromimpute_gbt" in factories
    rule = _rule(opts.ensemble, has_parts)
    if rule is not None and not has_parts:
        raise EpitensorError("the ensemble needs a preset and the chromimpute_gbt baseline")
    ensemble_name = None if rule is None else _ensemble_name(rule)
    if ensemble_name in factories or ensemble_name in model_names:
        raise EpitensorError(f"method names used twice: [{ensemble_name!r}]")
    blends = [tuple(str(m) for m in blend) for blend in opts.blends]
    for blend in blends:
        unknown = [m for m in blend if m not in model_names and m not in factories]
        if len(blend) < 2 or unknown:
            raise EpitensorError(
                f"a blend averages two or more of the methods {[*model_names, *factories]}; "
                f"got {list(blend)}"
            )
    annotations = Annotations.from_directory() if annotations is None else annotations
    scorer = Scorer(store, annotations)
    rows, fallbacks, seconds, extra = [], [], [], {}
    pooled: dict[str, dict] = {}  # method -> track -> imputation, first training seed
    for fold_index, fold in enumerate(folds):
        train = [t for t in tracks if t not in set(fold)]
        fallback = AverageActivity().fit(store, train)
        deterministic_scores: dict[str, list] = {}
        deterministic_predictions: dict[str, dict] = {}
        for training_seed in training_seeds:
            _say(opts.verbose, f"cv: fold {fold_index + 1}/{k}, training seed {training_seed}")
            predictions: dict[str, dict] = {}
            fitted: dict[str, object] = {}
            for name, preset in model_names.items():
                started = time.perf_counter()
                fitted[name] = _fit_model(
                    store,
                    fold,
                    preset,
                    opts.model_params,
                    opts.verbose,
                    train=train,
                    seed=training_seed,
                )
                seconds.append((fold_index, training_seed, name, time.perf_counter() - started))
            for name, factory in factories.items():
                if name in DETERMINISTIC and name in deterministic_scores:
                    continue
                started = time.perf_counter()
                fitted[name] = factory(training_seed).fit(store, train)
                seconds.append((fold_index, training_seed, name, time.perf_counter() - started))
            if rule is not None:
                models = {name: fitted[name] for name in model_names}
                fitted[ensemble_name] = _ensemble_of(fitted, models, store, rule, fallback)
            for name, predictor in fitted.items():
                predictions[name] = {}
                scored = []
                for track in fold:
                    if name == ensemble_name:  # from its parts' imputations, made above
                        known = {**deterministic_predictions, **predictions}
                        imputed = _ensemble_imputation(predictor, fitted, known, store, track)
                        reason = None
                    else:
                        imputed, reason = _predict_or_fallback(predictor, fallback, store, track)
                    if reason is not None:
                        fallbacks.append((fold_index, training_seed, name, *track, reason))
                    predictions[name][track] = imputed
                    scored += [
                        (*track, name, metric, value)
                        for metric, value in scorer.score(track, imputed).items()
                    ]
                if name in DETERMINISTIC:
                    deterministic_scores[name] = scored
                    deterministic_predictions[name] = predictions[name]
                rows += [(fold_index, training_seed, *r) for r in scored]
            for name, scored in deterministic_scores.items():
                if name not in fitted:  # fitted for an earlier seed: same scores
                    rows += [(fold_index, training_seed, *r) for r in scored]
                    predictions[name] = deterministic_predictions[name]
            for blend in blends:
                name = "+".join(blend)
                predictions[name] = {
                    t: np.mean([predictions[m][t] for m in blend], axis=0) for t in fold
                }
                rows += [
                    (fold_index, training_seed, *track, name, metric, value)
                    for track in fold
                    for metric, value in scorer.score(track, predictions[name][track]).items()
                ]
            if training_seed == training_seeds[0]:
                for name, imputed in predictions.items():
                    pooled.setdefault(name, {}).update(imputed)
            for name, frame in _extra_tables(scorers, store, predictions, fold, train).items():
                extra.setdefault(name, []).append(
                    frame.assign(fold=fold_index, training_seed=training_seed)
                )
    table = pd.DataFrame(rows, columns=["fold", "training_seed", *COLUMNS])
    per_track = (
        table.groupby(["fold", "celltype", "assay", "method", "metric"], sort=False)
        .value.mean()
        .reset_index()
    )
    summary = summarise(per_track)
    # the default imputation is what the paired tests and wins compare with the others
    reference = ensemble_name or next(iter(model_names), next(iter(factories)))
    ranking, ranking_by_track = (
        rank_methods(scorer, pooled, opts.bootstraps, opts.seed)
        if opts.bootstraps
        else (None, None)
    )
    result = CVResult(
        table=table,
        per_track=per_track,
        summary=summary,
        best=best_methods(summary),
        by_assay=summary_by_assay(per_track),
        ranking=ranking,
        ranking_by_track=ranking_by_track,
        paired=_paired(per_track, reference),
        seed_spread=_seed_spread(table),
        folds=_kept_counts(folds, tracks),
        fallbacks=pd.DataFrame(
            fallbacks,
            columns=["fold", "training_seed", "method", "celltype", "assay", "reason"],
        ),
        seconds=pd.DataFrame(seconds, columns=["fold", "training_seed", "method", "seconds"]),
        reference=reference,
        extra={name: pd.concat(frames, ignore_index=True) for name, frames in extra.items()},
        pairwise=pairwise_table(pooled, store, annotations),
    )
    if out_dir is not None:
        parameters = {
            "store": store.url,
            "k": k,
            "seed": opts.seed,
            "training_seeds": training_seeds,
            "presets": list(opts.presets),
            "model_params": opts.model_params or {},
            "methods": list(factories),
            "blends": ["+".join(b) for b in blends],
            "ensemble": None if rule is None else {"method": ensemble_name, **asdict(rule)},
            "bootstraps": opts.bootstraps,
            "parafac_epochs": opts.parafac_epochs,
            "annotations": annotations.source,
            "folds": [[list(t) for t in fold] for fold in folds],
        }
        write_cv(result, out_dir, parameters, overwrite=opts.overwrite)
    return result


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr, flush=True)


def write_cv(
    result: CVResult, out_dir: str | os.PathLike, parameters: dict, overwrite: bool = False
) -> Path:
    """Write a cross-validation's tables, figure and parameters into a folder (atomically).

    Files: ``cv_metrics.csv`` (long, per fold and training seed),
    ``metrics_by_track.csv`` / ``.md`` (mean over seeds; track x method rows,
    metric columns), ``summary.csv`` / ``.md``, ``paired.csv`` / ``.md``
    (Wilcoxon tests), ``wins.csv`` / ``.md``, ``seed_spread.csv`` / ``.md``,
    ``summary_by_assay``, ``ranking`` and ``ranking_by_track`` (``.csv`` /
    ``.md``), ``folds.csv``, ``fallbacks.csv``, ``seconds.csv``, ``metrics.png``
    (metric by method, one point per track), the pairwise relationships
    (``pairwise.csv``, ``pairwise_summary.csv``, ``pairwise.md``), the extra
    scorers' tables and ``parameters.json``.

    Returns
    -------
    pathlib.Path
        The folder.
    """
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        result.table.to_csv(tmp / "cv_metrics.csv", index=False)
        by_track = result.per_track.set_index(["fold", "celltype", "assay", "method", "metric"])
        by_track = by_track.value.unstack("metric")
        by_track = by_track[[c for c in result.summary.index if c in by_track.columns]]
        by_track.to_csv(tmp / "metrics_by_track.csv")
        flat = by_track.copy()
        flat.index = [f"{f} {c} {a} {m}" for f, c, a, m in flat.index]
        flat.index.name = "fold track method"
        (tmp / "metrics_by_track.md").write_text(markdown_table(flat))
        summary = result.summary.copy()
        summary["best"] = result.best
        summary.to_csv(tmp / "summary.csv")
        (tmp / "summary.md").write_text(result.summary_markdown())
        for name, frame in (
            ("paired", result.paired),
            ("wins", result.wins()),
            ("seed_spread", result.seed_spread),
        ):
            frame.to_csv(tmp / f"{name}.csv", index=False)
            if len(frame.columns):  # a run of one method compares it with nothing
                (tmp / f"{name}.md").write_text(
                    markdown_table(frame.set_index(frame.columns[0]), 4)
                )
        _write_assays_and_ranking(tmp, result)
        result.folds.to_csv(tmp / "folds.csv", index=False)
        result.fallbacks.to_csv(tmp / "fallbacks.csv", index=False)
        result.seconds.to_csv(tmp / "seconds.csv", index=False)
        n_tracks = result.per_track[["celltype", "assay"]].drop_duplicates().shape[0]
        title = (
            f"{parameters.get('k')}-fold cross-validation over {n_tracks} tracks "
            f"(fold seed {parameters.get('seed')}, training seeds "
            f"{', '.join(map(str, parameters.get('training_seeds', [])))})"
        )
        plot_metrics(tmp / "metrics.png", result.per_track, title)
        if result.pairwise is not None:
            write_pairwise(result.pairwise, tmp)
        _write_extra(tmp, result.extra)
        (tmp / "parameters.json").write_text(json.dumps(parameters, indent=2, default=str) + "\n")
    result.out_dir = Path(out_dir)
    return result.out_dir
