"""An ingest run's scratch: bounded downloads, leftovers a later run cleans, undoing an append.

Each run owns one folder, ``.OUT.ingest-HOST-PID`` beside its output ``OUT``
(downloads go to ``--scratch DIR`` instead when given). It holds the
downloaded track files, the names of other paths the run created (the
temporary store folder) and, while appending, a snapshot of the store made
of hard links. The run removes it on success, on error and on SIGTERM (turned
into :class:`SystemExit` so cleanup code runs); a run killed outright
(SIGKILL, power loss) leaves it, and the next run on the same output removes
it once that PID is gone from this host, first restoring the store from its
snapshot when the dead run was appending.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from epitensor._utils import EpitensorError, warn

__all__ = [
    "DEFAULT_DOWNLOAD_TIMEOUT",
    "DEFAULT_MAX_DOWNLOAD",
    "RunScratch",
    "download",
    "download_resumable",
    "parse_size",
    "terminate_cleanly",
    "watch_parent",
]

DEFAULT_DOWNLOAD_TIMEOUT = 4 * 3600.0  # seconds for all downloads of one run
DEFAULT_MAX_DOWNLOAD = 16 << 30  # bytes per downloaded file
_READ_TIMEOUT = 60.0  # seconds one network read may wait
_CHUNK = 1 << 20
_ACTIVE: set[Path] = set()  # run folders of this process in use (several runs may overlap)
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes of a size such as ``"16G"``, ``"500M"``, ``"1.5GiB"`` or ``"1024"`` (binary units).

    Parameters
    ----------
    text : str or int
        A number of bytes, optionally with a K, M, G or T suffix (powers of 1024).

    Returns
    -------
    int
        The size in bytes (at least 1).
    """
    if isinstance(text, int) and not isinstance(text, bool):
        number, unit = float(text), ""
    else:
        match = _SIZE.fullmatch(str(text))
        if not match:
            raise EpitensorError(
                f"invalid size: got {text!r}, expected bytes with an optional K, M, G or T "
                f"suffix, such as 16G"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * 1024 ** " kmgt".index(unit or " "))
    if size < 1:
        raise EpitensorError(f"size must be at least 1 byte; got {text!r}")
    return size


