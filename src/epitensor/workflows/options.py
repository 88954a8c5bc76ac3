"""Options objects of the jobs: one frozen dataclass per job, its defaults declared once.

The command line, the Python API and the Ray tasks read the same defaults from
these classes. The module imports neither numpy nor torch, so the command line
can read them when it starts (``epitensor --help`` stays quick); the values are
checked by the job that takes them, not here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from epitensor._utils import JobOptions

if TYPE_CHECKING:
    from epitensor.estimators.ensemble import Ensemble, EnsembleRule
    from epitensor.store.compendium import Store

__all__ = [
    "AUTO_ENSEMBLE",
    "DEFAULT_BLOCK_SIZE",
    "MAX_OPEN_WRITERS",
    "AnnotateOptions",
    "ImputeOptions",
    "JobOptions",
    "TrainOptions",
]

DEFAULT_BLOCK_SIZE = 16_384
"""Positions per block of an imputation (about 3 x 128 MiB of activations at paper size)."""

MAX_OPEN_WRITERS = 16
"""Tracks of an imputation computed together, and so files open at once."""

AUTO_ENSEMBLE = "auto"
"""``trees_store`` value that takes the model's own training compendium if it can."""


@dataclass(frozen=True)
class ImputeOptions(JobOptions):
    """How :func:`epitensor.workflows.impute.impute` computes and writes its files.

    What is imputed (the model, the tracks, the output, the chromosomes or
    regions) are arguments of the function; everything else is here, with its
    default. ``epitensor impute`` builds one from its options.

    Parameters
    ----------
    arcsinh : bool
        Write the model's arcsinh scale. Default False: the -log10 p scale
        (``sinh`` of the model output).
    fmt : {"bigwig", "bedgraph"}, optional
        Default None: from the file name (bigWig for a folder).
    precision : {"fp32", "bf16"}
        Arithmetic after the first layer (see
        :class:`~epitensor.workflows.impute.FastPredictor`). Default ``"fp32"``.
    overwrite : bool
        Replace existing files. Default False: keep the files a previous run
        of the same imputation finished (see
        :func:`~epitensor.workflows.impute.impute_fingerprints`), write the
        others, and refuse any other existing file.
    verbose : bool
        Show a progress bar (and why the ensemble was left out). Default True.
    block_size : int, optional
        Positions per block. Default :data:`DEFAULT_BLOCK_SIZE` (16384, about
        3 x 128 MiB of activations at paper size); None means the default too.
    track_batch : int, optional
        Tracks per task (and files open at once). Default
        :data:`MAX_OPEN_WRITERS` (16); None means the default too.
    device : str, optional
        torch device. Default None: the model's ``device`` setting (None: the
        best available).
    n_threads : int, optional
        Torch threads of each task. Default None: the model's ``n_threads``,
        else this process's thread count.
    ray_address : str, optional
        Default None: in this process. ``"local"``, ``"auto"`` or a Ray
        address: one Ray task per chromosome x track batch.
    num_gpus : float, optional
        GPUs per Ray task. Default None: 1 when the cluster has GPUs, else 0.
    max_retries : int, optional
        Retries of a failed Ray task. Default None: the default of
        :func:`epitensor.parallel.iter_tasks` (2).
    window : int, optional
        Chromosome results computed on Ray ahead of the one being written.
        Default None: the default of :func:`epitensor.parallel.iter_tasks` (4).
    trees_store : Store, str, list of them, Ensemble, or "auto", optional
        Write the ensemble of :mod:`epitensor.estimators.ensemble` instead of
        the model alone: trees and average activity fitted on this store's
        copies of the model's training tracks (a list: the stores read as one
        :class:`~epitensor.store.compendium.TrackUnion`; an
        :class:`~epitensor.estimators.ensemble.Ensemble` of this model: used as
        it is, its fitted trees kept). :data:`AUTO_ENSEMBLE` (``"auto"``, what
        ``epitensor impute`` passes unless ``--model-only``): the store the
        model records (``training_store_``) when it still opens and holds those
        tracks, else the model alone, with a line saying why. Default None:
        the model alone. Not on Ray.
    rule : EnsembleRule, optional
        The ensemble's rule. Default None:
        :class:`~epitensor.estimators.ensemble.EnsembleRule` ``()``.
    allow_changed_store : bool
        Fit the ensemble on a store whose copies of the model's tracks hold
        other values than those the model was made from, with a warning kept
        in the done records. Default False: refuse it (a store of other
        coordinates is refused either way; see :mod:`epitensor.store.identity`).
    interval : float or sequence of float
        Also write, beside each imputed track, the lower and upper bounds of
        its central prediction interval at each level in (0, 1)
        (``E003.H3K4me3.lower90.bigWig`` / ``.upper90.bigWig`` for 0.9), from
        the ensemble's calibration (:mod:`epitensor.estimators.intervals`,
        made once and kept in the model directory). Needs the ensemble.
        Default ``()``: none, and no extra cost.

    Examples
    --------
    >>> import epitensor as et
    >>> options = et.ImputeOptions(arcsinh=True, fmt="bedgraph")
    >>> options.block_size, options.track_batch
    (16384, 16)
    """

    arcsinh: bool = False
    fmt: str | None = None
    precision: str = "fp32"
    overwrite: bool = False
    verbose: bool = True
    block_size: int | None = DEFAULT_BLOCK_SIZE
    track_batch: int | None = MAX_OPEN_WRITERS
    device: str | None = None
    n_threads: int | None = None
    ray_address: str | None = None
    num_gpus: float | None = None
    max_retries: int | None = None
    window: int | None = None
    trees_store: Store | str | os.PathLike | Sequence | Ensemble | None = None
    rule: EnsembleRule | None = None
    allow_changed_store: bool = False
    interval: float | Sequence[float] = ()


