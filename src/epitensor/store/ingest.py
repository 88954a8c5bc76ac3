"""Ingestion: read bigWig / bedGraph / wig / npz tracks, bin to 25 bp, transform, fill a store.

A *manifest* is a TSV file with a header and the columns ``celltype``, ``assay``
and ``path`` (relative to the manifest's folder, absolute, or an http(s) URL),
optionally ``md5`` (checked before reading) and ``scale`` (``raw``, the default:
the values are -log10 p and the store's transform is applied; or ``arcsinh``:
the values are already transformed and are stored as they are).

Every track is averaged into bins of the layout's resolution (25 bp): a bin's
value is the sum of signal x bases over the bin divided by the bin width, so
bases without data count as 0 (as the original Avocado did), including the
bases of a chromosome's last, partial bin that lie past the chromosome end.
Non-finite values (NaN, inf) become 0 with a warning that counts them; then
arcsinh is applied (in float64). A finite value that the store cannot hold
(beyond float32 in a text file, or beyond the store's float16 after the
transform) is an error naming the line or bin, as are overlapping records
of a bedGraph or wig file. Cell type and assay names follow
:func:`epitensor.store.names.validate_name`.

Tracks are read in worker processes, one chromosome (axis) of one track per
task for bigWig and array files, one whole file per task for the text formats
(which have no index), while the parent process writes into the store in
manifest order; at most ``2 * workers`` results wait in memory at any time.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import (
    EpitensorError,
    atomic_directory,
    check_parent_folder,
    is_local_path,
    local_path,
    md5sum,
    progress,
    warn,
)
from epitensor.genome.coordinates import BUILDS, Layout, chrom_sizes, natural_sort
from epitensor.io.fetch import (
    DEFAULT_DOWNLOAD_TIMEOUT,
    DEFAULT_MAX_DOWNLOAD,
    RunScratch,
    download,
    parse_size,
    terminate_cleanly,
    watch_parent,
)
from epitensor.store.compendium import DEFAULT_TRACK_CHUNK, Store
from epitensor.store.names import validate_name

__all__ = [
    "FORMATS",
    "TrackSpec",
    "add_tracks",
    "detect_format",
    "ingest",
    "read_manifest",
    "read_track",
    "resolve_layout",
]

FORMATS = ("bigwig", "bedgraph", "wig", "npz", "npy")
TRANSFORMS = ("arcsinh", "none")
SCALES = ("raw", "arcsinh")
_BIGWIG_MAGIC = (0x888FFC26).to_bytes(4, "little")
_TEXT_FORMATS = ("bedgraph", "wig")
BLOCK_BYTES = 256 << 20  # tracks buffered for one block write
_BIGWIG_BLOCK = 1 << 20  # bins per pybigtools query
_WIG_HEADS = ("fixedStep", "variableStep", "track", "browser", "#")
_TEXT_BLOCK = 1 << 20  # bins summed at once from text records
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# manifest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackSpec:
    """One manifest row: a (cell type, assay) track and where its file lives.

    Parameters
    ----------
    celltype, assay : str
        Names of the track.
    path : str
        Local path (absolute, or resolved against the manifest's folder), or
        URL: http(s) (standard library) or any other fsspec protocol.
    md5 : str
        Expected hex MD5 of the file; empty to skip the check. Default "".
    scale : str
        ``"raw"`` (values are -log10 p; the store's transform is applied) or
        ``"arcsinh"`` (already transformed). Default ``"raw"``.
    """

    celltype: str
    assay: str
    path: str
    md5: str = ""
    scale: str = "raw"

    @property
    def where(self) -> str:
        """How errors name this track: ``track (E003, H3K4me3) from FILE``."""
        return f"track ({self.celltype}, {self.assay}) from {self.path}"


def read_manifest(manifest: str | os.PathLike) -> list[TrackSpec]:
    """Read and validate a manifest TSV.

    Every row must have as many tab-separated fields as the header (empty
    fields after the last column, as a trailing tab leaves, are ignored), so
    a stray tab never shifts a value into another column.

    Parameters
    ----------
    manifest : str or path-like
        TSV with a header and the columns ``celltype``, ``assay``, ``path``
        and optionally ``md5`` and ``scale`` (other columns are ignored).
        Relative paths are resolved against the manifest's folder. Blank
        lines are skipped.

    Returns
    -------
    list of TrackSpec
        One per row, in file order.
    """
    manifest = Path(manifest)
    rows = [(n, line) for n, line in enumerate(_manifest_lines(manifest), 1) if line.strip()]
    if not rows:
        raise EpitensorError(f"manifest {manifest} is empty; write a header and one row per track")
    columns = _manifest_header(rows[0][1], manifest)
    if len(rows) == 1:
        raise EpitensorError(f"manifest {manifest} lists no tracks; add one row per track")
    specs = []
    for n, line in rows[1:]:
        fields = [f.strip() for f in line.split("\t")]
        while len(fields) > len(columns) and not fields[-1]:
            fields.pop()
        if len(fields) != len(columns):
            raise EpitensorError(
                f"manifest {manifest}, line {n}: {len(fields)} tab-separated fields but the "
                f"header has {len(columns)} ({', '.join(columns)}); fix the row so each value "
                f"is in its column"
            )
        specs.append(_spec_from_row(dict(zip(columns, fields)), manifest, n))
    _check_duplicates(specs, str(manifest))
    return specs


def _manifest_lines(manifest: Path) -> list[str]:
    """The manifest's lines (UTF-8, an optional byte-order mark, LF or CRLF)."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise EpitensorError(f"manifest not found: {manifest}") from None
    except IsADirectoryError:
        raise EpitensorError(
            f"manifest {manifest} is a folder; pass the manifest TSV file inside it"
        ) from None
    except UnicodeDecodeError as exc:
        raise EpitensorError(
            f"cannot read manifest {manifest}: not UTF-8 text ({exc.reason} at byte "
            f"{exc.start}); save it as a tab-separated text file"
        ) from None
    except OSError as exc:
        raise EpitensorError(f"cannot read manifest {manifest}: {exc.strerror or exc}") from None
    # not splitlines(): it also splits on form feeds and other separators a field may hold
    return [line.removesuffix("\r") for line in text.split("\n")]


def _manifest_header(line: str, manifest: Path) -> list[str]:
    columns = [c.strip().lower() for c in line.split("\t")]
    while columns and not columns[-1]:
        columns.pop()
    missing = [c for c in ("celltype", "assay", "path") if c not in columns]
    if missing:
        raise EpitensorError(
            f"manifest {manifest} lacks the column(s) {missing}; its header must name "
            f"celltype, assay, path (tab-separated), optionally md5 and scale"
        )
    doubled = sorted({c for c in columns if c and columns.count(c) > 1})
    if doubled:
        raise EpitensorError(
            f"manifest {manifest}: the header names {doubled} more than once; keep one of each"
        )
    return columns


def _spec_from_row(row: dict, manifest: Path, line: int) -> TrackSpec:
    where = f"manifest {manifest}, line {line}"
    celltype, assay, path = row["celltype"], row["assay"], row["path"]
    if not celltype or not assay or not path:
        raise EpitensorError(f"{where}: celltype, assay and path must all be given")
    validate_name(celltype, "cell type", where)
    validate_name(assay, "assay", where)
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise EpitensorError(f"{where}: the path {path!r} holds a control character; fix it")
    if is_local_path(path) and not Path(path).is_absolute():
        path = str(manifest.parent / path)
    scale = row.get("scale", "") or "raw"
    if scale not in SCALES:
        raise EpitensorError(
            f"{where}: invalid scale: got {scale!r}, expected one of {list(SCALES)!r}"
        )
    md5 = row.get("md5", "").lower()
    if md5 and not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise EpitensorError(f"{where}: invalid md5 {md5!r}: expected 32 hex digits or nothing")
    return TrackSpec(celltype, assay, path, md5, scale)


def _check_duplicates(specs: Sequence[TrackSpec], where: str, existing: Iterable = ()) -> None:
    seen = set(existing)
    for spec in specs:
        key = (spec.celltype, spec.assay)
        if key in seen:
            raise EpitensorError(
                f"{where}: duplicate track ({spec.celltype}, {spec.assay}) ({spec.path}); "
                f"keep one row per (celltype, assay)"
            )
        seen.add(key)


# formats and chromosome names ----------------------------------------------------------


def detect_format(path: str | os.PathLike) -> str:
    """Detect a track's format from its content (bigWig, wig, bedGraph) or suffix (npz, npy).

    Parameters
    ----------
    path : str or path-like
        Local file, plain or gzip-compressed for the text formats.

    Returns
    -------
    str
        One of :data:`FORMATS`.
    """
    name = str(path).lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".npy"):
        return "npy"
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == _BIGWIG_MAGIC:
        return "bigwig"
    try:
        with _open_text(path) as handle:
            for line in handle:
                word = line.strip().split(maxsplit=1)[:1]
                if not word or word[0].startswith(("#", "track", "browser")):
                    continue
                if word[0] in ("fixedStep", "variableStep"):
                    return "wig"
                if len(line.split()) >= 4:
                    return "bedgraph"
                break
            else:  # only headers or nothing: a text track without data, reported as empty
                return "wig" if ".wig" in name else "bedgraph"
    except (OSError, UnicodeDecodeError, EOFError, zlib.error):
        pass
    raise EpitensorError(
        f"{path}: unrecognised or corrupt file (not bigWig, bedGraph, wig, npz or npy); "
        f"check the file or re-download it"
    )


def _open_text(path: str | os.PathLike):
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="ascii")
    return open(path, encoding="ascii")


