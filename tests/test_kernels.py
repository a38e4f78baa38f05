"""Kernel profiles against independent definitions (Monte Carlo, the layer recursion)."""

from __future__ import annotations

import os
import re

import numpy
import pytest

import nlfilt
from nlfilt import cuda
from nlfilt.backend import get_backend
from nlfilt.kernels import NLMKernel, kernel_names, make_kernel, register_kernel, unregister_kernel
from nlfilt.operators import GlobalAffinity

import reference

IMAGE = numpy.random.default_rng(7).normal(size=(6, 6, 2))
# dSigma = (pi - arccos c) / pi has a square-root singularity at c = 1, so a rounding
# error of 1e-16 in the cosine of nearly parallel patches moves it by ~1e-8.
NTK_RTOL = 1e-7


def dense_affinity(kernel: str, depth: int = 1) -> numpy.ndarray:
    """nlfilt's global affinity K of IMAGE (patch 3), float64."""
    kernel_object = make_kernel(kernel, h=None, sigma=None, depth=depth)
    features = kernel_object.features(numpy, IMAGE, 3)
    return GlobalAffinity(get_backend("cpu"), features, kernel_object, 3, 2**26, columns=1).dense()


def test_arccos_matches_monte_carlo_relu_expectation():
    """Sigma^1_ij = 2 E[relu(w.x) relu(w.x')] over standard Gaussian w (He initialisation)."""
    vectors = reference.patches(IMAGE, 3)
    affinity = dense_affinity("arccos")
    weights = numpy.random.default_rng(11).standard_normal((1_000_000, vectors.shape[1]))
    pairs = [(0, 0), (0, 1), (3, 20), (7, 35), (14, 15)]
    for i, j in pairs:
        first = numpy.maximum(weights @ vectors[i], 0)
        second = numpy.maximum(weights @ vectors[j], 0)
        estimate = 2 * numpy.mean(first * second)
        assert abs(affinity[i, j] - estimate) <= 0.01 * abs(estimate), (i, j)


def test_ntk_depth_one_is_arccos_plus_first_layer_term():
    vectors = reference.patches(IMAGE, 3)
    gram = vectors @ vectors.T
    norms = numpy.sqrt(numpy.diag(gram))
    angle = numpy.arccos(numpy.clip(gram / numpy.outer(norms, norms), -1, 1))
    expected = dense_affinity("arccos") + gram * (numpy.pi - angle) / numpy.pi
    numpy.testing.assert_allclose(dense_affinity("ntk", depth=1), expected, rtol=NTK_RTOL)


def test_ntk_matches_the_layer_recursion_at_depth_three():
    expected = reference.affinity(IMAGE, kernel="ntk", patch=3, window=None, depth=3)
    numpy.testing.assert_allclose(dense_affinity("ntk", depth=3), expected, rtol=NTK_RTOL)


def test_ntk_diagonal_grows_with_depth():
    """Theta^L_ii = (L + 1) |P_i|^2: every layer adds the norm once more."""
    squares = numpy.sum(reference.patches(IMAGE, 3) ** 2, axis=1)
    for depth in (1, 2, 4):
        numpy.testing.assert_allclose(numpy.diag(dense_affinity("ntk", depth=depth)), (depth + 1) * squares,
                                      rtol=NTK_RTOL)


def test_cosine_kernels_give_zero_for_a_zero_patch():
    image = numpy.ones((5, 5))
    image[:3, :3] = 0  # the patch of pixel (1, 1) is all zeros
    for name in ("arccos", "ntk"):
        kernel = make_kernel(name, h=None, sigma=None, depth=2)
        affinity = GlobalAffinity(get_backend("cpu"), image[:, :, None], kernel, 3, 2**26, columns=1).dense()
        assert numpy.isfinite(affinity).all()
        assert (affinity[6] == 0).all() and (affinity[:, 6] == 0).all()


# A kernel defined here, registered without editing the package, run through the public functions

