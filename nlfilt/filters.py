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

from nlfilt.backend import CPU_TILE_ELEMENTS, Backend, get_backend
from nlfilt.kernels import kernel_class, make_kernel, safe_reciprocal
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

    def affinity_matmul(self, vectors: Any) -> Any:
        """Return ``K @ vectors`` (and count the application, and report it to the meter)."""
        self.applications += 1
        if self.meter is None:
            return self.affinity.matmul(vectors)
        self.meter.start()
        out = self.affinity.matmul(vectors, self.meter.part)
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


#: Products with ``K`` that Lanczos needs for ``lambda_max`` (tolerance 1e-3): the global arc-cosine
#: and NTK matrices have one dominant eigenvalue (2-3 products on Set12 crops of 48-96 pixels), the
#: windowed ones, indefinite, need 12-39 (median 18 on crops of 128-512 pixels).
EIGENVALUE_APPLICATIONS = {"global": 2, "windowed": 18}
#: Products with ``K`` that Sinkhorn scaling needs, the row sums included (Set12 at sigma 10-50, window 11:
#: 13-14; tolerance 1e-3).
SINKHORN_APPLICATIONS = 13
#: Products with ``K`` that ``iterations='auto'`` typically needs per run (the image and, with SURE, its
#: twin are two runs): stepping (windowed) looks at 4-5 steps, a Krylov trajectory (global) takes 4-11
#: Lanczos steps (median 6; Set12 crops of 64 pixels at sigma 10-50, and NLM's row sums besides).
AUTO_APPLICATIONS = {"stepping": 5, "krylov": 6}


@dataclass(frozen=True)
class _Plan:
    """The products with ``K`` of a :func:`nlfilt.denoise` call: ``filters`` filters, each making
    ``setup`` products for its normalisation (one column each) and ``steps`` for twicing."""

    filters: int
    setup: int
    steps: int


def _plan(options: FilterOptions, iterations: int | str, guided: bool, runs: int | None) -> _Plan:
    auto = iterations == "auto"
    krylov = auto and options.window is None
    runs = (2 if auto else 1) if runs is None else runs
    steps = AUTO_APPLICATIONS["krylov" if krylov else "stepping"] if auto else int(iterations)
    if options.normalize == "eigenvalue":  # lambda_max; a Krylov trajectory finds it itself
        setup = 0 if krylov else EIGENVALUE_APPLICATIONS["global" if options.window is None else "windowed"]
    elif options.normalize == "sinkhorn":
        setup = SINKHORN_APPLICATIONS
    else:  # the row sums: a product of their own for a Krylov trajectory, else a column of the first step
        setup = 1 if krylov else 0
    return _Plan(filters=runs * (2 if guided else 1), setup=setup, steps=steps)


def expected_applications(options: FilterOptions, iterations: int | str, guided: bool, *,
                          runs: int | None = None) -> int:
    """Typical products with ``K`` for :func:`nlfilt.denoise` with these options (for cost estimates).

    ``iterations`` is a count (0 for one row of ``W``, as :func:`nlfilt.filter_row` needs) or 'auto';
    ``guided`` doubles the count (two passes).  ``runs`` is the number of twicing runs per pass (default
    2 with 'auto', the image and its SURE twin, else 1).  The normalisation adds its own products:
    ``lambda_max`` (``EIGENVALUE_APPLICATIONS``), Sinkhorn scaling (``SINKHORN_APPLICATIONS``) or,
    for a Krylov trajectory, the row sums.
    """
    plan = _plan(options, iterations, guided, runs)
    return plan.filters * (plan.setup + plan.steps)


#: Wall-clock cost on the 2-core development machine (NumPy's BLAS and ``backend.workers`` host
#: threads), measured by benchmarks/bench_cpu.py (benchmarks/results/cpu.md) and used to refuse
#: long runs and to report estimates.  Global mode, nanoseconds per pixel pair evaluated (a tile of
#: query rows pairs them with the pixels from the tile on, so about N^2 / 2 pairs per product): the
#: kernel profile and the two products with the right-hand side ('ntk': of depth 1, plus
#: GLOBAL_NS_PER_PAIR_AND_LAYER per further layer), plus the GEMM, per patch dimension d.
GLOBAL_NS_PER_PAIR_AND_DIM = 0.008
#: Windowed mode, nanoseconds per pixel and offset (one of each opposite pair, (window^2 + 1) / 2 of
#: them).  The weights (the patch statistic by box sums, and the profile; 'ntk' of depth 1, plus
#: WINDOWED_NS_PER_WEIGHT_AND_LAYER per further layer), computed at every product or, when the
#: operator keeps them, once per filter at WINDOWED_NS_PER_KEPT_WEIGHT more (the copy); for C > 1
#: channels, plus WINDOWED_NS_PER_CHANNEL times C (the channel differences and their sum).  The
#: multiply-adds, per right-hand-side column.
WINDOWED_NS_PER_KEPT_WEIGHT = 0.5
WINDOWED_NS_PER_CHANNEL = 2.0
WINDOWED_NS_PER_COLUMN = 0.5
#: Seconds of Python and NumPy call overhead per offset: when its weights are computed, and in each
#: product (the multiply-adds).
WINDOWED_SECONDS_PER_WEIGHING = 35e-6
WINDOWED_SECONDS_PER_OFFSET = 9e-6
#: Seconds per product besides its pairs (starting the worker threads, the tiles' bookkeeping), per
#: call (validation, set-up), and per pixel and channel (the noise estimate, the features).
SECONDS_PER_PRODUCT = 0.3e-3
SECONDS_PER_CALL = 1e-3
SECONDS_PER_VALUE = 20e-9


