"""Imputed tracks to bigWig / bedGraph, and the latent factors to Zarr, npz and TSV.

Imputation streams the model's layout block by block: for each block of
positions the genome part of the first dense layer is computed once and reused
for every requested track (the first layer is linear in the concatenated
factors), then each track's values are handed to its writer. Memory stays
bounded by one block, whatever the length of a chromosome.

Coordinates are 0-based, half-open; bin ``i`` of a chromosome covers
``[25 i, 25 i + 25)``, clipped to the chromosome's length. Files list the
chromosomes in lexicographic order (``sort -k1,1``, what UCSC's
``bedGraphToBigWig`` expects), and within a chromosome by position.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import queue
import re
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from epitensor._utils import EpitensorError, atomic_directory, progress, resolve_device, warn
from epitensor.genome import Layout, n_bins, parse_region, read_bed
from epitensor.training import torch_threads

__all__ = [
    "FastPredictor",
    "embed",
    "factor_names",
    "impute",
    "missing_tracks",
    "plain_predict",
    "region_factors",
    "track_segments",
]

BIGWIG_SUFFIXES = (".bw", ".bigwig")
BEDGRAPH_SUFFIXES = (".bedgraph", ".bg", ".bdg", ".bedgraph.gz", ".bg.gz", ".bdg.gz")
DEFAULT_BLOCK_SIZE = 16_384
MAX_OPEN_WRITERS = 16


# --------------------------------------------------------------------------------------
# the model: names, devices, fast inference
# --------------------------------------------------------------------------------------


def _load(model):
    """An :class:`~epitensor.avocado.Avocado` from a fitted object or a model directory."""
    if isinstance(model, (str, os.PathLike)):
        from epitensor.avocado import Avocado

        return Avocado.load(model)
    for name in ("module_", "celltypes_", "assays_", "layout_", "chrom_sizes_"):
        if not hasattr(model, name):
            raise EpitensorError(
                f"the model has no {name}: fit it (or load a saved model) before imputing"
            )
    return model


def _index(names: Sequence[str], name: str, kind: str) -> int:
    try:
        return list(names).index(name)
    except ValueError:
        shown = ", ".join(list(names)[:10]) + (", ..." if len(names) > 10 else "")
        raise EpitensorError(
            f"unknown {kind} {name!r}: the model knows {len(names)} ({shown}); "
            f"add it with `epitensor extend`"
        ) from None


def _check_tracks(model, tracks: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    tracks = [(str(c), str(a)) for c, a in tracks]
    if not tracks:
        raise EpitensorError("no tracks to impute: give at least one (cell type, assay) pair")
    seen = set()
    for celltype, assay in tracks:
        _index(model.celltypes_, celltype, "cell type")
        _index(model.assays_, assay, "assay")
        if (celltype, assay) in seen:
            raise EpitensorError(f"track ({celltype}, {assay}) is listed twice")
        seen.add((celltype, assay))
    return tracks


def missing_tracks(model, store) -> list[tuple[str, str]]:
    """Every (cell type, assay) pair the model knows that ``store`` does not hold.

    Parameters
    ----------
    model : Avocado or path
        A fitted model or a model directory.
    store : Store or str
        A store or its path; ``"roadmap-pilot"`` is the bundled sample.

    Returns
    -------
    list of (str, str)
        Pairs in the model's cell type order, then assay order.
    """
    from epitensor.store import open_store

    model = _load(model)
    observed = set(open_store(store).track_names())
    return [(c, a) for c in model.celltypes_ for a in model.assays_ if (c, a) not in observed]


def _genome_table(model, axis: str):
    """The :class:`~epitensor.model.GenomeFactors` of ``axis`` (loaded on demand)."""
    if hasattr(model, "genome_module"):
        return model.genome_module(axis)
    return model.module_.genome[axis]


@contextlib.contextmanager
def _axis_table(model, axis: str):
    """The genome factors of ``axis``; dropped afterwards when this call read them from disk.

    A saved model loads its axes lazily; dropping them again keeps one axis in
    memory at a time over a whole genome (a later call reads it back).
    """
    genome = model.module_.genome
    loaded_before = axis in genome
    table = _genome_table(model, axis)
    try:
        yield table
    finally:
        if not loaded_before and axis in genome:
            del genome[axis]


def _split_first_layer(module) -> torch.Tensor:
    """The genome columns of the first layer's weight, shape ``(n_nodes, n_genome_factors)``."""
    sizes = module.component_sizes
    return module.network[0].weight[:, sizes["celltype"] + sizes["assay"] :]


PRECISIONS = ("fp32", "bf16")


def _head_layers(module, dtype: torch.dtype) -> list:
    """The network after the first linear layer, as ``"relu"`` or ``(weight, bias)`` in ``dtype``."""
    layers = []
    for layer in module.network[1:]:
        if isinstance(layer, torch.nn.ReLU):
            layers.append("relu")
        elif isinstance(layer, torch.nn.Linear):
            layers.append((layer.weight.to(dtype), layer.bias.to(dtype)))
        elif not isinstance(layer, torch.nn.Dropout):  # dropout is the identity at inference
            raise EpitensorError(f"fast inference does not know the layer {layer!r}")
    return layers


