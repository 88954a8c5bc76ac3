"""The saved-model directory: file names, config.json, checked weight files, lazy genome axes.

A model directory holds::

    config.json                  hyperparameters, names, layout, history, checksums
    weights.safetensors          cell type and assay factors and the network
    genome/<axis>.safetensors    the genome factors of each axis (read lazily)
    history.csv                  the training history, for people

``config.json`` records the sha256 of every weight file (``checksums``, by
path relative to the directory), and of its own contents (``checksums
["config.json"]``: the sha256 of the rest of the config as canonical JSON, so a
hand-edited config, such as two cell type names swapped, is refused); each
file is checked against it when read,
and every tensor's name, shape and dtype against what the model expects, so a
damaged, truncated or foreign file is an error naming it, never a silently
different model. Directories saved before checksums existed (no
``checksums`` key) are read with the tensor checks only, and those saved
before the config's own checksum without it.

A model is read as one snapshot: the estimator keeps the checksums of the
``config.json`` it loaded and checks every file read later (genome axes are
read lazily) against those, never against the config on disk then, so a
directory replaced meanwhile (``train --overwrite``) is an error naming the
file, not a mix of two models.

This module owns the format; :class:`~epitensor.estimators.avocado.Avocado` calls it in
``save`` / ``load`` and :mod:`epitensor.workflows.reference` writes axis files through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from epitensor._utils import (
    EpitensorError,
    __version__,
    atomic_directory,
    usual_file_mode,
    warn,
)
from epitensor.nn.hyperparams import STRUCTURAL

__all__ = [
    "CONFIG_FILE",
    "GENOME_DIR",
    "HISTORY_FILE",
    "WEIGHTS_FILE",
    "axis_file",
    "checksum_of",
    "config_digest",
    "read_config",
    "recorded_checksum",
    "read_tensors",
    "sha256_of",
    "tensor_specs",
    "write_axis",
    "write_axis_file",
    "write_model",
    "write_tensors",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
GENOME_DIR = "genome"
HISTORY_FILE = "history.csv"
_AXIS_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_DAMAGED = "restore the model directory from a copy, or train and save it again"

# key -> accepted JSON types; the optional ones were added by later releases
_REQUIRED = {
    "class": (str,),
    "epitensor_version": (str,),
    "params": (dict,),
    "module": (dict,),
    "celltypes_": (list,),
    "assays_": (list,),
    "layout_": (dict,),
    "genome_": (str, type(None)),
    "chrom_sizes_": (dict,),
    "genome_axes_": (dict,),
    "training_tracks_": (list,),
    "history_": (list,),
}
_OPTIONAL = {
    "holdout_tracks_": (list,),
    "holdout_mse_": (int, float, type(None)),
    "checksums": (dict,),
    "training_data_": (dict, type(None)),
}
_MODULE_INTS = ("n_celltypes", "n_assays", *STRUCTURAL)


def axis_file(directory: str | os.PathLike, axis: str) -> Path:
    """Where the genome factors of ``axis`` live in a model directory.

    Parameters
    ----------
    directory : str or path-like
        The model directory.
    axis : str
        Axis name (letters, digits, ``_.-``).

    Returns
    -------
    pathlib.Path
    """
    if not _AXIS_NAME.match(axis):
        raise EpitensorError(f"axis name {axis!r} cannot be a file name; use letters, digits, _.-")
    return Path(directory) / GENOME_DIR / f"{axis}.safetensors"


def _relative(axis: str) -> str:
    return f"{GENOME_DIR}/{axis}.safetensors"


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 8 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(1 << 23):
            digest.update(piece)
    return digest.hexdigest()


# tensors --------------------------------------------------------------------------------------


def tensor_specs(module: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor in ``module``'s state (a meta module is fine)."""
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def write_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor]) -> str:
    """Write tensors as safetensors (CPU, contiguous) and return the file's sha256."""
    from safetensors.torch import save_file

    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error for OSErrors
        # a full disk or a file size limit was a 51-line SafetensorError traceback (T9)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        with contextlib.suppress(OSError):
            Path(path).unlink()
        raise EpitensorError(f"cannot write {path} ({first}); {_NO_ROOM}, then run again") from None
    usual_file_mode(path)  # safetensors leaves 0600: unreadable to a shared model's users (C6)
    return sha256_of(path)


