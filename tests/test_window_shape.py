"""The tent window: its weights, positive semidefinite tangent filters, and stable twicing."""

from __future__ import annotations

import numpy
import pytest

import nlfilt

import reference

RNG = numpy.random.default_rng(41)
IMAGE = RNG.random((11, 12)) * 100


@pytest.mark.parametrize(("kernel", "extra"), [("nlm", {"h": 20.0, "sigma": 5.0}), ("arccos", {}),
                                               ("ntk", {"depth": 2})])
def test_tent_window_matches_the_dense_reference(kernel, extra):
    options = {"kernel": kernel, "patch": 3, "window": 5, **extra}
    dense = reference.affinity(IMAGE, window_shape="tent", **options)
    expected = (dense / dense.sum(axis=1, keepdims=True) if kernel == "nlm"
                else dense / numpy.linalg.eigvalsh(dense)[-1])
    weights = nlfilt.filter_matrix(IMAGE, window_shape="tent", dtype=numpy.float64, device="cpu", **options)
    numpy.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize(("kernel", "depth"), [("arccos", 1), ("ntk", 2), ("ntk", 3)])
@pytest.mark.parametrize("window", [3, 7])
def test_tapered_tangent_filters_are_positive_semidefinite_where_the_box_is_not(kernel, depth, window):
    image = numpy.random.default_rng(window).random((12, 12)) * 255
    options = {"kernel": kernel, "depth": depth, "patch": 3, "window": window, "dtype": numpy.float64,
               "device": "cpu"}
    tent = numpy.linalg.eigvalsh(nlfilt.filter_matrix(image, window_shape="tent", **options))
    assert tent[0] >= -1e-6 * tent[-1]
    box = numpy.linalg.eigvalsh(nlfilt.filter_matrix(image, **options))
    assert box[0] < -1e-3 * box[-1]  # the hard window is indefinite: the test can tell


@pytest.mark.parametrize("kernel", ["arccos", "ntk"])
def test_a_thousand_twicing_steps_never_increase_the_residual(kernel):
    weights = nlfilt.filter_matrix(IMAGE, kernel=kernel, patch=3, window=5, window_shape="tent",
                                   dtype=numpy.float64, device="cpu")
    flat = IMAGE.reshape(-1)
    estimate = numpy.zeros_like(flat)
    residuals = []
    for _ in range(1000):
        estimate = estimate + weights @ (flat - estimate)
        residuals.append(numpy.linalg.norm(flat - estimate))
    steps = zip(residuals, residuals[1:], strict=False)
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in steps)
    box = nlfilt.filter_matrix(IMAGE, kernel=kernel, patch=3, window=5, dtype=numpy.float64, device="cpu")
    estimate = numpy.zeros_like(flat)
    for _ in range(1000):
        estimate = estimate + box @ (flat - estimate)
    assert numpy.linalg.norm(flat - estimate) > residuals[0]  # the box window's twicing diverges


def test_the_krylov_trajectory_follows_tapered_twicing():
    options = {"kernel": "arccos", "patch": 3, "window": 5, "window_shape": "tent", "dtype": numpy.float64,
               "device": "cpu"}
    weights = nlfilt.filter_matrix(IMAGE, **options)
    flat = IMAGE.reshape(-1)
    path = nlfilt.twicing_trajectory(IMAGE, 300, tol=1e-8, **options)
    estimate = numpy.zeros_like(flat)
    for step in range(1, 301):
        estimate = estimate + weights @ (flat - estimate)
        if step in (1, 10, 100, 300):
            numpy.testing.assert_allclose(path.estimate(step).reshape(-1), estimate, rtol=1e-5,
                                          atol=1e-6 * numpy.abs(estimate).max())


def test_the_compiled_operator_applies_the_tent():
    from nlfilt import jit

    image = numpy.linspace(0, 200, 70)[None, :] + RNG.normal(0, 20, (40, 70))  # weights well above 0
    options = {"window": 9, "window_shape": "tent", "sigma": 20.0, "dtype": numpy.float64, "device": "cpu",
               "iterations": 2}
    compiled = nlfilt.denoise(image, **options)
    original = jit.load_numba
    jit.load_numba = lambda: None
    try:
        array = nlfilt.denoise(image, **options)
    finally:
        jit.load_numba = original
    numpy.testing.assert_allclose(compiled, array, rtol=1e-10)
    assert not numpy.allclose(compiled, nlfilt.denoise(image, **dict(options, window_shape="box")))


@pytest.mark.parametrize(("options", "message"), [({"window_shape": "round"}, "window_shape must be"),
                                                  ({"window": None, "window_shape": "tent"}, "global mode")])
def test_window_shape_errors_name_the_parameter(options, message):
    with pytest.raises(ValueError, match=message):
        nlfilt.denoise(IMAGE, device="cpu", **options)
