"""``nlfilt spectrum``: the leading eigenvalues of a filter and its eigenvectors, in one figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import nlfilt
from nlfilt.backend import get_backend
from nlfilt.cli.figures import figure_pixels, filter_run, filter_title, spectrum_figure
from nlfilt.cli.options import check_device, check_plan, filter_options
from nlfilt.cli.progress import product_bar
from nlfilt.images import ImageError, read_header, read_image, write_image
from nlfilt.methods import FilterMethod


@click.command("spectrum", short_help="Draw the leading eigenvalues and eigenvectors of W.")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Image file for the figure (PNG, TIFF, ...).")
@click.option("--count", type=click.IntRange(min=1), default=8, show_default=True,
              help="Eigenpairs drawn (the largest eigenvalues).")
@filter_options(volumes=False)
@click.option("--max-minutes", type=float, default=10.0, show_default=True,
              help="Refuse when the estimated CPU time exceeds this (0: no limit).")
@click.option("--quiet", is_flag=True, help="No progress bar and no messages except errors.")
def spectrum_command(image_path: Path, output: Path, count: int, max_minutes: float, quiet: bool,
                     **filter_params: Any) -> None:
    """Draw the leading eigenvalues of the filter W of IMAGE and its eigenvectors, in one figure.

    The eigenvalues against their rank (dashed line at 1) above the
    eigenvectors as images, each on its own colour scale symmetric about 0
    (red positive, blue negative, white 0; up to the 99th percentile of its
    magnitudes), from a Lanczos run of products with K: global on small
    images, windowed at any size.  Prints the eigenvalues, one per line
    (rank and value); needs matplotlib (pip install "nlfilt[figures]").
    """
    run = filter_run(filter_params, image_path, output, "spectrum")
    check_device(run.device)
    device = get_backend(run.device).name
    try:
        header = read_header(image_path)
        plan = run.plan(header.colour_shape, header.dtype, device)
        steps = max(3 * count, count + 30)  # Lanczos: about as many products with K
        check_plan(header.colour_shape, plan.with_settings(iterations=steps), max_minutes)
        image = read_image(image_path, header)
        colour = image.colour.astype(plan.dtype)
        arguments = FilterMethod.filter_arguments(plan)
        bar = product_bar(image_path.name, quiet)
        try:
            spectrum = nlfilt.filter_spectrum(colour, count, progress=bar, **arguments)
        finally:
            if bar is not None:
                bar.close()
        title = f"Spectrum of W: {filter_title(arguments)}, {image_path.name}"
        figure = spectrum_figure(spectrum.eigenvalues, spectrum.eigenvectors, title)
        write_image(output, figure_pixels(figure))
    except (ImageError, ValueError, RuntimeError) as exc:  # RuntimeError: a CUDA kernel that failed to build
        raise click.ClickException(f"{image_path}: {exc}") from None
    click.echo("rank  eigenvalue")
    for rank, value in enumerate(spectrum.eigenvalues, start=1):
        click.echo(f"{rank:>4}  {value:.6g}")
    if not quiet:
        click.echo(f"wrote {output} ({spectrum.applications} products with K)", err=True)
