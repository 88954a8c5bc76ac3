"""Cross-validation of the model and the baselines on the bundled sample (issue 16's protocol).

For each fold assignment seed, ``--cv K`` folds over all 25 observed tracks,
every method retrained per fold and per training seed, every challenge and
peak metric per track; writes DIR/folds-S (the tables, the figure, the paired
Wilcoxon tests and the spread over training seeds of
:func:`epitensor.evaluation.benchmark.run_cv`) and prints the summaries, the metric wins
of the model over each baseline, and how many tracks it wins on Pearson.

    nice -n 10 .venv/bin/python benchmarks/cv.py --out cv-output \
        --fold-seeds 0 1 --training-seeds 0 1 2

``--blend`` adds the mean of the first model and average activity as a method;
``--preset`` may be repeated (``--preset cpu-small --preset paper``; the paper's
800 epochs need a GPU). The CPU flags are printed: on a 2-core AVX2 machine a
cpu-small fold trains in about 12 minutes, so the default run (2 fold seeds x
5 folds x 3 training seeds = 30 trainings) takes about 6-7 hours; one fold
seed with one training seed, about 1 hour.
"""

from __future__ import annotations

import argparse
import time

from epitensor._utils import cpu_summary
from epitensor.evaluation.benchmark import DEFAULT_CV_BASELINES, run_cv
from epitensor.viz.tables import markdown_table


def pearson_wins(result) -> str:
    """How many tracks the reference beats each other method on, by Pearson (gwcorr)."""
    rows = result.paired[result.paired.metric == "gwcorr"]
    return ", ".join(
        f"{r.method}: {r.reference_better}/{r.n_tracks} (p={r.p_value:.3g})"
        for r in rows.itertuples()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="roadmap-pilot")
    parser.add_argument("--out", default="cv-output")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--training-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", action="append", help="repeat; default cpu-small")
    parser.add_argument("--epochs", type=int, default=None, help="model epochs override")
    parser.add_argument(
        "--method", action="append", help="baselines; default " + ", ".join(DEFAULT_CV_BASELINES)
    )
    parser.add_argument("--parafac-epochs", type=int, default=1)
    parser.add_argument("--blend", action="store_true", help="add model + average activity")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    print(f"cpu: {cpu_summary()}", flush=True)
    presets = args.preset or ["cpu-small"]
    methods = args.method or list(DEFAULT_CV_BASELINES)
    first_model = "avocado" if len(presets) == 1 else f"avocado-{presets[0]}"
    blends = [(first_model, "average_activity")] if args.blend else []
    for fold_seed in args.fold_seeds:
        tic = time.perf_counter()
        result = run_cv(
            args.store,
            f"{args.out}/folds-{fold_seed}",
            k=args.cv,
            seed=fold_seed,
            training_seeds=args.training_seeds,
            presets=presets,
            model_params=None if args.epochs is None else {"n_epochs": args.epochs},
            methods=methods,
            parafac_epochs=args.parafac_epochs,
            overwrite=True,
            verbose=not args.quiet,
            blends=blends,
        )
        print(f"\n## fold seed {fold_seed}: {time.perf_counter() - tic:.0f} s")
        print(result.summary_markdown())
        print(markdown_table(result.wins().set_index("method")))
        print(f"Pearson wins of {result.reference} by track: {pearson_wins(result)}")
        seconds = result.seconds.groupby("method").seconds.mean()
        print("mean fit seconds per fold: " + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items()))


if __name__ == "__main__":
    main()
