"""The command line: CliRunner and subprocess tests over files, folders, formats and failures."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

import nlfilt
from nlfilt.backend import gpu_status
from nlfilt.cli import main

RNG = numpy.random.default_rng(9)


@pytest.fixture(autouse=True)
def filter_method_by_default(monkeypatch):
    """These tests exercise the command line's mechanics with ``--method filter``, whose result
    nlfilt.denoise reproduces; the collaborative default has tests of its own (test_collaborative.py)."""
    from nlfilt.cli.denoise import denoise_command

    (method,) = [param for param in denoise_command.params if param.name == "method"]
    monkeypatch.setattr(method, "default", "filter")


def scene(height: int = 40, width: int = 48) -> numpy.ndarray:
    """A clean gray test scene in [0, 1]: a gradient, a bright square, stripes."""
    rows, cols = numpy.mgrid[0:height, 0:width] / max(height, width)
    clean = 0.2 + 0.4 * cols
    clean[8:24, 8:24] = 0.85
    clean[:, 30:] = numpy.where((numpy.arange(30, width) // 3) % 2 == 0, 0.9, 0.15)
    return clean + 0.05 * rows


def noisy_pixels(dtype, channels: int = 0, sigma: float = 0.08) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(clean, noisy) in ``dtype`` units and the given layout (0: 2-D gray)."""
    clean = scene()
    if channels:
        clean = numpy.stack([clean * (0.8 + 0.1 * c) for c in range(channels)], axis=2)
    noisy = numpy.clip(clean + RNG.normal(0, sigma, clean.shape), 0, 1)
    scale = numpy.iinfo(dtype).max if numpy.dtype(dtype).kind == "u" else 1.0
    if scale == 1.0:
        return clean.astype(dtype), noisy.astype(dtype)
    return numpy.round(clean * scale).astype(dtype), numpy.round(noisy * scale).astype(dtype)


def run(*args: str) -> object:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def report_entries(text: str) -> list[dict]:
    """The per-input lines of a report (each run's first line describes the run)."""
    records = [json.loads(line) for line in text.splitlines()]
    return [record for record in records if "run" not in record]


def error(clean: numpy.ndarray, image: numpy.ndarray) -> float:
    return float(numpy.mean((clean.astype(float) - image.astype(float)) ** 2))


ROUND_TRIPS = [
    ("gray8.png", numpy.uint8, 0),
    ("gray16.png", numpy.uint16, 0),
    ("grayalpha8.png", numpy.uint8, 2),
    ("rgb8.png", numpy.uint8, 3),
    ("rgba8.png", numpy.uint8, 4),
    ("rgb16.tif", numpy.uint16, 3),
    ("rgba16.tif", numpy.uint16, 4),
    ("gray32.tif", numpy.float32, 0),
    ("rgb32.tif", numpy.float32, 3),
    ("rgb8.jpg", numpy.uint8, 3),
    ("gray8.bmp", numpy.uint8, 0),
    ("rgb8.bmp", numpy.uint8, 3),
]


@pytest.mark.parametrize(("name", "dtype", "channels"), ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS])
def test_format_round_trip_keeps_dtype_layout_and_alpha(tmp_path, name, dtype, channels):
    clean, noisy = noisy_pixels(dtype, channels)
    source = tmp_path / name
    iio.imwrite(source, noisy)
    noisy = iio.imread(source)  # what the file really holds (JPEG is lossy)
    target = tmp_path / "out" / name
    result = run("denoise", source, "-o", target, "--quiet")
    assert result.exit_code == 0, result.output
    out = iio.imread(target)
    assert out.dtype == noisy.dtype and out.shape == noisy.shape
    colour = slice(None) if channels in (0, 1, 3) else slice(0, channels - 1)
    if channels in (2, 4):
        numpy.testing.assert_array_equal(out[..., -1], noisy[..., -1])  # alpha untouched
    # JPEG's own compression makes the noise correlated, which non-local means removes less of
    gain = 0.95 if name.endswith(".jpg") else 0.7
    assert error(clean[..., colour], out[..., colour]) < gain * error(clean[..., colour], noisy[..., colour])


