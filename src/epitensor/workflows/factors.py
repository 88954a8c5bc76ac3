"""The latent representation: genome factors per position or per region, cell type and assay factors.

Written to Zarr, npz and TSV by :func:`embed`; :func:`region_factors` gives one
feature row per BED region (for downstream models).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from epitensor._utils import EpitensorError, atomic_directory, progress, warn
from epitensor.estimators.avocado import axis_table, load_model
from epitensor.genome.coordinates import Layout, read_bed
from epitensor.io.writers import write_json

__all__ = ["embed", "factor_names", "region_factors"]


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

    Examples
    --------
    >>> import epitensor as et
    >>> path = et.embed("model/", "factors.zarr")  # genome factors of every position
    >>> path = et.embed("model/", "promoters.npz", regions="promoters.bed", fmt="npz")
    """
    model = load_model(model)
    if fmt not in ("zarr", "npz"):
        raise EpitensorError(f"invalid fmt: got {fmt!r}, expected one of ['zarr', 'npz']")
    if window is not None and regions is None:
        raise EpitensorError("window needs regions: give a BED of points (e.g. TSSs)")
    layout = model.layout_
    fitted = list(model.genome_axes_)
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
        write_json(
            tmp / "embed.json",
            {
                "columns": factor_names(module),
                "axes": axes if regions is None else None,
                "regions": None
                if regions is None or isinstance(regions, pd.DataFrame)
                else str(regions),
                "window": window,
                "format": fmt if regions is None else "tsv",
                "genome": model.genome_,
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
                with axis_table(model, axis) as table:
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
    model = load_model(model)
    bed = regions if isinstance(regions, pd.DataFrame) else read_bed(regions)
    if bed.empty:
        raise EpitensorError("no regions given: the BED file is empty")
    bed = bed.reset_index(drop=True)
    if window is None:
        features, columns = _region_means(model, bed, max_positions, verbose)
    else:
        _check_window(window, len(bed), model.module_.genome_sizes)
        features, columns = _region_windows(model, bed, int(window), max_positions, verbose)
    missing = int(np.isnan(features).any(axis=1).sum())
    if missing:
        warn(
            f"{missing} of {len(bed)} regions lie (partly, for windows) outside the model's "
            f"layout {model.layout_.name!r}; their rows are NaN"
        )
    keep = [c for c in ("chrom", "start", "end", "name", "strand") if c in bed]
    return pd.concat([bed[keep], pd.DataFrame(features, columns=columns)], axis=1)


# Longest window, in 250-bp bins (100 kb): 100,000 bins asked for a 2 x 5,000,049 table
# and 6 GB of memory (trial H4); the paper's promoter example uses 8.
MAX_WINDOW = 400
MAX_TABLE = 1 << 30  # largest feature table, in float32 values (4 GiB)


def _check_window(window, n_regions: int, genome_sizes) -> None:
    """Refuse a window that is not a positive integer, or too long for memory."""
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window <= 0:
        raise EpitensorError(f"window must be a positive integer; got window={window!r}")
    if window > MAX_WINDOW:
        raise EpitensorError(
            f"window must be at most {MAX_WINDOW} 250-bp bins ({MAX_WINDOW * 250 // 1000} kb); "
            f"got window={window!r}: use a shorter window"
        )
    n25, n250, n5k = genome_sizes
    size = n_regions * (window * (n25 + n250) + n5k)
    if size > MAX_TABLE:
        raise EpitensorError(
            f"window={window} over {n_regions:,} regions makes a table of {size:,} values "
            f"(more than {MAX_TABLE:,}, {MAX_TABLE * 4 >> 30} GiB); use a shorter window or "
            f"split the regions"
        )


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
                with axis_table(model, axis) as table:
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
            with axis_table(model, axis) as table:
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
