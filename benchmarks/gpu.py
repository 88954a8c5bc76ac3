"""GPU check at paper size: training samples/s and imputation positions/s in fp32 and bf16, and the genome-wide time per track.

On a CUDA device (``--device cuda``, the default) this measures, at the
paper's sizes (32 + 256 + 25 + 40 + 45 factors, 2 x 2048 network):

1. training: samples/s of the real training step (sparse genome updates,
   Adam) on the bundled pilot store, batches of 40,000 from the real sampler
   (``sampler``), and with one batch already on the device, repeated
   (``on device``: the step alone), in fp32 and bf16 autocast;
2. imputation: a paper-size model of the whole of chr21 (1,925,196 positions,
   127 cell types x 24 assays) is written in the original's format
   (scripts/make_reference_model.py) and imported; then the fast predictor's
   positions/s for 1 and 8 tracks (``arithmetic``: device work and the copy
   back), and ``epitensor impute`` of one track over chr21 to bigWig
   (``end to end``), in fp32 and bf16;
3. the projection: hg19 chr1-22 + chrX (121,452,164 25-bp bins) divided by
   each rate, as the time per genome-wide track.

It is sized to finish in under 5 minutes on one modern GPU. Without CUDA it
prints that it was skipped and exits 0. ``--device cpu --quick`` runs the same
code at tiny sizes, to check the script itself.

    python benchmarks/gpu.py [--seconds 15] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENOME_BINS = 121_452_164  # hg19 chr1-22 + chrX, 25-bp bins
QUICK = {
    "n_celltype_factors": 4,
    "n_assay_factors": 6,
    "n_25bp_factors": 2,
    "n_250bp_factors": 3,
    "n_5kbp_factors": 2,
    "n_layers": 2,
    "n_nodes": 32,
    "batch_size": 4096,
}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_rates(device, sizes: dict, precision: str, seconds: float) -> dict:
    """Samples/s of the training step, from the sampler and on a resident batch."""
    import torch

    from epitensor.nn.module import AvocadoModule
    from epitensor.store.datasets import roadmap_pilot
    from epitensor.train.fitting import (
        AxisSource,
        EpochSampler,
        TrackSet,
        TrainConfig,
        TrainingPlan,
    )

    store = roadmap_pilot()
    tracks = TrackSet.build(store, store.track_names(), store.celltypes, store.assays)
    source = AxisSource(store, "pilot", tracks.rows)
    torch.manual_seed(0)
    factors = {k: v for k, v in sizes.items() if k.endswith("_factors")}
    module = AvocadoModule(
        5,
        5,
        {"pilot": store.axis_length("pilot")},
        n_layers=sizes["n_layers"],
        n_nodes=sizes["n_nodes"],
        **factors,
    ).to(device)
    config = TrainConfig(
        n_epochs=1, batch_size=sizes["batch_size"], lr=1e-3, precision=precision, verbose=False
    )
    plan = TrainingPlan(module, config, device)
    batches = EpochSampler.from_config({"pilot": source}, tracks, config).batches(1)
    first = next(batches).to(device)
    for _ in range(3):  # warm-up (kernels, autotuning, allocator)
        plan.step(first)
    rates = {}
    for label in ("sampler", "on device"):
        _sync(device)
        n, tic = 0, time.perf_counter()
        while time.perf_counter() - tic < seconds:
            batch = next(batches).to(device) if label == "sampler" else first
            plan.step(batch)
            n += len(batch.values)
        _sync(device)
        rates[label] = n / (time.perf_counter() - tic)
    return rates


def make_model(folder: Path, sizes: dict, quick: bool):
    """A chr21 model in the original's format, imported into memory."""
    from epitensor.workflows.reference import import_reference

    sys.path.insert(0, str(REPO / "scripts"))
    import make_reference_model as maker

    n_celltypes, n_assays = (8, 4) if quick else (127, 24)
    maker.make_model(
        folder / "avocado",
        ["chr21"],
        sizes,
        n_celltypes,
        n_assays,
        16,
        seed=0,
        positions=200_000 if quick else None,
        verbose=False,
    )
    first_bin = 400_000 if quick else None
    return import_reference(folder / "avocado", "hg19", first_bin=first_bin, verbose=False)


