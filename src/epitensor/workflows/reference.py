"""Import models trained by the original Avocado package (Keras 2 HDF5, one file pair per chromosome).

The original package (``avocado-epigenome``) saves a model as ``avocado-chrN.json``
(cell types, assays and sizes) plus ``avocado-chrN.h5`` (Keras weights), one pair
per chromosome; the network and the cell type and assay factors are shared by
all chromosomes, the genome factors are each chromosome's own. This module reads
those files with h5py alone (no Keras, no TensorFlow) and maps them onto
:class:`epitensor.nn.module.AvocadoModule`:

* ``celltype_embedding`` / ``assay_embedding`` rows follow the JSON ``celltypes``
  / ``assays`` lists;
* ``genome_25bp_embedding``, ``genome_250bp_embedding``, ``genome_5kbp_embedding``
  become the chromosome's :class:`~epitensor.nn.module.GenomeFactors` tables. Keras
  sized the coarse tables ``n // 10 + 1`` and ``n // 200 + 1`` rows; ours have
  ``ceil(n / 10)`` and ``ceil(n / 200)``. Positions ``0 .. n - 1`` only ever index
  rows up to ``(n - 1) // 10`` and ``(n - 1) // 200``, so the one extra row the
  Keras tables carry when ``n`` is a multiple of 10 (or 200) is never used and
  is dropped: predictions are unchanged;
* ``dense_0`` .. ``dense_{n_layers-1}`` and ``y_pred`` become the MLP; Keras
  stores kernels as ``(in, out)``, so the torch ``Linear`` weight is the
  transpose.

Genome layout. Published models are genome-wide: each chromosome file covers
the whole chromosome, position ``i`` = chromosome bin ``i`` (25-bp bins), and
each chromosome becomes an axis of a whole-genome :class:`~epitensor.genome.coordinates.Layout`
named after it. A model trained on a slice of a chromosome (such as the test
fixture, trained on the ENCODE pilot region ENr231) is placed with ``first_bin``:
position ``i`` of chromosome ``chrN``'s file is then bin ``first_bin + i`` of
``chrN``, and the axis is a one-region layout named ``"chrN_start-end"`` (bp,
0-based half-open; axis names become file names, so no colon). The coarse factors keep indexing the model's own positions
(``i // 10``, ``i // 200``), exactly as the original did.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from epitensor._utils import EpitensorError, atomic_write_bytes, progress, warn
from epitensor.estimators.avocado import Avocado
from epitensor.genome.coordinates import (
    DEFAULT_RESOLUTION,
    Layout,
    chrom_sizes,
    n_bins,
    natural_sort,
)
from epitensor.io.names import validate_name
from epitensor.nn.module import SCALE_5KBP, SCALE_250BP, AvocadoModule, GenomeFactors

__all__ = [
    "ReferenceModel",
    "chrom_of",
    "find_reference_files",
    "import_reference",
    "import_reference_to_directory",
    "read_reference",
    "read_reference_config",
    "read_reference_weights",
]

# Keys of the JSON written by the original ``Avocado.save`` that set the architecture.
_SIZE_KEYS = (
    "n_celltype_factors",
    "n_assay_factors",
    "n_genomic_positions",
    "n_25bp_factors",
    "n_250bp_factors",
    "n_5kbp_factors",
    "n_layers",
    "n_nodes",
)
_GENOME_LAYERS = ("genome_25bp_embedding", "genome_250bp_embedding", "genome_5kbp_embedding")
_CHROM_IN_NAME = re.compile(r"(?:^|[-_.])(chr[0-9A-Za-z_]+)$")


@dataclass
class ReferenceModel:
    """An original Avocado model read into epitensor's module.

    Attributes
    ----------
    module : AvocadoModule
        The network, cell type and assay factors, and one genome axis per
        chromosome file.
    celltypes, assays : list of str
        Row order of the cell type and assay factors.
    training_tracks : list of tuple of (str, str)
        The ``(celltype, assay)`` pairs the original was trained on (its JSON
        ``experiments``; empty when absent).
    layout : Layout
        Where each axis lies on the genome.
    genome : str
        Genome build or chrom.sizes path.
    chrom_sizes : pandas.Series
        Chromosome lengths of ``genome`` in bp.
    params : dict
        Architecture hyperparameters under epitensor's names
        (``n_celltype_factors`` .. ``n_nodes``).
    sources : dict of str to tuple of (Path, Path)
        The JSON and h5 file read for each chromosome.
    """

    module: AvocadoModule
    celltypes: list[str]
    assays: list[str]
    training_tracks: list[tuple[str, str]]
    layout: Layout
    genome: str
    chrom_sizes: pd.Series
    params: dict
    sources: dict[str, tuple[Path, Path]] = field(default_factory=dict)


# finding the files ------------------------------------------------------------------


def chrom_of(path: str | os.PathLike) -> str:
    """Chromosome named at the end of a reference file's stem (``avocado-chr19`` -> ``chr19``)."""
    stem = Path(path).name
    for suffix in (".json", ".h5", ".hdf5"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    match = _CHROM_IN_NAME.search(stem)
    if match is None:
        raise EpitensorError(
            f"{path}: cannot tell which chromosome this file holds; name the files "
            f"like the original, e.g. avocado-chr19.json + avocado-chr19.h5"
        )
    return match.group(1)


def _pair(stem: Path) -> tuple[Path, Path]:
    json_path, h5_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".h5")
    for path in (json_path, h5_path):
        if not path.is_file():
            raise EpitensorError(
                f"{path} not found: an original Avocado model is a .json + .h5 pair per chromosome"
            )
    return json_path, h5_path


