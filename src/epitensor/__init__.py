"""epitensor: multi-scale deep tensor factorization of the epigenome (the Avocado method)."""

from importlib.metadata import PackageNotFoundError, version

from epitensor._utils import EpitensorError, EpitensorWarning
from epitensor.genome.coordinates import Layout
from epitensor.store.compendium import Store
from epitensor.store.registry import open_store

try:
    __version__ = version("epitensor")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["EpitensorError", "EpitensorWarning", "Layout", "Store", "__version__", "open_store"]
