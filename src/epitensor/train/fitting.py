"""Training loops: the plan (loss, step, optimisers), the runner, stage 1, stage 2, transfer.

Three layers (STYLE.md): :mod:`epitensor.nn.module` holds the torch module,
this module the loops and optimisers, :mod:`epitensor.estimators.avocado` the user class.
The data side (track sets, the epoch sampler) is :mod:`epitensor.train.sampling`,
checkpoints are :mod:`epitensor.train.checkpoints`; both are re-exported here.

"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from epitensor._utils import (
    EpitensorError,
    default_threads,
    progress,
    resolve_device,
    resolve_precision,
)
from epitensor.genome.coordinates import Layout
from epitensor.nn.hyperparams import TrainConfig
from epitensor.nn.inference import Predictor
from epitensor.nn.module import AvocadoModule, GenomeFactors, resolve_cpu_gemm
from epitensor.store.compendium import RegionView, Store
from epitensor.store.registry import open_store
from epitensor.train.checkpoints import Checkpoint, trained_tensors
from epitensor.train.sampling import AxisSource, Batch, EpochSampler, TrackSet, validation_positions

__all__ = [
    "TrainConfig",
    "TrackSet",
    "AxisSource",
    "EpochSampler",
    "TrainingPlan",
    "Checkpoint",
    "run_training",
    "fit_stage1",
    "stage1_store",
    "fit_genome_axis",
    "fit_new_rows",
    "fill_averages",
    "freeze",
    "resolve_cpu_gemm",
    "HISTORY_COLUMNS",
]

HISTORY_COLUMNS = ["epoch", "stage", "train_mse", "holdout_mse", "seconds"]
# Stage 1 trains on every position of stores up to this size, else on the pilot regions.
ALL_POSITIONS_LIMIT = 20_000_000


# plan: loss, step, optimisers ------------------------------------------------------------------


def freeze(module: AvocadoModule, trainable: Sequence[str]) -> None:
    """Freeze every part of ``module`` except the named ones.

    Parameters
    ----------
    module : AvocadoModule
    trainable : sequence of str
        Parts left trainable, among ``"celltype"``, ``"assay"``, ``"genome"``
        (all axes) or ``"genome:<axis>"``, and ``"network"``.
    """
    parts = {
        "celltype": [module.celltype_embedding],
        "assay": [module.assay_embedding],
        "network": [module.network],
        "genome": list(module.genome.values()),
    }
    for axis, factors in module.genome.items():
        parts[f"genome:{axis}"] = [factors]
    unknown = set(trainable) - set(parts)
    if unknown:
        raise EpitensorError(f"unknown parts {sorted(unknown)}; expected among {sorted(parts)}")
    module.requires_grad_(False)
    for name in trainable:
        for part in parts[name]:
            part.requires_grad_(True)


def _is_genome(module: AvocadoModule, param: torch.Tensor) -> bool:
    return any(param is p for p in module.genome.parameters())


class TrainingPlan:
    """Loss, optimisers and one step: Adam for dense parameters, SparseAdam for genome tables.

    SparseAdam is lazy: a genome row's moments and value change only on the
    steps whose batch touches it (rows off the batch are not decayed), which is
    what makes a step cost what its batch touches.

    Parameters
    ----------
    module : AvocadoModule
        Only parameters with ``requires_grad`` are optimised.
    config : TrainConfig
    device : torch.device
    row_masks : dict of str to torch.Tensor, optional
        Per parameter name, a ``(n_rows, 1)`` float mask multiplied into its
        gradient (transfer: only new rows learn). Default None.
    """

    def __init__(
        self,
        module: AvocadoModule,
        config: TrainConfig,
        device: torch.device,
        row_masks: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.module = module
        self.config = config
        self.device = device
        self.precision = resolve_precision(config.precision, device)
        self.gemm = resolve_cpu_gemm(device, self.precision)  # the forward's fp32 CPU products
        sparse, dense = [], []
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            is_sparse = name.startswith("genome.") and module.sparse
            (sparse if is_sparse else dense).append(param)
        if not sparse and not dense:
            raise EpitensorError("nothing to train: every parameter is frozen")
        self.optimizers: list[torch.optim.Optimizer] = []
        genome_lr = config.lr if config.genome_lr is None else config.genome_lr
        if dense:
            groups = [
                {"params": [p for p in dense if not _is_genome(module, p)], "lr": config.lr},
                {"params": [p for p in dense if _is_genome(module, p)], "lr": genome_lr},
            ]
            self.optimizers.append(torch.optim.Adam([g for g in groups if g["params"]]))
        if sparse:
            self.optimizers.append(torch.optim.SparseAdam(sparse, lr=genome_lr))
        self.base_lrs = [[g["lr"] for g in opt.param_groups] for opt in self.optimizers]
        self._hooks = []
        for name, mask in (row_masks or {}).items():
            param = module.get_parameter(name)
            mask = mask.to(device)
            self._hooks.append(param.register_hook(lambda g, m=mask: g * m))

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _products(self) -> Iterator[None]:
        """The module's forward multiplies with ``self.gemm`` inside (its backward follows)."""
        previous, self.module.gemm = getattr(self.module, "gemm", "default"), self.gemm
        try:
            yield
        finally:
            self.module.gemm = previous

    def losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch MSE and the loss minimised (MSE plus the genome-factor penalty), scalars."""
        with self._autocast(), self._products():
            pred = self.module(batch.celltypes, batch.assays, batch.positions, batch.axis)
        pred = pred.float()
        if getattr(self.module, "average", "none") == "residual":  # "blend": the network alone
            base = batch.baseline
            if base is None:  # transfer to new cell types: the stored averages are theirs
                table = self.module.genome[batch.axis]
                base = self.module.average_term(table, batch.assays, batch.positions)
            pred = pred + base
        mse = torch.mean((pred - batch.values) ** 2)
        decay = self.config.genome_weight_decay
        if decay <= 0:
            return mse, mse
        factors = self.module.genome[batch.axis](batch.positions)
        return mse, mse + decay * factors.pow(2).sum(dim=1).mean()

    def set_progress(self, fraction: float) -> None:
        """Set the learning rates the schedule gives at ``fraction`` (in [0, 1)) of training.

        ``"cosine"`` anneals every rate from its base value to 0 over the run;
        ``"constant"`` leaves them alone.
        """
        if self.config.lr_schedule != "cosine":
            return
        factor = 0.5 * (1 + math.cos(math.pi * fraction))
        for opt, bases in zip(self.optimizers, self.base_lrs):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = base * factor

    def step(self, batch: Batch) -> float:
        """One optimiser step; returns the batch MSE (without the penalty)."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        mse, loss = self.losses(batch)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        return float(mse.detach())

    def state_dict(self) -> list[dict]:
        """States of the optimisers, in order."""
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        """Restore the optimisers."""
        if len(states) != len(self.optimizers):
            raise EpitensorError("checkpoint does not match this training run (optimisers differ)")
        for opt, state in zip(self.optimizers, states):
            opt.load_state_dict(state)

    def close(self) -> None:
        """Remove gradient hooks."""
        for hook in self._hooks:
            hook.remove()


