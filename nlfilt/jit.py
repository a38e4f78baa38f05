"""Compiled CPU operators (numba): windowed ``K V`` in one pass per band of output pixels, and the
collaborative filter's and the cubes' kernels (:mod:`nlfilt.jit_groups`).

:func:`select` is the one place that chooses them (through
:meth:`nlfilt.backend.Backend.accelerate` on the CPU).  Each serves an
array-code operator of :mod:`nlfilt.operators` (its twin, which the tests
compare it with), takes the padded features from it, and hands it what the
compiled kernel does not do (:meth:`row`, :meth:`dense`).  Without numba
(``import numba`` fails) the twin computes everything.

The windowed operator serves every kernel with a compiled profile
(:attr:`nlfilt.kernels.Kernel.jit_profile`: NLM, arccos, ntk).  numba
compiles the band kernel on its first call in a process for a kernel and
dtype (a few seconds) and keeps the machine code in its on-disk cache (``__pycache__`` next
to this file, or numba's user-wide cache when that is not writable), so later
processes load it in milliseconds.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy

from nlfilt.collaborative import ArrayGroups
from nlfilt.jit_groups import CompiledCubes, CompiledGroups
from nlfilt.kernels import JIT_HELPERS, fast_exp, kernel_class
from nlfilt.operators import WindowedAffinity, with_ones
from nlfilt.volume import CubeGroups
from nlfilt.workers import Workers

#: Rows of the bands of the compiled windowed operator (at least the window's radius): the threads' units
#: of work.  The band grid does not depend on the thread count, so neither do the results.
BAND_ROWS = 32
#: Columns of the chunks a band is done in, one after the other (the rows a chunk reads, for every column
#: offset, stay in the core's cache on wide images).
CHUNK_COLUMNS = 1024


def select(operator: Any, kernel: Any = None) -> Any:
    """The operator to compute with on the CPU: a compiled operator serving ``operator`` when one exists
    for it (and ``kernel`` and its mode, see :func:`serves`; 2-D images), else ``operator`` itself (its
    array code).  The collaborative filter's groups: :class:`nlfilt.jit_groups.CompiledGroups`; a
    volume's cubes: :class:`nlfilt.jit_groups.CompiledCubes`."""
    if (isinstance(operator, WindowedAffinity) and len(operator.shape) == 2
            and serves(kernel, kernel.layers, operator.keeps_weights)):
        return CompiledWindowed(operator)
    if isinstance(operator, ArrayGroups) and load_numba() is not None:
        return CompiledGroups(operator)
    if isinstance(operator, CubeGroups) and load_numba() is not None:
        return CompiledCubes(operator)
    return operator


def serves(kernel: Any, layers: int = 1, keeps_weights: bool = False) -> bool:
    """Whether the compiled windowed operator serves ``kernel`` (a kernel class or instance, of ``layers``
    layers): it has a compiled profile (``jit_profile``), numba is importable, and, when the array code
    keeps its weights (``keeps_weights``: a filter applied many times, the weights within the memory
    budget), computing a weight costs less than multiplying a kept one (NLM; the tangent kernels' products
    then run as array code on the kept weights, 2.5x faster than computing them again at depth 2)."""
    if kernel.jit_profile is None or load_numba() is None:
        return False
    if not keeps_weights:
        return True
    from nlfilt import cost  # noqa: PLC0415 - cost imports this module

    computed = (kernel.compiled_ns_per_weight + kernel.compiled_ns_per_layer * (layers - 1)
                + cost.COMPILED_NS_PER_COLUMN)
    return computed <= cost.WINDOWED_NS_PER_COLUMN


def compiled_status() -> str:
    """numba's version and what it serves, or why the array code runs (for ``nlfilt info``)."""
    numba = load_numba()
    if numba is None:
        return "not installed (windowed filters on the CPU run as NumPy array code, 3-10x slower)"
    return f"{numba.__version__} (the compiled windowed operators on the CPU)"


