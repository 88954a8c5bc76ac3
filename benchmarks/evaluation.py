"""The evaluation benchmark on the bundled sample: baselines first, then the model beside them.

Writes DIR/baselines (baselines only, as soon as they are fitted) and then
DIR/full (the cpu-small model and every baseline, side by side), each with the
tables, figures and parameters of :func:`epitensor.benchmark.run_benchmark`,
and prints the Markdown summaries and the wall-clock times.

    nice -n 10 .venv/bin/python benchmarks/evaluation.py --out benchmark-output
"""

from __future__ import annotations

import argparse
import time

from epitensor.baselines import all_baselines
from epitensor.benchmark import resolve_split, run_benchmark
from epitensor.store import open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="roadmap-pilot")
    parser.add_argument("--out", default="benchmark-output")
    parser.add_argument("--split", default="standard")
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--epochs", type=int, default=None, help="model epochs override")
    parser.add_argument("--parafac-epochs", type=int, default=1)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    store = open_store(args.store)
    holdout, _ = resolve_split(args.split, store)
    tic = time.perf_counter()
    baselines = all_baselines(parafac_epochs=args.parafac_epochs, verbose=not args.quiet)
    first = run_benchmark(
        store,
        f"{args.out}/baselines",
        split=holdout,
        preset=None,
        baselines=baselines,
        overwrite=True,
        verbose=not args.quiet,
    )
    print(f"baselines: {time.perf_counter() - tic:.0f} s; fit seconds {first.seconds}")
    print(first.summary_markdown())
    if args.skip_model:
        return
    params = {} if args.epochs is None else {"n_epochs": args.epochs}
    full = run_benchmark(
        store,
        f"{args.out}/full",
        split=holdout,
        preset=args.preset,
        model_params=params,
        baselines=first.baselines,
        overwrite=True,
        verbose=not args.quiet,
    )
    print(f"total: {time.perf_counter() - tic:.0f} s; fit seconds {full.seconds}")
    print(full.summary_markdown())
    print(full.stratified.to_string())


if __name__ == "__main__":
    main()
