"""``nlfilt spectrum``: the leading eigenvalues of a filter and its eigenvectors, in one figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
import numpy

import nlfilt
from nlfilt.cli.filter_map import check_figure_command
from nlfilt.cli.options import api_options, check_image_cost, filter_options, resolve_for_image
from nlfilt.cli.progress import ProductBar
from nlfilt.images import ImageError, read_header, read_image, write_image

#: Figure geometry (pixels): eigenvector tiles per row, the gap between panels, the largest tile side,
#: and the height of the eigenvalue plot above them.
COLUMNS = 4
GAP = 6
TILE = 128
PLOT_HEIGHT = 120


def diverging(values: numpy.ndarray) -> numpy.ndarray:
    """Colour ``values`` into 8-bit RGB: blue for negative, white for 0, red for positive (scaled by the
    largest magnitude), so an eigenvector's sign pattern reads at a glance."""
    scale = float(numpy.abs(values).max()) or 1.0
    level = numpy.clip(values / scale, -1, 1)[..., None]
    white = numpy.array([255.0, 255, 255])
    red, blue = numpy.array([178.0, 24, 43]), numpy.array([33.0, 102, 172])
    colours = numpy.where(level >= 0, white + (red - white) * level, white + (blue - white) * -level)
    return numpy.round(colours).astype(numpy.uint8)


def spectrum_figure(eigenvalues: numpy.ndarray, eigenvectors: numpy.ndarray) -> numpy.ndarray:
    """One RGB figure: the eigenvalues against their rank (dots; gray lines at 0 and 1) above the
    eigenvectors as tiles (``diverging`` colours), in rank order, left to right and top to bottom."""
    count, height, width = eigenvectors.shape[0], *eigenvectors.shape[-2:]
    step = max(1, math.ceil(max(height, width) / TILE))  # large images: every step-th pixel
    zoom = max(1, TILE // (max(height, width) // step))  # small images: pixels repeated
    tiles = [numpy.kron(diverging(vector.reshape(-1, width)[:height][::step, ::step]),
                        numpy.ones((zoom, zoom, 1), numpy.uint8)) for vector in eigenvectors]
    tile_height, tile_width = tiles[0].shape[:2]
    columns = min(COLUMNS, count)
    rows = -(-count // columns)
    figure_width = GAP + columns * (tile_width + GAP)
    figure = numpy.full((PLOT_HEIGHT + GAP + rows * (tile_height + GAP), figure_width, 3), 255, numpy.uint8)
    low = min(0.0, float(eigenvalues.min()))

    def y_of(value: float) -> int:
        return GAP + round((1.0 - value) / (1.0 - low) * (PLOT_HEIGHT - 2 * GAP)) if low < 1 else GAP

    for level, shade in ((1.0, 200), (0.0, 140)):
        figure[y_of(level), GAP:figure_width - GAP] = shade
    for rank, value in enumerate(eigenvalues):
        x = GAP + round(rank * (figure_width - 3 * GAP) / max(count - 1, 1)) + GAP // 2
        y = y_of(float(value))
        figure[max(0, y - 2):y + 3, max(0, x - 2):x + 3] = (20, 20, 20)
    for index, tile in enumerate(tiles):
        top = PLOT_HEIGHT + GAP + (index // columns) * (tile_height + GAP)
        left = GAP + (index % columns) * (tile_width + GAP)
        figure[top:top + tile_height, left:left + tile_width] = tile
    return figure


@click.command("spectrum")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG file for the figure.")
@click.option("--count", type=click.IntRange(min=1), default=8, show_default=True,
              help="Eigenpairs drawn (the largest eigenvalues).")
@filter_options
@click.option("--max-minutes", type=float, default=10.0, show_default=True,
              help="Refuse when the estimated CPU time exceeds this (0: no limit).")
def spectrum_command(image_path: Path, output: Path, count: int, max_minutes: float,
                     **filter_params: Any) -> None:
    """Draw the leading eigenvalues of the filter W of IMAGE and its eigenvectors, in one figure.

    The eigenvalues (dots against their rank, gray lines at 0 and 1) above the
    eigenvectors as images (red positive, blue negative), from a Lanczos run
    of products with K: global on small images, windowed at any size.  The
    eigenvalues are also printed.
    """
    options = api_options(filter_params)
    options.pop("iterations", None)
    check_figure_command(options, image_path, output)
    try:
        header = read_header(image_path)
        steps = max(3 * count, count + 30)
        check_image_cost(header.colour_shape, dict(options, iterations=steps), max_minutes)
        image = read_image(image_path, header)
        colour = image.colour.astype(numpy.float32)
        _, call = resolve_for_image(colour, options)
        call = {key: value for key, value in call.items() if key not in ("stop", "max_iterations", "guide")}
        bar = ProductBar(image_path.name)
        try:
            spectrum = nlfilt.filter_spectrum(colour, count, progress=bar, **call)
        finally:
            bar.close()
        write_image(output, spectrum_figure(spectrum.eigenvalues, spectrum.eigenvectors))
    except (ImageError, ValueError, RuntimeError) as exc:
        raise click.ClickException(f"{image_path}: {exc}") from None
    values = ", ".join(f"{value:.4g}" for value in spectrum.eigenvalues)
    click.echo(f"{output}: eigenvalues {values} ({spectrum.applications} products with K)", err=True)
