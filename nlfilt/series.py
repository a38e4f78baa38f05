"""The collaborative filter of a stack of frames: groups drawn from neighbouring frames, following motion.

A time series, a video or a stack of slices (T, H, W, C) is filtered with
the two stages of :mod:`nlfilt.collaborative`, but each reference patch's
group is drawn from its own frame and the ``REACH`` frames before and after
it (V-BM3D's scheme, Dabov, Foi and Egiazarian, 2007): in its own frame
every patch within ``RADIUS`` pixels, in the next frames out every patch
within ``FOLLOW`` pixels of the best match one frame nearer, so a group
follows what moves (:meth:`nlfilt.collaborative.ArrayGroups.match_series`).
The same scene seen again in other frames with independent noise is what a
frame-by-frame filter cannot use.

The frames are laid side by side as one wide image (H, T * W, C), so the
filtering primitives of the 2-D filter (array code, compiled, CUDA) serve a
stack unchanged.  A long stack is filtered in windows of ``WINDOW_FRAMES``
frames, each read with ``2 * REACH`` frames of context on either side, so
memory does not grow with the length: the groups of a window's frames are
complete, and only the pilot near a context's outer end differs from a
filter of the whole stack.  :func:`stream_series` runs the same windows on
frames arriving one by one (a video), holding one window at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from nlfilt.accelerate import accelerate
from nlfilt.collaborative import (
    OPPONENT,
    PATCH,
    STEP,
    THRESHOLD,
    ArrayGroups,
    check_shape,
    filter_by_channel,
    guide,
    mix_channels,
    quantise,
)

if TYPE_CHECKING:
    from nlfilt.backend import Backend

#: Search radius in a reference's own frame, radius of the search around the best match in the next
#: frame out, frames searched on either side, patches per group in the two stages.  Measured on
#: shifted-frame series of Set12 photos (8 frames, sigma 25, 8-bit): frames on either side 2 -> 4:
#: +0.56 dB; own radius 19 -> 9: +0.04 dB and faster; groups of 32 in the Wiener stage: -0.15 dB; groups
#: of 8 in both: +0.3 dB at sigma 15, -0.26 dB at sigma 50.
RADIUS = 9
FOLLOW = 5
REACH = 4
GROUP = (16, 16)
#: Frames filtered per window of a long stack (each with ``2 * REACH`` frames of context either side).
WINDOW_FRAMES = 32
#: Values (frames x rows x columns x channels) of a window filtered at once: a larger window (long lines,
#: 1080p colour frames) is filtered in bands of rows, each with ``BAND_HALO`` rows of context either side,
#: so memory stays bounded (about 40 bytes per value).
BAND_VALUES = 2**27
#: Rows of context of a band: a member lies within ``max(RADIUS, REACH * FOLLOW)`` rows of its reference
#: (and spans a patch), in both stages, and a pixel is written by references up to a patch above it; a
#: multiple of STEP, so that a band's reference grid is the window's.
BAND_HALO = -(-(2 * (max(RADIUS, REACH * FOLLOW) + PATCH) + PATCH) // STEP) * STEP


def windows(frames: int, pixels: int, reach: int = REACH) -> list[tuple[int, int, int, int]]:
    """The windows a stack of ``frames`` frames of ``pixels`` pixels is filtered in: (first, last) frames
    read, (first, last) frames kept.  One window when the stack is short; otherwise ``WINDOW_FRAMES``
    kept per window (fewer when the frames side by side would pass int32 indices)."""
    context = 2 * reach
    if frames <= _one_window_frames(pixels, reach):
        return [(0, frames, 0, frames)]
    kept = _kept_frames(pixels, reach)
    return [(max(0, first - context), min(frames, first + kept + context), first, min(frames, first + kept))
            for first in range(0, frames, kept)]


def stream_windows(frames: int, height: int, width: int, channels: int) -> tuple[tuple[int, ...], float]:
    """What streaming ``frames`` frames costs, for the cost model: (the shape of the stack one window
    reads, how many windows of that shape the frames take)."""
    pixels = height * width
    if frames <= _one_window_frames(pixels, REACH):
        return (max(frames, 1), height, width, channels), 1.0
    kept = _kept_frames(pixels, REACH)
    return (kept + 4 * REACH, height, width, channels), frames / kept


def bands(frames: int, height: int, width: int, channels: int) -> list[tuple[int, int, int, int]]:
    """The bands of rows a window of ``frames`` frames of ``height`` x ``width`` x ``channels`` is filtered
    in: (first, last) rows read, (first, last) rows kept.  One band when it holds at most ``BAND_VALUES``
    values; the kept rows of a band are those the whole window gives."""
    fit = BAND_VALUES // max(1, frames * width * channels)
    if height <= fit:
        return [(0, height, 0, height)]
    kept = max(4 * STEP, (fit - 2 * BAND_HALO) // STEP * STEP)
    return [(max(0, top - BAND_HALO), min(height, top + kept + BAND_HALO), top, min(height, top + kept))
            for top in range(0, height, kept)]


def _kept_frames(pixels: int, reach: int) -> int:
    """Frames kept per window of a long stack of frames of ``pixels`` pixels."""
    return min(WINDOW_FRAMES, max(1, (2**31 - 1) // pixels - 4 * reach))


def _one_window_frames(pixels: int, reach: int) -> int:
    """The most frames of ``pixels`` pixels filtered in one window (a short stack)."""
    return min(_kept_frames(pixels, reach) + 4 * reach, (2**31 - 1) // pixels)


def to_wide(xp: Any, stack: Any) -> Any:
    """The frames of ``stack`` (T, H, W, C) side by side: (H, T * W, C), contiguous."""
    frames, height, width, channels = stack.shape
    return xp.ascontiguousarray(xp.moveaxis(stack, 0, 1).reshape(height, frames * width, channels))


def from_wide(xp: Any, wide: Any, frames: int) -> Any:
    """The stack (T, H, W, C) of frames laid side by side in ``wide`` (H, T * W, C)."""
    height, total, channels = wide.shape
    return xp.moveaxis(wide.reshape(height, frames, total // frames, channels), 1, 0)


def collaborative_series(backend: Backend, stack: Any, sigma: float, *,
                         progress: Callable[[float, int], None] | None = None) -> Any:
    """Both stages on a stack (T, H, W, C) of ``backend``'s arrays with groups across neighbouring
    frames; returns the estimate, same shape and dtype (:func:`stream_series` over its frames).
    ``progress(done, total)`` after each matching and filtering step of each window.  ``sigma`` 0 returns
    a copy."""
    if sigma <= 0:
        return stack.copy()
    return backend.xp.stack(list(stream_series(backend, iter(stack), sigma, count=stack.shape[0],
                                               progress=progress)))


def stream_series(backend: Backend, frames: Iterator[Any], sigma: float, *, count: int | None = None,
                  progress: Callable[[float, int], None] | None = None) -> Iterator[Any]:
    """The estimates of ``frames`` (each (H, W, C), ``backend``'s arrays, ``sigma`` > 0), in order, as
    the windows of :func:`windows` complete: at most ``WINDOW_FRAMES + 4 * REACH`` frames are held at a
    time, so a video of any length streams through.  The same windows, hence the same estimates, as a
    stack of the same frames.  ``count``: the number of frames when known (for ``progress(done,
    total)``, after each matching and filtering step of each window; otherwise its total grows)."""
    xp = backend.xp
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        return
    frames = itertools.chain([first], frames)
    height, width, channels = first.shape
    check_shape((height, width))
    colour = channels == 3
    noise = sigma if colour else sigma * channels ** 0.5  # of the guide: luminance, or channel sum
    pixels, context = height * width, 2 * REACH
    held: list[Any] = []  # frames start, start + 1, ... in the filter's colour space
    start, ended = 0, False
    done = [0]

    def pull(upto: int) -> None:  # hold frames up to index ``upto`` (exclusive), or all that remain
        nonlocal ended
        while not ended and start + len(held) < upto:
            frame = next(frames, None)
            if frame is None:
                ended = True
            elif frame.shape != first.shape:
                raise ValueError(f"frame {start + len(held)} has shape {frame.shape}; the first has "
                                 f"{first.shape}")
            else:
                held.append(mix_channels(xp, frame, OPPONENT.T) if colour else frame)

    def windows_now() -> int:
        known = count if count is not None else start + len(held) if ended else None
        return len(windows(known, pixels)) if known else int(done[0]) // 4 + 2

    def advance(amount: float) -> None:
        done[0] += amount
        if progress is not None:
            progress(float(done[0]), 4 * windows_now())

    pull(_one_window_frames(pixels, REACH) + 1)
    total = start + len(held) if ended else None
    if total is not None and total <= _one_window_frames(pixels, REACH):
        plan = [(0, total, 0, total)]
    else:
        kept = _kept_frames(pixels, REACH)
        plan = None
    index = 0
    while True:
        if plan is not None:
            if index == len(plan):
                return
            read_first, read_last, keep_first, keep_last = plan[index]
        else:
            keep_first = index * kept
            pull(keep_first + kept + context)
            available = start + len(held)
            if keep_first >= available:
                return
            keep_last = min(keep_first + kept, available)
            read_first, read_last = max(0, keep_first - context), min(keep_first + kept + context, available)
        part = xp.stack(held[read_first - start:read_last - start])
        estimate = _filter_window(backend, part, sigma, colour, noise, advance)
        for offset in range(keep_first - read_first, keep_last - read_first):
            yield mix_channels(xp, estimate[offset], OPPONENT) if colour else estimate[offset]
        index += 1
        drop = max(0, keep_last - context - start)  # the next window reads from keep_last - context on
        del held[:drop]
        start += drop


def _filter_window(backend: Backend, part: Any, sigma: float, colour: bool, noise: float,
                   advance: Callable[[float], None]) -> Any:
    """Both stages on the frames ``part`` (n, H, W, C; in the filter's colour space), band by band
    (:func:`bands`); ``advance(fraction)`` after each of the four steps of each band."""
    parts = bands(*part.shape)
    if len(parts) == 1:
        return _filter_band(backend, part, sigma, colour, noise, lambda: advance(1.0))
    estimate = backend.xp.empty_like(part)
    for read_first, read_last, keep_first, keep_last in parts:
        band = _filter_band(backend, part[:, read_first:read_last], sigma, colour, noise,
                            lambda: advance(1 / len(parts)))
        estimate[:, keep_first:keep_last] = band[:, keep_first - read_first:keep_last - read_first]
    return estimate


def _filter_band(backend: Backend, part: Any, sigma: float, colour: bool, noise: float,
                 advance: Callable[[], None]) -> Any:
    """Both stages on the frames ``part`` (n, H, W, C) as one wide image; ``advance()`` after each of the
    four steps."""
    xp = backend.xp
    count, height, width, channels = part.shape
    groups = accelerate(backend, ArrayGroups(backend, (height, width, channels), patch=PATCH, step=STEP,
                                             frames=count))
    wide = to_wide(xp, part)
    members = groups.match_series(quantise(xp, guide(xp, part, colour), noise), radius=RADIUS, follow=FOLLOW,
                                  reach=REACH, group=GROUP[0])
    advance()
    pilot = filter_by_channel(xp, groups, wide, None, members, sigma, THRESHOLD)
    advance()
    levels = quantise(xp, guide(xp, from_wide(xp, pilot, count), colour), noise)
    members = groups.match_series(levels, radius=RADIUS, follow=FOLLOW, reach=REACH, group=GROUP[1])
    advance()
    estimate = from_wide(xp, filter_by_channel(xp, groups, wide, pilot, members, sigma, THRESHOLD), count)
    advance()
    return estimate