@lru_cache(maxsize=1)
def load_numba() -> ModuleType | None:
    """numba, imported on first use (it takes a few hundred milliseconds), or None without it."""
    try:
        import numba  # noqa: PLC0415 - deliberately lazy
    except ImportError:
        return None
    return numba


class CompiledWindowed:
    """A windowed kernel from one compiled kernel per band of rows, the bands shared by the host threads.

    ``K`` is symmetric, so each pair of opposite window offsets is evaluated
    once: for an offset (drow >= 0) a band's pixels ``i`` and their partners
    ``j = i + offset`` get the weight ``w_ij`` of the kernel's compiled
    profile (:attr:`nlfilt.kernels.Kernel.jit_profile`, e.g. NLM's ``exp(clip(2
    sigma^2 / h^2 - |a_i - a_j|^2, floor, 0))``), and ``w v_j`` goes to ``i``,
    ``w v_i`` to ``j``; a cosine kernel's per-pixel norms multiply the
    vectors before and the product after, as in the twin.  Partners reach at
    most ``window // 2`` rows below a band, into the next band only (bands are
    at least that high), so the even bands run first, side by side, then the
    odd ones: no two threads write the same pixel, and every pixel receives
    its terms in an order fixed by the band grid, not by the thread count.
    Per offset the patch statistics of a band's row (sums of squared
    differences, or of products for the cosine kernels) come from column sums
    over the patch rows, slid down the band row by row (two rows in, two
    out), and sums of ``patch`` column sums; the band is walked row by row,
    all column offsets of a row offset in turn, so the rows read stay in the
    core's cache.  NLM's exponential is a polynomial that the compiler
    vectorises (float32; within 2.5e-7 of ``exp``), ``math.exp`` in float64;
    the cosine kernels' arc-cosines are the twin's polynomials.

    Parameters
    ----------
    twin : WindowedAffinity
        The array-code operator this one serves (same features, patch, window and kernel).
    """

    def __init__(self, twin: WindowedAffinity) -> None:
        self.twin = twin
        self.backend = twin.backend
        self.kernel = twin.kernel
        self.size = twin.size
        # channel planes (C, H + patch - 1, W + patch - 1): a view for one channel, a copy for more
        self.planes = numpy.ascontiguousarray(numpy.moveaxis(twin.padded, 2, 0))
        dtype = self.planes.dtype
        height = twin.shape[0]
        radius = twin.window // 2
        # the twin's tent tapers by (row offset, column offset + radius), ones for a box window
        self._tapers = numpy.ones((radius + 1, 2 * radius + 1), dtype)
        for (drow, dcol), weight in zip(twin.offsets, twin.tapers, strict=True):
            self._tapers[drow, dcol + radius] = weight
        rows = max(BAND_ROWS, radius)
        bands = [(top, min(top + rows, height)) for top in range(0, height, rows)]
        self._phases = [bands[0::2], bands[1::2]]
        # the cosine kernels' per-pixel inverse norms (one unused number for NLM)
        inverse = twin.inv_norm if twin.inv_norm is not None else numpy.ones(1, dtype)
        self._inverse = numpy.ascontiguousarray(inverse, dtype).ravel()
        self._parameters = numpy.ascontiguousarray(self.kernel.jit_parameters(dtype))
        self._key = profile_key(type(self.kernel))

    def matmul(self, vectors: Any, progress: Callable[[float], None] | None = None,
               row_sums: bool = False) -> Any:
        """Return ``K @ vectors`` for ``vectors`` of shape (N, m); with ``row_sums``, ``K @ [vectors, 1]``
        (for NLM the weights' sums accumulate in the last column, no column of ones is read).

        ``progress(fraction)``, when given, after each band the calling
        thread computes (the bands of each phase are dealt round-robin, so
        its fraction is about that of the whole product).  ``vectors`` stored
        column after column (as :func:`nlfilt.operators.with_ones` makes
        them, or one column) are read in place; other layouts are copied
        once.
        """
        twin = self.twin
        height, width = twin.shape
        dtype = self.planes.dtype
        scale = twin.scale
        if scale is not None and row_sums:  # a scaled kernel's row sums weigh the ones by the norms
            vectors, row_sums = with_ones(numpy, numpy.asarray(vectors, dtype=dtype)), False
        columns = vectors.shape[1]
        values = numpy.ascontiguousarray(numpy.asarray(vectors, dtype=dtype).T)
        values = values.reshape(columns, height, width)
        if scale is not None:
            values = values * scale
        out = numpy.zeros((columns + int(row_sums), height, width), dtype)
        radius = twin.window // 2
        tent = twin.window_shape == "tent"

        def arguments(top: int, bottom: int) -> tuple:
            return (self.planes, values, out, top, bottom, CHUNK_COLUMNS, twin.patch, radius, self._inverse,
                    self.kernel.layers, self._parameters, tent, self._tapers)

        kernel = _windowed_kernel(self._key, arguments(0, 0))
        with Workers(self.backend) as workers:
            shares = [workers.shares(len(bands)) for bands in self._phases]
            own = sum(len(phase[0]) for phase in shares if phase)  # the bands of the calling thread
            done = 0

            def work(phase: int, share: range) -> None:
                nonlocal done
                for index in share:
                    top, bottom = self._phases[phase][index]
                    kernel(self._key, *arguments(top, bottom))
                    if share.start == 0 and progress is not None:  # the calling thread's share
                        done += 1
                        progress(done / own)

            for phase, phase_shares in enumerate(shares):
                workers.map(lambda share, phase=phase: work(phase, share), phase_shares)
        if scale is not None:
            out *= scale
        return out.reshape(out.shape[0], height * width).T

    def row(self, index: int) -> Any:
        """Row ``index`` of ``K``, from the twin."""
        return self.twin.row(index)

    def dense(self) -> Any:
        """The whole matrix ``K``, from the twin (small images only)."""
        return self.twin.dense()


