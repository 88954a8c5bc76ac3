"""Track readers: bigWig, bedGraph, wig and npz/npy files, binned to the layout's resolution.

Each reader turns one file into 25-bp bin means along a layout's axes: a bin's
value is the sum of signal x bases over the bin divided by the bin width, so
bases without data count as 0. A new input format goes here: a branch of
:func:`detect_format`, an inspector in :func:`inspect_track` and a reader used
by :func:`read_axes`.
"""

from __future__ import annotations

import contextlib
import gzip
import mmap
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import (
    EpitensorError,
    md5sum,
    warn,
)
from epitensor.genome.coordinates import BUILDS, Layout, chrom_sizes, natural_sort
from epitensor.io.manifest import TrackSpec

__all__ = [
    "FORMATS",
    "ReadTally",
    "TrackSource",
    "check_choice",
    "detect_format",
    "inspect_track",
    "open_text",
    "read_axes",
    "read_track",
    "task_axes",
]

FORMATS = ("bigwig", "bedgraph", "wig", "npz", "npy")
TRANSFORMS = ("arcsinh", "none")
_BIGWIG_MAGIC = (0x888FFC26).to_bytes(4, "little")
_TEXT_FORMATS = ("bedgraph", "wig")
_BIGWIG_BLOCK = 1 << 20  # bins per pybigtools query
_WIG_HEADS = ("fixedStep", "variableStep", "track", "browser", "#")
_TEXT_BLOCK = 1 << 20  # bins summed at once from text records
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_choice(name: str, value, choices: Sequence) -> None:
    """Raise an :class:`EpitensorError` naming ``name`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise EpitensorError(f"invalid {name}: got {value!r}, expected one of {list(choices)!r}")


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
    if head in (_BIGWIG_MAGIC, _BIGWIG_MAGIC[::-1]):  # by content, whatever the name (C4)
        return "bigwig"
    try:
        scanned = 0
        # the first data line decides; headers and blank lines are read in blocks, and
        # only the first ~1 MB of them, so a gzip bomb of newlines is not walked here
        for _, lines in _TextBlocks(path, chunk=64 << 10):
            for line in lines:
                word = line.strip().split(maxsplit=1)[:1]
                if not word or word[0].startswith(("#", "track", "browser")):
                    continue
                if word[0] in ("fixedStep", "variableStep"):
                    return "wig"
                if len(line.split()) >= 4:
                    return "bedgraph"
                raise _LineError(0, "not a track")
            scanned += 64 << 10
            if scanned >= _MAX_LINE:
                break
        # only headers or nothing: a text track without data, reported as empty
        return "wig" if ".wig" in name else "bedgraph"
    except (OSError, UnicodeDecodeError, EOFError, zlib.error, ValueError):
        pass
    raise EpitensorError(
        f"{path}: unrecognised or corrupt file (not bigWig, bedGraph, wig, npz or npy); "
        f"check the file or re-download it"
    )


def open_text(path: str | os.PathLike):
    """Open a text file for reading, gzipped or plain (told by its first two bytes)."""
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
class TrackSource:
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


def inspect_track(spec: TrackSpec, local: str, sizes: pd.Series, genome: str) -> TrackSource:
    """Check a track file before reading it: exists, md5, format, chromosomes, build, data."""
    try:
        return _inspect_file(spec, local, sizes, genome)
    except OSError as exc:  # unreadable (permissions, I/O error): not a store write failure
        raise EpitensorError(
            f"{spec.where}: cannot read the file ({exc.strerror or exc}); check that it is readable"
        ) from None


def _inspect_file(spec: TrackSpec, local: str, sizes: pd.Series, genome: str) -> TrackSource:
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
    source = TrackSource(spec, local, fmt)
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


# Largest decompression buffer a bigWig header may ask for: UCSC's and pybigtools'
# writers ask for tens of kilobytes; pybigtools allocates the size the header states up
# front, so a hostile 0xFFFFFFFF there aborted the process under a memory limit (H5).
BIGWIG_MAX_BUFFER = 64 << 20
_BIGWIG_BUFFER_AT = 52  # byte offset of uncompressBufSize in the bbi header


def _check_bigwig_header(path: str, where: str) -> None:
    """Refuse a bigWig whose header asks for an absurd decompression buffer."""
    with open(path, "rb") as handle:
        head = handle.read(_BIGWIG_BUFFER_AT + 4)
    if len(head) < _BIGWIG_BUFFER_AT + 4:
        raise EpitensorError(
            f"{where}: the bigWig header is truncated ({len(head)} bytes); the file is "
            f"corrupt or truncated, re-download it"
        )
    order = "little" if head[:4] == _BIGWIG_MAGIC else "big"
    size = int.from_bytes(head[_BIGWIG_BUFFER_AT : _BIGWIG_BUFFER_AT + 4], order)
    if size > BIGWIG_MAX_BUFFER:
        raise EpitensorError(
            f"{where}: the bigWig header asks for a {size:,}-byte decompression buffer "
            f"(at most {BIGWIG_MAX_BUFFER:,} is accepted; writers use kilobytes): the file "
            f"is corrupt or not a bigWig, re-download it"
        )


def _open_bigwig(path: str, where: str):
    import pybigtools

    _check_bigwig_header(path, where)
    try:
        if not str(path).endswith((".bw", ".bigWig")):
            # pybigtools goes by a path's extension; an open file it tells by content (C4)
            return pybigtools.open(open(path, "rb"))  # noqa: SIM115 - the reader owns it
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


# pybigtools reads positions as signed 32-bit numbers: a query that reaches past
# 2,147,483,647 bp fails with "out of range integral type conversion" (trial C3), although
# the bigWig format itself addresses 4,294,967,295 bp.
BIGWIG_MAX_READ = 2**31 - 1


def _check_bigwig_reach(
    where: str, chrom: str, length: int, firsts: np.ndarray, counts: np.ndarray, res: int
) -> None:
    """Refuse a read of a bigWig chromosome past the position pybigtools can address."""
    reach = min(length, int(np.max((firsts + counts) * res))) if len(firsts) else 0
    if reach > BIGWIG_MAX_READ:
        raise EpitensorError(
            f"{where}: chromosome {chrom!r} is {length:,} bp and the layout reads it up to "
            f"{reach:,} bp, but bigWig positions past {BIGWIG_MAX_READ:,} bp cannot be read "
            f"(the file is not corrupt: the reader addresses 31 bits); convert the track to "
            f"bedGraph (bigWigToBedGraph) and ingest that, or keep --regions below "
            f"{BIGWIG_MAX_READ:,} bp"
        )


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


_TEXT_CHUNK = 1 << 20  # decompressed bytes parsed at once: memory per file stays bounded
_MAX_LINE = 1 << 20  # a longer line is not a bedGraph or wig record
# A gzip track may expand to this many times the compressed bytes read so far, plus a
# slack: real signal tracks compress 4-20 times, deflate at most ~1000 times, so a
# "gzip bomb" (1 MB of compressed newlines becoming 1 GB) is stopped after a few
# megabytes instead of being expanded and split in memory (trial H2).
GZIP_MAX_RATIO = 200
_GZIP_SLACK = 32 << 20


class _TextBlocks:
    """Lines of a text track, plain or gzip, in blocks of about ``_TEXT_CHUNK`` bytes.

    Iterating yields ``(first_line_number, lines)`` with 1-based line numbers;
    the line ends are those of ``str.splitlines`` (LF, CRLF and lone CR), a
    CRLF split across two blocks included. A line longer than ``_MAX_LINE``
    bytes and a gzip stream expanding beyond ``GZIP_MAX_RATIO`` times its
    compressed size are :class:`_TextLimit` errors, before any of it is split.
    """

    def __init__(self, path: str | os.PathLike, chunk: int = _TEXT_CHUNK) -> None:
        self.path, self.chunk = path, chunk

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        with open(self.path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
            rest, number, total = "", 1, 0
            while True:
                data = stream.read(self.chunk)
                total += len(data)
                if gzipped and total > GZIP_MAX_RATIO * raw.tell() + _GZIP_SLACK:
                    raise _TextLimit(
                        f"the gzip file expands to more than {GZIP_MAX_RATIO} times its "
                        f"compressed size ({total:,} bytes from {raw.tell():,}): not a signal "
                        f"track (a gzip bomb?)"
                    )
                text = rest + data.decode("ascii")
                if not data:
                    if text:
                        yield number, text.splitlines()
                    return
                held = ""
                if text.endswith("\r"):  # maybe the first half of a CRLF
                    text, held = text[:-1], "\r"
                cut = max(text.rfind("\n"), text.rfind("\r")) + 1
                if cut == 0 and len(text) > _MAX_LINE:
                    raise _TextLimit(
                        f"line {number} is longer than {_MAX_LINE:,} bytes: not a "
                        f"bedGraph or wig record"
                    )
                lines = text[:cut].splitlines()
                rest = text[cut:] + held
                if lines:
                    yield number, lines
                    number += len(lines)


class _TextLimit(ValueError):
    """A text track beyond the reader's limits (a huge line, a gzip bomb)."""


