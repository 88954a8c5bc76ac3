"""Genome annotation from the latent space: HMM states of the genome factors, BED9 and enrichments.

The Avocado paper's Discussion proposes running a ChromHMM / Segway-like
segmentation on the learned representation instead of on observed tracks. This
module does that:

* **cell type-independent states** (default): each 25-bp position is described
  by its genome factors at all three scales (25 bp, 250 bp, 5 kbp),
  standardised, rotated onto their first ``n_components`` principal components
  and segmented by a Gaussian HMM along each layout region;
* **cell type-specific states** (``celltype=C``): the features are the model's
  imputed tracks of cell type C for every assay it knows (arcsinh), so a cell
  type with only some, or none, of its experiments run gets a full
  ChromHMM-like annotation.

Why a Gaussian HMM on principal components: neighbouring bins share states
(promoters span tens of bins, broad domains thousands), which an HMM's
transition matrix learns instead of smoothing by hand; the factors of one
position are strongly correlated, which a diagonal covariance ignores, so they
are decorrelated first (PCA), which also cuts the emission cost from 95-110
dimensions to 20. The coarse scales are kept: the 250-bp and 5-kbp factors
carry the broad domains (transcribed, Polycomb, heterochromatin) that the
25-bp factors alone miss, while the 25-bp factors place promoter edges.

Why imputed tracks for a cell type: the cell type embedding enters the network
only through the first layer, where it adds the same vector to every position's
pre-activation; any position-wise standardisation of a linear mix of factors and
embedding cancels it, so the cell type can only act through the network's
non-linearity, and its outputs, one imputed track per assay, are that effect
in interpretable units. With the bundled assays (H3K4me3, H3K4me1, H3K36me3,
H3K27me3, H3K9me3) this is the mark set of the Roadmap core ChromHMM model.

The HMM is fitted on a random sample of windows of positions (``sample_size``,
default 200,000 bins), EM started from a k-means clustering of the sample
(means, and start and transition probabilities counted from the cluster labels:
a uniform transition start let EM pair states into every-bin cycles, issue 35),
and every position is then decoded (Viterbi), one layout
region at a time (regions are separate pieces of the genome; no state runs
across two; a region longer than 1,048,576 bins, 26 Mb, is decoded in blocks
of that length to bound memory). Each state's mean imputed signal per (cell type, assay) is taken
over the fitted sample; its enrichment for an annotation is computed over every
covered position, as ChromHMM's ``OverlapEnrichment`` does: the fraction of the
state's bins overlapping the annotation over the fraction of all bins
overlapping it.

States are numbered 1..K by decreasing mean imputed signal (averaged over
every track), so the most active state comes first. Intervals are 0-based,
half-open; bin ``i`` of a chromosome covers ``[25 i, 25 i + 25)``, clipped to
the chromosome's length.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from epitensor._utils import EpitensorError, atomic_write_bytes, progress, warn
from epitensor.estimators.avocado import load_model
from epitensor.genome.annotations import promoters, read_tss
from epitensor.genome.coordinates import Layout, read_bed
from epitensor.workflows.options import AnnotateOptions

if TYPE_CHECKING:
    from epitensor.genome.coordinates import Locus

__all__ = [
    "CHROMHMM_FAMILIES",
    "StateAnnotation",
    "annotate",
    "annotation_intervals",
    "chromhmm_band",
    "element_states",
    "enrichment_summary",
    "output_paths",
    "overlap_counts",
    "overlap_enrichment",
    "plot_enrichment",
    "plot_locus_states",
    "plot_signal",
    "plot_states_locus",
    "state_colours",
    "states_to_bed",
]

DEFAULT_STATES = AnnotateOptions.n_states
DEFAULT_COMPONENTS = AnnotateOptions.n_components
DEFAULT_SAMPLE = AnnotateOptions.sample_size
WINDOW = 2_000  # bins per sampled window: long enough to hold whole domains and their edges
DECODE_BLOCK = 1 << 20  # bins decoded at once (a longer region is cut at block edges)
PREDICT_BLOCK = 1 << 16
GENOME_COLUMN = "genome %"
PROMOTER_STATES = r"Tss|Prom"  # ChromHMM state names pooled as promoter states
ENHANCER_STATES = r"Enh"  # and as enhancer states


# --------------------------------------------------------------------------------------
# annotations: interval sets to score the states against
# --------------------------------------------------------------------------------------


def _points(tss: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"chrom": tss.chrom, "start": tss.pos, "end": tss.pos + 1})


def _chromhmm_sets(path: Path) -> dict[str, pd.DataFrame]:
    """Each state of a ChromHMM segmentation, plus its promoter and enhancer states pooled."""
    bed = read_bed(path)
    unnamed = bed.chrom + ":" + bed.start.astype(str) + "-" + bed.end.astype(str)
    if (bed.name == unnamed).all():  # read_bed names BED3 intervals by their coordinates
        raise EpitensorError(f"{path}: a ChromHMM segmentation needs the state name in column 4")
    prefix = path.name.split("_chromhmm")[0]

    def number(name: str) -> tuple:
        head = name.split("_", 1)[0]
        return (int(head), name) if head.isdigit() else (1 << 30, name)

    sets = {}
    names = sorted(bed.name.unique(), key=number)
    pooled = {
        "promoter states": [n for n in names if re.search(PROMOTER_STATES, n)],
        "enhancer states": [n for n in names if re.search(ENHANCER_STATES, n)],
    }
    for label, members in pooled.items():
        if members:
            sets[f"{prefix} {label}"] = bed[bed.name.isin(members)]
    for name in names:
        sets[f"{prefix} {name}"] = bed[bed.name == name]
    return sets


def annotation_intervals(directory: str | os.PathLike | None = None) -> dict[str, pd.DataFrame]:
    """The interval sets the states are scored against, from an annotation folder.

    Reads what the folder holds among (files named as their sources publish them):
    ``gencode.v19.TSS.notlow.gff.gz`` (``TSS``: the bin holding each TSS, and
    ``promoter``: the 2 kb upstream, strand-aware), ``RefSeqTSS.hg19.bed.gz``
    (``RefSeq TSS``), ``RefSeqGene.hg19.bed.gz`` (``gene body``),
    ``RefSeqExon.hg19.bed.gz`` (``exon``), ``CpGIsland.hg19.bed.gz``
    (``CpG island``) and every ``*_chromhmm*.bed.gz`` segmentation (one set
    per state, named ``<prefix> <state>``, plus ``<prefix> promoter states``
    (Tss*/Prom*) and ``<prefix> enhancer states`` (*Enh*) pooled).

    Parameters
    ----------
    directory : str or path-like, optional
        The folder. Default None: the annotations bundled with the package,
        cut to the ENCODE pilot regions (no RefSeq TSS, exons or CpG islands).

    Returns
    -------
    dict of str to pandas.DataFrame
        Name to intervals ``chrom, start, end`` (0-based, half-open), in the
        order above.
    """
    if directory is None:
        from epitensor.genome.pilot import pilot_annotations_dir

        directory = pilot_annotations_dir()
    directory = Path(directory)
    if not directory.is_dir():
        raise EpitensorError(f"annotation folder not found: {directory}")
    sets: dict[str, pd.DataFrame] = {}
    gencode = directory / "gencode.v19.TSS.notlow.gff.gz"
    if gencode.is_file():
        tss = read_tss(gencode)
        sets["TSS"] = _points(tss)
        sets["promoter"] = promoters(tss)
    plain = {
        "RefSeq TSS": "RefSeqTSS.hg19.bed.gz",
        "gene body": "RefSeqGene.hg19.bed.gz",
        "exon": "RefSeqExon.hg19.bed.gz",
        "CpG island": "CpGIsland.hg19.bed.gz",
    }
    for label, name in plain.items():
        if (directory / name).is_file():
            sets[label] = read_bed(directory / name)
    for path in sorted(directory.glob("*_chromhmm*.bed*")):
        sets.update(_chromhmm_sets(path))
    if not sets:
        raise EpitensorError(
            f"no known annotation file in {directory}; expected any of "
            f"{['gencode.v19.TSS.notlow.gff.gz', *plain.values(), '*_chromhmm*.bed.gz']}"
        )
    return sets


# --------------------------------------------------------------------------------------
# enrichment: ChromHMM's overlap-enrichment
# --------------------------------------------------------------------------------------


def overlap_counts(
    states: np.ndarray, masks: dict[str, np.ndarray], n_states: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin counts behind the overlap enrichment (summable over axes).

    Parameters
    ----------
    states : numpy.ndarray, shape=(n_positions,), int
        State of each bin, 0-based; -1 for bins outside the layout (ignored).
    masks : dict of str to numpy.ndarray, shape=(n_positions,), bool
        True where a bin overlaps the annotation.
    n_states : int
        Number of states K.

    Returns
    -------
    per_state : numpy.ndarray, shape=(n_states,), int64
        Bins in each state.
    overlap : numpy.ndarray, shape=(n_states, n_annotations), int64
        Bins of each state overlapping each annotation.
    per_annotation : numpy.ndarray, shape=(n_annotations,), int64
        Covered bins overlapping each annotation.
    """
    covered = states >= 0
    s = states[covered]
    per_state = np.bincount(s, minlength=n_states).astype(np.int64)
    overlap = np.zeros((n_states, len(masks)), dtype=np.int64)
    per_annotation = np.zeros(len(masks), dtype=np.int64)
    for j, mask in enumerate(masks.values()):
        m = np.asarray(mask, dtype=bool)[covered]
        overlap[:, j] = np.bincount(s[m], minlength=n_states)
        per_annotation[j] = int(m.sum())
    return per_state, overlap, per_annotation


