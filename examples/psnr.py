"""Print the PSNR of images against a clean reference (8-bit or 16-bit by the reference's dtype).

Usage: python examples/psnr.py CLEAN IMAGE [IMAGE ...]
"""

from __future__ import annotations

import sys

import imageio.v3 as iio
import numpy


def psnr(image: numpy.ndarray, clean: numpy.ndarray, peak: float) -> float:
    return float(10 * numpy.log10(peak**2 / numpy.mean((image.astype(numpy.float64) - clean) ** 2)))


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    clean = iio.imread(sys.argv[1])
    peak = float(numpy.iinfo(clean.dtype).max) if clean.dtype.kind == "u" else 1.0
    for path in sys.argv[2:]:
        print(f"{path}: PSNR {psnr(iio.imread(path), clean.astype(numpy.float64), peak):.2f} dB")


if __name__ == "__main__":
    main()