def profile_key(kernel: type) -> str:
    """The name the compiled kernel is specialised on for ``kernel``: its name and a digest of its compiled
    profile and the helpers' code, so that numba's disk cache never serves code of an older profile."""
    digest = hashlib.sha1(usedforsecurity=False)
    for function in (kernel.jit_profile, *JIT_HELPERS):
        code = function.__code__
        digest.update(code.co_code + repr(code.co_consts).encode())
    return f"{kernel.name}:{digest.hexdigest()[:12]}"


def exp_float32(t: Any) -> Any:
    """``exp(t)`` for float32 ``t`` in [log of the smallest normal float32, 0]: Cody-Waite reduction to
    ``r`` in [-ln 2 / 2, ln 2 / 2], a degree-7 polynomial (Cephes' ``expf`` coefficients), and ``2^n``
    from its exponent bits; within 1e-7 relative of ``exp``, and branch-free, so it vectorises."""
    f = numpy.float32
    n = numpy.floor(t * f(1.4426950408889634) + f(0.5))
    r = t - n * f(0.693359375) - n * f(-2.12194440e-4)
    p = f(1.9875691500e-4) * r + f(1.3981999507e-3)
    p = p * r + f(8.3334519073e-3)
    p = p * r + f(4.1665795894e-2)
    p = p * r + f(1.6666665459e-1)
    p = p * r + f(5.0000001201e-1)
    p = p * r * r + r + f(1.0)
    return p * numpy.int32((numpy.int32(n) + numpy.int32(127)) << 23).view(numpy.float32)


def _exp_other(t: Any) -> Any:
    """``math.exp`` (the compiled :func:`nlfilt.kernels.fast_exp` for other than float32)."""
    return math.exp(t)


_COMPILING = threading.Lock()


def literally(value: Any) -> Any:
    """``numba.literally`` once the band kernel is compiled (:func:`_compile_windowed_kernel`)."""
    return value


#: The band kernel's entry points by (kernel key, argument types) (see :func:`_windowed_kernel`).
_ENTRIES: dict[tuple, Callable[..., None]] = {}


