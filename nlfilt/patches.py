"""Patch geometry: reflect padding, patch matrices and sliding box sums.

All functions take the array module ``xp`` (NumPy or CuPy) explicitly and work
on channels-last images of shape (H, W, C).
"""

from __future__ import annotations

from typing import Any


def pad_reflect(xp: Any, image: Any, radius: int) -> Any:
    """Pad the two spatial axes of an (H, W, C) image by ``radius`` pixels.

    The padding mirrors the image about its edge pixels without repeating them
    (NumPy's ``'reflect'`` mode), so the patch of a border pixel is well defined.
    """
    if radius == 0:
        return image
    return xp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")


def patch_matrix(xp: Any, image: Any, patch: int) -> Any:
    """Return the (H*W, patch*patch*C) matrix whose row i is the patch of pixel i.

    Pixels are numbered in row-major order.  The patch is the ``patch`` x
    ``patch`` window centred on the pixel in the reflect-padded image, all
    channels stacked.  Built with ``patch**2`` slice copies, never a loop over
    pixels.  The twin of the CUDA kernel ``nlfilt_patches`` (see
    :meth:`nlfilt.backend.Backend.patch_matrix`).
    """
    height, width, channels = image.shape
    padded = pad_reflect(xp, image, patch // 2)
    out = xp.empty((height, width, patch, patch, channels), dtype=image.dtype)
    for row in range(patch):
        for col in range(patch):
            out[:, :, row, col, :] = padded[row : row + height, col : col + width, :]
    return out.reshape(height * width, patch * patch * channels)


def box_sum(xp: Any, values: Any, size: int, buffers: list[Any] | None = None) -> Any:
    """Sum ``values`` over every ``size`` x ``size`` window of its first two axes.

    The result is smaller by ``size - 1`` on each of those axes (a 'valid'
    correlation with a box of ones).  The sum is built from power-of-two
    partial sums, ``O(log size)`` additions per axis; unlike a cumulative-sum
    (integral image) scheme it has no round-off that grows with the image size.

    ``buffers``, four flat arrays of at least ``values.size`` elements, receive
    the temporaries and the result (a view of ``buffers[3]``), so that a loop
    calling this allocates nothing; without them fresh arrays are used.  With
    ``size == 1`` the input itself is returned.
    """
    if buffers is None:
        buffers = [None] * 4
    rows = _sliding_sum_1d(xp, values, size, 0, buffers[2], buffers[0], buffers[1])
    return _sliding_sum_1d(xp, rows, size, 1, buffers[3], buffers[0], buffers[1])


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
