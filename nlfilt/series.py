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
filter of the whole stack.
"""

from __future__ import annotations

from collections.abc import Callable
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


def windows(frames: int, pixels: int, reach: int = REACH) -> list[tuple[int, int, int, int]]:
    """The windows a stack of ``frames`` frames of ``pixels`` pixels is filtered in: (first, last) frames
    read, (first, last) frames kept.  One window when the stack is short; otherwise ``WINDOW_FRAMES``
    kept per window (fewer when the frames side by side would pass int32 indices)."""
    context = 2 * reach
    most = max(1, (2**31 - 1) // pixels - 2 * context)
    if frames <= min(WINDOW_FRAMES + 2 * context, most + 2 * context) and frames * pixels < 2**31:
        return [(0, frames, 0, frames)]
    kept = min(WINDOW_FRAMES, most)
    return [(max(0, first - context), min(frames, first + kept + context), first, min(frames, first + kept))
            for first in range(0, frames, kept)]


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
    frames; returns the estimate, same shape and dtype.  ``progress(done, total)`` after each matching
    and filtering step of each window.  ``sigma`` 0 returns a copy."""
    xp = backend.xp
    if sigma <= 0:
        return stack.copy()
    frames, height, width, channels = stack.shape
    check_shape((height, width))
    colour = channels == 3
    work = mix_channels(xp, stack, OPPONENT.T) if colour else stack
    noise = sigma if colour else sigma * channels ** 0.5  # of the guide: luminance, or channel sum
    parts = windows(frames, height * width)
    out = xp.empty_like(work)
    done = [0]

    def advance() -> None:
        done[0] += 1
        if progress is not None:
            progress(float(done[0]), 4 * len(parts))

    for first, last, keep_first, keep_last in parts:
        count = last - first
        groups = accelerate(backend, ArrayGroups(backend, (height, width, channels), patch=PATCH, step=STEP,
                                                 frames=count))
        part = work[first:last]
        wide = to_wide(xp, part)
        members = groups.match_series(quantise(xp, guide(xp, part, colour), noise), radius=RADIUS,
                                      follow=FOLLOW, reach=REACH, group=GROUP[0])
        advance()
        pilot = filter_by_channel(xp, groups, wide, None, members, sigma, THRESHOLD)
        advance()
        levels = quantise(xp, guide(xp, from_wide(xp, pilot, count), colour), noise)
        members = groups.match_series(levels, radius=RADIUS, follow=FOLLOW, reach=REACH, group=GROUP[1])
        advance()
        estimate = from_wide(xp, filter_by_channel(xp, groups, wide, pilot, members, sigma, THRESHOLD), count)
        out[keep_first:keep_last] = estimate[keep_first - first:keep_last - first]
        advance()
    return mix_channels(xp, out, OPPONENT) if colour else out
