"""The collaborative filter of a volume: groups of similar cubes, BM4D's scheme.

A volume (Z, H, W, C) is filtered with the two stages of
:mod:`nlfilt.collaborative`, its patches ``CUBE`` cubes instead of squares
(Maggioni, Katkovnik, Egiazarian and Foi, 2013): reference cubes every
``STEP`` voxels along each axis, each grouped with the cubes nearest to it
within ``RADIUS`` voxels (the search box), each group transformed by the
stage's transform along every side of its cubes (the biorthogonal 1.5
wavelet, or the DCT in the Wiener stage) and the Haar wavelet along the
group, shrunk, and every cube added back weighted by a 3-D Kaiser window.
Where the structures run on across slices (a z-stack of cells, a CT or MRI
volume), a cube's third side separates them from the noise, which the
slices as a series (:mod:`nlfilt.series`) leave to the group.

Anisotropic voxels (slices further apart than pixels, from the file's voxel
spacing): the cubes and the search box are shortened along Z in proportion
(:func:`cube_shape`).

Matching quantises the guide as the 2-D filter does and ranks candidates by
the unique key ``distance * offsets + offset index`` (offsets of the search
box counted z, then row, then column), so the array code (:class:`CubeGroups`,
NumPy or CuPy) and the compiled kernel (:mod:`nlfilt.jit_groups`) pick the
same members; filtering is :func:`nlfilt.collaborative.filter_groups` on the
volume's flat voxel indices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy

from nlfilt.collaborative import (
    INVALID_KEY,
    OPPONENT,
    THRESHOLD,
    bayes_groups,
    fill_short_groups,
    filter_by_channel,
    filter_groups,
    grid,
    guide,
    kaiser_window,
    mix_channels,
    quantise,
)

if TYPE_CHECKING:
    from nlfilt.backend import Backend

#: Cube sides (Z, rows, columns) for isotropic voxels, reference step along each axis, search radius
#: along each axis, cubes per group in the two stages: BM4D's, but a search box of 11 instead of 15 and
#: 4^3 cubes in both stages (5^3 in the Wiener stage lost 0.35 dB; benchmarks/results/volume.md).
CUBE = (4, 4, 4)
STEP = (3, 3, 3)
RADIUS = (5, 5, 5)
GROUP = (16, 32)


def cube_shape(spacing: tuple[float, float, float] | None,
               slices: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(cube sides, search radii) for voxels of ``spacing`` (Z, Y, X; None: isotropic) in a volume of
    ``slices`` slices (None: enough): along Z the radius shrinks by the ratio of the slice spacing to the
    pixel spacing, and the side too, but not below 2 (on volumes of slices 3 pixels apart, cubes 2 deep
    gained 0.2-0.3 dB over 4-deep ones and 1-deep ones lost 0.6-0.8), nor beyond the slices."""
    cube, radius = CUBE, RADIUS
    if spacing is not None:
        depth, rows, cols = (float(value) for value in spacing)
        if min(depth, rows, cols) <= 0 or not numpy.isfinite([depth, rows, cols]).all():
            raise ValueError(f"spacing must be three positive numbers (Z, Y, X); got {spacing}")
        ratio = max(1.0, depth / ((rows + cols) / 2))
        cube = (max(2, min(CUBE[0], round(CUBE[0] / ratio))), *CUBE[1:])
        radius = (max(1, min(RADIUS[0], round(RADIUS[0] / ratio))), *RADIUS[1:])
    if slices is not None:
        cube = (max(1, min(cube[0], slices)), *cube[1:])
    return cube, radius


def check_volume(shape: tuple[int, ...], cube: tuple[int, ...]) -> None:
    """ValueError unless a volume of ``shape`` (Z, H, W, ...) holds one cube."""
    if any(length < side for length, side in zip(shape[:3], cube, strict=True)):
        raise ValueError(f"the volume is {'x'.join(map(str, shape[:3]))}, smaller than the "
                         f"{'x'.join(map(str, cube))} cubes of the collaborative filter")


