"""Build a large store (>= 100 tracks x a whole chromosome) from the real pilot tracks.

The out-of-core benchmark (benchmarks/out_of_core.py) needs a store far larger
than the memory its runs are given. This script lays the 25 real Roadmap pilot
tracks (1,126,469 25-bp bins each) out along a full-length chromosome by
resampling them, deterministically from a seed:

* across positions: the chromosome is cut into blocks of ``--block`` bins (a
  multiple of 200, so every 5-kbp factor row lies in one block); each block
  copies a run of pilot positions starting at a random pilot offset. One
  position map is shared by every track, so a position holds the same pilot
  locus in all tracks, as a real genome would;
* across tracks: synthetic cell type ``S###`` takes its signal, assay by assay,
  from a base pilot cell type, but in a random 20% of the blocks from another
  pilot cell type (the same one for all its assays there), so cell types differ
  from one another in places as real ones do.

``--tracks`` tracks are made as ``ceil(tracks / 5)`` cell types x the 5 pilot
assays (cut to ``--tracks``). The values are real arcsinh(-log10 p) signal, only
rearranged. Usage::

    python scripts/make_big_store.py --out big-chr1.zarr [--tracks 100] [--chrom chr1]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from epitensor.genome.coordinates import Layout, chrom_sizes
from epitensor.store.compendium import Store
from epitensor.store.datasets import ROADMAP_ASSAYS, ROADMAP_CELLTYPES, roadmap_pilot_arrays

SWITCH_RATE = 0.2


def position_map(n_bins: int, n_source: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """Pilot position copied to each chromosome bin: runs of ``block`` from random offsets.

    Returns
    -------
    numpy.ndarray, shape=(n_bins,), int64
    """
    n_blocks = math.ceil(n_bins / block)
    starts = rng.integers(0, n_source - block, size=n_blocks)
    return (starts[:, None] + np.arange(block)[None, :]).ravel()[:n_bins]


def celltype_sources(n_celltypes: int, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Pilot cell type (index) each synthetic cell type copies in each block.

    Returns
    -------
    numpy.ndarray, shape=(n_celltypes, n_blocks), int64
    """
    n_source = len(ROADMAP_CELLTYPES)
    base = np.arange(n_celltypes) % n_source
    sources = np.repeat(base[:, None], n_blocks, axis=1)
    switch = rng.random((n_celltypes, n_blocks)) < SWITCH_RATE
    other = (base[:, None] + rng.integers(1, n_source, size=(n_celltypes, n_blocks))) % n_source
    return np.where(switch, other, sources)


def build(
    out: str,
    n_tracks: int = 100,
    chrom: str = "chr1",
    genome: str = "hg19",
    block: int = 2000,
    seed: int = 0,
    batch: int = 32,
    overwrite: bool = False,
) -> Store:
    """Write the store and return it (opened read-only)."""
    if block % 200:
        raise SystemExit(f"--block must be a multiple of 200; got {block}")
    sizes = chrom_sizes(genome)
    layout = Layout.from_chrom_sizes(sizes, chroms=[chrom])
    n_bins = layout.axis_lengths[chrom]
    arrays = roadmap_pilot_arrays()
    pilot = np.stack([arrays[(c, a)] for c in ROADMAP_CELLTYPES for a in ROADMAP_ASSAYS])
    pilot = pilot.astype(np.float16)  # (25, n_pilot): row = celltype * 5 + assay
    rng = np.random.default_rng(seed)
    positions = position_map(n_bins, pilot.shape[1], block, rng)
    n_celltypes = math.ceil(n_tracks / len(ROADMAP_ASSAYS))
    sources = celltype_sources(n_celltypes, math.ceil(n_bins / block), rng)
    names = [(f"S{c:03d}", a) for c in range(n_celltypes) for a in ROADMAP_ASSAYS][:n_tracks]
    store = Store.create(out, layout, sizes, genome=genome, overwrite=overwrite)
    block_of = np.arange(n_bins) // block
    for first in range(0, n_tracks, batch):
        tic = time.perf_counter()
        chunk = names[first : first + batch]
        values = np.empty((len(chunk), n_bins), dtype=np.float16)
        for k, (celltype, assay) in enumerate(chunk):
            c = int(celltype[1:])
            rows = sources[c][block_of] * len(ROADMAP_ASSAYS) + ROADMAP_ASSAYS.index(assay)
            values[k] = pilot[rows, positions]
        store.add_tracks(chunk, {chrom: values}, source=f"make_big_store.py seed={seed}")
        print(
            f"tracks {first}-{first + len(chunk) - 1} written in {time.perf_counter() - tic:.1f} s",
            flush=True,
        )
    return Store.open(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="store path or fsspec URL")
    parser.add_argument("--tracks", type=int, default=100, help="number of tracks (100)")
    parser.add_argument("--chrom", default="chr1", help="chromosome (chr1)")
    parser.add_argument("--genome", default="hg19", help="genome build (hg19)")
    parser.add_argument("--block", type=int, default=2000, help="bins per resampled block")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    args = parser.parse_args()
    tic = time.perf_counter()
    store = build(
        args.out,
        args.tracks,
        args.chrom,
        args.genome,
        args.block,
        args.seed,
        overwrite=args.overwrite,
    )
    n = store.n_tracks * store.layout.n_positions
    print(store.summary().split("\n\nobserved")[0])
    print(
        f"{store.n_tracks} tracks x {store.layout.n_positions:,} positions: "
        f"{n * 2 / 1e9:.2f} GB as float16, {n * 4 / 1e9:.2f} GB as float32; "
        f"built in {time.perf_counter() - tic:.0f} s"
    )


if __name__ == "__main__":
    main()
