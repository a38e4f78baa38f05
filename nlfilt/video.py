"""Video files: frames decoded one at a time, filtered as a stream, encoded again; other streams copied.

Through PyAV (FFmpeg), the optional extra ``nlfilt[video]``.  A video's
first video stream is decoded frame by frame into RGB (gray for gray pixel
formats), 8-bit frames as uint8 and deeper ones as uint16 (FFmpeg scales
10 to 16 bits), converted with the frame's own colour matrix and range;
the filtered frames are converted back with the same matrix and range and
encoded with the input's time stamps, so the output keeps the frame count,
size, frame rate (variable ones too) and colour tags.  Audio, subtitle and
attachment streams are copied packet for packet, interleaved with the video
as they came.  Nothing holds the whole video: the filter sees an iterator
of frames (:func:`nlfilt.series.stream_series` holds one window of them).

The encode:

- lossless inputs (FFV1, HuffYUV, Ut Video, raw video, PNG, ...), or when
  asked: FFV1 (level 3) in Matroska, lossless H.264 (``qp 0``) in MP4;
- otherwise H.264 (libx264) at ``CRF`` with preset ``PRESET``, in 8 or 10
  bits as the input, its chroma subsampling kept where x264 has it.

The output is written to a partial file and renamed when complete
(:func:`nlfilt.images.write_atomically`), so an error or an interrupt leaves
no output behind.
"""

from __future__ import annotations

import collections
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy

from nlfilt.images import ImageError, cast_like, write_atomically
from nlfilt.noise import estimate_sigma

#: Video files read (by suffix), and the containers written.
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm")
VIDEO_OUTPUTS = {".mkv": "matroska", ".mp4": "mp4"}
#: Codecs whose streams are stored without loss: their outputs are encoded losslessly.
LOSSLESS_CODECS = frozenset({"ffv1", "ffvhuff", "huffyuv", "utvideo", "rawvideo", "png", "magicyuv", "qtrle",
                             "v210", "v410", "r210", "zlib", "apng", "tiff"})
#: The lossy encode: libx264's constant rate factor and preset (see the README for what they cost).
CRF = 12
PRESET = "medium"
#: Frames the noise level of a video is estimated on (the median of their estimates).
SIGMA_FRAMES = 8
#: How near (in first estimates of the noise) to either end of its range an RGB channel makes its pixel's
#: luma unusable for the noise estimate, tried in turn until some blocks are left (see :func:`noise_level`).
CLIP_MARGINS = (2.0, 1.0, 0.5)
#: Stream types copied into the output.
COPIED = ("audio", "subtitle", "attachment")

_INSTALL = "pip install 'nlfilt[video]'"


def import_av() -> Any:
    """The ``av`` module (PyAV), or ImageError saying how to install it."""
    try:
        import av  # noqa: PLC0415 - optional extra
    except ImportError:
        raise ImageError(f"video files need PyAV: {_INSTALL}") from None
    return av


