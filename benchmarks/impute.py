"""Benchmark imputation: positions/second of fast vs plain inference, projected genome time.

For each size (the ``paper`` and ``cpu-small`` presets: 2 x 2048 and 2 x 256
hidden units, 32 + 256 + 110 factors) a randomly initialised module on the
pilot axis (1,126,469 positions; speed does not depend on trained values) is
timed in a fresh Python process, so that its peak RSS is its own:

* ``plain``: the textbook forward pass, the 398-wide concatenated input through
  the whole network (:func:`epitensor.export.plain_predict`), one track at a time;
* ``module.forward``: :meth:`AvocadoModule.forward` with the track's indices
  repeated per position (the training forward pass; its first layer is
  already split by component);
* ``fast, k tracks``: :class:`epitensor.export.FastPredictor`, the genome part
  of the first layer computed once per block of positions and shared by the
  k tracks; throughput counted in (track, position) pairs per second;
* ``fast bf16``: the same with the layers after the first in bfloat16;
* ``impute to bigWig``: :func:`epitensor.export.impute` end to end (fp32),
  bigWig writing included, for 1 and 8 tracks.

Ratios are against ``plain`` in the same process. The projected time for one
genome-wide track is 115,241,319 positions (hg19 at 25 bp) over the end-to-end
rate. Run::

    python benchmarks/impute.py [--sizes paper cpu-small] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

GENOME_POSITIONS = 115_241_319
MODULE_KEYS = (
    "n_celltype_factors",
    "n_assay_factors",
    "n_25bp_factors",
    "n_250bp_factors",
    "n_5kbp_factors",
    "n_layers",
    "n_nodes",
)
POSITIONS = {"paper": 24_576, "cpu-small": 196_608}


def _rate(func, n_items: int, repeat: int = 2) -> float:
    """Best items/second of ``repeat`` runs (after one warm-up call on a small input)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return n_items / best


def child(size: str, threads: int) -> dict:
    import torch

    from epitensor import export
    from epitensor.avocado import PRESETS
    from epitensor.datasets import ROADMAP_PILOT_POSITIONS, pilot_layout
    from epitensor.genome import chrom_sizes
    from epitensor.model import AvocadoModule

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kwargs = {k: PRESETS[size][k] for k in MODULE_KEYS}
    module = AvocadoModule(25, 25, {"pilot": ROADMAP_PILOT_POSITIONS}, **kwargs).eval()
    names = [f"T{i}" for i in range(25)]
    model = types.SimpleNamespace(
        module_=module,
        celltypes_=names,
        assays_=names,
        layout_=pilot_layout(),
        chrom_sizes_=chrom_sizes("hg19"),
        genome_="hg19",
        device="cpu",
    )
    n = POSITIONS[size]
    start = 100_000
    one = [("T1", "T2")]
    result = {"size": size, "n_nodes": kwargs["n_nodes"], "positions": n, "threads": threads}

    export.plain_predict(model, "T1", "T2", "pilot", 0, 2048)  # warm-up
    result["plain"] = _rate(
        lambda: export.plain_predict(model, "T1", "T2", "pilot", start, start + n), n
    )

    def forward() -> None:
        with torch.inference_mode():
            for lo in range(start, start + n, 8192):
                pos = torch.arange(lo, min(lo + 8192, start + n))
                idx = torch.full_like(pos, 1)
                module(idx, idx, pos, "pilot")

    result["module.forward"] = _rate(forward, n)
    for k, precision in [(1, "fp32"), (8, "fp32"), (24, "fp32"), (1, "bf16"), (8, "bf16")]:
        tracks = [(f"T{i}", f"T{(i + 3) % 25}") for i in range(k)]
        predictor = export.FastPredictor(model, tracks, device="cpu", precision=precision)
        m = n if k == 1 else max(n // k, export.DEFAULT_BLOCK_SIZE)

        def fast(predictor=predictor, m=m) -> None:
            for lo in range(start, start + m, export.DEFAULT_BLOCK_SIZE):
                predictor.predict("pilot", lo, min(lo + export.DEFAULT_BLOCK_SIZE, start + m))

        with predictor.session():
            predictor.predict("pilot", 0, 2048)
            name = f"fast{' bf16' if precision == 'bf16' else ''}, {k} track{'s' * (k > 1)}"
            result[name] = _rate(fast, m * k, repeat=1 if k > 1 else 2)

    # end to end, bigWig writing included: the first pilot regions, about n positions
    segments = export.track_segments(model.layout_, model.chrom_sizes_)
    seg = segments.iloc[0]
    span = min(n, int(seg.axis_end - seg.axis_start))
    first_bp = int(seg.first_bin) * 25
    region = f"{seg.chrom}:{first_bp}-{first_bp + span * 25}"
    with tempfile.TemporaryDirectory() as tmp:
        start_time = time.perf_counter()
        export.impute(model, one, Path(tmp) / "one.bw", regions=[region], verbose=False)
        result["impute to bigWig, 1 track"] = span / (time.perf_counter() - start_time)
        tracks8 = [(f"T{i}", f"T{i}") for i in range(8)]
        start_time = time.perf_counter()
        export.impute(model, tracks8, Path(tmp) / "eight", regions=[region], verbose=False)
        result["impute to bigWig, 8 tracks"] = 8 * span / (time.perf_counter() - start_time)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def report(results: list[dict]) -> str:
    lines = [
        "| size | method | (track, position) pairs / s | vs plain | projected genome-wide track |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in results:
        for key in [k for k in r if k in METHODS or k.startswith("fast")]:
            rate = r[key]
            hours = GENOME_POSITIONS / rate / 3600
            lines.append(
                f"| {r['size']} (2 x {r['n_nodes']}) | {key} | {rate:,.0f} | "
                f"{rate / r['plain']:.2f}x | {hours:.2f} h |"
            )
    lines.append("")
    lines += [f"peak RSS {r['size']}: {r['peak_rss_mb']:.0f} MB" for r in results]
    return "\n".join(lines)


METHODS = ("plain", "module.forward", "impute to bigWig, 1 track", "impute to bigWig, 8 tracks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["cpu-small", "paper"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.threads)))
        return
    results = []
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", size, "--threads", str(args.threads)],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{size} done", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(report(results))


if __name__ == "__main__":
    main()
