"""Hand-written code against the maintained library that could replace it (issue 30, item 6).

Each part times both in this one process, on this machine, and checks the
behaviours that decided the choice:

* output locks: ``epitensor._utils.output_lock`` (flock), the same before its
  ``ftruncate(fd, 0)`` was dropped, and an ``output_lock`` on ``filelock``
  that keeps every tested behaviour (pid in the file, file deleted on
  release); with root, a second user (``nobody``) tries to take the first
  user's lock file, held and then left behind by a killed writer;
* region strings: ``genome.parse_region`` against ``bioframe.parse_region``;
* average precision: the former hand-written one (kept below) against
  ``sklearn.metrics.average_precision_score``, which now computes it;
* ROC AUC from shared ranks (``evaluation.metrics``) against ``roc_auc_score``;
* CPUs: ``available_cpus`` against ``joblib.cpu_count``;
* chunk listing: zarr's async ``list_prefix`` through ``zarr.core.sync``
  (private) against the fsspec listing the store now uses.

Usage::

    python benchmarks/libraries.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------
# helpers


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split()) if "flags" in text else set()
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile"]
    present = [f for f in wanted if f in flags] or ["none of avx2/avx512/amx"]
    return f"{model.group(1) if model else 'unknown CPU'}, {os.cpu_count()} CPUs; flags: {' '.join(present)}"


def best_of(*funcs, repeat: int = 5, number: int = 1) -> list[float]:
    """Fastest of ``repeat`` runs of ``number`` calls of each function, in seconds per call.

    The functions take turns, run by run, so that load from other processes on
    the machine falls on all of them alike.
    """
    best = [float("inf")] * len(funcs)
    for _ in range(repeat):
        for k, func in enumerate(funcs):
            start = time.perf_counter()
            for _ in range(number):
                func()
            best[k] = min(best[k], (time.perf_counter() - start) / number)
    return best


def row(label: str, ours: float, theirs: float, unit: str = "us", scale: float = 1e6) -> None:
    print(
        f"  {label:<44} hand-written {ours * scale:10.1f} {unit}   library {theirs * scale:10.1f} "
        f"{unit}   library / hand-written {theirs / ours:6.2f}x"
    )


# --------------------------------------------------------------------------------------
# locks


def filelock_output_lock():
    """``output_lock`` on filelock 4: pid written on acquire, lock file deleted on release."""
    import filelock

    def write_pid(fd: int) -> None:
        data = f"{os.getpid()}\n".encode()
        os.pwrite(fd, data, 0)
        if os.fstat(fd).st_size > len(data):
            os.ftruncate(fd, len(data))

    @contextlib.contextmanager
    def output_lock(path, wait=True, timeout=3600.0):
        from epitensor._utils import lock_file

        target = lock_file(path)
        lock = filelock.FileLock(
            str(target), is_singleton=True, thread_local=False, on_acquired=write_pid
        )
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            if not wait:
                raise
            lock.acquire(timeout=timeout)
        try:
            yield target
        finally:
            if lock.lock_counter == 1:  # the last release: leave no lock file behind
                with contextlib.suppress(OSError):
                    os.unlink(target)
            lock.release()

    return output_lock


def filelock_import_ms(repeat: int = 5) -> float:
    """Extra import time of filelock once ``epitensor._utils`` is loaded (best of ``repeat``)."""
    best = float("inf")
    for _ in range(repeat):
        run = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import epitensor._utils; import filelock"],
            capture_output=True,
            text=True,
        )
        for line in run.stderr.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] == "filelock":
                best = min(best, int(parts[1]) / 1000)
    return best


def second_user_check(folder: Path) -> dict[str, str]:
    """What a second user, ``nobody``, gets from each lock on a lock file of the first (0644).

    Twice: while the first user's process holds the lock, and after it was
    killed (its lock file left behind, no one holding it). Forked children
    that drop to uid 65534, so the interpreter and every module are already
    loaded (``nobody`` may not read them).
    """
    if not hasattr(os, "fork") or os.geteuid() != 0:
        return {"skipped": "needs root, to act as a second user"}
    import filelock

    import epitensor._utils.files as files
    from epitensor._utils import lock_file, output_lock

    os.chmod(folder, 0o755)  # mkdtemp's 0700 would keep the second user out of every test
    shared = Path(tempfile.mkdtemp(dir=folder))
    os.chmod(shared, 0o777)  # a shared output folder, not sticky
    warm = filelock.FileLock(str(shared / "warm.lock"))
    warm.acquire()
    warm.release()
    target = shared / "out"

    def hand_written() -> str:
        with output_lock(target, timeout=0.3):
            return "took the lock"

    def with_filelock() -> str:
        filelock.FileLock(str(lock_file(target))).acquire(timeout=0.3)
        return "took the lock"

    def in_child(attempt) -> str:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(read)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # the "waiting" line
            files._held.clear()  # a separate process: it inherited the parent's lock table
            try:
                os.setgid(65534)
                os.setuid(65534)
                message = attempt()
            except BaseException as exc:  # noqa: BLE001 - reported, not handled
                message = f"{type(exc).__name__}: {str(exc)[:90]}"
            os.write(write, message.encode())
            os._exit(0)
        os.close(write)
        message = os.read(read, 1000).decode()
        os.close(read)
        os.waitpid(pid, 0)
        return message

    results = {}
    mask = os.umask(0o022)
    try:
        with output_lock(target):
            for name, attempt in (("hand-written", hand_written), ("filelock", with_filelock)):
                results[f"held by the first user: {name}"] = in_child(attempt)
        for name, attempt in (("hand-written", hand_written), ("filelock", with_filelock)):
            lock_file(target).write_text("1\n")  # what a killed holder leaves
            results[f"left by a killed holder: {name}"] = in_child(attempt)
    finally:
        os.umask(mask)
    return results


def bench_locks(n: int, folder: Path) -> None:
    import epitensor._utils.files as files
    from epitensor._utils import output_lock

    print(f"\noutput lock: acquire + release, {n} times, {folder}")
    new_lock = filelock_output_lock()
    target = folder / "out"

    def loop(lock):
        def run():
            for _ in range(n):
                with lock(target):
                    pass

        return run

    before_write = files._write_pid

    def truncating_write(fd: int) -> None:  # the code before: ftruncate(fd, 0), then write
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())

    def before_fix() -> None:
        files._write_pid = truncating_write
        try:
            loop(output_lock)()
        finally:
            files._write_pid = before_write

    now, before, library = (
        t / n for t in best_of(loop(output_lock), before_fix, loop(new_lock), repeat=7)
    )
    print(
        f"  before (ftruncate 0) {before * 1e6:8.1f} us   now {now * 1e6:8.1f} us   "
        f"before / now {before / now:6.2f}x"
    )
    row("now against filelock 4 (same behaviour)", now, library)
    with new_lock(target) as path:
        nested_pid = int(path.read_text())
        with new_lock(target):
            pass
    print(
        f"  filelock version: pid in file {nested_pid == os.getpid()}, reentrant, "
        f"file left after release: {path.exists()}"
    )
    print(f"  filelock import after epitensor._utils: {filelock_import_ms():.1f} ms")
    for name, result in second_user_check(folder).items():
        print(f"  second user, lock file {name}: {result}")


# --------------------------------------------------------------------------------------
# region strings


def bench_regions(n: int) -> None:
    import bioframe

    from epitensor.genome.coordinates import chrom_sizes, parse_region

    sizes = chrom_sizes("hg19")
    rng = np.random.default_rng(0)
    chroms = rng.choice(list(sizes.index[:22]), n)
    starts = rng.integers(0, 40_000_000, n)
    regions = [f"{c}:{s:,}-{s + 5000:,}" for c, s in zip(chroms, starts)]
    ours = [parse_region(r, sizes) for r in regions]
    theirs = [
        tuple(int(v) if i else v for i, v in enumerate(bioframe.parse_region(r, sizes)))
        for r in regions
    ]
    print(f"\nparse_region: {n} UCSC strings with commas, checked against hg19 sizes")
    print(f"  same result for every string: {ours == theirs}")
    ours_time, bioframe_time = best_of(
        lambda: [parse_region(r, sizes) for r in regions],
        lambda: [bioframe.parse_region(r, sizes) for r in regions],
        repeat=7,
    )
    row("per region", ours_time / n, bioframe_time / n)
    for text in (
        "chr1:1.005k-2k",
        "chr1:1.001k-2k",
        "chr1:1-2:3",
        "chr1:1-2-3",
        "chr1:5-5",
        "chr1:abc",
    ):
        results = []
        for parse in (parse_region, bioframe.parse_region):
            try:
                results.append(
                    str(tuple(int(v) if i else v for i, v in enumerate(parse(text, sizes))))
                )
            except Exception as exc:  # noqa: BLE001 - reported
                results.append(f"{type(exc).__name__}: {str(exc)[:48]}")
        print(f"  {text:<16} epitensor {results[0]:<58} bioframe {results[1]}")


# --------------------------------------------------------------------------------------
# average precision and ROC AUC


def handwritten_average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """The code ``evaluation.downstream.average_precision`` ran before it called scikit-learn."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each tie group
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def bench_average_precision(sizes: list[int]) -> None:
    from sklearn.metrics import average_precision_score

    print("\naverage precision: former hand-written against sklearn average_precision_score")
    rng = np.random.default_rng(0)
    worst = 0.0
    for seed in range(20):
        local = np.random.default_rng(seed)
        y = local.random(500) < 0.15
        score = local.normal(size=500) + y
        for s in (score, np.round(score)):  # ties: a tie group enters at one threshold
            worst = max(
                worst, abs(handwritten_average_precision(y, s) - average_precision_score(y, s))
            )
    print(f"  largest difference over 40 label sets (half with ties): {worst:.1e}")
    for n in sizes:
        y = rng.random(n) < 0.15
        score = rng.normal(size=n) + y
        repeat = 20 if n <= 10_000 else 3
        times = best_of(
            lambda y=y, s=score: handwritten_average_precision(y, s),
            lambda y=y, s=score: average_precision_score(y, s),
            repeat=repeat,
        )
        row(f"n = {n:,}", *times, unit="ms", scale=1e3)


