"""Downstream tasks: region features from genome factors and feature-set comparisons by cross-validation.

Two halves:

* **Comparison harness** (:func:`compare_feature_sets`, :func:`run_downstream`):
  the Avocado paper's protocol ("Supervised machine learning model training").
  Every feature set is scored on the *same* shuffled folds, so fold scores can
  be compared with paired t-tests. Models: XGBoost (up to 5000 trees, depth 6,
  early stopping after 20 rounds on a validation fold, i.e. one of the training
  folds, never the test fold) or logistic regression whose inverse
  regularisation ``C`` is chosen by an internal 3-fold cross-validation over 10
  values log-spaced in ``[1e-4, 1e4]``. Classification is scored by average
  precision (AP) per test fold; regression by Pearson r and R².
* **Region features** (:func:`genome_factor_features`, :func:`track_features`,
  :func:`promoter_features`, :func:`read_targetfinder_pairs`,
  :func:`pairs_in_layout`): features of genomic elements from a fitted model's
  genome factors or from a store's observed tracks. Intervals are 0-based,
  half-open ``[start, end)`` in bp.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor._utils import EpitensorError, EpitensorWarning, atomic_directory, progress, warn
from epitensor.evaluation.options import DownstreamOptions
from epitensor.genome.coordinates import Layout

__all__ = [
    "MODELS",
    "Comparison",
    "Fold",
    "average_precision",
    "compare_feature_sets",
    "genome_factor_features",
    "load_features",
    "load_labels",
    "locate_intervals",
    "make_folds",
    "pair_features",
    "pairs_in_layout",
    "parse_interval_names",
    "plot_comparison",
    "promoter_features",
    "read_targetfinder_pairs",
    "run_downstream",
    "track_features",
]

MODELS = ("xgboost", "logistic")
BASELINE = "prevalence baseline"
REGRESSION_BASELINE = "training-mean baseline"
LOGISTIC_CS = np.logspace(-4, 4, 10)
"""The 10 inverse regularisation strengths searched by the logistic model."""


# --------------------------------------------------------------------------------------
# metrics


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Average precision: sum over thresholds of (R_n - R_{n-1}) P_n.

    One threshold per distinct score (tied scores enter together), as in the
    paper's Methods: scikit-learn's ``average_precision_score``, with NaN
    rather than a warning and 0 when there is no positive. The hand-written
    version it replaced gave the same values (to 1e-16) and was faster, 0.1
    against 1.2 ms on a 300-sample fold (``benchmarks/libraries.py``), a
    millisecond beside the fold's model fit (1.8 s for the logistic model on
    300 samples).

    Parameters
    ----------
    y_true : numpy.ndarray, shape=(n,)
        Binary labels (1 = positive).
    score : numpy.ndarray, shape=(n,)
        Scores; higher means more likely positive.

    Returns
    -------
    float
        AP in [0, 1]; NaN when there is no positive.
    """
    from sklearn.metrics import average_precision_score

    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.size != s.size:
        raise EpitensorError(f"y_true has {y.size} values but score has {s.size}")
    if not y.any():
        return float("nan")
    return float(average_precision_score(y, s))


def _pearson(y: np.ndarray, pred: np.ndarray) -> float:
    if np.ptp(y) == 0 or np.ptp(pred) == 0:  # a constant has no correlation (not rounding noise)
        return float("nan")
    return float(np.corrcoef(y, pred)[0, 1])


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    total = np.sum((y - y.mean()) ** 2)
    return float(1.0 - np.sum((y - pred) ** 2) / total) if total > 0 else float("nan")


# --------------------------------------------------------------------------------------
# folds


@dataclass(frozen=True)
class Fold:
    """One train / validation / test split of a cross-validation.

    Attributes
    ----------
    repeat, fold : int
        Repeat and fold number (0-based).
    test : numpy.ndarray, shape=(n_test,), int64
        Sample indices of the test fold.
    valid : numpy.ndarray, shape=(n_valid,), int64
        The validation fold used for early stopping: the next fold of the same
        repeat, one of the training folds; never overlaps ``test``.
    train : numpy.ndarray, shape=(n_train,), int64
        All training folds (includes ``valid``).
    """

    repeat: int
    fold: int
    test: np.ndarray
    valid: np.ndarray
    train: np.ndarray = field(repr=False)

    @property
    def fit(self) -> np.ndarray:
        """Training folds minus the validation fold: what early-stopped models fit on."""
        return np.setdiff1d(self.train, self.valid, assume_unique=True)


