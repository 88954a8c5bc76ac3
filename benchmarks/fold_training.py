"""Wall time of one default training for one cross-validation fold (issue 16's time limit).

Trains exactly what the default imputation of one fold needs: the ``cpu-small``
preset (its 20 epochs, weights averaged from epoch 4; the blend with average
activity costs nothing in training) on the training tracks of the first fold of
``cv_folds(tracks, 5, seed)``, the fold's tracks monitored, and prints the wall
time with the CPU flags; then the ensemble's part (:mod:`epitensor.estimators.ensemble`:
the trees and the average fitted, the fold's tracks imputed). ``--isa avx2`` reruns itself with oneDNN and torch capped
to AVX2 and fp32 (``versus_original.AVX2_ENV``): an
emulation of an AVX2-only CPU on an AVX-512 one, not a measurement of one (its
cores still run at their own clock and cache sizes).

    python benchmarks/fold_training.py [--isa native|avx2] [--seed 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from versus_original import AVX2_ENV  # noqa: E402  the same emulation as there


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--isa", choices=["native", "avx2"], default="native")
    parser.add_argument("--seed", type=int, default=0, help="fold assignment seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.isa == "avx2" and not args.child:
        command = [sys.executable, __file__, "--child", "--isa", "avx2", "--seed", str(args.seed),
                   "--threads", str(args.threads)]  # fmt: skip
        raise SystemExit(subprocess.call(command, env={**os.environ, **AVX2_ENV}))
    import torch

    from epitensor._utils import cpu_summary
    from epitensor.estimators.ensemble import Ensemble
    from epitensor.evaluation.benchmark import _fit_model, cv_folds
    from epitensor.store.datasets import roadmap_pilot

    torch.set_num_threads(args.threads)
    store = roadmap_pilot()
    tracks = store.track_names()
    fold = cv_folds(tracks, 5, args.seed)[0]
    train = [t for t in tracks if t not in set(fold)]
    precision = "fp32" if args.isa == "avx2" else "auto"
    start = time.perf_counter()  # what run_cv times per fold and seed
    model = _fit_model(store, fold, "cpu-small", {"precision": precision}, False, train=train)
    seconds = time.perf_counter() - start
    print(f"cpu: {cpu_summary()}; isa {args.isa}; precision {precision}; "
          f"{args.threads} threads; fold 1 of 5 (seed {args.seed}), {len(train)} training tracks: "
          f"{seconds:.0f} s ({seconds / 60:.1f} min), {seconds / model.n_epochs:.1f} s per epoch")  # fmt: skip
    start = time.perf_counter()  # the ensemble's part: trees and average, the fold imputed
    ensemble = Ensemble(model, store)
    for track in fold:
        ensemble.predict(*track)
    extra = time.perf_counter() - start
    print(
        f"ensemble: trees and average fitted, {len(fold)} tracks imputed: {extra:.0f} s; "
        f"in all {(seconds + extra) / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
