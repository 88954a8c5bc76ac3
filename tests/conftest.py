"""Shared fixtures: the real data in ../shared/data, the bundled store, devices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EPITENSOR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data shared beside the repository (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}; set EPITENSOR_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pilot_store(tmp_path_factory):
    """The bundled 5 x 5 Roadmap pilot store, built once per session."""
    from epitensor.datasets import roadmap_pilot

    return roadmap_pilot(tmp_path_factory.mktemp("pilot") / "roadmap-pilot.zarr")


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> str:
    """Run a test on the CPU and, where one exists, on a CUDA GPU."""
    if request.param == "cuda" and not _cuda_available():
        pytest.skip("no CUDA device")
    return request.param


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Keep torch to the machine's cores so parallel helpers do not oversubscribe."""
    try:
        import torch

        torch.set_num_threads(min(2, os.cpu_count() or 1))
    except ImportError:  # pragma: no cover
        pass
