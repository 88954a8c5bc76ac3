"""Resumable imputation: a killed multi-track, multi-chromosome run is finished by a rerun.

The model has one genome axis per chromosome (stage 2 on the ``by_chrom_store``
fixture: chr1, chr4 and chr8 pilot regions of the real data), saved to a
directory as a user's would be.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError
from epitensor.cli import app
from epitensor.io.writers import completed, done_record, remove_stale_temporaries
from epitensor.workflows import impute as export

TRACKS = [("E065", "H3K4me1"), ("E003", "H3K27me3"), ("E116", "H3K36me3")]
STEMS = [f"{c}.{a}.bigWig" for c, a in TRACKS]

# Runs the real CLI in a child process and SIGKILLs it from inside, at a fixed
# point: the third block written after the first file was published (the
# second file is then half written under its temporary name).
KILLER = """
import os, signal, sys
from epitensor.io import writers
from epitensor.cli import app

close, write = writers.BigWigSink.close, writers.BigWigSink.write
published, later_writes = [], []

def closing(self):
    close(self)
    published.append(self.path)

def writing(self, *args):
    if published:
        later_writes.append(1)
        if len(later_writes) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    write(self, *args)

writers.BigWigSink.close, writers.BigWigSink.write = closing, writing
sys.argv = ["epitensor", *sys.argv[1:]]
app()
"""


@pytest.fixture(scope="module")
def model_dir(trained_model, by_chrom_store, tmp_path_factory):
    """The pilot model with stage-2 genome factors for chr1, chr4 and chr8, saved."""
    model = copy.deepcopy(trained_model).set_params(n_threads=1)
    model.fit_genome(by_chrom_store)
    path = tmp_path_factory.mktemp("resume") / "model"
    model.save(path)
    return path


def _args(model_dir: Path, out: Path, *extra: str) -> list[str]:
    pairs = [arg for c, a in TRACKS for arg in ("--celltype", c, "--assay", a)]
    return ["impute", str(model_dir), *pairs, "--out", str(out), "--track-batch", "1"] + [
        "--threads",
        "1",
        "--quiet",
        *extra,
    ]


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def _stats(paths: list[Path]) -> list[tuple[int, int]]:
    return [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths]


def test_killed_run_is_finished_by_a_rerun(model_dir, tmp_path):
    """SIGKILL mid-run leaves only finished files; the rerun writes just the rest, exactly."""
    out = tmp_path / "imputed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, *_args(model_dir, out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    first, *rest = (out / stem for stem in STEMS)
    # the first file is published with its done record; nothing truncated under a final name
    assert first.is_file() and done_record(first).is_file()
    assert not any(p.exists() for p in rest)
    leftovers = [p.name for p in out.iterdir() if ".tmp-" in p.name]
    assert leftovers and all(name.startswith(f".{STEMS[1]}.tmp-") for name in leftovers)
    assert not (out / "impute.json").exists()  # written last, when every file is there
    before = _stats([first])

    result = _invoke(_args(model_dir, out)[:-1])  # not --quiet: it says what it skips
    assert result.exit_code == 0, result.output
    assert "1 of 3 files already finished" in result.output
    paths = [out / stem for stem in STEMS]
    assert _stats([first]) == before  # not rewritten: same inode, same mtime
    assert all(p.is_file() for p in paths)
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]  # stale temporary gone
    params = json.loads((out / "impute.json").read_text())
    assert params["files"] == [str(p) for p in paths]

    clean = tmp_path / "clean"
    assert _invoke(_args(model_dir, clean)).exit_code == 0
    for stem in STEMS:
        assert (out / stem).read_bytes() == (clean / stem).read_bytes(), stem

    # a third run has nothing to do
    finished = _stats(paths)
    result = _invoke(_args(model_dir, out)[:-1])
    assert result.exit_code == 0 and "3 of 3 files already finished" in result.output
    assert _stats(paths) == finished

    # other options are another imputation: refused, then replaced with --overwrite
    result = _invoke(_args(model_dir, out, "--arcsinh"))
    assert result.exit_code == 1 and "written with other scale" in result.output
    assert _stats(paths) == finished
    assert _invoke(_args(model_dir, out, "--arcsinh", "--overwrite")).exit_code == 0
    assert all(a != b for a, b in zip(_stats(paths), finished))
    assert json.loads(done_record(first).read_text())["fingerprint"]["scale"] == "arcsinh"


def test_done_record_vouches_only_for_the_file_it_describes(model_dir, tmp_path):
    """A finished file edited later, or one without a record, is refused, not skipped."""
    out = tmp_path / "one.bw"
    paths = export.impute(model_dir, TRACKS[:1], out, chroms=["chr4"], verbose=False)
    assert paths == [out]
    model = export.load_model(model_dir)
    segments = export.track_segments(model.layout_, model.chrom_sizes_, ["chr4"])
    prints = export.impute_fingerprints(
        model_dir, model, TRACKS[:1], segments, False, "fp32", "bigwig"
    )
    assert completed(out, prints[0]) is True
    assert completed(out, {**prints[0], "precision": "bf16"}) == (
        "it was written with other precision"
    )
    assert completed(tmp_path / "absent.bw", prints[0]) is False
    # rerunning over another chromosome set is another imputation
    with pytest.raises(EpitensorError, match="written with other axes, chrom_sizes, positions"):
        export.impute(model_dir, TRACKS[:1], out, chroms=["chr1"], verbose=False)
    with open(out, "ab") as handle:
        handle.write(b"\0")
    assert completed(out, prints[0]) == "it changed after it was written"
    with pytest.raises(EpitensorError, match="already exists .*changed after it was written"):
        export.impute(model_dir, TRACKS[:1], out, chroms=["chr4"], verbose=False)
    done_record(out).unlink()
    with pytest.raises(EpitensorError, match="already exists .*no done record"):
        export.impute(model_dir, TRACKS[:1], out, chroms=["chr4"], verbose=False)
    # an in-memory model has no checksums to compare: existing files are refused
    assert export.impute_fingerprints(None, model, TRACKS[:1], segments, False, "fp32", "bw") == [
        None
    ]
    assert completed(out, None) == "it was not written by a resumable job"


def test_only_the_outputs_own_temporaries_are_removed(tmp_path):
    """Leftovers of the outputs' writers go; other files, even similar names, stay."""
    outputs = [tmp_path / "a.bw", tmp_path / "x.tmp-y.bigWig"]
    stale = [tmp_path / ".a.bw.tmp-k2j3.bw", tmp_path / ".x.tmp-y.bigWig.tmp-9q.bw"]
    kept = [
        tmp_path / ".b.bw.tmp-k2j3.bw",
        tmp_path / "a.bw.tmp-1.bw",
        tmp_path / ".a.bw.done.json",
    ]
    for path in stale + kept:
        path.write_bytes(b"")
    assert remove_stale_temporaries(outputs) == 2
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert remove_stale_temporaries([tmp_path / "absent" / "c.bw"]) == 0
