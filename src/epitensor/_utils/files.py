"""Files: checksums, local paths, output locks, atomic writes, bundled package data."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import math
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from epitensor._utils.errors import EpitensorError, warn


def md5sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_local_path(url: str | os.PathLike) -> bool:
    """True for a plain path or a ``file://`` URL."""
    text = str(url)
    return "://" not in text or text.startswith("file://")


def local_path(url: str | os.PathLike) -> Path:
    """Path of a plain path or ``file://`` URL."""
    text = str(url)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


LOCK_TIMEOUT_ENV = "EPITENSOR_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 3600.0
_LOCK_POLL = 0.1  # seconds between tries while another process holds a lock
# lock file -> [handle, depth, exclusive]: locks this process holds (exclusive: a writer's)
_held: dict[str, list] = {}
_held_guard = threading.Lock()


def lock_file(path: str | os.PathLike) -> Path:
    """The lock file of an output (a store or a directory): ``.NAME.lock`` beside it.

    Beside, not inside, so that replacing the directory (``--overwrite``) and
    adding to it (``--append``) take the same lock.
    """
    final = Path(os.path.abspath(path))
    return final.parent / f".{final.name}.lock"


def lock_timeout() -> float:
    """Seconds a writer waits for another's lock: ``$EPITENSOR_LOCK_TIMEOUT`` or 3600."""
    text = os.environ.get(LOCK_TIMEOUT_ENV)
    if text is None:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise EpitensorError(
            f"invalid {LOCK_TIMEOUT_ENV}: got {text!r}, expected a number of seconds >= 0"
        )
    return value


@contextlib.contextmanager
def output_lock(
    path: str | os.PathLike, wait: bool = True, timeout: float | None = None
) -> Iterator[Path]:
    """Hold the inter-process write lock of an output while the block runs.

    The lock is an exclusive ``flock`` on :func:`lock_file` (``fcntl``; on
    Windows, through the ``filelock`` package). The operating system drops it
    when its process dies, so a killed writer never leaves a stale lock; the
    file itself is deleted on release. Reentrant within one process (a
    command that locks its output may call functions that lock it again).
    On a file system without locks it warns and writes unlocked.

    Why not ``filelock.FileLock`` on Unix too (filelock 4.3, measured in
    ``benchmarks/libraries.py``): its Unix lock opens the lock file for
    writing, so a second user writing to a shared output (lock file mode
    0644, the first user's) got "Permission denied" at once while the first
    user's writer ran, and for good once that writer was killed and left its
    lock file; here ``flock`` on a read-only descriptor makes the second user
    wait, then take the left-behind file. It keeps the lock file after
    release by design, where an output here leaves nothing behind, and
    deleting it under filelock would rest on how its waiters treat an
    unlinked file, which it does not document. The pid in the file, the
    message before waiting and the no-lock warning would stay hand-written on
    top of it; and it took 3x as long per lock and release (0.6 ms against
    0.2 ms) and 16 ms more to import.

    Parameters
    ----------
    path : str or path-like
        The output: a store or output directory (it need not exist yet; its
        parent folder is created).
    wait : bool
        When another process holds the lock, wait for it (with a message on
        stderr). Default True. False: fail at once.
    timeout : float, optional
        Longest wait in seconds. Default None: :func:`lock_timeout`.

    Yields
    ------
    pathlib.Path
        The lock file.
    """
    target = lock_file(path)
    with _held_guard:
        if str(target) in _held and not _held[str(target)][2]:
            # waiting for our own shared lock would never end
            raise EpitensorError(
                f"cannot write {path} while this process is reading it; write to another path"
            )
    acquire = functools.partial(
        _acquire, target, path, wait, lock_timeout() if timeout is None else timeout
    )
    with _holding(target, acquire, _release, exclusive=True):
        yield target


@contextlib.contextmanager
def _holding(target: Path, acquire, release, exclusive: bool) -> Iterator[bool]:
    """Hold ``target``'s lock for the block, reentrant within this process.

    The first holder calls ``acquire()`` (a handle, or None: run unlocked) and
    the last one ``release(handle, target)``; nested holders only count. Yields
    whether the block is locked.
    """
    key = str(target)
    with _held_guard:
        reentered = key in _held
        if reentered:
            _held[key][1] += 1
    if not reentered:
        handle = acquire()  # outside the guard: it may wait for another process
        if handle is None:
            yield False
            return
        with _held_guard:
            _held[key] = [handle, 1, exclusive]
    try:
        yield True
    finally:
        with _held_guard:
            _held[key][1] -= 1
            last = _held[key][1] == 0
            if last:
                handle = _held.pop(key)[0]
        if last:
            release(handle, target)


