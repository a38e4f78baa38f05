"""Reading and writing image files for the command line, without losing data.

Supported: PNG, TIFF, JPEG and BMP (through imageio; 16-bit PNG with colour
or alpha through imagecodecs, which Pillow would cut to 8 bits); gray,
gray+alpha, RGB and RGBA; unsigned and signed integers and floats.  What a codec cannot store
faithfully is refused with a reason instead of being silently converted.

Outputs are written to a partial file in the target folder and renamed when
complete.  The partial file's name carries the writer's host and process id
(``.NAME.XXXX.nlfilt-HOST-PID.partial.EXT``), so that a later run can remove
the partial files of writers that died (:func:`remove_stale_partials`) and
leave those of live ones alone.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy

#: File name extensions treated as images when a folder is expanded.
IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")

#: Extensions whose codec (Pillow) stores 8-bit data only.
_EIGHT_BIT = (".jpg", ".jpeg", ".bmp")

#: Extensions of one format (an output may change the extension within a format).
_FORMATS = {".tiff": ".tif", ".jpeg": ".jpg"}

#: Partial (unfinished) outputs: ``.<stem>.<random>.nlfilt-<host>-<pid>.partial<suffix>``.
_PARTIAL = re.compile(r"^\..*\.nlfilt-(?P<host>[A-Za-z0-9_-]+?)-(?P<pid>\d+)\.partial\.[A-Za-z]+$")


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
        (H, W) for gray, (H, W, C) otherwise, as stored in the file.
    dtype : numpy.dtype
        The pixel type.
    """

    shape: tuple[int, ...]
    dtype: numpy.dtype

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


