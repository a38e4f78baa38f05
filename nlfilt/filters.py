"""Filters ``W`` built from affinities, and twicing.

``build_filter`` is the single dispatch point from validated options to an
operator: global or windowed affinity, normalised by row sums (NLM) or by the
largest eigenvalue (arc-cosine and NTK).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nlfilt import cuda
from nlfilt.backend import Backend
from nlfilt.kernels import make_kernel, safe_reciprocal
from nlfilt.linalg import largest_eigenvalue
from nlfilt.operators import (
    CudaBoxWindowedNLM,
    CudaFusedGlobal,
    CudaWindowedNLM,
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
    normalize: str = "rows"


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
    with ``K`` made so far (a block of columns counts once).
    """

    def __init__(self, backend: Backend, affinity: Any, normalization: str) -> None:
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}")
        self.backend = backend
        self.affinity = affinity
        self.size = affinity.size
        self.normalization = normalization
        self.row_sums = None
        self.scaling = None
        self.eigenvalue: float | None = None
        self.applications = 0

    def affinity_matmul(self, vectors: Any) -> Any:
        """Return ``K @ vectors`` (and count the application)."""
        self.applications += 1
        return self.affinity.matmul(vectors)

    def compute_eigenvalue(self, dtype: Any) -> float:
        """Find (once) and return ``lambda_max(K)``."""
        if self.eigenvalue is None:
            self.eigenvalue = largest_eigenvalue(self.backend.xp, self.affinity_matmul, self.size, dtype)
        return self.eigenvalue

    def compute_row_sums(self, dtype: Any) -> Any:
        """Find (once) and return the row sums ``K 1``, shape (N, 1)."""
        if self.row_sums is None:
            self.row_sums = self.affinity_matmul(self.backend.xp.ones((self.size, 1), dtype=dtype))
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
        if self.row_sums is None:
            ones = xp.ones((self.size, 1), dtype=vectors.dtype)
            out = self.affinity_matmul(xp.concatenate([vectors, ones], axis=1))
            self.row_sums = out[:, -1:].copy()
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


#: CPU nanoseconds per application of ``W`` on the 2-core development machine
#: (benchmarks/results/cpu.md), used to refuse hour-long runs.  Global mode, per
#: ordered pixel pair (N^2 of them; symmetry already halves the work): the kernel
#: profile (NTK: per layer) plus the GEMM, which grows with the patch dimension d.
#: Windowed mode: per pixel and window position.
GLOBAL_NS_PER_PAIR = {"nlm": 2.0, "arccos": 2.9, "ntk": 2.3}
GLOBAL_NS_PER_PAIR_AND_DIM = 0.008
WINDOWED_NS_PER_PAIR = 3.5
#: Applications of ``K`` that Lanczos typically needs for lambda_max.
EIGENVALUE_APPLICATIONS = 15
#: Applications of ``K`` that Sinkhorn scaling needs (Set12 at sigma 25, window 11: 13; tolerance 1e-3).
SINKHORN_APPLICATIONS = 13
#: Applications of ``K`` that ``iterations='auto'`` typically needs per pass, in its two runs (the
#: image and the SURE twin): stepping (windowed) looks at about 5 steps, a Krylov trajectory
#: (global) takes 10-30 Lanczos steps (Set12, benchmarks/results/quality.md).
AUTO_APPLICATIONS = {"stepping": 10, "krylov": 50}


def expected_applications(options: FilterOptions, iterations: int | str, guided: bool) -> int:
    """Typical products with ``K`` for :func:`nlfilt.denoise` with these options (for cost estimates)."""
    if iterations == "auto":
        per_pass = AUTO_APPLICATIONS["stepping" if options.window is not None else "krylov"]
        runs = 2
    else:
        per_pass, runs = int(iterations), 1
    if options.kernel != "nlm" and not (iterations == "auto" and options.window is None):
        per_pass += runs * EIGENVALUE_APPLICATIONS  # the Krylov trajectory finds lambda_max itself
    if options.kernel == "nlm" and options.normalize == "sinkhorn":
        per_pass += runs * SINKHORN_APPLICATIONS
    return per_pass * (2 if guided else 1)


