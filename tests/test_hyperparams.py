"""Hyperparameters declared once: the estimator, the presets and the layers agree."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields

import pytest
from sklearn.base import clone

from epitensor._utils import EpitensorError
from epitensor.estimators.avocado import PRESETS, Avocado
from epitensor.nn.hyperparams import Hyperparameters, ModuleConfig, TrainConfig, read_preset
from epitensor.nn.module import AvocadoModule


def test_estimator_signature_is_the_hyperparameters():
    params = list(inspect.signature(Avocado.__init__).parameters.values())[1:]
    assert [p.name for p in params] == Hyperparameters().keys()
    assert {p.name: p.default for p in params} == dict(Hyperparameters().__dict__)
    assert Avocado().get_params() == dict(Hyperparameters().__dict__)


def test_module_defaults_are_the_module_config():
    signature = inspect.signature(AvocadoModule.__init__).parameters
    for f in fields(ModuleConfig):
        assert signature[f.name].default == f.default, f.name


def test_presets_are_instances_and_build_estimators():
    assert all(isinstance(p, Hyperparameters) for p in PRESETS.values())
    model = Avocado.from_preset("cpu-small", n_epochs=3)
    assert model.n_nodes == 256 and model.n_epochs == 3
    assert clone(model).get_params() == model.get_params()
    config = model.train_config(7, seed_offset=2)
    assert isinstance(config, TrainConfig)
    assert (config.n_epochs, config.seed, config.genome_lr) == (7, 2, 3e-2)
    assert model.module_config(5, 4)["n_25bp_factors"] == 10


def test_validation_is_one_check_per_layer():
    with pytest.raises(EpitensorError, match="n_nodes must be a positive integer"):
        Avocado(n_nodes=0).hyperparameters().check()
    with pytest.raises(EpitensorError, match="dropout must lie in"):
        Avocado(dropout=1.5).hyperparameters().check()
    with pytest.raises(EpitensorError, match="lr must be a positive number"):
        Avocado(lr=-1.0).hyperparameters().check()


def test_preset_file_through_the_cli(small_pilot_store, tmp_path):
    """`train --preset FILE` takes a JSON object of parameters; a bad key is one line."""
    from typer.testing import CliRunner

    from epitensor.cli import app
    from epitensor.estimators.avocado import Avocado as Loaded

    preset = tmp_path / "tuned.json"
    preset.write_text(json.dumps({"n_nodes": 16, "n_layers": 1, "n_celltype_factors": 4,
                                  "n_assay_factors": 4, "n_25bp_factors": 4,
                                  "n_250bp_factors": 4, "n_5kbp_factors": 4,
                                  "batch_size": 4096, "n_epochs": 1}))  # fmt: skip
    assert read_preset(preset).n_nodes == 16
    out = tmp_path / "model"
    args = ["train", small_pilot_store.url, "--out", str(out), "--preset", str(preset), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert Loaded.load(out).get_params()["n_nodes"] == 16
    preset.write_text(json.dumps({"n_trees": 3}))
    result = CliRunner().invoke(app, [*args[:3], str(tmp_path / "again"), *args[4:]])
    assert result.exit_code == 1 and "unknown parameter 'n_trees'" in result.output
