"""Imputation to bigWig / bedGraph and fast inference, on a model trained on the real pilot data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pybigtools
import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError
from epitensor.cli import app
from epitensor.workflows import impute as export

TRACKS = [("E065", "H3K4me1"), ("E003", "H3K27me3")]


@pytest.fixture(scope="module")
def model(trained_model):
    return trained_model


@pytest.fixture(scope="module")
def chr11_bigwigs(model, tmp_path_factory):
    """Two tracks over chr11 (five pilot regions), -log10 p scale."""
    out = tmp_path_factory.mktemp("impute") / "tracks"
    paths = export.impute(model, TRACKS, out, chroms=["chr11"], verbose=False)
    return paths


def _read_segment(path, seg) -> np.ndarray:
    n = int(seg.axis_end - seg.axis_start)
    start = int(seg.first_bin) * 25
    with pybigtools.open(str(path)) as reader:
        values = reader.values(seg.chrom, start, start + 25 * n, bins=n, fillna=None)
    return np.asarray(values, dtype=np.float32)


def test_bigwig_reads_back_as_predict(model, chr11_bigwigs):
    """Every chr11 bin of each file equals sinh(predict) at its axis position (float32)."""
    segments = export.track_segments(model.layout_, model.chrom_sizes_, ["chr11"])
    assert len(segments) == 5 and (segments.chrom == "chr11").all()
    for (celltype, assay), path in zip(TRACKS, chr11_bigwigs):
        assert path.name == f"{celltype}.{assay}.bigWig"
        for seg in segments.itertuples():
            expected = np.sinh(
                model.predict(celltype, assay, start=int(seg.axis_start), end=int(seg.axis_end))
            )
            np.testing.assert_allclose(_read_segment(path, seg), expected, rtol=1e-5, atol=1e-6)
    with pybigtools.open(str(chr11_bigwigs[0])) as reader:
        # the header lists the written chromosomes with the model's lengths
        assert reader.chroms() == {"chr11": int(model.chrom_sizes_["chr11"])}
        # between two pilot regions nothing is written
        seg = segments.iloc[0]
        gap_start = (int(seg.first_bin) + int(seg.axis_end - seg.axis_start)) * 25
        assert np.isnan(reader.values("chr11", gap_start, gap_start + 1000, fillna=None)).all()
    params = json.loads((chr11_bigwigs[0].parent / "impute.json").read_text())
    assert params["scale"] == "-log10 p" and params["tracks"] == [list(t) for t in TRACKS]


def test_arcsinh_bedgraph_and_region(model, tmp_path):
    """--arcsinh writes the model's own scale; a region writes the bins it overlaps."""
    seg = export.track_segments(model.layout_, model.chrom_sizes_, ["chr11"]).iloc[1]
    start_bp = int(seg.first_bin) * 25 + 1010  # mid-bin: the overlapping bin is included
    region = f"chr11:{start_bp}-{start_bp + 2000}"
    out = tmp_path / "one.bedGraph.gz"
    export.impute(model, TRACKS[:1], out, regions=[region], arcsinh=True, verbose=False)
    table = pd.read_csv(out, sep="\t", skiprows=1, header=None, names=["chrom", "s", "e", "v"])
    first = int(seg.axis_start) + 40  # 1010 bp into the region is its bin 40
    assert table.s.iloc[0] == (int(seg.first_bin) + 40) * 25
    assert (table.e - table.s == 25).all() and len(table) == 81
    expected = model.predict(*TRACKS[0], start=first, end=first + 81)
    np.testing.assert_allclose(table.v, expected, rtol=1e-6, atol=1e-6)
    # the same bins on the -log10 p scale are sinh of these
    bigwig = tmp_path / "one.bw"
    export.impute(model, TRACKS[:1], bigwig, regions=[region], verbose=False)
    with pybigtools.open(str(bigwig)) as reader:
        values = reader.values(
            "chr11", int(table.s.iloc[0]), int(table.e.iloc[-1]), bins=81, fillna=None
        )
    np.testing.assert_allclose(values, np.sinh(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gemm", ["default", "onednn"])
def test_fast_inference_equals_plain_forward_any_block_size(model, gemm, monkeypatch):
    """The shared genome projection gives the textbook 398-wide forward pass, for any block,
    with torch's products and with oneDNN's (bias and ReLU fused)."""
    from epitensor.nn.module import onednn_available

    if gemm == "onednn" and not onednn_available():
        pytest.skip("this torch build has no oneDNN linear operator")
    monkeypatch.setenv("EPITENSOR_CPU_GEMM", gemm)
    tracks = [("E116", "H3K4me3"), ("E017", "H3K9me3"), ("E117", "H3K36me3")]
    start, end = 500_000, 510_000
    plain = np.stack([export.plain_predict(model, c, a, "pilot", start, end) for c, a in tracks])
    predictor = export.FastPredictor(model, tracks, device="cpu")
    with predictor.session():
        assert predictor._gemm == gemm
        whole = predictor.predict("pilot", start, end)
        pieces = np.concatenate(
            [predictor.predict("pilot", lo, min(lo + 777, end)) for lo in range(start, end, 777)],
            axis=1,
        )
    np.testing.assert_allclose(whole, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-6)
    assert not model.module_.training  # the borrowed module is restored
    with export.FastPredictor(model, tracks, device="cpu", precision="bf16").session() as fast:
        bf16 = fast.predict("pilot", start, end)
    assert bf16.dtype == np.float32 and np.abs(bf16 - plain).max() < 0.05
    assert np.corrcoef(bf16.ravel(), plain.ravel())[0, 1] > 0.999


def test_segments_sorted_clipped_and_checked(model):
    segments = export.track_segments(model.layout_, model.chrom_sizes_, ["chr2", "chr11"])
    assert list(segments.chrom) == sorted(segments.chrom)  # chr11 before chr2
    assert (segments.groupby("chrom").first_bin.diff().dropna() > 0).all()
    with pytest.raises(EpitensorError, match="overlap"):
        export.track_segments(
            model.layout_,
            model.chrom_sizes_,
            regions=["chr11:2000000-2000200", "chr11:2000100-2000300"],
        )
    with pytest.raises(EpitensorError, match="outside the model's layout"):
        export.track_segments(model.layout_, model.chrom_sizes_, regions=["chr3:1000-2000"])
    with pytest.raises(EpitensorError, match="has no positions"):
        export.track_segments(model.layout_, model.chrom_sizes_, ["chrX"])


def test_impute_raises_on_user_mistakes(model, tmp_path):
    with pytest.raises(EpitensorError, match="unknown cell type 'E999'"):
        export.impute(model, [("E999", "H3K4me3")], tmp_path / "a.bw", verbose=False)
    with pytest.raises(EpitensorError, match="listed twice"):
        export.impute(model, TRACKS[:1] * 2, tmp_path, verbose=False)
    with pytest.raises(EpitensorError, match="names one file"):
        export.impute(model, TRACKS, tmp_path / "a.bw", verbose=False)
    with pytest.raises(EpitensorError, match="no tracks to impute"):
        # the pilot store holds every pair the model knows
        export.impute(model, [], tmp_path, missing_in="roadmap-pilot", verbose=False)
    with pytest.raises(EpitensorError, match="block_size"):
        export.impute(model, TRACKS, tmp_path, block_size=0, verbose=False)
    with pytest.raises(EpitensorError, match="invalid fmt"):
        export.impute(model, TRACKS, tmp_path, fmt="wig", verbose=False)
    with pytest.raises(EpitensorError, match="invalid precision"):
        export.impute(model, TRACKS, tmp_path, precision="int8", verbose=False)
    existing = tmp_path / "x.bw"
    existing.write_bytes(b"keep")
    with pytest.raises(EpitensorError, match="already exists"):
        export.impute(model, TRACKS[:1], existing, verbose=False)
    assert existing.read_bytes() == b"keep"
    # the options: an unknown keyword is named, before any work; so is a wrong options object
    with pytest.raises(EpitensorError, match="got 'blocksize', expected one of"):
        export.impute(model, TRACKS, tmp_path, blocksize=1024, verbose=False)
    with pytest.raises(EpitensorError, match="got dict, expected ImputeOptions"):
        export.impute(model, TRACKS, tmp_path, options={"arcsinh": True})


def test_impute_options_are_one_set_of_defaults(model, tmp_path):
    """``options=`` and keyword overrides are the same call; the CLI shows the same defaults."""
    import typer.main

    from epitensor.workflows.options import ImputeOptions

    seg = export.track_segments(model.layout_, model.chrom_sizes_, ["chr11"]).iloc[0]
    region = f"chr11:{int(seg.first_bin) * 25}-{int(seg.first_bin) * 25 + 2500}"
    options = ImputeOptions(arcsinh=True, fmt="bedgraph", verbose=False)
    (by_options,) = export.impute(model, TRACKS[:1], tmp_path / "a", regions=[region],
                                  options=options)  # fmt: skip
    (by_keywords,) = export.impute(model, TRACKS[:1], tmp_path / "b", regions=[region],
                                   arcsinh=True, fmt="bedgraph", verbose=False)  # fmt: skip
    (overridden,) = export.impute(model, TRACKS[:1], tmp_path / "c", regions=[region],
                                  options=options, arcsinh=False)  # fmt: skip
    assert by_options.read_bytes() == by_keywords.read_bytes() != overridden.read_bytes()
    assert options.arcsinh  # left as it was
    command = typer.main.get_command(app).commands["impute"]
    defaults = {p.name: p.default for p in command.params}
    default = ImputeOptions()
    for name in ("arcsinh", "precision", "overwrite", "track_batch"):
        assert defaults[name] == getattr(default, name), name


def test_cli_impute(model, tmp_path):
    model_dir = tmp_path / "model"
    model.save(model_dir)
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(
        app,
        ["impute", str(model_dir), "--celltype", "E065", "--assay", "H3K4me1"]
        + ["--celltype", "E117", "--assay", "H3K9me3", "--region", "chr11:2000000-2010000"]
        # the network alone: the ensemble's own command-line tests are in test_ensemble.py
        + ["--out", str(out), "--quiet", "--bedgraph", "--precision", "bf16", "--model-only"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "E065.H3K4me1.bedGraph",
        "E117.H3K9me3.bedGraph",
        "impute.json",
    ]
    result = runner.invoke(app, ["impute", str(model_dir), "--celltype", "E065", "--out", "x.bw"])
    assert result.exit_code != 0 and "pairs" in result.output
    result = runner.invoke(
        app, ["impute", str(model_dir), "--all-missing", "roadmap-pilot", "--out", str(out)]
    )
    assert result.exit_code == 1 and "no tracks to impute" in result.output
    assert runner.invoke(app, ["impute", "--help"]).exit_code == 0


def test_saved_model_keeps_one_axis_in_memory(model, tmp_path):
    """Imputing from a saved model reads the genome factors lazily and drops them after."""
    from epitensor.estimators.avocado import Avocado

    model.save(tmp_path / "model")
    loaded = Avocado.load(tmp_path / "model")
    assert "pilot" not in loaded.module_.genome
    export.impute(loaded, ["E065:H3K4me1"], tmp_path / "a.bw", chroms=["chr21"], verbose=False)
    assert "pilot" not in loaded.module_.genome
    with pybigtools.open(str(tmp_path / "a.bw")) as reader:
        assert list(reader.chroms()) == ["chr21"]
