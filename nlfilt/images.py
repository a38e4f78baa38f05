"""Reading and writing image files for the command line, without losing data.

Supported: PNG, TIFF, JPEG, BMP and WebP (through imageio; 16-bit PNG with
colour or alpha through imagecodecs, which Pillow would cut to 8 bits);
gray, gray+alpha, RGB and RGBA (WebP: RGB and RGBA); unsigned and signed
integers and floats; multi-page TIFF as stacks.  What a codec cannot store
faithfully is refused with a reason instead of being silently converted.

Outputs are written to a partial file in the target folder and renamed when
complete.  The partial file's name carries the writer's host and process id
(``.NAME.XXXX.nlfilt-HOST-PID.partial.EXT``), so that a later run can remove
the partial files of writers that died (:func:`remove_stale_partials`) and
leave those of live ones alone.  Writers in other processes (a cluster run's
workers) write theirs in a hidden folder of the run instead
(:func:`make_partials_folder`), which the run removes at its end with
whatever a dead or dying writer left in it (:func:`remove_partials_folder`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy

#: File name extensions treated as images when a folder is expanded.
IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".webp")

#: Extensions whose codec (Pillow) stores 8-bit data only.
_EIGHT_BIT = (".jpg", ".jpeg", ".bmp", ".webp")

#: Extensions of one format (an output may change the extension within a format).
_FORMATS = {".tiff": ".tif", ".jpeg": ".jpg"}

#: The formats read, by the bytes their files start with (WebP: RIFF, a size, WEBP; see _file_format).
_SIGNATURES = (("PNG", b"\x89PNG\r\n\x1a\n"), ("TIFF", b"II*\0"), ("TIFF", b"MM\0*"), ("TIFF", b"II+\0"),
               ("TIFF", b"MM\0+"), ("JPEG", b"\xff\xd8\xff"), ("BMP", b"BM"))

#: The imageio plugin that reads each format but TIFF (named, so that its own error reaches the message);
#: TIFF files are read by tifffile itself (:func:`open_tiff`).
_PLUGINS = {"PNG": "pillow", "JPEG": "pillow", "BMP": "pillow", "WebP": "pillow"}

#: Partial (unfinished) outputs: ``.<stem>.<random>.nlfilt-<host>-<pid>.partial<suffix>``.
_PARTIAL = re.compile(r"^\..*\.nlfilt-(?P<host>[A-Za-z0-9_-]+?)-(?P<pid>\d+)\.partial\.[A-Za-z]+$")

#: A run's folder of partial outputs: ``.nlfilt-<host>-<pid>.<random>.partials`` (the run's own host and
#: process id), ``.removed`` added while it is removed.
_PARTIALS_FOLDER = re.compile(
    r"^\.nlfilt-(?P<host>[A-Za-z0-9_-]+?)-(?P<pid>\d+)\.[0-9a-f]+\.partials(\.removed)?$")


class ImageError(ValueError):
    """A file that cannot be read or written as asked; the message gives the reason."""


class OutputExists(ImageError):
    """The output appeared while it was computed (another run wrote it) and was kept."""


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says about its pixels, read without decoding them.

    Attributes
    ----------
    shape : tuple of int
        (H, W) for gray, (H, W, C) otherwise, as stored in the file (of one
        frame, for a stack).
    dtype : numpy.dtype
        The pixel type.
    stack : StackLayout or None
        How a stack (a multi-page TIFF, an animated PNG) holds its frames;
        None for a single image.
    """

    shape: tuple[int, ...]
    dtype: numpy.dtype
    stack: StackLayout | None = None

    @property
    def frames(self) -> int:
        """Frames of a stack, 0 for a single image."""
        return 0 if self.stack is None else self.stack.frames

    @property
    def layout_channels(self) -> int:
        """Channels of the file (0 for a 2-D gray image)."""
        return self.shape[2] if len(self.shape) == 3 else 0

    @property
    def has_alpha(self) -> bool:
        return self.layout_channels in (2, 4)

    @property
    def colour_shape(self) -> tuple[int, ...]:
        """Shape of the channels that are filtered (alpha left out)."""
        if self.has_alpha:
            return (*self.shape[:2], self.layout_channels - 1)
        return self.shape


