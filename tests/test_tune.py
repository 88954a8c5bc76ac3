"""Hyperparameter search: validation split, equal-compute trials, time guard, resumable study, CLI."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError
from epitensor.cli import app
from epitensor.estimators.avocado import PRESETS, Avocado
from epitensor.evaluation.tune import (
    PAPER_GRID,
    SAMPLE_OVERHEAD,
    STUDY_FILE,
    STUDY_NAME,
    choose_validation,
    network_multiply_adds,
    sample_cost,
    trial_allowance,
    trial_budget_of,
    tune,
    tuning_regions,
)

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
TINY = {name: values[0] for name, values in TINY_SPACE.items()}


def _grid_points(space):
    names = list(space)
    for values in itertools.product(*space.values()):
        yield dict(zip(names, values))


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
    # every position: the store's two regions whole (its head of the pilot axis, issue 35 W4)
    assert len(everything) == 2 and int((everything.end - everything.start).sum()) == 40_000 * 25


def test_network_multiply_adds_of_the_paper_network():
    # (32 + 256 + 25 + 40 + 45) inputs x 2048, one 2048 x 2048 layer, a 2048 -> 1 output
    assert network_multiply_adds(PRESETS["paper"]) == 398 * 2048 + 2048 * 2048 + 2048
    assert sample_cost(PRESETS["paper"]) == 3 * 5_011_456 + SAMPLE_OVERHEAD


def test_allowance_gives_bigger_networks_fewer_samples():
    per_epoch = 100_000
    budget = trial_budget_of(PAPER_GRID, PRESETS["cpu-small"], per_epoch, 4)
    points = list(_grid_points(PAPER_GRID))
    costs = np.array([sample_cost(p) for p in points])
    allowed = np.array([trial_allowance(p, budget, per_epoch, 20) for p in points])
    # equal compute: each trains what the budget pays for, bigger networks fewer samples
    assert (allowed * costs <= budget).all() and ((allowed + 1) * costs > budget).all()
    order = np.argsort(costs, kind="stable")
    assert (np.diff(allowed[order]) <= 0).all()
    # calibrated on the median configuration: half the grid gets at least 4 epochs
    assert abs(np.mean(allowed >= 4 * per_epoch) - 0.5) < 0.01
    biggest, smallest = allowed[np.argmax(costs)], allowed[np.argmin(costs)]
    assert 0.1 * per_epoch < biggest < per_epoch < 4 * per_epoch < smallest < 20 * per_epoch
    paper = trial_allowance(PRESETS["paper"], budget, per_epoch, 20)
    small = trial_allowance(PRESETS["cpu-small"], budget, per_epoch, 20)
    assert biggest < paper < small < smallest
    # never more than the preset's full schedule, never nothing
    assert trial_allowance(TINY, 1e18, per_epoch, 20) == 20 * per_epoch
    assert trial_allowance(PRESETS["paper"], 1.0, per_epoch, 20) == 1
    # a grid of one point: that point gets exactly the epochs asked for
    one = {name: [PRESETS["paper"][name]] for name in PAPER_GRID}
    budget = trial_budget_of(one, PRESETS["cpu-small"], per_epoch, 3)
    assert trial_allowance(PRESETS["paper"], budget, per_epoch, 20) == 3 * per_epoch


def _tiny_model(store, n_epochs, **params):
    fixed = {"swa_start": None, "verbose": False, "precision": "fp32", "n_epochs": n_epochs}
    return Avocado(**{**PRESETS["cpu-small"], **TINY, **fixed, **params}).fit(store)


def test_trial_trains_its_allowance_as_fit_would(small_pilot_store):
    from epitensor.evaluation.tune import _train_trial

    n = small_pilot_store.axis_length("pilot")
    tracks = [(c, a) for c, a in small_pilot_store.track_names() if c == "E003"]
    fitted = _tiny_model(small_pilot_store, 1).predict_tracks(tracks)
    model = _tiny_model(small_pilot_store, 0)
    untrained = model.predict_tracks(tracks)
    # an allowance of one whole epoch is one epoch of Avocado.fit: same loop, seeds, data
    assert _train_trial(model, small_pilot_store, n, None) == {
        "samples": n,
        "epochs": 1.0,
        "guard_stopped": False,
    }
    np.testing.assert_allclose(model.predict_tracks(tracks), fitted, atol=1e-5)
    assert np.abs(fitted - untrained).max() > 0.1
    # an allowance inside an epoch ends there (the last batch cut to fit)
    model = _tiny_model(small_pilot_store, 0)
    half = _train_trial(model, small_pilot_store, n // 2 + 7, None)
    assert half == {"samples": n // 2 + 7, "epochs": (n // 2 + 7) / n, "guard_stopped": False}
    partial = model.predict_tracks(tracks)
    assert np.abs(partial - fitted).max() > 1e-3 and np.abs(partial - untrained).max() > 1e-3


def test_time_guard_stops_a_trial(small_pilot_store):
    from epitensor.evaluation.tune import _train_trial

    n = small_pilot_store.axis_length("pilot")
    model = _tiny_model(small_pilot_store, 0)
    before = model.predict_tracks([("E003", "H3K27me3")])
    passed = _train_trial(model, small_pilot_store, 20 * n, time.perf_counter())
    assert passed == {"samples": 0, "epochs": 0.0, "guard_stopped": True}
    np.testing.assert_array_equal(model.predict_tracks([("E003", "H3K27me3")]), before)
    started = time.perf_counter()
    soon = _train_trial(model, small_pilot_store, 20 * n, started + 0.5)
    # 20 epochs take far longer than half a second: the guard ends the training
    assert soon["guard_stopped"] and soon["samples"] < 20 * n
    assert time.perf_counter() - started < 10


def test_tune_guard_is_recorded_and_the_study_resumes(small_pilot_store, tmp_path):
    out = tmp_path / "guarded"
    kwargs = dict(holdout=HOLDOUT, space=TINY_SPACE, positions=20_000, verbose=False)
    # a budget of 0.06 s: the first trial still runs, its training stopped at once
    first = tune(small_pilot_store, out, n_trials=3, budget_minutes=0.001, **kwargs)
    assert len(first.trials) == 1  # no trial starts after the budget
    row = first.trials.iloc[0]
    assert row.state == "COMPLETE" and row.guard_stopped and row.samples < row.allowance
    assert np.isfinite(row.validation_mse)
    # resumed without a budget: the other trials train their whole allowance
    again = tune(small_pilot_store, out, n_trials=3, budget_minutes=None, **kwargs)
    assert list(again.trials.number) == [0, 1, 2]
    rest = again.trials.iloc[1:]
    assert not rest.guard_stopped.any() and (rest.samples == rest.allowance).all()
    per_epoch = 20_000
    for _, trial in rest.iterrows():
        params = {**PRESETS["cpu-small"], **{k: trial[k] for k in TINY_SPACE}}
        assert trial.allowance == trial_allowance(params, again.trial_budget, per_epoch, 20)
        assert trial.epochs == pytest.approx(trial.samples / per_epoch)
    written = pd.read_csv(out / "trials.csv")
    assert {"epochs", "samples", "seconds", "guard_stopped"} <= set(written.columns)
    assert written.guard_stopped.tolist() == [True, False, False]
    parameters = json.loads((out / "parameters.json").read_text())
    assert parameters["trial_budget"] == again.trial_budget
    with pytest.raises(EpitensorError, match="holds a study with trial_budget"):
        tune(small_pilot_store, out, n_trials=4, trial_budget=1e9, **kwargs)


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


def test_a_trial_left_running_by_an_interrupted_run_is_marked_failed(small_pilot_store, tmp_path):
    import optuna

    out = tmp_path / "tune"
    kwargs = dict(holdout=HOLDOUT, space=TINY_SPACE, positions=20_000, n_epochs=1, verbose=False)
    tune(small_pilot_store, out, n_trials=1, **kwargs)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / STUDY_FILE}")
    study.ask()  # what a run killed mid-trial leaves: trial 1, RUNNING for ever
    again = tune(small_pilot_store, out, n_trials=1, **kwargs)
    assert again.trials.set_index("number").state.to_dict() == {0: "COMPLETE", 1: "FAIL"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"space": {"n_node": [1]}}, "unknown hyperparameters"),
        ({"space": {"n_nodes": []}}, "no value for"),
        ({"n_trials": 0}, "n_trials must be a positive integer"),
        ({"budget_minutes": 0}, "budget must be positive"),
        ({"trial_budget": -1.0}, "trial_budget must be a positive number"),
        ({"space": {"n_nodes": [64, 0.5]}}, "not positive integers"),
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
    args += ["--holdout", "E003:H3K4me3", "--trial-budget", "2e10"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best of 2 trials" in result.output and (out / "best_preset.json").is_file()
    assert json.loads((out / "parameters.json").read_text())["trial_budget"] == 2e10
    space.write_text("[1]")
    bad = runner.invoke(app, args)
    assert bad.exit_code == 1 and "a JSON object" in bad.output and "Traceback" not in bad.output


def test_cli_tune_error_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["tune", str(tmp_path / "nope.zarr"), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.output.startswith("error:")


def test_trial_store_holds_only_the_trial_tracks(small_pilot_store, tmp_path):
    from epitensor.evaluation.tune import _trial_store
    from epitensor.train.fitting import stage1_store

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
