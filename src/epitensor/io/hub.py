"""The published Avocado models: their registry, the download cache, verified and resumable files.

The registry (``data/published_models/models.json``, facts and provenance in
the README beside it) names every model the original Avocado's command line
offered, its genome, chromosomes, where its files live (a Zenodo record where
there is one, the authors' lab server always) and, where the original lists
them, its cell types and assays. This module finds the files of a model's
chromosomes, downloads them into the cache and checks them; turning them into
an epitensor model is :mod:`epitensor.workflows.pretrained`'s work.

Where things are looked up (each overridable, so that a mirror, or a test
server on 127.0.0.1, can stand in for the real hosts):

* the cache: the ``cache`` argument (``--cache``), else ``$EPITENSOR_CACHE``,
  else the platform's user cache folder (``platformdirs`` when installed,
  else ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on
  macOS, ``%LOCALAPPDATA%`` on Windows) + ``epitensor``;
* the lab server: ``lab_url`` argument, else ``$EPITENSOR_MODELS_URL``, else
  the registry's ``lab_url``; a model's files are ``LAB_URL/<original
  name>/avocado-<chrom>.{json,h5}``;
* Zenodo: ``zenodo_api`` argument, else ``$EPITENSOR_ZENODO_API``, else
  ``https://zenodo.org/api``; a record's files, with their sizes and md5
  checksums, are read from ``ZENODO_API/records/<id>``.

Checks. A file is kept only once its size and checksum are right: the md5 the
Zenodo record gives, or, for a file only the lab server holds, the size the
server announces; the md5 of every verified file is then pinned in the cache
(``files.json``), and a later download of the same file (after it was
removed, or into a pull that resumes) must match the pin.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from epitensor._utils import EpitensorError, atomic_write_bytes, md5sum, package_data, warn
from epitensor.io.fetch import download_resumable

__all__ = [
    "CACHE_ENV",
    "LAB_URL_ENV",
    "ZENODO_API_ENV",
    "PublishedModel",
    "RemoteFile",
    "cache_root",
    "fetch_file",
    "model_cache",
    "published_model",
    "registry",
    "remote_files",
]

CACHE_ENV = "EPITENSOR_CACHE"
LAB_URL_ENV = "EPITENSOR_MODELS_URL"
ZENODO_API_ENV = "EPITENSOR_ZENODO_API"
_REGISTRY = "published_models"
_PINS = "files.json"


@dataclass(frozen=True)
class PublishedModel:
    """One published model of the original Avocado (a row of the registry).

    Attributes
    ----------
    name : str
        The registry name, ``<original>-<genome>`` (the original CLI's ``--model``).
    original : str
        The folder name on the authors' lab server (``roadmap``, ``encode2018core``, ...).
    genome : str
        Genome build the model was trained on (``hg19``, ``hg38``, ``mm10``).
    chroms : tuple of str
        Chromosomes with a file pair.
    zenodo_record : str or None
        The Zenodo record archiving the model, where there is one.
    description, paper : str
        What it was trained on, and where it was published.
    celltypes, assays : tuple of str
        As the original repository lists them (empty where it lists none).
    """

    name: str
    original: str
    genome: str
    chroms: tuple[str, ...]
    zenodo_record: str | None
    description: str
    paper: str | None
    celltypes: tuple[str, ...] = field(default=(), repr=False)
    assays: tuple[str, ...] = field(default=(), repr=False)

    def file_names(self, chrom: str) -> tuple[str, str]:
        """The ``.json`` and ``.h5`` file names of one chromosome."""
        return f"avocado-{chrom}.json", f"avocado-{chrom}.h5"

    def check_chroms(self, chroms) -> list[str]:
        """``chroms`` (default: all) in the registry's order; an unknown one is an error."""
        if not chroms:
            return list(self.chroms)
        unknown = [c for c in chroms if c not in self.chroms]
        if unknown:
            raise EpitensorError(
                f"{self.name} has no chromosome {', '.join(unknown)}; it has "
                f"{', '.join(self.chroms)}"
            )
        return [c for c in self.chroms if c in set(chroms)]


@dataclass(frozen=True)
class RemoteFile:
    """A file of a published model and where it is downloaded from.

    Attributes
    ----------
    name : str
        File name in the cache (``avocado-chr21.h5``).
    url : str
        Where it is downloaded from.
    size : int or None
        Bytes, where the source says (a Zenodo record does).
    md5 : str or None
        Hex md5, where the source says.
    source : str
        ``"zenodo record N"`` or ``"lab server"``, for messages.
    """

    name: str
    url: str
    size: int | None
    md5: str | None
    source: str


# the registry -----------------------------------------------------------------------


def _table(name: str | None, column: int) -> tuple[str, ...]:
    """Column ``column`` of a table copied from the original repository (header skipped)."""
    if not name:
        return ()
    lines = package_data(f"{_REGISTRY}/{name}").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines if line.strip()]
    if rows and rows[0][0].startswith(("Index", "Epigenome ID")):
        rows = rows[1:]
    return tuple(row[column].strip() for row in rows)