@dataclass
class Image:
    """Pixel data split into the part to filter and an untouched alpha channel.

    Attributes
    ----------
    colour : ndarray, shape (H, W) or (H, W, C); (P, H, W[, C]) for a stack
        Gray or colour channels, in the file's dtype.
    alpha : ndarray or None, shape (H, W); (P, H, W) for a stack
        The alpha channel, passed through unchanged.
    layout_channels : int
        Channels of the file (0 for gray without a channel axis).
    stack : StackLayout or None
        How a multi-page TIFF holds its frames, None for a single image.
    """

    colour: numpy.ndarray
    alpha: numpy.ndarray | None
    layout_channels: int
    stack: StackLayout | None = None

    @property
    def dtype(self) -> numpy.dtype:
        return self.colour.dtype

    def assemble(self, colour: numpy.ndarray) -> numpy.ndarray:
        """Return ``colour`` (float, filtered) in the file's dtype and layout, alpha restored."""
        pixels = cast_like(colour, self.dtype)
        if self.alpha is None:
            return pixels
        if pixels.ndim == self.alpha.ndim:  # gray values without a channel axis
            pixels = pixels[..., None]
        return numpy.concatenate([pixels, self.alpha[..., None]], axis=-1)


@dataclass(frozen=True)
class StackLayout:
    """How a stack (a multi-page TIFF, or an animated PNG) stores its frames, to write the output the
    same way.

    Attributes
    ----------
    shape : tuple of int
        The series' shape, e.g. (T, Z, H, W) or (P, H, W, 3); the frames are
        its leading axes, flattened.
    axes : str
        tifffile's axis letters for ``shape`` (``'TZYX'``, ``'QYXS'``...).
    imagej : dict or None
        ImageJ metadata to keep (spacing, unit, frame interval, ...).
    ome : dict or None
        OME pixel sizes to keep (``PhysicalSizeX`` and its unit, ...).
    photometric : str
        'rgb' or 'minisblack'.
    resolution : tuple of float or None
        The first page's X and Y resolution, with ``resolution_unit``.
    resolution_unit : int
        The TIFF resolution unit (1 none, 2 inch, 3 centimetre).
    """

    shape: tuple[int, ...]
    axes: str
    imagej: dict[str, Any] | None = None
    ome: dict[str, Any] | None = None
    photometric: str = "minisblack"
    resolution: tuple[float, float] | None = None
    resolution_unit: int = 1

    @property
    def leading_axes(self) -> int:
        """The number of leading (frame) axes of the series."""
        return len(self.axes) - (3 if self.axes.endswith("YXS") else 2)

    @property
    def frames(self) -> int:
        """The frames: the leading axes' sizes multiplied."""
        return math.prod(self.shape[: self.leading_axes])

    @property
    def voxel_spacing(self) -> tuple[float, float, float] | None:
        """(Z, Y, X) voxel spacing in one unit where the file gives it (ImageJ's slice spacing and the page
        resolution, or OME's physical sizes), else None."""
        if self.ome and all(f"PhysicalSize{axis}" in self.ome for axis in "ZYX"):
            try:
                return tuple(float(self.ome[f"PhysicalSize{axis}"]) for axis in "ZYX")
            except (TypeError, ValueError):
                return None
        if self.imagej and "spacing" in self.imagej and self.resolution and all(self.resolution):
            return (float(self.imagej["spacing"]), 1 / self.resolution[1], 1 / self.resolution[0])
        return None

    @property
    def ordered(self) -> bool:
        """Whether its frames are known to be in order: one frame axis, of time (T) or depth (Z)."""
        return self.leading_axes == 1 and self.axes[0] in "TZ"

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of one frame, (H, W) or (H, W, C)."""
        return tuple(self.shape[self.leading_axes :])


@dataclass(frozen=True)
class Stack:
    """Output pixels of a stack, (P, H, W[, C]) in the file's dtype, and how to lay them out."""

    pixels: numpy.ndarray
    layout: StackLayout

    @property
    def dtype(self) -> numpy.dtype:
        return self.pixels.dtype


def cast_like(values: numpy.ndarray, dtype: numpy.dtype) -> numpy.ndarray:
    """Convert float ``values`` to ``dtype``: integers rounded and clipped to their range, floats as is."""
    dtype = numpy.dtype(dtype)
    if dtype.kind in "ui":
        limits = numpy.iinfo(dtype)
        return numpy.clip(numpy.rint(values), limits.min, limits.max).astype(dtype)
    return values.astype(dtype)


def read_header(path: Path) -> ImageHeader:
    """Read the shape and pixel type of ``path`` from its header, without decoding the pixels.

    The format is told by the file's first bytes, not by its extension.
    Pillow's decompression-bomb limit is lifted here and in
    :func:`read_image`: the callers refuse images by the size this header
    gives (time and memory, :func:`nlfilt.cli.options.check_plan`) before
    decoding, in nlfilt's words and with remedies.

    Raises
    ------
    ImageError
        For an empty or unreadable file, one that is not a PNG, TIFF, JPEG,
        BMP or WebP file, is damaged, holds several frames (other than a
        multi-page TIFF or an animated PNG, a stack: ``frames``), or has an
        unsupported pixel type or channel layout, and for files the codecs
        would read with data lost (16-bit colour PNG without imagecodecs,
        32-bit BMP).
    """
    with _opening():
        return _read_header(Path(path))


