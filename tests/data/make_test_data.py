"""Remake the real-data test fixtures in tests/data from their original files.

Every file here is real, public data (provenance and licences: tests/data/README.md).
Most are copied byte for byte; four kinds are cut down to what the tests read:

* ``roadmap-pilot/{CELL}.{ASSAY}.pilot-head.arcsinh.npz``: the first two ENCODE
  pilot regions (array positions 0-40,003, ENr231 and ENr112) of three Roadmap
  pilot tracks, ``arr_0`` float32 as in the original ``.pilot.arcsinh.npz``;
* ``annotations/hg19-pilot/``: six hg19 annotation files restricted to the lines
  that overlap an ENCODE pilot region extended by 5 kb (same format, same name);
* ``targetfinder/IMR90.pairs.csv.gz``: the TargetFinder IMR-90 pairs CSV, gzipped
  (its bytes unchanged when decompressed);
* nothing else: bigWig, wig, bedGraph, h5, json and the other npz files are copies.

Usage (SOURCE holds the originals: ``roadmap-pilot/``, ``annotations/hg19/``,
``fixtures/{coolbox,genomedata,avocado-reference}/``, ``downstream/targetfinder/``;
see the README for where to download each)::

    python tests/data/make_test_data.py SOURCE

Each original is checked against the SHA-256 recorded below before it is used.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent

# destination (relative to tests/data) -> (source relative to SOURCE, sha256 of the source)
COPIES = {
    "coolbox/bigwig_chr9_4000000_6000000_K562_H3K27ac.bigwig": (
        "fixtures/coolbox/bigwig_chr9_4000000_6000000_K562_H3K27ac.bigwig",
        "d5366a7fee5ac1a642cc5b74181cf49a82d7e20c011268ed8431de91d1c86555",
    ),
    "coolbox/bigwig_chr9_4000000_6000000_K562_H3K27me3.bigwig": (
        "fixtures/coolbox/bigwig_chr9_4000000_6000000_K562_H3K27me3.bigwig",
        "b24473ccc34252472fee51169f58f157bc6c34c603f9723c156f11bd75f68c80",
    ),
    "coolbox/bigwig_chr9_4000000_6000000_K562_H3K4me3.bigwig": (
        "fixtures/coolbox/bigwig_chr9_4000000_6000000_K562_H3K4me3.bigwig",
        "cc0d811f77d7ddf30cda989be9981a1d94112cba101ac203119be37f1afa8d06",
    ),
    "coolbox/bigwig_chr9_4000000_6000000_K562_RNA.bigwig": (
        "fixtures/coolbox/bigwig_chr9_4000000_6000000_K562_RNA.bigwig",
        "a760f8005f5e716fa00585922ae8ec7cc7d9aa64106493aacdd9f6b53c4fe286",
    ),
    "genomedata/ENCFF324BPE.bigWig": (
        "fixtures/genomedata/ENCFF324BPE.bigWig",
        "3d69217c4b40d7a1e4e58e365ff2f1b109ac06bbbfe1d0dfb9fbb080a513b7c3",
    ),
    "genomedata/chr1.wgEncodeDukeDNaseSeqBaseOverlapSignalK562V2.wig": (
        "fixtures/genomedata/chr1.wgEncodeDukeDNaseSeqBaseOverlapSignalK562V2.wig",
        "4af88a7a05000c3a203f65221bce98d927a68235e145cd0cfadf228f05b8890b",
    ),
    "genomedata/wgEncodeDukeDNaseSeqBaseOverlapSignalK562V2.bedGraph": (
        "fixtures/genomedata/wgEncodeDukeDNaseSeqBaseOverlapSignalK562V2.bedGraph",
        "af89baeb1e78a3ecd2e16cfd7ad9c0ef228cb0cb3de12bc1e20b5dce6beb3918",
    ),
    "genomedata/wgEncodeDukeDNaseSeqBaseOverlapSignalK562V2.dos.bedGraph": (
        "fixtures/genomedata/wgEncodeDukeDNaseSeqBaseOverlapSignalK562V2.dos.bedGraph",
        "8e0578cb130d742ec5693423a846d37820842376a833e552007052794a1e48f4",
    ),
    "genomedata/wgEncodeDukeDNaseSeqBaseOverlapSignalK562V2.wigVar": (
        "fixtures/genomedata/wgEncodeDukeDNaseSeqBaseOverlapSignalK562V2.wigVar",
        "93445cd722c7502f112585a79fccdf7c39ce75031df0aa73ae861753fb6f5203",
    ),
    "genomedata/wgEncodeDukeDNaseSeqBaseOverlapSignalK562V2.dos.wigVar": (
        "fixtures/genomedata/wgEncodeDukeDNaseSeqBaseOverlapSignalK562V2.dos.wigVar",
        "1b3d020a9916c3cb7b9a8d941fdd5aad06e3d204e045e63e9103aae6842972ab",
    ),
    "avocado-reference/README.md": (
        "fixtures/avocado-reference/README.md",
        "10c61d2d30aeb62964a8ee91a41876fc11977dc005e219ef87f91c91376ebe5f",
    ),
    "avocado-reference/avocado-chr1.h5": (
        "fixtures/avocado-reference/avocado-chr1.h5",
        "1b4c3c36dada840ee445b85e7d127a0c44b95ca08e8deb05d9dfec084dba9b46",
    ),
    "avocado-reference/avocado-chr1.json": (
        "fixtures/avocado-reference/avocado-chr1.json",
        "5dd4171e865c97a8ec2693133240a39aaa673ed45686495dbd4e0f4059a93f55",
    ),
    "avocado-reference/reference_predictions.npz": (
        "fixtures/avocado-reference/reference_predictions.npz",
        "58af22032d4e0f29437024fd59dc2978680062285f83577bce457ec26ce577f1",
    ),
    "roadmap-pilot/E116.H3K4me3.pilot.arcsinh.npz": (
        "roadmap-pilot/E116.H3K4me3.pilot.arcsinh.npz",
        "68b930ab51e5c086a84f3a4e45591241ac0cc24d4958e24ac427745af0433454",
    ),
    "roadmap-pilot/encode_pilot_hg19.bed": (
        "roadmap-pilot/encode_pilot_hg19.bed",
        "50f17f8c7783a6d83a14f8c4526be074945581eab02a5f1d846216aa8cef8bc2",
    ),
    "roadmap-pilot/avocado_pilot_layout_hg19.tsv": (
        "roadmap-pilot/avocado_pilot_layout_hg19.tsv",
        "23dbb7288f539474477a7a7895901a4d08318b5e6682451657d2732a8c63a7f9",
    ),
    "annotations/E017-H3K4me3.narrowPeak.gz": (
        "annotations/hg19/E017-H3K4me3.narrowPeak.gz",
        "c305d07621a1369046bab7a446fff9a524074ada98c823eb553ec75007209041",
    ),
}

# the round trip through bigWig (tests/test_ingest.py) reads these three tracks
HEAD_TRACKS = {
    "E003.H3K4me3": "c01cda759aa997c9ef408df982005e879ab613fe1d768ec9f0866f7eba58f1bb",
    "E116.H3K27me3": "abb4dc86261dd0eea686fd98007610f1ee50e2b19bb09a7beb01cb71a7254316",
    "E017.H3K36me3": "75824e5d5d15bec755f824c34f47e1246d57572ed4ab24ebecfbf5dc5e5a7589",
}
HEAD_REGIONS = 2

# annotation file -> (chrom, start, end) columns, sha256 of the whole-genome original
ANNOTATIONS = {
    "gencode.v19.TSS.notlow.gff.gz": (
        (0, 3, 4),
        "97c763fa1dc9266f177aa2e9a5a49fdea70a98ec1f8341118fe798d8ea146f3e",
    ),
    "RefSeqTSS.hg19.bed.gz": (
        (0, 1, 2),
        "6abd27052bfda915f503e2fa87ed4076d71344f606dc2945babce5f17f1e618d",
    ),
    "RefSeqGene.hg19.bed.gz": (
        (0, 1, 2),
        "8d86482455956aef6ddb17bd204f9787238079c51c14770d9679013b145138c3",
    ),
    "RefSeqExon.hg19.bed.gz": (
        (0, 1, 2),
        "b20ff9de23005d514e6b2bb57051cbd62dfe9b8f37b7f48affd05e6bb6e9ab9b",
    ),
    "CpGIsland.hg19.bed.gz": (
        (0, 1, 2),
        "f72ce39fbc1f1ff582be55e520c4347143b061d4f69d43d40c5a08743e956c23",
    ),
    "E116_chromhmm25.bed.gz": (
        (0, 1, 2),
        "e363223bfeee6d065ec44a466bf94b93bbf8026f81f3648e3c665b8e82868b98",
    ),
}
MARGIN = 5_000

PAIRS = (
    "downstream/targetfinder/IMR90.pairs.csv",
    "24b8f3ee31ff2ecfb6db37132626ecca1348501c4e07be49b429dc27184bd049",
)


def _checked(path: Path, sha256: str) -> Path:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{path}: sha256 {digest}, expected {sha256}")
    return path


def _gzip(text_lines, dest: Path) -> None:
    """Write lines gzip-compressed with no name or time in the header (same bytes each run)."""
    with open(dest, "wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as out:
        for line in text_lines:
            out.write(line)


def copy_files(source: Path) -> None:
    for dest, (name, sha256) in COPIES.items():
        (OUT / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_checked(source / name, sha256), OUT / dest)
        print(f"copied {dest}")


def cut_pilot_head(source: Path) -> None:
    table = pd.read_csv(source / "roadmap-pilot/avocado_pilot_layout_hg19.tsv", sep="\t")
    head = table.iloc[:HEAD_REGIONS]
    assert head.array_offset.iloc[0] == 0
    end = int((head.array_offset + head.n_bins).max())
    for track, sha256 in HEAD_TRACKS.items():
        path = _checked(source / f"roadmap-pilot/{track}.pilot.arcsinh.npz", sha256)
        values = np.load(path)["arr_0"]
        dest = OUT / f"roadmap-pilot/{track}.pilot-head.arcsinh.npz"
        np.savez_compressed(dest, arr_0=values[:end])
        print(f"wrote {dest.relative_to(OUT)}: arr_0[:{end}] of {values.size:,}")


def cut_annotations(source: Path) -> None:
    regions = pd.read_csv(source / "roadmap-pilot/encode_pilot_hg19.bed", sep="\t", header=None)
    spans: dict[str, list[tuple[int, int]]] = {}
    for chrom, start, end in regions[[0, 1, 2]].itertuples(index=False):
        spans.setdefault(chrom, []).append((start - MARGIN, end + MARGIN))
    folder = OUT / "annotations/hg19-pilot"
    folder.mkdir(parents=True, exist_ok=True)
    for name, ((c, s, e), sha256) in ANNOTATIONS.items():
        path = _checked(source / "annotations/hg19" / name, sha256)
        kept = []
        with gzip.open(path, "rb") as lines:
            for line in lines:
                fields = line.rstrip(b"\n").split(b"\t")
                chrom = fields[c].decode()
                start, end = int(fields[s]), int(fields[e])
                if any(start < hi and end > lo for lo, hi in spans.get(chrom, ())):
                    kept.append(line)
        _gzip(kept, folder / name)
        print(f"wrote annotations/hg19-pilot/{name}: {len(kept):,} lines")


def gzip_pairs(source: Path) -> None:
    name, sha256 = PAIRS
    dest = OUT / "targetfinder/IMR90.pairs.csv.gz"
    dest.parent.mkdir(parents=True, exist_ok=True)
    _gzip([_checked(source / name, sha256).read_bytes()], dest)
    print(f"wrote {dest.relative_to(OUT)}")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    source = Path(sys.argv[1])
    copy_files(source)
    cut_pilot_head(source)
    cut_annotations(source)
    gzip_pairs(source)


if __name__ == "__main__":
    main()
