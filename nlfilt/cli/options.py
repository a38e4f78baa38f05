"""The options shared by the commands, as click decorators; :class:`RunOptions`, the validated options of
one run, which give each image its :class:`nlfilt.methods.Plan`; and the checks of an image's time and
memory against the plan, before it is decoded."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
import numpy

from nlfilt.arguments import check_real
from nlfilt.backend import DEVICES, gpu_free_bytes, gpu_status
from nlfilt.kernels import KERNELS
from nlfilt.methods import Plan, make_plan, method, method_names
from nlfilt.patches import spatial_shape
from nlfilt.resolve import (
    DEFAULT_MEMORY_BUDGET,
    GUIDES,
    NORMALIZE_CHOICES,
)
from nlfilt.stopping import stop_rule, stop_rule_names


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


class RegistryChoice(click.ParamType):
    """One of the names a registry holds when the command runs (a method or a stopping rule registered
    after the command line was imported is a choice too)."""

    def __init__(self, names: Callable[[], tuple[str, ...]]) -> None:
        self.names = names

    @property
    def name(self) -> str:
        return "|".join(self.names())

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        return f"[{self.name}]"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None or value in self.names():
            return value
        self.fail(f"{value!r} is not one of {', '.join(map(repr, self.names()))}", param, ctx)


def method_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--method`` (``nlfilt denoise``): its choices from the registered methods, its help from
    their summaries."""
    described = "; ".join(f"{name}: {method(name).summary}" for name in method_names())
    return click.option("--method", type=RegistryChoice(method_names), default=None,
                        help=f"{described}. [default: {method_names()[0]}; without --method, an option of "
                             f"another method (--kernel, --window, --iterations, ...) or --stack volume "
                             f"selects that method]")(function)


