"""Benchmark imputation: positions/second of fast vs plain inference, projected genome time.

For each size (the ``paper`` and ``cpu-small`` presets: 2 x 2048 and 2 x 256
hidden units, 32 + 256 + 110 factors) a randomly initialised module on the
pilot axis (1,126,469 positions; speed does not depend on trained values) is
timed in a fresh Python process, so that its peak RSS is its own:

* ``plain``: the textbook forward pass, the 398-wide concatenated input through
  the whole network (:func:`epitensor.workflows.impute.plain_predict`), one track at a time;
* ``module.forward``: :meth:`AvocadoModule.forward` with the track's indices
  repeated per position (the training forward pass; its first layer is
  already split by component);
* ``fast, k tracks``: :class:`epitensor.workflows.impute.FastPredictor`, the genome part
  of the first layer computed once per block of positions and shared by the
  k tracks; throughput counted in (track, position) pairs per second;
* ``fast bf16``: the same with the layers after the first in bfloat16;
* ``impute to bigWig``: :func:`epitensor.workflows.impute.impute` end to end (fp32),
  bigWig writing included, for 1 and 8 tracks.

Ratios are against ``plain`` in the same process. The projected time for one
genome-wide track is 115,241,319 positions (hg19 at 25 bp) over the end-to-end
rate. Run::

    python benchmarks/impute.py [--sizes paper cpu-small] [--threads 2]

``--writing`` instead measures what writing costs (8 tracks at the given size,
in one process): the arithmetic alone (:class:`FastPredictor` over every
block), the bigWig writing alone (the same values fed to the writers) and
:func:`epitensor.workflows.impute.impute` end to end, on ``--positions`` positions laid
out as one contiguous run (a chromosome, as genome-wide) and as the same
positions cut into 10 regions with gaps between them (a region layout such as
the pilot sample's). The figure to read is end to end / arithmetic: 1.0 means
writing is free. The CPU's flags (AVX2 / AVX-512 / AMX) are printed::

    python benchmarks/impute.py --writing [--sizes cpu-small] [--threads 2] [--positions 400000]

With ``--writing`` each table also gives the bound that a plain fp32 matmul of
the network's width allows, measured in the same process (:func:`matmul_bound`),
and end to end as a fraction of it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from epitensor._utils import cpu_summary
from epitensor.nn.hyperparams import STRUCTURAL

GENOME_POSITIONS = 115_241_319
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

    from epitensor.estimators.avocado import PRESETS, Avocado
    from epitensor.genome.coordinates import chrom_sizes
    from epitensor.genome.pilot import ROADMAP_PILOT_POSITIONS, pilot_layout
    from epitensor.nn.module import AvocadoModule, onednn_available
    from epitensor.workflows import impute as export

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kwargs = {k: PRESETS[size][k] for k in STRUCTURAL}
    module = AvocadoModule(25, 25, {"pilot": ROADMAP_PILOT_POSITIONS}, **kwargs).eval()
    names = [f"T{i}" for i in range(25)]
    model = Avocado.from_module(
        module, celltypes=names, assays=names, layout=pilot_layout(),
        chrom_sizes=chrom_sizes("hg19"), genome="hg19", device="cpu", verbose=False, **kwargs,
    )  # fmt: skip
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
    cases = [(1, "fp32", None), (8, "fp32", None), (24, "fp32", None), (1, "bf16", None),
             (8, "bf16", None), (1, "fp32", "default"), (1, "fp32", "onednn")]  # fmt: skip
    for k, precision, gemm in cases:
        if gemm == "onednn" and not onednn_available():
            continue
        tracks = [(f"T{i}", f"T{(i + 3) % 25}") for i in range(k)]
        if gemm is not None:  # the products' choice is read when a session opens
            os.environ["EPITENSOR_CPU_GEMM"] = gemm
        predictor = export.FastPredictor(model, tracks, device="cpu", precision=precision)
        m = n if k == 1 else max(n // k, export.DEFAULT_BLOCK_SIZE)

        def fast(predictor=predictor, m=m) -> None:
            for lo in range(start, start + m, export.DEFAULT_BLOCK_SIZE):
                predictor.predict("pilot", lo, min(lo + export.DEFAULT_BLOCK_SIZE, start + m))

        with predictor.session():
            predictor.predict("pilot", 0, 2048)
            name = f"fast{' bf16' if precision == 'bf16' else ''}, {k} track{'s' * (k > 1)}"
            if gemm is not None:
                name += f", {'oneDNN' if gemm == 'onednn' else 'torch default'} product"
            result[name] = _rate(fast, m * k, repeat=1 if k > 1 else 2)
        os.environ.pop("EPITENSOR_CPU_GEMM", None)

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


def matmul_bound(kwargs: dict, n_tracks: int, threads: int, rows: int = 16_384) -> dict:
    """The pairs/s a plain fp32 matmul rate allows for this network, measured in this process.

    A (track, position) pair on the fast path costs the hidden layers after the
    first (``2 n_nodes^2`` multiply-adds counted as FLOPs each), the output layer
    (``2 n_nodes``) and its share of the first layer's genome part
    (``2 (n_25 + n_250 + n_5k) n_nodes / n_tracks``); the cell type and assay
    parts are one row per track and block. The bound is the fp32 GEMM rate of a
    ``(rows, n_nodes) @ (n_nodes, n_nodes)`` product (best of 5, after a
    warm-up) over that count, the faster of torch's default product and
    oneDNN's (where the build has it: the fast path's on non-Intel x86 CPUs).
    """
    import torch

    from epitensor.nn.module import onednn_available, onednn_forward

    torch.set_num_threads(threads)
    width = kwargs["n_nodes"]
    genome = kwargs["n_25bp_factors"] + kwargs["n_250bp_factors"] + kwargs["n_5kbp_factors"]
    flops_per_pair = (
        2 * width * width * (kwargs["n_layers"] - 1) + 2 * width + 2 * genome * width / n_tracks
    )
    a, b = torch.randn(rows, width), torch.randn(width, width)
    products = {"torch default": lambda: torch.mm(a, b)}
    if onednn_available():
        products["oneDNN"] = lambda: onednn_forward(a, b.T)
    rates = {}
    for name, product in products.items():
        product()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * rows * width * width / best / 1e9
    gflops = max(rates.values())
    return {"gflops": gflops, "gflops_by_product": rates, "flops_per_pair": flops_per_pair,
            "pairs_per_s": gflops * 1e9 / flops_per_pair}  # fmt: skip


def writing(size: str, threads: int, n: int, n_tracks: int = 8) -> dict:
    """Rates of arithmetic alone, writing alone and end to end, contiguous and gapped."""
    import numpy as np
    import pandas as pd
    import torch

    from epitensor.estimators.avocado import PRESETS, Avocado
    from epitensor.genome.coordinates import Layout, chrom_sizes
    from epitensor.io.writers import BigWigSink, bin_edges
    from epitensor.nn.module import AvocadoModule
    from epitensor.workflows import impute as export

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kwargs = {k: PRESETS[size][k] for k in STRUCTURAL}
    names = [f"T{i}" for i in range(25)]
    tracks = [(f"T{i}", f"T{(i + 3) % 25}") for i in range(n_tracks)]
    sizes = chrom_sizes("hg19")
    result = {"size": size, "threads": threads, "positions": n, "tracks": n_tracks,
              "cpu": cpu_summary(), "bound": matmul_bound(kwargs, n_tracks, threads)}  # fmt: skip
    for label, n_regions, gap in (("contiguous", 1, 0), ("10 regions", 10, 4000)):
        length = n // n_regions
        first = np.arange(n_regions, dtype=np.int64) * (length + gap) + 40_000
        regions = pd.DataFrame({"axis": "chr1", "chrom": "chr1", "start": first * 25,
                                "end": (first + length) * 25, "name": [f"r{k}" for k in range(n_regions)],
                                "offset": np.arange(n_regions) * length, "first_bin": first,
                                "n_bins": length})  # fmt: skip
        axes = {"chr1": n_regions * length}
        model = Avocado.from_module(
            AvocadoModule(25, 25, axes, **kwargs), celltypes=names, assays=names,
            layout=Layout(regions, axes, 25, label), chrom_sizes=sizes, genome="hg19",
            device="cpu", verbose=False, **kwargs,
        )  # fmt: skip
        segments = export.track_segments(model.layout_, model.chrom_sizes_)
        blocks = list(export._iter_blocks(segments, export.DEFAULT_BLOCK_SIZE))
        pairs = n_tracks * axes["chr1"]
        predictor = export.FastPredictor(model, tracks, device="cpu")
        with predictor.session():
            predictor.predict("chr1", 0, 2048)
            start = time.perf_counter()
            values = [predictor.predict("chr1", lo, hi) for _, _, _, lo, hi in blocks]
            arithmetic = pairs / (time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            sinks = [BigWigSink(Path(tmp) / f"{k}.bw", {"chr1": int(sizes["chr1"])})
                     for k in range(n_tracks)]  # fmt: skip
            for (_, first_bin, _, lo, hi), block in zip(blocks, values):
                starts, ends = bin_edges(first_bin, hi - lo, 25, int(sizes["chr1"]))
                for sink, row in zip(sinks, np.sinh(block)):
                    sink.write("chr1", starts, ends, row)
            for sink in sinks:
                sink.close()
            write = pairs / (time.perf_counter() - start)
            start = time.perf_counter()
            export.impute(model, tracks, Path(tmp) / "e2e", verbose=False, n_threads=threads)
            end_to_end = pairs / (time.perf_counter() - start)
        result[label] = {"arithmetic": arithmetic, "writing alone": write,
                         "end to end": end_to_end, "end to end / arithmetic": end_to_end / arithmetic,
                         "end to end / matmul bound": end_to_end / result["bound"]["pairs_per_s"]}  # fmt: skip
    return result


def report_writing(r: dict) -> str:
    bound = r["bound"]
    lines = [
        f"{r['size']}, {r['tracks']} tracks, {r['positions']:,} positions, {r['threads']} "
        f"thread(s), CPU flags: {r['cpu']}; fp32 matmul {bound['gflops']:.1f} GFLOP/s "
        f"(fastest of {', '.join(f'{k} {v:.1f}' for k, v in bound['gflops_by_product'].items())}), "
        f"{bound['flops_per_pair'] / 1e6:.2f} MFLOP per pair: bound {bound['pairs_per_s']:,.0f} pairs/s",
        "| layout | arithmetic pairs/s | writing alone pairs/s | end to end pairs/s "
        "| end to end / arithmetic | end to end / matmul bound |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label in ("contiguous", "10 regions"):
        x = r[label]
        lines.append(f"| {label} | {x['arithmetic']:,.0f} | {x['writing alone']:,.0f} | "
                     f"{x['end to end']:,.0f} | {x['end to end / arithmetic']:.2f} | "
                     f"{x['end to end / matmul bound']:.2f} |")  # fmt: skip
    return "\n".join(lines)


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
    parser.add_argument("--writing", action="store_true", help="Measure what writing costs.")
    parser.add_argument("--positions", type=int, default=400_000, help="With --writing.")
    parser.add_argument(
        "--tracks",
        type=int,
        help="With --writing: tracks per pass (default 8 at cpu-small, 1 at paper)",
    )
    args = parser.parse_args()
    if args.writing:
        for size in args.sizes if args.sizes != ["cpu-small", "paper"] else ["cpu-small"]:
            n_tracks = args.tracks or (1 if size == "paper" else 8)
            print(report_writing(writing(size, args.threads, args.positions, n_tracks)))
        return
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