def bench_auc(n: int) -> None:
    from sklearn.metrics import roc_auc_score

    from epitensor.evaluation import metrics

    print(f"\nROC AUC of the top 1% (aucobs1 and aucimp1), {n:,} positions")
    rng = np.random.default_rng(1)
    observed = rng.gamma(0.5, 1.0, n)
    imputed = observed + rng.normal(0, 0.5, n)
    top_obs = observed >= np.quantile(observed, 0.99)
    top_imp = imputed >= np.quantile(imputed, 0.99)

    def ours():  # all_metrics ranks each track once, for gwspear and both AUCs
        obs_ranks, imp_ranks = metrics._ranks(observed), metrics._ranks(imputed)
        return metrics._auc(top_obs, imputed, imp_ranks), metrics._auc(top_imp, observed, obs_ranks)

    def sklearn():  # the ranks gwspear needs, plus two roc_auc_score calls
        metrics._ranks(observed), metrics._ranks(imputed)
        return roc_auc_score(top_obs, imputed), roc_auc_score(top_imp, observed)

    a, b = ours(), sklearn()
    print(f"  difference: {max(abs(a[0] - b[0]), abs(a[1] - b[1])):.1e}")
    row("spearman ranks + both AUCs", *best_of(ours, sklearn, repeat=5), unit="ms", scale=1e3)


