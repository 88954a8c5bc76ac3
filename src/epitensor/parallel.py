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
tasks still fail, :func:`run_tasks` runs every item to the end and then raises
one :class:`TaskFailure` naming each failed item and its last error: a run
either completes every item or says which failed, never drops one.

Task functions must give the same result wherever they run: they draw their
random numbers from seeds derived from their item (not from global state), so
the Ray path and the in-process path give identical results (bit for bit at
equal torch thread counts per task).

Built on it:

* :func:`epitensor.estimators.stage2.fit_genome`: stage 2, one task per axis
  (chromosome), the frozen network and factors shared through the object store;
* :func:`epitensor.workflows.impute.impute`: one task per chromosome x track batch,
  streamed in order through :func:`iter_tasks` to the files this process writes;
* :class:`RayExecutor`: an executor whose ``submit`` starts Ray tasks, used by
  :mod:`epitensor.store.ingest` to read tracks in tasks while this process writes
  the store.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from epitensor._utils import EpitensorError, default_threads, progress

DEFAULT_MAX_RETRIES = 2

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "RayExecutor",
    "TaskFailure",
    "import_ray",
    "iter_tasks",
    "remote_store",
    "task_threads",
    "check_ray",
    "ray_session",
    "run_tasks",
]


class TaskFailure(EpitensorError):
    """Some tasks failed after all their retries.

    Attributes
    ----------
    failures : dict of str to str
        Name of each failed item -> its last error (``"Type: message"``).
    results : list or None
        From :func:`run_tasks`: every item's result, None where it failed.
    """

    def __init__(self, message: str, failures: dict[str, str], results: list | None = None):
        super().__init__(message)
        self.failures = failures
        self.results = results


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


