"""Pairwise relationships between marks: how well imputed tracks keep the observed ones.

Empirically, some pairs of assays relate predictably across the promoters or
genes of one cell type: H3K4me3 and H3K27me3 rarely share a promoter, H3K36me3
over a gene body follows the gene's expression, and so on. A method may score
well on each track alone and still break these relationships; the paper
(Additional file 4) measures how well imputations keep them.

Definition used here (the paper's supplement, which holds its exact recipe, is
not part of the text we have; this is our choice, stated once):

1. Elements. *Promoters* are the annotation's promoters (2 kb upstream of each
   TSS, strand-aware; identical intervals counted once). *Genes* are the
   annotation's gene bodies; a gene's own promoter is the promoter whose TSS
   lies within :data:`TSS_TOLERANCE` bp of one end of the gene (its 5' end:
   the start when the promoter lies upstream of the start, the end when it lies
   downstream of the end; genes with no such promoter, or equally close ones at
   both ends, are left out).
2. Per-element signal. The mean arcsinh signal over the 25-bp bins that the
   element overlaps, blacklisted bins excluded. An element counts only when at
   least half of its bins lie on the store's layout outside the blacklist (the
   bundled sample covers 1% of the genome, so most genes are cut by a region
   edge).
3. Correlation. Per cell type and relationship, the Pearson correlation across
   elements of the two assays' per-element means (Spearman is given too). For
   a relationship between a promoter and a gene body, element ``i`` pairs the
   promoter of gene ``i`` with its body.
4. Methods. ``observed`` uses the store's tracks. A method is scored on a
   (cell type, relationship) when it imputed at least one of the two tracks;
   the other comes from the method's imputation if it has one, else from the
   observed data (column ``imputed`` says which). With the standard split each
   cell type has one held-out track, so a row measures whether that imputed
   track keeps its relationship with the cell type's other, observed marks.
5. Score. ``abs_error = |r_method - r_observed|`` per row;
   :func:`pairwise_summary` averages it over cell types (lower is better).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from epitensor._utils import EpitensorError
from epitensor.genome.annotations import Annotations
from epitensor.store.compendium import Store
from epitensor.store.registry import open_store

__all__ = [
    "RELATIONSHIPS",
    "Relationship",
    "gene_promoters",
    "pairwise_summary",
    "pairwise_table",
    "pairwise_wide",
    "write_pairwise",
]

Track = tuple[str, str]

TSS_TOLERANCE = 100
"""Largest distance in bp between a gene end and a TSS for the TSS to be the gene's."""

MIN_COVERED = 0.5
"""Share of an element's bins that must lie on the layout, outside the blacklist."""

MIN_ELEMENTS = 3
"""Fewest elements for a correlation; below it the row's correlations are NaN."""

COLUMNS = [
    "celltype",
    "relationship",
    "expected",
    "method",
    "imputed",
    "n_elements",
    "pearson",
    "spearman",
    "abs_error",
]


@dataclass(frozen=True)
class Relationship:
    """A pair of assays over a pair of element kinds.

    Parameters
    ----------
    x_assay, y_assay : str
        The two assays.
    x_region, y_region : str
        ``"promoter"`` or ``"gene body"``. When they differ, element ``i``
        pairs gene ``i``'s promoter with its body.
    expected : str
        The sign the biology predicts: ``"negative"``, ``"positive"`` or ``"none"``.
    """

    x_assay: str
    x_region: str
    y_assay: str
    y_region: str
    expected: str

    @property
    def name(self) -> str:
        """``"H3K4me3 promoter ~ H3K27me3 promoter"``."""
        return f"{self.x_assay} {self.x_region} ~ {self.y_assay} {self.y_region}"


EXPRESSION = "RNA-seq"

RELATIONSHIPS: tuple[Relationship, ...] = (
    Relationship("H3K4me3", "promoter", "H3K27me3", "promoter", "negative"),
    Relationship("H3K4me1", "promoter", "H3K27me3", "promoter", "none"),
    Relationship("H3K4me3", "promoter", "H3K36me3", "gene body", "positive"),
    Relationship("H3K27me3", "promoter", "H3K36me3", "gene body", "negative"),
    Relationship("H3K36me3", "gene body", EXPRESSION, "gene body", "positive"),
)
"""The relationships of the paper's Additional file 4 (RNA-seq where a store has it)."""


# elements ---------------------------------------------------------------------------


