"""``nlfilt filter-map``: a heat map of the weights one pixel receives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import nlfilt
from nlfilt.backend import get_backend
from nlfilt.cli.figures import filter_run, heat_map
from nlfilt.cli.options import check_device, check_plan, filter_options
from nlfilt.cli.progress import ProductBar
from nlfilt.images import ImageError, read_header, read_image, write_image
from nlfilt.methods import FilterMethod


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
    run = filter_run(filter_params, image_path, output)
    check_device(run.device)
    device = get_backend(run.device).name
    try:
        header = read_header(image_path)
        plan = run.plan(header.colour_shape, header.dtype, device)
        check_plan(header.colour_shape, plan.with_settings(iterations=0), max_minutes)  # one row of W
        image = read_image(image_path, header)
        colour = image.colour.astype(plan.dtype)
        bar = ProductBar(image_path.name)  # lambda_max or Sinkhorn: products with K over the whole image
        try:
            weights = nlfilt.filter_row(colour, pixel, progress=bar, **FilterMethod.filter_arguments(plan))
        finally:
            bar.close()
        write_image(output, heat_map(weights, None if no_marker else pixel))
    except (ImageError, ValueError, RuntimeError) as exc:  # RuntimeError: a CUDA kernel that failed to build
        raise click.ClickException(f"{image_path}: {exc}") from None
    click.echo(f"{output}: weights of pixel {pixel} (max {weights.max():.4g}, sum {weights.sum():.4g})",
               err=True)