def find_reference_files(
    path_or_prefix: str | os.PathLike | Iterable[str | os.PathLike],
) -> dict[str, tuple[Path, Path]]:
    """Locate the ``.json`` / ``.h5`` pair of every chromosome of an original model.

    Parameters
    ----------
    path_or_prefix : path or iterable of paths
        One of: a per-chromosome prefix (``models/avocado-chr19``), either file of
        a pair (``models/avocado-chr19.h5``), a folder holding ``*-chr*.json``
        pairs, a shared prefix (``models/avocado`` finds ``models/avocado-chr*``),
        or a list of any of these.

    Returns
    -------
    dict of str to tuple of (Path, Path)
        ``{chrom: (json_path, h5_path)}`` in natural chromosome order.
    """
    if isinstance(path_or_prefix, (str, os.PathLike)):
        items = [path_or_prefix]
    else:
        items = list(path_or_prefix)
    stems: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            stems += [p.with_suffix("") for p in sorted(path.glob("*chr*.json"))]
        elif path.suffix in (".json", ".h5", ".hdf5"):
            stems.append(path.with_suffix(""))
        elif (
            path.with_name(path.name + ".json").exists()
            or path.with_name(path.name + ".h5").exists()
        ):
            stems.append(path)
        else:
            stems += [p.with_suffix("") for p in sorted(path.parent.glob(f"{path.name}-chr*.json"))]
    if not stems:
        raise EpitensorError(
            f"no original Avocado model files found at {', '.join(map(str, items))}; "
            f"expected avocado-chrN.json + avocado-chrN.h5 pairs"
        )
    found: dict[str, tuple[Path, Path]] = {}
    for stem in stems:
        chrom = chrom_of(stem)
        pair = _pair(stem)
        if chrom in found and found[chrom] != pair:
            raise EpitensorError(f"{pair[0]}: {chrom} is given twice (also {found[chrom][0]})")
        found[chrom] = pair
    return {c: found[c] for c in natural_sort(found)}


# reading one pair -------------------------------------------------------------------


