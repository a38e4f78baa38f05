"""Compiled CPU kernels (numba) of the collaborative filter: block matching with the k nearest kept,
and one stage of group filtering added into one accumulator.

:class:`CompiledGroups` serves :class:`nlfilt.collaborative.ArrayGroups` (its
twin, which the tests compare it with) and is chosen by
:func:`nlfilt.jit.select`.  Both kernels work on rows of reference patches,
shared out to the host threads in bands whose grid does not depend on the
thread count, so neither do the results.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy

from nlfilt.collaborative import GAIN_FLOOR, INVALID_KEY, ArrayGroups, kaiser_window, transform_matrices
from nlfilt.workers import Workers


class CompiledGroups:
    """Block matching and group filtering, each one compiled kernel per band of reference rows.

    Matching: for each reference row and each offset of the search window
    (in offset order) the squared differences of the row's patches are
    summed down the patch's rows for every column, then across the patch
    for each reference (float64, exact: the levels are integers), and the
    candidate's key is inserted into the reference's sorted list of the
    ``group - 1`` smallest.  Filtering: per group, its patches gathered, the
    stage's separable 3-D transform (each patch, then along the group),
    shrinkage, the inverse, and the weighted patches added into the accumulator.  A
    group's patches reach ``reach`` rows above and below its reference
    (the search radius) and ``patch - 1`` below, so bands of reference
    rows at least ``2 reach + patch`` pixel rows high are filtered in two
    phases (even bands side by side, then odd ones): no two threads add
    into the same pixel, and every pixel receives its terms in an order
    fixed by the band grid.

    Parameters
    ----------
    twin : ArrayGroups
        The array-code implementation this one serves (same image shape, patch and step).
    """

    def __init__(self, twin: ArrayGroups) -> None:
        self.twin = twin
        self.backend = twin.backend
        self.shape = twin.shape
        self.patch = twin.patch
        self.references = twin.references

    def match(self, levels: Any, *, radius: int, group: int) -> numpy.ndarray:
        """The groups of ``levels`` (as :meth:`nlfilt.collaborative.ArrayGroups.match`)."""
        if self.twin.frames > 1:
            raise ValueError("the groups of a stack come from match_series")
        rows, cols = self.twin.rows, self.twin.cols
        members = numpy.empty((rows.size * cols.size, group), numpy.int32)
        levels = numpy.ascontiguousarray(levels, dtype=numpy.int32)
        kernel = _kernels()[0]
        with Workers(self.backend) as workers:
            workers.map(lambda share: [kernel(levels, rows, cols, index, self.patch, radius, members)
                                       for index in share], workers.shares(rows.size))
        return members

    def match_series(self, levels: Any, *, radius: int, follow: int, reach: int, group: int) -> numpy.ndarray:
        """The groups of a stack (as :meth:`nlfilt.collaborative.ArrayGroups.match_series`), one frame's
        references per kernel call."""
        twin = self.twin
        twin.check_series(levels.shape, radius=radius, follow=follow)
        frames = levels.shape[0]
        rows, cols = twin.rows, twin.cols[:twin.cols.size // frames]
        members = numpy.empty((rows.size * frames * cols.size, group), numpy.int32)
        levels = numpy.ascontiguousarray(levels, dtype=numpy.int32)
        kernel = _kernels()[2]
        with Workers(self.backend) as workers:
            workers.map(lambda share: [kernel(levels, rows, cols, time, self.patch, radius, follow, reach,
                                              members) for time in share], workers.shares(frames))
        return members

    def filter(self, image: Any, pilot: Any | None, members: Any, sigma: float, *, threshold: float) -> Any:
        """One stage over all groups (as :meth:`nlfilt.collaborative.ArrayGroups.filter`)."""
        dtype = image.dtype
        patch, group = self.patch, members.shape[1]
        planes = numpy.ascontiguousarray(numpy.moveaxis(image, 2, 0))
        guides = planes if pilot is None else numpy.ascontiguousarray(numpy.moveaxis(pilot, 2, 0))
        # the stage's 3-D transform: forward and inverse along a patch side, their transposes along the group
        forward_patch, inverse_patch, forward_group, inverse_group = transform_matrices(patch, group,
                                                                                        pilot is None)
        matrices = tuple(numpy.ascontiguousarray(matrix, dtype=dtype)
                         for matrix in (forward_patch, inverse_patch, forward_group.T, inverse_group.T))
        constants = (matrices, kaiser_window(patch).astype(dtype))
        scalars = (dtype.type(threshold * sigma), dtype.type(sigma * sigma), dtype.type(GAIN_FLOOR),
                   pilot is None)
        kernel = _kernels()[1]

        def work(first: int, last: int, numerator: numpy.ndarray, denominator: numpy.ndarray) -> None:
            buffers = _scratch((2 * planes.shape[0] + 2, patch * patch * group), dtype)
            kernel(planes, guides, members, first, last, *constants, *scalars, buffers, numerator,
                   denominator)

        return numpy.ascontiguousarray(self._by_bands(image, members, dtype, work))

    def bayes(self, image: Any, pilot: Any, members: Any, sigma: float) -> Any:
        """The empirical-Bayes estimate over all groups (as :meth:`nlfilt.collaborative.ArrayGroups.bayes`),
        each group solved in float64."""
        patch, group = self.patch, members.shape[1]
        planes = numpy.ascontiguousarray(numpy.moveaxis(image, 2, 0))
        guides = numpy.ascontiguousarray(numpy.moveaxis(pilot, 2, 0))
        window = kaiser_window(patch)
        noise = group * float(sigma) ** 2
        kernel = _kernels()[4]

        def work(first: int, last: int, numerator: numpy.ndarray, denominator: numpy.ndarray) -> None:
            buffers = _scratch((6, patch * patch * group), numpy.float64)
            kernel(planes, guides, members, first, last, window, noise, buffers, numerator, denominator)

        return numpy.ascontiguousarray(self._by_bands(image, members, numpy.float64, work), dtype=image.dtype)

    def _by_bands(self, image: Any, members: Any, dtype: Any, work: Callable[..., None]) -> numpy.ndarray:
        """``numerator / denominator`` of ``dtype`` (a (H, W, C) view of a (C, H, W) array), with
        ``work(first, last, numerator, denominator)`` adding groups ``first:last`` into them, run on bands
        of reference rows in two phases (see the class)."""
        height, width, channels = image.shape
        rows, cols = self.twin.rows, self.twin.cols
        numerator = numpy.zeros((channels, height, width), dtype)
        denominator = numpy.zeros((height, width), dtype)
        reach = int(numpy.abs(members // width - numpy.repeat(rows, cols.size)[:, None]).max())
        band = -(-(2 * reach + self.patch) // self.twin.step)  # reference rows per band
        bands = [(start * cols.size, min(start + band, rows.size) * cols.size)
                 for start in range(0, rows.size, band)]
        with Workers(self.backend) as workers:
            for phase in (bands[0::2], bands[1::2]):
                workers.map(lambda share, phase=phase: [work(*phase[index], numerator, denominator)
                                                        for index in share], workers.shares(len(phase)))
        numerator /= denominator
        return numpy.moveaxis(numerator, 0, 2)


class CompiledCubes:
    """The matching of a volume's cubes compiled, one kernel call per z-slab of references (filtering:
    the twin's array code, :func:`nlfilt.collaborative.filter_groups`).

    Parameters
    ----------
    twin : nlfilt.volume.CubeGroups
        The array-code implementation this one serves.
    """

    def __init__(self, twin: Any) -> None:
        self.twin = twin
        self.backend = twin.backend
        self.shape = twin.shape
        self.references = twin.references

    def match(self, levels: Any, *, radius: tuple[int, int, int], group: int) -> numpy.ndarray:
        """The groups of ``levels`` (as :meth:`nlfilt.volume.CubeGroups.match`)."""
        if tuple(levels.shape) != self.shape[:3]:
            raise ValueError(f"levels of shape {levels.shape} for cubes of a {self.shape[:3]} volume")
        zs, ys, xs = self.twin.grids
        members = numpy.empty((zs.size * ys.size * xs.size, group), numpy.int32)
        levels = numpy.ascontiguousarray(levels, dtype=numpy.int32)
        cube = numpy.asarray(self.twin.cube, numpy.int64)
        reach = numpy.asarray(radius, numpy.int64)
        kernel = _kernels()[3]
        with Workers(self.backend) as workers:
            workers.map(lambda share: [kernel(levels, zs, ys, xs, index, cube, reach, members)
                                       for index in share], workers.shares(zs.size))
        return members

    def filter(self, volume: Any, pilot: Any | None, members: Any, sigma: float, *, threshold: float) -> Any:
        """One stage over all groups (the twin's)."""
        return self.twin.filter(volume, pilot, members, sigma, threshold=threshold)

    def bayes(self, volume: Any, pilot: Any, members: Any, sigma: float) -> Any:
        """The empirical-Bayes estimate over all groups (the twin's)."""
        return self.twin.bayes(volume, pilot, members, sigma)


def _scratch(shape: tuple[int, ...], dtype: Any) -> numpy.ndarray:
    """A thread's scratch for the filtering kernel, uninitialised (the kernel writes before it reads)."""
    return numpy.empty(shape, dtype)


_COMPILING = threading.Lock()
#: Indices cast to this type in the kernels' inner loops: numba then drops its negative-index checks, and
#: the compiler vectorises the loops.
_U = numpy.uint64


def _kernels() -> tuple[Callable[..., None], ...]:
    """The matching, filtering, stack matching, cube matching and empirical-Bayes kernels, compiled once per
    process
    (numba's disk cache across processes); threads that ask at the same time wait for the first."""
    with _COMPILING:
        return _compile()


@lru_cache(maxsize=1)
def _compile() -> tuple[Callable[..., None], ...]:
    from nlfilt.jit import load_numba  # noqa: PLC0415 - jit imports this module

    numba = load_numba()
    # the helpers the kernels call, compiled with them; the innermost loops inlined, so that they vectorise
    for helper in (_gather, _multiply_add, _zero, _scale):
        numba.extending.register_jitable(inline="always")(helper)
    for helper in (_filter_group, _separable, _scan_frame, _insert_key, _cube_distance, _bayes_group, _flat,
                   _add_window):
        numba.extending.register_jitable(helper)
    njit = numba.njit(nogil=True, cache=True)
    return (njit(_match_row), njit(_filter_groups), njit(_match_series), njit(_match_cubes),
            njit(_bayes_groups))


def _match_row(levels: Any, rows: Any, cols: Any, index: int, patch: int, radius: int, members: Any) -> None:
    """Fill ``members`` for the references of grid row ``index`` (compiled by numba).

    ``levels``: (H, W) int32; ``rows``, ``cols``: the reference grid;
    ``members``: (references, group) int32, references row by row.  Each
    reference heads its group; the other members are the ``group - 1``
    candidates of smallest key ``distance * offsets + offset index`` within
    the image, in that order, repeated in order when there are fewer.
    """
    height, width = levels.shape
    group = members.shape[1]
    side = 2 * radius + 1
    offsets = side * side
    top = rows[index]
    count = cols.size
    slots = group - 1
    keys = numpy.full((count, max(slots, 1)), INVALID_KEY, numpy.int64)
    column_sums = numpy.empty(width, numpy.float64)
    for row_step in range(-radius, radius + 1):
        if top + row_step < 0 or top + row_step > height - patch:
            continue
        for col_step in range(-radius, radius + 1):
            if slots == 0 or (row_step == 0 and col_step == 0):
                continue
            low = max(0, -col_step)
            high = min(width, width - col_step)
            extent = high - low
            for i in range(extent):
                column_sums[low + i] = 0.0
            for u in range(patch):
                here = levels[top + u, low:high]
                there = levels[top + row_step + u, low + col_step:high + col_step]
                for i in range(extent):
                    difference = numpy.float64(here[i]) - numpy.float64(there[i])
                    column_sums[low + i] += difference * difference
            offset_index = (row_step + radius) * side + col_step + radius
            for j in range(count):
                left = cols[j]
                if left + col_step < 0 or left + col_step > width - patch:
                    continue
                distance = 0.0
                for v in range(patch):
                    distance += column_sums[left + v]
                key = numpy.int64(distance) * offsets + offset_index
                if key >= keys[j, slots - 1]:
                    continue
                position = slots - 1
                while position > 0 and keys[j, position - 1] > key:
                    keys[j, position] = keys[j, position - 1]
                    position -= 1
                keys[j, position] = key
    for j in range(count):
        reference = index * count + j
        origin = top * width + cols[j]
        members[reference, 0] = origin
        found = 1
        for slot in range(slots):
            key = keys[j, slot]
            if key == INVALID_KEY:
                break
            offset_index = key % offsets
            members[reference, found] = (origin + (offset_index // side - radius) * width
                                         + offset_index % side - radius)
            found += 1
        for slot in range(found, group):
            members[reference, slot] = members[reference, slot % found]


def _match_series(levels: Any, rows: Any, cols: Any, time: int, patch: int, radius: int, follow: int,
                  reach: int, members: Any) -> None:
    """Fill ``members`` for the references of frame ``time`` of the stack ``levels`` (frames, H, W;
    int32) (compiled by numba): ``rows``, ``cols`` one frame's reference grid; members as
    :meth:`nlfilt.collaborative.ArrayGroups.match_series` orders and ranks them."""
    frames, height, width = levels.shape
    group = members.shape[1]
    side = 2 * radius + 1
    window = side * side
    candidates = (2 * reach + 1) * window
    slots = max(group - 1, 1)
    keys = numpy.empty(slots, numpy.int64)
    centre_rows = numpy.zeros(2 * reach + 1, numpy.int64)
    centre_cols = numpy.zeros(2 * reach + 1, numpy.int64)
    best = numpy.zeros(2, numpy.int64)
    best_rows = numpy.zeros(2 * reach + 1, numpy.int64)
    best_cols = numpy.zeros(2 * reach + 1, numpy.int64)
    per_row = frames * cols.size
    for i in range(rows.size):
        top = rows[i]
        for j in range(cols.size):
            left = cols[j]
            for slot in range(slots):
                keys[slot] = INVALID_KEY
            for slot in range(2 * reach + 1):
                away = (slot + 1) // 2
                frame = time + away if slot % 2 == 0 else time - away
                if slot < 3:
                    centre_rows[slot] = top
                    centre_cols[slot] = left
                else:
                    centre_rows[slot] = best_rows[slot - 2]
                    centre_cols[slot] = best_cols[slot - 2]
                best[0] = centre_rows[slot]
                best[1] = centre_cols[slot]
                if 0 <= frame < frames:
                    _scan_frame(levels, frame, time, top, left, centre_rows[slot], centre_cols[slot],
                                radius if slot == 0 else follow, radius, patch, slot, window, candidates,
                                keys, group > 1, best)
                best_rows[slot] = best[0]
                best_cols[slot] = best[1]
            reference = i * per_row + time * cols.size + j
            members[reference, 0] = top * (frames * width) + time * width + left
            found = 1
            for slot in range(group - 1):
                key = keys[slot]
                if key == INVALID_KEY:
                    break
                rest = key % candidates
                index, offset = rest // window, rest % window
                away = (index + 1) // 2
                frame = time + away if index % 2 == 0 else time - away
                members[reference, found] = ((centre_rows[index] + offset // side - radius) * (frames * width)
                                             + frame * width + centre_cols[index] + offset % side - radius)
                found += 1
            for slot in range(found, group):
                members[reference, slot] = members[reference, slot % found]


def _match_cubes(levels: Any, zs: Any, ys: Any, xs: Any, index: int, cube: Any, reach: Any,
                 members: Any) -> None:
    """Fill ``members`` for the reference cubes of z-slab ``index`` of ``levels`` (Z, H, W; int32)
    (compiled by numba): ``zs``, ``ys``, ``xs`` the reference grid, ``cube`` the sides, ``reach`` the
    search radii; members as :meth:`nlfilt.volume.CubeGroups.match` ranks them."""
    depth, height, width = levels.shape
    group = members.shape[1]
    sides = 2 * reach + 1
    count = sides[0] * sides[1] * sides[2]
    slots = max(group - 1, 1)
    keys = numpy.empty(slots, numpy.int64)
    top_z = zs[index]
    for j in range(ys.size):
        for i in range(xs.size):
            top_y, top_x = ys[j], xs[i]
            for slot in range(slots):
                keys[slot] = INVALID_KEY
            offset = 0
            for dz in range(-reach[0], reach[0] + 1):
                for dy in range(-reach[1], reach[1] + 1):
                    for dx in range(-reach[2], reach[2] + 1):
                        z, y, x = top_z + dz, top_y + dy, top_x + dx
                        inside = (0 <= z <= depth - cube[0] and 0 <= y <= height - cube[1]
                                  and 0 <= x <= width - cube[2])
                        if inside and group > 1 and not (dz == 0 and dy == 0 and dx == 0):
                            distance = _cube_distance(levels, z, y, x, top_z, top_y, top_x, cube)
                            _insert_key(keys, numpy.int64(distance) * count + offset)
                        offset += 1
            reference = (index * ys.size + j) * xs.size + i
            origin = (top_z * height + top_y) * width + top_x
            members[reference, 0] = origin
            found = 1
            for slot in range(group - 1):
                key = keys[slot]
                if key == INVALID_KEY:
                    break
                rest = key % count
                dz = rest // (sides[1] * sides[2]) - reach[0]
                dy = (rest // sides[2]) % sides[1] - reach[1]
                dx = rest % sides[2] - reach[2]
                members[reference, found] = origin + (dz * height + dy) * width + dx
                found += 1
            for slot in range(found, group):
                members[reference, slot] = members[reference, slot % found]


def _cube_distance(levels: Any, z: int, y: int, x: int, top_z: int, top_y: int, top_x: int,
                   cube: Any) -> float:
    """The squared distance of the cubes at (z, y, x) and (top_z, top_y, top_x) (exact: integer levels)."""
    distance = 0.0
    for u in range(cube[0]):
        for v in range(cube[1]):
            for w in range(cube[2]):
                difference = (numpy.float64(levels[z + u, y + v, x + w])
                              - numpy.float64(levels[top_z + u, top_y + v, top_x + w]))
                distance += difference * difference
    return distance


def _scan_frame(levels: Any, frame: int, time: int, top: int, left: int, centre_row: int, centre_col: int,
                reach: int, radius: int, patch: int, slot: int, window: int, candidates: int, keys: Any,
                insert: bool, best: Any) -> None:
    """Insert into the sorted ``keys`` those of the patches of ``frame`` within ``reach`` of the centre
    (the reference itself left out in its own frame), and write the best one's (row, column) into
    ``best``."""
    height, width = levels.shape[1:]
    side = 2 * radius + 1
    best_key = INVALID_KEY
    for row_step in range(-reach, reach + 1):
        row = centre_row + row_step
        if row < 0 or row > height - patch:
            continue
        for col_step in range(-reach, reach + 1):
            col = centre_col + col_step
            if col < 0 or col > width - patch:
                continue
            distance = 0.0
            for u in range(patch):
                for v in range(patch):
                    difference = (numpy.float64(levels[frame, row + u, col + v])
                                  - numpy.float64(levels[time, top + u, left + v]))
                    distance += difference * difference
            key = (numpy.int64(distance) * candidates + slot * window + (row_step + radius) * side
                   + col_step + radius)
            if key < best_key:
                best_key = key
                best[0] = row
                best[1] = col
            if insert and not (slot == 0 and row_step == 0 and col_step == 0):
                _insert_key(keys, key)


def _insert_key(keys: Any, key: int) -> None:
    """Insert ``key`` into the ascending ``keys`` (dropping the largest) when it is smaller than it."""
    last = keys.size - 1
    if key >= keys[last]:
        return
    position = last
    while position > 0 and keys[position - 1] > key:
        keys[position] = keys[position - 1]
        position -= 1
    keys[position] = key


def _filter_groups(planes: Any, guides: Any, members: Any, first: int, last: int, matrices: Any, window: Any,
                   level: Any, variance: Any, gain_floor: Any, hard: bool, buffers: Any, numerator: Any,
                   denominator: Any) -> None:
    """Filter groups ``first:last`` and add their weighted patches into ``numerator`` (C, H, W) and
    ``denominator`` (H, W) (compiled by numba).

    ``planes``: (C, H, W) image; ``guides``: the pilot's planes (Wiener
    stage; ignored when ``hard``); ``matrices``: (F, F^-1, G^T, G^-T), the
    transform of a patch side and its inverse, the transposes of the
    group's transform and of its inverse;
    ``buffers``: (2 C + 2, patch^2 * group) scratch (see :func:`_filter_group`).
    """
    width = planes.shape[2]
    flat_planes, flat_guides, flat_numerator, flat_denominator = _flat(planes, guides, numerator, denominator)
    for reference in range(first, last):
        _filter_group(flat_planes, flat_guides, members[reference], width, matrices, window, level, variance,
                      gain_floor, hard, buffers, flat_numerator, flat_denominator)


def _filter_group(planes: Any, guides: Any, origins: Any, width: int, matrices: Any, window: Any, level: Any,
                  variance: Any, gain_floor: Any, hard: bool, buffers: Any, numerator: Any,
                  denominator: Any) -> None:
    """Filter the group whose members' top-left pixels are ``origins`` and add it into ``numerator``
    (C, H * W) and ``denominator`` (H * W).

    ``planes``, ``guides``: (C, H * W); ``buffers``: C coefficient blocks,
    C pilot blocks and two work blocks, each a group stored coefficient by
    coefficient (the group's members contiguous, so that every inner loop
    runs along the group).  Hard thresholding keeps coefficients of
    magnitude at least ``level`` (and the group's mean); the Wiener stage
    multiplies each coefficient by ``P^2 / (P^2 + variance)``.  The group
    weighs ``1 / kept`` or ``1 / max(sum of squared gains, gain_floor)``,
    times the window.
    """
    channels = planes.shape[0]
    group = origins.size
    forward_patch, inverse_patch, forward_group_t, inverse_group_t = matrices
    patch = forward_patch.shape[0]
    values = patch * patch * group
    work, spare = buffers[2 * channels], buffers[2 * channels + 1]
    zero = level - level
    total = zero
    for channel in range(channels):
        coefficients = buffers[channel]
        _gather(planes[channel], origins, width, patch, work)
        _separable(work, spare, coefficients, forward_patch, forward_patch, forward_group_t)
        if hard:
            for index in range(values):
                if abs(coefficients[index]) >= level or index == 0:
                    total += 1
                else:
                    coefficients[index] = zero
        else:
            gains = buffers[channels + channel]
            _gather(guides[channel], origins, width, patch, work)
            _separable(work, spare, gains, forward_patch, forward_patch, forward_group_t)
            for index in range(values):
                power = gains[index] * gains[index]
                gain = power / (power + variance)
                coefficients[index] *= gain
                total += gain * gain
    if not hard:
        total = max(total, gain_floor)
    weight = (zero + 1) / total
    for channel in range(channels):
        _separable(buffers[channel], spare, work, inverse_patch, inverse_patch, inverse_group_t)
        for m in range(group):
            for y in range(patch):
                row = origins[m] + y * width
                for x in range(patch):
                    numerator[channel, row + x] += weight * window[y, x] * work[(y * patch + x) * group + m]
    _add_window(denominator, origins, width, window, weight)


def _bayes_groups(planes: Any, guides: Any, members: Any, first: int, last: int, window: Any, noise: float,
                  buffers: Any, numerator: Any, denominator: Any) -> None:
    """Add the empirical-Bayes estimates of groups ``first:last`` into ``numerator`` (C, H, W) and
    ``denominator`` (H, W), float64 (compiled by numba).

    ``planes``, ``guides``: the (C, H, W) image and pilot; ``window``: the
    patch's (patch, patch) weights; ``noise``: ``group * sigma^2``;
    ``buffers``: (6, patch^2 * group) float64 scratch (see
    :func:`_bayes_group`).
    """
    width = planes.shape[2]
    flat_planes, flat_guides, flat_numerator, flat_denominator = _flat(planes, guides, numerator, denominator)
    for reference in range(first, last):
        _bayes_group(flat_planes, flat_guides, members[reference], width, window, noise, buffers,
                     flat_numerator, flat_denominator)


def _bayes_group(planes: Any, guides: Any, origins: Any, width: int, window: Any, noise: float, buffers: Any,
                 numerator: Any, denominator: Any) -> None:
    """Add the empirical-Bayes estimate of the group whose members' top-left pixels are ``origins`` into
    ``numerator`` (C, H * W) and ``denominator`` (H * W).

    Per channel: the pilot's patches less their mean ``m`` (``D``, stored
    as :func:`_gather` stores a group) and the image's (``R``); ``S = D
    D^T + noise I`` (n x n), factored by Cholesky; ``X = S^-1 D R^T`` by
    substitution, all right-hand sides at once; the estimate of each patch
    pixel ``m + X^T D`` (its members' values), each patch weighted by
    ``window``.  The inner loops run along rows of n values (so they
    vectorise).  ``buffers``: D, R, ``m`` (its first patch^2 values), S and
    X (their first n^2 values), and the n estimates of one patch pixel.
    """
    channels = planes.shape[0]
    group = origins.size
    patch = window.shape[0]
    size = patch * patch
    spread, residual, means = buffers[0], buffers[1], buffers[2]
    system, solution, values = buffers[3], buffers[4], buffers[5]
    for channel in range(channels):
        _gather(guides[channel], origins, width, patch, spread)
        _gather(planes[channel], origins, width, patch, residual)
        for j in range(size):  # the pilot's mean patch
            base = j * group
            mean = 0.0
            for m in range(group):
                mean += spread[base + m]
            mean /= group
            for m in range(group):
                spread[base + m] -= mean
                residual[base + m] -= mean
            means[j] = mean
        _zero(system, 0, group * group)
        _zero(solution, 0, group * group)
        for j in range(size):  # S = D D^T (its lower triangle) and D R^T, one patch pixel at a time
            base = j * group
            for a in range(group):
                _multiply_add(system, a * group, spread, base, spread[base + a], a + 1)
                _multiply_add(solution, a * group, residual, base, spread[base + a], group)
        for a in range(group):
            system[a * group + a] += noise
        for i in range(group):  # Cholesky: S = L L^T, L in S's lower triangle
            for k in range(i + 1):
                value = system[i * group + k]
                for t in range(k):
                    value -= system[i * group + t] * system[k * group + t]
                system[i * group + k] = value ** 0.5 if i == k else value / system[k * group + k]
        for i in range(group):  # L Y = D R^T, row by row
            for t in range(i):
                _multiply_add(solution, i * group, solution, t * group, -system[i * group + t], group)
            _scale(solution, i * group, 1 / system[i * group + i], group)
        for i in range(group - 1, -1, -1):  # L^T X = Y
            for t in range(i + 1, group):
                _multiply_add(solution, i * group, solution, t * group, -system[t * group + i], group)
            _scale(solution, i * group, 1 / system[i * group + i], group)
        for y in range(patch):
            for x in range(patch):
                base = (y * patch + x) * group
                for a in range(group):
                    values[a] = means[y * patch + x]
                for b in range(group):  # the estimates of this pixel: m + sum_b D[b] X[b, :]
                    _multiply_add(values, 0, solution, b * group, spread[base + b], group)
                weight = window[y, x]
                for a in range(group):
                    numerator[channel, origins[a] + y * width + x] += weight * values[a]
    _add_window(denominator, origins, width, window, 1.0)


def _scale(out: Any, target: int, factor: Any, count: int) -> None:
    """``out[target:target + count] *= factor``."""
    for m in range(count):
        out[_U(target + m)] *= factor


def _flat(planes: Any, guides: Any, numerator: Any, denominator: Any) -> tuple[Any, Any, Any, Any]:
    """The (C, H, W) planes, guides and numerator as (C, H * W), the (H, W) denominator as (H * W)."""
    channels, height, width = planes.shape
    return (planes.reshape(channels, height * width), guides.reshape(channels, height * width),
            numerator.reshape(channels, height * width), denominator.reshape(height * width))


def _add_window(denominator: Any, origins: Any, width: int, window: Any, weight: Any) -> None:
    """Add ``weight * window`` (patch, patch) into the flat ``denominator`` at every patch of a group
    (top-left pixels ``origins``)."""
    patch = window.shape[0]
    for m in range(origins.size):
        for y in range(patch):
            row = origins[m] + y * width
            for x in range(patch):
                denominator[row + x] += weight * window[y, x]


def _gather(plane: Any, origins: Any, width: int, patch: int, out: Any) -> None:
    """``out``: the patches of the flat ``plane`` whose top-left pixels are ``origins``, stored pixel by
    pixel (``out[(y * patch + x) * group + m]``)."""
    group = origins.size
    for m in range(group):
        for y in range(patch):
            row = origins[m] + y * width
            for x in range(patch):
                out[_U((y * patch + x) * group + m)] = plane[_U(row + x)]


def _multiply_add(out: Any, target: int, values: Any, source: int, weight: Any, count: int) -> None:
    """``out[target:target + count] += weight * values[source:source + count]`` (indices unsigned, so that
    numba drops its negative-index checks and the loop vectorises)."""
    for m in range(count):
        out[_U(target + m)] += weight * values[_U(source + m)]


def _zero(out: Any, target: int, count: int) -> None:
    """``out[target:target + count] = 0`` (``out`` may hold anything, NaN included, before)."""
    for m in range(count):
        out[_U(target + m)] = 0


def _separable(values: Any, spare: Any, out: Any, columns: Any, rows: Any, along_t: Any) -> None:
    """``out``: the group ``values`` (stored as :func:`_gather` stores them) transformed along each
    patch's columns by ``columns`` (``out[.., f] = sum_x columns[f, x] values[.., x]``), its rows by
    ``rows``, and along the group by the transpose of ``along_t`` (``values`` and ``spare`` are
    overwritten).  The 3-D transform is (F, F, G^T); its inverse (F^-1, F^-1, G^-T)."""
    patch = columns.shape[0]
    group = values.size // (patch * patch)
    for y in range(patch):  # columns: spare[y, f] = sum_x M[f, x] values[y, x]
        for f in range(patch):
            target = (y * patch + f) * group
            _zero(spare, target, group)
            for x in range(patch):
                _multiply_add(spare, target, values, (y * patch + x) * group, columns[f, x], group)
    for g in range(patch):  # rows: values[g, f] = sum_y M[g, y] spare[y, f]
        for f in range(patch):
            target = (g * patch + f) * group
            _zero(values, target, group)
            for y in range(patch):
                _multiply_add(values, target, spare, (y * patch + f) * group, rows[g, y], group)
    for j in range(patch * patch):  # along the group: out[j, g] = sum_m along_t[m, g] values[j, m]
        base = j * group
        _zero(out, base, group)
        for m in range(group):
            _multiply_add(out, base, along_t[m], 0, values[_U(base + m)], group)