class _LineError(ValueError):
    """A defect of one line of a text track (1-based line number)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")


def _read_text(path: str, fmt: str, where: str) -> dict[str, tuple[np.ndarray, ...]]:
    """Records of a bedGraph or wig file per chromosome (file names).

    The file is parsed in blocks of lines (:class:`_TextBlocks`), each block
    turned into arrays at once, so memory grows by the records only: 28 bytes
    per data line while parsing (int64 start and end, float64 value, the line
    number as int32 below 2**31 lines) and 24 once parsed; joining a
    chromosome's blocks briefly adds one 8-byte column (trial H1: reading the
    whole text and its list of lines took about 480 bytes per line).

    Returns
    -------
    dict of str to (starts, ends, values)
        0-based half-open intervals (int64) and values (float64), sorted by
        start, not overlapping, empty intervals dropped.

    Raises
    ------
    EpitensorError
        The file is unreadable or beyond the reader's limits, or a line is
        malformed, holds a finite value beyond the float32 range, or overlaps
        another (naming both lines).
    """
    parser = _BedGraphParser() if fmt == "bedgraph" else _WigParser()
    try:
        for first, lines in _TextBlocks(path):
            parser.feed(first, lines)
        parts = parser.finish()
        records = {}
        for chrom in list(parts):
            records[chrom] = _tidy(*parts.pop(chrom).join())
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as exc:
        raise EpitensorError(
            f"{where}: cannot read the {fmt} file ({exc}); it is corrupt, re-download it"
        ) from None
    except _TextLimit as exc:
        raise EpitensorError(f"{where}: {exc}; check the file") from None
    except _LineError as exc:
        raise EpitensorError(f"{where}: {exc}; fix the {fmt} file") from None
    records = {c: r for c, r in records.items() if len(r[0])}
    if not records:
        raise EpitensorError(f"{where}: empty track (no data lines in the {fmt}); check the file")
    return records


_SLAB_MIN, _SLAB_MAX = 1 << 14, 1 << 20  # records a slab holds: doubling up to ~1 M


def _mapped(n: int, dtype) -> np.ndarray:
    """An array in its own anonymous memory map, returned to the system when freed.

    Records live long beside short-lived temporaries of the same size; on the
    malloc heap (glibc moves its mmap threshold up after each large free) the
    temporaries' holes could not be reused: 60 bytes of memory per record
    instead of 28 (measured in tests/test_trials.py, H1).
    """
    size = max(1, n * np.dtype(dtype).itemsize)
    return np.frombuffer(mmap.mmap(-1, size), dtype=dtype, count=n)


class _Records:
    """One chromosome's records, copied block by block into slabs of growing size.

    Slabs (:func:`_mapped`), not a list of each block's arrays, so that memory
    holds the records and one block's temporaries, nothing per block.
    """

    def __init__(self) -> None:
        self.slabs: list[list[np.ndarray]] = []
        self.filled = 0  # records in the last slab

    def add(self, starts, ends, values, lines) -> None:
        done, n = 0, len(starts)
        while done < n:
            if not self.slabs or self.filled == len(self.slabs[-1][0]):
                self._new_slab(lines.dtype)
            slab = self.slabs[-1]
            if slab[3].dtype != lines.dtype and lines.dtype == np.int64:
                self._close_slab()  # line numbers past 2**31: an int64 slab from here on
                self._new_slab(lines.dtype)
                slab = self.slabs[-1]
            take = min(n - done, len(slab[0]) - self.filled)
            for column, part in zip(slab, (starts, ends, values, lines)):
                column[self.filled : self.filled + take] = part[done : done + take]
            self.filled += take
            done += take

    def _new_slab(self, line_dtype) -> None:
        size = min(_SLAB_MAX, _SLAB_MIN << len(self.slabs))
        dtypes = (np.int64, np.int64, np.float64, line_dtype)
        self.slabs.append([_mapped(size, dtype) for dtype in dtypes])
        self.filled = 0

    def _close_slab(self) -> None:
        self.slabs[-1] = [column[: self.filled] for column in self.slabs[-1]]
        self.filled = len(self.slabs[-1][0])

    def join(self) -> tuple[np.ndarray, ...]:
        """The records as 4 arrays, joined column by column (each column's slabs freed)."""
        if self.slabs:
            self._close_slab()
        out = []
        for i in range(4):
            parts = [slab[i] for slab in self.slabs]
            for slab in self.slabs:
                slab[i] = None
            joined = _mapped(sum(len(p) for p in parts), parts[-1].dtype)
            out.append(np.concatenate(parts, out=joined, casting="same_kind"))
            del parts
        self.slabs = []
        return tuple(out)


def _tidy(
    starts: np.ndarray, ends: np.ndarray, values: np.ndarray, lines: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Sort by start, refuse overlaps (naming both lines) and drop empty intervals."""
    keep = ends > starts
    if not keep.all():
        starts, ends, values, lines = starts[keep], ends[keep], values[keep], lines[keep]
    del keep
    if len(starts) > 1 and not bool((starts[1:] >= starts[:-1]).all()):  # copies only if unsorted
        order = np.argsort(starts, kind="stable")
        starts, ends, values, lines = starts[order], ends[order], values[order], lines[order]
        del order
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


def _line_numbers(numbers: list[int]) -> np.ndarray:
    """Line numbers as int32 while they fit (4 bytes a record instead of 8)."""
    dtype = np.int32 if not numbers or numbers[-1] < 1 << 31 else np.int64
    return np.array(numbers, dtype=dtype)


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


class _BedGraphParser:
    """bedGraph records, block by block: ``parts[chrom]`` lists (starts, ends, values, lines)."""

    def __init__(self) -> None:
        self.parts: dict[str, _Records] = {}

    def feed(self, first: int, lines: list[str]) -> None:
        columns: tuple[list, ...] = ([], [], [], [], [])
        for n, line in enumerate(lines, first):
            words = line.split()
            if not words or words[0].startswith(("#", "track", "browser")):
                continue
            if len(words) != 4:  # more: two records on one line (a lost line end) would lose one
                raise _LineError(
                    n, f"a data line needs 4 columns (chrom, start, end, value), got {len(words)}"
                )
            for column, word in zip(columns, words):
                column.append(word)
            columns[4].append(n)
        if not columns[4]:
            return
        line_numbers = _line_numbers(columns[4])
        starts = _numbers(columns[1], columns[4], np.int64, "start")
        ends = _numbers(columns[2], columns[4], np.int64, "end")
        values = _numbers(columns[3], columns[4], np.float64, "value")
        _check_intervals(starts, ends, line_numbers)
        names = dict.fromkeys(columns[0])
        if len(names) == 1:
            chrom = str(next(iter(names)))
            self.parts.setdefault(chrom, _Records()).add(starts, ends, values, line_numbers)
            return
        chroms = np.array(columns[0], dtype=object)
        for chrom in names:
            rows = chroms == chrom
            self.parts.setdefault(str(chrom), _Records()).add(
                starts[rows], ends[rows], values[rows], line_numbers[rows]
            )

    def finish(self) -> dict[str, _Records]:
        return self.parts


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


class _WigParser:
    """wig records, block by block; a fixedStep / variableStep section may span blocks."""

    def __init__(self) -> None:
        self.parts: dict[str, _Records] = {}
        self.fields: dict | None = None  # the open section's header
        self.done = 0  # values of the open section already turned into records

    def feed(self, first: int, lines: list[str]) -> None:
        words: list[str] = []
        numbers: list[int] = []
        for n, line in enumerate(lines, first):
            line_words = line.split()
            if not line_words:
                continue
            if line_words[0] in ("fixedStep", "variableStep"):
                self._flush(words, numbers)
                words, numbers = [], []
                self.fields, self.done = _wig_header(line_words, n), 0
                continue
            if line_words[0].startswith(_WIG_HEADS):
                if line_words[0] == "track":
                    self._flush(words, numbers)
                    words, numbers = [], []
                    self.fields = None
                continue
            if self.fields is None:
                raise _LineError(n, "data line before any fixedStep or variableStep line")
            expected = 1 if self.fields["kind"] == "fixedStep" else 2
            if len(line_words) != expected:
                raise _LineError(
                    n,
                    f"a {self.fields['kind']} data line holds {expected} number(s), "
                    f"got {len(line_words)}",
                )
            words.extend(line_words)
            numbers.append(n)
        self._flush(words, numbers)

    def _flush(self, words: list[str], numbers: list[int]) -> None:
        if not numbers:
            return
        fields = self.fields
        self.parts.setdefault(str(fields["chrom"]), _Records()).add(
            *_wig_block(fields, words, numbers, self.done)
        )
        self.done += len(numbers)

    def finish(self) -> dict[str, _Records]:
        return self.parts


def _wig_block(
    fields: dict, words: list[str], numbers: list[int], done: int = 0
) -> tuple[np.ndarray, ...]:
    """Records of some data lines of one section, the first being its value number ``done``."""
    span = int(fields.get("span", 1))
    lines = _line_numbers(numbers)
    if fields["kind"] == "fixedStep":
        values = _numbers(words, numbers, np.float64, "value")
        step = int(fields.get("step", 1))
        index = np.arange(done, done + len(values), dtype=np.int64)
        starts = int(fields["start"]) - 1 + step * index
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
    source: TrackSource, layout: Layout, axis: str, reader=None
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
            _check_bigwig_reach(source.spec.where, name, length, firsts, counts, layout.resolution)
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


def read_axes(
    source: TrackSource,
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


def task_axes(source: TrackSource, layout: Layout) -> list[list[str]]:
    """How a track is split into tasks: one axis per task, or all at once for text files."""
    if source.fmt in _TEXT_FORMATS:
        return [layout.axes]
    return [[axis] for axis in layout.axes]


class ReadTally:
    """Per-track counts gathered across axes: non-finite values and whether any signal."""

    def __init__(self, source: TrackSource, layout: Layout) -> None:
        self.source, self.layout = source, layout
        self.n_bad = 0
        self.any_signal = False

    def add(self, values: np.ndarray, n_bad: int) -> None:
        """Count one axis: its values and how many non-finite values became 0."""
        self.n_bad += n_bad
        self.any_signal = self.any_signal or bool(np.any(values != 0))

    def close(self) -> None:
        """Warn about the track once every axis is read: no signal at all, or values zeroed."""
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
    check_choice("transform", transform, TRANSFORMS)
    check_choice("dtype", dtype, ("float16", "float32"))
    spec = TrackSpec(name[0], name[1], str(path), md5, scale)
    source = inspect_track(spec, str(path), chrom_sizes, genome)
    for note in source.notes:
        warn(note, 2)
    tally = ReadTally(source, layout)
    for axes in task_axes(source, layout):
        for axis, values, n_bad in read_axes(source, layout, axes, transform, dtype):
            tally.add(values, n_bad)
            yield axis, values
    tally.close()
