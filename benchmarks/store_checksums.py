"""What chunk checksums and the read checks cost: the store read as training reads it.

Builds two stores of the same real pilot tracks (the 25 bundled Roadmap tracks,
tiled to ``--tracks`` rows over ``--positions`` positions): one as this version
writes it (Blosc zstd + a CRC-32C per chunk, NaN fill value, every read checked
for non-finite values) and one as releases before checksums wrote it (Blosc
only, fill 0, no check). It then times, in this one process and alternating
the two so machine load hits both alike:

- ``read all``: ``Store.read_block`` of every track, 65,536-position blocks (the
  training block size), over the whole axis;
- ``read rows``: the same with 8 chosen track rows (held-out scoring, sources);
- ``write``: ``add_tracks`` of every track at once.

Prints the median seconds of each and the ratio new / old (1.00 = free), with
the CPU, the CRC-32C implementation (``google_crc32c``: ``c`` uses the CPU's
CRC instruction) and the chunk size.

    python benchmarks/store_checksums.py [--tracks 64] [--positions 1126469] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCK = 65_536


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ["sse4_2", "avx2", "avx512f", "pclmulqdq"]
                return f"{name}; flags {' '.join(f for f in wanted if f in flags)}"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _data(n_tracks: int, n_positions: int) -> np.ndarray:
    from epitensor.store.datasets import roadmap_pilot_arrays

    real = np.stack(list(roadmap_pilot_arrays().values()))[:, :n_positions]
    rows = [real[k % len(real)] for k in range(n_tracks)]
    return np.stack(rows).astype(np.float32)


def _legacy(store) -> None:
    """Make ``store``'s arrays as releases before checksums wrote them."""
    import zarr
    from zarr.codecs import BloscCodec, BloscShuffle

    group = zarr.open_group(str(store.url), mode="r+")
    signal = group["signal"]
    for axis in store.axes:
        old = signal[axis]
        shape, chunks = old.shape, old.chunks
        del signal[axis]
        signal.create_array(
            axis,
            shape=shape,
            chunks=chunks,
            dtype=old.dtype,
            fill_value=0.0,
            compressors=[BloscCodec(cname="zstd", clevel=5, shuffle=BloscShuffle.shuffle)],
        )


def _stores(folder: Path, values: np.ndarray):
    from epitensor.genome.coordinates import Layout, chrom_sizes
    from epitensor.store.compendium import Store

    sizes = chrom_sizes("hg19")
    layout = Layout.from_bed(
        __import__("pandas").DataFrame(
            {"chrom": ["chr1"], "start": [0], "end": [values.shape[1] * 25]}
        ),
        name="bench",
    )
    names = [(f"C{k:03d}", "A") for k in range(len(values))]
    new = Store.create(folder / "new.zarr", layout, sizes)
    old = Store.create(folder / "old.zarr", layout, sizes)
    _legacy(old)
    old = Store.open(old.url, mode="r+")
    return new, old, names


def _timed(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def _read_all(store, rows=None) -> None:
    n = store.axis_length("bench")
    for start in range(0, n, BLOCK):
        store.read_block("bench", start, min(n, start + BLOCK), tracks=rows)


def _parts(store) -> tuple[float, float, float]:
    """Seconds of one all-track block read, of its finiteness sum and of the CRC-32C of its chunks."""
    import timeit

    import google_crc32c

    block = store.read_block("bench", 0, BLOCK)
    read = min(timeit.repeat(lambda: store.read_block("bench", 0, BLOCK), number=3, repeat=5)) / 3
    total = min(timeit.repeat(block.sum, number=20, repeat=5)) / 20
    folder = Path(store.url) / "signal" / "bench" / "c"
    chunks = [f.read_bytes() for f in folder.rglob("*") if f.is_file() and f.parent.name == "0"]
    chunks = chunks[: BLOCK // store._array("bench").chunks[1]]
    crc = min(timeit.repeat(lambda: [google_crc32c.value(c) for c in chunks], number=20, repeat=5))
    return read, total, crc / 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, default=64)
    parser.add_argument("--positions", type=int, default=1_126_469)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import google_crc32c

    from epitensor.store.compendium import DEFAULT_POSITION_CHUNK, DEFAULT_TRACK_CHUNK, Store

    print(f"cpu        {_cpu()}")
    print(f"crc32c     google_crc32c implementation {google_crc32c.implementation!r}")
    print(
        f"store      {args.tracks} tracks x {args.positions:,} positions, float16, chunks "
        f"{DEFAULT_TRACK_CHUNK} x {DEFAULT_POSITION_CHUNK}; reads of {BLOCK:,} positions"
    )
    values = _data(args.tracks, args.positions)
    rows = np.linspace(0, args.tracks - 1, 8).astype(int)
    with tempfile.TemporaryDirectory() as scratch:
        new, old, names = _stores(Path(scratch), values)
        times = {(kind, case): [] for kind in ("new", "old") for case in ("write", "all", "rows")}
        for repeat in range(args.repeats):
            for kind, store in (("new", new), ("old", old))[:: 1 if repeat % 2 else -1]:
                if repeat == 0:
                    times[kind, "write"].append(
                        _timed(lambda s=store: s.add_tracks(names, {"bench": values}))
                    )
                reader = Store.open(store.url)
                times[kind, "all"].append(_timed(lambda r=reader: _read_all(r)))
                times[kind, "rows"].append(_timed(lambda r=reader: _read_all(r, rows)))
        parts = _parts(Store.open(new.url))
        assert new.has_checksums and not Store.open(old.url).has_checksums
        np.testing.assert_array_equal(
            Store.open(new.url).read_block("bench"), Store.open(old.url).read_block("bench")
        )
    read, total, crc = parts
    print(
        f"one block  read {read * 1e3:.2f} ms, of which (measured apart) the finiteness sum "
        f"{total * 1e3:.3f} ms ({total / read:.1%}) and CRC-32C {crc * 1e3:.3f} ms ({crc / read:.1%})"
    )
    print(f"\n{'case':<10} {'old s':>8} {'new s':>8} {'new/old':>8}")
    for case, label in (("all", "read all"), ("rows", "read rows"), ("write", "write")):
        a = statistics.median(times["old", case])
        b = statistics.median(times["new", case])
        print(f"{label:<10} {a:8.3f} {b:8.3f} {b / a:8.2f}")


if __name__ == "__main__":
    main()
