"""The ENCODE pilot regions of hg19 and their annotations, as bundled with the package."""

from __future__ import annotations

from pathlib import Path

from epitensor._utils import package_data
from epitensor.genome.coordinates import Layout

#: Positions of the bundled pilot-region layout (the last one no region covers).
ROADMAP_PILOT_POSITIONS = 1_126_469

__all__ = ["ROADMAP_PILOT_POSITIONS", "pilot_annotations_dir", "pilot_layout", "pilot_regions_bed"]


def pilot_layout() -> Layout:
    """The ENCODE pilot-region layout of the bundled sample (hg19, one axis ``"pilot"``).

    The 42 autosomal pilot regions are concatenated in numeric chromosome
    order; 1,126,469 positions, the last of which no region covers.
    """
    return Layout.from_avocado_table(
        package_data("roadmap_pilot_layout_hg19.tsv"), n_positions=ROADMAP_PILOT_POSITIONS
    )


def pilot_regions_bed() -> Path:
    """Path of the 44 ENCODE pilot regions (hg19 BED) shipped with the package."""
    return package_data("encode_pilot_hg19.bed")


def pilot_annotations_dir() -> Path:
    """Folder of hg19 annotations cut to the pilot regions (same formats as their sources).

    Holds ``gencode.v19.TSS.notlow.gff.gz`` (GENCODE v19 TSS),
    ``RefSeqGene.hg19.bed.gz`` (RefSeq gene bodies), ``E116_chromhmm25.bed.gz``
    (Roadmap 25-state ChromHMM of GM12878) and ``hg19-blacklist.v2.bed.gz``
    (ENCODE blacklist v2), each restricted to the pilot regions +- 5 kb by
    ``scripts/make_pilot_annotations.py``.
    """
    return package_data("pilot_annotations_hg19")