@dataclass(frozen=True)
class TrainOptions(JobOptions):
    """How :func:`epitensor.workflows.training.train_model` trains stage 1.

    The store and the model directory are arguments of the function; the
    settings are here, with their defaults. ``epitensor train`` builds one
    from its options.

    Parameters
    ----------
    preset : str or path-like
        ``"cpu-small"`` (default), ``"paper"`` or a preset JSON file
        (:meth:`~epitensor.estimators.avocado.Avocado.from_preset`).
    holdout : sequence of (str, str) or "CELL:ASSAY"
        Tracks left out and scored each epoch. Default: none.
    n_epochs : int, optional
        Override the preset's stage-1 epochs. Default None.
    resume : bool
        Continue an interrupted run from its last checkpoint. Default False.
    regions : str or path-like, optional
        Where stage 1 trains (see
        :meth:`~epitensor.estimators.avocado.Avocado.fit`). Default None.
    device : str, optional
        torch device. Default None: best available.
    n_threads : int, optional
        CPU threads. Default None.
    verbose : bool
        Progress bars. Default True.
    overwrite : bool
        Replace an existing model directory. Default False.

    Examples
    --------
    >>> import epitensor as et
    >>> et.TrainOptions(holdout=("E116:H3K27me3",)).preset
    'cpu-small'
    """

    preset: str | os.PathLike = "cpu-small"
    holdout: Sequence = ()
    n_epochs: int | None = None
    resume: bool = False
    regions: str | os.PathLike | None = None
    device: str | None = None
    n_threads: int | None = None
    verbose: bool = True
    overwrite: bool = False


@dataclass(frozen=True)
class AnnotateOptions(JobOptions):
    """How :func:`epitensor.workflows.annotate.annotate` segments the genome.

    The model and the output are arguments of the function; the settings are
    here, with their defaults. ``epitensor annotate`` builds one from its
    options.

    Parameters
    ----------
    n_states : int
        Number of states K (at least 2). Default 10.
    celltype : str, optional
        Cell type of a cell type-specific annotation: the features are the
        model's imputed tracks of this cell type for every assay. Default None:
        the cell type-independent genome factors (all three scales).
    axes : sequence of str, optional
        Axes to annotate. Default None: every axis with genome factors.
    annotations : str or path-like, optional
        Folder of annotations to score the states against (see
        :func:`~epitensor.workflows.annotate.annotation_intervals`). Default
        None: the bundled pilot annotations.
    n_components : int
        Principal components of the standardised features the HMM sees (at
        most the number of features). Default 20.
    sample_size : int
        Bins (in windows of 2,000) the HMM is fitted on and the signal table
        averaged over. Default 200,000.
    n_iter : int
        Most EM iterations. Default 30.
    seed : int
        Seed of the sample and the HMM's initialisation. Default 0.
    device : str, optional
        torch device of the predictions. Default None: the model's setting.
    overwrite : bool
        With an output: replace existing files. Default False.
    verbose : bool
        Progress on stderr. Default True.

    Examples
    --------
    >>> import epitensor as et
    >>> et.AnnotateOptions(n_states=8).n_components
    20
    """

    n_states: int = 10
    celltype: str | None = None
    axes: Sequence[str] | None = None
    annotations: str | os.PathLike | None = None
    n_components: int = 20
    sample_size: int = 200_000
    n_iter: int = 30
    seed: int = 0
    device: str | None = None
    overwrite: bool = False
    verbose: bool = True
