"""``nlfilt filter-map``: a heat map of the weights one pixel receives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy

import nlfilt
from nlfilt.cli.options import (
    api_options,
    check_image_cost,
    check_options,
    filter_options,
    resolve_for_image,
)
from nlfilt.cli.progress import ProductBar
from nlfilt.images import ImageError, read_header, read_image, storage_problem, write_image

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


def check_figure_command(options: dict[str, Any], image_path: Path, output: Path) -> None:
    """The checks of a command that draws a figure of IMAGE into an RGB output (click.UsageError): the
    filter options, an output that is not the input, and a format that holds 8-bit RGB."""
    check_options(options)
    if output.resolve() == image_path.resolve():
        raise click.UsageError(f"output {output} is the input image; refusing to overwrite it")
    problem = storage_problem(output.suffix, numpy.uint8, 3)
    if problem:
        raise click.UsageError(f"output {output}: {problem}")


@click.command("filter-map")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pixel", type=(int, int), required=True, metavar="ROW COL",
              help="The pixel whose weights are drawn.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG file for the heat map.")
@filter_options
@click.option("--no-marker", is_flag=True, help="Do not mark the pixel with a cross.")
@click.option("--max-minutes", type=float, default=10.0, show_default=True,
              help="Refuse when the estimated CPU time exceeds this (0: no limit).")
def filter_map_command(image_path: Path, pixel: tuple[int, int], output: Path, no_marker: bool,
                       max_minutes: float, **filter_params: Any) -> None:
    """Draw the weights one pixel receives (its row of W) as a heat map.

    The row is computed without forming W, so full-size images work in the
    global mode too (--window global).
    """
    options = api_options(filter_params)
    check_figure_command(options, image_path, output)
    try:
        header = read_header(image_path)
        check_image_cost(header.colour_shape, options, max_minutes, steps=0)  # one row of W
        image = read_image(image_path, header)
        colour = image.colour.astype(numpy.float32)
        _, call = resolve_for_image(colour, options)
        bar = ProductBar(image_path.name)  # lambda_max or Sinkhorn: products with K over the whole image
        try:
            weights = nlfilt.filter_row(colour, pixel, progress=bar, **call)
        finally:
            bar.close()
        write_image(output, heat_map(weights, None if no_marker else pixel))
    except (ImageError, ValueError, RuntimeError) as exc:
        raise click.ClickException(f"{image_path}: {exc}") from None
    click.echo(f"{output}: weights of pixel {pixel} (max {weights.max():.4g}, sum {weights.sum():.4g})",
               err=True)
