"""The figures of the commands that draw (``filter-map``, ``spectrum``, ``compare-network --filter-map``),
and the checks those commands share.

Drawn with matplotlib (the optional extra ``nlfilt[figures]``, imported only here and only when a figure
is drawn) on its non-interactive Agg canvas, never through pyplot; :func:`figure_pixels` turns a figure
into the 8-bit RGB array that :func:`nlfilt.images.write_image` writes in any format it holds.  Every
image panel has axes in image coordinates (row and column), a title and a colour bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import click
import numpy

from nlfilt.cli.options import RunOptions
from nlfilt.images import storage_problem

#: What a user runs to get the figures.
INSTALL_HINT = 'pip install "nlfilt[figures]"'
#: Dots per inch of every figure (sizes below are in inches).
DPI = 100
#: A global filter's map of an image longer than this (pixels) also shows the pixel's neighbourhood, this
#: many pixels either side of it, enlarged.
ZOOM_ABOVE = 64
ZOOM_HALF = 12
#: Eigenvector panels per row of the spectrum figure.
COLUMNS = 4
#: Colour maps: weights (0 to the largest), and signed values (blue negative, white 0, red positive).
WEIGHT_COLOURS = "magma"
SIGNED_COLOURS = "RdBu_r"
#: The pixel's outline: a thin cyan line with a dark rim, visible on any colour of the map.
MARK_COLOUR = "cyan"
#: Width of the pixel's outline, in points (half of it shows, outside the cell; as much again of dark rim).
OUTLINE_WIDTH = 3.0


def require_matplotlib(what: str) -> None:
    """click.UsageError (exit 2) when matplotlib cannot be imported: ``what`` (a command or option) draws
    with it, and the message says how to install it."""
    try:
        import matplotlib  # noqa: F401, PLC0415 - optional: the figures extra
    except ImportError:
        raise click.UsageError(f"{what} draws its figure with matplotlib, which is not installed; install "
                               f"it with: {INSTALL_HINT}") from None


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


def filter_run(params: dict[str, Any], image_path: Path, output: Path, command: str) -> RunOptions:
    """The checks of ``command``, which draws a figure of a filter of IMAGE: matplotlib, its filter options
    (click.UsageError) and :func:`check_figure_output`; returns the run's options (method 'filter')."""
    require_matplotlib(command)
    run = RunOptions.from_params(params, method_name="filter")
    check_figure_output(image_path, output)
    return run


def filter_title(arguments: dict[str, Any]) -> str:
    """'nlm filter, patch 5, window 11' (tent windows and Sinkhorn scaling named) from the keyword arguments
    of the analysis functions (:meth:`nlfilt.methods.FilterMethod.filter_arguments`)."""
    window = arguments.get("window")
    parts = [f"{arguments['kernel']} filter", f"patch {arguments['patch']}",
             "global" if window is None else f"window {window}"]
    if window is not None and arguments.get("window_shape", "box") != "box":
        parts[-1] += f" ({arguments['window_shape']})"
    if arguments.get("normalize") == "sinkhorn":
        parts.append("Sinkhorn")
    return ", ".join(parts)


def own_and_largest(weights: numpy.ndarray, pixel: tuple[int, int]) -> tuple[float, float]:
    """The weight ``pixel`` gives itself and the largest it gives another pixel (0 for a one-pixel image)."""
    row, col = pixel
    others = numpy.delete(weights.ravel(), row * weights.shape[1] + col)
    return float(weights[row, col]), float(others.max()) if others.size else 0.0


