"""Video files: decoded, filtered as a series (or frame by frame) and encoded, other streams copied, from
the library (:mod:`nlfilt.video`) and the command line."""

from __future__ import annotations

import builtins
import json
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy
import pytest

import nlfilt
from nlfilt.images import ImageError
from nlfilt.video import denoise_video, noise_level, read_video_header

from clitools import report_entries, run

av = pytest.importorskip("av")

SIGMA = 20.0


def moving_scene(frames: int = 16, height: int = 48, width: int = 64, step: int = 2,
                 seed: int = 3) -> numpy.ndarray:
    """(frames, H, W) clean 8-bit-range views of a textured scene panning ``step`` pixels per frame."""
    rng = numpy.random.default_rng(seed)
    big_w = width + step * frames
    rows, cols = numpy.mgrid[0:height, 0:big_w].astype(float)
    scene = 110 + numpy.zeros_like(rows)
    for _ in range(6):
        fy, fx, phase = rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4), rng.uniform(0, 6.3)
        scene += 18 * numpy.sin(fy * rows + fx * cols + phase)
    scene[10:30, 20:44] += 60
    return numpy.stack([scene[:, step * t:step * t + width] for t in range(frames)])


def noisy(clean: numpy.ndarray, sigma: float = SIGMA, seed: int = 5) -> numpy.ndarray:
    values = clean + sigma * numpy.random.default_rng(seed).standard_normal(clean.shape)
    return numpy.clip(numpy.round(values), 0, 255).astype(numpy.uint8)


def write_clip(path, frames: numpy.ndarray, *, codec: str = "ffv1", pixel_format: str = "gray",
               rate: int = 25, audio: str | None = None, subtitles: str | None = None,
               colour_range: int | None = None, options: dict | None = None) -> None:
    """Encode ``frames`` ((T, H, W) gray or (T, H, W, 3) RGB; uint8 or uint16) into ``path``, with a tone
    in ``audio``'s codec and the SubRip text ``subtitles`` muxed in."""
    source = None
    with av.open(str(path), "w") as output:
        video = output.add_stream(codec, rate=rate, options=options or {})
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], pixel_format
        if colour_range is not None:
            video.codec_context.color_range = colour_range
        sound = None
        if audio is not None:
            sound = output.add_stream(audio, rate=48000)
            sound.layout = "mono"
        if subtitles is not None:
            srt = path.with_suffix(".srt")
            srt.write_text(subtitles)
            source = av.open(str(srt))
            text = output.add_stream_from_template(source.streams[0])
        rgb = frames.ndim == 4
        layout = ("rgb24" if frames.dtype == numpy.uint8 else "rgb48le") if rgb else (
            "gray" if frames.dtype == numpy.uint8 else "gray16le")
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(numpy.ascontiguousarray(pixels), format=layout)
            frame = frame.reformat(format=pixel_format, dst_color_range=colour_range)
            frame.pts = index
            for packet in video.encode(frame):
                output.mux(packet)
        for packet in video.encode():
            output.mux(packet)
        if sound is not None:
            samples = 48000 * len(frames) // rate
            tone = (8000 * numpy.sin(numpy.arange(samples) / 9)).astype(numpy.int16)
            context = sound.codec_context
            for start in range(0, samples, 1024):
                chunk = tone[start:start + 1024]
                values = chunk[None, :] if context.format.name == "s16" else (
                    chunk[None, :].astype(numpy.float32) / 32768)
                piece = av.AudioFrame.from_ndarray(values, format=context.format.name, layout="mono")
                piece.sample_rate, piece.pts = 48000, start
                for packet in sound.encode(piece):
                    output.mux(packet)
            for packet in sound.encode():
                output.mux(packet)
        if source is not None:
            for packet in source.demux(source.streams[0]):
                if packet.dts is not None:
                    packet.stream = text
                    output.mux(packet)
    if source is not None:
        source.close()


