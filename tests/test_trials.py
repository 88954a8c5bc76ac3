"""The defects of the fault trials (issue 35's report, kept with the issues), one test per trial id.

Each test fails on the code the trials ran against and passes once its defect
is fixed. They use real files: the tests/data fixtures, the bundled pilot
sample, bigWigs written with pybigtools and text formats written by hand.
"""

import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError, atomic_directory
from epitensor.cli import app
from epitensor.store.compendium import Store

COOLBOX = "coolbox/bigwig_chr9_4000000_6000000_K562_{}.bigwig"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _manifest(folder, rows, name="manifest.tsv"):
    path = folder / name
    lines = ["celltype\tassay\tpath"] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _bed(folder, regions, name="regions.bed"):
    path = folder / name
    path.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in regions))
    return path


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _ingest(manifest, out, *extra):
    return _run("ingest", manifest, "--out", out, "--quiet", "--workers", "1", *extra)


def _fails(result, *needles):
    """Exit 1 with one line 'error: ...' on stderr naming every needle: no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


# C. escape -----------------------------------------------------------------------------


def test_E1_lock_file_symlink_is_refused(tmp_path):
    """A symlink planted at an output's lock path is refused, and its target is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("IMPORTANT USER DATA\n")
    (tmp_path / ".m_sym.lock").symlink_to(victim)
    with pytest.raises(EpitensorError, match=r"\.m_sym\.lock is a symbolic link.*remove"):
        with atomic_directory(tmp_path / "m_sym"):
            pass
    assert victim.read_text() == "IMPORTANT USER DATA\n"
    assert not (tmp_path / "m_sym").exists()
    # the same through a real command, which takes this lock beside its output
    out = tmp_path / "s.zarr"
    (tmp_path / ".s.zarr.lock").symlink_to(victim)
    result = _ingest(_manifest(tmp_path, [("K562", "X", "nowhere.bw")]), out)
    _fails(result, ".s.zarr.lock", "symbolic link")
    assert victim.read_text() == "IMPORTANT USER DATA\n"


def test_E1_lock_file_hard_link_is_refused(tmp_path):
    """A hard link to another file at the lock path would be overwritten with the pid too."""
    victim = tmp_path / "victim.txt"
    victim.write_text("IMPORTANT USER DATA\n")
    os.link(victim, tmp_path / ".m.lock")
    with pytest.raises(EpitensorError, match="hard link"):
        with atomic_directory(tmp_path / "m"):
            pass
    assert victim.read_text() == "IMPORTANT USER DATA\n"


# A. wrong results: ingest regions ---------------------------------------------------------


@pytest.mark.parametrize(
    "regions, needles",
    [
        ([("chr9", -10, 100)], ["line 1", "chr9 -10 100", "start below 0"]),
        (  # chr9 is 141,213,431 bp in hg19
            [("chr9", 4_000_000, 4_001_000), ("chr9", 141_213_000, 141_300_000)],
            ["line 2", "chr9 141213000 141300000", "past their chromosome's length"],
        ),
        (
            [("chr9", 4_001_000, 4_005_000), ("chr9", 4_003_000, 4_008_000)],
            ["line 1", "line 2", "overlap"],
        ),
        (
            [("chr9", 4_001_000, 4_005_000), ("chr9", 4_001_000, 4_005_000)],
            ["line 1", "line 2", "overlap"],
        ),
        (  # disjoint bases, one shared 25-bp bin (4,200,000-4,200,025)
            [("chr9", 4_000_000, 4_200_010), ("chr9", 4_200_015, 4_400_000)],
            ["line 1", "line 2", "share a 25-bp bin"],
        ),
    ],
    ids=["negative", "beyond", "overlap", "duplicate", "shared-bin"],
)
def test_W12_ingest_regions_outside_or_overlapping_are_refused(
    test_data, tmp_path, regions, needles
):
    """Each bad BED is one line naming the file and the bad lines; no store is written."""
    bed = _bed(tmp_path, regions)
    manifest = _manifest(tmp_path, [("K562", "H3K27ac", test_data / COOLBOX.format("H3K27ac"))])
    result = _ingest(manifest, tmp_path / "s.zarr", "--regions", bed)
    _fails(result, str(bed), *needles)
    assert not (tmp_path / "s.zarr").exists()


# E. memory: text parsing, gzip bombs, hostile bigWig headers ---------------------------------

_PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    import pandas as pd
    from epitensor.genome.coordinates import Layout
    from epitensor.io.readers import read_track

    sizes = pd.Series({"chr1": 248_956_422}, name="length")
    layout = Layout.from_bed(pd.DataFrame({"chrom": ["chr1"], "start": [0], "end": [1000]}))
    values = dict(read_track(sys.argv[1], layout, sizes, transform="none"))["regions"]
    assert abs(float(values[0]) - 1.5) < 1e-6, values[:4]
    # VmHWM: this process's own peak (ru_maxrss keeps the parent's across exec)
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    print(int(status.split()[0]) * 1024)
    """
)


def _peak_bytes(path) -> int:
    """Peak RSS (VmHWM) of a fresh process reading the whole text track ``path``."""
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.parametrize("fmt", ["bedgraph", "wig"])
def test_H1_text_parsing_memory_is_bounded_per_line(tmp_path, fmt):
    """Peak memory grows by at most ~32 bytes per data line (measured: 480 before).

    Two files of 200,000 and 1,000,000 25-bp records of value 1.5 on chr1 are
    read whole by ``read_track`` in fresh processes; the peak RSS difference
    divided by the 800,000 extra lines is the cost of a line. The records
    themselves take 28 bytes a line while parsing (start, end, value, line
    number); 40 leaves room for the allocator.
    """
    peaks = []
    for n in (200_000, 1_000_000):
        path = tmp_path / f"t{n}.{fmt}"
        starts = np.arange(n, dtype=np.int64) * 25
        with open(path, "w") as handle:
            if fmt == "bedgraph":
                handle.write("track type=bedGraph\n")
                handle.writelines(f"chr1\t{s}\t{s + 25}\t1.5\n" for s in starts)
            else:  # variableStep: 1-based positions, two words a line
                handle.write("variableStep chrom=chr1 span=25\n")
                handle.writelines(f"{s + 1}\t1.5\n" for s in starts)
        peaks.append(_peak_bytes(path))
        path.unlink()
    per_line = (peaks[1] - peaks[0]) / 800_000
    print(f"H1 {fmt}: {per_line:.1f} bytes per line", peaks)
    assert per_line <= 40, f"{per_line:.0f} bytes per line"


def test_H2_gzip_bomb_is_refused_with_one_line(tmp_path):
    """64 MB of newlines in 64 kB of gzip is refused before it is expanded and split."""
    bomb = tmp_path / "bomb.bedGraph.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as handle:
        handle.write(b"chr9\t4000000\t4000025\t1.0\n")
        for _ in range(16):
            handle.write(b"\n" * (4 << 20))
    assert bomb.stat().st_size < 200_000
    manifest = _manifest(tmp_path, [("K562", "X", bomb)])
    result = _ingest(manifest, tmp_path / "s.zarr", "--genome", "hg19")
    _fails(result, "bomb.bedGraph.gz", "expands to more than", "compressed size")
    assert not (tmp_path / "s.zarr").exists()
    # the same in one line: 2 MB without a line end is refused, not held whole
    long_line = tmp_path / "long.bedGraph"
    long_line.write_bytes(b"chr9\t4000000\t4000025\t1.0\n" + b"9" * (2 << 20))
    result = _ingest(_manifest(tmp_path, [("K562", "X", long_line)]), tmp_path / "s.zarr")
    _fails(result, "long.bedGraph", "line 2 is longer than 1,048,576 bytes")


def test_H5_bigwig_header_asking_for_a_huge_buffer_is_refused(test_data, tmp_path):
    """The CoolBox bigWig with uncompressBufSize patched to 0xFFFFFFFF (bytes 52-55).

    pybigtools allocates that size up front: 4 GB, an abort under a memory
    limit. It is refused before the file is handed to pybigtools.
    """
    data = bytearray((test_data / COOLBOX.format("H3K27ac")).read_bytes())
    assert int.from_bytes(data[52:56], "little") < 1 << 20  # the real header: a small buffer
    data[52:56] = b"\xff\xff\xff\xff"
    hostile = tmp_path / "bufsize.bw"
    hostile.write_bytes(bytes(data))
    manifest = _manifest(tmp_path, [("K562", "X", hostile)])
    result = _ingest(manifest, tmp_path / "s.zarr")
    _fails(result, "bufsize.bw", "4,294,967,295-byte decompression buffer")
    assert not (tmp_path / "s.zarr").exists()


# F. bigWig told by content ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["track.dat", "track.BW", "track.bigWig.1", "track"])
def test_C4_bigwig_detected_by_content_not_name(test_data, tmp_path, name):
    """A valid bigWig under any name is read, with the values of the same file named .bw."""
    original = test_data / COOLBOX.format("H3K27ac")
    shutil.copyfile(original, tmp_path / name)
    region = _bed(tmp_path, [("chr9", 4_000_000, 4_200_000)])
    ok = _ingest(
        _manifest(tmp_path, [("K562", "X", original)], "a.tsv"),
        tmp_path / "a.zarr",
        "--regions",
        region,
    )
    assert ok.exit_code == 0, ok.output
    result = _ingest(
        _manifest(tmp_path, [("K562", "X", tmp_path / name)], "b.tsv"),
        tmp_path / "b.zarr",
        "--regions",
        region,
    )
    assert result.exit_code == 0, result.output
    expected = Store.open(tmp_path / "a.zarr").read_track("K562", "X")
    got = Store.open(tmp_path / "b.zarr").read_track("K562", "X")
    assert expected.max() > 1.0
    np.testing.assert_array_equal(got, expected)


SAVED_MODEL = (
    Path(__file__).resolve().parent / "data" / "saved-model-v1"
)  # chr1:151,158,050-151,308,050


def test_H3_explain_steps_are_bounded(tmp_path):
    """``explain --steps 100000`` asked numpy for a 100,000 x 100,000 float64 matrix (74.5 GiB)."""
    out = tmp_path / "x.png"
    args = ["explain", SAVED_MODEL, "--celltype", "E003", "--assay", "H3K4me3"]
    args += ["--region", "chr1:151160000-151162000", "--out", out, "-q"]
    _fails(_run(*args, "--steps", "100000"), "n_steps must be at most 4096", "100000")
    assert not out.exists()
    ok = _run(*args, "--steps", "8")  # a bounded request still works
    assert ok.exit_code == 0, ok.output
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_H4_embed_window_is_bounded(tmp_path):
    """``embed --window 100000`` reached 6 GB for two regions; it is refused at once."""
    bed = _bed(tmp_path, [("chr1", 151_200_000, 151_200_001), ("chr1", 151_250_000, 151_250_001)])
    args = ["embed", SAVED_MODEL, "--regions", bed, "-q"]
    _fails(
        _run(*args, "--window", "100000", "--out", tmp_path / "e1"), "window must be at most 400"
    )
    assert not (tmp_path / "e1").exists()
    ok = _run(*args, "--window", "8", "--out", tmp_path / "e2")
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "e2" / "region_factors.tsv").stat().st_size > 0


# A. import-reference: weights, architecture, names ----------------------------------------------

REFERENCE = Path(__file__).resolve().parent / "data" / "avocado-reference"
REFERENCE_FIRST_BIN = 6046322  # hg19 chr1 bin of the fixture's position 0 (its README)


def _reference_copy(tmp_path, edit_h5=None, edit_json=None):
    """The original-model fixture copied to ``tmp_path/v``, optionally edited; the prefix."""
    import h5py

    folder = tmp_path / "v"
    folder.mkdir()
    prefix = folder / "avocado-chr1"
    for suffix in (".json", ".h5"):
        shutil.copyfile(REFERENCE / f"avocado-chr1{suffix}", prefix.with_suffix(suffix))
    if edit_json is not None:
        path = prefix.with_suffix(".json")
        data = json.loads(path.read_text())
        edit_json(data)
        path.write_text(json.dumps(data))
    if edit_h5 is not None:
        with h5py.File(prefix.with_suffix(".h5"), "r+") as handle:
            edit_h5(handle)
    return prefix


def _weight(handle, layer, part):
    group = handle["model_weights"][layer]
    names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
    name = next(n for n in names if part in n.rsplit("/", 1)[-1])
    return group, name


def _import(prefix, out):
    return _run(
        "import-reference", prefix, "--genome", "hg19", "--first-bin", REFERENCE_FIRST_BIN,
        "--out", out, "-q",
    )  # fmt: skip


def _set_weight(layer, part, change):
    def edit(handle):
        group, name = _weight(handle, layer, part)
        values = group[name][()]
        change(values)
        group[name][...] = values

    return edit


@pytest.mark.parametrize(
    "edit, needles",
    [
        (_set_weight("dense_0", "kernel", lambda a: a.__setitem__(0, np.nan)),
         ["dense_0", "NaN or infinite"]),
        (_set_weight("genome_25bp_embedding", "embeddings",
                     lambda a: a.__setitem__(slice(100, 110), 1e30)),
         ["genome_25bp_embedding", "beyond", "row 100"]),
        (_set_weight("y_pred", "bias", lambda a: a.__setitem__(0, np.inf)),
         ["y_pred", "NaN or infinite"]),
    ],
    ids=["nan-kernel", "1e30-genome-rows", "inf-bias"],
)  # fmt: skip
def test_W8_import_reference_refuses_non_finite_weights(tmp_path, edit, needles):
    """NaN / inf weights (and 1e30, which overflows to inf) are refused at import."""
    result = _import(_reference_copy(tmp_path, edit_h5=edit), tmp_path / "out")
    _fails(result, *needles)
    assert not (tmp_path / "out").exists()


def _tanh(handle):
    config = json.loads(handle.attrs["model_config"])
    for layer in config["config"]["layers"]:
        if layer["config"].get("name") in ("dense_0", "dense_1"):
            layer["config"]["activation"] = "tanh"
    handle.attrs["model_config"] = json.dumps(config)


def _batch_norm(handle):
    weights = handle["model_weights"]
    group = weights.create_group("batch_normalization")
    names = [
        f"batch_normalization/{n}:0" for n in ("gamma", "beta", "moving_mean", "moving_variance")
    ]
    for name, value in zip(names, (5.0, 3.0, 0.0, 1.0)):
        group.create_dataset(name, data=np.full(64, value, np.float32))
    group.attrs["weight_names"] = [n.encode() for n in names]
    layers = [n if isinstance(n, bytes) else n.encode() for n in weights.attrs["layer_names"]]
    layers.insert(layers.index(b"dense_1"), b"batch_normalization")
    weights.attrs["layer_names"] = layers
    config = json.loads(handle.attrs["model_config"])
    config["config"]["layers"].insert(
        -2, {"class_name": "BatchNormalization", "config": {"name": "batch_normalization"}}
    )
    handle.attrs["model_config"] = json.dumps(config)


def _model_config_only_batch_norm(handle):
    config = json.loads(handle.attrs["model_config"])
    config["config"]["layers"].insert(
        -2, {"class_name": "BatchNormalization", "config": {"name": "batch_normalization"}}
    )
    handle.attrs["model_config"] = json.dumps(config)


@pytest.mark.parametrize(
    "edit, needles",
    [
        (_tanh, ["'dense_0'", "activation 'tanh'", "'relu'"]),
        (_batch_norm, ["batch_normalization", "weights the original Avocado network"]),
        (_model_config_only_batch_norm, ["batch_normalization", "BatchNormalization"]),
    ],
    ids=["tanh", "batch-norm-with-weights", "batch-norm-in-config"],
)
def test_W9_import_reference_refuses_another_architecture(tmp_path, edit, needles):
    """A model that is not the original ReLU network is refused, not imported as one."""
    result = _import(_reference_copy(tmp_path, edit_h5=edit), tmp_path / "out")
    _fails(result, *needles)
    assert not (tmp_path / "out").exists()


def test_W9_the_original_model_still_imports(tmp_path):
    """The unedited fixture passes the new checks (its model_config is read)."""
    import h5py

    from epitensor.workflows.reference import read_reference

    prefix = _reference_copy(tmp_path)
    with h5py.File(prefix.with_suffix(".h5"), "r") as handle:
        assert "model_config" in handle.attrs  # the checks above edit a real config
    ref = read_reference(prefix, genome="hg19", first_bin=REFERENCE_FIRST_BIN, verbose=False)
    assert ref.celltypes == ["E003", "E017", "E065", "E116", "E117"]
    assert len(ref.module.network) > 2


@pytest.mark.parametrize(
    "names, needle",
    [
        (["E003\ntrack name=x", "E017", "E065", "E116", "E117"], r"'E003\ntrack name=x'"),
        (["../../../../tmp/ESCAPE", "E017", "E065", "E116", "E117"], "'../../../../tmp/ESCAPE'"),
        (["E003", "E017", "E065", "E116", "a b:c"], "'a b:c'"),
    ],
    ids=["newline", "path", "space-colon"],
)
def test_E2_import_reference_validates_names(tmp_path, names, needle):
    """Cell type names from the JSON follow the one name rule (no header injection)."""
    result = _import(
        _reference_copy(tmp_path, edit_json=lambda d: d.update(celltypes=names)), tmp_path / "o"
    )
    _fails(result, "avocado-chr1.json", "invalid cell type name", needle)
    assert not (tmp_path / "o").exists()


def test_E2_names_are_validated_when_a_model_is_loaded(tmp_path):
    """A model whose sealed config holds a name with a newline (imported before validation)."""
    from epitensor.estimators.avocado import Avocado
    from epitensor.nn import modeldir

    path = tmp_path / "m"
    shutil.copytree(SAVED_MODEL, path)
    Avocado.load(path).save(tmp_path / "sealed")  # a config with its own checksum
    config = json.loads((tmp_path / "sealed" / "config.json").read_text())
    config["celltypes_"][0] = "E003\ntrack name=x"
    config["checksums"]["config.json"] = modeldir.config_digest(config)  # sealed as it is
    (tmp_path / "sealed" / "config.json").write_text(json.dumps(config))
    result = _run("impute", tmp_path / "sealed", "--celltype", "E017", "--assay", "H3K4me3",
                  "--model-only", "--out", tmp_path / "o.bw", "-q")  # fmt: skip
    _fails(result, "config.json", "invalid cell type name", r"'E003\ntrack name=x'")
    assert not (tmp_path / "o.bw").exists()


def _string_bias(handle):
    group, name = _weight(handle, "dense_1", "bias")
    del group[name]
    group.create_dataset(name, data=np.array([b"x"] * 64))


def test_T1_import_reference_weights_stored_as_bytes_is_one_line(tmp_path):
    """``dense_1`` bias stored as bytes: was 'could not convert string to float' (52 lines)."""
    result = _import(_reference_copy(tmp_path, edit_h5=_string_bias), tmp_path / "out")
    _fails(result, "avocado-chr1.h5", "dense_1", "holds bytes, not numbers")


# A / D. downstream: CSV reading, one-class labels -----------------------------------------------


@pytest.fixture(scope="module")
def downstream_data(tmp_path_factory):
    """600 pilot positions: 24 real tracks as features, E116:H3K4me3 >= 2 (arcsinh) as labels.

    The 300 positions of highest E116:H3K4me3 and 300 others, in position order.
    """
    from epitensor.store.datasets import roadmap_pilot_arrays

    folder = tmp_path_factory.mktemp("downstream")
    arrays = roadmap_pilot_arrays()
    target = arrays.pop(("E116", "H3K4me3"))
    top = np.argsort(target)[-300:]
    rest = np.setdiff1d(np.arange(0, len(target), 1877), top)[:300]
    positions = np.sort(np.concatenate([top, rest]))
    x = np.stack([arrays[k][positions] for k in sorted(arrays)], axis=1).astype(np.float32)
    y = (target[positions] >= 2.0).astype(np.float64)
    assert x.shape == (600, 24) and 100 < y.sum() < 500
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    columns = [f"f{i}" for i in range(x.shape[1])]
    import pandas as pd

    table = pd.DataFrame(x, columns=columns)
    table.to_csv(folder / "x.csv", index=False)
    table.to_csv(folder / "x_nohdr.csv", index=False, header=False)
    dotted = table.astype(object)
    dotted.loc[5, "f3"] = "."
    dotted.to_csv(folder / "x_dot.csv", index=False)
    pd.DataFrame({"name": ["a"] * 600}).to_csv(folder / "x_nonum.csv", index=False)
    np.save(folder / "y_const.npy", np.zeros(600))
    return folder


def _downstream(features, labels, out, *extra):
    return _run(
        "downstream", "--features", f"A={features}", "--labels", labels, "--out", out,
        "--model", "logistic", "--folds", "3", "-q", *extra,
    )  # fmt: skip


def test_W10_downstream_csv_cell_that_is_not_a_number_is_refused(downstream_data, tmp_path):
    """One '.' in column f3 dropped the whole column (23 of 24 features, no warning)."""
    d = downstream_data
    result = _downstream(d / "x_dot.csv", d / "y.npy", tmp_path / "o")
    _fails(result, "x_dot.csv", "line 7", "column 'f3'", "'.' is not a number")
    ok = _downstream(d / "x.csv", d / "y.npy", tmp_path / "ok")  # the clean CSV: all 24
    assert ok.exit_code == 0, ok.output
    import pandas as pd

    summary = pd.read_csv(tmp_path / "ok" / "summary.csv").set_index("feature_set")
    assert int(summary.loc["A", "n_features"]) == 24


def test_W11_downstream_csv_without_header_keeps_its_first_row(downstream_data, tmp_path):
    """A header-less CSV with --n-samples scored as the same array in .npy (was off by one row)."""
    import pandas as pd

    d = downstream_data
    runs = {}
    for name in ("x.npy", "x_nohdr.csv"):
        out = tmp_path / name.replace(".", "_")
        result = _downstream(d / name, d / "y.npy", out, "--n-samples", "500")
        assert result.exit_code == 0, result.output
        runs[name] = pd.read_csv(out / "summary.csv")
    pd.testing.assert_frame_equal(runs["x.npy"], runs["x_nohdr.csv"])


def test_T4_downstream_labels_of_one_class_is_one_line(downstream_data, tmp_path):
    d = downstream_data
    _fails(_downstream(d / "x.npy", d / "y_const.npy", tmp_path / "o"), "one class")


def test_T5_downstream_csv_without_numeric_column_is_one_line(downstream_data, tmp_path):
    d = downstream_data
    _fails(
        _downstream(d / "x_nonum.csv", d / "y.npy", tmp_path / "o"),
        "x_nonum.csv",
        "no numeric column",
    )


# F. bigWig writer: NaN, zoom sums, file modes ---------------------------------------------------


def test_C1_nan_never_reaches_a_written_bigwig(tmp_path):
    """A NaN bin is refused by the writer (pyBigWig's header() crashed on a NaN sumData)."""
    from epitensor.io.bigwig import BigWigEncoder
    from epitensor.io.writers import BigWigSink, bin_edges
    from epitensor.store.datasets import roadmap_pilot_arrays

    values = np.sinh(roadmap_pilot_arrays()[("E003", "H3K4me3")][:5000]).astype(np.float32)
    values[1234] = np.nan
    sizes = {"chr1": 249_250_621}
    sink = BigWigSink(tmp_path / "nan.bw", sizes)
    starts, ends = bin_edges(6_046_322, len(values), 25, sizes["chr1"])
    with pytest.raises(EpitensorError, match=r"1 value\(s\) are NaN or infinite.*chr1:151,188,900"):
        sink.write("chr1", starts, ends, values)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left behind
    encoder = BigWigEncoder(tmp_path / "direct.bw", sizes)
    with pytest.raises(EpitensorError, match="NaN"):
        encoder.add("chr1", starts[0], values)
    encoder.abort()


def test_C2_zoom_sums_are_accumulated_in_double(tmp_path):
    """Every zoom record's sum matches float64 sums of the written values (UCSC uses double).

    10,000 single 25-bp bins of real signal (the pilot track E003:H3K4me3, -log10 p)
    written one call each with a 25-bp gap between them, as in the trial (which
    wrote 30,000): the coarsest windows gather thousands of bins one by one. Summed
    in float32 they were off by ~1e-4 relative; stored as float32, a double sum is
    off by at most 6e-8.
    """
    import pybigtools

    from epitensor.io.bigwig import BigWigEncoder
    from epitensor.store.datasets import roadmap_pilot_arrays

    track = np.sinh(roadmap_pilot_arrays()[("E003", "H3K4me3")][:10_000].astype(np.float64))
    values = track.astype(np.float32)
    starts = 50 * np.arange(len(values))
    sizes = {"chr1": int(starts[-1]) + 100}
    encoder = BigWigEncoder(tmp_path / "z.bw", sizes)
    for start, value in zip(starts.tolist(), values):
        encoder.add("chr1", start, np.array([value], dtype=np.float32))
    encoder.close()
    reader = pybigtools.open(str(tmp_path / "z.bw"))
    worst, n_records = 0.0, 0
    for reduction in reader.zooms():
        window = starts // reduction
        expected = np.bincount(window, weights=values.astype(np.float64) * 25)
        for start, _, summary in reader.zoom_records(reduction, "chr1"):
            want = expected[start // reduction]
            worst = max(worst, abs(summary["sum"] - want) / max(abs(want), 1e-30))
            n_records += 1
    assert n_records > 100 and len(reader.zooms()) >= 4
    assert worst < 1e-6, worst


def test_C6_model_weights_get_the_usual_file_mode(tmp_path):
    """weights.safetensors and genome/*.safetensors were 0600 under umask 022."""
    import stat

    from epitensor.estimators.avocado import Avocado

    old = os.umask(0o022)
    try:
        Avocado.load(SAVED_MODEL).save(tmp_path / "m")
    finally:
        os.umask(old)
    files = sorted((tmp_path / "m").rglob("*.safetensors"))
    assert len(files) >= 2  # the network and at least one genome axis
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {"0o644"}


# B. data loss: --out equal to the command's own input ------------------------------------------


def test_L2_out_equal_to_the_commands_input_is_refused(pilot_store, tmp_path):
    """train / embed / import-reference / ingest with --out = their input and --overwrite."""
    store = tmp_path / "selfS.zarr"
    shutil.copytree(pilot_store.url, store)
    before = (store / "zarr.json").read_bytes()
    result = _run("train", store, "--out", store, "--overwrite", "--epochs", "1", "-q")
    _fails(result, "selfS.zarr", "command's input", "destroy")
    assert (store / "zarr.json").read_bytes() == before and not (store / "config.json").exists()

    model = tmp_path / "selfM"
    shutil.copytree(SAVED_MODEL, model)
    config = (model / "config.json").read_bytes()
    _fails(_run("embed", model, "--out", model, "--overwrite", "-q"), "selfM", "command's input")
    _fails(_run("embed", model, "--out", model / "inside", "-q"), "command's input")
    assert (model / "config.json").read_bytes() == config

    prefix = _reference_copy(tmp_path)
    result = _import(prefix, prefix.parent)
    assert result.exit_code == 1
    _fails(_run("import-reference", prefix, "--first-bin", REFERENCE_FIRST_BIN, "--out",
                prefix.parent, "--overwrite", "-q"), "command's input")  # fmt: skip
    assert prefix.with_suffix(".h5").is_file()

    manifest = _manifest(tmp_path, [("K562", "X", "t.bw")], "m.tsv")
    _fails(_ingest(manifest, manifest, "--overwrite"), "m.tsv", "command's input")
    assert manifest.read_text().startswith("celltype")


def test_L2_overwrite_replaces_only_an_output_of_the_commands_kind(pilot_store, tmp_path):
    """``ingest --out MODEL --overwrite`` replaced a model by a store; ``train`` a store by a model."""
    victim = tmp_path / "m_victim"
    shutil.copytree(SAVED_MODEL, victim)
    manifest = _manifest(tmp_path, [("K562", "X", "t.bw")], "m.tsv")
    _fails(_ingest(manifest, victim, "--overwrite"), "m_victim holds a model, not a store")
    assert (victim / "config.json").is_file()
    store = tmp_path / "s.zarr"
    shutil.copytree(pilot_store.url, store)
    for command in (["train", pilot_store.url], ["extend", SAVED_MODEL, pilot_store.url,
                                                 "--celltype", "E065"]):  # fmt: skip
        result = _run(*command, "--out", store, "--overwrite", "-q")
        _fails(result, "s.zarr holds a store, not a model", "--overwrite replaces only a model")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    _fails(_run("train", pilot_store.url, "--out", tmp_path / "notes", "--overwrite", "-q"),
           "holds a folder of other files")  # fmt: skip
    assert (store / "zarr.json").is_file() and (tmp_path / "notes" / "a.txt").is_file()


# D. tracebacks: impute outputs ------------------------------------------------------------------


def test_T8_impute_bedgraph_past_the_file_size_limit_is_one_line(tmp_path):
    """Under ``ulimit -f`` the bedGraph writer gave 'OSError: File too large' (45 lines)."""
    import resource

    out = tmp_path / "full" / "a.bedGraph"
    limit = 100_000  # the 6,000-bin model's bedGraph is about 200 kB

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, PYTHONPATH=SRC, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(
        [sys.executable, "-m", "epitensor.cli", "impute", str(SAVED_MODEL), "--celltype", "E003",
         "--assay", "H3K4me3", "--model-only", "--bedgraph", "--out", str(out), "-q"],
        env=env, capture_output=True, text=True, timeout=300, preexec_fn=cap,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "a.bedGraph" in lines[0] and "File too large" in lines[0]
    assert not out.exists() and [p.name for p in out.parent.iterdir() if ".tmp-" in p.name] == []


def test_T9_model_weights_past_the_file_size_limit_are_one_line(tmp_path):
    """Under ``ulimit -f`` saving a model gave a 51-line SafetensorError; the old model stays."""
    import resource

    out = tmp_path / "m_keep"
    shutil.copytree(SAVED_MODEL, out)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    limit = 20_000  # the saved model's genome factors file is larger

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code = (
        "from epitensor.cli import user_errors\nfrom epitensor.estimators.avocado import Avocado\n"
        f"user_errors(lambda: Avocado.load({str(SAVED_MODEL)!r}).save({str(out)!r}, "
        "overwrite=True))()\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300, preexec_fn=cap)  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write "), done.stderr
    assert "File too large" in lines[0] and "ulimit -f" in lines[0]
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m_keep"]  # no temporary folder left


def test_T10_benchmark_split_row_without_assay_is_one_line(tmp_path):
    """A split row ``E017`` alone: 'float' object has no attribute 'strip' before."""
    split = tmp_path / "split_bad.tsv"
    split.write_text("celltype\tassay\nE003\tH3K4me3\nE017\n")
    result = _run("benchmark", "roadmap-pilot", "--out", tmp_path / "bm", "--split", split,
                  "--preset", "none", "-q")  # fmt: skip
    _fails(result, "split_bad.tsv", "row 3", "'E017'", "lacks a cell type or an assay")
    assert not (tmp_path / "bm").exists()


def test_T11_impute_out_naming_an_existing_folder_is_one_line(tmp_path):
    """``--out dirbw.bw`` where dirbw.bw is a folder: was IsADirectoryError, and a stray done record."""
    folder = tmp_path / "dirbw.bw"
    folder.mkdir()
    result = _run("impute", SAVED_MODEL, "--celltype", "E003", "--assay", "H3K4me3",
                  "--model-only", "--out", folder, "--overwrite", "-q")  # fmt: skip
    _fails(result, "dirbw.bw", "is a folder")
    assert folder.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["dirbw.bw"]


# T6: annotate settings the HMM cannot fit -------------------------------------------------------


def test_T6_annotate_states_the_hmm_cannot_fit_are_one_line(trained_model):
    """Trial T6: 400 states on 4,000 bins left NaN start probabilities and an 86-line traceback.

    Now one line with advice, before any EM: the HMM has more free parameters than
    the sample has values (hmmlearn's criterion for a degenerate fit). (T7, 500
    components on a toy model, underflowed in hmmlearn's forward pass; the same
    ValueError path turns it into this error, but this model's features fit, so it
    is not reproduced here.)
    """

    from epitensor.workflows.annotate import annotate

    with pytest.raises(EpitensorError) as caught:
        annotate(trained_model, n_states=400, sample_size=4_000, n_iter=30, verbose=False)
    message = str(caught.value)
    assert "\n" not in message and "HMM could not be fitted" in message
    assert "free parameters" in message
    assert "--states" in message and "--sample" in message


def test_T7_annotate_hmm_forward_pass_underflow_is_one_line():
    """Trial T7: ``annotate --states 4 --components 500`` died in hmmlearn's forward pass.

    ``ValueError: forward pass failed with underflow`` (55 lines). The cause: with
    many components, some directions have almost no variance in the sample, and a bin
    that departs from them has probability 0 under every state. These features
    (50 components, 10 of them of variance ~1e-12 with 5 bins 1.0 away) reproduce it
    in the fit; it is now the same one line as T6.
    """
    from epitensor.workflows.annotate import _fit_hmm

    rng = np.random.default_rng(0)
    features = rng.normal(size=(5_000, 50))
    features[:, 40:] *= 1e-6
    features[::1_000, 40:] += 1.0
    with pytest.raises(EpitensorError) as caught:
        _fit_hmm(features, [5_000], n_states=4, n_iter=30, seed=0)
    message = str(caught.value)
    assert "\n" not in message and "HMM could not be fitted" in message
    assert "underflow" in message and "--components" in message
    assert "implementation" not in message  # hmmlearn's advice names no option of ours
    # the same features without the departing bins fit
    features[::1_000, 40:] -= 1.0
    assert _fit_hmm(features, [5_000], n_states=4, n_iter=5, seed=0).means_.shape == (4, 50)


# F. misleading messages -----------------------------------------------------------------------


def test_C7_explain_tsv_equal_to_the_figure_is_refused(tmp_path):
    """``--out x.png --tsv x.png`` overwrote the figure with the table and reported both."""
    result = _run("explain", SAVED_MODEL, "--celltype", "E003", "--assay", "H3K4me3",
                  "--region", "chr1:151158050-151160050", "--out", tmp_path / "x.png",
                  "--tsv", tmp_path / "x.png", "-q")  # fmt: skip
    text = " ".join(result.output.replace("│", " ").split())  # the message, unboxed
    assert result.exit_code == 2 and "is the figure's --out" in text, text
    assert not (tmp_path / "x.png").exists()


def test_C8_train_without_holdout_says_so_not_nan(small_pilot_store, tmp_path):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"n_celltype_factors": 4, "n_assay_factors": 4,
                                  "n_25bp_factors": 4, "n_250bp_factors": 2, "n_5kbp_factors": 2,
                                  "n_layers": 1, "n_nodes": 16, "n_epochs": 1,
                                  "batch_size": 8192}))  # fmt: skip
    result = _run("train", small_pilot_store.url, "--out", tmp_path / "m", "--preset", preset, "-q")
    assert result.exit_code == 0, result.output
    assert "no holdout" in result.stdout and "nan" not in result.stdout