def filter_options(function: Callable[..., Any] | None = None, *,
                   volumes: bool = True) -> Callable[..., Any]:
    """Add the options that choose the filter (they mirror :func:`nlfilt.denoise`).

    Used bare (``@filter_options``) for a command that filters volumes too (``--stack volume``); as
    ``@filter_options(volumes=False)`` for one that takes 2-D images only, whose help then offers no
    Z,H,W sides.
    """
    if function is None:
        return lambda command: filter_options(command, volumes=volumes)
    sides = ("Odd patch side, or Z,H,W for --stack volume (e.g. 1,7,7). " if volumes else "Odd patch side. ")
    decorators = [
        click.option("--kernel", type=click.Choice(KERNELS), default="nlm", show_default=True,
                     help="Patch affinity: non-local means, arc-cosine (one-layer CNN) or full NTK."),
        click.option("--patch", type=PatchType(), default=None, metavar=None if volumes else "N",
                     help=sides + "[default: 5 for nlm, 3 for arccos and ntk]"),
        click.option("--window", type=WindowType(), default="auto",
                     metavar=None if volumes else "N|global|auto",
                     help="Odd search-window side, 'global' for all pixel pairs, or 'auto': 11 for nlm, "
                          "global for arccos and ntk.  [default: auto]"),
        click.option("--window-shape", type=click.Choice(["box", "tent"]), default="box", show_default=True,
                     help="Search-window weights: box, or tent (1 - |offset| / (r + 1) per axis), which "
                          "keeps the windowed arccos and ntk filters positive semidefinite."),
        click.option("--h", "h", type=float, default=None,
                     help="NLM bandwidth in pixel units. [default: 0.8 * sigma]"),
        click.option("--sigma", type=SigmaType(), default="auto", show_default=True,
                     help="Noise level in the file's pixel units (every method; the filter's NLM distance "
                          "offset and --iterations auto), or 'auto' to estimate it per image."),
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
        click.option("--stop", type=RegistryChoice(stop_rule_names), default=None,
                     help="Rule of --iterations auto: "
                          + "; ".join(f"{name}: {stop_rule(name).summary}" for name in stop_rule_names())
                          + f". [default: {stop_rule_names()[0]}]"),
        click.option("--max-iterations", type=int, default=None,
                     help="Most steps --iterations auto may choose. [default: 1000]"),
        click.option("--guide", type=click.Choice(("none",) + GUIDES), default="none", show_default=True,
                     help="'pilot': compute the affinities from a first denoised pass (two passes)."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


@dataclass(frozen=True)
class RunOptions:
    """The options of one run of a command, validated once before any file: the method and its own
    options, and those every method takes.  Immutable and picklable: a dask worker gets it as it is.

    Attributes
    ----------
    method : str
        The method's name.
    own : tuple of (str, value)
        The method's own options as given (defaults included).
    sigma : float or None
        The noise level given, or None to estimate it per image.
    device : str
        As asked: 'auto', 'cpu' or 'gpu'.
    stack : str or None
        How a multi-page TIFF or a video is filtered: 'frames', 'series', 'volume', or 'auto'
        (:meth:`stack_mode`: a series where the frames are known to be in order); None: the command
        takes 2-D images.
    chunk : int
        Side of the chunks a TIFF is read in (0: only very large ones).
    lossless : bool
        Encode video outputs losslessly whatever the input.
    """

    method: str
    own: tuple[tuple[str, Any], ...]
    sigma: float | None
    device: str
    stack: str | None = None
    chunk: int = 0
    lossless: bool = False

    @classmethod
    def from_params(cls, params: dict[str, Any], *, method_name: str | None = None, stack: str | None = None,
                    chunk: int = 0, lossless: bool = False) -> RunOptions:
        """The run's options from a command's parameters (``method_name``: the method when the command
        has no ``--method``); click.UsageError for options of another method, or that do not fit."""
        params = dict(params, guide=None if params.get("guide") == "none" else params.get("guide"))
        name = params.get("method") or method_name or _implied_method(params, stack)
        chosen = method(name)
        own = tuple((option, params.get(option, default)) for option, default in chosen.options.items())
        changed = [option for option in _changed_options(params) if option not in chosen.options]
        if changed:
            flags = ", ".join("--" + option.replace("_", "-") for option in changed)
            verb, pronoun = ("configures", "it") if len(changed) == 1 else ("configure", "them")
            owner = next(other.name for other in map(method, method_names()) if changed[0] in other.options)
            raise click.UsageError(f"{flags} {verb} --method {owner}, not --method {name}: leave {pronoun} "
                                   f"out, or use --method {owner}")
        device = params.get("device", "auto")
        if not chosen.gpu:
            if device == "gpu":
                raise click.UsageError(f"--method {name} runs on the CPU only: leave out --device gpu")
            device = "cpu"
        run = cls(method=name, own=own, sigma=params.get("sigma"), device=device, stack=stack, chunk=chunk,
                  lossless=lossless)
        run.check()
        return run

    def check(self) -> None:
        """click.UsageError for options that do not fit together or are invalid (image sizes aside)."""
        chosen = method(self.method)
        volume = self.stack == "volume"
        if self.stack not in FRAME_BY_FRAME and self.stack not in chosen.stacks:
            owners = " or ".join(f"--method {other.name}" for other in map(method, method_names())
                                 if self.stack in other.stacks)
            raise click.UsageError(f"--stack {self.stack} needs {owners}; --method {self.method} filters a "
                                   f"stack {' or '.join(chosen.stacks) or 'frame by frame'}")
        own = dict(self.own)
        if not volume:
            for name in ("patch", "window"):
                if isinstance(own.get(name), tuple) and len(own[name]) == 3:
                    remedy = ("add --stack volume, or give one side for 2-D images" if self.stack
                              else "this command takes 2-D images: give one side")
                    sides = ",".join(map(str, own[name]))
                    raise click.UsageError(f"--{name} {sides}: three sides (Z,H,W) are for a stack filtered "
                                           f"as one volume; {remedy}")
        try:
            if self.sigma is not None:
                check_real("sigma", self.sigma, ">= 0", lambda value: value >= 0)
            chosen.check(own, self.sigma, 3 if volume else 2)
        except ValueError as exc:
            raise click.UsageError(f"invalid option: {exc}") from None

    def stack_mode(self, ordered: bool) -> str:
        """How a stack is filtered: ``--stack`` as given, or for 'auto' 'series' when its frames are known
        to be in order (``ordered``: a video, a TIFF whose one frame axis is time or depth) and the method
        filters series, else 'frames'."""
        if self.stack not in (None, "auto"):
            return self.stack
        return "series" if ordered and "series" in method(self.method).stacks else "frames"

    def plan(self, shape: tuple[int, ...], dtype: Any, device: str, stack: str | None = None,
             spacing: tuple[float, float, float] | None = None) -> Plan:
        """The plan of an image of ``shape`` (H, W, C) or (Z, H, W, C) (a stack filtered as one array in
        mode ``stack``, a volume of voxel ``spacing``) and pixel ``dtype`` on ``device`` ('cpu' or
        'gpu'): float64 work for pixels of more than 32 bits (ValueError when an option does not fit the
        image)."""
        work = numpy.float64 if numpy.dtype(dtype).itemsize > 4 else numpy.float32
        return make_plan(self.method, dict(self.own), shape, device=device, dtype=work, sigma=self.sigma,
                         stack=stack, spacing=spacing)

    def described(self) -> dict[str, Any]:
        """The options for a report: the method, its own options, sigma and the device."""
        return {"method": self.method, **dict(self.own), "sigma": self.sigma, "device": self.device,
                "stack": self.stack}


#: The ``--stack`` values that need nothing of a method (frame by frame; 'auto' for a TIFF stack).
FRAME_BY_FRAME = (None, "frames", "auto")


def _changed_options(params: dict[str, Any]) -> list[str]:
    """The methods' own options that ``params`` gives a value other than their default, in registry
    order."""
    changed = []
    for chosen in map(method, method_names()):
        changed += [option for option, default in chosen.options.items()
                    if params.get(option, default) != default and option not in changed]
    return changed


def _implied_method(params: dict[str, Any], stack: str | None) -> str:
    """The method a run without ``--method`` gets: the first registered method (the default) that owns
    every option given a value of its own and filters a stack in ``stack`` mode ('volume', 'series');
    click.UsageError when none does."""
    changed = _changed_options(params)
    for chosen in map(method, method_names()):
        if set(changed) <= set(chosen.options) and (stack in FRAME_BY_FRAME or stack in chosen.stacks):
            return chosen.name
    flags = ", ".join("--" + option.replace("_", "-") for option in changed)
    raise click.UsageError(f"no method takes all of {flags}" + (f" with --stack {stack}" if stack not in (
        FRAME_BY_FRAME) else "") + ": choose one with --method")


def check_device(device: str) -> None:
    """click.UsageError naming ``--device gpu`` and the reason when ``device`` is 'gpu' and no GPU is
    usable (then :func:`nlfilt.backend.get_backend` gives the backend of any ``--device``)."""
    if device == "gpu":
        usable, reason = gpu_status()
        if not usable:
            raise click.UsageError(f"--device gpu: no GPU is usable: {reason}; use --device cpu, or --device "
                                   "auto to use a GPU only when one is usable")


def describe_seconds(seconds: float) -> str:
    """'under a second', 'about 40 seconds', 'about 1 minute', 'about 12 minutes', 'about 3.5 hours'
    (seconds below a minute as seconds, never 'about 0 minutes')."""
    if seconds < 1:
        return "under a second"
    if seconds < 60:
        count, unit = round(seconds), "second"
    elif seconds < 3600:
        count, unit = round(seconds / 60), "minute"
    else:
        return f"about {seconds / 3600:.1f} hours"
    return f"about {count} {unit}" + ("" if count == 1 else "s")


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


def check_plan(shape: tuple[int, ...], plan: Plan, max_minutes: float, streamed: bool = False,
               frames: float = 1, held: float | None = None, subject: str | None = None,
               smaller: str | None = None) -> None:
    """Refuse an image of ``shape`` (its filtered channels; (Z, H, W, C) for a volume) before it is
    decoded (ValueError): over half the machine's memory on the CPU, over the free memory on a GPU (a
    streamed image holds a band at a time), or over ``max_minutes`` (0: no limit), with the remedies that
    help (the method's own, the GPU where one is usable, tiles, a larger limit).

    ``frames`` > 1: a stack filtered frame by frame, ``shape`` one frame's: the time is that of all its
    frames, and the memory counts the ``held`` frames (default: all) held in the work's dtype three times
    (the input, the filtered frames, the result) besides one frame's working memory.  A video streams:
    ``shape`` is what one filter call holds (a frame, or a series' window), ``frames`` how many such
    calls its length makes, ``held`` 0, ``subject`` names it in messages and ``smaller`` says how to make
    one call smaller.
    """
    chosen = method(plan.method)
    gpu_usable = plan.device == "gpu" or gpu_status()[0]
    what = f"{_extent(shape)} with {chosen.describe(plan)}"
    if subject is not None:
        what = f"{subject} with {chosen.describe(plan)}"
    elif frames > 1:
        what = f"a stack of {frames} frames of {what}"
    needed = chosen.working_bytes(shape, plan)
    held = 3 * (frames if held is None else held) * math.prod(shape) * numpy.dtype(plan.dtype).itemsize \
        if frames > 1 else 0
    tiles = "crop the image or split it into tiles" + (" (a TIFF: --chunk 4096)" if chosen.streams else "")
    if frames > 1:
        tiles = "split the stack into smaller files or crop its frames"
    if smaller is not None:
        tiles = smaller
    if plan.device == "gpu" and not streamed:
        free = gpu_free_bytes()
        if free is not None and needed > free:
            raise ValueError(f"{what} would need about {needed / 2**30:.1f} GiB of GPU memory, over the "
                             f"{free / 2**30:.1f} GiB free on the GPU; use --device cpu or {tiles}")
    memory = physical_memory()
    host = (needed if plan.device == "cpu" else 0) + held
    if not streamed and memory and host > memory // 2:
        remedies = chosen.remedies(shape, plan, "memory") if plan.device == "cpu" else []
        remedies += ["use --device gpu"] if gpu_usable and plan.device == "cpu" and not held else []
        raise ValueError(f"{what} would need about {host / 2**30:.1f} GiB of working memory, over half of "
                         f"this machine's {memory / 2**30:.0f} GiB; {_either([*remedies, tiles])}")
    if max_minutes <= 0:
        return
    seconds = chosen.seconds(shape, plan) * frames
    if seconds > 60 * max_minutes:
        where = "on the GPU (an estimate from the arithmetic, not yet measured)" if plan.device == "gpu" \
            else "on this CPU"
        remedies = chosen.remedies(shape, plan, "time")
        if plan.device == "cpu" and gpu_usable:
            remedies.append("use --device gpu")
        raise ValueError(f"{what} would take {describe_seconds(seconds)} {where} (over --max-minutes "
                         f"{max_minutes:g}); {_either([*remedies, 'raise --max-minutes'])}")
