"""Genome coordinates: chromosome sizes, 25-bp bins and region layouts.

All intervals are 0-based and half-open, ``[start, end)``. Bin ``i`` of a
chromosome at resolution ``r`` covers ``[r * i, r * i + r)``.

A :class:`Layout` lays genomic regions along one or more named *axes*. Every axis
becomes one array of the compendium store and one set of genome-factor tables of
the model:

* a whole-genome layout has one axis per chromosome, named after it, holding
  every bin of that chromosome;
* a region layout (such as the ENCODE pilot regions) has a single axis on which
  the bins of its regions are concatenated, in natural chromosome order and then
  by start (the order of the BED file is not used). The coarse genome factors
  (250 bp, 5 kbp) index that concatenated axis, as the original Avocado did.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import EpitensorError

DEFAULT_RESOLUTION = 25
BUILDS = ("hg19", "hg38", "mm10")

__all__ = [
    "BUILDS",
    "DEFAULT_RESOLUTION",
    "Layout",
    "Locus",
    "check_bed_regions",
    "chrom_sizes",
    "n_bins",
    "natural_sort",
    "parse_region",
    "read_bed",
    "read_chrom_sizes",
]


def _natural_key(name: str) -> tuple:
    """Sort key putting chr2 before chr10 and X, Y, M after the numbered ones."""
    stem = re.sub(r"^chr", "", str(name), flags=re.IGNORECASE)
    if stem.isdigit():
        return (0, int(stem), "")
    order = {"X": 1, "Y": 2, "M": 3, "MT": 3}
    return (1, order.get(stem.upper(), 9), stem)


def natural_sort(names: Iterable[str]) -> list[str]:
    """Return chromosome names in natural order (chr1, chr2, ..., chr10, chrX, chrY, chrM)."""
    return sorted(names, key=_natural_key)


def read_chrom_sizes(path: str | os.PathLike) -> pd.Series:
    """Read a two-column ``chrom.sizes`` file into a naturally sorted Series.

    Parameters
    ----------
    path : str or path-like
        Tab-separated file with chromosome name and length, no header.

    Returns
    -------
    pandas.Series
        Chromosome lengths in bp, indexed by name, in natural order.
    """
    try:
        table = pd.read_csv(path, sep="\t", header=None, usecols=[0, 1], comment="#")
    except FileNotFoundError:
        raise EpitensorError(f"chromosome sizes file not found: {path}") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise EpitensorError(
            f"cannot read chromosome sizes from {path}: expected two tab-separated "
            f"columns (name, length) ({exc})"
        ) from None
    sizes = pd.Series(table[1].astype("int64").to_numpy(), index=table[0].astype(str))
    if (sizes <= 0).any() or sizes.index.duplicated().any():
        raise EpitensorError(
            f"{path}: chromosome lengths must be positive and names unique; "
            f"check the file is a chrom.sizes table"
        )
    sizes.name = "length"
    return sizes[natural_sort(sizes.index)]


def chrom_sizes(genome: str | os.PathLike) -> pd.Series:
    """Chromosome sizes of a genome build or from a ``chrom.sizes`` file.

    Parameters
    ----------
    genome : str or path-like
        ``"hg19"``, ``"hg38"`` or ``"mm10"`` (the primary assembly bundled with
        bioframe: autosomes, sex chromosomes and chrM), or the path of a
        ``chrom.sizes`` file.

    Returns
    -------
    pandas.Series
        Chromosome lengths in bp, indexed by name, in natural order.

    Examples
    --------
    >>> import epitensor as et
    >>> int(et.chrom_sizes("hg19")["chr21"])
    48129895
    """
    if str(genome) in BUILDS:
        import bioframe

        info = bioframe.assembly_info(str(genome), roles=["assembled"])
        sizes = info.chromsizes.astype("int64")
        sizes.index = sizes.index.astype(str)
        sizes.name = "length"
        return sizes[natural_sort(sizes.index)]
    if Path(genome).is_file():
        return read_chrom_sizes(genome)
    raise EpitensorError(
        f"invalid genome: got {str(genome)!r}, expected one of {list(BUILDS)!r} "
        f"or the path of a chrom.sizes file"
    )


def n_bins(length: int, resolution: int = DEFAULT_RESOLUTION) -> int:
    """Number of bins covering ``length`` bp (the last bin may be partial)."""
    return int(math.ceil(int(length) / int(resolution)))


_REGION = re.compile(r"^\s*([^:\s]+)(?::\s*([\d,.]+[kKmM]?)\s*-\s*([\d,.]+[kKmM]?))?\s*$")


def _parse_position(text: str) -> int:
    text = text.replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    number = float(text[:-1] if scale != 1 else text)
    return int(round(number * scale))


def parse_region(region: str, sizes: pd.Series | None = None) -> tuple[str, int, int]:
    """Parse a UCSC-style region ``chr:start-end`` (0-based, half-open).

    Commas and ``k`` / ``M`` suffixes are accepted (``chr1:1.5M-2M``). A bare
    chromosome name means the whole chromosome (needs ``sizes``).

    Not ``bioframe.parse_region`` (0.8), measured in ``benchmarks/libraries.py``:
    it truncates scaled positions (``1.005k`` gives 1004, ``1.001k`` 1000; this
    rounds), silently drops text after the end (``chr1:1-2:3`` and
    ``chr1:1-2-3`` give ``(chr1, 1, 2)``), accepts empty regions
    (``chr1:5-5``), and its errors do not say what form was expected; the
    checks here would all stay on top of it, and it was 1.3x slower.

    Parameters
    ----------
    region : str
        The region string.
    sizes : pandas.Series, optional
        Chromosome lengths; when given, the chromosome must exist and the end
        must not exceed its length. Default None: no bounds check.

    Returns
    -------
    tuple of (str, int, int)
        ``(chrom, start, end)``.
    """
    match = _REGION.match(str(region))
    if match is None:
        raise EpitensorError(f"invalid region {region!r}: expected chr:start-end, e.g. chr1:0-5000")
    chrom, start_text, end_text = match.groups()
    if sizes is not None and chrom not in sizes.index:
        raise EpitensorError(
            f"invalid region {region!r}: unknown chromosome {chrom!r}; "
            f"known: {', '.join(list(sizes.index[:5]))}, ..."
        )
    if start_text is None:
        if sizes is None:
            raise EpitensorError(f"invalid region {region!r}: a bare chromosome needs sizes")
        return chrom, 0, int(sizes[chrom])
    start, end = _parse_position(start_text), _parse_position(end_text)
    if start >= end:
        raise EpitensorError(f"invalid region {region!r}: start {start} must be below end {end}")
    if sizes is not None and end > int(sizes[chrom]):
        raise EpitensorError(
            f"invalid region {region!r}: end {end} exceeds the length of {chrom} "
            f"({int(sizes[chrom])})"
        )
    return chrom, start, end


def read_bed(path: str | os.PathLike) -> pd.DataFrame:
    """Read the first columns of a BED file (plain or gzip).

    Read with ``pandas.read_csv`` rather than ``bioframe.read_table(schema="bed")``,
    which is that same call with six fixed column names: a 3-column file then
    gets NaN ``name`` and ``strand`` columns, so how many columns the file has
    (which decides ``name`` and ``strand`` here) is lost, and ``track`` /
    ``browser`` / ``#`` lines are still read as intervals.

    Parameters
    ----------
    path : str or path-like
        BED file; ``track`` / ``browser`` / ``#`` lines are skipped.

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom, start, end`` (int64) and ``name`` (the 4th column, or
        ``chrom:start-end`` when absent), plus ``strand`` when present.
    """
    try:
        table = pd.read_csv(
            path,
            sep="\t",
            header=None,
            comment="#",
            dtype={0: str},
            skip_blank_lines=True,
        )
    except FileNotFoundError:
        raise EpitensorError(f"BED file not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EpitensorError(f"cannot read BED file {path}: {exc}") from None
    table = table[~table[0].str.startswith(("track", "browser"))]
    if table.shape[1] < 3:
        raise EpitensorError(f"{path}: a BED file needs at least 3 columns (chrom, start, end)")
    bed = pd.DataFrame(
        {
            "chrom": table[0].astype(str).to_numpy(),
            "start": pd.to_numeric(table[1]).astype("int64").to_numpy(),
            "end": pd.to_numeric(table[2]).astype("int64").to_numpy(),
        }
    )
    if table.shape[1] >= 4:
        bed["name"] = table[3].astype(str).to_numpy()
    else:
        bed["name"] = bed.chrom + ":" + bed.start.astype(str) + "-" + bed.end.astype(str)
    if table.shape[1] >= 6:
        bed["strand"] = table[5].astype(str).to_numpy()
    bad = int((bed.start >= bed.end).sum())
    if bad:
        raise EpitensorError(f"{path}: starts are not below ends for {bad} intervals")
    return bed


def _bed_line_numbers(path: str | os.PathLike) -> list[int]:
    """1-based line numbers of the intervals :func:`read_bed` reads from ``path``."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    numbers = []
    with opener(path, "rt", errors="replace") as handle:
        for n, line in enumerate(handle, 1):
            text = line.split("#", 1)[0]
            if text.strip() and not text.startswith(("track", "browser")):
                numbers.append(n)
    return numbers


