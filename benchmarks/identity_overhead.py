"""What identity by content costs: ``train`` and ``impute`` on the bundled sample, checks on and off.

Issue 35 asks for at most 2% on ``impute`` and ``train``. The checks are:

- the store: a sha256 per track and axis when tracks are written (ingest, not
  timed here), each chunk's CRC checked against the one recorded at its key
  on first read (a 4-byte read per chunk), the identity recomputed from the
  metadata when a model records it;
- the model: ``training_data_`` recorded at ``fit`` and in the checkpoint
  fingerprint, ``config.json``'s own checksum checked at load, the store's
  coordinates and track digests compared by ``impute``'s ensemble,
  ``evaluate``, ``extend`` and ``fit-genome``;
- the shared read lock of the model directory (``read_lock``), taken by
  ``Avocado.load`` and by each lazy read of a genome axis (the CLI holds it
  for the whole command: one lock and release more, not timed here).

"Off" replaces those functions by no-ops in this process (the same code
otherwise), alternating on and off so that machine load hits both alike.
Timed, on the bundled Roadmap pilot sample (25 tracks, 1,126,469 positions):

- ``train``: one epoch of the small network of the tests' ``trained_model``;
- ``impute``: load the saved model and write one track genome-wide (bigWig,
  the model alone: ``--model-only``);
- ``ensemble check``: ``training_compendium`` of the model on its store (what
  ``impute`` adds before fitting the trees; their fitting is not timed).

Prints each run, the median seconds, the ratio on / off, the direct cost (the
seconds spent inside the checks during one run, as a share of that run: robust
to the load of a shared machine, which moves whole runs by more than 2%), and
the CPU with its flags.

    nice -n 10 python benchmarks/identity_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import tempfile
import time
from pathlib import Path


def _cpu() -> str:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ["sse4_2", "avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    return f"{name}; flags {' '.join(f for f in wanted if f in flags) or '?'}"


@contextlib.contextmanager
def checks_off():
    """Every identity check and record of this version replaced by a no-op."""
    from epitensor.estimators import avocado, ensemble, stage2
    from epitensor.evaluation import benchmark, tune
    from epitensor.nn import modeldir
    from epitensor.store import compendium, identity

    def no_record(store, tracks=None):
        return {"coordinates": {}, "tracks": {}, "digest": None, "url": None}

    fakes = {
        "check_data": lambda *args, **kwargs: None,
        "check_coordinates": lambda *args, **kwargs: None,
        "data_record": no_record,
    }
    saved = []
    for module in (identity, avocado, ensemble, stage2, benchmark, tune):
        for name, fake in fakes.items():
            if hasattr(module, name):
                saved.append((module, name, getattr(module, name)))
                setattr(module, name, fake)
    saved.append((compendium.Store, "_check_positions", compendium.Store._check_positions))
    compendium.Store._check_positions = lambda self, *args: None
    saved.append((modeldir, "config_digest", modeldir.config_digest))
    modeldir.config_digest = lambda config: (config.get("checksums") or {}).get("config.json")
    saved.append((avocado, "read_lock", avocado.read_lock))
    avocado.read_lock = lambda path: contextlib.nullcontext()
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


@contextlib.contextmanager
def checks_timed(spent: list[float]):
    """Every identity check and record timed (their seconds summed into ``spent[0]``).

    The direct cost, robust to the machine's load, which on a shared machine
    moves whole-run times by far more than 2%.
    """
    from epitensor.estimators import avocado, ensemble, stage2
    from epitensor.evaluation import benchmark, tune
    from epitensor.nn import modeldir
    from epitensor.store import compendium, identity

    def timer(function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        return timed

    saved = []
    for module in (identity, avocado, ensemble, stage2, benchmark, tune):
        for name in ("check_data", "check_coordinates", "data_record"):
            if hasattr(module, name):
                saved.append((module, name, getattr(module, name)))
                setattr(module, name, timer(getattr(module, name)))
    for owner, name in ((compendium.Store, "_check_positions"), (modeldir, "config_digest")):
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, timer(getattr(owner, name)))
    lock = avocado.read_lock

    @contextlib.contextmanager
    def timed_lock(path):  # taking and releasing it: the time inside the block is the work's
        start = time.perf_counter()
        with lock(path) as held:
            spent[0] += time.perf_counter() - start
            yield held
            start = time.perf_counter()
        spent[0] += time.perf_counter() - start

    saved.append((avocado, "read_lock", lock))
    avocado.read_lock = timed_lock
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def _model():
    from epitensor.estimators.avocado import Avocado

    return Avocado(n_celltype_factors=8, n_assay_factors=16, n_25bp_factors=8,
                   n_250bp_factors=8, n_5kbp_factors=8, n_layers=2, n_nodes=64, n_epochs=1,
                   batch_size=8192, lr=0.003, seed=0, verbose=False)  # fmt: skip


HOLDOUT = [("E003", "H3K4me3"), ("E017", "H3K36me3"), ("E065", "H3K4me1"),
           ("E116", "H3K27me3"), ("E117", "H3K9me3")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="on/off pairs (0: direct cost only)")
    args = parser.parse_args()

    import torch

    from epitensor.estimators.ensemble import training_compendium
    from epitensor.store.datasets import roadmap_pilot
    from epitensor.workflows.impute import impute

    print(f"cpu: {_cpu()}; torch threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="epitensor-identity-") as tmp:
        tmp = Path(tmp)
        store = roadmap_pilot(tmp / "roadmap-pilot.zarr")
        model = _model().fit(store, holdout=HOLDOUT)  # warm-up, and the model imputed
        model.save(tmp / "model")
        times: dict[str, dict[str, list[float]]] = {}

        def timed(job: str, mode: str, run) -> None:
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            times.setdefault(job, {}).setdefault(mode, []).append(seconds)
            print(f"  {job:<16}{mode:<5}{seconds:8.3f} s", flush=True)

        jobs = {
            "train": lambda: _model().fit(type(store).open(store.url), holdout=HOLDOUT),
            "impute": lambda: impute(
                tmp / "model", [("E003", "H3K4me3")], tmp / "out", overwrite=True, verbose=False
            ),  # fmt: skip
            "ensemble check": lambda: training_compendium(model, type(store).open(store.url)),
        }
        for repeat in range(args.repeats):
            for mode in ("on", "off") if repeat % 2 == 0 else ("off", "on"):
                for job, run in jobs.items():
                    if mode == "off":
                        with checks_off():
                            timed(job, mode, run)
                    else:
                        timed(job, mode, run)
        print("direct cost: seconds inside the identity checks during one run with them on")
        for job, run in jobs.items():
            spent = [0.0]
            start = time.perf_counter()
            with checks_timed(spent):
                run()
            total = time.perf_counter() - start
            print(f"  {job:<16}{spent[0]:9.4f} s of {total:8.3f} s ({spent[0] / total:.3%})")
        print(f"{'job':<16}{'on (s)':>10}{'off (s)':>10}{'on/off':>9}   runs")
        for job, modes in times.items():
            on, off = statistics.median(modes["on"]), statistics.median(modes["off"])
            print(f"{job:<16}{on:>10.3f}{off:>10.3f}{on / off:>9.3f}   {len(modes['on'])}")


if __name__ == "__main__":
    main()
