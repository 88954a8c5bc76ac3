"""Training jobs on disk: stage 1 from a store to a saved model, stage 2 from a saved model."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from epitensor._utils import EpitensorError, atomic_directory, warn
from epitensor.estimators.avocado import Avocado, load_model
from epitensor.estimators.stage2 import fit_genome
from epitensor.parallel import check_ray
from epitensor.store.compendium import Store
from epitensor.workflows.options import TrainOptions

__all__ = ["train_genome", "train_model"]


def train_model(
    store: Store | str | os.PathLike,
    out: str | os.PathLike,
    *,
    options: TrainOptions | None = None,
    **overrides,
) -> Avocado:
    """Stage 1 on a store with per-epoch checkpoints, then save the model (``epitensor train``).

    Checkpoints and the epoch log go to ``<out>.checkpoint/`` while training;
    the finished model directory gets the log as ``log.jsonl`` and the
    checkpoint folder is removed. The settings (preset, held-out tracks,
    epochs, resuming, regions, device, threads, progress, overwriting) are a
    :class:`~epitensor.workflows.options.TrainOptions`, given whole as
    ``options`` or field by field as keywords, or both (the keywords win);
    ``epitensor train`` builds the same object.

    Parameters
    ----------
    store : Store, str or path-like
        The compendium (``"roadmap-pilot"`` is the bundled sample).
    out : str or path-like
        Model directory to write.
    options : TrainOptions, optional
        The settings. Default None: ``TrainOptions()``.
    **overrides
        Fields of :class:`~epitensor.workflows.options.TrainOptions` replacing
        those of ``options`` (``preset``, ``holdout``, ``n_epochs``,
        ``resume``, ``regions``, ``device``, ``n_threads``, ``verbose``,
        ``overwrite``); any other name is refused.

    Returns
    -------
    Avocado
        The fitted model (also saved at ``out``).

    Examples
    --------
    >>> import epitensor as et
    >>> model = et.train_model("roadmap-pilot", "model/", preset="cpu-small",
    ...                        holdout=["E116:H3K27me3"])
    >>> model.celltypes_
    """
    opts = TrainOptions.resolve(options, **overrides)
    out = Path(out)
    if out.exists() and not opts.overwrite:
        raise EpitensorError(f"{out} already exists; choose another --out or remove it")
    params = {"device": opts.device, "n_threads": opts.n_threads, "verbose": opts.verbose}
    if opts.n_epochs is not None:
        params["n_epochs"] = opts.n_epochs
    model = Avocado.from_preset(opts.preset, **params)
    checkpoint_dir = out.with_name(out.name + ".checkpoint")
    if opts.resume and not (checkpoint_dir / "checkpoint").exists():
        warn(f"no checkpoint in {checkpoint_dir}; training from the start")
    model.fit(
        store,
        holdout=opts.holdout,
        checkpoint_dir=checkpoint_dir,
        resume=opts.resume,
        regions=opts.regions,
    )
    model.save(out, overwrite=opts.overwrite)
    log = checkpoint_dir / "log.jsonl"
    if log.is_file():
        shutil.copyfile(log, out / "log.jsonl")
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return model


def train_genome(
    model,
    store,
    out,
    axes: Sequence[str] | None = None,
    n_epochs: int | None = None,
    ray_address: str | None = None,
    num_gpus: float | None = None,
    device: str | None = None,
    verbose: bool = True,
    overwrite: bool = False,
    allow_changed: bool = False,
):
    """Stage 2 from a saved model, then save the result (``epitensor fit-genome``).

    The model directory is built under a temporary name beside ``out`` (the
    stage-1 model first, then each axis as it is fitted, so memory holds few
    axes) and moved to ``out`` when every axis is done: a failed run (a store
    of another genome build, no Ray cluster, a failed axis) leaves nothing at
    ``out``.

    Parameters
    ----------
    model : Avocado or path
        A fitted model or a model directory (stage 1 done).
    store : Store, str or path-like
        The compendium holding the axes (chromosomes) to fit.
    out : str or path-like
        Model directory to write.
    axes : sequence of str, optional
        Axes to fit. Default None: every axis of the store.
    n_epochs : int, optional
        Stage-2 epochs per axis. Default None: the model's ``n_genome_epochs``.
    ray_address : str, optional
        Default None: in this process. ``"local"``, ``"auto"`` or a Ray address.
    num_gpus : float, optional
        GPUs per task. Default None: 1 when the cluster has GPUs, else 0.
    device : str, optional
        torch device of each task. Default None: best available there.
    verbose : bool
        Progress bars. Default True.
    overwrite : bool
        Replace an existing ``out``. Default False.
    allow_changed : bool
        Use a store whose copies of the training tracks hold other values than
        the data the model was made from, with a warning kept in the model's
        ``training_data_``. Default False: refuse it.

    Returns
    -------
    Avocado
        The model with the new genome factors (also saved at ``out``).

    Examples
    --------
    >>> import epitensor as et
    >>> model = et.train_genome("stage1-model/", "genome.zarr", "genome-model/", axes=["chr21"])
    """
    if Path(out).exists() and not overwrite:
        raise EpitensorError(f"{out} already exists; choose another --out or pass overwrite")
    model = load_model(model)
    params = {"device": device, "verbose": verbose}
    if n_epochs is not None:
        params["n_genome_epochs"] = int(n_epochs)
    model.set_params(**params)
    check_ray(ray_address, verbose)
    with atomic_directory(out, overwrite=overwrite) as staging:
        model.save(staging, overwrite=True)
        fit_genome(model, store, axes, ray_address=ray_address, num_gpus=num_gpus, out=staging,
                   allow_changed=allow_changed)  # fmt: skip
    model.saved_at(out)
    return model
