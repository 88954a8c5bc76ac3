"""Options objects of the evaluation jobs: the benchmark and the cross-validation.

Each holds the settings of its job with their defaults, declared once for the
command line (``epitensor benchmark``), the Python API and the demo. Like
:mod:`epitensor.workflows.options`, it imports neither numpy nor torch, so the
command line reads the defaults when it starts; the job checks the values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from epitensor.workflows.options import AUTO_ENSEMBLE, JobOptions

if TYPE_CHECKING:
    from epitensor.estimators.ensemble import EnsembleRule

__all__ = [
    "AUTO_ENSEMBLE",
    "DEFAULT_BOOTSTRAPS",
    "DEFAULT_CV_BASELINES",
    "DEFAULT_PRESET",
    "BenchmarkOptions",
    "CVOptions",
    "DownstreamOptions",
    "TuneOptions",
]

DEFAULT_PRESET = "cpu-small"
"""The Avocado preset a benchmark or a cross-validation trains unless told otherwise."""

DEFAULT_CV_BASELINES = ("average_activity", "parafac", "chromimpute_gbt")
"""Baselines :func:`~epitensor.evaluation.benchmark.run_cv` runs beside the model by default."""

DEFAULT_BOOTSTRAPS = 10
"""Bootstraps over chromosomes the methods are ranked on (the challenge ranked on ten)."""


@dataclass(frozen=True)
class BenchmarkOptions(JobOptions):
    """The settings of :func:`epitensor.evaluation.benchmark.run_benchmark`.

    The store, the output folder and the Python objects a run may reuse (a
    fitted model, baselines, annotations, extra scorers) are arguments of the
    function; the settings are here, with their defaults. ``epitensor
    benchmark`` builds one from its options.

    Parameters
    ----------
    split : str, path-like or sequence of (str, str)
        ``"standard"`` (:data:`~epitensor.evaluation.benchmark.STANDARD_SPLIT`),
        a split TSV, or the held-out tracks. Default ``"standard"``.
    preset : str, sequence of str, or None
        Preset(s) of :meth:`Avocado.from_preset` for the model: one gives the
        method ``avocado``, several give ``avocado-<preset>`` each (e.g.
        ``("cpu-small", "paper")``). Default :data:`DEFAULT_PRESET`
        (``"cpu-small"``). None: no model, baselines only.
    model_params : dict, optional
        Overrides of the preset (e.g. ``{"n_epochs": 2}``). Default None.
    parafac_epochs : int
        Epochs of the tensor-factorization baseline after its least-squares
        start. Default 1.
    seed : int
        Seed of the baselines. Default 0.
    ensemble : EnsembleRule, "auto" or None
        Score :class:`~epitensor.estimators.ensemble.Ensemble` of the (first)
        model with the ``chromimpute_gbt`` and ``average_activity`` baselines.
        Default :data:`AUTO_ENSEMBLE` (``"auto"``): the default rule, what
        ``epitensor impute`` writes, as the method
        :data:`~epitensor.estimators.ensemble.DEFAULT_METHOD` (``epitensor``),
        whenever the run has a model and both baselines. A rule: that rule
        (method ``ensemble`` unless it is the default), the parts required.
        None: no ensemble.
    bootstraps : int
        Bootstraps over chromosomes (:func:`~epitensor.evaluation.ranking.chromosome_bootstraps`)
        the methods are ranked on by the challenge's rule
        (:func:`~epitensor.evaluation.ranking.challenge_ranking`); 0 ranks
        nothing. Default :data:`DEFAULT_BOOTSTRAPS` (10).
    overwrite : bool
        Replace an existing output folder. Default False.
    verbose : bool
        Progress bars and messages. Default True.

    Examples
    --------
    >>> import epitensor as et
    >>> et.BenchmarkOptions(model_params={"n_epochs": 2}).preset
    'cpu-small'
    """

    split: str | os.PathLike | Sequence[tuple[str, str]] = "standard"
    preset: str | Sequence[str] | None = DEFAULT_PRESET
    model_params: Mapping | None = None
    parafac_epochs: int = 1
    seed: int = 0
    ensemble: EnsembleRule | str | None = AUTO_ENSEMBLE
    bootstraps: int = DEFAULT_BOOTSTRAPS
    overwrite: bool = False
    verbose: bool = True


@dataclass(frozen=True)
class CVOptions(JobOptions):
    """The settings of :func:`epitensor.evaluation.benchmark.run_cv`.

    The store, the output folder and the Python objects of a run (annotations,
    extra scorers, folds given by hand) are arguments of the function; the
    settings are here, with their defaults. ``epitensor benchmark --cv K``
    builds one from its options.

    Parameters
    ----------
    k : int
        Folds. Default 5.
    seed : int
        Seed of the fold assignment. Default 0.
    training_seeds : sequence of int
        Seeds of every stochastic method's training; each fold is trained once
        per seed (deterministic baselines once per fold). Default (0,).
    presets : sequence of str
        Avocado presets, each its own method (``avocado`` for one,
        ``avocado-<preset>`` for several); empty for baselines only. Default
        (:data:`DEFAULT_PRESET`,).
    model_params : dict, optional
        Overrides of every preset (e.g. ``{"n_epochs": 2}``). Default None.
    methods : sequence of str or mapping, optional
        Baselines by name (see :data:`epitensor.estimators.baselines.BASELINES`),
        or ``{name: factory}`` where ``factory(seed)`` returns an unfitted
        baseline. Default None: :data:`DEFAULT_CV_BASELINES`.
    parafac_epochs : int
        Epochs of the PARAFAC baseline after its least-squares start. Default 1.
    blends : sequence of sequences of str
        Extra methods that average the imputations of other methods, e.g.
        ``[("avocado", "average_activity")]`` scores their mean as the method
        ``avocado+average_activity``. Default none.
    ensemble : EnsembleRule, "auto" or None
        Score :class:`~epitensor.estimators.ensemble.Ensemble` of the first
        preset's model, built on the fold's ``chromimpute_gbt`` and average
        activity. Default :data:`AUTO_ENSEMBLE` (``"auto"``): the default rule,
        what ``epitensor impute`` writes, as the method
        :data:`~epitensor.estimators.ensemble.DEFAULT_METHOD` (``epitensor``),
        whenever a preset and ``chromimpute_gbt`` are run; it is then the
        reference of the paired tests and of ``wins``. A rule: that rule
        (method ``ensemble`` unless it is the default), ``chromimpute_gbt``
        required. None: no ensemble.
    bootstraps : int
        Bootstraps over chromosomes the methods are ranked on by the
        challenge's rule, on every track's imputation by the fold that held it
        out (first training seed); 0 ranks nothing. Default
        :data:`DEFAULT_BOOTSTRAPS` (10).
    overwrite : bool
        Replace an existing output folder. Default False.
    verbose : bool
        Progress messages. Default True.

    Examples
    --------
    >>> import epitensor as et
    >>> et.CVOptions(k=3, training_seeds=(0, 1)).presets
    ('cpu-small',)
    """

    k: int = 5
    seed: int = 0
    training_seeds: Sequence[int] = (0,)
    presets: Sequence[str] = (DEFAULT_PRESET,)
    model_params: Mapping | None = None
    methods: Sequence[str] | Mapping | None = None
    parafac_epochs: int = 1
    blends: Sequence[Sequence[str]] = ()
    ensemble: EnsembleRule | str | None = AUTO_ENSEMBLE
    bootstraps: int = DEFAULT_BOOTSTRAPS
    overwrite: bool = False
    verbose: bool = True


@dataclass(frozen=True)
class TuneOptions(JobOptions):
    """The settings of :func:`epitensor.evaluation.tune.tune`.

    The store and the study's folder are arguments of the function; the
    settings are here, with their defaults. ``epitensor tune`` builds one from
    its options.

    Parameters
    ----------
    n_trials : int
        Completed trials the study should hold in all; a rerun runs only the
        missing ones. Default 20.
    budget_minutes : float or None
        Wall-clock limit of this run: each trial's share of it is guarded and
        no trial starts after it. Default 30. None: no limit and no guard.
    holdout : sequence of (str, str) or "CELL:ASSAY"
        The tracks to be reported later, kept out of the search. Default none.
    space : mapping or path-like, optional
        Name to the values to draw from, or a JSON file of it
        (:func:`~epitensor.evaluation.tune.read_space`). Default None: the
        paper's grid of the seven structural hyperparameters.
    preset : str
        The preset giving every other setting (and the full training schedule
        of ``best_preset.json``). Default :data:`DEFAULT_PRESET`.
    positions : int
        Positions each trial trains and is scored on. Default 100,000.
    n_epochs : int
        Epochs of the space's median configuration by cost: sets the
        multiply-add budget of every trial. Default 4.
    seed : int
        Seed of the validation draw, the sampler and each trial's model. Default 0.
    n_threads : int, optional
        CPU threads of each trial. Default None: torch's choice.
    verbose : bool
        One line per trial on stderr. Default True.
    trial_budget : float, optional
        Multiply-add equivalents per trial, e.g. ``1e12``. Default None:
        ``n_epochs`` epochs of the median configuration.

    Examples
    --------
    >>> import epitensor as et
    >>> et.TuneOptions(n_trials=5).budget_minutes
    30.0
    """

    n_trials: int = 20
    budget_minutes: float | None = 30.0
    holdout: Sequence = ()
    space: Mapping[str, Sequence] | str | os.PathLike | None = None
    preset: str = DEFAULT_PRESET
    positions: int = 100_000
    n_epochs: int = 4
    seed: int = 0
    n_threads: int | None = None
    verbose: bool = True
    trial_budget: float | None = None


@dataclass(frozen=True)
class DownstreamOptions(JobOptions):
    """The settings of :func:`epitensor.evaluation.downstream.run_downstream`.

    The feature files, the labels and the output folder are arguments of the
    function; the settings are here, with their defaults. ``epitensor
    downstream`` builds one from its options.

    Parameters
    ----------
    model : {"xgboost", "logistic"}
        The classifier (or regressor). Default ``"xgboost"`` (the paper's).
    n_folds : int
        Folds per repeat. Default 20.
    n_repeats : int
        Repeats, reshuffled. Default 1.
    regression : bool
        Continuous labels, scored by Pearson r and R². Default False.
    threshold : float, optional
        Binarise the labels at ``>= threshold``. Default None.
    n_samples : int, optional
        Use the first ``n_samples`` rows of the labels and of every feature
        set (e.g. 3000 for the paper's FIRE subset). Default None: all; the
        row counts must then agree.
    seed : int
        Seed of the folds and the models. Default 0.
    n_estimators : int
        XGBoost's most trees (early stopping picks fewer). Default 5000.
    threads : int, optional
        Threads of the models. Default None: the CPUs this process may use.
    title : str, optional
        Chart title. Default None.
    overwrite : bool
        Replace an existing output folder. Default False.
    verbose : bool
        Progress on stderr. Default True.

    Examples
    --------
    >>> import epitensor as et
    >>> et.DownstreamOptions(threshold=0.5).n_folds
    20
    """

    model: str = "xgboost"
    n_folds: int = 20
    n_repeats: int = 1
    regression: bool = False
    threshold: float | None = None
    n_samples: int | None = None
    seed: int = 0
    n_estimators: int = 5000
    threads: int | None = None
    title: str | None = None
    overwrite: bool = False
    verbose: bool = True
