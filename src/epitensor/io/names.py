"""Names of cell types and assays: the one rule every command checks them against.

A name is 1 to 100 characters: ASCII letters, digits and ``_ . + -``, starting
with a letter or a digit. So a name can be written into a file name, a
bedGraph/bigWig header and a ``CELL:ASSAY`` argument without quoting, and two
different names never map to the same file.
"""

from __future__ import annotations

import re

from epitensor._utils import EpitensorError

__all__ = ["NAME_RULE", "is_valid_name", "parse_track", "validate_name"]

NAME_RULE = "1-100 characters: letters, digits and _ . + -, starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]{0,99}")


def is_valid_name(name: object) -> bool:
    """True when ``name`` is a string that follows :data:`NAME_RULE`."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def validate_name(name: object, kind: str, where: str = "") -> str:
    """Return ``name`` when it is a valid cell type or assay name, else raise.

    Parameters
    ----------
    name : object
        The name to check.
    kind : str
        What the name is, for the message: ``"cell type"`` or ``"assay"``.
    where : str
        Prefix naming the file (and line) the name comes from, for the
        message. Default "": none.

    Returns
    -------
    str
        ``name`` unchanged.

    Raises
    ------
    EpitensorError
        The name is not a string or breaks the rule; the message quotes it
        with ``repr`` so a newline or quote in it stays on one line.
    """
    if is_valid_name(name):
        return name  # type: ignore[return-value]
    prefix = f"{where}: " if where else ""
    shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
    raise EpitensorError(f"{prefix}invalid {kind} name {shown}: a name must be {NAME_RULE}")


def parse_track(track) -> tuple[str, str]:
    """A track as ``(celltype, assay)`` from a pair or a ``"CELLTYPE:ASSAY"`` string."""
    if isinstance(track, str):
        if ":" not in track:
            raise EpitensorError(f"invalid track {track!r}: expected CELLTYPE:ASSAY")
        celltype, assay = track.split(":", 1)
        return celltype, assay
    try:
        celltype, assay = track
    except (TypeError, ValueError):
        raise EpitensorError(f"invalid track {track!r}: expected (celltype, assay)") from None
    return str(celltype), str(assay)
