"""Large TIFF files, streamed: read in chunks, filtered with a halo, written as a tiled BigTIFF.

A gray or RGB single-page TIFF larger than ``STREAM_PIXELS`` (or any, with
``--chunk N``) is never held whole in memory: tifffile's zarr view reads the
chunks a band of output rows needs, :mod:`nlfilt.dask` filters them with the
halo that makes the result the whole image's (up to float32 rounding), and
the output is written band by band as a tiled BigTIFF (zlib, tiles of
``TILE`` pixels) in the input's dtype, atomically like every output.  Memory
grows with the chunk side times the image width, not with the image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy

from nlfilt.images import ImageError, ImageHeader, cast_like, open_tiff, write_atomically
from nlfilt.methods import Plan, method

#: TIFF inputs with more pixels than this are streamed (8192 x 8192).
STREAM_PIXELS = 2**26
#: Default chunk side (pixels) of a streamed image, and the side of the output's tiles (chunks are
#: rounded up to a multiple of it).
CHUNK = 2048
TILE = 256


def should_stream(path: Path, header: ImageHeader, chunk: int) -> bool:
    """Whether ``path`` is read in chunks: a single-page TIFF, gray or RGB without alpha, over the size
    limit (or any size when ``--chunk`` was given).  Stacks are read whole and filtered page by page."""
    if Path(path).suffix.lower() not in (".tif", ".tiff") or header.has_alpha or header.frames:
        return False
    if header.layout_channels not in (0, 3):
        return False
    return bool(chunk) or header.shape[0] * header.shape[1] > STREAM_PIXELS


def stream_tiff(source: Path, target: Path, header: ImageHeader, plan: Plan, chunk: int, replace: bool,
                progress: Callable[[float, int], None] | None, partials: Path | None = None) -> float:
    """Filter ``source`` into ``target`` chunk by chunk with ``plan`` (its method's
    :meth:`~nlfilt.methods.Method.denoise_dask`); returns the noise level used.  ``partials``: where the
    partial file is written (see :func:`nlfilt.images.write_image`).

    Raises ImageError (the extra is missing, or the file cannot be read or
    written), ValueError (options that need the whole image), OutputExists.
    """
    try:
        import dask.array as da  # noqa: PLC0415 - optional extra
        import tifffile  # noqa: PLC0415 - imageio's TIFF plugin; only needed for TIFF files
        import zarr  # noqa: PLC0415, F401 - tifffile's chunked reads need it
    except ImportError as exc:
        raise ImageError(f"a {header.shape[0]}x{header.shape[1]} TIFF is read in chunks, which needs "
                         f"pip install 'nlfilt[dask]' ({exc.name} is missing)") from None
    from nlfilt import dask as nlfilt_dask  # noqa: PLC0415 - needs the optional extra

    side = max(TILE, -(-(chunk or CHUNK) // TILE) * TILE)
    try:
        with open_tiff(source) as tiff:  # as tifffile.imread(aszarr=True), its pages walked first
            store = tiff.aszarr()
        array = da.from_zarr(store)
    except Exception as exc:  # tifffile and zarr raise their own types
        raise ImageError(f"cannot read in chunks ({exc})") from None
    try:
        array = array.rechunk((side, side) + ((-1,) if array.ndim == 3 else ()))
        work = array.astype(plan.dtype)
        sigma = nlfilt_dask.sample_sigma(work) if plan.sigma is None else plan.sigma
        result = method(plan.method).denoise_dask(work, dataclasses.replace(plan, sigma=sigma))
        height = array.shape[0]
        bands = -(-height // side)

        def tiles() -> Iterator[numpy.ndarray]:
            for index in range(bands):
                band = result[index * side:(index + 1) * side].compute(scheduler="synchronous")
                yield from _band_tiles(cast_like(numpy.asarray(band), array.dtype))
                if progress is not None:
                    progress(float(index + 1), bands)

        def write(temporary: Path) -> None:
            tifffile.imwrite(temporary, tiles(), shape=array.shape, dtype=array.dtype, tile=(TILE, TILE),
                             bigtiff=True, compression="zlib",
                             photometric="rgb" if array.ndim == 3 else "minisblack")

        write_atomically(target, write, replace=replace, partials=partials)
    finally:
        store.close()
    return float(sigma)


def _band_tiles(band: numpy.ndarray) -> Iterator[numpy.ndarray]:
    """The tiles of a band of rows, row-major, each TILE x TILE (edge tiles zero-padded)."""
    for top in range(0, band.shape[0], TILE):
        for left in range(0, band.shape[1], TILE):
            part = band[top:top + TILE, left:left + TILE]
            if part.shape[:2] == (TILE, TILE):
                yield numpy.ascontiguousarray(part)
                continue
            tile = numpy.zeros((TILE, TILE) + band.shape[2:], dtype=band.dtype)
            tile[:part.shape[0], :part.shape[1]] = part
            yield tile