def check_bed_regions(
    bed: pd.DataFrame,
    sizes: pd.Series,
    source: str | os.PathLike,
    resolution: int = DEFAULT_RESOLUTION,
) -> None:
    """Refuse regions that cannot make a layout, naming the file and its bad lines.

    A region layout is a bioframe "view": regions inside their chromosomes that
    do not overlap. Refused: a negative start, an end past the chromosome's
    length in ``sizes``, and two regions sharing a base or a ``resolution``-bp
    bin (their bins would be stored, trained on and exported twice).

    Parameters
    ----------
    bed : pandas.DataFrame
        Regions as :func:`read_bed` returns them (0-based half-open ``[start, end)``),
        in file order.
    sizes : pandas.Series
        Chromosome lengths; regions on chromosomes not in it are left to the caller.
    source : str or path-like
        The BED file, for messages (and its line numbers, when it can be read).
    resolution : int
        Bin width in bp. Default 25.
    """
    try:
        lines = _bed_line_numbers(source)
    except (OSError, EOFError, ValueError):
        lines = []
    if len(lines) != len(bed):  # a layout that read_bed did not read line by line
        lines = [None] * len(bed)

    def at(i: int) -> str:
        row = bed.iloc[i]
        where = f"line {lines[i]}: " if lines[i] is not None else ""
        return f"{where}{row.chrom} {int(row.start)} {int(row.end)}"

    def refuse(what: str, rows, fix: str) -> None:
        rows = list(rows)
        shown = "; ".join(at(int(i)) for i in rows[:3])
        more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
        raise EpitensorError(f"regions {source}: {what} ({shown}{more}); {fix}")

    starts, ends = bed.start.to_numpy(), bed.end.to_numpy()
    negative = np.flatnonzero(starts < 0)
    if len(negative):
        refuse(
            f"{len(negative)} region(s) start below 0",
            negative,
            "BED starts are 0-based, use 0 or more",
        )
    known = bed.chrom.isin(sizes.index).to_numpy()
    limits = np.where(
        known, bed.chrom.map(sizes).fillna(0).to_numpy(np.int64), np.iinfo(np.int64).max
    )
    past = np.flatnonzero(ends > limits)
    if len(past):
        refuse(
            f"{len(past)} region(s) end past their chromosome's length",
            past,
            "clip them to the chromosome sizes of --genome, or pass the regions' build",
        )
    first, last = starts // resolution, -(-ends // resolution)
    clashes: list[tuple[int, int]] = []
    overlapping = False
    for rows in bed.groupby("chrom", sort=False).indices.values():
        rows = rows[np.argsort(starts[rows], kind="stable")]
        reach = rows[0]  # the region reaching furthest so far on this chromosome
        for row in rows[1:]:
            if first[row] < last[reach]:
                clashes.append((int(reach), int(row)))
                overlapping = overlapping or starts[row] < ends[reach]
            if last[row] > last[reach]:
                reach = row
    if clashes:
        what = "overlap another" if overlapping else f"share a {resolution}-bp bin with another"
        refuse(
            f"{len(clashes)} region(s) {what}",
            dict.fromkeys(i for pair in clashes for i in pair),
            f"a layout needs disjoint regions: merge them (bedtools merge -d {resolution}) "
            "or remove the duplicates",
        )


