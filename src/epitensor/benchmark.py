"""The held-out-track protocol: score imputations, baselines side by side, tables and figures.

A *predictor* is anything with ``predict(celltype, assay, axis=None, start=0,
end=None) -> numpy.ndarray`` (float32, arcsinh, one value per axis position):
the fitted :class:`epitensor.avocado.Avocado` model or any baseline of
:mod:`epitensor.baselines`. :func:`evaluate` scores predictors on observed
tracks of a store; :func:`run_benchmark` trains the model and every baseline on
the training tracks of a split, imputes the held-out tracks and writes the
tables and figures.

Every metric masks the blacklist out; promoters, gene bodies and enhancers come
from :class:`epitensor.annotations.Annotations` (default: the bundled hg19
annotations of the pilot regions). A track spanning several axes (one per
chromosome) is scored over all of them concatenated.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor import metrics
from epitensor._utils import EpitensorError, atomic_directory, progress, warn
from epitensor.annotations import Annotations, peak_mask
from epitensor.store import Store, open_store

__all__ = [
    "STANDARD_SPLIT",
    "BenchmarkResult",
    "best_methods",
    "evaluate",
    "evaluate_model",
    "impute",
    "markdown_table",
    "read_split",
    "resolve_split",
    "run_benchmark",
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
    if tuple(table.iloc[0, :2].str.lower()) == ("celltype", "assay"):
        table = table.iloc[1:]
    return [(c.strip(), a.strip()) for c, a in zip(table[0], table[1])]


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


def impute(predictor, store: Store, celltype: str, assay: str) -> np.ndarray:
    """A predictor's imputation of one track over every axis of the store, concatenated.

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


def _masks(store: Store, annotations: Annotations) -> tuple[np.ndarray | None, dict]:
    """Blacklist-free positions and region masks over all axes, concatenated."""
    keep, regions = [], {"promoters": [], "genes": [], "enhancers": []}
    for axis in store.axes:
        keep.append(annotations.keep(store.layout, axis))
        for name, mask in annotations.regions(store.layout, axis).items():
            regions[name].append(mask)
    if any(k is None for k in keep):
        keep_all = None
    else:
        keep_all = np.concatenate(keep)
    joined = {
        name: None if any(m is None for m in masks) else np.concatenate(masks)
        for name, masks in regions.items()
    }
    return keep_all, joined


def _assay_variance(store: Store, celltype: str, assay: str, exclude: set) -> np.ndarray | None:
    """Variance of the assay over the other observed, non-excluded cell types (or None)."""
    others = [
        (c, a)
        for c, a in store.track_names()
        if a == assay and c != celltype and (c, a) not in exclude
    ]
    if len(others) < 2:
        return None
    return np.var(np.stack([_observed(store, c, a) for c, a in others]), axis=0)


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
) -> pd.DataFrame:
    """Score a predictor's imputation of observed tracks.

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
        ``msevar`` (the held-out tracks). Default none.
    predictions : dict, optional
        Filled with ``{(celltype, assay): imputed array}``; tracks already in
        it are not predicted again. Default None.
    verbose : bool
        Progress bar. Default True.

    Returns
    -------
    pandas.DataFrame
        Long format: ``celltype, assay, method, metric, value``, the metrics of
        :data:`epitensor.metrics.METRICS` (plus ``msevar`` where the assay is
        observed in at least two other cell types).
    """
    store = open_store(store)
    tracks = [(str(c), str(a)) for c, a in tracks]
    if not tracks:
        raise EpitensorError("no track to evaluate; give at least one CELL:ASSAY")
    for celltype, assay in tracks:
        store.track_index(celltype, assay)
    annotations = Annotations.from_directory() if annotations is None else annotations
    keep, regions = _masks(store, annotations)
    method = method or method_name(predictor)
    predictions = {} if predictions is None else predictions
    rows = []
    for track in progress(tracks, desc=f"evaluating {method}", verbose=verbose):
        if track not in predictions:
            if predictor is None:
                raise EpitensorError(f"no prediction of {track} given and no predictor")
            predictions[track] = impute(predictor, store, *track)
        observed = _observed(store, *track)
        weights = _assay_variance(store, *track, exclude=set(exclude))
        scores = metrics.score(
            observed,
            predictions[track],
            mask=keep,
            regions=regions,
            peaks=_peaks(peaks, store, track),
            weights=weights,
        )
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
) -> pd.DataFrame:
    """Load a saved model, score it on observed tracks and write the long CSV.

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

    Returns
    -------
    pandas.DataFrame
        The table written.
    """
    from epitensor._utils import atomic_write_bytes
    from epitensor.avocado import Avocado

    if Path(out).exists() and not overwrite:
        raise EpitensorError(f"{out} already exists; choose another --out or pass --overwrite")
    fitted = Avocado.load(model)
    table = evaluate(
        fitted,
        store,
        tracks,
        annotations=Annotations.from_directory(annotations),
        verbose=verbose,
    )
    atomic_write_bytes(out, table.to_csv(index=False).encode())
    return table


