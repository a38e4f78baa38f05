"""Noise level estimation."""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy

from nlfilt.patches import box_sum

#: Median of |x| for standard normal x: turns a median absolute value into a standard deviation.
_MAD_TO_SIGMA = 0.6744897501960817

#: Side of the square blocks the image is divided into, and the fraction of all
#: blocks (the flattest usable ones) whose residuals are used.
_BLOCK = 8
_FLAT_FRACTION = 0.10

#: Most pixels of a block that may sit at a clip level, as a fraction of the
#: block: the first bound that leaves a usable block in a channel is used.  Up to
#: a quarter the censored standard deviation predicts the residual's median to
#: within 1 % (one clip level; 3 % with both); the looser bound serves images
#: that lie near a clip level everywhere.
_CLIPPED_FRACTIONS = (0.25, 0.5)


#: A given noise level this many times above or below the image's own estimate is most likely in other
#: units than the image's (an 8-bit sigma for a 16-bit file, say).
SIGMA_MISMATCH = 10.0


def sigma_mismatch(xp: Any, image: Any, sigma: float) -> float | None:
    """The noise estimated in ``image`` (:func:`estimate_sigma`) when the given ``sigma`` is more than
    ``SIGMA_MISMATCH`` times above or below it, else None (also when the image has no measurable
    noise, or is under 16 x 16 pixels: too small to tell)."""
    if min(image.shape[:2]) < 16:
        return None
    estimate = estimate_sigma(xp, image)
    if estimate <= 0:
        return None
    return estimate if not 1 / SIGMA_MISMATCH <= sigma / estimate <= SIGMA_MISMATCH else None