# the scratch folder ---------------------------------------------------------------------


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host (True when it cannot be told)."""
    if sys.platform == "win32":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


class RunScratch:
    """The scratch folder of one ingest run into ``out``; a context manager.

    Parameters
    ----------
    out : path-like
        The store the run writes.
    folder : path-like, optional
        Where downloads go. Default None: the run's folder beside ``out``.
    """

    def __init__(self, out: str | os.PathLike, folder: str | os.PathLike | None = None) -> None:
        self.out = Path(out).absolute()
        self.stem = f".{self.out.name}.ingest-{_host()}-"
        self.path = self.out.parent / f"{self.stem}{os.getpid()}"
        for n in itertools.count(1):  # another run of this process on the same output
            if self.path not in _ACTIVE:
                break
            self.path = self.out.parent / f"{self.stem}{os.getpid()}.{n}"
        self.elsewhere = None if folder is None else Path(folder).absolute() / self.path.name
        self.downloads = self.elsewhere or self.path / "downloads"

    def __enter__(self) -> RunScratch:
        _ACTIVE.update({self.path, self.downloads})
        try:
            self.clean_stale()
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.path.mkdir()
            self.downloads.mkdir(parents=True)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Remove this run's folders (the snapshot, if any, is dropped: the store stands)."""
        for folder in (self.elsewhere, self.path):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        _ACTIVE.difference_update({self.path, self.downloads})

    def own(self, path: str | os.PathLike) -> None:
        """Record a path beside ``out`` that this run made, for a later run to remove."""
        with open(self.path / "owns", "a", encoding="utf-8") as handle:
            handle.write(Path(path).name + "\n")

    def clean_stale(self) -> None:
        """Remove the scratch of dead runs on ``out``, restoring a store they were appending to."""
        parents = [self.out.parent] + ([self.elsewhere.parent] if self.elsewhere else [])
        for parent in parents:
            if not parent.is_dir():
                continue
            for entry in parent.glob(f"{self.stem}*"):
                pid = entry.name[len(self.stem) :].split(".")[0]
                if not pid.isdigit() or entry in _ACTIVE:
                    continue
                if int(pid) != os.getpid() and _alive(int(pid)):
                    continue  # our own PID not in use here: left by an earlier boot
                if (entry / "snapshot.txt").is_file():
                    if _same_store(entry, self.out):
                        _restore(entry, self.out)
                        warn(f"restored {self.out} from an append interrupted in process {pid}", 3)
                    else:
                        _keep_aside(entry, self.out, pid)
                for name in _owned(entry, self.out.name):
                    shutil.rmtree(parent / name, ignore_errors=True)
                shutil.rmtree(entry, ignore_errors=True)

    # undoing an append ------------------------------------------------------------------

    def snapshot(self, store: str | os.PathLike) -> None:
        """Hard-link every file of the local store ``store`` into this run's folder.

        The store's writer replaces files through a rename, so a link keeps the
        old bytes; where links are not possible, files are copied.
        """
        store = Path(store)
        target = self.path / "snapshot"
        files = sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file())
        folders = sorted(p.relative_to(store) for p in store.rglob("*") if p.is_dir())
        for rel in files:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(store / rel, target / rel)
            except OSError:
                shutil.copy2(store / rel, target / rel)
        # which store this is: its folder's device and inode (trial L1: a store put at the
        # same path later, a backup copied back say, must not be "restored" to this one)
        info = os.stat(store)
        (self.path / "store.txt").write_text(f"{info.st_dev} {info.st_ino}\n", encoding="utf-8")
        listing = [f"file\t{rel.as_posix()}" for rel in files]
        listing += [f"dir\t{rel.as_posix()}" for rel in folders]
        # written last: a snapshot.txt means the snapshot is complete
        (self.path / "snapshot.txt").write_text("\n".join(listing) + "\n", encoding="utf-8")

    def restore(self) -> None:
        """Put the store back as it was at :meth:`snapshot`."""
        _restore(self.path, self.out)


def _same_store(entry: Path, store: Path) -> bool:
    """Whether ``store`` is the folder the snapshot in ``entry`` was taken of.

    The same folder (device and inode; a snapshot of an earlier version, with
    no record, is taken to be of it) whose track list still begins with the
    snapshot's (an append only adds tracks; an inode number freed by removing
    the store may be given to the next folder made there).
    """
    try:
        recorded = (entry / "store.txt").read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return True
    try:
        info = os.stat(store)
    except FileNotFoundError:
        return False
    if recorded != [str(info.st_dev), str(info.st_ino)]:
        return False
    then, now = _tracks_of(entry / "snapshot"), _tracks_of(store)
    return then is None or now is None or now[: len(then)] == then