def decoded(path, layout: str = "gray") -> tuple[numpy.ndarray, list[int]]:
    """The frames of ``path``'s video stream in ``layout`` and their time stamps."""
    with av.open(str(path)) as container:
        frames, stamps = [], []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format=layout, src_color_range=frame.color_range))
            stamps.append(frame.pts)
    return numpy.stack(frames), stamps


def packets(path, kind: str) -> list[bytes]:
    """The payloads of ``path``'s first stream of ``kind``."""
    with av.open(str(path)) as container:
        stream = next(item for item in container.streams if item.type == kind)
        return [bytes(packet) for packet in container.demux(stream) if packet.size]


def psnr(estimate: numpy.ndarray, clean: numpy.ndarray) -> float:
    error = numpy.mean((estimate.astype(float) - clean) ** 2)
    return float(10 * numpy.log10(255**2 / error))


SUBTITLES = "1\n00:00:00,000 --> 00:00:00,200\nfirst line\n\n2\n00:00:00,300 --> 00:00:00,500\nsecond\n"


def test_a_lossless_clip_keeps_its_frames_stamps_audio_and_subtitles_and_is_denoised_as_a_series(tmp_path):
    clean = moving_scene()
    source = tmp_path / "clip.mkv"
    write_clip(source, noisy(clean), audio="pcm_s16le", subtitles=SUBTITLES)
    result = run("denoise", source, "-o", tmp_path / "out.mkv", "--sigma", SIGMA, "--report",
                 tmp_path / "report.jsonl")
    assert result.exit_code == 0, result.output
    entry = report_entries((tmp_path / "report.jsonl").read_text())[0]
    assert entry["status"] == "denoised" and entry["frames"] == 16 and entry["stack"] == "series"
    assert entry["encode"] == "ffv1 gray lossless" and entry["sigma"] == SIGMA
    frames, stamps = decoded(tmp_path / "out.mkv")
    _, source_stamps = decoded(source)
    assert frames.shape == clean.shape and stamps == source_stamps
    header = read_video_header(tmp_path / "out.mkv")
    assert header.rate == Fraction(25) and header.codec == "ffv1" and header.lossless
    assert packets(tmp_path / "out.mkv", "audio") == packets(source, "audio")
    assert packets(tmp_path / "out.mkv", "subtitle") == packets(source, "subtitle")
    # the stream is the library's series filter of the same frames (the output is lossless)
    expected = nlfilt.denoise_collaborative(noisy(clean).astype(numpy.float32), sigma=SIGMA,
                                            channel_axis=None, device="cpu")
    assert numpy.abs(frames.astype(float) - numpy.clip(numpy.round(expected), 0, 255)).max() <= 1
    assert psnr(frames, clean) > psnr(noisy(clean), clean) + 8


def test_a_series_beats_frame_by_frame_on_a_moving_scene(tmp_path):
    clean = moving_scene(frames=12)
    source = tmp_path / "clip.mkv"
    write_clip(source, noisy(clean))
    assert run("denoise", source, "-o", tmp_path / "series.mkv").exit_code == 0
    assert run("denoise", source, "-o", tmp_path / "frames.mkv", "--stack", "frames").exit_code == 0
    series, frames = decoded(tmp_path / "series.mkv")[0], decoded(tmp_path / "frames.mkv")[0]
    assert psnr(series, clean) > psnr(frames, clean) + 1


@pytest.mark.parametrize(("pixel_format", "layout"), [("yuv420p", "rgb24"), ("yuv420p10le", "rgb48le")],
                         ids=["8-bit", "10-bit"])
