"""Pairwise relationships between marks: hand-worked correlations and the real pilot store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from epitensor._utils import EpitensorError
from epitensor.evaluation.relationships import (
    Relationship,
    gene_promoters,
    pairwise_summary,
    pairwise_table,
    pairwise_wide,
    write_pairwise,
)
from epitensor.genome.annotations import Annotations
from epitensor.genome.coordinates import Layout, chrom_sizes
from epitensor.store.compendium import Store

N_BINS = 200
PROMOTER_REL = Relationship("H3K4me3", "promoter", "H3K27me3", "promoter", "negative")
GENE_REL = Relationship("H3K4me3", "promoter", "H3K36me3", "gene body", "positive")


def _frame(rows):
    return pd.DataFrame(rows, columns=["chrom", "start", "end"])


@pytest.fixture
def tiny_store(tmp_path):
    """One 200-bin region chr1:[0, 5000) with three tracks of cell type C, written by hand.

    Promoters P1..P4 are bins 0-3, 4-7, 8-11, 12-15. H3K4me3 is 1, 2, 3, 4 on
    them, H3K27me3 is 2, 1, 4, 3. Bin 0 holds 100 in H3K4me3 but is
    blacklisted, so P1's mean stays 1. A fifth promoter [4950, 5100) has
    only 2 of its 6 bins on the layout and is left out.
    """
    regions = pd.DataFrame(
        {
            "axis": ["a"],
            "chrom": ["chr1"],
            "start": [0],
            "end": [N_BINS * 25],
            "name": ["r"],
            "offset": [0],
            "first_bin": [0],
            "n_bins": [N_BINS],
        }
    )
    layout = Layout(regions, {"a": N_BINS}, 25, "tiny")
    store = Store.create(tmp_path / "tiny.zarr", layout, chrom_sizes("hg19"), genome="hg19")
    k4 = np.zeros(N_BINS, np.float32)
    k27 = np.zeros(N_BINS, np.float32)
    for i, (a, b) in enumerate([(1, 2), (2, 1), (3, 4), (4, 3)]):
        k4[4 * i : 4 * i + 4] = a
        k27[4 * i : 4 * i + 4] = b
    k4[0] = 100.0
    k4[198:] = 7.0  # on the partly covered fifth promoter: would change r if it counted
    k36 = np.zeros(N_BINS, np.float32)
    k36[20:40] = 1.0  # gene G1 body, bins 20-39
    k36[60:80] = 3.0  # gene G2 body, bins 60-79
    k36[100:120] = 2.0  # gene G3 body, bins 100-119
    for assay, values in (("H3K4me3", k4), ("H3K27me3", k27), ("H3K36me3", k36)):
        store.add_track("C", assay, {"a": values})
    return Store.open(tmp_path / "tiny.zarr")


@pytest.fixture
def tiny_annotations():
    promoters = _frame(
        [("chr1", 0, 100), ("chr1", 100, 200), ("chr1", 200, 300), ("chr1", 300, 400)]
        + [("chr1", 4950, 5100)]
    )
    return Annotations(promoters=promoters, blacklist=_frame([("chr1", 0, 25)]), source="hand")


def test_promoter_relationship_by_hand(tiny_store, tiny_annotations):
    """Observed r of (1, 2, 3, 4) and (2, 1, 4, 3): deviations (-1.5, -.5, .5, 1.5) and
    (-.5, -1.5, 1.5, .5), sum of products 3, sums of squares 5 each: r = 3 / 5 = 0.6.
    The method imputes H3K27me3 as 4, 3, 2, 1: r = -1, |error| = 1.6.
    """
    imputed = np.zeros(N_BINS, np.float32)
    for i, v in enumerate([4, 3, 2, 1]):
        imputed[4 * i : 4 * i + 4] = v
    table = pairwise_table(
        {"m": {("C", "H3K27me3"): imputed}}, tiny_store, tiny_annotations, [PROMOTER_REL]
    )
    observed = table[table.method == "observed"].iloc[0]
    assert observed.n_elements == 4
    assert observed.pearson == pytest.approx(0.6)
    assert observed.spearman == pytest.approx(0.6)
    method = table[table.method == "m"].iloc[0]
    assert method.imputed == "H3K27me3"
    assert method.pearson == pytest.approx(-1.0)
    assert method.abs_error == pytest.approx(1.6)
    summary = pairwise_summary(table)
    assert summary.loc[PROMOTER_REL.name, "observed r"] == pytest.approx(0.6)
    assert summary.loc[PROMOTER_REL.name, "m"] == pytest.approx(1.6)
    assert list(pairwise_wide(table).columns) == ["observed", "m"]


def test_promoter_to_gene_body_by_hand(tiny_store, tiny_annotations):
    """Three + strand genes start where P1, P2, P3 end (100, 200, 300 bp), so those are
    their promoters (H3K4me3 means 1, 2, 3). Their bodies span bins 4-39, 8-79 and
    12-119; the expected r is worked from the H3K36me3 means over those bins.
    """
    genes = _frame([("chr1", 100, 1000), ("chr1", 200, 2000), ("chr1", 300, 3000)])
    paired = gene_promoters(genes, tiny_annotations.promoters)
    assert list(paired.promoter_end) == [100, 200, 300]
    assert list(paired.promoter_start) == [0, 100, 200]
    annotations = Annotations(
        promoters=tiny_annotations.promoters,
        genes=genes,
        blacklist=tiny_annotations.blacklist,
    )
    table = pairwise_table({}, tiny_store, annotations, [GENE_REL])
    row = table.iloc[0]
    # bodies: G1 bins 4-39 mean (4*2+4*3+8*0+20*1)/36, G2 bins 8-79, G3 bins 12-119
    k36 = tiny_store.read_track("C", "H3K36me3", "a").astype(np.float64)
    bodies = [k36[4:40].mean(), k36[8:80].mean(), k36[12:120].mean()]
    expected = np.corrcoef([1, 2, 3], bodies)[0, 1]
    assert row.n_elements == 3
    assert row.pearson == pytest.approx(expected)


def test_gene_promoters_minus_strand_and_ties():
    """A - strand gene [1000, 2000) owns the promoter [2000, 4000) of its TSS at 1999."""
    promoters = _frame([("chr1", 2000, 4000), ("chr1", 0, 500)])
    genes = _frame([("chr1", 1000, 2000), ("chr1", 5000, 6000)])
    paired = gene_promoters(genes, promoters)
    assert len(paired) == 1  # the second gene has no promoter near either end
    assert (paired.promoter_start.iloc[0], paired.promoter_end.iloc[0]) == (2000, 4000)
    # a promoter ending at the start and one starting at the end: ambiguous strand, dropped
    tie = _frame([("chr1", 900, 1000), ("chr1", 2000, 2100)])
    assert gene_promoters(_frame([("chr1", 1000, 2000)]), tie).empty


def test_pairwise_raises(tiny_store, tiny_annotations):
    with pytest.raises(EpitensorError, match="reserved"):
        pairwise_table({"observed": {}}, tiny_store, tiny_annotations, [PROMOTER_REL])
    short = {"m": {("C", "H3K4me3"): np.zeros(10, np.float32)}}
    with pytest.raises(EpitensorError, match="positions"):
        pairwise_table(short, tiny_store, tiny_annotations, [PROMOTER_REL])


def test_missing_assay_or_annotation_is_skipped(tiny_store, tiny_annotations):
    rna = Relationship("H3K36me3", "gene body", "RNA-seq", "gene body", "positive")
    table = pairwise_table({}, tiny_store, tiny_annotations, [rna, GENE_REL])
    assert table.empty
    assert "no RNA-seq track" in table.attrs["skipped"][rna.name]
    assert table.attrs["skipped"][GENE_REL.name] == "no gene bodies in the annotations"


def test_pilot_store_relationships(pilot_store, tmp_path):
    """On the real sample: promoter H3K4me3 follows gene-body H3K36me3 in every cell type,
    and promoter H3K27me3 opposes H3K36me3 in all but the ESC line (bivalent promoters).
    """
    held_out = ("E116", "H3K27me3")
    # a method that imputes E116 H3K27me3 as its H3K4me3: the negative relationship flips
    copied = {"copy": {held_out: pilot_store.read_track("E116", "H3K4me3", "pilot")}}
    table = pairwise_table(copied, pilot_store)
    observed = table[table.method == "observed"].set_index(["relationship", "celltype"])
    positive = observed.loc["H3K4me3 promoter ~ H3K36me3 gene body"].pearson
    assert (positive > 0.25).all() and observed.n_elements.min() > 100
    negative = observed.loc["H3K27me3 promoter ~ H3K36me3 gene body"].pearson
    assert (negative.drop("E003") < -0.1).all()
    copy = table[table.method == "copy"]
    assert set(copy.celltype) == {"E116"}
    assert set(copy.relationship) == {
        "H3K4me3 promoter ~ H3K27me3 promoter",
        "H3K4me1 promoter ~ H3K27me3 promoter",
        "H3K27me3 promoter ~ H3K36me3 gene body",
    }
    flipped = copy.set_index("relationship").loc["H3K4me3 promoter ~ H3K27me3 promoter"]
    assert flipped.pearson == pytest.approx(1.0)
    assert "RNA-seq" in next(iter(table.attrs["skipped"]))
    written = write_pairwise(table, tmp_path)
    text = (tmp_path / "pairwise.md").read_text()
    assert all(p.stat().st_size > 0 for p in written)
    assert "| H3K4me3 promoter ~ H3K27me3 promoter |" in text and "Not scored" in text