def filter_map_figure(weights: numpy.ndarray, pixel: tuple[int, int], window: int | None, title: str,
                      marker: bool = True) -> Any:
    """The weights one pixel receives (H, W) as a matplotlib Figure (:func:`figure_pixels` draws it).

    Windowed (``window`` a side): the window around the pixel, enlarged.  Global (``window`` None): the
    whole image and, when it is longer than ``ZOOM_ABOVE`` pixels, beside it the pixel's neighbourhood
    enlarged (its place outlined on the whole image).  The colour scale stops at the largest weight
    another pixel receives, so that the pixel's own weight, often far larger, does not turn the rest black;
    the title gives it.  With ``marker``, the pixel's cell is outlined.
    """
    row, col = pixel
    own, top = own_and_largest(weights, pixel)
    top = top if weights.size > 1 else own
    scale = _Scale.for_weights(weights, top)
    heading = f"{title}\nown weight {own:.4g}" + (" (above the colour scale)" if own > top else "")
    if window is not None:
        figure, axes = _figure((6.4, 5.6), 1)
        image = _show(axes[0], weights, scale, Cells.around(pixel, window // 2, weights.shape))
        axes[0].set_title(f"the {window}x{window} window around pixel {pixel}", fontsize=10)
    elif max(weights.shape) > ZOOM_ABOVE:
        figure, axes = _figure((11.5, 5.6), 2)
        bounds = Cells.around(pixel, ZOOM_HALF, weights.shape)
        _show(axes[0], weights, scale)
        _outline(axes[0], bounds)
        axes[0].set_title("whole image (pixel's neighbourhood outlined)", fontsize=10)
        image = _show(axes[1], weights, scale, bounds)
        axes[1].set_title(f"around pixel {pixel}, enlarged", fontsize=10)
    else:
        figure, axes = _figure((6.4, 5.6), 1)
        image = _show(axes[0], weights, scale)
        axes[0].set_title(f"whole image, pixel {pixel}", fontsize=10)
    if marker:
        _outline(axes[-1], Cells(row, row, col, col))
    figure.suptitle(heading)
    figure.colorbar(image, ax=axes, label="weight", extend="max" if own > top else "neither", shrink=0.9)
    return figure


def spectrum_figure(eigenvalues: numpy.ndarray, eigenvectors: numpy.ndarray, title: str) -> Any:
    """The leading eigenvalues against their rank above the eigenvectors as images, as a Figure.

    Each eigenvector has its own symmetric colour scale (blue negative, white 0, red positive, up to the
    99th percentile of its magnitudes: the arrows of its colour bar are the rest), in rank order, left to
    right and top to bottom.
    """
    count = len(eigenvalues)
    columns = min(COLUMNS, count)
    rows = -(-count // columns)
    figure = _new_figure((max(3.3 * columns, 7.0), 3.2 + 3.0 * rows))
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[1.1] + [1.0] * rows)
    plot = figure.add_subplot(grid[0, :])
    ranks = numpy.arange(1, count + 1)
    plot.plot(ranks, eigenvalues, "o-", color="black", markersize=5)
    plot.axhline(1.0, color="gray", linestyle="--", linewidth=1, label="1: kept")
    if eigenvalues.min() < 0.25:
        plot.axhline(0.0, color="gray", linestyle=":", linewidth=1, label="0: removed")
    plot.set_xlabel("rank")
    plot.set_ylabel("eigenvalue λ")
    plot.xaxis.set_major_locator(_integer_ticks())
    plot.set_xlim(0.5, count + 0.5)
    plot.legend(loc="lower left", fontsize=8)
    plot.grid(alpha=0.3)
    plot.set_title(f"{count} largest eigenvalues of W", fontsize=10)
    height, width = eigenvectors.shape[-2:]
    for rank, vector in enumerate(eigenvectors):
        axes = figure.add_subplot(grid[1 + rank // columns, rank % columns])
        plane = vector.reshape(-1, width)[:height]
        image = _show(axes, plane, _Scale.signed(plane))
        axes.set_title(f"v{rank + 1}, λ = {eigenvalues[rank]:.4g}", fontsize=10)
        if rank % columns:
            axes.set_ylabel("")
        if rank + columns < count:
            axes.set_xlabel("")
        figure.colorbar(image, ax=axes, extend="both", shrink=0.85)
    figure.suptitle(title)
    return figure


def kernel_rows_figure(rows: dict[str, numpy.ndarray], pixel: tuple[int, int], notes: dict[str, str],
                       title: str, caption: str) -> Any:
    """Rows of several kernels for one pixel (each an (H, W) image named by its key), side by side, each
    on its own colour scale, with ``notes[name]`` under its name and the pixel outlined; ``caption`` (its own
    line breaks) below.  A Figure."""
    figure, axes = _figure((4.6 * len(rows), 4.8), len(rows))
    for panel, (name, row) in zip(axes, rows.items(), strict=True):
        image = _show(panel, row, _Scale.for_weights(row, float(row.max())))
        _outline(panel, Cells(pixel[0], pixel[0], pixel[1], pixel[1]))
        panel.set_title(f"{name}\n{notes.get(name, '')}", fontsize=10)
        figure.colorbar(image, ax=panel, shrink=0.8)
    figure.suptitle(title)
    figure.supxlabel(caption, fontsize=9)
    return figure


def figure_pixels(figure: Any) -> numpy.ndarray:
    """The figure drawn on its Agg canvas, as an (H, W, 3) uint8 array."""
    figure.canvas.draw()
    return numpy.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


class Cells(NamedTuple):
    """A block of pixels: its first and last row and column."""

    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def around(cls, pixel: tuple[int, int], half: int, shape: tuple[int, ...]) -> Cells:
        """The pixels within ``half`` rows and columns of ``pixel``, inside an image of ``shape``."""
        row, col = pixel
        return cls(max(0, row - half), min(shape[0] - 1, row + half), max(0, col - half),
                   min(shape[1] - 1, col + half))


@dataclass(frozen=True)
class _Scale:
    """The colour map and limits of one panel."""

    colours: str
    low: float
    high: float

    @classmethod
    def for_weights(cls, values: numpy.ndarray, top: float) -> _Scale:
        """Weights: 0 to ``top``; signed values when some are negative (windowed tangent filters)."""
        low = float(values.min())
        if low < 0:
            limit = max(-low, top) or 1.0
            return cls(SIGNED_COLOURS, -limit, limit)
        return cls(WEIGHT_COLOURS, 0.0, top if top > 0 else 1.0)

    @classmethod
    def signed(cls, values: numpy.ndarray) -> _Scale:
        """Symmetric about 0, up to the 99th percentile of the magnitudes."""
        limit = float(numpy.percentile(numpy.abs(values), 99)) or float(numpy.abs(values).max()) or 1.0
        return cls(SIGNED_COLOURS, -limit, limit)


def _new_figure(size: tuple[float, float]) -> Any:
    """A matplotlib Figure of ``size`` inches on an Agg canvas, laid out by matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional: figures extra
    from matplotlib.figure import Figure  # noqa: PLC0415 - optional: the figures extra

    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _figure(size: tuple[float, float], panels: int) -> tuple[Any, list[Any]]:
    """A figure with ``panels`` axes side by side."""
    figure = _new_figure(size)
    return figure, list(numpy.atleast_1d(figure.subplots(1, panels)))


def _integer_ticks() -> Any:
    """A tick locator at whole numbers, as many as the axis has room for."""
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - optional: the figures extra

    return MaxNLocator(nbins="auto", integer=True)


def _show(axes: Any, values: numpy.ndarray, scale: _Scale, cells: Cells | None = None) -> Any:
    """Draw ``values`` (only ``cells`` of it, when given) with ticks in image coordinates; returns the
    image for a colour bar.  Large images are smoothed as they are shrunk, small ones drawn as cells."""
    top, bottom, left, right = cells or Cells(0, values.shape[0] - 1, 0, values.shape[1] - 1)
    image = axes.imshow(values[top:bottom + 1, left:right + 1], cmap=scale.colours, vmin=scale.low,
                        vmax=scale.high, extent=(left - 0.5, right + 0.5, bottom + 0.5, top - 0.5),
                        interpolation="nearest" if max(bottom - top, right - left) < 200 else "antialiased")
    axes.xaxis.set_major_locator(_integer_ticks())
    axes.yaxis.set_major_locator(_integer_ticks())
    axes.set_xlabel("column")
    axes.set_ylabel("row")
    return image


def _outline(axes: Any, cells: Cells) -> None:
    """Outline ``cells`` with a line drawn only outside them (clipped to the rest of the plane), so that it
    covers none of their colours, only the edges of their neighbours."""
    from matplotlib import patheffects  # noqa: PLC0415 - optional: the figures extra
    from matplotlib.patches import Rectangle  # noqa: PLC0415 - optional: the figures extra
    from matplotlib.path import Path as Outline  # noqa: PLC0415 - optional: the figures extra

    left, top, right, bottom = cells.left - 0.5, cells.top - 0.5, cells.right + 0.5, cells.bottom + 0.5
    far = 2.0 * (right - left + bottom - top) + 1e6  # a square around everything, minus the cells
    outside = Outline.make_compound_path(
        Outline([(left - far, top - far), (right + far, top - far), (right + far, bottom + far),
                 (left - far, bottom + far), (left - far, top - far)], closed=True),
        Outline([(left, top), (left, bottom), (right, bottom), (right, top), (left, top)], closed=True))
    line = Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor=MARK_COLOUR,
                     linewidth=OUTLINE_WIDTH, clip_on=True,
                     path_effects=[patheffects.withStroke(linewidth=2 * OUTLINE_WIDTH, foreground="black")])
    axes.add_patch(line)
    line.set_clip_path(outside, axes.transData)