def _raw_registry() -> dict:
    return json.loads(package_data(f"{_REGISTRY}/models.json").read_text(encoding="utf-8"))


def registry() -> dict[str, PublishedModel]:
    """Every published model, by registry name, in the registry's order.

    Returns
    -------
    dict of str to PublishedModel
        ``roadmap-hg19``, ``encode2018core-hg38``, ``encode2018full-hg38``,
        ``entex2019-hg38``, ``encode2019mouse-mm10``.
    """
    models = {}
    for row in _raw_registry()["models"]:
        models[row["name"]] = PublishedModel(
            name=row["name"],
            original=row["original"],
            genome=row["genome"],
            chroms=tuple(row["chroms"]),
            zenodo_record=row.get("zenodo_record"),
            description=row["description"],
            paper=row.get("paper"),
            celltypes=_table(row.get("celltypes_table"), 0),
            assays=_table(row.get("assays_table"), 0),
        )
    return models


def published_model(name: str) -> PublishedModel:
    """The registry entry named ``name``; an unknown name is a one-line error listing them."""
    models = registry()
    if name not in models:
        raise EpitensorError(
            f"no published model named {name!r}; known: {', '.join(models)} "
            f"(see `epitensor models list`)"
        )
    return models[name]


def lab_url(lab_url: str | None = None) -> str:
    """The lab server's models folder: the argument, ``$EPITENSOR_MODELS_URL`` or the registry's."""
    return (lab_url or os.environ.get(LAB_URL_ENV) or _raw_registry()["lab_url"]).rstrip("/")


def zenodo_api(zenodo_api: str | None = None) -> str:
    """Zenodo's API root: the argument, ``$EPITENSOR_ZENODO_API`` or the registry's."""
    return (zenodo_api or os.environ.get(ZENODO_API_ENV) or _raw_registry()["zenodo_api"]).rstrip(
        "/"
    )


# the cache --------------------------------------------------------------------------


def _platform_cache() -> Path:
    """The user's cache folder for epitensor (platformdirs' rules, without needing it)."""
    try:
        import platformdirs
    except ImportError:
        pass
    else:
        return Path(platformdirs.user_cache_dir("epitensor", appauthor=False))
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
        return Path(base) / "epitensor" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "epitensor"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "epitensor"


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache``, else ``$EPITENSOR_CACHE``, else the platform's.

    Parameters
    ----------
    cache : str or path-like, optional
        An explicit folder (``--cache``).

    Returns
    -------
    pathlib.Path
        The folder (not created).
    """
    if cache is not None:
        return Path(cache).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return _platform_cache()


def model_cache(name: str, cache: str | os.PathLike | None = None) -> Path:
    """The cache folder of one published model, created and checked writable.

    Raises
    ------
    EpitensorError
        One line naming the folder and the fix when it cannot be written.
    """
    folder = cache_root(cache) / "models" / name
    try:
        (folder / "original").mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise EpitensorError(
            f"cannot write the model cache {folder} ({exc.strerror or exc}); pass --cache DIR "
            f"or set {CACHE_ENV} to a writable folder"
        ) from None
    return folder


def read_pins(folder: Path) -> dict[str, dict]:
    """The verified files of a model cache: ``{name: {"size", "md5", "url"}}``."""
    try:
        return json.loads((folder / _PINS).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _write_pins(folder: Path, pins: dict[str, dict]) -> None:
    atomic_write_bytes(folder / _PINS, (json.dumps(pins, indent=1, sort_keys=True) + "\n").encode())


# where the files are ----------------------------------------------------------------


def _get_json(url: str, deadline: float) -> dict:
    """GET a JSON document within the deadline (standard library)."""
    import urllib.request

    timeout = max(min(60.0, deadline - time.monotonic()), 0.1)
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - registry URL
        return json.loads(response.read().decode("utf-8"))


def _zenodo_entries(record: dict) -> list[dict]:
    """The file entries of a Zenodo record, in the legacy (list) or InvenioRDM (dict) form."""
    files = record.get("files", record.get("entries", []))
    if isinstance(files, dict):
        files = files.get("entries", files)
    if isinstance(files, dict):
        files = list(files.values())
    return [f for f in files if isinstance(f, dict) and "key" in f]


def _zenodo_files(model: PublishedModel, api: str, deadline: float) -> dict[str, RemoteFile]:
    """The record's files by base name; empty (with a warning) when it cannot be read."""
    url = f"{api}/records/{model.zenodo_record}"
    try:
        record = _get_json(url, deadline)
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the lab server
        warn(f"{model.name}: cannot read Zenodo record {url} ({exc}); using the lab server")
        return {}
    found = {}
    for entry in _zenodo_entries(record):
        key = str(entry["key"])
        checksum = str(entry.get("checksum", ""))
        links = entry.get("links", {})
        link = links.get("content") or links.get("self") or links.get("download")
        link = link or f"{url}/files/{key}/content"
        found[key.rsplit("/", 1)[-1]] = RemoteFile(
            name=key.rsplit("/", 1)[-1],
            url=link,
            size=int(entry["size"]) if str(entry.get("size", "")).isdigit() else None,
            md5=checksum[4:] if checksum.startswith("md5:") else None,
            source=f"zenodo record {model.zenodo_record}",
        )
    return found