class CubeGroups:
    """Matching and filtering of cubes as array code on ``backend.xp`` (NumPy or CuPy): the twin of the
    compiled matching kernel.

    Parameters
    ----------
    backend : Backend
    shape : tuple
        The (Z, H, W, C) shape of the volumes it filters.
    cube, step : tuple of int
        Cube sides and reference step (Z, rows, columns).
    """

    def __init__(self, backend: Backend, shape: tuple[int, ...], *, cube: tuple[int, ...],
                 step: tuple[int, ...] = STEP) -> None:
        check_volume(shape, cube)
        if any(every > side for every, side in zip(step, cube, strict=True)):
            raise ValueError(f"a step of {step} leaves voxels outside the {cube} reference cubes")
        if numpy.prod(shape[:3], dtype=numpy.int64) >= 2**31:  # members are int32 voxel indices
            raise ValueError(f"a volume of {'x'.join(map(str, shape[:3]))} voxels is over the 2^31 the cube "
                             "filter indexes; crop it, or filter its slices as a series")
        self.backend = backend
        self.shape = tuple(shape)
        self.cube = tuple(cube)
        self.step = tuple(step)
        self.grids = tuple(grid(length, side, every) for length, side, every in zip(shape[:3], cube, step,
                                                                                     strict=True))

    @property
    def references(self) -> int:
        return int(numpy.prod([axis.size for axis in self.grids]))

    def origins(self) -> numpy.ndarray:
        """The flat voxel index of every reference cube's first corner, z-slab by slab, row by row."""
        depth, height, width = self.shape[:3]
        zs, ys, xs = self.grids
        return ((zs[:, None, None] * height + ys[None, :, None]) * width + xs[None, None, :]).ravel()

    def within(self) -> numpy.ndarray:
        """The flat offsets of a cube's voxels from its first corner (Z, then rows, then columns)."""
        _, height, width = self.shape[:3]
        sides = [numpy.arange(side) for side in self.cube]
        return ((sides[0][:, None, None] * height + sides[1][None, :, None]) * width
                + sides[2][None, None, :]).ravel()

    def match(self, levels: Any, *, radius: tuple[int, int, int], group: int) -> Any:
        """The groups of ``levels`` (Z, H, W; int32, from :func:`nlfilt.collaborative.quantise`):
        (references, group) int32 flat voxel indices of their members' first corners; the reference
        first, then the cubes within ``radius`` (Z, rows, columns) by increasing key."""
        xp = self.backend.xp
        depth, height, width = levels.shape
        if (depth, height, width) != self.shape[:3]:
            raise ValueError(f"levels of shape {levels.shape} for cubes of a {self.shape[:3]} volume")
        cube, limits = self.cube, (depth, height, width)
        steps = [numpy.arange(-reach, reach + 1) for reach in radius]
        offsets = numpy.stack(numpy.meshgrid(*steps, indexing="ij"), axis=-1).reshape(-1, 3)
        count = offsets.shape[0]
        flat = xp.asarray(levels, dtype=xp.int64).ravel()
        within = xp.asarray(self.within())
        corners = numpy.stack(numpy.meshgrid(*self.grids, indexing="ij"), axis=-1).reshape(-1, 3)
        per_batch = max(1, self.backend.batch_bytes // (8 * (count + 2 * within.size)))
        centre = int(numpy.flatnonzero((offsets == 0).all(axis=1))[0])
        members = []
        for first in range(0, corners.shape[0], per_batch):
            corner = corners[first:first + per_batch]
            origin = xp.asarray((corner[:, 0] * height + corner[:, 1]) * width + corner[:, 2])
            reference = flat[origin[:, None] + within]
            keys = xp.empty((corner.shape[0], count), dtype=xp.int64)
            inside_count = numpy.ones(corner.shape[0], dtype=numpy.int64)
            for index, offset in enumerate(offsets):
                moved = corner + offset
                inside = ((moved >= 0) & (moved <= numpy.array(limits) - numpy.array(cube))).all(axis=1)
                inside_count += inside & (index != centre)
                start = xp.asarray((numpy.clip(moved[:, 0], 0, depth - cube[0]) * height
                                    + numpy.clip(moved[:, 1], 0, height - cube[1])) * width
                                   + numpy.clip(moved[:, 2], 0, width - cube[2]))
                difference = flat[start[:, None] + within] - reference
                distance = (difference * difference).sum(axis=1)
                keys[:, index] = xp.where(xp.asarray(inside), distance * count + index, INVALID_KEY)
            keys[:, centre] = -1  # the reference heads its group
            chosen = xp.argpartition(keys, group - 1, axis=1)[:, :group] if group < count else xp.argsort(
                keys, axis=1)
            chosen = xp.take_along_axis(chosen, xp.argsort(xp.take_along_axis(keys, chosen, axis=1), axis=1),
                                        axis=1)
            if chosen.shape[1] < group:  # fewer offsets than members
                chosen = xp.concatenate([chosen, xp.repeat(chosen[:, :1], group - chosen.shape[1], axis=1)],
                                        axis=1)
            shifts = xp.asarray((offsets[:, 0] * height + offsets[:, 1]) * width + offsets[:, 2])
            found = (origin[:, None] + shifts[chosen]).astype(xp.int32)
            if inside_count.min() < group:  # small volumes: repeat the members found, in order
                found = fill_short_groups(xp, found, xp.asarray(numpy.minimum(inside_count, group)))
            members.append(found)
        return xp.concatenate(members) if len(members) > 1 else members[0]

    def filter(self, volume: Any, pilot: Any | None, members: Any, sigma: float, *, threshold: float) -> Any:
        """One stage over all groups of ``volume`` (Z, H, W, C) (see
        :func:`nlfilt.collaborative.filter_groups`): the estimate, same shape."""
        depth, height, width, channels = volume.shape
        flat = volume.reshape(depth * height, width, channels)
        guide_flat = None if pilot is None else pilot.reshape(depth * height, width, channels)
        out = filter_groups(self.backend, flat, guide_flat, members, sigma, threshold=threshold,
                            within=self.within(), sides=self.cube)
        return out.reshape(volume.shape)

    def bayes(self, volume: Any, pilot: Any, members: Any, sigma: float) -> Any:
        """The empirical-Bayes estimate of ``volume`` (Z, H, W, C) over all groups (see
        :func:`nlfilt.collaborative.bayes_groups`), the cubes weighted by the Kaiser window."""
        depth, height, width, channels = volume.shape
        out = bayes_groups(self.backend, volume.reshape(depth * height, width, channels),
                           pilot.reshape(depth * height, width, channels), members, sigma,
                           within=self.within(), window=kaiser_window(self.cube).ravel())
        return out.reshape(volume.shape)


def collaborative_volume(backend: Backend, volume: Any, sigma: float, *,
                         spacing: tuple[float, float, float] | None = None,
                         progress: Callable[[float, int], None] | None = None) -> Any:
    """Both stages on a volume (Z, H, W, C) of ``backend``'s arrays with groups of cubes; returns the
    estimate, same shape and dtype.  ``spacing``: the voxel spacing (Z, Y, X) for anisotropic cubes.
    ``progress(done, 4)`` after each matching and filtering step.  ``sigma`` 0 returns a copy."""
    from nlfilt.accelerate import accelerate  # noqa: PLC0415 - it imports this module's CubeGroups

    xp = backend.xp
    if sigma <= 0:
        return volume.copy()
    cube, radius = cube_shape(spacing, volume.shape[0])
    colour = volume.shape[3] == 3
    work = mix_channels(xp, volume, OPPONENT.T) if colour else volume
    noise = sigma if colour else sigma * volume.shape[3] ** 0.5  # of the guide: luminance, or channel sum
    step = tuple(min(every, side) for every, side in zip(STEP, cube, strict=True))  # every voxel covered
    groups = accelerate(backend, CubeGroups(backend, volume.shape, cube=cube, step=step))
    done = [0]

    def advance() -> None:
        done[0] += 1
        if progress is not None:
            progress(float(done[0]), 4)

    members = groups.match(quantise(xp, guide(xp, work, colour), noise), radius=radius, group=GROUP[0])
    advance()
    pilot = filter_by_channel(xp, groups, work, None, members, sigma, THRESHOLD)
    advance()
    members = groups.match(quantise(xp, guide(xp, pilot, colour), noise), radius=radius, group=GROUP[1])
    advance()
    estimate = filter_by_channel(xp, groups, work, pilot, members, sigma, THRESHOLD)
    advance()
    return mix_channels(xp, estimate, OPPONENT) if colour else estimate