def _tracks_of(store: Path) -> list | None:
    """The track list in a store's ``zarr.json`` (None when unreadable)."""
    try:
        attributes = json.loads((store / "zarr.json").read_text(encoding="utf-8"))["attributes"]
        return list(attributes["tracks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _keep_aside(entry: Path, store: Path, pid: str) -> None:
    """Keep a snapshot that belongs to another store than the one now at ``store``; warn."""
    kept = store.parent / f".{store.name}.interrupted-append-{pid}"
    for n in itertools.count(1):
        if not kept.exists():
            break
        kept = store.parent / f".{store.name}.interrupted-append-{pid}.{n}"
    if (entry / "snapshot").exists():
        os.replace(entry / "snapshot", kept)
    else:
        kept.mkdir()
    warn(
        f"an append to {store} was interrupted in process {pid}, but {store} is not the "
        f"store it was appending to (replaced or removed since): left as it is; the other "
        f"store's files as they were before that append are kept in {kept}; delete it when "
        "not needed",
        4,
    )


def _owned(entry: Path, name: str) -> list[str]:
    try:
        names = (entry / "owns").read_text(encoding="utf-8").split()
    except OSError:
        return []
    return [n for n in names if n.startswith(f".{name}.") and "/" not in n and n != entry.name]


def _restore(entry: Path, store: Path) -> None:
    """Make ``store`` hold exactly the files listed in ``entry/snapshot.txt``, with their bytes."""
    rows = [r.split("\t", 1) for r in (entry / "snapshot.txt").read_text("utf-8").splitlines()]
    files = {Path(rel) for kind, rel in rows if kind == "file"}
    folders = {Path(rel) for kind, rel in rows if kind == "dir"}
    for path in sorted(store.rglob("*"), reverse=True):
        rel = path.relative_to(store)
        if path.is_file() and rel not in files:
            path.unlink()
        elif path.is_dir() and rel not in folders:
            shutil.rmtree(path, ignore_errors=True)
    for rel in files:
        kept, current = entry / "snapshot" / rel, store / rel
        if not current.exists() or not os.path.samefile(kept, current):
            current.parent.mkdir(parents=True, exist_ok=True)
            os.replace(kept, current)


# signals and workers --------------------------------------------------------------------


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` inside the block, so ``finally`` clauses run.

    Only the main thread can take signals; elsewhere this does nothing. A
    second SIGTERM during the cleanup is ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def watch_parent(parent: int, interval: float = 1.0) -> None:
    """Exit this (worker) process soon after process ``parent`` is gone.

    A pool's workers block on their task queue, whose pipe they hold both
    ends of, so a killed parent would leave them running forever.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="epitensor-watch-parent", daemon=True).start()


# downloads ------------------------------------------------------------------------------


def download(url: str, target: Path, where: str, deadline: float, max_bytes: int) -> None:
    """Download ``url`` to ``target`` by ``deadline`` (``time.monotonic``), at most ``max_bytes``.

    Parameters
    ----------
    url : str
        http(s) (standard library) or another fsspec protocol.
    target : pathlib.Path
        Local file to write; removed when the download fails.
    where : str
        The track, for messages.
    deadline : float
        ``time.monotonic()`` value by which every download of the run must end.
    max_bytes : int
        Largest file accepted.
    """
    try:
        _copy(url, target, where, deadline, max_bytes)
    except EpitensorError:
        target.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 - network and HTTP errors vary
        target.unlink(missing_ok=True)
        if isinstance(exc, TimeoutError | socket.timeout) and time.monotonic() >= deadline:
            _late(where, deadline)
        raise EpitensorError(
            f"{where}: cannot download ({exc}); check the URL or download it yourself"
        ) from None


def _late(where: str, deadline: float):
    raise EpitensorError(
        f"{where}: download deadline reached; pass a longer --download-timeout, or "
        f"download the file yourself and list its local path"
    )


def _copy(url: str, target: Path, where: str, deadline: float, max_bytes: int) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        _late(where, deadline)
    with _open_remote(url, min(_READ_TIMEOUT, remaining)) as remote:
        length = getattr(remote, "headers", {}).get("Content-Length", "")
        if str(length).isdigit() and int(length) > max_bytes:
            _too_big(where, f"{int(length):,} bytes", max_bytes)
        read = getattr(
            remote, "read1", remote.read
        )  # read1: whatever arrived, never waits for more
        total = 0
        with open(target, "wb") as local:
            while chunk := read(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    _too_big(where, f"more than {max_bytes:,} bytes", max_bytes)
                if time.monotonic() >= deadline:
                    _late(where, deadline)
                local.write(chunk)


def _too_big(where: str, size: str, max_bytes: int):
    raise EpitensorError(
        f"{where}: the download is {size}, over the limit of {max_bytes:,} bytes; pass a "
        f"larger --max-download or check the URL"
    )


def _open_remote(url: str, timeout: float):
    """A binary stream of a URL: http(s) with the standard library, other protocols with fsspec.

    fsspec's http filesystem needs aiohttp and requests, which a plain
    download does not justify as dependencies.
    """
    if url.startswith(("http://", "https://")):
        import urllib.request

        return urllib.request.urlopen(url, timeout=max(timeout, 0.1))  # noqa: S310 - user's URL
    import fsspec

    return fsspec.open(url, "rb").open()


# resumable downloads (published models) -------------------------------------------------


def download_resumable(
    url: str, target: Path, where: str, deadline: float, max_bytes: int, fix: str = ""
) -> int:
    """Download an http(s) ``url`` into ``target``, continuing a partial ``target`` (HTTP Range).

    Unlike :func:`download`, a failed download keeps what arrived, so that the
    next call asks the server only for the rest (``Range: bytes=N-``); a
    server that ignores the range (status 200) is read from the start again.

    Parameters
    ----------
    url : str
        http(s) URL.
    target : pathlib.Path
        Local file: appended to when it exists, else created.
    where : str
        What is downloaded, for messages (a file name).
    deadline : float
        ``time.monotonic()`` value by which the download must end.
    max_bytes : int
        Largest file accepted.
    fix : str
        Advice appended to the message of a missing file or an unreachable
        server (a mirror to set, say).

    Returns
    -------
    int
        The size of ``target`` in bytes once complete.

    Raises
    ------
    EpitensorError
        One line naming ``where`` and ``url``: not found (HTTP 404 or another
        HTTP error), unreachable, deadline reached, over ``max_bytes``, or the
        connection closed before the announced length (the part is kept:
        calling again resumes it).
    """
    import urllib.error
    import urllib.request

    have = target.stat().st_size if target.exists() else 0
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        _late_resumable(where, url)
    headers = {"Range": f"bytes={have}-"} if have else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        remote = urllib.request.urlopen(request, timeout=max(min(_READ_TIMEOUT, remaining), 0.1))  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing past what we hold: complete already
            return have
        if exc.code == 404:
            raise EpitensorError(
                f"{where}: {url} not found (HTTP 404); {fix}".rstrip("; ")
            ) from None
        raise EpitensorError(
            f"{where}: {url} answered HTTP {exc.code} {exc.reason}; {fix}".rstrip("; ")
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        if isinstance(exc, TimeoutError | socket.timeout) and time.monotonic() >= deadline:
            _late_resumable(where, url)
        reason = getattr(exc, "reason", exc)
        raise EpitensorError(
            f"{where}: cannot reach {url} ({reason}); {fix}".rstrip("; ")
        ) from None
    with remote:
        if have and remote.status != 206:
            have = 0  # the server sends the whole file
        length = remote.headers.get("Content-Length", "")
        expected = have + int(length) if str(length).isdigit() else None
        if expected is not None and expected > max_bytes:
            _too_big(where, f"{expected:,} bytes", max_bytes)
        total = _append(remote, target, have, where, url, deadline, max_bytes)
    if expected is not None and total < expected:
        raise EpitensorError(
            f"{where}: the connection closed after {total:,} of {expected:,} bytes from {url}; "
            f"run the same command again to resume"
        )
    return total


def _append(remote, target: Path, have: int, where: str, url: str, deadline, max_bytes) -> int:
    """Copy ``remote`` to ``target`` from byte ``have``; the bytes held at the end."""
    import http.client

    read = getattr(remote, "read1", remote.read)
    total = have
    with open(target, "ab" if have else "wb") as local:
        try:
            while chunk := read(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    _too_big(where, f"more than {max_bytes:,} bytes", max_bytes)
                local.write(chunk)
                if time.monotonic() >= deadline:
                    _late_resumable(where, url)
        except TimeoutError:
            local.flush()
            if time.monotonic() >= deadline:
                _late_resumable(where, url)
            raise EpitensorError(
                f"{where}: {url} sent nothing for {_READ_TIMEOUT:g} s after {total:,} bytes; "
                f"run the same command again to resume"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise EpitensorError(
                f"{where}: the connection to {url} broke after {total:,} bytes ({exc}); "
                f"run the same command again to resume"
            ) from None
    return total


def _late_resumable(where: str, url: str):
    raise EpitensorError(
        f"{where}: download deadline reached while reading {url}; run the same command "
        f"again to resume (with a longer --timeout)"
    )