def _read_header(path: Path) -> ImageHeader:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read ({_reason(exc)})") from None
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    kind = _file_format(path)
    _refuse_lossy_reads(path)
    sixteen = _sixteen_bit_colour_png(path)
    if sixteen is not None:
        return sixteen
    if kind == "TIFF":
        header = _tiff_header(path)
        _check_layout(header)
        return header
    try:
        properties = iio.improps(path, index=..., plugin=_PLUGINS[kind])  # every frame or page
        problem = _colour_model_problem(*_colour_model(path, kind))
    except Exception as exc:  # the codecs raise many types for damaged files
        raise ImageError(_damaged(kind, exc)) from None
    if problem:
        raise ImageError(problem)
    dtype = _pixel_type(properties.dtype)
    shape = tuple(int(side) for side in properties.shape)
    if properties.is_batch:
        if shape[0] > 1 and kind == "PNG":  # an animated PNG: a stack of its frames
            samples = len(shape) == 4
            layout = StackLayout(shape, "QYXS" if samples else "QYX",
                                 photometric="rgb" if samples and shape[3] in (3, 4) else "minisblack")
            header = ImageHeader(shape[1:], dtype, layout)
            _check_layout(header)
            return header
        if shape[0] > 1:
            raise ImageError(f"{shape[0]} frames or pages; only single images, multi-page TIFF and animated "
                             "PNG are supported")
        shape = shape[1:]
    header = ImageHeader(shape, dtype)
    _check_layout(header)
    return header


def read_image(path: Path, header: ImageHeader | None = None, *, stacks: bool = False) -> Image:
    """Read ``path`` and split off its alpha channel.

    The header is checked first (:func:`read_header`, or ``header`` when the
    caller has read it already), so a file that would be refused is never
    decoded.  A multi-page TIFF is read as a stack (:attr:`Image.stack`) when
    ``stacks`` is true, and refused otherwise.

    Raises
    ------
    ImageError
        As :func:`read_header`, when the pixels cannot be decoded, and when
        they are not what the header said (a damaged file: the size checks
        were made on the header).
    """
    with _opening():
        return _read_image(Path(path), header, stacks)


def _read_image(path: Path, header: ImageHeader | None, stacks: bool) -> Image:
    header = _read_header(path) if header is None else header
    if header.stack is not None and not stacks:
        raise ImageError(f"multi-page TIFF ({header.frames} frames); this command takes a single image")
    if header.stack is not None:
        return _read_stack(path, header)
    kind = _file_format(path)
    try:
        if _sixteen_bit_colour_png(path) is not None:
            pixels = numpy.asarray(_imagecodecs().png_decode(path.read_bytes()))
        elif kind == "TIFF":
            pixels = _tiff_pixels(path, stack=False)
        else:
            pixels = numpy.asarray(iio.imread(path, plugin=_PLUGINS[kind]))
    except Exception as exc:  # the codecs raise many types for damaged files
        raise ImageError(_damaged(kind, exc)) from None
    if pixels.ndim == 3 and pixels.shape[0] == 1 and len(header.shape) == 2:
        pixels = pixels[0]
    _check_decoded(pixels, header.shape, header.dtype)
    if pixels.ndim == 2:
        return Image(pixels, None, 0)
    if pixels.shape[2] in (1, 3):
        return Image(pixels, None, pixels.shape[2])
    return Image(pixels[:, :, :-1], pixels[:, :, -1], pixels.shape[2])


#: ImageJ metadata entries a stack's output keeps (tifffile writes the others from the data).
_IMAGEJ_KEYS = ("spacing", "unit", "finterval", "fps", "loop", "min", "max", "Labels", "Ranges", "LUTs")

#: The axes of one frame as tifffile names them: rows and columns, with samples (channels) or without.
_FRAME_AXES = ("YXS", "YX")


def open_tiff(path: Path) -> Any:
    """``tifffile.TiffFile(path)`` with its chain of pages walked, to be closed by the caller.

    Walking the pages first (counting them) stops at a page that links back
    to an earlier one; tifffile's ``series`` of a file opened afresh would go
    round such a loop for ever (found by fuzzing).
    """
    import tifffile  # noqa: PLC0415 - imageio's TIFF plugin; only needed for TIFF files

    tiff = tifffile.TiffFile(path)
    try:
        len(tiff.pages)
    except BaseException:
        tiff.close()
        raise
    return tiff


