"""The cost model (nlfilt.cost): how its estimates grow with the image and the options.

The constants are wall-clock costs of the 2-core development machine; whether
the estimates hold there is measured side by side, not asserted: the estimate
against the measured time of every mode is a table of
benchmarks/bench_cpu.py, and of the collaborative filter one of
benchmarks/collaborative_speed.py.  These tests hold the model's shape: what
grows with what, and the products with ``K`` a call is expected to make
against the ones it makes.
"""

from __future__ import annotations

import numpy
import pytest

import nlfilt
from nlfilt.cost import (
    EIGENVALUE_APPLICATIONS,
    SINKHORN_APPLICATIONS,
    estimate_cpu_seconds,
    estimate_working_bytes,
    expected_applications,
)
from nlfilt.resolve import prepare


def resolved(shape: tuple[int, ...], **call):
    """The options the command line resolves for an image of ``shape`` (sigma given)."""
    image = numpy.random.default_rng(0).normal(100, 10, shape).astype(numpy.float32)
    options = {key: call.get(key, default) for key, default in
               (("kernel", "nlm"), ("window", "auto"), ("depth", 1), ("normalize", None))}
    _, _, options = prepare(image, patch=None, h=None, sigma=None, device="cpu", dtype=numpy.float32,
                            memory_budget=nlfilt.DEFAULT_MEMORY_BUDGET,
                            iterations=call.get("iterations", 1), **options)
    return options


def seconds(shape: tuple[int, ...], **call) -> float:
    options = resolved(shape, **call)
    iterations, guided = call.get("iterations", 1), call.get("guide") is not None
    applications = expected_applications(options, iterations, guided)
    return estimate_cpu_seconds(shape, options, applications, iterations=iterations, guided=guided)


@pytest.mark.parametrize("call", [{}, {"window": 21}, {"iterations": 5}])
def test_windowed_estimates_grow_with_the_pixels(call):
    small, large = seconds((256, 256), **call), seconds((1024, 1024), **call)
    assert 8 < large / small <= 16  # linear, beside a fixed cost per call


@pytest.mark.parametrize("kernel", ["nlm", "arccos", "ntk"])
def test_global_estimates_grow_faster_than_the_pixels(kernel):
    small, large = (seconds((side, side), kernel=kernel, window=None) for side in (64, 128))
    assert large / small > 8  # N^2 pairs per product


def test_estimates_grow_with_the_work_asked_for():
    base = seconds((256, 256))
    assert seconds((256, 256), iterations=5) > base
    assert seconds((256, 256, 3)) > base
    assert seconds((256, 256), window=21) > base
    deeper = seconds((96, 96), kernel="ntk", depth=3, window=None)
    assert deeper > seconds((96, 96), kernel="ntk", window=None)
    assert seconds((256, 256), guide="pilot", iterations="auto") > seconds((256, 256), iterations="auto")


def test_expected_products_count_normalisation_and_runs():
    assert expected_applications(resolved((64, 64)), 3, False) == 3
    assert expected_applications(resolved((64, 64)), 3, True) == 6  # the pilot pass
    sinkhorn = resolved((64, 64), normalize="sinkhorn")
    assert expected_applications(sinkhorn, 1, False) == SINKHORN_APPLICATIONS + 1
    eigen = resolved((64, 64), kernel="arccos", window=11)
    assert expected_applications(eigen, 2, False) == EIGENVALUE_APPLICATIONS["windowed"] + 2
    assert expected_applications(resolved((64, 64)), "auto", False) == 2 * expected_applications(
        resolved((64, 64)), "auto", False, runs=1)  # the image and its SURE twin


@pytest.mark.parametrize(("call", "iterations"), [({}, 1), ({}, 4), ({"kernel": "nlm", "window": 7}, 3)])
def test_the_expected_products_are_the_ones_a_call_makes(call, iterations):
    image = numpy.random.default_rng(0).normal(100, 20, (48, 48)).astype(numpy.float32)
    options = resolved(image.shape, iterations=iterations, **call)
    _, info = nlfilt.denoise(image, device="cpu", iterations=iterations, return_info=True, **call)
    assert expected_applications(options, iterations, False) == info.applications


def test_working_memory_grows_with_the_pixels_and_the_global_mode_keeps_to_its_budget():
    windowed = [estimate_working_bytes(shape, resolved(shape), 2) for shape in ((256, 256), (1024, 1024))]
    assert 8 < windowed[1] / windowed[0] <= 16
    budget = resolved((128, 128), window=None).memory_budget
    assert estimate_working_bytes((128, 128), resolved((128, 128), window=None), 2) == budget
