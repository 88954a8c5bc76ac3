"""Tables for reports and docs: a data frame as GitHub Markdown."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = ["markdown_table"]


def markdown_table(frame: pd.DataFrame, digits: int = 3, bold: Mapping | None = None) -> str:
    """A GitHub Markdown table of a frame (index as the first column).

    Parameters
    ----------
    frame : pandas.DataFrame
    digits : int
        Decimals of float cells. Default 3.
    bold : mapping, optional
        Row label to the column whose cell is set in bold. Default None.
    """
    bold = bold or {}

    def cell(value) -> str:
        if isinstance(value, float | np.floating):
            return "–" if np.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    names = [str(frame.index.name or "")] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    integer = [frame[c].dtype.kind in "iu" for c in frame.columns]
    for label, row in frame.iterrows():
        cells = [f"{int(v):,}" if is_int else cell(v) for v, is_int in zip(row, integer)]
        for i, column in enumerate(frame.columns):
            if bold.get(label) == column and cells[i] != "–":
                cells[i] = f"**{cells[i]}**"
        lines.append("| " + " | ".join([str(label), *cells]) + " |")
    return "\n".join(lines) + "\n"
