"""Clipped noise: finding an image's clip levels, and undoing the bias clipping leaves in an estimate.

A photo's noise is added before its values are rounded and clipped to the
format's range (0-255 for 8 bits), so a pixel of clean value ``x`` near a
clip level is observed as ``clip(x + n)``, whose mean is not ``x``: at
``x`` equal to the lower level, with noise of deviation sigma, the mean
lies ``0.40 sigma`` above it.  A denoiser averages such pixels and so
estimates that mean; dark and bright areas come out lifted towards mid-gray
(at sigma 50 on 8-bit photos, the largest error of the result).  With
levels ``L < H`` the mean is

    m(x) = x + sigma (phi(a) - phi(b)) + (L - x) Phi(a) + (H - x) (1 - Phi(b)),
    a = (L - x) / sigma,  b = (H - x) / sigma,

(``phi``, ``Phi``: the standard normal density and distribution), which
increases with ``x``; :func:`declip` maps each estimate back through its
inverse (Foi, "Clipped noisy images: heteroskedastic modeling and practical
denoising", 2009, calls this declipping), to within ``[L, H]``.

Clip levels are found as in :func:`nlfilt.noise.estimate_sigma`: a channel's
smallest and largest values, each counted as a clip level when at least
``CLIPPED_SHARE`` of the channel's pixels sit exactly at it (noise piles
clipped pixels up at the level; an unclipped image's extreme value is held
by a handful of pixels of its noise's tail, and a level counted wrongly
there moves only estimates within a few sigma of it, by less than 0.4
sigma).
"""

from __future__ import annotations

import math
from typing import Any

import numpy

#: Least share of a channel's pixels at its smallest (largest) value for that value to count as a clip level.
CLIPPED_SHARE = 1e-3

#: The inverse of ``m`` is tabulated from each level over this many sigma into the range, at TABLE_POINTS
#: points each (spacing 1/128 sigma; beyond, ``m(x) = x`` to 1e-15 sigma).
TABLE_SIGMAS = 8.0
TABLE_POINTS = 1025

Levels = list[tuple[float | None, float | None]]


def clip_levels(xp: Any, image: Any) -> Levels:
    """The clip levels ``(low, high)`` of each channel of ``image`` (channels last, any leading axes),
    each None where that extreme is not a clip level (see the module's docstring)."""
    levels = []
    for channel in range(image.shape[-1]):
        values = image[..., channel]
        low, high = values.min(), values.max()
        levels.append((clip_level(low, int(xp.count_nonzero(values == low)), values.size),
                       clip_level(high, int(xp.count_nonzero(values == high)), values.size)))
    return levels


def clip_level(extreme: Any, count: int, size: int) -> float | None:
    """``extreme``, a channel's smallest or largest value held by ``count`` of its ``size`` pixels, as a
    clip level: None unless at least ``CLIPPED_SHARE`` of them hold it."""
    return float(extreme) if count >= CLIPPED_SHARE * size else None


def clipped_mean(x: numpy.ndarray, sigma: float, low: float | None, high: float | None) -> numpy.ndarray:
    """``m(x)``: the mean of ``clip(x + n, low, high)``, ``n`` normal of deviation ``sigma`` (None: no clip
    level on that side)."""
    cdf = numpy.vectorize(lambda t: 0.5 * math.erfc(-t / math.sqrt(2)), otypes=[float])
    density = lambda t: numpy.exp(-t * t / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    x = numpy.asarray(x, dtype=float)
    mean = x.copy()
    if low is not None:
        a = (low - x) / sigma
        mean += sigma * density(a) + (low - x) * cdf(a)
    if high is not None:
        b = (high - x) / sigma
        mean += (high - x) * cdf(-b) - sigma * density(b)
    return mean


def declip(xp: Any, estimate: Any, sigma: float, levels: Levels) -> Any:
    """``estimate`` (channels last; of a clipped image whose channels have ``levels``, noise of deviation
    ``sigma``) with each value ``z`` of a channel with a clip level replaced by ``x`` with ``m(x) = z``,
    clamped to the channel's levels; channels without one are returned as they are.  Same shape and
    dtype; a new array unless nothing changes."""
    if sigma <= 0 or all(level == (None, None) for level in levels):
        return estimate
    out = estimate.copy()
    steps = numpy.linspace(0.0, TABLE_SIGMAS * sigma, TABLE_POINTS)
    for channel, (low, high) in enumerate(levels):
        if low is None and high is None:
            continue
        points = []
        if low is not None:
            points.append(low + steps)
        if high is not None:
            points.append(high - steps)
        x = numpy.unique(numpy.concatenate(points))
        if low is not None:
            x = x[x >= low]
        if high is not None:
            x = x[x <= high]
        mean = clipped_mean(x, sigma, low, high)
        values = out[..., channel].astype(xp.float64)
        inverse = xp.interp(values, xp.asarray(mean), xp.asarray(x))
        # beyond the table on a side without a level, m(x) = x
        if low is None:
            inverse = xp.where(values < mean[0], values, inverse)
        if high is None:
            inverse = xp.where(values > mean[-1], values, inverse)
        out[..., channel] = inverse.astype(out.dtype)
    return out


def declip_as(xp: Any, estimate: Any, noisy: Any, sigma: float, *, frames: bool = False) -> Any:
    """:func:`declip` of ``estimate`` with the clip levels of ``noisy`` (same shape, channels last); with
    ``frames``, each frame (first axis) with its own levels, as a stream of them gets."""
    if not frames:
        return declip(xp, estimate, sigma, clip_levels(xp, noisy))
    for index in range(estimate.shape[0]):
        estimate[index] = declip(xp, estimate[index], sigma, clip_levels(xp, noisy[index]))
    return estimate
