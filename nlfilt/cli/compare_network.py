"""``nlfilt compare-network``: train the tangent CNN on an image and compare it with the ntk filter."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import click
import numpy

from nlfilt.backend import DEVICES, get_backend, gpu_status, host_cores
from nlfilt.cli.figures import check_figure_output, figure_pixels, kernel_rows_figure, require_matplotlib
from nlfilt.cli.options import check_device, describe_seconds, physical_memory
from nlfilt.cli.progress import product_bar
from nlfilt.cost import estimate_cpu_seconds
from nlfilt.images import ImageError, read_header, read_image, write_image
from nlfilt.network import (
    OPTIMIZERS,
    PARAMETRIZATIONS,
    ClosedForm,
    KernelChange,
    Training,
    ntk_closed_form,
    ntk_filter_options,
    squared_norms,
    train,
)
from nlfilt.operators import taper

#: Largest image whose closed form is the global filter by default (N^2 pairs per step); larger ones
#: use the tent-windowed filter of side WINDOW (``--window``).
MAX_GLOBAL_PIXELS = 64 * 64
WINDOW = 21
#: Rows the tangent kernels' change is estimated from on images larger than MAX_GLOBAL_PIXELS
#: (:meth:`nlfilt.network.TangentCNN.kernel_change`; exact below).
KERNEL_SAMPLE_ROWS = 1024
#: Floating-point operations per second assumed for the cost refusal: per CPU core (dense products,
#: about 2/3 of what one core of the 2-core development machine measured: 120 GFLOP/s float32, 47
#: float64), and for a whole GPU (a fraction of a data-centre GPU's non-tensor-core rate).
CPU_FLOPS_PER_CORE = {"float32": 8e10, "float64": 3e10}
GPU_FLOPS = {"float32": 1e13, "float64": 3e11}  # float64: a consumer GPU's 1/32 rate
DTYPES = {"float32": numpy.float32, "float64": numpy.float64}
#: Passes over an (N, width) array per training step and hidden layer (both copies: forward, ReLU,
#: back-propagation, the gradients' products), and the memory bandwidth they run at: the step of a
#: 256 x 256 image, width 1024, depth 1 took 0.8 s on the 2-core development machine, ten times its
#: floating-point count (the first layer's products are thin: 9 inputs).
PASSES_PER_STEP = 30
BYTES_PER_SECOND = {"cpu": 1e10, "gpu": 1e12}


def training_flops(pixels: int, dims: int, width: int, depth: int, channels: int, steps: int,
                   kernel_rows: int | None = None) -> float:
    """Floating-point operations of ``steps`` training steps (forward pass, gradients and
    back-propagation through both weight copies: three products per layer) and of the empirical tangent
    kernel's change (three weight sets; per layer one Gram matrix of its inputs and one of its
    back-propagated signals per pair of output channels), over all rows or ``kernel_rows`` of them."""
    per_pass = pixels * (dims * width + (depth - 1) * width * width + width * channels)
    rows = pixels if kernel_rows is None else min(kernel_rows, pixels)
    kernel = 3 * rows * pixels * (dims + depth * (1 + channels * channels) * width)
    return steps * 2 * 3 * 2 * per_pass + 2 * kernel


def training_bytes(pixels: int, dims: int, width: int, depth: int, channels: int, dtype: str) -> int:
    """Rough peak bytes: the activations of a forward and backward pass of both copies, then the tangent
    kernel's factors of three weight sets (inputs and back-propagated signals of every layer, N x width
    each), and the kernel blocks of KERNEL_ROW_BLOCK rows."""
    itemsize = numpy.dtype(DTYPES[dtype]).itemsize
    factors = 3 * (2 * depth + 1) * pixels * max(width, dims) * itemsize
    blocks = 4 * 1024 * pixels * channels * channels * itemsize
    return factors + blocks


def flops_per_second(device: str, dtype: str) -> float:
    """The assumed rate of :data:`CPU_FLOPS_PER_CORE` (times the cores) or :data:`GPU_FLOPS`."""
    return GPU_FLOPS[dtype] if device == "gpu" else CPU_FLOPS_PER_CORE[dtype] * host_cores()


@click.command("compare-network", short_help="Train a CNN on an image; compare it with the ntk filter.")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--width", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Channels of every hidden layer.")
@click.option("--depth", type=click.IntRange(min=1), default=1, show_default=True,
              help="ReLU layers (as the ntk kernel's depth).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="gd", show_default=True,
              help="Gradient descent with nlfilt's step 1/lambda_max, or Adam.")
@click.option("--parametrization", type=click.Choice(PARAMETRIZATIONS), default="ntk", show_default=True,
              help="ntk: standard Gaussian weights, 1/sqrt(width) and sqrt(2) factors in the forward pass "
                   "(its tangent kernel tends to the ntk filter's); standard: weights uniform in "
                   "+-1/sqrt(fan_in) and no factors, as PyTorch draws them and the deep image prior trains "
                   "them (gradient descent then steps 1/lambda_max of the network's own initial kernel).")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True, help="Training steps.")
@click.option("--window", default="auto", show_default=True, metavar="auto|global|ODD",
              help="The closed-form filter: global (N^2 pairs per step), or within a tent window of this "
                   f"odd side (positive semidefinite); auto: global up to 64x64 pixels, a window of "
                   f"{WINDOW} above.")
@click.option("--patch", type=click.IntRange(min=1), default=3, show_default=True,
              help="Odd side of the first convolution (and of the kernel's patches).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Step size of --optimizer. [default: 1/lambda_max for gd, 1e-2 for adam]")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial weights.")
@click.option("--dtype", type=click.Choice(tuple(DTYPES)), default="float32", show_default=True,
              help="Precision of the network's weights and activations.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Train on the CPU, a CUDA GPU, or the GPU when one is usable.")
@click.option("--filter-map", type=(int, int), default=None, metavar="ROW COL",
              help="Also train with the other optimizer, and draw (-o) for this pixel its row of the "
                   "closed-form kernel K and of the GD- and Adam-trained networks' tangent kernels.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Image file for the --filter-map figure (PNG, TIFF, ...).")
@click.option("--max-minutes", type=float, default=10.0, show_default=True,
              help="Refuse a run whose estimated time exceeds this (0: no limit).")
@click.option("--quiet", is_flag=True, help="No progress bars and no messages except errors.")
def compare_network_command(image_path: Path, width: int, depth: int, optimizer: str, parametrization: str,
                            steps: int, window: str, patch: int, learning_rate: float | None, seed: int,
                            dtype: str, device: str,
                            filter_map: tuple[int, int] | None, output: Path | None,
                            max_minutes: float, quiet: bool) -> None:
    """Train a ReLU CNN on IMAGE (input and target) and compare it with nlfilt's ntk filter.

    The network (nlfilt.network: one PATCH x PATCH convolution, DEPTH - 1 1x1
    convolutions of WIDTH channels, ReLU, linear 1x1 output, zero initial
    output; NTK or standard parametrisation) is trained on the squared loss.
    After selected steps t the table shows the relative difference between
    its output f_t and nlfilt's twicing z_t (kernel ntk, global, same depth
    and patch), the relative residuals |y - f_t| / |y| and |y - z_t| / |y|,
    and how far the hidden weights moved; then how far the network's
    empirical tangent kernel moved from its initial value,
    |Theta_T - Theta_0|_F / |Theta_0|_F (near 0 for gradient descent on a wide
    network, which is why it follows the filter; larger for Adam, which
    adapts the filter), split into a change of scale, |Theta_T| / |Theta_0|,
    and of shape, |Theta_T / |Theta_T| - Theta_0 / |Theta_0||.  Whole
    images: above 64 x 64 pixels (--window auto) the closed form is the
    tent-windowed ntk filter (the network's kernel stays global, so |f - z|
    then also measures the window), gradient descent steps 1/lambda_max of
    the network's own initial kernel, and the kernel's change is estimated
    from 1024 random rows; the run is refused when its estimated time
    exceeds --max-minutes or its memory half the machine's.  With
    --filter-map ROW COL -o FIG.png the network is trained with both
    optimizers and the figure shows, left to right, the pixel's row of the
    closed-form kernel K, of the GD-trained network's kernel and of the
    Adam-trained network's kernel, each on its own colour scale, with each
    row's distance to K's (also printed); the figure needs matplotlib
    (pip install "nlfilt[figures]").  The table and the distances go to
    stdout, progress and messages to stderr.  Gray or colour (alpha is
    ignored).
    """
    if patch % 2 == 0:
        raise click.BadParameter(f"must be odd; got {patch}", param_hint="--patch")
    if (filter_map is None) != (output is None):
        raise click.UsageError("--filter-map ROW COL and -o/--output go together (the figure's pixel and "
                               "file)")
    if output is not None:
        require_matplotlib("--filter-map")
        check_figure_output(image_path, output)
    check_device(device)
    backend = get_backend(device)
    try:
        header = read_header(image_path)
    except ImageError as exc:
        raise click.ClickException(f"{image_path}: {exc}") from None
    height, width_pixels = header.shape[:2]
    if patch > min(height, width_pixels):
        raise click.BadParameter(f"must be at most min(H, W) = {min(height, width_pixels)} for this image",
                                 param_hint="--patch")
    if filter_map is not None and not (0 <= filter_map[0] < height and 0 <= filter_map[1] < width_pixels):
        raise click.BadParameter(f"must be a pixel of the {height}x{width_pixels} image "
                                 f"(0 <= ROW < {height}, 0 <= COL < {width_pixels}); got {filter_map}",
                                 param_hint="--filter-map")
    pixels = height * width_pixels
    channels = header.colour_shape[2] if len(header.colour_shape) == 3 else 1
    side = _window_side(window, pixels)
    sample = None if pixels <= MAX_GLOBAL_PIXELS else KERNEL_SAMPLE_ROWS
    runs = 1 if filter_map is None else 2
    _check_cost(image_path, backend.name, (height, width_pixels, channels), patch, width, depth, steps, runs,
                sample, side, dtype, max_minutes)  # from the header, before decoding
    try:
        image = read_image(image_path, header)
    except ImageError as exc:
        raise click.ClickException(f"{image_path}: {exc}") from None
    noisy = image.colour.astype(numpy.float64)
    if not numpy.any(noisy):
        raise click.ClickException(f"{image_path}: the image is all zeros, so are the network's input and "
                                   "its tangent kernel: nothing to compare")
    closed = ntk_closed_form(noisy, depth=depth, patch=patch, steps=steps, window=side)
    # the network's own initial kernel's step: in the standard parametrisation, and beside a window
    eigenvalue = closed.eigenvalue if parametrization == "ntk" and side is None else None
    training = partial(train, noisy, width=width, depth=depth, patch=patch, steps=steps,
                       eigenvalue=eigenvalue, seed=seed, dtype=DTYPES[dtype], device=backend.name,
                       parametrization=parametrization)
    started = time.perf_counter()
    run = _train_with_bar(training, optimizer, learning_rate, steps, quiet)
    elapsed = time.perf_counter() - started
    if not quiet:
        click.echo(f"trained in {elapsed:.1f} s", err=True)
    norm = float(numpy.linalg.norm(noisy))
    mode = "global" if side is None else f"tent window {side}"
    own = optimizer == "gd" and learning_rate is None and eigenvalue is None
    source = "1/lambda_max of the network's own initial kernel; " if own else ""
    click.echo(f"{image_path}: {height}x{width_pixels}, width {width}, depth {depth}, {optimizer}, "
               f"{parametrization} parametrisation, learning rate {run.learning_rate:.4g} ({source}"
               f"1/lambda_max of the ntk filter's K = {1 / closed.eigenvalue:.4g}, {mode}), on the "
               f"{backend.name.upper()} in {dtype}")
    click.echo("step  |f - z|/|z|  |y - f|/|y|  |y - z|/|y|  hidden-weight movement")
    shown = sorted({t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= steps} | {steps})
    for t in shown:
        z_t = closed.trajectory[t]
        difference = numpy.linalg.norm(run.outputs[t] - z_t) / max(numpy.linalg.norm(z_t), 1e-300)
        click.echo(f"{t:>4}  {difference:11.4f}  {numpy.linalg.norm(noisy - run.outputs[t]) / norm:11.4f}  "
                   f"{numpy.linalg.norm(noisy - z_t) / norm:11.4f}  {run.movement[t]:.5f}")
    trained = {optimizer: run}
    if filter_map is not None:
        other = next(name for name in OPTIMIZERS if name != optimizer)
        trained[other] = _train_with_bar(training, other, None, steps, quiet)
    estimated = "" if sample is None else f"; estimated from {sample} random rows"
    for name, result in trained.items():
        change = result.kernel_change(sample)
        click.echo(f"{name}: tangent kernel movement |Theta_T - Theta_0|/|Theta_0| = {change.movement:.5f} "
                   f"(scale |Theta_T|/|Theta_0| {change.scale:.4f}, shape change {change.shape:.5f}; "
                   f"learning rate {result.learning_rate:.4g}{estimated})")
    if filter_map is not None:
        setting = (f"depth {depth}, patch {patch}, K {mode}; networks of width {width} ({parametrization} "
                   f"parametrisation) after {steps} steps")
        _draw_filter_map(closed, filter_map, output, trained, setting, side)
        if not quiet:
            click.echo(f"wrote {output}", err=True)


def _window_side(window: str, pixels: int) -> int | None:
    """The closed form's tent window side for ``--window`` (None: global); BadParameter otherwise."""
    if window == "global" or (window == "auto" and pixels <= MAX_GLOBAL_PIXELS):
        return None
    if window == "auto":
        return WINDOW
    try:
        side = int(window)
    except ValueError:
        side = 0
    if side < 1 or side % 2 == 0:
        raise click.BadParameter(f"must be auto, global or an odd window side; got {window!r}",
                                 param_hint="--window")
    return side


