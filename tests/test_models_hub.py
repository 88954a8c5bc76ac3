"""Published models: the registry, ``epitensor models``, and pulls from real HTTP servers on 127.0.0.1.

These machines cannot reach Zenodo or the authors' lab server, so a test
server stands in for both: a Zenodo-shaped files API (``/api/records/<id>``,
JSON with keys, sizes, md5 checksums and links) and a lab-server-shaped folder
(``/lab/<model>/avocado-<chrom>.{json,h5}``), serving a small model written in
the original's own format by ``scripts/make_reference_model.py``. The real
download code runs against it; the base URLs are moved there through the
documented environment variables.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError
from epitensor.cli import app

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from make_reference_model import TINY  # noqa: E402  (the tiny sizes of the benchmarks' --quick)

POSITIONS = 20_000  # the first 500 kb of each chromosome: a whole-chromosome model, cut short
ORIGINAL_CLI_MODELS = [  # cli/avocado-impute's --model choices, less 'custom'
    "roadmap-hg19",
    "encode2018core-hg38",
    "encode2018full-hg38",
    "entex2019-hg38",
    "encode2019mouse-mm10",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, bytes]:
    """``{file name: bytes}`` of a chr21 + chr22 model in the original's format."""
    sys.path.insert(0, str(REPO / "scripts"))
    import make_reference_model

    out = tmp_path_factory.mktemp("original") / "avocado"
    files = make_reference_model.make_model(
        out, ["chr21", "chr22"], TINY, 4, 3, 8, seed=5, positions=POSITIONS, verbose=False
    )
    return {p.name: p.read_bytes() for pair in files.values() for p in pair}