def _alt_name(name: str) -> str:
    """The same chromosome in the other naming style: ``1`` <-> ``chr1``, ``MT`` <-> ``chrM``."""
    if name.lower().startswith("chr"):
        stem = name[3:]
        return "MT" if stem == "M" else stem
    return "chrM" if name == "MT" else f"chr{name}"


def _is_contig(name: str) -> bool:
    """Unplaced, random, alternative or viral sequences that builds ship apart from chromosomes."""
    return bool(re.search(r"_|^(chr)?Un|random|hap|EBV|^GL|^KI|^JH", name, re.IGNORECASE))


def _map_chroms(
    names: Iterable[str], sizes: pd.Series, genome: str, where: str
) -> tuple[dict[str, str], list[str]]:
    """Map a file's chromosome names onto the genome's.

    Returns
    -------
    mapping : dict of str to str
        File name to genome name for every usable chromosome.
    notes : list of str
        Warnings to give (renamed chromosomes, skipped contigs).
    """
    mapping, renamed, contigs, unknown = {}, [], [], []
    for name in names:
        if name in sizes.index:
            mapping[name] = name
        elif _alt_name(name) in sizes.index:
            mapping[name] = _alt_name(name)
            renamed.append(name)
        elif _is_contig(name):
            contigs.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise EpitensorError(
            f"{where}: chromosome(s) {', '.join(unknown[:5])} not in genome {genome} "
            f"(which has {', '.join(list(sizes.index[:3]))}, ...); pass the right --genome "
            f"or a chrom.sizes file that lists them"
        )
    notes = []
    if renamed:
        pairs = ", ".join(f"{n} -> {mapping[n]}" for n in renamed[:3])
        notes.append(
            f"{where}: chromosome names in another style mapped to {genome}'s "
            f"({pairs}{', ...' if len(renamed) > 3 else ''}; {len(renamed)} renamed)"
        )
    if contigs:
        notes.append(
            f"{where}: skipped {len(contigs)} contig(s) absent from genome {genome} "
            f"({', '.join(contigs[:3])}{', ...' if len(contigs) > 3 else ''})"
        )
    return mapping, notes


def _guess_build(lengths: dict[str, int]) -> str | None:
    """The bundled build whose chromosome lengths all agree with ``lengths``, if any."""
    for build in BUILDS:
        sizes = chrom_sizes(build)
        named = {(c if c in sizes.index else _alt_name(c)): n for c, n in lengths.items()}
        shared = [c for c in named if c in sizes.index]
        if shared and all(int(sizes[c]) == named[c] for c in shared):
            return build
    return None


def _check_lengths(
    lengths: dict[str, int], mapping: dict[str, str], sizes: pd.Series, genome: str, where: str
) -> None:
    """Raise when a file's chromosome lengths disagree with the declared genome."""
    bad = [(c, n, int(sizes[mapping[c]])) for c, n in lengths.items() if c in mapping]
    bad = [item for item in bad if item[1] != item[2]]
    if not bad:
        return
    chrom, found, expected = bad[0]
    guess = _guess_build(lengths)
    hint = (
        f"the file looks like {guess}: re-run with --genome {guess} or use a {genome} file"
        if guess and guess != genome
        else f"use a file made for {genome} or pass the matching --genome"
    )
    raise EpitensorError(
        f"{where}: genome-build mismatch, {chrom} is {found:,} bp in the file but "
        f"{expected:,} bp in {genome} ({len(bad)} chromosome(s) differ); {hint}"
    )


# inspecting a file (runs in a worker) ----------------------------------------------------


@dataclass
class _Source:
    """A validated track file: its format and how its chromosomes map onto the genome."""

    spec: TrackSpec
    local: str
    fmt: str
    mapping: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def chroms(self) -> list[str]:
        """Genome chromosomes the file has data on (empty for arrays on a region layout)."""
        return natural_sort(set(self.mapping.values()))


def _inspect(spec: TrackSpec, local: str, sizes: pd.Series, genome: str) -> _Source:
    """Check a track file before reading it: exists, md5, format, chromosomes, build, data."""
    try:
        return _inspect_file(spec, local, sizes, genome)
    except OSError as exc:  # unreadable (permissions, I/O error): not a store write failure
        raise EpitensorError(
            f"{spec.where}: cannot read the file ({exc.strerror or exc}); check that it is readable"
        ) from None


