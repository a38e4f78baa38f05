"""Stacks: multi-page TIFF and animated PNG filtered page by page or as a volume, their layout and
metadata kept, and the commands that take one image refusing them."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

import nlfilt
from nlfilt.cli import main

from clitools import noisy_pixels, report_entries, run


def stack_pages(dtype, channels, pages=4):
    return numpy.stack([noisy_pixels(dtype, channels, seed=page)[1] for page in range(pages)])


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


def test_volume_mode_filters_cubes_by_default_and_the_filter_needs_boxes(tmp_path):
    import tifffile

    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, stack_pages(numpy.uint8, 0), photometric="minisblack")
    command = ["denoise", str(source), "-o", str(tmp_path / "o.tif"), "--stack", "volume"]
    result = CliRunner().invoke(main, [*command, "--report", str(tmp_path / "r.jsonl")])  # cubes
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.jsonl").read_text().splitlines()[-1])["stack"] == "volume"
    result = CliRunner().invoke(main, [*command, "--method", "filter", "--overwrite"])
    assert result.exit_code == 1 and "a box Z,H,W such as 1,5,5" in result.output, result.output
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
    from nlfilt.methods.base import frame_progress

    calls = []
    report = frame_progress(lambda done, total: calls.append((done, total)), 2, 5)
    report(1, 4)
    report(4, 4)
    assert calls == [(2.25, 5), (3.0, 5)]
