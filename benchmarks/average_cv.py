"""Cross-validation of the model's average-activity options (issue 16, the "pitfall" fix).

On the first ``--regions`` pilot regions (8: 180,019 positions, all 25 tracks),
``--cv`` folds drawn from each fold seed, one training seed: Avocado
``cpu-small`` as the paper's network alone (``average="none"``), its blend with
average activity (``average="blend"``, ``w = 0.5``: the network of the plain
model, so it is scored as the mean of the two methods' imputations, which is
exactly its prediction), the residual form (``average="residual"``, its own
training), average activity and the ChromImpute-style trees. Prints, per fold
seed, the means over tracks, and for every method the challenge metrics (of 9)
and peak metrics (of 5) on which it beats average activity and the trees, and
the tracks (of 25) on which it beats them on Pearson (gwcorr).

    nice -n 10 .venv/bin/python benchmarks/average_cv.py --out average-cv \\
        --fold-seeds 0 1 --epochs 4 --genome-epochs 2 --swa-start 2

The CPU flags are printed; the timing is the machine's, and on the loaded
2-core machine a fold took about 2-3 minutes (two 4-epoch trainings and the trees).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import cpu_summary
from epitensor.demo import region_subset
from epitensor.evaluation import metrics
from epitensor.evaluation.benchmark import run_cv
from epitensor.nn.hyperparams import PRESETS, as_dict
from epitensor.store.datasets import roadmap_pilot
from epitensor.viz.tables import markdown_table

BASELINES = ("average_activity", "chromimpute_gbt")


def residual_preset(path: Path) -> Path:
    """``cpu-small`` with ``average="residual"``, as a preset file named ``residual.json``."""
    params = {k: v for k, v in as_dict(PRESETS["cpu-small"]).items() if k != "verbose"}
    path.write_text(json.dumps({**params, "average": "residual"}, indent=1))
    return path


def wins_table(per_track: pd.DataFrame) -> pd.DataFrame:
    """Per method and baseline: metric wins (mean over tracks) and Pearson wins by track.

    Parameters
    ----------
    per_track : pandas.DataFrame
        ``CVResult.per_track`` (``celltype, assay, method, metric, value``).

    Returns
    -------
    pandas.DataFrame
        ``method, versus, challenge (of 9), peak (of 5), pearson_tracks (of n)``.
    """
    wide = per_track.pivot_table(
        index=["celltype", "assay"], columns=["metric", "method"], values="value"
    )
    means = wide.mean()
    rows = []
    for method in sorted(per_track.method.unique()):
        for versus in BASELINES:
            if method == versus:
                continue
            counts = {"challenge": 0, "peak": 0}
            for metric in (*metrics.CHALLENGE_METRICS, *metrics.PEAK_METRICS):
                a, b = means[(metric, method)], means[(metric, versus)]
                better = a < b if metric in metrics.LOWER_IS_BETTER else a > b
                counts["challenge" if metric in metrics.CHALLENGE_METRICS else "peak"] += better
            pearson = wide[("gwcorr", method)] > wide[("gwcorr", versus)]
            rows.append(
                {
                    "method": method,
                    "versus": versus,
                    "challenge (of 9)": int(counts["challenge"]),
                    "peak (of 5)": int(counts["peak"]),
                    "pearson tracks": f"{int(pearson.sum())} / {len(pearson)}",
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="average-cv")
    parser.add_argument("--regions", type=int, default=8)
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--training-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--genome-epochs", type=int, default=2)
    parser.add_argument("--swa-start", type=int, default=2)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    print(f"cpu: {cpu_summary()}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = region_subset(roadmap_pilot(), args.regions, out / f"pilot-{args.regions}.zarr")
    presets = ["cpu-small", str(residual_preset(out / "residual.json"))]
    params = {"n_epochs": args.epochs, "n_genome_epochs": args.genome_epochs,
              "swa_start": args.swa_start}  # fmt: skip
    for fold_seed in args.fold_seeds:
        tic = time.perf_counter()
        result = run_cv(
            store,
            out / f"folds-{fold_seed}",
            k=args.cv,
            seed=fold_seed,
            training_seeds=args.training_seeds,
            presets=presets,
            model_params=params,
            methods=list(BASELINES),
            overwrite=True,
            verbose=not args.quiet,
            blends=[("avocado-cpu-small", "average_activity")],
        )
        print(f"\n## fold seed {fold_seed}: {time.perf_counter() - tic:.0f} s")
        print(result.summary_markdown())
        table = wins_table(result.per_track)
        print(markdown_table(table.set_index("method")))
        table.to_csv(out / f"folds-{fold_seed}" / "average_wins.csv", index=False)
        seconds = result.seconds.groupby("method").seconds.mean()
        print("mean fit seconds per fold: " + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items()))
        print(f"kept training tracks per held-out track's cell type: "
              f"{np.bincount(result.folds.celltype_kept).tolist()}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