def gene_promoters(genes: pd.DataFrame, promoters: pd.DataFrame) -> pd.DataFrame:
    """Pair each gene body with its own promoter.

    A promoter ``[s, e)`` lying upstream of a + strand TSS ends at the TSS, so
    it belongs to a gene starting within :data:`TSS_TOLERANCE` bp of ``e``; a
    promoter of a - strand TSS starts one base past the TSS, so it belongs to
    a gene ending within the tolerance of ``s``. The nearer end wins; a tie,
    or no promoter near either end, drops the gene.

    Parameters
    ----------
    genes : pandas.DataFrame
        Gene bodies, ``chrom, start, end`` (0-based, half-open).
    promoters : pandas.DataFrame
        Promoters, ``chrom, start, end``, as from
        :func:`epitensor.genome.annotations.promoters`.

    Returns
    -------
    pandas.DataFrame
        One row per kept gene: ``chrom, start, end`` (the body) and
        ``promoter_start, promoter_end``.
    """
    rows = []
    for chrom, body in genes.groupby("chrom", sort=False):
        near = promoters[promoters.chrom == chrom]
        for gene in body.itertuples():
            plus = np.abs(near.end.to_numpy(dtype=np.float64) - gene.start)
            minus = np.abs(near.start.to_numpy(dtype=np.float64) - gene.end)
            best_plus = plus.min(initial=np.inf)
            best_minus = minus.min(initial=np.inf)
            if min(best_plus, best_minus) > TSS_TOLERANCE or best_plus == best_minus:
                continue
            chosen = near.iloc[int(np.argmin(plus if best_plus < best_minus else minus))]
            rows.append((chrom, gene.start, gene.end, int(chosen.start), int(chosen.end)))
    return pd.DataFrame(rows, columns=["chrom", "start", "end", "promoter_start", "promoter_end"])


def _element_intervals(
    relationship: Relationship, annotations: Annotations
) -> tuple[pd.DataFrame, pd.DataFrame] | str:
    """The x and y intervals of a relationship's elements (row i pairs), or why there are none."""
    kinds = {relationship.x_region, relationship.y_region}
    if "promoter" in kinds and annotations.promoters is None:
        return "no promoters in the annotations"
    if "gene body" in kinds and annotations.genes is None:
        return "no gene bodies in the annotations"
    if kinds == {"promoter"}:
        table = annotations.promoters.drop_duplicates(["chrom", "start", "end"])
        return table, table
    genes = annotations.genes.drop_duplicates(["chrom", "start", "end"])
    if kinds == {"gene body"}:
        return genes, genes
    paired = gene_promoters(genes, annotations.promoters)
    body = paired[["chrom", "start", "end"]]
    promoter = paired[["chrom", "promoter_start", "promoter_end"]].set_axis(
        ["chrom", "start", "end"], axis=1
    )
    return (promoter, body) if relationship.x_region == "promoter" else (body, promoter)


@dataclass
class _Elements:
    """Where each element's bins lie on the concatenated axes of a store."""

    starts: np.ndarray  # (n_runs,) first position of each run, concatenated axes
    ends: np.ndarray  # (n_runs,) one past its last position
    element: np.ndarray  # (n_runs,) element of each run
    n_elements: int

    @classmethod
    def locate(cls, intervals: pd.DataFrame, store: Store) -> _Elements:
        offsets = dict(zip(store.axes, np.cumsum([0] + [store.axis_length(a) for a in store.axes])))
        runs = store.layout.locate_many(intervals.reset_index(drop=True))
        shift = runs.axis.map(offsets).to_numpy(dtype=np.int64)
        return cls(
            starts=runs.axis_start.to_numpy(dtype=np.int64) + shift,
            ends=runs.axis_end.to_numpy(dtype=np.int64) + shift,
            element=runs.interval.to_numpy(dtype=np.int64),
            n_elements=len(intervals),
        )


def _element_means(
    values: np.ndarray, elements: _Elements, keep: np.ndarray, n_bins: np.ndarray
) -> np.ndarray:
    """Mean signal of each element over its kept bins (NaN when too few are kept).

    Parameters
    ----------
    values : numpy.ndarray, shape=(n_positions,), arcsinh
        A track over the store's axes, concatenated.
    elements : _Elements
        The elements' runs of positions.
    keep : numpy.ndarray, shape=(n_positions,), bool
        Positions outside the blacklist.
    n_bins : numpy.ndarray, shape=(n_elements,), int
        Bins each element spans on the genome, on the layout or not.

    Returns
    -------
    numpy.ndarray, shape=(n_elements,), float64
        Per-element mean; NaN for an element with fewer than
        :data:`MIN_COVERED` of its bins kept on the layout.
    """
    kept = np.where(keep, values, 0.0).astype(np.float64)
    total = np.concatenate([[0.0], np.cumsum(kept)])
    count = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    sums = np.bincount(
        elements.element,
        total[elements.ends] - total[elements.starts],
        minlength=elements.n_elements,
    )
    counts = np.bincount(
        elements.element,
        count[elements.ends] - count[elements.starts],
        minlength=elements.n_elements,
    )
    enough = (counts > 0) & (counts >= MIN_COVERED * n_bins)
    return np.where(enough, sums / np.maximum(counts, 1), np.nan)


