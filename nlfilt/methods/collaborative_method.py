"""The method 'collaborative' (the default): the two-stage collaborative filter of grouped patches
(:func:`nlfilt.denoise_collaborative`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy

from nlfilt.backend import get_backend
from nlfilt.clipping import Levels, clip_levels, declip
from nlfilt.collaborative import PATCH, check_shape
from nlfilt.cost import estimate_collaborative_bytes, estimate_collaborative_seconds
from nlfilt.denoisers import denoise_collaborative
from nlfilt.methods.base import Method, Plan, Progress, register_method
from nlfilt.series import stream_series


@register_method
class CollaborativeMethod(Method):
    """BM3D's two stages on groups of similar patches; its one option, ``declip``, undoes clipping's bias
    (:mod:`nlfilt.clipping`).  A stack (T, H, W, C) in ``--stack series`` is filtered with groups across
    neighbouring frames (:mod:`nlfilt.series`), in ``--stack volume`` with groups of cubes
    (:mod:`nlfilt.volume`)."""

    name = "collaborative"
    summary = "two-stage filter of grouped patches (the best quality)"
    options: dict[str, Any] = {"declip": True}
    stacks = ("series", "volume")
    streams = True
    progress_unit = "steps"

    def settings(self, shape: tuple[int, ...], options: Any, sigma: float | None) -> dict[str, Any]:
        frame = shape[1:] if len(shape) == 4 else shape  # a stack filtered as a series: one frame's
        try:
            check_shape(frame)
        except ValueError:
            height, width = frame[:2]
            raise ValueError(f"the image is {height}x{width}, smaller than the {PATCH}x{PATCH} patches of "
                             "--method collaborative; use --method filter with a smaller --patch") from None
        return super().settings(shape, options, sigma)

    def seconds(self, shape: tuple[int, ...], plan: Plan) -> float:
        return estimate_collaborative_seconds(shape, plan.device, volume=plan.stack == "volume")

    def working_bytes(self, shape: tuple[int, ...], plan: Plan) -> int:
        return estimate_collaborative_bytes(shape, plan.device, volume=plan.stack == "volume")

    def describe(self, plan: Plan) -> str:
        return "--method collaborative" + (" (cubes)" if plan.stack == "volume" else "")

    def denoise(self, image: Any, plan: Plan, progress: Progress | None) -> tuple[Any, Any]:
        stack = {"channel_axis": -1, "stack": plan.stack, "spacing": plan.spacing} if image.ndim == 4 else {}
        return denoise_collaborative(image, sigma=plan.sigma, declip=plan["declip"], device=plan.device,
                                     dtype=plan.dtype, progress=progress, return_info=True, **stack)

    def denoise_series(self, frames: Iterator[Any], plan: Plan, count: int,
                       progress: Progress | None) -> Iterator[Any]:
        backend = get_backend(plan.device)
        placed = (backend.asarray(frame, dtype=numpy.dtype(plan.dtype)) for frame in frames)
        if plan.sigma <= 0:
            yield from placed
            return
        within = None if progress is None else _in_frames(progress, count)
        levels: deque[Levels] = deque()  # of the frames pulled, whose estimates are still to come

        def noted(frames: Iterator[Any]) -> Iterator[Any]:
            for frame in frames:
                levels.append(clip_levels(backend.xp, frame))
                yield frame

        for estimate in stream_series(backend, noted(placed), float(plan.sigma), count=count or None,
                                      progress=within):
            frame_levels = levels.popleft()
            yield declip(backend.xp, estimate, float(plan.sigma), frame_levels) if plan["declip"] \
                else estimate

    def denoise_dask(self, array: Any, plan: Plan) -> Any:
        from nlfilt import dask as nlfilt_dask  # noqa: PLC0415 - optional extra

        return nlfilt_dask.denoise_collaborative(array, sigma=plan.sigma, declip=plan["declip"],
                                                 device=plan.device, dtype=plan.dtype)


def _in_frames(progress: Progress, count: int) -> Progress:
    """A series' progress (steps of its windows) as frames of ``count`` (0: unknown, then steps)."""
    if not count:
        return progress
    return lambda done, total: progress(count * done / max(total, 1), count)