# validation ------------------------------------------------------------------------------------


class HoldoutScorer:
    """MSE of held-out tracks on fixed positions of one axis.

    Parameters
    ----------
    store : Store
    axis : str
    tracks : TrackSet
        Held-out tracks (their cell type and assay must be in the model).
    n_positions : int
        Positions scored (evenly spaced windows).
    """

    def __init__(self, store: Store, axis: str, tracks: TrackSet, n_positions: int) -> None:
        self.axis = axis
        self.tracks = tracks
        self.positions = validation_positions(store.axis_length(axis), n_positions)
        # Read window by window: the windows span the whole axis, and one read from
        # the first to the last position would load every track of the axis.
        breaks = np.flatnonzero(np.diff(self.positions) != 1) + 1
        pieces = [
            store.read_block(axis, int(w[0]), int(w[-1]) + 1, tracks=tracks.rows)
            for w in np.split(self.positions, breaks)
        ]
        self.values = torch.from_numpy(np.ascontiguousarray(np.concatenate(pieces, axis=1)))

    def score(self, module: AvocadoModule, device: torch.device, chunk: int = 16384) -> float:
        """Mean over tracks and positions of the squared error (arcsinh scale)."""
        predictor = Predictor(
            module, torch.from_numpy(self.tracks.celltypes), torch.from_numpy(self.tracks.assays),
            device=device,
        )  # fmt: skip
        total = 0.0
        with predictor.session():
            for k in range(0, len(self.positions), chunk):
                pos = torch.from_numpy(self.positions[k : k + chunk])
                pred = predictor.predict_positions(self.axis, pos).cpu()
                total += float(((pred - self.values[:, k : k + chunk]) ** 2).sum())
        return total / self.values.numel()


