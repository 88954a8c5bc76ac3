import json
import re

import numpy as np
import pandas as pd
import pybigtools
from PIL import Image

from epitensor.demo import ANNOTATION_PARAMS, QUICK_REGIONS, annotation_panels, region_subset
from epitensor.evaluation.benchmark import STANDARD_SPLIT
from epitensor.store.datasets import roadmap_pilot


def test_region_subset_keeps_the_first_regions(tmp_path, pilot_store):
    subset = region_subset(pilot_store, 2, tmp_path / "two.zarr")
    regions = pilot_store.layout.axis_regions("pilot").head(2)
    n = int(regions.n_bins.sum())
    assert subset.layout.n_positions == n
    assert subset.track_names() == pilot_store.track_names()
    np.testing.assert_array_equal(subset.read_block("pilot"), pilot_store.read_block("pilot", 0, n))
    # The second region starts right after the first on the new axis.
    second = subset.layout.locate(
        regions.chrom.iloc[1], regions.start.iloc[1], regions.start.iloc[1] + 25
    )
    assert int(second.axis_start.iloc[0]) == int(regions.n_bins.iloc[0])


def test_quick_demo_writes_every_output(quick_demo):
    result, out = quick_demo
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output

    # The held-out tracks as bigWig, read back over the quick regions.
    store = roadmap_pilot()
    regions = store.layout.axis_regions("pilot").head(QUICK_REGIONS)
    first = regions.iloc[0]
    for celltype, assay in STANDARD_SPLIT:
        path = out / "imputed" / f"{celltype}.{assay}.bigWig"
        with pybigtools.open(str(path)) as bigwig:
            values = np.asarray(
                bigwig.values(first.chrom, int(first.start), int(first.start) + 2500, fillna=None)
            )
        assert np.isfinite(values).all() and (values >= 0).all() and values.std() > 0

    # The tables parse and hold every method and every held-out track.
    table = pd.read_csv(out / "benchmark" / "metrics.csv")
    assert set(table.method) == {
        "avocado",
        "global_mean",
        "assay_mean",
        "average_activity",
        "parafac",
        "chromimpute_gbt",
        "epitensor",
    }
    assert set(zip(table.celltype, table.assay)) == set(STANDARD_SPLIT)
    summary = pd.read_csv(out / "benchmark" / "summary.csv", index_col=0)
    assert {"mse", "gwcorr", "catch1obs", "f1"} <= set(summary.index)

    # Every PNG opens; the report embeds every figure and contains the summary table.
    html = (out / "report.html").read_text()
    annotation = out / "annotation"
    pngs = sorted(out.glob("*.png")) + [
        out / "benchmark" / n for n in ("metrics.png", "reliability.png")
    ]
    pngs += [annotation / n for n in ("states.enrichment.png", "locus_promoter.png")]
    pngs += [annotation / "states.signal.png"]
    assert len(pngs) >= 10
    for png in pngs:
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) > 100
        assert f'data-file="{png.name}"' in html
    assert html.count("data:image/png;base64,") == len(pngs)
    assert "<table" in html and "average_activity" in html
    # the default model blends its network with average activity, and the report says so
    saved = json.loads((out / "model" / "config.json").read_text())["module"]
    assert saved["average"] == "blend" and saved["average_weight"] == 0.6
    assert "0.6 x the network&#x27;s output + 0.4 x the assay&#x27;s average activity" in html
    mse = summary.loc["mse", "avocado"]
    assert re.search(rf">{mse:.3f}<", html)
    # the bigWigs are the default imputation's, scored under its one name, and the report says so
    assert "The imputed bigWigs of this demo are epitensor&#x27;s" in html
    assert list(summary.columns)[0] == "epitensor"
    assert "Ranked by the ENCODE Imputation Challenge" in html and "Per assay" in html
    ranking = pd.read_csv(out / "benchmark" / "ranking.csv", index_col=0)
    assert "epitensor" in ranking.index
    params = json.loads((out / "imputed" / "impute.json").read_text())
    assert params["ensemble"]["rule"]["trees_weight"] == 0.6
    # the prediction intervals: their table, the reliability diagram, the bands
    assert "How far to trust each imputed value" in html
    assert "the band around the ensemble is its 90% prediction interval" in html
    intervals = pd.read_csv(out / "benchmark" / "intervals_summary.csv")
    assert {"per-bin", "constant"} == set(intervals.method)
    # the pairwise relationships, model beside the observed (no RNA-seq in the sample)
    assert "Pairwise relationships between marks" in html
    assert "H3K4me3 promoter ~ H3K36me3 gene body" in html and "Not scored" in html

    # The genome annotation: a BED9 over every position of the quick regions, K states,
    # its enrichment table, and the report's section naming the promoter-like state.

    import bioframe

    bed = bioframe.read_table(annotation / "states.bed", schema="bed9", skiprows=1)
    assert (bed.end - bed.start).sum() == int(regions.n_bins.sum()) * 25
    assert set(bed.name) <= {f"S{k}" for k in range(1, ANNOTATION_PARAMS["n_states"] + 1)}
    same = bed.chrom.to_numpy()[1:] == bed.chrom.to_numpy()[:-1]  # sorted: no two overlap
    assert (bed.start.to_numpy()[1:][same] >= bed.end.to_numpy()[:-1][same]).all()
    enrichment = pd.read_csv(annotation / "states.enrichment.tsv", sep="\t", index_col=0)
    assert len(enrichment) == ANNOTATION_PARAMS["n_states"]
    params = json.loads((annotation / "states.json").read_text())
    assert params["n_states"] == 10 and params["features"] == "genome factors"
    assert "Genome annotation from the latent space" in html
    promoter = enrichment["E116 promoter states"].idxmax()
    fold = enrichment.at[promoter, "E116 promoter states"]
    assert f"Promoter-like: {promoter} (" in html
    assert f"{fold:.1f}x enriched for E116 promoter states" in html


def test_annotation_panels_follow_the_holdout(trained_model):
    """E116 H3K27me3 is held out in the standard split: imputed; E116's other marks observed."""
    panels = annotation_panels(trained_model, ("E003", "H3K4me3"))
    assert panels[:2] == [("observed", "E003", "H3K4me3"), ("imputed", "E003", "H3K4me3")]
    assert [(kind, assay) for kind, _, assay in panels[2:]] == [
        ("observed", "H3K4me3"),
        ("observed", "H3K4me1"),
        ("observed", "H3K36me3"),
        ("imputed", "H3K27me3"),
        ("observed", "H3K9me3"),
    ]
    assert {celltype for _, celltype, _ in panels[2:]} == {"E116"}
