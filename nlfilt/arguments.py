"""Argument checks and image layout shared by the public functions (and by nlfilt.network).

Each check raises ValueError naming the parameter and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy

from nlfilt.backend import DEVICES, host_array

#: ``progress(done, total)``: the work done (a float) out of the work expected, in the unit the function
#: names (products with ``K`` for :func:`nlfilt.denoise`).
ProgressCallback = Callable[[float, int], None]

#: Under ``channel_axis='auto'`` (the default) the last axis of a 3-D image holds its channels when it has
#: at most this many entries; a longer one is refused (a volume read as channels would be filtered as
#: one image of many channels, without a word).
MAX_AUTO_CHANNELS = 16

#: The working dtypes.
DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def check_device(device: Any) -> str:
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}; got {device!r}")
    return device


def check_dtype(dtype: Any) -> numpy.dtype:
    try:
        work_dtype = None if dtype is None else numpy.dtype(dtype)  # numpy.dtype(None) is float64
    except TypeError:
        work_dtype = None
    if work_dtype is None or work_dtype not in DTYPES:
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64; got {dtype!r}")
    return work_dtype


def check_box(name: str, value: Any, spatial: tuple[int, ...], allowed: str = "") -> int | tuple[int, ...]:
    """A validated patch or window: an odd int for a 2-D image (at most min(H, W) for the patch), one
    odd side per axis (a tuple) for a volume (an int is used on every axis)."""
    if len(spatial) == 3 and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value),) * 3
    if isinstance(value, tuple | list) and len(spatial) == 3:
        if len(value) != 3:
            raise ValueError(f"{name} of a volume must be an odd integer or three, (Z, H, W); got {value!r}")
        for side in value:
            check_count(name, side, minimum=1, odd=True, allowed=f"odd sides >= 1 (got {tuple(value)!r})")
        if name == "patch" and any(side > extent for side, extent in zip(value, spatial, strict=True)):
            raise ValueError(f"patch sides must be at most the volume's {'x'.join(map(str, spatial))}; got "
                             f"{tuple(value)}")
        return tuple(int(side) for side in value)
    if isinstance(value, tuple | list) and len(set(value)) == 1 and len(value) == 2:
        value = value[0]  # a square given as (p, p)
    check_count(name, value, minimum=1, odd=True, allowed=allowed or "an odd integer >= 1 (one side: 2-D "
                 "patches and windows are square)")
    if name == "patch" and value > min(spatial):
        raise ValueError(f"patch must be an odd integer from 1 to min(H, W) = {min(spatial)} for this "
                         f"{'x'.join(map(str, spatial))} image; got {value}")
    return int(value)


def as_real_array(image: Any, channel_axis: Any = "auto") -> numpy.ndarray:
    """Return ``image`` as a finite real (H, W, C) NumPy array, or (Z, H, W, C) for a volume (its
    channels, on ``channel_axis``, moved last; a view where possible), or raise ValueError."""
    array = host_array(image)
    if array.dtype == object or not (numpy.issubdtype(array.dtype, numpy.number) or array.dtype == bool):
        raise ValueError(f"image must be a real numeric array; got dtype {array.dtype}")
    if numpy.iscomplexobj(array):
        raise ValueError(f"image must be real; got complex dtype {array.dtype}")
    axis = channel_position(array.shape, channel_axis)
    if array.size == 0:
        raise ValueError(f"image is empty (shape {array.shape})")
    if array.dtype.kind == "f" and not numpy.isfinite(array).all():
        bad = int(numpy.count_nonzero(~numpy.isfinite(array)))
        raise ValueError(f"image has {bad} NaN or Inf pixel values; all values must be finite")
    return array[..., None] if axis is None else numpy.moveaxis(array, axis, -1)


def channel_position(shape: tuple[int, ...], channel_axis: Any) -> int | None:
    """The axis (0, 1 or 2) of an image of ``shape`` that holds its channels, or None for a gray image;
    ValueError for a shape or ``channel_axis`` nlfilt cannot take (see ``channel_axis`` in
    :func:`denoise`)."""
    if channel_axis is not None and channel_axis != "auto" and (
            not isinstance(channel_axis, numbers.Integral) or isinstance(channel_axis, bool)):
        raise ValueError(f"channel_axis must be an int, None or 'auto'; got {channel_axis!r}")
    ndim = len(shape)
    if ndim not in (2, 3, 4):
        raise ValueError(f"image must have 2 dimensions (H, W), 3 ((H, W, C) or a volume (Z, H, W) with "
                         f"channel_axis=None) or 4 (a volume with channels); got shape {tuple(shape)}")
    if ndim == 2:
        if channel_axis is None or channel_axis == "auto":
            return None
        raise ValueError(f"channel_axis={channel_axis} needs a 3-D image with channels on that axis; the "
                         f"image has shape {tuple(shape)} (for a gray image leave it at 'auto' or None)")
    if ndim == 4 and not isinstance(channel_axis, numbers.Integral):
        raise ValueError(f"a 4-D image of shape {tuple(shape)} is a volume with channels: pass the channel "
                         f"axis (channel_axis=-1 for (Z, H, W, C)); got channel_axis={channel_axis!r}")
    if channel_axis is None:  # a volume (Z, H, W)
        return None
    if channel_axis == "auto":
        if shape[2] > MAX_AUTO_CHANNELS:
            raise ValueError(
                f"image has shape {tuple(shape)}: its last axis of {shape[2]} is too long to be taken as "
                f"channels by default (at most {MAX_AUTO_CHANNELS}); for a volume (Z, H, W) pass "
                f"channel_axis=None, for {shape[2]} channels (a hyperspectral image) channel_axis=-1")
        return 2
    if not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel_axis must be {-ndim} to {ndim - 1} for a {ndim}-D image; got "
                         f"{channel_axis}")
    return channel_axis % ndim


def in_layout(result: Any, image: Any, channel_axis: Any) -> Any:
    """``result``, an (H, W, C) array computed from ``image``, in ``image``'s layout: its shape, with the
    channels back on their axis (NumPy or CuPy)."""
    axis = channel_position(numpy.shape(image), channel_axis)
    if axis is None:
        return result.reshape(numpy.shape(image))
    return numpy.moveaxis(result, -1, axis)


def check_count(name: str, value: Any, *, minimum: int, odd: bool = False, allowed: str = "") -> None:
    """Raise ValueError unless ``value`` is an integer >= minimum (and odd if asked)."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_int or value < minimum or (odd and value % 2 == 0):
        if not allowed:
            allowed = f"an {'odd ' if odd else ''}integer >= {minimum}"
        raise ValueError(f"{name} must be {allowed}; got {value!r}")


def check_progress(progress: Any) -> None:
    """Raise ValueError unless ``progress`` is None or callable."""
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be a callable or None; got {progress!r}")


def check_real(name: str, value: Any, rule: str, accept: Callable[[float], bool]) -> None:
    """Raise ValueError unless ``value`` is a finite real number satisfying ``rule``."""
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_real or not math.isfinite(value) or not accept(float(value)):
        raise ValueError(f"{name} must be a finite number {rule}; got {value!r}")
