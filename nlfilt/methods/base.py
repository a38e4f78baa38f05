"""What every denoising method is: its declaration (options, what it supports, its cost) and the plan of
one image.

A method is a :class:`Method` subclass registered by name
(:func:`register_method`); the command line builds ``--method``'s choices and
its refusals of options a method does not take from the registry, checks each
file's time and memory through the method's model, and every path (one
process, a streamed TIFF, a dask cluster, :mod:`nlfilt.dask`) denoises
through :meth:`Method.denoise` or :meth:`Method.denoise_dask` with one
:class:`Plan`, built once per image by :func:`make_plan`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy

#: ``progress(done, total)``, in the unit of :attr:`Method.progress_unit`.
Progress = Callable[[float, int], None]


@dataclass(frozen=True)
class Plan:
    """How one image is denoised, resolved once from the options and the image's header.

    Immutable and picklable (a dask worker receives it as it is).

    Attributes
    ----------
    method : str
        The method's name.
    settings : tuple of (str, value)
        The method's own options, resolved for the image (defaults filled in
        from its shape: a patch, a window), in the method's order.
    device : str
        'cpu' or 'gpu'.
    dtype : str
        The working dtype ('float32', or 'float64' for pixels of more than 32 bits).
    sigma : float or None
        The noise level; None until estimated from the pixels.
    stack : str or None
        How a stack (Z, H, W, C) is filtered as one array: 'series' or 'volume' (one of the method's
        :attr:`Method.stacks`); None for an image.
    spacing : tuple of 3 floats or None
        A volume's voxel spacing (Z, Y, X) where its file gives it.
    """

    method: str
    settings: tuple[tuple[str, Any], ...]
    device: str
    dtype: str
    sigma: float | None = None
    stack: str | None = None
    spacing: tuple[float, float, float] | None = None

    def __getitem__(self, name: str) -> Any:
        return dict(self.settings)[name]

    @property
    def options(self) -> dict[str, Any]:
        """The settings as keyword arguments (a new dict)."""
        return dict(self.settings)

    def with_settings(self, **changes: Any) -> Plan:
        """The plan with some settings changed."""
        return replace(self, settings=tuple(dict(self.settings, **changes).items()))


class Method:
    """A denoising method: a subclass sets the class attributes and implements the methods.

    Attributes
    ----------
    name : str
        Its name (``--method NAME``).
    summary : str
        One line for help texts.
    options : dict
        Its own options (the API's keyword names) and their defaults; the
        options every method takes (sigma, the device) are not among them.
    stacks : tuple of str
        The ``--stack`` modes in which it filters a stack (Z, H, W, C) as one
        array: 'volume' (a 3-D image), 'series' (frames in order); a stack
        in no mode of it is filtered frame by frame.
    streams : bool
        Whether it filters a large image chunk by chunk with a halo
        (:meth:`denoise_dask`), as streamed TIFFs need.
    gpu : bool
        Whether it runs on a GPU (CuPy arrays); without, ``--device auto``
        means the CPU and ``--device gpu`` is refused.
    progress_unit : str
        What its progress counts.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[dict[str, Any]]
    stacks: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[bool] = False
    gpu: ClassVar[bool] = True
    progress_unit: ClassVar[str] = "steps"

    def check(self, options: Mapping[str, Any], sigma: float | None, axes: int) -> None:
        """Validate ``options`` (its own) with the noise level ``sigma`` (None: estimated) for images of
        ``axes`` spatial axes, before any image is read (ValueError naming the option)."""

    def settings(self, shape: tuple[int, ...], options: Mapping[str, Any],
                 sigma: float | None) -> dict[str, Any]:
        """Its options resolved for an image of ``shape`` (H, W, C) or (Z, H, W, C) (ValueError naming the
        option when one does not fit the image)."""
        return {name: options.get(name, default) for name, default in self.options.items()}

    def seconds(self, shape: tuple[int, ...], plan: Plan) -> float:
        """Estimated seconds of :meth:`denoise` on an image of ``shape`` on ``plan.device``."""
        raise NotImplementedError

    def working_bytes(self, shape: tuple[int, ...], plan: Plan) -> int:
        """Estimated peak working bytes of :meth:`denoise` on an image of ``shape``."""
        raise NotImplementedError

    def describe(self, plan: Plan) -> str:
        """The method and its plan in a few words, for messages."""
        return f"--method {self.name}"

    def remedies(self, shape: tuple[int, ...], plan: Plan, problem: str) -> list[str]:
        """Changes of its own options that would help when an image is refused for ``problem`` ('time' or
        'memory'), as the command line words them."""
        return []

    def denoise(self, image: Any, plan: Plan, progress: Progress | None) -> tuple[Any, Any]:
        """(the estimate, a :class:`nlfilt.DenoiseInfo`) of ``image``: (H, W, C), or a volume
        stack (Z, H, W, C) in one of its :attr:`stacks` modes."""
        raise NotImplementedError

    def denoise_frames(self, frames: Iterator[Any], plan: Plan, *, series: bool, count: int,
                       progress: Progress | None) -> Iterator[Any]:
        """The estimates of ``frames`` (host arrays (H, W, C), in order; ``count`` of them, or 0 when
        unknown), pulled as needed: a video streamed, with the one noise level ``plan.sigma`` (required:
        a stream cannot be read twice to estimate it).  ``series``: filtered as one series
        (:meth:`denoise_series`), else frame by frame.  ``progress(done, total)`` in frames."""
        if plan.sigma is None:
            raise ValueError("a stream of frames is filtered with a given noise level (plan.sigma)")
        if series:
            yield from self.denoise_series(frames, plan, count, progress)
            return
        for index, frame in enumerate(frames):
            within = None if progress is None else frame_progress(progress, index, count)
            yield self.denoise(frame.astype(plan.dtype), plan, within)[0]

    def denoise_series(self, frames: Iterator[Any], plan: Plan, count: int,
                       progress: Progress | None) -> Iterator[Any]:
        """The estimates of ``frames`` (as :meth:`denoise_frames`, ``plan.sigma`` given) filtered as one
        series, in order, holding a window of them (when 'series' is among its :attr:`stacks`)."""
        raise NotImplementedError(f"--method {self.name} does not filter a series")

    def denoise_dask(self, array: Any, plan: Plan) -> Any:
        """The lazy estimate of a dask array (H, W) or (H, W, C), chunk by chunk (when :attr:`streams`)."""
        raise NotImplementedError(f"--method {self.name} does not filter chunk by chunk")

    def report(self, info: Any, plan: Plan) -> dict[str, Any]:
        """The fields of a report entry that say what it did with one image: from its
        :class:`nlfilt.DenoiseInfo`, or from the plan alone (``info`` None: an image streamed)."""
        return {}


def frame_progress(progress: Progress, index: int, count: int) -> Progress:
    """The progress of frame ``index`` of ``count`` (0: unknown, then one more than so far), in frames."""
    return lambda done, total: progress(index + min(1.0, done / max(total, 1)), max(count, index + 1))


_METHODS: dict[str, Method] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Register a :class:`Method` subclass under its :attr:`~Method.name` (a class decorator)."""
    _METHODS[cls.name] = cls()
    return cls


def method(name: str) -> Method:
    """The registered method ``name``; ValueError listing the registered ones otherwise."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"method must be one of {', '.join(map(repr, method_names()))}; got "
                         f"{name!r}") from None


