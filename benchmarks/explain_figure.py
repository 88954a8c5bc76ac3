"""Attribution figures for the README: Fig. 6 (E116 vs E117 H3K4me3) and Fig. S8 on the pilot data.

Trains (or loads) a cpu-small Avocado model on the bundled Roadmap pilot
sample, picks an active promoter, explains 10 kb around it for GM12878 (E116)
and HeLa-S3 (E117), and summarises attributions by peak count for H3K4me3.
It also times the attributions of a 10-kb region (400 bins) with a paper-size
network against plain integrated gradients through the whole network, in the
same process.

Usage::

    nice -n 10 python benchmarks/explain_figure.py [--model DIR] [--out docs]

The promoter is the GENCODE TSS with the highest observed E116 H3K4me3
signal (mean over +-1 kb) among those where E117's averages below arcsinh 1:
an active promoter in GM12878 that HeLa-S3 leaves mostly unmarked.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from epitensor.genome.annotations import read_tss
from epitensor.genome.coordinates import Layout, chrom_sizes
from epitensor.genome.pilot import pilot_annotations_dir, pilot_layout
from epitensor.nn.module import COMPONENTS, AvocadoModule
from epitensor.store.compendium import Store
from epitensor.store.datasets import cache_dir, roadmap_pilot, roadmap_pilot_arrays
from epitensor.workflows.explain import (
    _quadrature,
    explain,
    integrated_gradients,
    peak_attribution_summary,
    peak_attributions,
    plot_explanation,
    plot_peak_attributions,
    reference_features,
)

HALF_WIDTH = 5_000  # bp each side of the TSS: a 10-kb region, 400 bins
ASSAY = "H3K4me3"
CELLTYPES = ["E116", "E117"]


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"

    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float | np.floating) else str(value)

    rows = ["| " + " | ".join(map(cell, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def chrom_store(path: Path, chrom: str) -> Store:
    """The bundled sample cut to the pilot regions of one chromosome (all 25 tracks)."""
    if path.exists():
        return Store.open(path)
    layout = pilot_layout()
    regions = layout.axis_regions("pilot")
    regions = regions[regions.chrom == chrom].copy()
    keep = np.concatenate([np.arange(r.offset, r.offset + r.n_bins) for r in regions.itertuples()])
    regions["offset"] = np.concatenate([[0], np.cumsum(regions.n_bins.to_numpy())[:-1]])
    regions["axis"] = "pilot"
    sub = Layout(regions, {"pilot": int(regions.n_bins.sum())}, 25, f"pilot-{chrom}")
    store = Store.create(path, sub, chrom_sizes("hg19"), genome="hg19")
    arrays = roadmap_pilot_arrays()
    names = list(arrays)
    store.add_tracks(names, {"pilot": np.stack([arrays[n][keep] for n in names])})
    return Store.open(path)


def fitted_model(path: Path, store, n_epochs: int | None):
    from epitensor.estimators.avocado import Avocado

    if (path / "config.json").is_file():
        return Avocado.load(path)
    start = time.perf_counter()
    overrides = {} if n_epochs is None else {"n_epochs": n_epochs}
    model = Avocado.from_preset("cpu-small", **overrides).fit(store)
    print(f"trained cpu-small {overrides} in {time.perf_counter() - start:.0f} s")
    model.save(path, overwrite=True)
    return model


def pick_promoter(store, layout) -> tuple[str, int]:
    """The TSS with the strongest E116 H3K4me3 among those where E117's is weak."""
    e116 = store.read_track("E116", ASSAY)
    e117 = store.read_track("E117", ASSAY)
    rows = []
    for tss in read_tss(pilot_annotations_dir() / "gencode.v19.TSS.notlow.gff.gz").itertuples():
        hit = layout.locate(tss.chrom, tss.pos, tss.pos + 1)
        if hit.empty:
            continue
        p = int(hit.axis_start.iloc[0])
        window = slice(max(0, p - 40), p + 40)
        rows.append((tss.chrom, tss.pos, e116[window].mean(), e117[window].mean()))
    table = pd.DataFrame(rows, columns=["chrom", "pos", "e116", "e117"])
    best = table.loc[table[table.e117 < 1.0].e116.idxmax()]
    print(
        f"promoter: {best.chrom}:{best.pos:,} (E116 {ASSAY} {best.e116:.2f}, "
        f"E117 {best.e117:.2f}, arcsinh, mean over +-1 kb)"
    )
    return str(best.chrom), int(best.pos)