def read_reference_config(path: str | os.PathLike) -> dict:
    """Read and check the JSON an original ``Avocado.save`` wrote.

    Parameters
    ----------
    path : str or path-like
        ``avocado-chrN.json``.

    Returns
    -------
    dict
        ``celltypes``, ``assays`` (lists of str), ``experiments`` (list of
        ``(celltype, assay)``; empty when absent) and the integer sizes
        ``n_celltype_factors`` .. ``n_nodes``.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EpitensorError(f"{path}: not an Avocado model JSON ({exc})") from None
    if not isinstance(data, dict):
        raise EpitensorError(f"{path}: not an Avocado model JSON (expected an object)")
    missing = [k for k in ("celltypes", "assays", *_SIZE_KEYS) if k not in data]
    if missing:
        raise EpitensorError(f"{path}: not an original Avocado model JSON; missing keys {missing}")
    config = {k: data[k] for k in _SIZE_KEYS}
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EpitensorError(f"{path}: {key} must be a positive integer; got {value!r}")
    for key, kind in (("celltypes", "cell type"), ("assays", "assay")):
        names = data[key]
        if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names):
            raise EpitensorError(f"{path}: {key} must be a non-empty list of unique names")
        # E2: the names go into file names, bedGraph headers and CELL:ASSAY arguments
        config[key] = [validate_name(n, kind, f"{path}: {key}") for n in names]
    config["experiments"] = [(str(c), str(a)) for c, a in data.get("experiments", [])]
    return config


def _decode(values) -> list[str]:
    # Files from older Keras / h5py store these attributes as bytes.
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _layer_weights(root, layer: str, h5_path: Path) -> dict[str, np.ndarray]:
    """Weights of one Keras layer, keyed by short name (``kernel``, ``bias``, ``embeddings``)."""
    group = root[layer]
    names = _decode(group.attrs.get("weight_names", []))
    weights = {}
    for name in names:
        short = name.rsplit("/", 1)[-1].split(":")[0]
        # Keras 1 named weights ``<layer>_W`` / ``<layer>_b``; Keras 2 ``kernel`` / ``bias``.
        if short.endswith("_W"):
            short = "embeddings" if layer.endswith("_embedding") else "kernel"
        elif short.endswith("_b"):
            short = "bias"
        try:
            raw = group[name][()]
        except KeyError:
            raise EpitensorError(
                f"{h5_path}: layer {layer!r} lists weight {name!r} but does not hold it; "
                f"the file is damaged"
            ) from None
        kind = getattr(raw, "dtype", np.dtype(type(raw))).kind
        if kind not in "biuf":  # T1: bytes or strings converted to a traceback
            raise EpitensorError(
                f"{h5_path}: weight {name!r} of layer {layer!r} holds {_kind_name(kind)}, "
                f"not numbers; the file is damaged or not an Avocado model"
            )
        weights[short] = np.asarray(raw, dtype=np.float32)
        _check_finite(weights[short], f"{h5_path}: weight {name!r} of layer {layer!r}")
    return weights


def _kind_name(kind: str) -> str:
    """A numpy dtype kind in words, for messages."""
    return {"S": "bytes", "U": "text", "O": "objects", "b": "booleans", "c": "complex numbers"}.get(
        kind, f"values of kind {kind!r}"
    )


def _check_finite(array: np.ndarray, where: str) -> None:
    """Refuse NaN or infinite weights (W8), in row blocks so a genome table needs no copy."""
    flat = array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)
    n_bad, first = 0, None
    for lo in range(0, len(flat), 1 << 16):
        bad = ~np.isfinite(flat[lo : lo + (1 << 16)])
        count = int(bad.sum())
        if count and first is None:
            first = lo + int(np.flatnonzero(bad.any(axis=1))[0])
        n_bad += count
    if not n_bad:
        for lo in range(0, len(flat), 1 << 16):
            huge = np.abs(flat[lo : lo + (1 << 16)]) > _MAX_WEIGHT
            if huge.any():
                first = lo + int(np.flatnonzero(huge.any(axis=1))[0])
                raise EpitensorError(
                    f"{where} holds values beyond ±{_MAX_WEIGHT:g} (first in row {first}); "
                    f"the model is broken and its predictions would overflow to infinity"
                )
    if n_bad:
        raise EpitensorError(
            f"{where} holds {n_bad:,} NaN or infinite value(s) (first in row {first}); the "
            f"model is broken (a diverged training?) and its predictions would be meaningless"
        )


def read_reference_weights(
    path: str | os.PathLike, n_layers: int
) -> dict[str, dict[str, np.ndarray]]:
    """Read the Avocado layers of a Keras HDF5 file through its ``layer_names`` attributes.

    Parameters
    ----------
    path : str or path-like
        ``avocado-chrN.h5`` (a full Keras model save, or a ``save_weights`` file).
    n_layers : int
        Hidden layers expected (``dense_0`` .. ``dense_{n_layers-1}``).

    Returns
    -------
    dict of str to dict of str to numpy.ndarray
        ``{layer: {"embeddings" | "kernel" | "bias": array}}``, float32, for the
        five embeddings, the hidden layers and ``y_pred``. Kernels are in Keras
        orientation, ``(in_features, out_features)``.
    """
    import h5py

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise EpitensorError(f"{path}: not an HDF5 file ({exc})") from None
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in root.attrs:
            raise EpitensorError(
                f"{path}: not a Keras model file (no layer_names attribute); "
                f"expected the .h5 written by the original Avocado's save()"
            )
        present = set(_decode(root.attrs["layer_names"]))
        wanted = [
            "celltype_embedding",
            "assay_embedding",
            *_GENOME_LAYERS,
            *(f"dense_{i}" for i in range(n_layers)),
            "y_pred",
        ]
        missing = [layer for layer in wanted if layer not in present or layer not in root]
        if missing:
            raise EpitensorError(f"{path}: not a complete Avocado model; missing layers {missing}")
        _check_architecture(handle, root, present, wanted, path)
        weights = {layer: _layer_weights(root, layer, path) for layer in wanted}
    for layer, parts in weights.items():
        needed = ("embeddings",) if layer.endswith("_embedding") else ("kernel", "bias")
        lacking = [p for p in needed if p not in parts]
        if lacking:
            raise EpitensorError(f"{path}: layer {layer!r} has no {', '.join(lacking)} weights")
    return weights


# Keras layer classes of the original Avocado network, and each Dense layer's activation:
# another architecture (tanh, an extra BatchNormalization) was imported as the plain
# ReLU network, silently computing something else (trial W9).
_KERAS_CLASSES = {"InputLayer", "Embedding", "Flatten", "Concatenate", "Dense"}
_MAX_WEIGHT = 1e6  # |w| beyond this overflows float32 through the network (W8: 1e30 rows)


def _check_architecture(handle, root, present: set, wanted: list, path: Path) -> None:
    """Refuse a Keras model that is not the original Avocado network.

    Every layer holding weights must be one of ``wanted``; where the file keeps
    its ``model_config`` (a full ``model.save``), every layer must be of a class
    the original uses, the hidden Dense layers ReLU and ``y_pred`` linear.
    """
    extra = [
        layer
        for layer in natural_sort(present - set(wanted))
        if layer in root and len(root[layer].attrs.get("weight_names", [])) > 0
    ]
    if extra:
        raise EpitensorError(
            f"{path}: layers {extra[:5]} hold weights the original Avocado network does not "
            f"have; only models saved by the original Avocado can be imported"
        )
    text = handle.attrs.get("model_config")
    if text is None:
        return
    try:
        config = json.loads(text.decode() if isinstance(text, bytes) else str(text))
        layers = config["config"]["layers"]
        described = [(str(lay["class_name"]), lay.get("config", {})) for lay in layers]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise EpitensorError(
            f"{path}: unreadable model_config; the file is damaged or not an Avocado model"
        ) from None
    for class_name, fields in described:
        name = fields.get("name", "?") if isinstance(fields, dict) else "?"
        if class_name not in _KERAS_CLASSES:
            raise EpitensorError(
                f"{path}: layer {name!r} is a Keras {class_name}, which the original Avocado "
                f"network does not have; only its architecture can be imported"
            )
        if class_name == "Dense":
            expected = "linear" if name == "y_pred" else "relu"
            got = fields.get("activation", "linear")
            if got != expected:
                raise EpitensorError(
                    f"{path}: layer {name!r} uses activation {got!r}; the original Avocado "
                    f"network uses {expected!r} there, so this model cannot be imported"
                )


def _expected_shapes(config: dict) -> dict[tuple[str, str], tuple[int, ...]]:
    n = config["n_genomic_positions"]
    n_nodes = config["n_nodes"]
    n_in = (
        config["n_celltype_factors"]
        + config["n_assay_factors"]
        + config["n_25bp_factors"]
        + config["n_250bp_factors"]
        + config["n_5kbp_factors"]
    )
    shapes = {
        ("celltype_embedding", "embeddings"): (
            len(config["celltypes"]),
            config["n_celltype_factors"],
        ),
        ("assay_embedding", "embeddings"): (len(config["assays"]), config["n_assay_factors"]),
        ("genome_25bp_embedding", "embeddings"): (n, config["n_25bp_factors"]),
        ("genome_250bp_embedding", "embeddings"): (n // SCALE_250BP + 1, config["n_250bp_factors"]),
        ("genome_5kbp_embedding", "embeddings"): (n // SCALE_5KBP + 1, config["n_5kbp_factors"]),
        ("y_pred", "kernel"): (n_nodes, 1),
        ("y_pred", "bias"): (1,),
    }
    for i in range(config["n_layers"]):
        shapes[(f"dense_{i}", "kernel")] = (n_in if i == 0 else n_nodes, n_nodes)
        shapes[(f"dense_{i}", "bias")] = (n_nodes,)
    return shapes


def _check_shapes(
    weights: dict[str, dict[str, np.ndarray]], config: dict, json_path: Path, h5_path: Path
) -> None:
    """Raise when a weight's shape disagrees with the sizes in the JSON."""
    n = config["n_genomic_positions"]
    for (layer, part), shape in _expected_shapes(config).items():
        got = weights[layer][part].shape
        if layer in ("genome_250bp_embedding", "genome_5kbp_embedding"):
            # Accept our ceil(n / scale) rows too, so files we write ourselves read back.
            scale = SCALE_250BP if "250" in layer else SCALE_5KBP
            ok_rows = {shape[0], math.ceil(n / scale)}
            if len(got) == 2 and got[0] in ok_rows and got[1] == shape[1]:
                continue
        if got != shape:
            raise EpitensorError(
                f"{h5_path}: {layer}/{part} has shape {got} but {json_path.name} implies "
                f"{shape}; the JSON/h5 pair disagree (shape mismatch)"
            )