# runner ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Run a block with ``n_threads`` torch CPU threads, restoring the previous count after.

    ``n_threads=None`` uses :func:`~epitensor._utils.default_threads`: no more
    threads than the CPUs the process may run on (affinity, cgroup quota).
    """
    n_threads = default_threads(n_threads)
    if not isinstance(n_threads, int | np.integer) or n_threads < 1:
        raise EpitensorError(f"n_threads must be a positive integer; got n_threads={n_threads!r}")
    previous = torch.get_num_threads()
    if n_threads == previous:  # also MKL's and the pool's setting: leave them untouched
        yield
        return
    torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class KeptWeights:
    """Parameter sets kept beside the live ones during a run.

    ``best``: the parameters of the epoch with the lowest holdout MSE (kept when
    early stopping is on). ``average``: the running mean of the parameters after
    each epoch from ``config.swa_start`` on (stochastic weight averaging,
    Izmailov et al. 2018). Each is a CPU copy of the module's state dict.
    """

    def __init__(self, config: TrainConfig, scored: bool) -> None:
        self.keep_best = config.early_stopping is not None and scored
        self.swa_start = config.swa_start
        self.sets: dict[str, dict[str, torch.Tensor]] = {}
        self.n_averaged = 0

    def update(self, module: nn.Module, epoch: int, improved: bool) -> None:
        """Record the parameters after ``epoch``."""
        if self.keep_best and improved:
            self.sets["best"] = trained_tensors(module)
        if self.swa_start is not None and epoch >= self.swa_start:
            current = trained_tensors(module)
            average = self.sets.setdefault("average", current)
            if average is not current:
                for name, value in average.items():
                    value += (current[name] - value) / (self.n_averaged + 1)
            self.n_averaged += 1

    def final(self) -> dict[str, torch.Tensor] | None:
        """The parameters to end the run with, or None to keep the live ones."""
        return self.sets.get("average", self.sets.get("best"))


@dataclass
class RunResult:
    """What a loop leaves.

    Per-epoch history rows, whether it stopped early, the best epoch, and the
    holdout MSE of the parameters it ended with when those are not the last
    epoch's (best or averaged).
    """

    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int | None = None
    final_holdout_mse: float | None = None


def run_training(
    module: AvocadoModule,
    plan: TrainingPlan,
    sampler: EpochSampler,
    config: TrainConfig,
    stage: str,
    scorer: HoldoutScorer | None = None,
    checkpoint: Checkpoint | None = None,
    resume: bool = False,
    desc: str = "train",
    on_epoch: Callable[[dict], None] | None = None,
) -> RunResult:
    """Run ``config.n_epochs`` epochs: steps, holdout scoring, checkpoints, progress.

    Randomness (dropout included) is reseeded from ``(seed, epoch)`` at the start
    of every epoch inside a forked RNG, so the caller's global RNG is untouched
    and a resumed run replays the interrupted epoch exactly.

    Parameters
    ----------
    module : AvocadoModule
        On ``plan.device``; left in eval mode afterwards.
    plan : TrainingPlan
    sampler : EpochSampler
    config : TrainConfig
    stage : str
        Label written into the history (``"stage1"``, ``"genome:<axis>"``, ...).
    scorer : HoldoutScorer, optional
        Scores held-out tracks after each epoch. Default None.
    checkpoint : Checkpoint, optional
        Saved after each epoch. Default None.
    resume : bool
        Continue from ``checkpoint`` when it exists. Default False.
    desc : str
        Progress-bar label.
    on_epoch : callable, optional
        Called with each epoch's history row.

    Returns
    -------
    RunResult
    """
    result = RunResult()
    start_epoch = 0
    best, since_best = math.inf, 0
    kept = KeptWeights(config, scored=scorer is not None)
    if checkpoint is not None and resume and checkpoint.exists():
        start_epoch, result.history, extra = checkpoint.load(module, plan)
        best, since_best = extra.get("best", math.inf), extra.get("since_best", 0)
        result.best_epoch = extra.get("best_epoch")
        kept.sets, kept.n_averaged = checkpoint.load_kept(), extra.get("n_averaged", 0)
        if extra.get("stopped_early"):
            result.stopped_early = True
            start_epoch = config.n_epochs
    elif checkpoint is not None:
        checkpoint.clear()
    n_batches = sampler.n_batches()
    module.train()
    try:
        for epoch in range(start_epoch + 1, config.n_epochs + 1):
            tic = time.perf_counter()
            total, count = 0.0, 0
            bar = progress(
                total=n_batches,
                desc=f"{desc} {epoch}/{config.n_epochs}",
                verbose=config.verbose,
                unit="batch",
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed * 1_000_003 + epoch)
                for i, batch in enumerate(sampler.batches(epoch)):
                    plan.set_progress((epoch - 1 + i / n_batches) / config.n_epochs)
                    mse = plan.step(batch.to(plan.device))
                    if not math.isfinite(mse):
                        bar.close()
                        raise EpitensorError(
                            f"{desc}: the training loss is {mse} at epoch {epoch} (batch "
                            f"{i + 1} of {n_batches}); the store may hold non-finite or huge "
                            f"values (check it with `epitensor info STORE`), or lower lr"
                        )
                    n = len(batch.values)
                    total, count = total + mse * n, count + n
                    bar.update(1)
                    if bar.n % 16 == 0:
                        bar.set_postfix(mse=f"{total / max(count, 1):.4f}")
            bar.close()
            row = {
                "epoch": epoch,
                "stage": stage,
                "train_mse": total / max(count, 1),
                "holdout_mse": float("nan"),
                "seconds": time.perf_counter() - tic,
            }
            improved = False
            if scorer is not None:
                row["holdout_mse"] = scorer.score(module, plan.device)
                module.train()
                improved = row["holdout_mse"] < best
                if improved:
                    best, since_best, result.best_epoch = row["holdout_mse"], 0, epoch
                else:
                    since_best += 1
            kept.update(module, epoch, improved)
            row["seconds"] = time.perf_counter() - tic
            result.history.append(row)
            stop = config.early_stopping is not None and since_best >= config.early_stopping
            if checkpoint is not None:
                extra = {
                    "best": best,
                    "since_best": since_best,
                    "best_epoch": result.best_epoch,
                    "n_averaged": kept.n_averaged,
                    "stopped_early": stop,
                }
                checkpoint.save(epoch, module, plan, result.history, extra, kept.sets)
            if on_epoch is not None:
                on_epoch(row)
            if config.verbose:
                holdout = "" if scorer is None else f", holdout MSE {row['holdout_mse']:.4f}"
                progress_write(
                    f"{desc} epoch {epoch}: train MSE {row['train_mse']:.4f}{holdout}"
                    f" ({row['seconds']:.1f} s)"
                )
            if stop:
                result.stopped_early = True
                break
        if kept.final() is not None:
            module.load_state_dict(kept.final(), strict=False)
            if scorer is not None:
                result.final_holdout_mse = scorer.score(module, plan.device)
    finally:
        module.eval()
    return result


def progress_write(message: str) -> None:
    """Print a line above the progress bars (stderr)."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=__import__("sys").stderr)


