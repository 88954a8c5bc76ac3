"""The public API: ``import epitensor as et`` gives what a user needs, documented, and changes nothing."""

from __future__ import annotations

import ast
import doctest
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import epitensor as et

INIT = Path(et.__file__)

#: Public names whose examples run as written (the others need files of the user's).
RUNNABLE_EXAMPLES = [
    "AverageActivity",
    "BenchmarkOptions",
    "CVOptions",
    "EnsembleRule",
    "ImputeOptions",
    "IngestOptions",
    "TrainOptions",
    "AnnotateOptions",
    "TuneOptions",
    "DownstreamOptions",
    "IntervalCalibration",
    "Layout",
    "Store",
    "chrom_sizes",
]


def _run(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    return result.stdout.strip()


def test_import_is_light():
    """``import epitensor`` loads neither torch, zarr nor matplotlib: names load on first use."""
    heavy = _run(
        "import sys, epitensor\n"
        "print(sorted(m for m in ('torch', 'zarr', 'matplotlib', 'pandas') if m in sys.modules))"
    )
    assert heavy == "[]"


def test_every_public_name_resolves_and_is_documented_with_an_example():
    for name in et.__all__:
        value = getattr(et, name)
        assert name in dir(et)
        if name in ("__version__", "EpitensorError", "EpitensorWarning"):
            continue
        doc = inspect.getdoc(value) or ""
        assert "Parameters\n----------" in doc or inspect.isclass(value), name
        assert "Examples\n--------" in doc and ">>> import epitensor as et" in doc, name


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'impute_everything'"):
        et.impute_everything  # noqa: B018


def test_type_checking_imports_match_the_table():
    """What IDEs see (the TYPE_CHECKING block) is what ``__getattr__`` returns."""
    tree = ast.parse(INIT.read_text())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
    )
    seen = {}
    for node in block.body:
        for alias in node.names:
            seen[alias.asname or alias.name] = (node.module, alias.name)
    assert set(seen) == set(et._API)
    for name, (module, attribute) in seen.items():
        assert getattr(et, name) is getattr(sys.modules[module], attribute), name


def test_importing_every_module_changes_no_backend_and_no_threads():
    """No module switches matplotlib's backend or sets torch threads when imported."""
    code = (
        "import importlib, pkgutil, torch, matplotlib, epitensor\n"
        "threads = torch.get_num_threads()\n"
        "for m in pkgutil.walk_packages(epitensor.__path__, 'epitensor.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(matplotlib.get_backend(), torch.get_num_threads() == threads)"
    )
    assert _run(code, MPLBACKEND="svg").lower() == "svg true"


@pytest.mark.parametrize("name", RUNNABLE_EXAMPLES)
def test_runnable_examples_give_what_they_show(name):
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    (test,) = finder.find(getattr(et, name), name, globs={})
    assert test.examples
    result = runner.run(test)
    assert result.failed == 0


def test_an_estimator_around_a_trained_module_predicts():
    """``Avocado.from_module``'s example: the estimator builds itself around a module."""
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    (test,) = finder.find(et.Avocado.from_module, "from_module", globs={})
    assert runner.run(test).failed == 0
    assert any("predict" in example.source for example in test.examples)


#: Each job with an options object: its function, the options class, the CLI command.
JOBS = [
    ("ingest", "IngestOptions", "ingest"),
    ("train_model", "TrainOptions", "train"),
    ("annotate", "AnnotateOptions", "annotate"),
    ("tune", "TuneOptions", "tune"),
    ("run_downstream", "DownstreamOptions", "downstream"),
    ("run_benchmark", "BenchmarkOptions", "benchmark"),
]

#: CLI option name -> options field, where the two differ.
CLI_FIELDS = {
    "epochs": "n_epochs",
    "states": "n_states",
    "components": "n_components",
    "sample": "sample_size",
    "trials": "n_trials",
    "budget": "budget_minutes",
    "folds": "n_folds",
    "repeats": "n_repeats",
}


@pytest.mark.parametrize(("function", "options", "command"), JOBS)
def test_a_job_refuses_an_unknown_setting_before_any_work(function, options, command, tmp_path):
    job = getattr(et, function)
    args = {"run_downstream": (["a=x.npy"], "y.npy", tmp_path / "o")}.get(
        function, ("roadmap-pilot", tmp_path / "o")
    )
    with pytest.raises(et.EpitensorError, match=f"invalid option of {options}.*'n_epoch'"):
        job(*args, n_epoch=2)  # a misspelt setting
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("function", "options", "command"), JOBS)
def test_the_command_line_takes_its_defaults_from_the_options(function, options, command):
    """A default written into cli.py instead of read from the options class fails here."""
    import dataclasses

    import typer.main

    from epitensor.cli import app

    click_command = typer.main.get_command(app).commands[command]
    defaults = {f.name: f.default for f in dataclasses.fields(getattr(et, options))}
    compared = 0
    for param in click_command.params:
        field = CLI_FIELDS.get(param.name, param.name)
        if field not in defaults or param.default is None or isinstance(param.default, bool):
            continue
        expected = defaults[field]
        if field == "max_download":
            expected = f"{expected >> 30}G"
        assert param.default == expected, (command, param.name)
        compared += 1
    assert compared >= 1, command
