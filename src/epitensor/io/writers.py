"""Track files: bigWig and bedGraph writers, output file names, the parameters JSON.

Coordinates are 0-based, half-open; bin ``i`` of a chromosome covers
``[25 i, 25 i + 25)``, clipped to the chromosome's length. A file is written
under a temporary name beside its final one and moved into place when
complete; an aborted file is removed. Just before the move, a hidden record
``.NAME.done.json`` beside it stores the fingerprint of what was written and
the file's size and modification time, so that a rerun can tell a finished
file of the same job (:func:`completed`) from anything else.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import queue
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from epitensor._utils import EpitensorError

__all__ = [
    "BEDGRAPH_SUFFIXES",
    "BIGWIG_SUFFIXES",
    "BedGraphSink",
    "BigWigSink",
    "EncoderThread",
    "bin_edges",
    "completed",
    "done_record",
    "format_of",
    "output_paths",
    "remove_stale_temporaries",
    "track_file_stems",
    "write_json",
]

BIGWIG_SUFFIXES = (".bw", ".bigwig")
BEDGRAPH_SUFFIXES = (".bedgraph", ".bg", ".bdg", ".bedgraph.gz", ".bg.gz", ".bdg.gz")

_STOP = object()
_ABORT = object()


def _check_bigwig(path: Path, bases: int, last: tuple[str, int, int, float] | None) -> str:
    """Why the finished bigWig at ``path`` is not what was written; '' when it is.

    A last check by an independent reader (pybigtools) before the file is
    published: it must open, cover ``bases`` base pairs and hold ``last``
    (chrom, start, end, value) as its final record.
    """
    import pybigtools

    try:
        with contextlib.closing(pybigtools.open(str(path))) as reader:
            covered = reader.info()["summary"]["basesCovered"]
            if covered != bases:
                return f"it covers {covered} bp of the {bases} written"
            if last is not None:
                chrom, start, end, value = last
                records = list(reader.records(chrom, start, end))
                if not records or not np.isclose(records[-1][2], value, equal_nan=True):
                    return f"its last record ({chrom}:{start}-{end}) does not read back"
    except Exception as exc:  # noqa: BLE001 - any failure to read back means a broken file
        return f"it does not read back ({exc})"
    return ""


class EncoderThread:
    """One thread that encodes the blocks of one or several bigWig files, in the order queued.

    A :class:`BigWigSink` makes its own unless given one; the files of one
    imputed track (the track and the bounds of its prediction intervals) share
    one, so that asking for intervals adds files, not threads competing with the
    computation for the cores and the GIL.

    Parameters
    ----------
    name : str
        The thread's name.
    maxsize : int
        Blocks waiting at most, over all its files. Default 4.
    """

    def __init__(self, name: str, maxsize: int = 4) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.thread = threading.Thread(target=self._run, daemon=True, name=name)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            sink, payload = item
            sink._encode(payload)

    def stop(self) -> None:
        """End the thread once the blocks queued before are encoded."""
        if self.thread.is_alive():
            with contextlib.suppress(queue.Full):
                self.queue.put(None, timeout=30)
            self.thread.join(timeout=30)


class BigWigSink:
    """A bigWig file encoded on a thread, fed block by block through a small queue.

    The thread runs :class:`~epitensor.io.bigwig.BigWigEncoder` (packing, zlib,
    which releases the GIL, and writing) while the caller computes the next
    block, with at most ``maxsize`` blocks waiting. The finished file is read
    back by another library (:func:`_check_bigwig`) before it is moved into place.

    Parameters
    ----------
    path : pathlib.Path
        The final file.
    chrom_sizes : dict of str to int
        The file's chromosomes, bp.
    maxsize : int
        Blocks waiting at most. Default 4.
    fingerprint : dict, optional
        Written to the done record (see :func:`completed`). Default None.
    resolution : int
        Bin width, bp. Default 25.
    thread : EncoderThread, optional
        Encode on this thread, shared with other files (it is not stopped
        here). Default None: a thread of its own.
    """

    def __init__(
        self,
        path: Path,
        chrom_sizes: dict[str, int],
        maxsize: int = 4,
        fingerprint: dict | None = None,
        resolution: int = 25,
        thread: EncoderThread | None = None,
    ):
        from epitensor.io.bigwig import BigWigEncoder

        self.path, self.fingerprint = path, fingerprint
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=".bw", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self._error: BaseException | None = None
        self._bases, self._last = 0, None
        self._encoder = BigWigEncoder(self.tmp, chrom_sizes, resolution)
        self._finished = threading.Event()  # set once the encoder closed, stopped or failed
        self._own = thread is None
        self._worker = EncoderThread(f"bigwig-{path.name}", maxsize) if self._own else thread

    def _encode(self, item) -> None:
        """On the encoding thread: one queued block, or the end of the file."""
        if self._finished.is_set():
            return  # failed or aborted: what was still queued is dropped
        try:
            if item is _STOP:
                self._encoder.close()
            elif item is _ABORT:
                pass
            else:
                chrom, start, end, values = item
                self._encoder.add(chrom, start, values, end=end)
                return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = exc
        self._finished.set()

    def _failure(self, detail: str) -> EpitensorError:
        return EpitensorError(
            f"writing {self.path} failed ({detail}); check that its folder is writable and "
            "the disk has space, then rerun"
        )

    def _put(self, item) -> None:
        while True:
            if self._error is not None or not self._worker.thread.is_alive():
                error = self._failure(str(self._error or "the writer stopped"))
                self.abort()
                raise error
            try:
                self._worker.queue.put((self, item), timeout=0.5)
                return
            except queue.Full:
                continue

    def write(self, chrom: str, starts: list, ends: list, values: np.ndarray) -> None:
        """Queue one block of adjacent bins (bp coordinates, as :func:`bin_edges` gives) and their values."""
        if not len(values):
            return
        finite = np.isfinite(values)
        if not finite.all():  # C1 / W8: NaN crashed pyBigWig's header(); inf is no signal
            k = int(np.argmin(finite))
            error = EpitensorError(
                f"cannot write {self.path}: {int((~finite).sum()):,} value(s) are NaN or "
                f"infinite, the first at {chrom}:{int(starts[k]):,}; a bigWig holds numbers "
                f"only, so the values are broken (a model with non-finite weights?)"
            )
            self.abort()
            raise error
        self._bases += ends[-1] - starts[0]  # adjacent bins: no per-bin work on this path
        self._last = (chrom, int(starts[-1]), int(ends[-1]), float(values[-1]))
        self._put((chrom, int(starts[0]), int(ends[-1]), np.array(values, dtype=np.float32)))

    def close(self) -> None:
        """Finish the file and move it into place."""
        self._put(_STOP)
        while not self._finished.wait(timeout=0.5):
            if not self._worker.thread.is_alive():
                self._error = self._error or RuntimeError("the writer stopped")
                break
        if self._own:
            self._worker.stop()
        detail = str(self._error) if self._error is not None else ""
        detail = detail or _check_bigwig(self.tmp, self._bases, self._last)
        if detail:
            error = self._failure(detail)
            self.abort()
            raise error
        _publish(self.tmp, self.path, self.fingerprint)

    def abort(self) -> None:
        """Stop the writer and remove the partial file."""
        if not self._finished.is_set() and self._worker.thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._worker.queue.put((self, _ABORT), timeout=5)
            self._finished.wait(timeout=30)
        if self._own:
            self._worker.stop()
        self._encoder.abort()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


class BedGraphSink:
    """A bedGraph file (gzip when the name ends in ``.gz``), values with 7 significant digits."""

    def __init__(self, path: Path, name: str, fingerprint: dict | None = None):
        self.path, self.fingerprint = path, fingerprint
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        opener = gzip.open if path.name.endswith(".gz") else open
        self._handle = opener(self.tmp, "wt")
        self._handle.write(f'track type=bedGraph name="{name}"\n')

    def write(self, chrom: str, starts: list, ends: list, values: np.ndarray) -> None:
        """Append one block of bins (bp coordinates) and their values."""
        text = "".join(
            f"{chrom}\t{s}\t{e}\t{v:.7g}\n" for s, e, v in zip(starts, ends, values.tolist())
        )
        try:
            self._handle.write(text)
        except OSError as exc:  # T8: a full disk or a file-size limit was a traceback
            raise self._failure(exc) from None

    def close(self) -> None:
        """Finish the file and move it into place."""
        try:
            self._handle.close()
            _publish(self.tmp, self.path, self.fingerprint)
        except OSError as exc:
            raise self._failure(exc) from None

    def _failure(self, exc: OSError) -> EpitensorError:
        """Remove the partial file; the one-line error the bigWig writer gives too."""
        self.abort()
        return EpitensorError(
            f"writing {self.path} failed ({exc.strerror or exc}); check that its folder is "
            "writable and the disk has space, then rerun"
        )

    def abort(self) -> None:
        """Remove the partial file."""
        with contextlib.suppress(OSError):  # the last flush fails too on a full disk
            self._handle.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _publish(tmp: Path, path: Path, fingerprint: dict | None = None) -> None:
    """Move a finished temporary file into place with the usual permissions.

    With a ``fingerprint``, its done record is written first (naming the
    temporary file's size and mtime, which the rename keeps): a kill between
    the two leaves a record that matches no file, never a file that looks
    finished but is not.
    """
    # mkstemp creates files readable by their owner only; give them the umask's mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    record = done_record(path)
    if fingerprint is None:
        with contextlib.suppress(FileNotFoundError):
            record.unlink()  # an older record must not vouch for the new file
    else:
        stat = tmp.stat()
        write_json(
            record,
            {"fingerprint": fingerprint, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        )
    os.replace(tmp, path)


def done_record(path: Path) -> Path:
    """The hidden record beside a finished output: ``.NAME.done.json``."""
    return path.parent / f".{path.name}.done.json"


def completed(path: Path, fingerprint: dict | None) -> bool | str:
    """Whether ``path`` is a finished output of the job with this ``fingerprint``.

    Parameters
    ----------
    path : pathlib.Path
        An output file.
    fingerprint : dict, optional
        What the job would write (see :func:`epitensor.workflows.impute.impute`).
        Default None: nothing is ever finished.

    Returns
    -------
    bool or str
        True when its done record holds ``fingerprint`` and the file's size and
        mtime are those recorded; False when there is no file; else a short
        reason it cannot count as finished (it is then left alone unless
        overwritten).
    """
    if not path.exists():
        return False
    if fingerprint is None:
        return "it was not written by a resumable job"
    try:
        record = json.loads(done_record(path).read_text())
        stat = path.stat()
    except (OSError, ValueError):
        return "it has no done record (not written by epitensor impute, or not finished)"
    if not isinstance(record, dict) or (record.get("size"), record.get("mtime_ns")) != (
        stat.st_size,
        stat.st_mtime_ns,
    ):
        return "it changed after it was written"
    recorded = record.get("fingerprint")
    if recorded != fingerprint:
        keys = sorted(set(recorded or {}) | set(fingerprint))
        differ = [k for k in keys if (recorded or {}).get(k) != fingerprint.get(k)]
        return f"it was written with other {', '.join(differ)}"
    return True


def remove_stale_temporaries(paths: Sequence[Path]) -> int:
    """Delete temporary files that a killed writer left beside ``paths``; returns how many.

    Call only while holding the outputs' write lock, so that no live writer's
    file is taken. Each folder is listed once (a run may have thousands of outputs).
    """
    removed = 0
    by_folder: dict[Path, set[str]] = {}
    for path in paths:
        by_folder.setdefault(path.parent, set()).add(f".{path.name}.tmp-")
    for folder, prefixes in by_folder.items():
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(folder):
                if _is_temporary_of(entry.name, prefixes) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
    return removed


def _is_temporary_of(name: str, prefixes: set[str]) -> bool:
    """Whether ``name`` starts with one of the ``.OUTPUT.tmp-`` prefixes (any ``.tmp-`` in it)."""
    k = name.find(".tmp-")
    while k >= 0:
        if name[: k + 5] in prefixes:
            return True
        k = name.find(".tmp-", k + 1)
    return False


def format_of(path: Path, fmt: str | None) -> str:
    """``fmt`` checked, else the format of the file name (bigWig unless a bedGraph suffix)."""
    if fmt is not None:
        if fmt not in ("bigwig", "bedgraph"):
            raise EpitensorError(
                f"invalid fmt: got {fmt!r}, expected one of ['bigwig', 'bedgraph']"
            )
        return fmt
    name = path.name.lower()
    return "bedgraph" if name.endswith(BEDGRAPH_SUFFIXES) else "bigwig"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


def track_file_stems(tracks: Sequence[tuple[str, str]]) -> list[str]:
    """File names (without extension) of tracks in a folder: ``CELLTYPE.ASSAY``, made safe.

    Characters outside ``A-Za-z0-9._+-`` become ``_``. When that makes two
    tracks' names equal (``K5/62`` and ``K5_62``), every track whose name was
    changed gets ``-`` and 8 hex digits of the sha256 of its original names
    appended (all of them, when the names are equal unchanged, as ``K5.62`` +
    ``x`` and ``K5`` + ``62.x``), so no file replaces another and a name does
    not depend on the other tracks' order.

    Parameters
    ----------
    tracks : sequence of (str, str)
        Distinct (cell type, assay) pairs.

    Returns
    -------
    list of str
        One distinct stem per track, in order.
    """
    import hashlib

    def tagged(track: tuple[str, str], stem: str) -> str:
        digest = hashlib.sha256("\t".join(track).encode()).hexdigest()
        return f"{stem}-{digest[:8]}"

    stems = [f"{_safe(c)}.{_safe(a)}" for c, a in tracks]
    for only_changed in (True, False):  # then names equal without any change ("a.b" + "c")
        counts: dict[str, int] = {}
        for stem in stems:
            counts[stem] = counts.get(stem, 0) + 1
        stems = [
            tagged(t, stem)
            if counts[stem] > 1 and (stem != f"{t[0]}.{t[1]}" or not only_changed)
            else stem
            for t, stem in zip(tracks, stems)
        ]
    return stems


def output_paths(
    tracks: list[tuple[str, str]], out: Path, fmt: str | None
) -> tuple[list[Path], str, Path]:
    """Files to write (one per track), the format, and where the parameters JSON goes."""
    name = out.name.lower()
    is_file = name.endswith(BIGWIG_SUFFIXES + BEDGRAPH_SUFFIXES)
    fmt = format_of(out, fmt) if is_file else (fmt or "bigwig")
    format_of(out, fmt)
    if is_file and out.is_dir():  # T11: IsADirectoryError when the file was published
        raise EpitensorError(
            f"--out {out} is a folder, but its name asks for one {fmt} file; remove the "
            f"folder or choose another --out"
        )
    if is_file and len(tracks) == 1:
        paths, params = [out], out.with_name(out.name + ".json")
    elif is_file:
        raise EpitensorError(
            f"--out {out} names one file but {len(tracks)} tracks were requested; "
            f"give a folder instead"
        )
    else:
        ext = ".bigWig" if fmt == "bigwig" else ".bedGraph"
        paths = [out / f"{stem}{ext}" for stem in track_file_stems(tracks)]
        params = out / "impute.json"
    return paths, fmt, params


def bin_edges(first_bin: int, n: int, resolution: int, chrom_length: int) -> tuple[list, list]:
    """Bp ``starts, ends`` of ``n`` bins from ``first_bin``, the last clipped to the chromosome."""
    starts = np.arange(first_bin, first_bin + n, dtype=np.int64) * resolution
    ends = np.minimum(starts + resolution, chrom_length)
    return starts.tolist(), ends.tolist()


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` (with the epitensor version first) as indented JSON, atomically."""
    from epitensor._utils import __version__, atomic_write_bytes

    data = {"epitensor": __version__, **data}
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
