"""Training and scoring speed of tune trials across the grid: the check of ``tune.SAMPLE_OVERHEAD``.

``epitensor tune`` gives every trial the same multiply-add budget, at
``sample_cost = 3 * network multiply-adds + SAMPLE_OVERHEAD`` per sample. This
script measures what a trial's sample really costs on this machine, for
configurations spread over ``PAPER_GRID`` (from 1 x 128 to 3 x 2048), in one
process on the bundled sample's tuning positions:

1. Each configuration trains through the tune trial loop for ``--seconds``
   seconds (after a warm-up of a few batches), ``--repeats`` times,
   interleaved with the others; the fastest window gives seconds per sample.
2. It scores the validation tracks over ``--score-positions`` positions
   (fastest of the repeats too).
3. A least-squares fit of ``seconds per sample = a * 3 * multiply-adds + b``
   gives the overhead ``b / a`` in multiply-add equivalents, to compare with
   ``SAMPLE_OVERHEAD``, and the projected seconds of each configuration's
   equal-budget trial (training plus scoring of 100,000 positions): the
   spread of those is what the budget rule leaves.

Ratios, not absolute speeds, are what carry over between machines; it prints
the CPU flags that matter (AVX2, AVX-512, AVX-512 BF16, AMX).

Usage: python benchmarks/tune_cost.py [--threads 2] [--seconds 3] [--repeats 5]
       [--score-positions 4096] [--positions 100000] [--epochs 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from epitensor._utils import cpu_summary
from epitensor.estimators.avocado import PRESETS, Avocado
from epitensor.evaluation.tune import (
    PAPER_GRID,
    SAMPLE_OVERHEAD,
    TRAIN_PASSES,
    _samples_per_epoch,
    _train_trial,
    _trial_store,
    choose_validation,
    network_multiply_adds,
    trial_allowance,
    trial_budget_of,
    tuning_regions,
)
from epitensor.store.datasets import roadmap_pilot
from epitensor.train.fitting import stage1_store

sys.path.insert(0, str(Path(__file__).parent))
from tune_pilot import split  # noqa: E402

CONFIGS = [
    # (cell type, assay, 25 bp, 250 bp, 5 kbp, layers, nodes): grid corners and middles
    (8, 16, 5, 10, 15, 1, 128),
    (64, 256, 50, 80, 90, 1, 128),
    (16, 64, 10, 20, 30, 2, 256),
    (32, 64, 25, 40, 45, 1, 1024),
    (32, 64, 25, 40, 45, 2, 512),
    (32, 256, 25, 40, 45, 2, 1024),
    (32, 256, 25, 40, 45, 2, 2048),
    (64, 256, 50, 80, 90, 3, 2048),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="training per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per configuration")
    parser.add_argument("--score-positions", type=int, default=4096)
    parser.add_argument("--positions", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_summary()}; torch threads {torch.get_num_threads()}")
    store = roadmap_pilot()
    holdout = split("standard")
    train = [t for t in store.track_names() if t not in holdout]
    validation = choose_validation(train)
    view = stage1_store(store, tuning_regions(store, args.positions))
    tracks = [t for t in train if t not in validation]
    base = {**PRESETS["cpu-small"], "swa_start": None, "verbose": False}
    base["n_threads"] = args.threads
    names = list(PAPER_GRID)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        trial_store = _trial_store(view, tracks, Path(scratch) / "trials.zarr")
        per_epoch = view.axis_length(view.axes[0])
        budget = trial_budget_of(PAPER_GRID, base, per_epoch, args.epochs)
        models = {}
        for values in CONFIGS:
            params = {**base, **dict(zip(names, values)), "n_epochs": 0}
            model = Avocado(**params).fit(trial_store)
            _train_trial(model, trial_store, per_epoch, time.perf_counter() + 1.0)  # warm-up
            models[values] = (params, model)
        # interleaved repeats, the fastest of each kept: other work on the machine
        # slows some windows, never speeds one up
        train_rate = dict.fromkeys(CONFIGS, np.inf)
        score_rate = dict.fromkeys(CONFIGS, np.inf)
        n = min(args.score_positions, per_epoch)
        for _ in range(args.repeats):
            for values, (_, model) in models.items():
                tic = time.perf_counter()
                trained = _train_trial(model, trial_store, per_epoch, tic + args.seconds)
                rate = (time.perf_counter() - tic) / trained["samples"]
                train_rate[values] = min(train_rate[values], rate)
                tic = time.perf_counter()
                model.predict_tracks(validation, start=0, end=n)
                score_rate[values] = min(score_rate[values], (time.perf_counter() - tic) / n)
        for values, (params, model) in models.items():
            allowance = trial_allowance(
                params, budget, _samples_per_epoch(model, trial_store), base["n_epochs"]
            )
            macs = network_multiply_adds(params)
            rows.append((values, macs, train_rate[values], score_rate[values], allowance))
            print(
                f"{values[5]} x {values[6]:4d} ({macs:>9,} multiply-adds): "
                f"train {train_rate[values] * 1e6:7.1f} us/sample, score "
                f"{score_rate[values] * 1e6:7.1f} us/position, allowance "
                f"{allowance / per_epoch:.2f} epochs",
                flush=True,
            )
    x = np.array([TRAIN_PASSES * r[1] for r in rows], dtype=float)
    y = np.array([r[2] for r in rows])
    a, b = np.polyfit(x, y, 1)
    print(
        f"\nfit: seconds/sample = {a:.3e} * 3 * multiply-adds + {b:.3e}; overhead "
        f"{b / a:,.0f} multiply-add equivalents (SAMPLE_OVERHEAD = {SAMPLE_OVERHEAD:,})"
    )
    print("\nconfiguration                    epochs  train s  score s  trial s (projected)")
    totals = []
    for values, _, train_rate, score_rate, allowance in rows:
        train_s, score_s = allowance * train_rate, per_epoch * score_rate
        totals.append(train_s + score_s)
        print(
            f"{str(values):32s} {allowance / per_epoch:6.2f} {train_s:8.1f} {score_s:8.1f} "
            f"{train_s + score_s:8.1f}"
        )
    print(
        f"projected trial seconds: min {min(totals):.0f}, max {max(totals):.0f}, "
        f"max/min {max(totals) / min(totals):.1f}"
    )


if __name__ == "__main__":
    main()