def impute_rates(model, device, precision: str, seconds: float, block: int) -> dict:
    """Positions/s of the fast predictor over the model's axis, for 1 and 8 tracks."""
    from epitensor.workflows.impute import FastPredictor

    axis = model.layout_.axes[0]
    length = model.layout_.axis_lengths[axis]
    pairs = [(c, a) for c in model.celltypes_ for a in model.assays_]
    rates = {}
    for n_tracks in (1, 8):
        predictor = FastPredictor(
            model,
            pairs[:: max(1, len(pairs) // n_tracks)][:n_tracks],
            device=str(device),
            precision=precision,
        )
        with predictor.session():
            predictor.predict(axis, 0, min(block, length))  # warm-up
            n, lo, tic = 0, 0, time.perf_counter()
            while time.perf_counter() - tic < seconds:
                hi = min(lo + block, length)
                predictor.predict(axis, lo, hi)  # returns numpy: includes the copy back
                n += hi - lo
                lo = 0 if hi == length else hi
            rates[f"{n_tracks} track(s)"] = n / (time.perf_counter() - tic)
    return rates


def end_to_end(model, device, precision: str, out: Path) -> dict:
    """One track over the whole axis to bigWig with ``epitensor impute``'s function."""
    from epitensor.workflows.impute import impute

    axis = model.layout_.axes[0]
    length = model.layout_.axis_lengths[axis]
    track = (model.celltypes_[1], model.assays_[1])
    tic = time.perf_counter()
    impute(
        model,
        [track],
        out / f"{precision}.bw",
        device=str(device),
        precision=precision,
        overwrite=True,
        verbose=False,
    )
    seconds = time.perf_counter() - tic
    return {"seconds": seconds, "positions_per_s": length / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=15.0, help="per training measurement")
    parser.add_argument("--block", type=int, default=65536, help="positions per predict call")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks the script)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu.py: skipped, no CUDA device is available to torch")
        return
    from epitensor._utils import cpu_summary, resolve_precision
    from epitensor.estimators.avocado import PRESETS

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_summary()
    sizes = QUICK if args.quick else {k: PRESETS["paper"][k] for k in (*QUICK.keys(),)}
    precisions = ["fp32", "bf16"]
    if resolve_precision("auto", device) != "bf16":
        print(f"note: {device} has no native bf16; bf16 figures are emulated")
    print(f"device: {name}; torch {torch.__version__}; host CPU: {cpu_summary()}", flush=True)
    started = time.perf_counter()
    results = {
        "device": name,
        "torch": torch.__version__,
        "sizes": sizes,
        "train": {},
        "impute": {},
        "end_to_end": {},
    }
    for precision in precisions:
        results["train"][precision] = train_rates(device, sizes, precision, args.seconds)
        print(
            f"train {precision}: "
            + ", ".join(f"{k} {v:,.0f} samples/s" for k, v in results["train"][precision].items()),
            flush=True,
        )
    with tempfile.TemporaryDirectory() as scratch:
        model = make_model(Path(scratch), sizes, args.quick)
        for precision in precisions:
            results["impute"][precision] = impute_rates(
                model, device, precision, args.seconds / 3, args.block
            )
            results["end_to_end"][precision] = end_to_end(model, device, precision, Path(scratch))
            e2e = results["end_to_end"][precision]
            print(
                f"impute {precision}: "
                + ", ".join(
                    f"{k} {v:,.0f} positions/s" for k, v in results["impute"][precision].items()
                )
                + f"; end to end to bigWig {e2e['positions_per_s']:,.0f} positions/s",
                flush=True,
            )
    print(f"\n{name}, paper size{' (QUICK sizes)' * args.quick}; host {cpu_summary()}")
    print(
        "| precision | train samples/s (sampler / on device) | impute positions/s, 1 track "
        "| 8 tracks, positions/s (x8 pairs) | end to end to bigWig, 1 track | genome-wide per track "
        "(arithmetic / end to end) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for p in precisions:
        train, imp, e2e = results["train"][p], results["impute"][p], results["end_to_end"][p]
        arith = GENOME_BINS / imp["1 track(s)"]
        whole = GENOME_BINS / e2e["positions_per_s"]
        results.setdefault("genome_seconds_per_track", {})[p] = {
            "arithmetic": arith,
            "end_to_end": whole,
        }
        print(
            f"| {p} | {train['sampler']:,.0f} / {train['on device']:,.0f} | "
            f"{imp['1 track(s)']:,.0f} | {imp['8 track(s)']:,.0f} | "
            f"{e2e['positions_per_s']:,.0f} | {arith / 60:.1f} / {whole / 60:.1f} min |"
        )
    print(f"\nfinished in {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