def _windowed_kernel(key: str, arguments: tuple) -> Callable[..., None]:
    """The band kernel specialised for the kernel ``key`` (:func:`profile_key`) and the types of
    ``arguments`` (the rest of :func:`_windowed_band`'s): compiled on first use in a process, or loaded
    from numba's disk cache, and returned as its entry point, which is called with ``key`` and the
    arguments without numba's dispatch (for a literal argument that costs about 0.1 s a call).  Threads
    that ask at the same time (a dask worker's) wait for the first."""
    numba = load_numba()
    types = tuple(numba.typeof(value) for value in arguments)
    with _COMPILING:
        entry = _ENTRIES.get((key, types))
        if entry is None:
            band = _compile_windowed_kernel()
            signature = (numba.types.literal(key), *types)
            if signature not in band.overloads:
                band.compile(signature)
            entry = _ENTRIES[key, types] = band.overloads[signature].entry_point
    return entry


def _profile(key: Any, t: Any, count: int, inverse: Any, here: int, there: int, scratch: Any, layers: int,
             parameters: Any) -> None:
    """The compiled profile of the kernel named in ``key`` (:func:`profile_key`), in compiled code only."""
    raise NotImplementedError


def _uses_difference(key: Any) -> bool:
    """In compiled code only: whether the kernel's patch statistic sums squared differences (else
    products), a constant."""
    raise NotImplementedError


@lru_cache(maxsize=1)
def _compile_windowed_kernel() -> Callable[..., None]:
    numba = load_numba()
    from numba import types  # noqa: PLC0415 - with numba

    @numba.extending.overload(fast_exp)
    def _exp_overload(t: Any) -> Callable[[Any], Any]:
        if isinstance(t, types.Float) and t.bitwidth == 32:
            return exp_float32
        return _exp_other

    for helper in JIT_HELPERS:
        numba.extending.register_jitable(helper)

    def named(key: Any) -> type:
        if not isinstance(key, types.StringLiteral):
            raise numba.errors.TypingError("the kernel's key must be a literal string")
        return kernel_class(key.literal_value.split(":")[0])

    @numba.extending.overload(_profile, inline="always")
    def _profile_overload(key: Any, t: Any, count: Any, inverse: Any, here: Any, there: Any, scratch: Any,
                          layers: Any, parameters: Any) -> Callable[..., None]:
        profile = numba.njit(named(key).jit_profile)

        def implementation(key: Any, t: Any, count: Any, inverse: Any, here: Any, there: Any, scratch: Any,
                           layers: Any, parameters: Any) -> None:  # the typing function's annotations
            profile(t, count, inverse, here, there, scratch, layers, parameters)

        return implementation

    @numba.extending.overload(_uses_difference, inline="always")
    def _uses_difference_overload(key: Any) -> Callable[[Any], bool]:
        def constant(key: Any) -> bool:
            return uses

        uses = named(key).uses_difference
        return constant

    global literally  # noqa: PLW0603 - the band kernel's global, numba's own once numba is loaded
    literally = numba.literally
    return numba.njit(nogil=True, cache=True)(_windowed_band)


