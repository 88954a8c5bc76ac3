"""Tests of the Avocado estimator: fit, predict, save/load, stage 2, transfer, presets, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from typer.testing import CliRunner

from epitensor._utils import EpitensorError
from epitensor.estimators.avocado import PRESETS, Avocado
from epitensor.nn.module import GenomeFactors

TINY = dict(
    n_celltype_factors=4,
    n_assay_factors=4,
    n_25bp_factors=3,
    n_250bp_factors=3,
    n_5kbp_factors=3,
    n_layers=1,
    n_nodes=16,
    n_epochs=1,
    n_genome_epochs=1,
    batch_size=2048,
    lr=0.01,
    verbose=False,
)


def test_clone_and_params():
    model = Avocado()
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    assert Avocado(n_nodes=5).set_params(n_nodes=7).n_nodes == 7
    with pytest.raises(ValueError, match="Invalid parameter"):
        Avocado().set_params(n_node=7)


def test_presets():
    paper = Avocado.from_preset("paper")
    assert (paper.n_layers, paper.n_nodes, paper.n_assay_factors) == (2, 2048, 256)
    assert (paper.n_25bp_factors, paper.n_250bp_factors, paper.n_5kbp_factors) == (25, 40, 45)
    small = Avocado.from_preset("cpu-small", n_epochs=3)
    assert small.n_epochs == 3 and small.n_nodes == PRESETS["cpu-small"]["n_nodes"]
    with pytest.raises(EpitensorError, match="invalid preset"):
        Avocado.from_preset("huge")


def test_preset_file(tmp_path):
    path = tmp_path / "best_preset.json"
    path.write_text(json.dumps({**PRESETS["cpu-small"], "n_nodes": 64, "n_layers": 3}))
    model = Avocado.from_preset(path, n_epochs=2)
    assert (model.n_nodes, model.n_layers, model.n_epochs) == (64, 3, 2)
    assert model.n_assay_factors == PRESETS["cpu-small"]["n_assay_factors"]
    assert Avocado.from_preset(str(path)).n_nodes == 64
    with pytest.raises(EpitensorError, match="preset file not found"):
        Avocado.from_preset(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(EpitensorError, match="one JSON object"):
        Avocado.from_preset(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(EpitensorError, match="cannot read preset file"):
        Avocado.from_preset(tmp_path / "bad.json")
    (tmp_path / "typo.json").write_text('{"n_node": 5}')
    with pytest.raises(EpitensorError, match="unknown parameter 'n_node'"):
        Avocado.from_preset(tmp_path / "typo.json")


def test_trained_model_fixture(trained_model):
    model = trained_model
    assert model.celltypes_ == ["E003", "E017", "E065", "E116", "E117"]
    assert len(model.training_tracks_) == 20
    assert ("E003", "H3K4me3") not in model.training_tracks_
    assert list(model.history_.columns) == ["epoch", "stage", "train_mse", "holdout_mse", "seconds"]
    assert model.layout_.axes == ["pilot"] and model.genome_ == "hg19"
    assert model.celltype_embedding_.shape == (5, model.n_celltype_factors)
    assert model.assay_embedding_.shape == (5, model.n_assay_factors)


def test_fit_reduces_heldout_mse(trained_model, pilot_store):
    """The fitted model scores the held-out tracks far better than the same model untrained."""
    untrained = Avocado(**{**trained_model.get_params(), "n_epochs": 0})
    untrained.fit(pilot_store, holdout=trained_model.holdout_tracks_)
    before = untrained.history_  # no epochs: score it directly
    assert before.empty
    positions = slice(0, 200_000)
    errors = []
    for model in (untrained, trained_model):
        pred = model.predict_tracks(trained_model.holdout_tracks_, start=0, end=200_000)
        truth = np.stack(
            [pilot_store.read_track(c, a)[positions] for c, a in trained_model.holdout_tracks_]
        )
        errors.append(float(np.mean((pred - truth) ** 2)))
    assert errors[1] < 0.75 * errors[0]
    assert trained_model.history_.holdout_mse.iloc[-1] < 0.3


def test_bf16_training_matches_fp32_quality(small_pilot_store):
    """bf16 autocast learns as well as fp32: same held-out MSE curve within a few percent."""
    params = dict(TINY, n_epochs=3, n_nodes=64, seed=1, n_threads=1)
    holdout = ["E003:H3K4me3", "E116:H3K27me3"]
    curves = {
        precision: Avocado(**params, precision=precision)
        .fit(small_pilot_store, holdout=holdout)
        .history_.holdout_mse.to_numpy()
        for precision in ("fp32", "bf16")
    }
    assert curves["fp32"][-1] < 0.95 * curves["fp32"][0]  # it is still learning
    np.testing.assert_allclose(curves["bf16"], curves["fp32"], rtol=0.02)


def test_predict_shapes_and_consistency(trained_model):
    one = trained_model.predict("E003", "H3K4me3", start=100, end=1100)
    assert one.shape == (1000,) and one.dtype == np.float32
    many = trained_model.predict_tracks(["E003:H3K4me3", ("E116", "H3K27me3")], start=100, end=1100)
    assert many.shape == (2, 1000)
    np.testing.assert_allclose(many[0], one, rtol=1e-5, atol=1e-6)
    factors = trained_model.genome_factors(start=5, end=15)
    assert factors.shape == (10, 3 * 8)
    assert isinstance(trained_model.genome_module("pilot"), GenomeFactors)


def test_save_load_round_trip(trained_model, tmp_path):
    trained_model.save(tmp_path / "m")
    files = sorted(p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*"))
    assert "config.json" in files and "weights.safetensors" in files
    assert "genome/pilot.safetensors" in files
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["class"] == "Avocado" and config["params"]["n_nodes"] == 64
    loaded = Avocado.load(tmp_path / "m")
    assert "pilot" not in loaded.module_.genome  # genome axes load lazily
    expected = trained_model.predict_tracks(trained_model.holdout_tracks_, start=0, end=5000)
    got = loaded.predict_tracks(loaded.holdout_tracks_, start=0, end=5000)
    assert np.array_equal(expected, got)
    assert loaded.celltypes_ == trained_model.celltypes_
    assert loaded.training_tracks_ == trained_model.training_tracks_
    assert loaded.history_.equals(trained_model.history_)
    with pytest.raises(EpitensorError, match="already exists"):
        trained_model.save(tmp_path / "m")
    # a lazily loaded model saves elsewhere without loading its axes
    fresh = Avocado.load(tmp_path / "m")
    fresh.save(tmp_path / "m2")
    assert "pilot" not in fresh.module_.genome
    assert np.array_equal(
        Avocado.load(tmp_path / "m2").genome_factors(), trained_model.genome_factors()
    )


def test_load_rejects_non_models(tmp_path):
    with pytest.raises(EpitensorError, match="not an epitensor model"):
        Avocado.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"class": "Other"}))
    with pytest.raises(EpitensorError, match="Other"):
        Avocado.load(tmp_path)


def test_stage2_changes_only_genome_factors(trained_model, small_pilot_store, tmp_path):
    trained_model.save(tmp_path / "m")
    model = Avocado.load(tmp_path / "m")
    model.set_params(verbose=False)
    before = {k: v.clone() for k, v in model.module_.state_dict().items()}
    model.fit_genome(small_pilot_store, axes=["pilot"], checkpoint_dir=tmp_path / "ck")
    assert (tmp_path / "ck" / "pilot" / "checkpoint" / "state.json").is_file()
    after = model.module_.state_dict()
    assert model.genome_axes_ == {"pilot": 40_000}
    assert after["genome.pilot.emb_25bp.weight"].shape[0] == 40_000
    for name, value in before.items():
        assert torch.equal(value, after[name]), name
    assert list(model.history_.stage)[-1] == "genome:pilot"


def test_transfer_leaves_old_parameters_identical(small_pilot_store):
    model = Avocado(**TINY).fit(small_pilot_store, celltypes=["E003", "E017", "E116", "E117"])
    assert "E065" not in model.celltypes_
    with pytest.raises(EpitensorError, match="unknown cell type"):
        model.predict("E065", "H3K4me3")
    before = {k: v.clone() for k, v in model.module_.state_dict().items()}
    model.fit_celltypes(small_pilot_store, ["E065"])
    after = model.module_.state_dict()
    assert model.celltypes_[-1] == "E065"
    for name, value in before.items():
        if name == "celltype_embedding.weight":
            assert torch.equal(after[name][:4], value)
            assert after[name].shape == (5, 4)
        else:
            assert torch.equal(after[name], value), name
    pred = model.predict("E065", "H3K4me3", start=0, end=100)
    assert pred.shape == (100,) and np.isfinite(pred).all()
    with pytest.raises(EpitensorError, match="already in the model"):
        model.fit_celltypes(small_pilot_store, ["E065"])


def test_fit_assays_transfer(small_pilot_store):
    model = Avocado(**TINY).fit(small_pilot_store, assays=["H3K4me3", "H3K27me3", "H3K36me3"])
    old = model.module_.network[0].weight.clone()
    model.fit_assays(small_pilot_store, ["H3K9me3"])
    assert model.assays_[-1] == "H3K9me3"
    assert torch.equal(model.module_.network[0].weight, old)


@pytest.mark.parametrize(
    ("kwargs", "fit_kwargs", "match"),
    [
        ({}, {"holdout": [("E999", "H3K4me3")]}, "not in store"),
        ({}, {"holdout": ["E003-H3K4me3"]}, "CELLTYPE:ASSAY"),
        ({}, {"axes": ["chr1"]}, "unknown axis"),
        ({"n_nodes": 0}, {}, "n_nodes must be a positive integer"),
        ({"n_epochs": -1}, {}, "n_epochs"),
        ({"dropout": 1.5}, {}, "dropout"),
        ({"precision": "fp8"}, {}, "precision"),
        ({}, {"celltypes": ["E003"], "holdout": [("E017", "H3K4me3")]}, "no training track"),
    ],
)
def test_bad_inputs_raise(small_pilot_store, kwargs, fit_kwargs, match):
    with pytest.raises(EpitensorError, match=match):
        Avocado(**{**TINY, **kwargs}).fit(small_pilot_store, **fit_kwargs)


def test_unfitted_and_bad_ranges(trained_model):
    with pytest.raises(EpitensorError, match="not fitted"):
        Avocado().predict("E003", "H3K4me3")
    with pytest.raises(EpitensorError, match="invalid range"):
        trained_model.predict("E003", "H3K4me3", start=10, end=5)
    with pytest.raises(EpitensorError, match="no genome factors"):
        trained_model.predict("E003", "H3K4me3", axis="chr1")
    with pytest.raises(EpitensorError, match="unknown assay"):
        trained_model.predict("E003", "H3K4me2")


def test_cli_train(small_pilot_store, tmp_path):
    from epitensor.cli import app

    out = tmp_path / "model"
    args = [
        "train",
        small_pilot_store.url,
        "--out",
        str(out),
        "--epochs",
        "1",
        "--quiet",
        "--holdout",
        "E003:H3K4me3",
        "--threads",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file() and (out / "log.jsonl").is_file()
    assert not (tmp_path / "model.checkpoint").exists()
    assert Avocado.load(out).n_epochs == 1
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "already exists" in again.output
    bad = CliRunner().invoke(
        app, ["train", small_pilot_store.url, "--out", str(tmp_path / "x"), "--holdout", "E003"]
    )
    assert bad.exit_code != 0


# stage 1 on regions of a chromosome store ------------------------------------------------------


def _training_bed(store, path, n_bins=4000):
    """The first ``n_bins`` of the chr4 and chr8 regions of ``store`` as a BED file."""
    lines = []
    for chrom in ("chr8", "chr4"):
        first = int(store.layout.axis_regions(chrom).first_bin.iloc[0])
        lines.append(f"{chrom}\t{first * 25}\t{(first + n_bins) * 25}\ttrain-{chrom}\n")
    path.write_text("".join(lines))
    return path


def test_stage1_on_regions_then_stage2_per_chromosome(by_chrom_store, tmp_path):
    """Stage 1 trains on BED regions read from chromosome axes; stage 2 then takes over chr4."""
    bed = _training_bed(by_chrom_store, tmp_path / "train.bed")
    model = Avocado(**TINY, seed=3).fit(by_chrom_store, regions=bed, holdout=["E003:H3K4me3"])
    assert model.genome_axes_ == {"regions": 8000}
    assert list(model.layout_.regions.chrom) == ["chr4", "chr8"]  # natural order
    assert np.isfinite(model.history_.holdout_mse).all()
    pred = model.predict("E003", "H3K4me3", "regions", 3990, 4010)
    assert pred.shape == (20,) and np.isfinite(pred).all()
    chr4 = by_chrom_store.layout.axis_regions("chr4").iloc[0]
    inside = int(chr4.first_bin) * 25 + 1000
    beyond = inside + 200_000  # past the stage-1 region: only stage 2 knows it
    assert list(model.layout_.locate("chr4", inside, inside + 100).axis) == ["regions"]
    assert model.layout_.locate("chr4", beyond, beyond + 100).empty
    model.fit_genome(by_chrom_store, axes=["chr4"])
    regions = model.layout_.regions.set_index("chrom")
    assert regions.loc["chr4", "axis"] == "chr4" and regions.loc["chr8", "axis"] == "regions"
    assert list(model.layout_.locate("chr4", beyond, beyond + 100).axis) == ["chr4"]
    assert model.predict("E003", "H3K4me3", "chr4").shape == (int(chr4.n_bins),)


def test_stage1_region_choice(by_chrom_store, small_pilot_store, tmp_path):
    from epitensor.store.compendium import RegionView
    from epitensor.train.fitting import stage1_store

    assert stage1_store(by_chrom_store) is by_chrom_store  # small: every position
    assert stage1_store(by_chrom_store, "all") is by_chrom_store
    with pytest.warns(UserWarning, match="lack"):
        pilot = stage1_store(by_chrom_store, "pilot")
    assert isinstance(pilot, RegionView) and pilot.axes == ["pilot"]
    with pytest.raises(EpitensorError, match="expected 'all', 'pilot' or a BED"):
        stage1_store(by_chrom_store, "pilots")


def test_cli_train_on_regions(by_chrom_store, tmp_path):
    from epitensor.cli import app

    bed = _training_bed(by_chrom_store, tmp_path / "train.bed", n_bins=2000)
    out = tmp_path / "model"
    args = ["train", by_chrom_store.url, "--out", str(out), "--epochs", "1", "--quiet"]
    result = CliRunner().invoke(app, [*args, "--regions", str(bed), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert Avocado.load(out).genome_axes_ == {"regions": 4000}


def test_weight_averaged_fit_scores_its_final_parameters(small_pilot_store, tmp_path):
    """With swa_start the model ends with averaged parameters, scored as ``holdout_mse_``."""
    from epitensor.train.fitting import HoldoutScorer, TrackSet

    holdout = [("E003", "H3K4me3")]
    params = dict(TINY, n_epochs=3, seed=2, n_threads=1)
    averaged = Avocado(**params, swa_start=2).fit(small_pilot_store, holdout=holdout)
    last = Avocado(**params).fit(small_pilot_store, holdout=holdout)
    np.testing.assert_array_equal(averaged.history_.holdout_mse, last.history_.holdout_mse)
    assert last.holdout_mse_ == last.history_.holdout_mse.iloc[-1]
    assert averaged.holdout_mse_ != averaged.history_.holdout_mse.iloc[-1]
    held = TrackSet.build(small_pilot_store, holdout, averaged.celltypes_, averaged.assays_)
    scorer = HoldoutScorer(small_pilot_store, "pilot", held, 100_000)
    rescored = scorer.score(averaged.module_, torch.device("cpu"))
    assert averaged.holdout_mse_ == pytest.approx(rescored, rel=1e-6)
    averaged.save(tmp_path / "model")
    assert Avocado.load(tmp_path / "model").holdout_mse_ == pytest.approx(rescored, rel=1e-6)