def estimate_sigma(xp: Any, image: Any, excluded: Any = None) -> float:
    """Estimate the standard deviation of additive white Gaussian noise, clipping included.

    A robust median-absolute-deviation estimate on a fine-scale detail band,
    restricted to the flattest parts of the image that carry noise, and
    corrected for the noise that clipping to the value range removed.  Images
    rounded and clipped to 8 or 16 bits, or clipped to [0, 1], need nothing
    passed in: the clipped pixels sit exactly at the channel's extremes, so a
    float copy of an 8-bit image is estimated like the 8-bit image.

    Parameters
    ----------
    xp : module
        Array module of ``image`` (NumPy or CuPy).
    image : array, shape (H, W, C), or (Z, H, W, C) for a volume
        Image in its own units (8 or 16-bit levels, [0, 1], ...), at least 4 x 4
        (each slice of a volume, whose estimate is the median of its slices').
    excluded : array of bool, shape (H, W) or (Z, H, W), optional
        Pixels whose noise was cut where this image cannot show it (clipped
        in other channels before a colour conversion mixed them into these):
        no block holding one is used.

    Returns
    -------
    float
        Noise standard deviation in the image's units; 0 for an image without
        measurable noise (constant, piecewise constant, fully saturated).

    Notes
    -----
    Per channel:

    1. the residual ``r = D_rows D_cols y / 6``, ``D`` the second difference
       ``[1, -2, 1]``: it cancels constant and linear signal, and for white
       noise of standard deviation sigma it has standard deviation sigma;
    2. the clip levels are the channel's smallest and largest values ``L``
       and ``U``.  Whenever the data were clipped (to a dtype's range, to
       [0, 1], or anywhere else) the clipped pixels sit exactly there; if
       nothing was clipped, only the few pixels at the extremes are affected;
    3. the residuals are cut into blocks of ``n = 8 x 8``.  A block is usable
       when at most ``n / 4`` of its centre pixels sit at ``L`` or ``U``, and
       when at most half of its 3 x 3 neighbourhoods are runs of equal values
       (constant: saturated, posterised or noise-free areas, which say nothing
       about the noise; such neighbourhoods are dropped from every block).
       Where no block is usable, the bound ``n / 2`` is tried; a channel with
       no usable block at all is left out;
    4. the usable blocks are ranked by the gradient energy of a 3 x 3
       box-smoothed copy (which the noise barely moves), and the flattest are
       taken, as many as a tenth of all blocks (all usable ones where there
       are fewer), so that the sample does not shrink with clipping;
    5. clipping shrinks the noise of a block with ``k_L`` and ``k_U`` pixels
       at ``L`` and ``U``: for a locally flat signal the clean level lies
       ``a = Phi^-1(1 - k_L / n)`` noise deviations above ``L`` and
       ``b = Phi^-1(1 - k_U / n)`` below ``U`` (``Phi`` the standard normal
       distribution function, ``phi`` its density), and the clipped noise
       ``X = clip(Z, -a, b)``, ``Z`` standard normal, has standard deviation
       ``s(a, b) = sqrt(E[X^2] - E[X]^2)`` with
       ``E[X] = phi(a) - phi(b) - a Phi(-a) + b Phi(-b)`` and
       ``E[X^2] = 1 - Phi(-a) - Phi(-b) + a^2 Phi(-a) + b^2 Phi(-b)
       - a phi(a) - b phi(b)`` (the censored normal model [3]);
    6. ``sigma = median(|r| / s(a, b)) / 0.6745`` over the kept residuals of
       the chosen blocks, each divided by the factor of its block.

    The channels' estimates are averaged (0 when every channel is left out).
    The cost is a few passes over the image, a sort of the block energies and
    a median of a tenth of the residuals per channel: about 2 ms for a
    512 x 512 gray image and 7 ms in colour on one CPU core, twice the
    estimator that ignored clipping.

    Its accuracy on clipped and unclipped noise, at 8 and 16 bits and in
    [0, 1], is measured by ``benchmarks/noise_level.py``
    (benchmarks/results/noise_level.md).  At small sigma an image's own noise
    and textures read as noise, and the residual of integer data lies on a
    grid of 1/6 level, which moves the median by up to a few percent of
    sigma; rounding adds its variance of 1/12 level^2 to the noise estimated.

    The correction assumes the signal is flat within a block (the flattest
    blocks are chosen), and the median of the clipped residual follows
    ``s(a, b)`` to within 1 % up to a quarter of a block clipped at one level
    (3 % when both levels are near).  Where the whole image lies within about
    half a sigma of a clip level the estimate runs low, by up to 15 %; where
    more than half of every block is clipped it is 0.

    References
    ----------
    .. [1] D. L. Donoho, I. M. Johnstone, "Ideal spatial adaptation by wavelet
       shrinkage", Biometrika 81 (1994).
    .. [2] J. Immerkaer, "Fast noise variance estimation", Computer Vision and
       Image Understanding 64 (1996).
    .. [3] J. Tobin, "Estimation of relationships for limited dependent
       variables", Econometrica 26 (1958) (the censored normal model).

    Examples
    --------
    A scene half black, half mid-gray, with noise of 25 levels added, rounded
    and clipped to 8 bits, so that half the black pixels sit at 0 (ignoring
    clipping, the flat black half gave 12):

    >>> import numpy
    >>> scene = numpy.zeros((256, 256, 1))
    >>> scene[:, 128:] = 128
    >>> noise = numpy.random.default_rng(0).normal(0, 25, scene.shape)
    >>> noisy = numpy.clip(numpy.round(scene + noise), 0, 255)
    >>> round(estimate_sigma(numpy, noisy))
    24
    """
    if image.ndim == 4:  # a volume (Z, H, W, C): the median of its slices' estimates
        return float(numpy.median([estimate_sigma(xp, plane, None if excluded is None else excluded[index])
                                   for index, plane in enumerate(image)]))
    residual = image[:, :-2] - 2 * image[:, 1:-1] + image[:, 2:]
    residual = (residual[:-2] - 2 * residual[1:-1] + residual[2:]) / 6
    smooth = box_sum(xp, image, 3)  # aligned with the residual: both drop one pixel per side
    energy = (smooth[1:, :-1] - smooth[:-1, :-1]) ** 2 + (smooth[:-1, 1:] - smooth[:-1, :-1]) ** 2
    constant = _equal_neighbourhoods(image)
    centre = image[1:-1, 1:-1]  # the pixel each residual is centred on
    low, high = image.min(axis=0).min(axis=0), image.max(axis=0).max(axis=0)  # per channel
    height, width = energy.shape[:2]
    block = min(_BLOCK, height, width)
    rows, cols = height // block, width // block
    channels = image.shape[2]

    def blocks(values: Any) -> Any:
        cropped = values[: rows * block, : cols * block]
        tiles = cropped.reshape(rows, block, cols, block, channels).transpose(0, 2, 4, 1, 3)
        return tiles.reshape(rows * cols, channels, block * block)

    centres = blocks(centre)
    block_energy = blocks(energy).mean(axis=2)  # (blocks, channels)
    magnitudes = xp.abs(blocks(residual))
    varied = ~blocks(constant)
    if excluded is not None:  # a block holding an excluded pixel counts as constant: never used
        varied &= ~blocks(excluded[1:-1, 1:-1, None]).any(axis=2, keepdims=True)
    wanted = math.ceil(_FLAT_FRACTION * rows * cols)
    estimates = [
        _channel_sigma(xp, magnitudes[:, channel], block_energy[:, channel], varied[:, channel],
                       centres[:, channel], low[channel], high[channel], wanted)
        for channel in range(channels)
    ]
    estimates = [estimate for estimate in estimates if estimate is not None]
    return sum(estimates) / len(estimates) if estimates else 0.0