def remote_files(
    model: PublishedModel,
    chroms: list[str],
    deadline: float,
    lab: str | None = None,
    zenodo: str | None = None,
) -> list[RemoteFile]:
    """Where each file of ``chroms`` is downloaded from, with its size and md5 where known.

    A model with a Zenodo record takes its files from the record's files API
    (sizes and md5s included); a file the record lacks, or a record that cannot
    be read, falls back to the lab server with a warning. Other models come
    from the lab server (no checksum known before the first download).

    Parameters
    ----------
    model : PublishedModel
    chroms : list of str
    deadline : float
        ``time.monotonic()`` by which the record must be read.
    lab, zenodo : str, optional
        Override the lab server and the Zenodo API (see :func:`lab_url`).

    Returns
    -------
    list of RemoteFile
        Two per chromosome: the ``.json``, then the ``.h5``.
    """
    record = _zenodo_files(model, zenodo_api(zenodo), deadline) if model.zenodo_record else {}
    base = f"{lab_url(lab)}/{model.original}"
    out, lacking = [], []
    for chrom in chroms:
        for name in model.file_names(chrom):
            if name in record:
                out.append(record[name])
                continue
            if record:
                lacking.append(name)
            out.append(RemoteFile(name, f"{base}/{name}", None, None, "lab server"))
    if lacking:
        warn(
            f"{model.name}: Zenodo record {model.zenodo_record} holds no {', '.join(lacking)}; "
            f"downloading from the lab server {base}"
        )
    return out


# one verified file ------------------------------------------------------------------


def _fix() -> str:
    return (
        f"the file may have moved: set {LAB_URL_ENV} (or {ZENODO_API_ENV}) to a mirror, or "
        f"download the files yourself and run `epitensor import-reference`"
    )


def fetch_file(
    model: PublishedModel,
    remote: RemoteFile,
    folder: Path,
    deadline: float,
    max_bytes: int,
    verify: bool = False,
) -> str:
    """Make ``folder/original/<name>`` a verified copy of ``remote``; say what was done.

    A file already present and pinned is kept (checked again with ``verify``).
    Otherwise the download goes to ``<name>.part``, continuing a part an
    interrupted pull left; the complete part is checked (size, md5 from the
    record or the pin) and only then renamed into place and pinned.

    Parameters
    ----------
    model : PublishedModel
    remote : RemoteFile
    folder : pathlib.Path
        The model's cache folder (:func:`model_cache`).
    deadline : float
        ``time.monotonic()`` by which the download must end.
    max_bytes : int
        Largest file accepted.
    verify : bool
        Hash a present file again. Default False: its pinned size suffices.

    Returns
    -------
    str
        ``"present"``, ``"downloaded"`` or ``"resumed"``.

    Raises
    ------
    EpitensorError
        A download that failed (the part is kept for a resume) or a file that
        does not match its size or checksum (it is removed), named.
    """
    target = folder / "original" / remote.name
    pins = read_pins(folder)
    pin = pins.get(remote.name)
    if target.is_file() and pin is not None:
        if target.stat().st_size == pin["size"] and (not verify or md5sum(target) == pin["md5"]):
            return "present"
        warn(f"{target} differs from the verified download; downloading it again")
        target.unlink()
    part = target.with_name(target.name + ".part")
    how = "resumed" if part.is_file() and part.stat().st_size else "downloaded"
    if not target.is_file():
        download_resumable(remote.url, part, remote.name, deadline, max_bytes, _fix())
        source = part
    else:  # present but never verified (copied in by hand): check it like a download
        source = target
    _check(remote, pin, source)
    os.replace(source, target)
    pins = read_pins(folder)
    pins[remote.name] = {"size": target.stat().st_size, "md5": md5sum(target), "url": remote.url}
    _write_pins(folder, pins)
    return how if source is part else "present"


def _check(remote: RemoteFile, pin: dict | None, path: Path) -> None:
    """Refuse (and remove) a file whose size or md5 is not the record's or the pin's."""
    size = path.stat().st_size
    want_size = remote.size if remote.size is not None else (pin or {}).get("size")
    want_md5 = remote.md5 or (pin or {}).get("md5")
    problem = None
    if want_size is not None and size != want_size:
        problem = f"{size:,} bytes, not the {want_size:,} expected"
    elif want_md5 is not None:
        got = md5sum(path)
        if got != want_md5:
            problem = f"md5 {got}, not the {want_md5} expected"
    if problem:
        path.unlink()
        origin = remote.source if remote.md5 or remote.size else "the first verified download"
        raise EpitensorError(
            f"{remote.name} from {remote.url} is corrupt ({problem} from {origin}); it was "
            f"removed: run the same command again to download it afresh"
        )
