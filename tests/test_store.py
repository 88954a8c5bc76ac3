import numpy as np
import pandas as pd
import pytest

from epitensor._utils import EpitensorError
from epitensor.genome.coordinates import Layout
from epitensor.store.compendium import RegionView, Store
from epitensor.store.datasets import ROADMAP_ASSAYS, ROADMAP_CELLTYPES, roadmap_pilot_arrays
from epitensor.store.registry import open_store, store_reference

SIZES = pd.Series({"chr1": 100_000, "chr2": 60_000})


def _small_store(url, **kwargs) -> Store:
    layout = Layout.from_chrom_sizes(SIZES)
    return Store.create(url, layout, SIZES, genome="custom", position_chunk=1000, **kwargs)


def _values(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "chr1": rng.gamma(1.0, 1.0, 4000).astype(np.float32),
        "chr2": rng.gamma(1.0, 1.0, 2400).astype(np.float32),
    }


def test_create_add_read_round_trip(tmp_path):
    store = _small_store(tmp_path / "s.zarr")
    values = _values(0)
    row = store.add_track("A", "X", values, source="a.bw", md5="abc")
    assert row == 0
    store.add_track("B", "X", _values(1))
    store.add_track("A", "Y", _values(2))

    again = Store.open(tmp_path / "s.zarr")
    assert again.n_tracks == 3
    assert again.celltypes == ["A", "B"] and again.assays == ["X", "Y"]
    assert again.observed.loc["B", "Y"] == np.False_
    assert again.observed.loc["A", "Y"] == np.True_
    assert again.tracks.iloc[0].to_dict() == {
        "celltype": "A",
        "assay": "X",
        "source": "a.bw",
        "md5": "abc",
    }
    got = again.read_track("A", "X", "chr1", 100, 300)
    np.testing.assert_allclose(got, values["chr1"][100:300], rtol=1e-3, atol=1e-3)
    block = again.read_block("chr2", 2000, 2400)
    assert block.shape == (3, 400) and block.dtype == np.float32
    np.testing.assert_allclose(block[2], _values(2)["chr2"][2000:], rtol=1e-3, atol=1e-3)
    chosen = again.read_block("chr2", 0, 10, tracks=[2, 0])
    full = again.read_block("chr2", 0, 10)
    np.testing.assert_array_equal(chosen, full[[2, 0]])


def test_float32_store_is_exact(tmp_path):
    store = _small_store(tmp_path / "s32.zarr", dtype="float32")
    values = _values(3)
    store.add_track("A", "X", values)
    np.testing.assert_array_equal(store.read_track("A", "X", "chr1"), values["chr1"])


def test_add_track_errors_leave_store_unchanged(tmp_path):
    store = _small_store(tmp_path / "s.zarr")
    store.add_track("A", "X", _values(0))
    with pytest.raises(EpitensorError, match=r"already in store"):
        store.add_track("A", "X", _values(1))
    bad = _values(1)
    bad["chr2"] = bad["chr2"][:10]
    with pytest.raises(EpitensorError, match=r"axis 'chr2' has 10 values, expected 2400"):
        store.add_track("B", "X", bad)
    with pytest.raises(EpitensorError, match=r"no values for axes \['chr2'\]"):
        store.add_track("B", "X", {"chr1": _values(1)["chr1"]})
    again = Store.open(tmp_path / "s.zarr")
    assert again.track_names() == [("A", "X")]
    np.testing.assert_allclose(
        again.read_track("A", "X", "chr1"), _values(0)["chr1"], rtol=1e-3, atol=1e-3
    )
    # the rows left behind by the failed writes are reused by the next good one
    again = Store.open(tmp_path / "s.zarr", mode="r+")
    again.add_track("B", "X", _values(4))
    np.testing.assert_allclose(
        again.read_track("B", "X", "chr2"), _values(4)["chr2"], rtol=1e-3, atol=1e-3
    )


