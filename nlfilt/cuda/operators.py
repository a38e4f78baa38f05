"""The CUDA operators: ``K V`` in one kernel launch, each serving an array-code operator (its twin).

:func:`select` is the one place that chooses them (through
:meth:`nlfilt.backend.Backend.accelerate`): each wraps the operator that
:mod:`nlfilt.operators` built on CuPy arrays, takes its inputs (padded
features, factors, scales) from it, and hands it everything the CUDA kernel does
not do (right-hand sides of more than :data:`nlfilt.cuda.MAX_COLUMNS` columns,
:meth:`row`, :meth:`dense`, progress within a product).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy

from nlfilt import cuda
from nlfilt.collaborative import ArrayGroups
from nlfilt.cuda.groups import CudaGroups
from nlfilt.kernels import weight_floor
from nlfilt.operators import GlobalAffinity, WindowedAffinity, with_ones
from nlfilt.patches import sides


def select(operator: Any, kernel: Any = None) -> Any:
    """The operator to compute with on the GPU: a CUDA operator serving ``operator`` when one exists
    for it (and ``kernel`` and its mode), else ``operator`` itself (its array code runs on CuPy).

    The collaborative filter's groups: :class:`nlfilt.cuda.groups.CudaGroups` when ``nlfilt_bm`` is
    named in ``NLFILT_CUDA_ALTERNATIVES``.

    Windowed NLM of a volume: ``nlfilt_windowed_nlm3d``.  Windowed NLM: ``nlfilt_windowed_box``
    (patches up to :data:`nlfilt.cuda.BOX_MAX_PATCH`), ``nlfilt_windowed_tiled`` when named in
    ``NLFILT_CUDA_ALTERNATIVES``, or ``nlfilt_windowed_nlm`` when named there or for larger patches.
    Global mode: the GEMM tiles of ``operator``, or for kernels with a CUDA profile
    ``nlfilt_global_mma_<kernel>`` (float32, compute capability 8.0 or more) or
    ``nlfilt_global_fused_<kernel>`` when named there (the first when both are).
    """
    if isinstance(operator, ArrayGroups):
        return CudaGroups(operator) if cuda.alternative("nlfilt_bm") else operator
    if isinstance(operator, WindowedAffinity) and operator.window_shape != "box":
        return operator  # the CUDA windowed kernels have the box window built in
    if isinstance(operator, WindowedAffinity) and kernel.fused_windowed and len(operator.shape) == 3:
        return CudaWindowedNLM3D(operator)
    if isinstance(operator, WindowedAffinity) and kernel.fused_windowed and len(operator.shape) == 2:
        if cuda.alternative("nlfilt_windowed_nlm") or operator.patch > cuda.BOX_MAX_PATCH:
            return CudaWindowedNLM(operator)
        if cuda.alternative("nlfilt_windowed_tiled"):
            return CudaTiledWindowedNLM(operator)
        return CudaBoxWindowedNLM(operator)
    if isinstance(operator, GlobalAffinity) and kernel.cuda_profile is not None:
        if (cuda.alternative("nlfilt_global_mma") and operator.left.dtype == numpy.float32
                and cuda.compute_capability() >= 80):
            return CudaMmaGlobal(operator)
        if cuda.alternative("nlfilt_global_fused"):
            return CudaFusedGlobal(operator)
    return operator


class _Served:
    """What every CUDA operator shares: its twin, and the twin's answers to what it does not compute."""

    def __init__(self, twin: Any) -> None:
        self.twin = twin
        self.backend = twin.backend
        self.kernel = twin.kernel
        self.size = twin.size

    def row(self, index: int) -> Any:
        """Row ``index`` of ``K``, from the twin."""
        return self.twin.row(index)

    def dense(self) -> Any:
        """The whole matrix ``K``, from the twin (small images only)."""
        return self.twin.dense()


