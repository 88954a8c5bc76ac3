"""Two training runs at once against one: samples/s each, with default and with split threads.

Each run is a child process training the cpu-small network (or ``--size
paper``) on the bundled pilot store with the real block-shuffled sampler, as
benchmarks/train.py does, for ``--seconds`` after a common start time (all
children warm up first, then start together). The cases:

1. ``alone``: one run, torch threads at the default (the CPUs the process may
   use: ``available_cpus()``);
2. ``two, default threads``: two runs at once, each with the default threads,
   so together they ask for twice the CPUs there are;
3. ``two, split threads``: two runs at once, each with half the CPUs
   (``--threads N`` per run; at least 1);
4. ``two, split + pinned``: as 3, each run pinned to its own half of the CPUs
   (``taskset``), so that the default thread count already fits;
5. ``alone, passive`` and ``two, default threads, passive``: cases 1 and 2 with
   ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep between parallel regions
   instead of spinning). Case 5 alone against case 1 is the cost of sleeping
   on an idle machine.
6. ``--spincount N ...``: cases 1 and 2 with ``GOMP_SPINCOUNT=N`` (GNU
   OpenMP's threads spin N times, then sleep).

Fair sharing would give each of two runs half the samples/s of one run alone
(ratio 0.50); far less means the runs fight over the CPUs (OpenMP threads
spinning on cores the other run holds). The CPU and its flags are printed.

    python benchmarks/concurrency.py [--seconds 30] [--size cpu-small|paper]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def child(size: str, threads: int | None, seconds: float, start_at: float) -> dict:
    import torch

    from epitensor._utils import default_threads
    from epitensor.estimators.avocado import PRESETS
    from epitensor.nn.module import AvocadoModule
    from epitensor.store.datasets import roadmap_pilot
    from epitensor.train.fitting import (
        AxisSource,
        EpochSampler,
        TrackSet,
        TrainConfig,
        TrainingPlan,
    )

    torch.set_num_threads(default_threads(threads))
    preset = PRESETS[size]
    store = roadmap_pilot()
    tracks = TrackSet.build(store, store.track_names(), store.celltypes, store.assays)
    source = AxisSource(store, "pilot", tracks.rows)
    torch.manual_seed(0)
    module = AvocadoModule(
        5,
        5,
        {"pilot": store.axis_length("pilot")},
        n_layers=preset["n_layers"],
        n_nodes=preset["n_nodes"],
        **{k: v for k, v in preset.items() if k.endswith("_factors")},
    )
    config = TrainConfig(n_epochs=1, batch_size=preset["batch_size"], lr=1e-3, verbose=False)
    plan = TrainingPlan(module, config, torch.device("cpu"))
    batches = EpochSampler.from_config({"pilot": source}, tracks, config).batches(1)
    for _ in range(2):  # warm-up
        plan.step(next(batches))
    time.sleep(max(0.0, start_at - time.time()))
    n, steps, tic = 0, 0, time.perf_counter()
    for batch in batches:
        plan.step(batch)
        n, steps = n + len(batch.values), steps + 1
        if time.perf_counter() - tic > seconds:
            break
    elapsed = time.perf_counter() - tic
    return {"samples_per_s": n / elapsed, "steps": steps, "threads": torch.get_num_threads()}


def run_case(runs: list[dict], args) -> list[dict]:
    """Start ``runs`` (each ``{"threads": int | None, "cpus": str | None}``) together."""
    start_at = time.time() + args.warmup
    children = []
    for run in runs:
        command = [
            sys.executable,
            __file__,
            "--child",
            "--size",
            args.size,
            "--seconds",
            str(args.seconds),
            "--start-at",
            str(start_at),
        ]
        if run.get("threads"):
            command += ["--threads", str(run["threads"])]
        if run.get("cpus"):
            command = ["taskset", "-c", run["cpus"], *command]
        env = {**os.environ, **run.get("env", {})}
        if "OMP_WAIT_POLICY" not in run.get("env", {}):
            env.pop("OMP_WAIT_POLICY", None)  # the OpenMP default: spin
        children.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env))
    results = []
    for proc in children:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a run exited {proc.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="cpu-small", choices=["cpu-small", "paper"])
    parser.add_argument("--seconds", type=float, default=30.0, help="timed part of each run")
    parser.add_argument("--warmup", type=float, default=25.0, help="seconds allowed to warm up")
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument(
        "--spincount", type=int, nargs="*", default=[],
        help="also run alone and two at once with GOMP_SPINCOUNT set to each value",
    )  # fmt: skip
    parser.add_argument("--case", action="append", help="run only these cases (and alone)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.size, args.threads, args.seconds, args.start_at)))
        return
    from epitensor._utils import available_cpus, cpu_summary

    cpus = sorted(os.sched_getaffinity(0))
    half = max(1, len(cpus) // 2)
    cases = {
        "alone": [{}],
        "two, default threads": [{}, {}],
        "two, split threads": [{"threads": half}, {"threads": half}],
    }
    if shutil.which("taskset") and len(cpus) >= 2:
        first = ",".join(map(str, cpus[:half]))
        second = ",".join(map(str, cpus[half : 2 * half]))
        cases["two, split + pinned"] = [{"cpus": first}, {"cpus": second}]
    passive = {"env": {"OMP_WAIT_POLICY": "PASSIVE"}}
    cases["alone, passive"] = [passive]
    cases["two, default threads, passive"] = [passive, passive]
    for spins in args.spincount:  # GNU OpenMP: spin this many times, then sleep
        short = {"env": {"GOMP_SPINCOUNT": str(spins)}}
        cases[f"alone, spin {spins:,}"] = [short]
        cases[f"two, default threads, spin {spins:,}"] = [short, short]
    if args.case:
        cases = {name: runs for name, runs in cases.items() if name == "alone" or name in args.case}
    print(f"CPU: {cpu_summary()}; {args.size}, {args.seconds:g} s per run", flush=True)
    table = {}
    for name, runs in cases.items():
        table[name] = run_case(runs, args)
        rates = ", ".join(f"{r['samples_per_s']:,.0f}" for r in table[name])
        print(f"{name}: {rates} samples/s", flush=True)
    alone = table["alone"][0]["samples_per_s"]
    print(f"\n{cpu_summary()}; default threads {available_cpus()}")
    print("| case | threads per run | samples/s per run | per run / alone | total / alone |")
    print("|---|---:|---:|---:|---:|")
    for name, results in table.items():
        rates = [r["samples_per_s"] for r in results]
        print(
            f"| {name} | {results[0]['threads']} | "
            f"{' / '.join(f'{x:,.0f}' for x in rates)} | "
            f"{' / '.join(f'{x / alone:.2f}' for x in rates)} | {sum(rates) / alone:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"cpu": cpu_summary(), "size": args.size, "cases": table}, handle, indent=2)


if __name__ == "__main__":
    main()
