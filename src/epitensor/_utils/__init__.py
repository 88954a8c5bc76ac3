"""Private helpers shared by every layer: errors, progress, the machine, files.

The bottom layer of the package: it imports nothing else of epitensor. Its
names are re-exported here so that a module writes ``from epitensor._utils
import warn``; none of them is part of the public API except the errors,
which ``epitensor`` exports.
"""

from importlib.metadata import PackageNotFoundError, version

from epitensor._utils.errors import EpitensorError, EpitensorWarning, warn
from epitensor._utils.files import (
    DEFAULT_LOCK_TIMEOUT,
    LOCK_TIMEOUT_ENV,
    atomic_directory,
    atomic_write_bytes,
    check_parent_folder,
    is_local_path,
    local_path,
    lock_file,
    lock_timeout,
    md5sum,
    output_lock,
    package_data,
    read_lock,
    usual_file_mode,
)
from epitensor._utils.machine import (
    available_cpus,
    cgroup_cpu_quota,
    cpu_summary,
    cpu_vendor,
    default_threads,
    passive_openmp_wait,
    resolve_device,
    resolve_precision,
)
from epitensor._utils.options import JobOptions
from epitensor._utils.progress import LOG_INTERVAL, LineProgress, progress

try:
    __version__ = version("epitensor")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "LOCK_TIMEOUT_ENV",
    "LOG_INTERVAL",
    "EpitensorError",
    "EpitensorWarning",
    "JobOptions",
    "LineProgress",
    "__version__",
    "atomic_directory",
    "atomic_write_bytes",
    "available_cpus",
    "cgroup_cpu_quota",
    "check_parent_folder",
    "cpu_summary",
    "cpu_vendor",
    "default_threads",
    "is_local_path",
    "local_path",
    "lock_file",
    "lock_timeout",
    "md5sum",
    "output_lock",
    "package_data",
    "passive_openmp_wait",
    "progress",
    "read_lock",
    "resolve_device",
    "resolve_precision",
    "usual_file_mode",
    "warn",
]
