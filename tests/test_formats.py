"""Image formats through the command line: round trips keeping dtype, layout and alpha, 16-bit colour,
WebP, outputs that would lose data, unreadable files, and outputs that are the library's result."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

import nlfilt
from nlfilt.cli import main

from clitools import error, forbid_denoising, noisy_pixels, run

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


def png_header_only(path: Path, height: int, width: int) -> None:
    """A PNG whose header claims ``height`` x ``width`` 8-bit gray pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_a_huge_header_is_refused_by_nlfilts_own_size_check_before_any_decoder(tmp_path, monkeypatch):
    """A 30000 x 30000 PNG header (a decompression bomb): nlfilt's check of time and memory refuses it in
    its words, before Pillow's bomb check speaks of a DOS attack, and nothing is decoded."""
    from PIL import Image

    from nlfilt.images import read_header

    png_header_only(tmp_path / "bomb.png", 30000, 30000)
    forbid_denoising(monkeypatch)
    result = run("denoise", tmp_path / "bomb.png", "-o", tmp_path / "out.png")
    assert result.exit_code == 1 and f"{tmp_path / 'bomb.png'}: 30000x30000 with" in result.output
    assert "would need about" in result.output or "would take about" in result.output, result.output
    for words in ("Decompression", "DOS attack", "Traceback"):
        assert words not in result.output
    network = run("compare-network", tmp_path / "bomb.png")
    assert network.exit_code == 1 and "30000x30000 at width 1024" in network.output, network.output
    assert "would take about" in network.output
    limit = Image.MAX_IMAGE_PIXELS
    assert read_header(tmp_path / "bomb.png").shape == (30000, 30000)
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's limit lifted only while nlfilt reads a header


def test_unreadable_files_are_refused_in_nlfilts_words_naming_the_file(tmp_path):
    """Not an image, another format (GIF), no extension, a damaged PNG and JPEG: the message says what is
    wrong in nlfilt's words (imageio's 'Could not find a backend ... iomode' never shows)."""
    _, noisy = noisy_pixels(numpy.uint8, 3)
    iio.imwrite(tmp_path / "good.png", noisy)
    iio.imwrite(tmp_path / "good.jpg", noisy)
    (tmp_path / "in").mkdir()
    cases = {
        "text.png": (b"hello, not an image", "not a PNG, TIFF, JPEG, BMP or WebP file"),
        "animation.gif": (b"GIF89a" + bytes(40), "not a PNG, TIFF, JPEG, BMP or WebP file"),
        "noextension": (b"\0\1\2\3" * 10, "not a PNG, TIFF, JPEG, BMP or WebP file"),
        "garbage.png": (b"\x89PNG\r\n\x1a\n" + bytes(60), "cannot read this PNG file: damaged, truncated"),
        "truncated.jpg": ((tmp_path / "good.jpg").read_bytes()[:300], "cannot read this JPEG file: damaged"),
        "jpeg-named.png": ((tmp_path / "good.jpg").read_bytes(), None),  # the content decides the format
    }
    for name, (content, reason) in cases.items():
        (tmp_path / "in" / name).write_bytes(content)
        result = run("denoise", tmp_path / "in" / name, "-o", tmp_path / "out" / f"{name}.png")
        if reason is None:
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == 1 and f"{tmp_path / 'in' / name}: {reason}" in result.output, result.output
        for words in ("backend", "iomode", "Traceback"):
            assert words not in result.output, (name, result.output)


def patched_tiff(path: Path, pixels: numpy.ndarray, bits: int | None = None,
                 next_page: int | None = None) -> None:
    """A TIFF of ``pixels`` (one gray page, or pages) with the first page's BitsPerSample set to
    ``bits`` and its link to the next page set to ``next_page`` (a damaged file; found by fuzzing)."""
    import tifffile

    tifffile.imwrite(path, pixels, photometric="minisblack")
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages.first
        entries = len(page.tags)
        bits_offset = page.tags["BitsPerSample"].valueoffset
    if bits is not None:
        data[bits_offset:bits_offset + 2] = struct.pack("<H", bits)
    if next_page is not None:
        link = page.offset + 2 + 12 * entries
        data[link:link + 4] = struct.pack("<I", next_page)
    path.write_bytes(bytes(data))