_LAYOUT_COLUMNS = ["axis", "chrom", "start", "end", "name", "offset", "first_bin", "n_bins"]


def _overlapping(first: np.ndarray, end: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple:
    """Pairs of intervals ``[lo, hi)`` and regions ``[first, end)`` (bins) sharing a bin.

    Parameters
    ----------
    first, end : numpy.ndarray, shape=(n_regions,), int64
        Bins of the regions of one chromosome, sorted by ``first``.
    lo, hi : numpy.ndarray, shape=(n_intervals,), int64
        Bins of the intervals on that chromosome.

    Returns
    -------
    rows : numpy.ndarray, shape=(n_pairs,), int64
        Interval of each pair (index into ``lo``), ascending.
    k : numpy.ndarray, shape=(n_pairs,), int64
        Region of each pair (index into ``first``).
    """
    # Candidates of an interval: regions starting before hi, from the first one whose
    # end, or the end of a region before it, passes lo. The running maximum keeps the
    # search valid should regions of one chromosome overlap (their ends then unsorted).
    a = np.searchsorted(np.maximum.accumulate(end), lo, side="right")
    n = np.maximum(np.searchsorted(first, hi, side="left") - a, 0)
    rows = np.repeat(np.arange(len(lo)), n)
    k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n - a, n)
    keep = np.minimum(end[k], hi[rows]) > np.maximum(first[k], lo[rows])
    return rows[keep], k[keep]


