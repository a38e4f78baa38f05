"""``nlfilt filter-map``: a heat map of the weights one pixel receives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy

import nlfilt
from nlfilt.cli.figures import check_figure_command, heat_map
from nlfilt.cli.options import api_options, check_image_cost, filter_options, resolve_for_image
from nlfilt.cli.progress import ProductBar
from nlfilt.images import ImageError, read_header, read_image, write_image


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