def make_folds(
    y: np.ndarray,
    n_folds: int = 20,
    n_repeats: int = 1,
    seed: int = 0,
    stratify: bool = True,
    groups: np.ndarray | None = None,
) -> list[Fold]:
    """Shuffled k-fold splits, optionally stratified and repeated.

    Parameters
    ----------
    y : numpy.ndarray, shape=(n_samples,)
        Labels (used for stratification and the sample count).
    n_folds : int
        Folds per repeat. Default 20 (the paper's).
    n_repeats : int
        Repeats, each with a fresh shuffle. Default 1.
    seed : int
        Seed of the shuffles. Default 0.
    stratify : bool
        Keep the class balance in every fold (classification). Default True.
    groups : numpy.ndarray, shape=(n_samples,), optional
        Group labels: every group falls wholly in one fold (e.g. the promoter
        of an enhancer-promoter pair, so no element is seen in training and
        test). Default None: samples split freely.

    Returns
    -------
    list of Fold
        ``n_repeats * n_folds`` folds, repeat-major.
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y).ravel()
    if n_folds < 3:
        raise EpitensorError(
            f"n_folds must be at least 3 (test + validation + training); got n_folds={n_folds!r}"
        )
    if n_repeats < 1:
        raise EpitensorError(f"n_repeats must be a positive integer; got n_repeats={n_repeats!r}")
    if y.size < n_folds:
        raise EpitensorError(f"{y.size} samples cannot fill {n_folds} folds; use fewer folds")
    if groups is not None:
        groups = np.asarray(groups).ravel()
        if groups.size != y.size:
            raise EpitensorError(f"groups has {groups.size} values but y has {y.size}")
        if np.unique(groups).size < n_folds:
            raise EpitensorError(f"{np.unique(groups).size} groups cannot fill {n_folds} folds")
    if stratify:
        counts = np.unique(y, return_counts=True)[1]
        if counts.min() < n_folds:
            raise EpitensorError(
                f"the rarest class has {counts.min()} samples, fewer than n_folds={n_folds}; "
                "use fewer folds"
            )
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=n_repeats)
    folds = []
    for repeat, repeat_seed in enumerate(seeds):
        if groups is None:
            cls = StratifiedKFold if stratify else KFold
        else:
            cls = StratifiedGroupKFold if stratify else GroupKFold
        splitter = cls(n_splits=n_folds, shuffle=True, random_state=int(repeat_seed))
        tests = [test for _, test in splitter.split(np.zeros(y.size), y, groups)]
        if min(len(t) for t in tests) == 0:
            raise EpitensorError(f"{n_folds} folds leave one empty; use fewer folds or groups")
        for k, test in enumerate(tests):
            valid = tests[(k + 1) % n_folds]
            train = np.sort(np.concatenate([t for j, t in enumerate(tests) if j != k]))
            folds.append(Fold(repeat, k, np.sort(test), np.sort(valid), train))
    return folds


# --------------------------------------------------------------------------------------
# models


def _fit_predict_xgboost(
    x: np.ndarray, y: np.ndarray, fold: Fold, regression: bool, params: dict
) -> tuple[np.ndarray, float]:
    """Fit on ``fold.fit``, stop early on ``fold.valid``, predict ``fold.test``."""
    import xgboost as xgb

    cls = xgb.XGBRegressor if regression else xgb.XGBClassifier
    model = cls(
        n_estimators=params["n_estimators"],
        max_depth=params["max_depth"],
        early_stopping_rounds=params["early_stopping_rounds"],
        tree_method="hist",
        n_jobs=params["threads"],
        random_state=params["seed"],
    )
    fit = fold.fit
    model.fit(x[fit], y[fit], eval_set=[(x[fold.valid], y[fold.valid])], verbose=False)
    pred = model.predict(x[fold.test]) if regression else model.predict_proba(x[fold.test])[:, 1]
    return pred, float(model.best_iteration + 1)


def _fit_predict_linear(
    x: np.ndarray, y: np.ndarray, fold: Fold, regression: bool, params: dict
) -> tuple[np.ndarray, float]:
    """Standardise, fit a CV-tuned linear model on ``fold.train``, predict ``fold.test``."""
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    inner = (KFold if regression else StratifiedKFold)(
        n_splits=3, shuffle=True, random_state=params["seed"]
    )
    if regression:
        estimator = RidgeCV(alphas=1.0 / (2.0 * LOGISTIC_CS), cv=inner)
    else:
        estimator = LogisticRegressionCV(
            Cs=LOGISTIC_CS,
            cv=inner,
            scoring="average_precision",
            # liblinear: 5-10x less CPU than lbfgs on these small (hundreds of samples) sets,
            # where lbfgs crawls at large C on nearly separable data.
            solver="liblinear",
            max_iter=2000,
            **_LOGISTIC_KW,
        )
    model = make_pipeline(StandardScaler(), estimator)
    model.fit(x[fold.train], y[fold.train])
    last = model[-1]
    if regression:
        return model.predict(x[fold.test]), float(1.0 / (2.0 * last.alpha_))
    return model.predict_proba(x[fold.test])[:, 1], float(np.ravel(last.C_)[0])


def _logistic_kwargs() -> dict:
    """Keyword arguments pinning LogisticRegressionCV to plain L2 on every scikit-learn.

    Newer releases warn about changing defaults unless these are set; older
    releases lack the parameters, so they are passed only where they exist.
    """
    import inspect

    from sklearn.linear_model import LogisticRegressionCV

    names = inspect.signature(LogisticRegressionCV).parameters
    if "use_legacy_attributes" not in names:
        return {}
    return {"use_legacy_attributes": False, "l1_ratios": (0.0,)}


_LOGISTIC_KW = _logistic_kwargs()

_FITTERS: dict[str, Callable] = {"xgboost": _fit_predict_xgboost, "logistic": _fit_predict_linear}


# --------------------------------------------------------------------------------------
# the comparison


@dataclass
class Comparison:
    """Fold-by-fold scores of several feature sets on the same folds.

    Attributes
    ----------
    scores : pandas.DataFrame
        One row per (feature set, fold): ``feature_set, repeat, fold, n_train,
        n_test, n_test_positive`` and the metric columns (``ap`` for
        classification; ``pearson, r2`` for regression), plus ``fitted`` (trees
        kept by early stopping, or the chosen ``C`` of the linear model). The
        baseline appears as its own feature set.
    metric : str
        The primary metric (``"ap"`` or ``"pearson"``).
    n_features : dict of str to int
        Features per feature set.
    params : dict
        The settings of the run.
    """

    scores: pd.DataFrame
    metric: str
    n_features: dict[str, int]
    params: dict

    @property
    def baseline(self) -> str:
        """Name of the baseline rows in :attr:`scores`."""
        return REGRESSION_BASELINE if self.params["regression"] else BASELINE

    def _wide(self, metric: str | None = None) -> pd.DataFrame:
        """Scores as a (fold x feature set) table, folds in the same order for every set."""
        # pivot, not pivot_table: an all-NaN column (the regression baseline's r) must stay.
        return self.scores.pivot(
            index=["repeat", "fold"], columns="feature_set", values=metric or self.metric
        )

    def summary(self) -> pd.DataFrame:
        """Mean and standard error over folds per feature set, best first.

        Returns
        -------
        pandas.DataFrame
            ``feature_set, n_features``, the mean and standard error of each
            metric (``mean_ap, sem_ap`` or ``mean_pearson, sem_pearson,
            mean_r2, sem_r2``), ``p_vs_best`` (two-sided paired t-test over
            folds against the best set) and ``fitted_median``.
        """
        metrics = ["ap"] if self.metric == "ap" else ["pearson", "r2"]
        grouped = self.scores.groupby("feature_set", sort=False)
        table = pd.DataFrame({"n_features": pd.Series(self.n_features)})
        for metric in metrics:
            table[f"mean_{metric}"] = grouped[metric].mean()
            table[f"sem_{metric}"] = grouped[metric].sem()
        table["fitted_median"] = grouped["fitted"].median()
        table = table.sort_values(f"mean_{self.metric}", ascending=False)
        wide = self._wide()
        best = next(name for name in table.index if name != self.baseline)
        table["p_vs_best"] = [
            np.nan if name == best else _paired_p(wide[best], wide[name]) for name in table.index
        ]
        return table.rename_axis("feature_set").reset_index()

    def ttests(self) -> pd.DataFrame:
        """Paired two-sided t-tests over folds between every two feature sets.

        Returns
        -------
        pandas.DataFrame
            ``a, b, mean_diff`` (a minus b, primary metric), ``t, p, n_folds``.
        """
        from scipy import stats

        wide = self._wide()
        names = list(wide.columns)
        rows = []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                diff = (wide[a] - wide[b]).dropna()
                t, p = (
                    stats.ttest_rel(wide[a], wide[b], nan_policy="omit")
                    if diff.std() > 0
                    else (np.nan, np.nan)
                )
                rows.append((a, b, diff.mean(), float(t), float(p), diff.size))
        return pd.DataFrame(rows, columns=["a", "b", "mean_diff", "t", "p", "n_folds"])

    def to_markdown(self) -> str:
        """The summary as a Markdown table (means ± standard errors, p vs the best)."""
        table = self.summary()
        label = {"ap": "MAP", "pearson": "Pearson r", "r2": "R²"}
        metrics = ["ap"] if self.metric == "ap" else ["pearson", "r2"]
        fitted = "median trees" if self.params["model"] == "xgboost" else "median C"
        head = ["feature set", "features"] + [f"{label[m]} ± s.e." for m in metrics]
        head += ["p vs best (paired t)", fitted]
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for row in table.itertuples(index=False):
            cells = [row.feature_set, str(row.n_features)]
            cells += [
                f"{getattr(row, 'mean_' + m):.4f} ± {getattr(row, 'sem_' + m):.4f}" for m in metrics
            ]
            cells.append("—" if np.isnan(row.p_vs_best) else f"{row.p_vs_best:.2g}")
            cells.append("—" if np.isnan(row.fitted_median) else f"{row.fitted_median:.3g}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def save(
        self, out: str | os.PathLike, title: str | None = None, overwrite: bool = False
    ) -> Path:
        """Write the results into the directory ``out`` (atomically).

        Files: ``scores.csv`` (per fold), ``summary.csv``, ``ttests.csv``,
        ``table.md``, ``chart.png`` and ``params.json``.

        Parameters
        ----------
        out : str or path-like
            Output directory.
        title : str, optional
            Chart title. Default None: a generic one.
        overwrite : bool
            Replace an existing ``out``. Default False: refuse it.

        Returns
        -------
        pathlib.Path
            ``out``.
        """
        with atomic_directory(out, overwrite=overwrite) as tmp:
            self.scores.to_csv(tmp / "scores.csv", index=False)
            self.summary().to_csv(tmp / "summary.csv", index=False)
            self.ttests().to_csv(tmp / "ttests.csv", index=False)
            (tmp / "table.md").write_text(self.to_markdown() + "\n")
            (tmp / "params.json").write_text(json.dumps(self.params, indent=2, default=str) + "\n")
            plot_comparison(self, tmp / "chart.png", title=title)
        return Path(out)


def _paired_p(a: pd.Series, b: pd.Series) -> float:
    from scipy import stats

    diff = (a - b).dropna()
    if diff.size < 2 or diff.std() == 0:
        return float("nan")
    return float(stats.ttest_rel(a, b, nan_policy="omit").pvalue)


def _check_inputs(features: Mapping[str, np.ndarray], y: np.ndarray, regression: bool) -> None:
    if not features:
        raise EpitensorError("no feature sets given; pass at least one NAME=FILE")
    if BASELINE in features or REGRESSION_BASELINE in features:
        raise EpitensorError(
            f"feature set names {BASELINE!r} / {REGRESSION_BASELINE!r} are reserved"
        )
    for name, x in features.items():
        if x.ndim != 2:
            raise EpitensorError(
                f"feature set {name!r}: expected (n_samples, n_features), got {x.shape}"
            )
        if x.shape[0] != y.size:
            raise EpitensorError(
                f"feature set {name!r} has {x.shape[0]} samples but the labels have {y.size}"
            )
        if not np.isfinite(x).all():
            raise EpitensorError(f"feature set {name!r} holds NaN or infinite values")
    if not regression and not np.isin(np.unique(y), [0, 1]).all():
        raise EpitensorError(
            "labels are not 0/1; give a threshold (labels >= threshold are positive) or use regression"
        )
    if not regression and np.unique(y).size < 2:  # T4: sklearn's own error was a traceback
        raise EpitensorError(
            f"the labels hold one class only (all {y.size} are {y.flat[0]:g}); a classifier "
            f"needs both 0 and 1: check the labels or the threshold"
        )


def compare_feature_sets(
    features: Mapping[str, np.ndarray],
    y: np.ndarray,
    model: str = "xgboost",
    n_folds: int = 20,
    n_repeats: int = 1,
    regression: bool = False,
    seed: int = 0,
    n_estimators: int = 5000,
    max_depth: int = 6,
    early_stopping_rounds: int = 20,
    threads: int | None = None,
    groups: np.ndarray | None = None,
    verbose: bool = True,
) -> Comparison:
    """Score every feature set by cross-validation on the same shuffled folds.

    Parameters
    ----------
    features : mapping of str to numpy.ndarray, shape=(n_samples, n_features)
        Feature sets by name (each set has its own ``n_features``).
    y : numpy.ndarray, shape=(n_samples,)
        0/1 labels, or continuous targets with ``regression=True``.
    model : {"xgboost", "logistic"}
        XGBoost (early-stopped on a validation fold, see :class:`Fold`) or a
        standardised linear model tuned by internal 3-fold CV over
        :data:`LOGISTIC_CS` (logistic regression scored by AP; ridge for
        regression, ``alpha = 1 / (2 C)``). Default "xgboost".
    n_folds : int
        Folds per repeat. Default 20.
    n_repeats : int
        Repeats of the k-fold split, each reshuffled. Default 1.
    regression : bool
        Continuous target scored by Pearson r and R². Default False.
    seed : int
        Seed of the folds and the models. Default 0.
    n_estimators, max_depth, early_stopping_rounds : int
        XGBoost settings. Defaults 5000, 6, 20 (the paper's).
    threads : int, optional
        XGBoost threads. Default None: all cores.
    groups : numpy.ndarray, shape=(n_samples,), optional
        Keep each group in one fold (see :func:`make_folds`). Default None.
    verbose : bool
        Progress bar on stderr. Default True.

    Returns
    -------
    Comparison
    """
    if model not in MODELS:
        raise EpitensorError(f"invalid model: got {model!r}, expected one of {MODELS!r}")
    y = np.asarray(y, dtype=np.float64).ravel()
    features = {name: np.asarray(x, dtype=np.float32) for name, x in features.items()}
    _check_inputs(features, y, regression)
    folds = make_folds(y, n_folds, n_repeats, seed, stratify=not regression, groups=groups)
    if not regression:
        _warn_small(int(y.sum()), n_folds)
    params = dict(
        model=model, n_folds=n_folds, n_repeats=n_repeats, regression=regression, seed=seed,
        n_estimators=n_estimators, max_depth=max_depth,
        early_stopping_rounds=early_stopping_rounds, threads=threads, n_samples=int(y.size),
        n_positive=None if regression else int(y.sum()), grouped=groups is not None,
    )  # fmt: skip
    fitter = _FITTERS[model]
    rows = []
    bar = progress(total=len(features) * len(folds), desc="cross-validation", verbose=verbose)
    for name, x in features.items():
        for fold in folds:
            pred, fitted = fitter(x, y, fold, regression, params)
            rows.append(_fold_row(name, fold, y, pred, fitted, regression))
            bar.update()
    bar.close()
    for fold in folds:
        rows.append(_fold_row(None, fold, y, None, np.nan, regression))
    n_features = {name: x.shape[1] for name, x in features.items()}
    n_features[REGRESSION_BASELINE if regression else BASELINE] = 0
    scores = pd.DataFrame(rows)
    return Comparison(scores, "pearson" if regression else "ap", n_features, params)


def _fold_row(
    name: str | None, fold: Fold, y: np.ndarray, pred: np.ndarray | None, fitted, regression: bool
) -> dict:
    """Scores of one fold; ``pred=None`` scores the baseline (prevalence or training mean)."""
    y_test = y[fold.test]
    row = dict(
        feature_set=name or (REGRESSION_BASELINE if regression else BASELINE),
        repeat=fold.repeat, fold=fold.fold, n_train=fold.train.size, n_test=fold.test.size,
    )  # fmt: skip
    if regression:
        if pred is None:
            pred = np.full(y_test.size, y[fold.train].mean())
        row.update(pearson=_pearson(y_test, pred), r2=_r2(y_test, pred))
    else:
        row["n_test_positive"] = int(y_test.sum())
        # A constant score has one threshold: its AP is the test fold's prevalence.
        row["ap"] = average_precision(y_test, np.zeros(y_test.size) if pred is None else pred)
    row["fitted"] = fitted
    return row


# --------------------------------------------------------------------------------------
# files and the CLI entry point


def _read_matrix(path: str | os.PathLike) -> np.ndarray:
    """A numeric 2-D array from .npy / .npz / .tsv / .csv, in its stored dtype."""
    path = Path(path)
    if not path.is_file():
        raise EpitensorError(f"file {path} not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as bundle:
                keys = list(bundle.keys())
                if len(keys) != 1 and "arr_0" not in keys:
                    raise EpitensorError(f"{path} holds arrays {keys}; keep one (or name it arr_0)")
                x = bundle["arr_0" if "arr_0" in keys else keys[0]]
        elif suffix in (".tsv", ".csv", ".txt"):
            x = _read_text_matrix(path, "," if suffix == ".csv" else "\t")
        else:
            raise EpitensorError(
                f"{path}: unknown feature format {suffix!r}; use .npy, .npz or .tsv"
            )
    except (ValueError, OSError) as exc:
        raise EpitensorError(f"cannot read {path}: {exc}") from exc
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.dtype.kind not in "biuf":
        raise EpitensorError(
            f"{path}: expected a numeric (n_samples, n_features) array, got {x.shape}"
        )
    return x


def _read_text_matrix(path: Path, sep: str) -> np.ndarray:
    """The numeric columns of a CSV / TSV, its header row told from the cells.

    The first row is a header when it has a word over a column of numbers
    (or only words); a first row of numbers is data, so a header-less file
    loses no row (trial W11: pandas took it as the header, pairing row k of
    the features with label k - 1). A column of words (an ID column) is
    dropped; a column of numbers with one word in it is an error naming the
    cell (W10: one ``.`` dropped the whole column, silently). Empty and
    ``NA``-like cells are NaN, as pandas reads them.
    """
    table = pd.read_csv(path, sep=sep, header=None, dtype=str)
    if table.empty:
        raise EpitensorError(f"{path}: no rows; expected a header and numeric columns")
    numbers = table.apply(pd.to_numeric, errors="coerce")
    words = table.notna() & numbers.isna()  # cells that are not numbers (nor NA)
    rest, below = words.iloc[1:], numbers.iloc[1:].notna()
    first = words.iloc[0]
    header = bool((first | table.iloc[0].isna()).all()) or bool(
        (first & ~rest.any() & below.any()).any()  # a word over a column of numbers
    )
    if header:
        names = [str(v) for v in table.iloc[0]]
        numbers, words = numbers.iloc[1:], rest
    else:
        names = [f"column {j + 1}" for j in range(table.shape[1])]
    has_word, has_number = words.any(), numbers.notna().any()
    text = has_word & ~has_number  # an ID or name column: dropped
    mixed = has_word & has_number
    if mixed.any():
        j = int(np.flatnonzero(mixed.to_numpy())[0])
        i = int(np.flatnonzero(words.iloc[:, j].to_numpy())[0])
        cell = table.iloc[i + int(header), j]
        raise EpitensorError(
            f"{path}: line {i + int(header) + 1}, column {names[j]!r}: {cell[:30]!r} is not a "
            f"number ({int(words.iloc[:, j].sum())} such cell(s) in that column); fix the cell "
            f"or leave it empty for a missing value"
        )
    keep = ~text.to_numpy()
    if not keep.any():
        raise EpitensorError(
            f"{path}: no numeric column (columns {names[:5]} hold text); expected numeric "
            f"features with one header row"
        )
    return numbers.loc[:, keep].to_numpy(dtype=np.float64)


def load_features(path: str | os.PathLike) -> np.ndarray:
    """Read a feature matrix.

    Parameters
    ----------
    path : str or path-like
        ``.npy``; ``.npz`` (its only array, or ``arr_0``); ``.tsv`` / ``.csv``
        (numeric columns, with or without a header row; columns of text are
        dropped, a word in a column of numbers is an error naming its line).

    Returns
    -------
    numpy.ndarray, shape=(n_samples, n_features), float32
        A 1-D file becomes one feature column.
    """
    return _read_matrix(path).astype(np.float32)


def load_labels(
    path: str | os.PathLike, threshold: float | None = None, n_samples: int | None = None
) -> np.ndarray:
    """Read labels (a 1-D ``.npy``, ``.npz`` or one-column ``.tsv``).

    Parameters
    ----------
    path : str or path-like
        Label file.
    threshold : float, optional
        Binarise: labels ``>= threshold`` become 1, others 0. Default None: as read.
    n_samples : int, optional
        Keep the first ``n_samples`` labels. Default None: all.

    Returns
    -------
    numpy.ndarray, shape=(n_samples,), float64
    """
    y = _read_matrix(path)
    if y.shape[1] != 1:
        raise EpitensorError(f"label file {path} has {y.shape[1]} columns; expected one")
    y = y[:, 0].astype(np.float64)
    if n_samples is not None:
        if n_samples > y.size:
            raise EpitensorError(f"{path} has {y.size} labels, fewer than n_samples={n_samples}")
        y = y[:n_samples]
    return (y >= threshold).astype(np.float64) if threshold is not None else y


def _parse_feature_args(specs: Sequence[str] | Mapping[str, str]) -> dict[str, Path]:
    if isinstance(specs, Mapping):
        return {str(k): Path(v) for k, v in specs.items()}
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, file = str(spec).partition("=")
        if not sep or not name or not file:
            raise EpitensorError(f"feature set {spec!r}: expected NAME=FILE")
        if name in out:
            raise EpitensorError(f"feature set name {name!r} given twice")
        out[name] = Path(file)
    return out


def run_downstream(
    features: Sequence[str] | Mapping[str, str | os.PathLike],
    labels: str | os.PathLike,
    out: str | os.PathLike,
    *,
    options: DownstreamOptions | None = None,
    **overrides,
) -> Comparison:
    """Load feature sets and labels from files, compare them, write the results to ``out``.

    The settings (the model, folds, repeats, regression, threshold, rows,
    seed, trees, threads, title, overwriting, progress) are a
    :class:`~epitensor.evaluation.options.DownstreamOptions`, given whole as
    ``options`` or field by field as keywords (``threshold=0.5``), or both
    (the keywords win); ``epitensor downstream`` builds the same object.

    Parameters
    ----------
    features : sequence of "NAME=FILE" or mapping of name to file
        Feature sets (see :func:`load_features`).
    labels : str or path-like
        Label file (see :func:`load_labels`).
    out : str or path-like
        Output directory (see :meth:`Comparison.save`).
    options : DownstreamOptions, optional
        The settings. Default None: ``DownstreamOptions()``.
    **overrides
        Fields of :class:`~epitensor.evaluation.options.DownstreamOptions`
        replacing those of ``options`` (``model``, ``n_folds``,
        ``n_repeats``, ``regression``, ``threshold``, ``n_samples``,
        ``seed``, ``n_estimators``, ``threads``, ``title``, ``overwrite``,
        ``verbose``); any other name is refused.

    Returns
    -------
    Comparison

    Examples
    --------
    >>> import epitensor as et
    >>> result = et.run_downstream({"latent": "factors.npz", "tracks": "tracks.npz"},
    ...                        "labels.tsv", "downstream-out/")
    """
    opts = DownstreamOptions.resolve(options, **overrides)
    out = Path(out)
    if out.exists() and not opts.overwrite:
        raise EpitensorError(f"{out} already exists; choose another --out or pass --overwrite")
    files = _parse_feature_args(features)  # a bad NAME=FILE fails before any reading
    y = load_labels(labels, opts.threshold, opts.n_samples)
    sets = {name: _rows(load_features(file), file, y, labels, opts.n_samples)
            for name, file in files.items()}  # fmt: skip
    result = compare_feature_sets(
        sets, y, model=opts.model, n_folds=opts.n_folds, n_repeats=opts.n_repeats,
        regression=opts.regression, seed=opts.seed, n_estimators=opts.n_estimators,
        threads=opts.threads, verbose=opts.verbose,
    )  # fmt: skip
    result.params.update(
        features={k: str(v) for k, v in files.items()},
        labels=str(labels), threshold=opts.threshold,
    )  # fmt: skip
    result.save(out, title=opts.title, overwrite=opts.overwrite)
    return result


def _rows(x: np.ndarray, file, y: np.ndarray, labels, n_samples: int | None) -> np.ndarray:
    """The rows of feature set ``x`` (from ``file``) that go with the labels ``y``."""
    if n_samples is not None:
        if x.shape[0] < n_samples:
            raise EpitensorError(f"{file} has {x.shape[0]} rows, fewer than n_samples={n_samples}")
        return x[:n_samples]
    if x.shape[0] != y.size:
        raise EpitensorError(
            f"{file} has {x.shape[0]} rows but {labels} has {y.size} labels; "
            "pass --n-samples N to use the first N of each"
        )
    return x


def plot_comparison(result: Comparison, path: str | os.PathLike, title: str | None = None) -> None:
    """Bar chart of the mean score per feature set with standard-error bars.

    Parameters
    ----------
    result : Comparison
        The comparison to draw (bars in the order of :meth:`Comparison.summary`).
    path : str or path-like
        PNG to write.
    title : str, optional
        Title. Default None: the metric and fold count.
    """
    from epitensor.viz.plots import subplots

    table = result.summary()
    metric = result.metric
    label = {"ap": "average precision (mean over folds)", "pearson": "Pearson r (mean over folds)"}
    names = table.feature_set.tolist()
    colours = ["#bbbbbb" if n == result.baseline else "#1f77b4" for n in names]
    fig, ax = subplots(figsize=(1.2 + 1.1 * len(names), 3.6))
    ax.bar(
        range(len(names)), table[f"mean_{metric}"], yerr=table[f"sem_{metric}"],
        color=colours, capsize=4,
    )  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(label[metric])
    n = len(result.scores[["repeat", "fold"]].drop_duplicates())
    ax.set_title(title or f"{result.params['model']}, {n} test folds; bars: ±1 s.e.")
    ax.spines[["top", "right"]].set_visible(False)
    fig.savefig(path, dpi=120, bbox_inches="tight")


# --------------------------------------------------------------------------------------
# region features


_INTERVAL = re.compile(r"^(?:[^|]*\|)?(?P<chrom>[^:|]+):(?P<start>[\d,]+)-(?P<end>[\d,]+)$")


def parse_interval_names(names: Sequence[str]) -> pd.DataFrame:
    """Parse ``chr:start-end`` names (optionally prefixed ``LABEL|``, as in TargetFinder).

    Coordinates are taken as written: 0-based, half-open ``[start, end)`` bp.

    Returns
    -------
    pandas.DataFrame
        ``chrom`` (str), ``start``, ``end`` (int64), one row per name.
    """
    names = pd.Series(list(names), dtype=str)
    parts = names.str.extract(_INTERVAL)
    bad = parts.chrom.isna()
    if bad.any():
        raise EpitensorError(
            f"{int(bad.sum())} names are not chr:start-end, e.g. {names[bad].iloc[0]!r}"
        )
    out = pd.DataFrame({"chrom": parts.chrom})
    for col in ("start", "end"):
        out[col] = parts[col].str.replace(",", "").astype(np.int64)
    if (out.start >= out.end).any():
        raise EpitensorError(
            f"starts are not below ends for {int((out.start >= out.end).sum())} names"
        )
    return out


def read_targetfinder_pairs(path: str | os.PathLike) -> pd.DataFrame:
    """Read a TargetFinder enhancer-promoter pairs CSV (hg19 coordinates in the names).

    Parameters
    ----------
    path : str or path-like
        CSV with ``enhancer_name, promoter_name, label`` (names like
        ``IMR90|chr1:20902000-20902200``).

    Returns
    -------
    pandas.DataFrame
        ``enhancer_chrom, enhancer_start, enhancer_end, promoter_chrom,
        promoter_start, promoter_end, label`` (0/1), one row per pair.
    """
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise EpitensorError(f"cannot read pairs from {path}: {exc}") from exc
    missing = {"enhancer_name", "promoter_name", "label"} - set(table.columns)
    if missing:
        raise EpitensorError(f"{path} lacks the columns {sorted(missing)}")
    out = {}
    for element in ("enhancer", "promoter"):
        parsed = parse_interval_names(table[f"{element}_name"])
        for col in ("chrom", "start", "end"):
            out[f"{element}_{col}"] = parsed[col].to_numpy()
    out["label"] = table["label"].astype(int).to_numpy()
    return pd.DataFrame(out)


def locate_intervals(intervals: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """Where intervals lie on a layout's axes.

    Parameters
    ----------
    intervals : pandas.DataFrame
        ``chrom, start, end`` (bp, 0-based half-open).
    layout : Layout
        The layout (e.g. :func:`epitensor.genome.pilot.pilot_layout`).

    Returns
    -------
    pandas.DataFrame
        Same index: ``axis`` (None when outside), ``axis_start, axis_end``
        (positions, half-open; -1 when outside) and ``inside`` (True when one
        layout region covers every 25-bp bin the interval touches).
    """
    res = layout.resolution
    lo = intervals["start"].to_numpy(np.int64) // res
    hi = -(-intervals["end"].to_numpy(np.int64) // res)
    runs = layout.locate_many(intervals)
    # Regions on one chromosome never overlap: at most one run holds all of [lo, hi).
    runs = runs[(runs.axis_end - runs.axis_start).to_numpy() == (hi - lo)[runs.interval]]
    axis = np.full(len(intervals), None, dtype=object)
    axis_start, axis_end = np.full((2, len(intervals)), -1, dtype=np.int64)
    at = runs.interval.to_numpy()
    axis[at] = runs.axis.to_numpy()
    axis_start[at], axis_end[at] = runs.axis_start.to_numpy(), runs.axis_end.to_numpy()
    return pd.DataFrame(
        {"axis": axis, "axis_start": axis_start, "axis_end": axis_end, "inside": axis_start >= 0},
        index=intervals.index,
    )


def pairs_in_layout(pairs: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """Keep the pairs whose enhancer and promoter both lie wholly inside the layout.

    Parameters
    ----------
    pairs : pandas.DataFrame
        As returned by :func:`read_targetfinder_pairs`.
    layout : Layout
        The layout.

    Returns
    -------
    pandas.DataFrame
        The kept pairs (index reset) with added ``{enhancer,promoter}_axis``,
        ``_axis_start`` and ``_axis_end`` columns.
    """
    out = pairs.copy()
    keep = np.ones(len(pairs), dtype=bool)
    for element in ("enhancer", "promoter"):
        cols = {f"{element}_{c}": c for c in ("chrom", "start", "end")}
        located = locate_intervals(pairs[list(cols)].rename(columns=cols), layout)
        keep &= located.inside.to_numpy()
        for col in ("axis", "axis_start", "axis_end"):
            out[f"{element}_{col}"] = located[col].to_numpy()
    return out[keep].reset_index(drop=True)


def _interval_means(
    read: Callable[[str, int, int], np.ndarray], axis: Sequence, start: Sequence, end: Sequence
) -> np.ndarray:
    """Mean over positions of ``read(axis, start, end)`` (shape ``(end - start, d)``) per interval.

    Identical intervals are read once.
    """
    keys = list(zip(axis, np.asarray(start, dtype=np.int64), np.asarray(end, dtype=np.int64)))
    if not keys:
        raise EpitensorError("no intervals to read features for")
    if any(a is None or s < 0 for a, s, _ in keys):
        raise EpitensorError("some intervals lie outside the layout; filter them with `inside`")
    cache: dict = {}
    for key in keys:
        if key not in cache:
            cache[key] = np.asarray(read(*key), dtype=np.float32).mean(axis=0)
    return np.stack([cache[key] for key in keys])


def _located(located: pd.DataFrame, prefix: str = "") -> tuple:
    return (
        located[f"{prefix}axis"].tolist(),
        located[f"{prefix}axis_start"].to_numpy(),
        located[f"{prefix}axis_end"].to_numpy(),
    )


def genome_factor_features(model, intervals: pd.DataFrame, prefix: str = "") -> np.ndarray:
    """Mean genome factors of a fitted model over each interval.

    A thin wrapper of :func:`epitensor.workflows.impute.region_factors` (``embed --regions``).

    Parameters
    ----------
    model : epitensor.estimators.avocado.Avocado or path
        Fitted model or model directory.
    intervals : pandas.DataFrame
        ``chrom, start, end`` (bp, 0-based half-open); with ``prefix``,
        ``{prefix}chrom`` etc. (as in :func:`pairs_in_layout`).
    prefix : str
        Column prefix, e.g. ``"enhancer_"``. Default "".

    Returns
    -------
    numpy.ndarray, shape=(n_intervals, n_factors), float32
        Every factor averaged over the interval's 25-bp positions (110 columns
        for the paper's sizes: 25-bp, 250-bp, then 5-kbp factors). Intervals
        outside the model's layout give NaN rows (filter with
        :func:`locate_intervals` or :func:`pairs_in_layout` first).
    """
    from epitensor.workflows.impute import region_factors

    bed = intervals[[f"{prefix}{c}" for c in ("chrom", "start", "end")]]
    bed = bed.set_axis(["chrom", "start", "end"], axis=1).reset_index(drop=True)
    return _factor_matrix(region_factors(model, bed, verbose=False))


def promoter_features(
    model, tss: pd.DataFrame, flank: int = 2000, window: int = 250
) -> tuple[np.ndarray, np.ndarray]:
    """Promoter features from genome factors: adjacent 250-bp windows over ``TSS ± flank``.

    Per window, the 25-bp factors averaged over the window and its 250-bp
    factors; the 5-kbp factors once per promoter, averaged over the span:
    ``n_windows * (n_25bp + n_250bp) + n_5kbp`` columns (16 * 65 + 45 = 1085
    for the paper's sizes and ±2 kb). Windows follow the model's 250-bp grid
    (the window holding the TSS and ``flank // 250`` on either side, less
    one), listed 5' to 3' on either strand; see
    :func:`epitensor.workflows.impute.region_factors`.

    Parameters
    ----------
    model : epitensor.estimators.avocado.Avocado or path
        Fitted model or model directory.
    tss : pandas.DataFrame
        ``chrom, pos`` (0-based base) and optionally ``strand``, as returned by
        :func:`epitensor.genome.annotations.read_tss`.
    flank : int
        bp on each side of the TSS. Default 2000.
    window : int
        Window size; must be 250 (the 250-bp factor grid). Default 250.

    Returns
    -------
    features : numpy.ndarray, shape=(n_kept, n_columns), float32
    kept : numpy.ndarray, shape=(n_kept,), int64
        Rows of ``tss`` whose windows lie inside the model's layout.
    """
    from epitensor.workflows.impute import region_factors

    if window != 250 or flank <= 0 or (2 * flank) % window:
        raise EpitensorError(
            f"window must be 250 bp (the 250-bp factor grid) dividing 2 * flank; "
            f"got window={window!r}, flank={flank!r}"
        )
    pos = tss["pos"].to_numpy(np.int64)
    bed = pd.DataFrame({"chrom": tss["chrom"].to_numpy(), "start": pos, "end": pos + 1})
    if "strand" in tss:
        bed["strand"] = tss["strand"].to_numpy()
    import warnings

    with warnings.catch_warnings():  # promoters outside the layout are expected; dropped below
        warnings.simplefilter("ignore", EpitensorWarning)
        table = region_factors(model, bed, window=2 * flank // window, verbose=False)
    x = _factor_matrix(table)
    kept = np.flatnonzero(~np.isnan(x).any(axis=1))
    if kept.size == 0:
        raise EpitensorError("no promoter window span lies inside the model's layout")
    return x[kept], kept


def _factor_matrix(table: pd.DataFrame) -> np.ndarray:
    """The feature columns of a :func:`epitensor.workflows.impute.region_factors` table."""
    meta = {"chrom", "start", "end", "name", "strand"}
    return table[[c for c in table.columns if c not in meta]].to_numpy(np.float32)


def track_features(
    store, tracks: Sequence[tuple[str, str]], located: pd.DataFrame, prefix: str = ""
) -> np.ndarray:
    """Mean observed signal of some tracks over each interval.

    Parameters
    ----------
    store : epitensor.store.compendium.Store
        The compendium.
    tracks : sequence of (str, str)
        ``(celltype, assay)`` pairs, each observed in ``store``.
    located : pandas.DataFrame
        ``axis, axis_start, axis_end`` per interval (see :func:`locate_intervals`);
        with ``prefix``, ``{prefix}axis`` etc. (as in :func:`pairs_in_layout`).
    prefix : str
        Column prefix, e.g. ``"enhancer_"``. Default "".

    Returns
    -------
    numpy.ndarray, shape=(n_intervals, n_tracks), float32, arcsinh
        Columns in the order of ``tracks``.
    """
    missing = [t for t in tracks if not store.has_track(*t)]
    if missing:
        raise EpitensorError(f"store {store.url} lacks the tracks {missing}")
    rows = [store.track_index(*t) for t in tracks]
    return _interval_means(
        lambda a, s, e: store.read_block(a, s, e, tracks=rows).T, *_located(located, prefix)
    )


def pair_features(enhancer: np.ndarray, promoter: np.ndarray) -> np.ndarray:
    """Features of enhancer-promoter pairs: both elements' features side by side.

    Parameters
    ----------
    enhancer, promoter : numpy.ndarray, shape=(n_pairs, n_features)

    Returns
    -------
    numpy.ndarray, shape=(n_pairs, 2 * n_features)
        Enhancer columns first.
    """
    if enhancer.shape != promoter.shape:
        raise EpitensorError(
            f"enhancer features {enhancer.shape} and promoter {promoter.shape} differ"
        )
    return np.concatenate([enhancer, promoter], axis=1)


def _warn_small(n_positive: int, n_folds: int) -> None:
    if n_positive < 2 * n_folds:
        warn(f"only {n_positive} positives over {n_folds} folds: fold scores are very noisy")
