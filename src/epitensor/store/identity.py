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
        -> sha256, or None when the store predates digests),
        ``digest_coordinates`` (the coordinates of the axes those digests are
        of: the store's own, for a region view the store it reads), ``digest`` (the
        store's whole identity when made) and ``url`` (absolute: a hint).
    """
    identity = store.identity()
    names = identity["tracks"] if tracks is None else [_name(t) for t in tracks]
    return {
        "coordinates": identity["coordinates"],
        "digest_coordinates": store.digest_coordinates(),
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
        "digest_coordinates": {
            **new.get("digest_coordinates", {}),
            **old.get("digest_coordinates", {}),
        },
        "tracks": {**old["tracks"], **new["tracks"]},
        "digest": None,
        "url": list(dict.fromkeys(listed(old["url"]) + listed(new["url"]))),
        "warnings": list(old.get("warnings", [])) + ([note] if note else []),
    }


def check_data(
    record: dict | None,
    store: Store,
    what: str,
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
        (an EpitensorError) One line naming both stores: (without
        ``allow_changed``) tracks holding other values.

    Notes
    -----
    A track's digest on an axis is compared only where that axis has the
    same coordinates in both (a store holding part of an axis cannot be
    compared, and passes). Coordinates themselves are checked by
    :func:`check_coordinates` against the model's layout.
    """
    if record is None:
        return None
    here = store.identity()
    made_from = record.get("url")
    made_from = " + ".join(made_from) if isinstance(made_from, list) else made_from
    then_axes = record.get("digest_coordinates") or {}
    now_axes = store.digest_coordinates()
    recorded = record.get("tracks") or {}
    names = [_name(t) for t in tracks] if tracks is not None else list(recorded)
    compared, changed = 0, []
    for name in names:
        then, now = recorded.get(name), here["tracks"].get(name)
        if not then or not now:
            continue  # not recorded, not held, or written before digests: cannot compare
        shared = [a for a in then if a in now and then_axes.get(a) == now_axes.get(a)]
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
    """Refuse a store whose axes shared with ``layout`` put other genomic bins at their positions.

    Works for any model, records or not: ``layout`` is the model's own. Each
    region of the store on a shared axis must hold, at every position it
    shares with the model's regions, the same chromosome and 25-bp bin (its
    ``first_bin`` minus its ``offset`` the same): a store holding part of the
    axis (a prefix, say) passes, one whose regions are moved (same axis names
    and lengths, trial W4) does not.

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
        Naming the store and the first region whose bins differ.
    """
    held = set(store.layout.axes)
    axes = [a for a in (layout.axes if axes is None else axes) if a in held and a in layout.axes]
    for axis in axes:
        mine = layout.regions[layout.regions.axis == axis]
        if coordinates_digest(layout, axis) == coordinates_digest(store.layout, axis):
            continue
        theirs = store.layout.regions[store.layout.regions.axis == axis]
        for r in theirs.itertuples():
            lo, hi = r.offset, r.offset + r.n_bins
            for m in mine.itertuples():
                if m.offset >= hi or m.offset + m.n_bins <= lo:
                    continue
                if m.chrom != r.chrom or m.first_bin - m.offset != r.first_bin - r.offset:
                    raise StoreMismatch(
                        f"store {store.url}: axis {axis!r} lies on other coordinates than in "
                        f"{what}: its region {r.chrom}:{r.start}-{r.end} puts other bins at "
                        f"positions the model has as {m.chrom}:{m.start}-{m.end}; give a store "
                        "ingested on the model's regions"
                    )


def _name(track) -> str:
    celltype, assay = parse_track(track)
    return f"{celltype}:{assay}"


def here_url(identity: dict) -> str:
    """A store's location from its identity, for messages."""
    url = identity["url"]
    return " + ".join(url) if isinstance(url, list) else str(url)