def test_store_errors(tmp_path):
    with pytest.raises(EpitensorError, match="store not found"):
        Store.open(tmp_path / "nothing.zarr")
    _small_store(tmp_path / "s.zarr")
    with pytest.raises(EpitensorError, match="already exists"):
        _small_store(tmp_path / "s.zarr")
    with pytest.raises(EpitensorError, match="invalid dtype"):
        _small_store(tmp_path / "t.zarr", dtype="int8")
    read_only = Store.open(tmp_path / "s.zarr")
    with pytest.raises(EpitensorError, match="read-only"):
        read_only.add_track("A", "X", _values(0))
    with pytest.raises(EpitensorError, match=r"track \(A, X\) is not in store"):
        read_only.read_track("A", "X", "chr1")
    with pytest.raises(EpitensorError, match="unknown axis"):
        read_only.read_block("chr9")
    with pytest.raises(EpitensorError, match="name one of"):
        read_only.read_track("A", "X")
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(EpitensorError, match="not an epitensor store"):
        Store.open(tmp_path / "plain.zarr")


def test_store_on_fsspec_memory_url():
    store = _small_store("memory://epitensor-test/s.zarr")
    store.add_track("A", "X", _values(5))
    again = Store.open("memory://epitensor-test/s.zarr")
    np.testing.assert_allclose(
        again.read_track("A", "X", "chr1", 0, 50), _values(5)["chr1"][:50], rtol=1e-3, atol=1e-3
    )


def test_pilot_store_holds_the_real_tracks(pilot_store, test_data):
    assert pilot_store.genome == "hg19"
    assert pilot_store.celltypes == ROADMAP_CELLTYPES
    assert pilot_store.assays == ROADMAP_ASSAYS
    assert pilot_store.axes == ["pilot"]
    assert pilot_store.observed.all().all()
    raw = np.load(test_data / "roadmap-pilot" / "E116.H3K4me3.pilot.arcsinh.npz")["arr_0"]
    stored = pilot_store.read_track("E116", "H3K4me3")
    assert stored.shape == raw.shape == (1_126_469,)
    # float16 storage: absolute error below 0.005 over the arcsinh range
    assert np.abs(stored - raw).max() < 0.005
    block = pilot_store.read_block("pilot", 50_000, 50_100)
    row = pilot_store.track_index("E116", "H3K4me3")
    np.testing.assert_array_equal(block[row], stored[50_000:50_100])


def test_summary_lists_tracks_and_size(pilot_store):
    text = pilot_store.summary()
    assert "25 observed of 5 cell types x 5 assays" in text
    assert "1,126,469 positions" in text
    assert "MB" in text
    assert "E117" in text and "H3K4me1" in text


def test_open_store_accepts_the_bundled_name(tmp_path, monkeypatch):
    monkeypatch.setenv("EPITENSOR_CACHE", str(tmp_path))
    store = open_store("roadmap-pilot")
    assert store.n_tracks == 25
    assert (tmp_path / "roadmap-pilot.zarr").is_dir()


def test_bundled_arrays_match_the_original_track(test_data):
    arrays = roadmap_pilot_arrays()
    assert len(arrays) == 25
    raw = np.load(test_data / "roadmap-pilot" / "E116.H3K4me3.pilot.arcsinh.npz")["arr_0"]
    assert np.abs(arrays[("E116", "H3K4me3")] - raw).max() < 0.005


