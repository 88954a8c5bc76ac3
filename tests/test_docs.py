"""The documentation site builds without a warning, and every page renders in a real browser.

The site is built once per session with the ``make docs`` command (into a temporary
folder). Each built page is then opened in headless Chromium (Debian's ``chromium``,
driven through ``chromedriver`` by selenium) at a desktop and a phone width; a test
fails on a broken internal link (a missing file or anchor), an image that did not
load, or a page wider than the window (a horizontal scroll bar).

Without the ``docs`` extra or without Chromium the tests are skipped with the reason;
under CI (``CI`` set, as ``.ci/run`` runs) they fail instead, since ``.ci/run`` and
``make test`` install both.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

#: Window sizes (width, height) each page must fit: a laptop and a phone.
WIDTHS = ((1280, 900), (412, 915))

#: The flags Chromium runs with: no sandbox (root in CI), no GPU, nothing from the network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def _missing(what: str) -> None:
    """Skip, or fail under CI, where the set-up installs everything these tests need."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI installs it: .ci/run, make test)")
    pytest.skip(what)


def chromium_driver(user_data_dir: Path):
    """A selenium driver of Debian's chromium through /usr/bin/chromedriver (offline)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[docs]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        _missing(
            "chromium or chromedriver is not installed (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


#: What a page reports about itself once loaded: its widths, its images, its links.
PAGE_PROBE = """
const root = document.documentElement;
return {
  scrollWidth: Math.max(root.scrollWidth, document.body.scrollWidth),
  clientWidth: root.clientWidth,
  brokenImages: Array.from(document.images)
      .filter(img => !img.complete || img.naturalWidth === 0)
      .map(img => img.getAttribute('src')),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  widest: Array.from(document.querySelectorAll('body *'))
      .filter(e => e.getBoundingClientRect().right > root.clientWidth + 1)
      .slice(0, 3)
      .map(e => e.tagName + '.' + e.className + ': ' + (e.textContent || '').slice(0, 60)),
};
"""


@pytest.fixture(scope="session")
def built_docs(tmp_path_factory) -> Path:
    """The site built as ``make docs`` builds it (warnings are errors), in a temporary folder."""
    try:
        import myst_parser  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError:
        _missing("sphinx or myst-parser is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("docs") / "html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(DOCS),
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stderr[-6000:]}"
    assert result.stderr.strip() == "", f"sphinx-build warned:\n{result.stderr[-6000:]}"
    return out


def _pages(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.html") if "_static" not in p.parts)


def test_the_site_has_every_page(built_docs):
    names = {p.relative_to(built_docs).as_posix() for p in _pages(built_docs)}
    for page in (
        "index.html",
        "getting-started.html",
        "guide/ingest.html",
        "guide/train.html",
        "guide/impute.html",
        "guide/latent.html",
        "guide/evaluate.html",
        "guide/downstream.html",
        "guide/explain.html",
        "guide/annotate.html",
        "guide/scale.html",
        "guide/reference.html",
        "guide/models.html",
        "validation.html",
        "performance.html",
        "cli.html",
        "api.html",
        "architecture.html",
        "changelog.html",
    ):
        assert page in names, page
    # the references are generated: every public name, every command
    import epitensor
    from epitensor.cli import app

    api = (built_docs / "api.html").read_text()
    for name in epitensor.__all__:
        if not name.startswith("__"):
            assert f"generated/epitensor.{name}.html" in api, name
    cli = (built_docs / "cli.html").read_text()
    for command in app.registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        assert f"epitensor {name}" in cli, name
    for group in app.registered_groups:  # epitensor models list|show|pull
        for command in group.typer_instance.registered_commands:
            assert f"epitensor {group.name} {command.name}" in cli, command.name


def _target_ids(path: Path, cache: dict[Path, set[str]]) -> set[str]:
    if path not in cache:
        text = path.read_text(errors="replace")
        cache[path] = set(re.findall(r"""\bid=["']([^"']+)["']""", text))
    return cache[path]


@pytest.mark.browser
def test_every_page_renders_in_chromium(built_docs):
    """No broken internal link or image, and no page wider than the window."""
    problems: list[str] = []
    ids: dict[Path, set[str]] = {}
    with tempfile.TemporaryDirectory() as profile:
        driver = chromium_driver(Path(profile))
        try:
            driver.set_page_load_timeout(60)
            for width, height in WIDTHS:
                driver.set_window_size(width, height)
                for page in _pages(built_docs):
                    name = page.relative_to(built_docs).as_posix()
                    driver.get(page.as_uri())
                    info = driver.execute_script(PAGE_PROBE)
                    if info["scrollWidth"] > info["clientWidth"]:
                        problems.append(
                            f"{name} at {width}px: {info['scrollWidth']}px wide, "
                            f"window {info['clientWidth']}px; {info['widest']}"
                        )
                    for src in info["brokenImages"]:
                        problems.append(f"{name}: image did not load: {src}")
                    if width != WIDTHS[0][0]:
                        continue  # links are the same at every width
                    for href in info["links"]:
                        url = urlsplit(href)
                        if url.scheme != "file":
                            continue
                        target = Path(unquote(url.path))
                        if not target.exists():
                            problems.append(f"{name}: broken link to {target}")
                        elif url.fragment and target.suffix == ".html":
                            if unquote(url.fragment) not in _target_ids(target, ids):
                                problems.append(
                                    f"{name}: no anchor #{url.fragment} in {target.name}"
                                )
        finally:
            driver.quit()
    assert not problems, "\n".join(problems)


def test_the_readme_links_only_to_files_that_exist():
    text = (REPO / "README.md").read_text()
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if "://" in link or link.startswith("#"):
            continue
        assert (REPO / link.split("#")[0]).exists(), link
