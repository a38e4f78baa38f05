"""Matrix-free linear algebra: the largest eigenvalue of a symmetric operator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy

#: Relative accuracy of the largest eigenvalue (the residual bound of the Ritz pair).
EIGENVALUE_TOL = 1e-3


def largest_eigenvalue(xp: Any, matvec: Callable[[Any], Any], size: int, dtype: Any, *,
                       tol: float = EIGENVALUE_TOL, max_steps: int = 300, seed: int = 0) -> float:
    """Largest eigenvalue of a symmetric positive semidefinite operator, by Lanczos.

    Parameters
    ----------
    xp : module
        Array module of the operator's vectors.
    matvec : callable
        ``matvec(v)`` returns ``A @ v`` for ``v`` of shape (size, 1).
    size : int
        Dimension of the operator.
    dtype : dtype
        Working dtype of the Lanczos vectors.
    tol : float
        Stop when the residual of the top Ritz pair, ``beta_m |s_m|``, is at
        most ``tol`` times the Ritz value; for a symmetric operator the
        eigenvalue then lies within that relative distance (in practice far
        closer: the error of a Ritz value shrinks with the residual squared).
    max_steps : int
        Lanczos steps before giving up with the best estimate.
    seed : int
        Seed of the start vector, so the result is reproducible.

    Returns
    -------
    float
        The top Ritz value, a lower bound of the largest eigenvalue.

    Notes
    -----
    Plain three-term Lanczos: memory for three vectors, whatever the number of
    steps.  Without reorthogonalisation the basis loses orthogonality once a
    Ritz value converges, which only adds spurious copies of converged values
    (Paige); the top Ritz value and its residual bound stay valid.
    """
    rng = numpy.random.default_rng(seed)
    start = numpy.abs(rng.standard_normal(size)) + 1.0  # overlaps any non-negative top vector
    vector = xp.asarray(start / numpy.linalg.norm(start), dtype=dtype)[:, None]
    previous = xp.zeros_like(vector)
    alphas: list[float] = []
    betas: list[float] = []
    ritz = 0.0
    for _ in range(min(max_steps, size)):
        image = matvec(vector)
        alpha = float(xp.vdot(vector, image))
        image -= alpha * vector
        if betas:
            image -= betas[-1] * previous
        alphas.append(alpha)
        beta = float(xp.linalg.norm(image))
        tridiagonal = numpy.diag(alphas) + numpy.diag(betas, 1) + numpy.diag(betas, -1)
        values, vectors = numpy.linalg.eigh(tridiagonal)
        ritz = float(values[-1])
        residual = beta * abs(vectors[-1, -1])
        if ritz <= 0:
            if beta <= 1e-30:
                return 0.0
        elif residual <= tol * ritz or beta <= 1e-12 * ritz:
            return ritz
        betas.append(beta)
        previous = vector
        vector = image / beta
    return ritz
