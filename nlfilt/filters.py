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
from nlfilt.operators import CudaWindowedNLM, GlobalAffinity, WindowedAffinity


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

    def row(self, index: int) -> Any:
        """Return row ``index`` of ``W`` (length N) without building ``W``."""
        return self._normalise(self.affinity.row(index))

    def dense(self) -> Any:
        """Return ``W`` as a dense matrix on the backend (small images only)."""
        return self._normalise(self.affinity.dense())

    def _normalise(self, rows: Any) -> Any:
        """Turn whole rows of ``K`` (one row, or the matrix) into the same rows of ``W``, in place."""
        if self.normalise_rows:
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


def estimate_cpu_seconds(shape: tuple[int, ...], options: FilterOptions, iterations: int) -> float:
    """Rough CPU seconds for ``iterations`` twicing steps on an image of ``shape``.

    The pairs each application of ``W`` covers (N^2 in the global mode,
    N window^2 in the windowed one) times their measured cost, times the
    applications (plus about 15 for lambda_max with 'arccos' and 'ntk').
    Good to a factor of about two on the development machine; meant for
    refusing runs of hours, not for predicting seconds.
    """
    pixels = shape[0] * shape[1]
    dims = options.patch**2 * (shape[2] if len(shape) == 3 else 1)
    applications = iterations + (0 if options.kernel == "nlm" else EIGENVALUE_APPLICATIONS)
    if options.window is None:
        layers = options.depth + 1 if options.kernel == "ntk" else 1
        per_pair = GLOBAL_NS_PER_PAIR[options.kernel] * layers + GLOBAL_NS_PER_PAIR_AND_DIM * dims
        pairs = pixels * pixels
    else:
        per_pair = WINDOWED_NS_PER_PAIR
        pairs = pixels * options.window**2
    return pairs * per_pair * 1e-9 * applications


def estimate_working_bytes(shape: tuple[int, ...], options: FilterOptions, workers: int) -> int:
    """Rough peak bytes of the operator for an image of ``shape`` (float32).

    Global mode: bounded by ``options.memory_budget`` (the operator refuses
    more).  Windowed mode: per worker thread the channel differences, five
    padded work images, the profile scratch and the accumulator planes, plus
    the image, the right-hand sides and the result.
    """
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    if options.window is None:
        return options.memory_budget
    padded = (height + options.patch - 1) * (width + options.patch - 1)
    pixels = height * width
    per_worker = padded * (channels + 5) + pixels * (5 + 2 * (channels + 1))
    return 4 * (workers * per_worker + 6 * pixels * (channels + 1))


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
        windowed = CudaWindowedNLM if backend.name == "gpu" and options.kernel == "nlm" else WindowedAffinity
        affinity = windowed(backend, features, kernel, options.patch, options.window,
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