def is_video(path: Path) -> bool:
    """Whether ``path`` names a video file (by its suffix)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoHeader:
    """What a video file's first video stream holds, read without decoding it.

    Attributes
    ----------
    width, height : int
        Frame size in pixels.
    frames : int
        Frames, as the container counts them or as its duration and rate
        give them (0 when neither says).
    rate : Fraction or None
        Average frame rate.
    codec, pixel_format : str
        FFmpeg's names of the stream's codec and pixel format.
    bits : int
        Bits per sample (8, 10, 12, ...).
    gray : bool
        A gray pixel format (filtered as gray frames).
    lossless : bool
        A lossless codec (``LOSSLESS_CODECS``).
    copied : tuple of str
        The other streams copied into the output ("audio aac", ...).
    """

    width: int
    height: int
    frames: int
    rate: Fraction | None
    codec: str
    pixel_format: str
    bits: int
    gray: bool
    lossless: bool
    copied: tuple[str, ...]

    @property
    def dtype(self) -> numpy.dtype:
        """The frames' pixel type as the filter sees them: uint8 up to 8 bits, else uint16."""
        return numpy.dtype(numpy.uint8 if self.bits <= 8 else numpy.uint16)

    @property
    def channels(self) -> int:
        return 1 if self.gray else 3

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(frames, H, W, C) of the video as a stack."""
        return (self.frames, self.height, self.width, self.channels)


def read_video_header(path: Path) -> VideoHeader:
    """The :class:`VideoHeader` of ``path``; ImageError for a file that is not a video PyAV can decode, has
    no video stream, or has an alpha channel."""
    av = import_av()
    with _opened(av, path) as container:
        return _header(container, _video_stream(av, container))


def denoise_video(source: Path, target: Path,
                  filter_frames: Callable[[Iterator[numpy.ndarray]], Iterator[Any]], *,
                  lossless: bool = False, replace: bool = True, partials: Path | None = None,
                  progress: Callable[[float, int], None] | None = None) -> Written:
    """Decode ``source``, filter its frames with ``filter_frames`` and encode them into ``target`` (.mkv or
    .mp4), copying the other streams; returns what was written (:class:`Written`).

    Parameters
    ----------
    source, target : Path
        The video read and the file written (atomically).
    filter_frames : callable
        Takes an iterator of frames ((H, W, C) arrays of the header's
        ``dtype``, in order) and returns an iterator of as many estimates in
        the same order (any real dtype; NumPy arrays or arrays with a
        ``get()`` to the host), pulling frames as it needs them.
    lossless : bool
        Encode losslessly even when the source is lossy.
    replace : bool
        Replace an existing ``target`` (else OutputExists).
    partials : Path, optional
        The folder of the partial file (see :func:`nlfilt.images.write_image`).
    progress : callable, optional
        ``progress(frames written, frames)`` after every frame.

    Raises
    ------
    ImageError
        PyAV missing, a file that cannot be read or written, an output
        container that cannot hold a copied stream, a filter that returns
        fewer or more frames than it was given.
    """
    av = import_av()
    suffix = Path(target).suffix.lower()
    if suffix not in VIDEO_OUTPUTS:
        raise ImageError(f"a video is written as {' or '.join(VIDEO_OUTPUTS)}, not '{suffix or target.name}'")
    with _opened(av, source) as container:
        stream = _video_stream(av, container)
        header = _header(container, stream)
        plan = _Encode.choose(av, header, VIDEO_OUTPUTS[suffix], lossless or header.lossless)
        plan.check(av, container, stream)

        written = []

        def write(temporary: Path) -> None:
            with av.open(str(temporary), "w", format=plan.container) as output:
                written.append(_transcode(av, container, stream, output, plan, header, filter_frames,
                                          progress))

        write_atomically(Path(target), write, replace=replace, partials=partials)
    return Written(header, plan.codec, plan.pixel_format, plan.lossless, written[0])


@dataclass(frozen=True)
class Written:
    """What :func:`denoise_video` wrote: the source's header, the codec and pixel format of the encode,
    whether it is lossless, and the frames written."""

    source: VideoHeader
    codec: str
    pixel_format: str
    lossless: bool
    frames: int


def noise_level(path: Path, sample: int = SIGMA_FRAMES) -> float:
    """The noise level to filter the frames of ``path`` with, as :func:`denoise_video` hands them out
    (RGB or gray, 8 or 16 bits), estimated on its first ``sample`` frames.

    Gray and RGB pixel formats: the median of the frames'
    :func:`nlfilt.noise.estimate_sigma`.  YUV formats: ``sqrt(3)`` times
    the estimate on the luma plane (scaled as the RGB frames are), the
    noise of the RGB frames' luminance ``(R + G + B) / sqrt(3)``, which the
    collaborative filter's opponent space shrinks; a per-channel estimate
    would miss the chroma noise, low-pass after chroma subsampling.  Noise
    cut by clipping before the colour conversion (bright or dark parts)
    looks smaller in the luma plane than it is, so blocks where an RGB
    channel of the frames lies within ``CLIP_MARGINS`` first estimates of
    its range's ends are left out (the widest margin that leaves blocks).
    """
    av = import_av()
    with _opened(av, path) as container:
        stream = _video_stream(av, container)
        header = _header(container, stream)
        layout, yuv = _layout(header), luminance_noise(header)
        frames, lumas = [], []
        try:
            for frame in container.decode(stream):
                frames.append(_pixels(av, frame, layout))
                if yuv:
                    lumas.append(_pixels(av, frame, "gray" if header.bits <= 8 else "gray16le"))
                if len(frames) == sample:
                    break
        except av.FFmpegError as exc:
            raise ImageError(f"cannot decode frame {len(frames)} ({_reason(exc)})") from None
    if not frames:
        raise ImageError("its video stream has no frames")
    stack = numpy.stack(frames).astype(numpy.float32)
    if not yuv:
        return float(estimate_sigma(numpy, stack))
    luma = numpy.stack(lumas).astype(numpy.float32)
    first = estimate_sigma(numpy, luma)
    top = float(numpy.iinfo(header.dtype).max)
    for margin in CLIP_MARGINS:  # the first that leaves usable blocks
        near = margin * first
        estimate = estimate_sigma(numpy, luma, ((stack <= near) | (stack >= top - near)).any(axis=-1))
        if estimate > 0:
            return float(estimate * 3**0.5)
    return float(first * 3**0.5)


def _pixels(av: Any, frame: Any, layout: str) -> numpy.ndarray:
    """A decoded frame as an (H, W, C) array in ``layout`` ('rgb24', 'gray16le', ...), converted with the
    frame's own colour matrix and range."""
    pixels = frame.to_ndarray(format=layout, src_color_range=frame.color_range, interpolation=_scaling(av))
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