def _check_cost(image_path: Path, device: str, shape: tuple[int, int, int], patch: int, width: int,
                depth: int, steps: int, runs: int, sample: int | None, side: int | None, dtype: str,
                max_minutes: float) -> None:
    """Refuse a run on an image of ``shape`` (H, W, C) over ``max_minutes`` (0: no limit; the training, the
    kernel's change and the closed form's twicing, about 20 products for its lambda_max) or over half the
    machine's memory (the CPU; a GPU's own limit shows as an error)."""
    pixels, channels = shape[0] * shape[1], shape[2]
    dims = patch * patch * channels
    seconds = runs * training_flops(pixels, dims, width, depth, channels, steps, sample)
    seconds /= flops_per_second(device, dtype)
    itemsize = numpy.dtype(DTYPES[dtype]).itemsize
    seconds += runs * steps * PASSES_PER_STEP * depth * pixels * width * itemsize / BYTES_PER_SECOND[device]
    options = ntk_filter_options(shape, depth=depth, patch=patch, window=side)
    seconds += estimate_cpu_seconds(shape, options, steps + 20)
    what = f"{shape[0]}x{shape[1]} at width {width}, depth {depth}, {steps} steps" + (
        " with each optimizer (--filter-map)" if runs == 2 else "")
    remedy = ", or --device gpu" if device == "cpu" and gpu_status()[0] else ""
    if max_minutes > 0 and seconds > 60 * max_minutes:
        raise click.ClickException(
            f"{image_path}: {what} would take {describe_seconds(seconds)} on this {device.upper()} in "
            f"{dtype} (over --max-minutes {max_minutes:g}); use a smaller width, fewer steps or a smaller "
            f"crop{remedy}")
    needed, memory = training_bytes(pixels, dims, width, depth, channels, dtype), physical_memory()
    if device == "cpu" and memory and needed > memory / 2:
        raise click.ClickException(
            f"{image_path}: {what} needs about {needed / 2**30:.1f} GiB, over half of this machine's "
            f"{memory / 2**30:.1f} GiB; use a smaller width or a smaller crop{remedy}")


