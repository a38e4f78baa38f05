"""The collaborative filter on the GPU in two kernels per stage: ``nlfilt_bm_match`` (a stack's:
``nlfilt_bm_match_series``) and ``nlfilt_bm_filter`` (nlfilt/cuda/groups.cu).

:class:`CudaGroups` serves :class:`nlfilt.collaborative.ArrayGroups` (its twin)
and is chosen by :func:`nlfilt.cuda.operators.select` when ``nlfilt_bm`` is
named in ``NLFILT_CUDA_ALTERNATIVES`` (until a GPU run has checked it against
the twin) and the work fits a block's shared memory; otherwise the twin's
array code runs on CuPy.
"""

from __future__ import annotations

from typing import Any

import numpy

from nlfilt import cuda
from nlfilt.collaborative import GAIN_FLOOR, ArrayGroups, kaiser_window, transform_matrices

#: Bytes of ``long long`` (the matching kernel's keys).
_KEY_BYTES = 8


def match_shared_bytes(patch: int, step: int, radius: int, group: int) -> int:
    """Dynamic shared memory of one ``nlfilt_bm_match`` block: the keys of its references and the
    largest search region of its tile of references (int32 levels)."""
    threads = cuda.MATCH_ROWS * cuda.MATCH_COLS
    rows = (cuda.MATCH_ROWS - 1) * step + patch + 2 * radius
    cols = (cuda.MATCH_COLS - 1) * step + patch + 2 * radius
    return (group - 1) * threads * _KEY_BYTES + rows * cols * 4


def series_shared_bytes(group: int) -> int:
    """Dynamic shared memory of one ``nlfilt_bm_match_series`` block: each thread's kept keys and their
    pixels."""
    return (group - 1) * cuda.SERIES_THREADS * (_KEY_BYTES + 4)


