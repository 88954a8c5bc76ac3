"""Cut the whole-genome hg19 annotations down to the ENCODE pilot regions.

Each output keeps its source's format, restricted to the lines overlapping a pilot
region (extended by 5 kb so windows at region edges stay complete):

    src/epitensor/data/pilot_annotations_hg19/
      gencode.v19.TSS.notlow.gff.gz   GENCODE v19 TSS (TargetFinder repository)
      RefSeqGene.hg19.bed.gz          RefSeq gene bodies (ChromHMM examples)
      E116_chromhmm25.bed.gz          Roadmap 25-state ChromHMM of GM12878 (E116)
      hg19-blacklist.v2.bed.gz        ENCODE blacklist v2 (Boyle lab)

    python scripts/make_pilot_annotations.py SOURCE_DIR

SOURCE_DIR holds ``annotations/hg19/`` (the four whole-genome files; sources and
sha256 in tests/data/README.md) and ``roadmap-pilot/encode_pilot_hg19.bed``.
"""

import gzip
import sys
from pathlib import Path

import pandas as pd

FILES = {
    "gencode.v19.TSS.notlow.gff.gz": (0, 3, 4),
    "RefSeqGene.hg19.bed.gz": (0, 1, 2),
    "E116_chromhmm25.bed.gz": (0, 1, 2),
    "hg19-blacklist.v2.bed.gz": (0, 1, 2),
}
MARGIN = 5_000


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    shared = Path(sys.argv[1])
    regions = pd.read_csv(shared / "roadmap-pilot/encode_pilot_hg19.bed", sep="\t", header=None)
    by_chrom: dict[str, list[tuple[int, int]]] = {}
    for chrom, start, end in regions[[0, 1, 2]].itertuples(index=False):
        by_chrom.setdefault(chrom, []).append((start - MARGIN, end + MARGIN))
    out = root / "src/epitensor/data/pilot_annotations_hg19"
    out.mkdir(parents=True, exist_ok=True)
    for name, (c_col, s_col, e_col) in FILES.items():
        kept = 0
        with (
            gzip.open(shared / "annotations/hg19" / name, "rt") as src,
            gzip.open(out / name, "wt", compresslevel=9) as dst,
        ):
            for line in src:
                fields = line.rstrip("\n").split("\t")
                spans = by_chrom.get(fields[c_col], ())
                start, end = int(fields[s_col]), int(fields[e_col])
                if any(start < hi and end > lo for lo, hi in spans):
                    dst.write(line)
                    kept += 1
        print(f"{name}: kept {kept} lines")


if __name__ == "__main__":
    main()
