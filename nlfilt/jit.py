"""Compiled CPU operators (numba): windowed NLM ``K V`` in one pass per tile of output pixels.

:func:`select` is the one place that chooses them (through
:meth:`nlfilt.backend.Backend.accelerate` on the CPU).  Each serves an
array-code operator of :mod:`nlfilt.operators` (its twin, which the tests
compare it with), takes the padded features from it, and hands it what the
compiled kernel does not do (:meth:`row`, :meth:`dense`).  Without numba
(``import numba`` fails) the twin computes everything.

numba compiles the kernel on its first call in a process (about a second per
dtype) and keeps the machine code in its on-disk cache (``__pycache__`` next
to this file, or numba's user-wide cache when that is not writable), so later
processes load it in milliseconds.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy

from nlfilt.collaborative import ArrayGroups
from nlfilt.jit_groups import CompiledCubes, CompiledGroups
from nlfilt.kernels import weight_floor
from nlfilt.operators import WindowedAffinity
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
    if isinstance(operator, WindowedAffinity) and len(operator.shape) == 2 and serves(kernel):
        return CompiledWindowedNLM(operator)
    if isinstance(operator, ArrayGroups) and load_numba() is not None:
        return CompiledGroups(operator)
    if isinstance(operator, CubeGroups) and load_numba() is not None:
        return CompiledCubes(operator)
    return operator


def serves(kernel: Any) -> bool:
    """Whether the compiled windowed operator serves ``kernel`` (a kernel class or instance): NLM's
    weights (``fused_windowed``), and numba importable."""
    return bool(kernel.fused_windowed) and load_numba() is not None


def compiled_status() -> str:
    """numba's version and what it serves, or why the array code runs (for ``nlfilt info``)."""
    numba = load_numba()
    if numba is None:
        return "not installed (windowed NLM on the CPU runs as NumPy array code, 3-5x slower)"
    return f"{numba.__version__} (the compiled windowed NLM operator on the CPU)"


@lru_cache(maxsize=1)
def load_numba() -> ModuleType | None:
    """numba, imported on first use (it takes a few hundred milliseconds), or None without it."""
    try:
        import numba  # noqa: PLC0415 - deliberately lazy
    except ImportError:
        return None
    return numba


