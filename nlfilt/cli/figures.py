"""Figures drawn with NumPy alone (8-bit RGB arrays): colour maps and a grid of tiles.

Shared by the commands that draw: ``filter-map``, ``spectrum`` and ``compare-network --filter-map``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
import numpy

from nlfilt.cli.options import RunOptions
from nlfilt.images import storage_problem

#: Gap between tiles, and the side a tile is brought near (small images are repeated, large ones
#: subsampled), in figure pixels.
GAP = 6
TILE = 128

#: Colour map anchors from black through purple, red and orange to pale yellow
#: (perceptually ordered, readable in gray scale), interpolated linearly.
_ANCHORS = numpy.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], float)


def heat_map(weights: numpy.ndarray, pixel: tuple[int, int] | None = None) -> numpy.ndarray:
    """Colour ``weights`` (H, W) into an 8-bit RGB image, 0 (or the minimum) to the maximum.

    With ``pixel``, a small cyan cross marks it.
    """
    low = min(float(weights.min()), 0.0)
    high = float(weights.max())
    scaled = (weights - low) / (high - low) if high > low else numpy.zeros_like(weights)
    position = scaled * (len(_ANCHORS) - 1)
    index = numpy.clip(position.astype(int), 0, len(_ANCHORS) - 2)
    fraction = (position - index)[..., None]
    colours = _ANCHORS[index] * (1 - fraction) + _ANCHORS[index + 1] * fraction
    image = numpy.round(colours).astype(numpy.uint8)
    if pixel is not None:
        row, col = pixel
        for delta in range(-3, 4):
            if delta and 0 <= row + delta < image.shape[0]:
                image[row + delta, col] = (0, 255, 255)
            if delta and 0 <= col + delta < image.shape[1]:
                image[row, col + delta] = (0, 255, 255)
    return image


def diverging(values: numpy.ndarray) -> numpy.ndarray:
    """Colour ``values`` into 8-bit RGB: blue for negative, white for 0, red for positive (scaled by the
    largest magnitude), so a sign pattern reads at a glance."""
    scale = float(numpy.abs(values).max()) or 1.0
    level = numpy.clip(values / scale, -1, 1)[..., None]
    white = numpy.array([255.0, 255, 255])
    red, blue = numpy.array([178.0, 24, 43]), numpy.array([33.0, 102, 172])
    colours = numpy.where(level >= 0, white + (red - white) * level, white + (blue - white) * -level)
    return numpy.round(colours).astype(numpy.uint8)


def fit_tile(image: numpy.ndarray) -> numpy.ndarray:
    """An (H, W, 3) image brought near ``TILE`` pixels on its longer side: every step-th pixel of a large
    one, each pixel of a small one repeated in a square."""
    height, width = image.shape[:2]
    step = max(1, math.ceil(max(height, width) / TILE))
    zoom = max(1, TILE // (max(height, width) // step))
    return numpy.kron(image[::step, ::step], numpy.ones((zoom, zoom, 1), numpy.uint8))


def tile_grid(tiles: list[numpy.ndarray], columns: int) -> numpy.ndarray:
    """Tiles of one shape on white, ``columns`` per row, left to right and top to bottom, ``GAP`` apart
    and around."""
    tile_height, tile_width = tiles[0].shape[:2]
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    grid = numpy.full((GAP + rows * (tile_height + GAP), GAP + columns * (tile_width + GAP), 3), 255,
                      numpy.uint8)
    for index, tile in enumerate(tiles):
        top = GAP + (index // columns) * (tile_height + GAP)
        left = GAP + (index % columns) * (tile_width + GAP)
        grid[top:top + tile_height, left:left + tile_width] = tile
    return grid


def check_figure_output(image_path: Path, output: Path) -> None:
    """A figure's output (click.UsageError): not the input image, in a folder that exists, and a format
    that holds 8-bit RGB."""
    if output.resolve() == image_path.resolve():
        raise click.UsageError(f"output {output} is the input image; refusing to overwrite it")
    if not output.resolve().parent.is_dir():
        raise click.UsageError(f"output {output}: the folder {output.parent} does not exist")
    problem = storage_problem(output.suffix, numpy.uint8, 3)
    if problem:
        raise click.UsageError(f"output {output}: {problem}")


def filter_run(params: dict[str, Any], image_path: Path, output: Path) -> RunOptions:
    """The checks of a command that draws a figure of a filter of IMAGE: its filter options (click.UsageError)
    and :func:`check_figure_output`; returns the run's options (method 'filter')."""
    run = RunOptions.from_params(params, method_name="filter")
    check_figure_output(image_path, output)
    return run