def _tiff_header(path: Path) -> ImageHeader:
    """The header of the TIFF ``path``: its first page, or, when it has several (a stack), its first
    series with its layout; or ImageError."""
    try:
        import tifffile  # noqa: PLC0415 - imageio's TIFF plugin

        with open_tiff(path) as tiff:
            pages = len(tiff.pages)
            series = tiff.series[0]
            page = tiff.pages.first
            axes = series.axes
            problem = _colour_model_problem(*_tiff_colour_model(page))
            dtype = None if page.dtype is None else (series if pages > 1 else page).dtype  # None: unknown
            shape = tuple(int(side) for side in (series if pages > 1 else page).shape)
            layout = None
            if pages > 1:
                imagej = None
                if tiff.is_imagej:
                    metadata = tiff.imagej_metadata or {}
                    imagej = {key: metadata[key] for key in _IMAGEJ_KEYS if key in metadata}
                ome = None
                if tiff.is_ome:
                    pixels = tifffile.xml2dict(tiff.ome_metadata)["OME"]["Image"]
                    pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
                    ome = {key: value for key, value in pixels.items() if key.startswith("PhysicalSize")
                           or key.startswith("TimeIncrement")}
                resolution = tuple(float(value) for value in page.resolution) if page.resolution else None
                layout = StackLayout(shape, axes, imagej, ome,
                                     "rgb" if axes.endswith("S") and shape[-1] in (3, 4) else "minisblack",
                                     resolution, int(page.resolutionunit))
    except Exception as exc:  # tifffile raises many types for unreadable files
        raise ImageError(_damaged("TIFF", exc)) from None
    if problem:
        raise ImageError(problem)
    dtype = _pixel_type(dtype)
    if layout is None:
        return ImageHeader(shape, dtype)
    if not any(layout.axes.endswith(frame) for frame in _FRAME_AXES) or layout.leading_axes < 1:
        raise ImageError(f"unsupported TIFF stack of axes {layout.axes} and shape {layout.shape}: "
                         "expected frames of rows and columns (..., Y, X) with or without samples (S)")
    return ImageHeader(layout.frame_shape, dtype, layout)


def _tiff_pixels(path: Path, stack: bool) -> numpy.ndarray:
    """The pixels :func:`_tiff_header` describes: the first series of a ``stack``, else the first page."""
    with open_tiff(path) as tiff:
        return numpy.asarray((tiff.series[0] if stack else tiff.pages.first).asarray())


def _read_stack(path: Path, header: ImageHeader) -> Image:
    """Read a stack (``header.stack``: a multi-page TIFF, or an animated PNG) as (P, H, W[, C]) frames
    and split off the alpha channel."""
    layout = header.stack
    kind = _file_format(path)
    try:
        if kind == "PNG":  # read_header takes only PNG and TIFF files as stacks
            pixels = numpy.asarray(iio.imread(path, index=None, plugin=_PLUGINS[kind]))
        else:
            pixels = _tiff_pixels(path, stack=True)
    except Exception as exc:  # the codecs raise many types for damaged files
        raise ImageError(_damaged(kind, exc)) from None
    frames = (header.frames, *header.shape)
    if pixels.size == math.prod(frames):  # the series' leading axes flattened
        pixels = pixels.reshape(frames)
    _check_decoded(pixels, frames, header.dtype)
    channels = header.layout_channels
    if channels in (2, 4):
        return Image(pixels[..., :-1] if channels == 4 else pixels[..., 0], pixels[..., -1], channels, layout)
    return Image(pixels, None, channels, layout)


def write_stack(path: Path, stack: Stack, *, replace: bool = True, partials: Path | None = None) -> None:
    """Write ``stack`` to the TIFF ``path`` atomically, in its input's layout: the same series shape,
    dtype and photometric interpretation, and the ImageJ or OME metadata (axes, spacing, pixel sizes,
    units) and resolution the input had, where tifffile can write them with this dtype."""
    import tifffile  # noqa: PLC0415 - imageio's TIFF plugin; only needed for TIFF files

    layout = stack.layout
    data = stack.pixels.reshape(layout.shape)
    options: dict[str, Any] = {"photometric": layout.photometric}
    if layout.resolution is not None:
        options.update(resolution=layout.resolution, resolutionunit=layout.resolution_unit)
    imagej_dtypes = (numpy.uint8, numpy.uint16, numpy.float32)
    if layout.imagej is not None and data.dtype in imagej_dtypes and set(layout.axes) <= set("TZCYXS"):
        options.update(imagej=True, metadata={"axes": layout.axes, **layout.imagej})
    elif layout.ome is not None:
        options.update(ome=True, metadata={"axes": layout.axes, **layout.ome})
    else:
        options.update(metadata={"axes": layout.axes})
    write_atomically(path, lambda temporary: tifffile.imwrite(temporary, data, **options), replace=replace,
                     partials=partials)


