"""Collaborative filtering: a two-stage non-local filter of grouped patches.

The scheme of BM3D (Dabov, Foi, Katkovnik, Egiazarian, 2007), written here
with nlfilt's own code.  For reference patches on a grid (every ``step``
pixels), the ``group`` patches nearest in squared distance within ``radius``
pixels are stacked into a group; each group is transformed by a separable
3-D transform (a 2-D transform of every patch, then a 1-D transform along
the group), shrunk, transformed back, and every patch of it is added,
weighted, into the image it came from.  As in BM3D, the hard-thresholding
stage transforms patches with the biorthogonal 1.5 wavelet and the Wiener
stage with the DCT, and both stages transform along the group with the Haar
wavelet (the DCT where a size is not a power of two); every basis vector
has unit norm, so white noise of deviation sigma keeps that deviation in
every coefficient, and the first coefficient is the group's mean:

1. Hard thresholding: groups matched on the noisy image, coefficients below
   ``threshold * sigma`` set to 0 (the group mean kept); each group weighted
   by ``1 / N_kept``.  This gives the pilot ``p``.
2. Groups matched on the pilot, and two estimates of them, averaged
   (``BAYES_SHARE``): the empirical Wiener filter, each coefficient ``c`` of
   the noisy group multiplied by ``P^2 / (P^2 + sigma^2)`` with ``P`` the
   same coefficient of the pilot's group, each group weighted by
   ``1 / |gains|^2``; and the empirical-Bayes estimate of NL-Bayes (Lebrun,
   Buades, Morel, 2013), each noisy patch ``y`` of the group replaced by
   ``m + C (C + sigma^2 I)^-1 (y - m)`` with ``m`` and ``C`` the mean and
   covariance of the pilot's patches of the group, each group weighted
   alike.  The two err differently (a fixed basis against one fitted to
   the group), so their mean beats either: over the Wiener estimate alone,
   +0.09 dB on Set12 at sigma 15 and 25 (nothing at 50), +0.09-0.11 dB on
   other gray photos at 25 (8-bit noise).  A colour image gets the mean in
   its luminance only (+0.09 dB on Set5 at sigma 25 and 50).  At low
   signal-to-noise (sigma at least ``LOW_SNR`` times the pilot's contrast)
   the pilot is refined by the estimate of the image one scale down
   (:mod:`nlfilt.pyramid`), and a colour image gets the empirical-Bayes
   estimate in every channel.

Both stages weight every patch by a Kaiser window (beta 2) before adding it
into one accumulator, and divide by the summed weights.  A colour image (3
channels) is filtered in an orthonormal opponent colour space: groups are
matched on its luminance and every channel is shrunk with the same groups
(noise of standard deviation sigma in each RGB channel keeps that deviation
there); other channel counts are matched on the sum of their channels.  Each
channel is filtered on its own with the shared groups, so its groups carry
its own weights (a colour-flat group of detailed luminance counts fully in
the chroma channels), as in CBM3D; colour images use groups of 32 in the
Wiener stage (``COLOUR_GROUP``).

Groups are deterministic.  Matching runs on the guide quantised to integer
levels, ``LEVELS_PER_SIGMA`` per standard deviation of its noise on a grid
anchored at zero (so a crop of an image gets the levels of the whole), and
every patch distance is then an exact integer whatever the order of its
sums; each candidate is ranked by the key ``distance * offsets + offset
index`` (offsets of the search window counted row by row), unique within a
reference, so any selection routine, on any backend, picks the same members
in the same order: the reference first, then the others by increasing key.
A reference with fewer candidates inside the image than ``group`` (tiny
images) repeats its members in that order.

Three implementations compute the two primitives, matching and one stage of
filtering: :class:`ArrayGroups`, array code on NumPy or CuPy (the twin the
others are tested against), compiled CPU kernels (:mod:`nlfilt.jit_groups`)
and CUDA kernels (:mod:`nlfilt.cuda.groups`), chosen by
:func:`nlfilt.accelerate.accelerate`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy

from nlfilt.pyramid import halve, refine

if TYPE_CHECKING:
    from nlfilt.backend import Backend

#: Patch side, grid step of the reference patches, search radius (pixels) of the two stages' matching
#: (on the noisy image, on the pilot), patches per group in each stage (``COLOUR_GROUP`` for colour images:
#: 32 in the Wiener stage gains 0.03-0.06 dB on Set5 there, and costs gray images time for no gain).
PATCH = 8
STEP = 3
RADIUS = (19, 19)
GROUP = (16, 16)
COLOUR_GROUP = (16, 32)
#: Stage 1 keeps 3-D coefficients of magnitude at least THRESHOLD * sigma.
THRESHOLD = 2.7
#: The Kaiser window each patch is weighted by when it is added back.
KAISER_BETA = 2.0
#: Levels per standard deviation of the guide's noise that matching quantises the guide to (the rounding
#: adds a 3072nd of the noise's variance), and the largest level magnitude: a guide whose values exceed
#: MAX_LEVEL levels gets coarser levels, so that patch distances stay exact integers in float64 and keys
#: fit int64 (below 2^60 for 8 x 8 patches and search windows of up to 4096 offsets).
LEVELS_PER_SIGMA = 16
MAX_LEVEL = 2**20
#: The key of a candidate outside the image (larger than every real key).
INVALID_KEY = numpy.iinfo(numpy.int64).max
#: Smallest sum of squared Wiener gains a group's weight divides by (a group of an all-zero pilot).
GAIN_FLOOR = 1e-6
#: The second stage's estimate: ``(1 - BAYES_SHARE) * Wiener + BAYES_SHARE * empirical Bayes``; in a colour
#: image's luminance only (in its two colour channels, which hold little detail, the empirical-Bayes estimate
#: adds 0.03-0.05 dB on Set5 for 60 % more time with groups of 32).
BAYES_SHARE = 0.5
#: Noise at least LOW_SNR times the image's contrast (:func:`contrast`) is low signal-to-noise (on 8-bit
#: photos, sigma from about 35-45 up; a low-contrast image from lower noise): the pilot is then refined by
#: the collaborative filter of the image's 2 x 2 block means (noise sigma / 2, reference patches every
#: COARSE_STEP coarse pixels; :func:`nlfilt.pyramid.refine`), which sees the coarse structure that hard
#: thresholding of small patches misses where noise hides it, and a colour image's second stage takes the
#: empirical-Bayes estimate in every channel.
LOW_SNR = 0.18
COARSE_STEP = 4

#: Orthonormal opponent colour transform: luminance, red-blue, and green against red and blue.
OPPONENT = numpy.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=numpy.float64)
OPPONENT /= numpy.linalg.norm(OPPONENT, axis=1, keepdims=True)


def dct_matrix(size: int) -> numpy.ndarray:
    """The orthonormal DCT-II matrix of ``size`` points (rows are the basis vectors)."""
    frequency = numpy.arange(size)[:, None]
    position = numpy.arange(size)[None, :]
    matrix = numpy.cos(numpy.pi * (2 * position + 1) * frequency / (2 * size)) * numpy.sqrt(2 / size)
    matrix[0] /= numpy.sqrt(2)
    return matrix


#: Analysis filters of the biorthogonal 1.5 wavelet (lowpass, highpass), and of the Haar wavelet.
BIOR15 = (numpy.array([3, -3, -22, 22, 128, 128, 22, -22, -3, 3]) / (128 * 2**0.5),
          numpy.array([0, 0, 0, 0, -1, 1, 0, 0, 0, 0]) / 2**0.5)
HAAR = (numpy.array([1, 1]) / 2**0.5, numpy.array([-1, 1]) / 2**0.5)


def wavelet_matrix(size: int, filters: tuple[numpy.ndarray, numpy.ndarray]) -> numpy.ndarray:
    """The matrix (rows are basis vectors, each scaled to unit norm) of the full periodic wavelet
    decomposition of ``size`` points (a power of two) with the analysis ``filters`` (lowpass, highpass
    of the same even length): the coarsest approximation first, then the details from coarse to fine
    (PyWavelets' ``wavedec`` with mode 'periodization')."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"a wavelet decomposition needs a power-of-two size, not {size}")
    taps = len(filters[0])
    details, approximation = [], numpy.eye(size)
    while approximation.shape[0] > 1:
        points = approximation.shape[0]
        halves = []
        for taps_of in filters:  # one analysis step of ``points`` samples: (points / 2, points)
            step = numpy.zeros((points // 2, points))
            for k in range(points // 2):
                for j, tap in enumerate(taps_of):
                    step[k, (2 * k + taps // 2 - j) % points] += tap
            halves.append(step @ approximation)
        approximation = halves[0]
        details.insert(0, halves[1])
    matrix = numpy.concatenate([approximation, *details])
    return matrix / numpy.linalg.norm(matrix, axis=1, keepdims=True)


def transform_matrices(patch: int, group: int, hard: bool) -> tuple[numpy.ndarray, ...]:
    """The 3-D transform of one stage: (forward, inverse) along a patch side, then along the group.

    ``hard``: the hard-thresholding stage's transform (the biorthogonal 1.5
    wavelet along a patch side), else the Wiener stage's (the DCT); the Haar
    wavelet along the group; the DCT where a size is not a power of two.
    """
    def pair(size: int, filters: tuple[numpy.ndarray, numpy.ndarray] | None) -> tuple[numpy.ndarray, ...]:
        if filters is None or size & (size - 1):
            forward = dct_matrix(size)
            return forward, forward.T
        forward = wavelet_matrix(size, filters)
        return forward, numpy.linalg.inv(forward)

    return (*pair(patch, BIOR15 if hard else None), *pair(group, HAAR))


def kaiser_window(sides: int | tuple[int, ...]) -> numpy.ndarray:
    """The Kaiser window (beta ``KAISER_BETA``) each patch of ``sides`` (an int: a square patch) is
    weighted by, of the patch's shape."""
    sides = (sides, sides) if isinstance(sides, int) else tuple(sides)
    window = numpy.ones(())
    for side in sides:
        window = numpy.multiply.outer(window, numpy.kaiser(side, KAISER_BETA))
    return window


def collaborative_filter(groups: Any, image: Any, sigma: float, *, radius: tuple[int, int] = RADIUS,
                         group: tuple[int, int] | None = None, threshold: float = THRESHOLD,
                         low_snr: bool | None = None,
                         progress: Callable[[float, int], None] | None = None) -> Any:
    """Both stages on an (H, W, C) image with ``groups`` (an :class:`ArrayGroups` of its shape, or the
    compiled implementation serving it: :func:`nlfilt.accelerate.accelerate`); returns the estimate,
    same shape and dtype.  ``group`` None: ``COLOUR_GROUP`` for 3 channels, else ``GROUP``.
    ``low_snr``: whether the filter takes its low signal-to-noise form (see ``LOW_SNR``); None:
    decided on this image's pilot (:func:`low_signal_to_noise`).

    ``progress(done, 4)`` after each of the four steps (matching and
    filtering, twice).  ``sigma`` 0 returns a copy of the image.
    """
    xp = groups.backend.xp
    if sigma <= 0:
        return image.copy()
    check_shape(image.shape, groups.patch)
    colour = image.shape[2] == 3
    if group is None:
        group = COLOUR_GROUP if colour else GROUP
    work = mix_channels(xp, image, OPPONENT.T) if colour else image
    done = [0]

    def advance() -> None:
        done[0] += 1
        if progress is not None:
            progress(float(done[0]), 4)

    pilot = _pilot(groups, work, colour, sigma, radius[0], group[0], threshold, advance)
    if low_snr is None:
        low_snr = _low_snr(xp, pilot, colour, sigma)
    if low_snr and min(image.shape[:2]) >= 2 * groups.patch:
        pilot = _refined(groups, image, pilot, colour, sigma, radius, group, threshold)
    members = groups.match(quantise(xp, guide(xp, pilot, colour), _guide_noise(work, colour, sigma)),
                           radius=radius[1], group=group[1])
    advance()
    estimate = filter_by_channel(xp, groups, work, pilot, members, sigma, threshold, bayes_everywhere=low_snr)
    advance()
    return mix_channels(xp, estimate, OPPONENT) if colour else estimate


def low_signal_to_noise(groups: Any, image: Any, sigma: float) -> bool:
    """Whether :func:`collaborative_filter` gives ``image`` (H, W, C) its low signal-to-noise form
    (see ``LOW_SNR``), decided on its pilot: one decision for an image filtered in pieces
    (:mod:`nlfilt.dask` decides on a crop)."""
    if sigma <= 0:
        return False
    check_shape(image.shape, groups.patch)
    colour = image.shape[2] == 3
    work = mix_channels(groups.backend.xp, image, OPPONENT.T) if colour else image
    pilot = _pilot(groups, work, colour, sigma, RADIUS[0], GROUP[0], THRESHOLD, lambda: None)
    return _low_snr(groups.backend.xp, pilot, colour, sigma)


def _guide_noise(work: Any, colour: bool, sigma: float) -> float:
    """The noise of the guide of ``work``: its luminance (colour), or the sum of its channels."""
    return sigma if colour else sigma * work.shape[2] ** 0.5


def _pilot(groups: Any, work: Any, colour: bool, sigma: float, radius: int, group: int, threshold: float,
           advance: Callable[[], None]) -> Any:
    """The first stage's estimate of ``work`` (in the filter's colour space), ``advance()`` after its
    matching and after its filtering."""
    xp = groups.backend.xp
    members = groups.match(quantise(xp, guide(xp, work, colour), _guide_noise(work, colour, sigma)),
                           radius=radius, group=group)
    advance()
    pilot = filter_by_channel(xp, groups, work, None, members, sigma, threshold)
    advance()
    return pilot


def _refined(groups: Any, image: Any, pilot: Any, colour: bool, sigma: float, radius: tuple[int, int],
             group: tuple[int, int], threshold: float) -> Any:
    """The pilot of ``image`` refined by the collaborative filter of ``image`` one scale down (its 2 x 2
    block means, noise ``sigma / 2``, reference patches every ``COARSE_STEP``; in the usual form, without a
    coarser scale of its own): :func:`nlfilt.pyramid.refine` (see ``LOW_SNR``)."""
    from nlfilt.accelerate import accelerate  # noqa: PLC0415 - accelerate imports this module

    backend = groups.backend
    coarse = halve(backend.xp, image)
    coarse_groups = accelerate(backend, ArrayGroups(backend, coarse.shape, patch=groups.patch,
                                                    step=COARSE_STEP))
    estimate = collaborative_filter(coarse_groups, coarse, sigma / 2, radius=radius, group=group,
                                    threshold=threshold, low_snr=False)
    if colour:
        estimate = mix_channels(backend.xp, estimate, OPPONENT.T)
    return refine(backend.xp, pilot, estimate)


def _low_snr(xp: Any, pilot: Any, colour: bool, sigma: float) -> bool:
    """Whether ``sigma`` is at least ``LOW_SNR`` times the contrast of ``pilot`` (in RGB for colour)."""
    return bool(sigma >= LOW_SNR * contrast(xp, mix_channels(xp, pilot, OPPONENT) if colour else pilot))


def filter_by_channel(xp: Any, groups: Any, image: Any, pilot: Any | None, members: Any, sigma: float,
                      threshold: float, *, bayes_everywhere: bool = False) -> Any:
    """One stage run on each channel of ``image`` (and ``pilot``; channels last) on its own with the
    shared ``members``, so that each channel's groups carry that channel's weights: hard thresholding
    (``pilot`` None: ``groups.filter``), else the second stage, the Wiener estimate (``groups.filter``)
    mixed with the empirical-Bayes one (``groups.bayes``) by ``BAYES_SHARE``, except in the colour
    channels of an opponent-space image (3 channels), which keep the Wiener estimate (see
    ``BAYES_SHARE``) unless ``bayes_everywhere`` (see ``LOW_SNR``)."""

    def stage(channel: int) -> Any:
        plane = image if image.shape[-1] == 1 else xp.ascontiguousarray(image[..., channel:channel + 1])
        guide = pilot if pilot is None or image.shape[-1] == 1 else xp.ascontiguousarray(
            pilot[..., channel:channel + 1])
        estimate = groups.filter(plane, guide, members, sigma, threshold=threshold)
        if guide is not None and (channel == 0 or image.shape[-1] != 3 or bayes_everywhere):
            bayes = groups.bayes(plane, guide, members, sigma)
            bayes -= estimate
            bayes *= image.dtype.type(BAYES_SHARE)
            estimate += bayes
        return estimate

    if image.shape[-1] == 1:
        return stage(0)
    return xp.concatenate([stage(channel) for channel in range(image.shape[-1])], axis=-1)


def contrast(xp: Any, image: Any) -> float:
    """The image's contrast: the median over its channels (last axis) of the spread between each one's
    1st and 99th percentiles."""
    spreads = [float(xp.percentile(image[..., channel], 99) - xp.percentile(image[..., channel], 1))
               for channel in range(image.shape[-1])]
    return float(numpy.median(spreads))


def mix_channels(xp: Any, image: Any, matrix: numpy.ndarray) -> Any:
    """``image @ matrix`` for an (..., 3) image, in element-wise operations (a BLAS product's rounding
    may depend on its threads; this does not)."""
    rows = xp.asarray(matrix, dtype=image.dtype)
    out = image[..., 0:1] * rows[0]
    out += image[..., 1:2] * rows[1]
    out += image[..., 2:3] * rows[2]
    return out


def check_shape(shape: tuple[int, ...], patch: int = PATCH) -> None:
    """ValueError unless an image of ``shape`` holds at least one patch."""
    height, width = shape[:2]
    if min(height, width) < patch:
        raise ValueError(f"the collaborative filter needs an image of at least {patch}x{patch} pixels; got "
                         f"{height}x{width}")


def guide(xp: Any, image: Any, colour: bool) -> Any:
    """The (H, W) image groups are matched on (a stack (T, H, W, C): (T, H, W)), a new float64 array: the
    luminance of an opponent-space image, else the sum of the channels."""
    return image[..., 0].astype(xp.float64) if colour else image.astype(xp.float64).sum(axis=-1)


def quantise(xp: Any, values: Any, sigma: float) -> Any:
    """``values`` (H, W, float64) as int32 levels ``rint(values / step)``, ``step = sigma /
    LEVELS_PER_SIGMA`` (``sigma > 0``: the noise of ``values``), or coarser where the largest magnitude
    would exceed ``MAX_LEVEL`` levels.  Element-wise float64 operations only, so NumPy and CuPy give the
    same levels (``values`` is overwritten)."""
    step = xp.maximum(sigma / LEVELS_PER_SIGMA, xp.abs(values).max() / MAX_LEVEL)
    values /= step
    return xp.rint(values, out=values).astype(xp.int32)


def grid(length: int, patch: int, step: int) -> numpy.ndarray:
    """Top-left coordinates of the reference patches along one axis: every ``step``, and the last."""
    return numpy.unique(numpy.r_[numpy.arange(0, length - patch + 1, step), length - patch])


def search_offsets(radius: int) -> numpy.ndarray:
    """The (offsets, 2) offsets (row, column) of a search window, row by row: a candidate's offset index
    is its row here, and ranks it among candidates at the same distance."""
    steps = numpy.arange(-radius, radius + 1)
    return numpy.stack(numpy.meshgrid(steps, steps, indexing="ij"), axis=-1).reshape(-1, 2)


def fill_short_groups(xp: Any, order: Any, count: Any) -> Any:
    """Columns ``j >= count`` of ``order`` (references, group) replaced by column ``j % count``: a
    reference with fewer than ``group`` candidates repeats its members in order."""
    columns = xp.arange(order.shape[1])[None, :]
    count = count[:, None]
    source = xp.where(columns < count, columns, columns % count)
    return xp.take_along_axis(order, source, axis=1)


class ArrayGroups:
    """Matching and filtering as array code on ``backend.xp`` (NumPy or CuPy): the twin of the compiled
    and CUDA implementations.

    Parameters
    ----------
    backend : Backend
        Array module; ``backend.batch_bytes`` bounds the temporaries of one batch of work.
    shape : tuple
        The (H, W, C) shape of the images it filters.
    patch, step : int
        Patch side and grid step of the reference patches.
    frames : int
        For a stack of ``frames`` images of ``shape`` (:mod:`nlfilt.series`):
        the images it filters are then the frames side by side, (H, frames *
        W, C), its reference columns every frame's grid, and its groups come
        from :meth:`match_series`.

    Matching takes reference rows in bands and the search window's row
    offsets in blocks sized to the batch; for each block the squared
    differences of the band against every offset of the block are summed
    over the patch by cumulative sums (exact in int64), read at the
    references only, and turned into keys.  Filtering takes references in
    chunks: one gather of the groups' pixels per channel, GEMMs for the
    transforms, and one scatter-add of the weighted patches into one
    accumulator (:meth:`nlfilt.backend.Backend.add_at`, linear in the
    chunk).  Both run a bounded number of array operations per batch (the
    launches on a GPU: about 20 per block of offsets and 40 per chunk).
    """

    def __init__(self, backend: Backend, shape: tuple[int, ...], *, patch: int, step: int,
                 frames: int = 1) -> None:
        self.backend = backend
        self.patch = patch
        self.step = step
        self.frames = frames
        self.frame_width = shape[1]
        self.shape = (shape[0], frames * shape[1], *shape[2:])
        self.rows = grid(shape[0], patch, step)
        self.cols = (numpy.arange(frames)[:, None] * shape[1] + grid(shape[1], patch, step)).ravel()

    @property
    def references(self) -> int:
        """Reference patches (groups per stage)."""
        return self.rows.size * self.cols.size

    def match(self, levels: Any, *, radius: int, group: int) -> Any:
        """The groups of ``levels`` (H, W; int32, from :func:`quantise`): (references, group) int32 flat
        indices ``row * W + col`` of their members' top-left pixels, references row by row."""
        if self.frames > 1:
            raise ValueError("the groups of a stack come from match_series")
        xp = self.backend.xp
        height, width = levels.shape
        patch, side = self.patch, 2 * radius + 1
        offsets = side * side
        rows, cols = self.rows, self.cols
        # one more row and column before the image: the cumulative sums start there, so a box sum is
        # the difference of two of them (the padding's own terms cancel; no candidate reads it)
        padded = xp.pad(levels, ((radius + 1, radius), (radius + 1, radius)))
        band, block = self._batch(side, width)
        shifts = search_offsets(radius)
        flat_shifts = xp.asarray(shifts[:, 0] * width + shifts[:, 1], dtype=xp.int32)
        index = xp.asarray(numpy.arange(offsets).reshape(side, side))
        ends = xp.asarray(numpy.stack([cols, cols + patch]))  # box sums across: column ends
        # candidates inside the image per reference row and column offset, and per reference (host)
        steps = numpy.arange(-radius, radius + 1)
        row_ok = (rows[:, None] + steps >= 0) & (rows[:, None] + steps <= height - patch)
        col_ok = (cols[:, None] + steps >= 0) & (cols[:, None] + steps <= width - patch)
        short = numpy.outer(row_ok.sum(axis=1), col_ok.sum(axis=1)).ravel()  # candidates, the reference too
        members = []
        for first in range(0, rows.size, band):
            band_rows = rows[first:first + band]
            keys = xp.empty((band_rows.size, cols.size, side, side), dtype=xp.int64)
            self._band_distances(padded, band_rows, side, block, ends, keys)
            keys *= offsets
            keys += index
            inside = row_ok[first:first + band, None, :, None] & col_ok[None, :, None, :]
            keys = xp.where(xp.asarray(inside), keys, INVALID_KEY).reshape(-1, offsets)
            keys[:, offsets // 2] = -1  # the reference itself heads its group
            chosen = xp.argpartition(keys, group - 1, axis=1)[:, :group]
            chosen = xp.take_along_axis(chosen, xp.argsort(xp.take_along_axis(keys, chosen, axis=1), axis=1),
                                        axis=1)
            count = short[first * cols.size:(first + band_rows.size) * cols.size]
            if count.min() < group:  # decided on the host: tiny images only
                chosen = fill_short_groups(xp, chosen, xp.asarray(numpy.minimum(count, group)))
            tops = numpy.add.outer(band_rows * width, cols).astype(numpy.int32).ravel()
            members.append(xp.asarray(tops)[:, None] + flat_shifts[chosen])
        return xp.concatenate(members) if len(members) > 1 else members[0]

    def match_series(self, levels: Any, *, radius: int, follow: int, reach: int, group: int) -> Any:
        """The groups of a stack ``levels`` (frames, H, W; int32, from :func:`quantise`), each reference's
        members drawn from its own frame and the ``reach`` frames before and after it: (references,
        group) int32 flat indices ``row * frames * W + frame * W + col`` into the frames side by side,
        references row by row (and in a row, frame by frame).

        Candidates: in the reference's own frame every patch within ``radius``
        of it; in the frame ``d`` frames away (before, then after, for ``d`` =
        1, 2, ...), every patch within ``follow`` (at most ``radius``) of the
        best match in the frame one nearer (of the reference itself for
        ``d`` = 1), so the search follows motion.  Each candidate is ranked
        by the key ``distance * candidates + slot * window + offset index``
        (slot 0 the own frame, 2d - 1 the frame d before, 2d the one after;
        the offset index within a window of ``radius``), unique within a
        reference: the reference first, then the others by increasing key
        (repeated in order when fewer).
        """
        xp = self.backend.xp
        self.check_series(levels.shape, radius=radius, follow=follow)
        frames, height, width = levels.shape
        patch, side = self.patch, 2 * radius + 1
        window, slots = side * side, 2 * reach + 1
        candidates = slots * window
        flat = xp.asarray(levels, dtype=xp.int64).ravel()
        within = xp.asarray((numpy.arange(patch)[:, None] * width + numpy.arange(patch)[None, :]).ravel())
        # the references: row by row, and in a row frame by frame, column by column
        rows = numpy.repeat(self.rows, self.cols.size)
        cols = numpy.tile(self.cols % width, self.rows.size)
        times = numpy.tile(self.cols // width, self.rows.size)
        per_batch = max(1, self.backend.batch_bytes // (16 * patch * patch * 4 + 16 * candidates))
        members = []
        for first in range(0, rows.size, per_batch):
            top = xp.asarray(rows[first:first + per_batch], dtype=xp.int64)
            left = xp.asarray(cols[first:first + per_batch], dtype=xp.int64)
            time = xp.asarray(times[first:first + per_batch], dtype=xp.int64)
            reference = flat[((time * height + top) * width + left)[:, None] + within]
            keys, centres = [], []
            for slot in range(slots):
                away = (slot + 1) // 2
                frame = time + (away if slot % 2 == 0 else -away)
                # the centre: the reference in its own frame and the next ones, else the best match in the
                # frame one nearer (slot - 2)
                centre = (top, left) if slot < 3 else centres[slot - 2][2:]
                best = self._series_scan(flat, reference, keys, frame, *centre,
                                         radius if slot == 0 else follow, radius, slot, candidates, window,
                                         (frames, height, width), within)
                centres.append((*centre, *((top, left) if slot == 0 else best)))
            if len(keys) < group - 1:  # tiny windows: fewer candidates than members
                keys += [xp.full((top.size, 1), INVALID_KEY, dtype=xp.int64)] * (group - 1 - len(keys))
            keys = xp.concatenate(keys, axis=1)
            order = xp.argpartition(keys, group - 2, axis=1)[:, :group - 1] if group > 1 else keys[:, :0]
            order = xp.take_along_axis(order, xp.argsort(xp.take_along_axis(keys, order, axis=1), axis=1),
                                       axis=1)
            chosen = xp.take_along_axis(keys, order, axis=1)
            valid = chosen != INVALID_KEY
            rest = chosen % candidates
            slot, offset = rest // window, rest % window
            centre_rows = xp.stack([centre[0] for centre in centres], axis=1)
            centre_cols = xp.stack([centre[1] for centre in centres], axis=1)
            safe = xp.where(valid, slot, 0)
            member_rows = xp.take_along_axis(centre_rows, safe, axis=1) + offset // side - radius
            member_cols = xp.take_along_axis(centre_cols, safe, axis=1) + offset % side - radius
            steps = (safe + 1) // 2
            member_frames = time[:, None] + xp.where(safe % 2 == 0, steps, -steps)
            found = member_rows * (frames * width) + member_frames * width + member_cols
            origin = top * (frames * width) + time * width + left
            found = xp.concatenate([origin[:, None], xp.where(valid, found, 0)], axis=1).astype(xp.int32)
            count = valid.sum(axis=1) + 1
            if int(count.min()) < group:
                found = fill_short_groups(xp, found, count)
            members.append(found)
        return xp.concatenate(members) if len(members) > 1 else members[0]

    def check_series(self, shape: tuple[int, ...], *, radius: int, follow: int) -> None:
        """ValueError unless levels of ``shape`` (frames, H, W) are this stack's and ``follow`` lies in
        [0, ``radius``] (the arguments of :meth:`match_series`, checked for every implementation)."""
        if tuple(shape) != (self.frames, self.shape[0], self.frame_width):
            raise ValueError(f"levels of shape {tuple(shape)} for groups of {self.frames} frames of "
                             f"{self.shape[0]}x{self.frame_width}")
        if not 0 <= follow <= radius:
            raise ValueError(f"follow must be between 0 and radius ({radius}); got {follow}")

    def _series_scan(self, flat: Any, reference: Any, keys: list[Any], frame: Any, centre_row: Any,
                     centre_col: Any, reach: int, radius: int, slot: int, candidates: int, window: int,
                     size: tuple[int, int, int], within: Any) -> tuple[Any, Any]:
        """Append to ``keys`` the keys of every offset within ``reach`` of the centres in ``frame`` (per
        reference; INVALID_KEY outside the stack, and for the reference itself in its own frame); the
        (rows, columns) of each reference's best candidate there (its centre where the frame is
        outside the stack)."""
        xp = self.backend.xp
        frames, height, width = size
        patch, side = self.patch, 2 * radius + 1
        inside_stack = (frame >= 0) & (frame < frames)
        safe_frame = xp.clip(frame, 0, frames - 1)
        best_key = xp.full(frame.shape, INVALID_KEY, dtype=xp.int64)
        best_row, best_col = centre_row, centre_col
        for row_step in range(-reach, reach + 1):
            for col_step in range(-reach, reach + 1):
                row, col = centre_row + row_step, centre_col + col_step
                inside = (inside_stack & (row >= 0) & (row <= height - patch) & (col >= 0)
                          & (col <= width - patch))
                start = (safe_frame * height + xp.clip(row, 0, height - patch)) * width + xp.clip(
                    col, 0, width - patch)
                difference = flat[start[:, None] + within] - reference
                distance = (difference * difference).sum(axis=1)
                key = distance * candidates + slot * window + (row_step + radius) * side + col_step + radius
                key = xp.where(inside, key, INVALID_KEY)
                better = key < best_key
                best_key = xp.where(better, key, best_key)
                best_row = xp.where(better, row, best_row)
                best_col = xp.where(better, col, best_col)
                if slot == 0 and row_step == 0 and col_step == 0:
                    key = xp.full_like(key, INVALID_KEY)  # the reference heads its group
                keys.append(key[:, None])
        return best_row, best_col

    def _batch(self, side: int, width: int) -> tuple[int, int]:
        """(reference rows per band, row offsets per block) for a search window of ``side`` x ``side``:
        a block holds ``block * side * (band rows + 1) * width`` int64 squared differences and as many
        of their sums: about a twentieth of ``backend.batch_bytes`` with the other temporaries."""
        patch, step = self.patch, self.step
        pixel_rows = max(1, self.backend.batch_bytes // (20 * side * width))  # rows x row offsets
        if pixel_rows < side * (patch + step + 1):
            return 1, max(1, min(side, pixel_rows // (patch + 1)))
        return max(1, (pixel_rows // side - patch - 1) // step + 1), side

    def _band_distances(self, padded: Any, band_rows: numpy.ndarray, side: int, block: int, ends: Any,
                        out: Any) -> None:
        """``out`` (references of the band by row and column, row offsets, column offsets): the squared
        distance of each reference patch to the patch at each offset (an exact int64; meaningless where
        that patch leaves the image)."""
        xp = self.backend.xp
        width = self.shape[1]
        patch = self.patch
        top, bottom = int(band_rows[0]), int(band_rows[-1]) + patch
        radius = side // 2
        # the band with the row above it, and its shifts, in padded coordinates
        centre = padded[top + radius:bottom + radius + 1, radius:radius + width + 1]
        at_rows = xp.asarray(numpy.stack([band_rows - top, band_rows - top + patch]))  # box sums down
        stride_row, stride_item = padded.strides
        for first in range(0, side, block):
            count = min(block, side - first)
            # (row offsets, column offsets, band rows, W): the band shifted by every offset of the block
            shifted = xp.lib.stride_tricks.as_strided(
                padded[top + first:, :], shape=(count, side, bottom - top + 1, width + 1),
                strides=(stride_row, stride_item, stride_row, stride_item))
            sums = xp.subtract(centre, shifted, dtype=xp.int64)  # |difference| <= 2 MAX_LEVEL
            sums *= sums
            sums = xp.cumsum(sums, axis=2)
            down = sums[:, :, at_rows[1]] - sums[:, :, at_rows[0]]  # (count, side, band refs, W + 1)
            down = xp.cumsum(down, axis=3)
            distances = down[..., ends[1]] - down[..., ends[0]]  # (count, side, band refs, refs per row)
            out[:, :, first:first + count] = distances.transpose(2, 3, 0, 1)

    def filter(self, image: Any, pilot: Any | None, members: Any, sigma: float, *, threshold: float) -> Any:
        """One stage over all groups of ``image`` (H, W, C): hard thresholding (``pilot`` None) or the
        Wiener filter with the pilot's coefficients; the patches added back with their weights, divided
        by the weights."""
        steps = numpy.arange(self.patch)
        within = (steps[:, None] * image.shape[1] + steps[None, :]).ravel()
        return filter_groups(self.backend, image, pilot, members, sigma, threshold=threshold, within=within,
                             sides=(self.patch, self.patch))

    def bayes(self, image: Any, pilot: Any, members: Any, sigma: float) -> Any:
        """The empirical-Bayes estimate of ``image`` (H, W, C) over all groups, with the pilot's patches'
        means and covariances (see :func:`bayes_groups`)."""
        steps = numpy.arange(self.patch)
        within = (steps[:, None] * image.shape[1] + steps[None, :]).ravel()
        return bayes_groups(self.backend, image, pilot, members, sigma, within=within,
                            window=kaiser_window(self.patch).ravel())


def filter_groups(backend: Backend, image: Any, pilot: Any | None, members: Any, sigma: float, *,
                  threshold: float, within: numpy.ndarray, sides: tuple[int, ...]) -> Any:
    """One stage over all groups of ``image`` (H, W, C; any array whose flat pixel indices the members and
    ``within`` count): each member's patch is the pixels ``origin + within``, a patch of ``sides``
    (row-major, its last side fastest), transformed by the stage's transform along each side and the
    group's; hard thresholding (``pilot`` None) or the Wiener filter with the pilot's coefficients, the
    patches added back with their weights and divided by the weights (the array code of
    :meth:`ArrayGroups.filter` and of the volume's cubes, :mod:`nlfilt.volume`).

    Filtering takes references in chunks: one gather of the groups' pixels
    per channel, GEMMs for the transforms, and one scatter-add of the
    weighted patches into one accumulator
    (:meth:`nlfilt.backend.Backend.add_at`, linear in the chunk).
    """
    xp = backend.xp
    height, width, channels = image.shape
    dtype = image.dtype
    group, size = members.shape[1], len(within)
    transforms = _Transforms(xp, sides, group, dtype, hard=pilot is None)
    within = xp.asarray(within, dtype=xp.int32)
    variance = dtype.type(sigma * sigma)
    level = dtype.type(threshold * sigma)
    planes = _planes(xp, image)
    guides = None if pilot is None else _planes(xp, pilot)
    numerator = xp.zeros((channels, height * width), dtype=dtype)
    denominator = xp.zeros(height * width, dtype=dtype)
    # a chunk's temporaries: about 16 bytes per value of each channel and 16 besides
    chunk = max(1, backend.batch_bytes // (16 * (channels + 1) * group * size))
    for start in range(0, members.shape[0], chunk):
        index = (members[start:start + chunk, :, None] + within).ravel()
        count = index.size // (group * size)
        coefficients = [transforms.forward(plane[index], count) for plane in planes]
        if guides is None:
            kept = [xp.abs(values) >= level for values in coefficients]
            for mask in kept:
                mask[:, 0, 0] = True  # the group's mean
            shrunk = [values * mask for values, mask in zip(coefficients, kept, strict=True)]
            total = sum(mask.sum(axis=(1, 2), dtype=dtype) for mask in kept)
        else:
            shrunk, total = [], 0
            for values, plane in zip(coefficients, guides, strict=True):
                gains = transforms.forward(plane[index], count)
                gains *= gains
                gains /= gains + variance
                shrunk.append(values * gains)
                total = total + (gains * gains).sum(axis=(1, 2))
            total = xp.maximum(total, dtype.type(GAIN_FLOOR))
        patch_weight = xp.broadcast_to((1 / total)[:, None, None] * transforms.window,
                                       (count, group, size)).ravel()
        for channel, values in enumerate(shrunk):
            restored = transforms.inverse(values).ravel()
            restored *= patch_weight
            backend.add_at(numerator[channel], index, restored)
        backend.add_at(denominator, index, patch_weight)
    out = numerator / denominator  # every pixel lies in some reference patch, itself in its group
    return xp.ascontiguousarray(out.T.reshape(height, width, channels))


def bayes_groups(backend: Backend, image: Any, pilot: Any, members: Any, sigma: float, *,
                 within: numpy.ndarray, window: numpy.ndarray) -> Any:
    """The empirical-Bayes estimate of ``image`` (H, W, C; members and ``within`` count its flat pixels
    as in :func:`filter_groups`): in each group of ``n`` patches (rows) ``Y`` of the image and ``P`` of
    the pilot, with ``m`` the mean of ``P``'s rows and ``D = P - m``, the estimate ``m + (Y - m) D^T
    (D D^T + n sigma^2 I)^-1 D``, which is ``m + C (C + sigma^2 I)^-1 (y - m)`` for each patch ``y``
    with ``C = D^T D / n`` (an n x n solve, not a patch-sized one); the patches added back weighted by
    ``window`` (flattened like ``within``), equal for every group, and divided by the weights.

    Each group is solved in float64 (a small sigma makes the system ill-conditioned in float32); the
    estimate has the image's dtype.
    """
    xp = backend.xp
    height, width, channels = image.shape
    group, size = members.shape[1], len(within)
    within = xp.asarray(within, dtype=xp.int32)
    noise = group * float(sigma) ** 2
    planes, guides = _planes(xp, image), _planes(xp, pilot)
    numerator = xp.zeros((channels, height * width), dtype=xp.float64)
    denominator = xp.zeros(height * width, dtype=xp.float64)
    # a chunk's temporaries: about 40 bytes per value besides the group matrices
    chunk = max(1, backend.batch_bytes // (40 * group * size + 24 * group * group))
    weights = xp.asarray(window, dtype=xp.float64)
    for start in range(0, members.shape[0], chunk):
        index = members[start:start + chunk, :, None] + within  # (count, group, size)
        count = index.shape[0]
        flat = index.ravel()
        for channel in range(channels):
            spread = guides[channel][flat].reshape(count, group, size).astype(xp.float64)
            mean = spread.mean(axis=1, keepdims=True)
            spread -= mean
            system = spread @ spread.transpose(0, 2, 1)
            system += noise * xp.eye(group)
            residual = planes[channel][flat].reshape(count, group, size).astype(xp.float64) - mean
            estimate = (residual @ spread.transpose(0, 2, 1)) @ xp.linalg.solve(system, spread)
            estimate += mean
            estimate *= weights
            backend.add_at(numerator[channel], flat, estimate.ravel())
        backend.add_at(denominator, flat, xp.broadcast_to(weights, (count, group, size)).ravel())
    out = (numerator / denominator).astype(image.dtype)
    return xp.ascontiguousarray(out.T.reshape(height, width, channels))


class _Transforms:
    """The transform of one stage (:func:`transform_matrices`) of groups of flattened patches of
    ``sides`` (an int: a square patch): each patch's separable transform along every side, then the
    transform along the group; and the Kaiser window of one patch, flattened."""

    def __init__(self, xp: Any, sides: int | tuple[int, ...], group: int, dtype: Any, *, hard: bool) -> None:
        sides = (sides, sides) if isinstance(sides, int) else sides
        forward, inverse = numpy.ones((1, 1)), numpy.ones((1, 1))
        for side in sides:
            forward_side, inverse_side, forward_group, inverse_group = transform_matrices(side, group, hard)
            forward, inverse = numpy.kron(forward, forward_side), numpy.kron(inverse, inverse_side)
        window = kaiser_window(sides).ravel()
        self.forward2 = xp.asarray(forward.T, dtype=dtype)  # rows @ forward2
        self.inverse2 = xp.asarray(inverse.T, dtype=dtype)
        self.along = xp.asarray(forward_group, dtype=dtype)
        self.along_inverse = xp.asarray(inverse_group, dtype=dtype)
        self.window = xp.asarray(window, dtype=dtype)
        self.group = group

    def forward(self, values: Any, count: int) -> Any:
        """(count, group, patch^2) 3-D coefficients of ``count`` groups of flattened patches."""
        size, group = self.forward2.shape[0], self.group
        spectra = values.reshape(count * group, size) @ self.forward2
        spectra = spectra.reshape(count, group, size).transpose(1, 0, 2).reshape(group, count * size)
        spectra = self.along @ spectra
        return spectra.reshape(group, count, size).transpose(1, 0, 2)

    def inverse(self, coefficients: Any) -> Any:
        """The patches (count, group, patch^2) of 3-D coefficients (the inverse of :meth:`forward`)."""
        count, group, size = coefficients.shape
        values = self.along_inverse @ coefficients.transpose(1, 0, 2).reshape(group, count * size)
        values = values.reshape(group, count, size).transpose(1, 0, 2).reshape(count * group, size)
        return (values @ self.inverse2).reshape(count, group, size)


def _planes(xp: Any, image: Any) -> list[Any]:
    """The channels of an (H, W, C) image, each flattened and contiguous."""
    return [xp.ascontiguousarray(image[:, :, channel]).ravel() for channel in range(image.shape[2])]