def _head_inplace(layers: list, pre: torch.Tensor) -> torch.Tensor:
    """The network after the first layer, reusing ``pre``'s memory for activations.

    Parameters
    ----------
    layers : list
        From :func:`_head_layers`.
    pre : torch.Tensor, shape=(n, n_nodes)
        First-layer pre-activation, in the layers' dtype.

    Returns
    -------
    torch.Tensor, shape=(n,), float32, arcsinh
    """
    x = pre
    for layer in layers:
        x = x.relu_() if layer == "relu" else torch.nn.functional.linear(x, *layer)
    return x.squeeze(-1).float()


class FastPredictor:
    """Predict many tracks over blocks of positions, sharing the genome projection.

    The first dense layer is linear in the concatenated factors, so its
    pre-activation splits into a per-track part (cell type, assay, bias),
    computed once, and a per-position genome part, computed once per block and
    reused for every track. Each track then costs only the rest of the network.

    Parameters
    ----------
    model : Avocado
        A fitted model.
    tracks : sequence of (str, str)
        The (cell type, assay) pairs to predict.
    device : str, optional
        torch device. Default None: the model's ``device`` (None: CUDA if available, else CPU).
    precision : {"fp32", "bf16"}
        Arithmetic of the layers after the first. Default ``"fp32"``: equal to the
        plain forward pass to float tolerance. ``"bf16"`` halves the work of the
        big layers where the hardware has bfloat16 matrix units (recent x86 CPUs,
        GPUs) at an error of about 1e-2 on the arcsinh scale.
    """

    def __init__(
        self,
        model,
        tracks: Sequence[tuple[str, str]],
        device: str | None = None,
        precision: str = "fp32",
    ):
        if precision not in PRECISIONS:
            raise EpitensorError(
                f"invalid precision: got {precision!r}, expected one of {list(PRECISIONS)}"
            )
        self.dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        self.model = model
        self.module = model.module_
        self.tracks = list(tracks)
        self.device = resolve_device(
            device if device is not None else getattr(model, "device", None)
        )
        celltypes = torch.tensor([_index(model.celltypes_, c, "cell type") for c, _ in tracks])
        assays = torch.tensor([_index(model.assays_, a, "assay") for _, a in tracks])
        self._index = (celltypes, assays)
        self._tables = contextlib.ExitStack()
        self._axis: str | None = None
        self._table_of_axis = None

    @contextlib.contextmanager
    def session(self) -> Iterator[FastPredictor]:
        """Borrow the module: eval mode on ``device``; both restored on exit."""
        module = self.module
        was_training = module.training
        self._old_device = next(module.parameters()).device
        module.eval().to(self.device)
        try:
            with torch.inference_mode():
                celltypes, assays = (t.to(self.device) for t in self._index)
                self._track_pre = module.track_projection(celltypes, assays)
                self._w_genome = _split_first_layer(module)
                self._layers = _head_layers(module, self.dtype)
                yield self
        finally:
            self._release()
            module.to(self._old_device).train(was_training)

    def _release(self) -> None:
        if self._table_of_axis is not None:
            self._table_of_axis.to(self._old_device)
        self._tables.close()
        self._axis = self._table_of_axis = None

    def _table(self, axis: str):
        # one axis at a time: moving to the next one releases (or unloads) the last
        if axis != self._axis:
            self._release()
            table = self._tables.enter_context(_axis_table(self.model, axis))
            self._table_of_axis = table.eval().to(self.device)
            self._axis = axis
        return self._table_of_axis

    def genome_projection(self, axis: str, start: int, end: int) -> torch.Tensor:
        """First-layer genome part of positions ``[start, end)``, shape ``(n, n_nodes)``."""
        positions = torch.arange(start, end, device=self.device)
        return self._table(axis)(positions) @ self._w_genome.T

    def predict(self, axis: str, start: int, end: int) -> np.ndarray:
        """Predict every track over axis positions ``[start, end)`` (inside :meth:`session`).

        Returns
        -------
        numpy.ndarray, shape=(n_tracks, end - start), float32, arcsinh
        """
        genome = self.genome_projection(axis, start, end)
        out = np.empty((len(self.tracks), end - start), dtype=np.float32)
        for k in range(len(self.tracks)):
            pre = (genome + self._track_pre[k]).to(self.dtype)  # the sum in fp32, then cast
            out[k] = _head_inplace(self._layers, pre).cpu().numpy()
        return out


