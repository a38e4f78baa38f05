"""Kernel profiles against independent definitions (Monte Carlo, the layer recursion)."""

from __future__ import annotations

import numpy

from nlfilt.backend import get_backend
from nlfilt.kernels import make_kernel
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
