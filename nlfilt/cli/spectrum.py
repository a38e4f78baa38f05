"""``nlfilt spectrum``: the leading eigenvalues of a filter and its eigenvectors, in one figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy

import nlfilt
from nlfilt.backend import get_backend
from nlfilt.cli.figures import GAP, diverging, filter_run, fit_tile, tile_grid
from nlfilt.cli.options import check_device, check_plan, filter_options
from nlfilt.cli.progress import ProductBar
from nlfilt.images import ImageError, read_header, read_image, write_image
from nlfilt.methods import FilterMethod

#: Eigenvector tiles per row, and the height of the eigenvalue plot above them (figure pixels).
COLUMNS = 4
PLOT_HEIGHT = 120


def spectrum_figure(eigenvalues: numpy.ndarray, eigenvectors: numpy.ndarray) -> numpy.ndarray:
    """One RGB figure: the eigenvalues against their rank (dots; gray lines at 0 and 1) above the
    eigenvectors as tiles (``diverging`` colours), in rank order, left to right and top to bottom."""
    count, height, width = eigenvectors.shape[0], *eigenvectors.shape[-2:]
    grid = tile_grid([fit_tile(diverging(vector.reshape(-1, width)[:height])) for vector in eigenvectors],
                     COLUMNS)
    figure_width = grid.shape[1]
    plot = numpy.full((PLOT_HEIGHT, figure_width, 3), 255, numpy.uint8)
    low = min(0.0, float(eigenvalues.min()))

    def y_of(value: float) -> int:
        return GAP + round((1.0 - value) / (1.0 - low) * (PLOT_HEIGHT - 2 * GAP)) if low < 1 else GAP

    for level, shade in ((1.0, 200), (0.0, 140)):
        plot[y_of(level), GAP:figure_width - GAP] = shade
    for rank, value in enumerate(eigenvalues):
        x = GAP + round(rank * (figure_width - 3 * GAP) / max(count - 1, 1)) + GAP // 2
        y = y_of(float(value))
        plot[max(0, y - 2):y + 3, max(0, x - 2):x + 3] = (20, 20, 20)
    return numpy.concatenate([plot, grid])


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
    run = filter_run(filter_params, image_path, output)
    check_device(run.device)
    device = get_backend(run.device).name
    try:
        header = read_header(image_path)
        plan = run.plan(header.colour_shape, header.dtype, device)
        steps = max(3 * count, count + 30)  # Lanczos: about as many products with K
        check_plan(header.colour_shape, plan.with_settings(iterations=steps), max_minutes)
        image = read_image(image_path, header)
        colour = image.colour.astype(plan.dtype)
        bar = ProductBar(image_path.name)
        try:
            arguments = FilterMethod.filter_arguments(plan)
            spectrum = nlfilt.filter_spectrum(colour, count, progress=bar, **arguments)
        finally:
            bar.close()
        write_image(output, spectrum_figure(spectrum.eigenvalues, spectrum.eigenvectors))
    except (ImageError, ValueError, RuntimeError) as exc:  # RuntimeError: a CUDA kernel that failed to build
        raise click.ClickException(f"{image_path}: {exc}") from None
    values = ", ".join(f"{value:.4g}" for value in spectrum.eigenvalues)
    click.echo(f"{output}: eigenvalues {values} ({spectrum.applications} products with K)", err=True)