def _inspect_file(spec: TrackSpec, local: str, sizes: pd.Series, genome: str) -> _Source:
    where = spec.where
    if Path(local).is_dir():
        raise EpitensorError(f"{where}: the path is a folder; list the track file itself")
    if not Path(local).is_file():
        raise EpitensorError(
            f"{where}: file not found; fix the path in the manifest "
            f"(relative paths are read from the manifest's folder)"
        )
    if spec.md5 and md5sum(local) != spec.md5:
        raise EpitensorError(
            f"{where}: md5 mismatch (expected {spec.md5}, file has {md5sum(local)}); "
            f"re-download the file or fix the md5 column"
        )
    try:
        fmt = detect_format(local)
    except EpitensorError:
        raise EpitensorError(
            f"{where}: unrecognised or corrupt file (not bigWig, bedGraph, wig, npz or npy); "
            f"check the file or re-download it"
        ) from None
    source = _Source(spec, local, fmt)
    if fmt == "bigwig":
        lengths, covered = _bigwig_header(local, where)
        if covered == 0:
            raise EpitensorError(f"{where}: empty track (no data in the bigWig); check the file")
        source.mapping, source.notes = _map_chroms(lengths, sizes, genome, where)
        _check_lengths(lengths, source.mapping, sizes, genome, where)
    elif fmt in _TEXT_FORMATS:
        records = _read_text(local, fmt, where)
        source.mapping, source.notes = _map_chroms(records, sizes, genome, where)
        ends = {c: int(r[1].max()) for c, r in records.items() if c in source.mapping}
        _check_text_ends(ends, source.mapping, sizes, genome, where)
    else:
        keys = _array_keys(local, fmt, where)
        chrom_keys = [k for k in keys if k in sizes.index or _alt_name(k) in sizes.index]
        if chrom_keys and len(chrom_keys) == len(keys):
            source.mapping, source.notes = _map_chroms(keys, sizes, genome, where)
    return source


def _check_text_ends(
    ends: dict[str, int], mapping: dict[str, str], sizes: pd.Series, genome: str, where: str
) -> None:
    past = [(c, n, int(sizes[mapping[c]])) for c, n in ends.items() if n > sizes[mapping[c]]]
    if past:
        chrom, end, length = past[0]
        raise EpitensorError(
            f"{where}: data on {chrom} ends at {end:,} past its length in {genome} "
            f"({length:,} bp): genome-build mismatch; pass the file's build with --genome"
        )


# readers ---------------------------------------------------------------------------------


def _open_bigwig(path: str, where: str):
    import pybigtools

    try:
        return pybigtools.open(path)
    except Exception as exc:  # noqa: BLE001 - the Rust reader raises several kinds
        raise EpitensorError(
            f"{where}: cannot read the bigWig ({exc}); the file is corrupt or truncated, "
            f"re-download it"
        ) from None


def _bigwig_header(path: str, where: str) -> tuple[dict[str, int], int]:
    """Chromosome lengths and bases covered from a bigWig header."""
    reader = _open_bigwig(path, where)
    try:
        lengths = {str(c): int(n) for c, n in reader.chroms().items()}
        covered = int(reader.info()["summary"]["basesCovered"])
    except Exception as exc:  # noqa: BLE001
        raise EpitensorError(
            f"{where}: cannot read the bigWig header ({exc}); the file is corrupt, re-download it"
        ) from None
    finally:
        with contextlib.suppress(Exception):
            reader.close()
    return lengths, (covered if lengths else 0)


