"""bigWig writing: the encoder read back by pybigtools and pyBigWig, failures that leave nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pybigtools
import pytest

from epitensor._utils import EpitensorError
from epitensor.io.writers import BigWigSink

SRC = str(Path(__file__).resolve().parents[1] / "src")


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


def test_a_bigwig_that_does_not_read_back_is_refused(tmp_path, monkeypatch):
    """Every finished file is read back by pybigtools before it is moved into place."""
    from epitensor.io.bigwig import BigWigEncoder

    close = BigWigEncoder.close

    def truncating_close(self):
        close(self)
        with open(self.path, "r+b") as handle:
            handle.truncate(os.path.getsize(self.path) // 2)  # what a failing disk might leave

    monkeypatch.setattr(BigWigEncoder, "close", truncating_close)
    with pytest.raises(EpitensorError, match=r"writing .*bad\.bw failed \(it does not read back"):
        _write(tmp_path / "bad.bw")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary is left


def _impute_with_file_size_limit(out: Path, *extra: str) -> subprocess.CompletedProcess:
    import resource

    model = Path(__file__).parent / "data" / "saved-model-v1"
    env = dict(os.environ, PYTHONPATH=SRC)

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


@pytest.mark.parametrize("extra, attempts", [((), 2), (("--quiet",), 1)])
def test_disk_full_while_writing_a_bigwig_is_one_line_and_leaves_nothing(tmp_path, extra, attempts):
    """Repeated: the write fails with EFBIG at the size limit (a full disk), each time."""
    for attempt in range(attempts):
        result = _impute_with_file_size_limit(tmp_path / "out.bw", *extra)
        assert result.returncode == 1, (attempt, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (attempt, result.stderr)
        assert lines[0].startswith(f"error: writing {tmp_path / 'out.bw'} failed"), lines[0]
        assert "disk has space" in lines[0]
        assert list(tmp_path.iterdir()) == [], attempt


def test_files_sharing_one_encoding_thread_are_each_whole_and_fail_alone(tmp_path):
    """A track and its interval bounds share one EncoderThread: blocks interleave, files do not;
    one aborted file leaves the others to finish, and the thread ends when stopped."""
    from epitensor.io.writers import EncoderThread

    thread = EncoderThread("bigwig-test", maxsize=3)
    sizes = {"chr1": 1_000_000}
    names = ["track.bw", "track.lower90.bw", "track.upper90.bw", "dropped.bw"]
    sinks = [BigWigSink(tmp_path / n, sizes, thread=thread) for n in names]
    rng = np.random.default_rng(1)
    values = rng.random((len(sinks), 40, 64), dtype=np.float32)
    for b in range(40):
        starts = list(range(b * 1600, (b + 1) * 1600, 25))
        for k, sink in enumerate(sinks):
            sink.write("chr1", starts, [s + 25 for s in starts], values[k, b])
    sinks[3].abort()
    for sink in sinks[:3]:
        sink.close()
    assert thread.thread.is_alive()  # shared: the sinks do not stop it
    thread.stop()
    assert not thread.thread.is_alive()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[:3])
    for k, name in enumerate(names[:3]):
        with pybigtools.open(str(tmp_path / name)) as reader:
            got = [value for _, _, value in reader.records("chr1", 0, 64_000)]
        np.testing.assert_allclose(got, values[k].ravel(), rtol=1e-6)
