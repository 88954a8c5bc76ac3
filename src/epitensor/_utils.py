"""Private helpers shared across modules: errors, warnings, progress, devices, files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
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
) -> tqdm:
    """The one progress bar of epitensor: tqdm on stderr, silenced by ``verbose=False``."""
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


def resolve_precision(precision: str, device) -> str:
    """``"fp32"`` or ``"bf16"``; ``"auto"`` is bf16 where the hardware has native bf16.

    Parameters
    ----------
    precision : str
        ``"fp32"``, ``"bf16"`` or ``"auto"`` (bf16 on CUDA GPUs that support it
        and on CPUs with AVX-512 BF16 or AMX, else fp32).
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
        else:
            native = False
    except (AttributeError, RuntimeError):  # private CPU probes may move between releases
        native = False
    return "bf16" if native else "fp32"


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


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place on success.

    On an exception the temporary directory is removed and any existing
    ``path`` is left untouched.

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
    final.parent.mkdir(parents=True, exist_ok=True)
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