@dataclass
class Layout:
    """Genomic regions laid along named axes of 25-bp bins.

    Parameters
    ----------
    regions : pandas.DataFrame
        One row per region with columns ``axis`` (the array it lies on),
        ``chrom``, ``start``, ``end`` (bp, 0-based half-open), ``name``,
        ``offset`` (first axis position of the region), ``first_bin`` (the
        region's first bin on the chromosome) and ``n_bins``. Axis position
        ``offset + k`` holds chromosome bin ``first_bin + k``.
    axis_lengths : dict of str to int
        Length of each axis in bins, in axis order.
    resolution : int
        Bin width in bp. Default 25.
    name : str
        Name of the layout (``"genome"`` for whole chromosomes).

    Examples
    --------
    >>> import epitensor as et
    >>> layout = et.Layout.from_chrom_sizes(et.chrom_sizes("hg19")[["chr21", "chr22"]])
    >>> layout.axes
    ['chr21', 'chr22']
    """

    regions: pd.DataFrame
    axis_lengths: dict[str, int]
    resolution: int = DEFAULT_RESOLUTION
    name: str = "genome"
    _index: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.regions = self.regions[_LAYOUT_COLUMNS].reset_index(drop=True)
        self.axis_lengths = {str(k): int(v) for k, v in self.axis_lengths.items()}
        self.is_valid(raise_errors=True)

    # construction -----------------------------------------------------------------

    @classmethod
    def from_chrom_sizes(
        cls,
        sizes: pd.Series,
        resolution: int = DEFAULT_RESOLUTION,
        chroms: Iterable[str] | None = None,
    ) -> Layout:
        """Whole-genome layout: one axis per chromosome holding all its bins.

        Parameters
        ----------
        sizes : pandas.Series
            Chromosome lengths in bp.
        resolution : int
            Bin width in bp. Default 25.
        chroms : iterable of str, optional
            Chromosomes to keep, in this order. Default None: all, natural order.
        """
        chroms = natural_sort(sizes.index) if chroms is None else list(chroms)
        rows = [(c, c, 0, int(sizes[c]), c, 0, 0, n_bins(sizes[c], resolution)) for c in chroms]
        regions = pd.DataFrame(rows, columns=_LAYOUT_COLUMNS)
        return cls(regions, dict(zip(regions.axis, regions.n_bins)), resolution, "genome")

    @classmethod
    def from_bed(
        cls,
        bed: pd.DataFrame | str | os.PathLike,
        resolution: int = DEFAULT_RESOLUTION,
        name: str = "regions",
    ) -> Layout:
        """Region layout: the bins of each region concatenated on one axis.

        Regions are sorted naturally by chromosome, then by start. A region
        ``[start, end)`` covers bins ``start // resolution`` to
        ``ceil(end / resolution) - 1``.

        Parameters
        ----------
        bed : pandas.DataFrame or path
            Regions with ``chrom, start, end`` and optionally ``name``.
        resolution : int
            Bin width in bp. Default 25.
        name : str
            Layout and axis name. Default ``"regions"``.
        """
        if not isinstance(bed, pd.DataFrame):
            bed = read_bed(bed)
        bed = bed.copy()
        if "name" not in bed:
            bed["name"] = bed.chrom + ":" + bed.start.astype(str) + "-" + bed.end.astype(str)
        bed["_key"] = [_natural_key(c) for c in bed.chrom]
        bed = bed.sort_values(["_key", "start"], kind="stable").drop(columns="_key")
        first = bed.start.to_numpy() // resolution
        last = -(-bed.end.to_numpy() // resolution)
        lengths = last - first
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        regions = pd.DataFrame(
            {
                "axis": name,
                "chrom": bed.chrom.to_numpy(),
                "start": bed.start.to_numpy(),
                "end": bed.end.to_numpy(),
                "name": bed.name.astype(str).to_numpy(),
                "offset": offsets,
                "first_bin": first,
                "n_bins": lengths,
            }
        )
        return cls(regions, {name: int(lengths.sum())}, resolution, name)

    @classmethod
    def from_avocado_table(
        cls, path: str | os.PathLike, n_positions: int | None = None, name: str = "pilot"
    ) -> Layout:
        """Read a layout table as shipped with the Roadmap pilot arrays.

        Parameters
        ----------
        path : str or path-like
            TSV with ``chrom, start, end, name, array_offset``, a first-bin
            column and ``n_bins``.
        n_positions : int, optional
            Length of the array (may exceed the bins the regions cover).
            Default None: the sum of ``n_bins``.
        name : str
            Layout and axis name. Default ``"pilot"``.
        """
        table = pd.read_csv(path, sep="\t")
        first_col = next(c for c in table.columns if c.startswith("first_bin"))
        regions = pd.DataFrame(
            {
                "axis": name,
                "chrom": table.chrom.astype(str),
                "start": table.start.astype("int64"),
                "end": table.end.astype("int64"),
                "name": table.name.astype(str),
                "offset": table.array_offset.astype("int64"),
                "first_bin": table[first_col].astype("int64"),
                "n_bins": table.n_bins.astype("int64"),
            }
        )
        covered = int((regions.offset + regions.n_bins).max())
        length = covered if n_positions is None else int(n_positions)
        return cls(regions, {name: length}, DEFAULT_RESOLUTION, name)

    # serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-serialisable description (inverse of :meth:`from_dict`)."""
        return {
            "name": self.name,
            "resolution": int(self.resolution),
            "axis_lengths": dict(self.axis_lengths),
            "regions": {c: self.regions[c].tolist() for c in _LAYOUT_COLUMNS},
        }

    @classmethod
    def from_dict(cls, data: dict) -> Layout:
        """Rebuild a layout from :meth:`to_dict` output."""
        regions = pd.DataFrame(data["regions"])
        for column in ("start", "end", "offset", "first_bin", "n_bins"):
            regions[column] = regions[column].astype("int64")
        return cls(regions, data["axis_lengths"], int(data["resolution"]), data["name"])

    # queries ----------------------------------------------------------------------

    @property
    def axes(self) -> list[str]:
        """Axis names in order."""
        return list(self.axis_lengths)

    @property
    def is_whole_genome(self) -> bool:
        """True when every axis is one whole chromosome."""
        return bool((self.regions.axis == self.regions.chrom).all()) and len(self.regions) == len(
            self.axis_lengths
        )

    @property
    def n_positions(self) -> int:
        """Total number of positions over all axes."""
        return int(sum(self.axis_lengths.values()))

    def is_valid(self, raise_errors: bool = False) -> bool:
        """Check regions lie inside their axes and do not overlap.

        Parameters
        ----------
        raise_errors : bool
            Raise an :class:`EpitensorError` naming the problem instead of
            returning False. Default False.
        """
        problems = []
        regions = self.regions
        unknown = set(regions.axis) - set(self.axis_lengths)
        if unknown:
            problems.append(f"regions on unknown axes {sorted(unknown)}")
        else:
            ends = regions.offset + regions.n_bins
            limits = regions.axis.map(self.axis_lengths)
            n_out = int(((regions.offset < 0) | (ends > limits)).sum())
            if n_out:
                problems.append(f"{n_out} regions extend past the end of their axis")
            for axis, group in regions.groupby("axis", sort=False):
                group = group.sort_values("offset")
                overlap = (
                    group.offset.to_numpy()[1:] < (group.offset + group.n_bins).to_numpy()[:-1]
                ).sum()
                if overlap:
                    problems.append(f"{int(overlap)} regions overlap on axis {axis!r}")
        if (regions.n_bins <= 0).any():
            problems.append(f"{int((regions.n_bins <= 0).sum())} regions have no bins")
        if problems and raise_errors:
            raise EpitensorError(f"invalid layout {self.name!r}: " + "; ".join(problems))
        return not problems

    def with_axes(self, other: Layout, axes: Iterable[str]) -> Layout:
        """Add the ``axes`` of ``other`` to a copy of this layout; they take over their bins.

        Regions of this layout that overlap (same chromosome, shared bins) a region
        of the added axes are dropped, so every genomic bin keeps exactly one place:
        after stage-2 training of whole chromosomes, their bins map to the new
        chromosome axes rather than to the stage-1 training regions. Axes that lose
        all their regions are kept (their factors stay usable by axis position).

        Parameters
        ----------
        other : Layout
            The layout holding the axes to add (same resolution).
        axes : iterable of str
            Axes of ``other`` to add; an axis of the same name here is replaced.

        Returns
        -------
        Layout
        """
        axes = list(axes)
        if other.resolution != self.resolution:
            raise EpitensorError(
                f"cannot combine layouts of {self.resolution}-bp and {other.resolution}-bp bins"
            )
        added = pd.concat([other.axis_regions(a) for a in axes], ignore_index=True)
        kept = self.regions[~self.regions.axis.isin(axes)]
        covered = np.zeros(len(kept), dtype=bool)
        for row in added.itertuples():
            covered |= (
                (kept.chrom == row.chrom)
                & (kept.first_bin < row.first_bin + row.n_bins)
                & (kept.first_bin + kept.n_bins > row.first_bin)
            ).to_numpy()
        lengths = {a: n for a, n in self.axis_lengths.items() if a not in axes}
        lengths.update({a: other.axis_lengths[a] for a in axes})
        regions = pd.concat([kept[~covered], added], ignore_index=True)
        return Layout(regions, lengths, self.resolution, self.name)

    def axis_regions(self, axis: str) -> pd.DataFrame:
        """Regions lying on ``axis``, ordered by offset."""
        if axis not in self.axis_lengths:
            raise EpitensorError(f"unknown axis {axis!r}; the layout has {self.axes}")
        return self.regions[self.regions.axis == axis].sort_values("offset")

    def locate(self, chrom: str, start: int, end: int) -> pd.DataFrame:
        """Axis slices covering the bins of a genomic interval.

        One interval of :meth:`locate_many`.

        Parameters
        ----------
        chrom : str
            Chromosome name.
        start, end : int
            Interval in bp, 0-based half-open.

        Returns
        -------
        pandas.DataFrame
            One row per overlapping region: ``axis``, ``axis_start``,
            ``axis_end`` (positions on the axis, half-open) and ``first_bin``
            (the chromosome bin at ``axis_start``), sorted by axis, then
            position. Empty when the interval misses the layout.
        """
        runs = self.locate_many(pd.DataFrame({"chrom": [chrom], "start": [start], "end": [end]}))
        runs = runs[["axis", "axis_start", "axis_end", "first_bin"]]
        return runs.sort_values(["axis", "axis_start"], ignore_index=True)

    def locate_many(self, intervals: pd.DataFrame) -> pd.DataFrame:
        """Axis runs covering the bins of many genomic intervals.

        Vectorised over intervals: per chromosome, the intervals are matched to
        that chromosome's regions with a binary search.

        Parameters
        ----------
        intervals : pandas.DataFrame
            Columns ``chrom, start, end`` in bp, 0-based half-open.

        Returns
        -------
        pandas.DataFrame
            One row per (interval, region) pair sharing at least one bin:
            ``interval`` (row position in ``intervals``), ``region`` (row of
            :attr:`regions`), ``axis``, ``axis_start``, ``axis_end`` (positions on
            the axis, half-open) and ``first_bin`` (the chromosome bin at
            ``axis_start``), sorted by interval, then ``axis_start``. Intervals
            that touch no bin of the layout (other chromosomes, gaps, or
            ``start == end`` on a bin edge) have no row.
        """
        res = self.resolution
        lo = intervals["start"].to_numpy(np.int64) // res
        hi = -(-intervals["end"].to_numpy(np.int64) // res)
        chrom = intervals["chrom"].astype(str).to_numpy()
        rows_of = pd.Series(chrom).groupby(chrom, sort=False).indices
        pairs = [(np.empty(0, np.int64), np.empty(0, np.int64))]
        for name, regions in self.regions.groupby("chrom", sort=False):
            if name in rows_of:
                regions = regions.sort_values("first_bin")
                which = rows_of[name]
                first = regions.first_bin.to_numpy()
                rows, k = _overlapping(
                    first, first + regions.n_bins.to_numpy(), lo[which], hi[which]
                )
                pairs.append((which[rows], regions.index.to_numpy()[k]))
        rows, k = (np.concatenate(p).astype(np.int64) for p in zip(*pairs))
        region_first = self.regions.first_bin.to_numpy()[k]
        first = np.maximum(region_first, lo[rows])
        last = np.minimum(region_first + self.regions.n_bins.to_numpy()[k], hi[rows])
        offset = self.regions.offset.to_numpy()[k] - region_first
        runs = pd.DataFrame(
            {
                "interval": rows,
                "region": k,
                "axis": self.regions.axis.to_numpy()[k],
                "axis_start": offset + first,
                "axis_end": offset + last,
                "first_bin": first,
            }
        )
        return runs.sort_values(["interval", "axis_start", "region"], ignore_index=True)

    def genome_bins(self, axis: str) -> tuple[np.ndarray, np.ndarray]:
        """Chromosome and bin of every position on an axis.

        Returns
        -------
        chrom_index : numpy.ndarray, shape=(n_positions,), int
            Index into ``self.regions.chrom`` of the region holding each
            position; -1 where no region covers it.
        bins : numpy.ndarray, shape=(n_positions,), int64
            Chromosome bin of each position; -1 where uncovered.
        """
        n = self.axis_lengths[axis]
        chrom_index = np.full(n, -1, dtype=np.int64)
        bins = np.full(n, -1, dtype=np.int64)
        for row in self.axis_regions(axis).itertuples():
            chrom_index[row.offset : row.offset + row.n_bins] = row.Index
            bins[row.offset : row.offset + row.n_bins] = np.arange(
                row.first_bin, row.first_bin + row.n_bins
            )
        return chrom_index, bins

    def count_intervals(self, intervals: pd.DataFrame, axis: str) -> np.ndarray:
        """How many intervals overlap the bin of each axis position.

        Parameters
        ----------
        intervals : pandas.DataFrame
            Columns ``chrom, start, end`` in bp, 0-based half-open.
        axis : str
            The axis to count on.

        Returns
        -------
        numpy.ndarray, shape=(n_positions,), int32
        """
        n = self.axis_lengths[axis]
        diff = np.zeros(n + 1, dtype=np.int64)
        res = self.resolution
        for row in self.axis_regions(axis).itertuples():
            hits = intervals[intervals.chrom == row.chrom]
            if hits.empty:
                continue
            lo = np.clip(hits.start.to_numpy() // res - row.first_bin, 0, row.n_bins)
            hi = np.clip(-(-hits.end.to_numpy() // res) - row.first_bin, 0, row.n_bins)
            keep = hi > lo
            np.add.at(diff, row.offset + lo[keep], 1)
            np.add.at(diff, row.offset + hi[keep], -1)
        return np.cumsum(diff[:-1]).astype(np.int32)

    def mask_from_intervals(self, intervals: pd.DataFrame, axis: str) -> np.ndarray:
        """Boolean mask of the axis positions whose bins overlap any interval.

        Parameters
        ----------
        intervals : pandas.DataFrame
            Columns ``chrom, start, end`` in bp, 0-based half-open.
        axis : str
            The axis to build the mask for.

        Returns
        -------
        numpy.ndarray, shape=(n_positions,), bool
        """
        return self.count_intervals(intervals, axis) > 0


@dataclass
class Locus:
    """A window of the layout to draw: axis positions ``[start, end)`` and their genomic place."""

    axis: str
    start: int
    end: int
    chrom: str
    first_bin: int
    label: str

    def bp_starts(self, resolution: int = 25) -> np.ndarray:
        """Genomic start (bp) of each bin, shape ``(end - start,)``."""
        return (self.first_bin + np.arange(self.end - self.start)) * resolution

    @property
    def region(self) -> str:
        """UCSC string of the window (0-based, half-open)."""
        lo = self.first_bin * 25
        return f"{self.chrom}:{lo}-{lo + (self.end - self.start) * 25}"