def test_single_file_into_a_folder_and_folder_inputs(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png"):
        iio.imwrite(tmp_path / "in" / name, noisy)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    assert run("denoise", tmp_path / "in" / "a.png", "-o", tmp_path / "one", "--quiet").exit_code == 0
    assert (tmp_path / "one" / "a.png").is_file()
    assert run("denoise", tmp_path / "in", "-o", tmp_path / "flat", "--quiet").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["a.png", "b.png"]
    assert run("denoise", tmp_path / "in", "-o", tmp_path / "deep", "--recursive", "--quiet").exit_code == 0
    assert (tmp_path / "deep" / "sub" / "c.png").is_file()


def write_png_16bit_rgb(path: Path, pixels: numpy.ndarray) -> None:
    """A valid 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_sixteen_bit_colour_png_is_read_and_written_exactly(tmp_path, channels):
    """Gray+alpha, RGB and RGBA 16-bit PNG through imagecodecs: the file's values exactly, the output the
    library's result rounded, alpha untouched (Pillow would cut all of it to 8 bits)."""
    from nlfilt.images import read_image

    pytest.importorskip("imagecodecs")
    pixels = noisy_pixels(numpy.uint16, channels)[1]
    source = tmp_path / "deep.png"
    if channels == 3:
        write_png_16bit_rgb(source, pixels)  # an encoder of its own, not the one under test
    else:
        import imagecodecs

        source.write_bytes(imagecodecs.png_encode(pixels))
    image = read_image(source)
    numpy.testing.assert_array_equal(image.assemble(image.colour), pixels)
    target = tmp_path / "out" / "deep.png"
    assert run("denoise", source, "-o", target, "--method", "filter", "--quiet").exit_code == 0
    written = read_image(target)
    colour = pixels[..., :-1] if channels in (2, 4) else pixels
    filtered = nlfilt.denoise(colour.astype(numpy.float32), device="cpu")
    expected = numpy.clip(numpy.rint(filtered), 0, 65535).astype(numpy.uint16)
    numpy.testing.assert_array_equal(written.colour, expected)
    if channels in (2, 4):
        numpy.testing.assert_array_equal(written.alpha, pixels[..., -1])
    assert target.read_bytes()[24:26] == bytes([16, {2: 4, 3: 2, 4: 6}[channels]])  # 16-bit, same colour type


def test_sixteen_bit_colour_png_without_imagecodecs_is_refused_with_the_reason(tmp_path, monkeypatch):
    from nlfilt import images

    monkeypatch.setattr(images, "_imagecodecs", lambda: None)
    source = tmp_path / "deep.png"
    write_png_16bit_rgb(source, numpy.zeros((8, 8, 3), numpy.uint16))
    result = CliRunner().invoke(main, ["denoise", str(source), "-o", str(tmp_path / "out.png")])
    assert result.exit_code == 1, result.output
    assert "16-bit" in result.output and "imagecodecs" in result.output
    iio.imwrite(tmp_path / "rgb16.tif", noisy_pixels(numpy.uint16, 3)[1])
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "rgb16.tif"), "-o", str(tmp_path / "o.png")])
    assert result.exit_code == 2 and "imagecodecs" in result.output, result.output
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "o.png").exists()


def test_bad_files_are_reported_and_the_batch_goes_on(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "good.png", noisy)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("hello")
    (folder / "truncated.png").write_bytes((folder / "good.png").read_bytes()[:200])
    nan_image = numpy.ones((20, 20), numpy.float32)
    nan_image[3, 3] = numpy.nan
    iio.imwrite(folder / "nan.tif", nan_image)
    iio.imwrite(folder / "alpha.bmp", numpy.zeros((8, 8, 4), numpy.uint8))
    result = CliRunner().invoke(main, ["denoise", str(folder), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    for name in ("empty.png", "text.png", "truncated.png", "nan.tif", "alpha.bmp"):
        assert f"{folder / name}:" in result.output, name
    assert "NaN" in result.output
    assert "empty file" in result.output
    assert "alpha channel" in result.output
    assert "1 denoised, 5 failed, 0 skipped" in result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.png"]


def test_rerun_skips_existing_outputs_unless_overwrite(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    for name in ("a.png", "b.png"):
        iio.imwrite(tmp_path / name, noisy)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"left by an earlier run")
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                                       "-o", str(out)])
    assert result.exit_code == 0 and "1 denoised, 0 failed, 1 skipped" in result.output
    assert (out / "a.png").read_bytes() == b"left by an earlier run"
    result = run("denoise", tmp_path / "a.png", "-o", out / "a.png", "--overwrite")
    assert result.exit_code == 0 and iio.imread(out / "a.png").shape == noisy.shape


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch, failure):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)

    def broken_write(path, *args, **kwargs):
        Path(path).write_bytes(b"half an image")
        raise failure

    monkeypatch.setattr("nlfilt.images.iio.imwrite", broken_write)
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "out.png")])
    assert result.exit_code == (1 if isinstance(failure, OSError) else 130)
    if isinstance(failure, OSError):
        assert "disk full" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_refuses_to_write_over_an_input(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    before = (tmp_path / "a.png").read_bytes()
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.png"),
                                       "--overwrite"])
    assert result.exit_code == 2 and "refusing to overwrite an input" in result.output
    result = CliRunner().invoke(main, ["denoise", str(tmp_path), "-o", str(tmp_path), "--overwrite"])
    assert result.exit_code == 2
    assert (tmp_path / "a.png").read_bytes() == before


