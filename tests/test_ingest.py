"""Ingestion of the real fixture tracks, the pilot round trip, bad inputs and the CLI."""

import gzip
import hashlib
import shutil

import numpy as np
import pandas as pd
import pybigtools
import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError, EpitensorWarning
from epitensor.cli import app
from epitensor.genome.coordinates import Layout, chrom_sizes
from epitensor.genome.pilot import pilot_layout
from epitensor.io.manifest import read_manifest
from epitensor.io.readers import read_track
from epitensor.store import ingest as ingest_module
from epitensor.store.compendium import Store
from epitensor.store.ingest import add_tracks, ingest

COOLBOX = "coolbox/bigwig_chr9_4000000_6000000_K562_{}.bigwig"
DUKE = "genomedata/wgEncodeDukeDNaseSeqBaseOverlapSignalK562V2"
FLOAT16 = {"rtol": 1e-3, "atol": 1e-3}


def _manifest(folder, rows, columns=("celltype", "assay", "path")):
    path = folder / "manifest.tsv"
    lines = ["\t".join(columns)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _bed(folder, regions):
    path = folder / "regions.bed"
    path.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in regions))
    return path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _bin_by_hand(intervals, n_bins, first_bin=0):
    """Mean per 25-bp bin of (start, end, value) intervals, uncovered bases as 0, by a plain loop."""
    out = np.zeros(n_bins)
    for start, end, value in intervals:
        for b in range(start // 25, (end - 1) // 25 + 1):
            overlap = min(end, 25 * b + 25) - max(start, 25 * b)
            if 0 <= b - first_bin < n_bins:
                out[b - first_bin] += value * overlap / 25
    return out


# real fixtures -------------------------------------------------------------------------


def test_coolbox_bigwigs_match_per_base_values(test_data, tmp_path):
    """Bin means equal the mean of pybigtools' per-base values over each 25-bp bin."""
    region = ("chr9", 4_000_000, 6_000_000)
    assays = ["H3K27ac", "H3K27me3", "RNA"]
    rows = [("K562", a, test_data / COOLBOX.format(a)) for a in assays]
    store = ingest(
        _manifest(tmp_path, rows),
        tmp_path / "s.zarr",
        regions=_bed(tmp_path, [region]),
        workers=1,
        verbose=False,
    )
    assert store.genome == "hg19" and store.axes == ["regions"]
    for assay, (_, _, path) in zip(assays, rows):
        reader = pybigtools.open(str(path))
        per_base = reader.values("chr9", region[1], region[2], fillna=0.0)
        per_base = np.where(np.isfinite(per_base), per_base, 0.0)
        expected = np.arcsinh(per_base.reshape(-1, 25).mean(axis=1))
        got = store.read_track("K562", assay)
        assert got.shape == expected.shape == (80_000,)
        np.testing.assert_allclose(got, expected, **FLOAT16)
        assert expected.max() > 1.0  # real signal, not a zero track


def test_encode_bigwig_whole_chromosome_with_partial_last_bin(test_data):
    """read_track on a whole chromosome agrees with a hand loop over the file's records."""
    path = test_data / "genomedata" / "ENCFF324BPE.bigWig"
    sizes = chrom_sizes("hg19")
    layout = Layout.from_chrom_sizes(sizes, chroms=["chr21"])
    n = layout.axis_lengths["chr21"]
    assert sizes["chr21"] % 25  # the last bin is partial
    pieces = list(read_track(path, layout, sizes, genome="hg19", transform="none"))
    assert [axis for axis, _ in pieces] == ["chr21"]
    records = list(pybigtools.open(str(path)).records("chr21"))
    expected = _bin_by_hand(records, n)
    np.testing.assert_allclose(pieces[0][1], expected, rtol=1e-6, atol=1e-9)
    assert np.count_nonzero(expected) > 1000


def _text_intervals(path):
    """Parse bedGraph / wig by hand: (chrom, start, end, value) with 0-based half-open."""
    out, chrom, kind, span = [], None, None, 1
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as handle:
        for line in handle:
            words = line.split()
            if not words or words[0] in ("track", "browser"):
                continue
            if words[0] in ("fixedStep", "variableStep"):
                kind, fields = words[0], dict(w.split("=") for w in words[1:])
                chrom, span = fields["chrom"], int(fields.get("span", 1))
                pos = int(fields.get("start", 1)) - 1
                step = int(fields.get("step", 1))
            elif kind == "fixedStep":
                out.append((chrom, pos, pos + span, float(words[0])))
                pos += step
            elif kind == "variableStep":
                out.append((chrom, int(words[0]) - 1, int(words[0]) - 1 + span, float(words[1])))
            else:
                out.append((words[0], int(words[1]), int(words[2]), float(words[3])))
    return out


def test_text_formats_match_hand_parsing(test_data, tmp_path):
    """bedGraph (plain, gzip, CRLF), wig fixedStep and variableStep (plain, CRLF) on a custom genome."""
    folder = test_data / "genomedata"
    gz = tmp_path / "duke.bedGraph.gz"
    gz.write_bytes(gzip.compress((folder / f"{DUKE.split('/')[1]}.bedGraph").read_bytes()))
    files = {
        "bedGraph": test_data / f"{DUKE}.bedGraph",
        "bedGraphGz": gz,
        "bedGraphDos": test_data / f"{DUKE}.dos.bedGraph",
        "wigVar": test_data / f"{DUKE}.wigVar",
        "wigVarDos": test_data / f"{DUKE}.dos.wigVar",
        "wigFixed": folder / "chr1.wgEncodeDukeDNaseSeqBaseOverlapSignalK562V2.wig",
    }
    sizes = tmp_path / "chrom.sizes"
    sizes.write_text("chr1\t1010\nchr2\t500\nchr10\t300\n")
    rows = [("K562", assay, path) for assay, path in files.items()]
    store = ingest(_manifest(tmp_path, rows), tmp_path / "s.zarr", genome=sizes, verbose=False)
    assert store.genome == "custom"
    assert store.axes == ["chr1", "chr2", "chr10"]
    assert store.layout.axis_lengths == {"chr1": 41, "chr2": 20, "chr10": 12}
    for assay, path in files.items():
        records = _text_intervals(path) if not str(path).endswith(".dos.wigVar") else None
        records = records or _text_intervals(files["wigVar"])  # same content, CRLF line ends
        for axis in store.axes:
            mine = [(s, e, v) for c, s, e, v in records if c == axis]
            expected = np.arcsinh(_bin_by_hand(mine, store.axis_length(axis)))
            np.testing.assert_allclose(
                store.read_track("K562", assay, axis), expected, **FLOAT16, err_msg=assay
            )
    assert store.read_track("K562", "wigFixed", "chr1").max() > 0.4


# round trip ----------------------------------------------------------------------------


def _pilot_sublayout(n_regions):
    full = pilot_layout().regions.iloc[:n_regions].copy()
    full["axis"] = "pilot"
    full["offset"] = np.concatenate([[0], np.cumsum(full.n_bins)[:-1]])
    return Layout(full, {"pilot": int(full.n_bins.sum())}, 25, "pilot3")


def _write_bigwig(path, layout, values, sizes):
    """Write per-bin values laid out on ``layout`` as a bigWig (one 25-bp record per bin)."""
    records = []
    for region in layout.regions.itertuples():
        piece = values[region.offset : region.offset + region.n_bins]
        starts = (region.first_bin + np.arange(region.n_bins)) * 25
        records += zip(
            [region.chrom] * region.n_bins, starts.tolist(), (starts + 25).tolist(), piece.tolist()
        )
    chroms = sorted(set(layout.regions.chrom))
    pybigtools.open(str(path), "w").write({c: int(sizes[c]) for c in chroms}, iter(records))


def test_pilot_round_trip_through_bigwig(test_data, pilot_store, tmp_path):
    """Pilot arrays -> sinh (-log10 p) -> bigWig -> ingest equals the bundled store (float16)."""
    sizes = chrom_sizes("hg19")
    layout = _pilot_sublayout(2)
    original = pilot_layout().regions.iloc[:2]
    tracks = [("E003", "H3K4me3"), ("E116", "H3K27me3"), ("E017", "H3K36me3")]
    rows = []
    for celltype, assay in tracks:
        # the first two pilot regions of the original track (tests/data/README.md)
        head = np.load(test_data / "roadmap-pilot" / f"{celltype}.{assay}.pilot-head.arcsinh.npz")
        head = head["arr_0"]
        values = np.concatenate(
            [head[r.offset : r.offset + r.n_bins] for r in original.itertuples()]
        )
        path = tmp_path / f"{celltype}.{assay}.bw"
        _write_bigwig(path, layout, np.sinh(values.astype(np.float64)), sizes)
        rows.append((celltype, assay, path))
    store = ingest(
        _manifest(tmp_path, rows[:2]), tmp_path / "s.zarr", regions=layout, verbose=False
    )
    store = add_tracks(tmp_path / "s.zarr", _manifest(tmp_path, rows[2:]), verbose=False)
    assert store.track_names() == tracks
    for celltype, assay in tracks:
        expected = np.concatenate(
            [
                pilot_store.read_track(celltype, assay, "pilot", r.offset, r.offset + r.n_bins)
                for r in original.itertuples()
            ]
        )
        np.testing.assert_allclose(store.read_track(celltype, assay), expected, **FLOAT16)


def test_pilot_npz_on_pilot_layout(test_data, pilot_store, tmp_path):
    """An npz holding a whole layout axis (already arcsinh: scale column) matches by layout."""
    npz = test_data / "roadmap-pilot" / "E116.H3K4me3.pilot.arcsinh.npz"
    np.save(tmp_path / "E116.H3K4me3.npy", np.load(npz)["arr_0"])
    rows = [
        ("E116", "H3K4me3", npz, "arcsinh"),
        ("E116", "npy", tmp_path / "E116.H3K4me3.npy", "arcsinh"),
    ]
    manifest = _manifest(tmp_path, rows, ("celltype", "assay", "path", "scale"))
    store = ingest(manifest, tmp_path / "s.zarr", regions="roadmap-pilot", verbose=False)
    np.testing.assert_array_equal(
        store.read_track("E116", "H3K4me3"), pilot_store.read_track("E116", "H3K4me3")
    )
    np.testing.assert_array_equal(
        store.read_track("E116", "npy"), pilot_store.read_track("E116", "H3K4me3")
    )


# bad input -----------------------------------------------------------------------------


def _bad_case(name, test_data, tmp_path):
    """Manifest rows, ingest keyword arguments and the expected message for each bad input."""
    fixtures = test_data
    good = fixtures / COOLBOX.format("H3K27ac")
    region = {"regions": _bed(tmp_path, [("chr9", 4_000_000, 4_100_000)])}
    text = tmp_path / "t.bedGraph"
    if name == "missing":
        return [("K562", "X", tmp_path / "nope.bw")], region, "file not found"
    if name == "corrupt_bigwig":
        (tmp_path / "cut.bw").write_bytes(good.read_bytes()[:20_000])
        return [("K562", "X", tmp_path / "cut.bw")], region, "corrupt"
    if name == "corrupt_text":
        text.write_bytes(b"\x00\x01garbage\xff\n")
        return [("K562", "X", text)], region, "corrupt"
    if name == "unknown_chrom":
        text.write_text("chr9\t4000000\t4000100\t1\nchrZZ\t0\t10\t1\n")
        return [("K562", "X", text)], region, "chrZZ not in genome hg19"
    if name == "build_mismatch":
        path = fixtures / COOLBOX.format("H3K4me3")
        return [("K562", "H3K4me3", path)], region, "looks like hg38"
    if name == "text_past_end":
        text.write_text("chr21\t48129890\t48130000\t1\n")
        return [("K562", "X", text)], region, "past its length"
    if name == "duplicate":
        return [("K562", "X", good), ("K562", "X", good)], region, "duplicate track"
    if name == "npz_length":
        npz = test_data / "roadmap-pilot" / "E116.H3K4me3.pilot.arcsinh.npz"
        bed = {"regions": test_data / "roadmap-pilot" / "encode_pilot_hg19.bed"}
        return [("E116", "H3K4me3", npz)], bed, "has shape"
    if name == "md5":
        return [("K562", "X", good, "0" * 32)], region, "md5 mismatch"
    if name == "empty_file":
        text.write_text("track type=bedGraph\n")
        return [("K562", "X", text)], region, "empty track"
    if name == "empty_in_layout":
        text.write_text("chr9\t100\t200\t3\n")
        return [("K562", "X", text)], region, "empty track, no signal"
    raise AssertionError(name)


BAD = [
    "missing",
    "corrupt_bigwig",
    "corrupt_text",
    "unknown_chrom",
    "build_mismatch",
    "text_past_end",
    "duplicate",
    "npz_length",
    "md5",
    "empty_file",
    "empty_in_layout",
]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_fails_cleanly(name, test_data, tmp_path):
    rows, kwargs, message = _bad_case(name, test_data, tmp_path)
    columns = ("celltype", "assay", "path", "md5")[: len(rows[0])]
    manifest = _manifest(tmp_path, rows, columns)
    with pytest.raises(EpitensorError, match=message) as info:
        ingest(manifest, tmp_path / "s.zarr", verbose=False, workers=1, **kwargs)
    text = str(info.value)
    assert "\n" not in text
    assert str(rows[-1][2]) in text or str(manifest) in text
    assert not (tmp_path / "s.zarr").exists()
    assert _leftovers(tmp_path) == []


def test_failed_append_leaves_store_untouched(test_data, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_module, "BLOCK_BYTES", 0)  # stream track by track
    fixtures = test_data
    regions = _bed(tmp_path, [("chr9", 4_000_000, 4_200_000)])
    good = [("K562", "H3K27ac", fixtures / COOLBOX.format("H3K27ac"))]
    store = ingest(_manifest(tmp_path, good), tmp_path / "s.zarr", regions=regions, verbose=False)
    before = store.read_block("regions")
    bad = [
        ("K562", "RNA", fixtures / COOLBOX.format("RNA")),
        ("K562", "H3K4me3", fixtures / COOLBOX.format("H3K4me3")),  # hg38 header
    ]
    with pytest.raises(EpitensorError, match="genome-build mismatch"):
        ingest(_manifest(tmp_path, bad), tmp_path / "s.zarr", append=True, verbose=False)
    after = Store.open(tmp_path / "s.zarr")
    assert after.track_names() == [("K562", "H3K27ac")]
    np.testing.assert_array_equal(after.read_block("regions"), before)
    with pytest.raises(EpitensorError, match="already exists"):
        ingest(_manifest(tmp_path, good), tmp_path / "s.zarr", regions=regions, verbose=False)
    with pytest.raises(EpitensorError, match="duplicate track"):
        add_tracks(tmp_path / "s.zarr", _manifest(tmp_path, good), verbose=False)


def test_chromosome_style_is_mapped_with_a_warning(tmp_path):
    text = tmp_path / "ensembl.bedGraph"
    text.write_text("9\t4000010\t4000035\t2.0\n")
    regions = _bed(tmp_path, [("chr9", 4_000_000, 4_000_100)])
    manifest = _manifest(tmp_path, [("K562", "X", text)])
    with pytest.warns(EpitensorWarning, match=r"9 -> chr9"):
        store = ingest(manifest, tmp_path / "s.zarr", regions=regions, verbose=False)
    expected = np.arcsinh([15 * 2 / 25, 10 * 2 / 25, 0, 0])
    np.testing.assert_allclose(store.read_track("K562", "X"), expected, **FLOAT16)


def test_non_finite_values_become_zero_with_a_count(tmp_path):
    text = tmp_path / "nan.bedGraph"
    text.write_text(
        "chr9\t4000000\t4000025\tnan\nchr9\t4000025\t4000050\t1\nchr9\t4000050\t4000075\tinf\n"
    )
    regions = _bed(tmp_path, [("chr9", 4_000_000, 4_000_100)])
    with pytest.warns(EpitensorWarning, match="replaced 2 non-finite"):
        store = ingest(
            _manifest(tmp_path, [("K562", "X", text)]),
            tmp_path / "s.zarr",
            regions=regions,
            verbose=False,
        )
    np.testing.assert_allclose(store.read_track("K562", "X"), [0, np.arcsinh(1), 0, 0], **FLOAT16)
    bigwig = tmp_path / "nan.bw"
    records = [("chr9", 4000000, 4000010, 2.5), ("chr9", 4000030, 4000040, float("nan"))]
    pybigtools.open(str(bigwig), "w").write({"chr9": 141_213_431}, iter(records))
    layout = Layout.from_bed(pd.read_csv(regions, sep="\t", names=["chrom", "start", "end"]))
    with pytest.warns(EpitensorWarning, match="replaced 1 non-finite"):
        ((_, values),) = read_track(bigwig, layout, chrom_sizes("hg19"), transform="none")
    np.testing.assert_allclose(values, [1.0, 0, 0, 0])


def test_manifest_md5_and_relative_paths(test_data, tmp_path):
    src = test_data / COOLBOX.format("RNA")
    shutil.copy(src, tmp_path / "rna.bw")
    digest = hashlib.md5(src.read_bytes()).hexdigest()
    manifest = _manifest(
        tmp_path, [("K562", "RNA", "rna.bw", digest.upper())], ("celltype", "assay", "path", "md5")
    )
    (spec,) = read_manifest(manifest)
    assert spec.path == str(tmp_path / "rna.bw") and spec.md5 == digest
    (tmp_path / "bad.tsv").write_text("cell\tassay\tpath\nA\tB\tc.bw\n")
    with pytest.raises(EpitensorError, match=r"lacks the column\(s\) \['celltype'\]"):
        read_manifest(tmp_path / "bad.tsv")


# command line --------------------------------------------------------------------------


def test_cli_ingest_in_worker_processes(test_data, tmp_path, monkeypatch):
    """Worker processes + block writes give the same store as one process streaming tracks."""
    rows = [("K562", a, test_data / COOLBOX.format(a)) for a in ("H3K27ac", "RNA")]
    manifest = _manifest(tmp_path, rows)
    regions = _bed(tmp_path, [("chr9", 4_500_000, 5_000_000), ("chr9", 5_500_000, 5_600_000)])
    out = tmp_path / "s.zarr"
    args = [
        "ingest",
        str(manifest),
        "--out",
        str(out),
        "--regions",
        str(regions),
        "--workers",
        "2",
        "--quiet",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 observed" in result.output
    monkeypatch.setattr(ingest_module, "BLOCK_BYTES", 0)
    serial = ingest(manifest, tmp_path / "serial.zarr", regions=regions, workers=1, verbose=False)
    np.testing.assert_array_equal(
        Store.open(out).read_block("regions"), serial.read_block("regions")
    )
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1
    assert "already exists" in again.output
    listed = Store.open(out).tracks
    assert list(zip(listed.celltype, listed.assay)) == serial.track_names()
    assert listed.source.tolist() == [str(path) for _, _, path in rows]


def test_tracks_from_an_http_url(test_data, tmp_path):
    """A manifest URL is downloaded (fsspec) and checked like a local file."""
    import functools
    import http.server
    import threading

    shutil.copy(test_data / COOLBOX.format("RNA"), tmp_path / "rna.bw")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/rna.bw"
        regions = _bed(tmp_path, [("chr9", 4_000_000, 4_500_000)])
        manifest = _manifest(tmp_path, [("K562", "RNA", url)])
        store = ingest(manifest, tmp_path / "s.zarr", regions=regions, verbose=False)
        local = ingest(
            _manifest(tmp_path, [("K562", "RNA", "rna.bw")]),
            tmp_path / "local.zarr",
            regions=regions,
            verbose=False,
        )
        assert store.tracks.source.tolist() == [url]
        np.testing.assert_array_equal(store.read_block("regions"), local.read_block("regions"))
        missing = _manifest(tmp_path, [("K562", "RNA", url + ".gone")])
        with pytest.raises(EpitensorError, match="cannot download"):
            ingest(missing, tmp_path / "gone.zarr", regions=regions, verbose=False)
    finally:
        server.shutdown()


def test_contigs_skipped_and_bad_options(tmp_path):
    text = tmp_path / "contigs.bedGraph"
    text.write_text("chr9\t4000000\t4000025\t1\nchrUn_gl000220\t0\t100\t5\n")
    regions = _bed(tmp_path, [("chr9", 4_000_000, 4_000_050)])
    manifest = _manifest(tmp_path, [("K562", "X", text)])
    with pytest.warns(EpitensorWarning, match="skipped 1 contig"):
        store = ingest(manifest, tmp_path / "s.zarr", regions=regions, verbose=False)
    np.testing.assert_allclose(store.read_track("K562", "X"), [np.arcsinh(1), 0], **FLOAT16)
    with pytest.raises(EpitensorError, match="invalid transform"):
        ingest(manifest, tmp_path / "t.zarr", regions=regions, transform="log", verbose=False)
    with pytest.raises(EpitensorError, match="positive integer"):
        ingest(manifest, tmp_path / "t.zarr", regions=regions, workers=-1, verbose=False)
    with pytest.raises(EpitensorError, match="needs a layout"):
        npz = tmp_path / "a.npz"
        np.savez(npz, values=np.ones(3))
        ingest(_manifest(tmp_path, [("A", "B", npz)]), tmp_path / "t.zarr", verbose=False)
    assert not (tmp_path / "t.zarr").exists() and _leftovers(tmp_path) == []


def test_append_to_a_whole_genome_store_warns_about_dropped_chromosomes(tmp_path):
    sizes = tmp_path / "chrom.sizes"
    sizes.write_text("chr1\t1000\nchr2\t500\n")
    first, second = tmp_path / "a.bedGraph", tmp_path / "b.bedGraph"
    first.write_text("chr1\t0\t50\t1\n")
    second.write_text("chr1\t25\t50\t2\nchr2\t0\t10\t4\n")
    store = ingest(
        _manifest(tmp_path, [("A", "X", first)]), tmp_path / "s.zarr", genome=sizes, verbose=False
    )
    assert store.axes == ["chr1"]
    with pytest.warns(EpitensorWarning, match="data on chr2 dropped"):
        store = add_tracks(
            tmp_path / "s.zarr", _manifest(tmp_path, [("B", "X", second)]), verbose=False
        )
    np.testing.assert_allclose(store.read_track("B", "X")[:3], np.arcsinh([0, 2, 0]), **FLOAT16)
