"""Progress off a terminal, and threads that fit the CPUs a process may use (``_utils``)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from epitensor._utils import (
    LineProgress,
    available_cpus,
    cgroup_cpu_quota,
    cpu_summary,
    default_threads,
    progress,
)

REPO = Path(__file__).resolve().parents[1]


def _child_env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **extra}
    env.pop("EPITENSOR_PROGRESS", None)
    return env


# progress -----------------------------------------------------------------------------


def test_line_progress_prints_whole_lines_at_the_interval_and_at_the_end():
    out = io.StringIO()
    bar = LineProgress(total=1000, desc="impute 2 track(s)", unit="bin", interval=3600, file=out)
    for _ in range(10):
        bar.update(100)
    assert out.getvalue() == ""  # within the interval: nothing yet
    bar.set_postfix(mse="0.1234")
    bar.close()
    bar.close()  # once only
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in out.getvalue()
    assert lines[0].startswith("impute 2 track(s): 1,000/1,000 bin (100%)")
    assert lines[0].endswith("done, mse=0.1234")


def test_line_progress_wraps_an_iterable_and_reports_each_interval():
    out = io.StringIO()
    items = list(LineProgress(range(5), desc="chroms", interval=0.0, file=out))
    assert items == [0, 1, 2, 3, 4]
    lines = out.getvalue().splitlines()
    assert len(lines) == 6  # one per update at interval 0, plus the final one
    assert lines[2].startswith("chroms: 3/5 it (60%)") and "left" in lines[2]


def test_line_progress_stopped_by_an_error_prints_no_done_line():
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        for item in LineProgress(range(5), desc="impute", interval=3600, file=out):
            if item == 2:
                raise RuntimeError("disk full")
    with pytest.raises(RuntimeError), LineProgress(total=3, desc="x", interval=3600, file=out):
        raise RuntimeError("disk full")
    assert out.getvalue() == ""  # a failed job never reports "done"


def test_progress_is_lines_off_a_terminal_and_a_bar_when_forced(monkeypatch):
    monkeypatch.delenv("EPITENSOR_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert isinstance(progress(total=3, desc="x"), LineProgress)
    monkeypatch.setenv("EPITENSOR_PROGRESS", "bar")
    assert not isinstance(progress(total=3, desc="x"), LineProgress)
    monkeypatch.setenv("EPITENSOR_PROGRESS", "lines")
    quiet = progress(total=3, desc="x", verbose=False)
    assert not isinstance(quiet, LineProgress) and quiet.disable


def test_train_command_log_off_a_terminal_stays_small(tmp_path, small_pilot_store):
    """A real ``epitensor train`` with stderr to a file: a few whole lines, no '\\r'."""
    log = tmp_path / "train.log"
    command = [sys.executable, "-m", "epitensor.cli", "train", small_pilot_store.url]
    command += ["--out", str(tmp_path / "model"), "--epochs", "2", "--threads", "1"]
    command += ["--preset", "cpu-small"]
    with open(log, "wb") as handle:
        done = subprocess.run(
            command,
            stderr=handle,
            stdout=subprocess.PIPE,
            env=_child_env(EPITENSOR_PROGRESS_INTERVAL="2"),
            timeout=600,
        )
    text = log.read_text()
    assert done.returncode == 0, text[-2000:]
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    epochs = [line for line in lines if line.startswith("train 1/2") or "2/2: " in line]
    assert any(line.endswith("done") or "done, mse=" in line for line in epochs), text
    # a tqdm bar redraws ~10 times a second; lines come every 2 s plus one per epoch
    assert len(lines) <= 60 and len(text) < 10_000, text


# threads ------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_takes_the_tightest_of_the_process_cgroup_and_its_parents(tmp_path):
    root = tmp_path / "cgroup"
    _write(root / "cpu.max", "max 100000\n")
    _write(root / "user.slice" / "cpu.max", "300000 100000\n")
    _write(root / "user.slice" / "job-7" / "cpu.max", "150000 100000\n")
    membership = tmp_path / "self-cgroup"
    _write(membership, "0::/user.slice/job-7\n")
    assert cgroup_cpu_quota(membership, root) == pytest.approx(1.5)
    _write(root / "user.slice" / "job-7" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(membership, root) == pytest.approx(3.0)
    _write(root / "user.slice" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(membership, root) is None


def test_cgroup_v1_quota_reads_cfs_files_and_ignores_minus_one(tmp_path):
    root = tmp_path / "cgroup"
    folder = root / "cpu,cpuacct" / "docker" / "abc123"
    _write(folder / "cpu.cfs_quota_us", "50000\n")
    _write(folder / "cpu.cfs_period_us", "100000\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    membership = tmp_path / "self-cgroup"
    _write(membership, "12:memory:/docker/abc123\n4:cpu,cpuacct:/docker/abc123\n1:name=systemd:/\n")
    assert cgroup_cpu_quota(membership, root) == pytest.approx(0.5)
    _write(folder / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_quota(membership, root) is None


def test_cgroup_quota_is_none_without_readable_files(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "missing", tmp_path) is None
    membership = tmp_path / "self-cgroup"
    _write(membership, "0::/a\n")
    _write(tmp_path / "a" / "cpu.max", "garbage\n")
    assert cgroup_cpu_quota(membership, tmp_path) is None


def test_available_cpus_follows_the_affinity_mask():
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
    code = "from epitensor._utils import available_cpus; print(available_cpus())"
    done = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_child_env(),
        check=True,
    )
    assert done.stdout.strip() == "1"


def test_default_threads_keeps_explicit_counts_and_caps_the_default():
    import torch

    assert default_threads(7) == 7
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(64)
        assert default_threads() == min(64, available_cpus())
        torch.set_num_threads(1)
        assert default_threads() == 1  # a lower count set earlier is kept
    finally:
        torch.set_num_threads(previous)


def test_training_threads_default_to_the_affinity_mask():
    """A training thread block in a child pinned to one CPU runs torch on one thread."""
    code = (
        "import torch; from epitensor.train.fitting import torch_threads\n"
        "torch.set_num_threads(8)\n"
        "with torch_threads(None):\n    print(torch.get_num_threads())\n"
        "with torch_threads(3):\n    print(torch.get_num_threads())\n"
    )
    done = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_child_env(),
        check=True,
    )
    assert done.stdout.split() == ["1", "3"]


def test_cpu_summary_names_the_matrix_instruction_sets():
    text = cpu_summary()
    assert "CPUs usable" in text
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx2" in flags:
        assert "AVX2" in text
    if " avx512f" in flags:
        assert "AVX-512" in text


def test_the_command_line_makes_openmp_threads_sleep_unless_the_user_chose():
    code = "import os, epitensor.cli, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = _child_env()
    env.pop("OMP_WAIT_POLICY", None)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.stdout.strip() == "PASSIVE", run.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.stdout.strip() == "ACTIVE", run.stderr
    late = "import torch, os; from epitensor._utils import passive_openmp_wait as p; print(p())"
    env.pop("OMP_WAIT_POLICY")
    run = subprocess.run([sys.executable, "-c", late], capture_output=True, text=True, env=env)
    assert run.stdout.strip() == "False", run.stderr  # torch already loaded: too late
