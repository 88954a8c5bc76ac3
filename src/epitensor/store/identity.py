"""What a result records of the data it was made from, and the check that data is still it.

A model, a checkpoint, a tuning study, an imputation and an ensemble record a
*data record* (:func:`data_record`): the coordinates of the axes they used
(a digest per axis, :meth:`~epitensor.store.compendium.Store.coordinate_digests`),
the content digests of the tracks they read (per axis), and where the store
was, as an absolute location that is only a hint. A consumer given a store
calls :func:`check_data`: the identity by content is compared, never the
path or the names and lengths.

* Coordinates that differ on an axis used (regions shifted, other
  chromosomes): a different store, always an error.
* Tracks whose stored values differ from those recorded: the store changed
  since (or is another store with the same names): an error, or with
  ``allow_changed`` a warning whose text the caller keeps in its record.
* Tracks added since (appended) are fine: only the recorded tracks count.
* A record of an earlier version (None) or a store written before digests:
  nothing to compare, so nothing is checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from epitensor._utils import EpitensorError, warn
from epitensor.genome.coordinates import Layout
from epitensor.io.names import parse_track
from epitensor.store.compendium import Store, coordinates_digest

__all__ = ["StoreMismatch", "check_coordinates", "check_data", "data_record", "merge_records"]


class StoreMismatch(EpitensorError):
    """A store is not the data a result was made from (other coordinates or other values)."""


_ALLOW = "pass allow_changed=True (--allow-changed-store) to use it anyway"


def data_record(store: Store, tracks: Iterable[tuple[str, str]] | None = None) -> dict:
    """What a result records of ``store``: coordinates, track digests and a location hint.

    Parameters
    ----------
    store : Store
        The store read (a region view or a union too).
    tracks : iterable of (str, str), optional
        The tracks read. Default None: every track of the store.

    Returns
    -------
    dict
        ``coordinates`` (axis -> sha256), ``tracks`` (``"CELL:ASSAY"`` -> axis
        -> sha256, or None when the store predates digests), ``digest`` (the
        store's whole identity when made) and ``url`` (absolute: a hint).
    """
    identity = store.identity()
    names = identity["tracks"] if tracks is None else [_name(t) for t in tracks]
    return {
        "coordinates": identity["coordinates"],
        "tracks": {name: identity["tracks"].get(name) for name in names},
        "digest": identity["digest"],
        "url": identity["url"],
    }


def merge_records(old: dict | None, new: dict, note: str | None = None) -> dict | None:
    """The record of a result made from ``old``'s data and then ``new``'s (an extension).

    An old record of None (an earlier version's model) stays None: part of
    the data is unknown. ``note``, the warning :func:`check_data` gave under
    ``allow_changed``, is kept in the record's ``warnings``.
    """
    if old is None:
        return None

    def listed(url) -> list:
        return list(url) if isinstance(url, list) else [url]

    return {
        "coordinates": {**new["coordinates"], **old["coordinates"]},
        "tracks": {**old["tracks"], **new["tracks"]},
        "digest": None,
        "url": list(dict.fromkeys(listed(old["url"]) + listed(new["url"]))),
        "warnings": list(old.get("warnings", [])) + ([note] if note else []),
    }


def check_data(
    record: dict | None,
    store: Store,
    what: str,
    axes: Sequence[str] | None = None,
    tracks: Iterable[tuple[str, str]] | None = None,
    allow_changed: bool = False,
) -> str | None:
    """Check that ``store`` holds the data ``record`` was made from, by content.

    Parameters
    ----------
    record : dict or None
        A :func:`data_record`. None (a result of an earlier version): nothing
        is checked.
    store : Store
        The store given now.
    what : str
        The result, for messages (``"model m1"``).
    axes : sequence of str, optional
        The axes used now: their coordinates must be those recorded. Default
        None: every axis both know.
    tracks : iterable of (str, str), optional
        The tracks read now. Default None: every recorded track the store holds.
    allow_changed : bool
        Use a store whose tracks changed, with a warning. Default False: refuse.

    Returns
    -------
    str or None
        The warning given under ``allow_changed`` (for the caller's record), or None.

    Raises
    ------
    StoreMismatch
        (an EpitensorError) One line naming both stores: other coordinates on an axis used, or
        (without ``allow_changed``) tracks holding other values.
    """
    if record is None:
        return None
    here = store.identity()
    made_from = record.get("url")
    made_from = " + ".join(made_from) if isinstance(made_from, list) else made_from
    coordinates = record.get("coordinates") or {}
    axes = [a for a in (here["coordinates"] if axes is None else axes) if a in coordinates]
    moved = [a for a in axes if here["coordinates"].get(a) != coordinates[a]]
    if moved:
        raise StoreMismatch(
            f"store {here_url(here)} is not the data {what} was made from ({made_from}): axis "
            f"{moved[0]!r} lies on other coordinates (same name and length, other regions); "
            "give the store it was made from"
        )
    recorded = record.get("tracks") or {}
    names = [_name(t) for t in tracks] if tracks is not None else list(recorded)
    compared, changed = 0, []
    for name in names:
        then, now = recorded.get(name), here["tracks"].get(name)
        if not then or not now:
            continue  # not recorded, not held, or written before digests: cannot compare
        shared = [a for a in then if a in now]
        if not shared:
            continue
        compared += 1
        if any(then[a] != now[a] for a in shared):
            changed.append(name)
    if not changed:
        return None
    if len(changed) == compared:
        message = (
            f"store {here_url(here)} is not the data {what} was made from ({made_from}): all "
            f"{compared} tracks compared hold other values (first {changed[0]})"
        )
    else:
        message = (
            f"store {here_url(here)} changed since {what} was made from it ({made_from}): "
            f"{len(changed)} of {compared} tracks hold other values (first {changed[0]})"
        )
    if not allow_changed:
        raise StoreMismatch(f"{message}; give the store it was made from, or {_ALLOW}")
    warn(f"{message}; used anyway (allow_changed)")
    return message


def check_coordinates(layout: Layout, store: Store, what: str, axes: Sequence[str] | None = None):
    """Refuse a store whose axes shared with ``layout`` lie on other coordinates.

    Works for any model, records or not: ``layout`` is the model's own.

    Parameters
    ----------
    layout : Layout
        The layout the result was made on (``model.layout_``).
    store : Store
        The store given now.
    what : str
        The result, for messages.
    axes : sequence of str, optional
        The axes compared. Default None: every axis both have.

    Raises
    ------
    StoreMismatch
        Naming the store and the first axis whose regions differ.
    """
    held = store.coordinate_digests()
    axes = [a for a in (layout.axes if axes is None else axes) if a in held and a in layout.axes]
    for axis in axes:
        if coordinates_digest(layout, axis) != held[axis]:
            regions = layout.regions[layout.regions.axis == axis].iloc[0]
            theirs = store.layout.regions[store.layout.regions.axis == axis].iloc[0]
            raise StoreMismatch(
                f"store {store.url}: axis {axis!r} lies on other coordinates than in {what} "
                f"(same name and length; first region {theirs.chrom}:{theirs.start}-{theirs.end} "
                f"vs {regions.chrom}:{regions.start}-{regions.end}); give a store ingested on "
                "the model's regions"
            )


def _name(track) -> str:
    celltype, assay = parse_track(track)
    return f"{celltype}:{assay}"


def here_url(identity: dict) -> str:
    """A store's location from its identity, for messages."""
    url = identity["url"]
    return " + ".join(url) if isinstance(url, list) else str(url)
