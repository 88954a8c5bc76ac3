"""Sphinx configuration of the epitensor documentation (``make docs``).

The pages are Markdown (MyST); the API reference is generated from ``epitensor.__all__``
and the CLI reference from the Typer app, both at build time (``_ext/generate.py``).
The build is offline and warnings are errors (``sphinx-build -W --keep-going``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import generate  # noqa: E402  (docs/_ext: writes api.md and _cli_commands.md)

import epitensor  # noqa: E402

project = "epitensor"
author = "epitensor developers"
copyright = "2026, epitensor developers"
release = version = epitensor.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
]

# .rst: the API stubs that autosummary writes into generated/
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# The result files that the pages link to (tables and figures of benchmark runs) are
# data, not pages: they are copied as downloads, not parsed.
exclude_patterns = [
    "_build",
    "_ext",
    "_cli_commands.md",
    "annotate",
    "average-cv",
    "cv",
    "cv-blend",
    "cv-default",
    "cv-rules",
    "demo",
    "downstream",
    "tune",
    "explain_peaks_H3K4me3.md",
]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_typehints = "none"  # numpydoc sections state the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "furo"
html_title = f"epitensor {release}"
html_static_path = ["_static"]
html_css_files = ["epitensor.css"]
html_show_sourcelink = False

generate.write_api_page(HERE, epitensor.__all__)
generate.write_cli_page(HERE)
