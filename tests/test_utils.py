import os
import stat

import pytest

from epitensor._utils import EpitensorError, atomic_directory, atomic_write_bytes


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_directory_replaces_on_success_and_keeps_the_old_on_failure(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(EpitensorError, match="already exists"):
        with atomic_directory(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "a.txt").write_text("second")
            raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "d"):
            pass
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "d") == 0o755
    assert _mode(tmp_path / "f.bin") == 0o644
    assert (tmp_path / "f.bin").read_bytes() == b"x"
