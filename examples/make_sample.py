"""Regenerate the quick-start sample: a synthetic 256x256 gray scene and a noisy copy.

Usage: python examples/make_sample.py

Writes examples/sample_clean.png and examples/sample.png (the clean scene plus
white Gaussian noise of standard deviation 25 in 8-bit units, seed 0).  The
scene is drawn from simple shapes so that the repository ships no third-party
picture: flat regions, soft gradients, sharp edges and repeated stripes, the
structures non-local filters are built for.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy

HERE = Path(__file__).resolve().parent
SIZE = 256
SIGMA = 25.0


def scene() -> numpy.ndarray:
    rows, cols = numpy.mgrid[0:SIZE, 0:SIZE].astype(numpy.float64)
    image = 60 + 0.35 * cols + 0.15 * rows  # soft background gradient
    disc = (rows - 80) ** 2 + (cols - 90) ** 2 <= 45**2
    image[disc] = 200
    square = (rows >= 150) & (rows < 220) & (cols >= 30) & (cols < 100)
    image[square] = 35
    stripes = (rows >= 40) & (rows < 230) & (cols >= 160) & (cols < 235)
    image[stripes] = numpy.where(((cols[stripes] - 160) // 6) % 2 == 0, 215, 90)
    ring = numpy.abs(numpy.hypot(rows - 190, cols - 130) - 28) <= 4
    image[ring] = 240
    return numpy.clip(image, 0, 255)


def main() -> None:
    clean = scene()
    noisy = clean + numpy.random.default_rng(0).normal(0, SIGMA, clean.shape)
    iio.imwrite(HERE / "sample_clean.png", numpy.round(clean).astype(numpy.uint8))
    iio.imwrite(HERE / "sample.png", numpy.clip(numpy.round(noisy), 0, 255).astype(numpy.uint8))
    print(f"wrote {HERE / 'sample_clean.png'} and {HERE / 'sample.png'}")


if __name__ == "__main__":
    main()
