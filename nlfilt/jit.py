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

from nlfilt.kernels import weight_floor
from nlfilt.operators import WindowedAffinity, _Workers

#: Output tiles of the compiled windowed operator: rows and columns (bands of whole rows, up to very wide
#: images).  The kernel walks a tile row by row, all column offsets of one row offset in turn, so the
#: few rows it reads stay in the core's cache whatever the tile's size; the tiles are the threads' units
#: of work, and the grid does not depend on the thread count, so neither do the results.  (Tiles of 512
#: columns were 10-15 % slower at 2048x2048 on the development machine.)
TILE_ROWS = 32
TILE_COLUMNS = 8192


def select(operator: Any, kernel: Any) -> Any:
    """The operator to compute with on the CPU: a compiled operator serving ``operator`` when one exists
    for ``kernel`` and its mode (see :func:`serves`), else ``operator`` itself (its array code)."""
    if isinstance(operator, WindowedAffinity) and serves(kernel):
        return CompiledWindowedNLM(operator)
    return operator


def serves(kernel: Any) -> bool:
    """Whether the compiled windowed operator serves ``kernel`` (a kernel class or instance): NLM's
    weights (``fused_windowed``), and numba importable."""
    return bool(kernel.fused_windowed) and _numba() is not None


@lru_cache(maxsize=1)
def _numba() -> ModuleType | None:
    """numba, imported on first use (it takes a few hundred milliseconds), or None without it."""
    try:
        import numba  # noqa: PLC0415 - deliberately lazy
    except ImportError:
        return None
    return numba


class CompiledWindowedNLM:
    """Windowed NLM from one compiled kernel per output tile, the tiles shared by the host threads.

    Each output pixel gathers ``exp(clip(2 sigma^2 / h^2 - |a_i - a_j|^2, floor, 0)) v_j`` over its
    whole window, offset after offset, in a fixed order, so no two threads write the same pixel and the
    sums do not depend on the thread count.  Per offset the squared patch distances of a tile's row come
    from column sums over the patch rows, slid down the tile row by row (two rows in, two out), and sums
    of ``patch`` column sums; the exponential is a polynomial that the compiler vectorises (float32; within 1e-7 of
    ``exp``), ``math.exp`` in float64.  Opposite offsets are not shared: every pixel of a tile is
    written by that tile only.

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
        height, width = twin.shape
        self._tiles = [(top, min(top + TILE_ROWS, height), left, min(left + TILE_COLUMNS, width))
                       for top in range(0, height, TILE_ROWS) for left in range(0, width, TILE_COLUMNS)]

    def matmul(self, vectors: Any, progress: Callable[[float], None] | None = None,
               row_sums: bool = False) -> Any:
        """Return ``K @ vectors`` for ``vectors`` of shape (N, m); with ``row_sums``, ``K @ [vectors, 1]``
        (the weights' sums accumulate in the last column, no column of ones is read).

        ``progress(fraction)``, when given, after each tile of the first
        share (the tiles are dealt round-robin, so its fraction is about that
        of the whole product).  ``vectors`` stored column after column (as
        :func:`nlfilt.operators.with_ones` makes them, or one column) are read
        in place; other layouts are copied once.
        """
        twin = self.twin
        height, width = twin.shape
        dtype = self.planes.dtype
        columns = vectors.shape[1]
        values = numpy.ascontiguousarray(numpy.asarray(vectors, dtype=dtype).T)
        values = values.reshape(columns, height, width)
        out = numpy.empty((columns + int(row_sums), height, width), dtype)
        kernel = _windowed_nlm_kernel()
        offset = dtype.type(self.kernel.offset)
        floor = dtype.type(weight_floor(dtype))
        radius = twin.window // 2

        def work(share: range) -> None:
            report = progress if share.start == 0 else None  # the first share runs in the calling thread
            for done, index in enumerate(share, start=1):
                top, bottom, left, right = self._tiles[index]
                kernel(self.planes, values, out, top, bottom, left, right, twin.patch, radius, offset, floor)
                if report is not None:
                    report(done / len(share))

        with _Workers(self.backend) as workers:
            workers.map(work, workers.shares(len(self._tiles)))
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
    numba = _numba()

    @numba.extending.overload(_exp)
    def _exp_overload(t: Any) -> Callable[[Any], Any]:
        if isinstance(t, numba.types.Float) and t.bitwidth == 32:
            return _exp_float32
        return _exp_other

    return numba.njit(nogil=True, cache=True)(_windowed_nlm_tile)


def _windowed_nlm_tile(features: Any, values: Any, out: Any, top: int, bottom: int, left: int, right: int,
                       patch: int, radius: int, offset: Any, floor: Any) -> None:
    """Set ``out[:, top:bottom, left:right]`` to windowed NLM ``K values`` there (compiled by numba).

    ``features``: (C, H + patch - 1, W + patch - 1) padded channel planes;
    ``values``: (m, H, W); ``out``: (m, H, W), or (m + 1, H, W) to receive
    the weights' sums as well.  For each window offset (drow, dcol) the
    pixels of the tile whose partner lies in the image get
    ``w = exp(clip(offset - D, floor, 0))``, ``D`` the patch's sum of squared
    differences, and add ``w`` times their partner's values (and ``w``).  Indices are
    cast to unsigned so that numba drops its negative-index checks and the
    compiler vectorises every inner loop.
    """
    channels, padded_height, padded_width = features.shape
    columns, height, width = values.shape
    planes = out.shape[0]  # columns, plus one for the sums
    flat_features = features.ravel()
    flat_values = values.ravel()
    flat_out = out.ravel()
    unsigned = numpy.uint64
    span = right - left
    weights = numpy.empty(span, features.dtype)
    zero = offset - offset
    for plane in range(planes):
        for row in range(top, bottom):
            start = (plane * height + row) * width
            for i in range(left, right):
                flat_out[unsigned(start + i)] = zero
    window = 2 * radius + 1
    stride = span + patch - 1
    sums = numpy.empty(window * stride, features.dtype)  # per column offset: column sums over the patch rows
    for drow in range(-radius, radius + 1):
        first_row = max(top, -drow)
        stop_row = min(bottom, height - drow)
        if stop_row <= first_row:
            continue
        for row in range(first_row, stop_row):
            # every column offset of this row offset in turn: the rows they read stay in the core's cache
            for dcol in range(-radius, radius + 1):
                first = max(left, -dcol)
                count = min(right, width - dcol) - first
                if count <= 0:
                    continue
                extent = count + patch - 1
                base = (dcol + radius) * stride
                if row == first_row:  # the column sums of the tile's first row, from the patch rows
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
                else:  # slide the column sums down one row: the patch's new bottom row in, its old top out
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
                for column in range(columns):
                    here = (column * height + row) * width + first
                    there = (column * height + row + drow) * width + first + dcol
                    for i in range(count):
                        flat_out[unsigned(here + i)] += weights[i] * flat_values[unsigned(there + i)]
                if planes > columns:
                    here = (columns * height + row) * width + first
                    for i in range(count):
                        flat_out[unsigned(here + i)] += weights[i]
