"""Real size end to end: a paper-size chr21 + chr22 model in the original's format, imported and imputed to bigWig.

1. ``make``: scripts/make_reference_model.py writes the original Avocado's file
   pairs (``avocado-chr21.json/.h5``, ``avocado-chr22.json/.h5``): paper sizes
   (127 cell types, 24 assays, 32 + 256 + 25 + 40 + 45 factors, 2 x 2048
   network), whole-chromosome genome tables (3,977,379 positions), seeded values.
2. ``import``: ``epitensor import-reference`` into a model directory, in a child
   process.
3. ``impute``: ``epitensor impute`` of ``--tracks`` tracks over every bin of both
   chromosomes to bigWig (-log10 p scale), in a child process.
4. ``check``: each bigWig against a plain numpy forward pass of the h5 weights
   (read with h5py, independent of epitensor) at ``--samples`` random bins per
   chromosome and track.

Each child's wall time is measured here and its peak RSS comes from the kernel
(``wait4``'s ``ru_maxrss``). The whole-genome projection scales the times by
the genome's positions (hg19 chr1-22 + chrX: 121,452,164 25-bp bins, 30.5x
chr21 + chr22's 3,977,379) and the memory by the largest chromosome: import and
imputation hold one chromosome's genome factors at a time, so the peak grows by
the factor bytes of chr1 over those of chr22 (the largest measured here).

    python benchmarks/real_size.py [--out DIR] [--tracks 2] [--samples 500] [--threads N]
    python benchmarks/real_size.py --quick      # tiny factor sizes, same path (seconds)

The paper-size run writes about 0.47 GB of model files (plus the imported
model, about as much) and, at about 9,000 (track, position) pairs/s on 2 AVX2 cores, about 7-8
minutes per track: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHROMS = ["chr21", "chr22"]
GENOME_CHROMS = [f"chr{i}" for i in range(1, 23)] + ["chrX"]  # the published models' set


def _maker():
    """``scripts/make_reference_model.py`` as a module."""
    sys.path.insert(0, str(REPO / "scripts"))
    import make_reference_model

    return make_reference_model


def _tracks(models: Path, n: int) -> list[tuple[str, str]]:
    """``n`` tracks the model was not "trained on", spread over cell types and assays."""
    config = json.loads((models / "avocado-chr21.json").read_text())
    trained = {tuple(pair) for pair in config["experiments"]}
    pairs = [(c, a) for c in config["celltypes"] for a in config["assays"] if (c, a) not in trained]
    step = max(1, len(pairs) // max(n, 1))
    return pairs[::step][:n]


# steps run in a child process -------------------------------------------------------------------


def _run_cli(args: list[str]) -> None:
    from typer.testing import CliRunner

    from epitensor.cli import app

    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        raise SystemExit(f"epitensor {' '.join(args)} failed:\n{result.output}")


def step_import(models: Path, out: Path, tracks, threads) -> dict:
    _run_cli(
        [
            "import-reference",
            str(models / "avocado"),
            "--out",
            str(out / "model"),
            "--overwrite",
            "-q",
        ]
    )
    return {}


def step_impute(models: Path, out: Path, tracks, threads) -> dict:
    args = ["impute", str(out / "model"), "--out", str(out / "bigwig"), "--overwrite", "-q"]
    for celltype, assay in tracks:
        args += ["--celltype", celltype, "--assay", assay]
    if threads:
        args += ["--threads", str(threads)]
    _run_cli(args)
    return {"bytes_written": sum(p.stat().st_size for p in (out / "bigwig").glob("*.bigWig"))}


STEPS = {"import": step_import, "impute": step_impute}


def run_child(step: str, args: argparse.Namespace) -> dict:
    """Run one step in a child process; its wall time here, its peak RSS from the kernel."""
    out = Path(args.out)
    result_file = out / f"{step}.json"
    result_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        __file__,
        "--step",
        step,
        "--out",
        str(out),
        "--models",
        str(args.models),
        "--tracks",
        str(args.tracks),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    tic = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - tic
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"step {step} exited {code}")
    figures = json.loads(result_file.read_text())
    return {**figures, "seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024}


# the numpy check ------------------------------------------------------------------------------


def read_h5(path: Path) -> dict:
    """Every layer's weights through the layer_names / weight_names attributes (h5py only)."""
    import h5py

    weights = {}
    with h5py.File(path, "r") as handle:
        root = handle["model_weights"]
        for layer in root.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else str(layer)
            for name in root[layer].attrs["weight_names"]:
                name = name.decode() if isinstance(name, bytes) else str(name)
                weights[(layer, name.rsplit("/", 1)[-1].split(":")[0])] = root[layer][name][()]
    return weights