# stages ----------------------------------------------------------------------------------------


def stage1_store(store: Store, regions: str | os.PathLike | pd.DataFrame | None = None) -> Store:
    """The store stage 1 trains on: ``store`` itself, or a view of some of its regions.

    Parameters
    ----------
    store : Store
    regions : str, path-like or pandas.DataFrame, optional
        ``"all"``: every position of ``store``. ``"pilot"``: the ENCODE pilot
        regions (hg19 only). A BED path or table: those regions. Default None:
        ``"all"`` for stores of at most :data:`ALL_POSITIONS_LIMIT` positions,
        else ``"pilot"``.

    Returns
    -------
    Store
        ``store``, or a :class:`~epitensor.store.compendium.RegionView` of it with one axis.
    """
    if regions is None:
        regions = "all" if store.layout.n_positions <= ALL_POSITIONS_LIMIT else "pilot"
    if isinstance(regions, str) and regions == "all":
        return store
    if isinstance(regions, str) and regions == "pilot":
        if store.genome != "hg19":
            raise EpitensorError(
                f"store {store.url} is on {store.genome} and the bundled ENCODE pilot regions "
                f"are on hg19; pass training regions on {store.genome} as a BED "
                f"(regions=..., --regions) or regions='all'"
            )
        from epitensor.genome.pilot import pilot_regions_bed

        layout = Layout.from_bed(pilot_regions_bed(), store.resolution, "pilot")
    else:
        if not isinstance(regions, pd.DataFrame) and not Path(regions).is_file():
            raise EpitensorError(
                f"invalid regions {str(regions)!r}: expected 'all', 'pilot' or a BED file"
            )
        layout = Layout.from_bed(regions, store.resolution, "regions")
    return RegionView(store, layout)


