"""Hostile input to `epitensor ingest`: each case gives one line and exit 1, or the right store.

Every case runs the real command (in-process through Typer's runner, or as a
subprocess where a signal, a resource limit or a kill is involved) and checks
that a failed command leaves nothing behind and changes nothing on disk.
"""

import gzip
import http.server
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError, EpitensorWarning
from epitensor.cli import app
from epitensor.io.manifest import TrackSpec
from epitensor.io.names import is_valid_name, validate_name
from epitensor.store import ingest as ingest_module
from epitensor.store.compendium import Store
from epitensor.store.ingest import ingest

COOLBOX = "coolbox/bigwig_chr9_4000000_6000000_K562_{}.bigwig"
FLOAT16 = {"rtol": 1e-3, "atol": 1e-3}
WIDE = (("chr9", 4_000_000, 4_500_000),)  # where the CoolBox bigWigs have signal
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _manifest(folder, rows, columns=("celltype", "assay", "path"), name="manifest.tsv"):
    path = folder / name
    lines = ["\t".join(columns)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _bed(folder, regions=(("chr9", 4_000_000, 4_000_100),)):
    path = folder / "regions.bed"
    path.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in regions))
    return path


def _text(folder, content, name="t.bedGraph"):
    path = folder / name
    path.write_text(content)
    return path


def _ingest(manifest, out, *extra):
    args = ["ingest", str(manifest), "--out", str(out), "--quiet", "--workers", "1", *extra]
    return CliRunner().invoke(app, args)


def _fails(result, *needles):
    """Exit 1 with one line 'error: ...' on stderr, naming every needle; no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def _leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


def _files(folder):
    """Every file under ``folder`` with its bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


def _cli_process(args, limit_bytes=None, **kwargs):
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONDONTWRITEBYTECODE="1")

    def limit():  # a file-size limit makes writes past it fail with EFBIG, as a full disk does
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen(
        [sys.executable, "-m", "epitensor.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit if limit_bytes else None,
        **kwargs,
    )


# (2) one huge value ---------------------------------------------------------------------


def test_huge_bedgraph_value_is_an_error_naming_the_line(tmp_path):
    text = _text(tmp_path, "chr9\t4000000\t4000025\t1\nchr9\t4000025\t4000050\t1e300\n")
    result = _ingest(
        _manifest(tmp_path, [("K562", "X", text)]), tmp_path / "s", "--regions", str(_bed(tmp_path))
    )
    _fails(result, text, "line 2", "1e300", "float32")
    assert not (tmp_path / "s").exists() and _leftovers(tmp_path) == []


def test_value_beyond_the_store_dtype_after_transform_is_an_error(tmp_path):
    """An already-arcsinh array holding 1e5 (float32, not float16) names the bin and range."""
    values = np.zeros(4)
    values[2] = 1e5
    np.save(tmp_path / "a.npy", values)
    manifest = _manifest(
        tmp_path,
        [("K562", "X", tmp_path / "a.npy", "arcsinh")],
        ("celltype", "assay", "path", "scale"),
    )
    result = _ingest(manifest, tmp_path / "s", "--regions", str(_bed(tmp_path)))
    _fails(result, "chr9:4,000,050", "float16")
    assert not (tmp_path / "s").exists()


def test_a_large_finite_value_does_not_blur_the_bins_after_it(tmp_path):
    """A 1e30 record (fits float32; arcsinh = 69.1) leaves the next bin exact."""
    text = _text(tmp_path, "chr9\t4000000\t4000025\t1e30\nchr9\t4000025\t4000050\t1\n")
    result = _ingest(
        _manifest(tmp_path, [("K562", "X", text)]), tmp_path / "s", "--regions", str(_bed(tmp_path))
    )
    assert result.exit_code == 0, result.output
    got = Store.open(tmp_path / "s").read_track("K562", "X")
    np.testing.assert_allclose(got, [np.arcsinh(1e30), np.arcsinh(1), 0, 0], **FLOAT16)
    assert np.isfinite(got).all()


# (3) ragged manifest rows ---------------------------------------------------------------


def test_manifest_row_with_an_extra_field_names_the_line(test_data, tmp_path):
    bigwig = test_data / COOLBOX.format("RNA")
    manifest = tmp_path / "m.tsv"
    manifest.write_text(f"celltype\tassay\tpath\nK562\tH3K4me3\t{bigwig}\textra\n")
    result = _ingest(manifest, tmp_path / "s", "--regions", str(_bed(tmp_path, WIDE)))
    _fails(result, manifest, "line 2", "4 tab-separated fields", "header has 3")
    manifest.write_text("celltype\tassay\tpath\nK562\tH3K4me3\n")
    _fails(_ingest(manifest, tmp_path / "s"), "line 2", "2 tab-separated fields")
    assert not (tmp_path / "s").exists()


def test_manifest_trailing_tabs_and_blank_lines_are_tolerated(test_data, tmp_path):
    bigwig = test_data / COOLBOX.format("RNA")
    manifest = tmp_path / "m.tsv"
    manifest.write_text(f"celltype\tassay\tpath\t\r\n\nK562\tRNA\t{bigwig}\t\r\n\n")
    result = _ingest(manifest, tmp_path / "s", "--regions", str(_bed(tmp_path, WIDE)))
    assert result.exit_code == 0, result.output
    assert Store.open(tmp_path / "s").track_names() == [("K562", "RNA")]


# (5) overlapping records ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content, fmt, line, other",
    [
        ("chr9\t4000000\t4000100\t1\nchr9\t4000020\t4000030\t5\n", "bedGraph", 2, 1),
        ("chr9\t4000020\t4000030\t5\nchr9\t4000000\t4000100\t1\n", "bedGraph", 1, 2),
        ("variableStep chrom=chr9 span=50\n4000001 1\n4000011 2\n", "wig", 3, 2),
        ("fixedStep chrom=chr9 start=4000001 step=10 span=20\n1\n2\n", "wig", 3, 2),
    ],
)
def test_overlapping_records_are_refused_naming_both_lines(tmp_path, content, fmt, line, other):
    """Nested bedGraph intervals lost the outer tail; now refused, in either order, wig too."""
    text = _text(tmp_path, content, f"t.{fmt}")
    result = _ingest(
        _manifest(tmp_path, [("K562", "X", text)]), tmp_path / "s", "--regions", str(_bed(tmp_path))
    )
    _fails(result, text, f"line {line}:", f"of line {other}", "must not overlap")
    assert not (tmp_path / "s").exists() and _leftovers(tmp_path) == []


