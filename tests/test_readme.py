"""Every Python example of the README runs as written, each in a fresh folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

#: Examples that take longer than the default suite allows (run them with ``-m slow``).
SLOW = ("et.run_cv(",)

#: Examples that need files a user brings; the reason is shown when they are skipped.
NEEDS_FILES = {
    "roadmap/avocado-chr19": "needs the original Avocado's published Roadmap model files",
}


def _examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def _params():
    params = []
    for i, code in enumerate(_examples()):
        marks = []
        if any(s in code for s in SLOW):
            marks.append(pytest.mark.slow)
        for needle, why in NEEDS_FILES.items():
            if needle in code:
                marks.append(pytest.mark.skip(reason=why))
        first = next(line for line in code.splitlines() if line and not line.startswith("import"))
        params.append(pytest.param(code, id=f"{i}-{first[:40]}", marks=marks))
    return params


def test_the_readme_has_python_examples():
    assert len(_examples()) >= 4
    assert all("import epitensor as et" in code for code in _examples())


@pytest.mark.parametrize("code", _params())
def test_readme_example_runs(code, tmp_path):
    env = {**os.environ, "EPITENSOR_PROGRESS": "lines"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
