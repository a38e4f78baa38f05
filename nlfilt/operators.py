"""Matrix-free affinity operators ``V -> K V`` over all pixel pairs or a search window.

Both operators take the feature image of a kernel (see :mod:`nlfilt.kernels`),
work through ``backend.xp`` only and never hold the N x N matrix:

* :class:`GlobalAffinity` walks over tiles of query rows; each tile is one GEMM
  ``left[rows] @ right[:, first row:]`` giving the pair statistic against the
  pixels from the tile on (``K`` is symmetric, so each pair is evaluated once),
  the kernel profile in place, and two products with the right-hand side (the
  tile's rows, and the mirrored pairs).
* :class:`WindowedAffinity` walks over the offsets of the search window; each
  offset is one shifted-image product, a box sum over the patch and the kernel
  profile, and serves the offset and its opposite (``K`` is symmetric).

On the CPU, ``backend.workers`` threads share the elementwise work: the pieces of
each tile, or the offsets of the window (each thread with its own accumulator).

``matmul(vectors, progress, row_sums=False)`` returns ``K V``, or with
``row_sums`` ``K [V, 1]`` (one more column, the row sums of ``K``), which an
operator may compute without the column of ones (:func:`with_ones` gives it
to those that need it).  It calls ``progress(fraction)`` (0 < fraction <= 1,
non-decreasing) from the calling thread as the product advances: after each
tile in the global mode (the fraction of its pairs), after each offset of the
calling thread's share in the windowed mode.  The CUDA operators
(:mod:`nlfilt.cuda.operators`), one kernel launch each and chosen by
:meth:`nlfilt.backend.Backend.accelerate`, report nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from nlfilt.backend import Backend
from nlfilt.kernels import safe_reciprocal
from nlfilt.patches import box_sum, pad_reflect, sides
from nlfilt.workers import Workers

#: Window shapes: 'box' (every offset weighs 1) and 'tent', the separable taper
#: ``prod_axes (1 - |offset| / (r + 1))``, r the window's radius on that axis: its Fourier transform is
#: non-negative, so by the Schur product theorem ``K`` times it stays positive semidefinite for a
#: positive semidefinite ``K`` (arccos, ntk), where a box window breaks that.
WINDOW_SHAPES = ("box", "tent")


def taper(offset: tuple[int, ...], windows: tuple[int, ...]) -> float:
    """The tent window's weight of ``offset`` for windows of these sides (one per axis)."""
    return math.prod(1 - abs(step) / (side // 2 + 1) for step, side in zip(offset, windows, strict=True))


def with_ones(xp: Any, vectors: Any) -> Any:
    """``[vectors, 1]``, shape (N, m + 1), stored column after column (Fortran order), so that an
    operator that works on columns (``vectors.T``) reads it without a copy."""
    size, columns = vectors.shape
    stacked = xp.empty((columns + 1, size), dtype=vectors.dtype).T
    stacked[:, :columns] = vectors
    stacked[:, columns] = 1
    return stacked


class GlobalAffinity:
    """``K V`` over every pixel pair, in tiles of query rows (peak memory bounded).

    Parameters
    ----------
    backend : Backend
        Array module and worker count.
    features : array, shape (H, W, C)
        The kernel's feature image (``kernel.features``).
    kernel : object
        A kernel from :mod:`nlfilt.kernels`.
    patch : int
        Odd patch side.
    memory_budget : int
        Bytes that the patch factors, the tile buffers and the right-hand
        sides may occupy together.
    columns : int
        Largest number of right-hand-side columns that will be applied.
    """

    def __init__(self, backend: Backend, features: Any, kernel: Any, patch: int,
                 memory_budget: int, columns: int) -> None:
        xp = backend.xp
        self.backend = backend
        self.kernel = kernel
        self.size = math.prod(features.shape[:-1])
        patches = backend.patch_matrix(features, patch)
        self.left, right, self.scale = kernel.global_factors(xp, patches)
        del patches
        # stored transposed, (N, k) C-contiguous: every slice of rows is a contiguous operand, whose
        # transpose BLAS / cuBLAS read in place (a slice of columns of (k, N) would be copied per tile)
        self.right_t = xp.ascontiguousarray(right.T)
        del right
        itemsize = features.dtype.itemsize
        workers = max(1, backend.workers)
        blocks = backend.profile_scratch_blocks(kernel)
        # the factors, plus the right-hand sides, results and temporaries of twicing
        fixed = (self.left.size + self.right_t.size + 16 * self.size * columns) * itemsize
        row_bytes = self.size * itemsize
        # Scratch for one piece of the profile per worker; on the GPU the piece is the tile.
        chunk = backend.profile_chunk
        rows = 0
        if chunk is not None:
            rows = (memory_budget - fixed - workers * chunk * blocks * itemsize) // row_bytes
        if chunk is None or rows * self.size < chunk:  # pieces as large as the tile
            rows = (memory_budget - fixed) // (row_bytes * (1 + workers * blocks))
            chunk = max(rows, 1) * self.size
        if rows < 1:
            needed = fixed + row_bytes * (1 + workers * blocks)
            raise ValueError(
                f"memory_budget={memory_budget} bytes is too small for a global operator on "
                f"{self.size} pixels; at least {needed} bytes are needed: use a search window "
                "or a larger memory budget"
            )
        self.tile_rows = int(min(rows, self.size, max(1, backend.tile_elements // self.size)))
        self.chunk = int(min(chunk, self.tile_rows * self.size))

    def _tiles(self) -> list[tuple[int, int]]:
        step = self.tile_rows
        return [(start, min(start + step, self.size)) for start in range(0, self.size, step)]

    def _profile_tile(self, start: int, stop: int, tile: Any, scratch: list[list[Any]],
                      workers: Workers) -> tuple[Any, Any]:
        """Return ``f(t)`` for rows ``start:stop``: the diagonal block (columns ``start:stop``) and
        the off-diagonal block (columns ``stop:``), two C-contiguous arrays carved from ``tile``.

        ``K`` is symmetric, so the columns left of the tile (the pairs an
        earlier tile already evaluated) are skipped, and the off-diagonal
        block also serves the mirrored pairs (its transpose, read in place).
        The GEMMs run on the BLAS library's own threads; the elementwise
        profile runs over cache-sized pieces of both blocks, dealt out to the
        host workers (``scratch[w]`` holds worker w's scratch blocks).
        """
        xp = self.backend.xp
        rows, rest = stop - start, self.size - stop
        flat_tile = tile.reshape(-1)
        diagonal = flat_tile[: rows * rows].reshape(rows, rows)
        off = flat_tile[rows * rows : rows * (rows + rest)].reshape(rows, rest)
        xp.matmul(self.left[start:stop], self.right_t[start:stop].T, out=diagonal)
        if rest:
            xp.matmul(self.left[start:stop], self.right_t[stop:].T, out=off)
        flat = flat_tile[: rows * (rows + rest)]  # both blocks, one after the other
        pieces = [slice(low, min(low + self.chunk, flat.size)) for low in range(0, flat.size, self.chunk)]

        def profile(share: range) -> None:
            buffers = scratch[share.start]
            for index in share:
                piece = flat[pieces[index]]
                self.backend.apply_profile(self.kernel, piece, [buffer[: piece.size] for buffer in buffers])

        workers.map(profile, workers.shares(len(pieces)))
        return diagonal, off

    def _buffers(self, workers: Workers) -> tuple[Any, list[list[Any]]]:
        """A tile and, for each worker, the kernel's scratch blocks of one piece."""
        xp = self.backend.xp
        dtype = self.left.dtype
        tile = xp.empty((self.tile_rows, self.size), dtype)
        blocks = self.backend.profile_scratch_blocks(self.kernel)
        scratch = [[xp.empty(self.chunk, dtype) for _ in range(blocks)] for _ in range(workers.count)]
        return tile, scratch

    def matmul(self, vectors: Any, progress: Callable[[float], None] | None = None,
               row_sums: bool = False) -> Any:
        """Return ``K @ vectors`` for ``vectors`` of shape (N, m) (with ``row_sums``, ``K @ [vectors, 1]``).

        ``progress(fraction)``, when given, after each tile: the fraction of
        the pairs evaluated so far.
        """
        xp = self.backend.xp
        if row_sums:
            vectors = with_ones(xp, vectors)
        if self.scale is not None:
            vectors = vectors * self.scale[:, None]
        out = xp.zeros_like(vectors)
        tiles = self._tiles()
        pairs = [(stop - start) * (self.size - start) for start, stop in tiles]
        total, done = sum(pairs), 0
        with Workers(self.backend) as workers:
            tile, scratch = self._buffers(workers)
            for (start, stop), tile_pairs in zip(tiles, pairs, strict=True):
                diagonal, off = self._profile_tile(start, stop, tile, scratch, workers)
                # rows start:stop against columns start:stop and stop:, then the mirrored pairs
                out[start:stop] += diagonal @ vectors[start:stop]
                if stop < self.size:
                    out[start:stop] += off @ vectors[stop:]
                    out[stop:] += off.T @ vectors[start:stop]
                if progress is not None:
                    done += tile_pairs
                    progress(done / total)
        if self.scale is not None:
            out *= self.scale[:, None]
        return out

    def row(self, index: int) -> Any:
        """Return row ``index`` of ``K`` (length N) from one GEMM row: O(N d) work."""
        xp = self.backend.xp
        values = (self.left[index : index + 1] @ self.right_t.T).reshape(-1)
        blocks = self.backend.profile_scratch_blocks(self.kernel)
        scratch = [xp.empty_like(values) for _ in range(blocks)]
        values = self.backend.apply_profile(self.kernel, values, scratch)
        if self.scale is not None:
            values *= self.scale
            values *= self.scale[index]
        return values

    def dense(self) -> Any:
        """Return the whole matrix ``K`` (for small images only)."""
        xp = self.backend.xp
        matrix = xp.empty((self.size, self.size), dtype=self.left.dtype)
        with Workers(self.backend) as workers:
            tile, scratch = self._buffers(workers)
            for start, stop in self._tiles():
                diagonal, off = self._profile_tile(start, stop, tile, scratch, workers)
                matrix[start:stop, start:stop] = diagonal
                matrix[start:stop, stop:] = off
                matrix[stop:, start:stop] = off.T
        if self.scale is not None:
            matrix *= self.scale[:, None]
            matrix *= self.scale[None, :]
        return matrix


class WindowedAffinity:
    """``K V`` over pixel pairs at most ``window // 2`` apart on each axis.

    The search window is truncated at the image borders (never padded); the
    patches themselves use reflect padding like the global mode.

    Parameters
    ----------
    backend : Backend
        Array module and worker count.
    features : array, shape (H, W, C)
        The kernel's feature image (``kernel.features``).
    kernel : object
        A kernel from :mod:`nlfilt.kernels`.
    patch, window : int or tuple of int
        Odd patch side and odd search-window side (one per spatial axis, or
        one for all).
    memory_budget : int
        Bytes the operator may use.  When ``reuse`` is true and the weights of
        every offset fit in what the working buffers leave of it, they are
        computed once and kept, so later applications are multiply-adds only.
    reuse : bool
        Whether the operator will be applied several times.
    shape : {'box', 'tent'}
        The window's shape (:data:`WINDOW_SHAPES`): tent weights each offset
        by :func:`taper`.
    """

    def __init__(self, backend: Backend, features: Any, kernel: Any, patch: int | tuple[int, ...],
                 window: int | tuple[int, ...], memory_budget: int, reuse: bool, shape: str = "box") -> None:
        xp = backend.xp
        self.backend = backend
        self.kernel = kernel
        self.patch = patch
        self.window = window
        self.shape = features.shape[:-1]
        self.size = math.prod(self.shape)
        self._patches = sides(patch, len(self.shape))
        self.padded = pad_reflect(xp, features, tuple(side // 2 for side in self._patches))
        windows = sides(window, len(self.shape))
        radii = [min(side // 2, extent - 1) for side, extent in zip(windows, self.shape, strict=True)]
        # One of each pair of opposite offsets (the first nonzero entry positive), plus the zero offset
        # for the diagonal; in 2-D, row offsets 0.. and column offsets -r..r.
        zero = (0,) * len(self.shape)
        steps = [range(-radius, radius + 1) for radius in radii]
        self.offsets = [offset for offset in itertools.product(*steps) if offset >= zero]
        if shape not in WINDOW_SHAPES:
            raise ValueError(f"window shape must be one of {WINDOW_SHAPES}; got {shape!r}")
        self.window_shape = shape
        self.tapers = [taper(offset, windows) if shape == "tent" else 1.0 for offset in self.offsets]
        if kernel.uses_difference:
            self.scale = None
            self.inv_norm = None
        else:
            squares = xp.sum(self.padded * self.padded, axis=-1)
            norm = xp.sqrt(box_sum(xp, squares, self._patches))
            self.scale = norm
            self.inv_norm = safe_reciprocal(xp, norm)
        itemsize = features.dtype.itemsize
        padded_size = math.prod(self.padded.shape[:-1])
        channels = features.shape[-1]
        # per worker: channel differences, their sum, four box-sum buffers, the profile's
        # scratch, one product buffer and the accumulator planes (up to C + 1 of them)
        self.scratch_blocks = backend.profile_scratch_blocks(kernel)
        self._space_sizes = ([padded_size * channels] + [padded_size] * 5
                             + [self.size] * (self.scratch_blocks + 1))
        working = (sum(self._space_sizes) + (channels + 1) * self.size) * itemsize
        overlaps = (math.prod(extent - abs(step) for extent, step in zip(self.shape, offset, strict=True))
                    for offset in self.offsets)
        cache_bytes = sum(overlaps) * itemsize
        self._cache: list[Any] | None = None
        if reuse and cache_bytes + working * max(1, backend.workers) <= memory_budget:
            self._cache = [None] * len(self.offsets)

    @property
    def keeps_weights(self) -> bool:
        """Whether the operator keeps every offset's weights after computing them (``reuse`` and within
        the memory budget): later products are multiply-adds only."""
        return self._cache is not None

    def _regions(self, *offset: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Slices of the query pixels i and their partners j = i + offset (one step per spatial axis)."""

        def region(steps: tuple[int, ...]) -> tuple[slice, ...]:
            """The pixels whose partner at ``steps`` lies in the image."""
            return tuple(slice(max(0, -step), extent - max(0, step))
                         for step, extent in zip(steps, self.shape, strict=True))

        return region(offset), region(tuple(-step for step in offset))

    def _workspace(self) -> list[Any]:
        """Flat buffers for one worker's temporaries (see ``_space_sizes``)."""
        xp = self.backend.xp
        return [xp.empty(size, dtype=self.padded.dtype) for size in self._space_sizes]

    def _weights(self, index: int, space: list[Any]) -> Any:
        """Return ``f(t)`` for the pairs of offset ``index``, shape of the overlap.

        The result lives in ``space`` (valid until the next call) unless the
        operator caches its weights.
        """
        if self._cache is not None and self._cache[index] is not None:
            return self._cache[index]
        xp = self.backend.xp
        offset = self.offsets[index]
        region_i, region_j = self._regions(*offset)

        def padded_region(region: tuple[slice, ...]) -> Any:
            """The padded features under the patches of ``region``'s pixels."""
            return self.padded[tuple(slice(part.start, part.stop + side - 1)
                                     for part, side in zip(region, self._patches, strict=True))]

        first, second = padded_region(region_i), padded_region(region_j)
        channels = first.shape[-1]
        pair = space[1][: math.prod(first.shape[:-1])].reshape(first.shape[:-1])
        product = space[0][: first.size].reshape(first.shape) if channels > 1 else pair[..., None]
        if self.kernel.uses_difference:
            xp.subtract(first, second, out=product)
            xp.multiply(product, product, out=product)
        else:
            xp.multiply(first, second, out=product)
        if channels > 1:
            xp.sum(product, axis=-1, out=pair)
        stat = box_sum(xp, pair, self._patches, space[2:6])
        if self.inv_norm is None:
            t = self.kernel.windowed_statistic(xp, stat, None, None, offset)
        else:
            t = self.kernel.windowed_statistic(xp, stat, self.inv_norm[region_i], self.inv_norm[region_j],
                                               offset)
        scratch = [buffer[: t.size].reshape(t.shape) for buffer in space[6 : 6 + self.scratch_blocks]]
        weights = self.backend.apply_profile(self.kernel, t, scratch)
        if self.tapers[index] != 1.0:
            weights *= weights.dtype.type(self.tapers[index])
        if self._cache is not None:
            weights = weights.copy()
            self._cache[index] = weights
        return weights

    def matmul(self, vectors: Any, progress: Callable[[float], None] | None = None,
               row_sums: bool = False) -> Any:
        """Return ``K @ vectors`` for ``vectors`` of shape (N, m) (with ``row_sums``, ``K @ [vectors, 1]``).

        ``progress(fraction)``, when given, after each offset of the first
        share (the shares are dealt round-robin, so its fraction is about that
        of the whole product).  The offsets' contributions are summed in
        :data:`PARTIALS` fixed shares, so the result does not depend on the
        number of threads.
        """
        xp = self.backend.xp
        if row_sums:
            vectors = with_ones(xp, vectors)
        columns = vectors.shape[1]
        planes = xp.ascontiguousarray(vectors.T).reshape(columns, *self.shape)
        if self.scale is not None:
            planes = planes * self.scale

        def work(share: range) -> Any:
            space = self._workspace()
            total = xp.zeros_like(planes)
            report = progress if share.start == 0 else None  # the first share runs in the calling thread
            for done, index in enumerate(share, start=1):
                weights = self._weights(index, space)
                product = space[-1][: weights.size].reshape(weights.shape)
                region_i, region_j = self._regions(*self.offsets[index])
                mirrored = any(self.offsets[index])
                for plane, plane_total in zip(planes, total, strict=True):
                    xp.multiply(weights, plane[region_j], out=product)
                    plane_total[region_i] += product
                    if mirrored:
                        xp.multiply(weights, plane[region_i], out=product)
                        plane_total[region_j] += product
                if report is not None:
                    report(done / len(share))
            return total

        with Workers(self.backend) as workers:
            parts = workers.map_partials(work, len(self.offsets))
        out = parts[0]
        for part in parts[1:]:
            out += part
        if self.scale is not None:
            out *= self.scale
        return out.reshape(columns, self.size).T

    def row(self, index: int) -> Any:
        """Return row ``index`` of ``K`` (length N): ``K`` is symmetric, so ``K e_index``."""
        unit = self.backend.xp.zeros((self.size, 1), dtype=self.padded.dtype)
        unit[index] = 1
        return self.matmul(unit)[:, 0]

    def dense(self) -> Any:
        """Return the whole matrix ``K`` (for small images only)."""
        xp = self.backend.xp
        size = self.size
        index = xp.arange(size).reshape(self.shape)
        matrix = xp.zeros((size, size), dtype=self.padded.dtype)
        space = self._workspace()
        for position in range(len(self.offsets)):
            weights = self._weights(position, space)
            region_i, region_j = self._regions(*self.offsets[position])
            matrix[index[region_i].ravel(), index[region_j].ravel()] = weights.ravel()
            matrix[index[region_j].ravel(), index[region_i].ravel()] = weights.ravel()
        if self.scale is not None:
            flat = self.scale.ravel()
            matrix *= flat[:, None]
            matrix *= flat[None, :]
        return matrix
