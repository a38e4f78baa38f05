"""``nlfilt compare-network``: train the tangent CNN on an image and compare it with the ntk filter."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy
from tqdm import tqdm

from nlfilt.images import ImageError, read_image
from nlfilt.network import OPTIMIZERS, ntk_twicing, train

#: Largest image compare-network accepts (the closed-form filter is global: N^2 pairs per step).
MAX_PIXELS = 64 * 64
#: Floating-point operations per second assumed for the cost refusal (float64 GEMM on a small CPU).
ASSUMED_FLOPS = 2e10


def training_flops(pixels: int, dims: int, width: int, depth: int, channels: int, steps: int) -> float:
    """Multiply-adds x 2 of ``steps`` forward and backward passes of both weight copies."""
    per_pass = pixels * (dims * width + (depth - 1) * width * width + width * channels)
    return steps * 2 * 3 * 2 * per_pass


@click.command("compare-network")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--width", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Channels of every hidden layer.")
@click.option("--depth", type=click.IntRange(min=1), default=1, show_default=True,
              help="ReLU layers (as the ntk kernel's depth).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="gd", show_default=True,
              help="Gradient descent with nlfilt's step 1/lambda_max, or Adam.")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True, help="Training steps.")
@click.option("--patch", type=click.IntRange(min=1), default=3, show_default=True,
              help="Odd side of the first convolution (and of the kernel's patches).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Step size. [default: 1/lambda_max for gd, 1e-3 for adam]")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial weights.")
@click.option("--max-minutes", type=float, default=10.0, show_default=True,
              help="Refuse a run whose estimated CPU time exceeds this (0: no limit).")
def compare_network_command(image_path: Path, width: int, depth: int, optimizer: str, steps: int, patch: int,
                            learning_rate: float | None, seed: int, max_minutes: float) -> None:
    """Train a ReLU CNN on IMAGE (input and target) and compare it with nlfilt's ntk filter.

    The network (nlfilt.network: one PATCH x PATCH convolution, DEPTH - 1 1x1
    convolutions of WIDTH channels, ReLU, linear 1x1 output, NTK
    parametrisation, zero initial output) is trained on the squared loss.
    After selected steps t the table shows the relative difference between
    its output f_t and nlfilt's twicing z_t (kernel ntk, global, same depth
    and patch), the relative residuals |y - f_t| / |y| and |y - z_t| / |y|,
    and how far the hidden weights moved.  Images of up to 64 x 64 pixels
    (crop larger ones); gray or colour (alpha is ignored).
    """
    if patch % 2 == 0:
        raise click.BadParameter(f"must be odd; got {patch}", param_hint="--patch")
    try:
        image = read_image(image_path)
    except ImageError as exc:
        raise click.ClickException(f"{image_path}: {exc}") from None
    noisy = image.colour.astype(numpy.float64)
    height, width_pixels = noisy.shape[:2]
    if height * width_pixels > MAX_PIXELS:
        raise click.ClickException(
            f"{image_path}: {height}x{width_pixels} = {height * width_pixels} pixels; compare-network trains "
            f"on the whole image and compares with the global filter, so it accepts at most {MAX_PIXELS} "
            "pixels (64x64): crop the image first")
    if patch > min(height, width_pixels):
        raise click.BadParameter(f"must be at most min(H, W) = {min(height, width_pixels)} for this image",
                                 param_hint="--patch")
    channels = noisy.shape[2] if noisy.ndim == 3 else 1
    flops = training_flops(height * width_pixels, patch * patch * channels, width, depth, channels, steps)
    if max_minutes > 0 and flops / ASSUMED_FLOPS > 60 * max_minutes:
        raise click.ClickException(
            f"{image_path}: width {width}, depth {depth}, {steps} steps would take about "
            f"{flops / ASSUMED_FLOPS / 60:.0f} minutes on this CPU (over --max-minutes {max_minutes:g}); "
            "use a smaller width, fewer steps or a smaller crop")
    closed, eigenvalue = ntk_twicing(noisy, depth=depth, patch=patch, steps=steps)
    bar = tqdm(total=steps, desc="training", unit="step", leave=False, file=sys.stderr, dynamic_ncols=True)
    try:
        run = train(noisy, width=width, depth=depth, patch=patch, steps=steps, optimizer=optimizer,
                    learning_rate=learning_rate, eigenvalue=eigenvalue, seed=seed,
                    progress=lambda done, total: bar.update(done - bar.n))
    finally:
        bar.close()
    norm = float(numpy.linalg.norm(noisy))
    click.echo(f"{image_path}: {height}x{width_pixels}, width {width}, depth {depth}, {optimizer}, "
               f"learning rate {run.learning_rate:.4g} (1/lambda_max = {1 / eigenvalue:.4g})")
    click.echo("step  |f - z|/|z|  |y - f|/|y|  |y - z|/|y|  hidden-weight movement")
    shown = sorted({t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= steps} | {steps})
    for t in shown:
        difference = numpy.linalg.norm(run.outputs[t] - closed[t]) / max(numpy.linalg.norm(closed[t]), 1e-300)
        click.echo(f"{t:>4}  {difference:11.4f}  {numpy.linalg.norm(noisy - run.outputs[t]) / norm:11.4f}  "
                   f"{numpy.linalg.norm(noisy - closed[t]) / norm:11.4f}  {run.movement[t]:.5f}")
