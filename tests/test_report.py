import base64

import numpy as np
import pandas as pd
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