def test_C5_second_impute_into_a_folder_keeps_the_first_runs_record(tmp_path):
    """-log10 p for E003, then --arcsinh for E017 into one folder: impute.json said only arcsinh."""
    base = ["impute", SAVED_MODEL, "--assay", "H3K4me3", "--model-only", "--out", tmp_path, "-q"]
    assert _run(*base, "--celltype", "E003").exit_code == 0
    assert _run(*base, "--celltype", "E017", "--arcsinh").exit_code == 0
    record = json.loads((tmp_path / "impute.json").read_text())
    assert record["tracks"] == [["E017", "H3K4me3"]] and record["scale"] == "arcsinh"
    (earlier,) = record["earlier"]
    assert earlier["tracks"] == [["E003", "H3K4me3"]] and earlier["scale"] == "-log10 p"
    assert Path(earlier["files"][0]).is_file()
    # the first track written again: its earlier record goes
    assert _run(*base, "--celltype", "E003", "--arcsinh", "--overwrite").exit_code == 0
    record = json.loads((tmp_path / "impute.json").read_text())
    assert [r["tracks"] for r in record["earlier"]] == [[["E017", "H3K4me3"]]]


def test_C3_bigwig_of_a_chromosome_past_4_gb_is_one_line(tmp_path):
    """A 5 Gb chromosome: a raw ``struct.error: 'I' format requires ...`` when the file was closed."""
    from epitensor.io.bigwig import BigWigEncoder

    with pytest.raises(EpitensorError, match=r"'chrBig' is 5,000,000,000 bp.*write bedGraph"):
        BigWigEncoder(tmp_path / "x.bw", {"chr1": 1000, "chrBig": 5_000_000_000})
    assert not (tmp_path / "x.bw").exists()


