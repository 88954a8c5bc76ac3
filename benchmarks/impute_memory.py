"""Benchmark the memory of genome-wide imputation: peak RSS against the number of chromosomes.

A saved model with one genome axis per chromosome (``--chroms`` chromosomes of
``--positions`` 25-bp positions each, the first bins of hg19 chr1, chr2, ...;
randomly initialised modules of a preset's size: memory does not depend on
trained values) is written to a temporary directory. Then, each in a fresh
Python process so that its peak RSS (``ru_maxrss``) is its own:

* ``load``: :meth:`Avocado.load` only (the network, no genome factors);
* ``1 chromosome``: :func:`epitensor.workflows.impute.impute` of ``--tracks`` tracks to
  bigWig over the first chromosome;
* ``all chromosomes``: the same over every chromosome.

The expected bound: imputation reads one chromosome's genome factors at a time
and drops them before the next, so ``all chromosomes`` stays within a fraction
of one axis of ``1 chromosome`` (plus the same block buffers and bigWig
writers), where holding every axis would add ``chroms - 1`` axes. The script
prints the figures and whether the bound held. Run::

    python benchmarks/impute_memory.py [--chroms 4] [--positions 2000000] [--tracks 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from epitensor.nn.hyperparams import STRUCTURAL


def make_model(path: Path, size: str, n_chroms: int, positions: int) -> None:
    """Save a random model with one axis of ``positions`` bins per chromosome."""
    import pandas as pd
    import torch

    from epitensor.estimators.avocado import PRESETS, Avocado
    from epitensor.genome.coordinates import Layout, chrom_sizes
    from epitensor.nn.module import AvocadoModule

    torch.manual_seed(0)
    sizes = chrom_sizes("hg19")
    chroms = [f"chr{k}" for k in range(1, n_chroms + 1)]
    regions = pd.DataFrame(
        {
            "axis": chroms,
            "chrom": chroms,
            "start": 0,
            "end": positions * 25,
            "name": chroms,
            "offset": 0,
            "first_bin": 0,
            "n_bins": positions,
        }
    )
    axes = {c: positions for c in chroms}
    kwargs = {k: PRESETS[size][k] for k in STRUCTURAL}
    names = [f"T{i}" for i in range(25)]
    model = Avocado.from_module(
        AvocadoModule(len(names), len(names), axes, **kwargs), celltypes=names, assays=names,
        layout=Layout(regions, axes, 25, f"first-{positions}-bins"), chrom_sizes=sizes,
        genome="hg19", **kwargs,
    )  # fmt: skip
    model.save(path)


def child(kind: str, model: str, n_tracks: int, threads: int) -> dict:
    """Peak RSS of one case, in this (fresh) process."""
    import torch

    from epitensor.estimators.avocado import Avocado
    from epitensor.workflows import impute as export

    torch.set_num_threads(threads)
    loaded = Avocado.load(model)
    if kind != "load":
        chroms = None if kind == "all chromosomes" else [next(iter(loaded.genome_axes_))]
        tracks = [(f"T{i}", f"T{(i + 3) % 25}") for i in range(n_tracks)]
        with tempfile.TemporaryDirectory() as tmp:
            export.impute(model, tracks, Path(tmp) / "out", chroms=chroms, verbose=False)
    return {"case": kind, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="cpu-small")
    parser.add_argument("--chroms", type=int, default=4)
    parser.add_argument("--positions", type=int, default=2_000_000)
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.tracks, args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        make_model(model, args.size, args.chroms, args.positions)
        axis_mb = (model / "genome" / "chr1.safetensors").stat().st_size / 2**20
        results = []
        for kind in ("load", "1 chromosome", "all chromosomes"):
            command = [sys.executable, __file__, "--child", kind, "--model", str(model)]
            command += ["--tracks", str(args.tracks), "--threads", str(args.threads)]
            out = subprocess.run(command, check=True, capture_output=True, text=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.size}, {args.chroms} chromosomes x {args.positions:,} positions, "
          f"{args.tracks} tracks; one axis's genome factors: {axis_mb:.0f} MB")  # fmt: skip
    print("| case | peak RSS (MB) |\n| --- | ---: |")
    for r in results:
        print(f"| {r['case']} | {r['peak_rss_mb']:.0f} |")
    one, every = results[1]["peak_rss_mb"], results[2]["peak_rss_mb"]
    # the bound: no axis beyond the one being imputed stays resident. Peak RSS is noisy
    # by tens of MB (allocator, threads), so the check asks for less than half of
    # what holding every axis would add; use axes of 100 MB or more (the defaults).
    held = every - one < 0.5 * (args.chroms - 1) * axis_mb
    print(f"all - one chromosome: {every - one:+.0f} MB (all axes held would add about "
          f"{(args.chroms - 1) * axis_mb:.0f} MB): bound {'held' if held else 'NOT held'}")  # fmt: skip


if __name__ == "__main__":
    main()
