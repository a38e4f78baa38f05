"""Filter options shared by the commands, as click decorators, and their conversion to API arguments."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import click
import numpy

from nlfilt.api import (
    DEFAULT_MEMORY_BUDGET,
    GUIDES,
    NORMALIZE_CHOICES,
    prepare,
    resolve_options,
    resolve_stopping,
)
from nlfilt.backend import DEVICES, get_backend, gpu_free_bytes, gpu_status
from nlfilt.collaborative import PATCH as COLLABORATIVE_PATCH
from nlfilt.cost import (
    estimate_collaborative_bytes,
    estimate_collaborative_seconds,
    estimate_cpu_seconds,
    estimate_working_bytes,
    expected_applications,
)
from nlfilt.kernels import KERNELS, kernel_class
from nlfilt.patches import spatial_shape
from nlfilt.stopping import STOP_RULES

#: The options of :func:`nlfilt.api.prepare` (the filter); the others belong to :func:`nlfilt.denoise`.
PREPARE_KEYS = ("kernel", "patch", "window", "window_shape", "h", "sigma", "depth", "device", "normalize",
                "iterations", "memory_budget")


class _WordOrNumber(click.ParamType):
    """A number (``number``), or one of the ``words``, converted to its value."""

    words: dict[str, Any] = {}
    number: type = int
    expected = ""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None or isinstance(value, self.number):
            return value
        if isinstance(value, str) and value in self.words:
            return self.words[value]
        try:
            return self.number(value)
        except ValueError:
            self.fail(f"{value!r} is not {self.expected}", param, ctx)


def _box_sides(text: str) -> tuple[int, ...] | None:
    """'Z,H,W' as three ints (a box of a volume), or None when ``text`` is not three numbers."""
    parts = text.split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


class WindowType(_WordOrNumber):
    """An odd window side, or 'Z,H,W' (a volume's box), or 'global' for all pixel pairs (None), or
    'auto'."""

    name = "N|Z,H,W|global|auto"
    words = {"global": None, "auto": "auto"}
    expected = "an odd integer >= 1, three of them as Z,H,W (a volume), 'global' or 'auto'"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        box = _box_sides(value) if isinstance(value, str) else None
        sides = box if box is not None else (super().convert(value, param, ctx),)
        if any(isinstance(side, int) and (side < 1 or side % 2 == 0) for side in sides):
            self.fail(f"{value!r} is not {self.expected}", param, ctx)
        return box if box is not None else sides[0]


class PatchType(click.ParamType):
    """An odd patch side, or 'Z,H,W' (a volume's box)."""

    name = "N|Z,H,W"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None or isinstance(value, int | tuple):
            return value
        box = _box_sides(value)
        if box is not None:
            return box
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is not an odd integer or three of them as Z,H,W (a volume)", param, ctx)


class MemoryType(click.ParamType):
    """A size in bytes: a number with a unit K, M, G or T (powers of 1024), MiB when it has none."""

    name = "SIZE"
    _UNITS = {"": 2**20, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().removesuffix("b").removesuffix("i")
        unit = text[-1] if text and text[-1] in self._UNITS else ""
        try:
            size = float(text[: len(text) - len(unit)]) * self._UNITS[unit]
        except ValueError:
            size = 0.0
        if not (math.isfinite(size) and size >= 2**20):
            self.fail(f"{value!r} is not a size of at least 1M (e.g. 512M, 2G; a plain number is MiB)",
                      param, ctx)
        return int(size)


class SigmaType(_WordOrNumber):
    """A noise level >= 0 in the file's pixel units, or 'auto' (estimated per image: None)."""

    name = "SIGMA|auto"
    words = {"auto": None}
    number = float
    expected = "a number or 'auto'"


class IterationsType(_WordOrNumber):
    """A number of twicing steps, or 'auto' (chosen per image by the --stop rule)."""

    name = "N|auto"
    words = {"auto": "auto"}
    expected = "an integer or 'auto'"


#: ``--method``: the collaborative Wiener filter (:func:`nlfilt.denoise_collaborative`), or one filter
#: ``W`` with twicing (:func:`nlfilt.denoise`), which the other filter options configure.
METHODS = ("collaborative", "filter")

#: The options that configure ``--method filter`` only, with their defaults.
FILTER_ONLY = {"kernel": "nlm", "patch": None, "window": "auto", "window_shape": "box", "h": None, "depth": 1,
               "normalize": None,
               "iterations": 1, "stop": None, "max_iterations": None, "guide": None,
               "memory_budget": DEFAULT_MEMORY_BUDGET}


def method_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--method`` (``nlfilt denoise``): the collaborative filter, or a filter ``W`` with twicing."""
    return click.option(
        "--method", type=click.Choice(METHODS), default="collaborative", show_default=True,
        help="collaborative: two-stage Wiener filter of grouped patches (the best quality; takes --sigma and "
             "--device); filter: one non-local filter W with twicing, set by the options below.")(function)


def filter_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that choose the filter (they mirror :func:`nlfilt.denoise`)."""
    decorators = [
        click.option("--kernel", type=click.Choice(KERNELS), default="nlm", show_default=True,
                     help="Patch affinity: non-local means, arc-cosine (one-layer CNN) or full NTK."),
        click.option("--patch", type=PatchType(), default=None,
                     help="Odd patch side, or Z,H,W for --stack volume (e.g. 1,7,7). "
                          "[default: 5 for nlm, 3 for arccos and ntk]"),
        click.option("--window", type=WindowType(), default="auto",
                     help="Odd search-window side, or 'global' for all pixel pairs. "
                          "[default: 11 for nlm, global for arccos and ntk]"),
        click.option("--window-shape", type=click.Choice(["box", "tent"]), default="box", show_default=True,
                     help="Search-window weights: box, or tent (1 - |offset| / (r + 1) per axis), which "
                          "keeps the windowed arccos and ntk filters positive semidefinite."),
        click.option("--h", "h", type=float, default=None,
                     help="NLM bandwidth in pixel units. [default: 0.8 * sigma]"),
        click.option("--sigma", type=SigmaType(), default="auto", show_default=True,
                     help="Noise level in the file's pixel units (NLM's distance offset, --iterations auto), "
                          "or 'auto' to estimate it per image."),
        click.option("--depth", type=int, default=1, show_default=True,
                     help="ReLU layers of the network whose tangent kernel 'ntk' is."),
        click.option("--normalize", type=click.Choice(NORMALIZE_CHOICES), default=None,
                     help="How NLM turns K into W: row sums, or the symmetric doubly stochastic Sinkhorn "
                          "scaling. [default: rows]"),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                     help="Compute on the CPU, a CUDA GPU, or the GPU when one is usable."),
        click.option("--memory-budget", type=MemoryType(), default=DEFAULT_MEMORY_BUDGET,
                     help="Memory the global mode's tiles (and the windowed mode's kept weights) may use, "
                          "e.g. 512M or 2G. [default: 256M]"),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def stopping_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the twicing options of ``denoise`` (they mirror :func:`nlfilt.denoise`)."""
    decorators = [
        click.option("--iterations", type=IterationsType(), default=1, show_default=True,
                     help="Twicing steps (1 is the one-shot filter), or 'auto' to choose them per image."),
        click.option("--stop", type=click.Choice(STOP_RULES), default=None,
                     help="Rule of --iterations auto: Stein's unbiased risk estimate, or the first step "
                          "whose mean squared residual is at most sigma^2. [default: sure]"),
        click.option("--max-iterations", type=int, default=None,
                     help="Most steps --iterations auto may choose. [default: 1000]"),
        click.option("--guide", type=click.Choice(("none",) + GUIDES), default="none", show_default=True,
                     help="'pilot': compute the affinities from a first denoised pass (two passes)."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def api_options(params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`nlfilt.denoise` (or filter_row) for the command-line options."""
    options = dict(params)
    if options.get("guide") == "none":
        options["guide"] = None
    return options


def check_options(options: dict[str, Any]) -> None:
    """Validate the options once, before any file is read; raise click.UsageError naming the problem.

    Image-dependent limits (a patch larger than an image) are checked per file.
    """
    if options.get("method") == "collaborative":
        changed = [name for name, default in FILTER_ONLY.items() if options.get(name, default) != default]
        if changed:
            flags = ", ".join("--" + name.replace("_", "-") for name in changed)
            verb, pronoun = ("configures", "it") if len(changed) == 1 else ("configure", "them")
            raise click.UsageError(f"{flags} {verb} --method filter; add --method filter to use {pronoun} "
                                   "(the default method, collaborative, takes only --sigma and --device)")
    if options.get("stack") == "volume" and options.get("method") == "collaborative":
        raise click.UsageError("--stack volume needs --method filter (the collaborative filter works on 2-D "
                               "images)")
    if options.get("stack") != "volume":
        for name in ("patch", "window"):
            if isinstance(options.get(name), tuple) and len(options[name]) == 3:
                remedy = ("add --stack volume, or give one side for 2-D images" if "stack" in options
                          else "this command takes 2-D images: give one side")
                sides = ",".join(map(str, options[name]))
                raise click.UsageError(f"--{name} {sides}: three sides (Z,H,W) are for a stack filtered as "
                                       f"one volume; {remedy}")
    shape = (2**30,) * 3 + (1,) if options.get("stack") == "volume" else (2**30, 2**30)
    try:
        resolve_options(shape, **_filter_options(options))
        resolve_stopping(options.get("iterations", 1), options.get("stop"), options.get("max_iterations"))
    except ValueError as exc:
        raise click.UsageError(f"invalid option: {exc}") from None


def _filter_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options of :func:`nlfilt.api.resolve_options`: those of prepare but the device."""
    chosen = _prepare_options(options)
    chosen.pop("device", None)
    return chosen


def _prepare_options(options: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in options.items() if key in PREPARE_KEYS}


def describe_seconds(seconds: float) -> str:
    """'about 40 seconds', 'about 12 minutes', 'about 3.5 hours'."""
    if seconds < 60:
        return f"about {max(1, round(seconds))} seconds"
    if seconds < 3600:
        return f"about {round(seconds / 60)} minutes"
    return f"about {seconds / 3600:.1f} hours"


def check_cost(shape: tuple[int, ...], resolved: Any, applications: int, device: str,
               max_minutes: float, iterations: int | str = 1, guided: bool = False,
               streamed: bool = False) -> None:
    """Raise ValueError with the estimate and working remedies when a CPU run would take too long
    (over ``max_minutes``; 0 disables) or need over half of the machine's memory.

    ``applications`` counts products with ``K``; ``iterations`` ('auto' or a
    count) and ``guided`` say how they split between filters, normalisation
    and twicing steps, and what automatic stopping holds in memory.  The
    suggestions are only ones that help: a search window only for NLM (the
    windowed tangent filters are indefinite), the GPU only when one is usable.
    """
    if device != "cpu":
        return
    gpu_usable = gpu_status()[0]
    global_mode = resolved.window is None
    memory = physical_memory()
    needed = estimate_working_bytes(shape, resolved, get_backend("cpu").workers, iterations)
    if memory and needed > memory // 2 and not streamed:  # a streamed image holds a band at a time
        remedies = []
        if global_mode and iterations == "auto":
            remedies.append("set a fixed --iterations count (auto keeps Lanczos bases of the whole image)")
        if global_mode or iterations == "auto":
            remedies.append(f"lower --memory-budget (now {resolved.memory_budget / 2**20:.0f}M)")
        if gpu_usable:
            remedies.append("use --device gpu")
        remedies.append("crop the image or split it into tiles")
        raise ValueError(
            f"{_extent(shape)} would need about {needed / 2**30:.1f} GiB of working memory, over half "
            f"of this machine's {memory / 2**30:.0f} GiB; {_either(remedies)}"
        )
    if max_minutes <= 0:
        return
    seconds = estimate_cpu_seconds(shape, resolved, applications, iterations=iterations, guided=guided)
    if seconds > 60 * max_minutes:
        remedies = []
        if global_mode and kernel_class(resolved.kernel).window_denoises:
            remedies.append("use a search window (--window 21)")
        elif global_mode:
            remedies.append("crop the image (the global mode's time grows as the square of the pixel count)")
        elif isinstance(resolved.window, int) and resolved.window > 7:
            remedies.append(f"use a smaller search window (--window {max(7, resolved.window // 2 | 1)})")
        if gpu_usable:
            remedies.append("use --device gpu")
        remedies.append("raise --max-minutes")
        mode = "global mode" if global_mode else f"window {resolved.window}"
        raise ValueError(
            f"{_extent(shape)} in {mode} with kernel {resolved.kernel} would take "
            f"{describe_seconds(seconds)} on this CPU (over --max-minutes {max_minutes:g}); "
            f"{_either(remedies)}"
        )


def _extent(shape: tuple[int, ...]) -> str:
    """'HxW', or 'ZxHxW' for a volume's (Z, H, W, C) shape."""
    return "x".join(map(str, spatial_shape(shape)))


def _either(remedies: list[str]) -> str:
    return remedies[0] if len(remedies) == 1 else ", ".join(remedies[:-1]) + " or " + remedies[-1]


def physical_memory() -> int:
    """Bytes of physical memory, or 0 where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 0


def check_image_cost(shape: tuple[int, ...], options: dict[str, Any], max_minutes: float,
                     steps: int | str | None = None, streamed: bool = False) -> None:
    """Refuse an image of ``shape`` (its filtered channels) before it is decoded (ValueError).

    Checks the options against the image size (a default patch larger than
    the image is named with the option to set) and the time and memory
    estimates of ``steps`` twicing steps (default: the options' iterations;
    0 for one row of ``W``), counting the products with ``K`` that
    normalisation and guiding add.
    """
    spatial = spatial_shape(shape)
    height, width = spatial[-2:]
    if options.get("method") == "collaborative":
        _check_collaborative_cost(shape, options, max_minutes, streamed)
        return
    kernel = options["kernel"]
    default_patch = kernel_class(kernel).patch
    smallest = min(spatial)
    if options["patch"] is None and default_patch > smallest:
        largest = smallest - (1 - smallest % 2)
        raise ValueError(f"the image is {_extent(shape)}, smaller than the default patch {default_patch} of "
                         f"--kernel {kernel}; pass --patch with an odd value up to {largest}"
                         + (" or a box Z,H,W such as 1,5,5" if len(spatial) == 3 else ""))
    needs_sigma = kernel_class(kernel).h_per_sigma is not None or options.get("iterations") == "auto"
    if options["sigma"] is None and min(height, width) < 4 and needs_sigma:
        raise ValueError(f"the noise level cannot be estimated from a {height}x{width} image; pass --sigma")
    resolved = resolve_options(shape, **_filter_options(options))
    steps = options.get("iterations", 1) if steps is None else steps
    guided = options.get("guide") is not None
    applications = expected_applications(resolved, steps, guided)
    device = get_backend(options["device"]).name
    check_cost(tuple(shape), resolved, applications, device, max_minutes, steps, guided, streamed)


def _check_collaborative_cost(shape: tuple[int, ...], options: dict[str, Any], max_minutes: float,
                              streamed: bool) -> None:
    """Refuse the collaborative filter on an image of ``shape`` that is smaller than its patches, that
    would need more memory than the device has to spare (a streamed image holds a band at a time), or
    that would take over ``max_minutes`` (0: no limit), with the remedies that help."""
    height, width = shape[:2]
    if min(height, width) < COLLABORATIVE_PATCH:
        raise ValueError(f"the image is {height}x{width}, smaller than the {COLLABORATIVE_PATCH}x"
                         f"{COLLABORATIVE_PATCH} patches of --method collaborative; use --method filter with "
                         "a smaller --patch")
    device = get_backend(options["device"]).name
    gpu_usable = device == "gpu" or gpu_status()[0]
    needed = estimate_collaborative_bytes(shape, device)
    tiles = "crop the image or split it into tiles (a TIFF: --chunk 4096)"
    if device == "gpu" and not streamed:
        free = gpu_free_bytes()
        if free is not None and needed > free:
            raise ValueError(f"{height}x{width} with --method collaborative would need about "
                             f"{needed / 2**30:.1f} GiB of GPU memory, over the {free / 2**30:.1f} GiB "
                             f"free on the GPU; use --device cpu or {tiles}")
    memory = physical_memory()
    if device == "cpu" and not streamed and memory and needed > memory // 2:
        remedies = (["use --device gpu"] if gpu_usable else []) + [tiles]
        raise ValueError(f"{height}x{width} with --method collaborative would need about "
                         f"{needed / 2**30:.1f} GiB of working memory, over half of this machine's "
                         f"{memory / 2**30:.0f} GiB; {_either(remedies)}")
    if max_minutes <= 0:
        return
    seconds = estimate_collaborative_seconds(shape, device)
    if seconds > 60 * max_minutes:
        where = "on the GPU (an estimate from the arithmetic, not yet measured)" if device == "gpu" else \
            "on this CPU"
        remedies = (["use --device gpu"] if device == "cpu" and gpu_usable else []) + ["raise --max-minutes"]
        raise ValueError(f"{height}x{width} with --method collaborative would take "
                         f"{describe_seconds(seconds)} {where} (over --max-minutes {max_minutes:g}); "
                         f"{_either(remedies)}")


def resolve_for_image(colour: Any, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Resolve one image's defaults (sigma estimated once).

    Returns the resolved options and the keyword arguments for the API call,
    with the estimated sigma (and NLM's h) filled in so they are not
    estimated twice.
    """
    volume = {"channel_axis": -1} if colour.ndim == 4 else {}  # (Z, H, W, C)
    _, _, resolved = prepare(colour, dtype=numpy.float32, **_prepare_options(options), **volume)
    if resolved.sigma is not None:
        options = dict(options, sigma=resolved.sigma)
    if resolved.h is not None:
        options = dict(options, h=resolved.h)
    return resolved, options
