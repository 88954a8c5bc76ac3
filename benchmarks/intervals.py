"""Prediction intervals on a held-out split: coverage, interval score vs constant width, cost.

Given a model trained on the bundled sample with tracks held out (the demo's
model, or ``epitensor train roadmap-pilot --preset cpu-small --holdout ...``
with the standard split), it

1. calibrates the ensemble's intervals on the model's training tracks
   (:func:`epitensor.estimators.intervals.calibrate`: left-out trees and
   average, no training) and times it;
2. scores the held-out tracks' intervals (per-bin and the constant-width
   baseline) at several levels: coverage, mean width, interval score,
   pinball loss, overall, per assay and on the top 1% of observed bins
   (:mod:`epitensor.evaluation.intervals`);
3. with ``--proxies``, does 1-2 for each stand-in of the network
   (:data:`~epitensor.estimators.intervals.PROXIES`) and for the network's own
   in-sample predictions (not honest: what the stand-in avoids);
4. times :func:`epitensor.workflows.impute.impute` of the held-out tracks
   with no interval, ``interval=0.9`` and ``interval=(0.8, 0.9)``, in this process, on one warm
   ensemble (trees fitted, calibration stored), best of ``--repeat``.

Run (under the heavy-jobs lock on a shared machine)::

    python benchmarks/intervals.py --model demo-output/model [--proxies] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import cpu_summary

LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _in_sample(ensemble, store, tracks):
    """Calibration samples with the network's in-sample values (the dishonest reference)."""
    samples = {}
    for c, a in tracks:
        n = len(ensemble.average.celltypes_[a])
        if n < 2:
            continue
        y = store.read_track(c, a)
        left_out = (n * ensemble.average.predict(c, a) - y) / (n - 1)
        g = ensemble.trees.predict(c, a)
        net = ensemble.model.predict(c, a)
        samples.setdefault(a, []).append((y, ensemble.rule.combine(net, g, left_out, -np.inf),
                                          g, left_out))  # fmt: skip
    return samples


def score(ensemble, store, calibration, label: str) -> pd.DataFrame:
    from epitensor.evaluation.intervals import interval_summary, interval_table

    holdout = [tuple(t) for t in ensemble.model.holdout_tracks_]
    observed, bounds = {}, {"per-bin": {}, "constant": {}}
    for track in holdout:
        values, trees, average = ensemble.predict_parts([track])
        observed[track] = store.read_track(*track)
        bounds["per-bin"][track] = {
            x: calibration.interval(track[1], values[0], trees[0], average[0], x) for x in LEVELS
        }
        bounds["constant"][track] = {
            x: calibration.constant_interval(track[1], values[0], x) for x in LEVELS
        }
    table = interval_table(observed, bounds, train=ensemble.model.training_tracks_)
    return interval_summary(table).assign(calibration=label)


def show(summary: pd.DataFrame) -> None:
    keep = summary[summary.level.isin([0.8, 0.9])]
    frame = keep.pivot_table(
        index=["calibration", "group", "level"],
        columns=["subset", "method"],
        values=["coverage", "winkler"],
        sort=False,
    )
    from epitensor.viz.tables import markdown_table

    frame.columns = [f"{m} {s} {k}" for m, s, k in frame.columns]
    frame.index = [" ".join(map(str, i)) for i in frame.index]
    frame.index.name = "calibration group level"
    print(markdown_table(frame, 3))


def timing(model_dir, ensemble, repeat: int) -> dict:
    from epitensor.workflows.impute import impute

    tracks = [tuple(t) for t in ensemble.model.holdout_tracks_]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        impute(model_dir, tracks, Path(tmp) / "warm", trees_store=ensemble, verbose=False,
               interval=(0.8, 0.9))  # fmt: skip  # trees fitted, calibration stored
        runs = (("default", ()), ("interval 0.9", (0.9,)), ("interval 0.8 + 0.9", (0.8, 0.9)))
        for label, levels in runs:
            best = float("inf")
            for k in range(repeat):
                start = time.perf_counter()
                impute(model_dir, tracks, Path(tmp) / f"{len(levels)}-{k}", trees_store=ensemble,
                       verbose=False, interval=levels)  # fmt: skip
                best = min(best, time.perf_counter() - start)
            results[label] = best
    return results


def main() -> None:
    import torch

    from epitensor.estimators.avocado import load_model
    from epitensor.estimators.ensemble import Ensemble
    from epitensor.estimators.intervals import (
        PROXIES,
        IntervalCalibration,
        calibrate,
        calibration_for,
    )
    from epitensor.store.registry import open_store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory (trained with holdout)")
    parser.add_argument("--store", default="roadmap-pilot")
    parser.add_argument("--proxies", action="store_true", help="compare the network's stand-ins")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_summary()}; torch threads {args.threads}")
    store = open_store(args.store)
    model = load_model(args.model)
    ensemble = Ensemble(model, store)
    start = time.perf_counter()
    calibration = calibration_for(ensemble, args.model, verbose=True)
    print(f"calibration (or reading it): {time.perf_counter() - start:.1f} s; {calibration!r}")
    summaries = [score(ensemble, store, calibration, calibration.info.get("proxy", "stored"))]
    if args.proxies:
        for proxy in PROXIES:
            if proxy != calibration.info.get("proxy"):
                summaries.append(score(ensemble, store, calibrate(ensemble, proxy), proxy))
        naive = IntervalCalibration.fit(_in_sample(ensemble, store, model.training_tracks_))
        summaries.append(score(ensemble, store, naive, "network in-sample"))
    summary = pd.concat(summaries, ignore_index=True)
    show(summary)
    seconds = timing(args.model, ensemble, args.repeat)
    base = seconds["default"]
    for label, value in seconds.items():
        print(f"impute {len(model.holdout_tracks_)} tracks, {label}: {value:.2f} s "
              f"({value / base:.2f}x the default)")  # fmt: skip


if __name__ == "__main__":
    main()