def test_add_tracks_writes_a_block_like_add_track(tmp_path):
    one = _small_store(tmp_path / "one.zarr")
    many = _small_store(tmp_path / "many.zarr")
    arrays = [_values(seed) for seed in range(3)]
    names = [("A", "X"), ("B", "X"), ("A", "Y")]
    for name, values in zip(names, arrays):
        one.add_track(*name, values)
    rows = many.add_tracks(
        names, {axis: np.stack([v[axis] for v in arrays]) for axis in ("chr1", "chr2")}
    )
    assert rows == [0, 1, 2]
    assert many.track_names() == one.track_names()
    for axis in ("chr1", "chr2"):
        np.testing.assert_array_equal(many.read_block(axis), one.read_block(axis))
    with pytest.raises(EpitensorError, match="already in store"):
        many.add_tracks(
            [("A", "X")], {"chr1": arrays[0]["chr1"][None], "chr2": arrays[0]["chr2"][None]}
        )
    with pytest.raises(EpitensorError, match="expected"):
        many.add_tracks(
            [("C", "X")], {"chr1": arrays[0]["chr1"][None], "chr2": arrays[0]["chr1"][None]}
        )
    assert Store.open(tmp_path / "many.zarr").n_tracks == 3


def test_truncate_tracks_undoes_an_append_on_a_memory_store():
    """The rollback of a failed append to a store that has no folder to snapshot."""
    store = _small_store("memory://epitensor-test/truncate.zarr")
    arrays = [_values(seed) for seed in range(3)]
    store.add_track("A", "X", arrays[0])
    before = {axis: store.read_block(axis) for axis in ("chr1", "chr2")}
    store.add_tracks(
        [("B", "X"), ("A", "Y")],
        {axis: np.stack([v[axis] for v in arrays[1:]]) for axis in ("chr1", "chr2")},
    )
    assert store.n_tracks == 3
    store.truncate_tracks(1)
    again = Store.open("memory://epitensor-test/truncate.zarr")
    assert again.track_names() == [("A", "X")] and again.n_tracks == 1
    for axis in ("chr1", "chr2"):
        np.testing.assert_array_equal(again.read_block(axis), before[axis])
    again_rows = Store.open("memory://epitensor-test/truncate.zarr", mode="r+")
    again_rows.add_track("B", "X", arrays[1])  # the freed row takes a new track
    assert again_rows.track_names() == [("A", "X"), ("B", "X")]


# region views ---------------------------------------------------------------------------------


def test_region_view_reads_the_pilot_regions_from_chromosome_axes(by_chrom_store):
    """The ENCODE pilot BED over a store of chromosome axes gives the bundled arrays back."""
    from epitensor.genome.coordinates import Layout
    from epitensor.genome.pilot import pilot_layout, pilot_regions_bed
    from epitensor.store.compendium import RegionView

    bed = Layout.from_bed(pilot_regions_bed(), name="pilot")
    with pytest.warns(UserWarning, match="lack"):
        view = RegionView(by_chrom_store, bed)
    assert view.axes == ["pilot"] and list(view.layout.regions.chrom) == ["chr1", "chr4", "chr8"]
    assert view.axis_length("pilot") == int(view.layout.regions.n_bins.sum())
    assert view.track_names() == by_chrom_store.track_names()
    pilot = pilot_layout().regions.set_index("chrom")
    for region in view.layout.regions.itertuples():
        got = view.read_block("pilot", region.offset, region.offset + region.n_bins)
        source = pilot.loc[region.chrom]
        skip = region.first_bin - source.first_bin
        want = by_chrom_store.read_block(region.chrom, skip, skip + region.n_bins)
        np.testing.assert_array_equal(got, want)
    # a read across the boundary of two regions joins both
    edge = int(view.layout.regions.offset.iloc[1])
    across = view.read_block("pilot", edge - 3, edge + 2, tracks=[0, 5])
    before = view.read_block("pilot", edge - 3, edge, tracks=[0, 5])
    after = view.read_block("pilot", edge, edge + 2, tracks=[0, 5])
    np.testing.assert_array_equal(across, np.concatenate([before, after], axis=1))
    whole = view.read_block("pilot", edge - 3, edge + 2)
    np.testing.assert_array_equal(across, whole[[0, 5]])
    rows = np.array([7, 2, 2])  # chosen rows, in any order, read without the others
    chosen = view.read_block("pilot", 10, 90, tracks=rows)
    np.testing.assert_array_equal(chosen, view.read_block("pilot", 10, 90)[rows])
    source = by_chrom_store.read_block("chr4", 10, 90, tracks=rows)
    np.testing.assert_array_equal(source, by_chrom_store.read_block("chr4", 10, 90)[rows])
    track = view.read_track("E017", "H3K36me3", start=edge - 3, end=edge + 2)
    row = view.track_index("E017", "H3K36me3")
    np.testing.assert_array_equal(track, view.read_block("pilot", edge - 3, edge + 2)[row])
    with pytest.raises(EpitensorError, match="read-only"):
        view.add_track("E999", "H3K4me3", {"pilot": np.zeros(view.axis_length("pilot"))})