def _channel_sigma(xp: Any, magnitudes: Any, energy: Any, varied: Any, centres: Any, low: Any, high: Any,
                   wanted: int) -> float | None:
    """Steps 2 to 6 of :func:`estimate_sigma` for one channel; None without a usable block.

    ``magnitudes``, ``varied`` and ``centres`` are (blocks, n): |r|, whether the
    3 x 3 neighbourhood varies, and the pixel it is centred on; ``energy`` is
    per block; ``low`` and ``high`` are the channel's clip levels.
    """
    count = magnitudes.shape[1]
    at_low, at_high = (centres == low).sum(axis=1), (centres == high).sum(axis=1)
    mostly_varied = 2 * varied.sum(axis=1) >= count
    for fraction in _CLIPPED_FRACTIONS:
        most = int(fraction * count)
        usable = mostly_varied & (at_low + at_high <= most)
        available = int(usable.sum())
        if available:
            break
    else:
        return None
    ranked = xp.sort(xp.where(usable, energy, xp.inf))
    chosen = usable & (energy <= ranked[min(wanted, available) - 1])
    factors = xp.asarray(_censored_std_table(count, most))[at_low[chosen], at_high[chosen]]
    kept = (magnitudes[chosen] / factors[:, None])[varied[chosen]]
    return float(xp.median(kept)) / _MAD_TO_SIGMA


def _equal_neighbourhoods(image: Any) -> Any:
    """Whether each 3 x 3 neighbourhood holds a single value, aligned with the residual.

    Three equal pixels along each of the three rows, and along the first column.
    """
    along = image[:, 1:] == image[:, :-1]
    along = along[:, 1:] & along[:, :-1]
    down = image[1:, :-2] == image[:-1, :-2]
    return along[:-2] & along[1:-1] & along[2:] & down[1:] & down[:-1]


@lru_cache(maxsize=16)
def _censored_std_table(count: int, most: int) -> numpy.ndarray:
    """``s(a, b)`` for ``k_L, k_U = 0 .. most`` of ``count`` pixels clipped (step 5 of estimate_sigma)."""
    depths = [NormalDist().inv_cdf(1 - clipped / count) if clipped else math.inf
              for clipped in range(most + 1)]
    return numpy.array([[_censored_std(below, above) for above in depths] for below in depths])


def _censored_std(below: float, above: float) -> float:
    """Standard deviation of ``clip(Z, -below, above)``, Z standard normal (``inf``: no clip)."""
    mean, square = 0.0, 1.0
    for depth, sign in ((below, -1.0), (above, 1.0)):
        if math.isinf(depth):
            continue
        tail = NormalDist().cdf(-depth)  # P(Z < -depth): the mass moved onto the clip level
        density = math.exp(-depth * depth / 2) / math.sqrt(2 * math.pi)
        mean += sign * (depth * tail - density)
        square += depth * depth * tail - tail - depth * density
    return math.sqrt(max(square - mean * mean, 0.0))
