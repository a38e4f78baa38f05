"""Lanczos largest eigenvalue against dense eigendecomposition."""

from __future__ import annotations

import numpy
import pytest

from nlfilt.linalg import largest_eigenvalue


def spectrum_matrix(eigenvalues, seed=0) -> numpy.ndarray:
    size = len(eigenvalues)
    basis, _ = numpy.linalg.qr(numpy.random.default_rng(seed).standard_normal((size, size)))
    return (basis * eigenvalues) @ basis.T


@pytest.mark.parametrize("dtype", [numpy.float64, numpy.float32])
@pytest.mark.parametrize(
    "eigenvalues",
    [
        numpy.linspace(0, 1, 300),  # no gap at the top: the hard case
        numpy.r_[numpy.zeros(250), numpy.geomspace(1e-3, 50, 50)],
        numpy.r_[numpy.full(299, 1.0), 1.001],  # clustered top
    ],
    ids=["uniform", "decaying", "clustered"],
)
def test_largest_eigenvalue_within_tolerance(eigenvalues, dtype):
    matrix = spectrum_matrix(eigenvalues).astype(dtype)
    found = largest_eigenvalue(numpy, lambda v: matrix @ v, matrix.shape[0], dtype)
    exact = eigenvalues.max()
    assert found <= exact * (1 + 1e-5)  # a Ritz value never exceeds the top eigenvalue
    assert abs(found - exact) <= 1e-3 * exact  # the documented accuracy of lambda_max


def test_zero_operator_has_zero_eigenvalue():
    assert largest_eigenvalue(numpy, lambda v: 0 * v, 50, numpy.float64) == 0.0


def test_result_is_reproducible():
    matrix = spectrum_matrix(numpy.linspace(0, 1, 100))
    first = largest_eigenvalue(numpy, lambda v: matrix @ v, 100, numpy.float64)
    assert first == largest_eigenvalue(numpy, lambda v: matrix @ v, 100, numpy.float64)