#: The colour models read as they are: Pillow's modes (palette images come out as RGB or RGBA) and TIFF's
#: photometric interpretations (YCbCr too, where JPEG-compressed: its decoder gives RGB).
_PILLOW_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_TIFF_MODELS = ("MINISBLACK", "RGB")
#: What the others are, in words.
_COLOUR_MODELS = {"CMYK": "CMYK", "SEPARATED": "CMYK", "YCbCr": "YCbCr", "YCBCR": "YCbCr", "LAB": "L*a*b*",
                  "CIELAB": "L*a*b*", "ICCLAB": "L*a*b*", "ITULAB": "L*a*b*", "HSV": "HSV"}


def _colour_model(path: Path, kind: str) -> tuple[str, str | None, bool]:
    """(kind, Pillow's mode of the first frame, False) for a file Pillow reads; see
    :func:`_tiff_colour_model` for TIFF.  Read from the header alone."""
    from PIL import Image as pillow  # noqa: PLC0415 - imageio's codec for PNG, JPEG, BMP and WebP

    with pillow.open(path) as image:
        return kind, image.mode, False


def _tiff_colour_model(page: Any) -> tuple[str, str | None, bool]:
    """("TIFF", the photometric interpretation of a tifffile page, whether it is JPEG-compressed)."""
    import tifffile  # noqa: PLC0415 - imageio's TIFF plugin; only needed for TIFF files

    try:
        model = tifffile.PHOTOMETRIC(int(page.photometric)).name
    except (TypeError, ValueError):  # a damaged tag: another type, or a number TIFF does not define
        model = repr(page.photometric)[:40]
    jpeg = page.compression in (tifffile.COMPRESSION.JPEG, tifffile.COMPRESSION.OJPEG)
    return "TIFF", model, jpeg


def _colour_model_problem(kind: str, model: str | None, jpeg: bool) -> str | None:
    """Why a file of ``kind`` in the colour ``model`` (see :func:`_colour_model`) is refused, or None.

    nlfilt filters gray and RGB channels and writes them back as gray and RGB: a CMYK, YCbCr or L*a*b*
    file would be filtered, and written, as channels it does not hold (CMYK's K as an alpha channel), a
    min-is-white TIFF written back inverted, and a palette TIFF's colour indices filtered as values.
    """
    if model is None or model in (_TIFF_MODELS if kind == "TIFF" else _PILLOW_MODES):
        return None
    if model == "YCBCR" and jpeg:  # the JPEG decoder gives RGB
        return None
    if model == "MINISWHITE":
        return ("min-is-white gray (0 is white): it would be written back as min-is-black, inverted; convert "
                "it to min-is-black first")
    if model == "PALETTE":
        return ("palette (indexed colour) TIFF: its pixels are indices into a colour table, not values; "
                "convert it to RGB first")
    if model in _COLOUR_MODELS:
        return (f"{_COLOUR_MODELS[model]} colour; nlfilt filters gray and RGB images (with or without "
                "alpha): convert it to RGB first")
    tag = "photometric interpretation" if kind == "TIFF" else "Pillow's mode"
    return (f"a colour model nlfilt does not read ({tag} {model}); it filters gray and RGB images (with or "
            "without alpha): convert it to RGB first")


def _pixel_type(dtype: Any) -> numpy.dtype:
    """The pixel type a codec read from a header; ImageError where it found none (numpy would take
    None for float64)."""
    if dtype is None:
        raise ImageError("unknown pixel type: the header's sample format and bit depth name none that the "
                         "codec reads")
    return numpy.dtype(dtype)


def _check_layout(header: ImageHeader) -> None:
    if header.dtype.kind not in "uif":
        raise ImageError(f"unsupported pixel type {header.dtype}")
    if 0 in header.shape:
        raise ImageError(f"empty image (shape {header.shape})")
    if len(header.shape) == 2 or (len(header.shape) == 3 and header.shape[2] in (1, 2, 3, 4)):
        return
    raise ImageError(f"unsupported layout {header.shape}: expected gray, gray+alpha, RGB or RGBA")


