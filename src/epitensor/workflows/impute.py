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
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from epitensor._utils import (
    EpitensorError,
    EpitensorWarning,
    output_lock,
    resolve_device,
    warn,
)
from epitensor.estimators.avocado import axis_table, genome_table, load_model
from epitensor.genome.coordinates import Layout, n_bins, parse_region
from epitensor.io.names import parse_track
from epitensor.io.writers import (
    BedGraphSink,
    BigWigSink,
    EncoderThread,
    bin_edges,
    completed,
    output_paths,
    remove_stale_temporaries,
    track_file_stems,
    write_json,
)
from epitensor.nn.inference import PRECISIONS, Predictor
from epitensor.parallel import check_ray, iter_tasks, task_threads
from epitensor.workflows.factors import embed, factor_names, region_factors
from epitensor.workflows.options import (
    AUTO_ENSEMBLE,
    DEFAULT_BLOCK_SIZE,
    MAX_OPEN_WRITERS,
    ImputeOptions,
)

__all__ = [
    "AUTO_ENSEMBLE",
    "DEFAULT_BLOCK_SIZE",
    "FastPredictor",
    "ImputeOptions",
    "default_imputer",
    "load_model",
    "embed",
    "factor_names",
    "impute",
    "impute_blocks",
    "impute_fingerprints",
    "missing_tracks",
    "plain_predict",
    "region_factors",
    "track_file_stems",
    "track_segments",
]

MAX_OPEN_FILES = 4 * MAX_OPEN_WRITERS
"""Files an imputation writes at once at most: with prediction intervals a track has
``1 + 2 x levels`` files, so a track batch is cut to keep them under this (a track's files
are always written together)."""

# --------------------------------------------------------------------------------------
# the model: names, devices, fast inference
# --------------------------------------------------------------------------------------


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
    tracks = [parse_track(t) for t in tracks]
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
    from epitensor.store.registry import open_store

    model = load_model(model)
    observed = set(open_store(store).track_names())
    return [(c, a) for c in model.celltypes_ for a in model.assays_ if (c, a) not in observed]


class FastPredictor(Predictor):
    """The :class:`~epitensor.nn.inference.Predictor` of named tracks of a fitted model.

    Parameters
    ----------
    model : Avocado
        A fitted model (a saved model's axes are read on first use and freed
        after the session).
    tracks : sequence of (str, str)
        The (cell type, assay) pairs to predict.
    device : str, optional
        torch device. Default None: the model's ``device`` (None: CUDA if available, else CPU).
    precision : {"fp32", "bf16"}
        See :class:`~epitensor.nn.inference.Predictor`. Default ``"fp32"``.
    """

    def __init__(
        self,
        model,
        tracks: Sequence[tuple[str, str]],
        device: str | None = None,
        precision: str = "fp32",
    ):
        self.model = model
        self.tracks = list(tracks)
        celltypes = torch.tensor([_index(model.celltypes_, c, "cell type") for c, _ in tracks])
        assays = torch.tensor([_index(model.assays_, a, "assay") for _, a in tracks])
        super().__init__(
            model.module_,
            celltypes,
            assays,
            device=device if device is not None else model.device,
            precision=precision,
            genome=lambda axis: axis_table(model, axis),
        )


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
    table = genome_table(model, axis)
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
            net = module.network(features).squeeze(1)
            assays = torch.full((n,), a, device=device)
            out[lo - start : hi - start] = module.with_average(net, table, assays, positions).cpu()
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
    axes = set(model.genome_axes_)
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
# imputation
# --------------------------------------------------------------------------------------