# --------------------------------------------------------------------------------------
# CPUs and chunk listing


def bench_cpus() -> None:
    import joblib

    from epitensor._utils import available_cpus, cgroup_cpu_quota

    print("\nCPUs a process may use")
    print(
        f"  available_cpus {available_cpus()}   joblib.cpu_count {joblib.cpu_count()}   "
        f"os.cpu_count {os.cpu_count()}   cgroup quota {cgroup_cpu_quota()}"
    )
    row("per call", *best_of(available_cpus, joblib.cpu_count, repeat=5, number=200))


def bench_chunk_listing(folder: Path, n_chunks: int) -> None:
    import zarr
    from zarr.core.sync import sync  # private: what the store used before

    from epitensor.store import compendium

    def zarr_keys(array) -> set[str]:
        async def keys() -> set[str]:
            prefix = f"{array.store_path.path}/" if array.store_path.path else ""
            return {k[len(prefix) :] async for k in array.store_path.store.list_prefix(prefix)}

        return sync(keys())

    url = str(folder / "chunks.zarr")
    group = zarr.open_group(store=url, mode="w")
    array = group.create_group("signal").create_array(
        "chr1", shape=(2, 16 * n_chunks // 2), chunks=(1, 16), dtype="f4", fill_value=np.nan
    )
    array[:] = 1.0
    ours = compendium._chunk_keys(url, array)
    print(f"\nchunk keys of a local array with {n_chunks:,} chunk files")
    print(f"  same keys: {ours == zarr_keys(array)} ({len(ours):,} keys)")
    listed_by_zarr, listed_by_fsspec = best_of(
        lambda: zarr_keys(array), lambda: compendium._chunk_keys(url, array), repeat=5
    )
    print(
        f"  zarr list_prefix via zarr.core.sync {listed_by_zarr * 1e3:8.1f} ms   "
        f"fsspec find {listed_by_fsspec * 1e3:8.1f} ms   fsspec / zarr "
        f"{listed_by_fsspec / listed_by_zarr:5.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    args = parser.parse_args()
    print(cpu_flags())
    with tempfile.TemporaryDirectory(dir=os.environ.get("EPITENSOR_BENCH_DIR")) as scratch:
        folder = Path(scratch)
        bench_locks(100 if args.quick else 1000, folder)
        bench_regions(1000 if args.quick else 10_000)
        bench_average_precision([300, 10_000] if args.quick else [300, 10_000, 1_000_000])
        bench_auc(100_000 if args.quick else 1_000_000)
        bench_cpus()
        bench_chunk_listing(folder, 500 if args.quick else 5000)


if __name__ == "__main__":
    main()
