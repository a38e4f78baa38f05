"""Reading and writing image files for the command line, without losing data.

Supported: PNG, TIFF, JPEG and BMP (through imageio); gray, gray+alpha, RGB
and RGBA; unsigned and signed integers and floats.  What a codec cannot store
faithfully is refused with a reason instead of being silently converted.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy

#: File name extensions treated as images when a folder is expanded.
IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")

#: Extensions whose codec (Pillow) stores 8-bit data only.
_EIGHT_BIT = (".jpg", ".jpeg", ".bmp")


class ImageError(ValueError):
    """A file that cannot be read or written as asked; the message gives the reason."""


@dataclass
class Image:
    """Pixel data split into the part to filter and an untouched alpha channel.

    Attributes
    ----------
    colour : ndarray, shape (H, W) or (H, W, C)
        Gray or colour channels, in the file's dtype.
    alpha : ndarray or None, shape (H, W)
        The alpha channel, passed through unchanged.
    layout_channels : int
        Channels of the file (0 for a 2-D gray image).
    """

    colour: numpy.ndarray
    alpha: numpy.ndarray | None
    layout_channels: int

    @property
    def dtype(self) -> numpy.dtype:
        return self.colour.dtype

    def assemble(self, colour: numpy.ndarray) -> numpy.ndarray:
        """Return ``colour`` (float, filtered) in the file's dtype and layout, alpha restored."""
        pixels = cast_like(colour, self.dtype)
        if self.alpha is None:
            return pixels
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        return numpy.concatenate([pixels, self.alpha[:, :, None]], axis=2)


def cast_like(values: numpy.ndarray, dtype: numpy.dtype) -> numpy.ndarray:
    """Convert float ``values`` to ``dtype``: integers rounded and clipped to their range, floats as is."""
    dtype = numpy.dtype(dtype)
    if dtype.kind in "ui":
        limits = numpy.iinfo(dtype)
        return numpy.clip(numpy.rint(values), limits.min, limits.max).astype(dtype)
    return values.astype(dtype)


def read_image(path: Path) -> Image:
    """Read ``path`` and split off its alpha channel.

    Raises
    ------
    ImageError
        When the file cannot be read, is not an image, holds several frames,
        has an unsupported dtype or channel layout, or is a 16-bit colour PNG
        (which the PNG codec would truncate to 8 bits).
    """
    path = Path(path)
    _refuse_lossy_reads(path)
    try:
        with warnings.catch_warnings():  # plugin deprecation notices while imageio probes a bad file
            warnings.simplefilter("ignore")
            properties = iio.improps(path, index=...)  # every frame or page
            if properties.is_batch and properties.shape[0] > 1:
                raise ImageError(f"{properties.shape[0]} frames or pages; only single images are supported")
            pixels = numpy.asarray(iio.imread(path))
    except ImageError:
        raise
    except Exception as exc:  # imageio raises many types for unreadable files
        raise ImageError(f"cannot read as an image ({_reason(exc)})") from None
    if pixels.dtype.kind not in "uif":
        raise ImageError(f"unsupported pixel type {pixels.dtype}")
    if pixels.size == 0:
        raise ImageError(f"empty image (shape {pixels.shape})")
    if pixels.ndim == 2:
        return Image(pixels, None, 0)
    if pixels.ndim == 3 and pixels.shape[2] in (1, 3):
        return Image(pixels, None, pixels.shape[2])
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        return Image(pixels[:, :, :-1], pixels[:, :, -1], pixels.shape[2])
    raise ImageError(f"unsupported layout {pixels.shape}: expected gray, gray+alpha, RGB or RGBA")


def write_image(path: Path, pixels: numpy.ndarray) -> None:
    """Write ``pixels`` to ``path`` atomically, in the format of its extension.

    The data go to a temporary file in the target folder, renamed over
    ``path`` only once complete, so an interrupted run never leaves a partial
    image.  Raises ImageError when the format cannot store the data as they are.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if suffix not in IMAGE_EXTENSIONS:
        raise ImageError(f"unknown image format {path.suffix!r}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    if pixels.dtype.kind == "f" and suffix not in (".tif", ".tiff"):
        raise ImageError(f"{pixels.dtype} pixels need a TIFF output (.tif), not {suffix}")
    if pixels.dtype != numpy.uint8 and suffix in _EIGHT_BIT:
        raise ImageError(f"{suffix} stores 8-bit pixels only; {pixels.dtype} needs .png (gray) or .tif")
    if suffix == ".png" and pixels.dtype not in (numpy.uint8, numpy.uint16):
        raise ImageError(f"PNG stores 8- and 16-bit unsigned pixels only; {pixels.dtype} needs .tif")
    if suffix == ".png" and pixels.dtype == numpy.uint16 and channels > 1:
        raise ImageError("the PNG codec writes 16-bit gray only; use .tif for 16-bit colour")
    if suffix in (".jpg", ".jpeg", ".bmp") and channels in (2, 4):
        raise ImageError(f"{suffix} cannot store an alpha channel; use .png or .tif")
    options = {"quality": 95} if suffix in (".jpg", ".jpeg") else {}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}",
                                         dir=path.parent)
    os.close(handle)
    try:
        iio.imwrite(temporary, pixels, extension=path.suffix, **options)
        os.replace(temporary, path)
    except BaseException as exc:  # an interrupt too: leave nothing behind
        Path(temporary).unlink(missing_ok=True)
        if not isinstance(exc, Exception):
            raise
        raise ImageError(f"cannot write ({_reason(exc)})") from None


def _refuse_lossy_reads(path: Path) -> None:
    """Raise ImageError for files that Pillow would read with data lost.

    A 16-bit PNG with colour or alpha is read as 8 bits; a 32-bit BMP loses
    its alpha channel.
    """
    try:
        with open(path, "rb") as stream:
            header = stream.read(30)
    except OSError as exc:
        raise ImageError(f"cannot read ({_reason(exc)})") from None
    if len(header) >= 26 and header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR":
        bit_depth, colour_type = header[24], header[25]
        if bit_depth == 16 and colour_type in (2, 4, 6):
            raise ImageError("16-bit colour or gray+alpha PNG: the PNG codec would truncate it to 8 bits; "
                             "convert it to TIFF")
    if len(header) >= 30 and header[:2] == b"BM" and int.from_bytes(header[28:30], "little") == 32:
        raise ImageError("32-bit BMP: the BMP codec would drop its alpha channel; convert it to PNG")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