def _bigwig_bins(reader, chrom: str, length: int, first: int, res: int, out: np.ndarray) -> None:
    """Fill ``out`` (float64, one per bin) with bin means from chromosome bin ``first``.

    Uncovered bases count as 0. pybigtools writes straight into ``out`` (no temporary chromosome-sized
    array). It returns 0 for a bin that crosses the chromosome end, so that
    last, partial bin is summed base by base and divided by the full width.
    """
    n = len(out)
    full = max(0, min(n, length // res - first))
    # pybigtools keeps ~45 bytes per requested bin while summarising: query in blocks
    for lo in range(0, full, _BIGWIG_BLOCK):
        hi = min(full, lo + _BIGWIG_BLOCK)
        reader.values(
            chrom,
            (first + lo) * res,
            (first + hi) * res,
            bins=hi - lo,
            summary="mean",
            exact=True,
            uncovered=0.0,
            oob=0.0,
            fillna=None,
            arr=out[lo:hi],
        )
    if full < n and (first + full) * res < length:
        start = (first + full) * res
        bases = reader.values(chrom, start, length, uncovered=0.0, oob=0.0, fillna=None)
        out[full] = np.sum(bases) / res


class _LineError(ValueError):
    """A defect of one line of a text track (1-based line number)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")


def _read_text(path: str, fmt: str, where: str) -> dict[str, tuple[np.ndarray, ...]]:
    """Records of a bedGraph or wig file per chromosome (file names).

    Returns
    -------
    dict of str to (starts, ends, values)
        0-based half-open intervals (int64) and values (float64), sorted by
        start, not overlapping, empty intervals dropped.

    Raises
    ------
    EpitensorError
        The file is unreadable, or a line is malformed, holds a finite value
        beyond the float32 range, or overlaps another (naming both lines).
    """
    try:
        with _open_text(path) as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as exc:
        raise EpitensorError(
            f"{where}: cannot read the {fmt} file ({exc}); it is corrupt, re-download it"
        ) from None
    lines = text.splitlines()  # LF, CRLF and lone CR, as the format detection reads them
    del text
    try:
        parts = _parse_bedgraph(lines) if fmt == "bedgraph" else _parse_wig(lines)
        records = {chrom: _tidy(*_concat(pieces)) for chrom, pieces in parts.items()}
    except _LineError as exc:
        raise EpitensorError(f"{where}: {exc}; fix the {fmt} file") from None
    records = {c: r for c, r in records.items() if len(r[0])}
    if not records:
        raise EpitensorError(f"{where}: empty track (no data lines in the {fmt}); check the file")
    return records


def _concat(pieces: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    return tuple(np.concatenate([p[i] for p in pieces]) for i in range(4))


def _tidy(
    starts: np.ndarray, ends: np.ndarray, values: np.ndarray, lines: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Sort by start, refuse overlaps (naming both lines) and drop empty intervals."""
    keep = ends > starts
    starts, ends, values, lines = starts[keep], ends[keep], values[keep], lines[keep]
    order = np.argsort(starts, kind="stable")
    starts, ends, values, lines = starts[order], ends[order], values[order], lines[order]
    overlap = np.flatnonzero(starts[1:] < ends[:-1])
    if len(overlap):
        k = int(overlap[0])
        raise _LineError(
            int(lines[k + 1]),
            f"interval [{starts[k + 1]:,}, {ends[k + 1]:,}) overlaps the interval "
            f"[{starts[k]:,}, {ends[k]:,}) of line {lines[k]} ({len(overlap):,} overlap(s)); "
            f"records must not overlap: merge them (summing or averaging, as you intend)",
        )
    return starts, ends, values


def _numbers(words: list[str], lines: list[int], dtype, what: str) -> np.ndarray:
    """``words`` as an array of ``dtype``; a word that is not one names its line."""
    try:
        array = np.array(words, dtype=dtype) if words else np.zeros(0, dtype=dtype)
    except (ValueError, OverflowError):
        parse = int if dtype is np.int64 else float
        for word, line in zip(words, lines):
            try:
                number = parse(word)
            except ValueError:
                raise _LineError(line, f"{what} {word[:30]!r} is not a number") from None
            if parse is int and abs(number) >= 1 << 62:
                raise _LineError(line, f"{what} {word[:30]!r} is out of range") from None
        array = np.array([parse(word) for word in words], dtype=dtype)  # numpy is stricter
    if dtype is np.float64:
        huge = np.flatnonzero(np.isfinite(array) & (np.abs(array) > _FLOAT32_MAX))
        if len(huge):
            k = int(huge[0])
            raise _LineError(
                lines[k],
                f"value {words[k][:30]} is beyond the float32 range (±{_FLOAT32_MAX:.3g}; "
                f"{len(huge):,} such value(s)): the file is corrupt or not a signal track",
            )
    return array


def _parse_bedgraph(lines: list[str]) -> dict[str, list]:
    columns: tuple[list, ...] = ([], [], [], [], [])
    for n, line in enumerate(lines, 1):
        words = line.split()
        if not words or words[0].startswith(("#", "track", "browser")):
            continue
        if len(words) != 4:  # more: two records on one line (a lost line end) would lose one
            raise _LineError(
                n, f"a data line needs 4 columns (chrom, start, end, value), got {len(words)}"
            )
        for column, word in zip(columns, words[:4]):
            column.append(word)
        columns[4].append(n)
    chroms, line_numbers = np.array(columns[0], dtype=object), np.array(columns[4], np.int64)
    starts = _numbers(columns[1], columns[4], np.int64, "start")
    ends = _numbers(columns[2], columns[4], np.int64, "end")
    values = _numbers(columns[3], columns[4], np.float64, "value")
    _check_intervals(starts, ends, line_numbers)
    parts: dict[str, list] = {}
    for chrom in dict.fromkeys(columns[0]):
        rows = chroms == chrom
        parts[str(chrom)] = [(starts[rows], ends[rows], values[rows], line_numbers[rows])]
    return parts


def _check_intervals(starts: np.ndarray, ends: np.ndarray, lines: np.ndarray) -> None:
    bad = np.flatnonzero((starts < 0) | (ends < starts))
    if len(bad):
        k = int(bad[0])
        raise _LineError(
            int(lines[k]),
            f"interval [{starts[k]:,}, {ends[k]:,}) has a negative start or ends before it "
            f"starts (0-based half-open [start, end) expected)",
        )


def _wig_header(words: list[str], line: int) -> dict[str, int | str]:
    """The fields of a ``fixedStep`` / ``variableStep`` line, checked."""
    fields: dict[str, int | str] = {"kind": words[0], "line": line}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or key not in ("chrom", "start", "step", "span"):
            raise _LineError(line, f"unknown {words[0]} field {word[:30]!r}")
        if key == "chrom":
            fields[key] = value
            continue
        if not value.isdigit() or int(value) < 1:
            raise _LineError(line, f"{key}={value[:30]} must be a positive integer")
        fields[key] = int(value)
    if "chrom" not in fields:
        raise _LineError(line, f"{words[0]} needs chrom=")
    if words[0] == "fixedStep" and "start" not in fields:
        raise _LineError(line, "fixedStep needs start=")
    return fields


def _parse_wig(lines: list[str]) -> dict[str, list]:
    blocks: list[tuple[dict, list[str], list[int]]] = []
    block = None
    for n, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            continue
        if words[0] in ("fixedStep", "variableStep"):
            block = (_wig_header(words, n), [], [])
            blocks.append(block)
            continue
        if words[0].startswith(_WIG_HEADS):
            block = None if words[0] == "track" else block
            continue
        if block is None:
            raise _LineError(n, "data line before any fixedStep or variableStep line")
        expected = 1 if block[0]["kind"] == "fixedStep" else 2
        if len(words) != expected:
            raise _LineError(
                n, f"a {block[0]['kind']} data line holds {expected} number(s), got {len(words)}"
            )
        block[1].extend(words)
        block[2].append(n)
    parts: dict[str, list] = {}
    for fields, words, numbers in blocks:
        parts.setdefault(str(fields["chrom"]), []).append(_wig_block(fields, words, numbers))
    return parts


def _wig_block(fields: dict, words: list[str], numbers: list[int]) -> tuple[np.ndarray, ...]:
    span = int(fields.get("span", 1))
    lines = np.array(numbers, dtype=np.int64)
    if fields["kind"] == "fixedStep":
        values = _numbers(words, numbers, np.float64, "value")
        step = int(fields.get("step", 1))
        starts = int(fields["start"]) - 1 + step * np.arange(len(values), dtype=np.int64)
    else:
        positions = _numbers(words[0::2], numbers, np.int64, "position")
        values = _numbers(words[1::2], numbers, np.float64, "value")
        if len(positions) and positions.min() < 1:
            k = int(np.argmin(positions))
            raise _LineError(numbers[k], f"position {positions[k]} must be >= 1 (wig is 1-based)")
        starts = positions - 1
    return starts, starts + span, values, lines


def _bin_records(
    records: tuple[np.ndarray, ...], first: np.ndarray, n: np.ndarray, res: int
) -> tuple[list[np.ndarray], int]:
    """Mean signal per bin of several bin ranges from sorted, non-overlapping records.

    Each bin sums ``value x overlap`` over the records overlapping it, in
    blocks of bins: unlike differences of one running integral, a huge value
    cannot cancel the precision of the bins after it.

    Returns
    -------
    means : list of numpy.ndarray, shape=(n[i],), float64
        Mean signal per bin, non-finite records counted as uncovered.
    n_bad : int
        Non-finite records overlapping the bins.
    """
    starts, ends, values = records
    bad = ~np.isfinite(values)
    n_bad = 0
    if bad.any():
        for lo, count in zip(first, n):
            inside = (starts < (lo + count) * res) & (ends > lo * res)
            n_bad += int((bad & inside).sum())
        values = np.where(bad, 0.0, values)
    out = []
    for lo, count in zip(first, n):
        sums = np.zeros(int(count), dtype=np.float64)
        for b0 in range(0, int(count), _TEXT_BLOCK):
            b1 = min(int(count), b0 + _TEXT_BLOCK)
            _sum_bins(starts, ends, values, (int(lo) + b0) * res, res, sums[b0:b1])
        out.append(sums / res)
    return out, n_bad


def _sum_bins(
    starts: np.ndarray, ends: np.ndarray, values: np.ndarray, origin: int, res: int, out
) -> None:
    """Fill ``out`` (one per bin from bp ``origin``) with sums of value x overlapping bases."""
    low = origin + res * np.arange(len(out), dtype=np.int64)
    first = np.searchsorted(ends, low, side="right")  # ends are sorted: records don't overlap
    last = np.searchsorted(starts, low + res, side="left")
    counts = np.maximum(last - first, 0)
    total = int(counts.sum())
    if not total:
        return
    bins = np.repeat(np.arange(len(out)), counts)
    rec = np.arange(total) - np.repeat(np.cumsum(counts) - counts - first, counts)
    overlap = np.minimum(ends[rec], low[bins] + res) - np.maximum(starts[rec], low[bins])
    out[:] = np.bincount(bins, weights=values[rec] * overlap, minlength=len(out))


def _array_keys(path: str, fmt: str, where: str) -> list[str]:
    try:
        if fmt == "npy":
            np.load(path, mmap_mode="r", allow_pickle=False)
            return ["arr_0"]
        with np.load(path, allow_pickle=False) as bundle:
            return list(bundle.files)
    except Exception as exc:  # noqa: BLE001 - numpy raises many kinds for bad files
        raise EpitensorError(
            f"{where}: cannot read the {fmt} file ({exc}); it is corrupt, re-download it"
        ) from None


def _array_axis(path: str, fmt: str, axis: str, layout: Layout, where: str) -> np.ndarray:
    """The array of an npz/npy file that holds ``axis``, checked against the layout.

    An array named after the axis is used; otherwise a file holding a single
    array matches a layout with a single axis.
    """
    keys = _array_keys(path, fmt, where)
    if axis in keys or _alt_name(axis) in keys:
        key = axis if axis in keys else _alt_name(axis)
    elif len(keys) == 1 and len(layout.axes) == 1:
        key = keys[0]
    else:
        raise EpitensorError(
            f"{where}: no array for axis {axis!r} (the file holds {keys[:5]}); name the arrays "
            f"after the layout's axes {layout.axes[:5]} or use a single-axis layout"
        )
    if fmt == "npy":
        values = np.load(path, mmap_mode="r", allow_pickle=False)
    else:
        with np.load(path, allow_pickle=False) as bundle:
            values = bundle[key]
    expected = layout.axis_lengths[axis]
    if values.ndim != 1 or values.shape[0] != expected:
        raise EpitensorError(
            f"{where}: array {key!r} has shape {values.shape} but axis {axis!r} of layout "
            f"{layout.name!r} has {expected:,} positions; use the layout the array was made on "
            f"(--regions)"
        )
    return np.array(values, dtype=np.float64)  # a copy: _finish edits it in place


# reading one track (runs in a worker) ----------------------------------------------------


def _axis_chrom_bins(
    source: _Source, layout: Layout, axis: str, reader=None
) -> tuple[np.ndarray, int]:
    """Binned (untransformed) signal of one axis from a bigWig or text source.

    Returns the bin means, shape ``(axis_length,)``, and the number of
    non-finite text records zeroed on the way (bigWig NaN bins are counted later).
    """
    out = np.zeros(layout.axis_lengths[axis], dtype=np.float64)
    n_bad = 0
    regions = layout.axis_regions(axis)
    inverse = {genome_name: name for name, genome_name in source.mapping.items()}
    for chrom, group in regions.groupby("chrom", sort=False):
        if chrom not in inverse:
            continue
        name = inverse[chrom]
        firsts, counts = group.first_bin.to_numpy(), group.n_bins.to_numpy()
        offsets = group.offset.to_numpy()
        if source.fmt == "bigwig":
            length = int(reader.chroms()[name])
            for first, count, offset in zip(firsts, counts, offsets):
                _bigwig_bins(
                    reader, name, length, first, layout.resolution, out[offset : offset + count]
                )
            continue
        pieces, bad = _bin_records(reader[name], firsts, counts, layout.resolution)
        n_bad += bad
        for offset, piece in zip(offsets, pieces):
            out[offset : offset + len(piece)] = piece
    return out, n_bad


def _finish(
    values: np.ndarray, transform: str, scale: str, dtype: str, where: str, at
) -> tuple[np.ndarray, int]:
    """Replace non-finite values by 0 (in place), transform, cast, check every cast.

    The transform runs in float64, before any narrowing cast, so a finite value
    stays finite through arcsinh. A finite value that a cast turns into inf
    (beyond float32, or beyond the store's ``dtype`` after the transform) is an
    error: it is a real number the store cannot hold, and storing 0 or the
    largest float in its place would be a wrong value with no trace.

    Parameters
    ----------
    values : numpy.ndarray, shape=(n,), float64
        Bin means; edited in place.
    transform, scale : str
        The store's transform and the track's scale.
    dtype : str
        The store's on-disk dtype (``"float16"`` or ``"float32"``).
    where : str
        The track, for messages.
    at : callable
        Index -> ``"chrom:position"`` of that bin, for messages.

    Returns
    -------
    values : numpy.ndarray, shape=(n,), float32
        On the store's scale.
    n_bad : int
        Non-finite values replaced by 0.
    """
    bad = ~np.isfinite(values)
    n_bad = int(bad.sum())
    if n_bad:
        values[bad] = 0.0
    del bad
    if transform == "arcsinh" and scale == "raw":
        np.arcsinh(values, out=values)
    out = values.astype(np.float32)
    limit = float(np.finfo(dtype).max) if np.dtype(dtype).itemsize < 4 else _FLOAT32_MAX
    if out.size and not max(float(out.max()), -float(out.min())) <= limit:
        with np.errstate(over="ignore"):
            lost = np.flatnonzero(~np.isfinite(out.astype(dtype)))
        if len(lost):
            k = int(lost[0])
            raise EpitensorError(
                f"{where}: the value {values[k]:.4g} at {at(k)} is beyond the store's {dtype} "
                f"range (±{limit:.4g}) after the transform ({len(lost):,} bin(s)); the file is "
                f"corrupt or on another scale (check the scale column and the transform)"
            )
    return out, n_bad


def _position_namer(layout: Layout, axis: str):
    """A function from an index along ``axis`` to ``"chrom:start"`` (bp, 0-based) of that bin."""

    def at(index: int) -> str:
        regions = layout.axis_regions(axis)
        offsets = regions.offset.to_numpy()
        row = regions.iloc[max(0, int(np.searchsorted(offsets, index, side="right")) - 1)]
        start = (int(row.first_bin) + index - int(row.offset)) * layout.resolution
        return f"{row.chrom}:{start:,} (axis {axis!r}, bin {index:,})"

    return at


def _read_axes(
    source: _Source,
    layout: Layout,
    axes: Sequence[str],
    transform: str,
    dtype: str = "float16",
) -> list[tuple[str, np.ndarray, int]]:
    """Read some axes of one track: ``(axis, values, n_non_finite)`` per axis.

    Values are float32, shape ``(axis_length,)``, on the store's scale, and
    finite in the store's ``dtype``.
    """
    where = source.spec.where
    reader = None
    if source.fmt == "bigwig":
        reader = _open_bigwig(source.local, where)
    elif source.fmt in _TEXT_FORMATS:
        reader = _read_text(source.local, source.fmt, where)
    out = []
    try:
        for axis in axes:
            n_records = 0
            if source.fmt in ("npz", "npy"):
                raw = _array_axis(source.local, source.fmt, axis, layout, where)
            else:
                raw, n_records = _axis_chrom_bins(source, layout, axis, reader)
            at = _position_namer(layout, axis)
            values, n_bad = _finish(raw, transform, source.spec.scale, dtype, where, at)
            out.append((axis, values, n_bad + n_records))
    except EpitensorError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt block surfaces only when read
        raise EpitensorError(
            f"{where}: cannot read axis {axis!r} ({type(exc).__name__}: {exc}); the file is "
            f"corrupt or truncated, re-download it"
        ) from None
    finally:
        if source.fmt == "bigwig":
            with contextlib.suppress(Exception):
                reader.close()
    return out


def _task_axes(source: _Source, layout: Layout) -> list[list[str]]:
    """How a track is split into tasks: one axis per task, or all at once for text files."""
    if source.fmt in _TEXT_FORMATS:
        return [layout.axes]
    return [[axis] for axis in layout.axes]


class _Tally:
    """Per-track counts gathered across axes: non-finite values and whether any signal."""

    def __init__(self, source: _Source, layout: Layout) -> None:
        self.source, self.layout = source, layout
        self.n_bad = 0
        self.any_signal = False

    def add(self, values: np.ndarray, n_bad: int) -> None:
        self.n_bad += n_bad
        self.any_signal = self.any_signal or bool(np.any(values != 0))

    def close(self) -> None:
        where = self.source.spec.where
        if not self.any_signal:
            raise EpitensorError(
                f"{where}: empty track, no signal inside layout {self.layout.name!r} "
                f"({self.layout.n_positions:,} bins are all 0); check --regions and --genome"
            )
        if self.n_bad:
            warn(f"{where}: replaced {self.n_bad:,} non-finite values (NaN/inf) by 0", 3)


def read_track(
    path: str | os.PathLike,
    layout: Layout,
    chrom_sizes: pd.Series,
    genome: str = "custom",
    transform: str = "arcsinh",
    scale: str = "raw",
    md5: str = "",
    name: tuple[str, str] = ("?", "?"),
    dtype: str = "float16",
) -> Iterator[tuple[str, np.ndarray]]:
    """Read one track file onto a layout, one axis at a time.

    Memory holds one axis of one track at a time (for the text formats, also
    the file's records). Feed the result straight to :meth:`Store.add_track`.

    Parameters
    ----------
    path : str or path-like
        Local bigWig, bedGraph (plain or gzip), wig (fixedStep / variableStep,
        plain or gzip), npz or npy file.
    layout : Layout
        Axes and regions to fill.
    chrom_sizes : pandas.Series
        Chromosome lengths in bp of the genome the file must match.
    genome : str
        Name of the genome, for messages. Default ``"custom"``.
    transform : str
        ``"arcsinh"`` (default) or ``"none"``.
    scale : str
        ``"raw"`` (default): the file holds -log10 p, the transform is applied;
        ``"arcsinh"``: the file is already transformed.
    md5 : str
        Expected MD5 of the file; default "" skips the check.
    name : tuple of (str, str)
        ``(celltype, assay)`` for messages. Default ``("?", "?")``.
    dtype : str
        On-disk dtype of the store the values go to: a finite value beyond
        its range after the transform is an error. Default ``"float16"`` (the
        store's default).

    Yields
    ------
    axis : str
        Axis name, in layout order.
    values : numpy.ndarray, shape=(axis_length,), float32
        Mean signal per 25-bp bin, non-finite values replaced by 0, then transformed.
    """
    _check_choice("transform", transform, TRANSFORMS)
    _check_choice("dtype", dtype, ("float16", "float32"))
    spec = TrackSpec(name[0], name[1], str(path), md5, scale)
    source = _inspect(spec, str(path), chrom_sizes, genome)
    for note in source.notes:
        warn(note, 2)
    tally = _Tally(source, layout)
    for axes in _task_axes(source, layout):
        for axis, values, n_bad in _read_axes(source, layout, axes, transform, dtype):
            tally.add(values, n_bad)
            yield axis, values
    tally.close()


# the store -----------------------------------------------------------------------------


def resolve_layout(
    regions: Layout | str | os.PathLike | None,
    sizes: pd.Series,
    chroms: Sequence[str] | None = None,
) -> Layout:
    """The layout to ingest onto.

    Parameters
    ----------
    regions : Layout, str, path-like or None
        A :class:`Layout`; ``"roadmap-pilot"`` (the bundled pilot layout); a BED
        file (regions concatenated on one axis, see :meth:`Layout.from_bed`);
        a layout TSV with an ``array_offset`` column; or None for whole
        chromosomes.
    sizes : pandas.Series
        Chromosome lengths of the genome.
    chroms : sequence of str, optional
        For whole chromosomes: which ones. Default None: all of ``sizes``.

    Returns
    -------
    Layout
    """
    if regions is None:
        return Layout.from_chrom_sizes(sizes, chroms=chroms)
    if isinstance(regions, Layout):
        layout = regions
    elif str(regions) == "roadmap-pilot":
        from epitensor.genome.pilot import pilot_layout

        layout = pilot_layout()
    else:
        if not Path(regions).is_file():
            raise EpitensorError(f"regions file not found: {regions}; pass a BED file")
        with _open_text(regions) as handle:
            first = handle.readline()
        if "array_offset" in first:
            layout = Layout.from_avocado_table(regions)
        else:
            layout = Layout.from_bed(regions)
    unknown = sorted(set(layout.regions.chrom) - set(sizes.index))
    if unknown:
        raise EpitensorError(
            f"regions {getattr(regions, 'name', regions)}: chromosome(s) {unknown[:5]} not in "
            f"the genome; pass the regions' build with --genome"
        )
    return layout


def _check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise EpitensorError(f"invalid {name}: got {value!r}, expected one of {list(choices)!r}")


class _Inline:
    """An executor that runs each task at submission (workers <= 1: no processes)."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Nothing to stop."""


def _executor(workers: int, ray_address: str | None = None):
    if ray_address is not None:
        from epitensor.parallel import RayExecutor

        return RayExecutor(ray_address)
    if workers <= 1:
        return _Inline()
    # spawn: the parent may hold zarr's event-loop thread, which fork would copy half-alive
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=watch_parent,
        initargs=(os.getpid(),),
    )


def _stop(pool, interrupted: bool) -> None:
    """Shut the pool down; on SIGTERM / Ctrl-C, end its workers instead of awaiting their tasks."""
    if interrupted and isinstance(pool, ProcessPoolExecutor):
        # the public API of Python < 3.14 cannot end busy workers; _processes is stable since 3.2
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _pool(workers: int, ray_address: str | None) -> Iterator:
    pool = _executor(workers, ray_address)
    interrupted = False
    try:
        yield pool
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        raise
    finally:
        _stop(pool, interrupted)


def _ordered(pool, tasks: list, window: int) -> Iterator:
    """Results of ``(fn, *args)`` tasks in order, with at most ``window`` in flight."""
    pending: list[Future] = []
    tasks_iter = iter(tasks)
    for task in tasks_iter:
        pending.append(pool.submit(*task))
        if len(pending) >= window:
            break
    while pending:
        result = pending.pop(0).result()
        nxt = next(tasks_iter, None)
        if nxt is not None:
            pending.append(pool.submit(*nxt))
        yield result


def _fetch(specs: Sequence[TrackSpec], scratch: RunScratch, limits: tuple[float, int]) -> list[str]:
    """Local paths of the track files, downloading URLs into the run's scratch.

    ``limits`` is ``(seconds for all downloads, largest file in bytes)``.
    """
    deadline = time.monotonic() + limits[0]
    paths = []
    for i, spec in enumerate(specs):
        if is_local_path(spec.path):
            paths.append(str(spec.path).removeprefix("file://"))
            continue
        name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(spec.path.split("?")[0]).name)[-80:]
        target = scratch.downloads / f"{i}-{name}"
        download(spec.path, target, spec.where, deadline, limits[1])
        paths.append(str(target))
    return paths


