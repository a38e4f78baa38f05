"""What the napari widget does with one image layer, without Qt: plan it as the command line plans a file,
refuse it in the command line's words, and denoise it (at once, or lazily for a dask-backed layer).

A layer's array is split into *units*, the arrays one filter call takes, as
the command line splits a TIFF stack: a 2-D image (H, W) or (H, W, C) per
plane in stack mode 'frames', or a (Z, H, W) volume or series per index of
the axes before it in modes 'volume' and 'series' (a TZYX layer: one volume
per time point).  RGB(A) layers keep their colour axis last; alpha is
copied, not filtered.  The result has the layer's shape and dtype
(integers rounded and clipped to their range, as the command line writes
them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
import numpy

from nlfilt.backend import get_backend
from nlfilt.cli.options import RunOptions, check_device, check_plan
from nlfilt.cli.progress import Deadline
from nlfilt.cli.stream import STREAM_PIXELS
from nlfilt.images import cast_like
from nlfilt.methods import Method, Plan, method, method_names
from nlfilt.methods.base import Progress, frame_progress

#: The stack modes the widget offers (the command line's ``--stack``).
STACK_MODES = ("auto", "frames", "series", "volume")
#: A dask-backed layer of one plane over this many pixels is filtered lazily chunk by chunk, as the command
#: line streams a TIFF over this size (smaller ones are filtered at once).
LAZY_PLANE_PIXELS = STREAM_PIXELS
#: Axis labels that say a layer's stack axis is in order (time or depth), for stack mode 'auto'.
ORDERED_LABELS = ("t", "time", "z", "depth", "slice", "frame")


class LayerRefused(ValueError):
    """A layer or a setting the widget cannot denoise; the message says why and what to change."""


class Cancelled(Exception):
    """Raised at the filter's next progress report once the user cancels."""


@dataclass(frozen=True)
class Request:
    """The widget's settings: those of ``nlfilt denoise`` of the same names (``sigma`` None: estimated
    per unit; ``max_minutes`` 0: no limit)."""

    method: str = method_names()[0]
    sigma: float | None = None
    device: str = "auto"
    stack: str = "auto"
    max_minutes: float = 10.0


@dataclass(frozen=True)
class LayerJob:
    """One layer's denoising, planned by :func:`plan_layer`.

    Attributes
    ----------
    data : array-like
        The layer's array (NumPy, dask, zarr, ...), not copied.
    rgb : bool
        Its last axis is colour (3 channels, or 4 with alpha).
    unit_axes : int
        Spatial axes of one unit: 2 (a plane) or 3 (a volume or series).
    plan : Plan
        The plan of one unit (the method, its settings, device, dtype, sigma, stack mode).
    lazy : bool
        The result is a lazy dask array: a dask-backed layer of several units
        (each filtered when napari shows it), or of one plane over
        ``LAZY_PLANE_PIXELS`` with a method that filters chunk by chunk.
    max_minutes : float
        A run is stopped at twice this (0: never), as the command line's.
    """

    data: Any
    rgb: bool
    unit_axes: int
    plan: Plan
    lazy: bool
    max_minutes: float

    @property
    def method(self) -> Method:
        return method(self.plan.method)

    @property
    def leading(self) -> tuple[int, ...]:
        """The shape of the axes before the units."""
        return tuple(self.data.shape[: self.data.ndim - self.unit_axes - self.rgb])

    @property
    def units(self) -> int:
        """How many filter calls the layer takes."""
        return math.prod(self.leading)

    def describe(self) -> str:
        """What is filtered, how and where, in a line."""
        start = len(self.leading)
        extent = "x".join(map(str, self.data.shape[start:start + self.unit_axes]))
        kind = "plane" if self.unit_axes == 2 else self.plan.stack
        count = f"{self.units} {kind}s of " if self.units > 1 else ""
        return (f"{count}{extent}{' RGB' if self.rgb else ''} with {self.method.describe(self.plan)} on the "
                f"{self.plan.device.upper()}{', lazily' if self.lazy else ''}")


