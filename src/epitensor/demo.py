"""The demo: the whole method on the bundled Roadmap sample, ending in one HTML report.

Steps (each with progress on stderr):

1. open the bundled 5 x 5 Roadmap pilot store;
2. run the standard benchmark split (DESIGN.md): train the model (``cpu-small``
   preset) and every baseline on 20 tracks, impute the 5 held-out tracks and
   score them with every metric;
3. write the held-out imputations to bigWig;
4. draw the figures (tracks at two loci, the training curve, UMAP maps of the
   latent factors, metrics by method);
5. annotate the genome from the model's genome factors (:func:`epitensor.workflows.annotate.annotate`,
   :data:`ANNOTATION_PARAMS`): the states as BED9, their enrichment for the bundled
   annotations (E116 ChromHMM included) and the states under the tracks at the
   promoter locus of step 4;
6. assemble ``report.html``, one self-contained page.

All genomic intervals are 0-based, half-open; positions are 25-bp bins of the
single ``"pilot"`` axis.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import EpitensorError, EpitensorWarning, atomic_directory
from epitensor.estimators.ensemble import DEFAULT_METHOD
from epitensor.genome.annotations import read_tss
from epitensor.genome.coordinates import Layout, Locus, read_bed
from epitensor.store.compendium import Store
from epitensor.workflows.annotate import StateAnnotation, output_paths

__all__ = [
    "ANNOTATION_PARAMS",
    "LOCUS_ASSAYS",
    "QUICK_PARAMS",
    "QUICK_REGIONS",
    "annotation_panels",
    "factor_maps",
    "pick_broad_domain",
    "pick_promoter",
    "region_subset",
    "run_demo",
]


def _locus_at(layout: Layout, axis: str, centre: int, width: int, label: str) -> Locus:
    """A ``width``-bin window centred on axis position ``centre``, kept inside its region."""
    regions = layout.axis_regions(axis)
    row = regions[(regions.offset <= centre) & (regions.offset + regions.n_bins > centre)].iloc[0]
    width = min(width, int(row.n_bins))
    start = int(np.clip(centre - width // 2, row.offset, row.offset + row.n_bins - width))
    return Locus(
        axis, start, start + width, row.chrom, int(row.first_bin + start - row.offset), label
    )


def pick_promoter(
    observed: np.ndarray, layout: Layout, axis: str, tss_path: str | os.PathLike, width: int = 800
) -> Locus:
    """The active promoter to draw: the GENCODE TSS with the strongest observed signal.

    Parameters
    ----------
    observed : numpy.ndarray, shape=(n_positions,), arcsinh
        A promoter mark (H3K4me3) on ``axis``.
    layout : Layout
        The store's layout.
    axis : str
        Axis of ``observed``.
    tss_path : str or path-like
        GFF or BED6 of transcription start sites.
    width : int
        Window width in bins. Default 800 (20 kb).

    Returns
    -------
    Locus
    """
    tss = read_tss(tss_path)
    runs = layout.locate_many(
        pd.DataFrame({"chrom": tss.chrom, "start": tss.pos, "end": tss.pos + 1})
    )
    positions = np.unique(runs.axis_start[runs.axis == axis].to_numpy())
    if positions.size == 0:
        raise EpitensorError(f"no TSS of {tss_path} falls on axis {axis!r} of the layout")
    # Score each TSS by the signal over +-1 kb so a single spike does not win.
    smooth = np.convolve(observed, np.ones(81) / 81, mode="same")
    best = int(positions[np.argmax(smooth[positions])])
    return _locus_at(layout, axis, best, width, "active promoter")


def pick_broad_domain(observed: np.ndarray, layout: Layout, axis: str, width: int = 6000) -> Locus:
    """The broad domain to draw: the window with the highest mean of a broad mark.

    Parameters
    ----------
    observed : numpy.ndarray, shape=(n_positions,), arcsinh
        A broad mark (H3K27me3, H3K36me3 or H3K9me3) on ``axis``.
    layout : Layout
        The store's layout.
    axis : str
        Axis of ``observed``.
    width : int
        Window width in bins. Default 6000 (150 kb).

    Returns
    -------
    Locus
    """
    window = np.convolve(observed, np.ones(width) / width, mode="same")
    return _locus_at(layout, axis, int(np.argmax(window)), width, "broad domain")


def _element_windows(table: pd.DataFrame, half: int) -> pd.DataFrame:
    """Intervals of ``half`` bp either side of each interval's centre (0-based, half-open)."""
    centre = ((table.start + table.end) // 2).to_numpy()
    return pd.DataFrame(
        {"chrom": table.chrom.to_numpy(), "start": centre - half, "end": centre + half}
    ).drop_duplicates(ignore_index=True)


def factor_maps(
    model, annotations_dir: str | os.PathLike, out: Path, max_points: int = 3000, seed: int = 0
) -> dict[str, Path]:
    """UMAP maps of the cell type, assay and genome factors (promoters vs enhancers).

    One point per element: its genome factors averaged over TSS +- 250 bp
    (GENCODE v19 promoters) or over the centre +- 250 bp of an E116 ChromHMM
    enhancer state, as the paper's Fig. 3.

    Parameters
    ----------
    model : Avocado
        A fitted model.
    annotations_dir : str or path-like
        Folder with ``gencode.v19.TSS.notlow.gff.gz`` and ``E116_chromhmm25.bed.gz``.
    out : Path
        Folder for the PNGs.
    max_points : int
        Positions drawn per class. Default 3000.
    seed : int
        Sampling and UMAP seed. Default 0.

    Returns
    -------
    dict of str to Path
        ``celltypes``, ``assays`` and ``genome`` figure paths.
    """
    from epitensor.genome.annotations import enhancer_intervals
    from epitensor.viz.plots import plot_embedding_map, umap_2d
    from epitensor.workflows.impute import region_factors

    paths = {}
    for name, table, names in (
        ("celltypes", model.celltype_embedding_, model.celltypes_),
        ("assays", model.assay_embedding_, model.assays_),
    ):
        coords = umap_2d(table, seed=seed)
        paths[name] = out / f"umap_{name}.png"
        plot_embedding_map(
            paths[name],
            coords,
            names,
            f"UMAP of the {name[:-1].replace('celltype', 'cell type')} factors",
            annotate=True,
        )
    directory = Path(annotations_dir)
    tss = read_tss(directory / "gencode.v19.TSS.notlow.gff.gz")
    tss_table = pd.DataFrame({"chrom": tss.chrom, "start": tss.pos, "end": tss.pos + 1})
    enhancers = enhancer_intervals(directory / "E116_chromhmm25.bed.gz")
    rng = np.random.default_rng(seed)
    tables, labels = [], []
    for label, elements in (
        ("promoter (TSS ± 250 bp)", tss_table),
        ("enhancer (E116 ChromHMM)", enhancers),
    ):
        with warnings.catch_warnings():  # elements outside the layout are expected and dropped
            warnings.simplefilter("ignore", EpitensorWarning)
            rows = region_factors(model, _element_windows(elements, 250), verbose=False)
        rows = rows.iloc[:, 4:].dropna().to_numpy(dtype=np.float32)
        rows = rows[rng.permutation(len(rows))[:max_points]]
        tables.append(rows)
        labels += [label] * len(rows)
    factors = np.concatenate(tables)
    coords = umap_2d(factors, seed=seed)
    paths["genome"] = out / "umap_genome.png"
    plot_embedding_map(
        paths["genome"], coords, labels, "UMAP of the genome factors (25 bp + 250 bp + 5 kbp)"
    )
    return paths


QUICK_REGIONS = 4
"""Pilot regions the quick demo trains on (80,000 positions of the 1.1 M)."""

QUICK_PARAMS = {"n_epochs": 2, "n_nodes": 64}
"""Preset overrides of the quick demo: the pipeline in about a minute, not a good model."""


def region_subset(store: Store, n_regions: int, path: str | os.PathLike) -> Store:
    """A store holding the first ``n_regions`` regions of a one-axis region store.

    Parameters
    ----------
    store : Store
        A store with a single axis (such as the bundled pilot store).
    n_regions : int
        Regions to keep, in axis order.
    path : str or path-like
        Where to write the new store (replaced if present).

    Returns
    -------
    Store
        Opened read-only, same tracks, genome and chromosome sizes.
    """
    (axis,) = store.axes
    regions = store.layout.axis_regions(axis).head(n_regions).copy()
    blocks = [store.read_block(axis, r.offset, r.offset + r.n_bins) for r in regions.itertuples()]
    regions["offset"] = np.concatenate([[0], np.cumsum(regions.n_bins.to_numpy())[:-1]])
    length = int(regions.n_bins.sum())
    layout = Layout(regions, {axis: length}, store.resolution, f"{store.layout.name}-{n_regions}")
    with atomic_directory(path, overwrite=True) as tmp:
        subset = Store.create(tmp, layout, store.chrom_sizes, genome=store.genome, overwrite=True)
        subset.add_tracks(store.track_names(), {axis: np.concatenate(blocks, axis=1)}, store.url)
    return Store.open(path)


ANNOTATION_PARAMS = {"n_states": 10, "sample_size": 50_000}
"""The demo's annotation: K = 10 cell type-independent states (as in the user guide, docs/guide/annotate.md), the HMM
fitted on 50,000 sampled bins (a quarter of the default, so the step takes seconds)
and every position decoded."""

LOCUS_ASSAYS = ("H3K4me3", "H3K4me1", "H3K36me3", "H3K27me3", "H3K9me3")
"""Marks drawn above the states at the promoter locus, in this order."""


def annotation_panels(
    model, promoter_track: tuple[str, str], celltype: str = "E116"
) -> list[tuple[str, str, str]]:
    """Signal panels above the states at the promoter locus (see ``plot_locus_states``).

    The promoter track observed and imputed, then each of :data:`LOCUS_ASSAYS`
    the model knows in ``celltype``: observed where the model was trained on it,
    imputed where it was held out (what the model gives in its place).

    Parameters
    ----------
    model : Avocado
        The fitted model.
    promoter_track : (str, str)
        ``(celltype, assay)`` the promoter locus was picked on.
    celltype : str
        Cell type whose marks are drawn (the cell type of the ChromHMM
        segmentation beneath). Default ``"E116"``.

    Returns
    -------
    list of (str, str, str)
        ``(kind, celltype, assay)``, kind ``"observed"`` or ``"imputed"``.
    """
    held = {tuple(t) for t in model.holdout_tracks_}
    panels = [("observed", *promoter_track), ("imputed", *promoter_track)]
    for assay in LOCUS_ASSAYS:
        if assay in model.assays_ and celltype in model.celltypes_:
            kind = "imputed" if (celltype, assay) in held else "observed"
            panels.append((kind, celltype, assay))
    return panels


def _gene_tables(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    genes = read_bed(directory / "RefSeqGene.hg19.bed.gz")
    tss = read_tss(directory / "gencode.v19.TSS.notlow.gff.gz").rename(columns={"pos": "start"})
    return genes, tss


def _track_figures(
    result, store: Store, out: Path, directory: Path, intervals=None
) -> tuple[list[tuple[Path, str]], Locus, tuple[str, str]]:
    """Observed, model and average-activity signal at an active promoter and a broad domain.

    With ``intervals`` (the benchmark's
    :class:`~epitensor.evaluation.intervals.IntervalScorer`), the ensemble's
    panel carries its 90% prediction interval as a band, the observed signal
    drawn over it. Returns the figures with their captions, the promoter locus
    and the track it was picked on.
    """
    from epitensor.viz.plots import plot_tracks

    axis = store.axes[0]
    holdout = result.holdout
    promoter_track = next((t for t in holdout if t[1] == "H3K4me3"), holdout[0])
    broad_track = next(
        (t for t in holdout if t[1] in ("H3K27me3", "H3K36me3", "H3K9me3")), holdout[-1]
    )
    genes, tss = _gene_tables(directory)
    figures = []
    for track, pick in ((promoter_track, "promoter"), (broad_track, "broad")):
        observed = store.read_track(*track, axis=axis)
        if pick == "promoter":
            locus = promoter_locus = pick_promoter(
                observed, store.layout, axis, directory / "gencode.v19.TSS.notlow.gff.gz"
            )
        else:
            locus = pick_broad_domain(observed, store.layout, axis)
        window = slice(locus.start, locus.end)
        name = f"{track[0]} {track[1]}"
        panels = {f"observed {name}": observed[window]}
        for method in (DEFAULT_METHOD, "avocado", "average_activity"):
            if method in result.predictions:
                panels[f"{method} (imputed)"] = result.predictions[method][track][window]
        bands = _band(result, intervals, track, axis, window)
        path = out / f"tracks_{pick}.png"
        plot_tracks(
            path,
            locus.chrom,
            locus.bp_starts(store.resolution),
            panels,
            f"Held-out {name} at {locus.label} {locus.region} (hg19)",
            genes=genes,
            tss=tss,
            resolution=store.resolution,
            bands=bands,
        )
        figures.append(
            (
                path,
                f"{name} (held out: never seen in training) around {locus.label} {locus.region}: "
                f"observed signal, the model's imputation and the average-activity baseline; "
                + (
                    "the band around the ensemble is its 90% prediction interval, the observed "
                    "signal drawn over it; "
                    if bands
                    else ""
                )
                + "RefSeq genes and GENCODE TSS (arrows give the strand) beneath.",
            )
        )
    return figures, promoter_locus, promoter_track


def _band(result, intervals, track, axis, window) -> dict:
    """The ensemble panel's 90% interval over ``window``, or nothing without a calibration."""
    if intervals is None or intervals.calibration is None:
        return {}
    if DEFAULT_METHOD not in result.predictions:
        return {}
    average = intervals.average.predict(*track, axis)[window]
    prediction = result.predictions[DEFAULT_METHOD][track][window]
    trees = result.predictions["chromimpute_gbt"][track][window]
    bounds = intervals.bounds(track, prediction, trees, average, 0.9)
    return {f"{DEFAULT_METHOD} (imputed)": bounds}


@dataclass
class _Annotation:
    """What the demo's annotation step gives the report."""

    result: StateAnnotation
    seconds: float
    locus: Locus
    paths: dict[str, Path]


def _annotate_demo(
    model, store: Store, locus: Locus, promoter_track, out: Path, directory: Path, verbose: bool
) -> _Annotation:
    """Cell type-independent states of the demo's model, their files and the locus figure."""
    from epitensor.workflows.annotate import annotate, plot_locus_states

    _say(verbose, "demo: annotating the genome from the genome factors")
    folder = out / "annotation"
    started = time.perf_counter()
    result = annotate(
        model,
        annotations=directory,
        out=folder / "states.bed",
        overwrite=True,
        verbose=verbose,
        **ANNOTATION_PARAMS,
    )
    seconds = time.perf_counter() - started
    paths = output_paths(folder / "states.bed")
    paths["locus_png"] = folder / "locus_promoter.png"
    plot_locus_states(
        paths["locus_png"],
        model,
        store,
        locus,
        {"genome-factor states": result},
        annotation_panels(model, promoter_track),
        chromhmm=directory / "E116_chromhmm25.bed.gz",
        genes=read_bed(directory / "RefSeqGene.hg19.bed.gz"),
        title=f"States at the active promoter {locus.region} (hg19)",
    )
    return _Annotation(result, seconds, locus, paths)


def _report_annotation(report, annotation: _Annotation) -> None:
    """The genome annotation from the latent space (epitensor.workflows.annotate) in the report."""
    from epitensor.workflows.annotate import element_states, enrichment_summary

    result, params = annotation.result, annotation.result.params
    n_positions = sum(int((s >= 0).sum()) for s in result.states.values())
    report.heading("Genome annotation from the latent space")
    report.paragraph(
        f"epitensor annotate segmented all {n_positions:,} positions into {result.n_states} "
        "states from the model's genome factors alone (25 bp, 250 bp and 5 kbp, "
        f"standardised, {params['n_components']} principal components; no cell type in the "
        f"input): a Gaussian HMM fitted on {params['sampled_bins']:,} sampled bins "
        f"({params['em_iterations']} EM iterations), then Viterbi-decoded along each region, "
        f"in {annotation.seconds:.0f} s. States are numbered by decreasing mean imputed "
        "signal. Each is scored against the bundled annotations as ChromHMM's overlap "
        "enrichment does: (bins of the state in the annotation / bins of the state) / (bins "
        "in the annotation / all bins). E116 columns are Roadmap's 25-state ChromHMM of "
        "GM12878. Files in annotation/: states.bed (BED9, one colour per state, for a "
        "genome browser), states.enrichment.tsv, states.signal.tsv, the heatmaps and "
        "states.json (the parameters)."
    )
    roles = element_states(result.enrichment)
    sentences, weak = [], False
    for element, bar in (("promoter", 10.0), ("enhancer", 3.0)):
        if element not in roles.index:
            continue
        row = roles.loc[element]
        text = (
            f"{element.capitalize()}-like: {row.state} ({row['genome %']:.1f}% of the bins), "
            f"{row.fold:.1f}x enriched for {row.annotation}"
        )
        if pd.notna(row["strongest member"]):
            text += f" ({row['member fold']:.1f}x for {row['strongest member']})"
        if element == "promoter" and "TSS" in result.enrichment.columns:
            text += f", {result.enrichment.at[row.state, 'TSS']:.1f}x for the bin of a GENCODE TSS"
        if not row.fold > bar:  # bars the demo model clears in docs/annotate/
            text += f"; below {bar:.0f}x, so only weakly {element}-like"
            weak = True
        sentences.append(text + ".")
    if sentences:
        report.paragraph(" ".join(sentences), note=weak)
    report.table(
        enrichment_summary(result.enrichment),
        caption="Fold enrichment of each state (genome %: share of the bins in the state).",
        float_format="{:.1f}",
    )
    paths = annotation.paths
    report.figure(
        paths["enrichment_png"],
        "Fold enrichment of the states for every annotation, each column shaded from its "
        "own minimum to its maximum (ChromHMM's overlap-enrichment heatmap).",
    )
    report.figure(
        paths["locus_png"],
        f"The states under the tracks at the active promoter {annotation.locus.region}: the "
        "promoter track observed and imputed, E116's marks (imputed where the model held them "
        "out), the genome-factor states and Roadmap's E116 ChromHMM coarsened to its state "
        "families (red: promoter, orange: enhancer, green: transcribed, grey: Polycomb, "
        "blue-grey: heterochromatin, white: quiescent), RefSeq genes at the bottom.",
    )
    report.figure(
        paths["signal_png"],
        "Mean imputed signal (arcsinh) of each state per cell type and assay, over the "
        "fitted sample of bins.",
    )


def _report_intervals(report, result) -> None:
    """Coverage and interval score of the ensemble's prediction intervals, and the reliability diagram."""
    from epitensor.evaluation.intervals import SCORER_NAME, interval_summary

    table = result.extra.get(SCORER_NAME)
    if table is None or table.empty:
        return
    summary = interval_summary(table)
    shown = summary[summary.level.isin([0.8, 0.9]) & summary.group.isin(["all"])]
    shown = shown.set_index(["subset", "method", "level"])[["coverage", "width", "winkler"]]
    shown.index = [f"{s} bins, {m} width, {round(100 * x)}%" for s, m, x in shown.index]
    report.heading("How far to trust each imputed value: prediction intervals")
    report.paragraph(
        "epitensor impute --interval 0.9 writes each imputed track's 90% prediction interval "
        "beside it (lower90 / upper90 bigWigs). The intervals are calibrated on the training "
        "tracks alone, each left out in turn (epitensor.estimators.intervals), and scored "
        "here on the held-out tracks: coverage (share of observed bins inside; nominal 80% "
        "and 90%), mean width and the interval score (lower is better), for a per-bin width "
        "(from the disagreement of the ensemble's parts and the signal level) and for one "
        "width per assay. 'top1' bins are the top 1% of each observed track: the peaks, "
        "which every imputation under-predicts, so coverage there is lower than nominal."
    )
    report.table(shown, caption="Held-out bins of all tracks pooled (arcsinh scale).")
    if result.out_dir is not None and (result.out_dir / "reliability.png").is_file():
        report.figure(
            result.out_dir / "reliability.png",
            "Reliability diagram: nominal against empirical coverage of the held-out bins "
            "(dotted: the top 1% of observed bins); on the diagonal is calibrated.",
        )


def _report_pairwise(report, pairwise) -> None:
    """The pairwise relationships between marks (epitensor.evaluation.relationships) in the report."""
    from epitensor.evaluation.relationships import pairwise_summary, pairwise_wide

    report.heading("Pairwise relationships between marks")
    report.table(
        pairwise_summary(pairwise),
        caption="Mean |r_method - r_observed| over the cell types with a held-out track of the "
        "pair (Pearson across promoters / genes of the per-element mean signal; lower is "
        "better). 'observed r': the observed correlation, averaged over those cell types.",
    )
    report.table(pairwise_wide(pairwise), caption="Pearson r per cell type.")
    for name, why in pairwise.attrs.get("skipped", {}).items():
        report.paragraph(f"Not scored: {name} ({why}).")


def _summary_sentences(result, quick: bool) -> str:
    """Two sentences for the top of the report: what was imputed, and how well.

    The numbers are the benchmark's own means over the held-out tracks (arcsinh scale).
    """
    summary = result.summary
    ours = next((m for m in (DEFAULT_METHOD, "avocado") if m in summary.columns), None)
    tracks = ", ".join(f"{c} {a}" for c, a in result.holdout)
    label = {
        DEFAULT_METHOD: f"the default imputation ({DEFAULT_METHOD}: the model, ChromImpute-style "
        "trees and average activity, what epitensor impute writes)",
        "avocado": "the model",
    }.get(ours, "each method")
    first = (
        f"The demo imputed {len(result.holdout)} held-out tracks of the bundled Roadmap sample "
        f"({tracks}) from the other {len(result.train)} tracks with {label}."
    )
    if ours is None:
        return first
    baselines = [m for m in summary.columns if m not in (DEFAULT_METHOD, "avocado")]
    parts = []
    for metric, name, pick in (("gwcorr", "Pearson r", max), ("mse", "MSE", min)):
        if metric not in summary.index or pd.isna(summary.at[metric, ours]):
            continue
        scores = summary.loc[metric, baselines].dropna()
        text = f"{name} {summary.at[metric, ours]:.3f}"
        if len(scores):
            best = pick(scores.index, key=lambda m: scores[m])
            text += f" (best baseline: {best}, {scores[best]:.3f})"
        parts.append(text)
    won = sum(result.best.get(m) == ours for m in summary.index)
    second = "Mean over them (arcsinh scale): " + " and ".join(parts) + "; " if parts else ""
    second += (
        f"{'it is' if parts else 'It is'} the best method on {won} of {len(summary.index)} metrics."
    )
    if quick:
        second += " (Quick demo: these numbers check the pipeline, not the method.)"
    return f"{first} {second}"


def _write_report(
    result,
    out: Path,
    figures: list[tuple[Path, str]],
    seconds: float,
    quick: bool,
    annotation: _Annotation | None = None,
) -> Path:
    from epitensor.viz.report import Report

    summary = result.summary
    lower = {m for m in summary.index if m.startswith("mse")}
    report = Report("epitensor demo: imputing held-out Roadmap tracks")
    report.paragraph(
        "epitensor trained a multi-scale deep tensor factorization model (the Avocado method) "
        f"on {len(result.train)} observed tracks of the bundled Roadmap sample (5 cell types x "
        "5 histone marks over the ENCODE pilot regions of hg19, arcsinh(-log10 p) in 25-bp bins), "
        f"held out {len(result.holdout)} tracks ("
        + ", ".join(f"{c} {a}" for c, a in result.holdout)
        + "), imputed them, and scored the imputations against the observed tracks next to "
        "simple baselines trained on the same tracks. "
        f"The whole run took {seconds / 60:.1f} minutes."
    )
    module = getattr(getattr(result, "model", None), "module_", None)
    if getattr(module, "average", "none") == "blend":
        w = module.average_weight
        report.paragraph(
            f"The model's imputation (avocado below) is {w:g} x the network's output + "
            f"{1 - w:g} x the assay's average activity over the training cell types at the "
            'position (the cpu-small preset, average="blend"): under 5-fold cross-validation '
            "this beat both the network alone and average activity on more metrics than "
            "either (docs/validation.md, Cross-validation). --preset paper trains the paper's network alone."
        )
    if DEFAULT_METHOD in summary.columns:
        report.paragraph(
            f"{DEFAULT_METHOD} below is what epitensor impute writes by default: the ensemble "
            "(epitensor.estimators.ensemble) that averages the model with the ChromImpute-style "
            "trees and lifts the mean toward the assay's average activity; avocado is the model "
            "alone, and every part and baseline has its own row. Under 5-fold "
            "cross-validation the ensemble beat average activity on every challenge metric and "
            f"the trees on most (docs/validation.md, Cross-validation). The imputed bigWigs of this demo are "
            f"{DEFAULT_METHOD}'s, and score as the rows named so."
        )
    if quick:
        report.paragraph(
            "This is the quick demo: a tiny network trained for a few epochs on a few regions. "
            "It checks the pipeline; its numbers say nothing about the method.",
            note=True,
        )
    ours = next((m for m in (DEFAULT_METHOD, "avocado") if m in summary.columns), None)
    if ours is not None:
        won = [m for m in summary.index if result.best.get(m) == ours]
        lost = [
            f"{m} ({result.best[m]})" for m in summary.index if m not in won and result.best.get(m)
        ]
        label = f"The default imputation ({DEFAULT_METHOD})" if ours != "avocado" else "The model"
        verdict = f"{label} is best on {len(won)} of {len(summary.index)} metrics"
        verdict += f" ({', '.join(won)})." if won else "."
        if lost:
            verdict += " A baseline is better on " + ", ".join(lost) + "."
        report.paragraph(verdict, note=bool(lost))
    report.summary(_summary_sentences(result, quick))
    report.heading("Held-out tracks: mean over tracks, every method")
    report.table(
        summary,
        caption="Mean over the held-out tracks. MSE metrics: lower is better; "
        "all others: higher is better (arcsinh scale).",
    )
    report.bullets(
        [
            f"{m}: best {result.best[m]}" + (" (lower is better)" if m in lower else "")
            for m in summary.index
            if m in result.best
        ]
    )
    if getattr(result, "ranking", None) is not None:
        left_out = result.ranking.attrs.get("left_out", [])
        report.heading("Ranked by the ENCODE Imputation Challenge's rule")
        report.table(
            result.ranking,
            caption="Per held-out track and bootstrap, each method's ranks on the nine challenge "
            "metrics give sum(log(rank / (n + 1))), ranked again; a method's bootstrap score is "
            "the mean over tracks of min(0.5, rank / (n + 1)) (lower is better) and its rank "
            f"the second best over the {len(left_out)} bootstraps, each leaving out one group "
            "of chromosomes (the challenge's rule, evaluation.ranking).",
        )
    if getattr(result, "by_assay", None) is not None:
        report.heading("Per assay")
        report.table(
            result.by_assay,
            caption="Mean over each assay's held-out tracks (n_tracks), every metric.",
        )
    per_track = result.table.pivot_table(
        index=["celltype", "assay", "method"], columns="metric", values="value", sort=False
    )
    report.heading("Per held-out track")
    report.table(per_track[[c for c in summary.index if c in per_track.columns]])
    if result.pairwise is not None and not result.pairwise.empty:
        _report_pairwise(report, result.pairwise)
    _report_intervals(report, result)
    if annotation is not None:
        _report_annotation(report, annotation)
    report.heading("Figures")
    for path, caption in figures:
        report.figure(path, caption)
    return report.write(out / "report.html")


def run_demo(
    out: str | os.PathLike = "demo-output", quick: bool = False, verbose: bool = True
) -> Path:
    """Run the demo on the bundled Roadmap sample; return the path of ``report.html``.

    Parameters
    ----------
    out : str or path-like
        Output folder (created; its demo files are replaced). Default ``"demo-output"``.
    quick : bool
        The same pipeline in about a minute: :data:`QUICK_REGIONS` regions and
        :data:`QUICK_PARAMS`. Default False: the ``cpu-small`` preset on every region.
    verbose : bool
        Progress on stderr. Default True.

    Returns
    -------
    pathlib.Path
        ``out/report.html``. Beside it: ``benchmark/`` (tables, metrics figures),
        ``model/`` (the trained model), ``imputed/`` (held-out tracks as bigWig),
        ``annotation/`` (``states.bed`` and its tables, heatmaps and locus figure)
        and the PNG figures.
    """
    from epitensor.evaluation.benchmark import run_benchmark
    from epitensor.evaluation.intervals import SCORER_NAME, interval_scorer
    from epitensor.evaluation.options import BenchmarkOptions
    from epitensor.genome.pilot import pilot_annotations_dir
    from epitensor.store.datasets import roadmap_pilot
    from epitensor.viz.plots import plot_training_curve
    from epitensor.workflows.impute import impute
    from epitensor.workflows.options import ImputeOptions

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = roadmap_pilot()
    if quick:
        store = region_subset(store, QUICK_REGIONS, out / "quick-store.zarr")
    _say(verbose, f"demo: benchmark on {store.layout.n_positions:,} positions (standard split)")
    benchmark = BenchmarkOptions(
        split="standard",
        preset="cpu-small",
        model_params={**(QUICK_PARAMS if quick else {}), "verbose": verbose},
        parafac_epochs=1 if quick else 10,  # the default imputation scored as epitensor
        overwrite=True,
        verbose=verbose,
    )
    intervals = interval_scorer()  # the default rule's; calibrated on the training tracks
    result = run_benchmark(
        store, out / "benchmark", options=benchmark, scorers={SCORER_NAME: intervals}
    )
    model = result.model
    model.save(out / "model", overwrite=True)
    _say(verbose, "demo: writing the held-out imputations (the default: the ensemble) to bigWig")
    # the benchmark's ensemble (scored as epitensor), its trees already fitted
    imputation = ImputeOptions(trees_store=result.ensemble, overwrite=True, verbose=verbose)
    impute(out / "model", result.holdout, out / "imputed", options=imputation)
    directory = pilot_annotations_dir()
    figures, promoter, promoter_track = _track_figures(result, store, out, directory, intervals)
    plot_training_curve(
        out / "training_curve.png", model.history_, "Training (stage 1)", model.holdout_mse_
    )
    figures.append(
        (
            out / "training_curve.png",
            "Mean squared error per epoch on the training tracks and on the held-out tracks "
            "(100,000 positions); the dashed line is the final model, the mean of the "
            "parameters over the late epochs.",
        )
    )
    figures.append(
        (
            result.out_dir / "metrics.png",
            "Every metric for every method on each held-out track.",
        )
    )
    maps = factor_maps(model, directory, out, max_points=500 if quick else 3000)
    captions = {
        "celltypes": "UMAP of the cell type factors.",
        "assays": "UMAP of the assay factors.",
        "genome": "UMAP of the genome factors of promoters (TSS ± 250 bp) and enhancers "
        "(centres ± 250 bp of E116 ChromHMM enhancer states), as the paper's Fig. 3.",
    }
    figures += [(path, captions[name]) for name, path in maps.items()]
    annotation = _annotate_demo(model, store, promoter, promoter_track, out, directory, verbose)
    report = _write_report(result, out, figures, time.perf_counter() - started, quick, annotation)
    _say(verbose, f"demo: report written to {report}")
    return report


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr, flush=True)
