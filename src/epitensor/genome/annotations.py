"""Genome annotations (TSS, genes, ChromHMM enhancers, blacklist, peaks) mapped onto a layout.

Intervals are 0-based, half-open ``[start, end)``. Files are read as they are
published: BED (plain or gzip), GFF (1-based, closed), ChromHMM segmentations
(BED with the state in column 4) and MACS2 narrowPeak (BED6+4).

A promoter is the 2 kb upstream of a TSS, strand-aware: for a TSS at 0-based
base ``p`` on the + strand it is ``[p - 2000, p)``; on the - strand, where
upstream means higher coordinates, it is ``[p + 1, p + 2001)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import EpitensorError
from epitensor.genome.coordinates import Layout, read_bed

PROMOTER_UPSTREAM = 2_000
ENHANCER_STATE_TAG = "Enh"

TSS_FILES = ("gencode.v19.TSS.notlow.gff.gz", "RefSeqTSS.hg19.bed.gz")
GENE_FILES = ("RefSeqGene.hg19.bed.gz",)
CHROMHMM_FILES = ("E116_chromhmm25.bed.gz",)
BLACKLIST_FILES = ("hg19-blacklist.v2.bed.gz",)

__all__ = [
    "Annotations",
    "enhancer_intervals",
    "peak_mask",
    "promoters",
    "read_narrowpeak",
    "read_tss",
]


def read_tss(path: str | os.PathLike) -> pd.DataFrame:
    """Read transcription start sites from a GFF or a stranded BED file.

    Parameters
    ----------
    path : str or path-like
        GFF/GTF (``.gff``, ``.gtf``, optionally gzipped; the TSS is the
        feature's 5' end: ``start`` on +, ``end`` on -) or BED6 with one base
        per TSS (``start`` on +, ``end - 1`` on -).

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom`` (str), ``pos`` (0-based base of the TSS, int64) and
        ``strand`` (``"+"`` or ``"-"``).
    """
    name = str(path).lower().removesuffix(".gz")
    if name.endswith((".gff", ".gff3", ".gtf")):
        table = _read_table(path, usecols=[0, 3, 4, 6])
        table.columns = ["chrom", "start", "end", "strand"]
        plus = table.strand == "+"
        pos = np.where(plus, table.start - 1, table.end - 1)
    else:
        bed = read_bed(path)
        if "strand" not in bed:
            raise EpitensorError(
                f"{path}: TSS need a strand; give a BED6 file (strand in column 6) or a GFF"
            )
        table = bed
        pos = np.where(bed.strand == "+", bed.start, bed.end - 1)
    strand = table.strand.astype(str).to_numpy()
    bad = int((~np.isin(strand, ["+", "-"])).sum())
    if bad:
        raise EpitensorError(f"{path}: {bad} TSS have no strand (+ or -); promoters need one")
    return pd.DataFrame(
        {"chrom": table.chrom.astype(str).to_numpy(), "pos": pos.astype("int64"), "strand": strand}
    )


def promoters(tss: pd.DataFrame, upstream: int = PROMOTER_UPSTREAM) -> pd.DataFrame:
    """Promoter intervals: ``upstream`` bp 5' of each TSS, strand-aware.

    Parameters
    ----------
    tss : pandas.DataFrame
        Columns ``chrom, pos, strand`` as from :func:`read_tss`.
    upstream : int
        Promoter length in bp. Default 2000.

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom, start, end`` (0-based, half-open), clipped at 0.
    """
    plus = (tss.strand == "+").to_numpy()
    pos = tss.pos.to_numpy()
    start = np.where(plus, pos - upstream, pos + 1)
    end = np.where(plus, pos, pos + 1 + upstream)
    out = pd.DataFrame({"chrom": tss.chrom.to_numpy(), "start": np.maximum(start, 0), "end": end})
    return out[out.end > out.start].reset_index(drop=True)


def enhancer_intervals(path: str | os.PathLike, tag: str = ENHANCER_STATE_TAG) -> pd.DataFrame:
    """Segments of a ChromHMM segmentation whose state name contains ``tag``.

    Parameters
    ----------
    path : str or path-like
        ChromHMM BED (state name in column 4), such as Roadmap's 25-state
        ``E116_chromhmm25.bed.gz``, whose enhancer states are ``TxEnh5'``,
        ``TxEnh3'``, ``TxEnhW``, ``EnhA1``, ``EnhA2``, ``EnhAF``, ``EnhW1``,
        ``EnhW2`` and ``EnhAc``.
    tag : str
        Substring marking an enhancer state. Default ``"Enh"``.

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom, start, end, name``.
    """
    bed = read_bed(path)
    keep = bed.name.str.contains(tag, regex=False)
    if not keep.any():
        raise EpitensorError(
            f"{path}: no segment has a state containing {tag!r}; is this a ChromHMM "
            f"segmentation with the state name in column 4?"
        )
    return bed[keep].reset_index(drop=True)


def read_narrowpeak(path: str | os.PathLike) -> pd.DataFrame:
    """Read a MACS2 narrowPeak (or any BED) file as ``chrom, start, end, name``."""
    return read_bed(path)


def _read_table(path: str | os.PathLike, usecols: list[int]) -> pd.DataFrame:
    try:
        return pd.read_csv(
            path, sep="\t", header=None, comment="#", usecols=usecols, dtype={0: str}
        )
    except FileNotFoundError:
        raise EpitensorError(f"annotation file not found: {path}") from None
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise EpitensorError(f"cannot read annotation file {path}: {exc}") from None


def _first_existing(directory: Path, names: tuple[str, ...]) -> Path | None:
    return next((directory / n for n in names if (directory / n).is_file()), None)


@dataclass
class Annotations:
    """Interval sets for the region metrics, and the blacklist.

    Parameters
    ----------
    promoters, genes, enhancers, blacklist : pandas.DataFrame or None
        Intervals with ``chrom, start, end`` (0-based, half-open); None when
        the annotation is unavailable (its metric is then NaN, or nothing is
        masked for the blacklist).
    source : str
        Where the intervals came from (for reports).
    """

    promoters: pd.DataFrame | None = None
    genes: pd.DataFrame | None = None
    enhancers: pd.DataFrame | None = None
    blacklist: pd.DataFrame | None = None
    source: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike | None = None) -> Annotations:
        """Load annotations from a folder of hg19 annotation files (named as their sources publish them).

        Looks for ``gencode.v19.TSS.notlow.gff.gz`` (else ``RefSeqTSS.hg19.bed.gz``)
        for promoters, ``RefSeqGene.hg19.bed.gz`` for gene bodies,
        ``E116_chromhmm25.bed.gz`` for enhancers and ``hg19-blacklist.v2.bed.gz``.

        Parameters
        ----------
        directory : str or path-like, optional
            The folder. Default None: the hg19 annotations bundled with the
            package, cut to the ENCODE pilot regions.

        Returns
        -------
        Annotations
        """
        if directory is None:
            from epitensor.genome.pilot import pilot_annotations_dir

            directory = pilot_annotations_dir()
        directory = Path(directory)
        if not directory.is_dir():
            raise EpitensorError(f"annotation folder not found: {directory}")
        files = {
            "promoters": _first_existing(directory, TSS_FILES),
            "genes": _first_existing(directory, GENE_FILES),
            "enhancers": _first_existing(directory, CHROMHMM_FILES),
            "blacklist": _first_existing(directory, BLACKLIST_FILES),
        }
        if all(f is None for f in files.values()):
            raise EpitensorError(
                f"no known annotation file in {directory}; expected any of "
                f"{list(TSS_FILES + GENE_FILES + CHROMHMM_FILES + BLACKLIST_FILES)}"
            )
        return cls(
            promoters=None
            if files["promoters"] is None
            else promoters(read_tss(files["promoters"])),
            genes=None if files["genes"] is None else read_bed(files["genes"]),
            enhancers=None
            if files["enhancers"] is None
            else enhancer_intervals(files["enhancers"]),
            blacklist=None if files["blacklist"] is None else read_bed(files["blacklist"]),
            source=str(directory),
        )

    def masks(self, layout: Layout, axis: str) -> dict[str, np.ndarray | None]:
        """Boolean masks of one layout axis.

        Parameters
        ----------
        layout : Layout
            The store's (or model's) layout.
        axis : str
            Axis to map onto.

        Returns
        -------
        dict
            ``promoters``, ``genes``, ``enhancers`` and ``blacklist``: each a
            ``numpy.ndarray, shape=(n_positions,), bool`` (True where a bin
            overlaps an interval), or None when the annotation is unavailable.
        """
        key = (id(layout), axis)
        # keep the layout itself in the cache so its id cannot be reused by another one
        if key not in self._cache or self._cache[key][0] is not layout:
            masks = {
                name: None if table is None else layout.mask_from_intervals(table, axis)
                for name, table in (
                    ("promoters", self.promoters),
                    ("genes", self.genes),
                    ("enhancers", self.enhancers),
                    ("blacklist", self.blacklist),
                )
            }
            self._cache[key] = (layout, masks)
        return dict(self._cache[key][1])

    def regions(self, layout: Layout, axis: str) -> dict[str, np.ndarray | None]:
        """The region masks for :func:`epitensor.evaluation.metrics.score` (no blacklist).

        Returns
        -------
        dict
            ``promoters``, ``genes`` and ``enhancers`` masks of
            ``numpy.ndarray, shape=(n_positions,), bool``, or None.
        """
        masks = self.masks(layout, axis)
        return {name: masks[name] for name in ("promoters", "genes", "enhancers")}

    def keep(self, layout: Layout, axis: str) -> np.ndarray | None:
        """Positions outside the blacklist, or None when there is no blacklist.

        Returns
        -------
        numpy.ndarray, shape=(n_positions,), bool, or None
        """
        blacklist = self.masks(layout, axis)["blacklist"]
        return None if blacklist is None else ~blacklist


def peak_mask(path: str | os.PathLike, layout: Layout, axis: str) -> np.ndarray:
    """Map a narrowPeak (or BED) file of true peaks onto one layout axis.

    Parameters
    ----------
    path : str or path-like
        MACS2 narrowPeak or BED file, 0-based half-open.
    layout : Layout
        The store's layout.
    axis : str
        Axis to map onto.

    Returns
    -------
    numpy.ndarray, shape=(n_positions,), bool
        True where a 25-bp bin overlaps a peak.
    """
    return layout.mask_from_intervals(read_narrowpeak(path), axis)
