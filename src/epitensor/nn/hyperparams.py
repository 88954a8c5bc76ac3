"""Hyperparameters, declared once per layer: the module's, a training loop's, the estimator's.

* :class:`ModuleConfig`: the network and factor sizes (:class:`~epitensor.nn.module.AvocadoModule`);
* :class:`TrainConfig`: one training loop (:mod:`epitensor.train.fitting`);
* :class:`Hyperparameters`: every parameter of the :class:`~epitensor.estimators.avocado.Avocado`
  estimator (a :class:`ModuleConfig` plus the settings of its training stages), with the
  paper's values as defaults. :data:`PRESETS` are instances of it; the estimator's
  ``__init__`` signature, ``train_config`` and ``module_config`` are derived from its
  fields, so no default or list of names is written twice.

Each class validates itself in ``check()``; the estimator calls
:meth:`Hyperparameters.check` at the start of ``fit`` (so ``set_params`` behaves like
the constructor).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from epitensor._utils import EpitensorError

__all__ = [
    "LR_SCHEDULES",
    "PRESETS",
    "STRUCTURAL",
    "Hyperparameters",
    "ModuleConfig",
    "TrainConfig",
    "read_preset",
]

LR_SCHEDULES = ["constant", "cosine"]
AVERAGE_MODES = ("none", "blend", "residual")  # see epitensor.nn.average
_NOT_SIZES = ("dropout", "average", "average_weight")


def _positive_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise EpitensorError(f"{name} must be a {kind} integer; got {name}={value!r}")


@dataclass(frozen=True)
class ModuleConfig:
    """Sizes of :class:`~epitensor.nn.module.AvocadoModule` (the paper's by default).

    Parameters
    ----------
    n_celltype_factors, n_assay_factors : int
        Embedding sizes. Defaults 32 and 256.
    n_25bp_factors, n_250bp_factors, n_5kbp_factors : int
        Genome factors per scale. Defaults 25, 40, 45.
    n_layers, n_nodes : int
        Hidden ReLU layers and their width. Defaults 2 and 2048.
    dropout : float
        Dropout after each hidden layer. Default 0.
    average : {"none", "blend", "residual"}
        How the model uses each assay's average activity over the training cell
        types (:mod:`epitensor.nn.average`). Default ``"none"``: not at all (the paper's).
    average_weight : float
        The network's weight ``w`` in ``"blend"``: ``w * network + (1 - w) *
        average``. Default 0.5.
    """

    n_celltype_factors: int = 32
    n_assay_factors: int = 256
    n_25bp_factors: int = 25
    n_250bp_factors: int = 40
    n_5kbp_factors: int = 45
    n_layers: int = 2
    n_nodes: int = 2048
    dropout: float = 0.0
    average: str = "none"
    average_weight: float = 0.5

    def check(self) -> None:
        """Raise an :class:`EpitensorError` for an impossible value."""
        for f in fields(ModuleConfig):
            if f.name not in _NOT_SIZES:
                _positive_int(f.name, getattr(self, f.name))
        if not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise EpitensorError(f"dropout must lie in [0, 1); got dropout={self.dropout!r}")
        if self.average not in AVERAGE_MODES:
            raise EpitensorError(
                f"invalid average: got {self.average!r}, expected one of {list(AVERAGE_MODES)}"
            )
        weight = self.average_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise EpitensorError(f"average_weight must lie in [0, 1]; got {weight!r}")

    def module_kwargs(self, n_celltypes: int, n_assays: int) -> dict:
        """:class:`~epitensor.nn.module.AvocadoModule` arguments (without ``axis_lengths``)."""
        sizes = {f.name: getattr(self, f.name) for f in fields(ModuleConfig)}
        sizes = {k: v if k in _NOT_SIZES else int(v) for k, v in sizes.items()}
        sizes["dropout"] = float(sizes["dropout"])
        if sizes["average"] == "none":  # the paper's module: its saved config stays as before
            del sizes["average"], sizes["average_weight"]
        else:
            sizes["average_weight"] = float(sizes["average_weight"])
        return {"n_celltypes": int(n_celltypes), "n_assays": int(n_assays), **sizes}


STRUCTURAL = tuple(f.name for f in fields(ModuleConfig) if f.name not in _NOT_SIZES)
"""The seven structural hyperparameters, in order (the first five are the network's inputs)."""


@dataclass
class TrainConfig:
    """Hyperparameters of one training loop.

    Parameters
    ----------
    n_epochs : int
        Passes over the training axes.
    batch_size : int
        Samples per optimiser step.
    lr : float
        Adam learning rate of the network and the cell type and assay factors.
    genome_lr : float, optional
        Learning rate of the genome factors. Default None: ``lr``.
    seed : int
        Seed of every random draw of the loop. Default 0.
    device : str, optional
        torch device. Default None: CUDA, else MPS, else CPU.
    n_threads : int, optional
        CPU threads for torch. Default None: the CPUs the process may use
        (affinity, cgroup quota), at most torch's setting.
    precision : str
        ``"fp32"``, ``"bf16"`` (autocast of the network) or ``"auto"`` (bf16
        where the device has native bf16). Default ``"fp32"``.
    block_size, group_blocks : int
        Sampler block length (positions) and blocks shuffled together.
        Defaults 65,536 and 8.
    tracks_per_position : int
        Training tracks per position per epoch (the paper: 1). Default 1.
    genome_weight_decay : float
        L2 penalty on the genome factors a batch touches (added to the loss as
        ``decay * mean over the batch of the squared factors``). Default 0.
    early_stopping : int, optional
        Stop when the holdout MSE has not improved for this many epochs, and
        end with the parameters of the best epoch. Default None: never.
    n_validation : int
        Positions (in evenly spaced windows) on which held-out tracks are
        scored after each epoch. Default 100,000.
    verbose : bool
        Progress bars on stderr. Default True.
    lr_schedule : str
        ``"constant"`` or ``"cosine"`` (every learning rate annealed from its
        value to 0 over the run, step by step). Default ``"constant"``.
    swa_start : int, optional
        End with the mean of the parameters after each epoch from this one on
        (stochastic weight averaging). Default None: the last epoch's.
    """

    n_epochs: int
    batch_size: int
    lr: float
    genome_lr: float | None = None
    seed: int = 0
    device: str | None = None
    n_threads: int | None = None
    precision: str = "fp32"
    block_size: int = 1 << 16
    group_blocks: int = 8
    tracks_per_position: int = 1
    genome_weight_decay: float = 0.0
    early_stopping: int | None = None
    n_validation: int = 100_000
    verbose: bool = True
    lr_schedule: str = "constant"
    swa_start: int | None = None

    def check(self) -> None:
        """Raise an :class:`EpitensorError` for an impossible value."""
        for name in (
            "n_epochs",
            "batch_size",
            "block_size",
            "group_blocks",
            "n_validation",
            "tracks_per_position",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < (0 if name == "n_epochs" else 1):
                raise EpitensorError(f"{name} must be a positive integer; got {name}={value!r}")
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise EpitensorError(f"lr must be a positive number; got lr={self.lr!r}")
        if self.genome_lr is not None and not self.genome_lr > 0:
            raise EpitensorError(f"genome_lr must be a positive number; got {self.genome_lr!r}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise EpitensorError(
                f"invalid precision: got {self.precision!r}, expected one of "
                f"['fp32', 'bf16', 'auto']"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise EpitensorError(
                f"invalid lr_schedule: got {self.lr_schedule!r}, expected one of {LR_SCHEDULES}"
            )
        if self.swa_start is not None:
            if not isinstance(self.swa_start, int | np.integer) or self.swa_start < 1:
                raise EpitensorError(
                    f"swa_start must be a positive integer or None; got {self.swa_start!r}"
                )
            if self.early_stopping is not None:
                raise EpitensorError(
                    "early_stopping and swa_start cannot be combined: one ends with the best "
                    "epoch's parameters, the other with an average; set one of them"
                )
        if self.early_stopping is not None and self.early_stopping < 1:
            raise EpitensorError(
                f"early_stopping must be a positive integer or None; got {self.early_stopping!r}"
            )


@dataclass(frozen=True)
class Hyperparameters(ModuleConfig):
    """Every hyperparameter of the Avocado estimator; defaults are the paper's.

    The module sizes of :class:`ModuleConfig`, then the training stages'
    settings (see :class:`~epitensor.estimators.avocado.Avocado` for each one's meaning).
    Behaves as a read-only mapping of name to value, so ``Avocado(**preset)``
    works.
    """

    n_epochs: int = 800
    n_genome_epochs: int = 200
    batch_size: int = 40_000
    lr: float = 1e-3
    lr_schedule: str = "constant"
    swa_start: int | None = None
    genome_lr: float | None = None
    genome_weight_decay: float = 0.0
    tracks_per_position: int = 1
    early_stopping: int | None = None
    precision: str = "fp32"
    device: str | None = None
    n_threads: int | None = None
    seed: int = 0
    verbose: bool = True

    def keys(self) -> list[str]:
        """Parameter names, in declaration order."""
        return [f.name for f in fields(self)]

    def __iter__(self):
        return iter(self.keys())

    def __getitem__(self, name: str):
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def items(self) -> list[tuple[str, object]]:
        """``(name, value)`` pairs, in declaration order, as a dict's."""
        return [(name, getattr(self, name)) for name in self.keys()]

    def module_config(self) -> ModuleConfig:
        """The module layer's part."""
        return ModuleConfig(**{f.name: getattr(self, f.name) for f in fields(ModuleConfig)})

    def train_config(self, n_epochs: int, seed_offset: int = 0) -> TrainConfig:
        """The training loop of one stage (its epochs; ``seed + seed_offset``)."""
        shared = {f.name for f in fields(TrainConfig)} & set(self.keys())
        values = {name: getattr(self, name) for name in shared}
        values.update(n_epochs=int(n_epochs), seed=int(self.seed) + seed_offset)
        return TrainConfig(**values)

    def check(self) -> None:
        """Raise an :class:`EpitensorError` for an impossible value (all layers)."""
        self.module_config().check()
        _positive_int("n_genome_epochs", self.n_genome_epochs, minimum=0)
        if not isinstance(self.genome_weight_decay, int | float) or self.genome_weight_decay < 0:
            raise EpitensorError(
                f"genome_weight_decay must be >= 0; got {self.genome_weight_decay!r}"
            )
        self.train_config(self.n_epochs).check()


PRESETS: dict[str, Hyperparameters] = {
    # The paper's topology and schedule (Methods, "Network topology", "Training").
    "paper": Hyperparameters(precision="auto"),  # bf16 autocast on GPUs/CPUs with native bf16
    # Trains the 5 x 5 pilot sample with the standard split in < 15 min on 2 CPU cores.
    "cpu-small": Hyperparameters(
        # Fewer 25-bp factors than the paper's 25: with 20 training tracks a position's
        # 25 factors memorise its values and the held-out tracks overfit after ~5
        # epochs; with 10, held-out MSE and Pearson keep improving to ~15 epochs (on
        # the standard and a second split alike; README, "cpu-small").
        n_25bp_factors=10,
        n_nodes=256,
        n_epochs=20,
        n_genome_epochs=15,
        # The held-out error of the last epoch swings from epoch to epoch and seed to
        # seed; the mean of the parameters after epochs 4..20 is steadier and better
        # (held-out Pearson +0.02 on average over seeds; README, "cpu-small").
        swa_start=4,
        batch_size=4096,
        lr=3e-3,
        # Lazy (sparse) Adam moves a 25-bp row only on the one step per epoch that
        # touches it; a 10x larger step for the genome factors makes up for it.
        genome_lr=3e-2,
        # bf16 autocast where the hardware has it natively (1.3-1.9x faster on
        # AVX-512 BF16 CPUs), fp32 elsewhere.
        precision="auto",
        # Predict 0.6 * network + 0.4 * the assay's average activity over the training
        # cell types (the network trains as the paper's). Under 5-fold cross-validation
        # (fold seed 0, 3 training seeds) the network alone beat average activity on 1
        # of the 5 peak metrics and Pearson on 13 of 25 tracks, the blend on 5 and 22;
        # the weight was picked there among 0.4 / 0.5 / 0.6 (README, "Cross-validation").
        average="blend",
        average_weight=0.6,
    ),
}


def read_preset(name_or_path: str | os.PathLike) -> Hyperparameters:
    """A preset by name (``"paper"``, ``"cpu-small"``) or from a JSON file of parameters.

    Parameters
    ----------
    name_or_path : str or path-like
        A name in :data:`PRESETS`, or a JSON object of estimator parameters
        (such as ``epitensor tune`` writes); parameters it leaves out keep the
        paper's values.

    Returns
    -------
    Hyperparameters
    """
    if str(name_or_path) in PRESETS:
        return PRESETS[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        if path.suffix == ".json":
            raise EpitensorError(f"preset file not found: {path}")
        raise EpitensorError(
            f"invalid preset: got {str(name_or_path)!r}, expected one of {list(PRESETS)} "
            f"or a JSON file of parameters"
        )
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EpitensorError(f"cannot read preset file {path}: {exc}") from None
    if not isinstance(values, dict):
        raise EpitensorError(f"{path}: a preset file holds one JSON object of parameters")
    known = Hyperparameters().keys()
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise EpitensorError(f"{path}: unknown parameter {names}; valid ones are {list(known)}")
    preset = replace(Hyperparameters(), **values)
    preset.check()
    return preset


def as_dict(params: Hyperparameters) -> dict:
    """The parameters as a plain dict."""
    return asdict(params)