def numpy_forward(weights: dict, celltype: int, assay: int, bins: np.ndarray, n_layers: int):
    """The original's forward pass in float64 (arcsinh scale), shape ``(len(bins),)``."""
    n = len(bins)
    x = np.concatenate(
        [
            np.repeat(weights[("celltype_embedding", "embeddings")][[celltype]], n, 0),
            np.repeat(weights[("assay_embedding", "embeddings")][[assay]], n, 0),
            weights[("genome_25bp_embedding", "embeddings")][bins],
            weights[("genome_250bp_embedding", "embeddings")][bins // 10],
            weights[("genome_5kbp_embedding", "embeddings")][bins // 200],
        ],
        axis=1,
    ).astype(np.float64)
    for i in range(n_layers):
        x = np.maximum(x @ weights[(f"dense_{i}", "kernel")] + weights[(f"dense_{i}", "bias")], 0)
    return (x @ weights[("y_pred", "kernel")] + weights[("y_pred", "bias")])[:, 0]


def check(models: Path, out: Path, tracks, n_samples: int, seed: int = 0) -> dict:
    """Largest |arcsinh(bigWig) - numpy| over sampled bins of every chromosome and track."""
    import pyBigWig

    rng = np.random.default_rng(seed)
    worst, checked = 0.0, 0
    for chrom in CHROMS:
        config = json.loads((models / f"avocado-{chrom}.json").read_text())
        weights = read_h5(models / f"avocado-{chrom}.h5")
        n = config["n_genomic_positions"]
        bins = np.unique(np.r_[rng.integers(0, n, n_samples), 0, n - 1])
        for celltype, assay in tracks:
            expected = numpy_forward(
                weights,
                config["celltypes"].index(celltype),
                config["assays"].index(assay),
                bins,
                config["n_layers"],
            )
            with pyBigWig.open(str(out / "bigwig" / f"{celltype}.{assay}.bigWig")) as bw:
                got = np.array([bw.values(chrom, 25 * b, 25 * b + 1)[0] for b in bins])
            worst = max(worst, float(np.max(np.abs(np.arcsinh(got) - expected))))
            checked += len(bins)
    return {"bins_checked": checked, "max_abs_diff_arcsinh": worst}


# the projection -------------------------------------------------------------------------------


def projection(results: dict, sizes: dict, n_tracks: int) -> dict:
    """Whole-genome (hg19 chr1-22, chrX) time per track and peak memory from this run."""
    from epitensor.genome.coordinates import chrom_sizes

    hg19 = chrom_sizes("hg19")
    bins = {c: -(-int(hg19[c]) // 25) for c in GENOME_CHROMS}
    measured = sum(bins[c] for c in CHROMS)
    genome = sum(bins.values())
    per_position = sizes["n_25bp_factors"] + sizes["n_250bp_factors"] / 10
    per_position += sizes["n_5kbp_factors"] / 200
    factor_bytes = {c: 4 * per_position * bins[c] for c in bins}
    largest_measured = max(factor_bytes[c] for c in CHROMS)
    scale = genome / measured
    return {
        "genome_positions": genome,
        "measured_positions": measured,
        "scale": scale,
        "import_seconds": results["import"]["seconds"] * scale,
        "impute_seconds_per_track": results["impute"]["seconds"] * scale / n_tracks,
        "genome_factor_bytes": sum(factor_bytes.values()),
        "import_peak_rss_bytes": results["import"]["peak_rss_bytes"]
        + factor_bytes["chr1"]
        - largest_measured,
        "impute_peak_rss_bytes": results["impute"]["peak_rss_bytes"]
        + factor_bytes["chr1"]
        - largest_measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "output" / "real_size"))
    parser.add_argument("--models", help="folder of the model files (default: OUT/original)")
    parser.add_argument("--tracks", type=int, default=2, help="tracks imputed in one pass")
    parser.add_argument("--samples", type=int, default=500, help="bins checked per chrom, track")
    parser.add_argument("--threads", type=int, help="torch threads (default: usable CPUs)")
    parser.add_argument("--quick", action="store_true", help="tiny factor sizes (a smoke run)")
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.models = Path(args.models) if args.models else out / "original"
    if args.step:  # child process
        figures = STEPS[args.step](
            args.models, out, _tracks(args.models, args.tracks), args.threads
        )
        (out / f"{args.step}.json").write_text(json.dumps(figures))
        return
    from epitensor._utils import available_cpus, cpu_summary

    maker = _maker()
    sizes = maker.TINY if args.quick else maker.PAPER
    n_celltypes, n_assays = (8, 4) if args.quick else (127, 24)
    print(f"CPU: {cpu_summary()}; torch threads {args.threads or available_cpus()}")
    tic = time.perf_counter()
    if not all((args.models / f"avocado-{c}.h5").is_file() for c in CHROMS):
        maker.make_model(
            args.models / "avocado",
            CHROMS,
            sizes,
            n_celltypes,
            n_assays,
            min(1014, n_celltypes * n_assays // 2),
            seed=0,
        )
    made = time.perf_counter() - tic
    model_bytes = sum(p.stat().st_size for p in args.models.glob("avocado-chr*.h5"))
    tracks = _tracks(args.models, args.tracks)
    results = {"import": run_child("import", args), "impute": run_child("impute", args)}
    results["check"] = check(args.models, out, tracks, args.samples)
    results["projection"] = projection(results, sizes, len(tracks))
    n_positions = results["projection"]["measured_positions"]
    results["impute"]["positions_per_s"] = n_positions / results["impute"]["seconds"]
    results["impute"]["pairs_per_s"] = n_positions * len(tracks) / results["impute"]["seconds"]
    results.update(cpu=cpu_summary(), sizes=sizes, tracks=tracks, model_bytes=model_bytes)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    proj = results["projection"]
    print(
        f"model files: {model_bytes / 1e9:.2f} GB for {', '.join(CHROMS)} "
        f"({n_positions:,} positions; written in {made:.0f} s)"
    )
    for step in ("import", "impute"):
        r = results[step]
        print(f"{step:7s} {r['seconds']:8.1f} s  peak RSS {r['peak_rss_bytes'] / 1e9:6.2f} GB")
    print(
        f"impute  {results['impute']['pairs_per_s']:,.0f} (track, position) pairs/s end to end "
        f"to bigWig, {len(tracks)} tracks"
    )
    print(
        f"check   {results['check']['bins_checked']:,} bins against numpy: max |diff| "
        f"{results['check']['max_abs_diff_arcsinh']:.2e} (arcsinh)"
    )
    print(
        f"genome  hg19 chr1-22+X, {proj['genome_positions']:,} positions (x{proj['scale']:.1f}): "
        f"import {proj['import_seconds'] / 60:.1f} min, impute "
        f"{proj['impute_seconds_per_track'] / 3600:.2f} h per track, "
        f"genome factors {proj['genome_factor_bytes'] / 1e9:.1f} GB, peak RSS "
        f"~{proj['impute_peak_rss_bytes'] / 1e9:.2f} GB impute / "
        f"{proj['import_peak_rss_bytes'] / 1e9:.2f} GB import (one chromosome at a time)"
    )


if __name__ == "__main__":
    main()
