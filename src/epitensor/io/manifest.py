"""Manifests: the TSV that lists a compendium's tracks (cell type, assay, path, md5, scale)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from epitensor._utils import (
    EpitensorError,
    is_local_path,
)
from epitensor.io.names import validate_name

__all__ = ["SCALES", "TrackSpec", "check_duplicates", "read_manifest"]

SCALES = ("raw", "arcsinh")


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
    check_duplicates(specs, str(manifest))
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


def check_duplicates(specs: Sequence[TrackSpec], where: str, existing: Iterable = ()) -> None:
    """Raise when a (cell type, assay) is listed twice in ``specs`` or is already in ``existing``."""
    seen = set(existing)
    for spec in specs:
        key = (spec.celltype, spec.assay)
        if key in seen:
            raise EpitensorError(
                f"{where}: duplicate track ({spec.celltype}, {spec.assay}) ({spec.path}); "
                f"keep one row per (celltype, assay)"
            )
        seen.add(key)