def _enrichment_table(
    per_state: np.ndarray, overlap: np.ndarray, per_annotation: np.ndarray, names: list[str]
) -> pd.DataFrame:
    total = per_state.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        state_fraction = overlap / per_state[:, None]
        enrichment = state_fraction / (per_annotation / total)[None, :]
    table = pd.DataFrame(enrichment, columns=names, index=_state_names(len(per_state)))
    table.insert(0, GENOME_COLUMN, 100 * per_state / max(total, 1))
    table.index.name = "state"
    return table


def overlap_enrichment(
    states: np.ndarray, masks: dict[str, np.ndarray], n_states: int
) -> pd.DataFrame:
    """Fold enrichment of each state for each annotation (ChromHMM's overlap enrichment).

    ``enrichment[k, a] = (bins of state k overlapping a / bins of state k) /
    (bins overlapping a / all bins)``: 1 means no preference; NaN where a state
    has no bins or an annotation covers none.

    Parameters
    ----------
    states : numpy.ndarray, shape=(n_positions,), int
        State of each bin, 0-based; -1 for bins outside the layout (ignored).
    masks : dict of str to numpy.ndarray, shape=(n_positions,), bool
        True where a bin overlaps the annotation.
    n_states : int
        Number of states K.

    Returns
    -------
    pandas.DataFrame
        Index ``S1``..``SK``; column ``genome %`` (share of the bins in each
        state, percent), then one column of fold enrichment per annotation.
    """
    counts = overlap_counts(states, masks, n_states)
    return _enrichment_table(*counts, list(masks))


SUMMARY_COLUMNS = (
    GENOME_COLUMN,
    "TSS",
    "RefSeq TSS",
    "CpG island",
    "gene body",
    "E116 promoter states",
    "E116 1_TssA",
    "E116 enhancer states",
    "E116 13_EnhA1",
    "E116 14_EnhA2",
    "E116 6_Tx",
    "E116 24_ReprPC",
    "E116 21_Het",
    "E116 25_Quies",
)


def enrichment_summary(enrichment: pd.DataFrame) -> pd.DataFrame:
    """The enrichment columns shown in the README and the demo report (those the table has).

    Parameters
    ----------
    enrichment : pandas.DataFrame
        From :func:`overlap_enrichment`.

    Returns
    -------
    pandas.DataFrame
        The columns of :data:`SUMMARY_COLUMNS` present in ``enrichment``, in that order:
        share of the genome, TSS, CpG islands, gene bodies and the main E116 ChromHMM
        states (pooled promoter and enhancer states first).
    """
    return enrichment[[c for c in SUMMARY_COLUMNS if c in enrichment.columns]]