def filter_shared_bytes(patch: int, group: int, dtype: Any) -> int:
    """Dynamic shared memory of one ``nlfilt_bm_filter`` block: three blocks of a group's values and the
    block sum's scratch."""
    return (3 * group * patch * patch + cuda.GROUP_THREADS // 32) * numpy.dtype(dtype).itemsize


def serves(twin: ArrayGroups, dtype: Any, radius: int, group: int) -> bool:
    """Whether the kernels serve ``twin``'s image for this stage: both blocks within the shared memory
    a block may ask for."""
    return (match_shared_bytes(twin.patch, twin.step, radius, group) <= cuda.SHARED_MEMORY
            and filter_shared_bytes(twin.patch, group, dtype) <= cuda.SHARED_MEMORY)


class CudaGroups:
    """Matching and filtering of the collaborative filter, one CUDA kernel each (the twin's results:
    the same members, the estimate within float rounding; the atomic additions make the order of a
    pixel's terms, hence its last bits, vary from run to run).

    Parameters
    ----------
    twin : ArrayGroups
        The array-code implementation on CuPy arrays it serves; it computes what does not fit the
        kernels' shared memory.
    """

    def __init__(self, twin: ArrayGroups) -> None:
        self.twin = twin
        self.backend = twin.backend
        self.shape = twin.shape
        self.patch = twin.patch
        self.references = twin.references
        xp = self.backend.xp
        self._rows = xp.asarray(twin.rows, dtype=xp.int32)
        self._cols = xp.asarray(twin.cols, dtype=xp.int32)

    def match(self, levels: Any, *, radius: int, group: int) -> Any:
        """The groups of ``levels`` (as :meth:`nlfilt.collaborative.ArrayGroups.match`)."""
        if self.twin.frames > 1 or not serves(self.twin, numpy.float32, radius, group):
            return self.twin.match(levels, radius=radius, group=group)
        xp = self.backend.xp
        height, width = levels.shape
        rows, cols = self.twin.rows.size, self.twin.cols.size
        members = xp.empty((rows * cols, group), dtype=xp.int32)
        grid = (-(-cols // cuda.MATCH_COLS), -(-rows // cuda.MATCH_ROWS))
        arguments = (xp.ascontiguousarray(levels, dtype=xp.int32), self._rows, self._cols, members,
                     *map(numpy.int32, (height, width, rows, cols, self.patch, radius, group)))
        cuda.run("nlfilt_bm_match", numpy.float32, grid, (cuda.MATCH_ROWS * cuda.MATCH_COLS,), arguments,
                 shared_memory=match_shared_bytes(self.patch, self.twin.step, radius, group))
        return members

    def match_series(self, levels: Any, *, radius: int, follow: int, reach: int, group: int) -> Any:
        """The groups of a stack (as :meth:`nlfilt.collaborative.ArrayGroups.match_series`)."""
        self.twin.check_series(levels.shape, radius=radius, follow=follow)
        if group < 2 or series_shared_bytes(group) > cuda.SHARED_MEMORY:
            return self.twin.match_series(levels, radius=radius, follow=follow, reach=reach, group=group)
        xp = self.backend.xp
        frames, height, width = levels.shape
        rows, cols = self.twin.rows.size, self.twin.cols.size
        members = xp.empty((rows * cols, group), dtype=xp.int32)
        blocks = max(1, min(cuda.MAX_BLOCKS, -(-(rows * cols) // cuda.SERIES_THREADS)))
        arguments = (xp.ascontiguousarray(levels, dtype=xp.int32), self._rows, self._cols, members,
                     *map(numpy.int32, (frames, height, width, rows, cols, self.patch, radius, follow, reach,
                                        group)))
        cuda.run("nlfilt_bm_match_series", numpy.float32, (blocks,), (cuda.SERIES_THREADS,), arguments,
                 shared_memory=series_shared_bytes(group))
        return members

    def filter(self, image: Any, pilot: Any | None, members: Any, sigma: float, *, threshold: float) -> Any:
        """One stage over all groups (as :meth:`nlfilt.collaborative.ArrayGroups.filter`)."""
        dtype = image.dtype
        group = members.shape[1]
        shared = filter_shared_bytes(self.patch, group, dtype)
        if shared > cuda.SHARED_MEMORY:
            return self.twin.filter(image, pilot, members, sigma, threshold=threshold)
        xp = self.backend.xp
        height, width, channels = image.shape
        planes = xp.ascontiguousarray(xp.moveaxis(image, 2, 0))
        pilots = planes if pilot is None else xp.ascontiguousarray(xp.moveaxis(pilot, 2, 0))
        numerator = xp.zeros((channels, height, width), dtype=dtype)
        denominator = xp.zeros((height, width), dtype=dtype)
        # the stage's transform of a patch side and its inverse, the group's and its inverse, the window
        constants = [xp.ascontiguousarray(xp.asarray(matrix, dtype=dtype)) for matrix in (
            *transform_matrices(self.patch, group, pilot is None), kaiser_window(self.patch))]
        sizes = map(numpy.int32, (members.shape[0], channels, height * width, width, self.patch, group))
        scalars = map(dtype.type, (threshold * sigma, sigma * sigma, GAIN_FLOOR))
        arguments = (planes, pilots, xp.ascontiguousarray(members, dtype=xp.int32), *constants, numerator,
                     denominator, *sizes, *scalars, numpy.int32(pilot is None))
        blocks = max(1, min(cuda.MAX_BLOCKS, members.shape[0]))
        cuda.run("nlfilt_bm_filter", dtype, (blocks,), (cuda.GROUP_THREADS,), arguments, shared_memory=shared)
        return xp.ascontiguousarray(xp.moveaxis(numerator / denominator, 0, 2))

    def bayes(self, image: Any, pilot: Any, members: Any, sigma: float) -> Any:
        """The empirical-Bayes estimate over all groups: the twin's array code (batched solves)."""
        return self.twin.bayes(image, pilot, members, sigma)