def _train_with_bar(training: Callable[..., Training], optimizer: str, learning_rate: float | None,
                    steps: int, quiet: bool) -> Training:
    """``training(optimizer=..., learning_rate=...)`` with a progress bar on stderr (none when
    ``quiet``)."""
    bar = product_bar(f"training ({optimizer})", quiet, unit="steps")
    try:
        return training(optimizer=optimizer, learning_rate=learning_rate, progress=bar)
    finally:
        if bar is not None:
            bar.close()


def _draw_filter_map(closed: ClosedForm, pixel: tuple[int, int], output: Path, trained: dict[str, Training],
                     setting: str, side: int | None) -> None:
    """Draw the rows of K, of the GD network's and of the Adam network's tangent kernel for ``pixel``,
    side by side, each with its maximum and its differences to K's row (relative, and of shape: of the
    rows scaled to unit norm, as in :class:`~nlfilt.network.KernelChange`), and print those numbers;
    ``setting`` (the depth, patch, ...) goes into the title.  Beside a tent window of side ``side`` the
    networks' rows (global) are compared with K's after the same taper, within the window."""
    height, width = closed.trajectory[0].shape[:2]
    index = pixel[0] * width + pixel[1]
    reference = closed.kernel_row(index)
    window = numpy.ones(height * width)
    if side is not None:  # the tent's taper around the pixel, as the operator applies it (0 outside)
        window = numpy.outer(*(numpy.maximum(0, [taper((step,), (side,)) for step in range(-at, extent - at)])
                               for at, extent in zip(pixel, (height, width), strict=True))).ravel()
    rows = {"closed-form kernel K": reference}
    rows.update({f"{name}-trained network": trained[name].kernel_row(index) for name in OPTIMIZERS})
    notes = {}
    within = "" if side is None else " (networks' rows tapered by K's tent window)"
    click.echo(f"{f'row of pixel {pixel[0]} {pixel[1]}':<22}  {'max':>9}  |row - K|/|K|  shape{within}")
    for name, row in rows.items():
        tapered = row if row is reference else row * window  # K's row is tapered already
        change = KernelChange.from_squared_norms(*squared_norms(get_backend("cpu"), tapered, reference))
        distance = f"|row - K|/|K| {change.movement:.4f}, shape {change.shape:.4f}"
        notes[name] = f"max {row.max():.4g}" + ("" if row is reference else "\n" + distance)
        click.echo(f"{name:<22}  {row.max():9.4g}  {change.movement:13.4f}  {change.shape:.4f}")
    caption = ("Each panel: one kernel's row for the outlined pixel (its value with every pixel), on its own "
               "colour scale.\n|row - K|/|K|: relative distance to K's row; shape: the same for the rows "
               "scaled to unit norm" + ("." if side is None else
                                        f", the networks' rows tapered by K's tent window ({side})."))
    title = f"Row of pixel {pixel} of each tangent kernel ({setting})"
    figure = kernel_rows_figure({name: row.reshape(height, width) for name, row in rows.items()}, pixel,
                                notes, title, caption)
    try:
        write_image(output, figure_pixels(figure))
    except (ImageError, OSError) as exc:
        raise click.ClickException(f"{output}: {exc}") from None