def plain_predict(
    model, celltype: str, assay: str, axis: str, start: int, end: int, batch_size: int = 8192
) -> np.ndarray:
    """The textbook forward pass: the full 398-wide input through the whole network.

    The reference :class:`FastPredictor` is checked (and benchmarked) against.

    Parameters
    ----------
    model : Avocado
        A fitted model.
    celltype, assay : str
        The track.
    axis : str
        Genome axis.
    start, end : int
        Axis positions, half-open.
    batch_size : int
        Positions per forward pass. Default 8192.

    Returns
    -------
    numpy.ndarray, shape=(end - start,), float32, arcsinh
    """
    module = model.module_
    c = _index(model.celltypes_, celltype, "cell type")
    a = _index(model.assays_, assay, "assay")
    table = _genome_table(model, axis)
    device = next(module.parameters()).device
    out = np.empty(end - start, dtype=np.float32)
    with torch.inference_mode():
        for lo in range(start, end, batch_size):
            hi = min(lo + batch_size, end)
            positions = torch.arange(lo, hi, device=device)
            n = hi - lo
            features = torch.cat(
                [
                    module.celltype_embedding(torch.full((n,), c, device=device)),
                    module.assay_embedding(torch.full((n,), a, device=device)),
                    table(positions),
                ],
                dim=1,
            )
            out[lo - start : hi - start] = module.network(features).squeeze(1).cpu().numpy()
    return out


# --------------------------------------------------------------------------------------
# where to write: segments of the layout in file order
# --------------------------------------------------------------------------------------


