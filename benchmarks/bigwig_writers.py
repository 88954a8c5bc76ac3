"""bigWig writers side by side: the same genome-shaped 25-bp track, one process, each file read back by the others.

The track is real signal at imputation's shape: the 25 Roadmap pilot tracks
(arcsinh -log10 p, 1,126,469 bins each) laid end to end and tiled over every
25-bp bin of the chosen hg19 chromosomes (chr1 by default: 9,970,925 bins; with
``--chrom all``, chr1-22 + chrX: 121,452,164 bins, a genome-wide track), as
``sinh`` (the -log10 p scale ``epitensor impute`` writes). Every bin is written,
the last bin of each chromosome cut to its end, as runs of 25-bp bins fed a
block of ``--block`` bins at a time (as imputation produces them):

* ``epitensor.io.bigwig``: :class:`~epitensor.io.bigwig.BigWigEncoder` ``.add(chrom,
  start, values, end=...)`` per block (the writer ``epitensor impute`` uses);
* ``pybigtools``: ``open(path, "w").write(chrom_sizes, records)`` with one
  ``(chrom, start, end, value)`` tuple per bin;
* ``pyBigWig fixedStep``: ``addEntries(chrom, start, values=..., span=25, step=25)``
  per block (numpy arrays; fixedStep sections);
* ``pyBigWig bedGraph``: ``addEntries(chroms, starts, ends=..., values=...)``;
* ``figwig``: ``BigWigWriter.write(chrom, starts, values, ends=...)`` per block,
  with compression on ``n_jobs`` threads (the CPUs usable, and 1).

Each writer is timed (wall and process CPU seconds), and the ratio to the
fastest is shown. Each file is then read back by the libraries that did *not*
write it (pyBigWig ``values``, pybigtools ``values``, figwig ``read_bigwig``) at
``--samples`` random bins per chromosome plus each chromosome's first and last
bin, and compared with the float32 values written. Other bigWig libraries on
PyPI were looked at: pybbi reads only (UCSC's library has no writer bindings);
bwo-io writes its own format and converts. A table with the CPU flags is printed,
then the CPU time of zlib alone on the same values as fixedStep sections: the
least any bigWig writer can spend, and each writer's CPU time over it.

    python benchmarks/bigwig_writers.py                 # chr1
    python benchmarks/bigwig_writers.py --chrom all     # genome-wide track (quiet machine)
    python benchmarks/bigwig_writers.py --fraction 0.02 # a 2% slice of chr1, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from itertools import repeat
from pathlib import Path

import numpy as np

RES = 25
ALL_CHROMS = [f"chr{i}" for i in range(1, 23)] + ["chrX"]


def track(chroms: list[str], fraction: float) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Chromosome sizes and one float32 value per 25-bp bin (the pilot signal, tiled).

    Returns
    -------
    sizes : dict of str to int
        bp, cut to ``fraction`` of each chromosome (at least one bin).
    values : dict of str to numpy.ndarray, shape=(n_bins,), float32, -log10 p
    """
    from epitensor.genome.coordinates import chrom_sizes
    from epitensor.store.datasets import roadmap_pilot_arrays

    pilot = np.sinh(np.concatenate(list(roadmap_pilot_arrays().values()))).astype(np.float32)
    hg19 = chrom_sizes("hg19")
    sizes, values, offset = {}, {}, 0
    for chrom in chroms:
        length = max(RES, int(int(hg19[chrom]) * fraction))
        sizes[chrom] = length
        n = -(-length // RES)
        index = (offset + np.arange(n)) % len(pilot)
        values[chrom] = pilot[index]
        offset += n
    return sizes, values


def blocks(
    sizes: dict[str, int], values: dict[str, np.ndarray], block: int
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(chrom, starts, ends, values)`` per block of bins, bp, the last bin cut to the end."""
    for chrom, length in sizes.items():
        row = values[chrom]
        for lo in range(0, len(row), block):
            hi = min(lo + block, len(row))
            starts = np.arange(lo, hi, dtype=np.int64) * RES
            ends = np.minimum(starts + RES, length)
            yield chrom, starts, ends, row[lo:hi]


# the writers ------------------------------------------------------------------------------------


def write_pybigtools(path: Path, sizes, values, block: int) -> None:
    import pybigtools

    def records():
        for chrom, starts, ends, vals in blocks(sizes, values, block):
            yield from zip(repeat(chrom), starts.tolist(), ends.tolist(), vals.tolist())

    writer = pybigtools.open(str(path), "w")
    writer.write(dict(sizes), records())


def write_epitensor(path: Path, sizes, values, block: int) -> None:
    from epitensor.io.bigwig import BigWigEncoder

    encoder = BigWigEncoder(path, dict(sizes), RES)
    for chrom, starts, ends, vals in blocks(sizes, values, block):
        encoder.add(chrom, int(starts[0]), vals, end=int(ends[-1]))
    encoder.close()


def write_pybigwig_fixed(path: Path, sizes, values, block: int) -> None:
    import pyBigWig

    with pyBigWig.open(str(path), "w") as bw:
        bw.addHeader(list(sizes.items()))
        for chrom, starts, ends, vals in blocks(sizes, values, block):
            whole = len(ends) if ends[-1] - starts[-1] == RES else len(ends) - 1
            if whole > 0:
                bw.addEntries(
                    chrom,
                    int(starts[0]),
                    values=vals[:whole].astype(np.float64),
                    span=RES,
                    step=RES,
                )
            if whole < len(ends):  # the chromosome's last, partial bin
                bw.addEntries(
                    [chrom], [int(starts[-1])], ends=[int(ends[-1])], values=[float(vals[-1])]
                )


def write_pybigwig_bedgraph(path: Path, sizes, values, block: int) -> None:
    import pyBigWig

    with pyBigWig.open(str(path), "w") as bw:
        bw.addHeader(list(sizes.items()))
        for chrom, starts, ends, vals in blocks(sizes, values, block):
            bw.addEntries(
                [chrom] * len(starts),
                starts.tolist(),
                ends=ends.tolist(),
                values=vals.astype(np.float64).tolist(),
            )


def _figwig(n_jobs: int):
    def write(path: Path, sizes, values, block: int) -> None:
        import figwig

        with figwig.BigWigWriter(str(path), list(sizes.items()), n_jobs=n_jobs) as bw:
            for chrom, starts, ends, vals in blocks(sizes, values, block):
                bw.write(chrom, starts, vals, ends=ends)

    return write


# the readers ------------------------------------------------------------------------------------


def zlib_floor(sizes, values, section: int = 1024, level: int = 6) -> float:
    """CPU seconds of zlib alone on the values as fixedStep sections of float32 (no file).

    What any bigWig writer must at least spend: the data sections are zlib
    streams (1,024 items per section is UCSC's default), and fixedStep's 4
    bytes per bin is the least a section can hold before compression.
    """
    import zlib

    cpu0 = os.times()
    for chrom in sizes:
        data = values[chrom].astype(np.float32)
        for lo in range(0, len(data), section):
            zlib.compress(data[lo : lo + section].tobytes(), level)
    cpu1 = os.times()
    return (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)


def read_pybigwig(path: Path, chrom: str, bins: np.ndarray) -> np.ndarray:
    import pyBigWig

    with pyBigWig.open(str(path)) as bw:
        return np.array([bw.values(chrom, int(b) * RES, int(b) * RES + 1)[0] for b in bins])


def read_pybigtools(path: Path, chrom: str, bins: np.ndarray) -> np.ndarray:
    import pybigtools

    bw = pybigtools.open(str(path))
    try:
        return np.array(
            [bw.values(chrom, int(b) * RES, int(b) * RES + 1, fillna=None)[0] for b in bins]
        )
    finally:
        bw.close()


def read_figwig(path: Path, chrom: str, bins: np.ndarray) -> np.ndarray:
    import figwig

    return figwig.read_bigwig(str(path), chrom, bins * RES, 1, missing=np.nan)[:, 0]


READERS = {"pyBigWig": read_pybigwig, "pybigtools": read_pybigtools, "figwig": read_figwig}


def check(path: Path, library: str, sizes, values, n_samples: int, rng) -> dict[str, float]:
    """Largest |read - written| per other library, at sampled bins of every chromosome."""
    worst = {}
    for reader, read in READERS.items():
        if reader == library:
            continue
        diff = 0.0
        for chrom in sizes:
            n = len(values[chrom])
            bins = np.unique(np.r_[rng.integers(0, n, n_samples), 0, n - 1])
            got = read(path, chrom, bins)
            diff = max(diff, float(np.nanmax(np.abs(got - values[chrom][bins]))))
            if np.isnan(got).any():
                diff = float("inf")
        worst[reader] = diff
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chrom", action="append", help="chromosome (repeat) or 'all'")
    parser.add_argument("--fraction", type=float, default=1.0, help="of each chromosome")
    parser.add_argument("--block", type=int, default=16384, help="bins per write call")
    parser.add_argument("--samples", type=int, default=2000, help="bins checked per chrom")
    parser.add_argument("--out", help="folder for the files (default: a temporary one)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    from epitensor._utils import available_cpus, cpu_summary

    chroms = args.chrom or ["chr1"]
    chroms = ALL_CHROMS if chroms == ["all"] else chroms
    sizes, values = track(chroms, args.fraction)
    n_bins = sum(len(v) for v in values.values())
    cpus = available_cpus()
    writers = {
        ("epitensor", "epitensor.io.bigwig fixedStep"): write_epitensor,
        ("pybigtools", "pybigtools 1 tuple/bin"): write_pybigtools,
        ("pyBigWig", "pyBigWig fixedStep"): write_pybigwig_fixed,
        ("pyBigWig", "pyBigWig bedGraph"): write_pybigwig_bedgraph,
        ("figwig", f"figwig n_jobs={cpus}"): _figwig(cpus),
        ("figwig", "figwig n_jobs=1"): _figwig(1),
    }
    print(f"CPU: {cpu_summary()}")
    print(
        f"track: {', '.join(chroms)} x{args.fraction:g}, {n_bins:,} 25-bp bins, "
        f"blocks of {args.block:,}"
    )
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.out or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        # warm-up: figwig compiles its numba kernels on first use, the others load lazily
        tiny_sizes, tiny_values = track(chroms[:1], 1e-4)
        for (library, _), write in writers.items():
            write(folder / f"warmup-{library}.bw", tiny_sizes, tiny_values, args.block)
            check(folder / f"warmup-{library}.bw", library, tiny_sizes, tiny_values, 10, rng)
        for (library, name), write in writers.items():
            path = folder / (name.replace(" ", "_").replace("/", "-").replace("=", "") + ".bw")
            cpu0, tic = os.times(), time.perf_counter()
            write(path, sizes, values, args.block)
            wall, cpu1 = time.perf_counter() - tic, os.times()
            cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            diffs = check(path, library, sizes, values, args.samples, rng)
            rows.append(
                {
                    "writer": name,
                    "seconds": wall,
                    "cpu_seconds": cpu,
                    "bins_per_s": n_bins / wall,
                    "bytes": path.stat().st_size,
                    "max_abs_diff": diffs,
                }
            )
    fastest = min(r["seconds"] for r in rows)
    print(
        "\n| writer | wall s | x fastest | CPU s | M bins/s | MB | read back by others: max abs diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        diffs = ", ".join(f"{k} {v:.0e}" for k, v in r["max_abs_diff"].items())
        print(
            f"| {r['writer']} | {r['seconds']:.2f} | {r['seconds'] / fastest:.2f} | "
            f"{r['cpu_seconds']:.2f} | {r['bins_per_s'] / 1e6:.2f} | {r['bytes'] / 1e6:.1f} | "
            f"{diffs} |"
        )
    floor = zlib_floor(sizes, values)
    print(
        f"\nzlib alone (fixedStep sections of 1,024 float32, level 6, no file): {floor:.2f} CPU s, "
        f"{floor / n_bins * 1e9:.0f} ns per bin; each writer's CPU over it: "
        + ", ".join(f"{r['writer']} {r['cpu_seconds'] / floor:.1f}x" for r in rows)
    )
    ok = all(v == 0.0 for r in rows for v in r["max_abs_diff"].values())
    print(f"\nall files read back exactly by the other libraries: {ok}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "cpu": cpu_summary(),
                    "n_bins": n_bins,
                    "chroms": chroms,
                    "rows": rows,
                    "zlib_cpu_seconds": floor,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
