"""Patch geometry: reflect padding, patch matrices and sliding box sums.

All functions take the array module ``xp`` (NumPy or CuPy) explicitly and work
on channels-last images: (H, W, C), or (Z, H, W, C) for a volume.  A patch
(or window) side is an int, the same on every spatial axis, or a tuple with
one odd side per spatial axis (a box).
"""

from __future__ import annotations

import itertools
import math
from typing import Any


def sides(size: int | tuple[int, ...], axes: int) -> tuple[int, ...]:
    """``size`` as one side per spatial axis: an int repeated ``axes`` times, or the tuple itself."""
    return tuple(size) if isinstance(size, tuple) else (int(size),) * axes


def spatial_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial extents of an image shape: (H, W) of (H, W) or (H, W, C), (Z, H, W) of a volume's
    (Z, H, W, C)."""
    return tuple(shape[:3] if len(shape) == 4 else shape[:2])


def pad_reflect(xp: Any, image: Any, radius: int | tuple[int, ...]) -> Any:
    """Pad the spatial axes of an (H, W, C) or (Z, H, W, C) image by ``radius`` pixels (per axis).

    The padding mirrors the image about its edge pixels without repeating them
    (NumPy's ``'reflect'`` mode), so the patch of a border pixel is well defined.
    """
    radii = sides(radius, image.ndim - 1)
    if not any(radii):
        return image
    return xp.pad(image, tuple((side, side) for side in radii) + ((0, 0),), mode="reflect")


def patch_matrix(xp: Any, image: Any, patch: int | tuple[int, ...]) -> Any:
    """Return the (N, prod(patch) * C) matrix whose row i is the patch of pixel i.

    Pixels are numbered in row-major order.  The patch is the box of
    ``patch`` sides centred on the pixel in the reflect-padded image, all
    channels stacked.  Built with one slice copy per position in the patch,
    never a loop over pixels.  The twin of the CUDA kernel ``nlfilt_patches``
    (see :meth:`nlfilt.backend.Backend.patch_matrix`), which serves 2-D images.
    """
    shape, channels = image.shape[:-1], image.shape[-1]
    boxes = sides(patch, len(shape))
    padded = pad_reflect(xp, image, tuple(side // 2 for side in boxes))
    out = xp.empty((*shape, *boxes, channels), dtype=image.dtype)
    for position in itertools.product(*(range(side) for side in boxes)):
        source = tuple(slice(start, start + extent) for start, extent in zip(position, shape, strict=True))
        out[(slice(None),) * len(shape) + position] = padded[source]
    return out.reshape(math.prod(shape), math.prod(boxes) * channels)


def box_sum(xp: Any, values: Any, size: int | tuple[int, ...], buffers: list[Any] | None = None) -> Any:
    """Sum ``values`` over every ``size`` x ``size`` window of its first two axes, or, for a tuple, over
    every box of those sides on its first ``len(size)`` axes.

    The result is smaller by ``size - 1`` on each of those axes (a 'valid'
    correlation with a box of ones).  The sum is built from power-of-two
    partial sums, ``O(log size)`` additions per axis; unlike a cumulative-sum
    (integral image) scheme it has no round-off that grows with the image size.

    ``buffers``, four flat arrays of at least ``values.size`` elements, receive
    the temporaries and the result (a view of ``buffers[2]`` or
    ``buffers[3]``), so that a loop calling this allocates nothing; without
    them fresh arrays are used.  With sides of 1 the input itself is returned.
    """
    if buffers is None:
        buffers = [None] * 4
    total, held = values, None  # held: which of buffers[2:4] holds the running total
    for axis, side in enumerate(sides(size, 2)):
        target = 2 if held == 3 else 3
        total = _sliding_sum_1d(xp, total, side, axis, buffers[target], buffers[0], buffers[1])
        if side > 1:
            held = target
    return total


def _take(xp: Any, buffer: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """A view of ``shape`` at the start of the flat ``buffer``, or a new array without one."""
    if buffer is None:
        return xp.empty(shape, dtype=dtype)
    count = 1
    for extent in shape:
        count *= extent
    return buffer[:count].reshape(shape)


def _sliding_sum_1d(xp: Any, values: Any, size: int, axis: int, out: Any, spare_a: Any, spare_b: Any) -> Any:
    """Sums of ``size`` consecutive entries along ``axis``, by binary decomposition of ``size``."""

    def window(array: Any, start: int, length: int) -> Any:
        index = [slice(None)] * array.ndim
        index[axis] = slice(start, start + length)
        return array[tuple(index)]

    def resized(length: int) -> tuple[int, ...]:
        shape = list(values.shape)
        shape[axis] = length
        return tuple(shape)

    if size == 1:
        return values
    out_length = values.shape[axis] - size + 1
    total = None
    offset = 0  # how much of the window the running total covers
    block = values  # block[j] = sum of values[j : j + span]
    span = 1
    remaining = size
    spares = (spare_a, spare_b)
    while remaining:
        if remaining & 1:
            part = window(block, offset, out_length)
            if total is None:
                total = _take(xp, out, resized(out_length), values.dtype)
                total[...] = part
            else:
                xp.add(total, part, out=total)
            offset += span
        remaining >>= 1
        if remaining:
            length = block.shape[axis] - span
            doubled = _take(xp, spares[0], resized(length), values.dtype)
            xp.add(window(block, 0, length), window(block, span, length), out=doubled)
            block = doubled
            spares = spares[::-1]
            span *= 2
    return total