def luminance_noise(header: VideoHeader) -> bool:
    """Whether :func:`noise_level` gives the video the noise of its frames' luminance (YUV formats) rather
    than each channel's own: then the frames' values near their range's ends are not each a clipped normal
    variable of that deviation (chroma subsampled, colour converted), so the collaborative filter's
    declipping is left off for them."""
    return not (header.gray or _rgb_format(header))


def _rgb_format(header: VideoHeader) -> bool:
    """Whether the stream stores RGB (not YUV) samples."""
    return header.pixel_format.startswith(("rgb", "bgr", "gbr", "argb", "abgr", "0rgb", "0bgr", "x2rgb"))


def _layout(header: VideoHeader) -> str:
    """The layout frames are handed to the filter in: gray or RGB, 8 or 16 bits per sample."""
    if header.bits <= 8:
        return "gray" if header.gray else "rgb24"
    return "gray16le" if header.gray else "rgb48le"


class _opened:
    """``av.open(path)`` as a context manager whose failures are ImageError with the reason."""

    def __init__(self, av: Any, path: Path) -> None:
        self.av, self.path = av, Path(path)

    def __enter__(self) -> Any:
        try:
            self.container = self.av.open(str(self.path))
        except self.av.FFmpegError as exc:
            raise ImageError(f"cannot read as a video ({_reason(exc)})") from None
        return self.container

    def __exit__(self, *exc: Any) -> None:
        self.container.close()


def _video_stream(av: Any, container: Any) -> Any:
    """The first video stream of ``container`` (not an attached picture); ImageError when it has none or
    it has an alpha channel."""
    cover = int(av.stream.Disposition.attached_pic)  # cover art: copied, not filtered
    streams = [stream for stream in container.streams.video if not stream.disposition & cover]
    if not streams:
        raise ImageError("has no video stream")
    stream = streams[0]
    context = stream.codec_context
    if context.format is None or context.width <= 0 or context.height <= 0:
        raise ImageError(f"its video stream ({context.name}) has no decodable frames")
    if any(component.is_alpha for component in context.format.components):
        raise ImageError(f"its video has an alpha channel ({context.format.name}), which nlfilt does not "
                         "denoise; convert it without alpha first")
    return stream


def _header(container: Any, stream: Any) -> VideoHeader:
    context = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate
    frames = int(stream.frames or 0)
    if not frames and rate and container.duration:  # Matroska counts no frames: its duration does
        frames = int(round(container.duration / 1_000_000 * rate))
    components = context.format.components
    copied = tuple(_describe(other) for other in _copied_streams(container, stream))
    return VideoHeader(width=context.width, height=context.height, frames=frames,
                       rate=Fraction(rate) if rate else None, codec=context.name,
                       pixel_format=context.format.name, bits=max(component.bits for component in components),
                       gray=len(components) == 1, lossless=context.name in LOSSLESS_CODECS, copied=copied)


