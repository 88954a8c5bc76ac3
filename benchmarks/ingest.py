"""Benchmark ingestion of bigWig tracks: bins/second, peak memory, store size.

The 25 Roadmap pilot tracks (the originals, arcsinh; benchmarks/data/README.md) are turned
back into -log10 p (sinh) and written as bigWig files on the pilot layout (hg19,
one 25-bp record per bin), then ingested with the pilot layout, each
configuration in a fresh Python process so that peak RSS is its own:

* ``read only``: ``read_track`` for every track, no store (the readers' speed);
* ``ingest, workers=W``: the full ``epitensor.store.ingest.ingest`` into a new store
  (the pilot layout is small enough for block writes of 32 tracks);
* with ``--whole-genome``: the ENCODE fixture ENCFF324BPE onto whole hg19
  chromosomes (124 M bins, one track), the path that streams one chromosome
  of one track at a time.

The machine may be shared, so CPU seconds (parent + workers, user + system)
are given beside wall time. Peak RSS is ``ru_maxrss`` of the process (the parent, which writes the store)
and of its largest worker process. Run::

    python benchmarks/ingest.py [--tracks 25] [--workers 1 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# the 25 original pilot tracks (52 MB, not in the repository): benchmarks/data/README.md
PILOT = REPO / "benchmarks" / "data" / "roadmap-pilot"
PILOT_SOURCE = "https://github.com/jmschrei/avocado/tree/master/data"


def write_bigwigs(folder: Path, n_tracks: int) -> Path:
    """Write the pilot tracks as bigWig files plus a manifest; reuse files already there."""
    import pybigtools

    from epitensor.genome.coordinates import chrom_sizes
    from epitensor.genome.pilot import pilot_layout
    from epitensor.store.datasets import ROADMAP_ASSAYS, ROADMAP_CELLTYPES

    layout, sizes = pilot_layout(), chrom_sizes("hg19")
    regions = layout.regions.sort_values(["chrom", "first_bin"])
    chroms = {c: int(sizes[c]) for c in regions.chrom.unique()}
    rows = ["celltype\tassay\tpath"]
    tracks = [(c, a) for c in ROADMAP_CELLTYPES for a in ROADMAP_ASSAYS][:n_tracks]
    for celltype, assay in tracks:
        path = folder / f"{celltype}.{assay}.bw"
        rows.append(f"{celltype}\t{assay}\t{path.name}")
        if path.exists():
            continue
        values = np.load(PILOT / f"{celltype}.{assay}.pilot.arcsinh.npz")["arr_0"]
        signal = np.sinh(values.astype(np.float64))

        def records(signal=signal):
            for r in regions.itertuples():
                starts = (r.first_bin + np.arange(r.n_bins)) * 25
                piece = signal[r.offset : r.offset + r.n_bins]
                yield from zip(
                    [r.chrom] * r.n_bins, starts.tolist(), (starts + 25).tolist(), piece.tolist()
                )

        pybigtools.open(str(path), "w").write(chroms, records())
    manifest = folder / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def _peak_rss_mb() -> tuple[float, float]:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return self_kb / 1024, child_kb / 1024


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished workers."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def child(mode: str, manifest: Path, workers: int, out: Path) -> dict:
    """One measured configuration (runs in its own process)."""
    from epitensor.genome.coordinates import chrom_sizes
    from epitensor.genome.pilot import pilot_layout
    from epitensor.io.manifest import read_manifest
    from epitensor.io.readers import read_track
    from epitensor.store.ingest import ingest

    specs = read_manifest(manifest)
    if mode == "genome":  # whole chromosomes: the streaming path, one axis of one track
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        store = ingest(manifest, out, workers=workers, verbose=False, overwrite=True)
        layout = store.layout
        size = store.nbytes_on_disk()
        return _row(mode, workers, specs, layout, start, cpu_start, size)
    layout = pilot_layout()
    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    if mode == "read":
        sizes = chrom_sizes("hg19")
        for spec in specs:
            for _axis, _values in read_track(spec.path, layout, sizes, genome="hg19"):
                pass
        size = None
    else:
        store = ingest(
            manifest, out, regions=layout, workers=workers, verbose=False, overwrite=True
        )
        size = store.nbytes_on_disk()
    return _row(mode, workers, specs, layout, start, cpu_start, size)


def _row(mode, workers, specs, layout, start, cpu_start, size) -> dict:
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_start
    parent, worker = _peak_rss_mb()
    bins = len(specs) * layout.n_positions
    return {
        "mode": mode,
        "workers": workers,
        "tracks": len(specs),
        "bins": bins,
        "seconds": seconds,
        "bins_per_s": bins / seconds,
        "cpu_seconds": cpu,
        "bins_per_cpu_s": bins / cpu,
        "peak_rss_parent_mb": parent,
        "peak_rss_worker_mb": worker if workers > 1 else None,
        "store_mb": None if size is None else size / 1e6,
        "raw_float32_mb": bins * 4 / 1e6,
    }


def run(mode: str, manifest: Path, workers: int, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", mode, str(manifest), str(workers), str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"benchmark step {mode} (workers={workers}) failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    global PILOT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=25)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--whole-genome",
        action="store_true",
        help="also ingest ENCFF324BPE (hg19, 24 chromosomes) onto whole chromosomes",
    )
    parser.add_argument("--pilot-dir", type=Path, default=PILOT, help="the original pilot tracks")
    args = parser.parse_args()
    PILOT = args.pilot_dir
    if not PILOT.is_dir():
        print(
            f"skipped: the 25 Roadmap pilot tracks *.pilot.arcsinh.npz are not in {PILOT}; "
            f"download them from {PILOT_SOURCE} (sha256 of each: benchmarks/data/README.md)"
        )
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="epitensor-bench-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    manifest = write_bigwigs(workdir, args.tracks)
    print(f"bigWig files ready in {time.perf_counter() - start:.1f} s ({workdir})", file=sys.stderr)
    results = [run("read", manifest, 1, workdir / "unused")]
    for workers in args.workers:
        results.append(run("ingest", manifest, workers, workdir / f"store-w{workers}.zarr"))
    if args.whole_genome:
        encode = REPO / "tests" / "data" / "genomedata" / "ENCFF324BPE.bigWig"
        genome_manifest = workdir / "genome.tsv"
        genome_manifest.write_text(f"celltype\tassay\tpath\nK562\tENCFF324BPE\t{encode}\n")
        results.append(run("genome", genome_manifest, 1, workdir / "store-genome.zarr"))
    header = (
        "| step | workers | tracks x bins | wall s | bins/s | CPU s | bins/CPU-s "
        "| peak RSS parent | peak RSS worker | store / raw float32 |"
    )
    print(header)
    print("|" + " --- |" * 10)
    for r in results:
        step = {
            "read": "pilot: read only (read_track)",
            "ingest": "pilot: ingest into a store",
            "genome": "ENCFF324BPE: whole hg19, streamed",
        }[r["mode"]]
        worker = f"{r['peak_rss_worker_mb']:.0f} MB" if r["peak_rss_worker_mb"] else "-"
        ratio = (
            f"{r['store_mb']:.1f} MB / {r['raw_float32_mb']:.1f} MB = {r['store_mb'] / r['raw_float32_mb']:.1%}"
            if r["store_mb"]
            else "-"
        )
        print(
            f"| {step} | {r['workers']} | {r['tracks']} x {r['bins'] // r['tracks']:,} | "
            f"{r['seconds']:.1f} | {r['bins_per_s'] / 1e6:.2f} M | {r['cpu_seconds']:.1f} | "
            f"{r['bins_per_cpu_s'] / 1e6:.2f} M | {r['peak_rss_parent_mb']:.0f} MB | "
            f"{worker} | {ratio} |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, mode, manifest, workers, out = sys.argv
        print(json.dumps(child(mode, Path(manifest), int(workers), Path(out))))
    else:
        main()
