"""Fan-out of independent work units (chromosomes, track batches, tracks) in-process or on Ray.

One function, :func:`run_tasks`, runs ``func(item, **shared)`` for every item
and returns the results in item order. By default it runs in this process, one
item after the other. Given a Ray address it submits one Ray task per item:

* ``"local"`` starts a Ray instance on this machine;
* ``"auto"`` joins the cluster this machine belongs to (``ray start`` was run);
* anything else (``"ray://head:10001"``, ``"head:6379"``) is passed to
  ``ray.init(address=...)``.

The ``shared`` keyword arguments (a frozen network, a model's factors) are put
in Ray's object store once and handed to every task by reference, not pickled
per task. Each task asks for ``num_gpus`` GPUs (by default one when the cluster
has GPUs, none otherwise): Ray then sets ``CUDA_VISIBLE_DEVICES`` so that
``device=None`` inside the task picks that GPU.

A task that raises is retried up to ``max_retries`` times (on Ray through
``max_retries`` / ``retry_exceptions``; in-process with the same count). When
tasks still fail, every item is run to the end and then one
:class:`~epitensor._utils.EpitensorError` names each failed item and its last
error: a run either completes every item or says which failed, never drops one.

Task functions must give the same result wherever they run: they draw their
random numbers from seeds derived from their item (not from global state), so
the Ray path and the in-process path give identical results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from epitensor._utils import EpitensorError, progress

DEFAULT_MAX_RETRIES = 2

__all__ = ["DEFAULT_MAX_RETRIES", "TaskFailure", "import_ray", "ray_session", "run_tasks"]


class TaskFailure(EpitensorError):
    """Some tasks failed after all their retries.

    Attributes
    ----------
    failures : dict of str to str
        Name of each failed item -> its last error (``"Type: message"``).
    """

    def __init__(self, message: str, failures: dict[str, str]) -> None:
        super().__init__(message)
        self.failures = failures


def import_ray():
    """Import Ray, or raise an error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EpitensorError(
            "Ray is not installed; install it with `pip install epitensor[ray]` "
            "(or run without --ray to work in this process)"
        ) from None
    return ray


def ray_session(address: str, num_cpus: int | None = None, verbose: bool = True):
    """Connect to Ray (or start a local instance) unless already connected.

    Parameters
    ----------
    address : str
        ``"local"`` (start Ray on this machine), ``"auto"`` (join the running
        cluster) or a Ray address such as ``"ray://head:10001"``.
    num_cpus : int, optional
        CPUs of a ``"local"`` instance. Default None: all of this machine's.
    verbose : bool
        Forward the workers' output to this process. Default True.

    Returns
    -------
    module
        The ``ray`` module, initialised.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": verbose}
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise EpitensorError(
            f"cannot connect to Ray at {address!r}: {exc}; start a cluster with "
            f"`ray start --head`, or pass --ray local"
        ) from None
    return ray


def run_tasks(
    func: Callable[..., Any],
    items: Sequence[Any],
    ray_address: str | None = None,
    shared: dict[str, Any] | None = None,
    names: Sequence[str] | None = None,
    num_gpus: float | None = None,
    num_cpus: float = 1,
    max_retries: int = DEFAULT_MAX_RETRIES,
    desc: str = "tasks",
    verbose: bool = True,
) -> list[Any]:
    """Run ``func(item, **shared)`` for every item, in-process or as Ray tasks.

    Parameters
    ----------
    func : callable
        A module-level function (Ray pickles it by reference). It must be
        deterministic given its arguments.
    items : sequence
        One work unit per element (an axis name, a (axis, tracks) pair, ...).
    ray_address : str, optional
        Default None: run in this process. ``"local"``, ``"auto"`` or a Ray
        address: one Ray task per item (see :func:`ray_session`).
    shared : dict of str to object, optional
        Keyword arguments given to every call. On Ray each value is put in
        the object store once. Default None: none.
    names : sequence of str, optional
        Names of the items in messages. Default None: ``str(item)``.
    num_gpus : float, optional
        GPUs per Ray task. Default None: 1 when the cluster has a GPU, else 0.
        Ignored in-process.
    num_cpus : float
        CPUs per Ray task. Default 1.
    max_retries : int
        Times a failed task is run again before it counts as failed. Default 2.
    desc : str
        Label of the progress bar. Default ``"tasks"``.
    verbose : bool
        Show progress. Default True.

    Returns
    -------
    list
        ``func``'s results, in the order of ``items``.

    Raises
    ------
    TaskFailure
        After every item ran, when some failed after all retries; the message
        names each of them.
    """
    items = list(items)
    names = [str(item) for item in items] if names is None else [str(n) for n in names]
    if len(names) != len(items):
        raise EpitensorError(f"got {len(names)} names for {len(items)} tasks; give one per task")
    if max_retries < 0:
        raise EpitensorError(f"must be a non-negative integer; got max_retries={max_retries!r}")
    shared = dict(shared or {})
    if ray_address is None:
        results, failures = _run_local(func, items, names, shared, max_retries, desc, verbose)
    else:
        results, failures = _run_ray(
            func, items, names, shared, ray_address, num_gpus, num_cpus, max_retries, desc, verbose
        )
    if failures:
        listed = "; ".join(f"{name} ({error})" for name, error in failures.items())
        raise TaskFailure(
            f"{len(failures)} of {len(items)} {desc} failed after {max_retries + 1} attempts "
            f"each: {listed}",
            failures,
        )
    return results


def _describe(exc: BaseException) -> str:
    """``"Type: first line of the message"`` of an exception (Ray's wrapper unwrapped)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _run_local(func, items, names, shared, max_retries, desc, verbose):
    results: list[Any] = [None] * len(items)
    failures: dict[str, str] = {}
    for k, item in enumerate(progress(items, desc=desc, verbose=verbose, unit="task")):
        for attempt in range(max_retries + 1):
            try:
                results[k] = func(item, **shared)
                break
            except Exception as exc:  # noqa: BLE001 - reported by name below
                if attempt == max_retries:
                    failures[names[k]] = _describe(exc)
    return results, failures


def _run_ray(func, items, names, shared, address, num_gpus, num_cpus, max_retries, desc, verbose):
    ray = ray_session(address, verbose=verbose)
    if num_gpus is None:
        num_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    refs = {key: ray.put(value) for key, value in shared.items()}
    remote = ray.remote(func).options(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        max_retries=max_retries,
        retry_exceptions=True,
    )
    # Top-level ObjectRef arguments are resolved by Ray before the call, so the
    # task sees the shared objects themselves, fetched once per worker node.
    pending = {remote.remote(item, **refs): k for k, item in enumerate(items)}
    results: list[Any] = [None] * len(items)
    failures: dict[str, str] = {}
    bar = progress(total=len(items), desc=desc, verbose=verbose, unit="task")
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            k = pending.pop(ref)
            try:
                results[k] = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, ...
                failures[names[k]] = _describe(exc)
            bar.update(1)
    bar.close()
    return results, dict(sorted(failures.items(), key=lambda kv: names.index(kv[0])))
