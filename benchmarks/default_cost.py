"""What the default imputation costs beside the network alone, per track (issue 32, item 4).

``epitensor impute`` writes by default the ensemble of the model, ChromImpute-style
trees and average activity (:mod:`epitensor.estimators.ensemble`). This script times,
in one process and for one track at a time, :func:`epitensor.workflows.impute.impute`
end to end (bigWig writing included, fp32, arcsinh) with the model alone
(``trees_store=None``) and with the default ensemble (``trees_store`` the training
store: the trees' and the average's fits for the track, their predictions and the
combination all counted), on the pilot axis and on its first ``--small`` regions.

A cost ``t = a + b n`` per track (``n`` positions: ``a`` the trees' fit on a fixed
50,000 positions, ``b`` per position) is fitted to the two sizes for each, and
projected to a genome-wide track of hg19 (115,241,319 bins of 25 bp). The model is
``cpu-small`` trained one epoch (speed does not depend on trained values). The CPU's
flags are printed; run under the heavy-job lock::

    flock /tmp/epitensor-heavy.lock python benchmarks/default_cost.py [--threads 2] [--small 8]
    flock /tmp/epitensor-heavy.lock python benchmarks/default_cost.py --preset paper --small 1 --large 2

``--preset paper`` trains the paper's sizes one epoch without the genome epoch on
stores of ``--small`` and ``--large`` regions (the network's cost per position does
not depend on trained values; small stores keep its training short).

Limits: the pilot is ~1% of the genome in 44 regions, not the real-size store of
``benchmarks/real_size.py``; the per-position part is measured, the genome-wide
figure a linear projection.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

GENOME_POSITIONS = 115_241_319
TRACKS = [("E003", "H3K4me3"), ("E116", "H3K27me3")]


def _time_impute(model_dir: Path, store, track, out: Path, ensemble: bool) -> float:
    from epitensor.workflows.impute import impute

    started = time.perf_counter()
    impute(model_dir, [track], out, arcsinh=True, overwrite=True, verbose=False,
           trees_store=store.url if ensemble else None)  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--small", type=int, default=8, help="regions of the small store")
    parser.add_argument(
        "--large",
        type=int,
        default=None,
        help="regions of the large store; default: the whole pilot (44)",
    )
    parser.add_argument(
        "--preset",
        default="cpu-small",
        help="model size: cpu-small, or paper (trained one epoch, no genome epoch)",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from epitensor._utils import cpu_summary
    from epitensor.demo import region_subset
    from epitensor.estimators.avocado import Avocado
    from epitensor.store.datasets import roadmap_pilot

    print(f"cpu: {cpu_summary()}; torch threads {args.threads}; preset {args.preset}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        full = roadmap_pilot()
        small = region_subset(full, args.small, tmp / "small.zarr")
        large = full if args.large is None else region_subset(full, args.large, tmp / "l.zarr")
        genome_epochs = 1 if args.preset == "cpu-small" else 0  # speed needs no training
        for name, store in (("small", small), ("large", large)):
            model = Avocado.from_preset(args.preset, n_epochs=1, n_genome_epochs=genome_epochs,
                                        verbose=False, n_threads=args.threads)  # fmt: skip
            model.fit(store, holdout=TRACKS)
            model.save(tmp / f"model-{name}")
            for track in TRACKS:
                alone = _time_impute(tmp / f"model-{name}", store, track, tmp / "alone", False)
                default = _time_impute(tmp / f"model-{name}", store, track, tmp / "ens", True)
                n = store.layout.n_positions
                rows.append((name, n, track, alone, default))
                print(f"{name} ({n:,} positions) {track[0]} {track[1]}: network alone "
                      f"{alone:.1f} s, default {default:.1f} s, extra {default - alone:.1f} s "
                      f"({(default - alone) / alone:.2f} x the network)", flush=True)  # fmt: skip
    import numpy as np

    sizes = np.array([r[1] for r in rows], dtype=float)
    for label, column in (("network alone", 3), ("extra parts", None)):
        values = np.array([r[4] - r[3] if column is None else r[column] for r in rows])
        slope, intercept = np.polyfit(sizes, values, 1)
        genome = intercept + slope * GENOME_POSITIONS
        print(f"{label}: {intercept:.1f} s + {slope * 1e6:.2f} s per million positions; "
              f"projected per genome-wide track {genome / 60:.1f} min")  # fmt: skip


if __name__ == "__main__":
    main()