def estimate_cpu_seconds(shape: tuple[int, ...], options: FilterOptions, applications: int) -> float:
    """Rough CPU seconds for ``applications`` products with ``K`` on an image of ``shape``.

    The pairs each application covers (N^2 in the global mode, N window^2
    in the windowed one) times their measured cost.  Good to a factor of
    about two on the development machine; meant for refusing runs of hours,
    not for predicting seconds.  :func:`expected_applications` gives the
    count for a call of :func:`nlfilt.denoise`.
    """
    pixels = shape[0] * shape[1]
    dims = options.patch**2 * (shape[2] if len(shape) == 3 else 1)
    if options.window is None:
        layers = options.depth + 1 if options.kernel == "ntk" else 1
        per_pair = GLOBAL_NS_PER_PAIR[options.kernel] * layers + GLOBAL_NS_PER_PAIR_AND_DIM * dims
        pairs = pixels * pixels
    else:
        per_pair = WINDOWED_NS_PER_PAIR
        pairs = pixels * options.window**2
    return pairs * per_pair * 1e-9 * applications


#: Lanczos steps a Krylov trajectory typically keeps (Set12, benchmarks/results/trajectory.md: 8-85).
TYPICAL_KRYLOV_STEPS = 100


def estimate_working_bytes(shape: tuple[int, ...], options: FilterOptions, workers: int,
                           iterations: int | str = 1) -> int:
    """Rough peak bytes of a :func:`nlfilt.denoise` call on an image of ``shape`` (float32).

    Global mode: the operator is bounded by ``options.memory_budget`` (it
    refuses more).  Windowed mode: per worker thread the channel
    differences, five padded work images, the profile scratch and the
    accumulator planes, plus the image, the right-hand sides and the result.
    ``iterations='auto'`` adds the SURE twin (a second operator and its
    cached weights, up to the budget) and, in the global mode, the Lanczos
    bases of both runs (``TYPICAL_KRYLOV_STEPS`` vectors of N x C numbers each).
    """
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    pixels = height * width
    if options.window is None:
        needed = options.memory_budget
        if iterations == "auto":
            needed += options.memory_budget + 2 * 4 * TYPICAL_KRYLOV_STEPS * pixels * channels
        return needed
    padded = (height + options.patch - 1) * (width + options.patch - 1)
    per_worker = padded * (channels + 5) + pixels * (5 + 2 * (channels + 1))
    needed = 4 * (workers * per_worker + 6 * pixels * (channels + 1))
    if iterations == "auto":
        needed += options.memory_budget  # the twin's cached weights; its work buffers are shared in time
    return needed


def build_filter(backend: Backend, image: Any, options: FilterOptions, *, reuse: bool) -> Filter:
    """Build the filter of ``image`` (H, W, C on the backend) for ``options``.

    ``reuse`` says whether the filter will be applied more than once, which
    lets a windowed operator keep its weights when they fit the memory budget.
    """
    kernel = make_kernel(options.kernel, h=options.h, sigma=options.sigma, depth=options.depth)
    features = kernel.features(backend.xp, image, options.patch)
    if options.window is None:
        fused = backend.name == "gpu" and cuda.opted_in("nlfilt_global_fused")
        global_operator = CudaFusedGlobal if fused else GlobalAffinity
        affinity = global_operator(backend, features, kernel, options.patch,
                                   options.memory_budget, columns=image.shape[2] + 1)
    else:
        windowed = WindowedAffinity
        if backend.name == "gpu" and options.kernel == "nlm":
            box = cuda.opted_in("nlfilt_windowed_box") and options.patch <= cuda.BOX_MAX_PATCH
            windowed = CudaBoxWindowedNLM if box else CudaWindowedNLM
        affinity = windowed(backend, features, kernel, options.patch, options.window,
                            options.memory_budget, reuse=reuse or options.kernel != "nlm")
    normalization = options.normalize if options.kernel == "nlm" else "eigenvalue"
    return Filter(backend, affinity, normalization)


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
