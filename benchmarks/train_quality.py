"""The cpu-small preset on the bundled sample: model vs average-activity baseline per held-out track.

Trains ``Avocado.from_preset("cpu-small")`` on the 5 x 5 Roadmap pilot store with
a split held out (default: the standard split of DESIGN.md), then prints, per
held-out track and averaged, MSE and Pearson r over all positions for the model
and for the average-activity baseline (mean of the same assay over the other
cell types). Also prints the training time and the per-epoch history.

With ``--seeds 0 1 2`` it trains once per seed and ends with the mean and
standard deviation over seeds (the spread between seeds is of the same order as
the differences between settings, so compare settings over several seeds).

Usage: python benchmarks/train_quality.py [--split standard|shifted] [--epochs N]
       [--threads 2] [--out MODEL_DIR] [--seeds 0 1 2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from epitensor.estimators.avocado import Avocado
from epitensor.store.datasets import ROADMAP_ASSAYS, ROADMAP_CELLTYPES, roadmap_pilot


def split(name: str) -> list[tuple[str, str]]:
    """``standard``: cell type i with assay (2i mod 5); ``shifted``: assay (2i + 1 mod 5)."""
    shift = {"standard": 0, "shifted": 1}[name]
    return [(c, ROADMAP_ASSAYS[(2 * i + shift) % 5]) for i, c in enumerate(ROADMAP_CELLTYPES)]


def compare(model, store, holdout):
    pred = model.predict_tracks(holdout)
    rows = []
    for i, (celltype, assay) in enumerate(holdout):
        y = store.read_track(celltype, assay)
        base = np.mean(
            [store.read_track(c, assay) for c in store.celltypes if c != celltype], axis=0
        )
        rows.append(
            {
                "track": f"{celltype}:{assay}",
                "model_mse": float(np.mean((pred[i] - y) ** 2)),
                "model_r": float(np.corrcoef(pred[i], y)[0, 1]),
                "avg_mse": float(np.mean((base - y) ** 2)),
                "avg_r": float(np.corrcoef(base, y)[0, 1]),
            }
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="standard", choices=["standard", "shifted"])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="also save the model here")
    parser.add_argument("--seeds", nargs="*", type=int, default=None, help="one run per seed")
    parser.add_argument("--set", nargs="*", default=[], help="hyperparameter overrides key=value")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.epochs is not None:
        overrides["n_epochs"] = args.epochs
    store = roadmap_pilot()
    holdout = split(args.split)
    means = []
    for seed in args.seeds if args.seeds else [None]:
        if seed is not None:
            overrides["seed"] = seed
        means.append(run(store, holdout, args, overrides))
    if len(means) > 1:
        table = np.array([[m["model_mse"], m["model_r"]] for m in means])
        print(
            f"over seeds {args.seeds}: model MSE {table[:, 0].mean():.4f} "
            f"(sd {table[:, 0].std(ddof=1):.4f}), model r {table[:, 1].mean():.4f} "
            f"(sd {table[:, 1].std(ddof=1):.4f}); average activity MSE "
            f"{means[0]['avg_mse']:.4f}, r {means[0]['avg_r']:.4f}"
        )


def run(store, holdout, args, overrides) -> dict:
    """Train once, print the per-track table, return the means over held-out tracks."""
    model = Avocado.from_preset("cpu-small", n_threads=args.threads, **overrides)
    tic = time.perf_counter()
    model.fit(store, holdout=holdout)
    seconds = time.perf_counter() - tic
    if args.out:
        model.save(args.out, overwrite=True)
    rows = compare(model, store, holdout)
    print(f"split {args.split}; params {json.dumps(overrides)}; training {seconds:.0f} s")
    print(model.history_.to_string(index=False))
    print(f"{'track':<18} {'model MSE':>9} {'model r':>8} {'avg MSE':>8} {'avg r':>6}")
    for row in rows:
        print(
            f"{row['track']:<18} {row['model_mse']:9.4f} {row['model_r']:8.4f} "
            f"{row['avg_mse']:8.4f} {row['avg_r']:6.4f}"
        )
    mean = {k: np.mean([r[k] for r in rows]) for k in rows[0] if k != "track"}
    print(
        f"{'mean':<18} {mean['model_mse']:9.4f} {mean['model_r']:8.4f} "
        f"{mean['avg_mse']:8.4f} {mean['avg_r']:6.4f}"
    )
    return mean


if __name__ == "__main__":
    main()
