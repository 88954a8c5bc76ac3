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