def _patch_first_chrom_size(data: bytearray, size: int) -> None:
    """Set the first chromosome's size in a bigWig's chromosome B+ tree (little-endian)."""
    tree = int.from_bytes(data[8:16], "little")  # chromTreeOffset
    key_size = int.from_bytes(data[tree + 8 : tree + 12], "little")
    item = tree + 32 + 4  # tree header, then the leaf node's header
    at = item + key_size + 4  # key, chromId, then chromSize
    data[at : at + 4] = size.to_bytes(4, "little")


def test_C3_ingest_of_a_bigwig_chromosome_past_2_gb_names_the_limit_not_corruption(
    test_data, tmp_path
):
    """A bigWig whose chr9 is 4,294,967,295 bp, read by a layout past 2^31 bp.

    Was ``cannot read axis 'regions' (OverflowError ...); the file is corrupt or
    truncated, re-download it``; the file is valid, the reader (pybigtools, signed
    32-bit positions) cannot address it. Now one line naming the file, the limit and
    the fix; a layout that stays below the limit still reads the file.
    """
    data = bytearray((test_data / COOLBOX.format("H3K27ac")).read_bytes())
    _patch_first_chrom_size(data, 2**32 - 1)
    huge = tmp_path / "huge.bw"
    huge.write_bytes(bytes(data))
    genome = tmp_path / "g.sizes"
    genome.write_text("chr9\t4294967295\n")
    manifest = _manifest(tmp_path, [("K562", "X", huge)])
    far = _bed(tmp_path, [("chr9", 4_294_000_000, 4_294_967_295)], "far.bed")
    line = _fails(
        _ingest(manifest, tmp_path / "s.zarr", "--genome", genome, "--regions", far),
        "huge.bw",
        "chromosome 'chr9' is 4,294,967,295 bp",
        "past 2,147,483,647 bp cannot be read",
        "bigWigToBedGraph",
    )
    assert "corrupt" not in line.replace("not corrupt", "")
    assert not (tmp_path / "s.zarr").exists()


def test_T9_train_checkpoint_past_the_file_size_limit_is_one_line(small_pilot_store, tmp_path):
    """``train --overwrite`` under ``ulimit -f``: the checkpoint's save was a SafetensorError traceback.

    (The model's own save was fixed first; the re-run of the trials found the
    checkpoint written before it still crashed.) The old model stays intact.
    """
    import resource

    out = tmp_path / "m_keep"
    shutil.copytree(SAVED_MODEL, out)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"n_celltype_factors": 4, "n_assay_factors": 4,
                                  "n_25bp_factors": 4, "n_250bp_factors": 2, "n_5kbp_factors": 2,
                                  "n_layers": 1, "n_nodes": 16, "n_epochs": 1,
                                  "batch_size": 8192}))  # fmt: skip
    limit = 20_000  # the checkpoint's genome factors are larger

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code = "import sys; from epitensor.cli import app; sys.argv[0] = 'epitensor'; app()"
    args = ["train", str(small_pilot_store.url), "--out", str(out), "--preset", str(preset)]
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-c", code, *args, "--overwrite", "--threads", "1", "-q"],
                          env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=cap)  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write checkpoint "), done.stderr
    assert "File too large" in lines[0] and "ulimit -f" in lines[0]
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