def test_report_lines_and_stdout_carrying_only_the_report(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    (tmp_path / "b.png").write_text("broken")
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                                       "-o", str(tmp_path / "out"), "--report", "-", "--iterations", "2"])
    assert result.exit_code == 1
    entries = report_entries(result.stdout)
    assert [entry["status"] for entry in entries] == ["denoised", "failed"]
    good, bad = entries
    assert set(good) == {"input", "output", "status", "error", "sigma", "iterations", "pilot_iterations",
                         "seconds", "device"}
    assert good["iterations"] == 2 and good["device"] == "cpu" and good["error"] is None
    assert 0.05 * 255 < good["sigma"] < 0.11 * 255 and good["seconds"] > 0
    assert bad["input"].endswith("b.png") and "cannot read" in bad["error"]
    report = tmp_path / "report.jsonl"
    run("denoise", tmp_path / "a.png", "-o", tmp_path / "out", "--report", report, "--quiet")
    assert report_entries(report.read_text())[0]["status"] == "skipped"


def test_quiet_run_prints_nothing(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    for name in ("a.png", "b.png"):
        iio.imwrite(tmp_path / name, noisy)
    result = CliRunner().invoke(main, ["denoise", str(tmp_path), "-o", str(tmp_path / "out"), "--quiet",
                                       "--iterations", "3"])
    assert result.exit_code == 0 and result.output == ""
    loud = CliRunner().invoke(main, ["denoise", str(tmp_path), "-o", str(tmp_path / "out2")])
    assert "2 denoised, 0 failed, 0 skipped" in loud.stderr


def test_usage_errors_exit_2_without_traceback(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    cases = [
        ["--window", "4"],
        ["--window", "wide"],
        ["--kernel", "arccos", "--sigma", "3"],
        ["--sigma", "-1"],
        ["--patch", "4"],
        ["--iterations", "0"],
        ["--iterations", "many"],
        ["--stop", "sure"],
        ["--iterations", "auto", "--max-iterations", "0"],
        ["--kernel", "arccos", "--normalize", "sinkhorn"],
        ["--guide", "oracle"],
        ["--kernel", "gauss"],
    ]
    for extra in cases:
        result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                           *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert "Traceback" not in result.output
    missing = CliRunner().invoke(main, ["denoise", str(tmp_path / "missing.png"), "-o", str(tmp_path)])
    assert missing.exit_code == 2 and "missing.png" in missing.output


def test_automatic_stopping_guide_and_sinkhorn_are_reported(tmp_path):
    clean, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    cases = {
        "auto": (["--iterations", "auto"], None),
        "discrepancy": (["--iterations", "auto", "--stop", "discrepancy", "--normalize", "sinkhorn"], None),
        "guided": (["--iterations", "auto", "--guide", "pilot"], "pilot"),
        "arccos": (["--kernel", "arccos", "--iterations", "auto", "--max-iterations", "50"], None),
    }
    for name, (extra, guide) in cases.items():
        out = tmp_path / f"{name}.png"
        result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(out),
                                           "--report", "-", *extra])
        assert result.exit_code == 0, (name, result.output)
        (entry,) = report_entries(result.stdout)
        assert isinstance(entry["iterations"], int) and 1 <= entry["iterations"] <= 1000
        assert (entry["pilot_iterations"] is not None) == (guide is not None)
        assert entry["sigma"] > 0
        assert error(clean, iio.imread(out)) < 0.7 * error(clean, noisy), name


def test_too_costly_image_is_refused_with_a_suggestion(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--window", "global", "--kernel", "ntk", "--device", "cpu",
                                       "--max-minutes", "0.00001"])
    assert result.exit_code == 1
    assert "seconds" in result.output and "crop" in result.output
    assert "--window" not in result.output  # a windowed tangent filter is indefinite: never suggested
    assert not (tmp_path / "o.png").exists()


