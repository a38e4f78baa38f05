"""Matrix-free linear algebra: the largest eigenvalue of a symmetric operator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy

from nlfilt.backend import host_array

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


class BlockLanczos:
    """Independent Lanczos processes for the columns of a block, sharing each operator product.

    Column ``c`` builds an orthonormal basis of the Krylov space
    ``span{u_c, A u_c, A^2 u_c, ...}`` of a symmetric operator ``A`` and the
    tridiagonal ``T_c = V_c^T A V_c``; one call of :meth:`step` applies ``A``
    once to the block of all columns' newest vectors (the product with
    several right-hand sides costs little more than with one for the
    operators of this package).  The bases are kept, and each new vector is
    orthogonalised against all of them twice (classical Gram-Schmidt),
    so the bases stay orthonormal to rounding and no spurious Ritz values
    appear; memory is ``steps x N x k`` numbers.

    A column whose Krylov space is invariant (its next vector vanishes) stops
    growing; its ``T_c`` is then exact.

    Parameters
    ----------
    xp : module
        Array module of the vectors.
    matvec : callable
        ``matvec(block)`` returns ``A @ block`` for a block of shape (N, k).
    start : array, shape (N, k)
        Start vectors (any non-zero norms; a zero column gets an empty basis).
    """

    def __init__(self, xp: Any, matvec: Callable[[Any], Any], start: Any) -> None:
        self.xp = xp
        self.matvec = matvec
        self.norms = numpy.asarray(host_array(xp.linalg.norm(start, axis=0)), dtype=numpy.float64)
        self.active = self.norms > 0
        scale = numpy.where(self.active, 1 / numpy.where(self.active, self.norms, 1), 0)
        first = start * xp.asarray(scale, dtype=start.dtype)
        self._basis = xp.empty((8,) + start.shape, dtype=start.dtype)
        self._basis[0] = first
        self.steps = numpy.zeros(start.shape[1], dtype=int)  # alphas found per column
        self.alphas: list[numpy.ndarray] = []
        self.betas: list[numpy.ndarray] = []

    @property
    def done(self) -> bool:
        """True when every column's Krylov space is exhausted."""
        return not self.active.any()

    def step(self) -> None:
        """Extend every active column's basis by one vector (one product with ``A``)."""
        xp = self.xp
        count = len(self.alphas)
        newest = self._basis[count]
        image = self.matvec(newest)
        alpha = host_array(xp.einsum("nk,nk->k", newest, image)).astype(numpy.float64)
        basis = self._basis[: count + 1]
        for _ in range(2):  # twice is enough (Giraud et al.), once is not
            image -= xp.einsum("mnk,mk->nk", basis, xp.einsum("mnk,nk->mk", basis, image))
        beta = host_array(xp.linalg.norm(image, axis=0)).astype(numpy.float64)
        self.alphas.append(numpy.where(self.active, alpha, 0.0))
        self.steps += self.active
        # a vanishing residual (relative to the operator's scale seen so far) ends the column
        size = max(float(numpy.abs(numpy.concatenate(self.alphas)).max()), float(beta.max()), 1e-300)
        self.active &= beta > 1e-10 * size
        self.betas.append(numpy.where(self.active, beta, 0.0))
        if count + 2 > self._basis.shape[0]:
            grown = xp.empty((2 * self._basis.shape[0],) + self._basis.shape[1:], dtype=self._basis.dtype)
            grown[: count + 1] = basis
            self._basis = grown
        scale = numpy.where(self.active, 1 / numpy.where(self.active, beta, 1), 0)
        self._basis[count + 1] = image * xp.asarray(scale, dtype=image.dtype)

    def tridiagonal(self, column: int) -> numpy.ndarray:
        """Return ``T_c`` (steps_c x steps_c, float64 on the host)."""
        steps = int(self.steps[column])
        alphas = [values[column] for values in self.alphas[:steps]]
        betas = [values[column] for values in self.betas[: steps - 1]]
        return numpy.diag(alphas) + numpy.diag(betas, 1) + numpy.diag(betas, -1)

    def basis(self, column: int) -> Any:
        """Return ``V_c`` as a (steps_c, N) array on the backend."""
        return self._basis[: int(self.steps[column]), :, column]