def test_a_lossy_colour_clip_comes_back_in_its_depth_and_range_with_its_audio(tmp_path, pixel_format, layout):
    clean = moving_scene(frames=8, height=32, width=40)
    rgb = numpy.stack([clean, 0.8 * clean + 20, 255 - clean], axis=-1)
    pixels = noisy(rgb)
    if layout == "rgb48le":
        pixels = pixels.astype(numpy.uint16) * 257
    source = tmp_path / "clip.mp4"
    write_clip(source, pixels, codec="libx264", pixel_format=pixel_format, audio="aac", colour_range=2,
               options={"qp": "0"})
    result = run("denoise", source, "-o", tmp_path / "out.mp4", "--report", tmp_path / "report.jsonl")
    assert result.exit_code == 0, result.output
    entry = report_entries((tmp_path / "report.jsonl").read_text())[0]
    kept = read_video_header(source).pixel_format  # full range 8-bit 4:2:0 decodes as yuvj420p
    assert entry["encode"] == f"libx264 {kept}" and entry["frames"] == 8
    out = tmp_path / "out.mp4"
    header = read_video_header(out)
    assert (header.pixel_format, header.width, header.height, header.frames) == (kept, 40, 32, 8)
    assert header.bits == (8 if layout == "rgb24" else 10)
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.color_range == 2
    assert len(packets(out, "audio")) == len(packets(source, "audio"))
    # against the clean frames through the same 4:2:0 encode (which halves the chroma's detail)
    reference = tmp_path / "clean.mp4"
    scale = 257 if layout == "rgb48le" else 1
    write_clip(reference, numpy.round(rgb).astype(pixels.dtype) * scale, codec="libx264",
               pixel_format=pixel_format, colour_range=2, options={"qp": "0"})
    clean_frames = decoded(reference, layout)[0].astype(float) / scale
    frames = decoded(out, layout)[0].astype(float) / scale
    noisy_frames = decoded(source, layout)[0].astype(float) / scale
    assert psnr(frames, clean_frames) > psnr(noisy_frames, clean_frames) + 6
    assert abs(frames.mean() - noisy_frames.mean()) < 1  # the same levels: the range kept both ways


def test_a_lossy_input_is_encoded_losslessly_when_asked(tmp_path):
    source = tmp_path / "clip.mp4"
    write_clip(source, noisy(moving_scene(frames=6)), codec="libx264", pixel_format="yuv420p")
    assert run("denoise", source, "-o", tmp_path / "out.mkv", "--lossless").exit_code == 0
    assert read_video_header(tmp_path / "out.mkv").codec == "ffv1"
    assert run("denoise", source, "-o", tmp_path / "out.mp4", "--lossless", "--report",
               tmp_path / "report.jsonl").exit_code == 0
    assert report_entries((tmp_path / "report.jsonl").read_text())[0]["encode"] == "libx264 yuv420p lossless"
    header = json.loads((tmp_path / "report.jsonl").read_text().splitlines()[0])
    assert header["options"]["lossless"] is True


