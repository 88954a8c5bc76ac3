import numpy as np
import pandas as pd
import pytest

from epitensor._utils import EpitensorError
from epitensor.genome import (
    Layout,
    chrom_sizes,
    n_bins,
    natural_sort,
    parse_region,
    read_bed,
    read_chrom_sizes,
)


def test_chrom_sizes_of_bundled_builds():
    hg19 = chrom_sizes("hg19")
    hg38 = chrom_sizes("hg38")
    mm10 = chrom_sizes("mm10")
    assert hg19["chr1"] == 249_250_621
    assert hg38["chr1"] == 248_956_422
    assert mm10["chr19"] == 61_431_566
    assert list(hg19.index[:3]) == ["chr1", "chr2", "chr3"]
    assert hg19.index.get_loc("chr10") > hg19.index.get_loc("chr9")


def test_chrom_sizes_from_file(tmp_path):
    path = tmp_path / "tiny.chrom.sizes"
    path.write_text("chr10\t500\nchr2\t100\nchrX\t50\n")
    sizes = chrom_sizes(path)
    assert list(sizes.index) == ["chr2", "chr10", "chrX"]
    assert sizes["chr10"] == 500


def test_chrom_sizes_errors(tmp_path):
    with pytest.raises(EpitensorError, match="invalid genome"):
        chrom_sizes("hg42")
    bad = tmp_path / "bad.sizes"
    bad.write_text("chr1\t-5\n")
    with pytest.raises(EpitensorError, match="positive"):
        read_chrom_sizes(bad)
    with pytest.raises(EpitensorError, match="not found"):
        read_chrom_sizes(tmp_path / "missing.sizes")


def test_natural_sort_and_bins():
    assert natural_sort(["chr10", "chrX", "chr2", "chrM", "chr1"]) == [
        "chr1",
        "chr2",
        "chr10",
        "chrX",
        "chrM",
    ]
    assert n_bins(100) == 4
    assert n_bins(101) == 5
    assert n_bins(1000, resolution=200) == 5


def test_parse_region_forms_and_errors():
    sizes = chrom_sizes("hg19")
    assert parse_region("chr1:1,000-2,000", sizes) == ("chr1", 1000, 2000)
    assert parse_region("chr2:1.5k-2M") == ("chr2", 1500, 2_000_000)
    assert parse_region("chr21", sizes) == ("chr21", 0, 48_129_895)
    with pytest.raises(EpitensorError, match="unknown chromosome 'chrQ'"):
        parse_region("chrQ:1-2", sizes)
    with pytest.raises(EpitensorError, match="must be below"):
        parse_region("chr1:500-100", sizes)
    with pytest.raises(EpitensorError, match="exceeds the length"):
        parse_region("chr21:0-60000000", sizes)
    with pytest.raises(EpitensorError, match="expected chr:start-end"):
        parse_region("chr1:abc")
    with pytest.raises(EpitensorError, match="needs sizes"):
        parse_region("chr1")


def test_read_bed_real_pilot_regions(shared_data):
    bed = read_bed(shared_data / "roadmap-pilot" / "encode_pilot_hg19.bed")
    assert len(bed) == 44
    assert bed.iloc[0].to_dict() == {
        "chrom": "chr1",
        "start": 151158060,
        "end": 151658060,
        "name": "ENr231",
    }


def test_read_bed_rejects_inverted_intervals(tmp_path):
    path = tmp_path / "bad.bed"
    path.write_text("chr1\t100\t50\nchr1\t10\t20\n")
    with pytest.raises(EpitensorError, match="not below ends for 1 intervals"):
        read_bed(path)


def test_whole_genome_layout():
    sizes = pd.Series({"chr1": 1000, "chr2": 260})
    layout = Layout.from_chrom_sizes(sizes)
    assert layout.axes == ["chr1", "chr2"]
    assert layout.axis_lengths == {"chr1": 40, "chr2": 11}
    assert layout.is_whole_genome
    hits = layout.locate("chr2", 30, 100)
    assert hits.to_dict("records") == [
        {"axis": "chr2", "axis_start": 1, "axis_end": 4, "first_bin": 1}
    ]


