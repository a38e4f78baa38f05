"""Filter options shared by the commands, as click decorators, and their conversion to API arguments."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click
import numpy

from nlfilt.api import DEFAULT_MEMORY_BUDGET, GUIDES, NORMALIZE_CHOICES, prepare, resolve_stopping
from nlfilt.backend import DEVICES, get_backend
from nlfilt.filters import estimate_cpu_seconds, estimate_working_bytes, expected_applications
from nlfilt.kernels import KERNELS
from nlfilt.stopping import STOP_RULES

#: The options of :func:`nlfilt.api.prepare` (the filter); the others belong to :func:`nlfilt.denoise`.
PREPARE_KEYS = ("kernel", "patch", "window", "h", "sigma", "depth", "device", "normalize", "iterations")


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


class WindowType(_WordOrNumber):
    """An odd window side, or 'global' for all pixel pairs (None), or 'auto'."""

    name = "N|global|auto"
    words = {"global": None, "auto": "auto"}
    expected = "an odd integer, 'global' or 'auto'"


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


def filter_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that choose the filter (they mirror :func:`nlfilt.denoise`)."""
    decorators = [
        click.option("--kernel", type=click.Choice(KERNELS), default="nlm", show_default=True,
                     help="Patch affinity: non-local means, arc-cosine (one-layer CNN) or full NTK."),
        click.option("--patch", type=int, default=None,
                     help="Odd patch side. [default: 5 for nlm, 3 for arccos and ntk]"),
        click.option("--window", type=WindowType(), default="auto",
                     help="Odd search-window side, or 'global' for all pixel pairs. "
                          "[default: 11 for nlm, global for arccos and ntk]"),
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
    probe = numpy.zeros((64, 64), dtype=numpy.float32)
    probe_options = dict(_prepare_options(options), patch=None, device="cpu")
    if options["kernel"] == "nlm" or options.get("iterations") == "auto":
        probe_options["sigma"] = options["sigma"] if options["sigma"] is not None else 1.0  # no estimate
    try:
        if options["patch"] is not None and (options["patch"] < 1 or options["patch"] % 2 == 0):
            raise ValueError(f"patch must be an odd integer >= 1; got {options['patch']}")
        prepare(probe, dtype=numpy.float32, memory_budget=2**20, **probe_options)
        resolve_stopping(options.get("iterations", 1), options.get("stop"), options.get("max_iterations"))
    except ValueError as exc:
        raise click.UsageError(f"invalid option: {exc}") from None


def _prepare_options(options: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in options.items() if key in PREPARE_KEYS}


def check_cost(shape: tuple[int, ...], resolved: Any, applications: int, device: str,
               max_minutes: float, iterations: int | str = 1) -> None:
    """Raise ValueError with the estimate and a suggestion when a CPU run would take too long
    (over ``max_minutes``; 0 disables) or need over half of the machine's memory.

    ``applications`` counts products with ``K``; ``iterations`` ('auto' or a
    count) adds what automatic stopping holds to the memory estimate.
    """
    if device != "cpu":
        return
    memory = physical_memory()
    needed = estimate_working_bytes(shape, resolved, get_backend("cpu").workers, iterations)
    if memory and needed > memory // 2:
        raise ValueError(
            f"{shape[0]}x{shape[1]} would need about {needed / 2**30:.1f} GiB of working memory, over half "
            f"of this machine's {memory / 2**30:.0f} GiB; split the image into tiles or use --device gpu"
        )
    if max_minutes <= 0:
        return
    seconds = estimate_cpu_seconds(shape, resolved, applications)
    if seconds > 60 * max_minutes:
        mode = "global mode" if resolved.window is None else f"window {resolved.window}"
        raise ValueError(
            f"{shape[0]}x{shape[1]} in {mode} with kernel {resolved.kernel} would take about "
            f"{seconds / 60:.0f} minutes on this CPU (over --max-minutes {max_minutes:g}); use a search "
            "window (--window 21), --device gpu, or raise --max-minutes"
        )


def physical_memory() -> int:
    """Bytes of physical memory, or 0 where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 0


def resolve_for_image(colour: Any, options: dict[str, Any], max_minutes: float,
                      steps: int | str | None = None) -> tuple[Any, dict[str, Any]]:
    """Resolve one image's defaults and refuse a too costly run (ValueError).

    Returns the resolved options and the keyword arguments for the API call,
    with the estimated sigma (and NLM's h) filled in so they are not
    estimated twice.  The cost is that of ``steps`` twicing steps (default:
    the options' iterations; 0 for one row of ``W``), with the products with
    ``K`` that normalisation and guiding add.
    """
    backend, _, resolved = prepare(colour, dtype=numpy.float32, memory_budget=DEFAULT_MEMORY_BUDGET,
                                   **_prepare_options(options))
    steps = options.get("iterations", 1) if steps is None else steps
    applications = expected_applications(resolved, steps, options.get("guide") is not None)
    check_cost(colour.shape, resolved, applications, backend.name, max_minutes, steps)
    if resolved.sigma is not None:
        options = dict(options, sigma=resolved.sigma)
    if resolved.kernel == "nlm":
        options = dict(options, h=resolved.h)
    return resolved, options
