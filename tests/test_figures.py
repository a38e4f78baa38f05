"""The figure commands: filter maps of one pixel, the spectrum, and the comparison with trained networks;
what they print where, and their figures (drawn with matplotlib, the figures extra)."""

from __future__ import annotations

import sys

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

import nlfilt
from nlfilt.backend import gpu_status
from nlfilt.cli import main
from nlfilt.cli.figures import figure_pixels, filter_map_figure, kernel_rows_figure, spectrum_figure
from nlfilt.cli.options import describe_seconds

from clitools import noisy_pixels


def assert_readable(path, shortest: int = 400, longest: int = 4000) -> None:
    """The figure at ``path``: 8-bit RGB, of a sensible size, and not blank."""
    figure = iio.imread(path)
    assert figure.dtype == numpy.uint8 and figure.ndim == 3 and figure.shape[2] == 3
    assert shortest <= min(figure.shape[:2]) and max(figure.shape[:2]) <= longest, figure.shape
    assert_not_blank(figure)


def assert_not_blank(pixels: numpy.ndarray) -> None:
    """Many colours, none of them (the white background) covering almost all of the figure, and some
    clearly coloured (neither white nor gray) pixels."""
    colours, counts = numpy.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    coloured = numpy.ptp(pixels.astype(int), axis=2) > 40
    assert len(colours) > 200 and counts.max() < 0.85 * counts.sum() and coloured.mean() > 0.01, \
        (len(colours), counts.max() / counts.sum(), coloured.mean())


def write_scene(tmp_path, name: str = "a.png", crop: tuple[int, int] | None = None):
    _, noisy = noisy_pixels(numpy.uint8)
    if crop is not None:
        noisy = noisy[:crop[0], :crop[1]]
    iio.imwrite(tmp_path / name, noisy)
    return tmp_path / name, noisy


@pytest.mark.parametrize("window", ["global", "7"])
def test_filter_map_draws_a_figure_and_prints_the_weights_to_stdout(tmp_path, window):
    image, _ = write_scene(tmp_path)
    result = CliRunner().invoke(main, ["filter-map", str(image), "--pixel", "12", "14",
                                       "-o", str(tmp_path / "map.png"), "--window", window])
    assert result.exit_code == 0, result.output
    assert_readable(tmp_path / "map.png")
    assert result.stdout.startswith("pixel 12 14: own weight ") and "sum 1\n" in result.stdout  # NLM rows
    assert result.stderr == f"wrote {tmp_path / 'map.png'}\n"
    quiet = CliRunner().invoke(main, ["filter-map", str(image), "--pixel", "12", "14", "--quiet",
                                      "-o", str(tmp_path / "map.png"), "--window", window])
    assert quiet.exit_code == 0 and quiet.stdout == result.stdout and quiet.stderr == ""


def test_filter_map_figure_shows_the_window_enlarged_with_the_weights_it_holds():
    _, noisy = noisy_pixels(numpy.uint8)
    weights = nlfilt.filter_row(noisy.astype(numpy.float32), (12, 14), window=7, device="cpu")
    figure = filter_map_figure(weights, (12, 14), 7, "title")
    axes = figure.axes[0]
    assert axes.get_xlim() == (10.5, 17.5) and axes.get_ylim() == (15.5, 8.5)  # rows 9-15, columns 11-17
    shown = axes.images[0]
    assert numpy.array_equal(shown.get_array(), weights[9:16, 11:18])
    assert numpy.all(weights[9:16, 11:18] > 0) and numpy.count_nonzero(weights) == 49  # all of the window
    assert shown.get_clim() == (0.0, numpy.sort(weights.ravel())[-2])  # up to the largest other weight
    assert axes.get_xlabel() == "column" and axes.get_ylabel() == "row"
    assert figure.texts[0].get_text().startswith("title\nown weight")
    assert figure.axes[1].get_ylabel() == "weight"  # the colour bar


@pytest.mark.parametrize("window", [None, 7])
def test_the_pixels_outline_covers_none_of_its_cell(window):
    weights = numpy.random.default_rng(0).random((40, 48))
    plain = figure_pixels(filter_map_figure(weights, (20, 30), window, "title", marker=False))
    figure = filter_map_figure(weights, (20, 30), window, "title")
    marked = figure_pixels(figure)
    corners = figure.axes[0].transData.transform([(29.5, 19.5), (30.5, 20.5)])  # the cell's, in pixels
    left, right = sorted(corners[:, 0])
    low, high = sorted(marked.shape[0] - corners[:, 1])  # rows of the picture count from the top
    changed = numpy.any(plain != marked, axis=2)
    assert changed.sum() > 20  # the outline is drawn
    assert not changed[int(numpy.ceil(low)):int(high), int(numpy.ceil(left)):int(right)].any()


