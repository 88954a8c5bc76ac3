"""The paper's hyperparameter search on the bundled sample, then its best configuration vs cpu-small.

1. ``epitensor.evaluation.tune.tune`` on the 5 x 5 Roadmap pilot store with a split held
   out (default: the standard split), ``--trials`` trials within ``--budget``
   minutes (defaults 20 and 30: the issue's target on a 2-core machine). The
   held-out tracks never enter the search: validation tracks are drawn from the
   other 20. Every trial trains for the same multiply-add budget (``--epochs``
   epochs of the grid's median configuration) and its training stops early at
   its share of the time left (the time guard). Prints one line per trial, the
   wall time per trial and in all.
2. Trains ``best_preset.json`` and ``cpu-small`` (same schedule: the cpu-small
   one, which the best preset inherits) on the 20 training tracks and scores
   both, with the average-activity baseline, on the held-out tracks they never
   saw: MSE and Pearson r per track and averaged. ``--compare-split shifted``
   compares on another split (cell type i with assay (2i + 1) mod 5) instead:
   tracks the search may have validated on, but that neither final model
   trained on.

3. Writes ``OUT/summary.md``: the command, CPU flags, load average before and
   after the search, trials completed and minutes, each trial's validation MSE,
   seconds, epochs trained and guard stop, the best configuration, the
   importance and the comparison table.

The study in ``--out`` is resumed if it exists (rerun after an interruption).
Prints the CPU flags that matter for speed (AVX2, AVX-512, AVX-512 BF16, AMX).

Usage: python benchmarks/tune_pilot.py [--out tune-pilot] [--trials 20] [--budget 30]
       [--threads 2] [--split standard|shifted] [--compare-split standard|shifted]
       [--positions 100000] [--epochs 4] [--no-compare] [--compare-epochs N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from epitensor._utils import cpu_summary
from epitensor.estimators.avocado import Avocado
from epitensor.evaluation.tune import PAPER_GRID, tune
from epitensor.store.datasets import ROADMAP_ASSAYS, ROADMAP_CELLTYPES, roadmap_pilot
from epitensor.viz.tables import markdown_table


def split(name: str) -> list[tuple[str, str]]:
    """``standard``: cell type i with assay (2i mod 5); ``shifted``: assay (2i + 1 mod 5)."""
    shift = {"standard": 0, "shifted": 1}[name]
    return [(c, ROADMAP_ASSAYS[(2 * i + shift) % 5]) for i, c in enumerate(ROADMAP_CELLTYPES)]


def score(model_or_none, store, holdout, name):
    rows = []
    for celltype, assay in holdout:
        y = store.read_track(celltype, assay).astype(np.float32)
        if model_or_none is None:
            pred = np.mean(
                [store.read_track(c, assay) for c in store.celltypes if c != celltype], axis=0
            )
        else:
            pred = model_or_none.predict(celltype, assay)
        rows.append(
            (
                name,
                f"{celltype}:{assay}",
                float(np.mean((pred - y) ** 2)),
                np.corrcoef(pred, y)[0, 1],
            )
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tune-pilot")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--split", default="standard", choices=["standard", "shifted"])
    parser.add_argument("--compare-split", default=None, choices=["standard", "shifted"])
    parser.add_argument("--no-compare", action="store_true")
    parser.add_argument(
        "--compare-epochs", type=int, default=None, help="of both final models (a quick check)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--positions", type=int, default=100_000, help="per trial")
    parser.add_argument(
        "--epochs", type=int, default=4, help="of the grid's median configuration (per trial)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_summary()}; torch threads {torch.get_num_threads()}")
    store = roadmap_pilot()
    holdout = split(args.split)
    load_before = os.getloadavg()
    started = time.perf_counter()
    result = tune(
        store,
        args.out,
        n_trials=args.trials,
        budget_minutes=args.budget,
        holdout=holdout,
        positions=args.positions,
        n_epochs=args.epochs,
        seed=args.seed,
        n_threads=args.threads,
    )
    elapsed = time.perf_counter() - started
    done = result.trials[result.trials.state == "COMPLETE"]
    load_after = os.getloadavg()
    print(
        f"\n{len(done)} completed trials ({len(result.trials)} in the study); this run "
        f"{elapsed / 60:.1f} min; per trial mean {done.seconds.mean():.0f} s, "
        f"max {done.seconds.max():.0f} s; {int(done.guard_stopped.fillna(False).sum())} "
        f"stopped by the time guard"
    )
    print(f"validation tracks: {result.validation}")
    print(f"best validation MSE {result.best_value:.4f}: {json.dumps(result.best_params)}")
    if result.importance is not None:
        print("importance:\n" + result.importance.to_string(float_format="%.3f"))
    summary = [
        "# Hyperparameter search on the bundled sample",
        "",
        f"`python benchmarks/tune_pilot.py {' '.join(sys.argv[1:])}`",
        "",
        f"CPU: {cpu_summary()}; torch threads {torch.get_num_threads()}; load average "
        f"(1 min) {load_before[0]:.1f} at the start, {load_after[0]:.1f} after the search.",
        "",
        f"**{len(done)} completed trials in {elapsed / 60:.1f} minutes** (this run; "
        f"the trials' own seconds add up to {done.seconds.sum() / 60:.1f} minutes; budget "
        f"{args.budget:g} min, target {args.trials}); held out from the search: "
        f"{', '.join(f'{c}:{a}' for c, a in holdout)} ({args.split} split); validation "
        f"tracks: {', '.join(f'{c}:{a}' for c, a in result.validation)}.",
        "",
        f"Every trial's compute: {result.trial_budget:.3g} multiply-adds ({args.epochs} "
        f"epoch(s) of the grid's median configuration). Seconds per trial: min "
        f"{done.seconds.min():.0f}, median {done.seconds.median():.0f}, max "
        f"{done.seconds.max():.0f}; epochs trained {done.epochs.min():.2f} to "
        f"{done.epochs.max():.2f}; trials stopped by the time guard: "
        f"{int(done.guard_stopped.fillna(False).sum())}.",
        "",
        _trials_markdown(result.trials),
        "",
        f"Best validation MSE {result.best_value:.4f}: `{json.dumps(result.best_params)}`.",
        "",
    ]
    if result.importance is not None:
        summary += [
            "Importance (fANOVA):",
            "",
            markdown_table(result.importance.sort_values(ascending=False).to_frame()),
            "",
        ]
    if not args.no_compare:
        compare = split(args.compare_split) if args.compare_split else holdout
        rows = score(None, store, compare, "average_activity")
        for name, preset in (
            ("cpu-small", "cpu-small"),
            ("tuned", Path(args.out) / "best_preset.json"),
        ):
            t = time.perf_counter()
            model = Avocado.from_preset(
                preset, n_threads=args.threads, seed=args.seed, verbose=False
            )
            if args.compare_epochs is not None:
                model.set_params(n_epochs=args.compare_epochs, swa_start=None)
            model.fit(store, holdout=compare)
            print(f"{name}: trained in {time.perf_counter() - t:.0f} s")
            rows += score(model, store, compare, name)
        table = pd.DataFrame(rows, columns=["method", "track", "MSE", "Pearson"])
        means = table.groupby("method", sort=False)[["MSE", "Pearson"]].mean()
        means = means.reset_index().assign(track="mean")
        table = pd.concat([table, means], ignore_index=True)
        print("\n" + table.to_string(index=False, float_format="%.4f"))
        seen = "never trained on" if args.compare_split else "that the search never saw"
        summary += [
            f"## Tuned configuration against cpu-small on tracks {seen}",
            "",
            "Both trained with the cpu-small schedule"
            + ("" if args.compare_epochs is None else f" cut to {args.compare_epochs} epochs")
            + " on the other tracks, then scored "
            f"(arcsinh MSE, Pearson r) on {', '.join(f'{c}:{a}' for c, a in compare)}:",
            "",
            markdown_table(table.set_index("method"), digits=4),
            "",
        ]
    path = Path(args.out) / "summary.md"
    path.write_text("\n".join(summary))
    print(f"wrote {path}")


def _trials_markdown(trials: pd.DataFrame) -> str:
    """The trials table of the summary: score, time, compute and the seven values."""
    columns = ["state", "validation_mse", "seconds", "epochs", "guard_stopped", *PAPER_GRID]
    frame = trials.set_index("number")[[c for c in columns if c in trials.columns]]
    return markdown_table(frame)


if __name__ == "__main__":
    main()