def read_header(path: Path) -> ImageHeader:
    """Read the shape and pixel type of ``path`` from its header, without decoding the pixels.

    Raises
    ------
    ImageError
        For an empty or unreadable file, one that is not an image, holds
        several frames or pages, or has an unsupported pixel type or channel
        layout, and for files the codec would read with data lost (16-bit
        colour PNG, 32-bit BMP).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read ({_reason(exc)})") from None
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    _refuse_lossy_reads(path)
    sixteen = _sixteen_bit_colour_png(path)
    if sixteen is not None:
        return sixteen
    pages = _tiff_pages(path)
    if pages > 1:
        raise ImageError(f"multi-page TIFF ({pages} pages); only single images are supported")
    try:
        with warnings.catch_warnings():  # plugin deprecation notices while imageio probes a bad file
            warnings.simplefilter("ignore")
            properties = iio.improps(path, index=...)  # every frame or page
    except Exception as exc:  # imageio raises many types for unreadable files
        raise ImageError(f"cannot read as an image ({_reason(exc)})") from None
    shape = tuple(int(side) for side in properties.shape)
    if properties.is_batch:
        if shape[0] > 1:
            raise ImageError(f"{shape[0]} frames or pages; only single images are supported")
        shape = shape[1:]
    header = ImageHeader(shape, numpy.dtype(properties.dtype))
    _check_layout(header)
    return header


def read_image(path: Path, header: ImageHeader | None = None) -> Image:
    """Read ``path`` and split off its alpha channel.

    The header is checked first (:func:`read_header`, or ``header`` when the
    caller has read it already), so a file that would be refused is never
    decoded.

    Raises
    ------
    ImageError
        As :func:`read_header`, and when the pixels cannot be decoded.
    """
    path = Path(path)
    header = read_header(path) if header is None else header
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if _sixteen_bit_colour_png(path) is not None:
                pixels = numpy.asarray(_imagecodecs().png_decode(path.read_bytes()))
            else:
                pixels = numpy.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types for unreadable files
        raise ImageError(f"cannot read as an image ({_reason(exc)})") from None
    if pixels.ndim == 3 and pixels.shape[0] == 1 and len(header.shape) == 2:
        pixels = pixels[0]
    _check_layout(ImageHeader(pixels.shape, pixels.dtype))
    if pixels.ndim == 2:
        return Image(pixels, None, 0)
    if pixels.shape[2] in (1, 3):
        return Image(pixels, None, pixels.shape[2])
    return Image(pixels[:, :, :-1], pixels[:, :, -1], pixels.shape[2])


def _check_layout(header: ImageHeader) -> None:
    if header.dtype.kind not in "uif":
        raise ImageError(f"unsupported pixel type {header.dtype}")
    if 0 in header.shape:
        raise ImageError(f"empty image (shape {header.shape})")
    if len(header.shape) == 2 or (len(header.shape) == 3 and header.shape[2] in (1, 2, 3, 4)):
        return
    raise ImageError(f"unsupported layout {header.shape}: expected gray, gray+alpha, RGB or RGBA")


def storage_problem(suffix: str, dtype: numpy.dtype, layout_channels: int) -> str | None:
    """Why a file with extension ``suffix`` cannot store these pixels faithfully, or None.

    ``layout_channels`` is the file layout's channel count (0 for 2-D gray).
    """
    suffix = suffix.lower()
    dtype = numpy.dtype(dtype)
    if suffix not in IMAGE_EXTENSIONS:
        known = ", ".join(IMAGE_EXTENSIONS)
        return f"unknown image format {suffix or '(no extension)'!r}; use one of {known}"
    if dtype.kind == "f" and suffix not in (".tif", ".tiff"):
        return f"{dtype} pixels need a TIFF output (.tif), not {suffix}"
    if dtype != numpy.uint8 and suffix in _EIGHT_BIT:
        return f"{suffix} stores 8-bit pixels only; {dtype} needs .png (gray) or .tif"
    if suffix == ".png" and dtype not in (numpy.uint8, numpy.uint16):
        return f"PNG stores 8- and 16-bit unsigned pixels only; {dtype} needs .tif"
    if suffix == ".png" and dtype == numpy.uint16 and layout_channels > 1 and _imagecodecs() is None:
        return ("16-bit colour PNG needs imagecodecs (pip install imagecodecs; Pillow writes 16-bit gray "
                "only); or use .tif")
    if suffix in _EIGHT_BIT and layout_channels in (2, 4):
        return f"{suffix} cannot store an alpha channel; use .png or .tif"
    return None


def same_format(first: str, second: str) -> bool:
    """Whether two extensions name the same file format (.tif and .tiff, .jpg and .jpeg)."""
    first, second = first.lower(), second.lower()
    return _FORMATS.get(first, first) == _FORMATS.get(second, second)


def write_image(path: Path, pixels: numpy.ndarray, *, replace: bool = True) -> None:
    """Write ``pixels`` to ``path`` atomically, in the format of its extension.

    The data go to a partial file in the target folder, renamed to ``path``
    only once complete, so an interrupted run never leaves a partial image.
    A new file gets the mode the user's umask gives new files; a replaced
    one keeps its mode.

    With ``replace=False`` an existing ``path`` is never replaced, even one
    that another process finished while this one was writing: the partial
    file is hard-linked to ``path`` (which fails when ``path`` exists) and
    :class:`OutputExists` is raised.  On file systems without hard links the
    check and the rename are two steps.

    Raises
    ------
    ImageError
        When the format cannot store the data as they are, or the write fails.
    OutputExists
        With ``replace=False``, when ``path`` exists.
    """
    path = Path(path)
    problem = storage_problem(path.suffix, pixels.dtype, 0 if pixels.ndim == 2 else pixels.shape[2])
    if problem:
        raise ImageError(problem)
    if path.suffix.lower() == ".png" and pixels.dtype == numpy.uint16 and pixels.ndim == 3:
        encoded = _imagecodecs().png_encode(numpy.ascontiguousarray(pixels))
        write_atomically(path, lambda temporary: temporary.write_bytes(encoded), replace=replace)
        return
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    write_atomically(path, lambda temporary: iio.imwrite(temporary, pixels, extension=path.suffix, **options),
                     replace=replace)


def write_atomically(path: Path, write: Callable[[Path], None], *, replace: bool = True) -> None:
    """Have ``write(temporary)`` write the file, then put it at ``path`` (see :func:`write_image`:
    a partial file in the target folder, renamed or hard-linked when complete, removed on any failure
    or interrupt; ``replace=False`` never replaces an existing ``path``)."""
    path = Path(path)
    if not replace and path.exists():
        raise OutputExists(_WRITTEN_MEANWHILE)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", dir=path.parent,
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
    """Remove the partial outputs in ``folder`` left by writers on this host that no longer run.

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
        match = _PARTIAL.match(entry.name)
        if match is None or match["host"] != host or _process_alive(int(match["pid"])):
            continue
        try:
            entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


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


def _tiff_pages(path: Path) -> int:
    """Number of pages of a TIFF file (0 for other files)."""
    try:
        with open(path, "rb") as stream:
            magic = stream.read(4)
    except OSError:
        return 0
    if magic not in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return 0
    try:
        import tifffile  # noqa: PLC0415 - imageio's TIFF plugin; only needed for TIFF files

        with tifffile.TiffFile(path) as tiff:
            return len(tiff.pages)
    except Exception:
        return 0  # let the reader report it


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


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