def test_image_too_large_for_memory_is_refused(tmp_path, monkeypatch):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    monkeypatch.setattr("nlfilt.cli.options.physical_memory", lambda: 2**16)  # a 64 KiB machine
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--device", "cpu"])
    assert result.exit_code == 1 and "working memory" in result.output
    assert not (tmp_path / "o.png").exists()


def test_info_without_gpu():
    result = run("info")
    assert result.exit_code == 0
    assert "nlfilt" in result.output and "NumPy" in result.output and "CuPy" in result.output
    assert "numba" in result.output and "windowed NLM" in result.output
    if not gpu_status()[0]:
        assert "GPU: not usable" in result.output and "device auto: cpu" in result.output


def test_gpu_request_without_gpu_fails_clearly(tmp_path):
    if gpu_status()[0]:
        pytest.skip("a GPU is usable here")
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--device", "gpu"])
    assert result.exit_code == 1 and "no GPU is usable" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("window", ["global", "7"])
def test_filter_map_writes_the_weights_of_one_pixel(tmp_path, window):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    result = CliRunner().invoke(main, ["filter-map", str(tmp_path / "a.png"), "--pixel", "12", "14",
                                       "-o", str(tmp_path / "map.png"), "--window", window, "--no-marker"])
    assert result.exit_code == 0, result.output
    heat = iio.imread(tmp_path / "map.png")
    assert heat.shape == (*noisy.shape, 3) and heat.dtype == numpy.uint8
    brightness = heat.astype(int).sum(axis=2)
    inside, outside = brightness[10:22, 10:22].mean(), brightness[:, 32:].mean()
    assert inside > outside  # a pixel of the bright square weighs its own region most
    if window == "7":
        assert brightness[:4, :].max() == brightness.min()  # outside the window: zero weight