def test_damaged_tiffs_are_refused_in_one_message_without_the_codecs_log(tmp_path, capfd):
    """Fuzzing found TIFF headers whose sample format and bit depth name no type: the header read float64
    (numpy's type for None) and tifffile logged each oddity of the file to stderr three times; a link to a
    page past the end of an otherwise good file was logged too."""
    pixels = noisy_pixels(numpy.float32)[1]
    patched_tiff(tmp_path / "float12.tif", pixels, bits=12)
    patched_tiff(tmp_path / "stack12.tif", numpy.stack([pixels, pixels]), bits=12)
    patched_tiff(tmp_path / "lost-link.tif", pixels, next_page=0xFFFFFF00)
    for name in ("float12.tif", "stack12.tif", "lost-link.tif"):
        result = CliRunner().invoke(main, ["denoise", str(tmp_path / name), "-o",
                                           str(tmp_path / "out" / name), "--method", "filter", "--quiet"])
        logged = capfd.readouterr().err  # what tifffile's logger would print, past click's runner
        if name == "lost-link.tif":
            assert result.exit_code == 0 and (tmp_path / "out" / name).is_file(), result.output
        elif name == "float12.tif":
            assert result.exit_code == 1 and f"{tmp_path / name}: unknown pixel type" in result.output
        else:  # the first page no longer matches the second: no series
            assert result.exit_code == 1 and f"{tmp_path / name}: cannot read this TIFF file" in result.output
        assert "tifffile" not in result.output + logged and "Tiff" not in result.output + logged


def test_colour_models_other_than_gray_and_rgb_are_refused_not_filtered_as_channels(tmp_path):
    """A CMYK JPEG was read as RGBA (K as alpha) and written as an RGBA PNG; a min-is-white TIFF came back
    inverted, a palette TIFF's indices were filtered as values. A JPEG-compressed RGB TIFF (YCbCr inside)
    is read."""
    import tifffile
    from PIL import Image

    pixels = noisy_pixels(numpy.uint8, 3)[1]
    Image.fromarray(pixels).convert("CMYK").save(tmp_path / "print.jpg")
    tifffile.imwrite(tmp_path / "print.tif", numpy.dstack([pixels, pixels[..., :1]]), photometric="separated")
    tifffile.imwrite(tmp_path / "white.tif", pixels[..., 0], photometric="miniswhite")
    tifffile.imwrite(tmp_path / "white-stack.tif", numpy.stack([pixels[..., 0]] * 2),
                     photometric="miniswhite")
    tifffile.imwrite(tmp_path / "indexed.tif", pixels[..., 0], photometric="palette",
                     colormap=numpy.zeros((3, 256), numpy.uint16))
    tifffile.imwrite(tmp_path / "jpeg.tif", pixels, photometric="rgb", compression="jpeg")
    tifffile.imwrite(tmp_path / "unknown.tif", pixels[..., 0], photometric="minisblack")
    data = bytearray((tmp_path / "unknown.tif").read_bytes())
    with tifffile.TiffFile(tmp_path / "unknown.tif") as tiff:
        offset = tiff.pages.first.tags["PhotometricInterpretation"].valueoffset
    data[offset:offset + 2] = struct.pack("<H", 9999)  # no colour model (found by fuzzing: damaged tags)
    (tmp_path / "unknown.tif").write_bytes(bytes(data))
    reasons = {"print.jpg": "CMYK colour", "print.tif": "CMYK colour", "white.tif": "min-is-white gray",
               "white-stack.tif": "min-is-white gray", "indexed.tif": "palette (indexed colour) TIFF",
               "unknown.tif": "a colour model nlfilt does not read (photometric interpretation 9999)"}
    for name, reason in reasons.items():
        result = run("denoise", tmp_path / name, "-o", tmp_path / "out" / f"{name}.png", "--method", "filter")
        assert result.exit_code == 1 and f"{tmp_path / name}: {reason}" in result.output, result.output
        assert not (tmp_path / "out" / f"{name}.png").exists()
    result = run("denoise", tmp_path / "jpeg.tif", "-o", tmp_path / "out" / "jpeg.tif", "--method", "filter",
                 "--quiet")
    assert result.exit_code == 0 and iio.imread(tmp_path / "out" / "jpeg.tif").shape == pixels.shape


