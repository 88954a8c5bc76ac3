"""Figures, tables and the HTML report: they take arrays and tables and know no model.

Figures are drawn on :class:`matplotlib.figure.Figure` objects, never through
pyplot's global state, so importing or calling them changes no user's backend.

Modules:

* :mod:`epitensor.viz.plots`: figures for the demo and the report: tracks, training curves, embedding maps.
* :mod:`epitensor.viz.report`: the self-contained HTML report: text, tables and figures embedded in one page.
* :mod:`epitensor.viz.tables`: tables for reports and docs: a data frame as GitHub Markdown.
"""
