"""Add a cell type to a trained model from one of its tracks, and impute the others.

On the bundled 5 x 5 Roadmap pilot sample:

1. train stage 1 on the 20 tracks of E003, E017, E116 and E117 (E065, aorta,
   is left out entirely: the model never sees its name);
2. add E065 with ``Avocado.fit_celltypes`` from ONE of its tracks (everything
   but the new cell type's factors frozen);
3. impute its other four tracks and score them (arcsinh scale, all 1,126,469
   positions) against the observed tracks, beside the average-activity
   baseline: the mean of the same assay over the four training cell types.

The base model is cached in ``--workdir`` so several observed tracks can be
tried against the same stage-1 model. Run::

    python benchmarks/extend_e065.py [--observed H3K4me3 ...] [--epochs 15]
        [--transfer-epochs 3] [--workdir DIR] [--out results.csv]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

NEW = "E065"


def build_store(path: Path, observed: str):
    """A store of the 20 tracks of the other cell types plus E065's ``observed`` track."""
    from epitensor.genome.coordinates import chrom_sizes
    from epitensor.genome.pilot import pilot_layout
    from epitensor.store.compendium import Store
    from epitensor.store.datasets import ROADMAP_ASSAYS, ROADMAP_CELLTYPES, roadmap_pilot_arrays

    if path.exists():
        return Store.open(path)
    arrays = roadmap_pilot_arrays()
    layout = pilot_layout()
    store = Store.create(path, layout, chrom_sizes("hg19"), genome="hg19")
    for celltype in ROADMAP_CELLTYPES:
        for assay in ROADMAP_ASSAYS:
            if celltype != NEW or assay == observed:
                store.add_track(celltype, assay, {layout.axes[0]: arrays[celltype, assay]})
    return store


def base_model(workdir: Path, epochs: int, seed: int, threads: int | None):
    """Stage 1 on the four other cell types (cached in ``workdir``)."""
    from epitensor.estimators.avocado import Avocado
    from epitensor.store.datasets import ROADMAP_CELLTYPES

    path = workdir / f"base-{epochs}ep-seed{seed}"
    if path.exists():
        return path, float("nan")
    store = build_store(workdir / "train.zarr", observed="H3K4me3")
    others = [c for c in ROADMAP_CELLTYPES if c != NEW]
    start = time.perf_counter()
    model = Avocado.from_preset("cpu-small", n_epochs=epochs, seed=seed, n_threads=threads)
    model.fit(store, celltypes=others)
    assert NEW not in model.celltypes_
    model.save(path)
    return path, time.perf_counter() - start


def evaluate(
    model_path: Path, workdir: Path, observed: str, transfer_epochs: int, threads: int | None
) -> pd.DataFrame:
    from epitensor.estimators.avocado import Avocado
    from epitensor.evaluation import metrics
    from epitensor.store.datasets import ROADMAP_ASSAYS, ROADMAP_CELLTYPES, roadmap_pilot_arrays

    store = build_store(workdir / f"with-{NEW}-{observed}.zarr", observed)
    model = Avocado.load(model_path).set_params(n_genome_epochs=transfer_epochs, n_threads=threads)
    start = time.perf_counter()
    model.fit_celltypes(store, [NEW])
    seconds = time.perf_counter() - start
    arrays = roadmap_pilot_arrays()
    others = [c for c in ROADMAP_CELLTYPES if c != NEW]
    rows = []
    for assay in ROADMAP_ASSAYS:
        if assay == observed:
            continue
        truth = arrays[NEW, assay]
        imputed = model.predict(NEW, assay)
        baseline = np.mean([arrays[c, assay] for c in others], axis=0)
        rows.append(
            {
                "observed": observed,
                "imputed": assay,
                "mse": metrics.mse(truth, imputed),
                "mse_baseline": metrics.mse(truth, baseline),
                "pearson": metrics.pearson(truth, imputed),
                "pearson_baseline": metrics.pearson(truth, baseline),
                "transfer_seconds": seconds,
            }
        )
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    lines = [
        "| observed E065 track | imputed | MSE | MSE avg. activity | Pearson | Pearson avg. activity |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.observed} | {r.imputed} | {r.mse:.3f} | {r.mse_baseline:.3f} | "
            f"{r.pearson:.3f} | {r.pearson_baseline:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    from epitensor.store.datasets import ROADMAP_ASSAYS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--observed", nargs="+", default=["H3K4me3"], choices=ROADMAP_ASSAYS)
    parser.add_argument("--epochs", type=int, default=15, help="Stage-1 epochs (cpu-small: 15).")
    parser.add_argument("--transfer-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice).")
    parser.add_argument("--workdir", type=Path, default=Path("benchmark-extend-e065"))
    parser.add_argument("--out", type=Path, help="Write the table as CSV here.")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model_path, seconds = base_model(args.workdir, args.epochs, args.seed, args.threads)
    print(f"stage 1 ({args.epochs} epochs, cpu-small): {seconds:.0f} s -> {model_path}")
    tables = []
    for observed in args.observed:
        table = evaluate(model_path, args.workdir, observed, args.transfer_epochs, args.threads)
        print(f"{observed}: transfer {table.transfer_seconds.iloc[0]:.0f} s", flush=True)
        print(to_markdown(table), flush=True)
        tables.append(table)
        if args.out:  # written after every observed track, so a long run can be read midway
            pd.concat(tables, ignore_index=True).to_csv(args.out, index=False)
    table = pd.concat(tables, ignore_index=True)
    print()
    print(to_markdown(table))
    means = table[["mse", "mse_baseline", "pearson", "pearson_baseline"]].mean()
    print(
        f"\nmean over {len(table)} imputed tracks: MSE {means.mse:.3f} "
        f"(average activity {means.mse_baseline:.3f}), Pearson {means.pearson:.3f} "
        f"(average activity {means.pearson_baseline:.3f})"
    )


if __name__ == "__main__":
    main()