def _describe(stream: Any) -> str:
    """'audio aac', 'subtitle subrip', 'attachment font.ttf'..."""
    return f"{stream.type} {_content(stream)}"


def _content(stream: Any) -> str:
    """A stream's codec, or an attachment's file name."""
    if stream.type == "attachment":
        return stream.name
    return stream.codec_context.name if stream.codec_context else "unknown"


def _copied_streams(container: Any, video: Any) -> Iterator[Any]:
    """The streams copied into the output beside ``video``: audio, subtitles, attachments, cover art."""
    return (other for other in container.streams
            if other is not video and (other.type in COPIED or other.type == "video"))


@dataclass(frozen=True)
class _Encode:
    """How the output is written: container, codec, its options and pixel format."""

    container: str
    codec: str
    options: dict[str, str]
    pixel_format: str
    lossless: bool

    @classmethod
    def choose(cls, av: Any, header: VideoHeader, container: str, lossless: bool) -> _Encode:
        if lossless and container == "matroska":
            codec, options = "ffv1", {"level": "3", "slicecrc": "1"}
        elif lossless:
            codec, options = "libx264", {"qp": "0", "preset": PRESET}
        else:
            codec, options = "libx264", {"crf": str(CRF), "preset": PRESET}
        formats = [item.name for item in av.codec.Codec(codec, "w").video_formats]
        return cls(container, codec, options, _pixel_format(header, formats), lossless)

    def check(self, av: Any, container: Any, stream: Any) -> None:
        """ImageError when the output container cannot hold a stream to copy (tried in memory)."""
        trial = av.open(io.BytesIO(), "w", format=self.container)
        try:
            for other in _copied_streams(container, stream):
                kind = f"{other.type} stream #{other.index} ({_content(other)})"
                if other.type == "attachment" and self.container != "matroska":
                    raise ImageError(f"a {self.container} output cannot hold its {kind}; write .mkv")
                if other.type == "attachment":
                    continue
                try:
                    trial.add_stream_from_template(other)
                except (ValueError, av.FFmpegError) as exc:
                    raise ImageError(f"a {self.container} output cannot hold its {kind}: {_reason(exc)}; "
                                     "write .mkv, which holds most") from None
        finally:
            trial.close()


def _pixel_format(header: VideoHeader, formats: list[str]) -> str:
    """The input's pixel format when the encoder takes it, else the nearest it takes: gray, or 4:2:0 (4:4:4
    for RGB sources), at 8 bits or the encoder's next depth up."""
    if header.pixel_format in formats:
        return header.pixel_format
    if header.gray:
        wanted = ["gray"] if header.bits <= 8 else ["gray10le", "gray12le", "gray16le"]
    else:
        rgb = _rgb_format(header)
        layout = "444" if rgb else "422" if "422" in header.pixel_format else "420"
        wanted = ([f"yuv{layout}p"] if header.bits <= 8 else
                  [f"yuv{layout}p{depth}le" for depth in (10, 12, 16) if depth >= min(header.bits, 10)])
        wanted += ["yuv444p" if rgb else "yuv420p"] if header.bits <= 8 else ["yuv420p10le"]
    for name in wanted:
        if name in formats:
            return name
    return formats[0]