def _check_limits(download_timeout: float, max_download: int | str) -> tuple[float, int]:
    if not download_timeout > 0:
        raise EpitensorError(
            f"download_timeout must be a positive number of seconds; got {download_timeout!r}"
        )
    return float(download_timeout), parse_size(max_download)


def _inspect_all(pool, specs, paths, sizes, genome) -> list[_Source]:
    sources = list(
        _ordered(pool, [(_inspect, s, p, sizes, genome) for s, p in zip(specs, paths)], 64)
    )
    for source in sources:
        for note in source.notes:
            warn(note, 4)
    return sources


def _write_tracks(store: Store, sources: list[_Source], pool, workers: int, verbose: bool) -> None:
    """Read every track in the pool and write it into the store, in manifest order.

    When a whole chunk of tracks (``DEFAULT_TRACK_CHUNK`` rows) of the whole
    layout fits in ``BLOCK_BYTES`` (in the store's dtype), tracks are gathered into blocks
    aligned with the store's track chunks and each block is written at once:
    :meth:`Store.add_track` would recompress every chunk once per track. Larger
    layouts (whole genomes) stream one axis of one track at a time.
    """
    layout, transform = store.layout, store.transform
    tasks, owners = [], []
    for k, source in enumerate(sources):
        for axes in _task_axes(source, layout):
            tasks.append((_read_axes, source, layout, axes, transform, store.dtype))
            owners.append(k)
    counts = [owners.count(k) for k in range(len(sources))]
    results = _ordered(pool, tasks, max(2, 2 * workers))
    total = len(sources) * layout.n_positions
    with progress(total=total, desc="ingest", verbose=verbose, unit="bin", unit_scale=True) as bar:

        def pieces(k: int) -> Iterator[tuple[str, np.ndarray]]:
            tally = _Tally(sources[k], layout)
            for _ in range(counts[k]):
                for axis, values, n_bad in next(results):
                    tally.add(values, n_bad)
                    bar.update(len(values))
                    yield axis, values
            tally.close()

        chunk = DEFAULT_TRACK_CHUNK
        if chunk * layout.n_positions * np.dtype(store.dtype).itemsize > BLOCK_BYTES:
            for k, source in enumerate(sources):
                spec = source.spec
                store.add_track(spec.celltype, spec.assay, pieces(k), spec.path, spec.md5)
            return
        k = 0
        while k < len(sources):
            batch = list(range(k, min(len(sources), k + chunk - store.n_tracks % chunk)))
            _write_block(store, [sources[i].spec for i in batch], [pieces(i) for i in batch])
            k = batch[-1] + 1