def element_states(enrichment: pd.DataFrame) -> pd.DataFrame:
    """The promoter-like and the enhancer-like state of an enrichment table.

    The promoter-like state is the one most enriched for a segmentation's pooled
    promoter states (the first ``<prefix> promoter states`` column; ``TSS``
    when the table has no segmentation). The enhancer-like state is, among the
    other states, the one most enriched for the pooled enhancer states of that
    segmentation (no enhancer row without one).

    Parameters
    ----------
    enrichment : pandas.DataFrame
        From :func:`overlap_enrichment`.

    Returns
    -------
    pandas.DataFrame
        Index ``promoter``, ``enhancer`` (a row for each the table allows); columns
        ``state``, ``genome %``, ``annotation`` (the column chosen on), ``fold``
        (the state's enrichment for it), ``strongest member`` (the single
        segmentation state of that family the state is most enriched for; None
        without a segmentation) and ``member fold``.
    """
    rows, taken = {}, []
    for element, pattern, fallback in (
        ("promoter", PROMOTER_STATES, "TSS"),
        ("enhancer", ENHANCER_STATES, None),
    ):
        pooled = [c for c in enrichment.columns if c.endswith(f" {element} states")]
        column = pooled[0] if pooled else fallback
        if column not in enrichment.columns:
            continue
        fold = enrichment[column].drop(taken).astype(float)
        if not fold.notna().any():
            continue
        state = fold.idxmax()
        taken.append(state)
        best, best_fold = None, np.nan
        if pooled:
            prefix = column[: -len(f" {element} states")] + " "
            members = [
                c
                for c in enrichment.columns
                if c.startswith(prefix)
                and not c.endswith(" states")
                and re.search(pattern, c[len(prefix) :])
            ]
            values = enrichment.loc[state, members].astype(float)
            if values.notna().any():
                best, best_fold = values.idxmax(), float(values.max())
        rows[element] = {
            "state": state,
            GENOME_COLUMN: float(enrichment.at[state, GENOME_COLUMN]),
            "annotation": column,
            "fold": float(fold[state]),
            "strongest member": best,
            "member fold": best_fold,
        }
    columns = ["state", GENOME_COLUMN, "annotation", "fold", "strongest member", "member fold"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


# --------------------------------------------------------------------------------------
# the result and its files
# --------------------------------------------------------------------------------------


def _state_names(n_states: int) -> list[str]:
    return [f"S{k + 1}" for k in range(n_states)]


def state_colours(n_states: int) -> list[tuple[int, int, int]]:
    """One distinct RGB colour (0-255) per state: matplotlib's tab10 / tab20, then an HSV wheel."""
    from matplotlib import colormaps
    from matplotlib.colors import hsv_to_rgb

    if n_states <= 10:
        rgb = colormaps["tab10"].colors[:n_states]
    elif n_states <= 20:
        rgb = colormaps["tab20"].colors[:n_states]
    else:
        rgb = [hsv_to_rgb((k / n_states, 0.75, 0.9)) for k in range(n_states)]
    return [tuple(int(round(255 * c)) for c in colour[:3]) for colour in rgb]


def states_to_bed(
    states: dict[str, np.ndarray],
    layout: Layout,
    chrom_sizes: pd.Series,
    colours: list[tuple[int, int, int]],
) -> pd.DataFrame:
    """BED9 records of the states: runs of one state merged, one colour per state.

    Parameters
    ----------
    states : dict of str to numpy.ndarray, shape=(n_positions,), int
        Axis to the 0-based state of each of its positions (-1: not in any region).
    layout : Layout
        Where each axis position lies in the genome.
    chrom_sizes : pandas.Series
        Chromosome lengths in bp (the last bin is clipped to it).
    colours : list of (int, int, int)
        RGB of each state.

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom, start, end, name, score, strand, thickStart, thickEnd,
        itemRgb`` (0-based, half-open), sorted by chromosome (lexicographic, as
        ``sort -k1,1 -k2,2n``) then start; ``name`` is ``S1``..``SK``.
    """
    names = np.array(_state_names(len(colours)))
    rgb = np.array([f"{r},{g},{b}" for r, g, b in colours])
    pieces = []
    res = layout.resolution
    for row in layout.regions.itertuples():
        if row.axis not in states:
            continue
        s = np.asarray(states[row.axis][row.offset : row.offset + row.n_bins])
        change = np.flatnonzero(np.diff(s)) + 1
        first = np.concatenate([[0], change])
        last = np.concatenate([change, [len(s)]])
        value = s[first]
        keep = value >= 0
        first, last, value = first[keep], last[keep], value[keep]
        start = (row.first_bin + first) * res
        end = np.minimum((row.first_bin + last) * res, int(chrom_sizes[row.chrom]))
        pieces.append(
            pd.DataFrame({"chrom": row.chrom, "start": start, "end": end, "state": value})
        )
    if not pieces:
        raise EpitensorError("no layout region lies on the annotated axes")
    table = pd.concat(pieces, ignore_index=True)
    table = table.sort_values(["chrom", "start"], kind="stable", ignore_index=True)
    return pd.DataFrame(
        {
            "chrom": table.chrom,
            "start": table.start.astype(np.int64),
            "end": table.end.astype(np.int64),
            "name": names[table.state],
            "score": 0,
            "strand": ".",
            "thickStart": table.start.astype(np.int64),
            "thickEnd": table.end.astype(np.int64),
            "itemRgb": rgb[table.state],
        }
    )


@dataclass
class StateAnnotation:
    """States of every position of a model's layout, with their signal and enrichments.

    Attributes
    ----------
    states : dict of str to numpy.ndarray, shape=(n_positions,), int16
        Axis to the 0-based state of each position (-1 outside every region).
    n_states : int
        Number of states K.
    features : str
        ``"genome factors"`` or ``"imputed tracks of <cell type>"``.
    signal : pandas.DataFrame
        Index ``S1``..``SK``; one column per ``CELLTYPE:ASSAY``: the state's mean
        imputed signal (arcsinh) over the fitted sample of positions.
    enrichment : pandas.DataFrame
        From :func:`overlap_enrichment`, over every covered position.
    colours : list of (int, int, int)
        RGB of each state.
    layout : Layout
        The model's layout.
    chrom_sizes : pandas.Series
        Chromosome lengths in bp.
    params : dict
        The resolved parameters (written as JSON beside the BED).
    """

    states: dict[str, np.ndarray]
    n_states: int
    features: str
    signal: pd.DataFrame
    enrichment: pd.DataFrame
    colours: list[tuple[int, int, int]]
    layout: Layout
    chrom_sizes: pd.Series
    params: dict = field(default_factory=dict)

    def to_bed(self) -> pd.DataFrame:
        """The BED9 records (see :func:`states_to_bed`)."""
        return states_to_bed(self.states, self.layout, self.chrom_sizes, self.colours)

    def write(
        self, out: str | os.PathLike, overwrite: bool = False, track_line: bool = True
    ) -> dict[str, Path]:
        """Write the BED9, both tables (TSV), both heatmaps (PNG) and the parameters (JSON).

        Every file is rendered in memory first and then renamed into place, so
        a failure leaves no partial output.

        Parameters
        ----------
        out : str or path-like
            The BED file, e.g. ``states.bed``; the others go beside it
            (``states.enrichment.tsv``, ``states.signal.tsv``,
            ``states.enrichment.png``, ``states.signal.png``, ``states.json``).
        overwrite : bool
            Replace existing files. Default False: refuse.
        track_line : bool
            Start the BED with a UCSC ``track`` line carrying ``itemRgb="On"``
            (the UCSC browser shows the colours only then; IGV always does).
            Default True.

        Returns
        -------
        dict of str to pathlib.Path
            The written files.
        """
        paths = output_paths(out)
        if not overwrite:
            _refuse_existing(paths)
        blobs = {
            "bed": self._bed_bytes(track_line),
            "enrichment": self.enrichment.to_csv(sep="\t", float_format="%.4g").encode(),
            "signal": self.signal.to_csv(sep="\t", float_format="%.4g").encode(),
            "enrichment_png": _png(plot_enrichment, self.enrichment, self.colours, self.features),
            "signal_png": _png(plot_signal, self.signal, self.colours, self.features),
            "params": (json.dumps(self.params, indent=1) + "\n").encode(),
        }
        for key, data in blobs.items():
            atomic_write_bytes(paths[key], data)
        return paths

    def _bed_bytes(self, track_line: bool) -> bytes:
        text = io.StringIO()
        if track_line:
            text.write(
                f'track name="epitensor_states" description="{self.n_states} states of the '
                f'{self.features}" itemRgb="On"\n'
            )
        self.to_bed().to_csv(text, sep="\t", header=False, index=False)
        return text.getvalue().encode()


def output_paths(out: str | os.PathLike) -> dict[str, Path]:
    """Where :meth:`StateAnnotation.write` puts each file for a BED path ``out``.

    Returns
    -------
    dict of str to pathlib.Path
        ``bed`` (``out``), ``enrichment``, ``signal`` (TSV), ``enrichment_png``,
        ``signal_png`` and ``params`` (JSON), named ``<stem>.<kind>.<ext>``.
    """
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return {
        "bed": out,
        "enrichment": out.with_name(f"{stem}.enrichment.tsv"),
        "signal": out.with_name(f"{stem}.signal.tsv"),
        "enrichment_png": out.with_name(f"{stem}.enrichment.png"),
        "signal_png": out.with_name(f"{stem}.signal.png"),
        "params": out.with_name(f"{stem}.json"),
    }


def _refuse_existing(paths: dict[str, Path]) -> None:
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing:
        raise EpitensorError(
            f"{existing[0]} already exists; choose another --out or pass overwrite"
        )


def _png(plot, *args) -> bytes:
    buffer = io.BytesIO()
    plot(buffer, *args)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------
# features, fitting, decoding
# --------------------------------------------------------------------------------------


def _windows(layout: Layout, axes: list[str], size: int) -> pd.DataFrame:
    """Windows of at most ``size`` bins tiling every region of ``axes``: ``axis, start, end``."""
    rows = []
    for axis in axes:
        for region in layout.axis_regions(axis).itertuples():
            for lo in range(region.offset, region.offset + region.n_bins, size):
                rows.append((axis, lo, min(lo + size, region.offset + region.n_bins)))
    return pd.DataFrame(rows, columns=["axis", "start", "end"])


def _sample_windows(layout: Layout, axes: list[str], sample_size: int, seed: int) -> pd.DataFrame:
    windows = _windows(layout, axes, WINDOW)
    lengths = (windows.end - windows.start).to_numpy()
    if lengths.sum() <= sample_size:
        return windows
    order = np.random.default_rng(seed).permutation(len(windows))
    n = int(np.searchsorted(np.cumsum(lengths[order]), sample_size)) + 1
    return windows.iloc[np.sort(order[:n])].reset_index(drop=True)


class _Features:
    """The per-position features the HMM sees, and their standardisation and rotation."""

    def __init__(self, model, celltype: str | None, n_components: int):
        self.model = model
        self.tracks = None if celltype is None else [(celltype, a) for a in model.assays_]
        self.n_components = n_components

    def raw(self, axis: str, start: int, end: int) -> np.ndarray:
        """Factors or imputed tracks of positions ``[start, end)``, shape ``(n, n_features)``."""
        if self.tracks is None:
            return self.model.genome_factors(axis, start, end)
        return self.model.predict_tracks(self.tracks, axis, start, end).T

    def fit(self, sample: np.ndarray) -> None:
        """Standardise and find the principal axes on ``sample``, shape ``(n, n_features)``."""
        self.mean = sample.mean(axis=0)
        self.scale = sample.std(axis=0)
        self.scale[self.scale == 0] = 1.0  # a constant factor carries no state information
        z = (sample - self.mean) / self.scale
        _, _, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
        self.components = vt[: min(self.n_components, vt.shape[0])].T

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Standardised, rotated features, shape ``(n, n_components)``, float64."""
        return ((raw - self.mean) / self.scale) @ self.components


def _check_arguments(model, n_states, celltype, axes, n_components, sample_size) -> list[str]:
    if isinstance(n_states, bool) or not isinstance(n_states, (int, np.integer)) or n_states < 2:
        raise EpitensorError(
            f"invalid number of states: must be an integer >= 2; got n_states={n_states!r}"
        )
    if n_components < 1:
        raise EpitensorError(f"must be a positive integer; got n_components={n_components!r}")
    if sample_size < 10 * n_states:
        raise EpitensorError(
            f"sample_size must be at least 10 bins per state ({10 * n_states}); "
            f"got sample_size={sample_size!r}"
        )
    if celltype is not None and celltype not in model.celltypes_:
        raise EpitensorError(
            f"unknown cell type {celltype!r}; the model knows {model.celltypes_} "
            f"(add one with `epitensor extend`)"
        )
    fitted = list(model.genome_axes_)
    axes = fitted if not axes else list(axes)
    unknown = [a for a in axes if a not in fitted]
    if unknown:
        raise EpitensorError(
            f"the model has no genome factors for axis {unknown[0]!r}; it has {fitted}"
        )
    empty = [a for a in axes if model.layout_.axis_regions(a).empty]
    if len(empty) == len(axes):
        raise EpitensorError(f"no layout region lies on the axes {axes}; nothing to annotate")
    return [a for a in axes if a not in empty]


def _check_identifiable(features: np.ndarray, n_states: int) -> None:
    """Refuse, before any work, an HMM with more free parameters than the sample has values.

    hmmlearn's own criterion for a degenerate fit. Such a fit (trial T6: 400 states
    on 4,000 bins) ran its EM for minutes before failing with NaN start probabilities.
    """
    n, d = features.shape
    # start probabilities, transitions, means and variances
    free = (n_states - 1) + n_states * (n_states - 1) + 2 * n_states * d
    if free > n * d:
        raise EpitensorError(
            f"the {n_states}-state HMM could not be fitted to {n:,} bins x {d} features: it has "
            f"{free:,} free parameters for {n * d:,} values; use fewer states (--states), "
            f"fewer components (--components) or a larger sample (--sample)"
        )


def _kmeans_transitions(labels: np.ndarray, lengths: list[int], n_states: int) -> np.ndarray:
    """Transition matrix counted from k-means labels along each window, shape ``(K, K)``.

    One pseudo-count per cell keeps every transition possible. Neighbouring
    bins mostly share a k-means cluster, so the matrix is diagonal-heavy: the
    HMM starts from states that persist, as chromatin states do.
    """
    counts = np.ones((n_states, n_states))
    ends = np.cumsum(lengths)
    step = np.ones(len(labels) - 1, dtype=bool)
    step[ends[:-1] - 1] = False  # no transition across two windows
    np.add.at(counts, (labels[:-1][step], labels[1:][step]), 1)
    return counts / counts.sum(axis=1, keepdims=True)


def _fit_hmm(features: np.ndarray, lengths: list[int], n_states: int, n_iter: int, seed: int):
    """A diagonal Gaussian HMM fitted by EM, every parameter started from a k-means clustering.

    The transition matrix starts from the k-means labels' own transitions
    (:func:`_kmeans_transitions`), not hmmlearn's uniform one: from a uniform
    start, EM can pair two states into a cycle (``a -> b -> a`` with probability
    ~1, the two states' emissions converging to one), a worse local optimum in
    which the pair takes turns every bin (issue 35, item 4).
    """
    from hmmlearn.hmm import GaussianHMM
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    _check_identifiable(features, n_states)
    hmm = GaussianHMM(
        n_components=n_states,
        covariance_type="diag",
        n_iter=n_iter,
        # hmmlearn's tolerance is on the total log-likelihood: stop below 1e-4 nats per bin
        tol=1e-4 * len(features),
        random_state=seed,
        implementation="scaling",
        init_params="c",  # means, start and transition probabilities come from the k-means
    )
    # hmmlearn's own initialisation (k-means, 10 restarts), on one OpenMP thread: on a
    # busy 2-core machine two threads made it 8x slower (31 s against 3.8 s for
    # 50,000 x 20 bins), more than the whole rest of the fit.
    try:
        with threadpool_limits(limits=1, user_api="openmp"):
            kmeans = KMeans(n_clusters=n_states, random_state=seed, n_init=10).fit(features)
        labels = kmeans.labels_
        hmm.means_ = kmeans.cluster_centers_
        hmm.transmat_ = _kmeans_transitions(labels, lengths, n_states)
        first = labels[np.cumsum([0, *lengths[:-1]])]
        start = np.bincount(first, minlength=n_states) + 1.0
        hmm.startprob_ = start / start.sum()
        hmm.fit(features, lengths)
        learned = (hmm.startprob_, hmm.transmat_, hmm.means_, hmm.covars_)
        if not all(np.isfinite(a).all() for a in learned):  # states that no bin kept
            raise ValueError("the fit left states with undefined parameters")
        return hmm
    except ValueError as exc:  # hmmlearn's NaN start probabilities, underflow (trials T6, T7)
        # hmmlearn's own advice (another `implementation`) is no option of the command
        reason = str(exc).splitlines()[0].split("; consider")[0]
        raise EpitensorError(
            f"the {n_states}-state HMM could not be fitted to {len(features):,} bins x "
            f"{features.shape[1]} features ({reason}); use fewer states "
            f"(--states), fewer components (--components) or a larger sample (--sample)"
        ) from None


def annotate(
    model,
    out: str | os.PathLike | None = None,
    *,
    options: AnnotateOptions | None = None,
    **overrides,
) -> StateAnnotation:
    """Segment the genome into K states from the latent space (or one cell type's imputations).

    The settings (states, cell type, axes, annotations, the HMM's components,
    sample, iterations and seed, device, overwriting, progress) are an
    :class:`~epitensor.workflows.options.AnnotateOptions`, given whole as
    ``options`` or field by field as keywords (``n_states=8``), or both (the
    keywords win); ``epitensor annotate`` builds the same object.

    Parameters
    ----------
    model : Avocado or path
        A fitted model or a model directory.
    out : str or path-like, optional
        Also write the result there (see :meth:`StateAnnotation.write`);
        existing files are refused before any work. Default None: write nothing.
    options : AnnotateOptions, optional
        The settings. Default None: ``AnnotateOptions()``.
    **overrides
        Fields of :class:`~epitensor.workflows.options.AnnotateOptions`
        replacing those of ``options`` (``n_states``, ``celltype``, ``axes``,
        ``annotations``, ``n_components``, ``sample_size``, ``n_iter``,
        ``seed``, ``device``, ``overwrite``, ``verbose``); any other name is
        refused.

    Returns
    -------
    StateAnnotation

    Examples
    --------
    >>> import epitensor as et
    >>> states = et.annotate("model/", n_states=10, out="states/")
    """
    opts = AnnotateOptions.resolve(options, **overrides)
    if out is not None and not opts.overwrite:
        _refuse_existing(output_paths(out))
    model = load_model(model)
    axes = _check_arguments(
        model, opts.n_states, opts.celltype, opts.axes, opts.n_components, opts.sample_size
    )
    previous_device = model.device
    if opts.device is not None:
        model.set_params(device=opts.device)
    try:
        result = _annotate(model, axes, opts)
    finally:
        model.set_params(device=previous_device)  # the caller's model keeps its own setting
    if out is not None:
        result.write(out, overwrite=opts.overwrite)
    return result


def _annotate(model, axes: list[str], opts: AnnotateOptions) -> StateAnnotation:
    """The work of :func:`annotate` on a validated model: fit, decode, score, number the states."""
    n_states, celltype, annotations = opts.n_states, opts.celltype, opts.annotations
    sample_size, n_iter, seed, verbose = opts.sample_size, opts.n_iter, opts.seed, opts.verbose
    intervals = annotation_intervals(annotations)
    features = _Features(model, celltype, opts.n_components)
    windows = _sample_windows(model.layout_, axes, sample_size, seed)
    tracks = [(c, a) for c in model.celltypes_ for a in model.assays_]
    raw, signal = [], []
    for w in progress(list(windows.itertuples()), desc="sample", verbose=verbose, unit="window"):
        raw.append(features.raw(w.axis, w.start, w.end))
        signal.append(model.predict_tracks(tracks, w.axis, w.start, w.end).T)
    features.fit(np.concatenate(raw))
    sample = np.concatenate([features.transform(r) for r in raw])
    hmm = _fit_hmm(sample, [len(r) for r in raw], n_states, n_iter, seed)

    states, counts = {}, None
    for axis in progress(axes, desc="decode", verbose=verbose, unit="axis"):
        states[axis] = _decode_axis(model, hmm, features, axis)
        axis_counts = _axis_counts(model.layout_, axis, states[axis], intervals, n_states)
        counts = axis_counts if counts is None else [a + b for a, b in zip(counts, axis_counts)]

    sample_states = np.concatenate([states[w.axis][w.start : w.end] for w in windows.itertuples()])
    means = _state_means(np.concatenate(signal), sample_states, n_states)
    order = _renumber(states, means)
    per_state, overlap, per_annotation = counts
    enrichment = _enrichment_table(
        per_state[order], overlap[order], per_annotation, list(intervals)
    )
    signal_table = pd.DataFrame(
        means[order], index=_state_names(n_states), columns=[f"{c}:{a}" for c, a in tracks]
    )
    signal_table.index.name = "state"
    kind = "genome factors" if celltype is None else f"imputed tracks of {celltype}"
    params = {
        "n_states": int(n_states),
        "celltype": celltype,
        "features": kind,
        "axes": axes,
        "annotations": None if annotations is None else str(annotations),
        "n_components": int(features.components.shape[1]),
        "sample_size": int(sample_size),
        "sampled_bins": int(len(sample)),
        "n_iter": int(n_iter),
        "em_iterations": int(len(hmm.monitor_.history)),
        "converged": _converged(hmm.monitor_),
        "shortest_state_bins": _shortest_state(hmm),
        "seed": int(seed),
        "genome": model.genome_,
        "resolution": int(model.layout_.resolution),
    }
    return StateAnnotation(
        states=states,
        n_states=int(n_states),
        features=kind,
        signal=signal_table,
        enrichment=enrichment,
        colours=state_colours(n_states),
        layout=model.layout_,
        chrom_sizes=model.chrom_sizes_,
        params=params,
    )


def _state_means(signal: np.ndarray, states: np.ndarray, n_states: int) -> np.ndarray:
    """Mean of ``signal`` (``(n, n_tracks)``) over the bins of each state: ``(n_states, n_tracks)``.

    NaN for a state with no bin in ``states`` (``(n,)``, 0-based).
    """
    means = np.full((n_states, signal.shape[1]), np.nan)
    for k in range(n_states):
        if (states == k).any():
            means[k] = signal[states == k].mean(axis=0)
    return means


def _renumber(states: dict[str, np.ndarray], means: np.ndarray) -> np.ndarray:
    """Renumber the states in place by decreasing mean signal; returns the old index of each new one."""
    order = np.argsort(-np.nan_to_num(means.mean(axis=1), nan=-np.inf), kind="stable")
    rank = np.empty(len(order), dtype=np.int16)
    rank[order] = np.arange(len(order))
    for axis, s in states.items():
        states[axis] = np.where(s >= 0, rank[np.maximum(s, 0)], -1).astype(np.int16)
    return order


def _axis_counts(layout: Layout, axis: str, states: np.ndarray, intervals: dict, n_states: int):
    """:func:`overlap_counts` of one axis, one annotation mask in memory at a time."""
    columns = [
        overlap_counts(states, {name: layout.mask_from_intervals(table, axis)}, n_states)
        for name, table in intervals.items()
    ]
    per_state = columns[0][0]
    overlap = np.concatenate([c[1] for c in columns], axis=1)
    per_annotation = np.concatenate([c[2] for c in columns])
    return per_state, overlap, per_annotation


def _shortest_state(hmm) -> float:
    """Expected run, in bins, of the least persistent state (``1 / (1 - a_kk)``); warns below 2.

    A state left after one bin on average is not a chromatin state: the HMM
    takes turns between states every bin (issue 35, item 4).
    """
    stay = float(np.diag(hmm.transmat_).min())
    bins = 1.0 / max(1.0 - stay, 1e-12)
    if bins < 2:
        warn(
            f"an HMM state lasts {bins:.1f} bins on average: the states alternate bin by bin; "
            "try another --seed, fewer --states or a larger --sample"
        )
    return round(min(bins, 1e12), 2)


def _converged(monitor) -> bool:
    """Whether EM stopped on its tolerance (hmmlearn's own flag is also True at ``n_iter``)."""
    history = list(monitor.history)
    return len(history) >= 2 and history[-1] - history[-2] < monitor.tol


def _decode_axis(model, hmm, features: _Features, axis: str) -> np.ndarray:
    """Viterbi states of every position of ``axis`` (-1 outside its regions), shape ``(n,)``."""
    states = np.full(model.layout_.axis_lengths[axis], -1, dtype=np.int16)
    for w in _windows(model.layout_, [axis], DECODE_BLOCK).itertuples():
        x = np.concatenate(
            [
                features.transform(features.raw(axis, lo, min(lo + PREDICT_BLOCK, w.end)))
                for lo in range(w.start, w.end, PREDICT_BLOCK)
            ]
        )
        states[w.start : w.end] = hmm.predict(x)
    return states


# --------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------


def _state_labels(table: pd.DataFrame, ax, colours) -> None:
    ax.set_yticks(range(len(table)), table.index)
    for tick, colour in zip(ax.get_yticklabels(), colours):
        tick.set_bbox({"facecolor": np.array(colour) / 255, "edgecolor": "none", "pad": 1.5})


def plot_enrichment(
    path, enrichment: pd.DataFrame, colours: list[tuple[int, int, int]], title: str = ""
) -> None:
    """ChromHMM-style heatmap: each column coloured from its own minimum to maximum.

    Parameters
    ----------
    path : str, path-like or file object
        PNG to write.
    enrichment : pandas.DataFrame
        From :func:`overlap_enrichment` (states x annotations, ``genome %`` first).
    colours : list of (int, int, int)
        RGB of each state, for the row labels.
    title : str
        What the states were computed from. Default ``""``.
    """
    from epitensor.viz.plots import subplots

    values = enrichment.to_numpy(dtype=float)
    finite = np.isfinite(values)  # a column is all NaN where its annotation covers no bin
    lo = np.where(finite, values, np.inf).min(axis=0)
    hi = np.where(finite, values, -np.inf).max(axis=0)
    scaled = (values - lo) / np.where(hi > lo, hi - lo, 1.0)
    n_rows, n_cols = values.shape
    fig, ax = subplots(figsize=(0.45 * n_cols + 2.2, 0.38 * n_rows + 2.4))
    ax.imshow(np.nan_to_num(scaled), cmap="Blues", aspect="auto", vmin=0, vmax=1.15)
    for i in range(n_rows):
        for j in range(n_cols):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=6.5)
    ax.set_xticks(range(n_cols), enrichment.columns, rotation=90, fontsize=8)
    _state_labels(enrichment, ax, colours)
    ax.set_title(
        f"Fold enrichment of the states ({title})" if title else "Fold enrichment", fontsize=10
    )
    fig.savefig(path, dpi=120, bbox_inches="tight", format="png")


def plot_signal(
    path, signal: pd.DataFrame, colours: list[tuple[int, int, int]], title: str = ""
) -> None:
    """Heatmap of each state's mean imputed signal per (cell type, assay), on one scale.

    Parameters
    ----------
    path : str, path-like or file object
        PNG to write.
    signal : pandas.DataFrame
        States x ``CELLTYPE:ASSAY`` mean signal, arcsinh.
    colours : list of (int, int, int)
        RGB of each state, for the row labels.
    title : str
        What the states were computed from. Default ``""``.
    """
    from epitensor.viz.plots import subplots

    values = signal.to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    fig, ax = subplots(figsize=(0.42 * n_cols + 2.4, 0.38 * n_rows + 2.4))
    image = ax.imshow(values, cmap="Reds", aspect="auto", vmin=0)
    for i in range(n_rows):
        for j in range(n_cols):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(n_cols), signal.columns, rotation=90, fontsize=8)
    _state_labels(signal, ax, colours)
    fig.colorbar(image, ax=ax, shrink=0.6, label="mean imputed arcsinh(-log10 p)")
    ax.set_title(f"Mean imputed signal per state ({title})" if title else "", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight", format="png")


def plot_states_locus(
    path: str | os.PathLike,
    chrom: str,
    starts: np.ndarray,
    tracks: dict[str, np.ndarray],
    bands: dict[str, tuple],
    title: str,
    genes: pd.DataFrame | None = None,
    resolution: int = 25,
) -> None:
    """Browser-style figure: signal tracks on top, one coloured band per state annotation beneath.

    Parameters
    ----------
    path : str or path-like
        PNG to write.
    chrom : str
        Chromosome of the locus.
    starts : numpy.ndarray, shape=(n_positions,)
        Genomic start (bp, 0-based) of every bin shown.
    tracks : dict of str to numpy.ndarray, shape=(n_positions,)
        Panel label to signal (arcsinh), drawn top to bottom.
    bands : dict of str to tuple
        Band label to ``(states, colours)`` or ``(states, colours, names)``:
        the 0-based state of each bin (``numpy.ndarray, shape=(n_positions,)``,
        -1: none, drawn white), the RGB of each state and its name (default
        ``S1``..``SK``), written on runs wide enough to hold it.
    title : str
        Figure title.
    genes : pandas.DataFrame, optional
        ``chrom, start, end`` (and ``name``) of genes to draw. Default None.
    resolution : int
        Bin width in bp. Default 25.
    """
    from matplotlib.colors import ListedColormap

    from epitensor.viz.plots import subplots

    n_tracks, n_bands = len(tracks), len(bands) + (genes is not None)
    fig, axes = subplots(
        n_tracks + n_bands,
        1,
        figsize=(11, 0.9 * n_tracks + 0.45 * n_bands + 1.2),
        sharex=True,
        gridspec_kw={"height_ratios": [2.0] * n_tracks + [0.7] * n_bands},
    )
    edges = np.append(starts, starts[-1] + resolution) / 1e6
    for ax, (label, values) in zip(axes, tracks.items()):
        ax.fill_between(edges[:-1], values, step="post", color="#333333", linewidth=0)
        ax.set_ylim(0, max(float(np.nanmax(values)) * 1.05, 0.5))
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    for ax, (label, band) in zip(axes[n_tracks:], bands.items()):
        s, colours = np.asarray(band[0]), band[1]
        names = band[2] if len(band) > 2 else _state_names(len(colours))
        cmap = ListedColormap([np.array(c) / 255 for c in colours] + [(1.0, 1.0, 1.0)])
        shown = np.where(s < 0, len(colours), s)
        ax.pcolormesh(edges, [0, 1], shown[None, :], cmap=cmap, vmin=-0.5, vmax=len(colours) + 0.5)
        change = np.flatnonzero(np.diff(s)) + 1
        for lo, hi in zip(np.r_[0, change], np.r_[change, len(s)]):
            if s[lo] >= 0 and hi - lo >= len(s) / 25:  # name only runs wide enough to hold it
                middle = (edges[lo] + edges[hi]) / 2
                ax.text(middle, 0.5, names[s[lo]], ha="center", va="center", fontsize=6)
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if genes is not None:
        ax = axes[-1]
        lo, hi = starts[0], starts[-1] + resolution
        near = genes[(genes.chrom == chrom) & (genes.end > lo) & (genes.start < hi)]
        for k, gene in enumerate(near.drop_duplicates(["start", "end"]).itertuples()):
            y = k % 3
            left, right = max(gene.start, lo) / 1e6, min(gene.end, hi) / 1e6
            ax.plot([left, right], [y, y], color="#1f3f7f", lw=2, solid_capstyle="butt")
            name = str(getattr(gene, "name", ""))
            if name and ":" not in name:  # read_bed names unnamed intervals by their coordinates
                ax.text(left, y + 0.3, name, fontsize=6)
        ax.set_ylim(-0.7, 3)
        ax.set_yticks([])
        ax.set_ylabel("RefSeq genes", rotation=0, ha="right", va="center", fontsize=8)
    axes[-1].set_xlabel(f"{chrom} (Mb)")
    axes[0].set_title(title, fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")


CHROMHMM_FAMILIES = (
    ("Tss|Prom", (255, 0, 0)),
    ("TxEnh|TxReg", (194, 225, 5)),
    ("Tx", (0, 128, 0)),
    ("Enh", (255, 195, 77)),
    ("DNase", (255, 255, 0)),
    ("ZNF", (102, 205, 170)),
    ("Het", (138, 145, 208)),
    ("ReprPC", (128, 128, 128)),
    ("Quies", (255, 255, 255)),
)
"""ChromHMM state families (a pattern of state names, first match wins) and Roadmap's colours."""


def chromhmm_band(
    path: str | os.PathLike, chrom: str, starts: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, int, int]], list[str]]:
    """A ChromHMM segmentation over some bins, coarsened to the :data:`CHROMHMM_FAMILIES`.

    Parameters
    ----------
    path : str or path-like
        BED of the segmentation, the state name in column 4 (Roadmap's
        ``*_chromhmm*.bed.gz``).
    chrom : str
        Chromosome of the bins.
    starts : numpy.ndarray, shape=(n_positions,)
        Genomic start (bp, 0-based) of each bin; a bin takes the state of the
        segment holding its start.

    Returns
    -------
    states : numpy.ndarray, shape=(n_positions,), int16
        Family of each bin (an index into the families; -1: no segment).
    colours : list of (int, int, int)
        RGB of each family.
    names : list of str
        Name of each family (its first pattern: ``Tss``, ``TxEnh``, ``Tx`` ...).
    """
    starts = np.asarray(starts)
    bed = read_bed(path)
    bed = bed[(bed.chrom == chrom) & (bed.end > starts.min()) & (bed.start <= starts.max())]
    out = np.full(len(starts), -1, dtype=np.int16)
    for k, (pattern, _) in enumerate(CHROMHMM_FAMILIES):
        for row in bed[bed.name.str.contains(pattern)].itertuples():
            out[(starts >= row.start) & (starts < row.end) & (out < 0)] = k
    colours = [rgb for _, rgb in CHROMHMM_FAMILIES]
    return out, colours, [pattern.split("|")[0] for pattern, _ in CHROMHMM_FAMILIES]


def plot_locus_states(
    path: str | os.PathLike,
    model,
    store,
    locus: Locus,
    annotations: Mapping[str, StateAnnotation],
    panels: Sequence[tuple[str, str, str]],
    chromhmm: str | os.PathLike | None = None,
    genes: pd.DataFrame | None = None,
    title: str | None = None,
) -> None:
    """States of one or more annotations under observed and imputed tracks at one locus.

    Parameters
    ----------
    path : str or path-like
        PNG to write.
    model : Avocado
        The fitted model the states came from (draws the imputed panels).
    store : Store
        Store holding the observed panels, on the model's layout.
    locus : Locus
        Axis positions ``[start, end)`` to draw and their genomic place.
    annotations : mapping of str to StateAnnotation
        Band label to annotation, drawn top to bottom under the tracks.
    panels : sequence of (str, str, str)
        ``(kind, celltype, assay)`` of each signal panel (arcsinh), top to
        bottom; ``kind`` is ``"observed"`` (read from ``store``) or
        ``"imputed"`` (the model's prediction; "held out" is added to the label
        of a track the model was not trained on).
    chromhmm : str or path-like, optional
        A ChromHMM segmentation drawn as the last band, coarsened to its state
        families (:func:`chromhmm_band`). Default None: none.
    genes : pandas.DataFrame, optional
        ``chrom, start, end`` (and ``name``) of genes drawn at the bottom. Default None.
    title : str, optional
        Figure title. Default None: the locus and its region.
    """
    kinds = ("observed", "imputed")
    window = slice(locus.start, locus.end)
    held = {tuple(t) for t in model.holdout_tracks_}
    tracks = {}
    for kind, celltype, assay in panels:
        if kind not in kinds:
            raise EpitensorError(f"invalid panel kind: got {kind!r}, expected one of {kinds!r}")
        if kind == "observed":
            values = store.read_track(celltype, assay, locus.axis, locus.start, locus.end)
        else:
            values = model.predict(celltype, assay, locus.axis, locus.start, locus.end)
        label = f"{kind} {celltype} {assay}"
        if kind == "imputed" and (celltype, assay) in held:
            label += "\n(held out)"
        tracks[label] = values
    bands: dict[str, tuple] = {
        label: (result.states[locus.axis][window], result.colours)
        for label, result in annotations.items()
    }
    if chromhmm is not None:
        prefix = Path(chromhmm).name.split("_chromhmm")[0]
        resolution = model.layout_.resolution
        bands[f"{prefix} ChromHMM (Roadmap)"] = chromhmm_band(
            chromhmm, locus.chrom, locus.bp_starts(resolution)
        )
    plot_states_locus(
        path,
        locus.chrom,
        locus.bp_starts(model.layout_.resolution),
        tracks,
        bands,
        title or f"States at {locus.label} {locus.region}",
        genes=genes,
        resolution=model.layout_.resolution,
    )
