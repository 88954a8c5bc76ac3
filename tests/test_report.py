import base64

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from epitensor.viz.plots import plot_embedding_map, plot_tracks, plot_training_curve, umap_2d
from epitensor.viz.report import Report


def test_plots_write_readable_pngs(tmp_path, pilot_store):
    starts = np.arange(6046322, 6046322 + 400) * 25
    observed = pilot_store.read_track("E116", "H3K4me3", "pilot", 0, 400)
    plot_tracks(
        tmp_path / "tracks.png",
        "chr1",
        starts,
        {"observed E116 H3K4me3": observed, "average_activity": observed * 0.5},
        "E116 H3K4me3",
        genes=pd.DataFrame({"chrom": ["chr1"], "start": [starts[10]], "end": [starts[200]]}),
        tss=pd.DataFrame({"chrom": ["chr1"], "start": [starts[10]], "strand": ["-"]}),
    )
    history = pd.DataFrame(
        {"epoch": [1, 2, 3], "train_mse": [0.3, 0.2, 0.15], "holdout_mse": [0.3, 0.25, 0.24]}
    )
    plot_training_curve(tmp_path / "curve.png", history, "training")
    rng = np.random.default_rng(0)
    coords = umap_2d(rng.normal(size=(30, 8)))
    assert coords.shape == (30, 2) and np.isfinite(coords).all()
    plot_embedding_map(tmp_path / "map.png", coords, ["a"] * 15 + ["b"] * 15, "map")
    for name in ("tracks.png", "curve.png", "map.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] > 300


def test_umap_of_five_rows_works():
    coords = umap_2d(np.random.default_rng(1).normal(size=(5, 32)))
    assert coords.shape == (5, 2)


def test_report_embeds_figures_and_escapes_text(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2], "train_mse": [0.3, 0.2]})
    plot_training_curve(tmp_path / "curve.png", history, "t")
    report = Report("Demo <report>")
    report.heading("Results")
    report.paragraph("baseline wins on MSE & Pearson", note=True)
    report.table(pd.DataFrame({"mse": [0.1234567]}, index=["avocado"]), caption="metrics")
    report.figure(tmp_path / "curve.png", "the training curve")
    path = report.write(tmp_path / "report.html")
    text = path.read_text()
    assert "Demo &lt;report&gt;" in text
    assert "baseline wins on MSE &amp; Pearson" in text
    assert "0.123" in text and "<table" in text
    encoded = text.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(encoded) == (tmp_path / "curve.png").read_bytes()
    assert 'data-file="curve.png"' in text


def test_wide_tables_scroll_inside_their_box(tmp_path):
    report = Report("wide")
    report.table(pd.DataFrame(np.ones((2, 40)), columns=[f"metric_{i}" for i in range(40)]))
    text = report.to_html()
    assert '<div class="table-wrap"><table' in text
    assert ".table-wrap { overflow-x: auto;" in text


def test_the_summary_leads_the_page():
    report = Report("demo")
    report.heading("Results")
    report.summary("Imputed 5 tracks & scored them.")
    text = report.to_html()
    assert text.index('class="summary"') < text.index("<h2>Results</h2>")
    assert "Imputed 5 tracks &amp; scored them." in text


def test_the_demo_summary_says_what_was_imputed_and_how_well():
    from types import SimpleNamespace

    from epitensor.demo import _summary_sentences

    summary = pd.DataFrame(
        {
            "avocado": [0.135, 0.483, 0.9],
            "average_activity": [0.167, 0.458, 0.95],
            "chromimpute_gbt": [0.168, 0.469, 0.8],
        },
        index=["mse", "gwcorr", "aucobs1"],
    )
    result = SimpleNamespace(
        summary=summary,
        best={"mse": "avocado", "gwcorr": "avocado", "aucobs1": "average_activity"},
        holdout=[("E003", "H3K4me3"), ("E017", "H3K36me3")],
        train=[("E003", "H3K27me3")] * 23,
    )
    text = _summary_sentences(result, quick=False)
    assert text.startswith("The demo imputed 2 held-out tracks of the bundled Roadmap sample")
    assert "(E003 H3K4me3, E017 H3K36me3) from the other 23 tracks with the model." in text
    assert "Pearson r 0.483 (best baseline: chromimpute_gbt, 0.469)" in text
    assert "MSE 0.135 (best baseline: average_activity, 0.167)" in text
    assert text.endswith("it is the best method on 2 of 3 metrics.")
    assert text.count(". ") == 1  # two sentences
    assert "Quick demo" in _summary_sentences(result, quick=True)


@pytest.mark.browser
def test_the_quick_demo_report_fits_its_page_in_chromium(tmp_path, quick_demo):
    """The quick demo's report, opened in headless Chromium: no page-wide scroll bar."""
    from test_docs import chromium_driver

    result, out = quick_demo
    assert result.exit_code == 0, result.output
    path = out / "report.html"
    text = path.read_text()
    assert 'class="summary"' in text and "The demo imputed 5 held-out tracks" in text
    driver = chromium_driver(tmp_path / "profile")
    try:
        for width in (1280, 412):
            driver.set_window_size(width, 900)
            driver.get(path.as_uri())
            page, client, boxes = driver.execute_script(
                "const r = document.documentElement;"
                "return [r.scrollWidth, r.clientWidth,"
                " Array.from(document.querySelectorAll('.table-wrap'))"
                "  .map(b => [b.scrollWidth, b.clientWidth])];"
            )
            assert page <= client, f"the report is {page}px wide in a {client}px window"
            assert boxes, "no table in the report"
            if width == 412:  # the per-track table is wider than a phone: it scrolls in its box
                assert any(inner > outer for inner, outer in boxes)
    finally:
        driver.quit()
