"""Images larger than memory: nlfilt's windowed filters over a dask array, chunk by chunk.

Needs the ``dask`` extra (``pip install 'nlfilt[dask]'``); ``import nlfilt`` does
not import this module.
"""

from __future__ import annotations

import math
from typing import Any

import numpy

import nlfilt
from nlfilt import clipping
from nlfilt.accelerate import accelerate
from nlfilt.backend import get_backend, is_device_array
from nlfilt.collaborative import (
    COARSE_STEP,
    PATCH,
    RADIUS,
    STEP,
    ArrayGroups,
    check_shape,
    low_signal_to_noise,
)
from nlfilt.kernels import kernel_class
from nlfilt.noise import estimate_sigma
from nlfilt.pyramid import REACH
from nlfilt.resolve import DEFAULT_MEMORY_BUDGET, place, resolve_options, resolve_stopping

#: Side of the centred crop the noise level is estimated from when ``sigma`` is not given.
SIGMA_SAMPLE = 2048


def halo(patch: int, window: int, iterations: int) -> int:
    """Pixels of context a chunk needs on each side for the exact windowed result.

    One product with ``K`` reaches ``window // 2`` pixels for the pairs and
    ``patch // 2`` more for their patches; each further twicing step reaches
    ``window // 2`` further (the weights stay those of the noisy image).
    """
    return patch // 2 + iterations * (window // 2)