def _write_block(store: Store, specs: list[TrackSpec], tracks: list[Iterator]) -> None:
    """Gather a few tracks in memory and add them with one block write per axis."""
    layout = store.layout
    dtype = np.dtype(store.dtype)
    block = {a: np.zeros((len(specs), n), dtype=dtype) for a, n in layout.axis_lengths.items()}
    for row, track in enumerate(tracks):
        for axis, values in track:
            block[axis][row] = values
    store.add_tracks(
        [(spec.celltype, spec.assay) for spec in specs],
        block,
        source=[spec.path for spec in specs],
        md5=[spec.md5 for spec in specs],
    )


def _add(store: Store, specs: Sequence[TrackSpec], run: _Run) -> None:
    local = is_local_path(store.url)
    # a remote store has no folder beside it here: its run folder goes to the temp folder
    beside = local_path(store.url) if local else Path(tempfile.gettempdir()) / "remote-store"
    with RunScratch(beside, run.scratch) as scratch:
        paths = _fetch(specs, scratch, run.limits)
        if local:
            scratch.snapshot(local_path(store.url))
        n_rows = store.n_tracks
        try:
            with _pool(run.workers, run.ray_address) as pool:
                sources = _inspect_all(pool, specs, paths, store.chrom_sizes, store.genome)
                _warn_dropped(store.layout, sources)
                _write_tracks(store, sources, pool, run.workers, run.verbose)
        except BaseException:
            if local:
                scratch.restore()
            else:
                store.truncate_tracks(n_rows)
            raise


