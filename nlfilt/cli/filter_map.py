"""``nlfilt filter-map``: a map of the weights one pixel receives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import nlfilt
from nlfilt.backend import get_backend
from nlfilt.cli.figures import figure_pixels, filter_map_figure, filter_run, filter_title, own_and_largest
from nlfilt.cli.options import check_device, check_plan, filter_options
from nlfilt.cli.progress import product_bar
from nlfilt.images import ImageError, read_header, read_image, write_image
from nlfilt.methods import FilterMethod


@click.command("filter-map", short_help="Draw the weights one pixel receives (its row of W).")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pixel", type=(int, int), required=True, metavar="ROW COL",
              help="The pixel whose weights are drawn.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Image file for the figure (PNG, TIFF, ...).")
@filter_options(volumes=False)
@click.option("--no-marker", is_flag=True, help="Do not outline the pixel.")
@click.option("--max-minutes", type=float, default=10.0, show_default=True,
              help="Refuse when the estimated CPU time exceeds this (0: no limit).")
@click.option("--quiet", is_flag=True, help="No progress bar and no messages except errors.")
def filter_map_command(image_path: Path, pixel: tuple[int, int], output: Path, no_marker: bool,
                       max_minutes: float, quiet: bool, **filter_params: Any) -> None:
    """Draw the weights one pixel receives (its row of W) as a colour map.

    A windowed filter's map shows the search window around the pixel,
    enlarged; a global filter's the whole image and, for images longer than
    64 pixels, the pixel's neighbourhood enlarged beside it.  The colour
    scale runs from 0 to the largest weight another pixel receives (the
    pixel's own weight, often far larger, is in the title); the pixel is
    outlined.  The row is computed without forming W, so full-size images
    work in the global mode too (--window global).  Prints the pixel's own
    weight, the largest other weight and the row's sum; needs matplotlib
    (pip install "nlfilt[figures]").
    """
    run = filter_run(filter_params, image_path, output, "filter-map")
    check_device(run.device)
    device = get_backend(run.device).name
    try:
        header = read_header(image_path)
        plan = run.plan(header.colour_shape, header.dtype, device)
        check_plan(header.colour_shape, plan.with_settings(iterations=0), max_minutes)  # one row of W
        image = read_image(image_path, header)
        colour = image.colour.astype(plan.dtype)
        arguments = FilterMethod.filter_arguments(plan)
        bar = product_bar(image_path.name, quiet)  # lambda_max or Sinkhorn: products with K over the image
        try:
            weights = nlfilt.filter_row(colour, pixel, progress=bar, **arguments)
        finally:
            if bar is not None:
                bar.close()
        own, largest = own_and_largest(weights, pixel)
        title = f"Weights pixel {pixel} receives: {filter_title(arguments)}"
        figure = filter_map_figure(weights, pixel, arguments["window"], title, not no_marker)
        write_image(output, figure_pixels(figure))
    except (ImageError, ValueError, RuntimeError) as exc:  # RuntimeError: a CUDA kernel that failed to build
        raise click.ClickException(f"{image_path}: {exc}") from None
    click.echo(f"pixel {pixel[0]} {pixel[1]}: own weight {own:.6g}, largest other weight {largest:.6g}, "
               f"sum {float(weights.sum()):.6g}")
    if not quiet:
        click.echo(f"wrote {output}", err=True)
