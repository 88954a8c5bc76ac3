"""Hyperparameter search: validation split, resumable study, best preset, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError
from epitensor.avocado import PRESETS, Avocado
from epitensor.cli import app
from epitensor.tune import PAPER_GRID, choose_validation, tune, tuning_regions

TINY_SPACE = {
    "n_celltype_factors": [4],
    "n_assay_factors": [4],
    "n_25bp_factors": [2, 4],
    "n_250bp_factors": [4],
    "n_5kbp_factors": [4],
    "n_layers": [1],
    "n_nodes": [8, 16],
}
HOLDOUT = [("E003", "H3K4me3"), ("E116", "H3K27me3")]


def test_paper_grid_brackets_the_paper_values():
    assert len(PAPER_GRID) == 7
    for name, choices in PAPER_GRID.items():
        assert PRESETS["paper"][name] in choices, name


def test_choose_validation_leaves_every_celltype_and_assay_trained():
    train = [(c, a) for c in "ABC" for a in "xyz" if (c, a) != ("A", "x")]
    chosen = choose_validation(train, fraction=0.5, seed=3)
    assert len(chosen) == 4 and set(chosen) <= set(train)
    rest = [t for t in train if t not in chosen]
    assert {c for c, _ in rest} == set("ABC") and {a for _, a in rest} == set("xyz")
    assert choose_validation(train, fraction=0.5, seed=3) == chosen
    with pytest.raises(EpitensorError, match="no training track can be held out"):
        choose_validation([("A", "x"), ("B", "y")])


def test_tuning_regions_are_whole_windows(pilot_store, small_pilot_store):
    windows = tuning_regions(pilot_store, 100_000)
    assert len(windows) == 5 and ((windows.end - windows.start) == 20_000 * 25).all()
    assert windows.chrom.nunique() == 5  # spread over the regions, not the first five
    everything = tuning_regions(small_pilot_store, 100_000)
    assert len(everything) == 1 and int(everything.end[0] - everything.start[0]) == 40_000 * 25


def test_tune_resumes_and_writes_a_preset_train_accepts(small_pilot_store, tmp_path):
    out = tmp_path / "tune"
    kwargs = dict(holdout=HOLDOUT, space=TINY_SPACE, positions=20_000, n_epochs=1, verbose=False)
    first = tune(small_pilot_store, out, n_trials=2, **kwargs)
    assert (first.trials.state == "COMPLETE").sum() == 2
    # validation tracks come from the training tracks only, never the held-out ones
    assert first.validation and not set(first.validation) & set(HOLDOUT)
    assert set(first.validation) <= set(small_pilot_store.track_names())
    for name in ("study.db", "best_preset.json", "trials.csv", "trials.md", "parameters.json"):
        assert (out / name).stat().st_size > 0, name
    again = tune(small_pilot_store, out, n_trials=3, **kwargs)
    assert list(again.trials.number) == [0, 1, 2]  # continued, not restarted
    assert again.validation == first.validation
    assert again.best_value <= first.best_value
    written = pd.read_csv(out / "trials.csv")
    assert len(written) == 3 and written.validation_mse.notna().all()
    preset = json.loads((out / "best_preset.json").read_text())
    assert {k: preset[k] for k in TINY_SPACE} == again.best_params
    assert preset["n_epochs"] == PRESETS["cpu-small"]["n_epochs"]  # the full schedule
    model = Avocado.from_preset(out / "best_preset.json")
    assert model.n_nodes == again.best_params["n_nodes"]
    # importance of the two varied hyperparameters (the fixed ones have none)
    assert set(again.importance.index) == {"n_25bp_factors", "n_nodes"}
    assert again.importance.sum() == pytest.approx(1.0)
    assert (out / "importance.png").stat().st_size > 0
    # a finished study is not rerun; a different holdout is refused
    assert len(tune(small_pilot_store, out, n_trials=3, **kwargs).trials) == 3
    with pytest.raises(EpitensorError, match="holds a study with holdout"):
        tune(small_pilot_store, out, n_trials=4, **{**kwargs, "holdout": HOLDOUT[:1]})
    # train --preset loads it
    model_dir = tmp_path / "model"
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(small_pilot_store.url),
            "--out",
            str(model_dir),
            "--preset",
            str(out / "best_preset.json"),
            "--epochs",
            "1",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert Avocado.load(model_dir).n_nodes == again.best_params["n_nodes"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"space": {"n_node": [1]}}, "unknown hyperparameters"),
        ({"space": {"n_nodes": []}}, "no value for"),
        ({"n_trials": 0}, "n_trials must be a positive integer"),
        ({"budget_minutes": 0}, "budget must be positive"),
        ({"preset": "huge"}, "invalid preset"),
        ({"holdout": ["E003H3K4me3"]}, "expected CELLTYPE:ASSAY"),
        ({"holdout": [("E003", "RNA-seq")]}, "not observed"),
    ],
)
def test_tune_raises(small_pilot_store, tmp_path, kwargs, message):
    with pytest.raises(EpitensorError, match=message):
        tune(small_pilot_store, tmp_path / "t", **{"verbose": False, **kwargs})


def test_cli_tune(small_pilot_store, tmp_path):
    runner = CliRunner()
    assert "Example" in runner.invoke(app, ["tune", "--help"]).output
    space = tmp_path / "space.json"
    space.write_text(json.dumps(TINY_SPACE))
    out = tmp_path / "t"
    args = ["tune", str(small_pilot_store.url), "--out", str(out), "--trials", "2"]
    args += ["--space", str(space), "--positions", "20000", "--epochs", "1", "--quiet"]
    args += ["--holdout", "E003:H3K4me3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best of 2 trials" in result.output and (out / "best_preset.json").is_file()
    space.write_text("[1]")
    bad = runner.invoke(app, args)
    assert bad.exit_code == 1 and "a JSON object" in bad.output and "Traceback" not in bad.output


def test_cli_tune_error_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["tune", str(tmp_path / "nope.zarr"), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.output.startswith("error:")


def test_trial_store_holds_only_the_trial_tracks(small_pilot_store, tmp_path):
    from epitensor.training import stage1_store
    from epitensor.tune import _trial_store

    view = stage1_store(small_pilot_store, tuning_regions(small_pilot_store, 100_000))
    tracks = [t for t in small_pilot_store.track_names() if t not in HOLDOUT][:7]
    copied = _trial_store(view, tracks, tmp_path / "trials.zarr")
    assert copied.track_names() == tracks
    axis = view.axes[0]
    assert copied.axes == [axis] and copied.axis_length(axis) == 40_000
    for celltype, assay in tracks[:2]:
        np.testing.assert_array_equal(
            copied.read_track(celltype, assay, axis), view.read_track(celltype, assay, axis)
        )