def fit_stage1(
    module: AvocadoModule,
    store: Store,
    axes: Sequence[str],
    tracks: TrackSet,
    config: TrainConfig,
    holdout: TrackSet | None = None,
    checkpoint: Checkpoint | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> RunResult:
    """Stage 1: every part of ``module`` learned jointly on ``axes``.

    Parameters
    ----------
    module : AvocadoModule
        Has genome factors for each axis in ``axes``.
    store : Store
    axes : sequence of str
        Training axes.
    tracks : TrackSet
        Training tracks.
    config : TrainConfig
    holdout : TrackSet, optional
        Held-out tracks scored after every epoch on the first axis.
    checkpoint : Checkpoint, optional
    resume : bool
    on_epoch : callable, optional
        Called with each epoch's history row (see :func:`run_training`).

    Returns
    -------
    RunResult
    """
    config.check()
    device = resolve_device(config.device)
    freeze(module, ["celltype", "assay", "network", *(f"genome:{a}" for a in axes)])
    module.to(device)
    plan = TrainingPlan(module, config, device)
    sources = {axis: AxisSource(store, axis, tracks.rows) for axis in axes}
    sampler = EpochSampler.from_config(sources, tracks, config, module.average == "residual")
    scorer = None
    if holdout is not None and len(holdout):
        scorer = HoldoutScorer(store, axes[0], holdout, config.n_validation)
    try:
        with torch_threads(config.n_threads):
            return run_training(
                module,
                plan,
                sampler,
                config,
                "stage1",
                scorer,
                checkpoint,
                resume,
                desc="stage 1",
                on_epoch=on_epoch,
            )
    finally:
        plan.close()
        module.requires_grad_(True)


def module_kwargs_of(module: AvocadoModule) -> dict:
    """Constructor arguments that rebuild ``module`` (without genome axes)."""
    network = [m for m in module.network if isinstance(m, nn.Linear)]
    dropout = [m.p for m in module.network if isinstance(m, nn.Dropout)]
    return {
        "n_celltypes": module.celltype_embedding.num_embeddings,
        "n_assays": module.assay_embedding.num_embeddings,
        "n_celltype_factors": module.celltype_embedding.embedding_dim,
        "n_assay_factors": module.assay_embedding.embedding_dim,
        "n_25bp_factors": module.genome_sizes[0],
        "n_250bp_factors": module.genome_sizes[1],
        "n_5kbp_factors": module.genome_sizes[2],
        "n_layers": len(network) - 1,
        "n_nodes": network[0].out_features,
        "dropout": dropout[0] if dropout else 0.0,
        "sparse": module.sparse,
        # only when set, so a plain model's saved config is as before
        **(
            {"average": module.average, "average_weight": module.average_weight}
            if module.average != "none"
            else {}
        ),
    }


def fit_genome_axis(
    module_kwargs: dict,
    state: dict[str, torch.Tensor],
    celltypes: Sequence[str],
    assays: Sequence[str],
    store: Store | str,
    axis: str,
    tracks: Sequence[tuple[str, str]],
    config: TrainConfig,
    init: dict[str, torch.Tensor] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Stage 2 for one axis: learn its genome factors with everything else frozen.

    A self-contained function (plain arguments in, tensors out) so that one
    call can run per chromosome in another process or on another machine.

    Parameters
    ----------
    module_kwargs : dict
        :class:`AvocadoModule` constructor arguments without ``axis_lengths``
        (see :func:`module_kwargs_of`).
    state : dict of str to torch.Tensor
        The frozen module's state; ``genome.*`` entries are ignored.
    celltypes, assays : sequence of str
        The module's cell type and assay names, in embedding-row order.
    store : Store or str
        The compendium (or its URL).
    axis : str
        The axis (chromosome) to fit.
    tracks : sequence of (str, str)
        Training tracks.
    config : TrainConfig
        ``n_epochs`` is the number of stage-2 epochs.
    init : dict of str to torch.Tensor, optional
        Starting tables (``emb_25bp.weight``, ...). Default None: uniform
        [-0.5, 0.5] drawn from ``config.seed``.
    checkpoint_dir : str or path-like, optional
        Per-epoch checkpoints of this axis. Default None.
    resume : bool
        Continue from ``checkpoint_dir``. Default False.

    Returns
    -------
    tables : dict of str to torch.Tensor
        The axis's :class:`GenomeFactors` state (``emb_25bp.weight``
        ``(n, n_25bp)``, ``emb_250bp.weight`` ``(ceil(n/10), n_250bp)``,
        ``emb_5kbp.weight`` ``(ceil(n/200), n_5kbp)``), float32 on the CPU.
    history : list of dict
        Per-epoch figures.
    """
    store = open_store(store)
    config.check()
    module = AvocadoModule(axis_lengths={}, **module_kwargs)
    module.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith("genome.")}, strict=False
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        factors = module.new_genome_factors(store.axis_length(axis))
    if init is not None:
        factors.load_state_dict(init)
    module.genome[axis] = factors
    track_set = TrackSet.build(store, tracks, celltypes, assays)
    if module.average != "none":
        fill_averages(module, store, axis, track_set, counts=False)
    device = resolve_device(config.device)
    freeze(module, [f"genome:{axis}"])
    module.to(device)
    plan = TrainingPlan(module, config, device)
    sampler = EpochSampler.from_config(
        {axis: AxisSource(store, axis, track_set.rows)}, track_set, config,
        module.average == "residual",
    )  # fmt: skip
    checkpoint = None
    if checkpoint_dir is not None:
        fingerprint = {
            "axis": axis,
            "tracks": track_set.names,
            "config": config_fingerprint(config),
        }
        checkpoint = Checkpoint(checkpoint_dir, fingerprint)
    try:
        with torch_threads(config.n_threads):
            result = run_training(
                module,
                plan,
                sampler,
                config,
                f"genome:{axis}",
                None,
                checkpoint,
                resume,
                desc=f"stage 2 {axis}",
            )
    finally:
        plan.close()
    tables = {k: v.detach().cpu().contiguous() for k, v in factors.state_dict().items()}
    return tables, result.history


def config_fingerprint(config: TrainConfig) -> dict:
    """The settings of ``config`` that change results (what a checkpoint must match)."""
    keep = {k: v for k, v in asdict(config).items() if k not in ("verbose", "device", "n_threads")}
    return json.loads(json.dumps(keep))


def fit_new_rows(
    module: AvocadoModule,
    store: Store,
    axes: Sequence[str],
    tracks: TrackSet,
    part: str,
    new_rows: Sequence[int],
    config: TrainConfig,
) -> RunResult:
    """Transfer: learn only some rows of the cell type or assay embedding.

    Everything else is frozen; gradients of the old rows are masked and the
    old rows are restored bit for bit afterwards.

    Parameters
    ----------
    module : AvocadoModule
    store : Store
    axes : sequence of str
        Axes with genome factors to train on.
    tracks : TrackSet
        Tracks of the new cell types (or assays).
    part : str
        ``"celltype"`` or ``"assay"``.
    new_rows : sequence of int
        Embedding rows to learn.
    config : TrainConfig

    Returns
    -------
    RunResult
    """
    config.check()
    device = resolve_device(config.device)
    embedding = module.celltype_embedding if part == "celltype" else module.assay_embedding
    old = embedding.weight.detach().clone()
    mask = torch.zeros(embedding.num_embeddings, 1)
    mask[list(new_rows)] = 1.0
    freeze(module, [part])
    module.to(device)
    name = f"{part}_embedding.weight"
    plan = TrainingPlan(module, config, device, row_masks={name: mask})
    sources = {axis: AxisSource(store, axis, tracks.rows) for axis in axes}
    # a new assay's averages are over its own training tracks: leave each one out
    loo = module.average == "residual" and part == "assay"
    sampler = EpochSampler.from_config(sources, tracks, config, loo)
    try:
        with torch_threads(config.n_threads):
            result = run_training(
                module, plan, sampler, config, f"transfer:{part}", desc="transfer"
            )
    finally:
        plan.close()
        module.requires_grad_(True)
    keep = mask.squeeze(1) == 0
    with torch.no_grad():
        embedding.weight[keep.to(embedding.weight.device)] = old[keep].to(embedding.weight.device)
    return result


def fill_averages(
    module: AvocadoModule, store: Store, axis: str, tracks: TrackSet, counts: bool = True
) -> None:
    """Compute each assay's average over ``tracks`` on ``axis`` into the axis's ``average``.

    Parameters
    ----------
    module : AvocadoModule
        With ``average`` set and genome factors for ``axis``.
    store : Store
    axis : str
    tracks : TrackSet
        The training tracks.
    counts : bool
        Also set ``module.average_count`` (stage 1). Default True; stage 2
        keeps stage 1's counts.
    """
    from epitensor.nn.average import axis_averages

    n_assays = module.assay_embedding.num_embeddings
    average, count = axis_averages(store, axis, tracks.rows, tracks.assays, n_assays)
    table = module.genome[axis]
    table.average = average.to(table.average.device)
    if counts:
        module.average_count = count.to(module.average_count.device)


def new_genome_module(module: AvocadoModule, tables: dict[str, torch.Tensor]) -> GenomeFactors:
    """A :class:`GenomeFactors` of ``module``'s sizes holding ``tables``."""
    n_positions = tables["emb_25bp.weight"].shape[0]
    factors = module.new_genome_factors(n_positions)
    factors.load_state_dict(tables)
    return factors


def history_frame(rows: list[dict]) -> pd.DataFrame:
    """History rows as a DataFrame with :data:`HISTORY_COLUMNS`."""
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)
