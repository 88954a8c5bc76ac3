"""Derive the bundled Roadmap pilot sample from the original Roadmap pilot tracks.

Writes src/epitensor/data/roadmap_pilot.npz (the 25 arcsinh tracks as float16,
keyed "CELLTYPE.ASSAY", compressed) and a copy of the pilot layout table.

    python scripts/make_roadmap_pilot.py SOURCE_DIR

SOURCE_DIR holds the 25 ``{CELL}.{ASSAY}.pilot.arcsinh.npz`` of the Avocado
repository (https://github.com/jmschrei/avocado/tree/master/data; sha256 of each in
benchmarks/data/README.md), ``encode_pilot_hg19.bed`` and
``avocado_pilot_layout_hg19.tsv`` (copies: tests/data/roadmap-pilot).
"""

import shutil
import sys
from pathlib import Path

import numpy as np

CELLTYPES = ["E003", "E017", "E065", "E116", "E117"]
ASSAYS = ["H3K4me3", "H3K27me3", "H3K36me3", "H3K9me3", "H3K4me1"]


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    source = Path(sys.argv[1])
    out = root / "src/epitensor/data"
    arrays = {}
    for celltype in CELLTYPES:
        for assay in ASSAYS:
            values = np.load(source / f"{celltype}.{assay}.pilot.arcsinh.npz")["arr_0"]
            arrays[f"{celltype}.{assay}"] = values.astype(np.float16)
    np.savez_compressed(out / "roadmap_pilot.npz", **arrays)
    shutil.copy(source / "avocado_pilot_layout_hg19.tsv", out / "roadmap_pilot_layout_hg19.tsv")
    shutil.copy(source / "encode_pilot_hg19.bed", out / "encode_pilot_hg19.bed")
    print(f"wrote {len(arrays)} tracks to {out}")


if __name__ == "__main__":
    main()