def method_names() -> tuple[str, ...]:
    """The registered methods, the default first."""
    return tuple(_METHODS)


def make_plan(name: str, options: Mapping[str, Any], shape: tuple[int, ...], *, device: str,
              dtype: Any = numpy.float32, sigma: float | None = None, stack: str | None = None,
              spacing: tuple[float, float, float] | None = None) -> Plan:
    """The plan of an image of ``shape`` (H, W, C) or (Z, H, W, C) (a stack filtered as one array in mode
    ``stack``, its first mode by default) for method ``name`` with its ``options`` (the others' are
    ignored), on ``device`` ('cpu' or 'gpu'); ValueError naming the option that does not fit."""
    chosen = method(name)
    if len(shape) == 4 and not chosen.stacks:
        raise ValueError(f"--method {name} works on 2-D images, not stacks filtered as one")
    if len(shape) == 4 and stack not in (None, *chosen.stacks):
        raise ValueError(f"--method {name} filters a stack {' or '.join(chosen.stacks)}, not {stack}")
    stack = (stack or chosen.stacks[0]) if len(shape) == 4 else None
    settings = chosen.settings(shape, options, sigma)
    return Plan(method=name, settings=tuple(settings.items()), device=device, dtype=numpy.dtype(dtype).name,
                sigma=sigma, stack=stack, spacing=spacing if stack == "volume" else None)
