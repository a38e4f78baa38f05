"""Filters ``W`` built from affinities, and twicing.

``build_filter`` is the single dispatch point from validated options to an
operator: global or windowed affinity, normalised by row sums (NLM) or by the
largest eigenvalue (arc-cosine and NTK).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nlfilt.accelerate import accelerate
from nlfilt.backend import Backend
from nlfilt.kernels import make_kernel, safe_reciprocal
from nlfilt.linalg import largest_eigenvalue
from nlfilt.operators import (
    GlobalAffinity,
    WindowedAffinity,
)

#: Ways to turn ``K`` into ``W``: by row sums (NLM), by Sinkhorn scaling (NLM) or
#: by the largest eigenvalue (arc-cosine and NTK, gradient descent on a network).
NORMALIZATIONS = ("rows", "sinkhorn", "eigenvalue")

#: Sinkhorn-Knopp stops when every row sum of ``W = D K D`` is within this of 1.
SINKHORN_TOL = 1e-3
#: Sinkhorn-Knopp gives up (ValueError) after this many applications of ``K``.
SINKHORN_MAX_STEPS = 500


class ProgressMeter:
    """The products with ``K`` of one call, reported as ``callback(done, total)``.

    ``done`` (a float) counts the finished products plus the part of the
    current one that its operator reports (tiles of query rows in the global
    mode, window offsets in the windowed mode); ``total`` (an int) is the
    count expected.  The call is planned as ``stages`` (the passes of
    ``guide='pilot'``), each with its expected count.  Some counts are only
    known as the work runs (Lanczos for ``lambda_max``, Sinkhorn scaling,
    automatic stopping): a driver that learns how many products remain says
    so with :meth:`expect`, a product that would pass the total raises it by
    ``GROWTH`` times the products so far, and :meth:`finish` sets it to
    ``done``.  Every call comes from the thread that runs the filters, one
    after another, with ``done`` non-decreasing.

    Parameters
    ----------
    callback : callable
        ``callback(done, total)``.
    stages : sequence of int
        Products expected in each stage (at least one stage).
    """

    #: Fraction of the products so far by which an exceeded total is raised.
    GROWTH = 0.25

    def __init__(self, callback: Callable[[float, int], None], stages: Sequence[int]) -> None:
        self.callback = callback
        self.stages = [max(0, int(count)) for count in stages]
        self.stage = 0
        self.done = 0
        self.total = max(1, sum(self.stages))

    def next_stage(self) -> None:
        """Start the next stage: the total becomes the products done plus those of this and later stages."""
        self.stage += 1
        self.expect(self.stages[self.stage])

    def expect(self, remaining: int) -> None:
        """``remaining`` more products in this stage (besides the later stages' expected counts)."""
        self.total = max(1, self.done + int(remaining) + sum(self.stages[self.stage + 1 :]))

    def start(self) -> None:
        """A product begins: make room for it in the total."""
        if self.done + 1 > self.total:
            self.total = self.done + max(1, math.ceil(self.GROWTH * self.done))

    def part(self, fraction: float) -> None:
        """The current product is ``fraction`` done (the operator's hook; :meth:`end` reports its end)."""
        if fraction < 1:
            self.callback(self.done + fraction, self.total)

    def end(self) -> None:
        """A product is done."""
        self.done += 1
        self.callback(self.done, self.total)

    def finish(self) -> None:
        """The call is complete: report ``done == total`` (nothing when no product was made)."""
        if self.done:
            self.total = self.done
            self.callback(self.done, self.total)


@dataclass(frozen=True)
class FilterOptions:
    """Validated, fully resolved filter options (see :func:`nlfilt.denoise`)."""

    kernel: str
    patch: int | tuple[int, ...]
    window: int | tuple[int, ...] | None
    h: float | None
    sigma: float | None
    depth: int
    memory_budget: int
    normalize: str = "rows"
    window_shape: str = "box"


class Filter:
    """The filter ``W`` as an operator on (N, m) arrays.

    ``normalization`` says how ``W`` is made from ``K``:

    * ``'rows'``: ``W = diag(1 / K 1) K``; the row sums are computed with the
      first application and kept.
    * ``'sinkhorn'``: ``W = D K D`` with the diagonal ``D`` that makes every
      row (and, by symmetry, column) sum to 1 within ``SINKHORN_TOL``, found
      once by symmetric Sinkhorn-Knopp iterations ``d <- sqrt(d / K d)``.
    * ``'eigenvalue'``: ``W = K / lambda_max(K)``, the eigenvalue found by
      Lanczos on first use (or set by a Krylov trajectory) and kept.

    Every ``W`` is similar to a symmetric operator ``S`` (see
    :meth:`symmetric_form`), which is what lets twicing trajectories and their
    traces be computed with Lanczos.  ``applications`` counts the products
    with ``K`` made so far (a block of columns counts once); every product
    goes through :meth:`affinity_matmul`, which also reports it, with the
    operator's progress within it, to ``meter`` (a :class:`ProgressMeter`,
    possibly shared with other filters of the same call) when there is one.
    """

    def __init__(self, backend: Backend, affinity: Any, normalization: str,
                 meter: ProgressMeter | None = None) -> None:
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}")
        self.backend = backend
        self.affinity = affinity
        self.size = affinity.size
        self.normalization = normalization
        self.meter = meter
        self.row_sums = None
        self.scaling = None
        self.eigenvalue: float | None = None
        self.applications = 0

    def affinity_matmul(self, vectors: Any, row_sums: bool = False) -> Any:
        """Return ``K @ vectors``, or with ``row_sums`` ``K @ [vectors, 1]`` (one more column, the row
        sums); count the application, and report it to the meter."""
        self.applications += 1
        if self.meter is None:
            return self.affinity.matmul(vectors, row_sums=row_sums)
        self.meter.start()
        out = self.affinity.matmul(vectors, self.meter.part, row_sums=row_sums)
        self.meter.end()
        return out

    def compute_eigenvalue(self, dtype: Any) -> float:
        """Find (once) and return ``lambda_max(K)``."""
        if self.eigenvalue is None:
            self.eigenvalue = largest_eigenvalue(self.backend.xp, self.affinity_matmul, self.size, dtype)
        return self.eigenvalue

    def compute_row_sums(self, dtype: Any) -> Any:
        """Find (once) and return the row sums ``K 1``, shape (N, 1)."""
        if self.row_sums is None:
            nothing = self.backend.xp.empty((self.size, 0), dtype=dtype)
            self.row_sums = self.affinity_matmul(nothing, row_sums=True)
        return self.row_sums

    def compute_scaling(self, dtype: Any) -> Any:
        """Find (once) and return the Sinkhorn scaling ``d`` (N, 1) with ``d * (K d) ~ 1``.

        Raises ValueError when ``SINKHORN_MAX_STEPS`` iterations do not reach
        ``SINKHORN_TOL`` (not seen on images, whose ``K`` has a positive
        diagonal).
        """
        if self.scaling is not None:
            return self.scaling
        xp = self.backend.xp
        scaling = 1 / xp.sqrt(self.compute_row_sums(dtype))
        for _ in range(SINKHORN_MAX_STEPS):
            sums = scaling * self.affinity_matmul(scaling)
            if float(xp.abs(sums - 1).max()) <= SINKHORN_TOL:
                self.scaling = scaling
                return scaling
            scaling /= xp.sqrt(sums)
        raise ValueError(f"Sinkhorn normalisation did not reach row sums within {SINKHORN_TOL} of 1 in "
                         f"{SINKHORN_MAX_STEPS} iterations; use normalize='rows'")

    def apply(self, vectors: Any) -> Any:
        """Return ``W @ vectors``."""
        xp = self.backend.xp
        if self.normalization == "eigenvalue":
            eigenvalue = self.compute_eigenvalue(vectors.dtype)
            if eigenvalue <= 0:  # K == 0 (an all-zero image): W is 0 as well
                return xp.zeros_like(vectors)
            out = self.affinity_matmul(vectors)
            out *= vectors.dtype.type(1 / eigenvalue)
            return out
        if self.normalization == "sinkhorn":
            scaling = self.compute_scaling(vectors.dtype)
            out = self.affinity_matmul(vectors * scaling)
            out *= scaling
            return out
        if self.row_sums is None:  # the row sums ride on the first product (a view of its last column)
            out = self.affinity_matmul(vectors, row_sums=True)
            self.row_sums = out[:, -1:]
            out = out[:, :-1]
        else:
            out = self.affinity_matmul(vectors)
        out /= self.row_sums
        return out

    def symmetric_form(self, dtype: Any) -> tuple[Callable[[Any], Any], Any, float | None]:
        """Return ``(apply_b, e, scale)`` with ``W = diag(1/e) B diag(e) / scale`` and ``B`` symmetric.

        ``apply_b(v)`` is ``B @ v``; ``e`` is an (N, 1) array or None (the
        identity).  Rows: ``B = D^-1/2 K D^-1/2``, ``e = sqrt(K 1)``, scale 1.
        Sinkhorn: ``B = W``.  Eigenvalue: ``B = K`` and ``scale`` is
        ``lambda_max`` when already known, else None for the caller to set
        (``self.eigenvalue``) from its own Lanczos run.
        """
        if self.normalization == "rows":
            similarity = self.backend.xp.sqrt(self.compute_row_sums(dtype))
            inverse = safe_reciprocal(self.backend.xp, similarity)

            def apply_rows(vectors: Any) -> Any:
                out = self.affinity_matmul(vectors * inverse)
                out *= inverse
                return out
            return apply_rows, similarity, 1.0
        if self.normalization == "sinkhorn":
            self.compute_scaling(dtype)
            return self.apply, None, 1.0
        return self.affinity_matmul, None, self.eigenvalue

    def row(self, index: int) -> Any:
        """Return row ``index`` of ``W`` (length N) without building ``W``."""
        if self.normalization == "sinkhorn":
            rows = self.affinity.row(index)
            scaling = self.compute_scaling(rows.dtype)[:, 0]
            rows *= scaling
            rows *= scaling[index]
            return rows
        return self._normalise(self.affinity.row(index))

    def dense(self) -> Any:
        """Return ``W`` as a dense matrix on the backend (small images only)."""
        matrix = self.affinity.dense()
        if self.normalization == "sinkhorn":
            scaling = self.compute_scaling(matrix.dtype)
            matrix *= scaling
            matrix *= scaling.T
            return matrix
        return self._normalise(matrix)

    def _normalise(self, rows: Any) -> Any:
        """Turn whole rows of ``K`` (one row, or the matrix) into the same rows of ``W``, in place."""
        if self.normalization == "rows":
            rows /= rows.sum(axis=-1, keepdims=True)
            return rows
        eigenvalue = self.compute_eigenvalue(rows.dtype)
        if eigenvalue <= 0:  # K == 0 (an all-zero image): W is 0 as well
            return rows * 0
        rows *= rows.dtype.type(1 / eigenvalue)
        return rows


