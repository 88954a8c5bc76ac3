"""Stage 2 of a fitted model: the genome factors of each axis, one task per axis.

Everything but the genome factors is frozen; each axis (chromosome) is an
independent task, run in this process or on Ray through
:func:`epitensor.parallel.run_tasks`, and its factors are attached to the
model as they come back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from epitensor._utils import EpitensorError
from epitensor.parallel import (
    DEFAULT_MAX_RETRIES,
    TaskFailure,
    check_ray,
    iter_tasks,
    remote_store,
    run_tasks,
    task_threads,
)
from epitensor.store.identity import check_coordinates, check_data, data_record, merge_records
from epitensor.store.registry import open_store, store_reference
from epitensor.train.fitting import fit_genome_axis, history_frame

__all__ = ["fit_genome"]


def _fit_axis_task(job: tuple, module_kwargs, state, celltypes, assays, store, tracks):
    """One axis of stage 2 (in-process or a Ray task): ``(tables, history)`` of fit_genome_axis."""
    axis, config, init, checkpoint_dir, resume = job
    return fit_genome_axis(module_kwargs, state, celltypes, assays, store, axis, tracks, config,
                           init, checkpoint_dir=checkpoint_dir, resume=resume)  # fmt: skip


def fit_genome(
    model,
    store,
    axes: Sequence[str] | None = None,
    warm_start: bool = False,
    ray_address: str | None = None,
    num_gpus: float | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    out=None,
    checkpoint_dir=None,
    resume: bool = False,
    allow_changed: bool = False,
):
    """Stage 2, one task per axis (chromosome): in this process by default, or on Ray.

    The one implementation of stage 2: :meth:`Avocado.fit_genome
    <epitensor.estimators.avocado.Avocado.fit_genome>` and ``epitensor fit-genome`` call
    it. Each axis gets its own seed and starting factors and runs under the
    thread count of :func:`task_threads`, so in-process and Ray runs give the
    same factors bit for bit. On Ray the frozen network and the cell type and
    assay factors are put in Ray's object store once; each task reads its axis
    of the store in blocks and returns that axis's genome factors, which are
    gathered into ``model`` here.

    Parameters
    ----------
    model : Avocado
        A fitted model (stage 1 done).
    store : Store, str or path-like
        The compendium holding the axes, of the model's genome build. On Ray
        every worker opens it by URL, so it must be a path on a shared
        filesystem or a remote URL (``s3://``).
    axes : sequence of str, optional
        Axes to fit. Default None: every axis of the store.
    warm_start : bool
        Start from the axis's current factors when it has some. Default False.
    ray_address : str, optional
        Default None: in this process. ``"local"``, ``"auto"`` or a Ray address.
    num_gpus : float, optional
        GPUs per task. Default None: 1 when the cluster has GPUs, else 0.
    max_retries : int
        Retries of a failed axis. Default 2.
    out : str or path-like, optional
        A directory ``model`` was saved to: each axis's factors are written
        there as soon as they come back, in axis order, and then freed, so the
        driver holds at most a few axes at a time. Default None: all stay in
        ``model``.
    checkpoint_dir : str or path-like, optional
        Per-epoch checkpoints of each axis go to ``checkpoint_dir/<axis>/``
        (on Ray, a folder every worker can write). Default None.
    resume : bool
        Continue each axis from its checkpoint. Default False.
    allow_changed : bool
        Use a store whose copies of the training tracks hold other values than
        those the model was made from (``training_data_``), with a warning
        kept in the record. Default False: refuse it. An axis the model
        already has on other coordinates is refused either way.

    Returns
    -------
    Avocado
        ``model``, with the new genome factors.

    Raises
    ------
    TaskFailure
        When some axes failed. Without ``out`` the others are kept in ``model``
        first; with ``out`` the axes before the first failure are saved there.
        Either way ``fit_genome(model, store, axes=[the rest])`` completes the run.
    """
    model.check_fitted()
    store = open_store(store)
    if store.genome != model.genome_:
        raise EpitensorError(
            f"store {store.url} is on genome {store.genome!r} but the model on "
            f"{model.genome_!r}; use a store of the model's genome build"
        )
    axes = list(store.axes if axes is None else axes)
    for axis in axes:
        store.axis_length(axis)
    tracks = [t for t in model.training_tracks_ if store.has_track(*t)]
    if not tracks:
        raise EpitensorError(f"store {store.url} holds none of the model's training tracks")
    check_coordinates(model.layout_, store, "the model", axes)
    record = getattr(model, "training_data_", None)
    note = check_data(record, store, "the model", tracks, allow_changed)
    check_ray(ray_address, model.verbose)
    if len(tracks) == len(model.training_tracks_):  # the ensemble's trees read the new axes here
        model.training_store_ = store_reference(store)
    model.training_data_ = merge_records(record, data_record(store, tracks), note)
    threads = task_threads(model.n_threads)
    jobs = []
    for i, axis in enumerate(axes):
        config = model.train_config(model.n_genome_epochs, seed_offset=1 + i)
        config.n_threads = threads
        if ray_address is not None:
            config.verbose = False  # per-task bars would interleave on the driver
        init = None
        if warm_start and axis in model.genome_axes_:
            init = model.genome_module(axis).state_dict()
        axis_dir = None if checkpoint_dir is None else str(Path(checkpoint_dir) / axis)
        jobs.append((axis, config, init, axis_dir, resume))
    shared = {
        **model.frozen_parts(),
        "store": remote_store(store, ray_address),
        "tracks": tracks,
    }
    # a task reserves the CPUs its torch threads use (Ray's default gives it 1)
    options = dict(names=axes, num_gpus=num_gpus, num_cpus=threads, max_retries=max_retries,
                   desc="stage-2 axes", verbose=model.verbose)  # fmt: skip
    if out is not None:
        results = iter_tasks(_fit_axis_task, jobs, ray_address, shared, **options)
        for axis, (tables, history) in zip(axes, results):
            model.attach_genome_axis(axis, tables, store.layout)
            model.history_ = history_frame(list(model.history_.to_dict("records")) + history)
            model.release_genome_axis(out, axis)
        return model
    try:
        results = run_tasks(_fit_axis_task, jobs, ray_address, shared, **options)
        failure = None
    except TaskFailure as exc:
        results, failure = exc.results, exc
    rows = list(model.history_.to_dict("records"))
    for axis, result in zip(axes, results):
        if result is None:
            continue
        tables, history = result
        model.attach_genome_axis(axis, tables, store.layout)
        rows += history
    model.history_ = history_frame(rows)
    if failure is not None:
        raise failure
    return model
