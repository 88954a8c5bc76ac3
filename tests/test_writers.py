"""bigWig writing: Rust panic reports held back from stderr, finished files read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pybigtools
import pytest

from epitensor._utils import EpitensorError
from epitensor.writers import BigWigSink

SRC = str(Path(__file__).resolve().parents[1] / "src")

# pybigtools' line on a temporary that fails to open, then a Rust panic report, written to
# descriptor 2 in pieces as Rust's unbuffered stderr does.
FILTER_SCRIPT = r"""
import os, sys
from epitensor.writers import _PANICS
_PANICS.acquire()
os.write(2, b"progress: 1/2\n")
for piece in (b"Error when opening: ", b'"/d/.out.bw.tmp-x1.bw"', b"\n"):  # a failed read-back
    os.write(2, piece)
for piece in (b"\n", b"thread '", b"<unnamed>", b"' (4649) panicked at ", b"src/bbi.rs:316:32:\n",
              b"Couldn't send: SendError\n", b"note: run with `RUST_BACKTRACE=1`\n"):
    os.write(2, piece)
import time; time.sleep(0.2)
if sys.argv[1] == "claim":
    print(repr(_PANICS.take()))
_PANICS.release()
os.write(2, b"after\n")
"""


def _run_filter(mode: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run(
        [sys.executable, "-c", FILTER_SCRIPT, mode], env=env, capture_output=True, timeout=60
    )


def test_a_claimed_panic_report_never_reaches_stderr():
    result = _run_filter("claim")
    assert result.returncode == 0, result.stderr
    # both are held back; other output passes through, in order
    assert result.stderr == b"progress: 1/2\nafter\n"
    assert result.stdout.decode().strip() == repr("Couldn't send: SendError")


def test_an_unclaimed_panic_report_is_printed_when_the_last_sink_closes():
    result = _run_filter("keep")
    assert result.returncode == 0, result.stderr
    text = result.stderr.decode()
    assert text.startswith("progress: 1/2\nthread '<unnamed>' (4649) panicked at src/bbi.rs")
    assert text.endswith("after\n") and "Couldn't send" in text


def _write(path: Path, n_blocks: int = 3) -> np.ndarray:
    sink = BigWigSink(path, {"chr1": 1_000_000, "chr2": 500_000})
    values = np.random.default_rng(0).random((n_blocks, 100), dtype=np.float32)
    for i, block in enumerate(values):
        starts = list(range(i * 2500, (i + 1) * 2500, 25))
        sink.write("chr1", starts, [s + 25 for s in starts], block)
    sink.close()
    return values


def test_a_finished_bigwig_reads_back_what_was_written(tmp_path):
    values = _write(tmp_path / "ok.bw")
    with pybigtools.open(str(tmp_path / "ok.bw")) as reader:
        got = [value for _, _, value in reader.records("chr1", 0, 7500)]
        assert reader.info()["summary"]["basesCovered"] == 7500
    np.testing.assert_allclose(got, values.ravel(), rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.bw"]  # no temporaries left


def test_a_bigwig_the_writer_reports_as_written_but_is_broken_is_refused(tmp_path, monkeypatch):
    """pybigtools can return normally from a write that failed on one of its threads."""
    import epitensor.writers as writers

    def truncated_write(self, writer, chrom_sizes):
        writer.write(chrom_sizes, self._records())
        with open(self.tmp, "r+b") as handle:
            handle.truncate(os.path.getsize(self.tmp) // 2)  # what a full disk left

    monkeypatch.setattr(writers.BigWigSink, "_run", truncated_write)
    with pytest.raises(EpitensorError, match=r"writing .*bad\.bw failed \(it does not read back"):
        _write(tmp_path / "bad.bw")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary is left


def _impute_with_file_size_limit(out: Path, *extra: str) -> subprocess.CompletedProcess:
    import resource

    model = Path(__file__).parent / "data" / "saved-model-v1"
    env = dict(os.environ, PYTHONPATH=SRC, RUST_BACKTRACE="1")  # the longest panic report

    def limit():  # writes past 3 kB fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    args = ["impute", str(model), "--celltype", "E003", "--assay", "H3K4me3", "--out", str(out)]
    args.append("--model-only")  # one line on stderr: no note on the missing ensemble
    return subprocess.run(
        [sys.executable, "-m", "epitensor.cli", *args, *extra],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=120,
    )


@pytest.mark.parametrize("extra", [(), ("--quiet",)])
def test_disk_full_while_writing_a_bigwig_is_one_line_and_leaves_nothing(tmp_path, extra):
    """Repeated: pybigtools fails on one of its threads at a different point each time."""
    for attempt in range(3):
        result = _impute_with_file_size_limit(tmp_path / "out.bw", *extra)
        assert result.returncode == 1, (attempt, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (attempt, result.stderr)
        assert lines[0].startswith(f"error: writing {tmp_path / 'out.bw'} failed"), lines[0]
        assert "disk has space" in lines[0]
        assert list(tmp_path.iterdir()) == [], attempt