def test_filter_map_refuses_a_costly_global_tangent_kernel(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    result = CliRunner().invoke(main, ["filter-map", str(tmp_path / "a.png"), "--pixel", "1", "1",
                                       "-o", str(tmp_path / "map.png"), "--kernel", "arccos",
                                       "--device", "cpu", "--max-minutes", "0.000001"])
    assert result.exit_code == 1 and "minutes" in result.output and not (tmp_path / "map.png").exists()


def test_filter_map_bad_pixel_is_a_clear_error(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    result = CliRunner().invoke(main, ["filter-map", str(tmp_path / "a.png"), "--pixel", "400", "1",
                                       "-o", str(tmp_path / "map.png")])
    assert result.exit_code == 1 and "pixel must be" in result.output


def test_module_entry_point_in_a_subprocess(tmp_path):
    _, noisy = noisy_pixels(numpy.uint16)
    iio.imwrite(tmp_path / "a.tif", noisy)
    (tmp_path / "bad.tif").write_bytes(b"II*\0broken")
    done = subprocess.run([sys.executable, "-m", "nlfilt", "denoise", "--method", "filter", str(tmp_path),
                           "-o", str(tmp_path / "out"), "--report", "-"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "bad.tif" in done.stderr
    assert [entry["status"] for entry in report_entries(done.stdout)] == ["denoised", "failed"]
    assert iio.imread(tmp_path / "out" / "a.tif").dtype == numpy.uint16


def test_compare_network_prints_the_comparison_and_refuses_large_inputs(tmp_path):
    clean, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "crop.png", noisy[:16, :16])
    result = CliRunner().invoke(main, ["compare-network", str(tmp_path / "crop.png"), "--width", "256",
                                       "--steps", "10", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "on the CPU in float32" in lines[0]
    rows = [line.split() for line in lines[2:6]]
    assert [int(row[0]) for row in rows] == [1, 2, 5, 10]
    assert all(float(row[1]) < 0.2 for row in rows[1:])  # width 256 follows the filter to a few percent
    assert lines[6].startswith("gd: tangent kernel movement")
    assert 0 < float(lines[6].split(" = ")[1].split()[0]) < 0.1
    adam = CliRunner().invoke(main, ["compare-network", str(tmp_path / "crop.png"), "--width", "64",
                                     "--steps", "5", "--optimizer", "adam", "--depth", "2"])
    assert adam.exit_code == 0 and "adam" in adam.stdout
    iio.imwrite(tmp_path / "large.png", noisy)  # 40 x 48 = 1920 pixels: allowed, but too costly here
    costly = CliRunner().invoke(main, ["compare-network", str(tmp_path / "large.png"), "--width", "8192",
                                       "--depth", "3", "--steps", "1000"])
    assert costly.exit_code == 1 and "--max-minutes" in costly.output
    assert "--device gpu" not in costly.output or gpu_status()[0]  # offered only when a GPU is usable
    big = numpy.zeros((80, 80), numpy.uint8)
    iio.imwrite(tmp_path / "big.png", big)
    refused = CliRunner().invoke(main, ["compare-network", str(tmp_path / "big.png")])
    assert refused.exit_code == 1 and "at most 4096 pixels" in refused.output
    assert "Traceback" not in refused.output
    even = CliRunner().invoke(main, ["compare-network", str(tmp_path / "crop.png"), "--patch", "4"])
    assert even.exit_code == 2 and "--patch" in even.output


def test_compare_network_draws_the_kernel_rows_of_the_filter_and_both_networks(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    image = tmp_path / "crop.png"
    iio.imwrite(image, noisy[:16, :16])
    result = CliRunner().invoke(main, ["compare-network", str(image), "--width", "128", "--steps", "5",
                                       "--filter-map", "8", "5", "-o", str(tmp_path / "map.png"),
                                       "--dtype", "float64", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "gd: tangent kernel movement" in result.stdout and "adam: tangent kernel movement" in result.stdout
    assert "left to right: closed-form K" in result.stderr and "adam network" in result.stderr
    figure = iio.imread(tmp_path / "map.png")
    assert figure.dtype == numpy.uint8 and figure.shape[2] == 3
    tile = 128  # 16 pixels, each drawn 8 x 8
    assert figure.shape[:2] == (tile + 2 * 6, 3 * tile + 4 * 6)
    panels = [figure[6:6 + tile, 6 + k * (tile + 6):6 + k * (tile + 6) + tile].astype(int) for k in range(3)]
    assert numpy.abs(panels[0] - panels[1]).mean() < 10  # GD's kernel row: the closed-form one
    alone = CliRunner().invoke(main, ["compare-network", str(image), "--filter-map", "8", "5"])
    assert alone.exit_code == 2 and "-o/--output" in alone.output
    outside = CliRunner().invoke(main, ["compare-network", str(image), "--filter-map", "16", "0", "-o",
                                        str(tmp_path / "x.png")])
    assert outside.exit_code == 2 and "--filter-map" in outside.output and "0 <= ROW < 16" in outside.output
    onto = CliRunner().invoke(main, ["compare-network", str(image), "--filter-map", "1", "1",
                                     "-o", str(image)])
    assert onto.exit_code == 2 and "refusing to overwrite" in onto.output
    assert not (tmp_path / "x.png").exists()
    nowhere = CliRunner().invoke(main, ["compare-network", str(image), "--filter-map", "1", "1",
                                        "-o", str(tmp_path / "missing" / "x.png")])
    assert nowhere.exit_code == 2 and "does not exist" in nowhere.output
    iio.imwrite(tmp_path / "black.png", numpy.zeros((8, 8), numpy.uint8))
    black = CliRunner().invoke(main, ["compare-network", str(tmp_path / "black.png")])
    assert black.exit_code == 1 and "all zeros" in black.output and "Traceback" not in black.output


# Path safety: an input must never be overwritten, nor an output silently dropped

def input_folder(tmp_path: Path) -> tuple[Path, bytes]:
    folder = tmp_path / "in"
    folder.mkdir()
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(folder / "a.png", noisy)
    return folder, (folder / "a.png").read_bytes()


@pytest.mark.parametrize("route", ["dotdot", "symlink", "hardlink", "symlinked-folder"])
def test_an_input_reached_by_another_path_is_never_overwritten(tmp_path, route):
    folder, before = input_folder(tmp_path)
    if route == "dotdot":
        output = folder / ".." / "in" / "a.png"
    elif route == "symlink":
        output = tmp_path / "link.png"
        output.symlink_to(folder / "a.png")
    elif route == "hardlink":
        output = tmp_path / "hard.png"
        output.hardlink_to(folder / "a.png")
    else:
        (tmp_path / "alias").symlink_to(folder)
        output = tmp_path / "alias" / "a.png"
    result = CliRunner().invoke(main, ["denoise", str(folder / "a.png"), "-o", str(output), "--overwrite"])
    assert result.exit_code == 2 and "refusing to overwrite an input" in result.output, result.output
    assert (folder / "a.png").read_bytes() == before
    result = CliRunner().invoke(main, ["denoise", str(folder), "-o", str(output.parent), "--overwrite"])
    assert result.exit_code == 2 and (folder / "a.png").read_bytes() == before


def test_two_inputs_with_one_output_are_refused_before_anything_runs(tmp_path):
    for name in ("d1", "d2"):
        (tmp_path / name).mkdir()
        iio.imwrite(tmp_path / name / "a.png", noisy_pixels(numpy.uint8)[1])
    result = run("denoise", tmp_path / "d1" / "a.png", tmp_path / "d2" / "a.png", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "would both be written to" in result.output
    assert not (tmp_path / "out").exists()


def test_hidden_and_partial_files_are_never_taken_as_inputs(tmp_path):
    folder, _ = input_folder(tmp_path)
    noisy = iio.imread(folder / "a.png")
    iio.imwrite(folder / ".hidden.png", noisy)
    iio.imwrite(folder / ".a.x1y2.nlfilt-host-123.partial.png", noisy)
    (folder / ".git").mkdir()
    iio.imwrite(folder / ".git" / "b.png", noisy)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".c.x1y2.nlfilt-elsewhere-1.partial.png").write_bytes(b"someone else's partial file")
    result = run("denoise", folder, "-o", out, "--recursive", "--report", "-")
    assert result.exit_code == 0
    assert [Path(entry["input"]).name for entry in report_entries(result.stdout)] == ["a.png"]
    assert sorted(path.name for path in out.iterdir()) == [".c.x1y2.nlfilt-elsewhere-1.partial.png", "a.png"]


REFUSED_OUTPUTS = [
    ("rgba8.png", numpy.uint8, 4, ".bmp", "alpha"),
    ("rgba8.png", numpy.uint8, 4, ".jpg", "alpha"),
    ("grayalpha8.png", numpy.uint8, 2, ".jpeg", "alpha"),
    ("gray32.tif", numpy.float32, 0, ".png", "TIFF"),
    ("gray32.tif", numpy.float32, 0, ".jpg", "TIFF"),
    ("gray16.png", numpy.uint16, 0, ".jpg", "8-bit"),
    ("gray16.png", numpy.uint16, 0, ".bmp", "8-bit"),
]


@pytest.mark.parametrize(("name", "dtype", "channels", "suffix", "reason"), REFUSED_OUTPUTS,
                         ids=[f"{row[0]}-to-{row[3][1:]}" for row in REFUSED_OUTPUTS])
def test_every_output_that_would_lose_data_is_refused(tmp_path, name, dtype, channels, suffix, reason):
    iio.imwrite(tmp_path / name, noisy_pixels(dtype, channels)[1])
    target = tmp_path / f"out{suffix}"
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / name), "-o", str(target)])
    assert result.exit_code == 2 and reason in result.output, result.output
    assert not target.exists()


# The command line writes exactly what the library computes, rounded and clipped as documented

@pytest.mark.parametrize(("name", "dtype", "channels"), ROUND_TRIPS, ids=[row[0] for row in ROUND_TRIPS])
def test_the_output_is_the_library_result_rounded_and_clipped(tmp_path, name, dtype, channels):
    source = tmp_path / name
    iio.imwrite(source, noisy_pixels(dtype, channels)[1])
    pixels = iio.imread(source)
    lossless = ".tif" if numpy.dtype(dtype).kind == "f" or (dtype == numpy.uint16 and channels) else ".png"
    target = tmp_path / f"out{lossless}"
    assert run("denoise", source, "-o", target, "--quiet").exit_code == 0
    colour = pixels[..., :-1] if channels in (2, 4) else pixels
    filtered = nlfilt.denoise(colour.astype(numpy.float32), device="cpu")
    if numpy.dtype(dtype).kind == "u":
        limit = numpy.iinfo(dtype).max
        expected = numpy.clip(numpy.rint(filtered), 0, limit).astype(dtype)
    else:
        expected = filtered.astype(dtype)
    if channels in (2, 4):
        expected = numpy.concatenate([expected, pixels[..., -1:]], axis=2)
    numpy.testing.assert_array_equal(iio.imread(target), expected)


def test_integer_outputs_are_rounded_and_clipped_not_truncated(tmp_path):
    from nlfilt.images import cast_like

    values = numpy.array([[-3.2, 0.49, 0.51, 1.7, 127.8, 254.6, 255.4, 300.0]])
    assert cast_like(values, numpy.uint8).tolist() == [[0, 0, 1, 2, 128, 255, 255, 255]]
    values = numpy.array([[-1.0, 0.3, 0.7, 40000.6, 65534.6, 65535.4, 70000.0]])
    assert cast_like(values, numpy.uint16).tolist() == [[0, 0, 1, 40001, 65535, 65535, 65535]]


# Stacks: multi-page TIFF, each page filtered as its own image ----------------------------------------------

def stack_pages(dtype, channels, pages=4):
    return numpy.stack([noisy_pixels(dtype, channels)[1] for _ in range(pages)])


@pytest.mark.parametrize(("kind", "dtype", "channels"), [
    ("imagej", numpy.uint16, 0), ("ome", numpy.float32, 0), ("plain", numpy.uint8, 3),
    ("plain", numpy.uint8, 4),
])
def test_a_stack_is_filtered_page_by_page_and_keeps_its_layout_and_metadata(tmp_path, kind, dtype, channels):
    import tifffile

    from nlfilt.images import cast_like

    pages = stack_pages(dtype, channels)
    source = tmp_path / "stack.tif"
    if kind == "imagej":
        tifffile.imwrite(source, pages, imagej=True, resolution=(2.0, 2.0),
                         metadata={"axes": "ZYX", "spacing": 2.5, "unit": "um"})
    elif kind == "ome":
        tifffile.imwrite(source, pages, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.3,
                                                            "PhysicalSizeXUnit": "µm"})
    else:
        tifffile.imwrite(source, pages, photometric="rgb")
    target = tmp_path / "out" / "stack.tif"
    report = tmp_path / "report.jsonl"
    result = run("denoise", source, "-o", target, "--method", "filter", "--report", report, "--quiet")
    assert result.exit_code == 0, result.output
    written = tifffile.imread(target)
    assert written.shape == pages.shape and written.dtype == pages.dtype
    for page, out in zip(pages, written, strict=True):
        colour = page[..., :-1] if channels == 4 else page
        expected = cast_like(nlfilt.denoise(colour.astype(numpy.float32), device="cpu"), numpy.dtype(dtype))
        numpy.testing.assert_array_equal(out[..., :-1] if channels == 4 else out, expected)
        if channels == 4:
            numpy.testing.assert_array_equal(out[..., -1], page[..., -1])  # alpha untouched
    with tifffile.TiffFile(target) as tiff:
        if kind == "imagej":
            assert tiff.is_imagej and tiff.imagej_metadata["spacing"] == 2.5
            assert tiff.imagej_metadata["unit"] == "um" and tiff.pages[0].resolution == (2.0, 2.0)
            assert tiff.series[0].axes == "ZYX"
        elif kind == "ome":
            assert tiff.is_ome and 'PhysicalSizeX="0.3"' in tiff.ome_metadata and tiff.series[0].axes == "TYX"
    assert report_entries(report.read_text())[0]["frames"] == 4


@pytest.mark.parametrize("channels", [0, 3])
def test_a_stack_filtered_as_a_volume_is_the_library_result(tmp_path, channels):
    import tifffile

    from nlfilt.images import cast_like

    pages = stack_pages(numpy.uint16, channels)
    source = tmp_path / "series.tif"
    if channels:
        tifffile.imwrite(source, pages, photometric="rgb")
    else:
        tifffile.imwrite(source, pages, imagej=True, metadata={"axes": "TYX", "finterval": 0.5})
    target = tmp_path / "out.tif"
    result = run("denoise", source, "-o", target, "--stack", "volume", "--method", "filter", "--patch",
                 "1,3,3", "--window", "3,7,7", "--sigma", "800", "--quiet")
    assert result.exit_code == 0, result.output
    expected = nlfilt.denoise(pages.astype(numpy.float32), channel_axis=-1 if channels else None,
                              patch=(1, 3, 3), window=(3, 7, 7), sigma=800.0, device="cpu")
    numpy.testing.assert_array_equal(tifffile.imread(target), cast_like(expected, numpy.dtype(numpy.uint16)))
    if not channels:
        with tifffile.TiffFile(target) as tiff:
            assert tiff.imagej_metadata["finterval"] == 0.5 and tiff.series[0].axes == "TYX"


def test_volume_mode_needs_the_filter_method_and_boxes_need_volumes(tmp_path):
    import tifffile

    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, stack_pages(numpy.uint8, 0), photometric="minisblack")
    command = ["denoise", str(source), "-o", str(tmp_path / "o.tif"), "--stack", "volume"]
    result = CliRunner().invoke(main, [*command, "--method", "collaborative"])
    assert result.exit_code == 2 and "--method filter" in result.output, result.output
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1 and "a box Z,H,W such as 1,5,5" in result.output, result.output  # 4 frames
    iio.imwrite(tmp_path / "flat.png", noisy_pixels(numpy.uint8, 0)[1])
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "flat.png"), "-o", str(tmp_path / "f.png"),
                                       "--method", "filter", "--patch", "1,3,3"])
    assert result.exit_code == 2 and "--patch 1,3,3" in result.output, result.output
    assert "add --stack volume" in result.output
    result = CliRunner().invoke(main, ["spectrum", str(tmp_path / "flat.png"), "-o", str(tmp_path / "s.png"),
                                       "--window", "3,7,7"])
    assert result.exit_code == 2 and "this command takes 2-D images" in result.output, result.output