class CompiledWindowedNLM:
    """Windowed NLM from one compiled kernel per band of rows, the bands shared by the host threads.

    ``K`` is symmetric, so each pair of opposite window offsets is evaluated
    once: for an offset (drow >= 0) a band's pixels ``i`` and their partners
    ``j = i + offset`` get ``w = exp(clip(2 sigma^2 / h^2 - |a_i - a_j|^2,
    floor, 0))``, and ``w v_j`` goes to ``i``, ``w v_i`` to ``j``.  Partners
    reach at most ``window // 2`` rows below a band, into the next band only
    (bands are at least that high), so the even bands run first, side by
    side, then the odd ones: no two threads write the same pixel, and every
    pixel receives its terms in an order fixed by the band grid, not by the
    thread count.  Per offset the squared patch distances of a band's row
    come from column sums over the patch rows, slid down the band row by row
    (two rows in, two out), and sums of ``patch`` column sums; the band is
    walked row by row, all column offsets of a row offset in turn, so the
    rows read stay in the core's cache.  The exponential is a polynomial
    that the compiler vectorises (float32; within 2.5e-7 of ``exp``),
    ``math.exp`` in float64.

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
        height = twin.shape[0]
        radius = twin.window // 2
        # the twin's tent tapers by (row offset, column offset + radius), ones for a box window
        self._tapers = numpy.ones((radius + 1, 2 * radius + 1), self.planes.dtype)
        for (drow, dcol), weight in zip(twin.offsets, twin.tapers, strict=True):
            self._tapers[drow, dcol + radius] = weight
        rows = max(BAND_ROWS, radius)
        bands = [(top, min(top + rows, height)) for top in range(0, height, rows)]
        self._phases = [bands[0::2], bands[1::2]]

    def matmul(self, vectors: Any, progress: Callable[[float], None] | None = None,
               row_sums: bool = False) -> Any:
        """Return ``K @ vectors`` for ``vectors`` of shape (N, m); with ``row_sums``, ``K @ [vectors, 1]``
        (the weights' sums accumulate in the last column, no column of ones is read).

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
        columns = vectors.shape[1]
        values = numpy.ascontiguousarray(numpy.asarray(vectors, dtype=dtype).T)
        values = values.reshape(columns, height, width)
        out = numpy.zeros((columns + int(row_sums), height, width), dtype)
        kernel = _windowed_nlm_kernel()
        offset = dtype.type(self.kernel.offset)
        floor = dtype.type(weight_floor(dtype))
        radius = twin.window // 2
        tent = twin.window_shape == "tent"
        with Workers(self.backend) as workers:
            shares = [workers.shares(len(bands)) for bands in self._phases]
            own = sum(len(phase[0]) for phase in shares if phase)  # the bands of the calling thread
            done = 0

            def work(phase: int, share: range) -> None:
                nonlocal done
                for index in share:
                    top, bottom = self._phases[phase][index]
                    kernel(self.planes, values, out, top, bottom, CHUNK_COLUMNS, twin.patch, radius, offset,
                           floor, tent, self._tapers)
                    if share.start == 0 and progress is not None:  # the calling thread's share
                        done += 1
                        progress(done / own)

            for phase, phase_shares in enumerate(shares):
                workers.map(lambda share, phase=phase: work(phase, share), phase_shares)
        return out.reshape(out.shape[0], height * width).T

    def row(self, index: int) -> Any:
        """Row ``index`` of ``K``, from the twin."""
        return self.twin.row(index)

    def dense(self) -> Any:
        """The whole matrix ``K``, from the twin (small images only)."""
        return self.twin.dense()


def _exp_float32(t: Any) -> Any:
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


def _exp(t: Any) -> Any:
    """``exp(t)`` in compiled code: :func:`_exp_float32` for float32, ``math.exp`` otherwise."""
    return math.exp(t)


def _exp_other(t: Any) -> Any:
    """``math.exp`` (the implementation of :func:`_exp` for other than float32)."""
    return math.exp(t)


_COMPILING = threading.Lock()


def _windowed_nlm_kernel() -> Callable[..., None]:
    """The tile kernel, compiled once per process (numba's disk cache across processes); threads that
    ask at the same time (a dask worker's) wait for the first."""
    with _COMPILING:
        return _compile_windowed_nlm_kernel()


@lru_cache(maxsize=1)
def _compile_windowed_nlm_kernel() -> Callable[..., None]:
    numba = load_numba()

    @numba.extending.overload(_exp)
    def _exp_overload(t: Any) -> Callable[[Any], Any]:
        if isinstance(t, numba.types.Float) and t.bitwidth == 32:
            return _exp_float32
        return _exp_other

    return numba.njit(nogil=True, cache=True)(_windowed_nlm_band)


def _windowed_nlm_band(features: Any, values: Any, out: Any, top: int, bottom: int, chunk: int, patch: int,
                       radius: int, offset: Any, floor: Any, tent: bool, tapers: Any) -> None:
    """Add to ``out`` the terms of windowed NLM ``K values`` of the pairs whose upper pixel lies in rows
    ``top:bottom`` (compiled by numba).

    With ``tent`` the weights are multiplied by ``tapers[drow, dcol + radius]``
    (the tent window's taper of each offset).
    ``features``: (C, H + patch - 1, W + patch - 1) padded channel planes;
    ``values``: (m, H, W); ``out``: (m, H, W), or (m + 1, H, W) to receive
    the weights' sums as well.  For each offset (drow, dcol) with drow > 0,
    or drow = 0 and dcol >= 0, the band's pixels i whose partner j = i +
    (drow, dcol) lies in the image get ``w = exp(clip(offset - D, floor,
    0))``, ``D`` the patch's sum of squared differences; i receives ``w``
    times j's values (and ``w``), and j, unless it is i, ``w`` times i's.
    The band is done in chunks of ``chunk`` columns (of pixels i), one after
    the other, so that the rows a chunk reads stay in the core's cache.
    Indices are cast to unsigned so that numba drops its negative-index
    checks and the compiler vectorises every inner loop.
    """
    channels, padded_height, padded_width = features.shape
    columns, height, width = values.shape
    planes = out.shape[0]  # columns, plus one for the sums
    flat_features = features.ravel()
    flat_values = values.ravel()
    flat_out = out.ravel()
    weights = numpy.empty(min(chunk, width), features.dtype)
    stride = min(chunk, width) + patch - 1
    sums = numpy.empty((2 * radius + 1) * stride, features.dtype)  # per column offset: column sums
    unsigned = numpy.uint64
    zero = offset - offset
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
                                    difference = (flat_features[unsigned(here + i)]
                                                  - flat_features[unsigned(there + i)])
                                    sums[unsigned(base + i)] += difference * difference
                    else:  # slide the column sums down a row: the patch's new bottom row in, its top out
                        for channel in range(channels):
                            gone = (channel * padded_height + row - 1) * padded_width + first
                            gone_there = gone + drow * padded_width + dcol
                            new = gone + patch * padded_width
                            new_there = gone_there + patch * padded_width
                            for i in range(extent):
                                added = (flat_features[unsigned(new + i)]
                                         - flat_features[unsigned(new_there + i)])
                                removed = (flat_features[unsigned(gone + i)]
                                           - flat_features[unsigned(gone_there + i)])
                                sums[unsigned(base + i)] += added * added - removed * removed
                    for i in range(count):
                        weights[i] = sums[unsigned(base + i)]
                    for v in range(1, patch):
                        for i in range(count):
                            weights[i] += sums[unsigned(base + i + v)]
                    for i in range(count):
                        weights[i] = _exp(min(max(offset - weights[i], floor), zero))
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
