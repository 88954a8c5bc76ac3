"""Annotations: strand-aware promoters, enhancer states, the blacklist, peaks on a layout."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from epitensor._utils import EpitensorError
from epitensor.evaluation import metrics
from epitensor.genome.annotations import (
    Annotations,
    enhancer_intervals,
    peak_mask,
    promoters,
    read_narrowpeak,
    read_tss,
)
from epitensor.genome.coordinates import Layout

# Two real lines of gencode.v19.TSS.notlow.gff.gz (GFF: 1-based, closed).
GENCODE_LINES = (
    "chr10\tGencode\tCapSite\t100011780\t100011780\t.\t+\t.\tgene_id ENSG00000230928.1 "
    "trlist ENST00000433374.1, trbiotlist antisense, confidence not_low gene_biotype antisense\n"
    "chr10\tGencode\tCapSite\t100028007\t100028007\t.\t-\t.\tgene_id ENSG00000138131.3 "
    "trlist ENST00000260702.3, trbiotlist protein_coding, confidence not_low "
    "gene_biotype protein_coding\n"
)


@pytest.fixture
def gencode(tmp_path):
    path = tmp_path / "tss.gff.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(GENCODE_LINES)
    return path


def test_read_tss_from_real_gencode_lines(gencode):
    tss = read_tss(gencode)
    assert tss.chrom.tolist() == ["chr10", "chr10"]
    # 1-based base 100011780 is 0-based base 100011779
    assert tss.pos.tolist() == [100011779, 100028006]
    assert tss.strand.tolist() == ["+", "-"]


def test_promoters_are_upstream_and_strand_aware(gencode):
    proms = promoters(read_tss(gencode))
    # + strand: the 2 kb before the TSS; - strand: the 2 kb after it (5' of the gene)
    assert proms.start.tolist() == [100011779 - 2000, 100028007]
    assert proms.end.tolist() == [100011779, 100028007 + 2000]
    assert (proms.end - proms.start == 2000).all()
    # clipped at the chromosome start
    near = promoters(pd.DataFrame({"chrom": ["chr1"], "pos": [500], "strand": ["+"]}))
    assert (near.start.iloc[0], near.end.iloc[0]) == (0, 500)


def test_promoters_on_a_layout(gencode):
    layout = Layout.from_bed(
        pd.DataFrame({"chrom": ["chr10"], "start": [100_000_000], "end": [100_040_000]}),
        name="r",
    )
    mask = layout.mask_from_intervals(promoters(read_tss(gencode)), "r")
    assert mask.shape == (1600,)
    # + promoter [100009779, 100011779): bins 4000391..4000471 -> positions 391..471;
    # - promoter [100028007, 100030007): bins 4001120..4001200 -> positions 1120..1200
    expected = np.zeros(1600, bool)
    expected[391:472] = True
    expected[1120:1201] = True
    np.testing.assert_array_equal(mask, expected)


def test_read_tss_from_bed(tmp_path):
    bed = tmp_path / "tss.bed"
    bed.write_text("chr1\t100\t101\ta\t0\t+\nchr1\t5000\t5001\tb\t0\t-\n")
    tss = read_tss(bed)
    assert tss.pos.tolist() == [100, 5000]
    unstranded = tmp_path / "tss3.bed"
    unstranded.write_text("chr1\t100\t101\n")
    with pytest.raises(EpitensorError, match="need a strand"):
        read_tss(unstranded)
    dotted = tmp_path / "dot.bed"
    dotted.write_text("chr1\t100\t101\ta\t0\t.\n")
    with pytest.raises(EpitensorError, match="no strand"):
        read_tss(dotted)
    with pytest.raises(EpitensorError, match="not found"):
        read_tss(tmp_path / "missing.gff")


def test_enhancer_states(tmp_path):
    path = tmp_path / "hmm.bed"
    path.write_text(
        "chr1\t0\t200\t25_Quies\nchr1\t200\t400\t13_EnhA1\nchr1\t400\t600\t2_PromU\n"
        "chr1\t600\t800\t9_TxReg\nchr1\t800\t1000\t10_TxEnh5'\n"
    )
    enhancers = enhancer_intervals(path)
    assert enhancers.name.tolist() == ["13_EnhA1", "10_TxEnh5'"]
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t0\t200\t25_Quies\n")
    with pytest.raises(EpitensorError, match="no segment"):
        enhancer_intervals(bad)


def test_bundled_annotations_on_the_pilot_layout(pilot_store):
    annotations = Annotations.from_directory()
    masks = annotations.masks(pilot_store.layout, "pilot")
    n = pilot_store.axis_length("pilot")
    for name in ("promoters", "genes", "enhancers", "blacklist"):
        assert masks[name].shape == (n,) and masks[name].dtype == bool
    # the real annotations cover sensible shares of the pilot regions
    assert 0.05 < masks["promoters"].mean() < 0.2
    assert 0.3 < masks["genes"].mean() < 0.8
    assert 0.02 < masks["enhancers"].mean() < 0.2
    assert 0 < masks["blacklist"].sum() < 5000
    # the blacklist mask lies exactly on the bins of the blacklisted intervals
    blacklist = annotations.blacklist
    located = pd.concat(
        [pilot_store.layout.locate(r.chrom, r.start, r.end) for r in blacklist.itertuples()]
    )
    expected = np.zeros(n, bool)
    for row in located.itertuples():
        expected[row.axis_start : row.axis_end] = True
    np.testing.assert_array_equal(masks["blacklist"], expected)
    np.testing.assert_array_equal(annotations.keep(pilot_store.layout, "pilot"), ~expected)
    assert set(annotations.regions(pilot_store.layout, "pilot")) == {
        "promoters",
        "genes",
        "enhancers",
    }
    # H3K4me3 is stronger in promoters than elsewhere (0.52 vs 0.28: coordinates line up)
    signal = pilot_store.read_track("E116", "H3K4me3")
    assert signal[masks["promoters"]].mean() > 1.5 * signal[~masks["promoters"]].mean()


def test_from_directory_errors(tmp_path):
    with pytest.raises(EpitensorError, match="not found"):
        Annotations.from_directory(tmp_path / "nowhere")
    with pytest.raises(EpitensorError, match="no known annotation"):
        Annotations.from_directory(tmp_path)


def test_observed_e017_h3k4me3_against_imr90_macs2_peaks(pilot_store, test_data):
    """Sanity check of the peak metrics and of the coordinates.

    The observed E017 H3K4me3 track, thresholded at -log10 p = 2, against
    Roadmap's own MACS2 narrow peaks of IMR-90 (E017) mapped onto the pilot
    layout: precision 0.934 and recall 0.937 outside the blacklist.
    """
    path = test_data / "annotations" / "E017-H3K4me3.narrowPeak.gz"
    assert len(read_narrowpeak(path)) == 42458
    layout = pilot_store.layout
    peaks = peak_mask(path, layout, "pilot")
    observed = pilot_store.read_track("E017", "H3K4me3")
    keep = Annotations.from_directory().keep(layout, "pilot")
    scores = metrics.peak_scores(observed, observed, mask=keep, peaks=peaks)
    assert scores["precision"] > 0.9 and scores["recall"] > 0.9
    # shifting the peaks by 2 kb (80 bins) destroys the agreement: the check has teeth
    shifted = metrics.peak_scores(observed, observed, mask=keep, peaks=np.roll(peaks, 80))
    assert shifted["precision"] < 0.5
