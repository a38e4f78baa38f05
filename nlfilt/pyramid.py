"""One coarser scale of an image, for the collaborative filter's pilot at low signal-to-noise.

At high noise the first stage's pilot misses the image's coarse structure
(hard thresholding of 8 x 8 patches keeps little of a faint, wide edge).
One scale down the noise is half as large: the 2 x 2 block means of white
noise of deviation sigma are white noise of deviation sigma / 2.  The
collaborative filter of that half-size image therefore estimates the coarse
structure better, and :func:`refine` puts it into the pilot as a correction
of its low frequencies:

    refined = pilot + smooth(upsample(coarse_estimate - halve(pilot)))

Where the coarse estimate agrees with the pilot's own block means nothing
changes, so the pilot's detail is kept; the correction is smoothed by a
Gaussian of ``width`` pixels (the coarse estimate is reliable in its low
frequencies, not near its scale's Nyquist limit).  Every operation is local
(an output pixel depends on the inputs within :data:`REACH` pixels and, in
the coarse estimate, within :data:`REACH` // 2 + 1 coarse pixels), so an
image filtered in pieces can get the whole image's values, and each is a
few array operations, the same on NumPy and CuPy.
"""

from __future__ import annotations

from typing import Any

import numpy

#: Standard deviation, in pixels, of the Gaussian that smooths the coarse scale's correction; the Gaussian
#: is cut at 3 widths.
WIDTH = 1.0
#: Pixels on each side an output of :func:`refine` depends on (beyond those of its 2 x 2 block): the
#: Gaussian's 3 widths and the bilinear upsampling's one pixel.
REACH = int(numpy.ceil(3 * WIDTH)) + 2


def halve(xp: Any, image: Any) -> Any:
    """The means of the 2 x 2 blocks of ``image`` (H, W, C), (H // 2, W // 2, C); an odd last row or
    column is left out."""
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    blocks = image[:height, :width]
    out = blocks[0::2, 0::2] + blocks[1::2, 0::2]
    out += blocks[0::2, 1::2]
    out += blocks[1::2, 1::2]
    out *= out.dtype.type(0.25)
    return out


def upsample(xp: Any, coarse: Any, shape: tuple[int, int]) -> Any:
    """``coarse`` (h, w, C) interpolated bilinearly onto ``shape`` (H, W) pixels, the inverse placement of
    :func:`halve`: coarse pixel ``i`` sits between fine pixels ``2 i`` and ``2 i + 1``; beyond the first
    and last coarse pixels the values are held."""
    out = coarse
    for axis, length in enumerate(shape):
        position = numpy.clip((numpy.arange(length) - 0.5) / 2, 0, coarse.shape[axis] - 1)
        below = numpy.floor(position).astype(numpy.int64)
        above = numpy.minimum(below + 1, coarse.shape[axis] - 1)
        share = (position - below).reshape((-1,) + (1,) * (coarse.ndim - 1 - axis))
        share = xp.asarray(share, dtype=coarse.dtype)
        low = xp.take(out, xp.asarray(below), axis=axis)
        high = xp.take(out, xp.asarray(above), axis=axis)
        high -= low
        high *= share
        low += high
        out = low
    return out


def smooth(xp: Any, image: Any, width: float = WIDTH) -> Any:
    """``image`` (H, W, C) convolved with a Gaussian of standard deviation ``width`` pixels along its rows
    and columns (cut at 3 widths, weights summing to 1), the image mirrored about its edges."""
    reach = int(numpy.ceil(3 * width))
    offsets = numpy.arange(-reach, reach + 1)
    weights = numpy.exp(-0.5 * (offsets / width) ** 2)
    weights /= weights.sum()
    out = image
    for axis in (0, 1):
        length = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (reach, reach)
        padded = xp.pad(out, pad, mode="symmetric")
        total = xp.zeros_like(out)
        for index, weight in enumerate(weights):
            part = xp.take(padded, xp.arange(index, index + length), axis=axis)
            part *= out.dtype.type(weight)
            total += part
        out = total
    return out


def refine(xp: Any, pilot: Any, coarse_estimate: Any, width: float = WIDTH) -> Any:
    """The pilot (H, W, C) corrected by the estimate of its image one scale down (H // 2, W // 2, C):
    ``pilot + smooth(upsample(coarse_estimate - halve(pilot)))`` (see the module)."""
    difference = coarse_estimate - halve(xp, pilot)
    correction = smooth(xp, upsample(xp, difference, pilot.shape[:2]), width)
    return pilot + correction
