"""Wall time of one default training for one cross-validation fold (issue 16's time limit).

Trains exactly what the default imputation of one fold needs: the ``cpu-small``
preset (its 20 epochs, weights averaged from epoch 4; the blend with average
activity costs nothing in training) on the training tracks of the first fold of
``cv_folds(tracks, 5, seed)``, the fold's tracks monitored, and prints the wall
time with the CPU flags. ``--isa avx2`` reruns itself with oneDNN and torch capped
to AVX2 and fp32 (``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=avx2``): an
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

AVX2 = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
}


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
        raise SystemExit(subprocess.call(command, env={**os.environ, **AVX2}))
    import torch

    from epitensor._utils import cpu_summary
    from epitensor.avocado import Avocado
    from epitensor.benchmark import cv_folds
    from epitensor.datasets import roadmap_pilot

    torch.set_num_threads(args.threads)
    store = roadmap_pilot()
    tracks = store.track_names()
    fold = cv_folds(tracks, 5, args.seed)[0]
    train = [t for t in tracks if t not in set(fold)]
    precision = "fp32" if args.isa == "avx2" else "auto"
    model = Avocado.from_preset("cpu-small", precision=precision, verbose=False)
    start = time.perf_counter()
    model.fit(
        store,
        holdout=[
            t for t in fold if t[0] in {c for c, _ in train} and t[1] in {a for _, a in train}
        ],
        celltypes=sorted({c for c, _ in train}),
        assays=sorted({a for _, a in train}),
    )
    seconds = time.perf_counter() - start
    print(f"cpu: {cpu_summary()}; isa {args.isa}; precision {precision}; "
          f"{args.threads} threads; fold 1 of 5 (seed {args.seed}), {len(train)} training tracks: "
          f"{seconds:.0f} s ({seconds / 60:.1f} min), {seconds / model.n_epochs:.1f} s per epoch")  # fmt: skip


if __name__ == "__main__":
    main()
