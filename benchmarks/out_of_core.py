"""Out-of-core: train and impute on a store larger than the memory the run is given.

Builds (once) a store of 100 real-signal tracks x the whole of chr1 at 25 bp
(9,970,025 positions; scripts/make_big_store.py), then runs, each in a child
process watched by this one:

1. ``train``: one stage-1 epoch over every chr1 position (Avocado.fit with one
   held-out track), saving the model;
2. ``impute``: two tracks over the whole of chr1 written as bigWig
   (export.impute).

A watchdog polls the child's resident memory and kills it when it passes the
cap (``--cap-gb``); the child's peak RSS comes from the kernel (``wait4``). The
model is small (2 x 128 network, 4 + 4 + 4 genome factors) so that the data, not
the parameters, is what does not fit: the store holds 4.0 GB as the float32 the
trainer reads (2.0 GB as float16), against a default cap of 2.2 GB (measured peaks:
about 2.0 GB to train, 0.7 GB to impute; see the README, "Out of core").

    python benchmarks/out_of_core.py [--store PATH] [--cap-gb 2.2] [--out DIR] [--no-holdout]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOLDOUT = ("S000", "H3K4me3")
IMPUTE = [("S000", "H3K4me3"), ("S007", "H3K27me3")]
MODEL = {
    "n_celltype_factors": 8,
    "n_assay_factors": 16,
    "n_25bp_factors": 4,
    "n_250bp_factors": 4,
    "n_5kbp_factors": 4,
    "n_layers": 2,
    "n_nodes": 128,
    "n_epochs": 1,
    "batch_size": 40_000,
    "lr": 1e-3,
    "seed": 0,
}


# the steps (run in a child process) ------------------------------------------------------------


def step_train(store_path: str, out: Path, holdout: bool = True) -> dict:
    from epitensor.estimators.avocado import Avocado
    from epitensor.store.compendium import Store

    store = Store.open(store_path)
    model = Avocado(**MODEL, verbose=False)
    tic = time.perf_counter()
    model.fit(store, holdout=[HOLDOUT] if holdout else [])
    seconds = time.perf_counter() - tic
    model.save(out / "model", overwrite=True)
    last = model.history_.iloc[-1]
    n = store.layout.n_positions
    return {
        "seconds": seconds,
        "samples_per_s": n / seconds,
        "train_mse": float(last.train_mse),
        "holdout_mse": float(last.holdout_mse),
    }


def step_impute(store_path: str, out: Path, holdout: bool = True) -> dict:
    from epitensor.workflows.impute import impute

    tic = time.perf_counter()
    paths = impute(out / "model", IMPUTE, out / "imputed", overwrite=True, verbose=False)
    seconds = time.perf_counter() - tic
    return {"seconds": seconds, "bytes_written": sum(p.stat().st_size for p in paths)}


STEPS = {"train": step_train, "impute": step_impute}


# the watchdog (this process) -------------------------------------------------------------------


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def run_capped(step: str, store: str, out: Path, cap: int, holdout: bool) -> dict:
    """Run one step in a child; kill it past ``cap`` bytes of RSS; return its figures."""
    result_file = out / f"{step}.json"
    result_file.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--step", step, "--store", store, "--out", str(out)]
    command += [] if holdout else ["--no-holdout"]
    child = subprocess.Popen(command)
    killed = threading.Event()

    def watch() -> None:
        while child.poll() is None:
            if _rss_bytes(child.pid) > cap:
                killed.set()
                child.kill()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    figures = json.loads(result_file.read_text()) if result_file.is_file() else {}
    figures.update(
        {
            "step": step,
            "peak_rss_bytes": usage.ru_maxrss * 1024,
            "killed_over_cap": killed.is_set(),
            "exit_code": child.returncode,
        }
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default=str(REPO / "benchmarks" / "output" / "big-chr1.zarr"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "output" / "out_of_core"))
    parser.add_argument("--cap-gb", type=float, default=2.2, help="RSS cap of each step (GB)")
    parser.add_argument(
        "--no-holdout",
        dest="holdout",
        action="store_false",
        help="train without a held-out track (no per-epoch holdout scoring)",
    )
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.step:  # child process
        figures = STEPS[args.step](args.store, out, args.holdout)
        (out / f"{args.step}.json").write_text(json.dumps(figures))
        return
    if not Path(args.store).exists():
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "make_big_store.py"), "--out", args.store],
            check=True,
        )
    from epitensor.store.compendium import Store

    store = Store.open(args.store)
    n = store.n_tracks * store.layout.n_positions
    sizes = {
        "tracks": store.n_tracks,
        "positions": store.layout.n_positions,
        "float32_bytes": n * 4,
        "float16_bytes": n * 2,
        "on_disk_bytes": store.nbytes_on_disk(),
        "cap_bytes": int(args.cap_gb * 1e9),
    }
    print(
        f"store {args.store}: {store.n_tracks} tracks x {store.layout.n_positions:,} positions, "
        f"{n * 4 / 1e9:.2f} GB float32, {n * 2 / 1e9:.2f} GB float16, "
        f"{sizes['on_disk_bytes'] / 1e9:.2f} GB on disk; cap {args.cap_gb:.2f} GB per step"
    )
    rows = []
    for step in ("train", "impute"):
        figures = run_capped(step, args.store, out, sizes["cap_bytes"], args.holdout)
        rows.append(figures)
        verdict = "KILLED over the cap" if figures["killed_over_cap"] else "ok"
        print(
            f"{step:7s} peak RSS {figures['peak_rss_bytes'] / 1e9:.2f} GB "
            f"({figures['peak_rss_bytes'] / sizes['float32_bytes']:.0%} of the float32 store), "
            f"{figures.get('seconds', float('nan')):.0f} s, exit {figures['exit_code']}: {verdict}"
        )
        if figures["exit_code"] != 0:
            break
    report = {"store": sizes, "holdout": args.holdout, "model": MODEL, "steps": rows}
    (out / "results.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
