"""Downstream benchmarks: the paper's published feature sets, and our own genome factors.

Tasks (each writes a folder with scores.csv, summary.csv, ttests.csv, table.md,
chart.png, params.json under --out):

* ``rnaseq``: gene expression in IMR-90 (E017), 16,724 genes x 24 promoter
  features per method (Roadmap observed, ChromImpute, PREDICTD, Avocado
  imputations), label RNA-seq >= 0.5; XGBoost, 20-fold CV.
* ``fire``: FIREs in GM12878 (E116), the first 3,000 of 72,036 loci; the four
  24-assay sets plus the Avocado latent factors (142); XGBoost, 20-fold CV.
* ``pairs``: TargetFinder enhancer-promoter pairs inside the ENCODE pilot
  regions for IMR-90 (E017), GM12878 (E116), HeLa-S3 (E117): our model's mean
  genome factors per element against the observed signal of the cell type's
  five tracks (and of all 25 pilot tracks); logistic regression, 5-fold CV
  repeated 20 times.

Usage::

    nice -n 10 .venv/bin/python benchmarks/downstream.py --tasks rnaseq fire
    nice -n 10 .venv/bin/python benchmarks/downstream.py --tasks pairs [--model-path DIR]
    # add --docs docs/downstream to copy tables and charts for the README
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from epitensor.evaluation.downstream import (
    compare_feature_sets,
    genome_factor_features,
    pair_features,
    pairs_in_layout,
    read_targetfinder_pairs,
    track_features,
)

REPO = Path(__file__).resolve().parents[1]
# the paper's downstream features (23 MB) and TargetFinder pairs (9 MB) are not in the
# repository: benchmarks/data/README.md says where to download them (with checksums)
DATA = REPO / "benchmarks" / "data" / "downstream"
SOURCES = {
    "rnaseq": "https://github.com/jmschrei/avocado/tree/master/data (RNAseq.E017.*.npy)",
    "fire": "https://github.com/jmschrei/avocado/tree/master/data (FIREs.E116.*.npy)",
    "pairs": "https://github.com/shwhalen/targetfinder (paper/targetfinder/<cell>/)",
}
METHODS = ["Roadmap", "ChromImpute", "PREDICTD", "AvocadoImp"]
PAIR_CELLS = {"E017": "IMR90", "E116": "GM12878", "E117": "HeLa-S3"}


def _load(name: str, n: int | None = None) -> np.ndarray:
    x = np.load(DATA / name)
    x = x if n is None else x[:n]
    print(f"  {name}: {x.shape} {x.dtype}", file=sys.stderr)
    return x


def _report(result, out: Path, name: str, title: str, seconds: float, docs: Path | None):
    folder = result.save(out / name, title=title, overwrite=True)
    print(f"\n## {name} ({seconds:.0f} s)\n\n{result.to_markdown()}\n")
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        for file in ("table.md", "summary.csv", "chart.png"):
            shutil.copy(folder / file, docs / f"{name}.{file}")


def run_rnaseq(args) -> None:
    y = (_load("RNAseq.E017.y.npy") >= 0.5).astype(float)
    sets = {m: _load(f"RNAseq.E017.{m}.npy") for m in METHODS}
    start = time.perf_counter()
    result = compare_feature_sets(
        sets, y, model="xgboost", n_folds=args.folds, seed=args.seed,
        n_estimators=args.n_estimators, threads=args.threads,
    )  # fmt: skip
    title = f"Gene expression, IMR-90 (E017): {y.size} genes, {int(y.sum())} expressed"
    _report(result, args.out, "rnaseq_E017", title, time.perf_counter() - start, args.docs)


def run_fire(args) -> None:
    y = _load("FIREs.E116.y.npy", 3000)
    sets = {m: _load(f"FIREs.E116.{m}.npy", 3000) for m in [*METHODS, "AvocadoFac"]}
    start = time.perf_counter()
    result = compare_feature_sets(
        sets, y, model="xgboost", n_folds=args.folds, seed=args.seed,
        n_estimators=args.n_estimators, threads=args.threads,
    )  # fmt: skip
    title = f"FIREs, GM12878 (E116): first {y.size} loci, {int(y.sum())} FIREs"
    _report(result, args.out, "fire_E116", title, time.perf_counter() - start, args.docs)


def _pilot_model(args):
    from epitensor.estimators.avocado import Avocado
    from epitensor.store.datasets import roadmap_pilot

    if args.model_path is not None:
        return Avocado.load(args.model_path)
    start = time.perf_counter()
    overrides = {} if args.epochs is None else {"n_epochs": args.epochs}
    model = Avocado.from_preset("cpu-small", seed=args.seed, **overrides).fit(roadmap_pilot())
    print(f"  trained cpu-small on all 25 pilot tracks: {time.perf_counter() - start:.0f} s")
    model.save(args.out / "model-cpu-small", overwrite=True)
    return model


def _pair_sets(model, store, pairs, celltype: str) -> dict[str, np.ndarray]:
    """Enhancer and promoter features side by side, from the model and from observed tracks."""
    from epitensor.store.datasets import ROADMAP_ASSAYS, ROADMAP_CELLTYPES

    def both(read):
        return pair_features(read("enhancer_"), read("promoter_"))

    def tracks(celltypes):
        chosen = [(c, a) for c in celltypes for a in ROADMAP_ASSAYS]
        return both(lambda p: track_features(store, chosen, pairs, p))

    return {
        "genome factors": both(lambda p: genome_factor_features(model, pairs, p)),
        f"observed {celltype} (5 tracks)": tracks([celltype]),
        "observed, all 25 pilot tracks": tracks(ROADMAP_CELLTYPES),
    }


def run_pairs(args) -> None:
    from epitensor.genome.pilot import pilot_layout
    from epitensor.store.datasets import roadmap_pilot

    store, layout = roadmap_pilot(), pilot_layout()
    model = _pilot_model(args)
    for celltype, name in PAIR_CELLS.items():
        pairs = pairs_in_layout(
            read_targetfinder_pairs(DATA / "targetfinder" / f"{name}.pairs.csv"), layout
        )
        y = pairs.label.to_numpy().astype(float)
        print(f"  {name}: {len(pairs)} pairs inside the pilot regions, {int(y.sum())} positive")

        sets = _pair_sets(model, store, pairs, celltype)
        promoters = pairs.promoter_chrom + ":" + pairs.promoter_start.astype(str)
        print(
            f"  {promoters.nunique()} distinct promoters, {promoters[y == 1].nunique()} in positives"
        )
        # Random folds (the paper's protocol) let one promoter sit in training and test;
        # grouping by promoter removes that shortcut (elements recognised by position).
        for suffix, groups in (("", None), ("_grouped", promoters.to_numpy())):
            start = time.perf_counter()
            result = compare_feature_sets(
                sets, y, model="logistic", n_folds=5, n_repeats=args.repeats, seed=args.seed,
                groups=groups,
            )  # fmt: skip
            how = "folds grouped by promoter" if groups is not None else "random folds"
            title = f"E-P pairs, {name} ({celltype}), pilot regions: {len(y)} pairs, {int(y.sum())} positive; {how}"
            seconds = time.perf_counter() - start
            _report(result, args.out, f"pairs_{celltype}{suffix}", title, seconds, args.docs)


TASKS = {"rnaseq": run_rnaseq, "fire": run_fire, "pairs": run_pairs}


def main(argv=None) -> None:
    global DATA
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "output" / "downstream")
    parser.add_argument("--docs", type=Path, default=None, help="Copy tables and charts here.")
    parser.add_argument("--folds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20, help="Repeats of 5-fold CV (pairs).")
    parser.add_argument("--n-estimators", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-path", type=Path, default=None, help="Trained model (pairs).")
    parser.add_argument(
        "--epochs", type=int, default=None, help="Stage-1 epochs of the cpu-small model (pairs)."
    )
    parser.add_argument("--data", type=Path, default=DATA, help="the downloaded originals")
    args = parser.parse_args(argv)
    DATA = args.data
    for task in args.tasks:
        print(f"# {task}", file=sys.stderr)
        needed = {
            "rnaseq": DATA / "RNAseq.E017.y.npy",
            "fire": DATA / "FIREs.E116.y.npy",
            "pairs": DATA / "targetfinder" / "IMR90.pairs.csv",
        }[task]
        if not needed.is_file():
            print(
                f"skipped {task}: {needed} not found; download from {SOURCES[task]} "
                "(file list and sha256: benchmarks/data/README.md)"
            )
            continue
        TASKS[task](args)


if __name__ == "__main__":
    main()