@dataclass(frozen=True)
class _Run:
    """How one ingest runs: workers, progress, Ray, scratch folder, download limits."""

    workers: int
    verbose: bool
    ray_address: str | None
    scratch: str | os.PathLike | None
    limits: tuple[float, int]


def _warn_dropped(layout: Layout, sources: list[_Source]) -> None:
    """Warn when appended tracks have data on chromosomes a whole-genome store lacks."""
    if not layout.is_whole_genome:
        return
    kept = set(layout.regions.chrom)
    for source in sources:
        dropped = [c for c in source.chroms if c not in kept]
        if dropped:
            warn(
                f"{source.spec.where}: data on {', '.join(dropped[:3])}"
                f"{', ...' if len(dropped) > 3 else ''} dropped: the store holds only "
                f"{len(kept)} chromosomes; ingest all tracks together to keep them",
                3,
            )


def _default_workers(workers: int | None, n_tracks: int) -> int:
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if int(workers) < 0:
        raise EpitensorError(f"workers must be a positive integer; got workers={workers!r}")
    return max(1, min(int(workers), n_tracks))


def add_tracks(
    store: Store | str | os.PathLike,
    manifest: str | os.PathLike | Sequence[TrackSpec],
    workers: int | None = None,
    verbose: bool = True,
    ray_address: str | None = None,
    scratch: str | os.PathLike | None = None,
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
    max_download: int | str = DEFAULT_MAX_DOWNLOAD,
) -> Store:
    """Add the tracks of a manifest to an existing store, all or none.

    Tracks are binned onto the store's layout and genome. When any track fails
    (or the run is stopped by SIGTERM or Ctrl-C), a local store is put back
    byte for byte as it was (from a snapshot of hard links in the run's
    scratch folder); a remote store gets its track list and row count back.

    Parameters
    ----------
    store : Store, str or path-like
        The store (opened with ``mode="r+"`` when given as a path).
    manifest : str, path-like or sequence of TrackSpec
        Manifest TSV, or the tracks directly.
    workers : int, optional
        Worker processes. Default None: the number of CPUs (at most 8);
        1 reads in this process.
    verbose : bool
        Show a progress bar on stderr. Default True.
    ray_address : str, optional
        Read the tracks as Ray tasks (``"local"``, ``"auto"`` or an address;
        the files must be readable by every worker); this process writes the
        store. Default None: worker processes on this machine.
    scratch, download_timeout, max_download
        As for :func:`ingest`.

    Returns
    -------
    Store
        The store, reopened read-only.
    """
    limits = _check_limits(download_timeout, max_download)
    if not isinstance(store, Store):
        if is_local_path(store):  # before reading the track list: undo an append that was killed
            RunScratch(local_path(store), scratch).clean_stale()
        store = Store.open(store, mode="r+")
    specs = _specs(manifest)
    with store.locked():  # other writers wait; the track list is re-read under the lock
        _check_duplicates(specs, f"store {store.url}", store.track_names())
        run = _Run(_default_workers(workers, len(specs)), verbose, ray_address, scratch, limits)
        with terminate_cleanly(), _writing(store.url):
            _add(store, specs, run)
    return Store.open(store.url)


