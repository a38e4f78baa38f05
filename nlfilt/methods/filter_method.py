"""The method 'filter': one non-local filter ``W`` with twicing (:func:`nlfilt.denoise`)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from nlfilt.backend import get_backend
from nlfilt.cost import estimate_cpu_seconds, estimate_working_bytes, expected_applications
from nlfilt.denoisers import denoise
from nlfilt.filters import FilterOptions
from nlfilt.kernels import kernel_class, kernel_names
from nlfilt.methods.base import Method, Plan, Progress, register_method
from nlfilt.patches import spatial_shape
from nlfilt.resolve import GUIDES, resolve_options, resolve_stopping

#: The options of :func:`nlfilt.denoise` that choose the filter and its twicing (``sigma``, the device
#: and the dtype are every method's).
OWN_OPTIONS = ("kernel", "patch", "window", "window_shape", "h", "depth", "normalize", "iterations", "stop",
               "max_iterations", "guide", "memory_budget")
#: Those :func:`nlfilt.resolve.resolve_options` resolves (the others are twicing's).
FILTER_OPTIONS = tuple(name for name in inspect.signature(resolve_options).parameters if name in OWN_OPTIONS)


@register_method
class FilterMethod(Method):
    """One non-local filter ``W`` (NLM, arc-cosine or NTK, global or windowed) with twicing."""

    name = "filter"
    summary = "one non-local filter W with twicing, set by the filter options"
    options = {name: inspect.signature(denoise).parameters[name].default for name in OWN_OPTIONS}
    stacks = ("volume",)
    streams = True
    progress_unit = "products with K"

    def check(self, options: Mapping[str, Any], sigma: float | None, axes: int) -> None:
        self.settings((2**30,) * axes + (1,), options, sigma)  # every check but the image's size

    def settings(self, shape: tuple[int, ...], options: Mapping[str, Any],
                 sigma: float | None) -> dict[str, Any]:
        given = {name: options.get(name, default) for name, default in self.options.items()}
        spatial = spatial_shape(shape)
        kind = kernel_class(given["kernel"]) if given["kernel"] in kernel_names() else None
        if kind is not None and given["patch"] is None and kind.patch > min(spatial):
            smallest = min(spatial)
            raise ValueError(f"the image is {'x'.join(map(str, spatial))}, smaller than the default patch "
                             f"{kind.patch} of --kernel {given['kernel']}; pass --patch with an odd value up "
                             f"to {smallest - (1 - smallest % 2)}"
                             + (" or a box Z,H,W such as 1,5,5" if len(spatial) == 3 else ""))
        needs_sigma = kind is not None and (kind.h_per_sigma is not None or given["iterations"] == "auto")
        if sigma is None and needs_sigma and min(spatial[-2:]) < 4:
            raise ValueError(f"the noise level cannot be estimated from a {'x'.join(map(str, spatial[-2:]))} "
                             "image; pass --sigma")
        resolved = resolve_options(shape, sigma=sigma, **{name: given[name] for name in FILTER_OPTIONS})
        stop, max_iterations = resolve_stopping(given["iterations"], given["stop"], given["max_iterations"])
        if given["guide"] is not None and given["guide"] not in GUIDES:
            raise ValueError(f"guide must be None or 'pilot'; got {given['guide']!r}")
        chosen = len(kernel_class(resolved.kernel).normalizations) > 1  # a normalisation to choose
        return dict(given, kernel=resolved.kernel, patch=resolved.patch, window=resolved.window,
                    window_shape=resolved.window_shape, h=resolved.h, depth=resolved.depth,
                    normalize=resolved.normalize if chosen else None, stop=stop,
                    max_iterations=max_iterations)

    @staticmethod
    def filter_arguments(plan: Plan) -> dict[str, Any]:
        """The keyword arguments of the analysis functions (:func:`nlfilt.filter_row`,
        :func:`nlfilt.filter_spectrum`) for the plan's filter: every option but twicing's."""
        return {"sigma": plan.sigma, "device": plan.device, "dtype": plan.dtype,
                **{name: plan[name] for name in FILTER_OPTIONS if name != "iterations"}}

    @staticmethod
    def filter_options(plan: Plan) -> FilterOptions:
        """The plan's filter as :class:`nlfilt.filters.FilterOptions`."""
        options = {name: plan[name] for name in FILTER_OPTIONS if name != "iterations"}
        options["normalize"] = options["normalize"] or kernel_class(plan["kernel"]).normalizations[0]
        return FilterOptions(sigma=plan.sigma, **options)

    def _applications(self, plan: Plan) -> tuple[FilterOptions, int]:
        options = self.filter_options(plan)
        guided = plan["guide"] is not None
        return options, expected_applications(options, plan["iterations"], guided, stop=plan["stop"])

    def seconds(self, shape: tuple[int, ...], plan: Plan) -> float:
        if plan.device != "cpu":
            return 0.0  # no GPU model for the filters: they are not refused there
        options, applications = self._applications(plan)
        return estimate_cpu_seconds(shape, options, applications, iterations=plan["iterations"],
                                    guided=plan["guide"] is not None, stop=plan["stop"])

    def working_bytes(self, shape: tuple[int, ...], plan: Plan) -> int:
        if plan.device != "cpu":
            return 0
        return estimate_working_bytes(shape, self.filter_options(plan), get_backend("cpu").workers,
                                      plan["iterations"], plan["stop"])

    def remedies(self, shape: tuple[int, ...], plan: Plan, problem: str) -> list[str]:
        window, auto = plan["window"], plan["iterations"] == "auto"
        if problem == "memory":
            remedies = []
            if window is None and auto:
                remedies.append("set a fixed --iterations count (auto keeps Lanczos bases of the whole "
                                "image)")
            if window is None or auto:
                remedies.append(f"lower --memory-budget (now {plan['memory_budget'] / 2**20:.0f}M)")
            return remedies
        if window is None and kernel_class(plan["kernel"]).window_denoises:
            return ["use a search window (--window 21)"]
        if window is None:
            return ["crop the image (the global mode's time grows as the square of the pixel count)"]
        if isinstance(window, int) and window > 7:
            return [f"use a smaller search window (--window {max(7, window // 2 | 1)})"]
        return []

    def describe(self, plan: Plan) -> str:
        """The filter in a few words, for messages."""
        mode = "global mode" if plan["window"] is None else f"window {plan['window']}"
        return f"{mode} with kernel {plan['kernel']}"

    def denoise(self, image: Any, plan: Plan, progress: Progress | None) -> tuple[Any, Any]:
        volume = {"channel_axis": -1} if image.ndim == 4 else {}
        return denoise(image, sigma=plan.sigma, device=plan.device, dtype=plan.dtype, progress=progress,
                       return_info=True, **plan.options, **volume)

    def denoise_dask(self, array: Any, plan: Plan) -> Any:
        from nlfilt import dask as nlfilt_dask  # noqa: PLC0415 - optional extra

        return nlfilt_dask.denoise(array, sigma=plan.sigma, device=plan.device, dtype=plan.dtype,
                                   **plan.options)

    def report(self, info: Any, plan: Plan) -> dict[str, Any]:
        if info is None:
            return {"iterations": plan["iterations"], "pilot_iterations": None}
        return {"iterations": info.iterations, "pilot_iterations": info.pilot_iterations}