def naive_ig(module, celltype, assay, positions, axis, n_steps, batch_size=8192):
    """Plain integrated gradients on the concatenated factors (the speed baseline)."""
    n = len(positions)
    pos = torch.as_tensor(positions)
    with torch.no_grad():
        x = module.features(torch.full((n,), celltype), torch.full((n,), assay), pos, axis)
    reference = reference_features(module, "mean")
    nodes, weights = _quadrature(n_steps, "gausslegendre")
    delta = x - reference
    total = torch.zeros_like(x)
    per_batch = max(1, batch_size // n_steps)
    for lo in range(0, n, per_batch):
        d = delta[lo : lo + per_batch]
        path = (reference + nodes[None, :, None] * d[:, None, :]).requires_grad_(True)
        (grad,) = torch.autograd.grad(module.network(path).sum(), path)
        total[lo : lo + per_batch] = (grad * weights[None, :, None]).sum(1)
    sizes = list(module.component_sizes.values())
    return torch.stack([c.sum(1) for c in (delta * total).split(sizes, 1)], 1)


def time_paper_size(n_steps: int = 64) -> None:
    torch.manual_seed(0)
    module = AvocadoModule(5, 5, {"toy": 20_000}).eval()  # 2 x 2048, untrained
    positions = np.arange(1_000, 1_400)  # 400 bins = 10 kb
    integrated_gradients(module, 1, 2, positions[:50], "toy", n_steps=n_steps)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    table = integrated_gradients(module, 1, 2, positions, "toy", n_steps=n_steps)
    ours, ours_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    expected = naive_ig(module, 1, 2, positions, "toy", n_steps)
    naive, naive_cpu = time.perf_counter() - start, time.process_time() - cpu
    difference = np.abs(table[list(COMPONENTS)].to_numpy() - expected.detach().numpy()).max()
    print(
        f"paper-size network (2 x 2048), 400 bins x {n_steps} steps, "
        f"{torch.get_num_threads()} threads: {ours:.2f} s wall, {ours_cpu:.2f} s CPU "
        f"(plain IG through the whole network: {naive:.2f} s wall, {naive_cpu:.2f} s CPU; "
        f"{naive / ours:.2f}x wall, {naive_cpu / ours_cpu:.2f}x CPU); "
        f"max difference {difference:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=cache_dir() / "explain-cpu-small")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--per-group", type=int, default=200)
    parser.add_argument(
        "--chrom",
        default=None,
        help="train on this chromosome's pilot regions only (a smaller, faster sample)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override cpu-small's epochs")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    if not args.skip_timing:
        time_paper_size()
    if args.chrom is None:
        store = roadmap_pilot()
    else:
        store = chrom_store(cache_dir() / f"roadmap-pilot-{args.chrom}.zarr", args.chrom)
    model = fitted_model(args.model, store, args.epochs)
    chrom, pos = pick_promoter(store, model.layout_)
    region = f"{chrom}:{pos - HALF_WIDTH}-{pos + HALF_WIDTH}"
    start = time.perf_counter()
    table = explain(model, CELLTYPES, ASSAY, region, n_steps=args.steps)
    print(
        f"explained {region} for {CELLTYPES} in {time.perf_counter() - start:.2f} s; "
        f"max |gap| {table.gap.abs().max():.2e}"
    )
    lo, hi = int(table.position.min()), int(table.position.max()) + 1
    observed = {c: store.read_track(c, ASSAY, start=lo, end=hi) for c in CELLTYPES}
    tss = read_tss(pilot_annotations_dir() / "gencode.v19.TSS.notlow.gff.gz")
    figure = args.out / f"explain_{'_'.join(CELLTYPES)}_{ASSAY}.png"
    plot_explanation(table, figure, observed=observed, tss=tss)
    print(f"wrote {figure}")
    means = table.groupby("track_celltype")[[*COMPONENTS, "prediction"]].mean()
    print("mean over the region (arcsinh):")
    print(markdown(means.reset_index()))
    peak_rows = table[table.prediction >= table.prediction.quantile(0.9)]
    print("mean over each cell type's top-10% imputed bins of the region:")
    top = peak_rows.groupby("track_celltype")[[*COMPONENTS, "prediction"]].mean()
    print(markdown(top.reset_index()))

    start = time.perf_counter()
    peaks = peak_attributions(model, store, ASSAY, n_per_group=args.per_group, n_steps=64)
    summary = peak_attribution_summary(peaks)
    print(
        f"peak attributions ({len(peaks)} track-positions) in {time.perf_counter() - start:.1f} s"
    )
    plot_peak_attributions(
        summary,
        args.out / f"explain_peaks_{ASSAY}.png",
        title=f"{ASSAY}: mean attribution by number of cell types with a peak (pilot regions)",
    )
    text = markdown(summary)
    (args.out / f"explain_peaks_{ASSAY}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
