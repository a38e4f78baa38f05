"""Filters ``W`` built from affinities, and twicing.

``build_filter`` is the single dispatch point from validated options to an
operator: global or windowed affinity, normalised by row sums (NLM) or by the
largest eigenvalue (arc-cosine and NTK).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nlfilt.backend import Backend
from nlfilt.kernels import make_kernel
from nlfilt.linalg import largest_eigenvalue
from nlfilt.operators import GlobalAffinity, WindowedAffinity


@dataclass(frozen=True)
class FilterOptions:
    """Validated, fully resolved filter options (see :func:`nlfilt.denoise`)."""

    kernel: str
    patch: int
    window: int | None
    h: float | None
    sigma: float | None
    depth: int
    memory_budget: int


class Filter:
    """The filter ``W`` as an operator on (N, m) arrays.

    ``kernel='nlm'``: ``W = diag(1 / K 1) K``; the row sums are computed with
    the first application and kept.  Other kernels: ``W = K / lambda_max(K)``,
    the eigenvalue found by Lanczos on first use and kept.
    """

    def __init__(self, backend: Backend, affinity: Any, normalise_rows: bool) -> None:
        self.backend = backend
        self.affinity = affinity
        self.size = affinity.size
        self.row_sums = None
        self.eigenvalue: float | None = None
        self.normalise_rows = normalise_rows

    def compute_eigenvalue(self, dtype: Any) -> float:
        """Find (once) and return ``lambda_max(K)``."""
        if self.eigenvalue is None:
            self.eigenvalue = largest_eigenvalue(self.backend.xp, self.affinity.matmul, self.size, dtype)
        return self.eigenvalue

    def apply(self, vectors: Any) -> Any:
        """Return ``W @ vectors``."""
        xp = self.backend.xp
        if not self.normalise_rows:
            eigenvalue = self.compute_eigenvalue(vectors.dtype)
            if eigenvalue <= 0:  # K == 0 (an all-zero image): W is 0 as well
                return xp.zeros_like(vectors)
            out = self.affinity.matmul(vectors)
            out *= vectors.dtype.type(1 / eigenvalue)
            return out
        if self.row_sums is None:
            ones = xp.ones((self.size, 1), dtype=vectors.dtype)
            out = self.affinity.matmul(xp.concatenate([vectors, ones], axis=1))
            self.row_sums = out[:, -1:].copy()
            out = out[:, :-1]
        else:
            out = self.affinity.matmul(vectors)
        out /= self.row_sums
        return out

    def dense(self) -> Any:
        """Return ``W`` as a dense matrix on the backend (small images only)."""
        matrix = self.affinity.dense()
        if self.normalise_rows:
            matrix /= matrix.sum(axis=1, keepdims=True)
            return matrix
        eigenvalue = self.compute_eigenvalue(matrix.dtype)
        if eigenvalue <= 0:
            return matrix * 0
        matrix *= matrix.dtype.type(1 / eigenvalue)
        return matrix


def build_filter(backend: Backend, image: Any, options: FilterOptions, *, reuse: bool) -> Filter:
    """Build the filter of ``image`` (H, W, C on the backend) for ``options``.

    ``reuse`` says whether the filter will be applied more than once, which
    lets a windowed operator keep its weights when they fit the memory budget.
    """
    kernel = make_kernel(options.kernel, h=options.h, sigma=options.sigma, depth=options.depth)
    features = kernel.features(backend.xp, image, options.patch)
    if options.window is None:
        affinity = GlobalAffinity(backend, features, kernel, options.patch,
                                  options.memory_budget, columns=image.shape[2] + 1)
    else:
        affinity = WindowedAffinity(backend, features, kernel, options.patch, options.window,
                                    options.memory_budget, reuse=reuse or options.kernel != "nlm")
    return Filter(backend, affinity, normalise_rows=options.kernel == "nlm")


def twicing(filter_: Filter, image: Any, iterations: int,
            progress: Callable[[int, int], None] | None = None) -> Any:
    """Run ``z_t = z_{t-1} + W (y - z_{t-1})`` from ``z_0 = 0`` for ``iterations`` steps.

    ``image`` is (N, C) on the backend; ``progress(t, iterations)`` is called
    after each step.
    """
    estimate = filter_.apply(image)
    if progress is not None:
        progress(1, iterations)
    for step in range(2, iterations + 1):
        estimate += filter_.apply(image - estimate)
        if progress is not None:
            progress(step, iterations)
    return estimate
