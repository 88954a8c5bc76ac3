"""The estimator users touch: fit, transfer, predict, latent factors, save and load."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from epitensor._utils import EpitensorError, __version__, read_lock
from epitensor.estimators.stage2 import fit_genome
from epitensor.genome.coordinates import Layout
from epitensor.io.names import parse_track, validate_name
from epitensor.nn import modeldir
from epitensor.nn.average import axis_averages
from epitensor.nn.hyperparams import PRESETS, Hyperparameters, TrainConfig, read_preset
from epitensor.nn.inference import Predictor
from epitensor.nn.module import AvocadoModule, GenomeFactors
from epitensor.store.compendium import RegionView, Store
from epitensor.store.identity import check_coordinates, check_data, data_record, merge_records
from epitensor.store.registry import open_store, store_reference
from epitensor.train.fitting import (
    Checkpoint,
    TrackSet,
    config_fingerprint,
    fill_averages,
    fit_new_rows,
    fit_stage1,
    history_frame,
    module_kwargs_of,
    new_genome_module,
    progress_write,
    stage1_store,
)

__all__ = [
    "Avocado",
    "PRESETS",
    "axis_table",
    "genome_table",
    "load_model",
]  # PRESETS: see epitensor.nn.hyperparams

_D = Hyperparameters()  # the defaults, declared once in hyperparams.py


class Avocado(BaseEstimator):
    """Multi-scale deep tensor factorization of the epigenome (Avocado).

    Each cell type, assay and 25-bp genomic position has a learned embedding;
    a position's factors come at three scales (25 bp, 250 bp, 5 kbp). The
    five vectors are concatenated and fed to a ReLU network predicting the
    arcsinh signal of that (cell type, assay, position).

    Parameters
    ----------
    n_celltype_factors, n_assay_factors : int
        Embedding sizes. Defaults 32 and 256 (the paper's).
    n_25bp_factors, n_250bp_factors, n_5kbp_factors : int
        Genome factors per scale. Defaults 25, 40, 45 (the paper's).
    n_layers, n_nodes : int
        Hidden layers and their width. Defaults 2 and 2048 (the paper's).
    dropout : float
        Dropout after each hidden layer. Default 0.
    average : {"none", "blend", "residual"}
        How the model uses each assay's average activity over the training
        cell types (:mod:`epitensor.nn.average`): not at all (``"none"``, the
        paper's, default), ``w * network + (1 - w) * average`` (``"blend"``) or
        ``average + network``, the network learning the deviation from a
        leave-one-out average (``"residual"``).
    average_weight : float
        ``w`` of ``"blend"``. Default 0.5.
    n_epochs : int
        Stage-1 epochs (one epoch sees every training position once). Default 800.
    n_genome_epochs : int
        Stage-2 epochs per axis, also used for transfer. Default 200.
    batch_size : int
        Default 40,000 (the original's).
    lr : float
        Adam learning rate. Default 0.001.
    lr_schedule : str
        ``"constant"`` (the paper's) or ``"cosine"``: every learning rate
        annealed to 0 over the epochs of each stage. Default ``"constant"``.
    swa_start : int, optional
        Stochastic weight averaging: each stage ends with the mean of the
        parameters after each of its epochs from this one on. Default None.
    genome_lr : float, optional
        Learning rate of the genome factors. Default None: ``lr``.
    genome_weight_decay : float
        L2 penalty on the genome factors a batch touches. Default 0.
    tracks_per_position : int
        Training tracks paired with each position per epoch, drawn without
        replacement and kept in one batch. Default 1: the paper's epoch.
    early_stopping : int, optional
        Stop stage 1 when the holdout MSE has not improved for this many
        epochs, keeping the parameters of the best epoch. Default None: never.
    precision : str
        ``"fp32"``, ``"bf16"`` autocast, or ``"auto"``: bf16 on CUDA GPUs and
        CPUs with native bf16, else fp32. Default ``"fp32"``; both presets use
        ``"auto"``.
    device : str, optional
        torch device. Default None: CUDA, else MPS, else CPU.
    n_threads : int, optional
        CPU threads for torch (training and imputation). Default None: the CPUs
        the process may use (affinity, cgroup quota), at most torch's setting.
    seed : int
        Seed of initialisation and sampling. Default 0.
    verbose : bool
        Progress bars on stderr. Default True.

    Attributes
    ----------
    celltypes_, assays_ : list of str
        Names in embedding-row order.
    layout_ : Layout
        The store layout the model was trained on.
    genome_ : str
        Genome build.
    chrom_sizes_ : pandas.Series
        Chromosome lengths in bp.
    module_ : AvocadoModule
        The torch module (genome axes loaded lazily after :meth:`load`).
    genome_axes_ : dict of str to int
        Axes with genome factors and their lengths.
    training_tracks_ : list of (str, str)
        Tracks used for training.
    holdout_tracks_ : list of (str, str)
        Tracks held out and scored during stage 1.
    training_store_ : str, list of str or None
        The compendium holding every training track (``"roadmap-pilot"`` for
        the bundled sample), where the ensemble of :mod:`epitensor.estimators.ensemble`
        fits its trees: the store stage 1 read (the whole store when it
        trained on regions of it), then the store of :meth:`fit_genome`,
        :meth:`fit_celltypes` or :meth:`fit_assays` when that one holds every
        training track. After a transfer from a store holding only the new
        tracks, the list of the stores before and that one (opened as one
        :class:`~epitensor.store.compendium.TrackUnion`). None for a model saved before
        it was recorded. A location only: what the model was made from is
        ``training_data_``.
    training_data_ : dict or None
        The identity by content of the data the model was made from (see
        :func:`epitensor.store.identity.data_record`): each axis's coordinates
        and each training and held-out track's digests. Consumers given a
        store check it (:func:`epitensor.store.identity.check_data`). None for
        a model saved before it was recorded (nothing is then checked).
    holdout_mse_ : float
        Holdout MSE of the parameters the model ended stage 1 with (the
        averaged or best ones when ``swa_start`` or ``early_stopping`` is set;
        NaN without holdout tracks).
    history_ : pandas.DataFrame
        Columns ``epoch, stage, train_mse, holdout_mse, seconds``.

    Examples
    --------
    >>> import epitensor as et
    >>> model = et.Avocado.from_preset("cpu-small", n_epochs=2)
    >>> model.fit("roadmap-pilot", holdout=[("E003", "H3K4me3")])  # doctest: +SKIP
    >>> model.predict("E003", "H3K4me3", start=0, end=1000).shape  # doctest: +SKIP
    (1000,)

    Notes
    -----
    Departures from the Avocado paper and its code:

    1. Genome factors get sparse (lazy) Adam updates: a row's moments change only
       when a batch touches it; the original applied dense Adam to every row.
    2. Epochs are block-shuffled (blocks of positions, then positions within a
       group of blocks) so the store is read sequentially.
    3. The paper's text gives Adam's learning rate as 0.01 while calling it the
       Keras default; the Keras default, used by the original code, is 0.001,
       which ``paper`` uses.

    References
    ----------
    Schreiber J, Durham T, Bilmes J, Noble WS. Avocado: a multi-scale deep
    tensor factorization method learns a latent representation of the human
    epigenome. Genome Biology 21, 81 (2020).
    """

    def __init__(
        self,
        n_celltype_factors: int = _D.n_celltype_factors,
        n_assay_factors: int = _D.n_assay_factors,
        n_25bp_factors: int = _D.n_25bp_factors,
        n_250bp_factors: int = _D.n_250bp_factors,
        n_5kbp_factors: int = _D.n_5kbp_factors,
        n_layers: int = _D.n_layers,
        n_nodes: int = _D.n_nodes,
        dropout: float = _D.dropout,
        average: str = _D.average,
        average_weight: float = _D.average_weight,
        n_epochs: int = _D.n_epochs,
        n_genome_epochs: int = _D.n_genome_epochs,
        batch_size: int = _D.batch_size,
        lr: float = _D.lr,
        lr_schedule: str = _D.lr_schedule,
        swa_start: int | None = _D.swa_start,
        genome_lr: float | None = _D.genome_lr,
        genome_weight_decay: float = _D.genome_weight_decay,
        tracks_per_position: int = _D.tracks_per_position,
        early_stopping: int | None = _D.early_stopping,
        precision: str = _D.precision,
        device: str | None = _D.device,
        n_threads: int | None = _D.n_threads,
        seed: int = _D.seed,
        verbose: bool = _D.verbose,
    ) -> None:
        # one attribute per parameter, as given (sklearn's contract); the names and
        # defaults are those of hyperparams.Hyperparameters (a test keeps them equal)
        given = locals()
        for name in _D.keys():
            setattr(self, name, given[name])

    # construction -----------------------------------------------------------------------------

    @classmethod
    def from_module(
        cls,
        module: AvocadoModule,
        *,
        celltypes: Sequence[str],
        assays: Sequence[str],
        layout: Layout,
        chrom_sizes: pd.Series,
        genome: str,
        training_tracks: Sequence = (),
        genome_axes: dict[str, int] | None = None,
        **params,
    ) -> Avocado:
        """A fitted model around a trained torch module (an imported model, a benchmark's).

        Parameters
        ----------
        module : AvocadoModule
            The trained module; its genome tables are the layout's axes.
        celltypes, assays : sequence of str
            Names of the module's cell type and assay rows, in order.
        layout : Layout
            Where each genome axis lies on the genome.
        chrom_sizes : pandas.Series
            Chromosome lengths of ``genome``.
        genome : str
            The genome build's name (``"hg19"``).
        training_tracks : sequence of (str, str) or "CELL:ASSAY"
            The tracks the module was trained on. Default: none known.
        genome_axes : dict of str to int, optional
            Length of each fitted genome axis. Default None: the module's genome
            tables (give it when the tables are on disk, not in the module).
        **params
            Estimator hyperparameters (``device``, ``batch_size``, ...); the
            architecture is the module's.

        Returns
        -------
        Avocado
            Fitted: :meth:`predict`, :meth:`save` and the imputation take it.

        Examples
        --------
        >>> import pandas as pd
        >>> import epitensor as et
        >>> from epitensor.nn.module import AvocadoModule
        >>> sizes = pd.Series({"chrA": 50_000})
        >>> layout = et.Layout.from_chrom_sizes(sizes)
        >>> module = AvocadoModule(2, 3, layout.axis_lengths, n_nodes=16)
        >>> model = et.Avocado.from_module(
        ...     module, celltypes=["A", "B"], assays=["X", "Y", "Z"], layout=layout,
        ...     chrom_sizes=sizes, genome="custom", n_nodes=16, verbose=False)
        >>> model.predict("A", "X", start=0, end=5).shape
        (5,)
        """
        model = cls(**params)
        model.module_ = module.eval()
        model.celltypes_ = list(celltypes)
        model.assays_ = list(assays)
        model.layout_ = layout
        model.genome_ = genome
        model.chrom_sizes_ = chrom_sizes
        model.genome_axes_ = (
            {axis: int(table.n_positions) for axis, table in module.genome.items()}
            if genome_axes is None
            else {axis: int(n) for axis, n in genome_axes.items()}
        )
        model.training_tracks_ = [parse_track(t) for t in training_tracks]
        model.holdout_tracks_ = []
        model.history_ = history_frame([])
        return model

    @classmethod
    def from_preset(cls, name: str | os.PathLike, **overrides) -> Avocado:
        """An estimator with a preset's hyperparameters.

        Parameters
        ----------
        name : str or path-like
            ``"paper"``, ``"cpu-small"``, or a JSON file of parameters (as
            ``epitensor tune`` writes; parameters it leaves out keep the
            paper's values).
        **overrides
            Hyperparameters replacing the preset's.
        """
        model = cls(**read_preset(name))
        return model.set_params(**overrides) if overrides else model

    def hyperparameters(self) -> Hyperparameters:
        """The current parameters as a :class:`~epitensor.nn.hyperparams.Hyperparameters`."""
        return Hyperparameters(**self.get_params())

    def _check_params(self) -> None:
        self.hyperparameters().check()

    def train_config(self, n_epochs: int, seed_offset: int = 0) -> TrainConfig:
        """The training configuration of one stage (its epochs and seed offset).

        Parameters
        ----------
        n_epochs : int
            Epochs of the stage.
        seed_offset : int
            Added to ``seed`` (stage 2 uses ``1 + axis index``). Default 0.

        Returns
        -------
        TrainConfig
            Checked.
        """
        config = self.hyperparameters().train_config(n_epochs, seed_offset)
        config.check()
        return config

    def module_config(self, n_celltypes: int, n_assays: int) -> dict:
        """:class:`AvocadoModule` arguments (without ``axis_lengths``) for these many rows."""
        return self.hyperparameters().module_config().module_kwargs(n_celltypes, n_assays)

    # stage 1 ----------------------------------------------------------------------------------

    def fit(
        self,
        store: Store | str | os.PathLike,
        holdout: Sequence = (),
        axes: Sequence[str] | None = None,
        celltypes: Sequence[str] | None = None,
        assays: Sequence[str] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
        regions: str | os.PathLike | pd.DataFrame | None = None,
    ) -> Avocado:
        """Stage 1: learn every factor and the network jointly.

        Parameters
        ----------
        store : Store, str or path-like
            The compendium (``"roadmap-pilot"`` is the bundled sample).
        holdout : sequence of (str, str) or "CELL:ASSAY"
            Observed tracks left out of training and scored after each epoch.
            Default: none.
        axes : sequence of str, optional
            Training axes. Default None: every axis of the store.
        celltypes, assays : sequence of str, optional
            Restrict training to these. Default None: all in the store.
        checkpoint_dir : str or path-like, optional
            Folder for per-epoch checkpoints and the epoch log. Default None.
        resume : bool
            Continue from the checkpoint in ``checkpoint_dir``. Default False.
        regions : str, path-like or pandas.DataFrame, optional
            Where stage 1 trains: ``"all"`` (every position of the store),
            ``"pilot"`` (the ENCODE pilot regions, hg19) or a BED of regions,
            read from the store's axes into one axis. Default None: every
            position of a store of at most 20 million positions, else the
            pilot regions (the paper's choice).

        Returns
        -------
        Avocado
            ``self``, fitted.
        """
        self._check_params()
        config = self.train_config(self.n_epochs)
        store = stage1_store(open_store(store), regions)
        if isinstance(store, RegionView) and self.verbose:
            progress_write(
                f"stage 1 on {store.layout.n_positions:,} positions of "
                f"{len(store.layout.regions)} regions ({store.layout.name}) of {store.url}"
            )
        axes = list(store.axes if axes is None else axes)
        for axis in axes:
            store.axis_length(axis)
        if not axes:
            raise EpitensorError("no training axes given")
        holdout = [parse_track(t) for t in holdout]
        for celltype, assay in holdout:
            store.track_index(celltype, assay)
        names = [
            t
            for t in store.track_names()
            if t not in set(holdout)
            and (celltypes is None or t[0] in celltypes)
            and (assays is None or t[1] in assays)
        ]
        if not names:
            raise EpitensorError(f"no training tracks left in {store.url} after the holdout")
        self.celltypes_ = list(dict.fromkeys(c for c, _ in names))
        self.assays_ = list(dict.fromkeys(a for _, a in names))
        for celltype, assay in holdout:
            if celltype not in self.celltypes_ or assay not in self.assays_:
                raise EpitensorError(
                    f"held-out track ({celltype}, {assay}) has no training track of its "
                    f"{'cell type' if celltype not in self.celltypes_ else 'assay'}; drop it from "
                    f"holdout, or add it later with fit_celltypes / fit_assays"
                )
        self.layout_ = store.layout
        self.genome_ = store.genome
        self.chrom_sizes_ = store.chrom_sizes.copy()
        self.training_tracks_ = names
        self.holdout_tracks_ = holdout
        self.training_store_ = store_reference(store)  # a RegionView's: the store it reads
        self.training_data_ = data_record(store, names + holdout)
        self.genome_axes_ = {axis: store.axis_length(axis) for axis in axes}
        self._genome_path = None
        self._checksums = None
        kwargs = self.module_config(len(self.celltypes_), len(self.assays_))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            self.module_ = AvocadoModule(axis_lengths=self.genome_axes_, **kwargs)
        tracks = TrackSet.build(store, names, self.celltypes_, self.assays_)
        if self.average != "none":
            for axis in axes:
                fill_averages(self.module_, store, axis, tracks)
        held = TrackSet.build(store, holdout, self.celltypes_, self.assays_) if holdout else None
        checkpoint = None
        if checkpoint_dir is not None:
            fingerprint = {
                "stage": "stage1",
                "params": self.get_params(),
                "tracks": names,
                "holdout": holdout,
                "axes": axes,
                "axis_lengths": self.genome_axes_,
                "config": config_fingerprint(config),
                # the data by content: a checkpoint made on another store is not resumed
                "data": {k: self.training_data_[k] for k in ("coordinates", "tracks")},
            }
            fingerprint["params"].pop("verbose")
            fingerprint["params"].pop("device")
            fingerprint["params"].pop("n_threads")
            checkpoint = Checkpoint(checkpoint_dir, fingerprint)
        result = fit_stage1(self.module_, store, axes, tracks, config, held, checkpoint, resume)
        self.module_.cpu()
        self.history_ = history_frame(result.history)
        final = result.final_holdout_mse
        if final is None:
            final = float(self.history_.holdout_mse.iloc[-1]) if len(self.history_) else np.nan
        self.holdout_mse_ = final
        return self

    # stage 2 ----------------------------------------------------------------------------------

    def fit_genome(
        self,
        store: Store | str | os.PathLike,
        axes: Sequence[str] | None = None,
        warm_start: bool = False,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
        out: str | os.PathLike | None = None,
        ray_address: str | None = None,
        allow_changed: bool = False,
    ) -> Avocado:
        """Stage 2: learn the genome factors of each axis, everything else frozen.

        One task per axis through :func:`epitensor.estimators.stage2.fit_genome`: in
        this process by default, or as Ray tasks with the same result.

        Parameters
        ----------
        store : Store, str or path-like
            The compendium holding the axes (chromosomes) to fit.
        axes : sequence of str, optional
            Axes to fit, one after another. Default None: every axis of the store.
        warm_start : bool
            Start from the axis's current factors when it has some. Default
            False: fresh uniform factors, as in the paper.
        checkpoint_dir : str or path-like, optional
            Per-epoch checkpoints of each axis go to ``checkpoint_dir/<axis>/``.
            Default None.
        resume : bool
            Continue each axis from its checkpoint. Default False.
        out : str or path-like, optional
            A directory this model was saved to (:meth:`save`): each axis's
            factors are written there as soon as they are fitted and then freed
            (read back lazily), so memory holds one axis at a time. Default
            None: all fitted axes stay in memory until :meth:`save`.
        ray_address : str, optional
            Default None: in this process. ``"local"``, ``"auto"`` or a Ray
            address: one Ray task per axis.
        allow_changed : bool
            Use a store whose copies of the training tracks hold other values
            than the data stage 1 was made from, with a warning kept in
            ``training_data_``. Default False: refuse it.

        Returns
        -------
        Avocado
            ``self``.
        """
        return fit_genome(self, store, axes, warm_start=warm_start, out=out,
                          checkpoint_dir=checkpoint_dir, resume=resume,
                          ray_address=ray_address, allow_changed=allow_changed)  # fmt: skip

    def frozen_parts(self) -> dict:
        """What stage 2 needs of the fitted model, as plain objects (shipped to Ray tasks).

        Returns
        -------
        dict
            ``module_kwargs`` (see :func:`~epitensor.train.fitting.module_kwargs_of`),
            ``state`` (the module's tensors without genome factors),
            ``celltypes`` and ``assays`` (names in row order).
        """
        self.check_fitted()
        state = {k: v for k, v in self.module_.state_dict().items() if not k.startswith("genome.")}
        return {
            "module_kwargs": module_kwargs_of(self.module_),
            "state": state,
            "celltypes": list(self.celltypes_),
            "assays": list(self.assays_),
        }

    def attach_genome_axis(self, axis: str, tables: dict, layout: Layout) -> None:
        """Install the stage-2 genome factors of one axis (used by every stage-2 runner).

        Parameters
        ----------
        axis : str
            Axis name in ``layout``.
        tables : dict of str to torch.Tensor
            The axis's ``GenomeFactors`` state (as from ``fit_genome_axis``).
        layout : Layout
            The layout of the store the axis was fitted on; the axis's regions take
            over their genomic bins in ``layout_``, so predict / impute / embed by
            genomic coordinates use the stage-2 factors, not the stage-1 regions.
        """
        self.module_.genome[axis] = new_genome_module(self.module_, tables)
        self.genome_axes_[axis] = int(layout.axis_lengths[axis])
        self.layout_ = self.layout_.with_axes(layout, [axis])

    # transfer ---------------------------------------------------------------------------------

    def fit_celltypes(
        self,
        store: Store | str | os.PathLike,
        celltypes: Sequence[str],
        allow_changed: bool = False,
    ) -> Avocado:
        """Add new cell types to the fitted model: only their embeddings learn.

        Parameters
        ----------
        store : Store, str or path-like
            Holds observed tracks of the new cell types (for assays the model knows)
            on axes the model has genome factors for.
        celltypes : sequence of str
            New cell type names.
        allow_changed : bool
            Use a store whose tracks of the model's data hold other values than
            when the model was made, with a warning kept in ``training_data_``.
            Default False: refuse it (:func:`~epitensor.store.identity.check_data`).

        Returns
        -------
        Avocado
            ``self``.
        """
        return self._transfer(store, list(celltypes), "celltype", allow_changed)

    def fit_assays(
        self, store: Store | str | os.PathLike, assays: Sequence[str], allow_changed: bool = False
    ) -> Avocado:
        """Add new assays to the fitted model: only their embeddings learn.

        Parameters
        ----------
        store : Store, str or path-like
            Holds observed tracks of the new assays (in cell types the model knows).
        assays : sequence of str
            New assay names.
        allow_changed : bool
            As for :meth:`fit_celltypes`. Default False.

        Returns
        -------
        Avocado
            ``self``.
        """
        return self._transfer(store, list(assays), "assay", allow_changed)

    def _transfer(self, store, names: list[str], part: str, allow_changed: bool = False) -> Avocado:
        self.check_fitted()
        store = open_store(store)
        if not names:
            raise EpitensorError(f"no new {part}s given")
        known = self.celltypes_ if part == "celltype" else self.assays_
        clash = [n for n in names if n in known]
        if clash:
            raise EpitensorError(f"{part}s {clash} are already in the model")
        col = 0 if part == "celltype" else 1
        other = self.assays_ if part == "celltype" else self.celltypes_
        tracks = [t for t in store.track_names() if t[col] in names and t[1 - col] in other]
        missing = [n for n in names if n not in {t[col] for t in tracks}]
        if missing:
            raise EpitensorError(
                f"store {store.url} has no tracks of {part}s {missing} with a "
                f"{'assay' if part == 'celltype' else 'cell type'} the model knows"
            )
        axes = [a for a in self.genome_axes_ if a in store.layout.axis_lengths]
        if not axes:
            raise EpitensorError(
                f"store {store.url} shares no axis with the model's genome factors"
            )
        check_coordinates(self.layout_, store, "the model", axes)
        known = [t for t in store.track_names() if t[0] in self.celltypes_ and t[1] in self.assays_]
        record = getattr(self, "training_data_", None)  # None: an earlier version's model
        note = check_data(record, store, "the model", known, allow_changed)
        # new assays need every axis in memory: each axis's averages get their rows
        loaded = axes if self.module_.average == "none" or part == "celltype" else self.genome_axes_
        for axis in loaded:
            self.genome_module(axis)
        embedding = (
            self.module_.celltype_embedding if part == "celltype" else self.module_.assay_embedding
        )
        n_old = embedding.num_embeddings
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed) + 7919)
            extra = torch.empty(len(names), embedding.embedding_dim).uniform_(-0.5, 0.5)
        bigger = torch.nn.Embedding(n_old + len(names), embedding.embedding_dim)
        with torch.no_grad():
            bigger.weight.copy_(torch.cat([embedding.weight.detach().cpu(), extra]))
        if part == "celltype":
            self.module_.celltype_embedding = bigger
            self.celltypes_ = self.celltypes_ + names
        else:
            self.module_.assay_embedding = bigger
            self.assays_ = self.assays_ + names
        track_set = TrackSet.build(store, tracks, self.celltypes_, self.assays_)
        if part == "assay" and self.module_.average != "none":
            self._add_assay_averages(store, axes, track_set, n_old)
        config = self.train_config(self.n_genome_epochs, seed_offset=104729)
        result = fit_new_rows(
            self.module_, store, axes, track_set, part, range(n_old, n_old + len(names)), config
        )
        self.module_.cpu()
        self.training_tracks_ = self.training_tracks_ + tracks
        self.training_store_ = _stores_holding(self.training_store_, store, self.training_tracks_)
        self.training_data_ = merge_records(record, data_record(store, tracks), note)
        self.history_ = history_frame(self.history_.to_dict("records") + result.history)
        return self

    def _add_assay_averages(self, store, axes, tracks: TrackSet, n_old: int) -> None:
        """Rows of the new assays in every axis's averages: over their tracks in ``store``.

        Every axis gets the rows (zeros on an axis ``store`` lacks), so that all
        the axis files keep one row per assay; the new cell type counts follow.
        """
        module = self.module_
        new = slice(n_old, None)
        counts = torch.bincount(torch.from_numpy(tracks.assays), minlength=len(self.assays_))
        module.average_count = torch.cat([module.average_count, counts[new].float()])
        for axis in self.genome_axes_:
            table = module.genome[axis]
            rows = torch.zeros(len(self.assays_) - n_old, table.n_positions, dtype=torch.float16)
            if axis in axes:
                average, _ = axis_averages(store, axis, tracks.rows, tracks.assays,
                                           len(self.assays_))  # fmt: skip
                rows = average[new]
            table.average = torch.cat([table.average, rows])

    # inference --------------------------------------------------------------------------------

    def check_fitted(self) -> None:
        """Raise an :class:`EpitensorError` unless the model is fitted (or loaded)."""
        try:
            check_is_fitted(self, "module_")
        except NotFittedError:
            raise EpitensorError(
                "this Avocado model is not fitted yet; call fit(store) or Avocado.load(path)"
            ) from None

    def _axis(self, axis: str | None) -> str:
        if axis is None:
            if len(self.genome_axes_) != 1:
                raise EpitensorError(
                    f"the model has {len(self.genome_axes_)} genome axes; name one of "
                    f"{list(self.genome_axes_)}"
                )
            return next(iter(self.genome_axes_))
        if axis not in self.genome_axes_:
            raise EpitensorError(
                f"the model has no genome factors for axis {axis!r}; it has "
                f"{list(self.genome_axes_)} (fit them with fit_genome)"
            )
        return axis

    def _range(self, axis: str, start: int, end: int | None) -> tuple[int, int]:
        length = self.genome_axes_[axis]
        end = length if end is None else int(end)
        start = int(start)
        if not 0 <= start < end <= length:
            raise EpitensorError(
                f"invalid range [{start}, {end}) on axis {axis!r} of {length} positions"
            )
        return start, end

    def _track_rows(self, tracks: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        ct, assay = [], []
        for track in tracks:
            celltype, name = parse_track(track)
            if celltype not in self.celltypes_:
                raise EpitensorError(
                    f"unknown cell type {celltype!r}; the model knows {self.celltypes_} "
                    f"(add one with fit_celltypes)"
                )
            if name not in self.assays_:
                raise EpitensorError(
                    f"unknown assay {name!r}; the model knows {self.assays_} (add one with fit_assays)"
                )
            ct.append(self.celltypes_.index(celltype))
            assay.append(self.assays_.index(name))
        return torch.tensor(ct, dtype=torch.int64), torch.tensor(assay, dtype=torch.int64)

    def genome_module(self, axis: str | None = None) -> GenomeFactors:
        """The genome factors of an axis, loaded from the model directory on first use.

        Parameters
        ----------
        axis : str, optional
            Axis name. Default None: the only axis.

        Returns
        -------
        GenomeFactors
        """
        self.check_fitted()
        axis = self._axis(axis)
        if axis not in self.module_.genome:
            path = getattr(self, "_genome_path", None)
            if path is None:
                raise EpitensorError(
                    f"genome factors of axis {axis!r} are not in memory and the model has no "
                    f"saved directory; fit them with fit_genome"
                )
            with torch.device("meta"):
                specs = modeldir.tensor_specs(
                    self.module_.new_genome_factors(self.genome_axes_[axis])
                )
            # the checksum pinned when the model was read, not the config on disk now:
            # a directory replaced meanwhile (train --overwrite) is an error, not a hybrid (W1)
            with read_lock(path):  # a writer replacing the directory waits, or this fails
                tables = modeldir.read_tensors(modeldir.axis_file(path, axis), specs,
                                               self.weights_checksum(axis))  # fmt: skip
            self.module_.genome[axis] = new_genome_module(self.module_, tables)
        return self.module_.genome[axis]

    def predict(
        self,
        celltype: str,
        assay: str,
        axis: str | None = None,
        start: int = 0,
        end: int | None = None,
    ) -> np.ndarray:
        """Imputed signal of one track.

        Parameters
        ----------
        celltype, assay : str
            The track (both must be in the model).
        axis : str, optional
            Genome axis. Default None: the model's only axis.
        start, end : int
            Axis positions (25-bp bins), half-open. Default: the whole axis.

        Returns
        -------
        numpy.ndarray, shape=(end - start,), float32, arcsinh
        """
        return self.predict_tracks([(celltype, assay)], axis, start, end)[0]

    def predict_tracks(
        self,
        tracks: Sequence,
        axis: str | None = None,
        start: int = 0,
        end: int | None = None,
        chunk: int = 1 << 15,
    ) -> np.ndarray:
        """Imputed signal of many tracks, reusing each position's genome projection.

        Parameters
        ----------
        tracks : sequence of (str, str) or "CELL:ASSAY"
            Tracks to impute.
        axis : str, optional
            Genome axis. Default None: the model's only axis.
        start, end : int
            Axis positions (25-bp bins), half-open. Default: the whole axis.
        chunk : int
            Positions per forward pass. Default 32,768.

        Returns
        -------
        numpy.ndarray, shape=(n_tracks, end - start), float32, arcsinh
        """
        self.check_fitted()
        if len(tracks) == 0:
            raise EpitensorError("no tracks given to predict")
        ct, assay = self._track_rows(tracks)
        axis = self._axis(axis)
        start, end = self._range(axis, start, end)
        table = self.genome_module(axis)
        predictor = Predictor(self.module_, ct, assay, device=self.device,
                              genome=lambda _: contextlib.nullcontext(table))  # fmt: skip
        out = np.empty((len(tracks), end - start), dtype=np.float32)
        with predictor.session():
            for lo in range(start, end, chunk):
                hi = min(lo + chunk, end)
                out[:, lo - start : hi - start] = predictor.predict(axis, lo, hi)
        return out

    def genome_factors(
        self, axis: str | None = None, start: int = 0, end: int | None = None
    ) -> np.ndarray:
        """The latent representation: multi-scale genome factors per position.

        Parameters
        ----------
        axis : str, optional
            Genome axis. Default None: the model's only axis.
        start, end : int
            Axis positions (25-bp bins), half-open. Default: the whole axis.

        Returns
        -------
        numpy.ndarray, shape=(end - start, n_25bp + n_250bp + n_5kbp), float32
            25-bp, 250-bp and 5-kbp factors concatenated (position ``i`` uses rows
            ``i``, ``i // 10`` and ``i // 200``).
        """
        self.check_fitted()
        axis = self._axis(axis)
        start, end = self._range(axis, start, end)
        factors = self.genome_module(axis)
        with torch.inference_mode():
            return factors(torch.arange(start, end)).numpy().astype(np.float32)

    @property
    def celltype_embedding_(self) -> np.ndarray:
        """Cell type factors, ``(n_celltypes, n_celltype_factors)``, rows in ``celltypes_`` order."""
        self.check_fitted()
        return self.module_.celltype_embedding.weight.detach().cpu().numpy().copy()

    @property
    def assay_embedding_(self) -> np.ndarray:
        """Assay factors, ``(n_assays, n_assay_factors)``, rows in ``assays_`` order."""
        self.check_fitted()
        return self.module_.assay_embedding.weight.detach().cpu().numpy().copy()

    # save / load ------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the model as a directory (never pickled).

        ``config.json`` holds the hyperparameters, names, layout and history;
        ``weights.safetensors`` the cell type and assay factors and the network;
        ``genome/<axis>.safetensors`` each axis's genome factors.

        Parameters
        ----------
        path : str or path-like
            The model directory.
        overwrite : bool
            Replace an existing directory. Default False: refuse.
        """
        self.check_fitted()
        path = Path(path)
        source = getattr(self, "_genome_path", None)
        same = source is not None and Path(source).resolve() == path.resolve()
        for axis in self.genome_axes_:
            if axis not in self.module_.genome and (same or source is None):
                self.genome_module(axis)  # load before the old directory is replaced
        weights = {
            k: v for k, v in self.module_.state_dict().items() if not k.startswith("genome.")
        }
        in_memory = {axis: factors.state_dict() for axis, factors in self.module_.genome.items()}
        copied = {  # never loaded: copy the file as it is
            axis: modeldir.axis_file(source, axis)
            for axis in self.genome_axes_
            if axis not in self.module_.genome
        }
        pinned = {axis: self.weights_checksum(axis) for axis in copied}
        self._checksums = modeldir.write_model(
            path, self._config_dict(), weights, in_memory, copied,
            self.history_.to_csv(index=False), overwrite=overwrite, copied_checksums=pinned,
        )  # fmt: skip
        self._genome_path = str(path)

    def weights_checksum(self, axis: str | None = None) -> str | None:
        """The sha256 of a weight file of the saved model, as pinned when it was read or saved.

        Parameters
        ----------
        axis : str, optional
            An axis (its genome factors file). Default None: ``weights.safetensors``.

        Returns
        -------
        str or None
            None for a model not saved, or saved before checksums existed.
        """
        pinned = getattr(self, "_checksums", None)
        if pinned is None:
            path = getattr(self, "_genome_path", None)
            return None if path is None else modeldir.recorded_checksum(path, axis)
        return modeldir.checksum_of({"checksums": pinned}, axis)

    def saved_at(self, path: str | os.PathLike) -> None:
        """Read genome axes not in memory from the saved copy at ``path`` from now on.

        For a model directory that was moved after :meth:`save` (built under a
        temporary name, then renamed into place).

        Parameters
        ----------
        path : str or path-like
            A model directory holding this model, or a folder of its axis files
            that :meth:`save` will copy.
        """
        self._genome_path = str(path)
        # a staging folder of axis files (the reference importer's) has no config.json
        # yet: nothing to pin until save() writes one
        saved = (Path(path) / modeldir.CONFIG_FILE).is_file()
        config = modeldir.read_config(path, type(self).__name__) if saved else {}
        self._checksums = config.get("checksums")

    def release_genome_axis(self, path: str | os.PathLike, axis: str) -> None:
        """Write one axis's genome factors into the saved model at ``path``, then free them.

        The axis file and ``config.json`` are replaced atomically (the file
        first, so a crash leaves a model that does not list the new axis yet);
        the factors are read back lazily when needed. Stage 2 calls this after
        each chromosome so the genome never has to be in memory at once.

        Parameters
        ----------
        path : str or path-like
            A model directory written by :meth:`save` for this model.
        axis : str
            An axis whose factors are in memory.
        """
        self._checksums = modeldir.write_axis(
            path, axis, self.module_.genome[axis].state_dict(), self._config_dict(),
            self.history_.to_csv(index=False),
        )  # fmt: skip
        self._genome_path = str(path)
        del self.module_.genome[axis]

    def _config_dict(self) -> dict:
        history = self.history_.astype(object).where(self.history_.notna(), None)
        return {
            "class": type(self).__name__,
            "epitensor_version": __version__,
            "params": self.get_params(),
            "module": module_kwargs_of(self.module_),
            "celltypes_": self.celltypes_,
            "assays_": self.assays_,
            "layout_": self.layout_.to_dict(),
            "genome_": self.genome_,
            "chrom_sizes_": {str(k): int(v) for k, v in self.chrom_sizes_.items()},
            "genome_axes_": self.genome_axes_,
            "training_tracks_": [list(t) for t in self.training_tracks_],
            "holdout_tracks_": [list(t) for t in self.holdout_tracks_],
            "training_store_": getattr(self, "training_store_", None),
            "training_data_": getattr(self, "training_data_", None),
            "history_": history.to_dict("records"),
            "holdout_mse_": _json_float(getattr(self, "holdout_mse_", None)),
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> Avocado:
        """Read a model directory written by :meth:`save`.

        Genome factors are read lazily, one axis at a time, by
        :meth:`genome_module` (and so by ``predict``).

        Parameters
        ----------
        path : str or path-like
            The model directory.

        Returns
        -------
        Avocado
        """
        path = Path(path)
        # under the shared lock: `train --overwrite` waits for the reading, or (when it
        # is writing) this fails in one line, never reading a mix of two models (W1)
        with read_lock(path):
            return cls._load(path)

    @classmethod
    def _load(cls, path: Path) -> Avocado:
        """:meth:`load`, its lock held."""
        config = modeldir.read_config(path, cls.__name__)
        try:
            model = cls(**config["params"])
            model.celltypes_ = [str(c) for c in config["celltypes_"]]
            model.assays_ = [str(a) for a in config["assays_"]]
            model.layout_ = Layout.from_dict(config["layout_"])
            model.genome_ = config["genome_"]
            model.chrom_sizes_ = pd.Series(config["chrom_sizes_"], name="length", dtype="int64")
            model.genome_axes_ = {str(k): int(v) for k, v in config["genome_axes_"].items()}
            model.training_tracks_ = [parse_track(t) for t in config["training_tracks_"]]
            model.holdout_tracks_ = [parse_track(t) for t in config.get("holdout_tracks_", [])]
            model.training_store_ = config.get("training_store_")
            model.training_data_ = config.get("training_data_")
            model.history_ = history_frame(config["history_"])
            module = AvocadoModule(axis_lengths={}, **config["module"])
        except (TypeError, ValueError, KeyError, EpitensorError) as exc:
            raise EpitensorError(
                f"{path / modeldir.CONFIG_FILE} does not describe a model this release can "
                f"build ({type(exc).__name__}: {exc}); restore the model directory from a copy"
            ) from None
        # names reach file names, bedGraph track lines and CELL:ASSAY options: a model
        # imported before import-reference validated them is refused here (trial E2)
        for kind, names in (("cell type", model.celltypes_), ("assay", model.assays_)):
            for name in names:
                validate_name(name, kind, f"{path / modeldir.CONFIG_FILE}")
        holdout_mse = config.get("holdout_mse_")
        model.holdout_mse_ = float("nan") if holdout_mse is None else float(holdout_mse)
        weights = modeldir.read_tensors(
            path / modeldir.WEIGHTS_FILE, modeldir.tensor_specs(module),
            modeldir.checksum_of(config),
        )  # fmt: skip
        module.load_state_dict(weights)  # strict: read_tensors checked every name and shape
        module.eval()
        model.module_ = module
        model._genome_path = str(path)
        model._checksums = config.get("checksums")  # one snapshot: later reads check these
        return model


def _stores_holding(recorded, store: Store, tracks) -> str | list[str] | None:
    """The reference of the stores holding ``tracks`` after a transfer from ``store``.

    ``store`` alone when it holds them all, else the stores recorded before
    followed by ``store`` (read as one :class:`~epitensor.store.compendium.TrackUnion`).
    """
    if all(store.has_track(*t) for t in tracks):
        return store_reference(store)
    if recorded is None:
        return None

    def listed(reference) -> list[str]:
        return list(reference) if isinstance(reference, list | tuple) else [reference]

    return list(dict.fromkeys(listed(recorded) + listed(store_reference(store))))


def _json_float(value: float | None) -> float | None:
    """``value`` as a JSON-safe float (None for missing or NaN)."""
    if value is None or not np.isfinite(value):
        return None
    return float(value)


# a fitted model and its axes ------------------------------------------------------------


def load_model(model: Avocado | str | os.PathLike) -> Avocado:
    """A fitted :class:`Avocado` from itself or from a model directory written by :meth:`Avocado.save`.

    Parameters
    ----------
    model : Avocado, str or path-like
        A fitted model, or the directory it was saved to.

    Returns
    -------
    Avocado
        The model (loaded with its genome factors read lazily, one axis at a time).

    Raises
    ------
    EpitensorError
        When the folder holds no saved model, the object is no :class:`Avocado`,
        or the model is not fitted.
    """
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        if not (path / modeldir.CONFIG_FILE).is_file():
            raise EpitensorError(
                f"{path} is not a model directory (no {modeldir.CONFIG_FILE}); "
                f"train one with `epitensor train` or save one with Avocado.save"
            )
        return Avocado.load(path)
    if not isinstance(model, Avocado):
        raise EpitensorError(
            f"expected an Avocado model or a model directory; got {type(model).__name__}"
        )
    model.check_fitted()
    return model


def genome_table(model: Avocado, axis: str) -> GenomeFactors:
    """The :class:`~epitensor.nn.module.GenomeFactors` of ``axis`` (loaded on demand)."""
    return model.genome_module(axis)


@contextlib.contextmanager
def axis_table(model: Avocado, axis: str) -> Iterator[GenomeFactors]:
    """The genome factors of ``axis``; dropped afterwards when this call read them from disk.

    A saved model loads its axes lazily; dropping them again keeps one axis in
    memory at a time over a whole genome (a later call reads it back).
    """
    genome = model.module_.genome
    loaded_before = axis in genome
    table = genome_table(model, axis)
    try:
        yield table
    finally:
        if not loaded_before and axis in genome:
            del genome[axis]