class Server:
    """A real HTTP server: Zenodo's record API and the lab server's folders, with faults."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.record_files = set(files)  # what the Zenodo record lists
        self.lab_files = set(files)  # what the lab server holds
        self.cut: set[str] = set()  # close the connection half way through these, once
        self.corrupt: set[str] = set()  # serve these with a byte flipped
        self.stall: set[str] = set()  # send the headers, then nothing
        self.ranges = True  # honour Range requests (206); False: always the whole file (200)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.release = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                owner.requests.append((self.path, self.headers.get("Range")))
                owner.answer(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def hits(self, part: str) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if part in r[0]]

    def answer(self, handler) -> None:
        parts = handler.path.strip("/").split("/")
        if parts[:2] == ["api", "records"] and len(parts) == 3:
            return self.record(handler, parts[2])
        if parts[:2] == ["api", "records"] and parts[3:4] == ["files"] and len(parts) == 6:
            return self.file(handler, parts[4], self.record_files)
        if parts[0] == "lab" and len(parts) == 3:
            return self.file(handler, parts[2], self.lab_files)
        handler.send_error(404)

    def record(self, handler, record_id: str) -> None:
        """Zenodo's ``GET /api/records/<id>``: keys, sizes, ``md5:`` checksums and links."""
        entries = [
            {
                "id": f"file-{i}",
                "key": name,
                "size": len(self.files[name]),
                "checksum": "md5:" + hashlib.md5(self.files[name]).hexdigest(),
                "links": {"self": f"{self.url}/api/records/{record_id}/files/{name}/content"},
            }
            for i, name in enumerate(sorted(self.record_files))
        ]
        body = json.dumps({"id": int(record_id), "files": entries}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def file(self, handler, name: str, held: set[str]) -> None:
        if name not in held:
            return handler.send_error(404)
        data = self.files[name]
        if name in self.corrupt:
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        start = 0
        ranged = handler.headers.get("Range") if self.ranges else None
        if ranged:
            start = int(ranged.split("=")[1].split("-")[0])
        handler.send_response(206 if ranged else 200)
        handler.send_header("Content-Length", str(len(data) - start))
        if ranged:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if name in self.stall:
            self.release.wait(30)
            return
        if name in self.cut:
            self.cut.discard(name)
            handler.wfile.write(data[start : start + (len(data) - start) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(data[start:])


@pytest.fixture
def server(served, monkeypatch, tmp_path):
    """A fresh server per test; the cache and both base URLs moved through the environment."""
    srv = Server(served)
    monkeypatch.setenv("EPITENSOR_ZENODO_API", f"{srv.url}/api")
    monkeypatch.setenv("EPITENSOR_MODELS_URL", f"{srv.url}/lab")
    monkeypatch.setenv("EPITENSOR_CACHE", str(tmp_path / "cache"))
    yield srv
    srv.close()


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _original(tmp_path) -> Path:
    return tmp_path / "cache" / "models"


# the registry -------------------------------------------------------------------------


def test_models_list_prints_every_model_the_original_cli_offered():
    result = _cli("models", "list")
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines()[1:]]
    assert names == ORIGINAL_CLI_MODELS
    assert "zenodo 4774412" in result.output and "zenodo 4774521" in result.output


def test_models_show_lists_the_cell_types_and_assays_of_the_original_tables(tmp_path):
    result = _cli("models", "show", "roadmap-hg19", "--cache", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "cell types (127," in result.output and "assays (24," in result.output
    assert " E116 " in result.output and " H3K27ac " in result.output
    assert "/roadmap/avocado-<chrom>.{json,h5}" in result.output
    assert "chr22" in result.output and "chrX" not in result.output  # no chrX in Roadmap's
    core = _cli("models", "show", "encode2018core-hg38", "--cache", str(tmp_path))
    assert "cell types (400," in core.output and "ChIP-seq_REST_signal_p-value" in core.output
    unknown = _cli("models", "show", "roadmap")
    assert unknown.exit_code == 1
    assert "no published model named 'roadmap'; known: roadmap-hg19" in unknown.output


def test_the_cache_folder_follows_the_argument_then_the_variable(monkeypatch, tmp_path):
    from epitensor.io.hub import cache_root

    monkeypatch.setenv("EPITENSOR_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("EPITENSOR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert cache_root() in (tmp_path / "xdg" / "epitensor", Path.home() / ".cache/epitensor")


# pulls --------------------------------------------------------------------------------


def test_pull_from_the_zenodo_record_verifies_pins_and_a_second_pull_does_nothing(
    server, served, tmp_path
):
    result = _cli("models", "pull", "roadmap-hg19", "--chrom", "chr21", "-q")
    assert result.exit_code == 0, result.output
    assert "downloaded and verified 2 file(s), converted chr21" in result.output
    assert server.hits("/lab/") == []  # everything came from the record
    assert not server.hits("chr22")  # only the chromosome asked for
    folder = _original(tmp_path) / "roadmap-hg19"
    pins = json.loads((folder / "files.json").read_text())
    assert pins["avocado-chr21.h5"]["md5"] == _md5(served["avocado-chr21.h5"])
    assert (folder / "original" / "avocado-chr21.h5").read_bytes() == served["avocado-chr21.h5"]
    import epitensor as et

    model = et.Avocado.load(folder / "model")
    assert list(model.genome_axes_) == ["chr21"] and len(model.celltypes_) == 4
    n = len(server.requests)
    again = _cli("models", "pull", "roadmap-hg19", "--chrom", "chr21", "-q")
    assert again.exit_code == 0, again.output
    assert "chr21 already pulled and verified" in again.output and "nothing to do" in again.output
    assert len(server.requests) == n  # not even the record was asked again
    listed = _cli("models", "list")
    assert "roadmap-hg19" in listed.output and "chr21" in listed.output


def test_pull_from_the_lab_server_pins_the_first_download_and_adds_chromosomes(
    server, served, tmp_path
):
    result = _cli("models", "pull", "encode2018full-hg38", "--chrom", "chr22", "-q")
    assert result.exit_code == 0, result.output
    assert len(server.hits("/lab/encode2018full/")) == 2 and server.hits("/api/") == []
    folder = _original(tmp_path) / "encode2018full-hg38"
    pins = json.loads((folder / "files.json").read_text())
    assert pins["avocado-chr22.json"]["md5"] == _md5(served["avocado-chr22.json"])
    more = _cli("models", "pull", "encode2018full-hg38", "--chrom", "chr21", "-q")
    assert more.exit_code == 0, more.output
    assert "converted chr21, chr22" in more.output
    assert len(server.hits("chr22")) == 2  # chr22 was not downloaded again
    # a pinned file removed and served corrupt is refused against its pin
    (folder / "original" / "avocado-chr22.h5").unlink()
    server.corrupt.add("avocado-chr22.h5")
    shutil.rmtree(folder / "model")
    bad = _cli("models", "pull", "encode2018full-hg38", "--chrom", "chr22", "-q")
    assert bad.exit_code == 1
    assert "avocado-chr22.h5" in bad.output and "the first verified download" in bad.output


def test_a_pull_cut_half_way_resumes_where_it_stopped(server, served, tmp_path):
    server.cut.add("avocado-chr21.h5")
    size = len(served["avocado-chr21.h5"])
    first = _cli("models", "pull", "roadmap-hg19", "--chrom", "chr21", "-q")
    assert first.exit_code == 1
    assert f"the connection closed after {size // 2:,} of {size:,} bytes" in first.output
    assert "run the same command again to resume" in first.output
    part = _original(tmp_path) / "roadmap-hg19" / "original" / "avocado-chr21.h5.part"
    assert part.stat().st_size == size // 2
    second = _cli("models", "pull", "roadmap-hg19", "--chrom", "chr21", "-q")
    assert second.exit_code == 0, second.output
    assert server.hits("avocado-chr21.h5")[-1][1] == f"bytes={size // 2}-"
    done = part.with_name("avocado-chr21.h5")
    assert done.read_bytes() == served["avocado-chr21.h5"] and not part.exists()


def test_a_server_that_ignores_ranges_gets_the_whole_file_again(server, served, tmp_path):
    server.cut.add("avocado-chr21.h5")
    server.ranges = False
    assert _cli("models", "pull", "roadmap-hg19", "--chrom", "chr21", "-q").exit_code == 1
    result = _cli("models", "pull", "roadmap-hg19", "--chrom", "chr21", "-q")
    assert result.exit_code == 0, result.output
    done = _original(tmp_path) / "roadmap-hg19" / "original" / "avocado-chr21.h5"
    assert done.read_bytes() == served["avocado-chr21.h5"]


def test_both_shapes_of_the_zenodo_record_are_read():
    """The legacy list of files and InvenioRDM's ``{"entries": {...}}`` with content links."""
    from epitensor.io.hub import _zenodo_entries

    entry = {"key": "avocado-chr1.h5", "size": 3, "checksum": "md5:abc", "links": {}}
    assert _zenodo_entries({"files": [entry]}) == [entry]
    assert _zenodo_entries({"files": {"enabled": True, "entries": {"a": entry}}}) == [entry]
    assert _zenodo_entries({"entries": [entry, {"no": "key"}]}) == [entry]


def test_a_corrupt_file_is_refused_named_and_removed(server, tmp_path):
    server.corrupt.add("avocado-chr21.h5")
    result = _cli("models", "pull", "roadmap-hg19", "--chrom", "chr21", "-q")
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: avocado-chr21.h5 from http://127.0.0.1")
    assert "is corrupt (md5" in line and "from zenodo record 4774412" in line
    original = _original(tmp_path) / "roadmap-hg19" / "original"
    assert sorted(p.name for p in original.iterdir()) == ["avocado-chr21.json"]
    assert not (original.parent / "model").exists()


def test_a_stalling_server_meets_the_deadline(server):
    from epitensor.workflows.pretrained import pull_model

    server.stall.add("avocado-chr21.h5")
    tic = time.monotonic()
    with pytest.raises(EpitensorError, match=r"avocado-chr21.h5: download deadline reached"):
        pull_model("roadmap-hg19", ["chr21"], timeout=1.0, verbose=False)
    assert time.monotonic() - tic < 10


def test_a_missing_file_is_one_line_naming_the_url_and_the_fix(server):
    server.lab_files.discard("avocado-chr22.h5")
    result = _cli("models", "pull", "entex2019-hg38", "--chrom", "chr22", "-q")
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line
    assert f"{server.url}/lab/entex2019/avocado-chr22.h5 not found (HTTP 404)" in line
    assert "set EPITENSOR_MODELS_URL" in line and "import-reference" in line


def test_a_record_lacking_a_file_falls_back_to_the_lab_server(server, served, tmp_path):
    server.record_files.discard("avocado-chr22.h5")
    with pytest.warns(Warning, match="Zenodo record 4774412 holds no avocado-chr22.h5"):
        from epitensor.workflows.pretrained import pull_model

        result = pull_model("roadmap-hg19", ["chr22"], verbose=False)
    assert result.chroms == ["chr22"] and len(server.hits("/lab/roadmap/avocado-chr22.h5")) == 1


def test_a_read_only_cache_is_a_clear_error(server, tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    try:
        (folder / "probe").touch()  # root writes through the mode bits
        (folder / "probe").unlink()
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode
        immutable = immutable == 0
        if not immutable:
            pytest.skip("cannot make a folder read-only for this user")
    except PermissionError:
        pass
    try:
        result = _cli("models", "pull", "roadmap-hg19", "--chrom", "chr21", "--cache", str(folder))
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and f"cannot write the model cache {folder}/models/roadmap-hg19" in line
    assert "pass --cache DIR or set EPITENSOR_CACHE to a writable folder" in line
    assert server.requests == []


# using a name wherever a model goes ---------------------------------------------------


def test_impute_by_name_equals_import_reference_on_the_same_files(server, served, tmp_path):
    originals = tmp_path / "by-hand"
    originals.mkdir()
    for name, data in served.items():
        (originals / name).write_bytes(data)
    by_hand = tmp_path / "imported"
    result = _cli("import-reference", str(originals / "avocado"), "--chrom", "chr21",
                  "--out", str(by_hand), "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    common = ["--celltype", "E002", "--assay", "H3K27me3", "--chrom", "chr21", "--bedgraph", "-q"]
    mine = _cli("impute", "roadmap-hg19", *common, "--out", str(tmp_path / "pulled.bedGraph"))
    assert mine.exit_code == 0, mine.output
    theirs = _cli("impute", str(by_hand), *common, "--out", str(tmp_path / "imported.bedGraph"))
    assert theirs.exit_code == 0, theirs.output
    pulled = (tmp_path / "pulled.bedGraph").read_text()
    assert pulled == (tmp_path / "imported.bedGraph").read_text()
    assert len(pulled.splitlines()) > 100 and not server.hits("chr22")  # only chr21 pulled
    import epitensor as et

    model = et.pretrained("roadmap-hg19", chroms=["chr21"], verbose=False)
    reference = et.import_reference(originals / "avocado", "hg19", chroms=["chr21"], verbose=False)
    got = model.predict("E002", "H3K27me3", axis="chr21")
    np.testing.assert_array_equal(got, reference.predict("E002", "H3K27me3", axis="chr21"))


@pytest.mark.slow
def test_extend_by_name_pulls_the_stores_chromosomes_and_imputes_the_new_cell_type(
    tmp_path, monkeypatch
):
    """The docs' path on a whole-chr21 model: pull by name, extend from two bigWigs, impute."""
    import pyBigWig

    sys.path.insert(0, str(REPO / "scripts"))
    import make_reference_model

    from epitensor.genome.coordinates import chrom_sizes

    files = make_reference_model.make_model(
        tmp_path / "lab" / "roadmap" / "avocado", ["chr21"], TINY, 4, 3, 8, seed=5, verbose=False
    )
    srv = Server({p.name: p.read_bytes() for pair in files.values() for p in pair})
    monkeypatch.setenv("EPITENSOR_ZENODO_API", f"{srv.url}/api")
    monkeypatch.setenv("EPITENSOR_MODELS_URL", f"{srv.url}/lab")
    monkeypatch.setenv("EPITENSOR_CACHE", str(tmp_path / "cache"))
    size = int(chrom_sizes("hg19")["chr21"])
    rng = np.random.default_rng(0)
    rows = ["celltype\tassay\tpath"]
    for assay in ("H3K4me3", "H3K27me3"):
        path = tmp_path / f"MyCells.{assay}.bigWig"
        with pyBigWig.open(str(path), "w") as bw:
            bw.addHeader([("chr21", size)])
            values = rng.gamma(0.3, 2.0, -(-size // 1000)).tolist()
            bw.addEntries("chr21", 0, values=values, span=1000, step=1000)
        rows.append(f"MyCells\t{assay}\t{path}")
    (tmp_path / "mine.tsv").write_text("\n".join(rows) + "\n")
    try:
        ingest = _cli("ingest", str(tmp_path / "mine.tsv"), "--out", str(tmp_path / "mine.zarr"),
                      "--genome", "hg19", "-q")  # fmt: skip
        assert ingest.exit_code == 0, ingest.output
        extend = _cli("extend", "roadmap-hg19", str(tmp_path / "mine.zarr"), "--celltype",
                      "MyCells", "--epochs", "1", "--out", str(tmp_path / "mine-model"), "-q")  # fmt: skip
        assert extend.exit_code == 0, extend.output
        out = tmp_path / "MyCells.H3K36me3.bedGraph"
        impute = _cli("impute", str(tmp_path / "mine-model"), "--celltype", "MyCells", "--assay",
                      "H3K36me3", "--region", "chr21:9400000-9500000", "--bedgraph",
                      "--out", str(out), "-q")  # fmt: skip
        assert impute.exit_code == 0, impute.output
    finally:
        srv.close()
    import epitensor as et

    model = et.Avocado.load(tmp_path / "mine-model")
    assert model.celltypes_[-1] == "MyCells" and list(model.genome_axes_) == ["chr21"]
    values = np.array([float(line.split()[3]) for line in out.read_text().splitlines()[1:]])
    assert len(values) > 0 and np.isfinite(values).all()