def keeps_weights(options: FilterOptions, reuse: bool) -> bool:
    """Whether a windowed filter makes several products with ``K`` and should keep its weights (when
    they fit the memory budget): twicing steps (``reuse``), ``lambda_max`` (arc-cosine, NTK) or the
    Sinkhorn scaling."""
    return reuse or options.normalize != "rows"


def build_filter(backend: Backend, image: Any, options: FilterOptions, *, reuse: bool,
                 meter: ProgressMeter | None = None) -> Filter:
    """Build the filter of ``image`` (H, W, C on the backend) for ``options``.

    ``reuse`` says whether the filter will be applied more than once, which
    lets a windowed operator keep its weights when they fit the memory budget.
    ``meter`` receives the filter's products with ``K`` (see :class:`Filter`).
    """
    kernel = make_kernel(options.kernel, h=options.h, sigma=options.sigma, depth=options.depth)
    features = kernel.features(backend.xp, image, options.patch)
    if options.window is None:
        affinity = GlobalAffinity(backend, features, kernel, options.patch, options.memory_budget,
                                  columns=image.shape[2] + 1)
    else:
        affinity = WindowedAffinity(backend, features, kernel, options.patch, options.window,
                                    options.memory_budget, reuse=keeps_weights(options, reuse),
                                    shape=options.window_shape)
    affinity = accelerate(backend, affinity, kernel)
    return Filter(backend, affinity, options.normalize, meter)


def twicing(filter_: Filter, image: Any, iterations: int) -> Any:
    """Run ``z_t = z_{t-1} + W (y - z_{t-1})`` from ``z_0 = 0`` for ``iterations`` steps.

    ``image`` is (N, C) on the backend.  Once the first step has found the
    normalisation, the remaining products are known and told to the filter's
    meter.
    """
    estimate = filter_.apply(image)
    if filter_.meter is not None:
        filter_.meter.expect(iterations - 1)
    for _ in range(2, iterations + 1):
        estimate += filter_.apply(image - estimate)
    return estimate