def _transcode(av: Any, container: Any, stream: Any, output: Any, plan: _Encode, header: VideoHeader,
               filter_frames: Callable[[Iterator[numpy.ndarray]], Iterator[Any]],
               progress: Callable[[float, int], None] | None) -> int:
    """Decode, filter and encode ``stream`` into ``output``, copying the other streams interleaved; the
    frames written."""
    context = stream.codec_context
    encoder = output.add_stream(plan.codec, rate=header.rate or 25, options=plan.options)
    encoder.width, encoder.height, encoder.pix_fmt = header.width, header.height, plan.pixel_format
    encoder.time_base = stream.time_base
    encoder.codec_context.time_base = stream.time_base
    for name in ("color_range", "colorspace", "color_primaries", "color_trc"):
        setattr(encoder.codec_context, name, getattr(context, name))
    copies = {}
    for other in _copied_streams(container, stream):
        if other.type == "attachment":  # no packets: its data goes into the header
            output.add_attachment(other.name, other.mimetype, other.data)
        else:
            copies[other.index] = output.add_stream_from_template(other)
    output.metadata.update(container.metadata)
    encoder.metadata.update(stream.metadata)
    step = _frame_step(stream, header)
    taken: collections.deque[Any] = collections.deque()  # (pts, colour range, colourspace) of frames read
    waiting: collections.deque[Any] = collections.deque()  # copied packets not yet written
    rgb_format = _layout(header)
    counts = {"read": 0}

    def frames() -> Iterator[numpy.ndarray]:
        last = None
        try:
            for packet in container.demux(stream, *(container.streams[index] for index in copies)):
                if packet.stream is not stream:
                    if packet.dts is not None:
                        waiting.append(packet)
                    continue
                for frame in packet.decode():
                    pts = frame.pts if frame.pts is not None else (0 if last is None else last + step)
                    last = pts
                    taken.append((pts, frame.color_range, frame.colorspace))
                    counts["read"] += 1
                    yield _pixels(av, frame, rgb_format)
        except av.FFmpegError as exc:
            raise ImageError(f"cannot decode frame {counts['read']} ({_reason(exc)})") from None

    written = 0
    total = header.frames
    decoding = frames()
    for estimate in filter_frames(decoding):
        if not taken:
            raise ImageError("the filter returned more frames than it was given")
        pts, colour_range, colourspace = taken.popleft()
        values = cast_like(_on_host(estimate), header.dtype)
        frame = av.VideoFrame.from_ndarray(numpy.ascontiguousarray(values if values.shape[2] > 1 else
                                                                   values[:, :, 0]), format=rgb_format)
        frame = frame.reformat(format=plan.pixel_format, dst_colorspace=colourspace or None,
                               dst_color_range=colour_range or None, interpolation=_scaling(av))
        frame.pts, frame.time_base = pts, stream.time_base
        for packet in encoder.encode(frame):
            output.mux(packet)
        _release(output, waiting, copies, pts * stream.time_base)
        written += 1
        if progress is not None:
            total = max(total, written + len(taken), counts["read"])
            progress(float(written), total)
    if taken or next(decoding, None) is not None:
        raise ImageError(f"the filter returned {written} of {counts['read']} or more frames")
    for packet in encoder.encode():
        output.mux(packet)
    _release(output, waiting, copies, None)
    return written


def _release(output: Any, waiting: collections.deque[Any], copies: dict[int, Any], until: Any) -> None:
    """Write the copied packets that waited, up to time ``until`` (seconds; None: all)."""
    while waiting and (until is None or waiting[0].dts * waiting[0].time_base <= until):
        packet = waiting.popleft()
        packet.stream = copies[packet.stream_index]
        output.mux(packet)


def _frame_step(stream: Any, header: VideoHeader) -> int:
    """One frame's duration in ``stream``'s time base (for frames without a time stamp)."""
    rate = header.rate or Fraction(25)
    return max(1, round(1 / (rate * stream.time_base)))


def _scaling(av: Any) -> Any:
    """swscale's flags for the conversions to RGB and back: spline chroma scaling, accurate rounding, full
    chroma interpolation in and out (a round trip of 8-bit 4:2:0 changes luma by 0.01 levels RMS and
    chroma by 0.1; 10-bit 4:2:0 and 4:2:2 by under 0.5 of their levels; other flags change 8-bit luma
    by over a level, or garble 10-bit 4:2:0)."""
    flags = av.video.reformatter.Interpolation
    return flags.SPLINE | flags.ACCURATE_RND | flags.FULL_CHR_H_INT | flags.FULL_CHR_H_INP


def _on_host(values: Any) -> numpy.ndarray:
    """A NumPy array of ``values`` (a CuPy array is copied to the host)."""
    return values.get() if hasattr(values, "get") else numpy.asarray(values)


def _reason(exc: BaseException) -> str:
    """FFmpeg's reason for an error, without PyAV's errno prefix."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.strip() or type(exc).__name__