# (8) names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ['K5"62', "E003:x", "K5/62", "a b", "-x", "é", "x" * 101])
def test_names_outside_the_rule_are_refused_at_ingest(test_data, tmp_path, name):
    bigwig = test_data / COOLBOX.format("RNA")
    result = _ingest(_manifest(tmp_path, [(name, "RNA", bigwig)]), tmp_path / "s")
    _fails(result, "line 2", "invalid cell type name", "letters, digits")
    result = _ingest(_manifest(tmp_path, [("K562", name, bigwig)]), tmp_path / "s")
    _fails(result, "line 2", "invalid assay name")
    assert not (tmp_path / "s").exists()


def test_name_rule_and_validate_name():
    for good in ("E003", "H3K4me3", "H2A.Z", "CD4+_CD25-", "IMR-90", "x" * 100):
        assert is_valid_name(good) and validate_name(good, "assay") == good
    for bad in ("", "K562\n", "a\tb", "a'b", "a:b", ".hidden", None, 3):
        assert not is_valid_name(bad)
    with pytest.raises(EpitensorError, match=r"invalid cell type name 'E003\\ninjected'") as info:
        ingest([TrackSpec("E003\ninjected", "H3K4me3", "x.bw")], "unused")
    assert "\n" not in str(info.value)


# (9) downloads --------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """/slow trickles bytes (at most 40 x 0.1 s); /big sends 2 MiB; /nolength 2 MiB unsized."""

    def do_GET(self):  # noqa: N802 - the http.server API
        self.send_response(200)
        if self.path == "/slow":
            self.send_header("Content-Length", "4000")
            self.end_headers()
            for _ in range(40):
                try:
                    self.wfile.write(b"x" * 10)
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)
            return
        if self.path == "/big":
            self.send_header("Content-Length", str(2 << 20))
        self.end_headers()
        try:
            self.wfile.write(b"\0" * (2 << 20))
        except OSError:
            return

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_deadline(server, tmp_path):
    manifest = _manifest(tmp_path, [("K562", "X", f"{server}/slow")])
    start = time.monotonic()
    result = _ingest(manifest, tmp_path / "s", "--download-timeout", "0.5")
    _fails(result, "download deadline", "--download-timeout", f"{server}/slow")
    assert time.monotonic() - start < 3  # the server would trickle for 4 s
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("path", ["big", "nolength"])
def test_download_size_cap(server, tmp_path, path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    manifest = _manifest(tmp_path, [("K562", "X", f"{server}/{path}")])
    result = _ingest(manifest, tmp_path / "s", "--max-download", "1M", "--scratch", str(scratch))
    _fails(result, "over the limit of 1,048,576 bytes", "--max-download")
    assert _leftovers(tmp_path) == [] and list(scratch.iterdir()) == []
    _fails(_ingest(manifest, tmp_path / "s", "--max-download", "lots"), "invalid size")


def test_sigterm_during_a_download_removes_the_scratch(server, tmp_path):
    manifest = _manifest(tmp_path, [("K562", "X", f"{server}/slow")])
    process = _cli_process(["ingest", str(manifest), "--out", str(tmp_path / "s"), "--quiet"])
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".s.ingest-*/downloads/*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".s.ingest-*/downloads/*")), "the download never started"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert _leftovers(tmp_path) == [] and not (tmp_path / "s").exists()


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_next_run_removes_the_scratch_of_a_dead_run(test_data, tmp_path):
    import socket

    host = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())
    stale = tmp_path / f".s.ingest-{host}-{_dead_pid()}"
    (stale / "downloads").mkdir(parents=True)
    (stale / "downloads" / "0-big.bw").write_bytes(b"partial")
    (tmp_path / ".s.tmp-abcd1234").mkdir()
    (stale / "owns").write_text(".s.tmp-abcd1234\n")
    alive = tmp_path / f".s.ingest-{host}-{os.getppid()}"  # a live process's: kept
    alive.mkdir()
    earlier_boot = tmp_path / f".s.ingest-{host}-{os.getpid()}.3"  # our PID, not in use
    (earlier_boot / "downloads").mkdir(parents=True)
    bigwig = test_data / COOLBOX.format("RNA")
    result = _ingest(
        _manifest(tmp_path, [("K562", "RNA", bigwig)]),
        tmp_path / "s",
        "--regions",
        str(_bed(tmp_path, WIDE)),
    )
    assert result.exit_code == 0, result.output
    assert not stale.exists() and not (tmp_path / ".s.tmp-abcd1234").exists()
    assert not earlier_boot.exists()
    assert alive.is_dir() and _leftovers(tmp_path) == [alive.name]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_workers_exit_when_the_parent_is_killed(tmp_path):
    script = (
        "import time; from epitensor.store.ingest import _executor\n"
        "pool = _executor(2)\n"
        "futures = [pool.submit(time.sleep, 60), pool.submit(time.sleep, 0)]\n"
        "time.sleep(2)\n"
        "print(*pool._processes, flush=True)\n"
        "time.sleep(120)\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC)
    parent = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    stragglers = [p for p in workers if _alive(p)]
    for pid in stragglers:  # leave no process behind, whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert stragglers == []


# (10) unreadable files, bad wig, disks that refuse writes ------------------------------


def test_corrupt_gzip_is_one_line(tmp_path):
    lines = "".join(f"chr9\t{4000000 + 10 * i}\t{4000010 + 10 * i}\t{i % 7}\n" for i in range(2000))
    data = bytearray(gzip.compress(lines.encode(), mtime=0))
    data[100:116] = bytes(16)  # zlib.error "invalid distance too far back" (not a CRC error)
    path = tmp_path / "t.bedGraph.gz"
    path.write_bytes(bytes(data))
    result = _ingest(_manifest(tmp_path, [("K562", "X", path)]), tmp_path / "s")
    _fails(result, path, "corrupt")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "header, field",
    [
        ("fixedStep chrom=chr9 start=4000001 step=0", "step=0"),
        ("fixedStep chrom=chr9 start=4000001 step=-25", "step=-25"),
        ("fixedStep chrom=chr9 start=4000001 span=0", "span=0"),
        ("variableStep chrom=chr9 span=abc", "span=abc"),
        ("fixedStep chrom=chr9", "needs start="),
    ],
)
def test_wig_bad_step_is_one_line(tmp_path, header, field):
    text = _text(tmp_path, f"{header}\n1\n2\n", "t.wig")
    result = _ingest(_manifest(tmp_path, [("K562", "X", text)]), tmp_path / "s")
    _fails(result, text, "line 1", field)


def test_text_lines_that_are_not_numbers_name_the_line(tmp_path):
    text = _text(tmp_path, "chr9\t4000000\t4000025\t1\nchr9\t4000025\t4000050\tabc\n")
    _fails(_ingest(_manifest(tmp_path, [("K562", "X", text)]), tmp_path / "s"), "line 2", "'abc'")
    text = _text(tmp_path, "chr9\t4000050\t4000025\t1\n")
    _fails(
        _ingest(_manifest(tmp_path, [("K562", "X", text)]), tmp_path / "s"),
        "line 1",
        "ends before it starts",
    )
    text = _text(tmp_path, "fixedStep chrom=chr9 start=4000001\n1\ntrack name=b\n2\n", "t.wig")
    _fails(
        _ingest(_manifest(tmp_path, [("K562", "X", text)]), tmp_path / "s"),
        "line 4",
        "before any fixedStep",
    )


def test_manifest_or_track_path_that_is_a_folder(tmp_path):
    folder = tmp_path / "tracks"
    folder.mkdir()
    _fails(_ingest(folder, tmp_path / "s"), folder, "is a folder")
    result = _ingest(_manifest(tmp_path, [("K562", "X", folder)]), tmp_path / "s")
    _fails(result, folder, "is a folder")


def test_output_under_a_regular_file(test_data, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    bigwig = test_data / COOLBOX.format("RNA")
    result = _ingest(_manifest(tmp_path, [("K562", "RNA", bigwig)]), tmp_path / "file" / "s")
    _fails(result, "cannot write", "is a file, not a folder")
    assert (tmp_path / "file").read_text() == "not a folder"


def _store_for_append(test_data, tmp_path):
    regions = _bed(tmp_path, [("chr9", 4_000_000, 4_400_000)])
    bigwig = test_data / COOLBOX.format("H3K27ac")
    result = _ingest(
        _manifest(tmp_path, [("K562", "H3K27ac", bigwig)]),
        tmp_path / "s",
        "--regions",
        str(regions),
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "s"


def test_disk_full_during_ingest_and_append(test_data, tmp_path):
    """RLIMIT_FSIZE makes every write past 4 KiB fail with EFBIG, as a full disk does."""
    store = _store_for_append(test_data, tmp_path)
    before = _files(store)
    rows = [("K562", a, test_data / COOLBOX.format(a)) for a in ("RNA", "H3K27me3")]
    manifest = _manifest(tmp_path, rows, name="more.tsv")
    for extra in (["--append"], []):
        out = store if extra else tmp_path / "new"
        process = _cli_process(
            [
                "ingest",
                str(manifest),
                "--out",
                str(out),
                "--quiet",
                "--workers",
                "1",
                "--regions",
                str(tmp_path / "regions.bed"),
                *extra,
            ],
            limit_bytes=4096,
        )
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 1, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot write" in lines[0] and "store" in lines[0], stderr
        assert "File too large" in lines[0]
    assert _files(store) == before
    assert not (tmp_path / "new").exists() and _leftovers(tmp_path) == []


def test_failed_append_leaves_the_store_byte_identical(test_data, tmp_path, monkeypatch):
    """The second track fails while the first is already written (tracks streamed one by one)."""
    store = _store_for_append(test_data, tmp_path)
    before = _files(store)
    monkeypatch.setattr(ingest_module, "BLOCK_BYTES", 0)
    outside = _text(tmp_path, "chr9\t100\t200\t3\n")  # no signal inside the layout
    rows = [
        ("K562", "RNA", test_data / COOLBOX.format("RNA")),
        ("K562", "Y", outside),
    ]
    result = _ingest(_manifest(tmp_path, rows, name="more.tsv"), store, "--append")
    _fails(result, "empty track, no signal", outside)
    assert _files(store) == before
    assert _leftovers(tmp_path) == []
    assert Store.open(store).track_names() == [("K562", "H3K27ac")]


def test_an_append_killed_outright_is_undone_by_the_next_run(test_data, tmp_path):
    """A process snapshots the store, writes a track, and dies without cleaning up."""
    store = _store_for_append(test_data, tmp_path)
    original = Store.open(store).read_track("K562", "H3K27ac")
    script = (
        "import os, sys, numpy as np\n"
        "from epitensor.io.fetch import RunScratch\n"
        "from epitensor.store.compendium import Store\n"
        "scratch = RunScratch(sys.argv[1]).__enter__()\n"
        "scratch.snapshot(sys.argv[1])\n"
        "store = Store.open(sys.argv[1], mode='r+')\n"
        "store.add_track('K562', 'half', [('regions', np.ones(store.axis_length('regions')))])\n"
        "os._exit(9)\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC)
    dead = subprocess.run([sys.executable, "-c", script, str(store)], env=env, timeout=120)
    assert dead.returncode == 9
    assert Store.open(store).track_names() == [("K562", "H3K27ac"), ("K562", "half")]
    rna = [("K562", "RNA", test_data / COOLBOX.format("RNA"))]
    with pytest.warns(EpitensorWarning, match="restored .* interrupted in process"):
        result = _ingest(_manifest(tmp_path, rna, name="more.tsv"), store, "--append")
    assert result.exit_code == 0, result.output
    after = Store.open(store)
    assert after.track_names() == [("K562", "H3K27ac"), ("K562", "RNA")]
    np.testing.assert_array_equal(after.read_track("K562", "H3K27ac"), original)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"celltype\tassay\tpath\n\n", "lists no tracks"),
        (b"celltype\tassay\tpath\nK562\tX\t\xff\xfe.bw\n", "not UTF-8"),
        (b"celltype\tassay\tpath\tassay\nK562\tX\ta.bw\tY\n", "more than once"),
        (b"celltype\tassay\tpath\nK562\tX\ta\x01.bw\n", "control character"),
        (b"celltype\tassay\tpath\tmd5\nK562\tX\ta.bw\tabc\n", "invalid md5"),
        (b"celltype\tassay\tpath\tscale\nK562\tX\ta.bw\tlog\n", "invalid scale"),
        (b"celltype\tassay\tpath\nK562\tX\ta.bw\nK562\tX\tb.bw\n", "duplicate track"),
    ],
)
def test_bad_manifests_are_one_line(tmp_path, content, message):
    manifest = tmp_path / "m.tsv"
    manifest.write_bytes(content)
    _fails(_ingest(manifest, tmp_path / "s"), manifest, message)
    assert not (tmp_path / "s").exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "content, name, message",
    [
        ("chr9\t4000000\t99999999999999999999\t1\n", "t.bedGraph", "'99999999999999999999' is out"),
        ("chr9\t4000000\t4000025\t1\nchr9\t4000025\t4000050\n", "t.bedGraph", "line 2: a data"),
        ("chr9\t4000000\t4000025\t1 chr9\t4000025\t4000050\t2\n", "t.bedGraph", "got 8"),
        ("fixedStep chrom=chr9 start=4000001\n1 2\n", "t.wig", "holds 1 number(s), got 2"),
        ("variableStep chrom=chr9\n4000001\n", "t.wig", "holds 2 number(s), got 1"),
        ("variableStep chrom=chr9\n0 1\n", "t.wig", "position 0 must be >= 1"),
        ("variableStep chrom=chr9 colour=red\n4000001 1\n", "t.wig", "unknown variableStep field"),
        ("variableStep span=5\n4000001 1\n", "t.wig", "needs chrom="),
    ],
)
def test_malformed_text_lines_are_one_line(tmp_path, content, name, message):
    text = _text(tmp_path, content, name)
    _fails(_ingest(_manifest(tmp_path, [("K562", "X", text)]), tmp_path / "s"), text, message)


def test_bad_download_limits(tmp_path):
    manifest = _manifest(tmp_path, [("K562", "X", "http://127.0.0.1:9/x.bw")])
    _fails(_ingest(manifest, tmp_path / "s", "--download-timeout", "0"), "positive number")
    _fails(_ingest(manifest, tmp_path / "s", "--max-download", "0"), "at least 1 byte")


def test_bedgraph_with_lone_carriage_returns_reads_every_record(tmp_path):
    """Old Mac line ends: each record still counts (no record swallowed by its neighbour)."""
    text = tmp_path / "t.bedGraph"
    text.write_bytes(b"track type=bedGraph\rchr9\t4000000\t4000025\t1\rchr9\t4000025\t4000050\t2\r")
    result = _ingest(
        _manifest(tmp_path, [("K562", "X", text)]), tmp_path / "s", "--regions", str(_bed(tmp_path))
    )
    assert result.exit_code == 0, result.output
    got = Store.open(tmp_path / "s").read_track("K562", "X")
    np.testing.assert_allclose(got, np.arcsinh([1, 2, 0, 0]), **FLOAT16)


def test_unreadable_track_file(tmp_path):
    """/proc/self/mem is a regular file whose first bytes cannot be read (EIO)."""
    result = _ingest(_manifest(tmp_path, [("K562", "X", "/proc/self/mem")]), tmp_path / "s")
    _fails(result, "/proc/self/mem", "cannot read the file", "Input/output error")
    assert not (tmp_path / "s").exists() and _leftovers(tmp_path) == []
