"""Store integrity, write locks and outputs that never overwrite, through the command line.

Each damaged store is a copy of a real store (the pilot tracks) with one chunk
file deleted or one byte flipped, as a failing disk or a half-finished copy
leaves it. Concurrency tests run real ``epitensor`` processes.
"""

import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError, EpitensorWarning, lock_file, output_lock
from epitensor.cli import app
from epitensor.store.compendium import Store

COOLBOX = "coolbox/bigwig_chr9_4000000_6000000_K562_{}.bigwig"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _copy(store: Store, folder: Path) -> Path:
    target = folder / "copy.zarr"
    shutil.copytree(store.url, target)
    return target


def _flip(path: Path, at: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _one_line_error(result, *needles: str) -> str:
    """The CLI failed with exit 1 and one ``error:`` line (no traceback) holding ``needles``."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


# damaged chunks --------------------------------------------------------------------------


def test_deleted_chunk_stops_train_and_evaluate_naming_store_axis_and_chunk(
    pilot_store, trained_model, tmp_path
):
    """On main a deleted chunk read back as zeros and both commands exited 0."""
    damaged = _copy(pilot_store, tmp_path)
    (damaged / "signal" / "pilot" / "c" / "0" / "5").unlink()
    result = _invoke("train", damaged, "--out", tmp_path / "model", "--epochs", "1", "--quiet")
    _one_line_error(result, str(damaged), "'pilot'", "c/0/5", "missing", "re-ingest")
    assert not (tmp_path / "model").exists()

    model_dir = tmp_path / "fitted"
    trained_model.save(model_dir)
    out = tmp_path / "metrics.csv"
    result = _invoke(
        "evaluate", model_dir, damaged, "--tracks", "E003:H3K4me3", "--out", out, "--quiet"
    )
    _one_line_error(result, "c/0/5", "missing")
    assert not out.exists()
    # the undamaged store still evaluates (the network alone: the ensemble is not the point)
    result = _invoke(
        "evaluate", model_dir, pilot_store.url, "--tracks", "E003:H3K4me3", "--out", out, "-q",
        "--model-only",
    )  # fmt: skip
    assert result.exit_code == 0, result.output and out.is_file()


def test_flipped_byte_is_caught_by_the_checksum(small_pilot_store, tmp_path):
    damaged = _copy(small_pilot_store, tmp_path)
    _flip(damaged / "signal" / "pilot" / "c" / "0" / "1")
    store = Store.open(damaged)
    with pytest.raises(EpitensorError, match=r"chunk c/0/1 .*corrupt \(its checksum"):
        store.read_block("pilot", 0, 40_000)
    # reads that do not touch the damaged chunk are unaffected
    np.testing.assert_array_equal(
        store.read_block("pilot", 0, 16_384), small_pilot_store.read_block("pilot", 0, 16_384)
    )
    with pytest.raises(EpitensorError, match="c/0/1"):
        store.read_track("E003", "H3K4me3", start=20_000, end=20_010)
    result = _invoke("train", damaged, "--out", tmp_path / "m", "--epochs", "1", "--quiet")
    _one_line_error(result, "c/0/1", "checksum")


def test_info_check_lists_every_missing_and_corrupt_chunk(small_pilot_store, tmp_path):
    result = _invoke("info", small_pilot_store.url, "--check", "--quiet")
    assert result.exit_code == 0, result.output
    assert "3 chunks read, every one with a CRC-32C checksum" in result.output
    assert "no damaged chunk found" in result.output

    damaged = _copy(small_pilot_store, tmp_path)
    (damaged / "signal" / "pilot" / "c" / "0" / "0").unlink()
    _flip(damaged / "signal" / "pilot" / "c" / "0" / "2")
    result = _invoke("info", damaged, "--check", "--quiet")
    line = _one_line_error(result, "1 missing and 1 corrupt")
    assert str(damaged) in line
    assert "missing    axis 'pilot' chunk c/0/0 (tracks 0-24, positions 0-16383)" in result.output
    assert "corrupt    axis 'pilot' chunk c/0/2" in result.output
    assert "checksum does not match" in result.output


def _strip_checksums(store: Path) -> None:
    """Rewrite a store as releases before checksums wrote it: no crc32c, fill value 0."""
    for meta in (store / "signal").glob("*/zarr.json"):
        data = json.loads(meta.read_text())
        data["codecs"] = [c for c in data["codecs"] if c["name"] != "crc32c"]
        data["fill_value"] = 0.0
        meta.write_text(json.dumps(data))
        for chunk in (meta.parent / "c").rglob("*"):
            if chunk.is_file():
                chunk.write_bytes(chunk.read_bytes()[:-4])


def test_store_written_before_checksums_still_opens_and_says_so(small_pilot_store, tmp_path):
    legacy = _copy(small_pilot_store, tmp_path)
    _strip_checksums(legacy)
    store = Store.open(legacy)
    assert not store.has_checksums
    np.testing.assert_array_equal(store.read_block("pilot"), small_pilot_store.read_block("pilot"))
    result = _invoke("info", legacy, "--check", "--quiet")
    assert result.exit_code == 0, result.output
    assert "no checksums" in result.output
    assert "written before checksums" in result.output
    # bytes that no longer decompress are still caught, by the decoder
    chunk = legacy / "signal" / "pilot" / "c" / "0" / "1"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(EpitensorError, match="c/0/1 .*corrupt"):
        store.read_block("pilot")
    _one_line_error(_invoke("info", legacy, "--check", "-q"), "1 corrupt")


def test_values_that_are_not_finite_are_refused_at_write(small_pilot_store, tmp_path):
    store = Store.create(
        tmp_path / "s.zarr", small_pilot_store.layout, small_pilot_store.chrom_sizes
    )
    values = np.ones(40_000, dtype=np.float32)
    values[7] = np.inf
    with pytest.raises(EpitensorError, match=r"track \(A, X\).*1 values on axis 'pilot'"):
        store.add_track("A", "X", {"pilot": values})
    values[7] = 70_000.0  # finite in float32, inf in float16
    with pytest.raises(EpitensorError, match="NaN or infinite in float16"):
        store.add_tracks([("A", "X")], {"pilot": values[None]})
    assert Store.open(tmp_path / "s.zarr").n_tracks == 0


# hand-edited metadata --------------------------------------------------------------------


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


EDITS = {
    "genome missing": ("zarr.json", lambda d: d["attributes"].pop("genome"), "'genome'"),
    "tracks entry": (
        "zarr.json",
        lambda d: d["attributes"]["tracks"].__setitem__(3, ["E003", 5, "", ""]),
        "'tracks[3]'",
    ),
    "tracks not a list": ("zarr.json", lambda d: d["attributes"].update(tracks="x"), "'tracks'"),
    "resolution text": (
        "zarr.json",
        lambda d: d["attributes"]["layout"].update(resolution="25"),
        "'layout.resolution'",
    ),
    "region column": (
        "zarr.json",
        lambda d: d["attributes"]["layout"]["regions"].pop("n_bins"),
        "'layout.regions.n_bins'",
    ),
    "chrom size": (
        "zarr.json",
        lambda d: d["attributes"]["chrom_sizes"].update(chr1=-5),
        "'chrom_sizes.chr1'",
    ),
    "dtype": ("zarr.json", lambda d: d["attributes"].update(dtype="int8"), "'dtype'"),
    "transform": ("zarr.json", lambda d: d["attributes"].update(transform=None), "'transform'"),
    "array shape": (
        "signal/pilot/zarr.json",
        lambda d: d.update(shape=[25, 7]),
        "'signal/pilot/zarr.json shape'",
    ),
    "array missing": (
        "signal/zarr.json",
        lambda d: None,
        "'signal/pilot'",
    ),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_hand_edited_metadata_is_one_line_naming_the_key(name, small_pilot_store, tmp_path):
    """On main several of these were a KeyError or TypeError traceback."""
    store = _copy(small_pilot_store, tmp_path)
    where, change, key = EDITS[name]
    if name == "array missing":
        shutil.rmtree(store / "signal" / "pilot")
    else:
        _edit(store / where, change)
    _one_line_error(_invoke("info", store), str(store), key)


def test_unreadable_group_json_is_one_line(small_pilot_store, tmp_path):
    store = _copy(small_pilot_store, tmp_path)
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gr')
    _one_line_error(_invoke("info", store), f"cannot open store {store}", "re-ingest")


# locks -----------------------------------------------------------------------------------


def _env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def _cli(*args, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "epitensor.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(**env),
    )


@pytest.fixture
def holder():
    """Start a real process that holds the lock of a path until the test ends."""
    started = []

    def hold(path: Path) -> subprocess.Popen:
        code = (
            "import sys, time\nfrom epitensor._utils import output_lock\n"
            f"with output_lock({str(path)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_env()
        )
        assert process.stdout.readline().strip() == "held"
        started.append(process)
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait()


def _manifest(folder: Path, rows, name="manifest.tsv") -> Path:
    path = folder / name
    path.write_text("celltype\tassay\tpath\n" + "".join(f"{c}\t{a}\t{p}\n" for c, a, p in rows))
    return path


def _coolbox(test_data, assay: str) -> Path:
    return test_data / COOLBOX.format(assay)


def test_a_writer_waits_for_the_lock_or_fails_clearly(test_data, tmp_path, holder):
    regions = tmp_path / "regions.bed"
    regions.write_text("chr9\t4000000\t4200000\n")
    first = _manifest(tmp_path, [("K562", "H3K27ac", _coolbox(test_data, "H3K27ac"))])
    store = tmp_path / "s.zarr"
    result = _invoke("ingest", first, "--out", store, "--regions", regions, "--quiet")
    assert result.exit_code == 0, result.output
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}

    process = holder(store)
    more = _manifest(tmp_path, [("K562", "RNA", _coolbox(test_data, "RNA"))], "more.tsv")
    waited = _cli("ingest", more, "--out", store, "--append", "-q", EPITENSOR_LOCK_TIMEOUT="1")
    _, err = waited.communicate(timeout=120)
    assert waited.returncode == 1, err
    assert f"waiting up to 1 s for another epitensor process (pid {process.pid})" in err
    assert "error: timed out after 1 s" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before

    fresh = tmp_path / "new.zarr"
    holder(fresh)
    result = _invoke("ingest", first, "--out", fresh, "--regions", regions, "--quiet")
    _one_line_error(result, f"{fresh} is being written by another epitensor process")
    assert not fresh.exists()
    result = _invoke("train", store, "--out", fresh, "--epochs", "1", "--quiet")
    _one_line_error(result, "being written by another epitensor process")

    process.kill()  # a killed holder leaves no stale lock
    process.wait()
    result = _invoke("ingest", more, "--out", store, "--append", "--quiet")
    assert result.exit_code == 0, result.output
    assert Store.open(store).track_names() == [("K562", "H3K27ac"), ("K562", "RNA")]
    assert not lock_file(store).exists()


def test_two_appends_at_once_both_land(test_data, tmp_path):
    """On main both exited 0 and one track disappeared."""
    regions = tmp_path / "regions.bed"
    regions.write_text("chr9\t4000000\t6000000\n")
    base = _manifest(tmp_path, [("K562", "H3K27ac", _coolbox(test_data, "H3K27ac"))])
    store = tmp_path / "s.zarr"
    assert _invoke("ingest", base, "--out", store, "--regions", regions, "-q").exit_code == 0
    manifests = [
        _manifest(tmp_path, [("K562", assay, _coolbox(test_data, assay))], f"{assay}.tsv")
        for assay in ("RNA", "H3K27me3")
    ]
    runs = [
        _cli("ingest", m, "--out", store, "--append", "--workers", "1", "-q") for m in manifests
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    names = set(Store.open(store).track_names())
    assert names == {("K562", "H3K27ac"), ("K562", "RNA"), ("K562", "H3K27me3")}
    result = _invoke("info", store, "--check", "-q")
    assert result.exit_code == 0, result.output


def test_two_ingests_to_one_new_out_never_replace_each_other(test_data, tmp_path):
    regions = tmp_path / "regions.bed"
    regions.write_text("chr9\t4000000\t6000000\n")
    store = tmp_path / "s.zarr"
    manifests = [
        _manifest(tmp_path, [("K562", assay, _coolbox(test_data, assay))], f"{assay}.tsv")
        for assay in ("RNA", "H3K27me3")
    ]
    runs = [_cli("ingest", m, "--out", store, "--regions", regions, "-q") for m in manifests]
    results = [(run.wait(timeout=300), run.communicate()[1]) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert "already exists" in loser or "being written by another" in loser
    winner = next(k for k, (code, _) in enumerate(results) if code == 0)
    assert Store.open(store).track_names() == [("K562", ("RNA", "H3K27me3")[winner])]


def test_output_lock_is_reentrant_and_cleans_up(tmp_path):
    target = tmp_path / "out"
    with output_lock(target) as path:
        assert path == lock_file(target) and path.exists()
        with output_lock(target, wait=False):
            assert int(path.read_text()) == os.getpid()
    assert not path.exists()
    code = f"from epitensor._utils import output_lock\nwith output_lock({str(target)!r}): pass"
    with output_lock(target):
        other = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=_env(EPITENSOR_LOCK_TIMEOUT="0.3"),
        )
    assert other.returncode == 1 and "timed out after 0.3 s" in other.stderr


def test_a_killed_holders_longer_pid_is_replaced_whole(tmp_path):
    target = tmp_path / "out"
    lock_file(target).write_text("4194304999\n")  # left behind by a killed holder
    with output_lock(target) as path:
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()


def test_a_lock_file_this_user_may_only_read_still_locks(tmp_path, monkeypatch):
    """Another user's lock file (mode 0644) opens read-only, and flock works on that descriptor."""
    target = tmp_path / "out"
    path = lock_file(target)
    path.write_text("999999\n")
    real_open = os.open

    def open_as_another_user(file, flags, *args, **kwargs):
        if Path(file) == path and flags & os.O_RDWR:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_as_another_user)
    code = f"from epitensor._utils import output_lock\nwith output_lock({str(target)!r}): pass"
    with output_lock(target, wait=False):
        monkeypatch.undo()
        other = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=_env(EPITENSOR_LOCK_TIMEOUT="0.3"),
        )
    assert other.returncode == 1 and "timed out after 0.3 s" in other.stderr
    assert not path.exists()