def _windowed_band(key: Any, features: Any, values: Any, out: Any, top: int, bottom: int, chunk: int,
                   patch: int, radius: int, inverse: Any, layers: int, parameters: Any, tent: bool,
                   tapers: Any) -> None:
    """Add to ``out`` the terms of the windowed ``K values`` of the pairs whose upper pixel lies in rows
    ``top:bottom`` (compiled by numba, once per kernel ``key``, :func:`profile_key`).

    With ``tent`` the weights are multiplied by ``tapers[drow, dcol + radius]``
    (the tent window's taper of each offset).
    ``features``: (C, H + patch - 1, W + patch - 1) padded channel planes;
    ``values``: (m, H, W); ``out``: (m, H, W), or (m + 1, H, W) to receive
    the weights' sums as well.  For each offset (drow, dcol) with drow > 0,
    or drow = 0 and dcol >= 0, the band's pixels i whose partner j = i +
    (drow, dcol) lies in the image get the weight of the kernel's profile of
    ``S``, the patch's sum of squared differences or of products; i receives
    ``w`` times j's values (and ``w``), and j, unless it is i, ``w`` times
    i's.  The band is done in chunks of ``chunk`` columns (of pixels i), one
    after the other, so that the rows a chunk reads stay in the core's
    cache.  Indices are cast to unsigned so that numba drops its
    negative-index checks and the compiler vectorises every inner loop.
    """
    literally(key)  # numba.literally in compiled code: one specialisation per kernel
    difference = _uses_difference(key)  # a constant of the specialisation
    channels, padded_height, padded_width = features.shape
    columns, height, width = values.shape
    planes = out.shape[0]  # columns, plus one for the sums
    flat_features = features.ravel()
    flat_values = values.ravel()
    flat_out = out.ravel()
    weights = numpy.empty(min(chunk, width), features.dtype)
    stride = min(chunk, width) + patch - 1
    sums = numpy.empty((2 * radius + 1) * stride, features.dtype)  # per column offset: column sums
    scratch = numpy.empty((5, min(chunk, width)), features.dtype)  # the profile's
    unsigned = numpy.uint64
    zero = features.dtype.type(0)
    for left in range(0, width, chunk):
        right = min(width, left + chunk)
        for drow in range(0, radius + 1):
            stop_row = min(bottom, height - drow)
            for row in range(top, stop_row):
                # every column offset of this row offset in turn: the rows they read stay in the core's cache
                for dcol in range(0 if drow == 0 else -radius, radius + 1):
                    first = max(left, -dcol)
                    count = min(right, width - dcol) - first
                    if count <= 0:
                        continue
                    extent = count + patch - 1
                    base = (dcol + radius) * stride
                    if row == top:  # the column sums of the band's first row, from the patch rows
                        for i in range(extent):
                            sums[unsigned(base + i)] = zero
                        for channel in range(channels):
                            for u in range(patch):
                                here = (channel * padded_height + row + u) * padded_width + first
                                there = here + drow * padded_width + dcol
                                for i in range(extent):
                                    a = flat_features[unsigned(here + i)]
                                    b = flat_features[unsigned(there + i)]
                                    sums[unsigned(base + i)] += (a - b) * (a - b) if difference else a * b
                    else:  # slide the column sums down a row: the patch's new bottom row in, its top out
                        for channel in range(channels):
                            gone = (channel * padded_height + row - 1) * padded_width + first
                            gone_there = gone + drow * padded_width + dcol
                            new = gone + patch * padded_width
                            new_there = gone_there + patch * padded_width
                            for i in range(extent):
                                a = flat_features[unsigned(new + i)]
                                b = flat_features[unsigned(new_there + i)]
                                c = flat_features[unsigned(gone + i)]
                                d = flat_features[unsigned(gone_there + i)]
                                if difference:
                                    sums[unsigned(base + i)] += (a - b) * (a - b) - (c - d) * (c - d)
                                else:
                                    sums[unsigned(base + i)] += a * b - c * d
                    for i in range(count):
                        weights[i] = sums[unsigned(base + i)]
                    for v in range(1, patch):
                        for i in range(count):
                            weights[i] += sums[unsigned(base + i + v)]
                    pixel = row * width + first
                    partner = pixel + drow * width + dcol
                    _profile(key, weights, count, inverse, pixel, partner, scratch, layers, parameters)
                    if tent:  # the tent window's taper of this offset
                        factor = tapers[drow, dcol + radius]
                        for i in range(count):
                            weights[i] *= factor
                    mirrored = drow > 0 or dcol > 0
                    for plane in range(planes):
                        here = (plane * height + row) * width + first
                        there = here + drow * width + dcol
                        if plane < columns:
                            for i in range(count):
                                flat_out[unsigned(here + i)] += weights[i] * flat_values[unsigned(there + i)]
                            if mirrored:
                                for i in range(count):
                                    flat_out[unsigned(there + i)] += (weights[i]
                                                                      * flat_values[unsigned(here + i)])
                        else:
                            for i in range(count):
                                flat_out[unsigned(here + i)] += weights[i]
                            if mirrored:
                                for i in range(count):
                                    flat_out[unsigned(there + i)] += weights[i]