def estimate_cpu_seconds(shape: tuple[int, ...], options: FilterOptions, applications: int, *,
                         iterations: int | str | None = None, guided: bool = False) -> float:
    """Estimated CPU seconds of ``applications`` products with ``K`` on an image of ``shape``.

    Global mode: every product evaluates about N^2 / 2 pixel pairs, each at
    the kernel's cost plus the GEMM's per patch dimension.  Windowed mode:
    every product visits (window^2 + 1) / 2 offsets, each with N
    multiply-adds per right-hand-side column; their weights are computed at
    every product, or once per filter when the operator keeps them (it is
    applied more than once and they fit the memory budget).  With
    ``iterations`` and ``guided`` (as given to :func:`expected_applications`,
    which gives the count for a call of :func:`nlfilt.denoise`) the products
    are split as the call makes them: filters built (the SURE twin, the
    pilot pass), normalisation products of one column, twicing steps of C
    columns; without them, one filter making ``applications`` steps.  Within
    a factor of two of the measured time on the development machine for
    every mode (tests/test_cost.py); the constants are wall-clock seconds
    on its 2 cores.
    """
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    pixels = height * width
    kernel = kernel_class(options.kernel)
    layers = options.depth if kernel.has_depth else 1
    if iterations is None:
        plan = _Plan(filters=1, setup=0, steps=applications)
    else:
        plan = _plan(options, iterations, guided, None)
        plan = _Plan(plan.filters, min(plan.setup, applications // plan.filters),
                     max(0, applications // plan.filters - plan.setup))
    products = plan.filters * (plan.setup + plan.steps)
    seconds = SECONDS_PER_CALL + SECONDS_PER_VALUE * pixels * channels + SECONDS_PER_PRODUCT * products
    if options.window is None:
        dims = options.patch**2 * channels
        per_pair = (kernel.global_ns_per_pair + kernel.global_ns_per_layer * (layers - 1)
                    + GLOBAL_NS_PER_PAIR_AND_DIM * dims)
        return seconds + products * _global_pairs(pixels) * per_pair * 1e-9
    radius = options.window // 2
    rows, cols = min(radius, height - 1) + 1, min(radius, width - 1)
    offsets = rows * (2 * cols + 1) - cols
    weight = kernel.windowed_ns_per_weight + kernel.windowed_ns_per_layer * (layers - 1)
    if channels > 1:
        weight += WINDOWED_NS_PER_CHANNEL * channels
    several = products > plan.filters if iterations is None else iterations != 1  # as nlfilt.denoise has it
    kept = keeps_weights(options, several) and _windowed_weights_fit(shape, options)
    if kept:
        weight += WINDOWED_NS_PER_KEPT_WEIGHT
    weighings = plan.filters if kept else products
    columns = plan.filters * (plan.setup + plan.steps * channels)
    if options.normalize == "rows":
        columns += plan.filters  # the row sums ride on each filter's first product
    per_offset = 1e-9 * pixels * (weighings * weight + columns * WINDOWED_NS_PER_COLUMN)
    per_offset += weighings * WINDOWED_SECONDS_PER_WEIGHING + products * WINDOWED_SECONDS_PER_OFFSET
    return seconds + offsets * per_offset


def _global_pairs(pixels: int) -> float:
    """Pixel pairs a global product evaluates: tiles of query rows against the pixels from the tile on."""
    rows = max(1, min(pixels, CPU_TILE_ELEMENTS // pixels))
    tiles = -(-pixels // rows)
    return pixels * pixels * (tiles + 1) / (2 * tiles)


def _windowed_weights_fit(shape: tuple[int, ...], options: FilterOptions) -> bool:
    """Whether a windowed operator on an image of ``shape`` keeps its weights (float32, see
    :class:`nlfilt.operators.WindowedAffinity`): all offsets' weights beside the workers' buffers."""
    pixels = shape[0] * shape[1]
    offsets = (options.window**2 + 1) // 2
    workers = get_backend("cpu").workers
    return 4 * (pixels * offsets + workers * _windowed_worker_values(shape, options)) <= options.memory_budget


def _windowed_worker_values(shape: tuple[int, ...], options: FilterOptions) -> int:
    """Values a windowed operator's worker thread holds: the channel differences, five padded work
    images, the profile scratch, the product buffer and the accumulator planes."""
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    padded = (height + options.patch - 1) * (width + options.patch - 1)
    return padded * (channels + 5) + height * width * (5 + 2 * (channels + 1))


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
    bases of both runs (``TYPICAL_KRYLOV_STEPS`` vectors of N x C numbers
    each, together at most the memory budget, which bounds them).
    """
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    pixels = height * width
    if options.window is None:
        needed = options.memory_budget
        if iterations == "auto":
            bases = min(2 * 4 * TYPICAL_KRYLOV_STEPS * pixels * channels, options.memory_budget)
            needed += options.memory_budget + bases
        return needed
    needed = 4 * (workers * _windowed_worker_values(shape, options) + 6 * pixels * (channels + 1))
    if iterations == "auto":
        needed += options.memory_budget  # the twin's cached weights; its work buffers are shared in time
    return needed


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
                                    options.memory_budget, reuse=keeps_weights(options, reuse))
    affinity = backend.accelerate(affinity, kernel)
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