def _spanned_bins(intervals: pd.DataFrame, resolution: int) -> np.ndarray:
    start = intervals.start.to_numpy(dtype=np.int64) // resolution
    end = -(-intervals.end.to_numpy(dtype=np.int64) // resolution)
    return end - start


# the table ----------------------------------------------------------------------------


def _expression_assay(store: Store) -> str | None:
    """The store's expression assay: one named RNA-seq (any case, with or without the dash)."""
    for assay in store.assays:
        if re.sub(r"[^a-z0-9]", "", assay.lower()) == "rnaseq":
            return assay
    return None


def _correlations(x: np.ndarray, y: np.ndarray) -> tuple[int, float, float]:
    """Number of elements with both means, their Pearson and Spearman correlation."""
    both = np.isfinite(x) & np.isfinite(y)
    n = int(both.sum())
    if n < MIN_ELEMENTS or np.ptp(x[both]) == 0 or np.ptp(y[both]) == 0:
        return n, np.nan, np.nan
    return (
        n,
        float(stats.pearsonr(x[both], y[both])[0]),
        float(stats.spearmanr(x[both], y[both])[0]),
    )


def _keep(store: Store, annotations: Annotations) -> np.ndarray:
    parts = []
    for axis in store.axes:
        keep = annotations.keep(store.layout, axis)
        parts.append(np.ones(store.axis_length(axis), bool) if keep is None else keep)
    return np.concatenate(parts)


def pairwise_table(
    tracks_by_method: Mapping[str, Mapping[Track, np.ndarray]],
    store: Store | str,
    annotations: Annotations | None = None,
    relationships: Sequence[Relationship] = RELATIONSHIPS,
) -> pd.DataFrame:
    """Correlation of each pair of marks across promoters / genes, observed and imputed.

    See the module docstring for the definition (elements, per-element mean
    arcsinh signal, Pearson across elements per cell type, the mix of imputed
    and observed tracks, ``abs_error``).

    Parameters
    ----------
    tracks_by_method : mapping
        ``{method: {(celltype, assay): imputed, shape=(n_positions,), arcsinh}}``
        over the store's axes concatenated (as in
        :attr:`epitensor.evaluation.benchmark.BenchmarkResult.predictions`). The name
        ``observed`` is reserved.
    store : Store or str
        The store with the observed tracks and the layout.
    annotations : Annotations, optional
        Promoters, gene bodies and blacklist. Default None: the bundled pilot
        annotations.
    relationships : sequence of Relationship
        Default :data:`RELATIONSHIPS`. A relationship naming ``RNA-seq`` uses
        the store's expression assay (any spelling of RNA-seq).

    Returns
    -------
    pandas.DataFrame
        One row per (cell type, relationship, method) scored, columns
        ``celltype, relationship, expected, method, imputed, n_elements,
        pearson, spearman, abs_error``. ``attrs["skipped"]`` maps each
        relationship not scored at all to the reason (e.g. no RNA-seq track).
    """
    store = open_store(store)
    if "observed" in tracks_by_method:
        raise EpitensorError("'observed' is reserved for the store's tracks; rename that method")
    annotations = Annotations.from_directory() if annotations is None else annotations
    keep = _keep(store, annotations)
    expression = _expression_assay(store)
    rows, skipped = [], {}
    for relationship in relationships:
        rel_rows = _relationship_rows(
            relationship, tracks_by_method, store, annotations, keep, expression
        )
        if isinstance(rel_rows, str):
            skipped[relationship.name] = rel_rows
        else:
            rows += rel_rows
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs["skipped"] = skipped
    return table


def _relationship_rows(relationship, tracks_by_method, store, annotations, keep, expression):
    """Rows of one relationship, or the reason it cannot be scored."""
    assays = [
        expression if a == EXPRESSION else a for a in (relationship.x_assay, relationship.y_assay)
    ]
    if None in assays:
        return f"no {EXPRESSION} track in {store.url}"
    missing = [a for a in assays if a not in store.assays]
    if missing:
        return f"no {missing[0]} track in {store.url}"
    intervals = _element_intervals(relationship, annotations)
    if isinstance(intervals, str):
        return intervals
    located = [(_Elements.locate(t, store), _spanned_bins(t, store.resolution)) for t in intervals]
    celltypes = [c for c in store.celltypes if all(store.has_track(c, a) for a in assays)]
    if not celltypes:
        return f"no cell type has both {assays[0]} and {assays[1]} observed"
    rows = []
    for celltype in celltypes:
        tracks = [(celltype, a) for a in assays]
        observed = [_read(store, t) for t in tracks]
        base = _scored(relationship, celltype, "observed", "", observed, located, keep)
        rows.append({**base, "abs_error": 0.0})
        for method, per_track in tracks_by_method.items():
            imputed = [t in per_track for t in tracks]
            if not any(imputed):
                continue
            values = [
                np.asarray(per_track[t]) if i else o for t, i, o in zip(tracks, imputed, observed)
            ]
            label = "+".join(a for a, i in zip(assays, imputed) if i)
            row = _scored(relationship, celltype, method, label, values, located, keep)
            row["abs_error"] = abs(row["pearson"] - base["pearson"])
            rows.append(row)
    return rows


def _read(store: Store, track: Track) -> np.ndarray:
    return np.concatenate([store.read_track(*track, axis) for axis in store.axes])


def _scored(relationship, celltype, method, imputed, values, located, keep) -> dict:
    for value in values:
        if value.shape != keep.shape:
            raise EpitensorError(
                f"{method}: a track of {celltype} has {value.shape[0]} positions, the store "
                f"{keep.shape[0]}; pass imputations over all the store's axes, concatenated"
            )
    x, y = (_element_means(v, e, keep, n) for v, (e, n) in zip(values, located))
    n, pearson, spearman = _correlations(x, y)
    return {
        "celltype": celltype,
        "relationship": relationship.name,
        "expected": relationship.expected,
        "method": method,
        "imputed": imputed,
        "n_elements": n,
        "pearson": pearson,
        "spearman": spearman,
    }


def pairwise_summary(table: pd.DataFrame) -> pd.DataFrame:
    """How well each method reproduces each observed relationship.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`pairwise_table`.

    Returns
    -------
    pandas.DataFrame
        Rows relationships, columns ``observed r`` (mean observed Pearson over
        the cell types where some method was scored), then one column per
        method: the mean of ``abs_error`` over those cell types (lower is better).
    """
    methods = [m for m in dict.fromkeys(table.method) if m != "observed"]
    scored = table[table.method != "observed"]
    errors = scored.pivot_table(
        index="relationship", columns="method", values="abs_error", aggfunc="mean", sort=False
    )
    observed = table[table.method == "observed"].set_index(["relationship", "celltype"]).pearson
    cells = scored[["relationship", "celltype"]].drop_duplicates()
    obs = observed.reindex(pd.MultiIndex.from_frame(cells)).groupby(level=0, sort=False).mean()
    summary = errors.reindex(columns=methods)
    summary.insert(0, "observed r", obs.reindex(summary.index))
    summary.index.name = "relationship"
    summary.columns.name = None
    return summary


def pairwise_wide(table: pd.DataFrame) -> pd.DataFrame:
    """Pearson r side by side: rows (relationship, cell type), columns observed then methods."""
    wide = table.pivot_table(
        index=["relationship", "celltype"], columns="method", values="pearson", sort=False
    )
    methods = ["observed"] + [m for m in dict.fromkeys(table.method) if m != "observed"]
    wide = wide.reindex(columns=[m for m in methods if m in wide.columns])
    scored = table[table.method != "observed"][["relationship", "celltype"]].drop_duplicates()
    wide = wide.reindex(pd.MultiIndex.from_frame(scored))
    wide.columns.name = None
    return wide


def write_pairwise(table: pd.DataFrame, folder: str | Path) -> list[Path]:
    """Write ``pairwise.csv`` (long), ``pairwise_summary.csv`` and ``pairwise.md`` into a folder.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    from epitensor.viz.tables import markdown_table

    folder = Path(folder)
    table.to_csv(folder / "pairwise.csv", index=False)
    summary = pairwise_summary(table)
    summary.to_csv(folder / "pairwise_summary.csv")
    wide = pairwise_wide(table)
    wide.index = [f"{r} ({c})" for r, c in wide.index]
    wide.index.name = "relationship (cell type)"
    lines = [
        "Mean |r_method - r_observed| over cell types (Pearson across elements; lower is better):",
        "",
        markdown_table(summary),
        "Pearson r per cell type:",
        "",
        markdown_table(wide),
    ]
    lines += [
        f"Not scored: {name} ({why})." for name, why in table.attrs.get("skipped", {}).items()
    ]
    (folder / "pairwise.md").write_text("\n".join(lines) + "\n")
    return [folder / n for n in ("pairwise.csv", "pairwise_summary.csv", "pairwise.md")]
