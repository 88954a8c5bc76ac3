"""The bigWig encoder: files that pybigtools and pyBigWig read back exactly, zooms that summarise."""

from __future__ import annotations

import numpy as np
import pybigtools
import pyBigWig
import pytest

from epitensor._utils import EpitensorError
from epitensor.io.bigwig import ITEMS_PER_SLOT, BigWigEncoder, zoom_reductions
from epitensor.store.datasets import roadmap_pilot_arrays

SIZES = {"chr2": 1_000_010, "chr10": 500_000, "chrM": 16_571}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Real pilot signal as three runs: chr10 with a gap (two blocks), all of chr2 (last bin 10 bp)."""
    signal = np.sinh(roadmap_pilot_arrays()[("E003", "H3K4me3")]).astype(np.float32)
    path = tmp_path_factory.mktemp("bigwig") / "track.bw"
    encoder = BigWigEncoder(path, SIZES)
    runs = {("chr10", 0): signal[:4000], ("chr10", 250_000): signal[4000:14000],
            ("chr2", 0): signal[20000:60001]}  # fmt: skip
    encoder.add("chr10", 0, runs[("chr10", 0)])
    encoder.add("chr10", 250_000, runs[("chr10", 250_000)][:3000])  # blocks that split a section
    encoder.add("chr10", 325_000, runs[("chr10", 250_000)][3000:])
    values = runs[("chr2", 0)]
    for lo in range(0, len(values), 16_384):
        hi = min(len(values), lo + 16_384)
        encoder.add("chr2", lo * 25, values[lo:hi], end=min(hi * 25, SIZES["chr2"]))
    encoder.close()
    return path, runs


def _end(chrom, start, values):
    return min(start + 25 * len(values), SIZES[chrom])


def test_both_readers_read_every_bin_back_exactly(written):
    path, runs = written
    with pybigtools.open(str(path)) as reader, pyBigWig.open(str(path)) as other:
        written_to = {c: SIZES[c] for c in ("chr2", "chr10")}  # chrM has no bins: not listed
        assert reader.chroms() == other.chroms() == written_to
        for (chrom, start), values in runs.items():
            end = _end(chrom, start, values)
            for records in (
                list(reader.records(chrom, start, end)),
                other.intervals(chrom, start, end),
            ):
                assert np.array_equal(np.array([r[2] for r in records], np.float32), values)
                assert records[0][0] == start and records[-1][1] == end
                starts = np.array([r[0] for r in records])
                assert (np.diff(starts) == 25).all()  # one record per 25-bp bin, no gaps
        assert other.intervals("chr10", 100_000, 250_000) is None  # the gap holds nothing


def test_header_summary_and_zoom_levels(written):
    path, runs = written
    values = np.concatenate(list(runs.values())).astype(np.float64)
    bases = np.full(len(values), 25.0)
    bases[-1] = 10  # chr2's last bin
    with pyBigWig.open(str(path)) as reader:
        header = reader.header()
        assert header["nBasesCovered"] == bases.sum() == 25 * (len(values) - 1) + 10
        assert header["nLevels"] == len(zoom_reductions(SIZES, 25)) == 5  # 1,600 bp to 409,600
        info = pybigtools.open(str(path)).info()["summary"]
        assert info["sum"] == pytest.approx((values * bases).sum(), rel=1e-6)
        assert info["min"] == pytest.approx(values.min()) and info["max"] == pytest.approx(
            values.max()
        )
        # zoom-level summaries (exact=False reads the zooms) over windows the zooms align with
        values_chr2 = runs[("chr2", 0)][:32768].astype(np.float64)  # 819,200 bp: 8 x 102,400
        for n_bins in (8, 32, 128):
            approx = reader.stats("chr2", 0, 819_200, type="mean", nBins=n_bins)
            np.testing.assert_allclose(approx, values_chr2.reshape(n_bins, -1).mean(1), rtol=1e-4)
            top = reader.stats("chr2", 0, 819_200, type="max", nBins=n_bins)
            np.testing.assert_allclose(top, values_chr2.reshape(n_bins, -1).max(1), rtol=1e-6)
        with pybigtools.open(str(path)) as other:
            means = other.values(
                "chr2", 0, 819_200, bins=32, summary="mean", exact=False, fillna=None
            )
        np.testing.assert_allclose(means, values_chr2.reshape(32, -1).mean(1), rtol=1e-4)


def test_sections_are_at_most_one_slot(tmp_path):
    """A long run is cut into sections of ITEMS_PER_SLOT bins; the index finds each."""
    values = np.arange(3 * ITEMS_PER_SLOT + 5, dtype=np.float32)
    encoder = BigWigEncoder(tmp_path / "x.bw", {"chr1": 10_000_000})
    encoder.add("chr1", 1000, values)
    encoder.close()
    with pybigtools.open(str(tmp_path / "x.bw")) as reader:
        got = reader.values("chr1", 1000 + 25 * 3000, 1000 + 25 * 3010, bins=10, fillna=None)
    np.testing.assert_array_equal(got, values[3000:3010])


def test_bad_input_is_refused(tmp_path):
    encoder = BigWigEncoder(tmp_path / "y.bw", SIZES)
    encoder.add("chr2", 0, np.ones(10, np.float32))
    with pytest.raises(EpitensorError, match="went back"):
        encoder.add("chr2", 100, np.ones(10, np.float32))
    encoder.add("chr10", 0, np.ones(10, np.float32))
    with pytest.raises(EpitensorError, match="one stretch"):
        encoder.add("chr2", 10_000, np.ones(10, np.float32))
    with pytest.raises(EpitensorError, match="not among"):
        encoder.add("chr7", 0, np.ones(10, np.float32))
    with pytest.raises(EpitensorError, match="do not fit"):
        encoder.add("chrM", 16_500, np.ones(10, np.float32))
    encoder.abort()
    assert not (tmp_path / "y.bw").exists()


def test_a_deep_index_finds_every_section(tmp_path, monkeypatch):
    """Nodes of 4 children (readers take the node size from the file): a 4-level R-tree."""
    import epitensor.io.bigwig as bigwig

    monkeypatch.setattr(bigwig, "INDEX_BLOCK", 4)
    n = 90  # 90 one-bin sections: 23 leaves, 6 and 2 nodes above them, then the root
    values = np.random.default_rng(1).random(n, dtype=np.float32)
    encoder = BigWigEncoder(tmp_path / "deep.bw", {"chr1": 100_000, "chr2": 100_000})
    for k in range(n):
        encoder.add("chr1" if k < 60 else "chr2", 100 * (k % 60), values[k : k + 1])
    encoder.close()
    with (
        pyBigWig.open(str(tmp_path / "deep.bw")) as reader,
        pybigtools.open(str(tmp_path / "deep.bw")) as other,
    ):
        for k in range(n):
            chrom, start = ("chr1" if k < 60 else "chr2"), 100 * (k % 60)
            got = list(reader.intervals(chrom, start, start + 25))
            assert got == [(start, start + 25, pytest.approx(values[k]))], k
            assert [r[2] for r in other.records(chrom, start, start + 25)] == [
                pytest.approx(values[k])
            ]
        assert len(reader.intervals("chr1")) == 60 and len(reader.intervals("chr2")) == 30