# summaries ------------------------------------------------------------------------


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric over tracks: rows metrics (report order), columns methods."""
    order = [m for m in (*metrics.METRICS, metrics.WEIGHTED_METRIC) if m in set(table.metric)]
    methods = list(dict.fromkeys(table.method))
    wide = table.pivot_table(index="metric", columns="method", values="value", aggfunc="mean")
    return wide.reindex(index=order, columns=methods)


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


def markdown_table(frame: pd.DataFrame, digits: int = 3, bold: Mapping | None = None) -> str:
    """A GitHub Markdown table of a frame (index as the first column).

    Parameters
    ----------
    frame : pandas.DataFrame
    digits : int
        Decimals of float cells. Default 3.
    bold : mapping, optional
        Row label to the column whose cell is set in bold. Default None.
    """
    bold = bold or {}

    def cell(value) -> str:
        if isinstance(value, float | np.floating):
            return "–" if np.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    names = [str(frame.index.name or "")] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    integer = [frame[c].dtype.kind in "iu" for c in frame.columns]
    for label, row in frame.iterrows():
        cells = [f"{int(v):,}" if is_int else cell(v) for v, is_int in zip(row, integer)]
        for i, column in enumerate(frame.columns):
            if bold.get(label) == column and cells[i] != "–":
                cells[i] = f"**{cells[i]}**"
        lines.append("| " + " | ".join([str(label), *cells]) + " |")
    return "\n".join(lines) + "\n"


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
    from epitensor.plots import plt, save_figure

    summary = summarise(table)
    methods = list(summary.columns)
    n = len(summary)
    n_cols = 5
    n_rows = -(-n // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.0 * n_cols, 2.6 * n_rows), squeeze=False)
    colours = [plt.cm.tab10(i % 10) for i in range(len(methods))]
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
    from epitensor.plots import plt, save_figure

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
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
        From :func:`epitensor.relationships.pairwise_table`.
    seconds : dict
        Fit time of each method in seconds.
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
    out_dir: Path | None = None
    pairwise: pd.DataFrame | None = None

    def summary_markdown(self, digits: int = 3) -> str:
        """The summary as Markdown: metrics x methods, the best in bold, plus a ``best`` column."""
        frame = self.summary.copy()
        frame.index.name = "metric"
        frame["best"] = self.best.reindex(frame.index)
        return markdown_table(frame, digits, bold=self.best.to_dict())


def _fit_model(store, holdout, preset, model_params, verbose):
    from epitensor.avocado import Avocado

    params = {"verbose": verbose, **(model_params or {})}
    return Avocado.from_preset(preset, **params).fit(store, holdout=holdout)


def run_benchmark(
    store: Store | str,
    out_dir: str | os.PathLike | None,
    split: str | os.PathLike | Sequence[Track] = "standard",
    preset: str | None = "cpu-small",
    model=None,
    model_params: dict | None = None,
    baselines: Mapping | None = None,
    annotations: Annotations | None = None,
    parafac_epochs: int = 1,
    overwrite: bool = False,
    seed: int = 0,
    verbose: bool = True,
) -> BenchmarkResult:
    """Train the model and every baseline on a split's training tracks; score the held-out ones.

    Parameters
    ----------
    store : Store or str
        The store (``"roadmap-pilot"`` for the bundled sample).
    out_dir : str or path-like or None
        Folder for the tables and figures (written atomically). None: write nothing.
    split : str, path-like or sequence of (str, str)
        ``"standard"``, a split TSV, or the held-out tracks. Default ``"standard"``.
    preset : str or None
        Preset of :meth:`Avocado.from_preset` for the model. Default
        ``"cpu-small"``. None: no model, baselines only.
    model : Avocado, optional
        An already fitted model to score instead of training one (it must not
        have seen the held-out tracks). Default None.
    model_params : dict, optional
        Overrides of the preset (e.g. ``{"n_epochs": 2}``). Default None.
    baselines : mapping, optional
        Baselines by name; one already fitted on exactly the split's training
        tracks is used as it is, any other is fitted. Default None:
        :func:`epitensor.baselines.all_baselines`.
    annotations : Annotations, optional
        Default None: the bundled pilot annotations.
    parafac_epochs : int
        Epochs of the tensor-factorization baseline after its least-squares start. Default 1.
    overwrite : bool
        Replace an existing ``out_dir``. Default False.
    seed : int
        Seed of the baselines. Default 0.
    verbose : bool
        Progress bars and messages. Default True.

    Returns
    -------
    BenchmarkResult
    """
    from epitensor.baselines import all_baselines
    from epitensor.relationships import pairwise_table

    store = open_store(store)
    holdout, train = resolve_split(split, store)
    if out_dir is not None and Path(out_dir).exists() and not overwrite:
        raise EpitensorError(f"{out_dir} already exists; choose another folder or pass overwrite")
    annotations = Annotations.from_directory() if annotations is None else annotations
    if baselines is None:
        baselines = all_baselines(parafac_epochs=parafac_epochs, seed=seed, verbose=verbose)
    seconds: dict[str, float] = {}
    predictors: dict[str, object] = {}
    if model is None and preset is not None:
        started = time.perf_counter()
        model = _fit_model(store, holdout, preset, model_params, verbose)
        seconds["avocado"] = time.perf_counter() - started
    if model is not None:
        leaked = set(holdout) & set(map(tuple, getattr(model, "training_tracks_", [])))
        if leaked:
            raise EpitensorError(f"the model was trained on held-out tracks {sorted(leaked)}")
        predictors[method_name(model)] = model
    for name, baseline in baselines.items():
        if getattr(baseline, "training_tracks_", None) == train:
            predictors[name] = baseline  # already fitted on this split's training tracks
            continue
        started = time.perf_counter()
        predictors[name] = baseline.fit(store, train)
        seconds[name] = time.perf_counter() - started
    predictions: dict[str, dict] = {}
    tables = []
    for name, predictor in predictors.items():
        predictions[name] = {}
        tables.append(
            evaluate(
                predictor,
                store,
                holdout,
                annotations,
                method=name,
                exclude=holdout,
                predictions=predictions[name],
                verbose=verbose,
            )
        )
    table = pd.concat(tables, ignore_index=True)
    summary = summarise(table)
    result = BenchmarkResult(
        table=table,
        summary=summary,
        best=best_methods(summary),
        stratified=stratified_evaluation(store, predictions, annotations),
        predictions=predictions,
        model=model,
        baselines={n: predictors[n] for n in baselines},
        holdout=holdout,
        train=train,
        seconds=seconds,
        pairwise=pairwise_table(predictions, store, annotations),
    )
    if out_dir is not None:
        parameters = {
            "store": store.url,
            "split": holdout,
            "preset": preset,
            "model_params": model_params or {},
            "parafac_epochs": parafac_epochs,
            "seed": seed,
            "annotations": annotations.source,
            "seconds": seconds,
        }
        write_benchmark(result, out_dir, parameters, overwrite=overwrite)
    return result


def write_benchmark(
    result: BenchmarkResult, out_dir: str | os.PathLike, parameters: dict, overwrite: bool = False
) -> Path:
    """Write a benchmark's tables, figures and parameters into a folder (atomically).

    Files: ``metrics.csv`` (long), ``metrics_by_track.csv`` / ``.md`` (track x
    method rows, metric columns), ``summary.csv`` / ``.md`` (mean per method,
    best per metric), ``stratified.csv`` / ``.md``, ``metrics.png``,
    ``stratified.png``, ``parameters.json`` and the pairwise relationships
    (``pairwise.csv``, ``pairwise_summary.csv``, ``pairwise.md``; see
    :func:`epitensor.relationships.write_pairwise`).

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
        title = f"held-out tracks: {', '.join(f'{c} {a}' for c, a in result.holdout)}"
        plot_metrics(tmp / "metrics.png", result.table, title)
        plot_stratified(tmp / "stratified.png", result.stratified, "stratified by peak sharing")
        if result.pairwise is not None:
            from epitensor.relationships import write_pairwise

            write_pairwise(result.pairwise, tmp)
        (tmp / "parameters.json").write_text(json.dumps(parameters, indent=2, default=str) + "\n")
    result.out_dir = Path(out_dir)
    return result.out_dir


def warn_if_baseline_wins(result: BenchmarkResult, model_name: str = "avocado") -> list[str]:
    """Metrics on which a baseline beats the model (warned, and returned)."""
    lost = [m for m, best in result.best.items() if best and best != model_name]
    if model_name in result.summary.columns and lost:
        warn(f"a baseline beats {model_name} on {', '.join(lost)}")
    return lost