class CudaWindowedNLM(_Served):
    """Windowed NLM, one CUDA thread per query pixel over its whole window (``nlfilt_windowed_nlm``).

    Each thread sums ``exp(clip(2 sigma^2 / h^2 - |a_i - a_j|^2, floor, 0)) v_j``
    directly from the padded feature image, so ``K`` is never stored and no
    accumulation races; its work per pixel and offset grows with the patch
    area.  The alternative to :class:`CudaBoxWindowedNLM`, and what patches
    larger than :data:`nlfilt.cuda.BOX_MAX_PATCH` use.  The windowed CUDA
    operators share :meth:`matmul` and differ in :meth:`_launch`.
    """

    def matmul(self, vectors: Any, progress: Callable[[float], None] | None = None,
               row_sums: bool = False) -> Any:
        """Return ``K @ vectors`` for ``vectors`` of shape (N, m) (with ``row_sums``, ``K @ [vectors,
        1]``; ``progress`` only in the twin)."""
        if row_sums:
            vectors = with_ones(self.backend.xp, vectors)
        if vectors.shape[1] > cuda.MAX_COLUMNS:
            return self.twin.matmul(vectors, progress)
        values = self.backend.xp.ascontiguousarray(vectors)
        out = self.backend.xp.empty_like(values)
        self._launch(values, out)
        return out

    def _launch(self, values: Any, out: Any) -> None:
        """Run the kernel: ``out = K values``, both (N, m) C-contiguous."""
        self._launch_2d("nlfilt_windowed_nlm", values, out)

    def _launch_2d(self, name: str, values: Any, out: Any) -> None:
        twin = self.twin
        height, width = twin.shape
        dtype = values.dtype
        columns = values.shape[1]
        arguments = (self.backend.xp.ascontiguousarray(twin.padded), values, out, numpy.int32(height),
                     numpy.int32(width), numpy.int32(twin.padded.shape[2]), numpy.int32(twin.patch),
                     numpy.int32(twin.window), numpy.int32(columns), cuda.real(self.kernel.offset, dtype),
                     cuda.real(weight_floor(dtype), dtype))
        if name == "nlfilt_windowed_box":
            grid = (-(-width // cuda.BOX_WIDTH), -(-height // cuda.BOX_HEIGHT))
            cuda.run(name, dtype, grid, (cuda.BOX_WIDTH * cuda.BOX_HEIGHT,), arguments, columns=columns)
        else:
            cuda.launch(name, dtype, twin.size, *arguments, columns=columns)


class CudaBoxWindowedNLM(CudaWindowedNLM):
    """Windowed NLM with O(1) work per pixel and offset (``nlfilt_windowed_box``): the GPU default.

    Blocks of 8 x 32 output pixels; per window offset the squared-difference
    image of the block's patch region goes to shared memory and its box sums
    over the patch come from warp prefix scans (rows, then columns), so the
    cost per pixel and offset does not grow with the patch (up to
    :data:`nlfilt.cuda.BOX_MAX_PATCH`).  Opposite offsets are not shared (each
    pixel gathers over its whole window, without atomics).  Faster than
    ``nlfilt_windowed_nlm`` at patch 7, window 21 (benchmarks/results/gpu-*.md).
    """

    def _launch(self, values: Any, out: Any) -> None:
        self._launch_2d("nlfilt_windowed_box", values, out)


class CudaTiledWindowedNLM(CudaWindowedNLM):
    """Windowed NLM by tiles (``nlfilt_windowed_tiled``): each tile of output pixels and its halo loaded
    into shared memory once, the box sums slid down the tile in registers (a warp per window offset, a
    lane per patch column, a prefix scan across the patch), and each pair of opposite offsets evaluated
    once, its two terms added into a shared accumulator flushed atomically at the end.  Tiles of 16 rows,
    or 8 where those do not fit the shared memory; the box kernel where neither does.
    """

    def _launch(self, values: Any, out: Any) -> None:
        twin = self.twin
        height, width = twin.shape
        dtype = values.dtype
        channels, columns = twin.padded.shape[2], values.shape[1]
        radius, tile_cols = twin.window // 2, 33 - twin.patch
        for tile_rows in cuda.TILED_ROWS:
            shared = ((tile_rows + radius + twin.patch - 1) * (32 + 2 * radius) * channels
                      + 2 * (tile_rows + radius) * (tile_cols + 2 * radius) * columns) * dtype.itemsize
            if shared <= cuda.SHARED_MEMORY:
                break
        else:
            self._launch_2d("nlfilt_windowed_box", values, out)
            return
        out.fill(0)
        sizes = map(numpy.int32, (height, width, channels, twin.patch, twin.window, columns, tile_rows))
        arguments = (self.backend.xp.ascontiguousarray(twin.padded), values, out, *sizes,
                     cuda.real(self.kernel.offset, dtype), cuda.real(weight_floor(dtype), dtype))
        grid = (-(-width // tile_cols), -(-height // tile_rows))
        cuda.run("nlfilt_windowed_tiled", dtype, grid, (cuda.TILED_THREADS,), arguments, columns=columns,
                 shared_memory=shared)


class CudaWindowedNLM3D(CudaWindowedNLM):
    """Windowed NLM of a volume, one CUDA thread per voxel over its whole window box
    (``nlfilt_windowed_nlm3d``): the direct sum over each voxel's box patch, as in
    :class:`CudaWindowedNLM`, with box patches and windows (one side per axis)."""

    def _launch(self, values: Any, out: Any) -> None:
        twin = self.twin
        dtype = values.dtype
        slices, height, width = twin.shape
        sizes = (*sides(twin.patch, 3), *sides(twin.window, 3))
        cuda.launch("nlfilt_windowed_nlm3d", dtype, twin.size, self.backend.xp.ascontiguousarray(twin.padded),
                    values, out, numpy.int32(slices), numpy.int32(height), numpy.int32(width),
                    numpy.int32(twin.padded.shape[3]), *(numpy.int32(side) for side in sizes),
                    numpy.int32(values.shape[1]), cuda.real(self.kernel.offset, dtype),
                    cuda.real(weight_floor(dtype), dtype), columns=values.shape[1])


class CudaFusedGlobal(_Served):
    """The global operator as one CUDA kernel (``nlfilt_global_fused_<kernel>``), for every kernel with
    a CUDA profile.

    Each block holds 128 query rows; key tiles and factor chunks stream
    through shared memory, and the pair statistic, the profile and ``K V``
    stay in registers, so neither ``K`` nor a tile of it is ever stored.
    Exact arithmetic in the working dtype on CUDA cores; every pair is
    evaluated (symmetry is not used).  The alternative to the GEMM tiles: it
    needs no tile memory; benchmarks/results/gpu-*.md compares its speed
    with the tiles'.
    """

    def __init__(self, twin: GlobalAffinity) -> None:
        super().__init__(twin)
        xp = self.backend.xp
        self.left_t = xp.ascontiguousarray(twin.left.T)
        self.right = xp.ascontiguousarray(twin.right_t.T)
        self.scale = twin.scale

    def matmul(self, vectors: Any, progress: Callable[[float], None] | None = None,
               row_sums: bool = False) -> Any:
        """Return ``K @ vectors`` for ``vectors`` of shape (N, m) (with ``row_sums``, ``K @ [vectors,
        1]``; ``progress`` only in the twin)."""
        if row_sums:
            vectors = with_ones(self.backend.xp, vectors)
        xp = self.backend.xp
        columns = vectors.shape[1]
        if columns > cuda.MAX_COLUMNS:
            return self.twin.matmul(vectors, progress)
        values = vectors * self.scale[:, None] if self.scale is not None else vectors
        values = xp.ascontiguousarray(values)
        out = xp.empty_like(values)
        dtype = values.dtype
        blocks = max(1, min(cuda.MAX_BLOCKS, -(-self.size // cuda.FUSED_QUERIES)))
        cuda.run(
            cuda.fused_kernel(self.kernel), dtype, (blocks,), (cuda.FUSED_QUERIES,),
            (self.left_t, self.right, values, out, numpy.int64(self.size), numpy.int32(self.left_t.shape[0]),
             numpy.int32(columns), numpy.int32(self.kernel.layers), cuda.real(weight_floor(dtype), dtype)),
            columns=columns)
        if self.scale is not None:
            out *= self.scale[:, None]
        return out


class CudaMmaGlobal(_Served):
    """The global operator on tensor cores (``nlfilt_global_mma_<kernel>``, float32), for every kernel with
    a CUDA profile.

    FlashAttention's scheme without its running maximum (the profiles are
    bounded): blocks of 4 warps take a tile of 64 query rows against a run
    of :data:`nlfilt.cuda.MMA_CHUNK` tiles of 64 keys from the diagonal on
    (``K`` is symmetric: only tiles on or above it); each warp computes its
    16 x 64 block of the pair statistic with TF32 matrix products in three
    passes (float32 accuracy), applies the profile in registers and, through
    shared memory, multiplies the weights with the keys' values and, mirrored,
    with its own rows' values.  Terms are added atomically, so a pixel's
    last bits vary between runs.
    """

    def __init__(self, twin: GlobalAffinity) -> None:
        super().__init__(twin)
        xp = self.backend.xp
        self.left = xp.ascontiguousarray(twin.left)
        self.right_t = xp.ascontiguousarray(twin.right_t)
        self.scale = twin.scale
        tiles = -(-self.size // cuda.MMA_TILE)
        work = [numpy.stack([numpy.full(len(range(tile, tiles, cuda.MMA_CHUNK)), tile),
                             numpy.arange(tile, tiles, cuda.MMA_CHUNK)], axis=1) for tile in range(tiles)]
        self.work = xp.asarray(numpy.concatenate(work).astype(numpy.int32))

    def matmul(self, vectors: Any, progress: Callable[[float], None] | None = None,
               row_sums: bool = False) -> Any:
        """Return ``K @ vectors`` for ``vectors`` of shape (N, m) (with ``row_sums``, ``K @ [vectors,
        1]``; ``progress`` only in the twin)."""
        xp = self.backend.xp
        if row_sums:
            vectors = with_ones(xp, vectors)
        columns = vectors.shape[1]
        if columns > cuda.MAX_COLUMNS:
            return self.twin.matmul(vectors, progress)
        values = vectors * self.scale[:, None] if self.scale is not None else vectors
        values = xp.ascontiguousarray(values, dtype=numpy.float32)
        out = xp.zeros_like(values)
        items = self.work.shape[0]
        cuda.run(cuda.mma_kernel(self.kernel), numpy.float32, (max(1, min(cuda.MAX_BLOCKS, items)),),
                 (cuda.MMA_TILE // 16 * 32,),
                 (self.left, self.right_t, values, out, self.work, numpy.int32(items), numpy.int32(self.size),
                  numpy.int32(self.left.shape[1]), numpy.int32(columns), numpy.int32(self.kernel.layers),
                  numpy.float32(weight_floor(numpy.float32))), columns=columns)
        if self.scale is not None:
            out *= self.scale[:, None]
        return out