@contextlib.contextmanager
def _writing(out: str | os.PathLike) -> Iterator[None]:
    """Turn an OS error while the store is written (disk full, read-only) into one line."""
    try:
        yield
    except OSError as exc:
        what = f"{exc.strerror} ({exc.filename})" if exc.strerror and exc.filename else exc
        raise EpitensorError(
            f"cannot write the store {out}: {what}; free disk space or choose a writable --out "
            f"(nothing was changed)"
        ) from None


def _specs(manifest) -> list[TrackSpec]:
    if isinstance(manifest, (str, os.PathLike)):
        return read_manifest(manifest)
    specs = list(manifest)
    for i, spec in enumerate(specs, 1):
        where = f"track {i} of the list ({spec.path!r})"  # spec.where would print the bad name
        validate_name(spec.celltype, "cell type", where)
        validate_name(spec.assay, "assay", where)
    _check_duplicates(specs, "tracks")
    if not specs:
        raise EpitensorError("no tracks to ingest; the manifest is empty")
    return specs


def ingest(
    manifest: str | os.PathLike | Sequence[TrackSpec],
    out: str | os.PathLike,
    genome: str | os.PathLike = "hg19",
    regions: Layout | str | os.PathLike | None = None,
    workers: int | None = None,
    verbose: bool = True,
    append: bool = False,
    overwrite: bool = False,
    transform: str = "arcsinh",
    ray_address: str | None = None,
    scratch: str | os.PathLike | None = None,
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
    max_download: int | str = DEFAULT_MAX_DOWNLOAD,
) -> Store:
    """Build a compendium store from the tracks of a manifest.

    Parameters
    ----------
    manifest : str, path-like or sequence of TrackSpec
        Manifest TSV (columns ``celltype, assay, path``, optional ``md5``,
        ``scale``), or the tracks directly.
    out : str or path-like
        Local folder of the new store. It is built under a temporary name and
        renamed into place only when every track was read.
    genome : str or path-like
        ``"hg19"`` (default), ``"hg38"``, ``"mm10"`` or a ``chrom.sizes`` file.
        Ignored with ``append`` (the store's genome is used).
    regions : Layout, str, path-like or None
        Region layout (see :func:`resolve_layout`). Default None: whole
        chromosomes, restricted to those the tracks have data on (other
        chromosomes are simply not in the store).
    workers : int, optional
        Worker processes. Default None: the number of CPUs (at most 8);
        1 reads in this process.
    verbose : bool
        Progress bar on stderr. Default True.
    append : bool
        Add the tracks to the existing store at ``out`` (see :func:`add_tracks`).
        Default False.
    overwrite : bool
        Replace an existing store at ``out``. Default False: refuse.
    transform : str
        ``"arcsinh"`` (default) or ``"none"``.
    ray_address : str, optional
        Read the tracks as Ray tasks (``"local"``, ``"auto"`` or an address;
        the files must be readable by every worker); this process writes the
        store, in manifest order. Default None: worker processes on this machine.
    scratch : str or path-like, optional
        Folder for downloaded track files. Default None: the run's scratch
        folder beside ``out`` (``.OUT.ingest-HOST-PID``, removed at the end; a
        later run removes those of runs that were killed).
    download_timeout : float
        Seconds all downloads of the run may take together. Default 14400 (4 h).
    max_download : int or str
        Largest file downloaded, in bytes or with a K/M/G/T suffix. Default 16 GiB.

    Returns
    -------
    Store
        The new store, opened read-only.
    """
    options = {"scratch": scratch, "download_timeout": download_timeout}
    if append:
        return add_tracks(
            out, manifest, workers, verbose, ray_address, max_download=max_download, **options
        )
    _check_choice("transform", transform, TRANSFORMS)
    limits = _check_limits(download_timeout, max_download)
    if not is_local_path(out):
        raise EpitensorError(f"ingest writes local stores; got {out}: build it locally, then copy")
    specs = _specs(manifest)
    if Path(out).exists() and not overwrite:
        raise EpitensorError(f"{out} already exists; pass --append, --overwrite or another --out")
    sizes = chrom_sizes(genome)
    build = str(genome) if str(genome) in BUILDS else "custom"
    check_parent_folder(Path(out), "the store")
    run = _Run(_default_workers(workers, len(specs)), verbose, ray_address, scratch, limits)
    with (
        terminate_cleanly(),
        _writing(out),
        RunScratch(out, scratch) as run_scratch,
        atomic_directory(out, overwrite=overwrite) as tmp,
    ):
        run_scratch.own(tmp)
        paths = _fetch(specs, run_scratch, run.limits)
        with _pool(run.workers, run.ray_address) as pool:
            sources = _inspect_all(pool, specs, paths, sizes, build)
            layout = _layout_for(regions, sizes, sources)
            store = Store.create(
                tmp, layout, sizes, genome=build, transform=transform, overwrite=True
            )
            _write_tracks(store, sources, pool, run.workers, run.verbose)
    return Store.open(out)


def _layout_for(regions, sizes: pd.Series, sources: list[_Source]) -> Layout:
    if regions is not None:
        return resolve_layout(regions, sizes)
    arrays = [s for s in sources if not s.mapping]
    if arrays:
        raise EpitensorError(
            f"{arrays[0].spec.where}: an npz/npy array needs a layout: pass --regions "
            f"(the regions the array was made on), or name its arrays after chromosomes"
        )
    chroms = natural_sort(set().union(*(s.chroms for s in sources)))
    return resolve_layout(None, sizes, chroms=chroms)
