"""The figure commands: filter maps of one pixel and the comparison with trained networks."""

from __future__ import annotations

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

from nlfilt.backend import gpu_status
from nlfilt.cli import main

from clitools import noisy_pixels


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