@contextlib.contextmanager
def read_lock(path: str | os.PathLike) -> Iterator[Path | None]:
    """Hold a shared lock on an output while the block reads it (a model being loaded).

    The shared side of :func:`output_lock`'s lock file: any number of readers
    hold it at once; a writer (``train --out M --overwrite``) waits until the
    last reader is done before it replaces ``path``, and a reader that comes
    while a writer holds the lock fails at once, with one line. So a reader
    sees one whole version of ``path``, never a mix of two (trial W1).
    Reentrant, also inside this process's own :func:`output_lock` of ``path``.

    Where no lock file can be made (a read-only folder, a shared model of
    another user's, a path that does not exist) the block runs unlocked: no
    epitensor writer can replace it there either, and what a model was loaded
    from is still checked against the checksums pinned at load.

    Parameters
    ----------
    path : str or path-like
        The output read (a model directory).

    Yields
    ------
    pathlib.Path or None
        The lock file, or None when reading unlocked.

    Raises
    ------
    EpitensorError
        When another process is writing ``path``.
    """
    target = lock_file(path)
    acquire = functools.partial(_acquire_shared, target, path)
    with _holding(target, acquire, _release_shared, exclusive=False) as locked:
        yield target if locked else None


def _acquire_shared(target: Path, path):
    """Take the shared lock of ``target`` at once; None where no lock file can be made."""
    if fcntl is None:  # pragma: no cover - Windows: filelock has no shared locks
        return None
    try:
        handle = _try_lock(target, shared=True)
    except (FileNotFoundError, PermissionError):
        return None  # no folder, or one this user may not write: nobody replaces it here
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return None
        raise EpitensorError(
            f"cannot lock {path} for reading: {exc.strerror or exc} on {target}"
        ) from None
    if handle is None:
        raise EpitensorError(
            f"{path} is being written by another epitensor process{_lock_holder(target)} "
            f"(lock {target}; `--overwrite` replacing it?); wait for it to finish, then run again"
        )
    return handle