def animated_png_claiming(path: Path, frames: int) -> None:
    """An animated PNG of 3 frames whose animation chunk claims ``frames`` (found by fuzzing)."""
    iio.imwrite(path, noisy_pixels(numpy.uint8, 3)[1][None].repeat(3, axis=0), extension=".png")
    data = bytearray(path.read_bytes())
    start = data.index(b"acTL") - 4
    data[start + 8:start + 12] = struct.pack(">I", frames)
    data[start + 16:start + 20] = struct.pack(">I", zlib.crc32(bytes(data[start + 4:start + 16])))
    path.write_bytes(bytes(data))


def test_a_stack_is_costed_whole_in_the_limit_the_user_gave(tmp_path, monkeypatch):
    """An animated PNG claiming 5 million frames was refused as '20x24 ... would take about 1 seconds (over
    --max-minutes 1.25e-06)' (the limit shared among the frames); a stack's own memory was not counted."""
    from nlfilt.cli.options import RunOptions, check_plan
    from nlfilt.methods import method

    animated_png_claiming(tmp_path / "many.png", 5_000_000)
    forbid_denoising(monkeypatch)
    monkeypatch.setattr("nlfilt.cli.options.physical_memory", lambda: 2**40)  # time, not memory, refuses
    result = run("denoise", tmp_path / "many.png", "-o", tmp_path / "out.png")
    assert result.exit_code == 1 and "a stack of 5000000 frames of 40x48 with" in result.output, result.output
    assert "hours on this CPU (over --max-minutes 10)" in result.output
    monkeypatch.undo()
    animated_png_claiming(tmp_path / "few.png", 5)  # decoded: 3 frames are not the 5 claimed
    result = run("denoise", tmp_path / "few.png", "-o", tmp_path / "out.png")
    assert result.exit_code == 1 and f"{tmp_path / 'few.png'}: " in result.output, result.output
    assert "damaged" in result.output
    assert "Traceback" not in result.output and "reshape" not in result.output
    plan = RunOptions.from_params({"device": "cpu"}).plan((40, 48, 1), numpy.uint8, "cpu")
    frame = method(plan.method).working_bytes((40, 48, 1), plan)
    stack = frame + 3 * 100 * 40 * 48 * 4
    monkeypatch.setattr("nlfilt.cli.options.physical_memory", lambda: frame + stack)  # half: between the two
    check_plan((40, 48, 1), plan, 0)
    with pytest.raises(ValueError, match="a stack of 100 frames of 40x48 .* working memory"):
        check_plan((40, 48, 1), plan, 0, frames=100)


def test_a_tiff_whose_last_page_links_to_itself_is_read_without_going_round_for_ever(tmp_path):
    """Found by fuzzing: pages of two shapes (tifffile's generic series) and a last page that links back
    to itself made tifffile's series of a file opened afresh loop for ever; nlfilt walks the pages first."""
    import threading

    import tifffile

    path = tmp_path / "loop.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(noisy_pixels(numpy.uint8)[1], photometric="minisblack", metadata=None)
        writer.write(numpy.zeros((10, 12), numpy.uint8), photometric="minisblack", metadata=None)
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tiff:
        last = tiff.pages[-1].offset
    link = last + 2 + 12 * struct.unpack("<H", data[last:last + 2])[0]
    data[link:link + 4] = struct.pack("<I", last)
    path.write_bytes(bytes(data))
    results = []
    worker = threading.Thread(target=lambda: results.append(run("denoise", path, "-o", tmp_path / "out.tif")),
                              daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "went round the loop of pages"
    (result,) = results
    assert result.exit_code == 1 and f"{path}: unsupported TIFF stack" in result.output, result.output


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


@pytest.mark.parametrize(("name", "dtype", "channels"), ROUND_TRIPS, ids=[row[0] for row in ROUND_TRIPS])
def test_the_output_is_the_library_result_rounded_and_clipped(tmp_path, name, dtype, channels):
    source = tmp_path / name
    iio.imwrite(source, noisy_pixels(dtype, channels)[1])
    pixels = iio.imread(source)
    lossless = ".tif" if numpy.dtype(dtype).kind == "f" or (dtype == numpy.uint16 and channels) else ".png"
    target = tmp_path / f"out{lossless}"
    assert run("denoise", source, "-o", target, "--quiet").exit_code == 0  # the default method
    colour = pixels[..., :-1] if channels in (2, 4) else pixels
    filtered = nlfilt.denoise_collaborative(colour.astype(numpy.float32), device="cpu")
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