def test_a_stack_needs_a_tiff_or_animated_png_output(tmp_path):
    import tifffile

    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, stack_pages(numpy.uint8, 0), photometric="minisblack")
    result = CliRunner().invoke(main, ["denoise", str(source), "-o", str(tmp_path / "out.jpg")])
    assert result.exit_code == 2 and "needs a TIFF output" in result.output, result.output
    deep = tmp_path / "deep.tif"
    tifffile.imwrite(deep, stack_pages(numpy.uint16, 0), photometric="minisblack")
    result = CliRunner().invoke(main, ["denoise", str(deep), "-o", str(tmp_path / "deep.png")])
    assert result.exit_code == 2 and "8-bit frames only" in result.output, result.output
    assert not (tmp_path / "out.jpg").exists() and not (tmp_path / "deep.png").exists()


@pytest.mark.parametrize("channels", [0, 3])
def test_an_animated_png_is_a_stack_of_its_frames(tmp_path, channels):
    from nlfilt.images import cast_like

    pages = stack_pages(numpy.uint8, channels, pages=3)
    source = tmp_path / "clip.png"
    iio.imwrite(source, pages, extension=".png")
    target = tmp_path / "out" / "clip.png"
    assert run("denoise", source, "-o", target, "--method", "filter", "--quiet").exit_code == 0
    written = iio.imread(target, index=None)
    assert written.shape == pages.shape
    for page, out in zip(pages, written, strict=True):
        filtered = nlfilt.denoise(page.astype(numpy.float32), device="cpu")
        numpy.testing.assert_array_equal(out, cast_like(filtered, numpy.dtype(numpy.uint8)))