def storage_problem(suffix: str, dtype: numpy.dtype, layout_channels: int, frames: int = 0) -> str | None:
    """Why a file with extension ``suffix`` cannot store these pixels faithfully, or None.

    ``layout_channels`` is the file layout's channel count (0 for 2-D gray);
    ``frames`` the pages of a stack (0 for a single image).
    """
    suffix = suffix.lower()
    dtype = numpy.dtype(dtype)
    if suffix not in IMAGE_EXTENSIONS:
        known = ", ".join(IMAGE_EXTENSIONS)
        return f"unknown image format {suffix or '(no extension)'!r}; use one of {known}"
    if frames and suffix not in (".tif", ".tiff", ".png"):
        return (f"a stack of {frames} frames needs a TIFF output (.tif) or an animated PNG (.png), not "
                f"{suffix}")
    if frames and suffix == ".png" and dtype != numpy.uint8:
        return f"an animated PNG stores 8-bit frames only; a stack of {dtype} frames needs .tif"
    if dtype.kind == "f" and suffix not in (".tif", ".tiff"):
        return f"{dtype} pixels need a TIFF output (.tif), not {suffix}"
    if dtype != numpy.uint8 and suffix in _EIGHT_BIT:
        return f"{suffix} stores 8-bit pixels only; {dtype} needs .png (gray) or .tif"
    if suffix == ".png" and dtype not in (numpy.uint8, numpy.uint16):
        return f"PNG stores 8- and 16-bit unsigned pixels only; {dtype} needs .tif"
    if suffix == ".png" and dtype == numpy.uint16 and layout_channels > 1 and _imagecodecs() is None:
        return ("16-bit colour PNG needs imagecodecs (pip install imagecodecs; Pillow writes 16-bit gray "
                "only); or use .tif")
    if suffix == ".webp" and layout_channels in (0, 1, 2):
        return "WebP has no gray mode (a gray image would be written, and read back, as RGB); use .png"
    if suffix in (".jpg", ".jpeg", ".bmp") and layout_channels in (2, 4):
        return f"{suffix} cannot store an alpha channel; use .png or .tif"
    return None


def same_format(first: str, second: str) -> bool:
    """Whether two extensions name the same file format (.tif and .tiff, .jpg and .jpeg)."""
    first, second = first.lower(), second.lower()
    return _FORMATS.get(first, first) == _FORMATS.get(second, second)


def write_image(path: Path, pixels: numpy.ndarray | Stack, *, replace: bool = True,
                partials: Path | None = None) -> None:
    """Write ``pixels`` (or a :class:`Stack`, see :func:`write_stack`) to ``path`` atomically, in the
    format of its extension.

    The data go to a partial file in the target folder, renamed to ``path``
    only once complete, so an interrupted run never leaves a partial image.
    A new file gets the mode the user's umask gives new files; a replaced
    one keeps its mode.

    With ``replace=False`` an existing ``path`` is never replaced, even one
    that another process finished while this one was writing: the partial
    file is hard-linked to ``path`` (which fails when ``path`` exists) and
    :class:`OutputExists` is raised.  On file systems without hard links the
    check and the rename are two steps.

    ``partials`` is the folder the partial file is written in, on the file
    system of ``path`` (a run's, from :func:`make_partials_folder`; it is
    never created here, so a write into one already removed fails and leaves
    nothing); None: the folder of ``path``.

    Raises
    ------
    ImageError
        When the format cannot store the data as they are, or the write fails.
    OutputExists
        With ``replace=False``, when ``path`` exists.
    """
    path = Path(path)
    if isinstance(pixels, Stack):
        problem = storage_problem(path.suffix, pixels.dtype, 0, frames=pixels.pixels.shape[0])
        if problem:
            raise ImageError(problem)
        if path.suffix.lower() == ".png":  # an animated PNG, every frame kept (lossless)
            write_atomically(path, lambda temporary: iio.imwrite(temporary, pixels.pixels, extension=".png"),
                             replace=replace, partials=partials)
            return
        write_stack(path, pixels, replace=replace, partials=partials)
        return
    problem = storage_problem(path.suffix, pixels.dtype, 0 if pixels.ndim == 2 else pixels.shape[2])
    if problem:
        raise ImageError(problem)
    if path.suffix.lower() == ".png" and pixels.dtype == numpy.uint16 and pixels.ndim == 3:
        encoded = _imagecodecs().png_encode(numpy.ascontiguousarray(pixels))
        write_atomically(path, lambda temporary: temporary.write_bytes(encoded), replace=replace,
                         partials=partials)
        return
    options = {".jpg": {"quality": 95}, ".jpeg": {"quality": 95},
               ".webp": {"lossless": True, "exact": True}}.get(path.suffix.lower(), {})
    write_atomically(path, lambda temporary: iio.imwrite(temporary, pixels, extension=path.suffix, **options),
                     replace=replace, partials=partials)


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be created (where missing) and written into, or None."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot be created: {existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write into {existing}: permission denied"
    return None