class CauchyKernel(NLMKernel):
    """``K_ij = 1 / (1 + |P_i - P_j|^2 / (d h^2))``: a heavy-tailed non-local means, rows normalised.

    It reuses NLM's features and statistic (``t = -|P_i - P_j|^2 / (d h^2)``, no noise offset) and
    brings its own profile, as array code, as a compiled profile (nlfilt.jit's windowed operator) and as
    the body of a CUDA device function (which nlfilt.cuda compiles into nlfilt_profile_cauchy_test and
    nlfilt_global_fused_cauchy_test).
    """

    name = "cauchy-test"
    h_per_sigma = 1.5
    cuda_profile = """
        t = t > (NLFILT_REAL)0 ? (NLFILT_REAL)0 : t;
        return (NLFILT_REAL)1 / ((NLFILT_REAL)1 - t);
    """
    fused_windowed = False  # the fused windowed CUDA operators have NLM's profile built in

    @staticmethod
    def jit_profile(t, count, inverse, here, there, scratch, layers, parameters):
        """The compiled profile (nlfilt.jit compiles it into its windowed operator): ``t`` holds the box
        sums D, ``parameters`` NLM's ``[offset, floor]`` (offset 0 here)."""
        for i in range(count):
            t[i] = 1 / (1 + max(t[i] - parameters[0], t[i] - t[i]))

    def __init__(self, h: float, sigma: float) -> None:
        super().__init__(h=h, sigma=0.0)  # no 2 sigma^2 offset

    def profile(self, xp, t, scratch):
        xp.minimum(t, 0, out=t)
        xp.subtract(1, t, out=t)
        return xp.reciprocal(t, out=t)


@pytest.fixture
def cauchy():
    register_kernel(CauchyKernel)
    yield CauchyKernel.name
    unregister_kernel(CauchyKernel.name)


def cauchy_filter(image, window, h) -> numpy.ndarray:
    vectors = reference.patches(image, 3)
    squares = ((vectors[:, None, :] - vectors[None, :, :]) ** 2).sum(axis=2)
    affinity = 1 / (1 + squares / (vectors.shape[1] * h**2))
    affinity *= reference.window_mask(image.shape[:2], window)
    return affinity / affinity.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("window", [None, 5])
def test_a_kernel_registered_from_outside_runs_through_the_public_functions(cauchy, window):
    image = numpy.random.default_rng(3).random((12, 13, 2)) * 100
    options = {"kernel": cauchy, "patch": 3, "window": window, "h": 20.0, "device": "cpu",
               "dtype": numpy.float64}
    weights = cauchy_filter(image, window, 20.0)
    numpy.testing.assert_allclose(nlfilt.filter_matrix(image, **options), weights, rtol=1e-10)
    expected = weights @ image.reshape(-1, 2)
    numpy.testing.assert_allclose(nlfilt.denoise(image, **options).reshape(-1, 2), expected, rtol=1e-10)
    twice = expected + weights @ (image.reshape(-1, 2) - expected)
    numpy.testing.assert_allclose(nlfilt.denoise(image, iterations=2, **options).reshape(-1, 2), twice,
                                  rtol=1e-10)
    row = nlfilt.filter_row(image, (4, 7), **options)
    numpy.testing.assert_allclose(row.reshape(-1), weights[4 * 13 + 7], rtol=1e-10)
    # its declared default bandwidth: h = 1.5 sigma
    sigma = 7.0
    default = nlfilt.denoise(image, kernel=cauchy, patch=3, window=window, sigma=sigma, device="cpu",
                             dtype=numpy.float64)
    numpy.testing.assert_allclose(default.reshape(-1, 2), cauchy_filter(image, window, 1.5 * sigma)
                                  @ image.reshape(-1, 2), rtol=1e-10)


def test_unknown_kernel_names_raise_and_names_are_registered_once():
    with pytest.raises(ValueError, match="kernel must be one of 'nlm', 'arccos', 'ntk'"):
        make_kernel("gauss", h=1.0, sigma=1.0, depth=1)
    with pytest.raises(ValueError, match="already registered"):
        register_kernel(type("Other", (NLMKernel,), {"name": "nlm"}))
    assert kernel_names()[:3] == ("nlm", "arccos", "ntk")


def test_a_registered_kernel_s_cuda_profile_is_compiled_with_the_package(cauchy):
    """Its profile and fused operator join the source, compile with NVRTC (CI) and take the launch
    arguments every CUDA profile takes."""
    names = set(re.findall(r"__global__\s+void\s+(\w+)", cuda.source()))
    assert {"nlfilt_profile_cauchy_test", "nlfilt_global_fused_cauchy_test"} <= names
    kernel = make_kernel(cauchy, h=1.0, sigma=0.0, depth=1)
    assert cuda.signatures()[cuda.profile_kernel(kernel)] == ("real*", "int64", "int32", "real")
    if os.environ.get("NLFILT_REQUIRE_NVRTC") != "1":
        pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy's NVRTC binding is not installed")
    ptx, log = cuda.compile_to_ptx(numpy.float32, "compute_90")
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    assert ".entry nlfilt_profile_cauchy_test" in ptx and log.strip() == ""
