"""Imputation speed of imported original-Avocado models: the fixture and a paper-sized module.

Measures, in one process and on this machine's CPU:

1. the time to import the avocado-reference fixture (h5py -> AvocadoModule), and
   that its 25 predicted tracks equal the original's;
2. imputation throughput (25-bp positions per second, one track) of the fixture-sized
   model (2 x 64) and of a randomly initialised paper-sized module (2 x 2048, the
   published models' size), for

   * ``fast``: :class:`epitensor.nn.inference.Predictor`, which computes the genome
     part of the first layer once per position and adds the track's cell type /
     assay part (what epitensor's imputation uses);
   * ``naive``: the original's forward pass, the concatenated 398 inputs through
     the full network per (track, position) sample; the same-process baseline;

3. ``fast`` with all 25 tracks at once (positions x tracks per second).

Usage::

    python benchmarks/reference_import.py [--paper-positions 20000] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from epitensor.genome.coordinates import Layout, chrom_sizes, n_bins
from epitensor.nn.inference import Predictor
from epitensor.nn.module import AvocadoModule
from epitensor.workflows.impute import impute
from epitensor.workflows.reference import ReferenceModel, _estimator, read_reference

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "avocado-reference"
FIRST_BIN = 6046322


def _rate(fn, n_items: int, min_seconds: float = 1.0) -> tuple[float, float]:
    """Items per wall second and per CPU second of ``fn()`` (one call at least).

    The CPU-second rate (process time, all threads) is what this process got out
    of the cores it was given; on a shared machine it is steadier than wall time.
    """
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls * n_items / elapsed, calls * n_items / (time.process_time() - cpu)


def _throughput(module: AvocadoModule, axis: str, n_positions: int, chunk: int) -> dict:
    """Positions per second, one track and all tracks, fast and naive."""
    positions = torch.arange(n_positions)
    ct, assay = torch.tensor([0]), torch.tensor([0])
    n_ct = module.celltype_embedding.num_embeddings
    n_as = module.assay_embedding.num_embeddings
    all_ct = torch.arange(n_ct).repeat_interleave(n_as)
    all_as = torch.arange(n_as).repeat(n_ct)

    def fast(celltypes, assays, n: int):
        predictor = Predictor(module, celltypes, assays, device="cpu")

        def run():
            with predictor.session():
                for lo in range(0, n, chunk):
                    predictor.predict(axis, lo, min(lo + chunk, n))

        return run

    def naive():
        with torch.inference_mode():
            for lo in range(0, n_positions, chunk):
                p = positions[lo : lo + chunk]
                c, a = ct.expand(len(p)), assay.expand(len(p))
                module.network(module.features(c, a, p, axis)).squeeze(1)

    fast(ct, assay, 1000)()  # warm-up: allocator, thread pool
    one_fast = _rate(fast(ct, assay, n_positions), n_positions)
    one_naive = _rate(naive, n_positions)
    # All tracks over as many (position, track) pairs as one track's run.
    n_many = max(1, n_positions // len(all_ct))
    many_fast = _rate(fast(all_ct, all_as, n_many), n_many * len(all_ct))
    return {
        "positions_per_s_fast": one_fast[0],
        "positions_per_cpu_s_fast": one_fast[1],
        "positions_per_s_naive": one_naive[0],
        "positions_per_cpu_s_naive": one_naive[1],
        "speedup_fast_vs_naive_cpu": one_fast[1] / one_naive[1],
        "n_tracks_all": len(all_ct),
        "position_tracks_per_s_fast_all": many_fast[0],
        "position_tracks_per_cpu_s_fast_all": many_fast[1],
    }


def _as_estimator(module: AvocadoModule, n_positions: int, chrom: str = "chr21"):
    """A fitted Avocado around ``module``, its one axis = bins 0 .. n - 1 of hg19 ``chrom``."""
    columns = ["axis", "chrom", "start", "end", "name", "offset", "first_bin", "n_bins"]
    row = (chrom, chrom, 0, n_positions * 25, chrom, 0, 0, n_positions)
    layout = Layout(pd.DataFrame([row], columns=columns), {chrom: n_positions})
    names = [f"C{i}" for i in range(module.celltype_embedding.num_embeddings)]
    assays = [f"A{i}" for i in range(module.assay_embedding.num_embeddings)]
    sizes = chrom_sizes("hg19")
    ref = ReferenceModel(module, names, assays, [], layout, "hg19", sizes, {"n_nodes": 2048})
    return _estimator(ref, layout.axis_lengths, {"verbose": False})


def _bigwig_rate(model, track: tuple[str, str], n_positions: int) -> dict:
    """Positions per wall / CPU second of ``export.impute`` to a bigWig, end to end."""
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = _rate(
            lambda: impute(model, [track], Path(tmp) / "track.bw", overwrite=True, verbose=False),
            n_positions,
            min_seconds=0.0,
        )
    return {"positions_per_s_bigwig": wall, "positions_per_cpu_s_bigwig": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper-positions", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict = {
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "load_average_1min_at_start": os.getloadavg()[0],
    }

    start = time.perf_counter()
    ref = read_reference(FIXTURE / "avocado-chr1", "hg19", first_bin=FIRST_BIN, verbose=False)
    results["fixture_import_s"] = time.perf_counter() - start
    axis = ref.layout.axes[0]
    with np.load(FIXTURE / "reference_predictions.npz") as data:
        keys = sorted(data.files)
        ct = torch.tensor([ref.celltypes.index(k.split(".")[0]) for k in keys])
        assays = torch.tensor([ref.assays.index(k.split(".")[1]) for k in keys])
        with Predictor(ref.module, ct, assays, device="cpu").session() as predictor:
            pred = predictor.predict(axis, 0, 20002)
        results["fixture_max_abs_diff_vs_original"] = float(
            max(np.abs(pred[i] - data[k]).max() for i, k in enumerate(keys))
        )
    results["fixture_2x64"] = _throughput(ref.module, axis, 20002, args.chunk)
    fixture_model = _estimator(ref, ref.layout.axis_lengths, {"verbose": False})
    results["fixture_2x64"].update(_bigwig_rate(fixture_model, ("E065", "H3K4me3"), 20002))

    paper = AvocadoModule(5, 5, {"chrA": args.paper_positions}, n_layers=2, n_nodes=2048).eval()
    results["paper_2x2048"] = _throughput(paper, "chrA", args.paper_positions, args.chunk)
    paper.genome["chr21"] = paper.genome.pop("chrA")
    results["paper_2x2048"].update(
        _bigwig_rate(_as_estimator(paper, args.paper_positions), ("C0", "A0"), args.paper_positions)
    )

    sizes = chrom_sizes("hg19")
    autosomes = [f"chr{i}" for i in range(1, 23)]
    genome_bins = int(sum(n_bins(sizes[c]) for c in autosomes))
    results["hg19_autosome_positions"] = genome_bins
    paper_rate = results["paper_2x2048"]["positions_per_cpu_s_fast"] * torch.get_num_threads()
    # Wall time of one genome-wide track if the process had its threads' cores to itself.
    results["paper_genome_wide_track_s_fast_unshared"] = genome_bins / paper_rate
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
