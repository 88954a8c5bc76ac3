"""Hyperparameter search: random search over the structural hyperparameters, on validation tracks.

The paper chose Avocado's seven structural hyperparameters (the cell type,
assay, 25-bp, 250-bp and 5-kbp factor counts, the number of hidden layers and
their width) by random search over a grid, scored by the MSE on a validation
set of the ENCODE pilot regions (Additional file 1, Fig. S2). :func:`tune`
does the same on any store, with Optuna:

1. The user's held-out tracks are taken out first and never touched: no trial
   trains on them and no score uses them.
2. Validation tracks are drawn (seeded) from the remaining, training tracks,
   :data:`VALIDATION_FRACTION` of them, each leaving its cell type and its
   assay with at least one other training track. They stay fixed for the
   study (kept in it, so a resumed study scores on the same tracks).
3. Each trial trains stage 1 of a model with the trial's seven values and the
   base preset's other settings (no weight averaging, no early stopping) on
   the other training tracks, over a subset of positions (``positions``, as
   evenly spaced 500-kb windows, copied with those tracks only into a scratch
   store), then scores the MSE (arcsinh) of its imputation of the validation
   tracks over those positions.
4. **Equal compute per trial.** A trial trains for as many samples as fit in
   one multiply-add budget (``trial_budget``), at the cost per sample of its
   network (:func:`sample_cost`: three times the multiply-adds of the forward
   pass, plus :data:`SAMPLE_OVERHEAD` for the per-sample work that does not
   grow with the network), never more than the base preset's full schedule of
   epochs (:func:`trial_allowance`); scoring is outside the budget (every trial
   is scored on the same positions and tracks). By default the budget is ``n_epochs``
   epochs of the search space's median configuration by cost (the paper grid's
   median gets 4 epochs; its biggest point, 3 x 2048, about a quarter of one,
   its smallest about 7); the allowance may end inside an epoch. Why this
   rule: the paper grid's networks differ 1,000-fold in multiply-adds per
   sample, so a fixed number of epochs let a few draws of 2 x 2048 or 3 x 2048
   take most of a study's time (387-489 s a trial against about 30 s for a
   small one); an equal budget makes each trial's time about the same
   whatever the grid draws, so ``n_trials`` can be planned for, and compares
   configurations at what each achieves for the same compute. It is
   deterministic: a trial's allowance depends only on its values and the
   protocol, not on the machine or its load, and is kept in the study.
5. **Time guard.** With a ``budget_minutes``, each trial may use the time
   left divided by the trials left (counting itself). Before training it
   times the scoring of a few positions and projects the whole scoring; the
   training stops early (after the batch running) once the time used plus
   that projection reaches its share. A trial the guard stopped is still
   scored and kept, with ``guard_stopped`` set in ``trials.csv``, so a loaded
   machine shortens big trials instead of dropping the last ones; on an idle
   machine the allowance ends first. The run also stops starting trials once
   ``budget_minutes`` have passed; rerunning continues the study.
6. The study lives in ``DIR/study.db`` (SQLite): rerunning continues it,
   with the random sampler reseeded by the number of trials already run so a
   resumed study draws new configurations rather than replaying old ones.
7. Outputs in ``DIR``: ``best_preset.json`` (the base preset with the best
   trial's seven values: a JSON object of :class:`~epitensor.estimators.avocado.Avocado`
   constructor parameters that ``Avocado.from_preset`` and
   ``epitensor train --preset`` accept), ``trials.csv`` / ``trials.md``,
   ``importance.csv`` / ``importance.png`` (Optuna's
   ``get_param_importances``, the paper's Fig. S2) and ``parameters.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import EpitensorError, atomic_write_bytes, output_lock, warn
from epitensor.evaluation.options import TuneOptions
from epitensor.nn.hyperparams import STRUCTURAL
from epitensor.store.compendium import Store
from epitensor.store.identity import data_record
from epitensor.store.registry import open_store, store_reference

__all__ = [
    "PAPER_GRID",
    "TuneResult",
    "choose_validation",
    "plot_importance",
    "network_multiply_adds",
    "read_space",
    "sample_cost",
    "trial_allowance",
    "trial_budget_of",
    "tune",
    "tuning_regions",
]

Track = tuple[str, str]

PAPER_GRID: dict[str, list[int]] = {
    "n_celltype_factors": [8, 16, 32, 64],
    "n_assay_factors": [16, 64, 256],
    "n_25bp_factors": [5, 10, 25, 50],
    "n_250bp_factors": [10, 20, 40, 80],
    "n_5kbp_factors": [15, 30, 45, 90],
    "n_layers": [1, 2, 3],
    "n_nodes": [128, 256, 512, 1024, 2048],
}
"""The grid of the seven structural hyperparameters.

