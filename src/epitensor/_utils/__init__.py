"""Private helpers shared across modules: errors, warnings, progress, devices, files."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm


class EpitensorError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


class EpitensorWarning(UserWarning):
    """Warnings raised by epitensor (filter them with this class)."""


def warn(message: str, stacklevel: int = 2) -> None:
    """Issue an :class:`EpitensorWarning` attributed to the caller's caller."""
    warnings.warn(message, EpitensorWarning, stacklevel=stacklevel + 1)


def progress(
    iterable: Iterable | None = None,
    total: int | None = None,
    desc: str | None = None,
    verbose: bool = True,
    unit: str = "it",
    **kwargs,
):
    """The one progress reporter of epitensor, on stderr, silenced by ``verbose=False``.

    On a terminal (or in a notebook) it is a tqdm bar. Elsewhere (a cluster
    job's log file, a pipe) carriage-return bars would grow the log by
    megabytes, so it prints one plain line every :data:`LOG_INTERVAL` seconds
    and one when it closes (:class:`LineProgress`). ``EPITENSOR_PROGRESS=bar``
    or ``=lines`` forces either.

    Parameters
    ----------
    iterable : iterable, optional
        Items to wrap. Default None: update by hand.
    total : int, optional
        Expected count. Default None: ``len(iterable)`` where it has one.
    desc : str, optional
        Label. Default None.
    verbose : bool
        Default True; False prints nothing.
    unit : str
        Name of one step. Default ``"it"``.
    **kwargs
        Passed to tqdm (bars only).

    Returns
    -------
    tqdm or LineProgress
        Both support iteration, ``update``, ``set_postfix``, ``close``, ``n``
        and use as a context manager.
    """
    if verbose and not _bars_wanted():
        return LineProgress(iterable, total=total, desc=desc, unit=unit)
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=not verbose,
        unit=unit,
        leave=False,
        dynamic_ncols=True,
        **kwargs,
    )


#: Seconds between two progress lines when stderr is not a terminal.
LOG_INTERVAL = 10.0


def _bars_wanted() -> bool:
    """True where a live bar renders: a terminal, or a notebook (tqdm.auto's widget)."""
    forced = os.environ.get("EPITENSOR_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines"):
        return forced == "bar"
    if any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__):  # tqdm.auto's widget
        return True
    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and stream.isatty()


class LineProgress:
    """Progress as plain lines on stderr: one every ``interval`` seconds and one at the end.

    The stand-in for a tqdm bar where stderr is a file: a long run's log holds
    a few lines per minute, each complete (no carriage returns), e.g.
    ``impute 2 track(s): 1,200,000/3,977,000 bin (30%), 41,000 bin/s, 29 s, ~68 s left``.

    Parameters
    ----------
    iterable : iterable, optional
        Items to wrap. Default None.
    total : int, optional
        Expected count. Default None: ``len(iterable)`` where it has one.
    desc : str, optional
        Label. Default None.
    unit : str
        Name of one step. Default ``"it"``.
    interval : float, optional
        Seconds between lines. Default None: :data:`LOG_INTERVAL` (or the
        ``EPITENSOR_PROGRESS_INTERVAL`` environment variable).
    file : text stream, optional
        Default None: ``sys.stderr`` at each write.
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str | None = None,
        unit: str = "it",
        interval: float | None = None,
        file=None,
    ):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        if interval is None:
            interval = float(os.environ.get("EPITENSOR_PROGRESS_INTERVAL", LOG_INTERVAL))
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.interval, self.file = interval, file
        self.n = 0
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        except BaseException:  # stopped early (an error, or the loop left): no "done" line
            self._closed = True
            raise
        self.close()

    def __len__(self) -> int:
        return 0 if self.total is None else int(self.total)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps; print a line if ``interval`` has passed since the last."""
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        """Append ``key=value`` pairs to the following lines (as tqdm's ``set_postfix``)."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Change the label."""
        self.desc = desc

    def refresh(self) -> None:
        """Nothing to redraw: lines are printed on ``update`` and ``close``."""

    def close(self) -> None:
        """Print the final line (once)."""
        if not self._closed:
            self._closed = True
            self._emit(time.monotonic(), done=True)

    def line(self, now: float | None = None, done: bool = False) -> str:
        """The text of one progress line."""
        elapsed = (time.monotonic() if now is None else now) - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n:,}" if self.total is None else f"{self.n:,}/{self.total:,}"
        parts = [f"{count} {self.unit}"]
        if self.total:
            parts[0] += f" ({self.n / self.total:.0%})"
        parts += [f"{rate:,.3g} {self.unit}/s", f"{elapsed:,.0f} s"]
        if not done and self.total and rate > 0:
            parts.append(f"~{(self.total - self.n) / rate:,.0f} s left")
        if done:
            parts.append("done")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " * bool(self.desc) + ", ".join(parts)

    def _emit(self, now: float, done: bool = False) -> None:
        stream = self.file if self.file is not None else sys.stderr
        if stream is None:
            return
        stream.write(self.line(now, done) + "\n")
        stream.flush()


