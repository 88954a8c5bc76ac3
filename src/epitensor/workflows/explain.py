"""Integrated-gradients attributions of imputed signal, split by model component.

For one imputed value the model's input is the concatenation of five factor
groups (:data:`epitensor.nn.module.COMPONENTS`): the cell type, the assay and the
25-bp, 250-bp and 5-kbp genome factors of the position. Integrated gradients
(Sundararajan et al. 2017) attributes the prediction ``f(x)`` minus the
prediction at a reference input ``f(r)`` to every input factor,

    IG_i = (x_i - r_i) * integral_0^1 df/dx_i (r + a (x - r)) da,

and these add up to ``f(x) - f(r)`` (completeness). Summing them over the
factors of each component gives five attribution tracks per position that add
up to the prediction minus the reference prediction, as in Fig. 6 of the
Avocado paper. The integral is computed by quadrature (Gauss-Legendre or the
trapezoid rule), and the gap between the summed attributions and
``f(x) - f(r)`` is checked (a warning names it when it is too large).

The first layer of the network is linear, so along the path its
pre-activation is ``W r + b + a W (x - r)``: the quadrature only runs the rest
of the network, batched over (position, step), and the attribution of
component ``c`` is ``(W_c (x_c - r_c)) . integral g(a) da`` with ``g`` the
gradient at the first layer's output -- the same number as summing ``IG_i``
over the factors of ``c``, at a fraction of the cost. A component whose
factors equal the reference's gets exactly zero.

The reference input ``r`` is one vector of ``n_features`` numbers shared by all
positions:

* ``"mean"`` (default): for each component, the mean of its factors over all
  rows of the model (all cell types, all assays, all positions of the genome
  axes the model holds in memory, at each scale) -- an "average" track at an
  "average" position;
* ``"zero"``: all factors zero;
* an array of shape ``(n_features,)``: any vector, e.g. the features of
  another track and position (``module.features(...)``).

All positions are 25-bp bins; genomic intervals are 0-based and half-open.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from epitensor._utils import EpitensorError, atomic_write_bytes, progress, resolve_device, warn
from epitensor.estimators.avocado import load_model
from epitensor.genome.coordinates import Layout, parse_region
from epitensor.nn.module import COMPONENTS, AvocadoModule, GenomeFactors
from epitensor.viz.plots import subplots

__all__ = [
    "COMPONENT_LABELS",
    "PEAK_THRESHOLD",
    "REFERENCES",
    "explain",
    "integrated_gradients",
    "peak_attribution_summary",
    "peak_attributions",
    "plot_explanation",
    "plot_peak_attributions",
    "reference_features",
    "region_positions",
    "write_explanation",
]

REFERENCES = ("mean", "zero")
METHODS = ("gausslegendre", "trapezoid")
# A peak is observed signal of -log10 p >= 2 (the paper's and ChromHMM's
# binarisation), i.e. arcsinh(2) on the store's arcsinh scale.
PEAK_THRESHOLD = float(np.arcsinh(2.0))
COMPONENT_LABELS = {
    "celltype": "cell type",
    "assay": "assay",
    "genome_25bp": "genome 25 bp",
    "genome_250bp": "genome 250 bp",
    "genome_5kbp": "genome 5 kbp",
}
COMPONENT_COLOURS = {
    "celltype": "#d62728",
    "assay": "#9467bd",
    "genome_25bp": "#2ca02c",
    "genome_250bp": "#17becf",
    "genome_5kbp": "#8c564b",
}
DEFAULT_STEPS = 64
# Gauss-Legendre builds an n_steps x n_steps matrix (float64) and every step is a network
# pass per position: 100,000 steps asked for 75 GiB (trial H3). The integral of a ReLU
# network converges long before this many steps.
MAX_STEPS = 4096


# reference input ------------------------------------------------------------------


def _genome_means(genomes: Iterable[GenomeFactors]) -> list[torch.Tensor]:
    """Mean 25-bp, 250-bp and 5-kbp factors over genome axes, weighted by rows."""
    genomes = list(genomes)
    means = []
    for scale in ("emb_25bp", "emb_250bp", "emb_5kbp"):
        tables = [getattr(factors, scale).weight for factors in genomes]
        n_rows = sum(t.shape[0] for t in tables)
        means.append(sum(t.sum(dim=0) for t in tables) / n_rows)
    return means


def reference_features(
    module: AvocadoModule,
    reference: str | np.ndarray | torch.Tensor = "mean",
    genomes: Iterable[GenomeFactors] | None = None,
) -> torch.Tensor:
    """The reference input of integrated gradients.

    Parameters
    ----------
    module : AvocadoModule
        The model.
    reference : {"mean", "zero"} or array, shape=(n_features,)
        ``"mean"``: each component's factors averaged over all rows of the
        model (cell types, assays, positions of every genome axis in
        ``genomes``). ``"zero"``: all zeros. An array: used as is
        (concatenated in the order of :data:`~epitensor.nn.module.COMPONENTS`).
        Default ``"mean"``.
    genomes : iterable of GenomeFactors, optional
        Genome axes averaged by ``"mean"``. Default None: every axis in
        ``module.genome``.

    Returns
    -------
    torch.Tensor, shape=(n_features,), float32, on the module's device
    """
    n_features = sum(module.component_sizes.values())
    device = module.celltype_embedding.weight.device
    if isinstance(reference, str):
        if reference not in REFERENCES:
            raise EpitensorError(
                f"invalid reference: got {reference!r}, expected one of "
                f"{list(REFERENCES)!r} or a vector of {n_features} numbers"
            )
        if reference == "zero":
            return torch.zeros(n_features, device=device)
        genomes = list(module.genome.values()) if genomes is None else list(genomes)
        if not genomes:
            raise EpitensorError("the model holds no genome axis to average for reference='mean'")
        with torch.no_grad():
            parts = [
                module.celltype_embedding.weight.mean(dim=0),
                module.assay_embedding.weight.mean(dim=0),
                *(m.to(device) for m in _genome_means(genomes)),
            ]
        return torch.cat(parts).detach().float()
    vector = torch.as_tensor(np.asarray(reference, dtype=np.float32), device=device)
    if vector.shape != (n_features,):
        raise EpitensorError(
            f"invalid reference: got an array of shape {tuple(vector.shape)}, expected "
            f"({n_features},) (the concatenated {', '.join(COMPONENTS)} factors)"
        )
    return vector


# quadrature -----------------------------------------------------------------------


def _quadrature(n_steps: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes in [0, 1] and weights summing to 1 for ``integral_0^1 g(a) da``."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int | np.integer) or n_steps < 2:
        raise EpitensorError(f"n_steps must be an integer of at least 2; got n_steps={n_steps!r}")
    if n_steps > MAX_STEPS:
        raise EpitensorError(
            f"n_steps must be at most {MAX_STEPS}; got n_steps={n_steps!r} (the integral "
            f"converges long before: the completeness check says when to raise it)"
        )
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(int(n_steps))
        nodes, weights = (nodes + 1.0) / 2.0, weights / 2.0
    elif method == "trapezoid":
        nodes = np.linspace(0.0, 1.0, int(n_steps))
        weights = np.full(int(n_steps), 1.0 / (n_steps - 1))
        weights[[0, -1]] /= 2.0
    else:
        raise EpitensorError(f"invalid method: got {method!r}, expected one of {list(METHODS)!r}")
    return torch.tensor(nodes, dtype=torch.float32), torch.tensor(weights, dtype=torch.float32)


# the core -------------------------------------------------------------------------


def _check_index(value: int, n_rows: int, name: str) -> int:
    if not 0 <= int(value) < n_rows:
        raise EpitensorError(f"{name} index {value} is out of range: the model has {n_rows} rows")
    return int(value)


def _path_gradients(
    module: AvocadoModule,
    pre_reference: torch.Tensor,
    pre_delta: torch.Tensor,
    nodes: torch.Tensor,
    weights: torch.Tensor,
    batch_size: int,
    verbose: bool = False,
) -> torch.Tensor:
    """Quadrature of the gradient at the first layer's output along straight paths.

    Parameters
    ----------
    module : AvocadoModule
        Its ``head`` maps first-layer pre-activations ``(..., n_nodes)`` to ``(...,)``.
    pre_reference : torch.Tensor, shape=(n_nodes,)
        First-layer pre-activation of the reference, ``W r + b``.
    pre_delta : torch.Tensor, shape=(n_positions, n_nodes)
        ``W (x - r)`` for every position.
    nodes, weights : torch.Tensor, shape=(n_steps,)
    batch_size : int
        (position, step) pairs per network pass (at least one position's steps).
    verbose : bool
        Progress bar over batches. Default False.

    Returns
    -------
    torch.Tensor, shape=(n_positions, n_nodes)
        ``sum_k weights[k] * g(pre_reference + nodes[k] * pre_delta)``, where
        ``g`` is the gradient of the output with respect to the pre-activation.
    """
    n_positions, n_steps = pre_delta.shape[0], nodes.shape[0]
    per_batch = max(1, batch_size // n_steps)
    total = torch.empty_like(pre_delta)
    starts = range(0, n_positions, per_batch)
    for lo in progress(starts, desc="integrated gradients", verbose=verbose, unit="batch"):
        chunk = pre_delta[lo : lo + per_batch]
        path = pre_reference + nodes[None, :, None] * chunk[:, None, :]
        path.requires_grad_(True)
        (grad,) = torch.autograd.grad(module.head(path).sum(), path)
        total[lo : lo + per_batch] = (grad * weights[None, :, None]).sum(dim=1)
    return total


def _attributions(
    module: AvocadoModule,
    x: torch.Tensor,
    reference: torch.Tensor,
    nodes: torch.Tensor,
    weights: torch.Tensor,
    batch_size: int,
    verbose: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-component attributions, predictions and the reference prediction.

    Parameters
    ----------
    x : torch.Tensor, shape=(n_positions, n_features)
    reference : torch.Tensor, shape=(n_features,)

    Returns
    -------
    attributions : torch.Tensor, shape=(n_positions, n_components), arcsinh units
    prediction : torch.Tensor, shape=(n_positions,), arcsinh
    reference_prediction : torch.Tensor, shape=(), arcsinh
    """
    first = module.network[0]
    if not isinstance(first, torch.nn.Linear):
        raise EpitensorError("integrated gradients needs a network whose first layer is Linear")
    sizes = list(module.component_sizes.values())
    with torch.no_grad():
        delta = x - reference
        pre_reference = first(reference[None])[0]
        w_parts = first.weight.split(sizes, dim=1)
        d_parts = delta.split(sizes, dim=1)
        pre_parts = [d @ w.T for d, w in zip(d_parts, w_parts)]
        pre_delta = torch.stack(pre_parts).sum(dim=0)
        prediction = module.head(pre_reference + pre_delta)
        reference_prediction = module.head(pre_reference)
    with torch.enable_grad():
        grads = _path_gradients(
            module, pre_reference, pre_delta, nodes, weights, batch_size, verbose
        )
    with torch.no_grad():
        per_component = torch.stack([(p * grads).sum(dim=1) for p in pre_parts], dim=1)
    return per_component, prediction, reference_prediction


def _check_positions(positions, n_axis: int, axis: str) -> torch.Tensor:
    positions = torch.as_tensor(np.array(positions, dtype=np.int64))
    if positions.ndim != 1 or positions.numel() == 0:
        raise EpitensorError(
            f"positions must be a non-empty 1-D array; got shape {tuple(positions.shape)}"
        )
    if int(positions.min()) < 0 or int(positions.max()) >= n_axis:
        raise EpitensorError(
            f"positions must lie in [0, {n_axis}) on axis {axis!r}; got "
            f"[{int(positions.min())}, {int(positions.max())}]"
        )
    return positions


def integrated_gradients(
    module: AvocadoModule,
    celltype_idx: int,
    assay_idx: int,
    positions: np.ndarray | torch.Tensor | Sequence[int],
    axis: str,
    reference: str | np.ndarray | torch.Tensor = "mean",
    n_steps: int = DEFAULT_STEPS,
    method: str = "gausslegendre",
    batch_size: int = 8192,
    rtol: float = 0.01,
    atol: float = 0.01,
    device: str | torch.device | None = None,
    genome: GenomeFactors | None = None,
    verbose: bool = False,
) -> pd.DataFrame:
    """Integrated-gradients attributions of one track at many positions, per component.

    Parameters
    ----------
    module : AvocadoModule
        A trained model; its device and train/eval mode are restored afterwards.
    celltype_idx, assay_idx : int
        Rows of the cell type and assay embeddings.
    positions : array-like of int, shape=(n_positions,)
        Positions (25-bp bins) on ``axis``.
    axis : str
        Genome axis of ``positions``.
    reference : {"mean", "zero"} or array, shape=(n_features,)
        Reference input; see :func:`reference_features`. Default ``"mean"``.
    n_steps : int
        Quadrature nodes along the path, at least 2. Default 64.
    method : {"gausslegendre", "trapezoid"}
        Quadrature rule. Default ``"gausslegendre"``.
    batch_size : int
        (position, step) pairs per network pass; results do not depend on it.
        Default 8192.
    rtol, atol : float
        Warn (:class:`~epitensor._utils.EpitensorWarning`) when, at any
        position, ``|sum of attributions - (f(x) - f(r))|`` exceeds
        ``atol + rtol * |f(x) - f(r)|``; raise ``n_steps`` to close the gap.
        Defaults 0.01 and 0.01 (arcsinh units).
    device : str or torch.device, optional
        Where to compute. Default None: the module's device.
    genome : GenomeFactors, optional
        The genome factors of ``axis``. Default None: ``module.genome[axis]``.
    verbose : bool
        Progress bar. Default False.

    Returns
    -------
    pandas.DataFrame
        One row per position, with ``position``, one column per component
        (:data:`~epitensor.nn.module.COMPONENTS`, arcsinh units), ``prediction``
        (``f(x)``, arcsinh), ``reference_prediction`` (``f(r)``) and ``gap``
        (sum of attributions minus ``f(x) - f(r)``).
    """
    if genome is None:
        if axis not in module.genome:
            raise EpitensorError(f"unknown axis {axis!r}; the model has {list(module.genome)}")
        genome = module.genome[axis]
    positions = _check_positions(positions, genome.n_positions, axis)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EpitensorError(
            f"batch_size must be a positive integer; got batch_size={batch_size!r}"
        )
    celltype_idx = _check_index(celltype_idx, module.celltype_embedding.num_embeddings, "cell type")
    assay_idx = _check_index(assay_idx, module.assay_embedding.num_embeddings, "assay")
    nodes, weights = _quadrature(n_steps, method)

    genomes = list(module.genome.values())
    if not any(g is genome for g in genomes):
        genomes.append(genome)
    old_device, was_training = module.celltype_embedding.weight.device, module.training
    old_genome_device = genome.emb_25bp.weight.device
    device = old_device if device is None else resolve_device(device)
    module.parts_to(device).eval()  # the network and the one axis used, not every axis
    genome.to(device)
    try:
        with torch.no_grad():
            ref = reference_features(module, reference, genomes).to(device)
            n = positions.numel()
            pos = positions.to(device)
            x = torch.cat(
                [
                    module.celltype_embedding(torch.full((n,), celltype_idx, device=device)),
                    module.assay_embedding(torch.full((n,), assay_idx, device=device)),
                    *genome.parts(pos),
                ],
                dim=1,
            )
        per_component, prediction, ref_prediction = _attributions(
            module, x, ref, nodes.to(device), weights.to(device), batch_size, verbose
        )
    finally:
        module.parts_to(old_device).train(was_training)
        genome.to(old_genome_device)

    table = pd.DataFrame(per_component.cpu().numpy(), columns=list(COMPONENTS))
    table.insert(0, "position", positions.numpy())
    table["prediction"] = prediction.cpu().numpy()
    table["reference_prediction"] = float(ref_prediction)
    table["gap"] = table[list(COMPONENTS)].sum(axis=1) - (
        table.prediction - table.reference_prediction
    )
    _check_completeness(table, rtol, atol, n_steps)
    return table


def _check_completeness(table: pd.DataFrame, rtol: float, atol: float, n_steps: int) -> None:
    difference = (table.prediction - table.reference_prediction).abs()
    bad = table.gap.abs() > atol + rtol * difference
    if bad.any():
        warn(
            f"integrated gradients: attributions miss f(x) - f(reference) by up to "
            f"{table.gap.abs().max():.3g} at {int(bad.sum())} of {len(table)} positions "
            f"with n_steps={n_steps}; raise n_steps",
            stacklevel=3,
        )


# the estimator-level view -----------------------------------------------------------


def _name_index(name: str, names: Sequence[str], what: str) -> int:
    if name not in names:
        raise EpitensorError(f"unknown {what} {name!r}; the model knows {list(names)}")
    return list(names).index(name)


def region_positions(layout: Layout, region: str, sizes: pd.Series | None = None) -> pd.DataFrame:
    """The axis positions of the 25-bp bins of a genomic region.

    Parameters
    ----------
    layout : Layout
        The model's layout.
    region : str
        ``chr:start-end`` (0-based, half-open; commas and k/M suffixes allowed).
    sizes : pandas.Series, optional
        Chromosome lengths for bounds checks. Default None: none.

    Returns
    -------
    pandas.DataFrame
        One row per covered bin: ``chrom``, ``start``, ``end`` (the bin, bp),
        ``axis``, ``position`` (on the axis).
    """
    chrom, start, end = parse_region(region, sizes)
    hits = layout.locate(chrom, start, end)
    if hits.empty:
        covered = layout.regions[layout.regions.chrom == chrom]
        hint = (
            f"{chrom} is covered at "
            + ", ".join(f"{r.start:,}-{r.end:,}" for r in covered.head(4).itertuples())
            + (" ..." if len(covered) > 4 else "")
            if len(covered)
            else f"it covers no bin of {chrom}"
        )
        raise EpitensorError(
            f"region {region} lies outside the model's layout {layout.name!r} "
            f"({len(layout.regions)} regions); {hint}"
        )
    res = layout.resolution
    pieces = []
    for hit in hits.itertuples():
        n = int(hit.axis_end - hit.axis_start)
        bins = np.arange(hit.first_bin, hit.first_bin + n, dtype=np.int64)
        pieces.append(
            pd.DataFrame(
                {
                    "chrom": chrom,
                    "start": bins * res,
                    "end": bins * res + res,
                    "axis": hit.axis,
                    "position": np.arange(hit.axis_start, hit.axis_end, dtype=np.int64),
                }
            )
        )
    table = pd.concat(pieces, ignore_index=True).sort_values("start", ignore_index=True)
    n_asked = -(-end // res) - start // res
    if len(table) < n_asked:
        warn(
            f"region {region}: only {len(table)} of its {n_asked} bins lie in the model's "
            f"layout {layout.name!r}; explaining those"
        )
    return table


def explain(
    model,
    celltypes: str | Sequence[str],
    assay: str,
    region: str,
    reference: str | np.ndarray = "mean",
    n_steps: int = DEFAULT_STEPS,
    method: str = "gausslegendre",
    batch_size: int = 8192,
    device: str | None = None,
    verbose: bool = False,
) -> pd.DataFrame:
    """Attributions of an imputed track over a genomic region, per model component.

    Parameters
    ----------
    model : epitensor.estimators.avocado.Avocado
        A fitted model.
    celltypes : str or sequence of str
        One or more cell types (names) sharing the region; two are compared
        side by side by :func:`plot_explanation`.
    assay : str
        The assay (name).
    region : str
        ``chr:start-end`` in bp, 0-based half-open (commas and k/M allowed).
        It must overlap the model's layout (e.g. the ENCODE pilot regions for
        the bundled sample); bins outside it are left out with a warning.
    reference : {"mean", "zero"} or array, shape=(n_features,)
        Reference input (see :func:`reference_features`). Default ``"mean"``.
    n_steps : int
        Quadrature nodes along the path, at least 2. Default 64.
    method : {"gausslegendre", "trapezoid"}
        Quadrature rule. Default ``"gausslegendre"``.
    batch_size : int
        (position, step) pairs per network pass. Default 8192.
    device : str, optional
        Where to compute. Default None: the model's device.
    verbose : bool
        Progress bars. Default False.

    Returns
    -------
    pandas.DataFrame
        One row per (cell type, bin): ``track_celltype``, ``track_assay``
        (names of the explained track), ``chrom``, ``start``, ``end`` (bp),
        ``axis``, ``position``, the five components (``celltype``, ``assay``,
        ``genome_25bp``, ``genome_250bp``, ``genome_5kbp``: attributions in
        arcsinh units, summing to ``prediction - reference_prediction``),
        ``prediction``, ``reference_prediction`` and ``gap``.

    Notes
    -----
    For a model with ``average`` set (:mod:`epitensor.nn.average`), the
    attributions and ``prediction`` are those of the network's term; the
    imputation combines it with the assay's average activity over the training
    cell types (``w * network + (1 - w) * average`` or ``average + network``),
    a per-bin constant that no input factor moves, so it is not attributed.

    Examples
    --------
    >>> import epitensor as et
    >>> table = et.explain("model/", ["E116", "E117"], "H3K4me3", "chr1:1,000,000-1,010,000")
    >>> table.columns[:4]
    """
    model = load_model(model)
    if model.module_.average != "none":
        warn(
            f"the model imputes with average={model.module_.average!r}: the attributions "
            f"explain the network's term, not the average activity it is combined with"
        )
    celltypes = [celltypes] if isinstance(celltypes, str) else list(celltypes)
    if not celltypes:
        raise EpitensorError("give at least one cell type to explain")
    assay_idx = _name_index(assay, model.assays_, "assay")
    celltype_idx = [_name_index(c, model.celltypes_, "cell type") for c in celltypes]
    bins = region_positions(model.layout_, region, model.chrom_sizes_)
    tables = []
    for celltype, c_idx in zip(celltypes, celltype_idx):
        for axis, group in bins.groupby("axis", sort=False):
            table = integrated_gradients(
                model.module_,
                c_idx,
                assay_idx,
                group.position.to_numpy(),
                str(axis),
                reference=reference,
                n_steps=n_steps,
                method=method,
                batch_size=batch_size,
                device=device,
                genome=model.genome_module(str(axis)),
                verbose=verbose,
            )
            meta = group[["chrom", "start", "end", "axis"]].reset_index(drop=True)
            meta.insert(0, "track_assay", assay)
            meta.insert(0, "track_celltype", celltype)
            tables.append(pd.concat([meta, table], axis=1))
    return pd.concat(tables, ignore_index=True)


# the systematic view (Fig. S8) -------------------------------------------------------


def _stratified_positions(
    n_peaks: np.ndarray, n_per_group: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``n_per_group`` positions drawn without replacement for each peak count."""
    chosen = []
    for k in np.unique(n_peaks):
        where = np.flatnonzero(n_peaks == k)
        take = min(n_per_group, where.size)
        chosen.append(np.sort(rng.choice(where, size=take, replace=False)))
    return np.sort(np.concatenate(chosen))


def peak_attributions(
    model,
    store,
    assay: str,
    axis: str | None = None,
    celltypes: Sequence[str] | None = None,
    n_per_group: int = 200,
    start: int = 0,
    end: int | None = None,
    reference: str | np.ndarray = "mean",
    n_steps: int = DEFAULT_STEPS,
    batch_size: int = 8192,
    seed: int = 0,
    device: str | None = None,
    verbose: bool = False,
) -> pd.DataFrame:
    """Attributions at positions grouped by how many cell types have a peak there (Fig. S8).

    A peak is observed signal of at least :data:`PEAK_THRESHOLD` (arcsinh(2),
    i.e. -log10 p >= 2) in the store. For every position of ``[start, end)``
    the number of cell types (those in ``celltypes`` with the assay observed)
    with a peak is counted; up to ``n_per_group`` positions are drawn for each
    count, so rare counts are not swamped by the many peak-free positions, and
    every cell type's track is explained at each of them.

    Parameters
    ----------
    model : epitensor.estimators.avocado.Avocado
        A fitted model.
    store : Store or str
        The compendium holding the observed tracks (``"roadmap-pilot"`` for
        the bundled sample).
    assay : str
        The assay.
    axis : str, optional
        Genome axis. Default None: the store's only axis.
    celltypes : sequence of str, optional
        Cell types to use. Default None: every cell type of the model with
        ``assay`` observed in the store.
    n_per_group : int
        Positions drawn per peak count. Default 200.
    start, end : int
        Axis positions to draw from, half-open. Default: the whole axis.
    reference : {"mean", "zero"} or array, shape=(n_features,)
        See :func:`reference_features`. Default ``"mean"``.
    n_steps : int
        Quadrature nodes. Default 64.
    batch_size : int
        (position, step) pairs per network pass. Default 8192.
    seed : int
        Seed of the position draw. Default 0.
    device : str, optional
        Where to compute. Default None: the model's device.
    verbose : bool
        Progress bars. Default False.

    Returns
    -------
    pandas.DataFrame
        One row per (cell type, position): ``track_celltype``, ``position``,
        ``n_peaks`` (cell types with a peak there), ``peak`` (bool: a peak in
        this cell type), ``observed`` (arcsinh), the five components, the
        prediction, the reference prediction and the gap.
    """
    from epitensor.store.registry import open_store

    model = load_model(model)
    store = open_store(store)
    if axis is None:
        if len(store.axes) != 1:
            raise EpitensorError(
                f"store {store.url} has {len(store.axes)} axes; name one of {store.axes}"
            )
        axis = store.axes[0]
    if axis not in model.layout_.axes:
        raise EpitensorError(f"axis {axis!r} of the store is not in the model's layout")
    assay_idx = _name_index(assay, model.assays_, "assay")
    if celltypes is None:
        celltypes = [c for c in model.celltypes_ if store.has_track(c, assay)]
    for c in celltypes:
        _name_index(c, model.celltypes_, "cell type")
        if not store.has_track(c, assay):
            raise EpitensorError(f"track ({c}, {assay}) is not observed in {store.url}")
    if len(celltypes) < 2:
        raise EpitensorError(
            f"peak attributions need at least two cell types with {assay} observed; "
            f"got {list(celltypes)}"
        )
    rows = [store.track_index(c, assay) for c in celltypes]
    observed = store.read_block(axis, start, end, tracks=rows)
    peaks = observed >= PEAK_THRESHOLD
    n_peaks = peaks.sum(axis=0)
    chosen = _stratified_positions(n_peaks, int(n_per_group), np.random.default_rng(seed))
    genome = model.genome_module(axis)
    tables = []
    for i, celltype in enumerate(progress(celltypes, desc="cell types", verbose=verbose)):
        table = integrated_gradients(
            model.module_,
            _name_index(celltype, model.celltypes_, "cell type"),
            assay_idx,
            chosen + start,
            axis,
            reference=reference,
            n_steps=n_steps,
            batch_size=batch_size,
            device=device,
            genome=genome,
        )
        table.insert(0, "track_celltype", celltype)
        table.insert(2, "n_peaks", n_peaks[chosen])
        table.insert(3, "peak", peaks[i, chosen])
        table.insert(4, "observed", observed[i, chosen])
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def peak_attribution_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean attribution of each component by peak count and peak presence.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`peak_attributions`.

    Returns
    -------
    pandas.DataFrame
        One row per (``n_peaks``, ``peak``) with ``n`` (cell type x position
        pairs) and the mean of each component and of the prediction
        (arcsinh units).
    """
    columns = [*COMPONENTS, "prediction"]
    grouped = table.astype({c: "float64" for c in columns}).groupby(["n_peaks", "peak"])
    summary = grouped[columns].mean()
    summary.insert(0, "n", grouped.size())
    return summary.reset_index()


# figures ----------------------------------------------------------------------------


def _save(fig, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def plot_explanation(
    table: pd.DataFrame,
    path: str | os.PathLike,
    observed: Mapping[str, np.ndarray] | None = None,
    tss: pd.DataFrame | None = None,
    title: str | None = None,
) -> None:
    """The imputed signal and its five attribution tracks, per cell type (the paper's Fig. 6).

    One column per cell type: the imputed signal on top (the observed signal
    drawn as a line where given), then one panel per component. Rows share
    their y scale across cell types, so the columns compare directly.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`explain` (one or more cell types, one region).
    path : str or path-like
        PNG to write (atomically).
    observed : mapping of str to numpy.ndarray, shape=(n_bins,), optional
        Observed arcsinh signal per cell type, bins in the order of ``table``.
        Default None: none drawn.
    tss : pandas.DataFrame, optional
        ``chrom``, ``pos`` (bp) and optionally ``strand`` of TSSs to mark on
        the top panels. Default None.
    title : str, optional
        Figure title. Default None: the assay and region.
    """
    celltypes = list(dict.fromkeys(table.track_celltype))
    chrom = str(table.chrom.iloc[0])
    assay = str(table.track_assay.iloc[0])
    n_rows = 1 + len(COMPONENTS)
    fig, axes = subplots(
        n_rows,
        len(celltypes),
        figsize=(6.0 * len(celltypes) + 1.5, 1.25 * n_rows + 1.2),
        sharex=True,
        sharey="row",
        squeeze=False,
        gridspec_kw={"height_ratios": [2.0] + [1.0] * len(COMPONENTS)},
    )
    for col, celltype in enumerate(celltypes):
        rows = table[table.track_celltype == celltype]
        x = (rows.start.to_numpy() + rows.end.to_numpy()) / 2e6
        top = axes[0, col]
        top.fill_between(x, rows.prediction, color="#1f77b4", lw=0, label="imputed")
        if observed is not None and celltype in observed:
            top.plot(x, observed[celltype], color="#222222", lw=0.8, label="observed")
            top.legend(loc="upper right", fontsize=7, frameon=False)
        if tss is not None:
            here = tss[(tss.chrom == chrom) & tss.pos.between(rows.start.min(), rows.end.max())]
            for site in here.itertuples():
                top.axvline(site.pos / 1e6, color="#aaaaaa", lw=0.8, ls="--", zorder=0)
        top.set_title(f"{celltype} {assay}", fontsize=10)
        for row, component in enumerate(COMPONENTS, start=1):
            ax = axes[row, col]
            values = rows[component].to_numpy()
            ax.fill_between(x, values, color=COMPONENT_COLOURS[component], lw=0)
            ax.axhline(0, color="#555555", lw=0.5)
        axes[-1, col].set_xlabel(f"{chrom} position (Mb, hg19)")
        axes[-1, col].ticklabel_format(axis="x", useOffset=False, style="plain")
    axes[0, 0].set_ylabel("imputed\narcsinh(-log10 p)", fontsize=8)
    for row, component in enumerate(COMPONENTS, start=1):
        axes[row, 0].set_ylabel(f"{COMPONENT_LABELS[component]}\n(arcsinh)", fontsize=8)
    for ax in axes.ravel():
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=7)
    region = f"{chrom}:{int(table.start.min()):,}-{int(table.end.max()):,}"
    fig.suptitle(title or f"{assay} attributions by model component, {region}", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


def plot_peak_attributions(
    summary: pd.DataFrame, path: str | os.PathLike, title: str | None = None
) -> None:
    """Mean attribution by peak count, peak present vs absent (the paper's Fig. S8).

    Parameters
    ----------
    summary : pandas.DataFrame
        Output of :func:`peak_attribution_summary`.
    path : str or path-like
        PNG to write (atomically).
    title : str, optional
        Figure title. Default None: a generic one.
    """
    fig, axes = subplots(1, len(COMPONENTS), figsize=(3.0 * len(COMPONENTS), 3.2), sharey=True)
    for ax, component in zip(axes, COMPONENTS):
        for peak, style in (
            (True, dict(color="#d62728", marker="o")),
            (False, dict(color="#1f77b4", marker="s")),
        ):
            rows = summary[summary.peak == peak].sort_values("n_peaks")
            ax.plot(rows.n_peaks, rows[component], label="peak" if peak else "no peak", **style)
        ax.axhline(0, color="#555555", lw=0.5)
        ax.set_title(COMPONENT_LABELS[component], fontsize=10)
        ax.set_xlabel("cell types with a peak")
        ax.set_xticks(sorted(summary.n_peaks.unique()))
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("mean attribution (arcsinh)")
    axes[-1].legend(fontsize=8, frameon=False)
    fig.suptitle(title or "Mean attribution by peak count and presence", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


# files ------------------------------------------------------------------------------


def write_explanation(
    model,
    celltypes: str | Sequence[str],
    assay: str,
    region: str,
    out: str | os.PathLike,
    tsv: str | os.PathLike | None = None,
    reference: str | np.ndarray = "mean",
    n_steps: int = DEFAULT_STEPS,
    device: str | None = None,
    verbose: bool = False,
) -> pd.DataFrame:
    """Explain a region and write the figure (PNG) and optionally the table (TSV).

    Parameters
    ----------
    model : epitensor.estimators.avocado.Avocado or str or path-like
        A fitted model, or the directory of a saved one.
    celltypes, assay, region, reference, n_steps, device, verbose
        As for :func:`explain`.
    out : str or path-like
        The PNG figure (:func:`plot_explanation`).
    tsv : str or path-like, optional
        Where to write the attribution table as TSV. Default None: not written.

    Returns
    -------
    pandas.DataFrame
        The table of :func:`explain`.
    """
    table = explain(
        model,
        celltypes,
        assay,
        region,
        reference=reference,
        n_steps=n_steps,
        device=device,
        verbose=verbose,
    )
    plot_explanation(table, out)
    if tsv is not None:
        atomic_write_bytes(tsv, table.to_csv(sep="\t", index=False).encode())
    return table
