"""The sample image nlfilt ships: a synthetic gray scene and a noisy copy of it.

The scene is drawn from simple shapes, so no third-party picture is shipped:
flat regions, soft gradients, sharp edges and repeated stripes, the structures
non-local filters are built for.  The quick start's ``examples/sample.png``
and ``examples/sample_clean.png`` are :func:`noisy_sample` and :func:`scene`
written as 8-bit PNG files (``examples/make_sample.py``); the napari plugin
offers the same pair as sample data.
"""

from __future__ import annotations

import numpy

#: Side of the square scene, in pixels.
SIZE = 256
#: Standard deviation of the sample's white Gaussian noise, in 8-bit levels, and its random seed.
SIGMA = 25.0
SEED = 0


def scene() -> numpy.ndarray:
    """The clean (SIZE, SIZE) scene rounded to uint8."""
    return numpy.round(_scene_values()).astype(numpy.uint8)


def _scene_values() -> numpy.ndarray:
    """The scene's (SIZE, SIZE) float64 values, 0 to 255 (the gradient between levels)."""
    rows, cols = numpy.mgrid[0:SIZE, 0:SIZE].astype(numpy.float64)
    image = 60 + 0.35 * cols + 0.15 * rows  # soft background gradient
    image[(rows - 80) ** 2 + (cols - 90) ** 2 <= 45**2] = 200  # a disc
    image[(rows >= 150) & (rows < 220) & (cols >= 30) & (cols < 100)] = 35  # a square
    stripes = (rows >= 40) & (rows < 230) & (cols >= 160) & (cols < 235)
    image[stripes] = numpy.where(((cols[stripes] - 160) // 6) % 2 == 0, 215, 90)
    image[numpy.abs(numpy.hypot(rows - 190, cols - 130) - 28) <= 4] = 240  # a ring
    return numpy.clip(image, 0, 255)


def noisy_sample() -> numpy.ndarray:
    """The scene (its values between levels) with white Gaussian noise of deviation ``SIGMA`` (seed
    ``SEED``), rounded and clipped to 8 bits, as uint8: the quick start's ``examples/sample.png``."""
    noisy = _scene_values() + numpy.random.default_rng(SEED).normal(0, SIGMA, (SIZE, SIZE))
    return numpy.clip(numpy.round(noisy), 0, 255).astype(numpy.uint8)