class _Plan:
    """Validated arguments of a fan-out: items, names, shared objects, where to run."""

    def __init__(self, func, items, ray_address, shared, names, num_gpus, num_cpus, max_retries,
                 desc, verbose):  # fmt: skip
        self.func = func
        self.items = list(items)
        self.names = (
            [str(item) for item in self.items] if names is None else [str(n) for n in names]
        )
        if len(self.names) != len(self.items):
            raise EpitensorError(
                f"got {len(self.names)} names for {len(self.items)} tasks; give one per task"
            )
        if not isinstance(max_retries, int) or max_retries < 0:
            raise EpitensorError(f"must be a non-negative integer; got max_retries={max_retries!r}")
        self.ray_address = ray_address
        self.shared = dict(shared or {})
        self.num_gpus, self.num_cpus = num_gpus, num_cpus
        self.max_retries = max_retries
        self.desc, self.verbose = desc, verbose
        self.stopped = False  # set to stop submitting (and, in-process, running) items

    def outcomes(self, window: int | None) -> Iterator[tuple[int, bool, Any]]:
        """``(index, ok, result or error text)`` per item, in item order.

        At most ``window`` Ray tasks are submitted ahead of the one awaited
        (default None: all at once). The caller may stop iterating early.
        """
        bar = progress(total=len(self.items), desc=self.desc, verbose=self.verbose, unit="task")
        with bar:
            source = self._local() if self.ray_address is None else self._ray(window)
            for outcome in source:
                bar.update(1)
                yield outcome

    def _local(self) -> Iterator[tuple[int, bool, Any]]:
        for k, item in enumerate(self.items):
            if self.stopped:
                return
            for attempt in range(self.max_retries + 1):
                try:
                    result = self.func(item, **self.shared)
                except Exception as exc:  # noqa: BLE001 - reported by name
                    if attempt == self.max_retries:
                        yield k, False, _describe(exc)
                else:
                    yield k, True, result
                    break

    def _ray(self, window: int | None) -> Iterator[tuple[int, bool, Any]]:
        ray = ray_session(self.ray_address, verbose=self.verbose)
        num_gpus = self.num_gpus
        if num_gpus is None:
            num_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        refs = {key: ray.put(value) for key, value in self.shared.items()}
        remote = ray.remote(self.func).options(
            num_cpus=self.num_cpus,
            num_gpus=num_gpus,
            max_retries=self.max_retries,
            retry_exceptions=True,
        )
        window = len(self.items) if window is None else max(1, int(window))
        # Top-level ObjectRef arguments are resolved by Ray before the call, so each
        # task receives the shared objects themselves, fetched once per node.
        pending: deque = deque()
        todo = iter(enumerate(self.items))
        try:
            for k, item in itertools.islice(todo, window):
                pending.append((k, remote.remote(item, **refs)))
            while pending:
                k, ref = pending.popleft()
                try:
                    outcome = (k, True, ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - RayTaskError, WorkerCrashedError...
                    outcome = (k, False, _describe(exc))
                if not self.stopped:
                    for j, item in itertools.islice(todo, 1):
                        pending.append((j, remote.remote(item, **refs)))
                yield outcome
        finally:
            for _, ref in pending:  # the caller stopped early: do not leave work behind
                ray.cancel(ref)

    def failure(self, failures: dict[str, str], not_run: int = 0) -> TaskFailure:
        """The error naming every failed item."""
        listed = "; ".join(f"{name} ({error})" for name, error in failures.items())
        attempts = "1 attempt" if self.max_retries == 0 else f"{self.max_retries + 1} attempts"
        skipped = f"; {not_run} more not run" if not_run else ""
        return TaskFailure(
            f"{len(failures)} of {len(self.items)} {self.desc} failed after {attempts} "
            f"each: {listed}{skipped}",
            failures,
        )


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
        After every item ran, when some failed after all retries. Its message
        names each of them; its ``results`` hold the other items' results
        (None where an item failed), so the caller can keep them.
    """
    plan = _Plan(func, items, ray_address, shared, names, num_gpus, num_cpus, max_retries,
                 desc, verbose)  # fmt: skip
    results: list[Any] = [None] * len(plan.items)
    failures: dict[str, str] = {}
    for k, ok, value in plan.outcomes(window=None):
        if ok:
            results[k] = value
        else:
            failures[plan.names[k]] = value
    if failures:
        error = plan.failure(failures)
        error.results = results
        raise error
    return results


def iter_tasks(
    func: Callable[..., Any],
    items: Sequence[Any],
    ray_address: str | None = None,
    shared: dict[str, Any] | None = None,
    names: Sequence[str] | None = None,
    num_gpus: float | None = None,
    num_cpus: float = 1,
    max_retries: int = DEFAULT_MAX_RETRIES,
    window: int = 4,
    desc: str = "tasks",
    verbose: bool = True,
) -> Iterator[Any]:
    """Like :func:`run_tasks`, but yield results in item order as they are ready.

    Memory holds at most ``window`` results on Ray (and one in-process), so a
    caller can stream large per-item results (a chromosome of imputed tracks)
    to files in order.

    Parameters
    ----------
    func, items, ray_address, shared, names, num_gpus, num_cpus, max_retries, desc, verbose
        See :func:`run_tasks`.
    window : int
        Ray tasks submitted ahead of the result awaited. Default 4.

    Yields
    ------
    object
        ``func``'s result for each item, in item order.

    Raises
    ------
    TaskFailure
        At the first item that failed after all retries: no later result is
        yielded, the tasks already submitted finish, and the message names
        every item among them that failed and counts the items not run.
    """
    plan = _Plan(func, items, ray_address, shared, names, num_gpus, num_cpus, max_retries,
                 desc, verbose)  # fmt: skip
    failures: dict[str, str] = {}
    seen = 0
    for k, ok, value in plan.outcomes(window=window):
        seen += 1
        if not ok:
            failures[plan.names[k]] = value
            # finish what is already submitted (to name its failures too), start nothing new
            plan.stopped = True
        elif not failures:
            yield value
    if failures:
        raise plan.failure(failures, not_run=len(plan.items) - seen)


def _describe(exc: BaseException) -> str:
    """``"Type: first line of the message"`` of an exception (Ray's wrapper unwrapped)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


# tasks' shared inputs and threads ----------------------------------------------------------------------


def remote_store(store, ray_address: str | None):
    """What a task opens: the Store itself in-process, its URL on Ray (checked reachable)."""
    if ray_address is None:
        return store
    if str(store.url).startswith("memory://"):
        raise EpitensorError(
            f"store {store.url} lives in this process's memory; Ray tasks cannot read it. "
            f"Write it to a path or an s3:// URL, or run without --ray"
        )
    return store.url


def task_threads(n_threads: int | None) -> int:
    """Torch threads of every task of a job, resolved once by the caller.

    A task gives bit-identical results wherever it runs only at one thread
    count (a reduction split over two threads rounds differently from one),
    so each job resolves its count here and runs every task under it, in this
    process and on Ray alike (where each task also reserves that many CPUs).

    Parameters
    ----------
    n_threads : int, optional
        The model's or the caller's ``n_threads``. Default None: this process's
        torch thread count, cut to the CPUs it may run on
        (:func:`~epitensor._utils.default_threads`).

    Returns
    -------
    int
    """
    if n_threads is None:
        return int(default_threads(None))
    if not isinstance(n_threads, int | np.integer) or isinstance(n_threads, bool) or n_threads < 1:
        raise EpitensorError(f"n_threads must be a positive integer; got n_threads={n_threads!r}")
    return int(n_threads)


def check_ray(ray_address: str | None, verbose: bool = True) -> None:
    """Connect to Ray now (when an address is given), so a job fails before writing anything."""
    if ray_address is not None:
        ray_session(ray_address, verbose=verbose)


# a concurrent.futures-style executor on Ray (store ingestion) ------------------------------------


class RayExecutor:
    """Submit ``fn(*args)`` as Ray tasks; the ``submit`` / ``shutdown`` of an executor.

    Lets code written for :class:`concurrent.futures.ProcessPoolExecutor` (the
    ingestion's per-track readers) run its tasks on a Ray cluster unchanged.
    A task that raises is retried ``max_retries`` times; then its future holds
    the task's own :class:`~epitensor._utils.EpitensorError` (which names the
    file) or an :class:`EpitensorError` naming the task and its last error.

    Parameters
    ----------
    address : str
        ``"local"``, ``"auto"`` or a Ray address (see :func:`ray_session`).
    num_cpus : float
        CPUs per task. Default 1.
    num_gpus : float
        GPUs per task. Default 0 (readers need none).
    max_retries : int
        Retries of a failed task. Default 2.
    verbose : bool
        Forward the workers' output. Default True.
    """

    def __init__(
        self,
        address: str,
        num_cpus: float = 1,
        num_gpus: float = 0,
        max_retries: int = DEFAULT_MAX_RETRIES,
        verbose: bool = True,
    ) -> None:
        self._ray = ray_session(address, verbose=verbose)
        self._options = {
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "max_retries": max_retries,
            "retry_exceptions": True,
        }
        self._attempts = max_retries + 1
        self._remotes: dict = {}
        self._refs: list = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Start ``fn(*args)`` as a Ray task; returns a future of its result."""
        if fn not in self._remotes:
            self._remotes[fn] = self._ray.remote(fn).options(**self._options)
        ref = self._remotes[fn].remote(*args)
        self._refs.append(ref)
        result: Future = Future()
        name = getattr(fn, "__name__", "task")

        def settle(done: Future) -> None:
            try:
                result.set_result(done.result())
            except BaseException as exc:  # noqa: BLE001 - handed to the future's owner
                result.set_exception(self._error(exc, name))

        ref.future().add_done_callback(settle)
        return result

    def _error(self, exc: BaseException, name: str) -> BaseException:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, EpitensorError):
            return cause  # already names the file and what to do
        return EpitensorError(
            f"Ray task {name} failed after {self._attempts} attempt(s): {_describe(exc)}"
        )

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Cancel the tasks not finished when ``cancel_futures``; Ray itself stays up."""
        if cancel_futures:
            for ref in self._refs:
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref)
        self._refs.clear()
