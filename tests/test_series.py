"""Stacks filtered as a series: groups across neighbouring frames that follow motion (nlfilt.series)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy
import pytest

import nlfilt
from nlfilt import collaborative, series
from nlfilt.backend import Backend, get_backend
from nlfilt.jit_groups import CompiledGroups

from clitools import report_entries, run

CPU = get_backend("cpu")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def shifted_series(frames=6, size=72, step=(2, 3), sigma=25.0, seed=0, clip=True):
    """(noisy, clean): ``frames`` crops of the shipped sample's clean image, each moved by ``step`` pixels
    from the last (a camera panning over a still scene), with Gaussian noise rounded and clipped to 8 bits."""
    clean = iio.imread(EXAMPLES / "sample_clean.png").astype(numpy.float64)
    clean = clean if clean.ndim == 2 else clean[..., 0]
    tops, lefts = 40 + step[0] * numpy.arange(frames), 60 + step[1] * numpy.arange(frames)
    stack = numpy.stack([clean[top:top + size, left:left + size]
                         for top, left in zip(tops, lefts, strict=True)])
    noisy = stack + sigma * numpy.random.default_rng(seed).standard_normal(stack.shape)
    return (numpy.clip(numpy.round(noisy), 0, 255) if clip else noisy), stack


def psnr(estimate, clean):
    return float(10 * numpy.log10(255.0**2 / numpy.mean((numpy.clip(estimate, 0, 255) - clean) ** 2)))


def series_groups(frames, height, width, workers=2):
    twin = collaborative.ArrayGroups(Backend("cpu", numpy, workers=workers), (height, width, 1), patch=8,
                                     step=3, frames=frames)
    return twin, CompiledGroups(twin)


@pytest.mark.parametrize(("frames", "height", "width", "radius", "follow", "reach", "group"), [
    (5, 30, 27, 4, 2, 2, 8),
    (3, 12, 12, 2, 1, 1, 16),   # fewer candidates than members: repeated in order
    (1, 20, 20, 3, 1, 2, 4),    # one frame: the frames around are outside the stack
    (6, 40, 33, 9, 5, 4, 16),   # the default radii and reach
])
def test_the_compiled_stack_matching_is_its_array_twin(frames, height, width, radius, follow, reach, group):
    levels = numpy.random.default_rng(frames).integers(0, 6, size=(frames, height, width)).astype(numpy.int32)
    twin, compiled = series_groups(frames, height, width)
    expected = twin.match_series(levels, radius=radius, follow=follow, reach=reach, group=group)
    found = compiled.match_series(levels, radius=radius, follow=follow, reach=reach, group=group)
    numpy.testing.assert_array_equal(found, expected)
    # the reference heads its group; every member is a whole patch of a frame within reach
    wide = frames * width
    rows, cols = numpy.divmod(found, wide)
    member_frames, cols = numpy.divmod(cols, width)
    assert (rows >= 0).all() and (rows <= height - 8).all()
    assert (cols >= 0).all() and (cols <= width - 8).all()
    reference_frames = (twin.cols // width)[numpy.tile(numpy.arange(twin.cols.size), twin.rows.size)]
    assert (numpy.abs(member_frames - reference_frames[:, None]) <= reach).all()
    origins = (numpy.repeat(twin.rows, twin.cols.size) * wide + numpy.tile(twin.cols, twin.rows.size))
    numpy.testing.assert_array_equal(found[:, 0], origins)


@pytest.mark.parametrize("engine", [0, 1], ids=["array", "compiled"])
def test_the_search_follows_motion_beyond_its_own_radius(engine):
    """Frames of a noiseless texture moved 4 pixels down and right per frame: 4 frames away the patch
    has moved 16 pixels, beyond the 5 of one search, and is found exactly by following the best match
    from frame to frame."""
    texture = numpy.random.default_rng(3).integers(0, 50, size=(90, 90)).astype(numpy.int32)
    frames = numpy.stack([texture[4 * t:4 * t + 50, 4 * t:4 * t + 50] for t in range(5)][::-1])
    engines = series_groups(5, 50, 50)
    members = engines[engine].match_series(frames, radius=5, follow=5, reach=4, group=5)
    per_frame = engines[0].cols.size // 5
    reference = 2 * (5 * per_frame) + 0 * per_frame + 2  # grid row 2 (row 6), column 2 (col 6), frame 0
    rows, rest = numpy.divmod(members[reference], 5 * 50)
    times, cols = numpy.divmod(rest, 50)
    assert sorted(zip(times.tolist(), rows.tolist(), cols.tolist(), strict=True)) == [
        (t, 6 + 4 * t, 6 + 4 * t) for t in range(5)]


def test_a_series_beats_the_frames_filtered_one_by_one_by_over_a_decibel():
    noisy, clean = shifted_series()
    alone = numpy.stack([nlfilt.denoise_collaborative(frame, sigma=25.0, device="cpu") for frame in noisy])
    together = nlfilt.denoise_collaborative(noisy, sigma=25.0, channel_axis=None, device="cpu")
    assert together.shape == noisy.shape and together.dtype == numpy.float32
    gain = psnr(together, clean) - psnr(alone, clean)
    assert gain > 1.0, gain


def test_compiled_and_array_code_filter_a_series_alike(monkeypatch):
    noisy, _ = shifted_series(frames=4, size=40)
    stack = noisy.astype(numpy.float32)[..., None]
    compiled = series.collaborative_series(CPU, stack, 19.7)
    monkeypatch.setattr(series, "accelerate", lambda backend, operator: operator)
    array = series.collaborative_series(CPU, stack, 19.7)
    numpy.testing.assert_allclose(compiled, array, atol=0.02)


def test_a_long_stack_is_filtered_in_windows_that_cover_every_frame(monkeypatch):
    parts = series.windows(100, 64 * 64)
    kept = [frame for _, _, first, last in parts for frame in range(first, last)]
    assert kept == list(range(100))
    for read_first, read_last, first, last in parts:
        assert read_first == max(0, first - 2 * series.REACH)
        assert read_last == min(100, last + 2 * series.REACH)
    assert series.windows(40, 64 * 64) == [(0, 40, 0, 40)]  # short: one window
    assert all(last - first < 2**31 // 4096**2 for first, last, _, _ in series.windows(400, 4096**2))
    noisy, clean = shifted_series(frames=24, size=40, step=(1, 1))
    whole = nlfilt.denoise_collaborative(noisy, sigma=25.0, channel_axis=None, device="cpu")
    monkeypatch.setattr(series, "WINDOW_FRAMES", 3)
    assert len(series.windows(24, 40 * 40)) == 8
    windowed = nlfilt.denoise_collaborative(noisy, sigma=25.0, channel_axis=None, device="cpu")
    assert abs(psnr(windowed, clean) - psnr(whole, clean)) < 0.1
    for frame in range(24):  # every frame filtered in its window
        assert psnr(windowed[frame], clean[frame]) > psnr(noisy[frame], clean[frame]) + 5


def test_a_large_window_is_filtered_in_bands_of_rows_that_give_the_whole_result(monkeypatch):
    first, _ = shifted_series(frames=5, size=72)
    second, _ = shifted_series(frames=5, size=72, seed=3)
    noisy = numpy.concatenate([first, second, first[:, ::-1]], axis=1)  # 5 frames of 216 x 72
    whole = nlfilt.denoise_collaborative(noisy, sigma=25.0, channel_axis=None, device="cpu")
    monkeypatch.setattr(series, "BAND_VALUES", 5 * 72 * 140)
    parts = series.bands(5, 216, 72, 1)
    assert len(parts) > 3 and parts[0][2] == 0 and parts[-1][3] == 216
    # every row kept once
    assert all(before[3] == after[2] for before, after in zip(parts, parts[1:], strict=False))
    assert all(read_first <= max(0, keep_first - series.BAND_HALO) and read_first % series.STEP == 0
               for read_first, _, keep_first, _ in parts)
    banded = nlfilt.denoise_collaborative(noisy, sigma=25.0, channel_axis=None, device="cpu")
    numpy.testing.assert_allclose(banded, whole, atol=1e-3)  # float32 rounding in another order


def test_colour_stacks_one_frame_and_sigma_zero():
    noisy, _ = shifted_series(frames=3, size=40)
    colour = numpy.stack([noisy, numpy.roll(noisy, 1, axis=2), 255 - noisy], axis=-1)
    out = nlfilt.denoise_collaborative(colour, sigma=20.0, channel_axis=-1, device="cpu")
    assert out.shape == colour.shape
    one = nlfilt.denoise_collaborative(noisy[:1], sigma=20.0, channel_axis=None, device="cpu")
    numpy.testing.assert_array_equal(one[0], nlfilt.denoise_collaborative(noisy[0], sigma=20.0, device="cpu"))
    numpy.testing.assert_array_equal(nlfilt.denoise_collaborative(noisy, sigma=0, channel_axis=None,
                                                                  device="cpu"), noisy.astype(numpy.float32))
    with pytest.raises(ValueError, match="at least 8x8"):
        nlfilt.denoise_collaborative(numpy.zeros((3, 6, 40)), channel_axis=None, device="cpu")


def test_the_cost_of_a_series_grows_with_its_frames():
    from nlfilt.cost import (
        SERIES_BYTES_PER_STACK_VALUE,
        estimate_collaborative_bytes,
        estimate_collaborative_seconds,
    )

    short = estimate_collaborative_seconds((8, 256, 256, 1))
    long = estimate_collaborative_seconds((400, 256, 256, 1))
    assert 50 < long / short < 80  # windows of 32 frames read 48: 1.5x per frame
    assert estimate_collaborative_seconds((8, 256, 256, 3)) > short
    assert short > 8 * estimate_collaborative_seconds((256, 256))  # more per frame than frame by frame
    # memory: the stack's values, and one window's pixels whatever the length
    longer, shorter = (estimate_collaborative_bytes((frames, 256, 256, 1)) for frames in (400, 200))
    assert longer - shorter == 200 * 256 * 256 * SERIES_BYTES_PER_STACK_VALUE


@pytest.mark.parametrize("channels", [0, 3])
def test_stack_series_on_the_command_line(tmp_path, channels):
    import tifffile

    noisy, clean = shifted_series(frames=5, size=48)
    pages = numpy.stack([noisy, noisy[:, ::-1], noisy[:, :, ::-1]], axis=-1) if channels else noisy
    source = tmp_path / "clip.tif"
    tifffile.imwrite(source, pages.astype(numpy.uint8), photometric="rgb" if channels else "minisblack")
    target = tmp_path / "out" / "clip.tif"
    result = run("denoise", source, "-o", target, "--stack", "series", "--sigma", "25", "--report",
                 tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output
    expected = nlfilt.denoise_collaborative(pages.astype(numpy.float32), sigma=25.0,
                                            channel_axis=-1 if channels else None, device="cpu")
    from nlfilt.images import cast_like

    numpy.testing.assert_array_equal(tifffile.imread(target), cast_like(expected, numpy.dtype(numpy.uint8)))
    entry = report_entries((tmp_path / "r.jsonl").read_text())[0]
    assert entry["frames"] == 5 and entry["status"] == "denoised"
    if not channels:
        frames = tmp_path / "frames.tif"
        assert run("denoise", source, "-o", frames, "--sigma", "25").exit_code == 0
        assert psnr(tifffile.imread(target), clean) > psnr(tifffile.imread(frames), clean) + 1


def test_by_default_a_tiff_of_time_or_depth_is_a_series_and_other_stacks_go_frame_by_frame(tmp_path):
    import tifffile

    noisy = shifted_series(frames=4, size=40)[0].astype(numpy.uint8)
    files = {"time.tif": ({"imagej": True, "metadata": {"axes": "TYX"}}, "series"),
             "depth.tif": ({"imagej": True, "metadata": {"axes": "ZYX"}}, "series"),
             "pages.tif": ({"photometric": "minisblack"}, "frames"),  # pages of anything
             "hyper.tif": ({"imagej": True, "metadata": {"axes": "TZYX"}}, "frames")}  # two frame axes
    for name, (options, _) in files.items():
        pages = noisy.reshape(2, 2, 40, 40) if name == "hyper.tif" else noisy
        tifffile.imwrite(tmp_path / name, pages, **options)
    result = run("denoise", *(tmp_path / name for name in files), "-o", tmp_path / "out", "--sigma", "25",
                 "--report", tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output
    entries = report_entries((tmp_path / "r.jsonl").read_text())
    modes = {Path(entry["input"]).name: entry["stack"] for entry in entries}
    assert modes == {name: mode for name, (_, mode) in files.items()}
    series = nlfilt.denoise_collaborative(noisy.astype(numpy.float32), sigma=25.0, channel_axis=None,
                                          device="cpu")
    from nlfilt.images import cast_like

    numpy.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "time.tif"),
                                     cast_like(series, numpy.dtype(numpy.uint8)))


def test_stack_series_needs_the_collaborative_method(tmp_path):
    import tifffile

    source = tmp_path / "clip.tif"
    pages = shifted_series(frames=3, size=40)[0].astype(numpy.uint8)
    tifffile.imwrite(source, pages, photometric="minisblack")
    for extra, words in ((["--method", "filter"], "--stack series needs --method collaborative"),
                         (["--kernel", "arccos"], "no method takes all of --kernel with --stack series")):
        result = run("denoise", source, "-o", tmp_path / "o.tif", "--stack", "series", *extra)
        assert result.exit_code == 2 and words in result.output, result.output


@pytest.mark.gpu
@pytest.mark.parametrize(("frames", "height", "width", "radius", "follow", "reach", "group"), [
    (5, 30, 27, 4, 2, 2, 8), (3, 12, 12, 2, 1, 1, 16), (1, 20, 20, 3, 1, 2, 4), (6, 40, 33, 9, 5, 4, 16)])
def test_gpu_stack_matching_kernel_is_its_array_twin(gpu, monkeypatch, frames, height, width, radius, follow,
                                                     reach, group):
    """nlfilt_bm_match_series (opt-in through NLFILT_CUDA_ALTERNATIVES until a GPU run has checked it)."""
    import cupy

    from nlfilt import cuda
    from nlfilt.accelerate import accelerate
    from nlfilt.backend import get_backend
    from nlfilt.cuda.groups import CudaGroups

    monkeypatch.setenv(cuda.ALTERNATIVES_VARIABLE, "nlfilt_bm")
    levels = numpy.random.default_rng(frames).integers(0, 6, size=(frames, height, width)).astype(numpy.int32)
    twin, _ = series_groups(frames, height, width)
    expected = twin.match_series(levels, radius=radius, follow=follow, reach=reach, group=group)
    backend = get_backend(gpu)
    kernel = accelerate(backend, collaborative.ArrayGroups(backend, (height, width, 1), patch=8, step=3,
                                                           frames=frames))
    assert isinstance(kernel, CudaGroups)
    found = kernel.match_series(cupy.asarray(levels), radius=radius, follow=follow, reach=reach, group=group)
    numpy.testing.assert_array_equal(cupy.asnumpy(found), expected)


@pytest.mark.gpu
def test_gpu_series_matches_the_cpu(gpu):
    noisy, _ = shifted_series(frames=4, size=40)
    cpu = nlfilt.denoise_collaborative(noisy, sigma=19.7, channel_axis=None, device="cpu")
    on_gpu = nlfilt.denoise_collaborative(noisy, sigma=19.7, channel_axis=None, device=gpu)
    numpy.testing.assert_allclose(on_gpu, cpu, atol=0.02)


@pytest.mark.parametrize("frames", [10, 24])  # one window; several windows of 3 frames
def test_a_stream_of_frames_gives_the_stack_result_holding_a_bounded_number_of_frames(monkeypatch, frames):
    monkeypatch.setattr(series, "WINDOW_FRAMES", 3)
    noisy, _ = shifted_series(frames=frames, size=32, step=(1, 1))
    stack = noisy.astype(numpy.float32)[..., None]
    whole = series.collaborative_series(CPU, stack, 25.0)
    pulled = []

    def arriving():
        for frame in stack:
            pulled.append(1)
            yield frame

    streamed = []
    for estimate in series.stream_series(CPU, arriving(), 25.0):  # the number of frames not given
        streamed.append(estimate)
        assert len(pulled) - len(streamed) <= series.WINDOW_FRAMES + 4 * series.REACH
    numpy.testing.assert_array_equal(numpy.stack(streamed), whole)
    assert len(series.windows(frames, 32 * 32)) == (1 if frames == 10 else 8)
    with pytest.raises(ValueError, match="frame 2 has shape"):
        list(series.stream_series(CPU, iter([stack[0], stack[1], stack[2, :16]]), 25.0))
