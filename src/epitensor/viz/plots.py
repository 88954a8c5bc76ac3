"""Figures for the demo and the report: tracks, training curves, embedding maps."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

__all__ = [
    "plot_embedding_map",
    "plot_reliability",
    "plot_tracks",
    "plot_training_curve",
    "save_figure",
    "subplots",
    "umap_2d",
]

SIGNAL_LABEL = "arcsinh(-log10 p)"
METHOD_COLOURS = {
    "observed": "#222222",
    "avocado": "#1f77b4",
    "average_activity": "#ff7f0e",
}


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs) -> tuple[Figure, object]:
    """A new :class:`~matplotlib.figure.Figure` and its axes, as ``pyplot.subplots`` gives them.

    Drawn without pyplot, so no backend is chosen or changed and nothing needs
    closing: a user's notebook keeps its own backend. ``kwargs`` go to
    :meth:`Figure.subplots` (``squeeze``, ``sharex``, ``sharey``, ``gridspec_kw``...).
    """
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Write a figure as PNG or PDF, by the path's suffix (120 dpi, tight box)."""
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_tracks(
    path: str | os.PathLike,
    chrom: str,
    starts: np.ndarray,
    tracks: Mapping[str, np.ndarray],
    title: str,
    genes: pd.DataFrame | None = None,
    tss: pd.DataFrame | None = None,
    resolution: int = 25,
    bands: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> None:
    """Stack signal tracks over one locus, genes drawn beneath.

    Parameters
    ----------
    path : str or path-like
        PNG to write.
    chrom : str
        Chromosome of the locus.
    starts : numpy.ndarray, shape=(n_positions,)
        Genomic start (bp) of every bin shown.
    tracks : mapping of str to numpy.ndarray, shape=(n_positions,)
        Panel label to signal on the arcsinh scale, drawn top to bottom on a
        shared y scale.
    title : str
        Figure title.
    genes : pandas.DataFrame, optional
        ``chrom, start, end`` of gene bodies to draw. Default None: none.
    tss : pandas.DataFrame, optional
        ``chrom, start`` and optionally ``strand`` of TSSs to mark. Default None.
    resolution : int
        Bin width in bp. Default 25.
    bands : mapping of str to (numpy.ndarray, numpy.ndarray), optional
        Panel label to the ``(lower, upper)`` bounds of a prediction interval,
        each ``(n_positions,)``, arcsinh: drawn as a band behind the panel's
        signal, with the first panel's signal (the observed track) as a line
        over it, so the misses show. Default None: no band.
    """
    bands = dict(bands or {})
    n = len(tracks)
    fig, axes = subplots(
        n + 1,
        1,
        figsize=(10, 1.5 * n + 1.2),
        sharex=True,
        gridspec_kw={"height_ratios": [3] * n + [1]},
    )
    x = starts / 1e6
    shown = [*tracks.values(), *(upper for _, upper in bands.values())]
    top = max(float(np.nanmax(v)) for v in shown) * 1.05 or 1.0
    first = next(iter(tracks.values()))
    for ax, (label, values) in zip(axes[:-1], tracks.items()):
        key = label.split(" ")[0].lower()
        colour = METHOD_COLOURS.get(key, "#2ca02c")
        if label in bands:
            lower, upper = bands[label]
            ax.fill_between(x, lower, upper, step="post", color=colour, alpha=0.25, linewidth=0)
            ax.step(x, values, where="post", color=colour, linewidth=0.8)
            ax.step(x, first, where="post", color=METHOD_COLOURS["observed"], linewidth=0.6)
        else:
            ax.fill_between(x, values, step="post", color=colour, linewidth=0)
        ax.set_ylim(0, top)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_title(title)
    axes[n // 2].annotate(
        SIGNAL_LABEL, xy=(1.01, 0.5), xycoords="axes fraction", rotation=90, va="center"
    )
    gene_ax = axes[-1]
    lo, hi = starts.min(), starts.max() + resolution
    if genes is not None:
        here = genes[(genes.chrom == chrom) & (genes.end > lo) & (genes.start < hi)]
        for i, row in enumerate(here.itertuples()):
            y = i % 3
            gene_ax.plot(
                [max(row.start, lo) / 1e6, min(row.end, hi) / 1e6], [y, y], lw=4, color="#555555"
            )
    if tss is not None:
        here = tss[(tss.chrom == chrom) & (tss.start >= lo) & (tss.start < hi)]
        for row in here.itertuples():
            marker = ">" if getattr(row, "strand", "+") == "+" else "<"
            gene_ax.plot(row.start / 1e6, -1, marker=marker, color="#d62728", ms=5)
    gene_ax.set_ylim(-1.8, 2.8)
    gene_ax.set_yticks([])
    gene_ax.set_ylabel("genes / TSS", rotation=0, ha="right", va="center", fontsize=9)
    gene_ax.set_xlabel(f"{chrom} position (Mb, hg19)")
    gene_ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    gene_ax.spines[["top", "right", "left"]].set_visible(False)
    save_figure(fig, path)


def plot_training_curve(
    path: str | os.PathLike, history: pd.DataFrame, title: str, final_holdout: float | None = None
) -> None:
    """Training and held-out MSE per epoch.

    Parameters
    ----------
    path : str or path-like
        PNG to write.
    history : pandas.DataFrame
        One row per epoch with ``epoch``, ``train_mse`` and optionally
        ``holdout_mse`` (arcsinh scale).
    title : str
        Figure title.
    final_holdout : float, optional
        Held-out MSE of the parameters training ended with, when they are not
        the last epoch's (weight averaging, early stopping): a dashed line.
    """
    fig, ax = subplots(figsize=(6, 4))
    ax.plot(history.epoch, history.train_mse, "o-", label="training tracks")
    if "holdout_mse" in history and history.holdout_mse.notna().any():
        ax.plot(history.epoch, history.holdout_mse, "s-", label="held-out tracks")
    if final_holdout is not None and np.isfinite(final_holdout):
        ax.axhline(final_holdout, ls="--", color="C2", label="held-out, final (averaged) model")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"MSE, {SIGNAL_LABEL}")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def umap_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """Project rows to 2-D with UMAP (random init, so even a handful of rows works).

    Parameters
    ----------
    features : numpy.ndarray, shape=(n_rows, n_features)
    seed : int
        Random seed. Default 0.

    Returns
    -------
    numpy.ndarray, shape=(n_rows, 2)
    """
    import umap

    n = len(features)
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 rows; got {n}")
    reducer = umap.UMAP(
        n_neighbors=min(15, n - 1), init="random", random_state=seed, n_jobs=1, min_dist=0.3
    )
    return reducer.fit_transform(np.asarray(features, dtype=np.float32))