# threads ---------------------------------------------------------------------------------------


def cgroup_cpu_quota(
    cgroup_file: str | os.PathLike = "/proc/self/cgroup",
    root: str | os.PathLike = "/sys/fs/cgroup",
) -> float | None:
    """CPUs' worth of time the process's cgroups allow (``quota / period``), or None.

    Reads cgroup v2 ``cpu.max`` (``"150000 100000"``, or ``"max 100000"``: no
    limit) and v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota ``-1``: no
    limit) in the process's own cgroup and every parent up to ``root``, and in
    ``root`` itself (a container sees its own cgroup there); the tightest wins.

    Parameters
    ----------
    cgroup_file : str or path-like
        The process's cgroup membership. Default ``/proc/self/cgroup``.
    root : str or path-like
        Where the cgroup file systems are mounted. Default ``/sys/fs/cgroup``.

    Returns
    -------
    float or None
        For example 1.5 for half of a second CPU; None when nothing limits it
        or nothing could be read.
    """
    root = Path(root)
    try:
        lines = Path(cgroup_file).read_text().splitlines()
    except OSError:
        lines = []
    quotas = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.strip().lstrip("/")
        if controllers == "":  # v2 unified hierarchy
            for folder in _ancestors(root, rel):
                quotas.append(_read_v2_quota(folder / "cpu.max"))
        elif "cpu" in controllers.split(","):
            for mount in (controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu"):
                for folder in _ancestors(root / mount, rel):
                    quotas.append(_read_v1_quota(folder))
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _ancestors(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and each parent of it down to ``base`` (nested limits all apply)."""
    folders = [base]
    for part in Path(rel).parts:
        folders.append(folders[-1] / part)
    return folders


def _read_v2_quota(path: Path) -> float | None:
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read_v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text().strip())
        period = int((folder / "cpu.cfs_period_us").read_text().strip())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus() -> int:
    """CPUs this process may actually use: its affinity mask, cut to its cgroup quota.

    ``os.cpu_count()`` counts the machine's CPUs even when ``taskset``, a batch
    scheduler or a container quota allows far fewer; more torch threads than
    that oversubscribe the CPUs and slow every step down. A fractional quota
    is rounded down (at least 1): a thread team that outruns the quota is
    throttled mid-step.

    Returns
    -------
    int
        At least 1.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, int(quota))
    return max(1, cpus)


def default_threads(n_threads: int | None = None) -> int | None:
    """Torch CPU threads to use: ``n_threads`` when given, else the CPUs this process may use.

    Parameters
    ----------
    n_threads : int, optional
        An explicit count (``--threads``), returned unchanged. Default None:
        torch's current count, cut to :func:`available_cpus` (so a lower count
        set earlier, e.g. with ``torch.set_num_threads``, is kept).
    """
    if n_threads is not None:
        return n_threads
    import torch

    return min(torch.get_num_threads(), available_cpus())


def passive_openmp_wait() -> bool:
    """Make torch's OpenMP threads sleep, not spin, between parallel regions (before torch loads).

    By default OpenMP worker threads busy-wait for new work after each
    parallel region. Beside another busy process (a second training run, a
    neighbour on a shared node) the spinning threads of each hold the cores
    the others need, and every step waits for a descheduled thread: a
    2-thread training run beside other jobs ran 20x slower than with one
    thread (README, "Threads"). With ``OMP_WAIT_POLICY=PASSIVE`` they sleep
    instead. The OpenMP runtime reads the variable once, when torch is first
    imported, so this is called by the command line before anything imports
    torch; a value the user set is kept.

    Returns
    -------
    bool
        True if the policy was set here; False if the user had set one or
        torch was already imported (too late to change).
    """
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none).

    Read once per process: every Predictor session and every epoch's holdout
    scorer asks for the vendor.
    """
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the end of the first processor's block
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_summary() -> str:
    """The CPU model and its matrix instruction sets (AVX2 / AVX-512 / AMX), for speed tables.

    Returns
    -------
    str
        For example ``"AMD EPYC 7B13, 2 CPUs usable; AVX2, FMA"``.
    """
    info = _cpuinfo()
    model = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    names = [
        ("avx2", "AVX2"),
        ("fma", "FMA"),
        ("avx512f", "AVX-512"),
        ("avx512_bf16", "AVX-512 BF16"),
        ("avx512_vnni", "AVX-512 VNNI"),
        ("amx_tile", "AMX"),
        ("amx_bf16", "AMX BF16"),
    ]
    present = [label for flag, label in names if flag in flags]
    if not flags:
        present = ["flags unknown"]
    elif not any(flag in flags for flag in ("avx2", "avx512f", "amx_tile")):
        present.insert(0, "no AVX2 / AVX-512 / AMX")
    return f"{model}, {available_cpus()} CPUs usable; {', '.join(present)}"


def resolve_device(device: str | None = None):
    """Return a ``torch.device``: CUDA if available, else MPS, else CPU, when None.

    Parameters
    ----------
    device : str or torch.device, optional
        Explicit device. Default None: pick the best available.
    """
    import torch

    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EpitensorError(
                f"device {str(device)!r} was asked for but torch finds no CUDA GPU on this "
                f"machine; pass --device cpu, or leave --device out for the best available"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


CAPPED_BELOW_AVX512 = ("DEFAULT", "NO AVX", "AVX2")  # torch's names of its CPU kernel levels


def resolve_precision(precision: str, device) -> str:
    """``"fp32"`` or ``"bf16"``; ``"auto"`` is bf16 where the hardware has native bf16.

    Parameters
    ----------
    precision : str
        ``"fp32"``, ``"bf16"`` or ``"auto"`` (bf16 on CUDA GPUs that support it
        and on CPUs with AVX-512 BF16 or AMX, unless torch's kernels are capped
        below AVX-512 with ``ATEN_CPU_CAPABILITY``; else fp32).
    device : torch.device
        Where the model runs.
    """
    import torch

    if precision != "auto":
        return precision
    try:
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        elif device.type == "cpu":
            native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
            # kernels capped below AVX-512 (ATEN_CPU_CAPABILITY=avx2) emulate bf16 slowly
            native = native and torch.backends.cpu.get_cpu_capability() not in CAPPED_BELOW_AVX512
        else:
            native = False
    except (AttributeError, RuntimeError):  # private CPU probes may move between releases
        native = False
    return "bf16" if native else "fp32"


def cpu_vendor() -> str:
    """The CPU's ``vendor_id`` from ``/proc/cpuinfo`` (``"AuthenticAMD"``, ``"GenuineIntel"``), or ``""``."""
    return _cpuinfo().get("vendor_id", "")


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
_held: dict[str, list] = {}  # lock file -> [handle, depth]: locks this process holds
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
    key = str(target)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield target
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    handle = _acquire(target, path, wait, lock_timeout() if timeout is None else timeout)
    with _held_guard:
        _held[key] = [handle, 1]
    try:
        yield target
    finally:
        with _held_guard:
            depth = _held[key][1] - 1
            if depth == 0:
                del _held[key]
            else:  # pragma: no cover - a nested holder outlived its parent block
                _held[key][1] = depth
        if depth == 0:
            _release(handle, target)


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
            f"{path} to finish (set {LOCK_TIMEOUT_ENV} to change the wait)\n"
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
        f"{_lock_holder(target)} writing {path} (lock {target}); retry when it is done "
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


def _try_lock(target: Path):
    """One attempt at the lock; its handle, or None while another process holds it."""
    if fcntl is None:  # pragma: no cover - Windows
        import filelock

        lock = filelock.FileLock(str(target), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return None
        return lock
    while True:
        try:
            fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError:  # another user's lock file: flock works on a read-only one
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
            with contextlib.suppress(OSError):  # the pid is for messages only
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


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
