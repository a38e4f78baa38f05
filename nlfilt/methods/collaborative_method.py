"""The method 'collaborative' (the default): the two-stage collaborative Wiener filter of grouped patches
(:func:`nlfilt.denoise_collaborative`)."""

from __future__ import annotations

from typing import Any

from nlfilt.collaborative import PATCH, check_shape
from nlfilt.cost import estimate_collaborative_bytes, estimate_collaborative_seconds
from nlfilt.denoisers import denoise_collaborative
from nlfilt.methods.base import Method, Plan, Progress, register_method


@register_method
class CollaborativeMethod(Method):
    """BM3D's two stages on groups of similar patches; no options of its own.  A stack (T, H, W, C) in
    ``--stack series`` is filtered with groups across neighbouring frames (:mod:`nlfilt.series`)."""

    name = "collaborative"
    summary = "two-stage Wiener filter of grouped patches (the best quality)"
    options: dict[str, Any] = {}
    stacks = ("series",)
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
        return {}

    def seconds(self, shape: tuple[int, ...], plan: Plan) -> float:
        return estimate_collaborative_seconds(shape, plan.device)

    def working_bytes(self, shape: tuple[int, ...], plan: Plan) -> int:
        return estimate_collaborative_bytes(shape, plan.device)

    def denoise(self, image: Any, plan: Plan, progress: Progress | None) -> tuple[Any, Any]:
        stack = {"channel_axis": -1} if image.ndim == 4 else {}
        return denoise_collaborative(image, sigma=plan.sigma, device=plan.device, dtype=plan.dtype,
                                     progress=progress, return_info=True, **stack)

    def denoise_dask(self, array: Any, plan: Plan) -> Any:
        from nlfilt import dask as nlfilt_dask  # noqa: PLC0415 - optional extra

        return nlfilt_dask.denoise_collaborative(array, sigma=plan.sigma, device=plan.device,
                                                 dtype=plan.dtype)