def track_segments(
    layout: Layout,
    chrom_sizes: pd.Series,
    chroms: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The runs of axis positions to export, in file order.

    Parameters
    ----------
    layout : Layout
        The model's layout.
    chrom_sizes : pandas.Series
        Chromosome lengths in bp (bins past a chromosome's end are dropped).
    chroms : sequence of str, optional
        Keep these chromosomes. Default None: every chromosome of the layout.
    regions : sequence of str, optional
        UCSC regions ``chr:start-end`` (0-based, half-open) to export instead of
        whole chromosomes; the bins they overlap are written. Default None.

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom``, ``first_bin`` (chromosome bin of ``axis_start``),
        ``axis``, ``axis_start``, ``axis_end`` (half-open); sorted
        lexicographically by chromosome, then by bin.
    """
    if regions:
        parts = []
        for text in regions:
            chrom, start, end = parse_region(text, chrom_sizes)
            hits = layout.locate(chrom, start, end)
            if hits.empty:
                raise EpitensorError(
                    f"region {text!r} lies outside the model's layout {layout.name!r}; "
                    f"its regions are on {', '.join(natural_chroms(layout)[:8])}"
                )
            parts.append(hits.assign(chrom=chrom))
        table = pd.concat(parts, ignore_index=True)
    else:
        table = layout.regions
        if chroms:
            unknown = [c for c in chroms if c not in set(table.chrom)]
            if unknown:
                raise EpitensorError(
                    f"chromosome {unknown[0]!r} has no positions in the model's layout "
                    f"{layout.name!r}; it covers {', '.join(natural_chroms(layout)[:8])}"
                )
            table = table[table.chrom.isin(list(chroms))]
        table = pd.DataFrame(
            {
                "chrom": table.chrom,
                "first_bin": table.first_bin,
                "axis": table.axis,
                "axis_start": table.offset,
                "axis_end": table.offset + table.n_bins,
            }
        )
    return _clip_and_sort(table, chrom_sizes, layout.resolution)


def _model_segments(model, chroms, regions) -> pd.DataFrame:
    """:func:`track_segments` restricted to the axes the model has genome factors for."""
    segments = track_segments(model.layout_, model.chrom_sizes_, chroms, regions)
    axes = set(getattr(model, "genome_axes_", model.layout_.axis_lengths))
    fitted = segments.axis.isin(axes)
    if not fitted.any():
        raise EpitensorError(
            f"the model has no genome factors for the requested positions (axes "
            f"{sorted(set(segments.axis))}); fit them with fit_genome"
        )
    if not fitted.all():
        skipped = sorted(set(segments.axis[~fitted]))
        if chroms or regions:
            raise EpitensorError(
                f"the model has no genome factors for axes {skipped}; fit them with "
                f"fit_genome or leave those chromosomes out"
            )
        warn(f"skipping axes without genome factors: {skipped}")
    return segments[fitted].reset_index(drop=True)


def natural_chroms(layout: Layout) -> list[str]:
    """Chromosomes of a layout's regions, without repeats, in layout order."""
    return list(dict.fromkeys(layout.regions.chrom))


def _clip_and_sort(table: pd.DataFrame, chrom_sizes: pd.Series, resolution: int) -> pd.DataFrame:
    table = table[["chrom", "first_bin", "axis", "axis_start", "axis_end"]].copy()
    unknown = sorted(set(table.chrom) - set(chrom_sizes.index))
    if unknown:
        raise EpitensorError(
            f"chromosome {unknown[0]!r} is not in the model's chromosome sizes; "
            f"the model's genome does not match its layout"
        )
    last = np.array([n_bins(chrom_sizes[c], resolution) for c in table.chrom], dtype=np.int64)
    length = np.minimum(table.axis_end - table.axis_start, last - table.first_bin)
    table["axis_end"] = table.axis_start + np.maximum(length, 0)
    table = table[table.axis_end > table.axis_start]
    table = table.sort_values(["chrom", "first_bin"], kind="stable", ignore_index=True)
    same = table.chrom.to_numpy()[1:] == table.chrom.to_numpy()[:-1]
    ends = (table.first_bin + table.axis_end - table.axis_start).to_numpy()[:-1]
    overlap = same & (table.first_bin.to_numpy()[1:] < ends)
    if overlap.any():
        row = table.iloc[int(np.argmax(overlap)) + 1]
        raise EpitensorError(
            f"{int(overlap.sum())} requested regions overlap (first at {row.chrom} bin "
            f"{row.first_bin}); merge overlapping regions before exporting"
        )
    return table


def _iter_blocks(segments: pd.DataFrame, block_size: int):
    """Yield ``(chrom, first_bin, axis, start, end)`` blocks of at most ``block_size`` positions."""
    for seg in segments.itertuples(index=False):
        for lo in range(int(seg.axis_start), int(seg.axis_end), block_size):
            hi = min(lo + block_size, int(seg.axis_end))
            yield seg.chrom, int(seg.first_bin) + lo - int(seg.axis_start), seg.axis, lo, hi


# --------------------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------------------


class _Abort(Exception):
    """Tells a bigWig writer thread to stop without finishing the file."""


_STOP = object()
_ABORT = object()


class _BigWigSink:
    """A bigWig file written on a thread, fed block by block through a small queue.

    pybigtools consumes one iterator per file; the thread lets many files be
    fed from one pass over the genome, with at most ``maxsize`` blocks waiting.
    """

    def __init__(self, path: Path, chrom_sizes: dict[str, int], maxsize: int = 4):
        import pybigtools

        self.path = path
        # pybigtools picks the file type from the suffix, so the temporary name ends in .bw
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=".bw", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        writer = pybigtools.open(str(self.tmp), "w")
        self._thread = threading.Thread(
            target=self._run, args=(writer, chrom_sizes), daemon=True, name=f"bigwig-{path.name}"
        )
        self._thread.start()

    def _records(self):
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if item is _ABORT:
                raise _Abort
            chrom, starts, ends, values = item
            yield from zip(repeat(chrom), starts, ends, values)

    def _run(self, writer, chrom_sizes) -> None:
        try:
            writer.write(chrom_sizes, self._records())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            self._error = exc

    def _put(self, item) -> None:
        while True:
            if self._error is not None or not self._thread.is_alive():
                raise EpitensorError(f"writing {self.path} failed: {self._error!r}")
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def write(self, chrom: str, starts: list, ends: list, values: np.ndarray) -> None:
        """Queue one block of bins (bp coordinates) and their values."""
        self._put((chrom, starts, ends, values.tolist()))

    def close(self) -> None:
        """Finish the file and move it into place."""
        self._put(_STOP)
        self._thread.join()
        if self._error is not None:
            self.abort()
            raise EpitensorError(f"writing {self.path} failed: {self._error}")
        _publish(self.tmp, self.path)

    def abort(self) -> None:
        """Stop the writer and remove the partial file."""
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(_ABORT, timeout=5)
            self._thread.join(timeout=30)
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


class _BedGraphSink:
    """A bedGraph file (gzip when the name ends in ``.gz``), values with 7 significant digits."""

    def __init__(self, path: Path, name: str):
        self.path = path
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        opener = gzip.open if path.name.endswith(".gz") else open
        self._handle = opener(self.tmp, "wt")
        self._handle.write(f'track type=bedGraph name="{name}"\n')

    def write(self, chrom: str, starts: list, ends: list, values: np.ndarray) -> None:
        """Append one block of bins (bp coordinates) and their values."""
        self._handle.write(
            "".join(
                f"{chrom}\t{s}\t{e}\t{v:.7g}\n" for s, e, v in zip(starts, ends, values.tolist())
            )
        )

    def close(self) -> None:
        """Finish the file and move it into place."""
        self._handle.close()
        _publish(self.tmp, self.path)

    def abort(self) -> None:
        """Remove the partial file."""
        self._handle.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _publish(tmp: Path, path: Path) -> None:
    """Move a finished temporary file into place with the usual permissions."""
    # mkstemp creates files readable by their owner only; give them the umask's mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in ("bigwig", "bedgraph"):
            raise EpitensorError(
                f"invalid fmt: got {fmt!r}, expected one of ['bigwig', 'bedgraph']"
            )
        return fmt
    name = path.name.lower()
    return "bedgraph" if name.endswith(BEDGRAPH_SUFFIXES) else "bigwig"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


def _output_paths(
    tracks: list[tuple[str, str]], out: Path, fmt: str | None, overwrite: bool
) -> tuple[list[Path], str, Path]:
    """Files to write (one per track), the format, and where the parameters JSON goes."""
    name = out.name.lower()
    is_file = name.endswith(BIGWIG_SUFFIXES + BEDGRAPH_SUFFIXES)
    fmt = _format_of(out, fmt) if is_file else (fmt or "bigwig")
    _format_of(out, fmt)
    if is_file and len(tracks) == 1:
        paths, params = [out], out.with_name(out.name + ".json")
    elif is_file:
        raise EpitensorError(
            f"--out {out} names one file but {len(tracks)} tracks were requested; "
            f"give a folder instead"
        )
    else:
        ext = ".bigWig" if fmt == "bigwig" else ".bedGraph"
        paths = [out / f"{_safe(c)}.{_safe(a)}{ext}" for c, a in tracks]
        params = out / "impute.json"
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise EpitensorError(
            f"{existing[0]} already exists ({len(existing)} of the outputs do); "
            f"choose another --out or pass overwrite"
        )
    return paths, fmt, params


def _bin_edges(first_bin: int, n: int, resolution: int, chrom_length: int) -> tuple[list, list]:
    starts = np.arange(first_bin, first_bin + n, dtype=np.int64) * resolution
    ends = np.minimum(starts + resolution, chrom_length)
    return starts.tolist(), ends.tolist()


# --------------------------------------------------------------------------------------
# imputation
# --------------------------------------------------------------------------------------


def impute(
    model,
    tracks: Sequence[tuple[str, str]],
    out: str | os.PathLike,
    chroms: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
    arcsinh: bool = False,
    fmt: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    device: str | None = None,
    precision: str = "fp32",
    overwrite: bool = False,
    missing_in=None,
    verbose: bool = True,
) -> list[Path]:
    """Impute tracks over the model's genome and write them as bigWig or bedGraph.

    Every 25-bp bin of the model's layout is written at its genomic coordinates
    (for a region layout such as the pilot store, each region's bins), with the
    model's chromosome sizes in the header. All tracks are computed in one pass:
    the genome part of the first layer is computed once per block of positions.

    Parameters
    ----------
    model : Avocado or path
        A fitted model or a model directory.
    tracks : sequence of (str, str)
        (cell type, assay) pairs the model knows.
    out : str or path-like
        A ``.bw`` / ``.bigWig`` / ``.bedGraph`` (``.bg``, ``.gz``) file for one
        track, or a folder receiving ``CELLTYPE.ASSAY.bigWig`` (or
        ``.bedGraph``) per track. A JSON of the parameters is written beside.
    chroms : sequence of str, optional
        Only these chromosomes. Default None: all in the layout.
    regions : sequence of str, optional
        Only the bins overlapping these ``chr:start-end`` regions (0-based,
        half-open). Default None.
    arcsinh : bool
        Write the model's arcsinh scale. Default False: the -log10 p scale
        (``sinh`` of the model output).
    fmt : {"bigwig", "bedgraph"}, optional
        Default None: from the file name (bigWig for a folder).
    block_size : int
        Positions per block. Default 16384 (about 3 x 128 MiB of activations at
        paper size).
    device : str, optional
        torch device. Default None: the model's ``device`` setting (None: best available).
    precision : {"fp32", "bf16"}
        Arithmetic after the first layer (see :class:`FastPredictor`). Default
        ``"fp32"``.
    overwrite : bool
        Replace existing files. Default False: refuse them.
    missing_in : Store or str, optional
        Also impute every pair the model knows that this store does not hold
        (see :func:`missing_tracks`). Default None.
    verbose : bool
        Show a progress bar. Default True.

    Returns
    -------
    list of pathlib.Path
        The written files, in the order of ``tracks``.
    """
    model = _load(model)
    tracks = list(tracks) + ([] if missing_in is None else missing_tracks(model, missing_in))
    tracks = _check_tracks(model, tracks)
    if int(block_size) <= 0:
        raise EpitensorError(
            f"block_size must be a positive integer; got block_size={block_size!r}"
        )
    if precision not in PRECISIONS:
        raise EpitensorError(
            f"invalid precision: got {precision!r}, expected one of {list(PRECISIONS)}"
        )
    out = Path(out)
    paths, fmt, params_path = _output_paths(tracks, out, fmt, overwrite)
    segments = _model_segments(model, chroms, regions)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    chrom_sizes = {c: int(model.chrom_sizes_[c]) for c in sorted(model.chrom_sizes_.index)}
    for lo in range(0, len(tracks), MAX_OPEN_WRITERS):
        group = slice(lo, lo + MAX_OPEN_WRITERS)
        _impute_group(
            model, tracks[group], paths[group], fmt, segments, chrom_sizes, arcsinh,
            int(block_size), {"device": device, "precision": precision}, verbose,
        )  # fmt: skip
    _write_json(
        params_path,
        {
            "tracks": [list(t) for t in tracks],
            "files": [str(p) for p in paths],
            "scale": "arcsinh" if arcsinh else "-log10 p",
            "precision": precision,
            "format": fmt,
            "chroms": list(chroms) if chroms else None,
            "regions": list(regions) if regions else None,
            "genome": getattr(model, "genome_", None),
            "resolution": int(model.layout_.resolution),
            "n_bins": int((segments.axis_end - segments.axis_start).sum()),
        },
    )
    return paths


def _impute_group(
    model, tracks, paths, fmt, segments, chrom_sizes, arcsinh, block_size, predictor_args, verbose
) -> None:
    """Impute up to MAX_OPEN_WRITERS tracks in one pass over ``segments``."""
    res = int(model.layout_.resolution)
    sinks = []
    try:
        for (celltype, assay), path in zip(tracks, paths):
            if fmt == "bigwig":
                sinks.append(_BigWigSink(path, chrom_sizes))
            else:
                sinks.append(_BedGraphSink(path, f"{celltype} {assay}"))
        total = int((segments.axis_end - segments.axis_start).sum())
        bar = progress(
            total=total, desc=f"impute {len(tracks)} track(s)", verbose=verbose, unit="bin"
        )
        predictor = FastPredictor(model, tracks, **predictor_args)
        with bar, predictor.session(), torch_threads(getattr(model, "n_threads", None)):
            for chrom, first_bin, axis, lo, hi in _iter_blocks(segments, block_size):
                values = predictor.predict(axis, lo, hi)
                if not arcsinh:
                    values = np.sinh(values)
                starts, ends = _bin_edges(first_bin, hi - lo, res, chrom_sizes[chrom])
                for sink, row in zip(sinks, values):
                    sink.write(chrom, starts, ends, row)
                bar.update(hi - lo)
        for sink in sinks:
            sink.close()
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise


def _write_json(path: Path, data: dict) -> None:
    from epitensor import __version__
    from epitensor._utils import atomic_write_bytes

    data = {"epitensor": __version__, **data}
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


# --------------------------------------------------------------------------------------
# the latent representation
# --------------------------------------------------------------------------------------


def factor_names(module) -> list[str]:
    """Names of the genome factors of one position: ``genome_25bp_0`` ... ``genome_5kbp_44``."""
    sizes = module.component_sizes
    return [f"{part}_{i}" for part in list(sizes)[2:] for i in range(sizes[part])]


def _factor_table(weight: torch.Tensor, names: Sequence[str], prefix: str) -> pd.DataFrame:
    values = weight.detach().cpu().numpy().astype(np.float32)
    columns = [f"{prefix}_{i}" for i in range(values.shape[1])]
    return pd.DataFrame(values, index=pd.Index(list(names), name=prefix), columns=columns)


def _genome_block(table, start: int, end: int) -> np.ndarray:
    positions = torch.arange(start, end, device=table.emb_25bp.weight.device)
    return table(positions).cpu().numpy().astype(np.float32, copy=False)


def embed(
    model,
    out: str | os.PathLike,
    regions: str | os.PathLike | pd.DataFrame | None = None,
    window: int | None = None,
    axes: Sequence[str] | None = None,
    fmt: str = "zarr",
    block_size: int = 65_536,
    overwrite: bool = False,
    verbose: bool = True,
) -> Path:
    """Write the latent representation: genome, cell type and assay factors.

    The folder ``out`` receives ``celltype_factors.tsv`` and
    ``assay_factors.tsv`` (one named row per cell type / assay),
    ``layout.tsv`` (where each axis position lies in the genome) and either

    * without ``regions``: ``genome_factors.zarr`` (one array per axis, shape
      ``(n_positions, 110)``, row ``k`` = axis position ``k``) or
      ``genome_factors.npz`` (one member per axis), written block by block; or
    * with ``regions``: ``region_factors.tsv``, one row per BED region (see
      :func:`region_factors`).

    Parameters
    ----------
    model : Avocado or path
        A fitted model or a model directory.
    out : str or path-like
        New folder (written atomically).
    regions : path or pandas.DataFrame, optional
        BED file (or table with ``chrom, start, end``). Default None: every position.
    window : int, optional
        With ``regions``: the number of adjacent 250-bp bins around each
        region's midpoint. Default None: the mean over each region.
    axes : sequence of str, optional
        Axes to write (without ``regions``). Default None: every axis with
        genome factors.
    fmt : {"zarr", "npz"}
        Container of the per-position factors. Default ``"zarr"``.
    block_size : int
        Positions per block. Default 65536.
    overwrite : bool
        Replace an existing folder. Default False.
    verbose : bool
        Show a progress bar. Default True.

    Returns
    -------
    pathlib.Path
        The folder.
    """
    model = _load(model)
    if fmt not in ("zarr", "npz"):
        raise EpitensorError(f"invalid fmt: got {fmt!r}, expected one of ['zarr', 'npz']")
    if window is not None and regions is None:
        raise EpitensorError("window needs regions: give a BED of points (e.g. TSSs)")
    layout = model.layout_
    fitted = list(getattr(model, "genome_axes_", layout.axis_lengths))
    axes = fitted if axes is None else list(axes)
    unknown = [a for a in axes if a not in fitted]
    if unknown:
        raise EpitensorError(
            f"the model has no genome factors for axis {unknown[0]!r}; it has {fitted}"
        )
    if regions is not None:
        bed = regions if isinstance(regions, pd.DataFrame) else read_bed(regions)
        table = region_factors(model, bed, window=window, verbose=verbose)
    module = model.module_
    with atomic_directory(out, overwrite=overwrite) as tmp:
        _factor_table(module.celltype_embedding.weight, model.celltypes_, "celltype").to_csv(
            tmp / "celltype_factors.tsv", sep="\t", float_format="%.7g"
        )
        _factor_table(module.assay_embedding.weight, model.assays_, "assay").to_csv(
            tmp / "assay_factors.tsv", sep="\t", float_format="%.7g"
        )
        layout.regions.to_csv(tmp / "layout.tsv", sep="\t", index=False)
        if regions is not None:
            table.to_csv(tmp / "region_factors.tsv", sep="\t", index=False, float_format="%.7g")
        elif fmt == "zarr":
            _write_zarr(model, tmp / "genome_factors.zarr", axes, block_size, verbose)
        else:
            _write_npz(model, tmp / "genome_factors.npz", axes, block_size, verbose)
        _write_json(
            tmp / "embed.json",
            {
                "columns": factor_names(module),
                "axes": axes if regions is None else None,
                "regions": None
                if regions is None or isinstance(regions, pd.DataFrame)
                else str(regions),
                "window": window,
                "format": fmt if regions is None else "tsv",
                "genome": getattr(model, "genome_", None),
                "resolution": int(layout.resolution),
                "layout": layout.to_dict(),
            },
        )
    return Path(out)


def _position_blocks(model, axes, block_size, verbose):
    """Yield ``(axis, start, end, factors)`` blocks of every axis; factors ``(n, 110)``."""
    total = sum(model.layout_.axis_lengths[a] for a in axes)
    with progress(total=total, desc="genome factors", verbose=verbose, unit="bin") as bar:
        with torch.inference_mode():
            for axis in axes:
                length = model.layout_.axis_lengths[axis]
                with _axis_table(model, axis) as table:
                    for lo in range(0, length, block_size):
                        hi = min(lo + block_size, length)
                        yield axis, lo, hi, _genome_block(table, lo, hi)
                        bar.update(hi - lo)


def _write_zarr(model, path: Path, axes, block_size: int, verbose: bool) -> None:
    import zarr

    group = zarr.open_group(store=str(path), mode="w")
    names = factor_names(model.module_)
    group.attrs.update({"columns": names, "resolution": int(model.layout_.resolution)})
    arrays = {}
    for axis in axes:
        arrays[axis] = group.create_array(
            axis,
            shape=(model.layout_.axis_lengths[axis], len(names)),
            chunks=(min(block_size, model.layout_.axis_lengths[axis]), len(names)),
            dtype="float32",
        )
    for axis, lo, hi, block in _position_blocks(model, axes, block_size, verbose):
        arrays[axis][lo:hi] = block


def _write_npz(model, path: Path, axes, block_size: int, verbose: bool) -> None:
    n_features = len(factor_names(model.module_))
    handles = {}
    with zipfile.ZipFile(path, "w", allowZip64=True) as archive:
        # numpy's own savez needs the whole array in memory: stream each member instead.
        for axis, lo, _hi, block in _position_blocks(model, axes, block_size, verbose):
            if lo == 0:
                for handle in handles.values():
                    handle.close()
                handle = archive.open(f"{axis}.npy", "w", force_zip64=True)
                header = {
                    "descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                    "fortran_order": False,
                    "shape": (model.layout_.axis_lengths[axis], n_features),
                }
                np.lib.format.write_array_header_1_0(handle, header)
                handles = {axis: handle}
            handles[axis].write(np.ascontiguousarray(block, dtype="<f4").tobytes())
        for handle in handles.values():
            handle.close()


def _locate_points(layout: Layout, bed: pd.DataFrame) -> pd.DataFrame:
    """Axis, position and covering region of each BED midpoint (``axis`` None when outside).

    Returns
    -------
    pandas.DataFrame
        One row per BED row: ``axis``, ``position`` and ``lo, hi`` (the axis range
        of the region holding the midpoint's bin); -1 when outside.
    """
    mid = (bed.start.to_numpy() + bed.end.to_numpy() - 1) // 2 // layout.resolution
    mid *= layout.resolution
    points = pd.DataFrame({"chrom": bed.chrom.to_numpy(), "start": mid, "end": mid + 1})
    runs = layout.locate_many(points)
    at, region = runs.interval.to_numpy(), layout.regions.iloc[runs.region]
    axis = np.full(len(bed), None, dtype=object)
    position, lo, hi = np.full((3, len(bed)), -1, dtype=np.int64)
    axis[at], position[at] = runs.axis.to_numpy(), runs.axis_start.to_numpy()
    lo[at] = region.offset.to_numpy()
    hi[at] = lo[at] + region.n_bins.to_numpy()
    return pd.DataFrame({"axis": axis, "position": position, "lo": lo, "hi": hi})


def region_factors(
    model,
    regions: pd.DataFrame | str | os.PathLike,
    window: int | None = None,
    max_positions: int = 1 << 20,
    verbose: bool = True,
) -> pd.DataFrame:
    """Genome factors summarised per region (one row per BED interval).

    Parameters
    ----------
    model : Avocado or path
        A fitted model or a model directory.
    regions : pandas.DataFrame or path
        BED intervals (``chrom, start, end``, optional ``name`` and ``strand``),
        0-based half-open.
    window : int, optional
        Default None: the mean of the 110 factors over the bins each region
        overlaps. With ``window = w``: ``w`` adjacent 250-bp bins of the model's
        250-bp grid around each region's midpoint (``w // 2`` before the bin
        holding it), giving per bin the mean of its ten 25-bp factors and its
        250-bp factor, then the mean 5-kbp factor over the span: ``65 w + 45``
        features (565 for ``w = 8``, the paper's promoter example). On the
        ``-`` strand the bins are listed from the 3' side first, so bin 0 is
        always the most upstream.
    max_positions : int
        Positions gathered at a time. Default 1,048,576.
    verbose : bool
        Show a progress bar. Default True.

    Returns
    -------
    pandas.DataFrame
        ``chrom, start, end, name`` then the features; rows of regions outside
        the layout (or whose window leaves the layout region holding the
        midpoint) are NaN, with a warning giving their number.
    """
    model = _load(model)
    bed = regions if isinstance(regions, pd.DataFrame) else read_bed(regions)
    if bed.empty:
        raise EpitensorError("no regions given: the BED file is empty")
    bed = bed.reset_index(drop=True)
    if window is None:
        features, columns = _region_means(model, bed, max_positions, verbose)
    else:
        if int(window) <= 0:
            raise EpitensorError(f"window must be a positive integer; got window={window!r}")
        features, columns = _region_windows(model, bed, int(window), max_positions, verbose)
    missing = int(np.isnan(features).any(axis=1).sum())
    if missing:
        warn(
            f"{missing} of {len(bed)} regions lie (partly, for windows) outside the model's "
            f"layout {model.layout_.name!r}; their rows are NaN"
        )
    keep = [c for c in ("chrom", "start", "end", "name", "strand") if c in bed]
    return pd.concat([bed[keep], pd.DataFrame(features, columns=columns)], axis=1)


def _region_means(model, bed, max_positions, verbose):
    names = factor_names(model.module_)
    sums = torch.zeros(len(bed), len(names), dtype=torch.float64)
    counts = np.zeros(len(bed), dtype=np.int64)
    # In layout order, as the per-region loop this replaced gave them (same float sums).
    runs = model.layout_.locate_many(bed).sort_values(["region", "interval"], kind="stable")
    runs = runs.rename(columns={"axis_start": "start", "axis_end": "end"})
    total = int((runs.end - runs.start).sum())
    with progress(total=total, desc="region factors", verbose=verbose, unit="bin") as bar:
        with torch.inference_mode():
            for axis, group in runs.groupby("axis", sort=False):
                lengths = (group.end - group.start).to_numpy()
                batches = np.cumsum(lengths) // max_positions
                with _axis_table(model, axis) as table:
                    device = table.emb_25bp.weight.device
                    for _, part in group.groupby(batches, sort=False):
                        n = (part.end - part.start).to_numpy()
                        ids = np.repeat(part.interval.to_numpy(), n)
                        starts = np.repeat(part.start.to_numpy() - np.cumsum(n) + n, n)
                        positions = torch.from_numpy(np.arange(len(ids)) + starts).to(device)
                        sums.index_add_(0, torch.from_numpy(ids), table(positions).double().cpu())
                        counts += np.bincount(ids, minlength=len(bed))
                        bar.update(len(ids))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums.numpy() / counts[:, None]).astype(np.float32)
    return means, names


def _region_windows(model, bed, window, max_positions, verbose):
    module = model.module_
    n25, n250, n5k = module.genome_sizes
    columns = [f"w{j}_genome_25bp_{i}" for j in range(window) for i in range(n25)]
    columns += [f"w{j}_genome_250bp_{i}" for j in range(window) for i in range(n250)]
    columns += [f"genome_5kbp_{i}" for i in range(n5k)]
    out = np.full((len(bed), len(columns)), np.nan, dtype=np.float32)
    points = _locate_points(model.layout_, bed)
    first = (points.position.to_numpy() // 10 - window // 2) * 10
    inside = (
        points.axis.notna().to_numpy() & (first >= points.lo) & (first + 10 * window <= points.hi)
    )
    minus = bed.strand.to_numpy() == "-" if "strand" in bed else np.zeros(len(bed), dtype=bool)
    step = max(1, max_positions // (10 * window))
    with torch.inference_mode():
        for axis in points.axis[inside].unique():
            rows = np.flatnonzero(inside & (points.axis == axis).to_numpy())
            with _axis_table(model, axis) as table:
                for lo in progress(range(0, len(rows), step), desc="windows", verbose=verbose):
                    chunk = rows[lo : lo + step]
                    positions = first[chunk, None] + np.arange(10 * window)[None, :]
                    out[chunk] = _window_features(table, positions, window, minus[chunk])
    return out, columns


def _window_features(table, positions: np.ndarray, window: int, minus: np.ndarray) -> np.ndarray:
    """Window features of regions whose ``10 * window`` axis positions are the rows of ``positions``.

    Returns
    -------
    numpy.ndarray, shape=(n_regions, window * (n_25bp + n_250bp) + n_5kbp), float32
    """
    device = table.emb_25bp.weight.device
    n = positions.shape[0]
    f25, f250, f5k = table.parts(torch.from_numpy(positions.ravel()).to(device))
    f25 = f25.reshape(n, window, 10, -1).mean(2)
    f250 = f250.reshape(n, window, 10, -1)[:, :, 0]
    f5k = f5k.reshape(n, 10 * window, -1).mean(1)
    flip = torch.from_numpy(minus).to(device)[:, None, None]
    f25 = torch.where(flip, f25.flip(1), f25)
    f250 = torch.where(flip, f250.flip(1), f250)
    return torch.cat([f25.flatten(1), f250.flatten(1), f5k], dim=1).cpu().numpy()
