"""Every example of the README and of the documentation's pages runs as written.

Each ```python block of README.md and of the pages under docs/ runs in a fresh
folder, and so does each ```bash block of README.md. Examples on "your own files"
(``tracks.tsv``, ``regions.bed``) get real ones from tests/data: three K562 bigWigs
(CoolBox's, hg19, chr9:4-6 Mb) and that region. Examples that need files no test
has, or that take longer than the default suite allows, are skipped or marked
``slow``, with the reason shown.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
#: Folders of docs/ that hold result files, not pages (docs/conf.py excludes them too).
RESULTS = {
    "_build",
    "annotate",
    "average-cv",
    "cv",
    "cv-blend",
    "cv-default",
    "cv-rules",
    "demo",
    "downstream",
    "tune",
    "generated",
}

#: Examples that take longer than the default suite allows (run them with ``-m slow``).
SLOW = ("et.run_cv(", "make demo")

#: Examples that need files a user brings; the reason is shown when they are skipped.
NEEDS_FILES = {
    "roadmap/avocado-chr19": "needs the original Avocado's published Roadmap model files",
    'et.pretrained("roadmap-hg19"': "downloads a published model from the internet "
    "(the same code runs on a local server in tests/test_models_hub.py)",
}

#: Lines of the README's bash blocks that cannot run inside the test suite, and why;
#: what the test does instead is in ``test_setup_commands_exist``.
NOT_RUN = {
    "make test": "is this test suite (checked with make -n)",
}

#: The real files that stand for the user's own (tests/data/README.md: CoolBox, hg19).
COOLBOX = REPO / "tests" / "data" / "coolbox"
OWN_TRACKS = {
    ("K562", "H3K27ac"): "bigwig_chr9_4000000_6000000_K562_H3K27ac.bigwig",
    ("K562", "H3K27me3"): "bigwig_chr9_4000000_6000000_K562_H3K27me3.bigwig",
    ("K562", "RNA"): "bigwig_chr9_4000000_6000000_K562_RNA.bigwig",
}


def _pages() -> list[Path]:
    pages = [README]
    for page in sorted(DOCS.rglob("*.md")):
        parts = page.relative_to(DOCS).parts
        if parts[0] not in RESULTS and page.name != "api.md" and len(parts) <= 2:
            pages.append(page)
    return pages


def _blocks(path: Path, language: str) -> list[str]:
    text = path.read_text()
    return re.findall(rf"^ *```{language}\n(.*?)^ *```$", text, flags=re.S | re.M)


def _dedent(code: str) -> str:
    lines = code.splitlines()
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return "\n".join(x[indent:] for x in lines) + "\n"


def _own_files(folder: Path) -> None:
    """``tracks.tsv`` and ``regions.bed`` as a user would have them, from real files."""
    rows = ["celltype\tassay\tpath"]
    for (celltype, assay), name in OWN_TRACKS.items():
        rows.append(f"{celltype}\t{assay}\t{COOLBOX / name}")
    (folder / "tracks.tsv").write_text("\n".join(rows) + "\n")
    (folder / "regions.bed").write_text("chr9\t4000000\t6000000\n")


def _marks(code: str) -> list:
    marks = []
    if any(s in code for s in SLOW):
        marks.append(pytest.mark.slow)
    for needle, why in NEEDS_FILES.items():
        if needle in code:
            marks.append(pytest.mark.skip(reason=why))
    return marks


def _python_params():
    """The README's examples run in the default suite; the docs pages' train models and are ``slow``."""
    params = []
    for page in _pages():
        for i, code in enumerate(_blocks(page, "python")):
            code = _dedent(code)
            first = next(x for x in code.splitlines() if x and not x.startswith("import"))
            name = page.relative_to(REPO).as_posix()
            marks = _marks(code) + ([] if page == README else [pytest.mark.slow])
            params.append(pytest.param(code, id=f"{name}-{i}-{first[:40]}", marks=marks))
    return params


def _bash_params():
    params = []
    for i, code in enumerate(_blocks(README, "bash")):
        first = code.splitlines()[0]
        params.append(pytest.param(code, id=f"README.md-{i}-{first[:40]}", marks=_marks(code)))
    return params


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # the venv's epitensor command
    return {
        **os.environ,
        "EPITENSOR_PROGRESS": "lines",
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
    }


def test_the_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines (at most 250)"
    text = "\n".join(lines)
    for needed in ("make demo", "make test", "Genome Biology", "Licence", "docs/"):
        assert needed in text, needed


def test_the_readme_has_python_and_bash_examples():
    assert len(_blocks(README, "python")) >= 1
    assert len(_blocks(README, "bash")) >= 2
    assert all(
        "import epitensor as et" in _dedent(code) for p in _pages() for code in _blocks(p, "python")
    )


@pytest.mark.parametrize("code", _python_params())
def test_python_example_runs(code, tmp_path):
    if "tracks.tsv" in code:
        _own_files(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("code", _bash_params())
def test_readme_bash_example_runs(code, tmp_path):
    """Each command line of the block runs (``set -e``), in a fresh folder."""
    lines = []
    for line in code.splitlines():
        command = line.split("#")[0].strip()
        if command in NOT_RUN:
            continue
        lines.append(line.replace("make demo", f"make -C {REPO} demo"))
    if "tracks.tsv" in code:
        _own_files(tmp_path)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(lines)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout[-1500:], result.stderr[-3000:])


def test_setup_commands_exist():
    """``make test`` cannot run inside itself: its target is checked with ``make -n``."""
    for target in ("test", "demo", "docs"):
        result = subprocess.run(
            ["make", "-n", "-C", str(REPO), target], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