# the module -------------------------------------------------------------------------


def _linear(kernel: np.ndarray, bias: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Keras ``(in, out)`` kernel to a torch ``(out, in)`` weight, plus the bias."""
    return torch.from_numpy(np.ascontiguousarray(kernel.T)), torch.from_numpy(bias.copy())


def _genome_factors(
    weights: dict[str, dict[str, np.ndarray]], n_positions: int, module: AvocadoModule
) -> GenomeFactors:
    """A :class:`GenomeFactors` holding the chromosome's three Keras tables.

    The tables are built on the meta device first so that no random
    initialisation of a chromosome-sized table is paid before being replaced.
    """
    with torch.device("meta"):
        factors = module.new_genome_factors(n_positions)
    for emb, layer in zip((factors.emb_25bp, factors.emb_250bp, factors.emb_5kbp), _GENOME_LAYERS):
        # Rows past ceil(n / scale) are never indexed by positions 0 .. n - 1.
        table = weights[layer]["embeddings"][: emb.num_embeddings]
        emb.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(table)))
    return factors


def _shared_module(config: dict, weights: dict[str, dict[str, np.ndarray]]) -> AvocadoModule:
    """Module with the network, cell type and assay factors, and no genome axis yet."""
    module = AvocadoModule(
        n_celltypes=len(config["celltypes"]),
        n_assays=len(config["assays"]),
        axis_lengths={},
        **{k: config[k] for k in _SIZE_KEYS if k != "n_genomic_positions"},
    )
    with torch.no_grad():
        module.celltype_embedding.weight.copy_(
            torch.from_numpy(weights["celltype_embedding"]["embeddings"])
        )
        module.assay_embedding.weight.copy_(
            torch.from_numpy(weights["assay_embedding"]["embeddings"])
        )
        linears = [m for m in module.network if isinstance(m, nn.Linear)]
        names = [f"dense_{i}" for i in range(config["n_layers"])] + ["y_pred"]
        for linear, name in zip(linears, names):
            weight, bias = _linear(weights[name]["kernel"], weights[name]["bias"])
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
    return module.eval()


_SHARED_LAYERS = ("celltype_embedding", "assay_embedding")


def _check_agrees(
    chrom: str,
    config: dict,
    weights: dict[str, dict[str, np.ndarray]],
    first: tuple[str, dict, dict[str, dict[str, np.ndarray]]],
    h5_path: Path,
) -> None:
    """Raise when a chromosome's network or cell type / assay factors differ from the first's."""
    first_chrom, first_config, first_weights = first
    for key in ("celltypes", "assays", *(k for k in _SIZE_KEYS if k != "n_genomic_positions")):
        if config[key] != first_config[key]:
            raise EpitensorError(
                f"{h5_path.with_suffix('.json')}: {chrom} has {key}={config[key]!r} but "
                f"{first_chrom} has {first_config[key]!r}; the chromosome files are not one model"
            )
    for layer, parts in first_weights.items():
        if layer in _GENOME_LAYERS:
            continue
        for part, value in parts.items():
            if not np.allclose(weights[layer][part], value, rtol=0.0, atol=1e-6):
                raise EpitensorError(
                    f"{h5_path}: {chrom}'s {layer}/{part} differs from {first_chrom}'s; "
                    f"the chromosome files are not one model (network and cell type / "
                    f"assay factors must be shared)"
                )


# the layout -------------------------------------------------------------------------


def _first_bin_of(first_bin: int | Mapping[str, int] | None, chrom: str) -> int | None:
    if first_bin is None:
        return None
    if isinstance(first_bin, Mapping):
        return None if chrom not in first_bin else int(first_bin[chrom])
    return int(first_bin)


def _axis_region(
    chrom: str, n_positions: int, first: int | None, sizes: pd.Series, path: Path, genome: str
) -> tuple[str, tuple]:
    """Axis name and layout row of one chromosome file."""
    if chrom not in sizes.index:
        known = ", ".join(list(sizes.index[:3]) + ["...", *sizes.index[-2:]])
        raise EpitensorError(
            f"{path}: unknown chromosome {chrom!r} for genome {genome} (known: {known}); "
            f"pass the genome build the model was trained on"
        )
    res = DEFAULT_RESOLUTION
    chrom_bins = n_bins(int(sizes[chrom]), res)
    start_bin = 0 if first is None else first
    if start_bin < 0 or start_bin >= chrom_bins:
        raise EpitensorError(
            f"{path}: first bin {start_bin} lies outside {chrom} ({chrom_bins} bins in {genome})"
        )
    covered = min(n_positions, chrom_bins - start_bin)
    if covered < n_positions:
        warn(
            f"{path}: the last {n_positions - covered} of {n_positions} positions lie past "
            f"the end of {chrom} in {genome}; they are kept but map to no genomic bin"
        )
    start, end = start_bin * res, min((start_bin + covered) * res, int(sizes[chrom]))
    axis = chrom if first is None else f"{chrom}_{start}-{end}"
    return axis, (axis, chrom, start, end, axis, 0, start_bin, covered)


def _layout(rows: list[tuple], lengths: dict[str, int], whole: bool) -> Layout:
    columns = ["axis", "chrom", "start", "end", "name", "offset", "first_bin", "n_bins"]
    regions = pd.DataFrame(rows, columns=columns)
    return Layout(regions, lengths, DEFAULT_RESOLUTION, "genome" if whole else "regions")


# the public readers -------------------------------------------------------------------


def read_reference(
    path_or_prefix: str | os.PathLike | Iterable[str | os.PathLike],
    genome: str | os.PathLike = "hg19",
    first_bin: int | Mapping[str, int] | None = None,
    chroms: Iterable[str] | None = None,
    verbose: bool = True,
) -> ReferenceModel:
    """Read an original Avocado model (one or many chromosomes) into epitensor's module.

    Parameters
    ----------
    path_or_prefix : path or iterable of paths
        The model files; see :func:`find_reference_files` (a prefix such as
        ``models/avocado-chr19``, a folder, a shared prefix ``models/avocado``,
        a ``.json`` / ``.h5`` path, or a list).
    genome : str or path-like
        Build the model was trained on (``"hg19"``, ``"hg38"``, ``"mm10"``) or a
        chrom.sizes file; chromosome names are checked against it. Default
        ``"hg19"`` (the Roadmap model's).
    first_bin : int or dict of str to int, optional
        For models trained on a slice of a chromosome: the chromosome bin
        (25 bp) of the model's position 0, one for all files or one per
        chromosome. The axis is then named ``"chrN_start-end"``. Default None:
        whole chromosomes, position ``i`` = bin ``i``, axes named ``chrN``.
    chroms : iterable of str, optional
        Only import these chromosomes. Default None: every file found.
    verbose : bool
        Progress bar over the chromosome files. Default True.

    Returns
    -------
    ReferenceModel
        The module (eval mode, float32, CPU), names, layout and sources.

    Examples
    --------
    >>> ref = read_reference("avocado-chr1", genome="hg19", first_bin=6046322)  # doctest: +SKIP
    >>> ref.module.forward_tracks(ct, assay, positions, ref.layout.axes[0])  # doctest: +SKIP
    """
    return _read(path_or_prefix, genome, first_bin, chroms, verbose, sink=None)


def _read(
    path_or_prefix,
    genome: str | os.PathLike,
    first_bin: int | Mapping[str, int] | None,
    chroms: Iterable[str] | None,
    verbose: bool,
    sink: Callable[[str, GenomeFactors], None] | None,
) -> ReferenceModel:
    """:func:`read_reference`, handing each axis's factors to ``sink`` when given.

    With a ``sink`` the module keeps no genome axis, so a genome-wide model is
    never held in memory all at once.
    """
    files = find_reference_files(path_or_prefix)
    if chroms is not None:
        wanted = list(chroms)
        unknown = [c for c in wanted if c not in files]
        if unknown:
            raise EpitensorError(
                f"no model files for {unknown} at {path_or_prefix}; found {list(files)}"
            )
        files = {c: files[c] for c in natural_sort(wanted)}
    sizes = chrom_sizes(genome)
    genome_name = str(genome)
    module: AvocadoModule | None = None
    first: tuple | None = None
    rows, lengths = [], {}
    for chrom, (json_path, h5_path) in progress(
        files.items(), total=len(files), desc="import", verbose=verbose, unit="chrom"
    ):
        config = read_reference_config(json_path)
        n = config["n_genomic_positions"]
        axis, row = _axis_region(
            chrom, n, _first_bin_of(first_bin, chrom), sizes, json_path, genome_name
        )
        weights = read_reference_weights(h5_path, config["n_layers"])
        _check_shapes(weights, config, json_path, h5_path)
        if first is None:
            module = _shared_module(config, weights)
            first = (chrom, config, {k: v for k, v in weights.items() if k not in _GENOME_LAYERS})
        else:
            _check_agrees(chrom, config, weights, first, h5_path)
        factors = _genome_factors(weights, n, module)
        del weights
        if sink is None:
            module.genome[axis] = factors
        else:
            sink(axis, factors)
            del factors
        rows.append(row)
        lengths[axis] = n
    config = first[1]
    return ReferenceModel(
        module=module.eval(),
        celltypes=list(config["celltypes"]),
        assays=list(config["assays"]),
        training_tracks=list(config["experiments"]),
        layout=_layout(rows, lengths, whole=first_bin is None),
        genome=genome_name,
        chrom_sizes=sizes,
        params={k: config[k] for k in _SIZE_KEYS if k != "n_genomic_positions"},
        sources=dict(files),
    )


# the estimator ----------------------------------------------------------------------


def _estimator(ref: ReferenceModel, lengths: dict[str, int], params: dict):
    """A fitted :class:`~epitensor.estimators.avocado.Avocado` around ``ref``'s module."""
    return Avocado.from_module(
        ref.module,
        celltypes=ref.celltypes,
        assays=ref.assays,
        layout=ref.layout,
        chrom_sizes=ref.chrom_sizes,
        genome=ref.genome,
        training_tracks=ref.training_tracks,
        genome_axes=lengths,
        **{**ref.params, **params},
    )


def import_reference(
    path_or_prefix: str | os.PathLike | Iterable[str | os.PathLike],
    genome: str | os.PathLike = "hg19",
    first_bin: int | Mapping[str, int] | None = None,
    chroms: Iterable[str] | None = None,
    verbose: bool = True,
    **params,
):
    """A fitted :class:`~epitensor.estimators.avocado.Avocado` from an original Avocado model.

    Every chromosome's genome factors are held in memory; to convert a
    genome-wide model chromosome by chromosome, use
    :func:`import_reference_to_directory`.

    Parameters
    ----------
    path_or_prefix, genome, first_bin, chroms, verbose
        As for :func:`read_reference`.
    **params
        Other estimator hyperparameters (``device``, ``batch_size``,
        ``n_genome_epochs``, ...), used by later ``predict`` / ``fit_celltypes``
        calls. The architecture comes from the files.

    Returns
    -------
    Avocado
        Fitted: ``module_``, ``celltypes_``, ``assays_``, ``layout_``,
        ``genome_``, ``chrom_sizes_``, ``genome_axes_`` (one per chromosome
        file), ``training_tracks_`` (the original's ``experiments``); empty
        ``holdout_tracks_`` and ``history_``.

    Examples
    --------
    >>> import epitensor as et
    >>> model = et.import_reference("avocado-chr1", "hg19", first_bin=6046322)  # doctest: +SKIP
    >>> model.predict("E065", "H3K4me3").shape  # doctest: +SKIP
    (20002,)
    """
    ref = read_reference(path_or_prefix, genome, first_bin, chroms, verbose)
    return _estimator(ref, ref.layout.axis_lengths, {"verbose": verbose, **params})


def import_reference_to_directory(
    path_or_prefix: str | os.PathLike | Iterable[str | os.PathLike],
    out: str | os.PathLike,
    genome: str | os.PathLike = "hg19",
    first_bin: int | Mapping[str, int] | None = None,
    chroms: Iterable[str] | None = None,
    overwrite: bool = False,
    verbose: bool = True,
):
    """Convert an original Avocado model into an epitensor model directory (``import-reference``).

    Chromosomes are read and written one at a time, so a genome-wide paper-sized
    model (about 14 GB of float32 genome factors for hg19) needs the memory of
    one chromosome, not of the whole genome. The result is an ordinary model
    directory: ``Avocado.load(out)`` reads it. ``import.json`` beside the
    weights records the source files and the options.

    Parameters
    ----------
    path_or_prefix, genome, first_bin, chroms, verbose
        As for :func:`read_reference`.
    out : str or path-like
        Model directory to write.
    overwrite : bool
        Replace an existing ``out``. Default False: refuse it.

    Returns
    -------
    Avocado
        The imported model, its genome factors left on disk (loaded lazily).
    """
    import shutil
    import tempfile

    from epitensor.nn.modeldir import write_axis_file

    out = Path(out)
    if out.exists() and not overwrite:
        raise EpitensorError(f"{out} already exists; choose another --out or pass overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:

        def sink(axis: str, factors: GenomeFactors) -> None:
            write_axis_file(staging, axis, factors.state_dict())

        ref = _read(path_or_prefix, genome, first_bin, chroms, verbose, sink=sink)
        model = _estimator(ref, ref.layout.axis_lengths, {"verbose": verbose})
        model.saved_at(staging)  # save() copies the staged axis files
        model.save(out, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record = {
        "sources": {c: [str(p.resolve()) for p in pair] for c, pair in ref.sources.items()},
        "genome": ref.genome,
        "first_bin": dict(first_bin) if isinstance(first_bin, Mapping) else first_bin,
        "axes": ref.layout.axis_lengths,
    }
    atomic_write_bytes(out / "import.json", (json.dumps(record, indent=1) + "\n").encode())
    return model
