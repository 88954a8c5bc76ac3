"""The self-contained HTML report: text, tables and figures embedded in one page."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from epitensor._utils import atomic_write_bytes

__all__ = ["Figure", "Report"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222;
       line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
.table-wrap { overflow-x: auto; max-width: 100%; margin: 0.8em 0; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 1em; }
.summary { background: #eef6ee; border-left: 4px solid #3a8f3a; padding: 0.5em 1em;
           font-size: 1.05em; }
p, li, figcaption { overflow-wrap: anywhere; }
"""


@dataclass
class Figure:
    """A PNG file and its caption."""

    path: Path
    caption: str


@dataclass
class Report:
    """An HTML report assembled section by section, written as one self-contained file.

    Parameters
    ----------
    title : str
        Page title.
    """

    title: str
    _parts: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    _summary: str = ""

    def summary(self, text: str) -> None:
        """Set the short summary shown under the title, whenever it is called (escaped)."""
        self._summary = f'<p class="summary">{html.escape(text)}</p>'

    def heading(self, text: str) -> None:
        """Start a section."""
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, note: bool = False) -> None:
        """Add a paragraph of plain text (escaped); ``note`` highlights it."""
        cls = ' class="note"' if note else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def bullets(self, items: Sequence[str]) -> None:
        """Add a bulleted list of plain-text items."""
        body = "".join(f"<li>{html.escape(i)}</li>" for i in items)
        self._parts.append(f"<ul>{body}</ul>")

    def table(self, frame: pd.DataFrame, caption: str = "", float_format: str = "{:.3f}") -> None:
        """Add a table; a table wider than the page scrolls inside its box, not the page."""
        if caption:
            self._parts.append(f"<p><b>{html.escape(caption)}</b></p>")
        body = frame.to_html(
            float_format=lambda v: float_format.format(v), border=0, na_rep="", escape=True
        )
        self._parts.append(f'<div class="table-wrap">{body}</div>')

    def figure(self, path: str | os.PathLike, caption: str) -> None:
        """Embed a PNG figure (base64), so the page needs no other file."""
        path = Path(path)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.figures.append(Figure(path, caption))
        self._parts.append(
            f'<figure><img alt="{html.escape(path.name)}" data-file="{html.escape(path.name)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}'
            "</figcaption></figure>"
        )

    def to_html(self) -> str:
        """The whole page."""
        body = "\n".join([self._summary, *self._parts] if self._summary else self._parts)
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )

    def write(self, path: str | os.PathLike) -> Path:
        """Write the page atomically; return its path."""
        path = Path(path)
        atomic_write_bytes(path, self.to_html().encode("utf-8"))
        return path