def write_atomically(path: Path, write: Callable[[Path], None], *, replace: bool = True,
                     partials: Path | None = None) -> None:
    """Have ``write(temporary)`` write the file, then put it at ``path`` (see :func:`write_image`:
    a partial file in the target folder or in ``partials``, renamed or hard-linked when complete,
    removed on any failure or interrupt; ``replace=False`` never replaces an existing ``path``)."""
    path = Path(path)
    if not replace and path.exists():
        raise OutputExists(_WRITTEN_MEANWHILE)
    folder = path.parent if partials is None else partials
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", dir=folder,
                                         suffix=f".{_writer_tag()}.partial{path.suffix}")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, _output_mode(path))
        if replace:
            os.replace(temporary, path)
        else:
            _place_new(Path(temporary), path)
    except BaseException as exc:  # an interrupt too: leave nothing behind
        Path(temporary).unlink(missing_ok=True)
        if not isinstance(exc, Exception) or isinstance(exc, OutputExists):
            raise
        raise ImageError(f"cannot write ({_reason(exc)})") from None


_WRITTEN_MEANWHILE = ("output appeared while this run computed it (another run wrote it); kept that file "
                      "(use --overwrite to replace it)")


def _place_new(temporary: Path, path: Path) -> None:
    """Move ``temporary`` to ``path`` unless ``path`` exists (then raise OutputExists)."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise OutputExists(_WRITTEN_MEANWHILE) from None
    except OSError:  # no hard links here (FAT, some network file systems)
        if path.exists():
            raise OutputExists(_WRITTEN_MEANWHILE) from None
        os.replace(temporary, path)
        return
    temporary.unlink()


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove the partial outputs in ``folder`` left by writers on this host that no longer run, and
    the partials folders of runs on this host that no longer run (with what is in them).

    Partial files of live processes, of other hosts (a shared folder) and
    files not named by nlfilt are left alone.  Returns the removed paths.
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    host = _host_tag()
    for entry in entries:
        match = _PARTIAL.match(entry.name) or _PARTIALS_FOLDER.match(entry.name)
        if match is None or match["host"] != host or _process_alive(int(match["pid"])):
            continue
        if match.re is _PARTIALS_FOLDER:
            remove_partials_folder(entry)
            removed.append(entry)
            continue
        try:
            entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


def make_partials_folder(folder: Path) -> Path:
    """Create (with ``folder`` if missing) and return a new hidden folder in ``folder`` for the partial
    outputs of writers in other processes (``partials`` of :func:`write_image`): a cluster run's workers.

    Its name carries this process's host and id, so that a later run removes
    it if this one dies before :func:`remove_partials_folder` (see
    :func:`remove_stale_partials`).  Its mode is that of a new folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        path = folder / f".{_writer_tag()}.{secrets.token_hex(4)}.partials"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path


def remove_partials_folder(path: Path) -> None:
    """Remove a partials folder and every file in it, so that nothing written into it survives, even by
    a writer that is still running (a worker that is dying, or that the cluster gave up for dead).

    The folder is first renamed: from then on a writer that creates a file
    under its path fails, and nothing creates the folder again (writers never
    do), so nothing new can appear; what was written before, and what a
    writer that holds an open file still writes, goes with the renamed folder.
    """
    path = Path(path)
    doomed = path if path.name.endswith(".removed") else path.with_name(f"{path.name}.removed")
    if doomed != path:
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        except OSError:  # a removed folder left by an earlier try (an unlikely clash) or no rename here
            doomed = path
    for _ in range(3):  # a file can still appear only through a directory handle held from before
        shutil.rmtree(doomed, ignore_errors=True)
        if not os.path.lexists(doomed):
            return


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


@lru_cache(maxsize=1)
def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname().split(".")[0]) or "host"


def _writer_tag() -> str:
    return f"nlfilt-{_host_tag()}-{os.getpid()}"


_UMASK_LOCK = threading.Lock()


