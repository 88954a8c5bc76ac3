"""Training throughput: samples/s, sparse vs dense Adam, GFLOP/s against plain matmul, peak RSS.

Each model size runs in its own child process (so its peak RSS is its own). In
the child, the same model is timed with (1) sparse genome updates (SparseAdam)
and fp32, (2) dense Adam on every parameter, (3) sparse updates with bf16
autocast; samples are drawn by the real block-shuffled sampler from the bundled
pilot store. A plain torch matmul is timed in the same child for reference.
The bf16 cases are skipped (and the table says so) where the CPU has no native
bf16 (AVX-512 BF16 or AMX, as ``precision="auto"`` decides): emulated bf16 runs
at well under 1 GFLOP/s there and the run would not finish; ``--force-bf16``
times them anyway. The CPU and its flags are printed first.

Usage: python benchmarks/train.py [--sizes paper cpu-small 2x256] [--seconds 20] [--threads 2]
       [--paper-batch 40000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIZES = {
    "paper": {"n_layers": 2, "n_nodes": 2048, "batch_size": 40_000},
    "2x256": {"n_layers": 2, "n_nodes": 256, "batch_size": 4096},
    "cpu-small": None,  # filled from the preset
}


def matmul_gflops(dtype, n=2048, seconds=3.0):
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    count, tic = 0, time.perf_counter()
    while time.perf_counter() - tic < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - tic) / 1e9


def flops_per_sample(module):
    """Training FLOPs of one sample: 3 x forward (forward + 2 backward matmuls), split first layer."""
    sizes = [m for m in module.network if hasattr(m, "out_features")]
    n_genome = sum(module.genome_sizes)
    macs = n_genome * sizes[0].out_features
    macs += sum(m.in_features * m.out_features for m in sizes[1:])
    return 3 * 2 * macs


def time_training(module, config, source, tracks, seconds, min_steps=2):
    import torch

    from epitensor.train.fitting import EpochSampler, TrainingPlan

    plan = TrainingPlan(module, config, torch.device("cpu"))
    sampler = EpochSampler.from_config({"pilot": source}, tracks, config)
    batches = sampler.batches(1)
    plan.step(next(batches))  # warm-up
    n, steps, tic = 0, 0, time.perf_counter()
    for batch in batches:
        plan.step(batch)
        n += len(batch.values)
        steps += 1
        if steps >= min_steps and time.perf_counter() - tic > seconds:
            break
    return n / (time.perf_counter() - tic), steps


def child(name, seconds, threads, force_bf16=False):
    import torch

    from epitensor._utils import resolve_precision
    from epitensor.estimators.avocado import PRESETS
    from epitensor.nn.module import AvocadoModule
    from epitensor.store.datasets import roadmap_pilot
    from epitensor.train.fitting import AxisSource, TrackSet, TrainConfig

    torch.set_num_threads(threads)
    size = SIZES[name] or {
        k: PRESETS["cpu-small"][k] for k in ("n_layers", "n_nodes", "batch_size")
    }
    preset = PRESETS["paper"] if name == "paper" else PRESETS["cpu-small"]
    factors = {k: preset[k] for k in preset if k.endswith("_factors")}
    store = roadmap_pilot()
    tracks = TrackSet.build(store, store.track_names(), store.celltypes, store.assays)
    source = AxisSource(store, "pilot", tracks.rows)
    length = store.axis_length("pilot")
    result = {"size": name, **size, "threads": threads}
    bf16 = force_bf16 or resolve_precision("auto", torch.device("cpu")) == "bf16"
    cases = [("sparse", True, "fp32"), ("dense", False, "fp32")]
    cases += [("sparse_bf16", True, "bf16")] if bf16 else []
    for label, sparse, precision in cases:
        torch.manual_seed(0)
        module = AvocadoModule(
            5,
            5,
            {"pilot": length},
            n_layers=size["n_layers"],
            n_nodes=size["n_nodes"],
            sparse=sparse,
            **factors,
        )
        config = TrainConfig(
            n_epochs=1, batch_size=size["batch_size"], lr=1e-3, precision=precision, verbose=False
        )
        rate, steps = time_training(module, config, source, tracks, seconds)
        result[f"{label}_samples_per_s"] = round(rate)
        result[f"{label}_steps"] = steps
        result[f"{label}_gflops"] = round(rate * flops_per_sample(module) / 1e9, 1)
        if label == "sparse":
            result["peak_rss_gb"] = round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2
            )
        del module
    result["matmul_fp32_gflops"] = round(matmul_gflops(torch.float32), 1)
    skipped = "skipped (no native bf16)"
    result["matmul_bf16_gflops"] = round(matmul_gflops(torch.bfloat16), 1) if bf16 else skipped
    result["sparse_over_dense"] = round(
        result["sparse_samples_per_s"] / result["dense_samples_per_s"], 2
    )
    if bf16:
        result["bf16_over_fp32"] = round(
            result["sparse_bf16_samples_per_s"] / result["sparse_samples_per_s"], 2
        )
    else:
        result["sparse_bf16_samples_per_s"] = result["bf16_over_fp32"] = skipped
    result["share_of_matmul"] = round(result["sparse_gflops"] / result["matmul_fp32_gflops"], 2)
    print(json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["cpu-small", "2x256", "paper"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--paper-batch", type=int, default=40_000, help="batch of the paper size")
    parser.add_argument(
        "--force-bf16", action="store_true", help="time bf16 even without native bf16"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    SIZES["paper"]["batch_size"] = args.paper_batch
    if args.child:
        child(args.child, args.seconds, args.threads, args.force_bf16)
        return
    import torch

    from epitensor._utils import cpu_summary, resolve_precision

    print(f"CPU: {cpu_summary()}", flush=True)
    if not args.force_bf16 and resolve_precision("auto", torch.device("cpu")) != "bf16":
        print("bf16: skipped, this CPU has no native bf16 (AVX-512 BF16 or AMX)", flush=True)
    rows = []
    for name in args.sizes:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                name,
                "--seconds",
                str(args.seconds),
                "--threads",
                str(args.threads),
                *(["--force-bf16"] if args.force_bf16 else []),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    keys = [
        "size",
        "batch_size",
        "sparse_samples_per_s",
        "dense_samples_per_s",
        "sparse_over_dense",
        "sparse_bf16_samples_per_s",
        "bf16_over_fp32",
        "sparse_gflops",
        "matmul_fp32_gflops",
        "matmul_bf16_gflops",
        "share_of_matmul",
        "peak_rss_gb",
    ]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
