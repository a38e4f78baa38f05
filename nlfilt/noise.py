"""Noise level estimation."""

from __future__ import annotations

from typing import Any

#: Median of |x| for standard normal x: turns a median absolute value into a standard deviation.
_MAD_TO_SIGMA = 0.6744897501960817


def estimate_sigma(xp: Any, image: Any) -> float:
    """Estimate the standard deviation of additive white Gaussian noise.

    Donoho's robust estimate: the median absolute value of the finest diagonal
    Haar detail band, ``(a - b - c + d) / 2`` over 2 x 2 blocks (orthonormal,
    so white noise keeps its standard deviation), divided by 0.6745.  Natural
    images are sparse in that band, so edges barely move the median.  Each
    channel is estimated on its own and the estimates are averaged.

    Parameters
    ----------
    xp : module
        Array module of ``image``.
    image : array, shape (H, W, C)
        Image in its own units, at least 2 x 2.

    Returns
    -------
    float
        Noise standard deviation in the image's units.
    """
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    blocks = image[:height, :width]
    detail = (blocks[0::2, 0::2] - blocks[0::2, 1::2] - blocks[1::2, 0::2] + blocks[1::2, 1::2]) / 2
    per_channel = xp.median(xp.abs(detail).reshape(-1, image.shape[2]), axis=0) / _MAD_TO_SIGMA
    return float(xp.mean(per_channel))