def plan_layer(data: Any, *, rgb: bool, request: Request, scale: tuple[float, ...] | None = None,
               axis_labels: tuple[str, ...] | None = None) -> LayerJob:
    """Plan the denoising of an image layer's ``data`` (its ``rgb`` flag, ``scale`` and ``axis_labels``
    as napari gives them) with ``request``, and refuse it (:class:`LayerRefused`) as ``nlfilt denoise``
    refuses a file: options that do not fit, an unusable GPU, a unit smaller than a patch, over
    ``request.max_minutes`` or over half the machine's memory.

    Stack mode 'auto' means 'series' when the axis before the image's rows
    is labelled as time or depth (``ORDERED_LABELS``) and the method filters
    series, else 'frames'.  A volume's voxel spacing is the layer's
    ``scale`` along its last three spatial axes.
    """
    dtype = numpy.dtype(data.dtype)
    if dtype.kind not in "uif":
        raise LayerRefused(f"the layer's pixels are {dtype}; nlfilt denoises integer and real images")
    spatial = data.ndim - bool(rgb)
    if spatial < 2:
        raise LayerRefused(f"the layer has {spatial} spatial axis; nlfilt denoises images of 2 or more")
    if rgb and data.shape[-1] not in (3, 4):
        raise LayerRefused(f"an RGB layer has 3 or 4 channels, not {data.shape[-1]}")
    if request.stack not in STACK_MODES:
        raise LayerRefused(f"stack must be one of {', '.join(STACK_MODES)}; got {request.stack!r}")
    try:
        run = RunOptions.from_params({"method": request.method, "sigma": request.sigma,
                                      "device": request.device},
                                     stack=request.stack if spatial > 2 else None)
        check_device(run.device)
    except click.ClickException as exc:
        raise LayerRefused(exc.format_message()) from None
    except ValueError as exc:  # an unknown method
        raise LayerRefused(str(exc)) from None
    ordered = spatial > 2 and axis_labels is not None and \
        str(axis_labels[spatial - 3]).strip().lower() in ORDERED_LABELS
    chosen = method(run.method)
    mode = run.stack_mode(ordered) if spatial > 2 else None
    whole = mode in chosen.stacks  # a volume or a series per unit
    unit_axes = 3 if whole else 2
    shape = (*data.shape[spatial - unit_axes:spatial], 3 if rgb else 1)  # one unit, channels last
    spacing = tuple(float(value) for value in scale[spatial - 3:spatial]) \
        if mode == "volume" and whole and scale is not None else None
    units = math.prod(data.shape[:spatial - unit_axes])
    try:
        plan = run.plan(shape, dtype, get_backend(run.device).name, stack=mode if whole else None,
                        spacing=spacing)
        lazy = _is_dask(data) and (units > 1 or (not whole and chosen.streams
                                                  and math.prod(shape[:2]) > LAZY_PLANE_PIXELS))
        check_plan(shape, plan, request.max_minutes, streamed=lazy and units == 1, frames=units,
                   held=0 if lazy else None)  # a plane filtered chunk by chunk holds a band at a time
    except ValueError as exc:
        raise LayerRefused(str(exc)) from None
    return LayerJob(data=data, rgb=bool(rgb), unit_axes=unit_axes, plan=plan, lazy=lazy,
                    max_minutes=request.max_minutes)


def denoise_layer(job: LayerJob, progress: Progress | None = None,
                  cancelled: Callable[[], bool] | None = None) -> tuple[Any, float | None]:
    """The denoised layer, a NumPy array of the layer's shape and dtype (or a lazy dask array when
    :attr:`LayerJob.lazy`), and the noise level used: the given sigma, or the median of the units'
    estimates (None when lazy: each unit estimates its own as it is filtered).

    ``progress(done, total)`` in units after each filter step; ``cancelled()``
    is asked at each report, and :class:`Cancelled` raised when it says yes.
    A run over twice ``max_minutes`` stops as the command line's does
    (:class:`nlfilt.cli.progress.OverTime`)."""
    if job.lazy:
        return _lazy(job), job.plan.sigma
    report = _watched(progress, cancelled)
    if job.max_minutes > 0:
        report = Deadline(2 * 60 * job.max_minutes, f"twice --max-minutes {job.max_minutes:g}", report)
    leading = job.leading
    out = numpy.empty(job.data.shape, dtype=job.data.dtype)
    sigmas = []
    for index, position in enumerate(numpy.ndindex(*leading)):
        out[position], sigma = _denoise_unit(job, numpy.asarray(job.data[position]),
                                             frame_progress(report, index, job.units))
        sigmas.append(sigma)
        report(float(index + 1), job.units)
    known = [sigma for sigma in sigmas if sigma is not None]
    return out, float(numpy.median(known)) if known else None


def _denoise_unit(job: LayerJob, pixels: numpy.ndarray,
                  progress: Progress | None) -> tuple[numpy.ndarray, float | None]:
    """One unit's pixels denoised (its shape and dtype; alpha copied), and the noise level used."""
    colour = pixels[..., :3] if job.rgb else pixels
    work = colour.reshape(*colour.shape[:3], -1) if job.unit_axes == 3 else colour  # (Z, H, W, C)
    result, info = job.method.denoise(work.astype(job.plan.dtype), job.plan, progress)
    result = cast_like(result.reshape(colour.shape), pixels.dtype)
    if job.rgb and pixels.shape[-1] == 4:
        result = numpy.concatenate([result, pixels[..., 3:]], axis=-1)
    return result, info.sigma


def _watched(progress: Progress | None, cancelled: Callable[[], bool] | None) -> Progress:
    """``progress`` (may be None) behind a check of ``cancelled`` (may be None)."""

    def report(done: float, total: int) -> None:
        if cancelled is not None and cancelled():
            raise Cancelled("cancelled")
        if progress is not None:
            progress(done, total)

    return report


def _lazy(job: LayerJob) -> Any:
    """The lazy result of a dask-backed layer: a unit per block, or chunk by chunk for one plane."""
    import dask.array as da  # noqa: PLC0415 - only for dask-backed layers (napari depends on dask)

    data = job.data
    if job.units == 1:  # one plane, with a method that filters chunk by chunk
        colour = data[..., :3] if job.rgb else data
        result = job.method.denoise_dask(colour.astype(job.plan.dtype), job.plan)
        result = result.map_blocks(cast_like, data.dtype, dtype=data.dtype)
        return da.concatenate([result, data[..., 3:]], axis=-1) if job.rgb and data.shape[-1] == 4 else result
    unit = data.ndim - len(job.leading)
    blocks = data.rechunk((1,) * len(job.leading) + (-1,) * unit)

    def filter_block(block: numpy.ndarray) -> numpy.ndarray:  # one unit, with its leading axes of 1
        return _denoise_unit(job, block.reshape(block.shape[len(job.leading):]), None)[0].reshape(block.shape)

    return blocks.map_blocks(filter_block, dtype=data.dtype)


def _is_dask(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "dask"