def test_region_view_refuses_regions_the_store_lacks(by_chrom_store):
    import pandas as pd

    from epitensor.genome.coordinates import Layout
    from epitensor.store.compendium import RegionView

    first = by_chrom_store.layout.axis_regions("chr4").iloc[0]
    end = (int(first.first_bin) + int(first.n_bins)) * 25
    past_end = pd.DataFrame({"chrom": ["chr4"], "start": [end - 500], "end": [end + 500]})
    with pytest.raises(EpitensorError, match=r"chr4:.*20 of its 40 bins are missing"):
        RegionView(by_chrom_store, Layout.from_bed(past_end))
    elsewhere = pd.DataFrame({"chrom": ["chr2"], "start": [0], "end": [1000]})
    with pytest.raises(EpitensorError, match="none of the regions"):
        RegionView(by_chrom_store, Layout.from_bed(elsewhere))
    with pytest.raises(EpitensorError, match="50-bp bins"):
        RegionView(by_chrom_store, Layout.from_bed(past_end, resolution=50))


def test_track_union_reads_each_track_from_its_store(tmp_path):
    """Rows map to the store holding them (the first, for a track in both); layouts must match."""
    from epitensor.store.compendium import TrackUnion

    first, second = _small_store(tmp_path / "a.zarr"), _small_store(tmp_path / "b.zarr")
    first.add_track("c1", "a1", _values(1))
    first.add_track("c2", "a1", _values(2))
    second.add_track("c3", "a1", _values(3))
    second.add_track("c1", "a1", _values(4))  # also in the first store: the first's is read
    union = open_store([first.url, second.url])
    assert isinstance(union, TrackUnion)
    assert union.track_names() == [("c1", "a1"), ("c2", "a1"), ("c3", "a1")]
    block = union.read_block("chr2", 100, 900, tracks=[2, 0])
    np.testing.assert_array_equal(block[0], second.read_track("c3", "a1", "chr2", 100, 900))
    np.testing.assert_array_equal(block[1], first.read_track("c1", "a1", "chr2", 100, 900))
    whole = union.read_block("chr1")
    assert whole.shape == (3, first.axis_length("chr1"))
    np.testing.assert_array_equal(whole[:2], first.read_block("chr1"))
    assert open_store([first.url]).url == first.url  # one store alone is itself
    regions = Layout.from_bed(pd.DataFrame({"chrom": ["chr2"], "start": [1000], "end": [9000]}),
                              25, "part")  # fmt: skip
    view = RegionView(union, regions)
    assert store_reference(view) == store_reference(union) == [first.url, second.url]
    np.testing.assert_array_equal(view.read_block("part"), union.read_block("chr2", 40, 360))
    with pytest.raises(EpitensorError, match="read-only"):
        union.add_track("c9", "a1", _values(9))
    other = Store.create(tmp_path / "c.zarr", Layout.from_chrom_sizes(SIZES.iloc[:1]),
                         SIZES, genome="custom", position_chunk=1000)  # fmt: skip
    with pytest.raises(EpitensorError, match="different layouts"):
        open_store([first, other])