The paper's supplement holds its exact grid, which our copy of the paper
lacks; this one brackets each of the paper's chosen values (32, 256, 25, 40,
45, 2 layers, 2048 nodes) by factors of two to four on either side.
"""

VALIDATION_FRACTION = 0.2
"""Share of the training tracks held out for validation."""

WINDOW = 20_000
"""Positions of one tuning window (500 kb at 25 bp, the size of a pilot region)."""


TRAIN_PASSES = 3
"""Multiply-adds of a training step per multiply-add of the forward pass.

The forward pass, then the gradients of the activations and of the weights,
each one product of the same sizes.
"""

SAMPLE_OVERHEAD = 1_000_000
"""Multiply-add equivalents of the per-sample training work that does not grow with the network.

Drawing the sample, gathering its embeddings and the sparse Adam update of
its genome rows. Measured by ``benchmarks/tune_cost.py`` on 2 cores (AVX-512
BF16, 1-minute load average about 2): seconds per sample fit
``3.3e-12 * (3 * multiply-adds + 1.1 million)``, from 2.2 us a sample for
1 x 128 (7,040 multiply-adds) to 98 us for 3 x 2048 (9.5 million); the fit is
within 1% for the big networks, where the budget matters most, and within 2x
for the smallest, whose trials are short anyway.
"""

MAX_ENUMERATED = 200_000
"""Grids with more points than this get their median cost from a seeded sample of them."""

STUDY_NAME = "epitensor-tune"
STUDY_FILE = "study.db"


@dataclass
class TuneResult:
    """What a search produced.

    Attributes
    ----------
    best_params : dict
        The best trial's seven values.
    best_value : float
        Its validation MSE (arcsinh).
    preset : dict
        The full preset written to ``best_preset.json``.
    trials : pandas.DataFrame
        One row per trial: ``number, state, validation_mse, seconds``, ``epochs``
        and ``samples`` trained, ``allowance`` (samples the budget pays for),
        ``guard_stopped`` (the time guard ended its training first),
        ``train_seconds``, ``score_seconds``, then the values.
    importance : pandas.Series or None
        Importance of each hyperparameter (sums to 1), or None with too few trials.
    holdout, validation : list of (str, str)
        The user's held-out tracks, and the validation tracks scored.
    out_dir : pathlib.Path
    trial_budget : float or None
        Multiply-add equivalents each trial trains for (:func:`sample_cost`).
    """

    best_params: dict
    best_value: float
    preset: dict
    trials: pd.DataFrame
    importance: pd.Series | None
    holdout: list
    validation: list
    out_dir: Path
    trial_budget: float | None = None


def _optuna():
    try:
        import optuna
    except ImportError:
        raise EpitensorError(
            "hyperparameter search needs Optuna; install it with "
            "`pip install 'epitensor[tune]'` (or `pip install optuna`)"
        ) from None
    return optuna


def read_space(path: str | os.PathLike) -> dict[str, list]:
    """Read a search space: a JSON object from hyperparameter name to a list of values.

    Parameters
    ----------
    path : str or path-like
        The JSON file, e.g. ``{"n_nodes": [256, 512], "n_layers": [1, 2]}``.

    Returns
    -------
    dict
    """
    try:
        space = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EpitensorError(f"search-space file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise EpitensorError(f"cannot read search-space file {path}: {exc}") from None
    if not isinstance(space, dict) or not all(isinstance(v, list) for v in space.values()):
        raise EpitensorError(
            f"{path}: a search space is a JSON object from hyperparameter name to a list "
            f'of values, e.g. {{"n_nodes": [256, 512]}}'
        )
    return space


# equal compute per trial -------------------------------------------------------------


def network_multiply_adds(params: Mapping) -> int:
    """Multiply-adds of one forward pass of the network for one sample.

    Parameters
    ----------
    params : mapping
        At least the seven :data:`STRUCTURAL` hyperparameters.

    Returns
    -------
    int
        ``d * n + (layers - 1) * n**2 + n`` for ``d`` inputs (the five factor
        counts), ``layers`` hidden layers of ``n`` nodes and one output.
    """
    inputs = sum(int(params[name]) for name in STRUCTURAL[:5])
    nodes, layers = int(params["n_nodes"]), int(params["n_layers"])
    return inputs * nodes + (layers - 1) * nodes * nodes + nodes


def sample_cost(params: Mapping) -> float:
    """Multiply-add equivalents of training on one sample.

    Parameters
    ----------
    params : mapping
        At least the seven :data:`STRUCTURAL` hyperparameters.

    Returns
    -------
    float
        ``TRAIN_PASSES * network_multiply_adds(params) + SAMPLE_OVERHEAD``.
    """
    return float(TRAIN_PASSES * network_multiply_adds(params) + SAMPLE_OVERHEAD)


def _median_sample_cost(space: Mapping[str, Sequence], base: Mapping) -> float:
    """Median of :func:`sample_cost` over the points of the grid ``space`` spans."""
    names = [name for name in STRUCTURAL if name in space]
    choices = [list(space[name]) for name in names]
    if math.prod(len(c) for c in choices) <= MAX_ENUMERATED:
        points = itertools.product(*choices)
    else:  # a huge grid: the median of a seeded sample of its points
        rng = np.random.default_rng(0)
        picks = [rng.integers(0, len(c), MAX_ENUMERATED) for c in choices]
        points = zip(*(np.asarray(c, dtype=object)[p] for c, p in zip(choices, picks)))
    costs = [sample_cost({**base, **dict(zip(names, point))}) for point in points]
    return float(np.median(costs))


def trial_budget_of(
    space: Mapping[str, Sequence], base: Mapping, samples_per_epoch: int, n_epochs: int
) -> int:
    """The multiply-add budget of each trial: ``n_epochs`` epochs of the median configuration.

    Parameters
    ----------
    space : mapping
        Hyperparameter name to its values (the search grid).
    base : mapping
        Values of the structural hyperparameters the space leaves out (the base preset's).
    samples_per_epoch : int
        Samples of one epoch (tuning positions times tracks per position).
    n_epochs : int
        Epochs the median configuration by :func:`sample_cost` gets.

    Returns
    -------
    int
        Multiply-add equivalents per trial.
    """
    return int(round(n_epochs * samples_per_epoch * _median_sample_cost(space, base)))


def trial_allowance(
    params: Mapping, trial_budget: float, samples_per_epoch: int, max_epochs: int
) -> int:
    """Samples a trial trains: as many as ``trial_budget`` pays for, at most ``max_epochs`` epochs.

    Parameters
    ----------
    params : mapping
        The trial's hyperparameters (at least the seven :data:`STRUCTURAL` ones).
    trial_budget : float
        Multiply-add equivalents per trial (:func:`trial_budget_of`).
    samples_per_epoch : int
        Samples of one epoch of this trial.
    max_epochs : int
        Cap in epochs (the base preset's full schedule: a trial never trains
        longer than the model it chooses for).

    Returns
    -------
    int
        At least 1.
    """
    samples = int(trial_budget // sample_cost(params))
    return max(1, min(samples, int(max_epochs) * int(samples_per_epoch)))


# splits and positions -----------------------------------------------------------------


def choose_validation(
    train: Sequence[Track], fraction: float = VALIDATION_FRACTION, seed: int = 0
) -> list[Track]:
    """Draw validation tracks from the training tracks.

    Parameters
    ----------
    train : sequence of (str, str)
        Training tracks (the user's held-out ones already removed).
    fraction : float
        Share to draw (at least one track). Default :data:`VALIDATION_FRACTION`.
    seed : int
        Seed of the draw. Default 0.

    Returns
    -------
    list of (str, str)
        Validation tracks, each leaving its cell type and assay at least one
        other training track (so their embeddings are still learned).
    """
    train = [(str(c), str(a)) for c, a in train]
    wanted = max(1, int(round(fraction * len(train))))
    order = np.random.default_rng(seed).permutation(len(train))
    chosen: list[Track] = []
    for i in order:
        track = train[i]
        rest = [t for t in train if t not in chosen and t != track]
        if any(c == track[0] for c, _ in rest) and any(a == track[1] for _, a in rest):
            chosen.append(track)
        if len(chosen) == wanted:
            break
    if not chosen:
        raise EpitensorError(
            f"no training track can be held out for validation: each of the {len(train)} is "
            f"the last of its cell type or assay; add tracks or hold fewer out"
        )
    return chosen


def tuning_regions(store: Store, positions: int) -> pd.DataFrame:
    """Evenly spaced windows of :data:`WINDOW` positions over the store's regions.

    Parameters
    ----------
    store : Store
    positions : int
        Positions wanted in all (rounded up to whole windows; every position
        when the store has no more).

    Returns
    -------
    pandas.DataFrame
        BED-like ``chrom, start, end`` (bp, 0-based half-open), in layout order.
    """
    regions = store.layout.regions
    resolution = store.resolution
    lengths = regions.n_bins.to_numpy(dtype=np.int64)
    if lengths.sum() <= positions:
        return pd.DataFrame(
            {
                "chrom": regions.chrom.to_numpy(),
                "start": regions.first_bin.to_numpy(dtype=np.int64) * resolution,
                "end": (regions.first_bin.to_numpy(dtype=np.int64) + lengths) * resolution,
            }
        )
    n_windows = -(-positions // WINDOW)
    # windows start at evenly spaced points of the concatenated regions, each kept
    # inside one region so it never spans a gap between regions
    cumulative = np.concatenate([[0], np.cumsum(lengths)])
    starts = np.linspace(0, cumulative[-1] - WINDOW, n_windows).astype(np.int64)
    rows = []
    for start in starts:
        r = int(np.searchsorted(cumulative, start, side="right") - 1)
        offset = min(int(start - cumulative[r]), max(int(lengths[r]) - WINDOW, 0))
        first = int(regions.first_bin.iloc[r]) + offset
        n = min(WINDOW, int(lengths[r]))
        rows.append((regions.chrom.iloc[r], first * resolution, (first + n) * resolution))
    table = pd.DataFrame(rows, columns=["chrom", "start", "end"])
    return table.drop_duplicates(ignore_index=True)


# the search ---------------------------------------------------------------------------


def _validation_mse(model, view: Store, validation: Sequence[Track]) -> float:
    axis = view.axes[0]
    imputed = model.predict_tracks(list(validation), axis=axis)
    observed = np.stack([view.read_track(c, a, axis) for c, a in validation]).astype(np.float32)
    return float(np.mean((imputed - observed) ** 2))


def _trial_store(view: Store, tracks: Sequence[Track], path: Path) -> Store:
    """The tuning positions of the trials' training tracks, copied into a small store.

    Trials train on it with no holdout: the held-out and validation tracks are
    not in it at all, and no per-epoch scoring of them slows the big networks
    (at 2 x 2048 it would cost more than the training).
    """
    axis = view.axes[0]
    store = Store.create(path, view.layout, view.chrom_sizes, genome=view.genome)
    values = np.stack([view.read_track(c, a, axis) for c, a in tracks])
    store.add_tracks(list(tracks), {axis: values})
    return Store.open(path)


PROBE_POSITIONS = 2048
"""Positions whose scoring the time guard times to project a trial's scoring time (2% of 100,000)."""


@dataclass(frozen=True)
class _Trials:
    """What every trial of one run shares."""

    train_store: Store
    view: Store
    validation: list
    space: dict
    base: dict
    seed: int
    n_threads: int | None
    trial_budget: float
    max_epochs: int
    n_trials: int
    deadline: float | None  # time.perf_counter() at which the run's budget ends


class _AllowanceSampler:
    """An epoch sampler's batches, ending at ``allowance`` samples or at time ``stop_at``.

    Parameters
    ----------
    sampler : EpochSampler
    allowance : int
        Samples to train in all, over the epochs (the last batch is cut to fit).
    stop_at : float, optional
        ``time.perf_counter()`` after which no batch starts (the time guard).
        Default None: no guard.
    """

    def __init__(self, sampler, allowance: int, stop_at: float | None = None) -> None:
        self.sampler = sampler
        self.allowance = int(allowance)
        self.stop_at = stop_at
        self.samples = 0
        self.guard_stopped = False

    def n_batches(self) -> int:
        """Batches of a whole epoch (for the progress bar)."""
        return self.sampler.n_batches()

    def batches(self, epoch: int) -> Iterator:
        """The epoch's batches up to the allowance or the guard; none once either ended."""
        if self.samples >= self.allowance or self.guard_stopped:
            return
        batches = self.sampler.batches(epoch)
        try:
            for batch in batches:
                if self.stop_at is not None and time.perf_counter() >= self.stop_at:
                    self.guard_stopped = True
                    return
                left = self.allowance - self.samples
                if len(batch.values) > left:
                    batch = _head(batch, left)
                self.samples += len(batch.values)
                yield batch
                if self.samples >= self.allowance:
                    return
        finally:
            batches.close()  # ends the sampler's prefetching thread mid-epoch


def _head(batch, n: int):
    """The first ``n`` samples of a batch."""
    from epitensor.train.sampling import Batch

    base = None if batch.baseline is None else batch.baseline[:n]
    return Batch(
        batch.axis,
        batch.celltypes[:n],
        batch.assays[:n],
        batch.positions[:n],
        batch.values[:n],
        base,
    )


def _train_trial(model, store: Store, allowance: int, stop_at: float | None) -> dict:
    """Stage 1 of a model built by ``fit`` with ``n_epochs=0``, for ``allowance`` samples.

    The same loop, sampler, seeds and optimisers as
    :func:`~epitensor.train.fitting.fit_stage1` (an allowance of whole epochs trains
    exactly what ``Avocado(n_epochs=k).fit`` does), with the sampler ending at
    the allowance or at the time guard.

    Returns
    -------
    dict
        ``samples`` trained, ``epochs`` (those over one epoch's samples) and ``guard_stopped``.
    """
    from epitensor._utils import resolve_device
    from epitensor.train.fitting import (
        AxisSource,
        EpochSampler,
        TrackSet,
        TrainingPlan,
        freeze,
        run_training,
        torch_threads,
    )

    module = model.module_
    axis = store.axes[0]
    tracks = TrackSet.build(store, model.training_tracks_, model.celltypes_, model.assays_)
    first = model.train_config(1)
    inner = EpochSampler.from_config(
        {axis: AxisSource(store, axis, tracks.rows)}, tracks, first, module.average == "residual"
    )
    per_epoch = inner.n_samples
    config = model.train_config(math.ceil(allowance / per_epoch))
    sampler = _AllowanceSampler(inner, allowance, stop_at)
    device = resolve_device(config.device)
    freeze(module, ["celltype", "assay", "network", f"genome:{axis}"])
    module.to(device)
    plan = TrainingPlan(module, config, device)
    try:
        with torch_threads(config.n_threads):
            run_training(module, plan, sampler, config, "tune", desc="trial")
    finally:
        plan.close()
        module.requires_grad_(True)
        module.cpu()
    return {
        "samples": sampler.samples,
        "epochs": sampler.samples / per_epoch,
        "guard_stopped": sampler.guard_stopped,
    }


def _scoring_seconds(model, view: Store, validation: Sequence[Track]) -> float:
    """Projected seconds of :func:`_validation_mse`, from timing its first positions.

    A short untimed call first pays the one-off set-up of a process's first
    prediction. The timed probe is large enough that the big networks, whose
    scoring takes longest, project within a few percent; on a loaded machine a
    small network's projection runs high (each of its small operations can wait
    a time slice for a preempted thread), which only matters where the share is
    tight, and there the scoring is long enough to project well.
    """
    from epitensor.train.fitting import torch_threads

    n = view.axis_length(view.axes[0])
    probe = min(PROBE_POSITIONS, n)
    with torch_threads(model.n_threads):
        model.predict_tracks(list(validation), start=0, end=min(256, n))
        started = time.perf_counter()
        model.predict_tracks(list(validation), start=0, end=probe)
        return (time.perf_counter() - started) * n / probe


def _samples_per_epoch(model, store: Store) -> int:
    """Samples of one epoch: positions times the tracks drawn at each (as the sampler's)."""
    k = min(int(model.tracks_per_position), len(model.training_tracks_))
    return k * store.axis_length(store.axes[0])


def _objective(setup: _Trials):
    from epitensor.estimators.avocado import Avocado

    def objective(trial) -> float:
        started = time.perf_counter()
        values = {name: trial.suggest_categorical(name, list(c)) for name, c in setup.space.items()}
        params = {
            **setup.base,
            **values,
            "n_epochs": 0,  # fit builds the model; _train_trial trains it
            "swa_start": None,
            "early_stopping": None,
            "verbose": False,
            "seed": setup.seed,
            "n_threads": setup.n_threads,
        }
        model = Avocado(**params).fit(setup.train_store)
        per_epoch = _samples_per_epoch(model, setup.train_store)
        allowance = trial_allowance(params, setup.trial_budget, per_epoch, setup.max_epochs)
        stop_at = None
        if setup.deadline is not None:
            done = len(_completed(trial.study, _optuna()))
            share = (setup.deadline - started) / max(setup.n_trials - done, 1)
            stop_at = started + share - _scoring_seconds(model, setup.view, setup.validation)
        trained = _train_trial(model, setup.train_store, allowance, stop_at)
        training = time.perf_counter() - started
        score = _validation_mse(model, setup.view, setup.validation)
        seconds = time.perf_counter() - started
        for key, value in {
            **trained,
            "allowance": allowance,
            "sample_cost": sample_cost(params),
            "seconds": seconds,
            "train_seconds": training,
            "score_seconds": seconds - training,
        }.items():
            trial.set_user_attr(key, value)
        return score

    return objective


def _open_study(optuna, out_dir: Path, holdout, validation, protocol: dict, n_seed: int):
    storage = optuna.storages.RDBStorage(f"sqlite:///{out_dir / STUDY_FILE}")
    study = optuna.create_study(
        storage=storage, study_name=STUDY_NAME, direction="minimize", load_if_exists=True
    )
    stored = study.user_attrs
    if not stored:
        for key, value in {"holdout": holdout, "validation": validation, **protocol}.items():
            study.set_user_attr(key, value)
        stored = study.user_attrs
    for key in ("holdout", *protocol):
        if key == "store":
            continue  # where the store was: a hint; the data is compared by content ("data")
        if key == "data" and key not in stored:
            continue  # a study of an earlier version: its data was not recorded
        given = [list(t) for t in holdout] if key == "holdout" else protocol[key]
        if key == "data" and json.dumps(stored[key]) != json.dumps(given):
            raise EpitensorError(
                f"{out_dir / STUDY_FILE} holds a study made on other data ({stored.get('store')}) "
                f"than store {protocol['store']} (other coordinates or track values); rerun on "
                "the store it was made on to continue it, or use another --out"
            )
        if json.dumps(stored.get(key)) != json.dumps(given):
            raise EpitensorError(
                f"{out_dir / STUDY_FILE} holds a study with {key}={stored.get(key)!r}, not "
                f"{given!r}; rerun with the same settings to continue it, or use another --out"
            )
    # a trial left RUNNING by an interrupted run would never finish: mark it failed
    # (its storage id from the public storage API: a FrozenTrial keeps it private)
    study_id = storage.get_study_id_from_name(STUDY_NAME)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    study.sampler = optuna.samplers.RandomSampler(seed=n_seed + len(study.trials))
    return study


def tune(
    store: Store | str,
    out_dir: str | os.PathLike,
    *,
    options: TuneOptions | None = None,
    **overrides,
) -> TuneResult:
    """Random search over the structural hyperparameters; write the best as a preset.

    See the module docstring for the protocol. The settings (trials, budgets,
    held-out tracks, the space, preset, positions, epochs, seed, threads,
    progress) are a :class:`~epitensor.evaluation.options.TuneOptions`, given
    whole as ``options`` or field by field as keywords (``n_trials=20``), or
    both (the keywords win); ``epitensor tune`` builds the same object.

    Parameters
    ----------
    store : Store or str
        The store (``"roadmap-pilot"`` for the bundled sample).
    out_dir : str or path-like
        Folder of the study (created; an existing study there is continued).
    options : TuneOptions, optional
        The settings. Default None: ``TuneOptions()``.
    **overrides
        Fields of :class:`~epitensor.evaluation.options.TuneOptions` replacing
        those of ``options`` (``n_trials``, ``budget_minutes``, ``holdout``,
        ``space``, ``preset``, ``positions``, ``n_epochs``, ``seed``,
        ``n_threads``, ``verbose``, ``trial_budget``); any other name is
        refused.

    Returns
    -------
    TuneResult

    Examples
    --------
    >>> import epitensor as et
    >>> result = et.tune("roadmap-pilot", "tune-out/", n_trials=20, budget_minutes=30)
    >>> result.best_params
    """
    from epitensor.estimators.avocado import PRESETS
    from epitensor.evaluation.benchmark import resolve_split
    from epitensor.train.fitting import stage1_store

    started = time.perf_counter()
    opts = TuneOptions.resolve(options, **overrides)
    n_trials, budget_minutes, holdout, space = (
        opts.n_trials,
        opts.budget_minutes,
        opts.holdout,
        opts.space,
    )
    preset, positions, n_epochs, seed = opts.preset, opts.positions, opts.n_epochs, opts.seed
    n_threads, verbose, trial_budget = opts.n_threads, opts.verbose, opts.trial_budget
    optuna = _optuna()
    if isinstance(space, str | os.PathLike):
        space = read_space(space)
    space = dict(PAPER_GRID if space is None else space)
    _check_tune_args(space, n_trials, budget_minutes, positions, n_epochs, preset, trial_budget)
    store = open_store(store)
    holdout = [_track(t) for t in holdout]
    if holdout:
        holdout, train = resolve_split(holdout, store)
    else:
        train = store.track_names()
    validation = choose_validation(train, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    view = stage1_store(store, tuning_regions(store, positions))
    base = {k: v for k, v in PRESETS[preset].items() if k not in space}
    if trial_budget is None:
        n_trial_tracks = len(train) - len(validation)
        per_epoch = min(PRESETS[preset].tracks_per_position, n_trial_tracks)
        per_epoch *= view.axis_length(view.axes[0])
        trial_budget = trial_budget_of(space, PRESETS[preset], per_epoch, n_epochs)
    record = data_record(store, train)
    protocol = {
        "store": store_reference(store),  # a hint only (absolute); the data is "data"
        "data": hashlib.sha256(
            json.dumps({k: record[k] for k in ("coordinates", "tracks")}, sort_keys=True).encode()
        ).hexdigest(),
        "preset": preset,
        "positions": positions,
        "n_epochs": n_epochs,
        "seed": seed,
        "space": {k: list(v) for k, v in space.items()},
        "trial_budget": float(trial_budget),
        "sample_overhead": SAMPLE_OVERHEAD,
        "max_epochs": max(PRESETS[preset].n_epochs, n_epochs),
    }
    # one line per trial comes from _report; Optuna's own INFO lines would repeat it
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # one run per study at a time: a second run started meanwhile marked the first's
    # running trial failed, and the first then died telling it (trial T2)
    with output_lock(out_dir, wait=False), _study_errors(out_dir):
        return _run_study(
            optuna, out_dir, holdout, validation, protocol, seed, train, view, space,
            base, n_threads, trial_budget, n_trials, started, budget_minutes, verbose, preset,
        )  # fmt: skip


def _run_study(
    optuna, out_dir, holdout, validation, protocol, seed, train, view, space, base,
    n_threads, trial_budget, n_trials, started, budget_minutes, verbose, preset,
) -> TuneResult:  # fmt: skip
    """The study of :func:`tune` from its resolved settings (its output lock held)."""
    from epitensor.estimators.avocado import PRESETS, Avocado

    study = _open_study(optuna, out_dir, holdout, validation, protocol, seed)
    validation = [tuple(t) for t in study.user_attrs["validation"]]
    done = len(_completed(study, optuna))
    deadline = None if budget_minutes is None else started + budget_minutes * 60
    if done < n_trials:
        trial_tracks = [t for t in train if t not in set(validation)]
        with tempfile.TemporaryDirectory(prefix="epitensor-tune-") as scratch:
            train_store = _trial_store(view, trial_tracks, Path(scratch) / "trials.zarr")
            setup = _Trials(
                train_store=train_store,
                view=view,
                validation=validation,
                space=space,
                base=base,
                seed=seed,
                n_threads=n_threads,
                trial_budget=float(trial_budget),
                max_epochs=protocol["max_epochs"],
                n_trials=n_trials,
                deadline=deadline,
            )
            callbacks = [_report] if verbose else []
            if deadline is not None:
                callbacks.append(_stop_after(deadline))
            study.optimize(_objective(setup), n_trials=n_trials - done, callbacks=callbacks)
    if not _completed(study, optuna):
        raise EpitensorError(f"no trial of the study in {out_dir} finished; see the errors above")
    best = study.best_trial
    full = {**PRESETS[preset], **best.params}
    Avocado(**full)  # the preset must build an estimator: fail here, not in `train`
    result = TuneResult(
        best_params=dict(best.params),
        best_value=float(best.value),
        preset=full,
        trials=_trials_table(study),
        importance=_importance(study, optuna),
        holdout=holdout,
        validation=validation,
        out_dir=out_dir,
        trial_budget=float(trial_budget),
    )
    _write(result, protocol)
    return result


@contextlib.contextmanager
def _study_errors(out_dir: Path) -> Iterator[None]:
    """A study file SQLite cannot read (truncated, not a database) is one line (trial T3)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise EpitensorError(
            f"{out_dir / STUDY_FILE} is not a readable study ({reason}); move it away to "
            "start a new study there, or restore it from a copy"
        ) from None


def _track(track) -> Track:
    if isinstance(track, str):
        celltype, sep, assay = track.partition(":")
        if not (sep and celltype and assay):
            raise EpitensorError(f"invalid track {track!r}: expected CELLTYPE:ASSAY")
        return celltype, assay
    celltype, assay = track
    return str(celltype), str(assay)


def _check_tune_args(
    space, n_trials, budget_minutes, positions, n_epochs, preset, trial_budget
) -> None:
    from epitensor.estimators.avocado import PRESETS, Avocado

    if preset not in PRESETS:
        raise EpitensorError(f"invalid preset: got {preset!r}, expected one of {list(PRESETS)}")
    unknown = sorted(set(space) - set(Avocado().get_params()))
    if unknown:
        raise EpitensorError(f"the search space names unknown hyperparameters {unknown}")
    empty = [name for name, choices in space.items() if len(list(choices)) == 0]
    if empty:
        raise EpitensorError(f"the search space gives no value for {empty}")
    for name, value in (("n_trials", n_trials), ("positions", positions), ("n_epochs", n_epochs)):
        if not isinstance(value, int) or value < 1:
            raise EpitensorError(f"{name} must be a positive integer; got {name}={value!r}")
    if budget_minutes is not None and budget_minutes <= 0:
        raise EpitensorError(f"budget must be positive minutes; got budget={budget_minutes!r}")
    if trial_budget is not None and not (
        isinstance(trial_budget, int | float) and trial_budget > 0
    ):
        raise EpitensorError(
            f"trial_budget must be a positive number of multiply-adds; got {trial_budget!r}"
        )
    sizes = {
        name: [v for v in space[name] if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        for name in STRUCTURAL
        if name in space
    }
    bad = {name: values for name, values in sizes.items() if values}
    if bad:
        raise EpitensorError(f"the search space gives sizes that are not positive integers: {bad}")


def _completed(study, optuna) -> list:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def _stop_after(deadline: float):
    """An Optuna callback: no trial starts once ``time.perf_counter()`` passed ``deadline``.

    Unlike ``optimize(timeout=...)`` the first trial of a run always starts,
    whatever the preparation took.
    """

    def stop(study, trial) -> None:
        if time.perf_counter() >= deadline:
            study.stop()

    return stop


def _report(study, trial) -> None:
    from epitensor.train.fitting import progress_write

    values = ", ".join(f"{k}={v}" for k, v in trial.params.items())
    attrs = trial.user_attrs
    score = "failed" if trial.value is None else f"validation MSE {trial.value:.4f}"
    trained = f"{attrs.get('epochs', float('nan')):.2f} epochs"
    if attrs.get("guard_stopped"):
        trained += ", stopped by the time guard"
    seconds = attrs.get("seconds", float("nan"))
    progress_write(f"trial {trial.number}: {score} in {seconds:.0f} s ({trained}; {values})")


_TRIAL_COLUMNS = (
    "seconds",
    "epochs",
    "samples",
    "allowance",
    "guard_stopped",
    "train_seconds",
    "score_seconds",
)


def _trials_table(study) -> pd.DataFrame:
    rows = []
    for trial in study.trials:
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "validation_mse": trial.value,
                **{key: trial.user_attrs.get(key) for key in _TRIAL_COLUMNS},
                **trial.params,
            }
        )
    return pd.DataFrame(rows)


def _importance(study, optuna) -> pd.Series | None:
    varied = {
        name
        for trial in _completed(study, optuna)
        for name, dist in trial.distributions.items()
        if len(getattr(dist, "choices", (0, 1))) > 1
    }
    if len(_completed(study, optuna)) < 2 or not varied:
        return None
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # reproducible
        importance = optuna.importance.get_param_importances(
            study, evaluator=evaluator, params=sorted(varied)
        )
    except (RuntimeError, ValueError) as exc:
        warn(f"hyperparameter importance not computed: {exc}")
        return None
    return pd.Series(importance, name="importance", dtype=float)


def _write(result: TuneResult, protocol: dict) -> None:
    from epitensor.viz.tables import markdown_table

    out = result.out_dir
    atomic_write_bytes(
        out / "best_preset.json", (json.dumps(result.preset, indent=2) + "\n").encode()
    )
    atomic_write_bytes(out / "trials.csv", result.trials.to_csv(index=False).encode())
    atomic_write_bytes(
        out / "trials.md", markdown_table(result.trials.set_index("number")).encode()
    )
    parameters = {
        **protocol,
        "holdout": result.holdout,
        "validation": result.validation,
        "best_params": result.best_params,
        "best_validation_mse": result.best_value,
    }
    atomic_write_bytes(
        out / "parameters.json", (json.dumps(parameters, indent=2, default=str) + "\n").encode()
    )
    if result.importance is not None:
        atomic_write_bytes(out / "importance.csv", result.importance.to_csv().encode())
        plot_importance(out / "importance.png", result.importance)


def plot_importance(path: str | os.PathLike, importance: pd.Series) -> None:
    """Horizontal bars of each hyperparameter's importance (the paper's Fig. S2).

    Parameters
    ----------
    path : str or path-like
        PNG to write.
    importance : pandas.Series
        Hyperparameter name to importance (from Optuna's ``get_param_importances``).
    """
    from epitensor.viz.plots import subplots

    ordered = importance.sort_values()
    fig, ax = subplots(figsize=(6, 0.4 * len(ordered) + 1.2))
    ax.barh(ordered.index, ordered.to_numpy(), color="tab:blue")
    ax.set_xlabel("importance for validation MSE (fANOVA)")
    ax.set_title("hyperparameter importance")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial.png")
    fig.savefig(partial, dpi=120)
    os.replace(partial, path)