def plot_embedding_map(
    path: str | os.PathLike,
    coords: np.ndarray,
    labels: Sequence[str],
    title: str,
    annotate: bool = False,
) -> None:
    """Scatter a 2-D embedding, coloured by label.

    Parameters
    ----------
    path : str or path-like
        PNG to write.
    coords : numpy.ndarray, shape=(n_rows, 2)
        UMAP coordinates.
    labels : sequence of str, length n_rows
        Group of each row (legend) or, with ``annotate``, the name written by
        each point.
    title : str
        Figure title.
    annotate : bool
        Write each label next to its point instead of a legend. Default False.
    """
    fig, ax = subplots(figsize=(5, 4.5))
    labels = np.asarray(labels)
    for i, group in enumerate(dict.fromkeys(labels)):
        chosen = labels == group
        ax.scatter(
            coords[chosen, 0],
            coords[chosen, 1],
            s=60 if annotate else 6,
            alpha=1.0 if annotate else 0.5,
            color=colormaps["tab10"](i % 10),
            label=None if annotate else group,
        )
        if annotate:
            for x, y in coords[chosen]:
                ax.annotate(group, (x, y), textcoords="offset points", xytext=(5, 5))
    if not annotate:
        ax.legend(markerscale=3)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title)
    save_figure(fig, path)


def plot_reliability(path: str | os.PathLike, table: pd.DataFrame, title: str) -> None:
    """Reliability diagram: empirical against nominal coverage of prediction intervals.

    Parameters
    ----------
    path : str or path-like
        PNG to write.
    table : pandas.DataFrame
        Columns ``subset`` (``"all"``, ``"top1"``), ``method``, ``level``
        (nominal, in (0, 1)) and ``coverage`` (empirical), e.g.
        :func:`epitensor.evaluation.intervals.reliability_table`.
    title : str
        Figure title.
    """
    fig, ax = subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="#999999", linewidth=0.8, linestyle="--", label="calibrated")
    styles = {"all": "-", "top1": ":"}
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for i, (method, part) in enumerate(table.groupby("method", sort=False)):
        for subset, rows in part.groupby("subset", sort=False):
            rows = rows.sort_values("level")
            label = f"{method}" + (" (top 1% observed)" if subset == "top1" else "")
            ax.plot(rows.level, rows.coverage, marker="o", ms=3, color=colours[i % 4],
                    linestyle=styles.get(subset, "-"), label=label)  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage (held-out bins)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    save_figure(fig, path)