def test_region_layout_concatenates_in_natural_order():
    bed = pd.DataFrame(
        {"chrom": ["chr10", "chr2", "chr2"], "start": [0, 500, 100], "end": [50, 560, 150]}
    )
    layout = Layout.from_bed(bed, name="test")
    assert layout.axes == ["test"]
    regions = layout.regions
    assert list(regions.chrom) == ["chr2", "chr2", "chr10"]
    assert list(regions.start) == [100, 500, 0]
    # [100, 150) covers bins 4, 5; [500, 560) covers 20, 21, 22; [0, 50) covers 0, 1
    assert list(regions.n_bins) == [2, 3, 2]
    assert list(regions.offset) == [0, 2, 5]
    chrom_index, bins = layout.genome_bins("test")
    assert list(bins) == [4, 5, 20, 21, 22, 0, 1]
    assert list(regions.chrom.to_numpy()[chrom_index]) == ["chr2"] * 5 + ["chr10"] * 2


def test_pilot_layout_matches_table(shared_data):
    table = pd.read_csv(shared_data / "roadmap-pilot" / "avocado_pilot_layout_hg19.tsv", sep="\t")
    layout = Layout.from_avocado_table(
        shared_data / "roadmap-pilot" / "avocado_pilot_layout_hg19.tsv", n_positions=1_126_469
    )
    assert layout.axis_lengths == {"pilot": 1_126_469}
    assert len(layout.regions) == 42
    # ENm001 (chr7) starts at array offset 384612 and chromosome bin 4632420
    hit = layout.locate("chr7", 4632420 * 25, 4632420 * 25 + 100)
    assert hit.axis_start.tolist() == [384612] and hit.axis_end.tolist() == [384616]
    chrom_index, bins = layout.genome_bins("pilot")
    assert bins[-1] == -1 and chrom_index[-1] == -1
    assert (bins[:-1] >= 0).all()
    assert int(table.n_bins.sum()) == 1_126_468


def test_layout_round_trips_through_dict():
    layout = Layout.from_bed(
        pd.DataFrame({"chrom": ["chr1", "chr3"], "start": [0, 100], "end": [1000, 400]})
    )
    again = Layout.from_dict(layout.to_dict())
    pd.testing.assert_frame_equal(again.regions, layout.regions)
    assert again.axis_lengths == layout.axis_lengths


def test_layout_validation_reports_overlap_and_overflow():
    regions = pd.DataFrame(
        {
            "axis": ["a", "a"],
            "chrom": ["chr1", "chr1"],
            "start": [0, 0],
            "end": [100, 100],
            "name": ["x", "y"],
            "offset": [0, 2],
            "first_bin": [0, 0],
            "n_bins": [4, 4],
        }
    )
    with pytest.raises(EpitensorError, match="1 regions overlap on axis 'a'"):
        Layout(regions, {"a": 6})
    with pytest.raises(EpitensorError, match="extend past the end"):
        Layout(regions.iloc[[0]], {"a": 3})
    with pytest.raises(EpitensorError, match="unknown axes"):
        Layout(regions.iloc[[0]], {"b": 10})


def test_mask_from_intervals_on_pilot_layout(shared_data):
    layout = Layout.from_avocado_table(
        shared_data / "roadmap-pilot" / "avocado_pilot_layout_hg19.tsv", n_positions=1_126_469
    )
    # 60 bp starting mid-bin inside ENr231 touches 3 bins; a chr3 interval misses every region
    start = 6046322 * 25 + 10
    intervals = pd.DataFrame(
        {"chrom": ["chr1", "chr3"], "start": [start, 1000], "end": [start + 60, 5000]}
    )
    mask = layout.mask_from_intervals(intervals, "pilot")
    assert mask.sum() == 3
    assert np.flatnonzero(mask).tolist() == [0, 1, 2]


def test_with_axes_hands_the_covered_bins_to_the_new_axes():
    sizes = pd.Series({"chr1": 10_000, "chr2": 5_000})
    regions = Layout.from_bed(
        pd.DataFrame({"chrom": ["chr1", "chr2"], "start": [1_000, 500], "end": [2_000, 1_000]}),
        name="train",
    )
    genome = Layout.from_chrom_sizes(sizes)
    merged = regions.with_axes(genome, ["chr1"])
    assert merged.axis_lengths == {"train": 60, "chr1": 400}
    # chr1 now lies on its own axis only; chr2 keeps its training region.
    hit = merged.locate("chr1", 1_500, 1_525)
    assert list(hit.axis) == ["chr1"] and int(hit.axis_start.iloc[0]) == 60
    hit = merged.locate("chr2", 500, 525)
    assert list(hit.axis) == ["train"] and int(hit.axis_start.iloc[0]) == 40
    with pytest.raises(EpitensorError, match="bp bins"):
        regions.with_axes(Layout.from_chrom_sizes(sizes, resolution=50), ["chr1"])
