"""The machine: CPUs a process may use, thread counts, torch devices and precision."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
from pathlib import Path

from epitensor._utils.errors import EpitensorError

# threads ---------------------------------------------------------------------------------------


def cgroup_cpu_quota(
    cgroup_file: str | os.PathLike = "/proc/self/cgroup",
    root: str | os.PathLike = "/sys/fs/cgroup",
) -> float | None:
    """CPUs' worth of time the process's cgroups allow (``quota / period``), or None.

    Reads cgroup v2 ``cpu.max`` (``"150000 100000"``, or ``"max 100000"``: no
    limit) and v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota ``-1``: no
    limit) in the process's own cgroup and every parent up to ``root``, and in
    ``root`` itself (a container sees its own cgroup there); the tightest wins.

    ``joblib.cpu_count`` (loky) also reads a quota, but only the one file at
    the mount root (``/sys/fs/cgroup/cpu.max``, or v1 ``cpu/cpu.cfs_quota_us``):
    a quota on the process's own cgroup below the root, as systemd units and
    batch jobs set on a host without a cgroup namespace, goes unseen, and
    ``cgroup_file`` / ``root`` cannot be pointed elsewhere to test it.

    Parameters
    ----------
    cgroup_file : str or path-like
        The process's cgroup membership. Default ``/proc/self/cgroup``.
    root : str or path-like
        Where the cgroup file systems are mounted. Default ``/sys/fs/cgroup``.

    Returns
    -------
    float or None
        For example 1.5 for half of a second CPU; None when nothing limits it
        or nothing could be read.
    """
    root = Path(root)
    try:
        lines = Path(cgroup_file).read_text().splitlines()
    except OSError:
        lines = []
    quotas = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.strip().lstrip("/")
        if controllers == "":  # v2 unified hierarchy
            for folder in _ancestors(root, rel):
                quotas.append(_read_v2_quota(folder / "cpu.max"))
        elif "cpu" in controllers.split(","):
            for mount in (controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu"):
                for folder in _ancestors(root / mount, rel):
                    quotas.append(_read_v1_quota(folder))
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _ancestors(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and each parent of it down to ``base`` (nested limits all apply)."""
    folders = [base]
    for part in Path(rel).parts:
        folders.append(folders[-1] / part)
    return folders


def _read_v2_quota(path: Path) -> float | None:
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read_v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text().strip())
        period = int((folder / "cpu.cfs_period_us").read_text().strip())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus() -> int:
    """CPUs this process may actually use: its affinity mask, cut to its cgroup quota.

    ``os.cpu_count()`` counts the machine's CPUs even when ``taskset``, a batch
    scheduler or a container quota allows far fewer; more torch threads than
    that oversubscribe the CPUs and slow every step down. A fractional quota
    is rounded down (at least 1): a thread team that outruns the quota is
    throttled mid-step. The affinity count is ``os.process_cpu_count()`` on
    Python 3.13+ (which also honours ``PYTHON_CPU_COUNT``), else
    ``os.sched_getaffinity``. Not ``joblib.cpu_count()``: it rounds a
    fractional quota up and misses quotas below the cgroup root (see
    :func:`cgroup_cpu_quota`).

    Returns
    -------
    int
        At least 1.
    """
    process_cpu_count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if process_cpu_count is not None:
        cpus = process_cpu_count() or 1
    else:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, int(quota))
    return max(1, cpus)


def default_threads(n_threads: int | None = None) -> int | None:
    """Torch CPU threads to use: ``n_threads`` when given, else the CPUs this process may use.

    Parameters
    ----------
    n_threads : int, optional
        An explicit count (``--threads``), returned unchanged. Default None:
        torch's current count, cut to :func:`available_cpus` (so a lower count
        set earlier, e.g. with ``torch.set_num_threads``, is kept).
    """
    if n_threads is not None:
        return n_threads
    import torch

    return min(torch.get_num_threads(), available_cpus())


def passive_openmp_wait() -> bool:
    """Make torch's OpenMP threads sleep, not spin, between parallel regions (before torch loads).

    By default OpenMP worker threads busy-wait for new work after each
    parallel region. Beside another busy process (a second training run, a
    neighbour on a shared node) the spinning threads of each hold the cores
    the others need, and every step waits for a descheduled thread: a
    2-thread training run beside other jobs ran 20x slower than with one
    thread (README, "Threads"). With ``OMP_WAIT_POLICY=PASSIVE`` they sleep
    instead. The OpenMP runtime reads the variable once, when torch is first
    imported, so this is called by the command line before anything imports
    torch; a value the user set is kept.

    Returns
    -------
    bool
        True if the policy was set here; False if the user had set one or
        torch was already imported (too late to change).
    """
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none).

    Read once per process: every Predictor session and every epoch's holdout
    scorer asks for the vendor.
    """
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the end of the first processor's block
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_summary() -> str:
    """The CPU model and its matrix instruction sets (AVX2 / AVX-512 / AMX), for speed tables.

    Returns
    -------
    str
        For example ``"AMD EPYC 7B13, 2 CPUs usable; AVX2, FMA"``.
    """
    info = _cpuinfo()
    model = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    names = [
        ("avx2", "AVX2"),
        ("fma", "FMA"),
        ("avx512f", "AVX-512"),
        ("avx512_bf16", "AVX-512 BF16"),
        ("avx512_vnni", "AVX-512 VNNI"),
        ("amx_tile", "AMX"),
        ("amx_bf16", "AMX BF16"),
    ]
    present = [label for flag, label in names if flag in flags]
    if not flags:
        present = ["flags unknown"]
    elif not any(flag in flags for flag in ("avx2", "avx512f", "amx_tile")):
        present.insert(0, "no AVX2 / AVX-512 / AMX")
    return f"{model}, {available_cpus()} CPUs usable; {', '.join(present)}"


def resolve_device(device: str | None = None):
    """Return a ``torch.device``: CUDA if available, else MPS, else CPU, when None.

    Parameters
    ----------
    device : str or torch.device, optional
        Explicit device. Default None: pick the best available.
    """
    import torch

    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EpitensorError(
                f"device {str(device)!r} was asked for but torch finds no CUDA GPU on this "
                f"machine; pass --device cpu, or leave --device out for the best available"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


CAPPED_BELOW_AVX512 = ("DEFAULT", "NO AVX", "AVX2")  # torch's names of its CPU kernel levels


def resolve_precision(precision: str, device) -> str:
    """``"fp32"`` or ``"bf16"``; ``"auto"`` is bf16 where the hardware has native bf16.

    Parameters
    ----------
    precision : str
        ``"fp32"``, ``"bf16"`` or ``"auto"`` (bf16 on CUDA GPUs that support it
        and on CPUs with AVX-512 BF16 or AMX, unless torch's kernels are capped
        below AVX-512 with ``ATEN_CPU_CAPABILITY``; else fp32).
    device : torch.device
        Where the model runs.
    """
    import torch

    if precision != "auto":
        return precision
    try:
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        elif device.type == "cpu":
            native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
            # kernels capped below AVX-512 (ATEN_CPU_CAPABILITY=avx2) emulate bf16 slowly
            native = native and torch.backends.cpu.get_cpu_capability() not in CAPPED_BELOW_AVX512
        else:
            native = False
    except (AttributeError, RuntimeError):  # private CPU probes may move between releases
        native = False
    return "bf16" if native else "fp32"


def cpu_vendor() -> str:
    """The CPU's ``vendor_id`` from ``/proc/cpuinfo`` (``"AuthenticAMD"``, ``"GenuineIntel"``), or ``""``."""
    return _cpuinfo().get("vendor_id", "")