def impute(
    model,
    tracks: Sequence[tuple[str, str]],
    out: str | os.PathLike,
    *,
    chroms: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
    missing_in=None,
    options: ImputeOptions | None = None,
    **overrides,
) -> list[Path]:
    """Impute tracks over the model's genome and write them as bigWig or bedGraph.

    Every 25-bp bin of the model's layout is written at its genomic coordinates
    (for a region layout such as the pilot store, each region's bins), with the
    model's chromosome sizes in the header. Tracks are cut into batches of
    ``track_batch``; each batch is one task per chromosome, run in this process
    (streamed block by block) or as Ray tasks (each returning its chromosome),
    and this process writes the files in file order. Within a task the genome
    part of the first layer is computed once per block of positions and reused
    for every track of the batch. Every task runs under one torch thread count
    (see :func:`epitensor.parallel.task_threads`), so the files are the
    same bytes wherever the tasks ran.

    The arguments say what to impute; how (scale, format, precision, blocks,
    device, threads, Ray, the ensemble, overwriting, progress) is an
    :class:`~epitensor.workflows.options.ImputeOptions`, given whole as
    ``options`` or field by field as keywords (``arcsinh=True``), or both (the
    keywords win). ``epitensor impute`` builds the same object, so both share
    its defaults.

    Parameters
    ----------
    model : Avocado or path
        A fitted model or a model directory (on Ray each task then loads only
        the genome factors of its chromosome; the directory must be readable
        by every worker).
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
    missing_in : Store or str, optional
        Also impute every pair the model knows that this store does not hold
        (see :func:`missing_tracks`). Default None.
    options : ImputeOptions, optional
        How to impute. Default None: ``ImputeOptions()``.
    **overrides
        Fields of :class:`~epitensor.workflows.options.ImputeOptions` replacing
        those of ``options`` (``arcsinh``, ``fmt``, ``precision``,
        ``overwrite``, ``verbose``, ``block_size``, ``track_batch``,
        ``device``, ``n_threads``, ``ray_address``, ``num_gpus``,
        ``max_retries``, ``window``, ``trees_store``, ``rule``,
        ``allow_changed_store``, ``interval``); any other name is refused.
        ``interval=0.9`` (or several levels) also writes each track's bounds
        beside it (:func:`~epitensor.estimators.intervals.interval_path`).

    Returns
    -------
    list of pathlib.Path
        The files (written now or finished before), in the order of ``tracks``;
        the bounds of an interval lie beside each
        (:func:`~epitensor.estimators.intervals.interval_path`).

    Raises
    ------
    EpitensorError
        On an unknown option, a bad option value, a track or region the model
        does not know, or an existing file this imputation may not keep.
    TaskFailure
        When a chromosome failed on Ray after its retries; no partial file is left.

    Examples
    --------
    >>> import epitensor as et
    >>> from epitensor.workflows.options import ImputeOptions
    >>> track = ("E003", "H3K4me3")
    >>> et.impute("model", [track], "E003.H3K4me3.bw", chroms=["chr21"])  # doctest: +SKIP
    >>> et.impute("model", [track], "out", arcsinh=True, fmt="bedgraph")  # doctest: +SKIP
    >>> options = ImputeOptions(precision="bf16", track_batch=32)
    >>> et.impute("model", [track], "out", options=options, verbose=False)  # doctest: +SKIP
    >>> et.impute("model", [track], "out", interval=(0.8, 0.9))  # doctest: +SKIP
    """
    from epitensor.estimators.intervals import calibration_for, check_levels

    opts = ImputeOptions.resolve(options, **overrides)
    source = str(model) if isinstance(model, str | os.PathLike) else None
    model = load_model(model)
    tracks = list(tracks) + ([] if missing_in is None else missing_tracks(model, missing_in))
    tracks = _check_tracks(model, tracks)
    track_batch = MAX_OPEN_WRITERS if opts.track_batch is None else opts.track_batch
    block_size = DEFAULT_BLOCK_SIZE if opts.block_size is None else opts.block_size
    for name, value in (("block_size", block_size), ("track_batch", track_batch)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise EpitensorError(f"{name} must be a positive integer; got {name}={value!r}")
    if opts.precision not in PRECISIONS:
        raise EpitensorError(
            f"invalid precision: got {opts.precision!r}, expected one of {list(PRECISIONS)}"
        )
    threads = task_threads(model.n_threads if opts.n_threads is None else opts.n_threads)
    segments = _model_segments(model, chroms, regions)
    axes = list(dict.fromkeys(segments.axis))
    levels = check_levels(opts.interval)
    ensemble = _ensemble(model, opts.trees_store, opts.rule, opts.ray_address, opts.verbose, axes,
                         opts.allow_changed_store)  # fmt: skip
    if levels and ensemble is None:
        raise EpitensorError(
            "prediction intervals are calibrated for the ensemble, which this imputation lacks; "
            "drop --model-only, or give the model's training compendium with --trees STORE"
        )
    calibration = calibration_for(ensemble, source, opts.verbose) if levels else None
    if opts.ray_address is None:  # on Ray the workers' devices count, not this machine's
        resolve_device(opts.device if opts.device is not None else model.device)
    out = Path(out)
    paths, fmt, params_path = output_paths(tracks, out, opts.fmt)
    check_ray(opts.ray_address, opts.verbose)
    # what every task computes with, resolved here so that every worker uses the same values;
    # the ensemble travels on its own (trees_store may be a store or an Ensemble)
    task_options = replace(
        opts,
        fmt=fmt,
        block_size=int(block_size),
        track_batch=int(track_batch),
        n_threads=threads,
        trees_store=None,
        rule=None,
        interval=tuple(levels),
    )
    executor = {
        "ray_address": opts.ray_address,
        "num_gpus": opts.num_gpus,
        "num_cpus": threads,
        "verbose": opts.verbose,
    }
    for name in ("max_retries", "window"):  # None: iter_tasks' own default
        if getattr(opts, name) is not None:
            executor[name] = getattr(opts, name)
    job = _ImputeJob(
        model=model, segments=segments, options=task_options,
        chrom_sizes={c: int(model.chrom_sizes_[c]) for c in sorted(model.chrom_sizes_.index)},
        shared={"model": source if opts.ray_address is not None and source else model,
                "segments": segments, "options": task_options, "ensemble": ensemble,
                "calibration": calibration},
        executor=executor,
    )  # fmt: skip
    prints = impute_fingerprints(source, model, tracks, segments, opts.arcsinh, opts.precision, fmt)
    if ensemble is not None:  # a file of the model alone is not one of the ensemble
        prints = [p if p is None else {**p, "ensemble": ensemble.fingerprint()} for p in prints]
    files, file_prints = _with_intervals(paths, prints, levels, calibration)
    with output_lock(out):  # reentrant under the CLI's lock; no other writer of these files
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        flat = [f for group in files for f in group]
        remove_stale_temporaries(flat)
        states = _tracks_to_write(flat, [p for g in file_prints for p in g], opts.overwrite,
                                  opts.verbose)  # fmt: skip
        per_track = job.files_per_track  # a track is written again with all its files
        todo = sorted({k // per_track for k in states})
        batch = max(1, min(int(track_batch), MAX_OPEN_FILES // per_track))  # files open: bounded
        for lo in range(0, len(todo), batch):
            group = todo[lo : lo + batch]
            job.write_batch(
                [tracks[k] for k in group],
                [f for k in group for f in files[k]],
                [p for k in group for p in file_prints[k]],
            )
        record = {
            "tracks": [list(t) for t in tracks],
            "files": [str(p) for p in paths],
            "scale": "arcsinh" if opts.arcsinh else "-log10 p",
            "precision": opts.precision,
            "format": fmt,
            "chroms": list(chroms) if chroms else None,
            "regions": list(regions) if regions else None,
            "genome": model.genome_,
            "resolution": int(model.layout_.resolution),
            "n_bins": int((segments.axis_end - segments.axis_start).sum()),
            "ensemble": None if ensemble is None else ensemble.fingerprint(),
            # a store used under allow_changed_store: the warning given, kept
            "warnings": [] if ensemble is None else list(ensemble.warnings),
            "intervals": None if calibration is None else {
                "levels": levels, "files": [[str(f) for f in g[1:]] for g in files],
                "calibration": _calibration_summary(calibration),
            },
        }  # fmt: skip
        write_json(params_path, {**record, "earlier": _earlier_runs(params_path, paths)})
    return paths


def _earlier_runs(params_path: Path, paths: list[Path]) -> list[dict]:
    """The records of earlier imputations into the same folder whose files are still there.

    A second ``impute`` into a folder (other tracks, another scale) replaced
    ``impute.json``, so the first run's files lost their description (trial
    C5); each earlier run is kept, less the files this run wrote again.
    """
    if params_path.name != "impute.json" or not params_path.is_file():
        return []
    try:
        old = json.loads(params_path.read_text())
        runs = list(old.pop("earlier", [])) + [old]
    except (OSError, ValueError, AttributeError):
        return []
    now = {str(p) for p in paths}
    kept = []
    for run in runs:
        try:
            pairs = [(t, f) for t, f in zip(run["tracks"], run["files"])
                     if f not in now and Path(f).is_file()]  # fmt: skip
        except (KeyError, TypeError):
            continue
        if pairs:
            run = {k: v for k, v in run.items() if k != "epitensor"} | {
                "tracks": [t for t, _ in pairs], "files": [f for _, f in pairs]}  # fmt: skip
            kept.append(run)
    return kept


def default_imputer(
    model,
    trees_store=AUTO_ENSEMBLE,
    *,
    rule=None,
    axes: Sequence[str] | None = None,
    allow_changed: bool = False,
    verbose: bool = False,
):
    """What ``epitensor impute`` imputes with: the ensemble, or the model alone.

    The same choice :func:`impute` makes in this process, so a score of its
    predictions is a score of the files (``evaluate`` uses it).

    Parameters
    ----------
    model : Avocado
        A fitted model.
    trees_store : Store, str, list of them, Ensemble, "auto" or None
        As :class:`~epitensor.workflows.options.ImputeOptions` ``trees_store``.
        Default :data:`AUTO_ENSEMBLE` (``"auto"``, the command line's default:
        the model's training compendium if it still opens and holds its
        training tracks, else the model alone). None: the model alone.
    rule : EnsembleRule, optional
        Default None: the default rule.
    axes : sequence of str, optional
        The axes imputed. Default None: every axis the ensemble can reach.
    allow_changed : bool
        See :func:`~epitensor.estimators.ensemble.training_compendium`. Default False.
    verbose : bool
        Say why the model alone is used when ``"auto"`` cannot build the
        ensemble. Default False.

    Returns
    -------
    Ensemble or Avocado
        Either has ``predict(celltype, assay, axis=...)``; an Ensemble's
        ``name`` is :data:`~epitensor.estimators.ensemble.DEFAULT_METHOD` with
        the default rule.
    """
    ensemble = _ensemble(model, trees_store, rule, None, verbose, axes, allow_changed)
    return model if ensemble is None else ensemble


def _with_intervals(paths, prints, levels, calibration):
    """Per track: its file, then the lower and upper bound of each level, and their fingerprints."""
    from epitensor.estimators.intervals import interval_path

    if not levels:
        return [[p] for p in paths], [[f] for f in prints]
    digest = _calibration_summary(calibration)["sha256"]
    files, file_prints = [], []
    for path, fingerprint in zip(paths, prints):
        files.append([path])
        file_prints.append([fingerprint])
        for level in levels:
            for bound in ("lower", "upper"):
                files[-1].append(interval_path(path, bound, level))
                extra = {"interval": {"bound": bound, "level": level, "calibration": digest}}
                file_prints[-1].append(None if fingerprint is None else {**fingerprint, **extra})
    return files, file_prints


def _calibration_summary(calibration) -> dict:
    """What an imputation records of its interval calibration: a digest and what it was made from."""
    import hashlib
    import json

    text = json.dumps(calibration.assays, sort_keys=True).encode()
    info = {k: calibration.info.get(k) for k in ("proxy", "tracks", "n_groups")}
    return {"sha256": hashlib.sha256(text).hexdigest(), **info}


def _ensemble(
    model, trees_store, rule, ray_address, verbose: bool = False, axes=None, allow_changed=False
):
    """The :class:`~epitensor.estimators.ensemble.Ensemble` of an imputation, or None for the model alone.

    ``trees_store="auto"`` takes the model's ``training_store_`` when it still
    opens and holds the training tracks on the ``axes`` imputed, else (and on
    Ray) the model alone, saying why when ``verbose``. A store there that is
    not the data the model was made from (by content) is an error, not a
    fallback: the path is only a hint.
    """
    from epitensor.estimators.ensemble import Ensemble, training_compendium
    from epitensor.store.identity import StoreMismatch

    if trees_store is None:
        if rule is not None:
            raise EpitensorError("an ensemble rule needs the trees' store; give trees_store")
        return None
    if isinstance(trees_store, Ensemble):
        return _built_ensemble(model, trees_store, rule, ray_address, axes)
    if str(trees_store) == AUTO_ENSEMBLE:
        reason = _no_auto_ensemble(model, ray_address)
        if reason is None:
            try:  # only an absent or mismatched compendium falls back; errors reading it do not
                with warnings.catch_warnings():  # the Ensemble below checks it again and warns
                    warnings.simplefilter("ignore", EpitensorWarning)
                    trees_store = training_compendium(
                        model, model.training_store_, axes, allow_changed
                    )
            except StoreMismatch:
                raise  # another store at the recorded path: never silently fall back
            except EpitensorError as exc:
                reason = str(exc)
        if reason is not None:
            if verbose:
                import sys

                print(f"writing the model alone, not the ensemble: {reason}", file=sys.stderr)
            return None
        return Ensemble(model, trees_store, rule, axes=axes, allow_changed=allow_changed)
    if ray_address is not None:
        raise EpitensorError(
            "the ensemble (trees_store / --trees) imputes in this process only; drop the Ray address"
        )
    return Ensemble(model, trees_store, rule, axes=axes, allow_changed=allow_changed)


def _built_ensemble(model, ensemble, rule, ray_address, axes):
    """An :class:`~epitensor.estimators.ensemble.Ensemble` given ready (its fitted trees reused), checked."""
    from epitensor.estimators.ensemble import training_compendium

    if ray_address is not None:
        raise EpitensorError("the ensemble imputes in this process only; drop the Ray address")
    if rule is not None:
        raise EpitensorError("an Ensemble given ready has its own rule; drop rule")
    if list(map(tuple, ensemble.model.training_tracks_)) != list(
        map(tuple, model.training_tracks_)
    ):
        raise EpitensorError(
            "the Ensemble given was built on a model with other training tracks; build it "
            "on this model (Ensemble(model, store))"
        )
    training_compendium(model, ensemble.store, axes)
    return ensemble


def _no_auto_ensemble(model, ray_address) -> str | None:
    """Why ``trees_store="auto"`` cannot build the ensemble, or None when it can try."""
    if ray_address is not None:
        return "the ensemble imputes in this process only (not on Ray)"
    if model.training_store_ is None:
        return (
            "the model does not record the compendium it was trained on; "
            "give it with --trees STORE (trees_store=STORE)"
        )
    return None


def impute_fingerprints(
    source: str | os.PathLike | None,
    model,
    tracks: Sequence[tuple[str, str]],
    segments: pd.DataFrame,
    arcsinh: bool,
    precision: str,
    fmt: str,
) -> list[dict | None]:
    """What identifies each file of an imputation, to resume it: one dict per track.

    A file counts as finished on a rerun only when its done record holds the
    same fingerprint: the epitensor version, the track (names and factor
    rows), the sha256 of the model's weights and of the genome factors of
    every axis written (as recorded in the model directory's ``config.json``,
    else computed), the written positions (a sha256 of the segments table, so
    ``chroms`` and ``regions``), the chromosome sizes, the scale, the precision
    and the format. Block size, threads and device are left out: they change
    the speed, not what is computed.

    Parameters
    ----------
    source : str or path-like, optional
        The model directory; None (an in-memory model) gives None for every
        track: nothing is resumed, existing files are refused.
    model : Avocado
        The loaded model.
    tracks : sequence of (str, str)
        The checked tracks.
    segments : pandas.DataFrame
        From :func:`track_segments`.
    arcsinh : bool
        The scale.
    precision : str
        ``"fp32"`` or ``"bf16"``.
    fmt : str
        ``"bigwig"`` or ``"bedgraph"``.

    Returns
    -------
    list of dict or None
        One JSON-ready fingerprint per track, in order.
    """
    import hashlib

    from epitensor._utils import __version__
    from epitensor.nn import modeldir

    if source is None:
        return [None] * len(tracks)
    directory = Path(source)

    def checksum(axis: str | None) -> str:
        recorded = model.weights_checksum(axis)  # as pinned when the model was read
        if recorded is not None:
            return recorded
        path = directory / modeldir.WEIGHTS_FILE if axis is None else None
        return modeldir.sha256_of(path or modeldir.axis_file(directory, axis))

    table = segments[["chrom", "first_bin", "axis", "axis_start", "axis_end"]]
    shared = {
        "epitensor": __version__,
        "weights": checksum(None),
        "axes": {axis: checksum(axis) for axis in sorted(set(segments.axis))},
        "positions": hashlib.sha256(table.to_csv(index=False).encode()).hexdigest(),
        "chrom_sizes": {c: int(model.chrom_sizes_[c]) for c in sorted(set(segments.chrom))},
        "scale": "arcsinh" if arcsinh else "-log10 p",
        "precision": precision,
        "format": fmt,
    }
    return [
        {
            "track": [c, a],
            "rows": [_index(model.celltypes_, c, "cell type"), _index(model.assays_, a, "assay")],
            **shared,
        }
        for c, a in tracks
    ]


def _tracks_to_write(
    paths: list[Path], prints: list[dict | None], overwrite: bool, verbose: bool
) -> list[int]:
    """Indices of the tracks still to write; refuses existing files a rerun may not keep."""
    if overwrite:
        return list(range(len(paths)))
    states = [completed(path, fingerprint) for path, fingerprint in zip(paths, prints)]
    refused = [(path, state) for path, state in zip(paths, states) if isinstance(state, str)]
    if refused:
        path, reason = refused[0]
        raise EpitensorError(
            f"{path} already exists and is not a finished file of this imputation ({reason}; "
            f"{len(refused)} of the outputs are so); choose another --out or pass overwrite"
        )
    todo = [k for k, state in enumerate(states) if state is not True]
    if verbose and len(todo) < len(paths):
        import sys

        print(
            f"{len(paths) - len(todo)} of {len(paths)} files already finished by an earlier "
            f"run of this imputation; writing the other {len(todo)}",
            file=sys.stderr,
        )
    return todo


def impute_blocks(
    job: tuple[str, list[tuple[str, str]]],
    model,
    segments: pd.DataFrame,
    options: ImputeOptions,
    ensemble=None,
    calibration=None,
) -> Iterator[np.ndarray]:
    """The values of one task of :func:`impute`: one chromosome for a batch of tracks.

    Parameters
    ----------
    job : (str, list of (str, str))
        The chromosome and the tracks.
    model : Avocado or path
        A fitted model, or a model directory (read here, its axes lazily).
    segments : pandas.DataFrame
        From :func:`track_segments`; only the chromosome's rows are used.
    options : ImputeOptions
        The imputation's options, as :func:`impute` resolved them: this task
        reads ``arcsinh`` (keep the arcsinh scale, else ``sinh``: -log10 p),
        ``block_size`` (positions per block, an int), ``device`` (None: the
        model's, else the best available), ``precision`` (see
        :class:`FastPredictor`) and ``n_threads`` (torch threads while
        computing; None: the model's, else this process's count).
    ensemble : Ensemble, optional
        Combine the model's values with its trees and average
        (:meth:`~epitensor.estimators.ensemble.Ensemble.combine`). Default None: the model alone.
    calibration : IntervalCalibration, optional
        With ``options.interval`` levels and the ensemble: after each track's
        row, the lower and upper bound of each level
        (:meth:`~epitensor.estimators.intervals.IntervalCalibration.interval`). Default None.

    Yields
    ------
    numpy.ndarray, shape=(n_tracks * (1 + 2 n_levels), block length), float32
        One array per block of ``_iter_blocks(chromosome segments, block_size)``.
    """
    from epitensor.train.fitting import torch_threads

    chrom, tracks = job
    model = load_model(model)
    threads = task_threads(model.n_threads if options.n_threads is None else options.n_threads)
    block_size = DEFAULT_BLOCK_SIZE if options.block_size is None else int(options.block_size)
    predictor = FastPredictor(model, tracks, device=options.device, precision=options.precision)
    with torch_threads(threads), predictor.session():
        for _, _, axis, lo, hi in _iter_blocks(segments[segments.chrom == chrom], block_size):
            values = predictor.predict(axis, lo, hi)
            if ensemble is not None and calibration is not None and options.interval:
                values = _with_bounds(ensemble, calibration, options.interval, values, tracks,
                                      axis, lo, hi)  # fmt: skip
            elif ensemble is not None:
                values = ensemble.combine(values, tracks, axis, lo, hi)
            yield values if options.arcsinh else np.sinh(values)


def _with_bounds(ensemble, calibration, levels, values, tracks, axis, lo, hi) -> np.ndarray:
    """The ensemble's rows, each followed by the lower and upper bound of each level."""
    values, trees, average = ensemble.combine_parts(values, tracks, axis, lo, hi)
    rows = []
    for k, (_, assay) in enumerate(tracks):
        rows.append(values[k])
        for bounds in calibration.intervals(assay, values[k], trees[k], average[k], levels):
            rows += bounds
    return np.stack(rows)


def _impute_chrom(job: tuple, **shared) -> list[np.ndarray]:
    """A Ray task of :func:`impute`: the blocks of :func:`impute_blocks`, gathered."""
    return list(impute_blocks(job, **shared))


@contextlib.contextmanager
def _axes_held(model, segments: pd.DataFrame):
    """Keep the axes that span several chromosomes loaded while their chromosomes are imputed.

    Each task reads its axis lazily and drops it afterwards; an axis shared by
    many chromosomes (the single axis of a region layout) would otherwise be
    read from disk once per chromosome.
    """
    shared = [a for a, chroms in segments.groupby("axis").chrom.nunique().items() if chroms > 1]
    with contextlib.ExitStack() as stack:
        for axis in shared:
            stack.enter_context(axis_table(model, axis))
        yield


class _ImputeJob:
    """One imputation: fans each track batch out over the chromosomes and writes its files."""

    def __init__(self, model, segments, options: ImputeOptions, chrom_sizes, shared, executor):
        self.model, self.segments, self.fmt = model, segments, options.fmt
        self.levels = list(options.interval)
        self.block_size, self.chrom_sizes = options.block_size, chrom_sizes
        self.shared, self.executor = shared, dict(executor)
        self.chroms = list(dict.fromkeys(segments.chrom))
        # a track's files: its values, then the lower and upper bound of each level
        self.files_per_track = 1 + 2 * len(self.levels)

    def write_batch(
        self, tracks: list[tuple[str, str]], paths: list[Path], prints: list[dict | None]
    ) -> None:
        """Compute and write the files of one track batch (none left behind on failure)."""
        res = int(self.model.layout_.resolution)
        in_process = self.executor["ray_address"] is None
        sinks = []
        with contextlib.ExitStack() as held:
            if in_process:
                held.enter_context(_axes_held(self.model, self.segments))
            # one encoding thread a track: its interval bounds add files, not threads
            per_track = self.files_per_track  # as many blocks waiting a file as alone
            threads = [EncoderThread(f"bigwig-{c}.{a}", 4 * per_track) for c, a in tracks] if (
                self.fmt == "bigwig") else []  # fmt: skip
            for thread in threads:
                held.callback(thread.stop)
            self._write(tracks, paths, prints, sinks, res, in_process, threads)

    def _write(self, tracks, paths, prints, sinks, res, in_process, threads) -> None:
        try:
            labels = [""] + [f" {b}{round(100 * x, 6):g}" for x in self.levels
                             for b in ("lower", "upper")]  # fmt: skip
            names = [f"{c} {a}{label}" for c, a in tracks for label in labels]
            for k, (name, path, fingerprint) in enumerate(zip(names, paths, prints, strict=True)):
                if self.fmt == "bigwig":
                    thread = threads[k // self.files_per_track]
                    sinks.append(BigWigSink(path, self.chrom_sizes, fingerprint=fingerprint,
                                            resolution=res, thread=thread))  # fmt: skip
                else:
                    sinks.append(BedGraphSink(path, name, fingerprint))
            names = [f"{c} x {len(tracks)} tracks from {tracks[0][0]}:{tracks[0][1]}"
                     for c in self.chroms]  # fmt: skip
            results = iter_tasks(
                impute_blocks if in_process else _impute_chrom,
                [(chrom, list(tracks)) for chrom in self.chroms],
                shared=self.shared, names=names, desc=f"impute {len(tracks)} track(s)",
                **self.executor,
            )  # fmt: skip
            for chrom, blocks in zip(self.chroms, results):
                where = _iter_blocks(self.segments[self.segments.chrom == chrom], self.block_size)
                for (_, first_bin, _, lo, hi), values in zip(where, blocks, strict=True):
                    starts, ends = bin_edges(first_bin, hi - lo, res, self.chrom_sizes[chrom])
                    for sink, row in zip(sinks, values, strict=True):
                        sink.write(chrom, starts, ends, row)
            for sink in sinks:
                sink.close()
        except BaseException:
            for sink in sinks:
                sink.abort()
            raise
