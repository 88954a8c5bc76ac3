import numpy as np
import pandas as pd
import pytest

from epitensor._utils import EpitensorError
from epitensor.genome.coordinates import (
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


def test_read_bed_real_pilot_regions(test_data):
    bed = read_bed(test_data / "roadmap-pilot" / "encode_pilot_hg19.bed")
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


def test_pilot_layout_matches_table(test_data):
    table = pd.read_csv(test_data / "roadmap-pilot" / "avocado_pilot_layout_hg19.tsv", sep="\t")
    layout = Layout.from_avocado_table(
        test_data / "roadmap-pilot" / "avocado_pilot_layout_hg19.tsv", n_positions=1_126_469
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


def test_mask_from_intervals_on_pilot_layout(test_data):
    layout = Layout.from_avocado_table(
        test_data / "roadmap-pilot" / "avocado_pilot_layout_hg19.tsv", n_positions=1_126_469
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


def _runs_by_bin(layout, intervals):
    """Brute-force ``locate_many``: every bin of every interval looked up on its own.

    The lookup table is built from :meth:`Layout.genome_bins` (axis position to
    chromosome bin), the inverse of the mapping ``locate_many`` computes; bins
    that follow on in one region are then joined into runs.
    """
    res = layout.resolution
    parts = []
    for axis in layout.axes:
        region, bins = layout.genome_bins(axis)
        held = np.flatnonzero(bins >= 0)
        chrom = layout.regions.chrom.to_numpy()[region[held]]
        parts.append(
            pd.DataFrame(
                {"chrom": chrom, "bin": bins[held], "region": region[held], "position": held}
            ).assign(axis=axis)
        )
    table = {c: g for c, g in pd.concat(parts).sort_values("bin").groupby("chrom")}
    rows = []
    for i, (chrom, start, end) in enumerate(intervals.itertuples(index=False)):
        if chrom not in table:
            continue
        known = table[chrom]
        bins = np.arange(start // res, -(-end // res))
        at = np.minimum(np.searchsorted(known.bin.to_numpy(), bins), len(known) - 1)
        hit = known.iloc[at[known.bin.to_numpy()[at] == bins]]
        for region, run in hit.groupby("region"):
            assert (np.diff(run.position) == 1).all()
            rows.append(
                (
                    i,
                    region,
                    run.axis.iloc[0],
                    run.position.iloc[0],
                    run.position.iloc[-1] + 1,
                    run.bin.iloc[0],
                )
            )
    columns = ["interval", "region", "axis", "axis_start", "axis_end", "first_bin"]
    expected = pd.DataFrame(rows, columns=columns).astype(
        {c: "int64" for c in columns if c != "axis"}
    )
    return expected.sort_values(["interval", "axis_start", "region"], ignore_index=True)


def _edge_intervals(layout, n, seed):
    """Random intervals around region edges (bp and bin edges), lengths 0 bp to 40 kb."""
    rng = np.random.default_rng(seed)
    regions = layout.regions
    pick = rng.integers(0, len(regions), n)
    res = layout.resolution
    edges = np.stack(
        [
            regions.start.to_numpy(),
            regions.end.to_numpy(),
            regions.first_bin.to_numpy() * res,
            (regions.first_bin + regions.n_bins).to_numpy() * res,
        ]
    )
    anchor = edges[rng.integers(0, 4, n), pick]
    near = rng.choice([-50, -25, -1, 0, 1, 25], n)
    start = anchor + np.where(rng.random(n) < 0.5, near, rng.integers(-2_000, 2_000, n))
    length = rng.choice([0, 1, 24, 25, 26, 300, 5_000, 40_000], n)
    chrom = regions.chrom.to_numpy()[pick]
    chrom = np.where(rng.random(n) < 0.05, "chrX", chrom)  # the pilot layout lacks chrX
    return pd.DataFrame({"chrom": chrom, "start": start, "end": start + length})


def test_locate_many_matches_a_per_bin_lookup():
    from epitensor.genome.pilot import pilot_layout

    layout = pilot_layout()
    res = layout.resolution
    regions = layout.regions
    first_bp = regions.first_bin.to_numpy() * res
    last_bp = (regions.first_bin + regions.n_bins).to_numpy() * res
    # consecutive regions of one chromosome, and an interval spanning both
    pairs = np.flatnonzero(regions.chrom.to_numpy()[1:] == regions.chrom.to_numpy()[:-1])
    special = pd.DataFrame(
        {
            "chrom": ["chr1", "chr1", "chr1", "chrX", "chr3"] + list(regions.chrom[pairs]),
            # touching the first bin from the left, the last bin from the right,
            # an empty interval on a bin edge inside, a missing chromosome, a gap
            "start": [first_bp[0] - 100, last_bp[0], first_bp[0] + 250, 1_000, 1_000]
            + list(regions.end[pairs] - 30),
            "end": [first_bp[0], last_bp[0] + 100, first_bp[0] + 250, 5_000, 5_000]
            + list(regions.start[pairs + 1] + 30),
        }
    )
    intervals = pd.concat([special, _edge_intervals(layout, 3_000, seed=0)], ignore_index=True)
    runs = layout.locate_many(intervals)
    pd.testing.assert_frame_equal(runs, _runs_by_bin(layout, intervals))
    assert runs.interval.is_monotonic_increasing
    assert not set(runs.interval) & {0, 1, 2, 3, 4}
    spans = runs[runs.interval.between(5, len(special) - 1)]
    spans = spans.groupby("interval").region.apply(list)
    assert spans.tolist() == [[k, k + 1] for k in pairs]
    assert runs.interval.nunique() > 1_000 and (runs.axis_end > runs.axis_start).all()
    # the random intervals do straddle edges and do miss the layout
    touched = -(-intervals.end // res) - intervals.start // res
    assert ((runs.axis_end - runs.axis_start) < touched[runs.interval].to_numpy()).sum() > 200
    assert len(intervals) - runs.interval.nunique() > 500


def test_locate_many_on_a_layout_with_added_axes():
    from epitensor.genome.pilot import pilot_layout

    pilot = pilot_layout()
    merged = pilot.with_axes(Layout.from_chrom_sizes(pd.Series({"chr21": 48_129_895})), ["chr21"])
    assert merged.axes == ["pilot", "chr21"]
    intervals = _edge_intervals(pilot, 1_000, seed=1)
    runs = merged.locate_many(intervals)
    pd.testing.assert_frame_equal(runs, _runs_by_bin(merged, intervals))
    on21 = runs[intervals.chrom.to_numpy()[runs.interval] == "chr21"]
    assert len(on21) > 10 and (on21.axis == "chr21").all()
    assert (on21.axis_start == on21.first_bin).all()
    # Layout.locate is the one-interval case, sorted by axis then position
    row = intervals.iloc[int(on21.interval.iloc[0])]
    hit = merged.locate(row.chrom, row.start, row.end)
    assert hit.to_dict("records") == on21[on21.interval == on21.interval.iloc[0]][
        ["axis", "axis_start", "axis_end", "first_bin"]
    ].to_dict("records")