def denoise(array: Any, *, kernel: str = "nlm", patch: int | None = None, window: int | str | None = "auto",
            window_shape: str = "box", h: float | None = None, sigma: float | None = None, depth: int = 1,
            normalize: str | None = None, iterations: int = 1, stop: str | None = None,
            max_iterations: int | None = None, guide: str | None = None, device: str = "auto",
            dtype: Any = numpy.float32, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Any:
    """Denoise a dask array (H, W) or (H, W, C) chunk by chunk; returns a lazy dask array.

    Each chunk is filtered with :func:`nlfilt.denoise` together with a halo
    of :func:`halo` pixels from its neighbours (``map_overlap``, nothing added
    at the image's own borders, where the filter pads as it does for a whole
    image), and the halo is cut off again, so the result equals
    :func:`nlfilt.denoise` of the whole image up to float rounding (features
    are centred per chunk).  Chunks are enlarged where smaller than the halo;
    the channel axis is kept in one chunk.

    Only the windowed filters whose result is local qualify: NLM with row
    normalisation and a fixed number of twicing steps, under either window
    shape.  The global mode, ``iterations='auto'`` (and so ``stop`` and
    ``max_iterations``), ``guide='pilot'``, Sinkhorn scaling and the 'arccos'
    and 'ntk' filters (normalised by the largest eigenvalue of the whole
    ``K``) depend on the whole image and are refused (ValueError with the
    reason).

    ``sigma`` is estimated, when not given, from the centred crop of at most
    ``SIGMA_SAMPLE`` x ``SIGMA_SAMPLE`` pixels (computed at once; the rest
    stays lazy).  The other parameters are those of :func:`nlfilt.denoise`.

    Examples
    --------
    >>> import dask.array as da, numpy, nlfilt.dask
    >>> noisy = da.from_array(numpy.random.default_rng(0).normal(100, 10, (64, 64)), chunks=32)
    >>> nlfilt.dask.denoise(noisy, sigma=10.0, device="cpu").compute().shape
    (64, 64)
    """
    _check_image(array, "nlfilt.denoise")
    if iterations == "auto":
        raise ValueError("iterations='auto' chooses the step from the whole image's risk, which no chunk "
                         "knows: pass a number of steps")
    resolve_stopping(iterations, stop, max_iterations)  # both only with iterations='auto'
    if guide is not None:
        raise ValueError("guide='pilot' filters with the affinities of a first pass over the whole image, "
                         "which no chunk has: leave it out")
    options = resolve_options(array.shape[:2] + array.shape[2:], kernel=kernel, patch=patch, window=window,
                              h=h, sigma=sigma, depth=depth, memory_budget=memory_budget, normalize=normalize,
                              iterations=iterations, window_shape=window_shape)
    if options.window is None:
        raise ValueError("the global mode pairs every pixel with every other: pass a search window (an odd "
                         "integer) to filter chunk by chunk")
    if options.normalize != "rows":
        raise ValueError(f"normalize={options.normalize!r} scales K with the whole image (Sinkhorn's "
                         "scaling, or the largest eigenvalue of 'arccos' and 'ntk'), which no chunk knows: "
                         "only row normalisation ('nlm') is local")
    if sigma is None and kernel_class(kernel).h_per_sigma is not None:
        sigma = sample_sigma(array)
    call = {"kernel": kernel, "patch": options.patch, "window": options.window,
            "window_shape": options.window_shape, "h": h, "sigma": sigma, "depth": depth,
            "normalize": options.normalize, "iterations": int(iterations), "device": device, "dtype": dtype,
            "memory_budget": memory_budget}
    return _chunk_by_chunk(array, lambda chunk: nlfilt.denoise(chunk, **call),
                           halo(options.patch, options.window, int(iterations)), dtype)


#: Context a chunk of the collaborative filter gets on each side: each stage reaches a patch, its search
#: radius and a patch (70 pixels under the defaults), and the grid of reference patches restarts at the
#: end of each chunk; rounded up to a multiple of the grid's step (so that the grid of a chunk with its
#: context is the whole image's), this keeps both out of the kept pixels.
def _stages_reach(step: int) -> int:
    """Pixels the collaborative filter's two stages reach with reference patches every ``step``."""
    return sum(RADIUS) + 4 * PATCH + step


COLLABORATIVE_HALO = -(-_stages_reach(STEP) // STEP) * STEP
#: At low signal-to-noise, where the pilot takes the coarse scale's estimate (:mod:`nlfilt.pyramid`), chunk
#: origins and context are multiples of LOW_SNR_GRID, which puts both scales' grids of reference patches on
#: the whole image's; the context is the two stages', twice the coarse image's own (its pixels are 2 x 2
#: blocks) and the refinement's reach.
LOW_SNR_GRID = math.lcm(STEP, 2 * COARSE_STEP)
LOW_SNR_HALO = -(-(COLLABORATIVE_HALO + 2 * _stages_reach(COARSE_STEP) + 2 * (REACH + 1)) // LOW_SNR_GRID
                 ) * LOW_SNR_GRID


def denoise_collaborative(array: Any, *, sigma: float | None = None, declip: bool = True,
                          device: str = "auto", dtype: Any = numpy.float32) -> Any:
    """:func:`nlfilt.denoise_collaborative` of a dask array (H, W) or (H, W, C), chunk by chunk (lazy).

    Each chunk gets ``COLLABORATIVE_HALO`` pixels of context on each side
    (``LOW_SNR_HALO`` where the image is at low signal-to-noise, decided once
    on a centred crop: the pilot then takes a coarse scale's estimate);
    chunk origins are put on the filter's grid of reference patches (chunks
    are made multiples of its step, or of ``LOW_SNR_GRID``), so a chunk's kept pixels
    see the groups the whole image would give them (matching is exact, on levels anchored
    at zero): in float64 the result equals the whole-image one to 1e-12; in
    float32 up to the transforms' rounding, which may move the hard
    threshold's choice of a coefficient (measured on a 300 x 260 image in
    128-pixel chunks: at most 2e-4 of 255 apart).  ``sigma`` as in
    :func:`denoise`.  With ``declip``, the clip levels are those of the
    whole array (found now, reading it once more: its extremes and their
    counts), applied chunk by chunk as :func:`nlfilt.denoise_collaborative`
    does.
    """

    _check_image(array, "nlfilt.denoise_collaborative")
    check_shape(array.shape)
    if not isinstance(declip, (bool, numpy.bool_)):
        raise ValueError(f"declip must be True or False; got {declip!r}")
    crop = _centre_crop(array)
    if sigma is None:
        sigma = _crop_sigma(crop)
    low_snr = _crop_low_snr(crop, sigma, device, dtype)
    call = {"sigma": sigma, "declip": False, "low_snr": low_snr, "device": device, "dtype": dtype}
    halo, step = (LOW_SNR_HALO, LOW_SNR_GRID) if low_snr else (COLLABORATIVE_HALO, STEP)
    estimate = _chunk_by_chunk(array, lambda chunk: nlfilt.denoise_collaborative(chunk, **call), halo, dtype,
                               step=step)
    if not declip:
        return estimate
    levels = _clip_levels(array)
    channels = array.ndim == 3

    def declip_chunk(chunk: Any) -> Any:
        xp = get_backend("gpu" if is_device_array(chunk) else "cpu").xp
        planes = chunk if channels else chunk[:, :, None]
        return clipping.declip(xp, planes, float(sigma), levels).reshape(chunk.shape)

    return estimate.map_blocks(declip_chunk, dtype=estimate.dtype)


def _crop_low_snr(crop: numpy.ndarray, sigma: float, device: str, dtype: Any) -> bool:
    """:func:`nlfilt.collaborative.low_signal_to_noise` of the centred crop (:func:`_centre_crop`), one
    decision for every chunk."""
    backend, placed = place(crop if crop.ndim == 3 else crop[:, :, None], device, numpy.dtype(dtype))
    groups = accelerate(backend, ArrayGroups(backend, placed.shape, patch=PATCH, step=STEP))
    return low_signal_to_noise(groups, placed, float(sigma))


def _clip_levels(array: Any) -> clipping.Levels:
    """:func:`nlfilt.clipping.clip_levels` of a dask array (H, W) or (H, W, C), computed."""
    import dask  # noqa: PLC0415 - optional extra

    planes = array if array.ndim == 3 else array[:, :, None]
    lows, highs = dask.compute(planes.min(axis=(0, 1)), planes.max(axis=(0, 1)))
    counts = dask.compute(*[((planes[:, :, channel] == low).sum(), (planes[:, :, channel] == high).sum())
                            for channel, (low, high) in enumerate(zip(lows, highs, strict=True))])
    size = planes.shape[0] * planes.shape[1]
    return [(clipping.clip_level(low, at_low, size), clipping.clip_level(high, at_high, size))
            for low, high, (at_low, at_high) in zip(lows, highs, counts, strict=True)]


def _check_image(array: Any, in_memory: str) -> None:
    """ValueError unless ``array`` is a dask array (H, W) or (H, W, C); ``in_memory`` names the function
    for an array in memory."""
    import dask.array as da  # noqa: PLC0415 - optional extra

    if not isinstance(array, da.Array):
        raise ValueError(f"array must be a dask array (dask.array.from_array, from_zarr, ...); got "
                         f"{type(array).__name__}: use {in_memory} for an array in memory")
    if array.ndim not in (2, 3):
        raise ValueError(f"array must have 2 dimensions (H, W) or 3 (H, W, C); got shape {array.shape}")


def _chunk_by_chunk(array: Any, filter_chunk: Any, reach: int, dtype: Any, step: int = 1) -> Any:
    """``filter_chunk`` over ``array`` with ``reach`` pixels of context from each neighbour (map_overlap,
    nothing added at the image's own borders), the context cut off again.  The channel axis is put in one
    chunk; chunks are enlarged to at least ``reach`` and start on multiples of ``step``."""
    if array.ndim == 3:
        array = array.rechunk({2: -1})
    array = array.rechunk({axis: _enlarged(_on_grid(array.chunks[axis], step), reach) for axis in (0, 1)})
    depth = {0: reach, 1: reach} | ({2: 0} if array.ndim == 3 else {})
    return array.map_overlap(filter_chunk, depth=depth, boundary="none", trim=True, dtype=numpy.dtype(dtype),
                             meta=numpy.empty((0,) * array.ndim, dtype=dtype))


def _on_grid(chunks: tuple[int, ...], step: int) -> tuple[int, ...]:
    """``chunks`` with every chunk but the last a multiple of ``step`` (remainders move to the next)."""
    moved: list[int] = []
    carry = 0
    for size in chunks[:-1]:
        size += carry
        carry = size % step
        moved.append(size - carry)
    return tuple(moved) + (chunks[-1] + carry,)


def _enlarged(chunks: tuple[int, ...], reach: int) -> tuple[int, ...]:
    """``chunks`` with every chunk smaller than ``reach`` merged into its neighbour (one chunk if the
    axis is shorter than that)."""
    merged: list[int] = []
    for size in chunks:
        if merged and (size < reach or merged[-1] < reach):
            merged[-1] += size
        else:
            merged.append(size)
    return tuple(merged)


def sample_sigma(array: Any) -> float:
    """The noise level of the centred crop of at most SIGMA_SAMPLE pixels a side."""
    return _crop_sigma(_centre_crop(array))


def _centre_crop(array: Any) -> numpy.ndarray:
    """The centred crop of at most SIGMA_SAMPLE pixels a side (the whole array when it is no larger),
    computed."""
    height, width = array.shape[:2]
    top, left = max(0, (height - SIGMA_SAMPLE) // 2), max(0, (width - SIGMA_SAMPLE) // 2)
    return numpy.asarray(array[top:top + SIGMA_SAMPLE, left:left + SIGMA_SAMPLE].compute())


def _crop_sigma(crop: numpy.ndarray) -> float:
    """:func:`nlfilt.noise.estimate_sigma` of a computed crop."""
    crop = numpy.asarray(crop, dtype=numpy.float64 if crop.dtype.itemsize > 4 else numpy.float32)
    return estimate_sigma(numpy, crop if crop.ndim == 3 else crop[:, :, None])