def test_single_image_commands_refuse_a_stack(tmp_path):
    import tifffile

    from nlfilt.images import ImageError, read_image

    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, stack_pages(numpy.uint8, 0), photometric="minisblack")
    with pytest.raises(ImageError, match=r"multi-page TIFF \(4 frames\)"):
        read_image(source)
    result = CliRunner().invoke(main, ["filter-map", str(source), "--pixel", "3", "3", "-o",
                                       str(tmp_path / "map.png")])
    assert result.exit_code != 0 and "multi-page TIFF" in result.output, result.output


def test_frame_progress_counts_frames_with_the_current_frames_part():
    from nlfilt.cli.denoise import _frame_progress

    calls = []
    report = _frame_progress(lambda done, total: calls.append((done, total)), 2, 5)
    report(1, 4)
    report(4, 4)
    assert calls == [(2.25, 5), (3.0, 5)]


@pytest.mark.parametrize("channels", [3, 4])
def test_webp_is_written_lossless_with_alpha_untouched(tmp_path, channels):
    from nlfilt.images import cast_like

    pixels = noisy_pixels(numpy.uint8, channels)[1]
    source = tmp_path / "photo.webp"
    iio.imwrite(source, pixels, extension=".webp", lossless=True, exact=True)
    numpy.testing.assert_array_equal(iio.imread(source), pixels)
    folder = tmp_path / "out"
    assert run("denoise", tmp_path, "-o", folder, "--method", "filter", "--quiet").exit_code == 0
    written = iio.imread(folder / "photo.webp")
    colour = pixels[..., :3]
    expected = cast_like(nlfilt.denoise(colour.astype(numpy.float32), device="cpu"), numpy.dtype(numpy.uint8))
    numpy.testing.assert_array_equal(written[..., :3], expected)  # lossless: exactly the rounded result
    if channels == 4:
        numpy.testing.assert_array_equal(written[..., 3], pixels[..., 3])


def test_gray_to_webp_is_refused_with_the_reason(tmp_path):
    iio.imwrite(tmp_path / "gray.png", noisy_pixels(numpy.uint8, 0)[1])
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "gray.png"), "-o", str(tmp_path / "g.webp")])
    assert result.exit_code == 2 and "WebP has no gray mode" in result.output, result.output
    assert not (tmp_path / "g.webp").exists()
