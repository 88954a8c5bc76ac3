"""The repository stands alone: no test or package file reads data from outside it.

A clone has nothing beside it. Every file a test reads is in tests/data (sources
and licences in its README.md) or bundled with the package (src/epitensor/data).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# a folder beside the repository, or the variable that used to point at one
OUTSIDE = re.compile(rb"\.\./shared|shared/data|EPITENSOR_SHARED_DATA")
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache"}

# Docstrings in src/ that still name the old folder; the package's own modules are
# being moved and edited elsewhere (issue 30). Empty this set once they change: the
# strict xfail below fails as soon as they no longer name it.


def _files(top: str):
    for path in sorted((REPO / top).rglob("*")):
        parts = set(path.relative_to(REPO).parts)
        if (
            path.is_file()
            and not parts & SKIPPED_DIRS
            and not any(part.endswith(".egg-info") for part in parts)
        ):
            yield path


def _naming_outside() -> dict[str, list[int]]:
    """Files under tests/ and src/ (this one excepted) naming data outside the repository."""
    found = {}
    for top in ("tests", "src"):
        for path in _files(top):
            if path == Path(__file__).resolve():
                continue
            lines = path.read_bytes().splitlines()
            hits = [n for n, line in enumerate(lines, 1) if OUTSIDE.search(line)]
            if hits:
                found[path.relative_to(REPO).as_posix()] = hits
    return found


def test_no_file_names_data_outside_the_repository():
    found = {name: hits for name, hits in _naming_outside().items()}
    assert found == {}, f"files naming data outside the repository (lines): {found}"


def test_the_test_data_are_documented():
    """Every file in tests/data is named in its README.md (itself or its folder)."""
    readme = (REPO / "tests" / "data" / "README.md").read_text()
    for path in _files("tests/data"):
        parts = path.relative_to(REPO / "tests" / "data").parts
        names = ["/".join(parts)] + ["/".join(parts[:i]) + "/" for i in range(1, len(parts))]
        if names[0] != "README.md":
            assert any(f"`{n}`" in readme for n in names), f"{names[0]} not in tests/data/README.md"
