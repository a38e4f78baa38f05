"""Shared fixtures: the backends to test on and the benchmark images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy
import pytest

from nlfilt.backend import gpu_status

#: The project's benchmark images (Set12, Set5), beside the checkout; absent for users.
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require_gpu() -> None:
    """Skip without a usable GPU, or fail when NLFILT_REQUIRE_GPU=1."""
    usable, reason = gpu_status()
    if not usable:
        if os.environ.get("NLFILT_REQUIRE_GPU") == "1":
            pytest.fail(f"NLFILT_REQUIRE_GPU=1 but no GPU is usable: {reason}")
        pytest.skip(f"no usable GPU: {reason}")


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest) -> str:
    """Each usable backend; the GPU case skips without a GPU unless NLFILT_REQUIRE_GPU=1."""
    if request.param == "gpu":
        require_gpu()
    return request.param


@pytest.fixture
def gpu() -> str:
    """The GPU alone (for tests marked ``gpu``); skips or fails like :func:`device`."""
    require_gpu()
    return "gpu"


def to_host(array):
    """A NumPy copy of a NumPy or CuPy array."""
    return array.get() if hasattr(array, "get") else numpy.asarray(array)


def shared_images(name: str) -> Path:
    """The folder ``name`` of the shared benchmark images, or skip when the data is not beside the
    checkout."""
    folder = DATA_DIR / name
    if not folder.is_dir():
        pytest.skip(f"benchmark images not found at {folder}")
    return folder


@pytest.fixture(scope="session")
def set12() -> Path:
    """The Set12 folder (gray)."""
    return shared_images("set12")


@pytest.fixture(scope="session")
def set5() -> Path:
    """The Set5 folder (colour)."""
    return shared_images("set5")


@pytest.fixture
def refinements(monkeypatch):
    """The (pilot, coarse estimate) shapes of the collaborative filter's coarse-scale refinements
    (:func:`nlfilt.pyramid.refine`), in order (the list fills as it runs)."""
    from nlfilt import collaborative

    shapes = []
    original = collaborative.refine

    def spy(xp, pilot, coarse_estimate):
        shapes.append((pilot.shape, coarse_estimate.shape))
        return original(xp, pilot, coarse_estimate)

    monkeypatch.setattr(collaborative, "refine", spy)
    return shapes
