"""The trees' prediction over the pilot axis: per-position gathers + DMatrix against slices + in-place predictor.

:class:`~epitensor.estimators.baselines.ChromImputeGBT` predicts a whole axis in
blocks of features. It used to build each block by gathering every position's
neighbours and windows (``_expand`` on ``np.arange``) and to predict through a
``DMatrix``; it now builds the block by slices into one C-contiguous float32
array (``_expand_range``) and predicts with XGBoost's in-place predictor. Both
run here in one process on the same fitted trees (100 trees of depth 6, the
default), for E116 H3K27me3 on the bundled pilot (1,126,469 positions), and must
give the same values; the time of the predictor alone is printed too. Under the
heavy-job lock::

    flock /tmp/epitensor-heavy.lock python benchmarks/trees_predict.py [--threads 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    import xgboost

    from epitensor._utils import cpu_summary
    from epitensor.estimators.baselines import BLOCK, ChromImputeGBT
    from epitensor.store.datasets import roadmap_pilot

    print(f"cpu: {cpu_summary()}; xgboost threads {args.threads}", flush=True)
    store = roadmap_pilot()
    target = ("E116", "H3K27me3")
    train = [t for t in store.track_names() if t != target]
    trees = ChromImputeGBT(n_threads=args.threads, seed=0).fit(store, train)
    booster, donors, assays = trees._model(*target)
    n = store.axis_length("pilot")

    def gathered() -> np.ndarray:  # the previous path
        base = trees._base("pilot", *target, donors, assays)
        cumulative = trees._cumulative(base)
        out = np.empty(n, dtype=np.float32)
        for lo in range(0, n, BLOCK):
            hi = min(lo + BLOCK, n)
            features = trees._expand(base, np.arange(lo, hi), cumulative)
            out[lo:hi] = booster.predict(xgboost.DMatrix(features))
        return out

    for _ in range(args.repeat):
        started = time.perf_counter()
        before = gathered()
        t_before = time.perf_counter() - started
        started = time.perf_counter()
        after = trees.predict(*target)
        t_after = time.perf_counter() - started
        features = trees._expand_range(trees._base("pilot", *target, donors, assays), 0, BLOCK,
                                       trees._cumulative(trees._base("pilot", *target, donors,
                                                                     assays)))  # fmt: skip
        started = time.perf_counter()
        booster.inplace_predict(features, missing=np.nan)
        t_predictor = (time.perf_counter() - started) * n / BLOCK
        print(f"{n:,} positions: gathers + DMatrix {t_before:.2f} s, slices + in-place "
              f"{t_after:.2f} s (the predictor alone about {t_predictor:.2f} s); "
              f"max |difference| {np.abs(before - after).max():.1e}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