def test_a_file_system_without_locks_warns_and_writes_unlocked(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(EpitensorWarning, match="has no file locks; writing unlocked"):
        with output_lock(tmp_path / "out") as path:
            assert int(path.read_text()) == os.getpid()
    assert not path.exists()


@pytest.mark.parametrize("value", ["soon", "-1"])
def test_lock_timeout_must_be_a_number(value, tmp_path, monkeypatch):
    monkeypatch.setenv("EPITENSOR_LOCK_TIMEOUT", value)
    with pytest.raises(EpitensorError, match="invalid EPITENSOR_LOCK_TIMEOUT"):
        with output_lock(tmp_path / "x"):
            pass


# outputs that never overwrite ------------------------------------------------------------


def test_evaluate_refuses_an_existing_file_and_the_model_directory(
    pilot_store, trained_model, tmp_path
):
    """On main `evaluate --out MODEL/config.json` replaced the model's config."""
    model_dir = tmp_path / "model"
    trained_model.save(model_dir)
    config = (model_dir / "config.json").read_bytes()
    args = ["evaluate", model_dir, pilot_store.url, "--tracks", "E003:H3K4me3", "-q", "--out"]
    result = _invoke(*args, model_dir / "config.json", "--overwrite")
    assert result.exit_code == 2 and "inside the model directory" in result.output
    assert (model_dir / "config.json").read_bytes() == config
    existing = tmp_path / "metrics.csv"
    existing.write_text("keep me\n")
    _one_line_error(_invoke(*args, existing), f"{existing} already exists", "--overwrite")
    assert existing.read_text() == "keep me\n"
    assert _invoke(*args, existing, "--overwrite", "--model-only").exit_code == 0
    assert existing.read_text().startswith("celltype,assay,method,metric,value")


WRITERS = {
    "ingest": ["ingest", "{manifest}", "--out", "{out}"],
    "demo": ["demo", "--out", "{out}"],
    "explain": ["explain", "m", "--celltype", "A", "--assay", "B", "--region", "chr1:0-10"]
    + ["--out", "{out}"],
    "train": ["train", "roadmap-pilot", "--out", "{out}"],
    "fit-genome": ["fit-genome", "m", "roadmap-pilot", "--out", "{out}"],
    "embed": ["embed", "m", "--out", "{out}"],
    "extend": ["extend", "m", "roadmap-pilot", "--celltype", "A", "--out", "{out}"],
    "downstream": ["downstream", "--features", "a=x.npy", "--labels", "y.npy", "--out", "{out}"],
    "import-reference": ["import-reference", "p", "--out", "{out}"],
    "evaluate": ["evaluate", "m", "roadmap-pilot", "--tracks", "A:B", "--out", "{out}"],
    "benchmark": ["benchmark", "roadmap-pilot", "--out", "{out}"],
}


@pytest.mark.parametrize("command", list(WRITERS))
def test_every_writing_command_refuses_an_existing_output(command, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "A.B.bigWig").write_text("keep me\n")
    manifest = _manifest(tmp_path, [("A", "B", out / "A.B.bigWig")])
    args = [a.format(out=out, manifest=manifest) for a in WRITERS[command]]
    if command in ("explain", "evaluate"):
        args[args.index(str(out))] = str(out / "A.B.bigWig")
    result = _invoke(*args)
    _one_line_error(result, "already exists")
    assert [p.name for p in out.iterdir()] == ["A.B.bigWig"]
    assert (out / "A.B.bigWig").read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["existing", "manifest.tsv"]
    )  # no lock or temporary left behind