def _release_shared(handle: int, target: Path) -> None:
    """Unlock a shared lock; the last reader (it alone can take the lock whole) deletes the file."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(handle)  # other readers hold it (or no file locks): they delete it
        return
    with contextlib.suppress(OSError):
        if os.path.samestat(os.fstat(handle), os.stat(target)):
            os.unlink(target)
    os.close(handle)


def check_parent_folder(out: str | os.PathLike, what: str = "") -> None:
    """Refuse an output whose nearest existing ancestor is a file, not a folder.

    ``mkdir`` would say only "File exists"; this names the file in the way.

    Parameters
    ----------
    out : str or path-like
        The output path (it need not exist).
    what : str
        What the output is, for the message (``"the store"``). Default: nothing.
    """
    for parent in Path(out).absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                name = f"{what} {out}" if what else str(out)
                raise EpitensorError(
                    f"cannot write {name}: {parent} is a file, not a folder; choose another output"
                )
            return


def _acquire(target: Path, path, wait: bool, timeout: float):
    """Take the lock of ``target`` (waiting up to ``timeout`` s when ``wait``); its handle."""
    check_parent_folder(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = _try_lock(target)
        if handle is not None:
            return handle
        holder = _lock_holder(target)
        if not wait:
            raise EpitensorError(
                f"{path} is being written by another epitensor process{holder} (lock "
                f"{target}); wait for it to finish or choose another output"
            )
        sys.stderr.write(
            f"waiting up to {timeout:g} s for another epitensor process{holder} writing "
            f"or reading {path} to finish (set {LOCK_TIMEOUT_ENV} to change the wait)\n"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(_LOCK_POLL)
            handle = _try_lock(target)
            if handle is not None:
                return handle
    except OSError as exc:
        raise EpitensorError(
            f"cannot lock {path}: {exc.strerror or exc} on {target}; make {target.parent} writable"
        ) from None
    raise EpitensorError(
        f"timed out after {timeout:g} s waiting for another epitensor process"
        f"{_lock_holder(target)} writing or reading {path} (lock {target}); retry when it is done "
        f"or set {LOCK_TIMEOUT_ENV} to wait longer"
    )


def _lock_holder(target: Path) -> str:
    """`` (pid N)`` of the process holding ``target``, as it wrote it there; else empty."""
    try:
        pid = int(target.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return ""
    return f" (pid {pid})"


try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: filelock's msvcrt locks instead
    fcntl = None
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}  # file systems without flock


def _try_lock(target: Path, shared: bool = False):
    """One attempt at the lock; its handle, or None while another process holds it.

    ``shared``: a reader's lock (:func:`read_lock`), which writes no pid.
    """
    if fcntl is None:  # pragma: no cover - Windows
        import filelock

        lock = filelock.FileLock(str(target), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return None
        return lock
    # O_NOFOLLOW: a symbolic link planted at the lock path by anyone who can write
    # the output's folder would otherwise make this process truncate and overwrite
    # the link's target with its pid (trial E1).
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    while True:
        try:
            try:
                fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | nofollow, 0o666)
            except PermissionError:  # another user's lock file: flock works on a read-only one
                fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | nofollow)
        except OSError as exc:
            if exc.errno == errno.ELOOP or os.path.islink(target):
                raise _not_a_lock_file(target, "a symbolic link") from None
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            os.close(fd)  # a hard link would let the pid overwrite another file too
            what = "not a regular file" if not stat.S_ISREG(info.st_mode) else "a hard link"
            raise _not_a_lock_file(target, what)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            warn(f"the file system of {target.parent} has no file locks; writing unlocked", 5)
        except BaseException:
            os.close(fd)
            raise
        # The holder deletes the file on release: a lock won on a file no longer at
        # ``target`` guards nothing (a newcomer would lock a new file), so retry.
        try:
            fresh = os.path.samestat(os.fstat(fd), os.stat(target))
        except FileNotFoundError:
            fresh = False
        if fresh:
            if not shared:  # readers leave the last writer's pid: it is for messages only
                with contextlib.suppress(OSError):
                    _write_pid(fd)
            return fd
        os.close(fd)


def _not_a_lock_file(target: Path, what: str) -> EpitensorError:
    """The error for a lock path that epitensor will not write through."""
    return EpitensorError(
        f"the lock file {target} is {what}; epitensor never writes through one (it "
        f"would overwrite another file); remove {target} and run again"
    )


def _write_pid(fd: int) -> None:
    """Write this process's pid over the lock file's contents.

    A fresh lock file is empty; one left by a killed holder keeps its old pid,
    so the tail is cut only when the old text is longer. Never ``ftruncate(fd,
    0)`` first: on ext4 (``auto_da_alloc``) truncating a file to zero makes its
    ``close`` flush it to disk: 2 ms per lock and release instead of 0.2 ms.
    """
    data = f"{os.getpid()}\n".encode()
    os.pwrite(fd, data, 0)
    if os.fstat(fd).st_size > len(data):
        os.ftruncate(fd, len(data))


def _release(handle, target: Path) -> None:
    """Delete the lock file (while still holding it) and unlock."""
    if fcntl is None:  # pragma: no cover - Windows
        handle.release()
        return
    with contextlib.suppress(OSError):  # gone, or a folder this user may not change
        os.unlink(target)
    os.close(handle)  # closing the last descriptor drops the flock


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place on success.

    On an exception the temporary directory is removed and any existing
    ``path`` is left untouched.

    The build holds :func:`output_lock` on ``path``, so two processes never
    build the same directory at once: without ``overwrite`` the second fails at
    once, with it the second waits and then replaces the first's result.

    Parameters
    ----------
    path : str or path-like
        Final directory.
    overwrite : bool
        Replace an existing ``path``. Default False: refuse it.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise EpitensorError(f"{final} already exists; choose another path or pass overwrite")
    # Without overwrite, waiting for another writer of ``final`` could only end in
    # "already exists", so fail at once; with it, wait and replace its result.
    with output_lock(final, wait=overwrite):
        if final.exists() and not overwrite:  # made while this process waited
            raise EpitensorError(f"{final} already exists; choose another path or pass overwrite")
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the user's usual mode
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_file_mode(path: str | os.PathLike) -> None:
    """Give a file the mode a plain ``open`` would (0666 less the umask).

    Writers that go through a temporary file (``mkstemp``, safetensors) leave
    0600, so other users of a shared output could not read it (trial C6).
    """
    os.chmod(path, 0o666 & ~_umask())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the user's usual mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def package_data(name: str) -> Path:
    """Path of a file or folder bundled in the package's ``data/`` folder."""
    return Path(str(resources.files("epitensor") / "data" / name))
