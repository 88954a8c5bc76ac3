"""The evaluation benchmark on the bundled sample: baselines first, then the model beside them.

Writes DIR/baselines (baselines only, as soon as they are fitted) and then
DIR/full (the cpu-small model and every baseline, side by side), each with the
tables, figures and parameters of :func:`epitensor.evaluation.benchmark.run_benchmark`,
and prints the Markdown summaries and the wall-clock times.

    nice -n 10 .venv/bin/python benchmarks/evaluation.py --out benchmark-output

``--combine A/metrics.csv B/metrics.csv`` prints the side-by-side summary of
several runs' long tables instead (each method taken from the first file that
has it), e.g. the model of one run beside the baselines of another.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from epitensor.estimators.baselines import all_baselines
from epitensor.evaluation.benchmark import best_methods, resolve_split, run_benchmark, summarise
from epitensor.store.registry import open_store
from epitensor.viz.tables import markdown_table


def combine(paths: list[str]) -> str:
    tables, seen = [], set()
    for path in paths:
        table = pd.read_csv(path)
        table = table[~table.method.isin(seen)]
        seen |= set(table.method)
        tables.append(table)
    summary = summarise(pd.concat(tables, ignore_index=True))
    best = best_methods(summary)
    summary.index.name = "metric"
    summary["best"] = best
    return markdown_table(summary, bold=best.to_dict())


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
    parser.add_argument("--combine", nargs="+", help="metrics.csv files to put side by side")
    args = parser.parse_args()
    if args.combine:
        print(combine(args.combine))
        return
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
