"""Collaborative Wiener filtering: a two-stage non-local filter of grouped patches.

The scheme of BM3D (Dabov, Foi, Katkovnik, Egiazarian, 2007), written here
with nlfilt's own array code.  For reference patches on a grid (every
``step`` pixels), the ``group`` patches nearest in squared distance within
``radius`` pixels are stacked into a group; each group is transformed by an
orthonormal 3-D transform (the 2-D DCT of every patch, then a DCT along the
group), shrunk, transformed back, and every patch of it is added, weighted,
into the image it came from:

1. Hard thresholding: groups matched on the noisy image, coefficients below
   ``threshold * sigma`` set to 0 (the group mean kept); each group weighted
   by ``1 / (sigma^2 N_kept)``.  This gives the pilot ``p``.
2. Empirical Wiener filter: groups matched on the pilot, each coefficient
   ``c`` of the noisy group multiplied by ``P^2 / (P^2 + sigma^2)`` with
   ``P`` the same coefficient of the pilot's group; each group weighted by
   ``1 / (sigma^2 |gains|^2)``.

Both stages weight every patch by a Kaiser window (beta 2) before adding
it, and divide by the summed weights.  A colour image (3 channels) is
filtered in an orthonormal opponent colour space: groups are matched on its
luminance and every channel is shrunk with the same groups (noise of standard
deviation sigma in each RGB channel keeps that deviation there); other
channel counts are matched on their mean and filtered channel by channel.

The parameters are BM3D's published ones for sigma up to 40 (patch 8, Kaiser
beta 2, threshold 2.7) except those chosen for speed: step 4 rather than 3,
search radius 12 (stage 1) and 9 (stage 2) rather than 19, and groups of 16
in both stages rather than 16 and 32 (on four Set12 images at sigma 25 these
cost 0.3 dB against BM3D's settings and save two thirds of the time; sigma
15-50 kept patch 8: 10-12 did worse at sigma 50).  Results in
benchmarks/results/quality.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy

from nlfilt.backend import Backend
from nlfilt.operators import _Workers

#: Patch side, grid step of the reference patches, search radius (pixels) of the two stages' matching
#: (on the noisy image, on the pilot), patches per group.
PATCH = 8
STEP = 4
RADIUS = (12, 9)
GROUP = 16
#: Stage 1 keeps 3-D coefficients of magnitude at least THRESHOLD * sigma.
THRESHOLD = 2.7
#: The Kaiser window each patch is weighted by when it is added back.
KAISER_BETA = 2.0
#: Reference patches transformed at once (bounds the temporaries to about 100 MB in float32), and the
#: bytes of patch distances one band of reference rows may hold while matching.
CHUNK = 2048
MATCH_BYTES = 64 * 2**20

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


def collaborative_filter(backend: Backend, image: Any, sigma: float, *, patch: int = PATCH, step: int = STEP,
                         radius: tuple[int, int] = RADIUS, group: int = GROUP, threshold: float = THRESHOLD,
                         progress: Callable[[float, int], None] | None = None) -> Any:
    """Both stages on an (H, W, C) image on ``backend``; returns the estimate, same shape and dtype.

    ``progress(done, 4)`` after each of the four steps (matching and
    filtering, twice).  ``sigma`` 0 returns a copy of the image.
    """
    xp = backend.xp
    height, width, channels = image.shape
    if sigma <= 0:
        return image.copy()
    check_shape(image.shape, patch)
    colour = channels == 3
    work = image @ xp.asarray(OPPONENT.T, dtype=image.dtype) if colour else image
    done = [0]

    def advance() -> None:
        done[0] += 1
        if progress is not None:
            progress(float(done[0]), 4)

    settings = {"patch": patch, "group": group}
    guide = _guide(xp, work, colour)
    rows, cols = _match(backend, guide, step=step, radius=radius[0], **settings)
    advance()
    pilot = _filter_groups(backend, work, None, rows, cols, sigma, threshold=threshold, **settings)
    advance()
    guide = _guide(xp, pilot, colour)
    rows, cols = _match(backend, guide, step=step, radius=radius[1], **settings)
    advance()
    estimate = _filter_groups(backend, work, pilot, rows, cols, sigma, threshold=threshold, **settings)
    advance()
    return estimate @ xp.asarray(OPPONENT, dtype=image.dtype) if colour else estimate


def check_shape(shape: tuple[int, ...], patch: int = PATCH) -> None:
    """ValueError unless an image of ``shape`` holds at least one patch."""
    height, width = shape[:2]
    if min(height, width) < patch:
        raise ValueError(f"the collaborative filter needs an image of at least {patch}x{patch} pixels; got "
                         f"{height}x{width}")


def _guide(xp: Any, image: Any, colour: bool) -> Any:
    """The image groups are matched on (luminance, or the channels' mean), in float64: float32 sums
    of squared differences would round differently in different crops of the same image (chunks),
    and near-ties would then choose different groups."""
    guide = image[:, :, 0] if colour else image.mean(axis=2)
    return guide.astype(xp.float64)


def _grid(length: int, patch: int, step: int) -> numpy.ndarray:
    """Top-left coordinates of the reference patches along one axis: every ``step``, and the last."""
    return numpy.unique(numpy.r_[numpy.arange(0, length - patch + 1, step), length - patch])


def _match(backend: Backend, guide: Any, *, patch: int, step: int, radius: int,
           group: int) -> tuple[Any, Any]:
    """The groups: top-left (rows, cols), each (references, group), of the ``group`` patches of
    ``guide`` (H, W) nearest to each reference patch in squared distance, within ``radius``.

    Reference rows are taken in bands whose distances (references x offsets)
    fit in ``MATCH_BYTES``; within a band, for every offset of the search
    window the squared-difference image of the overlap is box-summed over the
    patch (a cumulative sum down the columns, read at the reference rows
    only, then along those rows), a few passes over the band per offset.  The
    offsets are shared out to the backend's workers.
    """
    xp = backend.xp
    height, width = guide.shape
    rows, cols = _grid(height, patch, step), _grid(width, patch, step)
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    shifts = xp.asarray(numpy.array(offsets))
    band = max(1, MATCH_BYTES // (cols.size * len(offsets) * guide.dtype.itemsize))
    top_rows, left_cols = [], []
    with _Workers(backend) as workers:
        for first in range(0, rows.size, band):
            band_rows = rows[first:first + band]
            distances = _band_distances(backend, workers, guide, band_rows, cols, offsets, patch)
            distances[:, offsets.index((0, 0))] = -1  # each reference heads its own group (ties: flat areas)
            chosen = xp.argpartition(distances, group - 1, axis=1)[:, :group]
            top_rows.append(xp.asarray(numpy.repeat(band_rows, cols.size))[:, None] + shifts[chosen, 0])
            left_cols.append(xp.asarray(numpy.tile(cols, band_rows.size))[:, None] + shifts[chosen, 1])
    return xp.concatenate(top_rows), xp.concatenate(left_cols)


def _band_distances(backend: Backend, workers: _Workers, guide: Any, rows: numpy.ndarray,
                    cols: numpy.ndarray, offsets: list[tuple[int, int]], patch: int) -> Any:
    """Squared distances (references, offsets) of the reference patches at ``rows`` x ``cols`` to the
    patch at each offset; ``inf`` where that patch would leave the image."""
    xp = backend.xp
    height, width = guide.shape
    dtype = guide.dtype
    distances = xp.full((rows.size, cols.size, len(offsets)), xp.inf, dtype=dtype)

    def measure(share: range) -> None:
        for index in share:
            dy, dx = offsets[index]
            keep_rows = (rows + dy >= 0) & (rows + dy + patch <= height)
            keep_cols = (cols + dx >= 0) & (cols + dx + patch <= width)
            if not keep_rows.any() or not keep_cols.any():
                continue
            row_i, col_i = rows[keep_rows], cols[keep_cols]
            top, bottom = int(row_i[0]), int(row_i[-1]) + patch
            left, right = int(col_i[0]), int(col_i[-1]) + patch
            difference = guide[top:bottom, left:right] - guide[top + dy:bottom + dy, left + dx:right + dx]
            difference *= difference
            down = xp.zeros((difference.shape[0] + 1, difference.shape[1]), dtype=dtype)
            xp.cumsum(difference, axis=0, out=down[1:])
            at = xp.asarray(row_i - top)
            column_sums = down[at + patch] - down[at]
            across = xp.zeros((column_sums.shape[0], column_sums.shape[1] + 1), dtype=dtype)
            xp.cumsum(column_sums, axis=1, out=across[:, 1:])
            at = xp.asarray(col_i - left)
            sums = across[:, at + patch] - across[:, at]
            row_at = xp.asarray(numpy.flatnonzero(keep_rows))
            col_at = xp.asarray(numpy.flatnonzero(keep_cols))
            distances[row_at[:, None], col_at[None, :], index] = sums

    workers.map(measure, workers.shares(len(offsets)))
    return distances.reshape(-1, len(offsets))


def _filter_groups(backend: Backend, image: Any, pilot: Any | None, rows: Any, cols: Any, sigma: float, *,
                   patch: int, group: int, threshold: float) -> Any:
    """One stage over all groups: hard thresholding (``pilot`` None) or the Wiener filter with the
    pilot's coefficients; the patches added back with their weights and divided by the weights."""
    xp = backend.xp
    height, width, channels = image.shape
    dtype = image.dtype
    spatial = numpy.kron(dct_matrix(patch), dct_matrix(patch))
    forward2 = xp.asarray(spatial.T, dtype=dtype)  # rows @ forward2: each patch's 2-D DCT
    inverse2 = xp.asarray(spatial, dtype=dtype)
    along = xp.asarray(dct_matrix(group), dtype=dtype)
    window = numpy.kaiser(patch, KAISER_BETA)
    window = xp.asarray(numpy.outer(window, window).ravel(), dtype=dtype)
    within = xp.asarray((numpy.arange(patch)[:, None] * width + numpy.arange(patch)[None, :]).ravel())
    variance = dtype.type(sigma * sigma)
    level = dtype.type(threshold * sigma)
    planes = _planes(xp, image)
    guides = None if pilot is None else _planes(xp, pilot)
    pixels = height * width

    chunks = range(0, rows.shape[0], CHUNK)

    def run(share: range) -> tuple[Any, Any]:
        numerator = xp.zeros((channels, pixels), dtype=xp.float64)
        denominator = xp.zeros(pixels, dtype=xp.float64)
        for start in (chunks[index] for index in share):
            stop = min(start + CHUNK, rows.shape[0])
            index = ((rows[start:stop] * width + cols[start:stop])[:, :, None] + within).ravel()
            count = stop - start
            coefficients = [_transform(plane[index], count, group, forward2, along) for plane in planes]
            if guides is None:
                kept = [xp.abs(values) >= level for values in coefficients]
                for mask in kept:
                    mask[:, 0, 0] = True  # the group's mean
                shrunk = [values * mask for values, mask in zip(coefficients, kept, strict=True)]
                total = sum(mask.sum(axis=(1, 2)) for mask in kept)
                weight = 1 / (variance * total.astype(dtype))
            else:
                shrunk, total = [], 0
                for values, plane in zip(coefficients, guides, strict=True):
                    gains = _transform(plane[index], count, group, forward2, along)
                    gains *= gains
                    gains /= gains + variance
                    shrunk.append(values * gains)
                    total = total + (gains * gains).sum(axis=(1, 2))
                weight = 1 / (variance * total)
            patch_weight = xp.broadcast_to(weight[:, None, None] * window, (count, group, window.size))
            patch_weight = patch_weight.ravel()
            for channel, values in enumerate(shrunk):
                restored = _inverse(values, group, inverse2, along).ravel()
                restored *= patch_weight
                numerator[channel] += xp.bincount(index, weights=restored, minlength=pixels)
            denominator += xp.bincount(index, weights=patch_weight, minlength=pixels)
        return numerator, denominator

    with _Workers(backend) as workers:  # fixed partial sums: the same rounding whatever the thread count
        parts = workers.map_partials(run, len(chunks))
    numerator = sum(part[0] for part in parts)
    denominator = sum(part[1] for part in parts)
    out = numerator / denominator  # every pixel lies in some reference patch, itself in its group
    return xp.ascontiguousarray(out.T.reshape(height, width, channels).astype(dtype))


def _planes(xp: Any, image: Any) -> list[Any]:
    """The channels of an (H, W, C) image, each flattened and contiguous."""
    return [xp.ascontiguousarray(image[:, :, channel]).ravel() for channel in range(image.shape[2])]


def _transform(values: Any, count: int, group: int, forward2: Any, along: Any) -> Any:
    """(count, group, patch^2) 3-D DCT coefficients of ``count`` groups of flattened patches."""
    size = forward2.shape[0]
    spectra = values.reshape(count * group, size) @ forward2
    spectra = spectra.reshape(count, group, size).transpose(1, 0, 2).reshape(group, count * size)
    spectra = along @ spectra
    return spectra.reshape(group, count, size).transpose(1, 0, 2)


def _inverse(coefficients: Any, group: int, inverse2: Any, along: Any) -> Any:
    """The patches (count, group, patch^2) of 3-D DCT coefficients (the inverse of :func:`_transform`)."""
    count, _, size = coefficients.shape
    values = along.T @ coefficients.transpose(1, 0, 2).reshape(group, count * size)
    values = values.reshape(group, count, size).transpose(1, 0, 2).reshape(count * group, size) @ inverse2
    return values.reshape(count, group, size)