def _output_mode(path: Path) -> int:
    """Mode of a written output: an existing file's own, else what the umask gives a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        pass
    with _UMASK_LOCK:  # the umask can only be read by setting it
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


#: Channels of a PNG's colour types with colour or alpha (gray+alpha, RGB, RGBA).
_PNG_CHANNELS = {4: 2, 2: 3, 6: 4}


@lru_cache(maxsize=1)
def _imagecodecs() -> Any:
    """imagecodecs (the 16-bit colour PNG codec), or None when it is not installed."""
    try:
        import imagecodecs  # noqa: PLC0415 - only for 16-bit colour PNG
    except ImportError:
        return None
    return imagecodecs


def _sixteen_bit_colour_png(path: Path) -> ImageHeader | None:
    """The header of a 16-bit PNG with colour or alpha (read from its IHDR chunk), else None."""
    try:
        with open(path, "rb") as stream:
            header = stream.read(26)
    except OSError:
        return None
    if len(header) < 26 or header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    bit_depth, colour_type = header[24], header[25]
    if bit_depth != 16 or colour_type not in _PNG_CHANNELS:
        return None
    return ImageHeader((height, width, _PNG_CHANNELS[colour_type]), numpy.dtype(numpy.uint16))


def _refuse_lossy_reads(path: Path) -> None:
    """Raise ImageError for files that no installed codec reads without data lost.

    Pillow reads a 16-bit PNG with colour or alpha as 8 bits (imagecodecs,
    when installed, reads it exactly); a 32-bit BMP loses its alpha channel.
    """
    try:
        with open(path, "rb") as stream:
            header = stream.read(30)
    except OSError as exc:
        raise ImageError(f"cannot read ({_reason(exc)})") from None
    if _sixteen_bit_colour_png(path) is not None and _imagecodecs() is None:
        raise ImageError("16-bit colour or gray+alpha PNG: Pillow would truncate it to 8 bits, and "
                         "imagecodecs, which reads it exactly, is not installed (pip install imagecodecs); "
                         "or convert it to TIFF")
    if len(header) >= 30 and header[:2] == b"BM" and int.from_bytes(header[28:30], "little") == 32:
        raise ImageError("32-bit BMP: the BMP codec would drop its alpha channel; convert it to PNG")


def _file_format(path: Path) -> str:
    """The format ``path`` holds, told by its first bytes: 'PNG', 'TIFF', 'JPEG', 'BMP' or 'WebP'; an
    ImageError for any other file (GIF, text, ...)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(12)
    except OSError as exc:
        raise ImageError(f"cannot read ({_reason(exc)})") from None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    for kind, signature in _SIGNATURES:
        if head.startswith(signature):
            return kind
    raise ImageError("not a PNG, TIFF, JPEG, BMP or WebP file (its first bytes are those of none of them)")


def _damaged(kind: str, exc: BaseException) -> str:
    """The message for a ``kind`` file its codec could not read, with the codec's own words."""
    return (f"cannot read this {kind} file: damaged, truncated or a variant its codec does not read "
            f"({_reason(exc)})")


def _check_decoded(pixels: numpy.ndarray, shape: tuple[int, ...], dtype: numpy.dtype) -> None:
    """ImageError when the decoded ``pixels`` are not of the ``shape`` and ``dtype`` the header said (a
    damaged file: the checks of size, cost and layout were made on the header)."""
    if pixels.shape != tuple(shape) or pixels.dtype != dtype:
        raise ImageError(f"damaged file: the decoded pixels ({pixels.dtype}, {pixels.shape}) are not what "
                         f"its header says ({numpy.dtype(dtype)}, {tuple(shape)})")


#: How many threads are in :func:`_opening` now, and Pillow's limit to restore when the last one leaves.
_OPENING_LOCK = threading.Lock()
_opening_state: dict[str, Any] = {"threads": 0, "saved_limit": None, "saved_level": logging.NOTSET}


@contextmanager
def _opening() -> Iterator[None]:
    """Open image files with the codecs' warnings and log messages silenced and Pillow's
    decompression-bomb limit lifted.

    A damaged file is refused with one message in nlfilt's words (the
    codec's error in it); tifffile would log every oddity of its tags to
    stderr on top of it.  nlfilt refuses images by the size in their header,
    before decoding, in its own words (the callers:
    :func:`nlfilt.cli.options.check_plan`); Pillow's limit would refuse some
    of them first, in Pillow's, and a few that nlfilt accepts.  The limit and
    the log level are global settings, so they are changed while any thread
    opens a file and restored when the last is done.
    """
    from PIL import Image as pillow  # noqa: PLC0415 - imageio's codec for PNG, JPEG, BMP and WebP

    log = logging.getLogger("tifffile")
    with _OPENING_LOCK:
        if _opening_state["threads"] == 0:
            _opening_state["saved_limit"] = pillow.MAX_IMAGE_PIXELS
            _opening_state["saved_level"] = log.level
            pillow.MAX_IMAGE_PIXELS = None
            log.setLevel(logging.CRITICAL + 1)
        _opening_state["threads"] += 1
    try:
        with warnings.catch_warnings():  # plugin notices, and Pillow's about large or damaged files
            warnings.simplefilter("ignore")
            yield
    finally:
        with _OPENING_LOCK:
            _opening_state["threads"] -= 1
            if _opening_state["threads"] == 0:
                pillow.MAX_IMAGE_PIXELS = _opening_state["saved_limit"]
                log.setLevel(_opening_state["saved_level"])


def _reason(exc: BaseException) -> str:
    """The first line of ``exc``, with its type; for imageio's wrappers (which say only that no plugin
    could read the file), of the codec's error beneath."""
    while (exc.__cause__ or exc.__context__) is not None and _raised_by_imageio(exc):
        exc = exc.__cause__ or exc.__context__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _raised_by_imageio(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f"{os.sep}imageio{os.sep}" in frames[-1].filename