def read_tensors(
    path: str | os.PathLike,
    expected: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
    checksum: str | None = None,
) -> dict[str, torch.Tensor]:
    """Read a weight file, refusing anything but exactly the expected tensors.

    Parameters
    ----------
    path : str or path-like
        A safetensors file of a model directory.
    expected : mapping of str to (tuple of int, torch.dtype)
        Every tensor the model needs, with its shape and dtype (see
        :func:`tensor_specs`).
    checksum : str, optional
        The file's sha256 from ``config.json``. Default None: not checked (a
        directory saved before checksums existed).

    Returns
    -------
    dict of str to torch.Tensor
        On the CPU.

    Raises
    ------
    EpitensorError
        Naming the file and the tensor: a missing file, a checksum mismatch,
        an unreadable file, a missing, extra, mis-shaped or mistyped tensor.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise EpitensorError(f"{path} is missing from the model directory; {_DAMAGED}")
    if checksum is not None and sha256_of(path) != checksum:
        raise EpitensorError(
            f"{path} does not match the checksum in {CONFIG_FILE} (damaged or replaced); {_DAMAGED}"
        )
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EpitensorError(
            f"{path} is not a readable safetensors file ({first}); {_DAMAGED}"
        ) from None
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise EpitensorError(f"{path} lacks tensor {missing[0]!r} of this model; {_DAMAGED}")
    extra = [k for k in tensors if k not in expected]
    if extra:
        raise EpitensorError(
            f"{path} holds tensor {extra[0]!r}, which this model does not have (a file of "
            f"another model?); {_DAMAGED}"
        )
    for name, (shape, dtype) in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(shape) or got.dtype != dtype:
            raise EpitensorError(
                f"{path}: tensor {name!r} is {got.dtype} {tuple(got.shape)} but the model "
                f"expects {dtype} {tuple(shape)} (a file of another model?); {_DAMAGED}"
            )
    return tensors


# config.json ----------------------------------------------------------------------------------


def read_config(directory: str | os.PathLike, class_name: str) -> dict:
    """Read and check ``config.json`` of a model directory.

    Parameters
    ----------
    directory : str or path-like
        The model directory.
    class_name : str
        The estimator class expected (``"Avocado"``).

    Returns
    -------
    dict
        The config, every required key present with a JSON type it may have.

    Raises
    ------
    EpitensorError
        Naming the file and the key: not a model directory, invalid JSON, a
        missing or mistyped key, another class.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise EpitensorError(f"{directory} is not an epitensor model (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EpitensorError(f"{path} is not valid JSON ({exc}); {_DAMAGED}") from None
    if not isinstance(config, dict):
        raise EpitensorError(
            f"{path} holds a JSON {type(config).__name__}, not an object; {_DAMAGED}"
        )
    if "class" in config and config["class"] != class_name:
        raise EpitensorError(f"{directory} holds a {config['class']!r} model, not {class_name!r}")
    for key, types in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in config:
            if key in _REQUIRED:
                raise EpitensorError(f"{path} lacks the key {key!r}; {_DAMAGED}")
            continue
        if not isinstance(config[key], types) or isinstance(config[key], bool):
            raise EpitensorError(
                f"{path}: key {key!r} is a JSON {type(config[key]).__name__}, expected "
                f"{' or '.join(_json_name(t) for t in types)}; {_DAMAGED}"
            )
    for key in _MODULE_INTS:
        value = config["module"].get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise EpitensorError(
                f"{path}: module.{key} must be a positive integer, got {value!r}; {_DAMAGED}"
            )
    sealed = (config.get("checksums") or {}).get(CONFIG_FILE)
    if sealed is not None and sealed != config_digest(config):
        raise EpitensorError(
            f"{path} does not match the checksum it records (edited after the model was "
            f"saved: names, layout or parameters changed by hand?); {_DAMAGED}"
        )
    if config["epitensor_version"] != __version__:
        warn(
            f"{directory} was saved by epitensor {config['epitensor_version']}; this is {__version__}"
        )
    return config


def _json_name(kind: type) -> str:
    return {str: "string", dict: "object", list: "array", int: "integer", float: "number",
            type(None): "null"}[kind]  # fmt: skip


_UNSEALED = ("checksums", "epitensor_version", "training_store_")


def config_digest(config: dict) -> str:
    """sha256 of a config as canonical JSON, its own checksum left out (see the module notes).

    Left out too: the version that saved it (it changes no prediction, and a
    version change is warned about on its own) and ``training_store_``, where
    the training store was: a hint a user may correct after moving the store
    (what the model was made from is ``training_data_``, which is covered).
    """
    checksums = {k: v for k, v in (config.get("checksums") or {}).items() if k != CONFIG_FILE}
    body = {k: v for k, v in config.items() if k not in _UNSEALED}
    body["checksums"] = checksums
    # through JSON once, so the digest of a dict written equals that of it read back
    text = json.dumps(json.loads(json.dumps(body)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _sealed(config: dict) -> dict:
    """``config`` with its own checksum in ``checksums`` (only when it records checksums)."""
    if config.get("checksums") is None:
        return config
    return {**config, "checksums": {**config["checksums"], CONFIG_FILE: config_digest(config)}}


def _write_config(directory: Path, config: dict) -> None:
    config = _sealed(config)
    partial = directory / (CONFIG_FILE + ".partial")
    partial.write_text(json.dumps(config, indent=1))
    os.replace(partial, directory / CONFIG_FILE)


# writing --------------------------------------------------------------------------------------


def write_model(
    path: str | os.PathLike,
    config: dict,
    weights: Mapping[str, torch.Tensor],
    axes: Mapping[str, Mapping[str, torch.Tensor]],
    copied_axes: Mapping[str, str | os.PathLike],
    history_csv: str,
    overwrite: bool = False,
    copied_checksums: Mapping[str, str | None] | None = None,
) -> dict[str, str]:
    """Write a whole model directory atomically (built under a temporary name).

    Parameters
    ----------
    path : str or path-like
        The model directory.
    config : dict
        ``config.json`` without ``checksums`` (added here).
    weights : mapping of str to torch.Tensor
        Every tensor but the genome factors.
    axes : mapping of str to mapping of str to torch.Tensor
        Genome factors in memory, by axis.
    copied_axes : mapping of str to path
        Axes not in memory: the axis file to copy (``<model>/genome/<axis>.safetensors``),
        by axis; checked against its model's recorded checksum.
    history_csv : str
        ``history.csv``'s text.
    overwrite : bool
        Replace an existing directory. Default False: refuse it.
    copied_checksums : mapping of str to str, optional
        The sha256 each copied axis file must have (the checksums its model was
        loaded with). Default None: those its directory's ``config.json`` records now.

    Returns
    -------
    dict of str to str
        The checksums written (file -> sha256), for the estimator to pin.
    """
    with atomic_directory(path, overwrite=overwrite) as tmp, _disk_errors(path):
        checksums = {WEIGHTS_FILE: write_tensors(tmp / WEIGHTS_FILE, weights)}
        (tmp / GENOME_DIR).mkdir()
        for axis, tables in axes.items():
            checksums[_relative(axis)] = write_tensors(axis_file(tmp, axis), tables)
        for axis, source in copied_axes.items():
            shutil.copyfile(source, axis_file(tmp, axis))
            checksum = sha256_of(axis_file(tmp, axis))
            recorded = (
                copied_checksums[axis]
                if copied_checksums is not None and axis in copied_checksums
                else recorded_checksum(Path(source).parent.parent, axis)
            )
            if recorded is not None and checksum != recorded:  # never re-bless a damaged file
                raise EpitensorError(
                    f"{source} does not match the checksum in its {CONFIG_FILE} (damaged or "
                    f"replaced); {_DAMAGED}"
                )
            checksums[_relative(axis)] = checksum
        _write_config(tmp, {**config, "checksums": checksums})
        (tmp / HISTORY_FILE).write_text(history_csv)
    return checksums


_NO_ROOM = "free disk space, raise the file size limit (ulimit -f) or choose a writable folder"


@contextlib.contextmanager
def _disk_errors(path):
    """A full disk or a file size limit met while writing a model is one line (trial T9)."""
    try:
        yield
    except OSError as exc:
        raise EpitensorError(
            f"cannot write model {path} ({exc.strerror or exc}); {_NO_ROOM}, then run again"
        ) from None


def write_axis(
    path: str | os.PathLike, axis: str, tables: Mapping[str, torch.Tensor], config: dict,
    history_csv: str,
) -> dict[str, str] | None:  # fmt: skip
    """Add or replace one axis of a saved model, then its ``config.json``.

    The axis file is replaced first, then the config (with the new checksum):
    a crash in between leaves a model that does not list the new axis yet.

    Parameters
    ----------
    path : str or path-like
        A model directory.
    axis : str
        The axis.
    tables : mapping of str to torch.Tensor
        Its genome factors.
    config : dict
        The model's new ``config.json`` without ``checksums`` (kept from the
        directory's current config, this axis's updated).
    history_csv : str
        ``history.csv``'s text.

    Returns
    -------
    dict of str to str or None
        The checksums now recorded (None for a directory without them).
    """
    path = Path(path)
    old = read_config(path, config["class"])
    target = axis_file(path, axis)
    target.parent.mkdir(exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    checksum = write_tensors(partial, tables)
    os.replace(partial, target)
    checksums = dict(old.get("checksums") or {})
    if old.get("checksums") is not None:  # a directory without checksums stays without
        checksums[_relative(axis)] = checksum
        config = {**config, "checksums": checksums}
    _write_config(path, config)
    (path / HISTORY_FILE).write_text(history_csv)
    return config.get("checksums")


def write_axis_file(
    directory: str | os.PathLike, axis: str, tables: Mapping[str, torch.Tensor]
) -> Path:
    """Write one axis file into a folder being staged (no config); returns its path."""
    target = axis_file(directory, axis)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_tensors(target, tables)
    return target


def checksum_of(config: dict, axis: str | None = None) -> str | None:
    """The recorded sha256 of the weights (``axis=None``) or of an axis file, if any."""
    checksums = config.get("checksums") or {}
    return checksums.get(WEIGHTS_FILE if axis is None else _relative(axis))


def recorded_checksum(directory: str | os.PathLike, axis: str | None = None) -> str | None:
    """The sha256 that ``directory/config.json`` records for a weight file, if any.

    A folder without ``config.json`` (axis files staged by ``import-reference``
    before their model is written) records nothing: None.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        raise EpitensorError(f"{Path(directory) / CONFIG_FILE} is unreadable; {_DAMAGED}") from None
    return checksum_of(config if isinstance(config, dict) else {}, axis)