def test_a_global_map_of_a_large_image_adds_the_pixels_neighbourhood_enlarged():
    weights = numpy.random.default_rng(1).random((100, 90))
    weights[50, 40] = 5.0  # the pixel's own weight, far above the others
    figure = filter_map_figure(weights, (50, 40), None, "title")
    whole, enlarged = figure.axes[:2]
    assert whole.get_xlim() == (-0.5, 89.5) and enlarged.get_xlim() == (27.5, 52.5)
    assert enlarged.images[0].get_clim()[1] == pytest.approx(weights[weights < 5].max())
    assert "own weight 5 (above the colour scale)" in figure.texts[0].get_text()
    assert_not_blank(figure_pixels(figure))


def test_filter_map_and_spectrum_help_offer_no_volume_sides():
    for command in ("filter-map", "spectrum"):
        help_text = CliRunner().invoke(main, [command, "--help"]).output
        assert "--patch N " in help_text and "--stack" not in help_text and "Z,H,W" not in help_text
    assert "--stack volume" in CliRunner().invoke(main, ["denoise", "--help"]).output


def test_spectrum_prints_the_eigenvalues_to_stdout_and_draws_them_with_the_eigenvectors(tmp_path):
    image, _ = write_scene(tmp_path, crop=(24, 24))
    target = tmp_path / "spectrum.png"
    result = CliRunner().invoke(main, ["spectrum", str(image), "-o", str(target), "--count", "5",
                                       "--window", "global"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["rank", "eigenvalue"] and len(lines) == 6
    values = [float(line.split()[1]) for line in lines[1:]]
    assert [int(line.split()[0]) for line in lines[1:]] == [1, 2, 3, 4, 5]
    assert values[0] == pytest.approx(1.0, abs=1e-4) and values == sorted(values, reverse=True)
    assert result.stderr.startswith(f"wrote {target} (") and "products with K" in result.stderr
    assert_readable(target)


def test_each_eigenvector_has_its_own_colour_scale_symmetric_about_zero():
    rng = numpy.random.default_rng(2)
    vectors = rng.normal(size=(3, 20, 30)) * numpy.array([1.0, 10.0, 0.01])[:, None, None]
    vectors[1, 0, 0] = 1e4  # one large value does not wash the rest out
    figure = spectrum_figure(numpy.array([1.0, 0.9, 0.5]), vectors, "title")
    plot, *panels = [axes for axes in figure.axes if axes.get_label() != "<colorbar>"]
    assert plot.get_xlabel() == "rank" and plot.get_ylabel().startswith("eigenvalue")
    limits = [panel.images[0].get_clim() for panel in panels]
    assert all(low == -high and high > 0 for low, high in limits)
    assert limits[1][1] < 100 and limits[2][1] < 0.1 < limits[0][1]
    assert [panel.images[0].get_cmap().name for panel in panels] == ["RdBu_r"] * 3
    assert len(figure.axes) == 1 + 2 * 3  # each eigenvector with its colour bar
    assert_not_blank(figure_pixels(figure))


def test_short_estimates_are_never_zero_minutes():
    assert describe_seconds(0.2) == "under a second"
    assert describe_seconds(1.2) == "about 1 second" and describe_seconds(40) == "about 40 seconds"
    assert describe_seconds(70) == "about 1 minute" and describe_seconds(600) == "about 10 minutes"
    assert describe_seconds(5400) == "about 1.5 hours"


@pytest.mark.parametrize("command", [["filter-map", "--pixel", "1", "1"], ["spectrum"],
                                     ["compare-network", "--filter-map", "1", "1"]])
def test_without_matplotlib_a_figure_is_refused_with_the_install_hint(tmp_path, monkeypatch, command):
    image, _ = write_scene(tmp_path, crop=(8, 8))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = CliRunner().invoke(main, [command[0], str(image), *command[1:], "-o", str(tmp_path / "f.png")])
    assert result.exit_code == 2 and 'pip install "nlfilt[figures]"' in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "f.png").exists()
    if command[0] == "compare-network":  # the table needs no matplotlib
        table = CliRunner().invoke(main, ["compare-network", str(image), "--width", "16", "--steps", "2",
                                          "--device", "cpu"])
        assert table.exit_code == 0 and "tangent kernel movement" in table.stdout, table.output


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
    assert "trained in " in result.stderr  # messages and the bar on stderr, results on stdout
    quiet = CliRunner().invoke(main, ["compare-network", str(tmp_path / "crop.png"), "--width", "256",
                                      "--steps", "10", "--device", "cpu", "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == result.stdout
    adam = CliRunner().invoke(main, ["compare-network", str(tmp_path / "crop.png"), "--width", "64",
                                     "--steps", "5", "--optimizer", "adam", "--depth", "2"])
    assert adam.exit_code == 0 and "adam" in adam.stdout
    standard = CliRunner().invoke(main, ["compare-network", str(tmp_path / "crop.png"), "--width", "256",
                                         "--steps", "10", "--parametrization", "standard", "--device", "cpu"])
    assert standard.exit_code == 0, standard.output
    assert "standard parametrisation" in standard.stdout.splitlines()[0]
    rate = float(standard.stdout.split("learning rate ")[1].split()[0])
    ntk_rate = float(result.stdout.split("learning rate ")[1].split()[0])
    assert rate != pytest.approx(ntk_rate, rel=0.1)  # its own kernel's step, not the ntk filter's
    assert standard.stdout.splitlines()[6].startswith("gd: tangent kernel movement")
    iio.imwrite(tmp_path / "large.png", noisy)  # 40 x 48 = 1920 pixels: allowed, but too costly here
    costly = CliRunner().invoke(main, ["compare-network", str(tmp_path / "large.png"), "--width", "8192",
                                       "--depth", "3", "--steps", "1000"])
    assert costly.exit_code == 1 and "--max-minutes" in costly.output
    assert "--device gpu" not in costly.output or gpu_status()[0]  # offered only when a GPU is usable
    short = CliRunner().invoke(main, ["compare-network", str(tmp_path / "crop.png"), "--max-minutes", "1e-9"])
    assert short.exit_code == 1 and "would take under a second" in short.output, short.output
    iio.imwrite(tmp_path / "big.png", numpy.zeros((2000, 2000), numpy.uint8))
    refused = CliRunner().invoke(main, ["compare-network", str(tmp_path / "big.png"), "--width", "4096",
                                        "--depth", "2", "--max-minutes", "0"])
    assert refused.exit_code == 1 and "over half of this machine's" in refused.output, refused.output
    assert "Traceback" not in refused.output
    even = CliRunner().invoke(main, ["compare-network", str(tmp_path / "crop.png"), "--patch", "4"])
    assert even.exit_code == 2 and "--patch" in even.output


def test_compare_network_on_a_whole_image_uses_the_tent_window_and_sampled_kernel_rows(tmp_path):
    """Above 64 x 64 pixels: the tent-windowed closed form (--window auto), gradient descent's step from the
    network's own kernel, the kernel's change estimated from sampled rows; --window global and an odd side
    taken, an even one refused."""
    rng = numpy.random.default_rng(5)
    image = numpy.clip(128 + 40 * numpy.sin(numpy.arange(80) / 6)[None, :] + rng.normal(0, 20, (72, 80)),
                       0, 255).astype(numpy.uint8)
    iio.imwrite(tmp_path / "whole.png", image)
    command = ["compare-network", str(tmp_path / "whole.png"), "--width", "64", "--steps", "3",
               "--device", "cpu"]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "72x80" in lines[0] and "tent window 21" in lines[0]
    assert "estimated from 1024 random rows" in lines[-1]
    relative = [float(line.split()[2]) for line in lines[2:5]]  # |y - f| / |y| shrinks as it trains
    assert relative[0] > relative[-1]
    own = float(lines[0].split("learning rate ")[1].split()[0])
    closed = float(lines[0].split("K = ")[1].split(",")[0])
    assert own < closed / 10  # the network's global kernel: a far larger lambda_max than the window's
    chosen = CliRunner().invoke(main, [*command, "--window", "9"])
    assert chosen.exit_code == 0 and "tent window 9" in chosen.stdout.splitlines()[0]
    even = CliRunner().invoke(main, [*command, "--window", "8"])
    assert even.exit_code == 2 and "--window" in even.output
    iio.imwrite(tmp_path / "small.png", image[:20, :20])
    small = CliRunner().invoke(main, ["compare-network", str(tmp_path / "small.png"), "--width", "32",
                                      "--steps", "2", "--window", "7"])
    assert small.exit_code == 0 and "tent window 7" in small.stdout.splitlines()[0]
    assert "estimated" not in small.stdout  # exact below 64 x 64


def test_compare_network_draws_the_kernel_rows_of_the_filter_and_both_networks(tmp_path):
    image, _ = write_scene(tmp_path, "crop.png", crop=(16, 16))
    result = CliRunner().invoke(main, ["compare-network", str(image), "--width", "128", "--steps", "5",
                                       "--filter-map", "8", "5", "-o", str(tmp_path / "map.png"),
                                       "--dtype", "float64", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "gd: tangent kernel movement" in result.stdout and "adam: tangent kernel movement" in result.stdout
    table = result.stdout.splitlines()[-4:]  # the kernel rows' maxima and distances to K's
    assert table[0].split()[:5] == ["row", "of", "pixel", "8", "5"]
    assert [line.split()[0] for line in table[1:]] == ["closed-form", "gd-trained", "adam-trained"]
    gd_distance, gd_shape = map(float, table[2].split()[-2:])
    assert gd_distance < 0.3 and gd_shape < 0.1  # GD's kernel row: the closed-form one
    assert result.stderr.endswith(f"wrote {tmp_path / 'map.png'}\n")
    assert_readable(tmp_path / "map.png")
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


def test_the_kernel_rows_panels_are_named_and_carry_their_distances():
    rows = {"closed-form kernel K": numpy.arange(20.0).reshape(4, 5),
            "gd-trained network": numpy.ones((4, 5))}
    notes = {"gd-trained network": "|row - K|/|K| 0.1234"}
    figure = kernel_rows_figure(rows, (1, 2), notes, "the title", "the caption")
    titles = [axes.get_title() for axes in figure.axes if axes.get_label() != "<colorbar>"]
    assert titles == ["closed-form kernel K\n", "gd-trained network\n|row - K|/|K| 0.1234"]
    assert [text.get_text() for text in figure.texts] == ["the title", "the caption"]
