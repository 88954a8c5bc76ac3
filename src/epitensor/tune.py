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
   store), for ``n_epochs`` epochs, then scores the MSE (arcsinh) of its
   imputation of the validation tracks over those positions. The defaults (100,000
   positions, 4 epochs) are sized so that 20 trials of the default grid fit
   in about 30 minutes on 2 CPU cores.
4. The study lives in ``DIR/study.db`` (SQLite): rerunning continues it,
   with the random sampler reseeded by the number of trials already run so a
   resumed study draws new configurations rather than replaying old ones.
5. Outputs in ``DIR``: ``best_preset.json`` (the base preset with the best
   trial's seven values: a JSON object of :class:`~epitensor.avocado.Avocado`
   constructor parameters that ``Avocado.from_preset`` and
   ``epitensor train --preset`` accept), ``trials.csv`` / ``trials.md``,
   ``importance.csv`` / ``importance.png`` (Optuna's
   ``get_param_importances``, the paper's Fig. S2) and ``parameters.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import EpitensorError, atomic_write_bytes, warn
from epitensor.store import Store, open_store

__all__ = [
    "PAPER_GRID",
    "TuneResult",
    "choose_validation",
    "plot_importance",
    "read_space",
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
        One row per trial: ``number, state, validation_mse, seconds`` and the values.
    importance : pandas.Series or None
        Importance of each hyperparameter (sums to 1), or None with too few trials.
    holdout, validation : list of (str, str)
        The user's held-out tracks, and the validation tracks scored.
    out_dir : pathlib.Path
    """

    best_params: dict
    best_value: float
    preset: dict
    trials: pd.DataFrame
    importance: pd.Series | None
    holdout: list
    validation: list
    out_dir: Path


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


def _objective(train_store, view, validation, space, base, n_epochs, seed, n_threads):
    from epitensor.avocado import Avocado

    def objective(trial) -> float:
        values = {name: trial.suggest_categorical(name, list(c)) for name, c in space.items()}
        params = {
            **base,
            **values,
            "n_epochs": n_epochs,
            "swa_start": None,
            "early_stopping": None,
            "verbose": False,
            "seed": seed,
            "n_threads": n_threads,
        }
        started = time.perf_counter()
        model = Avocado(**params).fit(train_store)
        score = _validation_mse(model, view, validation)
        trial.set_user_attr("seconds", time.perf_counter() - started)
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
        given = [list(t) for t in holdout] if key == "holdout" else protocol[key]
        if json.dumps(stored.get(key)) != json.dumps(given):
            raise EpitensorError(
                f"{out_dir / STUDY_FILE} holds a study with {key}={stored.get(key)!r}, not "
                f"{given!r}; rerun with the same settings to continue it, or use another --out"
            )
    # a trial left RUNNING by an interrupted run would never finish: mark it failed
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    study.sampler = optuna.samplers.RandomSampler(seed=n_seed + len(study.trials))
    return study


def tune(
    store: Store | str,
    out_dir: str | os.PathLike,
    n_trials: int = 20,
    budget_minutes: float | None = 30.0,
    holdout: Sequence = (),
    space: Mapping[str, Sequence] | str | os.PathLike | None = None,
    preset: str = "cpu-small",
    positions: int = 100_000,
    n_epochs: int = 4,
    seed: int = 0,
    n_threads: int | None = None,
    verbose: bool = True,
) -> TuneResult:
    """Random search over the structural hyperparameters; write the best as a preset.

    See the module docstring for the protocol.

    Parameters
    ----------
    store : Store or str
        The store (``"roadmap-pilot"`` for the bundled sample).
    out_dir : str or path-like
        Folder of the study (created; an existing study there is continued).
    n_trials : int
        Completed trials the study should hold in all; a rerun runs only the
        missing ones. Default 20.
    budget_minutes : float or None
        Wall-clock limit of this run; the running trial finishes. Default 30.
        None: no limit.
    holdout : sequence of (str, str) or "CELL:ASSAY"
        The tracks to be reported later, kept out of the search. Default none.
    space : mapping or path-like, optional
        Name to the values to draw from, or a JSON file of it
        (:func:`read_space`). Default None: :data:`PAPER_GRID`.
    preset : str
        The preset giving every other setting (and the full training schedule
        of ``best_preset.json``). Default ``"cpu-small"``.
    positions : int
        Positions each trial trains and is scored on. Default 100,000.
    n_epochs : int
        Stage-1 epochs of each trial. Default 4.
    seed : int
        Seed of the validation draw, the sampler and each trial's model. Default 0.
    n_threads : int, optional
        CPU threads of each trial. Default None: torch's choice.
    verbose : bool
        One line per trial on stderr. Default True.

    Returns
    -------
    TuneResult
    """
    from epitensor.avocado import PRESETS, Avocado
    from epitensor.benchmark import resolve_split
    from epitensor.training import stage1_store

    optuna = _optuna()
    if isinstance(space, str | os.PathLike):
        space = read_space(space)
    space = dict(PAPER_GRID if space is None else space)
    _check_tune_args(space, n_trials, budget_minutes, positions, n_epochs, preset)
    store = open_store(store)
    holdout = [_track(t) for t in holdout]
    if holdout:
        holdout, train = resolve_split(holdout, store)
    else:
        train = store.track_names()
    validation = choose_validation(train, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    protocol = {
        "store": str(store.url),
        "preset": preset,
        "positions": positions,
        "n_epochs": n_epochs,
        "seed": seed,
        "space": {k: list(v) for k, v in space.items()},
    }
    # one line per trial comes from _report; Optuna's own INFO lines would repeat it
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(optuna, out_dir, holdout, validation, protocol, seed)
    validation = [tuple(t) for t in study.user_attrs["validation"]]
    base = {k: v for k, v in PRESETS[preset].items() if k not in space}
    done = len(_completed(study, optuna))
    if done < n_trials:
        view = stage1_store(store, tuning_regions(store, positions))
        trial_tracks = [t for t in train if t not in set(validation)]
        with tempfile.TemporaryDirectory(prefix="epitensor-tune-") as scratch:
            train_store = _trial_store(view, trial_tracks, Path(scratch) / "trials.zarr")
            objective = _objective(
                train_store, view, validation, space, base, n_epochs, seed, n_threads
            )
            study.optimize(
                objective,
                n_trials=n_trials - done,
                timeout=None if budget_minutes is None else budget_minutes * 60,
                callbacks=[_report] if verbose else None,
            )
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
    )
    _write(result, protocol)
    return result


def _track(track) -> Track:
    if isinstance(track, str):
        celltype, sep, assay = track.partition(":")
        if not (sep and celltype and assay):
            raise EpitensorError(f"invalid track {track!r}: expected CELLTYPE:ASSAY")
        return celltype, assay
    celltype, assay = track
    return str(celltype), str(assay)


def _check_tune_args(space, n_trials, budget_minutes, positions, n_epochs, preset) -> None:
    from epitensor.avocado import PRESETS, Avocado

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


def _completed(study, optuna) -> list:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def _report(study, trial) -> None:
    from epitensor.training import progress_write

    values = ", ".join(f"{k}={v}" for k, v in trial.params.items())
    seconds = trial.user_attrs.get("seconds", float("nan"))
    score = "failed" if trial.value is None else f"validation MSE {trial.value:.4f}"
    progress_write(f"trial {trial.number}: {score} in {seconds:.0f} s ({values})")


def _trials_table(study) -> pd.DataFrame:
    rows = []
    for trial in study.trials:
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "validation_mse": trial.value,
                "seconds": trial.user_attrs.get("seconds"),
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
    from epitensor.benchmark import markdown_table

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
    from epitensor.plots import plt

    ordered = importance.sort_values()
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(ordered) + 1.2))
    ax.barh(ordered.index, ordered.to_numpy(), color="tab:blue")
    ax.set_xlabel("importance for validation MSE (fANOVA)")
    ax.set_title("hyperparameter importance")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial.png")
    fig.savefig(partial, dpi=120)
    plt.close(fig)
    os.replace(partial, path)