def test_a_folder_of_videos_and_images_writes_each_in_a_format_it_can(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_clip(folder / "a.mov", noisy(moving_scene(frames=4)), codec="libx264", pixel_format="yuv420p")
    write_clip(folder / "b.mkv", noisy(moving_scene(frames=4)))
    write_clip(folder / "c.webm", noisy(moving_scene(frames=4)), codec="libvpx-vp9", pixel_format="yuv420p")
    write_clip(folder / "d.avi", noisy(moving_scene(frames=4)), codec="ffv1", pixel_format="gray")
    result = run("denoise", folder, "-o", tmp_path / "out", "--report", tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.mkv", "b.mkv", "c.mkv", "d.mkv"]
    lines = report_entries((tmp_path / "r.jsonl").read_text())
    entries = {Path(entry["input"]).name: entry for entry in lines}
    assert [entries[name]["frames"] for name in sorted(entries)] == [4, 4, 4, 4]
    assert entries["d.avi"]["encode"] == "ffv1 gray lossless"
    assert entries["c.webm"]["encode"] == "libx264 yuv420p"


def test_refusals_name_the_file_and_the_remedy(tmp_path, monkeypatch):
    source = tmp_path / "clip.mkv"
    write_clip(source, noisy(moving_scene(frames=4)), subtitles=SUBTITLES)
    image = tmp_path / "image.png"
    import imageio.v3 as iio

    iio.imwrite(image, noisy(moving_scene(frames=1))[0])
    cases = [((source, "-o", tmp_path / "out.png"), "a video is written as .mkv or .mp4"),
             ((image, "-o", tmp_path / "out.mkv"), "is an image, not a video"),
             ((source, "-o", tmp_path / "out.mkv", "--stack", "volume"),
              "--stack volume: a video is filtered")]
    for arguments, message in cases:
        result = run("denoise", *arguments)
        assert result.exit_code == 2 and message in result.output, result.output
    # a container that cannot hold a stream to copy, a file that is no video: failed, nothing written
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video at all" * 10)
    for arguments, message in [((source, "-o", tmp_path / "out.mp4"), "cannot hold its subtitle stream"),
                               ((fake, "-o", tmp_path / "fake_out.mkv"), "cannot read as a video")]:
        result = run("denoise", *arguments)
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        ["clip.mkv", "clip.srt", "image.png", "fake.mp4"])
    # without PyAV: the reason and the install line
    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("No module named 'av'", name="av")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    result = run("denoise", source, "-o", tmp_path / "out.mkv")
    assert result.exit_code == 1 and "pip install 'nlfilt[video]'" in result.output


def test_a_video_too_large_for_memory_is_refused_with_what_helps(tmp_path, monkeypatch):
    """The memory check counts the window a series holds (not the video's length), and says to filter
    frame by frame, which holds one frame."""
    source = tmp_path / "clip.mkv"
    write_clip(source, noisy(moving_scene(frames=16)))
    monkeypatch.setattr("nlfilt.cli.options.physical_memory", lambda: 2**21)  # a 2 MiB machine
    result = run("denoise", source, "-o", tmp_path / "out.mkv")
    assert result.exit_code == 1, result.output
    assert "use --stack frames (one frame at a time)" in result.output
    assert "a video of 16 64x48 gray frames" in result.output
    assert run("denoise", source, "-o", tmp_path / "out.mkv", "--stack", "frames").exit_code == 0


def test_a_filter_that_fails_or_is_interrupted_leaves_no_output(tmp_path):
    source = tmp_path / "clip.mkv"
    write_clip(source, noisy(moving_scene(frames=6)))

    def interrupted(frames):
        for index, frame in enumerate(frames):
            if index == 3:
                raise KeyboardInterrupt
            yield frame

    def short(frames):
        yield next(frames)

    with pytest.raises(KeyboardInterrupt):
        denoise_video(source, tmp_path / "out.mkv", interrupted)
    with pytest.raises(ImageError, match="returned 1 of 2 or more frames"):
        denoise_video(source, tmp_path / "out.mkv", short)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mkv"]


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_video_and_leaves_no_partial_file(tmp_path, signum, status):
    source = tmp_path / "clip.mkv"
    write_clip(source, noisy(moving_scene(frames=160, height=64, width=64, step=1)))
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "nlfilt", "denoise", str(source), "-o",
                                str(out / "clip.mkv"), "--device", "cpu", "--report",
                                str(tmp_path / "r.jsonl")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(out.iterdir()):  # the partial file appears once decoding starts
        assert time.monotonic() < deadline and process.poll() is None, "no partial file after 60 s"
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == []
    assert report_entries((tmp_path / "r.jsonl").read_text())[-1]["status"] == "interrupted"


@pytest.mark.gpu
def test_gpu_video_matches_the_cpu(tmp_path, gpu):
    source = tmp_path / "clip.mkv"
    write_clip(source, noisy(moving_scene(frames=6)))
    for device in ("cpu", gpu):
        result = run("denoise", source, "-o", tmp_path / f"{device}.mkv", "--device", device,
                     "--sigma", SIGMA)
        assert result.exit_code == 0, result.output
    on_gpu, cpu = decoded(tmp_path / f"{gpu}.mkv")[0], decoded(tmp_path / "cpu.mkv")[0]
    assert numpy.abs(on_gpu.astype(int) - cpu).max() <= 1


def test_the_noise_level_of_a_subsampled_colour_video_is_that_of_its_luminance(tmp_path):
    """RGB noise through a 4:2:0 encode: the RGB frames' luminance carries sqrt(3) |(0.299, 0.587, 0.114)|
    sigma (a per-channel estimate sees about half of it); a flat near-white wall, its noise clipped before
    the encode, is left out (with it, the luma plane's estimate is a third low)."""
    clean = moving_scene(frames=8, height=64, width=96)
    rgb = numpy.stack([clean, clean, 0.7 * clean], axis=-1)
    rgb[:, :, :48] = (245, 250, 240)
    source = tmp_path / "clip.mp4"
    write_clip(source, noisy(rgb), codec="libx264", pixel_format="yuv420p", options={"qp": "0"})
    expected = 3**0.5 * numpy.linalg.norm([0.299, 0.587, 0.114]) * SIGMA
    assert abs(noise_level(source) - expected) <= 0.12 * expected
    gray = tmp_path / "gray.mkv"
    write_clip(gray, noisy(clean))
    assert abs(noise_level(gray) - SIGMA) <= 0.1 * SIGMA


def test_progress_counts_the_frames_written(tmp_path):
    source = tmp_path / "clip.mkv"
    write_clip(source, noisy(moving_scene(frames=6)))
    calls = []
    denoise_video(source, tmp_path / "out.mkv", lambda frames: (frame.astype(float) for frame in frames),
                  progress=lambda done, total: calls.append((done, total)))
    assert calls == [(float(index), 6) for index in range(1, 7)]


def test_attachments_are_copied_into_matroska_and_refused_for_mp4(tmp_path):
    """Fonts and the like travel with Matroska files (no packets: their data sits in the header)."""
    source = tmp_path / "clip.mkv"
    with av.open(str(source), "w") as output:
        video = output.add_stream("ffv1", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "gray"
        output.add_attachment("font.ttf", "font/ttf", b"not really a font")
        for index, pixels in enumerate(noisy(moving_scene(frames=4))):
            frame = av.VideoFrame.from_ndarray(pixels, format="gray")
            frame.pts = index
            output.mux(video.encode(frame))
        output.mux(video.encode())
    assert read_video_header(source).copied == ("attachment font.ttf",)
    assert run("denoise", source, "-o", tmp_path / "out.mkv").exit_code == 0
    with av.open(str(tmp_path / "out.mkv")) as container:
        attached = [stream for stream in container.streams if stream.type == "attachment"]
        assert [(item.name, item.mimetype, bytes(item.data)) for item in attached] == [
            ("font.ttf", "font/ttf", b"not really a font")]
    result = run("denoise", source, "-o", tmp_path / "out.mp4")
    assert result.exit_code == 1 and "cannot hold its attachment stream #1 (font.ttf)" in result.output
    assert not (tmp_path / "out.mp4").exists()


def test_declipping_applies_to_gray_and_rgb_videos_and_not_to_yuv_ones(tmp_path):
    """A YUV video's noise level is its luminance's (see noise_level), and its decoded values near the
    range's ends are not clipped normal variables of it, so declipping is left off there."""
    clean = moving_scene(frames=8)
    clean[:, :, :20] = 0  # a black band: the noise clipped at 0
    for name, options in (("gray.mkv", {}), ("yuv.mp4", {"codec": "libx264", "pixel_format": "yuv420p",
                                                           "options": {"qp": "0"}})):
        source = tmp_path / name
        write_clip(source, noisy(clean), **options)
        outputs = []
        for extra in ((), ("--no-declip",)):
            target = tmp_path / f"out-{len(outputs)}-{name.split('.')[0]}.mkv"
            assert run("denoise", source, "-o", target, "--sigma", SIGMA, *extra).exit_code == 0
            outputs.append(decoded(target, "gray" if name == "gray.mkv" else "rgb24")[0])
        if name == "gray.mkv":
            assert psnr(outputs[0], clean) > psnr(outputs[1], clean) + 0.3
        else:
            numpy.testing.assert_array_equal(outputs[0], outputs[1])
